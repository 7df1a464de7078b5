//! Human login as OpenCRVS's auth service does it (§3.5), the same at a node (against the
//! users central sent down, so it works while the clinic is offline) and at central: `POST
//! /auth/authenticate` (password) → nonce and a 6-digit code through the outbox → `POST
//! /auth/verifyCode` → token; `resendAuthenticationCode`, `refreshToken` and `invalidateToken`
//! (logout). 10 attempts a minute per username, then 429.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::accounts::{self, AuditEntry, Notification};
use super::auth::{Claims, DECOY_HASH, TokenUserType, credential_tag, verify_secret};
use super::{ApiError, AuthHost, body, wall_ms};
use crate::error::ErrorCode;
use crate::limits::{
    LOGIN_CODE_TTL_MS, OUTBOX_PENDING_MAX, PASSWORD_BYTES_MAX, USERNAME_CHARS_MAX,
};
use crate::login::{AttemptLimiter, CodeVerdict, DEMO_CODE, PendingLogins, code_from_random};
use crate::user::{Account, UserStatus};

/// The attempt limiter and the logins waiting for their code.
#[derive(Debug, Default)]
pub struct LoginBook {
    limiter: AttemptLimiter,
    pending: PendingLogins,
}

impl LoginBook {
    /// Counts an attempt for `username` in the book's limiter.
    pub(super) fn try_attempt(book: &std::sync::Mutex<Self>, username: &str, now_ms: u64) -> bool {
        Self::lock(book).limiter.try_attempt(username, now_ms)
    }

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
pub fn mask(contact: &str) -> String {
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

/// `N` random bytes, hex encoded (nonces).
pub fn random_hex<const N: usize>() -> Result<String, ApiError> {
    super::keys::random_bytes::<N>()
        .map(hex::encode)
        .map_err(|e| ApiError::internal(&e))
}

/// Where a message for `account` goes: its mobile number by SMS, else its email.
pub fn contact_of(account: &Account) -> Result<(&'static str, String), ApiError> {
    match (&account.user.mobile, &account.user.email) {
        (Some(mobile), _) => Ok(("sms", mobile.clone())),
        (None, Some(email)) => Ok(("email", email.clone())),
        (None, None) => Err(ApiError::new(
            ErrorCode::InternalServerError,
            "User has neither a mobile number nor an email to send to",
        )),
    }
}

/// Queues `text` for `account` through the outbox (template `template`, dropped unsent after
/// `ttl_ms`), unless two-factor codes are off (demo mode: nothing is sent). Refused with 503
/// when the server has no transport or the outbox is full.
pub async fn notify<H: AuthHost>(
    host: &H,
    account: &Account,
    template: &'static str,
    text: String,
    ttl_ms: u64,
) -> Result<(), ApiError> {
    if !host.auth().two_factor {
        tracing::info!(user = %account.user.id, template, "demo mode: notification not sent");
        return Ok(());
    }
    host.auth().can_notify()?;
    let (channel, recipient) = contact_of(account)?;
    let n = Notification {
        channel,
        recipient,
        template,
        body: text,
        expires_at_ms: wall_ms() + ttl_ms,
    };
    host.accounts_write(move |conn, now_ms| queue(conn, now_ms, &n))
        .await?;
    host.auth().outbox_wake.notify_one();
    Ok(())
}

/// Queues `n` unless the outbox is full.
fn queue(conn: &rusqlite::Connection, now_ms: u64, n: &Notification) -> Result<(), ApiError> {
    if accounts::outbox_pending(conn).map_err(|e| ApiError::internal(&e))? >= OUTBOX_PENDING_MAX {
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "The notification outbox is full; try again later",
        ));
    }
    accounts::enqueue(conn, now_ms, n).map_err(|e| ApiError::internal(&e))?;
    Ok(())
}

/// A fresh 6-digit code, or `000000` in demo mode.
pub fn new_code<H: AuthHost>(host: &H) -> Result<String, ApiError> {
    if host.auth().two_factor {
        let random = super::keys::random_bytes::<8>().map_err(|e| ApiError::internal(&e))?;
        Ok(code_from_random(random))
    } else {
        Ok(DEMO_CODE.to_owned())
    }
}

