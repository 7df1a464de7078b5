//! Central configuration: a TOML file (`central.toml`, every key defaulted) plus CLI/env overrides
//! applied in `main`, parsed once into validated types and passed down explicitly. Nothing below
//! `main` reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::store::PoolSettings;

/// Most tracking ids leased in one grant: a grant is one entry of central's log, and 10,000 ids
/// (about 90 KiB of JSON) stay far below the entry payload bound.
pub const POOL_LEASE_SIZE_LIMIT: u32 = 10_000;

/// The file format of `central.toml`. Every field has a default so an empty file is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Where the database, key files and certificates live.
    pub data_dir: PathBuf,
    /// HTTP listen address (API, ops, metrics).
    pub http_listen: SocketAddr,
    /// QUIC (sync) listen address.
    pub quic_listen: SocketAddr,
    /// The QUIC address written into enrollment bundles (`host:port`); defaults to `quic_listen`
    /// (set it when listening on `0.0.0.0`).
    pub public_quic_addr: Option<String>,
    /// The HTTP base URL written into enrollment bundles; defaults to `http://<http_listen>`.
    pub public_http_url: Option<String>,
    /// A country's event configuration (JSON); `None` means the built-in birth/death default.
    pub event_config: Option<PathBuf>,
    /// Roles and their scopes (JSON as OpenCRVS's `GET /config/roles` serves them); `None`
    /// means the built-in Farajaland roles.
    pub roles_config: Option<PathBuf>,
    /// Lifetime of system-client tokens, seconds (OpenCRVS: 600).
    pub token_ttl_secs: u64,
    /// Login second factor: a 6-digit code sent through `notification_command`. `false` is
    /// the documented demo mode: no code is sent and `000000` is accepted (as OpenCRVS does
    /// with `TWO_FA_ENABLED=false`). Invitations and reminders are not sent either.
    pub two_factor: bool,
    /// The transport of login codes, invitations and reminders: a program and its arguments, run
    /// once per message with the text on stdin and `CRVS_CHANNEL` (`sms`|`email`),
    /// `CRVS_RECIPIENT` and `CRVS_TEMPLATE` in its environment; exit status 0 means sent.
    pub notification_command: Vec<String>,
    /// Lifetime of user tokens, seconds (OpenCRVS: 7 days).
    pub user_token_ttl_secs: u64,
    /// Demo only: the temporary password of every invitation and reset (OpenCRVS's
    /// `DEFAULT_USER_PASSWORD`), so a demo without a message transport can log new users in.
    /// `None` (the default): a random one, sent only through `notification_command`.
    pub default_user_password: Option<String>,
    /// Registration numbers: literal `0-9A-Z-/` text with `{year}`, `{seq:N}` (a counter per
    /// year, unique by construction) and `{random:N}` (`[0-9A-Z]`, Farajaland's is
    /// `{random:12}`). Default `{year}{seq:8}`.
    pub registration_number_format: String,
    /// External confirmation hooks (OpenCRVS §4.3): for REGISTER, central calls
    /// `{url}/trigger/events/{eventType}/actions/REGISTER` with the record before it issues a
    /// number (`[[action_hooks]]` tables: `action`, `url`, optional `event_types` and `when`).
    pub action_hooks: Vec<ActionHookFile>,
    /// Tracking ids leased to a node per grant.
    pub pool_lease_size: u32,
    /// Lease more when a node reports fewer free ids than this.
    pub pool_low_water: u32,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// tracing filter, e.g. `info` or `crvs_central=debug,info`.
    pub log_filter: String,
}

/// Most confirmation hooks one configuration may name.
pub const ACTION_HOOKS_MAX: usize = 8;

/// Longest hook URL.
pub const HOOK_URL_CHARS_MAX: usize = 512;

/// One `[[action_hooks]]` table of `central.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionHookFile {
    /// The action confirmed: `REGISTER` (the only one a node cannot confirm itself).
    pub action: String,
    /// Base URL (`http://`; put a TLS-terminating proxy in front of an `https://` hook).
    pub url: String,
    /// Event types that go through the hook; empty or absent = all.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Declaration values a record must have to go through it, e.g.
    /// `when = { "mother.idType" = "NATIONAL_ID" }`; absent = every record.
    #[serde(default)]
    pub when: std::collections::BTreeMap<String, serde_json::Value>,
}

