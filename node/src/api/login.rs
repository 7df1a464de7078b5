//! Human login as OpenCRVS's auth service does it (§3.5), against the users central sent down,
//! so it works while the clinic is offline: `POST /auth/authenticate` (password) → nonce and a
//! 6-digit code through the outbox → `POST /auth/verifyCode` → token; `resendAuthenticationCode`,
//! `refreshToken` and `invalidateToken` (logout). 10 attempts a minute per username, then 429.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use crvs_common::error::ErrorCode;
use crvs_common::limits::{
    LOGIN_CODE_TTL_MS, OUTBOX_PENDING_MAX, PASSWORD_BYTES_MAX, USERNAME_CHARS_MAX,
};
use crvs_common::login::{AttemptLimiter, CodeVerdict, DEMO_CODE, PendingLogins, code_from_random};
use crvs_common::user::UserStatus;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{ApiError, AppState, body};
use crate::auth::{DECOY_HASH, TokenUserType, verify_secret};
use crate::store::{AuditEntry, UserRow, wall_ms};

/// The attempt limiter and the logins waiting for their code.
#[derive(Debug, Default)]
pub struct LoginBook {
    limiter: AttemptLimiter,
    pending: PendingLogins,
}

impl LoginBook {
    fn lock(book: &std::sync::Mutex<Self>) -> std::sync::MutexGuard<'_, Self> {
        // Each method leaves the book consistent; a panic elsewhere cannot tear it.
        book.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthenticateInput {
    username: String,
    password: String,
}

#[derive(Debug, Serialize)]
struct AuthenticateOutput {
    nonce: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mobile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    status: UserStatus,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyCodeInput {
    nonce: String,
    code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NonceInput {
    nonce: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenInput {
    token: String,
}

#[derive(Debug, Serialize)]
struct TokenOutput {
    token: String,
}

fn bad_credentials() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "Invalid username or password")
}

fn too_many() -> ApiError {
    ApiError::new(
        ErrorCode::TooManyRequests,
        "Too many login attempts for this username; try again in a minute",
    )
}

/// Masks all but the last 4 characters of a phone number or the mailbox of an email, as the
/// login app only needs to say where the code went.
fn mask(contact: &str) -> String {
    if let Some((mailbox, domain)) = contact.split_once('@') {
        let first: String = mailbox.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = contact.chars().collect();
    let keep = chars.len().saturating_sub(4);
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep && c.is_ascii_digit() {
                '*'
            } else {
                *c
            }
        })
        .collect()
}

fn random_hex<const N: usize>() -> Result<String, ApiError> {
    crate::keys::random_bytes::<N>()
        .map(hex::encode)
        .map_err(|e| ApiError::internal(&e))
}

/// Queues the login code for `user`, unless two-factor codes are off (demo mode).
async fn send_code(state: &AppState, user: &UserRow, code: &str) -> Result<(), ApiError> {
    if !state.config.file.two_factor {
        return Ok(());
    }
    if state.config.file.notification_command.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "This node has no transport for login codes: set notification_command, or \
             two_factor = false for a demo",
        ));
    }
    let (channel, recipient) = match (&user.user.mobile, &user.user.email) {
        (Some(mobile), _) => ("sms", mobile.clone()),
        (None, Some(email)) => ("email", email.clone()),
        (None, None) => {
            return Err(ApiError::new(
                ErrorCode::InternalServerError,
                "User has neither a mobile number nor an email for the login code",
            ));
        }
    };
    let body = format!("Your verification code is {code}. It expires in 10 minutes.");
    let expires = wall_ms() + LOGIN_CODE_TTL_MS;
    state
        .store
        .write(move |ctx| -> Result<(), ApiError> {
            if ctx.reader().outbox_pending()? >= OUTBOX_PENDING_MAX {
                return Err(ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    "The notification outbox is full; try again later",
                ));
            }
            ctx.enqueue_notification(channel, &recipient, "authentication-code", &body, expires)?;
            Ok(())
        })
        .await?;
    state.outbox_wake.notify_one();
    Ok(())
}

