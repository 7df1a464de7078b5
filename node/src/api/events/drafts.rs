//! Users' drafts (OpenCRVS action drafts, §1.5): a person's unsubmitted work on an action, one
//! per record and user, kept at the node only and dropped once the record gets any action other
//! than READ, ASSIGN or UNASSIGN. `POST /events/{eventId}/draft` (tRPC `event.draft.create`)
//! creates or replaces it; `GET /drafts` (tRPC `event.draft.list`) lists the caller's.

use std::sync::Arc;

use crvs_common::config::ValidationMode;
use crvs_common::event::{ActionType, Declaration, format_timestamp_ms};
use crvs_common::state::is_deleted;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{check_transaction_id, event_config, parse_event_id};
use crate::api::{ApiError, AppState, Caller};
use crate::auth::TokenUserType;
use crate::store::wall_ms;

/// `DraftInput`: an action's input without its effects, strict.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DraftInput {
    #[serde(default)]
    event_id: Option<String>,
    transaction_id: String,
    #[serde(rename = "type")]
    action_type: ActionType,
    #[serde(default)]
    declaration: Declaration,
    #[serde(default)]
    annotation: Option<Declaration>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    original_action_id: Option<String>,
    #[serde(default)]
    keep_assignment: Option<bool>,
}

fn users_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.user_type == TokenUserType::System {
        Err(ApiError::forbidden("Drafts belong to users"))
    } else {
        Ok(())
    }
}

/// Creates or replaces the caller's draft on `raw_event_id`; answers the draft.
pub(crate) async fn create(
    state: Arc<AppState>,
    caller: Caller,
    raw_event_id: &str,
    input: DraftInput,
) -> Result<Value, ApiError> {
    users_only(&caller)?;
    let event_id = parse_event_id(raw_event_id)?;
    if input
        .event_id
        .as_deref()
        .is_some_and(|given| given != raw_event_id)
    {
        return Err(ApiError::input_one(
            "invalid_string",
            "eventId does not match the record",
            &["eventId"],
        ));
    }
    check_transaction_id(&input.transaction_id)?;
    if input.action_type.is_meta()
        || matches!(input.action_type, ActionType::Create | ActionType::Delete)
    {
        return Err(ApiError::input_one(
            "invalid_enum_value",
            format!("No draft of a {} action", input.action_type.as_str()),
            &["type"],
        ));
    }
    if input.status.as_deref().is_some_and(|s| s != "Requested") {
        return Err(ApiError::input_one(
            "invalid_literal",
            "Invalid literal value, expected \"Requested\"",
            &["status"],
        ));
    }
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
    // A draft is partial by nature: field shapes are checked, `required` is not.
    if let Err(issues) = config.validate_declaration(&input.declaration, ValidationMode::Notify) {
        let message = serde_json::to_string(&issues).unwrap_or_else(|_| "Invalid input".into());
        return Err(ApiError::bad_request(message));
    }
    let id = Uuid::now_v7();
    let draft = json!({
        "id": id,
        "eventId": event_id,
        "transactionId": input.transaction_id,
        "createdAt": format_timestamp_ms(wall_ms()),
        "action": {
            "type": input.action_type,
            "status": "Requested",
            "declaration": input.declaration,
            "annotation": input.annotation.unwrap_or_default(),
            "originalActionId": input.original_action_id,
            "keepAssignment": input.keep_assignment,
            "createdBy": caller.id,
            "createdByUserType": "user",
            "createdByRole": caller.role,
            "createdAtLocation": acting.actor.location,
        }
    });
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
    let drafts = rows
        .iter()
        .map(|text| serde_json::from_str::<Value>(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Value::Array(drafts))
}
