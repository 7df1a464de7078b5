//! Forgotten username or password, at central (where the security answers are), as OpenCRVS's
//! auth service does it: `POST /auth/verifyUser {mobile|email, retrieveFlow}` → nonce and a
//! code to the user's phone or email (for both flows: OpenCRVS 1.9 skipped it for a username,
//! which made the question an oracle), `POST /auth/verifyNumber {nonce, code}`, then
//! `POST /auth/verifySecurityAnswer {nonce, answer}`, then `POST /auth/changePassword
//! {newPassword, nonce}` or `POST /auth/sendUserName {nonce}`. Each step needs the one before;
//! wrong codes and answers are counted (5, then the nonce is gone); every refusal is 401;
//! lookups are limited to 10 a minute per phone number or email.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use crvs_common::error::ErrorCode;
use crvs_common::limits::LOGIN_CODE_TTL_MS;
use crvs_common::login::{RecoveryError, RecoveryStep, RetrieveFlow};
use crvs_common::server::accounts::AuditEntry;
use crvs_common::server::login::{new_code, notify, random_hex};
use crvs_common::server::wall_ms;
use crvs_common::user::UserStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::people::{Change, hash, save, send_username};
use super::{ApiError, AppState, body};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VerifyUserInput {
    mobile: Option<String>,
    email: Option<String>,
    retrieve_flow: RetrieveFlow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeInput {
    nonce: String,
    code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerInput {
    nonce: String,
    answer: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewPasswordInput {
    new_password: String,
    nonce: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NonceInput {
    nonce: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Step {
    nonce: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    security_question_key: Option<String>,
}

fn refused() -> ApiError {
    ApiError::unauthorized()
}

fn json_of(value: impl Serialize) -> Result<axum::Json<Value>, ApiError> {
    serde_json::to_value(value)
        .map(axum::Json)
        .map_err(|e| ApiError::internal(&e))
}

/// A question of `keys` other than `skip` (the one just missed), or `skip` if it is the only
/// one.
fn pick_question(keys: &[String], skip: Option<&str>) -> Result<String, ApiError> {
    let others: Vec<&String> = keys.iter().filter(|k| Some(k.as_str()) != skip).collect();
    let pool = if others.is_empty() {
        keys.iter().collect()
    } else {
        others
    };
    let random = crate::keys::random_bytes::<8>().map_err(|e| ApiError::internal(&e))?;
    let index =
        usize::try_from(u64::from_le_bytes(random) % pool.len().max(1) as u64).unwrap_or_default();
    pool.get(index)
        .map(|k| (*k).clone())
        .ok_or_else(|| ApiError::conflict("User doesn't have security questions"))
}

/// `POST /auth/verifyUser`: finds the active user with this phone number or email.
pub(crate) async fn verify_user(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let input: VerifyUserInput = body::json(body)?;
    let contact = match (&input.mobile, &input.email) {
        (Some(m), None) => m.clone(),
        (None, Some(e)) => e.to_lowercase(),
        _ => {
            return Err(ApiError::input_one(
                "custom",
                "Give either mobile or email",
                &[],
            ));
        }
    };
    if !state.people.try_lookup(&contact, wall_ms()) {
        return Err(ApiError::new(
            ErrorCode::TooManyRequests,
            "Too many attempts for this contact; try again in a minute",
        ));
    }
    let users = state.store.read_async(|r| r.users()).await?;
    let row = users
        .into_iter()
        .find(|u| {
            u.user.status == UserStatus::Active
                && (u.user.mobile.as_deref() == Some(contact.as_str())
                    || u.user.email.as_deref().map(str::to_lowercase).as_deref()
                        == Some(contact.as_str()))
        })
        .ok_or_else(refused)?;
    let id = row.user.id;
    let answers = state
        .store
        .read_async(move |r| r.security_answers(id))
        .await?;
    let keys: Vec<String> = answers.into_iter().map(|(k, _)| k).collect();
    if keys.is_empty() {
        return Err(ApiError::conflict("User doesn't have security questions"));
    }
    let question = pick_question(&keys, None)?;
    // Both flows prove the contact first (a code to it), so the security question is never an
    // oracle for someone who only knows a phone number.
    let nonce = random_hex::<16>()?;
    let code = new_code(&*state)?;
    let (what, template) = match input.retrieve_flow {
        RetrieveFlow::Username => ("recover your OpenCRVS username", "username-recovery"),
        RetrieveFlow::Password => ("reset your OpenCRVS password", "password-reset"),
    };
    let text = format!("Your code to {what} is {code}.");
    notify(&*state, &row.account(), template, text, LOGIN_CODE_TTL_MS).await?;
    state.people.recoveries().start(
        nonce.clone(),
        id.to_string(),
        input.retrieve_flow,
        question,
        Some(code),
        wall_ms(),
    );
    json_of(Step {
        nonce,
        security_question_key: None,
    })
}

/// `POST /auth/verifyNumber {nonce, code}` → `{nonce, securityQuestionKey}`.
pub(crate) async fn verify_number(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let input: CodeInput = body::json(body)?;
    let recovery = state
        .people
        .recoveries()
        .verify_code(&input.nonce, &input.code, !state.auth.two_factor, wall_ms())
        .map_err(|_| refused())?;
    json_of(Step {
        nonce: input.nonce,
        security_question_key: Some(recovery.question_key),
    })
}

/// `POST /auth/verifySecurityAnswer {nonce, answer}` → `{matched, nonce,
/// securityQuestionKey?}` (a miss asks another question).
pub(crate) async fn verify_security_answer(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let input: AnswerInput = body::json(body)?;
    let now = wall_ms();
    let (user_id, question) = state
        .people
        .recoveries()
        .at(&input.nonce, RecoveryStep::NumberVerified, now)
        .map(|r| (r.user_id.clone(), r.question_key.clone()))
        .ok_or_else(refused)?;
    let id: uuid::Uuid = user_id.parse().map_err(|_| refused())?;
    let answers = state
        .store
        .read_async(move |r| r.security_answers(id))
        .await?;
    let stored = answers
        .iter()
        .find(|(k, _)| *k == question)
        .map(|(_, h)| h.clone())
        .unwrap_or_else(|| crate::auth::DECOY_HASH.to_owned());
    let answer = zeroize::Zeroizing::new(input.answer.trim().to_lowercase());
    let _permit = state.auth.secret_permit().await?;
    let matched = tokio::task::spawn_blocking(move || crate::auth::verify_secret(&stored, &answer))
        .await
        .unwrap_or(false);
    let keys: Vec<String> = answers.into_iter().map(|(k, _)| k).collect();
    let next = pick_question(&keys, Some(&question))?;
    match state
        .people
        .recoveries()
        .answered(&input.nonce, matched, next.clone(), wall_ms())
    {
        Ok(_) => Ok(axum::Json(json!({"matched": true, "nonce": input.nonce}))),
        Err(RecoveryError::Wrong) => Ok(axum::Json(json!({
            "matched": false,
            "nonce": input.nonce,
            "securityQuestionKey": next,
        }))),
        Err(RecoveryError::UnknownNonce) => Err(refused()),
    }
}

/// `POST /auth/changePassword {newPassword, nonce}` → `{}`: the new password, at central and
/// (after sync) at the user's nodes.
pub(crate) async fn change_password(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let input: NewPasswordInput = body::json(body)?;
    crate::admin::check_password(&input.new_password)
        .map_err(|e| ApiError::input_one("too_small", e.to_string(), &["newPassword"]))?;
    let recovery = state
        .people
        .recoveries()
        .finish(&input.nonce, wall_ms())
        .filter(|r| r.flow == RetrieveFlow::Password)
        .ok_or_else(refused)?;
    let id: uuid::Uuid = recovery.user_id.parse().map_err(|_| refused())?;
    let mut row = state
        .store
        .read_async(move |r| r.user(id))
        .await?
        .ok_or_else(refused)?;
    let original = row.clone();
    row.password_hash = hash(&state, input.new_password).await?;
    let audit = AuditEntry {
        actor: recovery.user_id,
        actor_type: "user",
        location: Some(row.user.primary_office_id),
        operation: "user.password_reset",
        subject: Some(id.to_string()),
        detail: None,
    };
    save(
        &state,
        Change {
            original,
            row,
            answers: None,
            audit,
        },
    )
    .await?;
    Ok(axum::Json(json!({})))
}

/// `POST /auth/sendUserName {nonce}` → `{}`: the username to the user's phone or email.
pub(crate) async fn send_user_name(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let input: NonceInput = body::json(body)?;
    let recovery = state
        .people
        .recoveries()
        .finish(&input.nonce, wall_ms())
        .filter(|r| r.flow == RetrieveFlow::Username)
        .ok_or_else(refused)?;
    let id: uuid::Uuid = recovery.user_id.parse().map_err(|_| refused())?;
    let row = state
        .store
        .read_async(move |r| r.user(id))
        .await?
        .ok_or_else(refused)?;
    send_username(&state, &row).await?;
    Ok(axum::Json(json!({})))
}