impl ActionHookFile {
    fn check(
        &self,
        events: &crvs_common::config::EventConfigSet,
    ) -> anyhow::Result<crate::store::ActionHook> {
        anyhow::ensure!(
            self.action == "REGISTER",
            "action_hooks: action {:?} cannot have a hook (only REGISTER: every other action is confirmed where it is made)",
            self.action
        );
        let url = self.url.trim_end_matches('/');
        anyhow::ensure!(
            url.starts_with("http://")
                && url.len() > "http://".len()
                && url.chars().count() <= HOOK_URL_CHARS_MAX
                && !url.chars().any(char::is_whitespace),
            "action_hooks: url must be an http:// URL of at most {HOOK_URL_CHARS_MAX} characters"
        );
        for event_type in &self.event_types {
            anyhow::ensure!(
                events.get(event_type).is_some(),
                "action_hooks: event type {event_type:?} is not configured"
            );
        }
        for field in self.when.keys() {
            anyhow::ensure!(
                events.events().iter().any(|c| c.field(field).is_some()),
                "action_hooks: `when` names {field:?}, which no event type declares"
            );
        }
        Ok(crate::store::ActionHook {
            action: crvs_common::event::ActionType::Register,
            url: url.to_owned(),
            event_types: self.event_types.clone(),
            when: self.when.clone(),
        })
    }
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("central-data"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7000)),
            quic_listen: SocketAddr::from(([127, 0, 0, 1], 7001)),
            public_quic_addr: None,
            public_http_url: None,
            event_config: None,
            roles_config: None,
            token_ttl_secs: 600,
            two_factor: true,
            notification_command: Vec::new(),
            user_token_ttl_secs: crate::auth::USER_TOKEN_TTL_SECS,
            default_user_password: None,
            registration_number_format: crvs_common::regnum::DEFAULT_FORMAT.to_owned(),
            action_hooks: Vec::new(),
            pool_lease_size: 1000,
            pool_low_water: 200,
            log_format: "text".to_owned(),
            log_filter: "info".to_owned(),
        }
    }
}

impl ConfigFile {
    /// Reads `path`, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Checks bounds and loads the event configuration.
    pub fn validate(self) -> anyhow::Result<Config> {
        anyhow::ensure!(
            (10..=86_400).contains(&self.token_ttl_secs),
            "token_ttl_secs must be between 10 and 86400"
        );
        anyhow::ensure!(
            (60..=30 * 86_400).contains(&self.user_token_ttl_secs),
            "user_token_ttl_secs must be between 60 and 2592000"
        );
        let registration =
            crvs_common::regnum::RegistrationFormat::parse(&self.registration_number_format)?;
        if let Some(p) = &self.default_user_password {
            crate::admin::check_password(p).context("default_user_password")?;
        }
        anyhow::ensure!(
            self.notification_command
                .first()
                .is_none_or(|program| !program.trim().is_empty()),
            "notification_command must start with a program"
        );
        anyhow::ensure!(
            (1..=POOL_LEASE_SIZE_LIMIT).contains(&self.pool_lease_size),
            "pool_lease_size must be between 1 and {POOL_LEASE_SIZE_LIMIT}"
        );
        anyhow::ensure!(
            self.pool_low_water <= self.pool_lease_size,
            "pool_low_water must not exceed pool_lease_size"
        );
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "text" | "json"),
            "log_format must be text or json"
        );
        let (events, roles) = crvs_common::server::load_event_and_roles(
            self.event_config.as_deref(),
            self.roles_config.as_deref(),
        )?;
        anyhow::ensure!(
            self.action_hooks.len() <= ACTION_HOOKS_MAX,
            "at most {ACTION_HOOKS_MAX} action_hooks"
        );
        let action_hooks = self
            .action_hooks
            .iter()
            .map(|h| h.check(&events))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Config {
            file: self,
            events,
            roles,
            registration,
            action_hooks,
        })
    }
}

/// The validated configuration handed to [`crate::run`] and the operator commands.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file values, checked.
    pub file: ConfigFile,
    /// The event configuration.
    pub events: crvs_common::config::EventConfigSet,
    /// Roles and the scopes each grants.
    pub roles: crvs_common::role::RoleSet,
    /// The parsed registration number format.
    pub registration: crvs_common::regnum::RegistrationFormat,
    /// The checked confirmation hooks.
    pub action_hooks: Vec<crate::store::ActionHook>,
}

impl Config {
    /// The SQLite database path.
    pub fn db_path(&self) -> PathBuf {
        self.file.data_dir.join("central.db")
    }

    /// Central's log-signing key (ed25519 seed, hex, mode 0600); its public key is `centralId`.
    pub fn central_key_path(&self) -> PathBuf {
        self.file.data_dir.join("central.key")
    }

    /// The token-signing key file (ed25519 seed, hex, mode 0600).
    pub fn jwt_key_path(&self) -> PathBuf {
        self.file.data_dir.join("jwt.key")
    }

    /// The QUIC address nodes are told to dial.
    pub fn public_quic_addr(&self) -> String {
        self.file
            .public_quic_addr
            .clone()
            .unwrap_or_else(|| self.file.quic_listen.to_string())
    }

    /// The HTTP base URL nodes and integrators are told.
    pub fn public_http_url(&self) -> String {
        self.file
            .public_http_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.file.http_listen))
    }

    /// Tracking-id leasing settings.
    pub fn pool(&self) -> PoolSettings {
        PoolSettings {
            lease_size: self.file.pool_lease_size,
            low_water: self.file.pool_low_water,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults_and_validates() {
        let file: ConfigFile = toml::from_str("").unwrap();
        assert_eq!(file, ConfigFile::default());
        let config = file.validate().unwrap();
        assert_eq!(config.public_quic_addr(), "127.0.0.1:7001");
        assert_eq!(config.public_http_url(), "http://127.0.0.1:7000");
    }

    #[test]
    fn unknown_keys_and_bad_bounds_are_refused() {
        assert!(toml::from_str::<ConfigFile>("nope = 1").is_err());
        let file = ConfigFile {
            pool_lease_size: 0,
            ..ConfigFile::default()
        };
        assert!(file.validate().is_err());
    }
}
