//! HTTP server glue node and central share (feature `server`): the error envelope, body
//! parsing, key files, tokens and secrets, the account tables (logged-out tokens, outbox,
//! audit), and the routes that are the same at both: the OAuth2 token route, human login and
//! logout, and the outbox transport. Written once over [`AuthHost`], which each server
//! implements on its own state and store.

pub mod accounts;
pub mod actions;
pub mod auth;
pub mod body;
pub mod create;
pub mod drafts;
pub mod error;
pub mod import;
pub mod keys;
pub mod list;
pub mod login;
pub mod outbox;
pub mod token;
pub mod trpc;
pub mod users;
pub mod wal;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::post;
use rusqlite::Connection;
use tokio::sync::{Notify, Semaphore};

pub use error::ApiError;

use crate::role::RoleSet;
use crate::scope::ScopeSet;
use crate::user::Account;
use auth::TokenUserType;

/// Secret verifications (argon2id, ~19 MiB each) a server runs at once by default: bounds
/// memory on a 1 GB board.
pub const SECRET_VERIFICATIONS_MAX: usize = 2;

/// Longest a request waits for an argon2 permit before it is answered 503.
pub const SECRET_PERMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A system client as both servers store it (created at central, synced down to nodes).
#[derive(Debug, Clone)]
pub struct ClientRow {
    /// Client id (UUID).
    pub id: String,
    /// Display name.
    pub name: String,
    /// argon2id PHC string.
    pub secret_hash: String,
    /// Encoded scopes.
    pub scopes: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    /// Creation time.
    pub created_at: String,
}

/// What the shared auth routes hold: token keys, the argon2 permits, the login book, the roles
/// and how login codes travel.
#[derive(Debug)]
pub struct AuthCore {
    /// This server's token keys.
    pub tokens: auth::TokenKeys,
    /// Bounds concurrent argon2 verifications.
    pub secret_permits: Semaphore,
    /// Login attempts and the logins waiting for their code.
    pub logins: std::sync::Mutex<login::LoginBook>,
    /// Roles and their scopes.
    pub roles: Arc<RoleSet>,
    /// Whether login codes are random and sent (`false`: demo mode, the code is `000000`).
    pub two_factor: bool,
    /// The outbox transport command (empty: none configured).
    pub notification_command: Vec<String>,
    /// Wakes the outbox transport when a notification is queued.
    pub outbox_wake: Arc<Notify>,
}

impl AuthCore {
    /// Core state around `tokens`, allowing `secret_verifications` argon2 runs at once.
    pub fn new(
        tokens: auth::TokenKeys,
        secret_verifications: usize,
        roles: Arc<RoleSet>,
        two_factor: bool,
        notification_command: Vec<String>,
    ) -> Self {
        Self {
            tokens,
            secret_permits: Semaphore::new(secret_verifications),
            logins: std::sync::Mutex::new(login::LoginBook::default()),
            roles,
            two_factor,
            notification_command,
            outbox_wake: Arc::new(Notify::new()),
        }
    }

    /// Counts a password attempt for `username` (login, or a password check on an account) at
    /// `now_ms`; `false` past 10 a minute.
    pub fn try_password_attempt(&self, username: &str, now_ms: u64) -> bool {
        login::LoginBook::try_attempt(&self.logins, username, now_ms)
    }

    /// One of the argon2 permits, waiting at most [`SECRET_PERMIT_WAIT`]; 503 past that (the
    /// queue of waiting requests stays bounded by that wait).
    pub async fn secret_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        let busy = || {
            ApiError::new(
                crate::error::ErrorCode::ServiceUnavailable,
                "Too many password checks at once; try again shortly",
            )
        };
        match tokio::time::timeout(SECRET_PERMIT_WAIT, self.secret_permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(busy()),
        }
    }

    /// 503 unless messages can be sent: a transport is configured, or demo mode (nothing is
    /// sent). Checked before a change that needs its message, so none is made without one.
    pub fn can_notify(&self) -> Result<(), ApiError> {
        if self.two_factor && self.notification_command.is_empty() {
            return Err(ApiError::new(
                crate::error::ErrorCode::ServiceUnavailable,
                "This server has no transport for notifications: set notification_command, or \
                 two_factor = false for a demo",
            ));
        }
        Ok(())
    }

    /// Says at start-up how login codes will travel.
    pub fn log_transport(&self) {
        if !self.notification_command.is_empty() {
            return;
        }
        if self.two_factor {
            tracing::warn!(
                "two_factor is on but no notification_command is set: user logins will be \
                 refused until one is (or set two_factor = false for a demo)"
            );
        } else {
            tracing::warn!("two_factor = false: demo mode, every login accepts the code 000000");
        }
    }
}

