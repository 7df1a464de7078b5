//! Derived state, as pure functions of the action list (OpenCRVS `state/index.ts`, `flags.ts`,
//! `availableActions.ts`): status, flags, the allowed-actions table, declaration aggregation and
//! the search index entry. Nothing here is stored as truth.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::{ActionDocument, ActionStatus, ActionType, Declaration, EventDocument};

/// Event status (`EventStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventStatus {
    /// Only CREATE (and meta actions) so far.
    Created,
    /// An incomplete declaration was received.
    Notified,
    /// A complete declaration was received.
    Declared,
    /// Registered.
    Registered,
    /// Archived.
    Archived,
}

impl EventStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Notified => "NOTIFIED",
            Self::Declared => "DECLARED",
            Self::Registered => "REGISTERED",
            Self::Archived => "ARCHIVED",
        }
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Inherent flag: a correction was requested and not yet answered.
pub const FLAG_CORRECTION_REQUESTED: &str = "correction-requested";
/// Inherent flag: the last declaration was a partial NOTIFY.
pub const FLAG_INCOMPLETE: &str = "incomplete";
/// Inherent flag: sent back for updates.
pub const FLAG_REJECTED: &str = "rejected";
/// Inherent flag: possible duplicates found and not yet reviewed.
pub const FLAG_POTENTIAL_DUPLICATE: &str = "potential-duplicate";
/// Inherent flag: an EDIT was started and must be followed by NOTIFY, DECLARE or REGISTER.
pub const FLAG_EDIT_IN_PROGRESS: &str = "edit-in-progress";
/// Farajaland's custom flag added by `VALIDATE_DECLARATION`.
pub const FLAG_VALIDATED: &str = "validated";
/// The 2.0 custom action that replaced 1.9's VALIDATE.
pub const CUSTOM_VALIDATE_DECLARATION: &str = "VALIDATE_DECLARATION";

/// Status: a fold over the Accepted actions, starting from CREATED.
pub fn derive_status(actions: &[ActionDocument]) -> EventStatus {
    actions
        .iter()
        .filter(|a| a.status == ActionStatus::Accepted)
        .fold(EventStatus::Created, |status, a| match a.action_type {
            ActionType::Create => EventStatus::Created,
            ActionType::Notify => EventStatus::Notified,
            ActionType::Declare => EventStatus::Declared,
            ActionType::Register => EventStatus::Registered,
            ActionType::Archive => EventStatus::Archived,
            _ => status,
        })
}

/// Flags, in OpenCRVS's order: action-status flags (`<type>:<status>` for the non-Accepted last
/// action of each non-meta type, in type order), then inherent flags in the order they were set.
pub fn derive_flags(actions: &[ActionDocument]) -> Vec<String> {
    let mut last_status: BTreeMap<ActionType, ActionStatus> = BTreeMap::new();
    for a in actions.iter().filter(|a| !a.action_type.is_meta()) {
        last_status.insert(a.action_type, a.status);
    }
    let mut flags: Vec<String> = last_status
        .iter()
        .filter(|(_, s)| **s != ActionStatus::Accepted)
        .map(|(t, s)| {
            format!(
                "{}:{}",
                t.as_str().to_lowercase(),
                s.as_str().to_lowercase()
            )
        })
        .collect();

    let mut inherent: Vec<&'static str> = Vec::new();
    let set = |flags: &mut Vec<&'static str>, f: &'static str| {
        if !flags.contains(&f) {
            flags.push(f);
        }
    };
    let clear = |flags: &mut Vec<&'static str>, f: &'static str| flags.retain(|x| *x != f);
    for a in actions
        .iter()
        .filter(|a| a.status == ActionStatus::Accepted)
    {
        let t = a.action_type;
        // edit-in-progress is cleared by any other (non-meta) action.
        if t != ActionType::Edit && !t.is_meta() {
            clear(&mut inherent, FLAG_EDIT_IN_PROGRESS);
        }
        match t {
            ActionType::RequestCorrection => set(&mut inherent, FLAG_CORRECTION_REQUESTED),
            ActionType::ApproveCorrection | ActionType::RejectCorrection => {
                clear(&mut inherent, FLAG_CORRECTION_REQUESTED)
            }
            ActionType::Notify => {
                set(&mut inherent, FLAG_INCOMPLETE);
                clear(&mut inherent, FLAG_REJECTED);
            }
            ActionType::Create | ActionType::Archive => clear(&mut inherent, FLAG_INCOMPLETE),
            ActionType::Declare | ActionType::Register => {
                clear(&mut inherent, FLAG_INCOMPLETE);
                clear(&mut inherent, FLAG_REJECTED);
            }
            ActionType::Reject => set(&mut inherent, FLAG_REJECTED),
            ActionType::Edit => {
                clear(&mut inherent, FLAG_REJECTED);
                set(&mut inherent, FLAG_EDIT_IN_PROGRESS);
            }
            ActionType::DuplicateDetected => set(&mut inherent, FLAG_POTENTIAL_DUPLICATE),
            ActionType::MarkAsDuplicate | ActionType::MarkAsNotDuplicate => {
                clear(&mut inherent, FLAG_POTENTIAL_DUPLICATE)
            }
            ActionType::Validate => {
                clear(&mut inherent, FLAG_REJECTED);
                set(&mut inherent, FLAG_VALIDATED);
            }
            ActionType::Custom
                if a.custom_action_type.as_deref() == Some(CUSTOM_VALIDATE_DECLARATION) =>
            {
                clear(&mut inherent, FLAG_REJECTED);
                set(&mut inherent, FLAG_VALIDATED);
            }
            _ => {}
        }
    }
    flags.extend(inherent.into_iter().map(str::to_owned));
    flags
}

