//! External confirmation of registrations (OpenCRVS §4.3), the network half: a task calls each
//! queued hook (`POST {url}/trigger/events/{eventType}/actions/REGISTER`, the record as body,
//! a single-record token as `Authorization`) and turns its reply into the answer: 200 accepts
//! (with the hook's `registrationNumber` and `nationalId` if given), 202 waits for the hook's
//! signed callback (tRPC `event.actions.register.accept` / `.reject` with that token), 400
//! rejects; anything else (hook down, timeout, 5xx) is retried with exponential backoff, the
//! job staying in the durable queue (`store/hooks.rs`) across restarts.

use std::sync::Arc;
use std::time::Duration;

use crvs_common::event::EventDocument;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{ApiError, AppState, Caller};
use crate::store::{Answered, HookAnswer, HookJob, wall_ms};

/// Longest a hook call may take before it counts as failed (and is retried).
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Most hook calls made in one pass.
pub const HOOK_BATCH_MAX: u32 = 16;

/// How often the queue is looked at when nothing is due.
pub const HOOK_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// First retry delay; doubled per failed attempt up to [`HOOK_BACKOFF_MAX_MS`].
pub const HOOK_BACKOFF_FIRST_MS: u64 = 1_000;

/// Longest delay between two attempts.
pub const HOOK_BACKOFF_MAX_MS: u64 = 300_000;

/// Largest hook reply body read.
pub const HOOK_REPLY_BYTES_MAX: usize = 64 * 1024;

/// Longest registration number a hook may give.
pub const HOOK_NUMBER_CHARS_MAX: usize = 32;

/// Scopes of the single-record token a hook receives.
const HOOK_SCOPES: [&str; 2] = [
    "type=record.confirm-registration",
    "type=record.reject-registration",
];

/// Delay before the attempt after `attempts` failed ones.
pub fn backoff_ms(attempts: u32) -> u64 {
    HOOK_BACKOFF_FIRST_MS
        .saturating_mul(1u64 << attempts.min(20))
        .min(HOOK_BACKOFF_MAX_MS)
}

/// What a hook's 200 may carry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookReply {
    registration_number: Option<String>,
    national_id: Option<String>,
    message: Option<String>,
}

/// Calls due hooks until `stop`.
pub async fn run(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if state.config.action_hooks.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder().timeout(HOOK_TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for confirmation hooks");
            return;
        }
    };
    loop {
        let now = wall_ms();
        let jobs = state
            .store
            .read_async(move |r| r.due_hook_jobs(now, HOOK_BATCH_MAX))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading the hook queue failed");
                Vec::new()
            });
        let idle = jobs.is_empty();
        for job in jobs {
            if let Err(e) = call(&state, &client, &job).await {
                tracing::warn!(error = ?e, action = %job.action_id, "hook call not recorded");
            }
        }
        if idle {
            tokio::select! {
                () = tokio::time::sleep(HOOK_POLL_INTERVAL) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }
}

/// Makes one hook call and records what it answered.
async fn call(
    state: &Arc<AppState>,
    client: &reqwest::Client,
    job: &HookJob,
) -> Result<(), ApiError> {
    let (event_id, action_id) = (job.event_id, job.action_id);
    let found = state
        .store
        .read_async(move |r| Ok((r.event_document(event_id)?, r.index_entry(event_id)?)))
        .await?;
    let (Some(doc), Some(index)) = found else {
        return Ok(());
    };
    let Some(hook) = state.config.action_hooks.iter().find(|h| h.applies(&index)) else {
        // The configuration changed: no hook wants it any more; central answers alone.
        return answer(state, event_id, action_id, HookAnswer::accepted()).await;
    };
    let url = format!(
        "{}/trigger/events/{}/actions/REGISTER",
        hook.url, doc.event_type
    );
    let token = state
        .auth
        .tokens
        .mint_single_record(
            &action_id.to_string(),
            HOOK_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            wall_ms() / 1000,
        )
        .map_err(|e| ApiError::internal(&e))?;
    let sent = client.post(&url).bearer_auth(token).json(&doc).send().await;
    let failure = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = read_reply(response).await;
            match status {
                200 => {
                    let reply: HookReply = serde_json::from_slice(&body).unwrap_or_default();
                    let accept = HookAnswer::Accept {
                        registration_number: reply.registration_number,
                        national_id: reply.national_id,
                    };
                    return answer(state, event_id, action_id, accept).await;
                }
                202 => {
                    tracing::info!(event = %event_id, "confirmation hook will answer later");
                    return Ok(state
                        .store
                        .write_async(move |w| w.hook_waiting(action_id))
                        .await?);
                }
                400 => {
                    let reply: HookReply = serde_json::from_slice(&body).unwrap_or_default();
                    let reason = reply
                        .message
                        .unwrap_or_else(|| "refused by the confirmation hook".to_owned());
                    return answer(state, event_id, action_id, HookAnswer::Reject { reason }).await;
                }
                other => format!("hook answered {other}"),
            }
        }
        Err(e) => format!("hook unreachable: {e}"),
    };
    let next = wall_ms() + backoff_ms(job.attempts);
    tracing::warn!(event = %event_id, attempts = job.attempts + 1, error = %failure, "confirmation hook failed; will retry");
    Ok(state
        .store
        .write_async(move |w| w.hook_retry(action_id, next, &failure))
        .await?)
}

