//! Node configuration: a TOML file (plus CLI/env overrides applied in `main`), parsed once into
//! validated types and passed down explicitly. Nothing below `main` reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The file format of `node.toml`. Every field has a default so an empty file is a valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Where the database and key files live.
    pub data_dir: PathBuf,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// A country's event configuration (JSON); `None` means the built-in birth/death default.
    pub event_config: Option<PathBuf>,
    /// Roles and their scopes (JSON as OpenCRVS's `GET /config/roles` serves them); `None`
    /// means the built-in Farajaland roles.
    pub roles_config: Option<PathBuf>,
    /// Lifetime of system-client tokens, seconds (OpenCRVS: 600).
    pub token_ttl_secs: u64,
    /// Tracking-id pool: ids held at the node.
    pub pool_size: u32,
    /// Refill when fewer free ids than this remain.
    pub pool_low_water: u32,
    /// Stand-alone mode: with no central to lease ids from, the node fills its own pool.
    /// Demo and single-site use only: ids are then unique per node, not nationally. Ignored once
    /// the node is enrolled (central leases its ids).
    pub standalone_pool: bool,
    /// Most write requests committed in one SQLite transaction (one fsync) by the writer.
    pub group_commit_max: usize,
    /// Login second factor: a 6-digit code sent through `notification_command`. `false` is
    /// the documented demo mode: no code is sent and `000000` is accepted (as OpenCRVS does
    /// with `TWO_FA_ENABLED=false`).
    pub two_factor: bool,
    /// The transport of login codes: a program and its arguments, run once per message with the
    /// text on stdin and `CRVS_CHANNEL` (`sms`|`email`), `CRVS_RECIPIENT` and `CRVS_TEMPLATE` in
    /// its environment; exit status 0 means sent. A local SMS modem tool (for example gammu's
    /// `gammu-smsd-inject`) or `sendmail` work while the clinic is offline.
    pub notification_command: Vec<String>,
    /// Lifetime of user tokens, seconds (OpenCRVS: 7 days).
    pub user_token_ttl_secs: u64,
    /// Log format: `text` or `json`.
    pub log_format: String,
    /// tracing filter, e.g. `info` or `crvs_node=debug,info`.
    pub log_filter: String,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            event_config: None,
            roles_config: None,
            token_ttl_secs: 600,
            pool_size: 1000,
            pool_low_water: 200,
            standalone_pool: true,
            group_commit_max: 128,
            two_factor: true,
            notification_command: Vec::new(),
            user_token_ttl_secs: crate::auth::USER_TOKEN_TTL_SECS,
            log_format: "text".to_owned(),
            log_filter: "info".to_owned(),
        }
    }
}

/// Largest group commit allowed: bounds the latency of the last caller in a batch.
pub const GROUP_COMMIT_MAX_LIMIT: usize = 1024;

/// Largest tracking-id pool a node may hold.
pub const POOL_SIZE_LIMIT: u32 = 1_000_000;

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
        anyhow::ensure!(
            self.notification_command
                .first()
                .is_none_or(|program| !program.trim().is_empty()),
            "notification_command must start with a program"
        );
        anyhow::ensure!(
            self.pool_size >= 1 && self.pool_size <= POOL_SIZE_LIMIT,
            "pool_size must be between 1 and {POOL_SIZE_LIMIT}"
        );
        anyhow::ensure!(
            self.pool_low_water < self.pool_size,
            "pool_low_water must be below pool_size"
        );
        anyhow::ensure!(
            (1..=GROUP_COMMIT_MAX_LIMIT).contains(&self.group_commit_max),
            "group_commit_max must be between 1 and {GROUP_COMMIT_MAX_LIMIT}"
        );
        anyhow::ensure!(
            matches!(self.log_format.as_str(), "text" | "json"),
            "log_format must be text or json"
        );
        let (events, roles) = crvs_common::server::load_event_and_roles(
            self.event_config.as_deref(),
            self.roles_config.as_deref(),
        )?;
        let enrollment =
            crate::enroll::Enrollment::load(&self.data_dir.join(crate::enroll::ENROLLMENT_FILE))?
                .map(Arc::new);
        Ok(Config {
            file: self,
            events,
            roles,
            enrollment,
        })
    }
}

/// The validated configuration handed to [`crate::run`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The file values, checked.
    pub file: ConfigFile,
    /// The event configuration.
    pub events: crvs_common::config::EventConfigSet,
    /// Roles and the scopes each grants (the same file as central's).
    pub roles: crvs_common::role::RoleSet,
    /// The enrollment bundle, when `<data dir>/enrollment.json` exists: the node syncs with
    /// central and leases its tracking ids from it.
    pub enrollment: Option<Arc<crate::enroll::Enrollment>>,
}

impl Config {
    /// The SQLite database path.
    pub fn db_path(&self) -> PathBuf {
        self.file.data_dir.join("node.db")
    }

    /// The node identity key file (ed25519 seed, hex, mode 0600).
    pub fn node_key_path(&self) -> PathBuf {
        self.file.data_dir.join("node.key")
    }

    /// The token-signing key file (ed25519 seed, hex, mode 0600).
    pub fn jwt_key_path(&self) -> PathBuf {
        self.file.data_dir.join("jwt.key")
    }

    /// The enrollment bundle (mode 0600); its presence makes the node enrolled.
    pub fn enrollment_path(&self) -> PathBuf {
        self.file.data_dir.join(crate::enroll::ENROLLMENT_FILE)
    }

    /// Whether this node fills its own tracking-id pool: configured so, and not enrolled.
    pub fn standalone_pool(&self) -> bool {
        self.file.standalone_pool && self.enrollment.is_none()
    }
}
