//! Users' drafts (OpenCRVS action drafts, §1.5): a person's unsubmitted work on an action, one
//! per record and user, kept at the node only and dropped once the record gets any action other
//! than READ, ASSIGN or UNASSIGN. `POST /events/{eventId}/draft` (tRPC `event.draft.create`)
//! creates or replaces it; `GET /drafts` (tRPC `event.draft.list`) lists the caller's. The input
//! and its checks are shared with central (`crvs_common::server::drafts`).

use std::sync::Arc;

use crvs_common::server::drafts::{list_answer, users_only};
use crvs_common::state::is_deleted;
use serde_json::Value;

pub(crate) use crvs_common::server::drafts::DraftInput;

use super::event_config;
use crate::api::{ApiError, AppState, Caller};
use crate::store::wall_ms;

/// Creates or replaces the caller's draft on `raw_event_id`; answers the draft.
pub(crate) async fn create(
    state: Arc<AppState>,
    caller: Caller,
    raw_event_id: &str,
    input: DraftInput,
) -> Result<Value, ApiError> {
    let event_id = input.check(&caller, raw_event_id)?;
    let acting = super::actions::acting(&state, &caller).await?;
    let doc = state
        .store
        .read(move |r| r.event_document(event_id))
        .await?
        .filter(|doc| !is_deleted(&doc.actions))
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    if !super::actions::may(&state, &acting, &caller, &doc, &["record.read"]).await? {
        return Err(ApiError::event_not_found(event_id));
    }
    let config = event_config(&state, &doc.event_type)?;
    let (id, draft) = input.draft(config, event_id, &caller, &acting, wall_ms())?;
    let text = draft.to_string();
    let user_id = caller.id.clone();
    state
        .store
        .write(move |ctx| ctx.put_draft(&event_id.to_string(), &user_id, &id.to_string(), &text))
        .await?;
    Ok(draft)
}

/// The caller's drafts.
pub(crate) async fn list(state: Arc<AppState>, caller: Caller) -> Result<Value, ApiError> {
    users_only(&caller)?;
    let user_id = caller.id.clone();
    let rows = state.store.read(move |r| r.drafts_of(&user_id)).await?;
    list_answer(&rows)
}