async fn send_code<H: AuthHost>(host: &H, account: &Account, code: &str) -> Result<(), ApiError> {
    let text = format!("Your verification code is {code}. It expires in 10 minutes.");
    notify(
        host,
        account,
        "authentication-code",
        text,
        LOGIN_CODE_TTL_MS,
    )
    .await
}

/// Verifies `password` against `account`'s hash (or the decoy hash when there is no account,
/// so an unknown username costs the same time), under one of the server's argon2 permits.
pub async fn password_matches<H: AuthHost>(
    host: &H,
    account: Option<&Account>,
    password: String,
) -> Result<bool, ApiError> {
    let hash = match account {
        Some(a) if !a.password_hash.is_empty() => a.password_hash.clone(),
        _ => DECOY_HASH.to_owned(),
    };
    let _permit = host.auth().secret_permit().await?;
    let password = zeroize::Zeroizing::new(password);
    let ok = tokio::task::spawn_blocking(move || verify_secret(&hash, &password))
        .await
        .unwrap_or(false);
    Ok(ok && account.is_some_and(|a| !a.password_hash.is_empty()))
}

/// `POST /auth/authenticate {username, password}` → `{nonce, mobile?, email?, status}`.
pub async fn authenticate<H: AuthHost>(
    State(host): State<Arc<H>>,
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
    if !host.auth().try_password_attempt(&username, wall_ms()) {
        return Err(too_many());
    }
    let account = host.account_by_username(username).await?;
    if !password_matches(&*host, account.as_ref(), input.password).await? {
        return Err(bad_credentials());
    }
    let Some(account) = account else {
        return Err(bad_credentials());
    };
    if account.user.status == UserStatus::Deactivated {
        return Err(ApiError::forbidden("User is deactivated"));
    }
    let nonce = random_hex::<16>()?;
    let code = new_code(&*host)?;
    send_code(&*host, &account, &code).await?;
    LoginBook::lock(&host.auth().logins).pending.start(
        nonce.clone(),
        account.user.id.to_string(),
        code,
        wall_ms(),
    );
    tracing::info!(user = %account.user.id, "password accepted; code sent");
    let out = AuthenticateOutput {
        nonce,
        mobile: account.user.mobile.as_deref().map(mask),
        email: account.user.email.as_deref().map(mask),
        status: account.user.status,
    };
    Ok(axum::Json(
        serde_json::to_value(out).map_err(|e| ApiError::internal(&e))?,
    ))
}

/// `POST /auth/resendAuthenticationCode {nonce}` → `{nonce}`: a new code for the same login.
pub async fn resend_code<H: AuthHost>(
    State(host): State<Arc<H>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let input: NonceInput = body::json(body)?;
    let user_id = LoginBook::lock(&host.auth().logins)
        .pending
        .get(&input.nonce, wall_ms())
        .map(|p| p.user_id.clone())
        .ok_or_else(unknown_nonce)?;
    let account = load_account(&*host, &user_id).await?;
    let code = new_code(&*host)?;
    if !LoginBook::lock(&host.auth().logins)
        .pending
        .resend(&input.nonce, code.clone(), wall_ms())
    {
        return Err(ApiError::new(
            ErrorCode::TooManyRequests,
            "This login's code was sent again too often; log in again",
        ));
    }
    send_code(&*host, &account, &code).await?;
    Ok(axum::Json(serde_json::json!({ "nonce": input.nonce })))
}

fn unknown_nonce() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "Unknown or expired nonce")
}

async fn load_account<H: AuthHost>(host: &H, user_id: &str) -> Result<Account, ApiError> {
    let id: uuid::Uuid = user_id.parse().map_err(|_| ApiError::unauthorized())?;
    host.account(id).await?.ok_or_else(ApiError::unauthorized)
}