/// The allowed-actions table of OpenCRVS (`getAvailableActionsForEvent`), before flag overrides.
pub fn actions_for_status(status: EventStatus) -> &'static [ActionType] {
    use ActionType as A;
    match status {
        EventStatus::Created => &[A::Read, A::Declare, A::Notify, A::Delete, A::Custom],
        EventStatus::Notified => &[
            A::Read,
            A::Edit,
            A::MarkAsDuplicate,
            A::Archive,
            A::Reject,
            A::Custom,
        ],
        EventStatus::Declared => &[
            A::Read,
            A::Register,
            A::MarkAsDuplicate,
            A::Archive,
            A::Reject,
            A::Custom,
            A::Edit,
        ],
        EventStatus::Registered => &[
            A::Read,
            A::PrintCertificate,
            A::RequestCorrection,
            A::ApproveCorrection,
            A::RejectCorrection,
            A::Custom,
        ],
        EventStatus::Archived => &[A::Read, A::Custom],
    }
}

/// The actions allowed now, with the flag overrides applied:
/// `rejected` (not archived) → READ, NOTIFY, CUSTOM, EDIT, ARCHIVE;
/// `edit-in-progress` → NOTIFY, DECLARE, REGISTER (and READ, which is never blocked);
/// any `*:requested` flag → READ only;
/// `potential-duplicate` → no REGISTER or EDIT, and MARK_AS_NOT_DUPLICATE becomes available.
/// ASSIGN and UNASSIGN are not in the table: they are always allowed (the lock is checked apart).
pub fn allowed_actions(status: EventStatus, flags: &[String]) -> Vec<ActionType> {
    use ActionType as A;
    let has = |f: &str| flags.iter().any(|x| x == f);
    if flags.iter().any(|f| f.ends_with(":requested")) {
        return vec![A::Read];
    }
    if has(FLAG_EDIT_IN_PROGRESS) {
        return vec![A::Read, A::Notify, A::Declare, A::Register];
    }
    let mut allowed: Vec<ActionType> = if has(FLAG_REJECTED) && status != EventStatus::Archived {
        vec![A::Read, A::Notify, A::Custom, A::Edit, A::Archive]
    } else {
        actions_for_status(status).to_vec()
    };
    if has(FLAG_POTENTIAL_DUPLICATE) {
        allowed.retain(|a| !matches!(a, A::Register | A::Edit));
        if allowed.contains(&A::MarkAsDuplicate) {
            allowed.push(A::MarkAsNotDuplicate);
        }
    }
    allowed
}

/// OpenCRVS's 409 message for a disallowed action.
pub fn not_allowed_message(action: ActionType, status: EventStatus, flags: &[String]) -> String {
    let allowed: Vec<&str> = allowed_actions(status, flags)
        .iter()
        .map(|a| a.as_str())
        .collect();
    format!(
        "Action '{}' cannot be performed on an event in '{}' state with [{}] flags. Available actions: {}",
        action.as_str(),
        status.as_str(),
        flags.join(", "),
        allowed.join(", ")
    )
}

/// Whether `action` may be performed now.
pub fn is_allowed(action: ActionType, status: EventStatus, flags: &[String]) -> bool {
    matches!(action, ActionType::Assign | ActionType::Unassign)
        || allowed_actions(status, flags).contains(&action)
}