fn new_code(state: &AppState) -> Result<String, ApiError> {
    if state.config.file.two_factor {
        let random = crate::keys::random_bytes::<8>().map_err(|e| ApiError::internal(&e))?;
        Ok(code_from_random(random))
    } else {
        Ok(DEMO_CODE.to_owned())
    }
}

/// `POST /auth/authenticate {username, password}` → `{nonce, mobile?, email?, status}`.
pub(crate) async fn authenticate(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let input: AuthenticateInput = body::json(body)?;
    if input.username.is_empty()
        || input.username.chars().count() > USERNAME_CHARS_MAX
        || input.password.is_empty()
        || input.password.len() > PASSWORD_BYTES_MAX
    {
        return Err(bad_credentials());
    }
    let username = input.username.to_lowercase();
    if !LoginBook::lock(&state.logins)
        .limiter
        .try_attempt(&username, wall_ms())
    {
        return Err(too_many());
    }
    let lookup = username.clone();
    let user = state
        .store
        .read(move |r| r.user_by_username(&lookup))
        .await?;
    let hash = match &user {
        Some(u) if !u.password_hash.is_empty() => u.password_hash.clone(),
        _ => DECOY_HASH.to_owned(),
    };
    let Ok(_permit) = state.secret_permits.acquire().await else {
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "Shutting down",
        ));
    };
    let password = zeroize::Zeroizing::new(input.password);
    let ok = tokio::task::spawn_blocking(move || verify_secret(&hash, &password))
        .await
        .unwrap_or(false);
    let user = match user {
        Some(u) if ok && !u.password_hash.is_empty() => u,
        _ => return Err(bad_credentials()),
    };
    if user.user.status == UserStatus::Deactivated {
        return Err(ApiError::forbidden("User is deactivated"));
    }
    let nonce = random_hex::<16>()?;
    let code = new_code(&state)?;
    send_code(&state, &user, &code).await?;
    LoginBook::lock(&state.logins).pending.start(
        nonce.clone(),
        user.user.id.to_string(),
        code,
        wall_ms(),
    );
    tracing::info!(user = %user.user.id, "password accepted; code sent");
    let out = AuthenticateOutput {
        nonce,
        mobile: user.user.mobile.as_deref().map(mask),
        email: user.user.email.as_deref().map(mask),
        status: user.user.status,
    };
    Ok(axum::Json(
        serde_json::to_value(out).map_err(|e| ApiError::internal(&e))?,
    ))
}

/// `POST /auth/resendAuthenticationCode {nonce}` → `{nonce}`: a new code for the same login.
pub(crate) async fn resend_code(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let input: NonceInput = body::json(body)?;
    let user_id = LoginBook::lock(&state.logins)
        .pending
        .get(&input.nonce, wall_ms())
        .map(|p| p.user_id.clone())
        .ok_or_else(unknown_nonce)?;
    let user = load_user(&state, &user_id).await?;
    let code = new_code(&state)?;
    send_code(&state, &user, &code).await?;
    LoginBook::lock(&state.logins)
        .pending
        .start(input.nonce.clone(), user_id, code, wall_ms());
    Ok(axum::Json(serde_json::json!({ "nonce": input.nonce })))
}

fn unknown_nonce() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "Unknown or expired nonce")
}

async fn load_user(state: &AppState, user_id: &str) -> Result<UserRow, ApiError> {
    let id: uuid::Uuid = user_id.parse().map_err(|_| ApiError::unauthorized())?;
    state
        .store
        .read(move |r| r.user(id))
        .await?
        .ok_or_else(ApiError::unauthorized)
}

/// A user token for `user`, with the scopes of their role in this node's roles configuration.
fn user_token(state: &AppState, user: &UserRow) -> Result<String, ApiError> {
    if user.user.status != UserStatus::Active {
        return Err(ApiError::forbidden("User is not active"));
    }
    let scopes = state
        .config
        .roles
        .scopes_of(&user.user.role)
        .ok_or_else(|| ApiError::forbidden(format!("Unknown role {}", user.user.role)))?
        .encode();
    state
        .tokens
        .mint_user(
            &user.user.id.to_string(),
            &user.user.role,
            scopes,
            wall_ms() / 1000,
        )
        .map_err(|e| ApiError::internal(&e))
}