/// A user token for `account`, with the scopes of their role in this server's roles. A
/// `pending` user (invited, not yet activated) gets a token without scopes: enough to activate
/// their account at central (set a password and security answers), nothing else.
fn user_token<H: AuthHost>(host: &H, account: &Account) -> Result<String, ApiError> {
    let core = host.auth();
    let scopes = match account.user.status {
        UserStatus::Deactivated => return Err(ApiError::forbidden("User is deactivated")),
        UserStatus::Pending => Vec::new(),
        UserStatus::Active => core
            .roles
            .scopes_of(&account.user.role)
            .ok_or_else(|| ApiError::forbidden(format!("Unknown role {}", account.user.role)))?
            .encode(),
    };
    core.tokens
        .mint_user(
            &account.user.id.to_string(),
            &account.user.role,
            scopes,
            credential_tag(&account.password_hash),
            wall_ms() / 1000,
        )
        .map_err(|e| ApiError::internal(&e))
}

/// Whether a user token (its `claims`) still stands for `account`: the user is not deactivated
/// and their password has not changed since it was minted.
pub fn still_valid(claims: &Claims, account: &Account) -> bool {
    account.user.status != UserStatus::Deactivated
        && claims.cred.as_deref() == Some(credential_tag(&account.password_hash).as_str())
}

/// An audit row of `account` doing `operation` (at their office).
pub fn user_audit(
    account: &Account,
    operation: &'static str,
    subject: Option<String>,
) -> AuditEntry {
    AuditEntry {
        actor: account.user.id.to_string(),
        actor_type: "user",
        location: Some(account.user.primary_office_id),
        operation,
        subject,
        detail: None,
    }
}

/// Writes one audit row.
pub async fn write_audit<H: AuthHost>(host: &H, entry: AuditEntry) -> Result<(), ApiError> {
    host.accounts_write(move |conn, now_ms| {
        accounts::audit(conn, now_ms, &entry).map_err(|e| ApiError::internal(&e))
    })
    .await
}

/// `POST /auth/verifyCode {nonce, code}` → `{token}`.
pub async fn verify_code<H: AuthHost>(
    State(host): State<Arc<H>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let input: VerifyCodeInput = body::json(body)?;
    let verdict = LoginBook::lock(&host.auth().logins).pending.verify(
        &input.nonce,
        &input.code,
        !host.auth().two_factor,
        wall_ms(),
    );
    let user_id = match verdict {
        CodeVerdict::Accepted { user_id } => user_id,
        CodeVerdict::UnknownNonce => return Err(unknown_nonce()),
        CodeVerdict::WrongCode => {
            return Err(ApiError::new(ErrorCode::Unauthorized, "Wrong code"));
        }
    };
    let account = load_account(&*host, &user_id).await?;
    let token = user_token(&*host, &account)?;
    write_audit(&*host, user_audit(&account, "user.logged_in", None)).await?;
    tracing::info!(user = %account.user.id, "user logged in");
    Ok(axum::Json(
        serde_json::to_value(TokenOutput { token }).map_err(|e| ApiError::internal(&e))?,
    ))
}

/// `POST /auth/refreshToken {token}` → `{token}`: a fresh token for a valid one. A user's
/// scopes are those of their role now; a deactivated user gets none.
pub async fn refresh_token<H: AuthHost>(
    State(host): State<Arc<H>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let input: TokenInput = body::json(body)?;
    let tokens = &host.auth().tokens;
    let claims = tokens
        .validate(&input.token)
        .map_err(|_| ApiError::unauthorized())?;
    let token = match claims.user_type {
        TokenUserType::User => {
            let account = load_account(&*host, &claims.sub).await?;
            // A deactivated user is told so (403, from `user_token`); a token from before a
            // password change is just invalid.
            if claims.cred.as_deref() != Some(credential_tag(&account.password_hash).as_str()) {
                return Err(ApiError::unauthorized());
            }
            user_token(&*host, &account)?
        }
        TokenUserType::System => {
            let client = host
                .client(claims.sub.clone())
                .await?
                .filter(|c| c.status == "active")
                .ok_or_else(ApiError::unauthorized)?;
            tokens
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
pub async fn invalidate_token<H: AuthHost>(
    State(host): State<Arc<H>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let input: TokenInput = body::json(body)?;
    let claims = host
        .auth()
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
    host.accounts_write(move |conn, now_ms| {
        accounts::revoke_token(conn, now_ms, digest, claims.exp)
            .and_then(|()| accounts::audit(conn, now_ms, &audit))
            .map_err(|e| ApiError::internal(&e))
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