/// What one Accepted action contributes to the record's declaration, as a partial update
/// (`null` clears a field). An Accepted action with `originalActionId` first carries its
/// Requested action's declaration; PRINT_CERTIFICATE, REQUEST_CORRECTION and REJECT_CORRECTION
/// contribute nothing; APPROVE_CORRECTION carries the values its request proposed (on the
/// request's Requested action, which `requestId`'s Accepted action confirms). Non-Accepted actions
/// contribute nothing. `actions` is the event's whole action list (to resolve references).
pub fn effective_declaration(action: &ActionDocument, actions: &[ActionDocument]) -> Declaration {
    let mut out = Declaration::new();
    if action.status != ActionStatus::Accepted {
        return out;
    }
    let mut take = |decl: Option<&Declaration>| {
        for (k, v) in decl.into_iter().flatten() {
            out.insert(k.clone(), v.clone());
        }
    };
    match action.action_type {
        ActionType::PrintCertificate
        | ActionType::RequestCorrection
        | ActionType::RejectCorrection => return out,
        ActionType::ApproveCorrection => {
            // `requestId` names the request's Accepted action; its proposed values travel on
            // the Requested action that one confirms.
            let by_id = |id: &str| actions.iter().find(|a| a.id.to_string() == id);
            let request = action.request_id.as_deref().and_then(by_id);
            let proposed = request.and_then(|r| {
                r.declaration
                    .as_ref()
                    .filter(|d| !d.is_empty())
                    .or_else(|| {
                        r.original_action_id
                            .and_then(|orig| by_id(&orig.to_string()))
                            .and_then(|o| o.declaration.as_ref())
                    })
            });
            take(proposed);
        }
        _ => {}
    }
    if let Some(orig) = action.original_action_id
        && let Some(requested) = actions.iter().find(|r| r.id == orig)
    {
        take(requested.declaration.as_ref());
    }
    take(action.declaration.as_ref());
    out
}

/// Deep-merges the declarations of every Accepted action in order (`aggregateActionDeclarations`),
/// applying [`effective_declaration`] of each. A `null` value clears the field.
pub fn aggregate_declaration(actions: &[ActionDocument]) -> Declaration {
    let mut out = Declaration::new();
    for a in actions {
        for (k, v) in effective_declaration(a, actions) {
            if v.is_null() {
                out.remove(&k);
            } else {
                out.insert(k, v);
            }
        }
    }
    out
}

/// Two or more places wrote the same field concurrently: the deterministic winner is in the
/// declaration, every concurrent value is listed here. Never silently dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldConflict {
    /// The field id.
    pub field: String,
    /// The value every replica shows.
    pub winner: serde_json::Value,
    /// All concurrent values, the winner included, in a deterministic order.
    pub values: Vec<serde_json::Value>,
}

