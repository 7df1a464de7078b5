//! Import of whole records from another system (`record.import`; OpenCRVS `event.bulkImport`),
//! the checks node and central share: the scope, the tracking id's shape, one CREATE, the
//! bounds, no DELETE, and every declaration's shape. Each server then stores the record its own
//! way (a node in one signed log entry, central as its own `actions` record).

use std::future::Future;

use serde_json::Value;

use super::actions::request_hash;
use super::{ApiError, Caller};
use crate::config::{EventConfigSet, ValidationMode};
use crate::event::{ActionType, EventDocument};
use crate::ids::TrackingId;
use crate::state::canonical_order;

/// Most actions one imported record may carry.
pub const IMPORT_ACTIONS_MAX: usize = 1000;

/// Most records one bulk import (tRPC `event.bulkImport`) may carry.
pub const IMPORT_RECORDS_MAX: usize = 100;

/// 403 without a `record.import` scope.
pub fn require_scope(caller: &Caller) -> Result<(), ApiError> {
    if caller.scopes.has_kind("record.import") {
        Ok(())
    } else {
        Err(ApiError::forbidden("Missing scope record.import"))
    }
}

/// Checks an imported record before anything is written; puts its actions in canonical order
/// and answers the hash of the record as imported (a re-import carries the same one).
pub fn check(events: &EventConfigSet, doc: &mut EventDocument) -> Result<Vec<u8>, ApiError> {
    let config = events.get(&doc.event_type).ok_or_else(|| {
        ApiError::input_one(
            "invalid_enum_value",
            format!("Invalid event type '{}'", doc.event_type),
            &["type"],
        )
    })?;
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
    canonical_order(&mut doc.actions);
    Ok(request_hash(doc))
}

/// The records of a tRPC `event.bulkImport` input: at most [`IMPORT_RECORDS_MAX`].
pub fn bulk_input(input: Value) -> Result<Vec<EventDocument>, ApiError> {
    let docs: Vec<EventDocument> = serde_json::from_value(input)
        .map_err(|e| ApiError::input_one("invalid_type", e.to_string(), &[]))?;
    if docs.len() > IMPORT_RECORDS_MAX {
        return Err(ApiError::input_one(
            "too_big",
            format!("At most {IMPORT_RECORDS_MAX} records per import"),
            &[],
        ));
    }
    Ok(docs)
}

/// Imports `docs` one after the other with `import` (each in its own write); stops at the first
/// refusal (the ones before it are stored). Answers the records as stored.
pub async fn import_each<F, Fut>(
    docs: Vec<EventDocument>,
    mut import: F,
) -> Result<Vec<EventDocument>, ApiError>
where
    F: FnMut(EventDocument) -> Fut,
    Fut: Future<Output = Result<EventDocument, ApiError>>,
{
    let mut stored = Vec::with_capacity(docs.len());
    for doc in docs {
        stored.push(import(doc).await?);
    }
    Ok(stored)
}
