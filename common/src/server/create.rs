//! `POST /events` (OpenCRVS `EventInput`; tRPC `event.create`): the input and its checks, the
//! same at node and central, in OpenCRVS's order: scope kind (403), input (400), the scope for
//! the event type (403). Each server then issues the tracking id from its own pool (a node's
//! lease, or central's national id space) and stores the CREATE (and a person's ASSIGN).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use serde::{Deserialize, Serialize};

use super::actions::check_transaction_id;
use super::{ApiError, Caller, body};
use crate::config::EventConfigSet;

/// `POST /events` body (`EventInput`), strict.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInput {
    /// Event type id.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The client's idempotency key.
    pub transaction_id: String,
    /// Where the record is created (system clients only; a person creates at their office).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_location: Option<String>,
}

/// Parses and checks a create request of `caller`.
pub fn check_create(
    caller: &Caller,
    events: &EventConfigSet,
    body: Result<Bytes, BytesRejection>,
) -> Result<CreateInput, ApiError> {
    caller.require_kind("record.create")?;
    let input: CreateInput = body::json(body)?;
    check_transaction_id(&input.transaction_id)?;
    if events.get(&input.event_type).is_none() {
        return Err(ApiError::input_one(
            "invalid_enum_value",
            format!("Invalid event type '{}'", input.event_type),
            &["type"],
        ));
    }
    caller.require("record.create", &input.event_type)?;
    Ok(input)
}
