//! The node's action routes for people (OpenCRVS §1.3, §2.4) over the shared action core
//! (`crvs_common::server::actions`): the record is read, checked and planned inside one write
//! job that appends the actions and their signed log entry, so every action syncs like a
//! notification does. REGISTER stays Requested here: central answers it with a number.

use std::sync::Arc;

use crvs_common::event::{EventDocument, UserType};
use crvs_common::server::actions::{Checked, check_request, plan, replay_conflict};
use crvs_common::state::is_deleted;

pub(crate) use crvs_common::server::actions::{Acting, ActionInput, UserAction};

use super::event_config;
use crate::api::{ApiError, AppState, Caller};
use crate::store::{EventMeta, WriteCtx};

/// `DELETE /events/{eventId}`: deletes an undeclared draft (status CREATED) assigned to the
/// caller. The DELETE is a signed action like any other, so the deletion reaches central; from
/// then on the record is not found.
pub(crate) async fn delete(
    state: Arc<AppState>,
    caller: Caller,
    raw_event_id: &str,
) -> Result<EventDocument, ApiError> {
    perform(
        state,
        caller,
        UserAction::Delete,
        raw_event_id,
        ActionInput::delete(),
    )
    .await
}

/// Who the caller is for the action core (401 for a user this node no longer holds, or one
/// deactivated since).
pub(crate) async fn acting(state: &AppState, caller: &Caller) -> Result<Acting, ApiError> {
    crvs_common::server::actions::acting(state, caller).await
}

/// Whether `acting` may do something of `kinds` to `doc` (scopes and jurisdiction).
pub(crate) async fn may(
    state: &Arc<AppState>,
    acting: &Acting,
    caller: &Caller,
    doc: &EventDocument,
    kinds: &'static [&'static str],
) -> Result<bool, ApiError> {
    if acting.actor.user_type == UserType::System {
        return Ok(kinds
            .iter()
            .any(|k| caller.scopes.allows(k, &doc.event_type)));
    }
    let config = event_config(state, &doc.event_type)?.clone();
    let (acting, scopes, doc) = (acting.clone(), caller.scopes.clone(), doc.clone());
    Ok(state
        .store
        .read(move |r| {
            Ok(acting.may(&scopes, &config, &doc, kinds, |location| {
                r.area_chain(location).unwrap_or_default()
            }))
        })
        .await?)
}

/// The audit row of `acting` doing `operation`.
pub(crate) fn audit_entry(
    acting: &crvs_common::server::actions::Actor,
    operation: &'static str,
    subject: Option<String>,
    detail: Option<String>,
) -> crate::store::AuditEntry {
    crate::store::AuditEntry {
        actor: acting.id.clone(),
        actor_type: match acting.user_type {
            UserType::User => "user",
            UserType::System => "system",
        },
        location: acting.location,
        operation,
        subject,
        detail,
    }
}

/// Runs one user action on `event_id`. Idempotent on `transactionId`: a replay of the same
/// request answers the record as it is; a different request with the same id is a 409.
pub(crate) async fn perform(
    state: Arc<AppState>,
    caller: Caller,
    action: UserAction,
    raw_event_id: &str,
    input: ActionInput,
) -> Result<EventDocument, ApiError> {
    let checked = check_request(&caller, action, raw_event_id, input)?;
    let acting = acting(&state, &caller).await?;
    let state_for_job = Arc::clone(&state);
    state
        .store
        .write(move |ctx| act_in_job(ctx, &state_for_job, &acting, &caller, &checked))
        .await
}

fn act_in_job(
    ctx: &mut WriteCtx<'_>,
    state: &AppState,
    acting: &Acting,
    caller: &Caller,
    checked: &Checked,
) -> Result<EventDocument, ApiError> {
    let event_id = checked.event_id;
    // The first action carries the request hash; a replay finds it.
    if let Some((existing_event, stored)) = ctx.reader().action_by_transaction(
        &checked.input.transaction_id,
        checked.action.action_type().as_str(),
        checked.action.first_status().as_str(),
    )? {
        if existing_event != event_id || stored.as_deref() != Some(checked.hash.as_slice()) {
            return Err(replay_conflict());
        }
        return ctx
            .reader()
            .event_document(event_id)?
            .ok_or_else(|| ApiError::event_not_found(event_id));
    }
    let doc = ctx
        .document(event_id)?
        .filter(|doc| !is_deleted(&doc.actions))
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    let config = event_config(state, &doc.event_type)?;
    let now = ctx.now_ms();
    let planned = {
        let reader = ctx.reader();
        plan(
            checked,
            &doc,
            config,
            acting,
            &caller.scopes,
            now,
            |location| reader.area_chain(location).unwrap_or_default(),
        )?
    };
    let meta = EventMeta::of(&doc);
    if planned.clears_drafts {
        ctx.clear_drafts(&event_id.to_string())?;
    }
    for (i, action) in planned.actions.into_iter().enumerate() {
        let hash = (i == 0).then_some(checked.hash.as_slice());
        ctx.append_action(&meta, action, hash)?;
    }
    Ok(ctx.finish_event()?)
}
