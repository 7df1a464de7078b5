//! Import of whole records from another system (`record.import`; OpenCRVS `event.bulkImport`):
//! an `EventDocument` with its own id, tracking id and actions is stored as it is, in one signed
//! log entry, and syncs like any write. For migrations from a legacy register.

use std::sync::Arc;

use crvs_common::config::ValidationMode;
use crvs_common::event::{ActionType, EventDocument};
use crvs_common::ids::TrackingId;
use crvs_common::state::canonical_order;

use super::{event_config, request_hash};
use crate::api::{ApiError, AppState, Caller};
use crate::store::{EventMeta, NewEvent};

/// Most actions one imported record may carry.
pub(crate) const IMPORT_ACTIONS_MAX: usize = 1000;

/// Most records one bulk import (tRPC `event.bulkImport`) may carry.
pub(crate) const IMPORT_RECORDS_MAX: usize = 100;

/// Checks an imported record before anything is written.
fn check(state: &AppState, doc: &EventDocument) -> Result<(), ApiError> {
    let config = event_config(state, &doc.event_type)?;
    doc.tracking_id.parse::<TrackingId>().map_err(|_| {
        ApiError::input_one("invalid_string", "Invalid tracking id", &["trackingId"])
    })?;
    if doc.actions.is_empty() || doc.actions.len() > IMPORT_ACTIONS_MAX {
        return Err(ApiError::input_one(
            "too_big",
            format!("A record carries 1 to {IMPORT_ACTIONS_MAX} actions"),
            &["actions"],
        ));
    }
    let creates = doc
        .actions
        .iter()
        .filter(|a| a.action_type == ActionType::Create)
        .count();
    if creates != 1 {
        return Err(ApiError::input_one(
            "custom",
            "A record has exactly one CREATE action",
            &["actions"],
        ));
    }
    for (i, action) in doc.actions.iter().enumerate() {
        if action.action_type == ActionType::Delete {
            return Err(ApiError::input_one(
                "custom",
                "A deleted record is not imported",
                &["actions", &i.to_string()],
            ));
        }
        if let Some(declaration) = &action.declaration
            && let Err(issues) = config.validate_declaration(declaration, ValidationMode::Notify)
        {
            let message =
                serde_json::to_string(&issues).unwrap_or_else(|_| "Invalid input".to_owned());
            return Err(ApiError::bad_request(message));
        }
    }
    Ok(())
}

/// Imports one record; answers it as stored. Importing the same record again is a 409.
pub(crate) async fn import(
    state: Arc<AppState>,
    caller: Caller,
    mut doc: EventDocument,
) -> Result<EventDocument, ApiError> {
    if !caller.scopes.has_kind("record.import") {
        return Err(ApiError::forbidden("Missing scope record.import"));
    }
    check(&state, &doc)?;
    canonical_order(&mut doc.actions);
    let hash = request_hash(&doc);
    state
        .store
        .write(move |ctx| -> Result<EventDocument, ApiError> {
            let transaction_id = format!("import:{}", doc.id);
            let inserted = ctx.insert_imported_event(&NewEvent {
                id: doc.id,
                event_type: &doc.event_type,
                tracking_id: &doc.tracking_id,
                transaction_id: &transaction_id,
                request_hash: &hash,
                created_at: &doc.created_at,
            })?;
            if !inserted {
                return Err(ApiError::conflict(format!(
                    "A record with id {} or tracking id {} exists already",
                    doc.id, doc.tracking_id
                )));
            }
            for action in &doc.actions {
                let reader = ctx.reader();
                let same_key = reader.action_by_transaction(
                    &action.transaction_id,
                    action.action_type.as_str(),
                    action.status.as_str(),
                )?;
                if reader.action_document(action.id)?.is_some() || same_key.is_some() {
                    return Err(ApiError::conflict(format!(
                        "Action {} (or its transactionId for {} {}) exists already",
                        action.id,
                        action.action_type.as_str(),
                        action.status.as_str()
                    )));
                }
            }
            let meta = EventMeta::of(&doc);
            for action in doc.actions {
                ctx.append_action(&meta, action, None)?;
            }
            Ok(ctx.finish_event()?)
        })
        .await
}