/// What a server provides to the shared auth routes and the outbox transport.
pub trait AuthHost: Send + Sync + 'static {
    /// The shared auth state.
    fn auth(&self) -> &AuthCore;

    /// The account with this (lower-case) username.
    fn account_by_username(
        &self,
        username: String,
    ) -> impl Future<Output = Result<Option<Account>, ApiError>> + Send;

    /// The account with this user id.
    fn account(
        &self,
        id: uuid::Uuid,
    ) -> impl Future<Output = Result<Option<Account>, ApiError>> + Send;

    /// The system client with this id.
    fn client(
        &self,
        id: String,
    ) -> impl Future<Output = Result<Option<ClientRow>, ApiError>> + Send;

    /// Runs `job` on a read connection, for the account tables ([`accounts`]).
    fn accounts_read<T, F>(&self, job: F) -> impl Future<Output = Result<T, ApiError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static;

    /// Runs `job` in a durable write transaction on the account tables ([`accounts`]), with the
    /// transaction's time in ms.
    fn accounts_write<T, F>(&self, job: F) -> impl Future<Output = Result<T, ApiError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&Connection, u64) -> Result<T, ApiError> + Send + 'static;
}

/// The auth routes both servers serve: `POST /auth/token` (also `/api/auth/token`, `/token`),
/// `/auth/authenticate`, `/auth/verifyCode`, `/auth/resendAuthenticationCode`,
/// `/auth/refreshToken` and `/auth/invalidateToken`.
pub fn auth_routes<H: AuthHost>() -> Router<Arc<H>> {
    Router::new()
        .route("/auth/token", post(token::token::<H>))
        .route("/api/auth/token", post(token::token::<H>))
        .route("/token", post(token::token::<H>))
        .route("/auth/authenticate", post(login::authenticate::<H>))
        .route("/auth/verifyCode", post(login::verify_code::<H>))
        .route(
            "/auth/resendAuthenticationCode",
            post(login::resend_code::<H>),
        )
        .route("/auth/refreshToken", post(login::refresh_token::<H>))
        .route("/auth/invalidateToken", post(login::invalidate_token::<H>))
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Client (or user) id.
    pub id: String,
    /// `user` or `system`.
    pub user_type: TokenUserType,
    /// Parsed scopes.
    pub scopes: ScopeSet,
    /// The user's role (users only).
    pub role: Option<String>,
}

impl Caller {
    /// 403 unless some scope of `kind` exists at all.
    pub fn require_kind(&self, kind: &str) -> Result<(), ApiError> {
        if self.scopes.has_kind(kind) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("Missing scope {kind}")))
        }
    }

    /// 403 unless a scope of `kind` covers `event_type`.
    pub fn require(&self, kind: &str, event_type: &str) -> Result<(), ApiError> {
        if self.scopes.allows(kind, event_type) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "Missing scope {kind} for event type {event_type}"
            )))
        }
    }
}

impl<H: AuthHost> FromRequestParts<Arc<H>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<H>,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(ApiError::unauthorized)?;
        let value = value.to_str().map_err(|_| ApiError::unauthorized())?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(ApiError::unauthorized)?;
        let claims = state.auth().tokens.validate(token).map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            ApiError::unauthorized()
        })?;
        // A user's token stands only while the user does: deactivation or a password change
        // (reset included) refuses every token minted before, here and at refresh.
        if claims.user_type == TokenUserType::User {
            let id: uuid::Uuid = claims.sub.parse().map_err(|_| ApiError::unauthorized())?;
            let account = state
                .account(id)
                .await?
                .ok_or_else(ApiError::unauthorized)?;
            if !login::still_valid(&claims, &account) {
                return Err(ApiError::unauthorized());
            }
        }
        let scopes = ScopeSet::parse_all(&claims.scope).map_err(|_| ApiError::unauthorized())?;
        Ok(Self {
            id: claims.sub,
            user_type: claims.user_type,
            scopes,
            role: claims.role,
        })
    }
}

/// The event configuration and the roles a server runs with: the files named, or the built-in
/// defaults (birth and death; Farajaland's roles).
pub fn load_event_and_roles(
    event_config: Option<&std::path::Path>,
    roles_config: Option<&std::path::Path>,
) -> anyhow::Result<(crate::config::EventConfigSet, RoleSet)> {
    use anyhow::Context as _;
    let events = match event_config {
        None => crate::config::EventConfigSet::builtin(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading event config {}", path.display()))?;
            crate::config::EventConfigSet::from_json(&text)
                .with_context(|| format!("loading event config {}", path.display()))?
        }
    };
    let roles = match roles_config {
        None => RoleSet::default_set(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading roles config {}", path.display()))?;
            RoleSet::from_json(&text)
                .with_context(|| format!("loading roles config {}", path.display()))?
        }
    };
    Ok((events, roles))
}

/// Milliseconds since the Unix epoch, wall clock.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