/// Puts an event's actions in the one order every replica derives from: CREATE first, then by
/// capture time, ties by action id (time-ordered UUIDv7s, so a write's actions keep their order).
/// Replicas holding the same actions, received in any order, then agree on status, flags and the
/// assignee: two concurrent assignments resolve to the later one everywhere.
pub fn canonical_order(actions: &mut [ActionDocument]) {
    actions.sort_by(|a, b| {
        (a.action_type != ActionType::Create)
            .cmp(&(b.action_type != ActionType::Create))
            .then_with(|| a.created_at.cmp(&b.created_at))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Whether the record was deleted (an Accepted DELETE of an undeclared draft). A deleted
/// record keeps its actions (they are in signed logs) but is not found by reads or actions.
pub fn is_deleted(actions: &[ActionDocument]) -> bool {
    actions
        .iter()
        .any(|a| a.action_type == ActionType::Delete && a.status == ActionStatus::Accepted)
}

/// The current assignee: the last Accepted ASSIGN not followed by an UNASSIGN.
pub fn assigned_to(actions: &[ActionDocument]) -> Option<String> {
    let mut who = None;
    for a in actions
        .iter()
        .filter(|a| a.status == ActionStatus::Accepted)
    {
        match a.action_type {
            ActionType::Assign => who = a.assigned_to.clone(),
            ActionType::Unassign => who = None,
            _ => {}
        }
    }
    who
}

/// One legal status of a record (`EventMetadata.legalStatuses.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegalStatus {
    /// When the action was requested.
    pub created_at: String,
    /// Who requested it.
    pub created_by: String,
    /// Where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at_location: Option<uuid::Uuid>,
    /// `user` or `system`.
    pub created_by_user_type: crate::event::UserType,
    /// The requester's role (users only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by_role: Option<String>,
    /// When it was accepted.
    pub accepted_at: String,
    /// REGISTERED only: the registration number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_number: Option<String>,
}

/// `legalStatuses`: always present (empty before declaration), as OpenCRVS requires it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LegalStatuses {
    /// Set by the first Accepted DECLARE.
    #[serde(rename = "DECLARED", default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<LegalStatus>,
    /// Set by the Accepted REGISTER.
    #[serde(
        rename = "REGISTERED",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub registered: Option<LegalStatus>,
}

impl LegalStatuses {
    /// Derives them from the actions.
    pub fn from_actions(actions: &[ActionDocument]) -> Self {
        let status_of = |t: ActionType| {
            let accepted = actions
                .iter()
                .find(|a| a.action_type == t && a.status == ActionStatus::Accepted)?;
            let requested = accepted
                .original_action_id
                .and_then(|id| actions.iter().find(|a| a.id == id))
                .unwrap_or(accepted);
            Some(LegalStatus {
                created_at: requested.created_at.clone(),
                created_by: requested.created_by.clone(),
                created_at_location: requested.created_at_location,
                created_by_user_type: requested.created_by_user_type,
                created_by_role: requested.created_by_role.clone(),
                accepted_at: accepted.created_at.clone(),
                registration_number: accepted.registration_number.clone(),
            })
        };
        Self {
            declared: status_of(ActionType::Declare),
            registered: status_of(ActionType::Register),
        }
    }
}

/// A search result entry (`EventIndex`), the subset we derive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventIndex {
    /// Event id.
    pub id: uuid::Uuid,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Derived status.
    pub status: EventStatus,
    /// Tracking id.
    pub tracking_id: String,
    /// Derived flags.
    pub flags: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Creator.
    pub created_by: String,
    /// Creator type.
    pub created_by_user_type: crate::event::UserType,
    /// Where it was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at_location: Option<uuid::Uuid>,
    /// Time of the last Accepted non-meta action.
    pub updated_at: String,
    /// Current assignee.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<String>,
    /// The registration number once registered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_number: Option<String>,
    /// Legal statuses (always present).
    #[serde(default)]
    pub legal_statuses: LegalStatuses,
    /// Aggregated declaration (secured fields removed by the caller where required).
    pub declaration: Declaration,
    /// Fields written concurrently at different places (empty when there were none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<FieldConflict>,
}

impl EventIndex {
    /// Derives the index entry of a document.
    pub fn from_document(doc: &EventDocument) -> Self {
        Self::from_document_with(doc, aggregate_declaration(&doc.actions), Vec::new())
    }

    /// [`Self::from_document`] with the declaration (and its conflicts) already known, for
    /// example from the event's merge document: the actions' aggregate is not computed.
    pub fn from_document_with(
        doc: &EventDocument,
        declaration: Declaration,
        conflicts: Vec<FieldConflict>,
    ) -> Self {
        let create = doc
            .actions
            .iter()
            .find(|a| a.action_type == ActionType::Create);
        let updated_at = doc
            .actions
            .iter()
            .filter(|a| a.status == ActionStatus::Accepted && !a.action_type.is_meta())
            .map(|a| a.created_at.as_str())
            .max()
            .unwrap_or(doc.created_at.as_str())
            .to_owned();
        let registration_number = doc
            .actions
            .iter()
            .filter(|a| a.action_type == ActionType::Register && a.status == ActionStatus::Accepted)
            .find_map(|a| a.registration_number.clone());
        Self {
            id: doc.id,
            event_type: doc.event_type.clone(),
            status: derive_status(&doc.actions),
            tracking_id: doc.tracking_id.clone(),
            flags: derive_flags(&doc.actions),
            created_at: doc.created_at.clone(),
            created_by: create.map(|a| a.created_by.clone()).unwrap_or_default(),
            created_by_user_type: create
                .map(|a| a.created_by_user_type)
                .unwrap_or(crate::event::UserType::System),
            created_at_location: create.and_then(|a| a.created_at_location),
            updated_at,
            assigned_to: assigned_to(&doc.actions),
            registration_number,
            legal_statuses: LegalStatuses::from_actions(&doc.actions),
            declaration,
            conflicts,
        }
    }
}

#[cfg(test)]
mod tests;