async fn read_reply(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > HOOK_REPLY_BYTES_MAX {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    body
}

async fn answer(
    state: &Arc<AppState>,
    event_id: uuid::Uuid,
    action_id: uuid::Uuid,
    answer: HookAnswer,
) -> Result<(), ApiError> {
    state
        .store
        .write_async(move |w| w.answer_hook(event_id, action_id, answer))
        .await?;
    Ok(())
}

/// Input of the hook's callback (`event.actions.register.accept` / `.reject`): OpenCRVS sends
/// the original action's input with `eventId`, `actionId` and a new `transactionId`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CallbackInput {
    event_id: String,
    action_id: String,
    transaction_id: String,
    #[serde(default)]
    registration_number: Option<String>,
    #[serde(default)]
    national_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default, rename = "type")]
    _action_type: Option<String>,
    #[serde(default, rename = "declaration")]
    _declaration: Option<Value>,
    #[serde(default, rename = "annotation")]
    _annotation: Option<Value>,
    #[serde(default, rename = "keepAssignment")]
    _keep_assignment: Option<bool>,
    #[serde(default, rename = "content")]
    _content: Option<Value>,
}

/// The hook's asynchronous answer, with the single-record token it was given: accepts or
/// rejects the requested REGISTER `actionId` of `eventId`. Idempotent: the same answer again
/// returns the record; the opposite answer to an answered request is a 400.
pub(crate) async fn callback(
    state: Arc<AppState>,
    caller: Caller,
    accept: bool,
    input: Value,
) -> Result<EventDocument, ApiError> {
    let kind = if accept {
        "record.confirm-registration"
    } else {
        "record.reject-registration"
    };
    caller.require_kind(kind)?;
    let input: CallbackInput = serde_json::from_value(input)
        .map_err(|e| ApiError::input_one("invalid_type", e.to_string(), &[]))?;
    crvs_common::server::actions::check_transaction_id(&input.transaction_id)?;
    let event_id = crvs_common::server::actions::parse_event_id(&input.event_id)?;
    let action_id: uuid::Uuid = input
        .action_id
        .parse()
        .map_err(|_| ApiError::input_one("invalid_string", "Invalid uuid", &["actionId"]))?;
    if caller.id != action_id.to_string() {
        return Err(ApiError::forbidden(
            "This token answers another action (single-record token)",
        ));
    }
    if let Some(number) = &input.registration_number
        && (number.is_empty()
            || number.len() > HOOK_NUMBER_CHARS_MAX
            || !number
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'/'))
    {
        return Err(ApiError::input_one(
            "invalid_string",
            "registrationNumber must be 1 to 32 characters of 0-9, A-Z, - and /",
            &["registrationNumber"],
        ));
    }
    let answer = if accept {
        HookAnswer::Accept {
            registration_number: input.registration_number,
            national_id: input.national_id,
        }
    } else {
        HookAnswer::Reject {
            reason: input
                .reason
                .unwrap_or_else(|| "rejected by the confirmation hook".to_owned()),
        }
    };
    let answered = state
        .store
        .write_async(move |w| w.answer_hook(event_id, action_id, answer))
        .await?;
    match answered {
        Answered::Done => {}
        Answered::AlreadyOtherwise => {
            return Err(ApiError::bad_request(
                "The registration was already answered otherwise",
            ));
        }
        Answered::NoRequest => return Err(ApiError::event_not_found(event_id)),
    }
    state
        .store
        .read_async(move |r| r.event_document(event_id))
        .await?
        .ok_or_else(|| ApiError::event_not_found(event_id))
}
