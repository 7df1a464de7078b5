//! The OpenCRVS 2.0 event model with its exact wire names: `EventDocument`, `ActionDocument`,
//! `ActionType`, `ActionStatus`. Nulls are dropped on output, as OpenCRVS does.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{ActionId, EventId};

/// A declaration or annotation: a flat map keyed by the country's dotted field ids.
pub type Declaration = Map<String, Value>;

/// Every action type of OpenCRVS 2.0 (`ActionType.ts`), plus the 1.9 `VALIDATE` for reading old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionType {
    /// Deletes an undeclared draft. OpenCRVS drops the record; here it is an Accepted action in
    /// the signed log (the CREATE may have synced already), after which the record is not found.
    Delete,
    /// Creates the record; always the first action.
    Create,
    /// An incomplete declaration from a health system.
    Notify,
    /// A complete declaration.
    Declare,
    /// v1.9 only: replaced by the custom action `VALIDATE_DECLARATION` in 2.0.
    Validate,
    /// Edit of a notified or declared record.
    Edit,
    /// Registration.
    Register,
    /// System action: possible duplicates found.
    DuplicateDetected,
    /// Reviewer: it is a duplicate.
    MarkAsDuplicate,
    /// Reviewer: it is not a duplicate.
    MarkAsNotDuplicate,
    /// Sent back for updates.
    Reject,
    /// Archived.
    Archive,
    /// Certified copy printed.
    PrintCertificate,
    /// Correction requested.
    RequestCorrection,
    /// Correction approved.
    ApproveCorrection,
    /// Correction rejected.
    RejectCorrection,
    /// Read (audit).
    Read,
    /// Assignment (the record lock).
    Assign,
    /// Unassignment.
    Unassign,
    /// Country-defined action.
    Custom,
}

impl ActionType {
    /// Every action type, in declaration order.
    pub const ALL: [Self; 20] = [
        Self::Delete,
        Self::Create,
        Self::Notify,
        Self::Declare,
        Self::Validate,
        Self::Edit,
        Self::Register,
        Self::DuplicateDetected,
        Self::MarkAsDuplicate,
        Self::MarkAsNotDuplicate,
        Self::Reject,
        Self::Archive,
        Self::PrintCertificate,
        Self::RequestCorrection,
        Self::ApproveCorrection,
        Self::RejectCorrection,
        Self::Read,
        Self::Assign,
        Self::Unassign,
        Self::Custom,
    ];

    /// The wire name, e.g. `PRINT_CERTIFICATE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delete => "DELETE",
            Self::Create => "CREATE",
            Self::Notify => "NOTIFY",
            Self::Declare => "DECLARE",
            Self::Validate => "VALIDATE",
            Self::Edit => "EDIT",
            Self::Register => "REGISTER",
            Self::DuplicateDetected => "DUPLICATE_DETECTED",
            Self::MarkAsDuplicate => "MARK_AS_DUPLICATE",
            Self::MarkAsNotDuplicate => "MARK_AS_NOT_DUPLICATE",
            Self::Reject => "REJECT",
            Self::Archive => "ARCHIVE",
            Self::PrintCertificate => "PRINT_CERTIFICATE",
            Self::RequestCorrection => "REQUEST_CORRECTION",
            Self::ApproveCorrection => "APPROVE_CORRECTION",
            Self::RejectCorrection => "REJECT_CORRECTION",
            Self::Read => "READ",
            Self::Assign => "ASSIGN",
            Self::Unassign => "UNASSIGN",
            Self::Custom => "CUSTOM",
        }
    }

    /// Meta actions (READ, ASSIGN, UNASSIGN) change no status and raise no status flag.
    pub fn is_meta(self) -> bool {
        matches!(self, Self::Read | Self::Assign | Self::Unassign)
    }

    /// Actions that go through the confirmation hook (`ConfirmableActions`).
    pub fn is_confirmable(self) -> bool {
        matches!(
            self,
            Self::Notify
                | Self::Declare
                | Self::Edit
                | Self::Register
                | Self::Reject
                | Self::Archive
                | Self::PrintCertificate
                | Self::RequestCorrection
                | Self::ApproveCorrection
                | Self::RejectCorrection
                | Self::Custom
        )
    }
}

impl fmt::Display for ActionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Confirmation status of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ActionStatus {
    /// Recorded, waiting for confirmation.
    Requested,
    /// Confirmed.
    Accepted,
    /// Refused by the confirmation step.
    Rejected,
}

impl ActionStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "Requested",
            Self::Accepted => "Accepted",
            Self::Rejected => "Rejected",
        }
    }
}

/// Who made an action: a person or a system client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserType {
    /// A logged-in person.
    User,
    /// A system (integration) client.
    System,
}

