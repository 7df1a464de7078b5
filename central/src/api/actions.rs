//! The action set for people at central (OpenCRVS §1.3, §2.4) over the shared action core
//! (`crvs_common::server::actions`), the same checks as at a node: a registrar at central
//! declares, validates, registers, corrects, prints... any record of their jurisdiction. The
//! record is read, checked and planned in one write transaction that records the actions as
//! central's own (signed into central's log for the nodes of the record's area), and drops the
//! record's drafts at central unless it only assigns or unassigns. A REGISTER made here is
//! answered in the same transaction, with a registration number.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use crvs_common::error::ErrorCode;
use crvs_common::event::{ActionType, EventDocument};
use crvs_common::server::actions::{
    Acting, ActionInput, Checked, UserAction, acting, check_request, plan, replay_conflict,
};
use crvs_common::state::is_deleted;

use super::{ApiError, AppState, Caller, body};
use crate::store::WriteTx;

/// `POST /events/{eventId}/{action}` (`declare`, `validate`, `register`, ...).
pub(crate) async fn user_action(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((raw_id, segment)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    let action = UserAction::from_segment(&segment)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "No such route"))?;
    let input: ActionInput = body::json(body)?;
    Ok(axum::Json(
        perform(state, caller, action, &raw_id, input).await?,
    ))
}

/// `DELETE /events/{eventId}`: deletes an undeclared draft assigned to the caller; answers the
/// record as it was.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    Ok(axum::Json(
        perform(
            state,
            caller,
            UserAction::Delete,
            &raw_id,
            ActionInput::delete(),
        )
        .await?,
    ))
}

/// Runs one user action. Idempotent on `transactionId`: a replay of the same request answers
/// the record as it is; a different request with the same id is a 409.
pub(crate) async fn perform(
    state: Arc<AppState>,
    caller: Caller,
    action: UserAction,
    raw_event_id: &str,
    input: ActionInput,
) -> Result<EventDocument, ApiError> {
    let checked = check_request(&caller, action, raw_event_id, input)?;
    let acting = acting(state.as_ref(), &caller).await?;
    let job_state = Arc::clone(&state);
    state
        .store
        .write_async(move |tx| act_in_tx(tx, &job_state, &acting, &caller, &checked))
        .await
}

fn act_in_tx(
    tx: &mut WriteTx<'_>,
    state: &AppState,
    acting: &Acting,
    caller: &Caller,
    checked: &Checked,
) -> Result<EventDocument, ApiError> {
    let event_id = checked.event_id;
    let action_type = checked.action.action_type();
    if let Some((existing_event, stored)) =
        tx.request_by_transaction(&checked.input.transaction_id, action_type.as_str())?
    {
        if existing_event != event_id || stored != checked.hash {
            return Err(replay_conflict());
        }
        return tx
            .reader()
            .event_document(event_id)?
            .ok_or_else(|| ApiError::event_not_found(event_id));
    }
    let doc = tx
        .reader()
        .event_document(event_id)?
        .filter(|doc| !is_deleted(&doc.actions))
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    let config = state.config.events.get(&doc.event_type).ok_or_else(|| {
        ApiError::internal(&format!("event type {} is not configured", doc.event_type))
    })?;
    let places = tx.reader().location_set()?;
    let planned = plan(
        checked,
        &doc,
        config,
        acting,
        &caller.scopes,
        tx.now_ms(),
        |location| places.location_chain(location),
    )?;
    tx.record_request(
        &checked.input.transaction_id,
        action_type.as_str(),
        event_id,
        &checked.hash,
    )?;
    if planned.clears_drafts {
        tx.clear_drafts(event_id)?;
    }
    tx.record_actions(event_id, planned.actions)?;
    if action_type == ActionType::Register {
        tx.confirm_registrations(event_id)?;
    }
    tx.reader()
        .event_document(event_id)?
        .ok_or_else(|| ApiError::event_not_found(event_id))
}
