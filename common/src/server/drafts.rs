//! People's drafts (OpenCRVS action drafts, §1.5), the same at node and central: a person's
//! unsubmitted work on an action, one per record and user, kept where it was made and dropped
//! once the record gets any action other than READ, ASSIGN or UNASSIGN. The input, its checks
//! and the draft as answered are here; each server checks the record and stores the draft in
//! its own `drafts` table (SQL in [`super::accounts`]).

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::actions::{Acting, check_transaction_id, parse_event_id};
use super::auth::TokenUserType;
use super::{ApiError, Caller};
use crate::config::{EventConfig, ValidationMode};
use crate::event::{ActionType, Declaration, format_timestamp_ms};

/// `DraftInput`: an action's input without its effects, strict.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DraftInput {
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

/// Whether an action of `action_type` on a record drops its drafts.
pub fn clears_drafts(action_type: ActionType) -> bool {
    !matches!(
        action_type,
        ActionType::Read | ActionType::Assign | ActionType::Unassign
    )
}

/// 403 for a system client: drafts belong to people.
pub fn users_only(caller: &Caller) -> Result<(), ApiError> {
    if caller.user_type == TokenUserType::System {
        Err(ApiError::forbidden("Drafts belong to users"))
    } else {
        Ok(())
    }
}

impl DraftInput {
    /// Checks the input for a draft on `raw_event_id` (400s); the record's id.
    pub fn check(&self, caller: &Caller, raw_event_id: &str) -> Result<Uuid, ApiError> {
        users_only(caller)?;
        let event_id = parse_event_id(raw_event_id)?;
        if self
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
        check_transaction_id(&self.transaction_id)?;
        if self.action_type.is_meta()
            || matches!(self.action_type, ActionType::Create | ActionType::Delete)
        {
            return Err(ApiError::input_one(
                "invalid_enum_value",
                format!("No draft of a {} action", self.action_type.as_str()),
                &["type"],
            ));
        }
        if self.status.as_deref().is_some_and(|s| s != "Requested") {
            return Err(ApiError::input_one(
                "invalid_literal",
                "Invalid literal value, expected \"Requested\"",
                &["status"],
            ));
        }
        Ok(event_id)
    }

    /// The draft as answered and stored, with its new id, after checking its declaration's
    /// field shapes against the record's event type (a draft is partial by nature: `required`
    /// is not enforced).
    pub fn draft(
        self,
        config: &EventConfig,
        event_id: Uuid,
        caller: &Caller,
        acting: &Acting,
        now_ms: u64,
    ) -> Result<(Uuid, Value), ApiError> {
        if let Err(issues) = config.validate_declaration(&self.declaration, ValidationMode::Notify)
        {
            let message = serde_json::to_string(&issues).unwrap_or_else(|_| "Invalid input".into());
            return Err(ApiError::bad_request(message));
        }
        let id = Uuid::now_v7();
        let draft = json!({
            "id": id,
            "eventId": event_id,
            "transactionId": self.transaction_id,
            "createdAt": format_timestamp_ms(now_ms),
            "action": {
                "type": self.action_type,
                "status": "Requested",
                "declaration": self.declaration,
                "annotation": self.annotation.unwrap_or_default(),
                "originalActionId": self.original_action_id,
                "keepAssignment": self.keep_assignment,
                "createdBy": caller.id,
                "createdByUserType": "user",
                "createdByRole": caller.role,
                "createdAtLocation": acting.actor.location,
            }
        });
        Ok((id, draft))
    }
}

/// The answer of `GET /drafts`: the stored drafts (JSON as answered) as one array.
pub fn list_answer(rows: &[String]) -> Result<Value, ApiError> {
    rows.iter()
        .map(|text| serde_json::from_str::<Value>(text))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
        .map_err(|e| ApiError::internal(&e))
}
