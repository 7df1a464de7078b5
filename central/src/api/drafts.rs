//! People's drafts at central (OpenCRVS action drafts, §1.5), as at a node
//! (`crvs_common::server::drafts`): kept at central for central's users, one per record and
//! user, dropped once central records an action on the record other than READ, ASSIGN or
//! UNASSIGN. `POST /events/{eventId}/draft` (tRPC `event.draft.create`) creates or replaces the
//! caller's; `GET /drafts` (tRPC `event.draft.list`) lists them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use crvs_common::server::actions::acting;
use crvs_common::server::drafts::{DraftInput, list_answer, users_only};
use crvs_common::state::is_deleted;
use serde_json::Value;

use super::{ApiError, AppState, Caller, body};

/// `POST /events/{eventId}/draft`.
pub(crate) async fn create_route(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let input: DraftInput = body::json(body)?;
    Ok(axum::Json(create(state, caller, &raw_id, input).await?))
}

/// Creates or replaces the caller's draft on a record of their jurisdiction (`record.read`;
/// any other record is "not found"); answers the draft.
pub(crate) async fn create(
    state: Arc<AppState>,
    caller: Caller,
    raw_event_id: &str,
    input: DraftInput,
) -> Result<Value, ApiError> {
    let event_id = input.check(&caller, raw_event_id)?;
    let acting = acting(state.as_ref(), &caller).await?;
    let (doc, places) = state
        .store
        .read_async(move |r| Ok((r.event_document(event_id)?, r.location_set()?)))
        .await?;
    let doc = doc
        .filter(|doc| !is_deleted(&doc.actions))
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    let config = state.config.events.get(&doc.event_type).ok_or_else(|| {
        ApiError::internal(&format!("event type {} is not configured", doc.event_type))
    })?;
    if !acting.may(&caller.scopes, config, &doc, &["record.read"], |l| {
        places.location_chain(l)
    }) {
        return Err(ApiError::event_not_found(event_id));
    }
    let (id, draft) = input.draft(config, event_id, &caller, &acting, crate::store::wall_ms())?;
    let text = draft.to_string();
    let user_id = caller.id.clone();
    state
        .store
        .write_async(move |tx| tx.put_draft(event_id, &user_id, id, &text))
        .await?;
    Ok(draft)
}

/// `GET /drafts`: the caller's drafts.
pub(crate) async fn list_route(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(list(state, caller).await?))
}

/// The caller's drafts.
pub(crate) async fn list(state: Arc<AppState>, caller: Caller) -> Result<Value, ApiError> {
    users_only(&caller)?;
    let user_id = caller.id.clone();
    let rows = state
        .store
        .read_async(move |r| r.drafts_of(&user_id))
        .await?;
    list_answer(&rows)
}