fn login_audit(user: &UserRow, operation: &'static str) -> AuditEntry {
    AuditEntry {
        actor: user.user.id.to_string(),
        actor_type: "user",
        location: Some(user.user.primary_office_id),
        operation,
        subject: None,
        detail: None,
    }
}

/// `POST /auth/verifyCode {nonce, code}` → `{token}`.
pub(crate) async fn verify_code(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let input: VerifyCodeInput = body::json(body)?;
    let verdict = LoginBook::lock(&state.logins).pending.verify(
        &input.nonce,
        &input.code,
        !state.config.file.two_factor,
        wall_ms(),
    );
    let user_id = match verdict {
        CodeVerdict::Accepted { user_id } => user_id,
        CodeVerdict::UnknownNonce => return Err(unknown_nonce()),
        CodeVerdict::WrongCode => {
            return Err(ApiError::new(ErrorCode::Unauthorized, "Wrong code"));
        }
    };
    let user = load_user(&state, &user_id).await?;
    let token = user_token(&state, &user)?;
    let audit = login_audit(&user, "user.logged_in");
    state.store.write(move |ctx| ctx.audit(&audit)).await?;
    tracing::info!(user = %user.user.id, "user logged in");
    Ok(axum::Json(
        serde_json::to_value(TokenOutput { token }).map_err(|e| ApiError::internal(&e))?,
    ))
}

/// `POST /auth/refreshToken {token}` → `{token}`: a fresh token for a valid one. A user's
/// scopes are those of their role now; a deactivated user gets none.
pub(crate) async fn refresh_token(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let input: TokenInput = body::json(body)?;
    let claims = state
        .tokens
        .validate(&input.token)
        .map_err(|_| ApiError::unauthorized())?;
    let token = match claims.user_type {
        TokenUserType::User => {
            let user = load_user(&state, &claims.sub).await?;
            user_token(&state, &user)?
        }
        TokenUserType::System => {
            let client = state
                .store
                .read({
                    let id = claims.sub.clone();
                    move |r| r.client(&id)
                })
                .await?
                .filter(|c| c.status == "active")
                .ok_or_else(ApiError::unauthorized)?;
            state
                .tokens
                .mint(
                    &client.id,
                    client.scopes,
                    TokenUserType::System,
                    wall_ms() / 1000,
                )
                .map_err(|e| ApiError::internal(&e))?
        }
    };
    Ok(axum::Json(
        serde_json::to_value(TokenOutput { token }).map_err(|e| ApiError::internal(&e))?,
    ))
}

/// `POST /auth/invalidateToken {token}` (logout) → `{}`: the token is refused from now on, here
/// and after a restart, until it would have expired.
pub(crate) async fn invalidate_token(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let input: TokenInput = body::json(body)?;
    let claims = state
        .tokens
        .revoke(&input.token, wall_ms() / 1000)
        .map_err(|e| {
            tracing::debug!(error = %e, "logout of an invalid token");
            ApiError::unauthorized()
        })?;
    let digest: [u8; 32] = Sha256::digest(input.token.as_bytes()).into();
    let audit = AuditEntry {
        actor: claims.sub.clone(),
        actor_type: match claims.user_type {
            TokenUserType::User => "user",
            TokenUserType::System => "system",
        },
        location: None,
        operation: "user.logged_out",
        subject: None,
        detail: None,
    };
    state
        .store
        .write(move |ctx| {
            ctx.revoke_token(digest, claims.exp)?;
            ctx.audit(&audit)
        })
        .await?;
    Ok(axum::Json(serde_json::json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_are_masked() {
        assert_eq!(mask("+260911234567"), "+********4567");
        assert_eq!(mask("kalusha@example.org"), "k***@example.org");
        assert_eq!(mask("123"), "123");
    }
}