/// One action of an event, as OpenCRVS sends it. Per-type extras are optional fields that are
/// omitted when absent (OpenCRVS drops nulls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionDocument {
    /// Action id.
    pub id: ActionId,
    /// Action type.
    #[serde(rename = "type")]
    pub action_type: ActionType,
    /// Client-supplied idempotency key.
    pub transaction_id: String,
    /// Confirmation status.
    pub status: ActionStatus,
    /// User id or system client id.
    pub created_by: String,
    /// `user` or `system`.
    pub created_by_user_type: UserType,
    /// Role id (users only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by_role: Option<String>,
    /// Where the action was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_location: Option<uuid::Uuid>,
    /// Capture time (ISO 8601, milliseconds, UTC).
    pub created_at: String,
    /// Partial update of form data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declaration: Option<Declaration>,
    /// Action-specific data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<Declaration>,
    /// On an Accepted or Rejected action: the Requested action it confirms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_action_id: Option<ActionId>,
    /// Type-specific `content` (reason, comment, duplicates, template id, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// REGISTER (Accepted): the registration number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_number: Option<String>,
    /// APPROVE_CORRECTION / REJECT_CORRECTION: the request they answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// ASSIGN: the assignee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<String>,
    /// CUSTOM: the country-defined action type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_action_type: Option<String>,
}

impl ActionDocument {
    /// A copy without the data the action carries (`declaration`, `annotation`, `content`):
    /// what an event's status, flags, assignment and legal statuses derive from, at a fraction
    /// of a full clone's cost.
    pub fn metadata(&self) -> Self {
        Self {
            id: self.id,
            action_type: self.action_type,
            transaction_id: self.transaction_id.clone(),
            status: self.status,
            created_by: self.created_by.clone(),
            created_by_user_type: self.created_by_user_type,
            created_by_role: self.created_by_role.clone(),
            created_at_location: self.created_at_location,
            created_at: self.created_at.clone(),
            declaration: None,
            annotation: None,
            original_action_id: self.original_action_id,
            content: None,
            registration_number: self.registration_number.clone(),
            request_id: self.request_id.clone(),
            assigned_to: self.assigned_to.clone(),
            custom_action_type: self.custom_action_type.clone(),
        }
    }
}

/// An event record: exactly `{id, type, createdAt, updatedAt, actions, trackingId}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventDocument {
    /// Event id.
    pub id: EventId,
    /// Event type id (`birth`, `death`, ...).
    #[serde(rename = "type")]
    pub event_type: String,
    /// Creation time.
    pub created_at: String,
    /// Last update excluding changes from meta actions.
    pub updated_at: String,
    /// Actions: CREATE first, then by `createdAt`.
    pub actions: Vec<ActionDocument>,
    /// 6-character tracking id.
    pub tracking_id: String,
}

/// The payload a log entry carries: the actions one write recorded on one event, plus the event
/// facts needed to apply them on any replica (central learns the event's type and tracking id
/// from any of its entries). Serialised as JSON inside the signed entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntryPayload {
    /// Event id.
    pub event_id: EventId,
    /// Event type id.
    pub event_type: String,
    /// The event's tracking id.
    pub tracking_id: String,
    /// When the event was created.
    pub event_created_at: String,
    /// The actions, in the order they were recorded.
    pub actions: Vec<ActionDocument>,
}

/// Formats milliseconds since the Unix epoch as ISO 8601 UTC with milliseconds,
/// `2026-07-01T09:00:00.000Z`, as JavaScript's `Date.toISOString` does.
pub fn format_timestamp_ms(epoch_ms: u64) -> String {
    let ms = epoch_ms % 1000;
    let secs = epoch_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let (y, mo, d) = civil_from_days(days as i64);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_like_javascript() {
        assert_eq!(format_timestamp_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp_ms(1_782_896_400_123),
            "2026-07-01T09:00:00.123Z"
        );
        assert_eq!(
            format_timestamp_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn action_type_names_round_trip() {
        for t in ActionType::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<ActionType>(&json).unwrap(), t);
        }
    }

    #[test]
    fn action_drops_nulls() {
        let a = ActionDocument {
            id: uuid::Uuid::nil(),
            action_type: ActionType::Create,
            transaction_id: "tx".into(),
            status: ActionStatus::Accepted,
            created_by: "c".into(),
            created_by_user_type: UserType::System,
            created_by_role: None,
            created_at_location: None,
            created_at: format_timestamp_ms(0),
            declaration: Some(Map::new()),
            annotation: None,
            original_action_id: None,
            content: None,
            registration_number: None,
            request_id: None,
            assigned_to: None,
            custom_action_type: None,
        };
        let v = serde_json::to_value(&a).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "createdAt",
                "createdBy",
                "createdByUserType",
                "declaration",
                "id",
                "status",
                "transactionId",
                "type"
            ]
        );
    }
}
