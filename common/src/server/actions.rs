//! The action core people use on records (OpenCRVS §1.3, §2.4), the same at node and central:
//! declare, validate, register, reject, archive, print, edit, corrections, assign and unassign,
//! custom actions and delete. Checks run in OpenCRVS's order: token (401), scope kind (403),
//! input (400), record (404), jurisdiction (403), state and assignment (409). What to append is
//! decided here ([`plan`]), pure over the record as read inside the server's write transaction;
//! each server then writes the actions its own way (a node into its signed log, central as its
//! own signed `actions` record).

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::users::UserHost;
use super::{ApiError, Caller, auth::TokenUserType};
use crate::access::{Place, UserFacts, grants, record_facts, scope_kinds_for};
use crate::config::{EventConfig, ValidationMode};
use crate::event::{
    ActionDocument, ActionStatus, ActionType, Declaration, EventDocument, UserType,
    format_timestamp_ms,
};
use crate::limits::{CONTENT_TEXT_CHARS_MAX, TRANSACTION_ID_CHARS_MAX};
use crate::scope::ScopeSet;
use crate::state::{
    CUSTOM_VALIDATE_DECLARATION, aggregate_declaration, assigned_to, derive_flags, derive_status,
    is_allowed, not_allowed_message,
};
use crate::user::UserStatus;

/// The hash of a request as sent: a replay with the same `transactionId` must carry the same
/// one. Maps are ordered (serde_json's BTreeMap), so equal inputs give equal bytes.
pub fn request_hash<T: Serialize>(input: &T) -> Vec<u8> {
    let bytes = serde_json::to_vec(input).unwrap_or_default();
    Sha256::digest(&bytes).to_vec()
}

/// 400 unless `tx` is 1 to [`TRANSACTION_ID_CHARS_MAX`] characters.
pub fn check_transaction_id(tx: &str) -> Result<(), ApiError> {
    if tx.is_empty() || tx.chars().count() > TRANSACTION_ID_CHARS_MAX {
        return Err(ApiError::input_one(
            "too_big",
            format!("transactionId must be 1 to {TRANSACTION_ID_CHARS_MAX} characters"),
            &["transactionId"],
        ));
    }
    Ok(())
}

/// An event id in the standard hyphenated form only (as OpenCRVS's zod `uuid()` requires):
/// `urn:uuid:`, braced or unhyphenated spellings are input errors, not other names of a record.
pub fn parse_event_id(raw: &str) -> Result<Uuid, ApiError> {
    let hyphenated = raw.len() == 36
        && raw
            .char_indices()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
    hyphenated
        .then(|| raw.parse().ok())
        .flatten()
        .ok_or_else(|| ApiError::input_one("invalid_string", "Invalid uuid", &["eventId"]))
}

/// 409: a `transactionId` replayed with a different request.
pub fn replay_conflict() -> ApiError {
    ApiError::conflict("transactionId has already been used with a different request")
}

/// Who is acting, as recorded on actions.
#[derive(Debug, Clone)]
pub struct Actor {
    /// User or client id.
    pub id: String,
    /// Person or system.
    pub user_type: UserType,
    /// Where the action is recorded as made (the user's office, a client's given location).
    pub location: Option<Uuid>,
    /// The user's role (users only).
    pub role: Option<String>,
}

impl Actor {
    /// The caller acting at `location`.
    pub fn new(caller: &Caller, location: Option<Uuid>) -> Self {
        let user_type = match caller.user_type {
            TokenUserType::System => UserType::System,
            TokenUserType::User => UserType::User,
        };
        Self {
            id: caller.id.clone(),
            user_type,
            location,
            role: caller.role.clone(),
        }
    }

    /// A new action of this actor, with an empty declaration.
    pub fn action(
        &self,
        action_type: ActionType,
        status: ActionStatus,
        transaction_id: &str,
        now_ms: u64,
    ) -> ActionDocument {
        ActionDocument {
            // Time-ordered ids keep the actions' id index appending at its right edge.
            id: Uuid::now_v7(),
            action_type,
            transaction_id: transaction_id.to_owned(),
            status,
            created_by: self.id.clone(),
            created_by_user_type: self.user_type,
            created_by_role: self.role.clone(),
            created_at_location: self.location,
            created_at: format_timestamp_ms(now_ms),
            declaration: Some(Declaration::new()),
            annotation: None,
            original_action_id: None,
            content: None,
            registration_number: None,
            request_id: None,
            assigned_to: None,
            custom_action_type: None,
        }
    }

    /// The ASSIGN of a record to this actor (a person creating a record holds it, as OpenCRVS's
    /// `getOrCreateEventAndAssign` does).
    pub fn self_assignment(&self, transaction_id: &str, now_ms: u64) -> ActionDocument {
        let mut assign = self.action(
            ActionType::Assign,
            ActionStatus::Accepted,
            transaction_id,
            now_ms,
        );
        assign.declaration = None;
        assign.assigned_to = Some(self.id.clone());
        assign
    }

    /// A notify's Requested action (carrying the declaration) and its synchronous Accepted copy
    /// (OpenCRVS §10.3: the accept points back with `originalActionId`).
    pub fn notify_pair(
        &self,
        transaction_id: &str,
        declaration: Declaration,
        annotation: Option<Declaration>,
        now_ms: u64,
    ) -> (ActionDocument, ActionDocument) {
        let mut requested = self.action(
            ActionType::Notify,
            ActionStatus::Requested,
            transaction_id,
            now_ms,
        );
        requested.declaration = Some(declaration);
        requested.annotation = Some(annotation.unwrap_or_default());
        let mut accepted = self.action(
            ActionType::Notify,
            ActionStatus::Accepted,
            transaction_id,
            now_ms,
        );
        accepted.original_action_id = Some(requested.id);
        (requested, accepted)
    }
}

/// The acting person (or client) with the facts jurisdiction is checked against.
#[derive(Debug, Clone)]
pub struct Acting {
    /// Who, as recorded on actions.
    pub actor: Actor,
    /// Their id and office (with its areas) for jurisdiction.
    pub facts: UserFacts,
}

impl Acting {
    /// A system client: no office, only its scopes' event types count.
    pub fn system(caller: &Caller) -> Self {
        Self {
            actor: Actor::new(caller, None),
            facts: UserFacts {
                id: caller.id.clone(),
                office: Place::default(),
            },
        }
    }

    /// A person working at `office`, which lies in `areas` (own area first).
    pub fn user(caller: &Caller, office: Uuid, role: String, areas: Vec<Uuid>) -> Self {
        let mut actor = Actor::new(caller, Some(office));
        actor.role = Some(role);
        Self {
            actor,
            facts: UserFacts {
                id: caller.id.clone(),
                office: Place {
                    location: Some(office),
                    areas,
                },
            },
        }
    }

    /// Whether this actor may do something of `kinds` to `doc` (scopes and jurisdiction).
    /// System clients have no office: only their scopes' event types count for them.
    pub fn may(
        &self,
        scopes: &ScopeSet,
        config: &EventConfig,
        doc: &EventDocument,
        kinds: &[&str],
        areas_of: impl FnMut(Uuid) -> Vec<Uuid>,
    ) -> bool {
        if self.actor.user_type == UserType::System {
            return kinds.iter().any(|k| scopes.allows(k, &doc.event_type));
        }
        let place = place_of_event(config, doc);
        let facts = record_facts(&doc.event_type, &doc.actions, place, areas_of);
        grants(scopes, kinds, None, &self.facts, &facts)
    }
}

/// Who `caller` is for the action core: a system client as it is, a person with their office
/// and its areas. A user token of a user the server no longer holds, or one deactivated since,
/// is refused with 401.
pub async fn acting<H: UserHost>(host: &H, caller: &Caller) -> Result<Acting, ApiError> {
    if caller.user_type == TokenUserType::System {
        return Ok(Acting::system(caller));
    }
    let id: Uuid = caller.id.parse().map_err(|_| ApiError::unauthorized())?;
    let account = host.account(id).await?.ok_or_else(ApiError::unauthorized)?;
    if account.user.status != UserStatus::Active {
        return Err(ApiError::unauthorized());
    }
    let office = account.user.primary_office_id;
    let areas = host
        .area_chains(vec![office])
        .await?
        .remove(&office)
        .unwrap_or_default();
    Ok(Acting::user(caller, office, account.user.role, areas))
}

/// The user actions, as the routes name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAction {
    /// `DECLARE`: a complete declaration (`required` enforced).
    Declare,
    /// The custom action `VALIDATE_DECLARATION` (OpenCRVS 2.0; 1.9's `VALIDATE`).
    Validate,
    /// `REGISTER`: a Requested registration that central confirms with a number.
    Register,
    /// `REJECT` (sent back for updates; `content.reason`).
    Reject,
    /// `ARCHIVE` (`content.reason` optional).
    Archive,
    /// `PRINT_CERTIFICATE` (`content.templateId` optional).
    PrintCertificate,
    /// `EDIT` of a notified or declared record.
    Edit,
    /// `REQUEST_CORRECTION` (a partial declaration of the changes).
    RequestCorrection,
    /// `APPROVE_CORRECTION` (`requestId`).
    ApproveCorrection,
    /// `REJECT_CORRECTION` (`requestId`, `content.reason`).
    RejectCorrection,
    /// `ASSIGN` to oneself: the record lock.
    Assign,
    /// `UNASSIGN` (oneself, or another user with `record.unassign-others`).
    Unassign,
    /// `CUSTOM` with a `customActionType` from the input.
    Custom,
    /// `DELETE` of an undeclared draft (`DELETE /events/{eventId}`, tRPC `event.delete`).
    Delete,
    /// `MARK_AS_DUPLICATE`: a registrar confirms a potential duplicate (`content.duplicateOf`
    /// optional, `content.reason` optional); no number will be issued for the record.
    MarkAsDuplicate,
    /// `MARK_AS_NOT_DUPLICATE`: a registrar clears a potential duplicate; the next requested
    /// registration is not checked again.
    MarkAsNotDuplicate,
}

impl UserAction {
    /// The action type written.
    pub fn action_type(&self) -> ActionType {
        match self {
            Self::Declare => ActionType::Declare,
            Self::Validate | Self::Custom => ActionType::Custom,
            Self::Register => ActionType::Register,
            Self::Reject => ActionType::Reject,
            Self::Archive => ActionType::Archive,
            Self::PrintCertificate => ActionType::PrintCertificate,
            Self::Edit => ActionType::Edit,
            Self::RequestCorrection => ActionType::RequestCorrection,
            Self::ApproveCorrection => ActionType::ApproveCorrection,
            Self::RejectCorrection => ActionType::RejectCorrection,
            Self::Assign => ActionType::Assign,
            Self::Unassign => ActionType::Unassign,
            Self::Delete => ActionType::Delete,
            Self::MarkAsDuplicate => ActionType::MarkAsDuplicate,
            Self::MarkAsNotDuplicate => ActionType::MarkAsNotDuplicate,
        }
    }

    /// The REST route segment (`POST /events/{eventId}/<segment>`).
    pub fn from_segment(segment: &str) -> Option<Self> {
        Some(match segment {
            "declare" => Self::Declare,
            "validate" => Self::Validate,
            "register" => Self::Register,
            "reject" => Self::Reject,
            "archive" => Self::Archive,
            "print-certificate" => Self::PrintCertificate,
            "edit" => Self::Edit,
            "request-correction" => Self::RequestCorrection,
            "approve-correction" => Self::ApproveCorrection,
            "reject-correction" => Self::RejectCorrection,
            "assign" => Self::Assign,
            "unassign" => Self::Unassign,
            "custom" => Self::Custom,
            "mark-as-duplicate" => Self::MarkAsDuplicate,
            "mark-as-not-duplicate" => Self::MarkAsNotDuplicate,
            _ => return None,
        })
    }

    /// The REST segment a tRPC user-action procedure stands for (§2.4).
    pub fn segment_of_procedure(procedure: &str) -> Option<&'static str> {
        Some(match procedure {
            "event.actions.declare.request" => "declare",
            "event.actions.validate.request" => "validate",
            "event.actions.register.request" => "register",
            "event.actions.reject.request" => "reject",
            "event.actions.archive.request" => "archive",
            "event.actions.printCertificate.request" => "print-certificate",
            "event.actions.edit.request" => "edit",
            "event.actions.custom.request" => "custom",
            "event.actions.correction.request.request" => "request-correction",
            "event.actions.correction.approve.request" => "approve-correction",
            "event.actions.correction.reject.request" => "reject-correction",
            "event.actions.assignment.assign" => "assign",
            "event.actions.assignment.unassign" => "unassign",
            "event.actions.duplicate.markAsDuplicate" => "mark-as-duplicate",
            "event.actions.duplicate.markNotDuplicate" => "mark-as-not-duplicate",
            _ => return None,
        })
    }

    /// System clients may do only these (OpenCRVS `SYSTEM_USER_ALLOWED_ACTIONS` plus custom).
    fn system_allowed(&self) -> bool {
        matches!(
            self,
            Self::RequestCorrection
                | Self::ApproveCorrection
                | Self::RejectCorrection
                | Self::Custom
        )
    }

    /// Whether the input's `type`, when given, names this action.
    fn accepts_type(&self, given: &str) -> bool {
        match self {
            Self::Validate => matches!(given, "VALIDATE" | "CUSTOM"),
            _ => given == self.action_type().as_str(),
        }
    }

    /// ASSIGN, UNASSIGN and DELETE are written Accepted; every other action starts Requested.
    pub fn first_status(&self) -> ActionStatus {
        match self {
            Self::Assign | Self::Unassign | Self::Delete => ActionStatus::Accepted,
            _ => ActionStatus::Requested,
        }
    }

    fn label(&self) -> String {
        format!("{self:?}")
    }
}

/// Input of every user action (OpenCRVS's `BaseActionInput` and its per-type extensions),
/// strict: unknown keys are refused.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionInput {
    /// Given in tRPC bodies; REST takes it from the path (both must agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The client's id of this request (idempotency key).
    pub transaction_id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    action_type: Option<String>,
    #[serde(default)]
    declaration: Declaration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotation: Option<Declaration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_action_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    assigned_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keep_assignment: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    original_action_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at_location: Option<String>,
    // Writes are indexed in the same transaction, so there is nothing to wait for.
    #[serde(default, skip_serializing)]
    #[expect(dead_code, reason = "the index is updated in the write transaction")]
    wait_for: Option<bool>,
}

impl ActionInput {
    /// The input of a DELETE (the route carries nothing but the id): a fresh transaction.
    pub fn delete() -> Self {
        Self {
            event_id: None,
            transaction_id: Uuid::new_v4().to_string(),
            action_type: None,
            declaration: Declaration::new(),
            annotation: None,
            content: None,
            custom_action_type: None,
            request_id: None,
            assigned_to: None,
            keep_assignment: None,
            original_action_id: None,
            created_at_location: None,
            wait_for: None,
        }
    }
}

/// A request that passed the checks that need no record.
#[derive(Debug)]
pub struct Checked {
    /// The action.
    pub action: UserAction,
    /// The record.
    pub event_id: Uuid,
    /// The input.
    pub input: ActionInput,
    /// The custom action type written (VALIDATE and CUSTOM).
    pub custom: Option<String>,
    /// [`request_hash`] of the action and input: replays must match it.
    pub hash: Vec<u8>,
    /// Whether the caller may unassign someone else.
    pub can_unassign_others: bool,
}

/// The checks that need no record, in OpenCRVS's order: the caller's kind and scope kinds
/// (403), then the input (400).
pub fn check_request(
    caller: &Caller,
    action: UserAction,
    raw_event_id: &str,
    input: ActionInput,
) -> Result<Checked, ApiError> {
    if caller.user_type == TokenUserType::System && !action.system_allowed() {
        return Err(ApiError::forbidden(format!(
            "System clients cannot perform {}",
            action.action_type().as_str()
        )));
    }
    let kinds = scope_kinds_for(action.action_type());
    if !kinds.is_empty() && !kinds.iter().any(|k| caller.scopes.has_kind(k)) {
        return Err(ApiError::forbidden(format!(
            "Missing scope {}",
            kinds.join(" or ")
        )));
    }
    let event_id = parse_event_id(raw_event_id)?;
    if let Some(given) = input.event_id.as_deref()
        && given != raw_event_id
    {
        return Err(ApiError::input_one(
            "invalid_string",
            "eventId does not match the record",
            &["eventId"],
        ));
    }
    let custom = check_input(&action, &input)?;
    let hash = request_hash(&(&action.label(), &input));
    Ok(Checked {
        can_unassign_others: caller.scopes.has_kind("record.unassign-others"),
        action,
        event_id,
        input,
        custom,
        hash,
    })
}

fn content_text(
    content: Option<&serde_json::Map<String, serde_json::Value>>,
    key: &str,
    required: bool,
) -> Result<(), ApiError> {
    match content.and_then(|c| c.get(key)) {
        Some(serde_json::Value::String(text)) if text.chars().count() <= CONTENT_TEXT_CHARS_MAX => {
            if required && text.trim().is_empty() {
                Err(ApiError::input_one(
                    "too_small",
                    "Required",
                    &["content", key],
                ))
            } else {
                Ok(())
            }
        }
        Some(serde_json::Value::String(_)) => Err(ApiError::input_one(
            "too_big",
            format!("String must contain at most {CONTENT_TEXT_CHARS_MAX} character(s)"),
            &["content", key],
        )),
        Some(_) => Err(ApiError::input_one(
            "invalid_type",
            "Expected string",
            &["content", key],
        )),
        None if required => Err(ApiError::input_one(
            "invalid_type",
            "Required",
            &["content", key],
        )),
        None => Ok(()),
    }
}

/// Checks the input's shape for `action` (before any record is read); answers the custom
/// action type written.
fn check_input(action: &UserAction, input: &ActionInput) -> Result<Option<String>, ApiError> {
    check_transaction_id(&input.transaction_id)?;
    if let Some(given) = input.action_type.as_deref()
        && !action.accepts_type(given)
    {
        return Err(ApiError::input_one(
            "invalid_literal",
            format!(
                "Invalid literal value, expected \"{}\"",
                action.action_type().as_str()
            ),
            &["type"],
        ));
    }
    if input.created_at_location.is_some() {
        return Err(ApiError::bad_request(
            "createdAtLocation can only be set by system clients",
        ));
    }
    let carries_declaration = matches!(
        action,
        UserAction::Declare
            | UserAction::Validate
            | UserAction::Register
            | UserAction::Edit
            | UserAction::RequestCorrection
            | UserAction::Custom
    );
    if !carries_declaration && !input.declaration.is_empty() {
        return Err(ApiError::input_one(
            "unrecognized_keys",
            format!("{} takes no declaration", action.action_type().as_str()),
            &["declaration"],
        ));
    }
    match action {
        UserAction::Reject => content_text(input.content.as_ref(), "reason", true)?,
        UserAction::Archive => content_text(input.content.as_ref(), "reason", false)?,
        UserAction::RejectCorrection => content_text(input.content.as_ref(), "reason", true)?,
        UserAction::PrintCertificate => content_text(input.content.as_ref(), "templateId", false)?,
        UserAction::MarkAsDuplicate => {
            content_text(input.content.as_ref(), "reason", false)?;
            content_text(input.content.as_ref(), "duplicateOf", false)?;
            let duplicate_of = input
                .content
                .as_ref()
                .and_then(|c| c.get("duplicateOf"))
                .and_then(|v| v.as_str());
            if duplicate_of.is_some_and(|d| d.parse::<Uuid>().is_err()) {
                return Err(ApiError::input_one(
                    "invalid_string",
                    "Invalid uuid",
                    &["content", "duplicateOf"],
                ));
            }
        }
        UserAction::MarkAsNotDuplicate => content_text(input.content.as_ref(), "reason", false)?,
        _ => {}
    }
    if matches!(
        action,
        UserAction::ApproveCorrection | UserAction::RejectCorrection
    ) {
        let valid = input
            .request_id
            .as_deref()
            .is_some_and(|r| r.parse::<Uuid>().is_ok());
        if !valid {
            return Err(ApiError::input_one(
                "invalid_string",
                "requestId must be the id of the correction request",
                &["requestId"],
            ));
        }
    }
    let custom = match action {
        UserAction::Validate => Some(CUSTOM_VALIDATE_DECLARATION.to_owned()),
        UserAction::Custom => {
            let custom = input.custom_action_type.clone().ok_or_else(|| {
                ApiError::input_one("invalid_type", "Required", &["customActionType"])
            })?;
            let valid = !custom.is_empty()
                && custom.len() <= 64
                && custom
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(ApiError::input_one(
                    "invalid_string",
                    "customActionType must be an action type such as VALIDATE_DECLARATION",
                    &["customActionType"],
                ));
            }
            Some(custom)
        }
        _ => None,
    };
    Ok(custom)
}

/// The configured place of the event (a location field such as `child.birthLocationId`), if
/// the record has one.
pub fn place_of_event(config: &EventConfig, doc: &EventDocument) -> Option<Uuid> {
    let field = config.place_of_event_field()?;
    aggregate_declaration(&doc.actions)
        .get(&field.id)
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
}

/// What an action appends, in order; the first carries the request's hash.
#[derive(Debug)]
pub struct Planned {
    /// The actions to append.
    pub actions: Vec<ActionDocument>,
    /// Whether the record's drafts go (every action but assignment).
    pub clears_drafts: bool,
}

/// Decides what `checked` appends to `doc` (read, not deleted, inside the write transaction),
/// or why it may not: 404 for a caller who may not read the record, 403 outside the caller's
/// jurisdiction, 409 for a disallowed state or assignment, 400 for an incomplete declaration.
/// REGISTER is appended Requested only: its answer (a number, or a rejection) is central's.
pub fn plan(
    checked: &Checked,
    doc: &EventDocument,
    config: &EventConfig,
    acting: &Acting,
    scopes: &ScopeSet,
    now_ms: u64,
    areas_of: impl FnMut(Uuid) -> Vec<Uuid>,
) -> Result<Planned, ApiError> {
    let Checked {
        action,
        event_id,
        input,
        custom,
        can_unassign_others,
        ..
    } = checked;
    let event_id = *event_id;
    let action_type = action.action_type();
    let facts = record_facts(
        &doc.event_type,
        &doc.actions,
        place_of_event(config, doc),
        areas_of,
    );
    // Someone who may not read the record is told it does not exist.
    let may_read = acting.actor.user_type == UserType::System
        || grants(scopes, &["record.read"], None, &acting.facts, &facts);
    if !may_read {
        return Err(ApiError::event_not_found(event_id));
    }
    let kinds = scope_kinds_for(action_type);
    if !kinds.is_empty() && !grants(scopes, kinds, custom.as_deref(), &acting.facts, &facts) {
        return Err(ApiError::forbidden(format!(
            "Not allowed to {} this record",
            action_type.as_str()
        )));
    }
    let status = derive_status(&doc.actions);
    let flags = derive_flags(&doc.actions);
    if !is_allowed(action_type, status, &flags) {
        return Err(ApiError::conflict(not_allowed_message(
            action_type,
            status,
            &flags,
        )));
    }
    check_assignment(action, acting, doc, input, event_id, *can_unassign_others)?;
    check_declaration(config, action, doc, input)?;
    if let Some(request_id) = input.request_id.as_deref() {
        let pending = doc.actions.iter().any(|a| {
            a.id.to_string() == request_id
                && a.action_type == ActionType::RequestCorrection
                && a.status == ActionStatus::Accepted
        });
        let answered = doc.actions.iter().any(|a| {
            matches!(
                a.action_type,
                ActionType::ApproveCorrection | ActionType::RejectCorrection
            ) && a.request_id.as_deref() == Some(request_id)
        });
        if !pending || answered {
            return Err(ApiError::conflict(format!(
                "No open correction request {request_id} on event {event_id}"
            )));
        }
    }

    let tx = input.transaction_id.as_str();
    let actor = &acting.actor;
    let mut first = actor.action(action_type, action.first_status(), tx, now_ms);
    first.custom_action_type = custom.clone();
    first.content = input.content.clone().map(serde_json::Value::Object);
    first.request_id = input.request_id.clone();
    let mut actions = Vec::with_capacity(3);
    match action {
        UserAction::Assign => {
            first.assigned_to = Some(actor.id.clone());
            first.declaration = None;
            actions.push(first);
        }
        UserAction::Unassign | UserAction::Delete => {
            first.declaration = None;
            actions.push(first);
        }
        _ => {
            first.declaration = Some(input.declaration.clone());
            first.annotation = Some(input.annotation.clone().unwrap_or_default());
            let requested_id = first.id;
            actions.push(first);
            // Everything but registration is confirmed where it is made (no hook configured);
            // the registration number is central's.
            if action != &UserAction::Register {
                let mut accepted = actor.action(action_type, ActionStatus::Accepted, tx, now_ms);
                accepted.original_action_id = Some(requested_id);
                accepted.custom_action_type = custom.clone();
                accepted.request_id = input.request_id.clone();
                accepted.content = input.content.clone().map(serde_json::Value::Object);
                actions.push(accepted);
            }
            if actor.user_type == UserType::User && input.keep_assignment != Some(true) {
                let unassign =
                    actor.action(ActionType::Unassign, ActionStatus::Accepted, tx, now_ms);
                actions.push(ActionDocument {
                    declaration: None,
                    ..unassign
                });
            }
        }
    }
    Ok(Planned {
        actions,
        clears_drafts: !matches!(action, UserAction::Assign | UserAction::Unassign),
    })
}

/// Assignment is the record lock: assign only to oneself and only a free record; unassign an
/// assigned record (another's only with `record.unassign-others`); a person must hold the
/// record for every other action, a system client needs it unassigned.
fn check_assignment(
    action: &UserAction,
    acting: &Acting,
    doc: &EventDocument,
    input: &ActionInput,
    event_id: Uuid,
    can_unassign_others: bool,
) -> Result<(), ApiError> {
    let assignee = assigned_to(&doc.actions);
    let me = acting.actor.id.as_str();
    match action {
        UserAction::Assign => {
            if let Some(other) = assignee.as_deref().filter(|a| *a != me) {
                return Err(ApiError::conflict(format!(
                    "Event {event_id} is assigned to another user ({other})"
                )));
            }
            if input.assigned_to.as_deref().is_some_and(|a| a != me) {
                return Err(ApiError::forbidden(
                    "Users can only assign records to themselves",
                ));
            }
        }
        UserAction::Unassign => match assignee.as_deref() {
            None => {
                return Err(ApiError::conflict(format!(
                    "Event {event_id} is not assigned"
                )));
            }
            Some(a) if a != me && !can_unassign_others => {
                return Err(ApiError::forbidden(
                    "Missing scope record.unassign-others to unassign another user",
                ));
            }
            Some(_) => {}
        },
        _ if acting.actor.user_type == UserType::User => {
            if assignee.as_deref() != Some(me) {
                return Err(ApiError::conflict(format!(
                    "You are not assigned to event {event_id}; assign it first"
                )));
            }
        }
        _ => {
            if assignee.is_some() {
                return Err(ApiError::conflict(format!(
                    "Event {event_id} is assigned to a user"
                )));
            }
        }
    }
    Ok(())
}

/// Validates the action's declaration: a complete record for DECLARE and REGISTER (`required`
/// enforced over the record as it would stand), partial data otherwise.
fn check_declaration(
    config: &EventConfig,
    action: &UserAction,
    doc: &EventDocument,
    input: &ActionInput,
) -> Result<(), ApiError> {
    let mut issues = match config.validate_declaration(&input.declaration, ValidationMode::Notify) {
        Ok(()) => Vec::new(),
        Err(issues) => issues,
    };
    if issues.is_empty() && matches!(action, UserAction::Declare | UserAction::Register) {
        let mut merged = aggregate_declaration(&doc.actions);
        for (field, value) in &input.declaration {
            if value.is_null() {
                merged.remove(field);
            } else {
                merged.insert(field.clone(), value.clone());
            }
        }
        if let Err(more) = config.validate_declaration(&merged, ValidationMode::Declare) {
            issues.extend(more);
        }
    }
    if let Some(annotation) = &input.annotation {
        let mode = if matches!(action, UserAction::Declare) {
            ValidationMode::Declare
        } else {
            ValidationMode::Notify
        };
        if let Err(more) =
            config.validate_annotation(action.action_type().as_str(), annotation, mode)
        {
            issues.extend(more);
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        let message = serde_json::to_string(&issues).unwrap_or_else(|_| "Invalid input".to_owned());
        Err(ApiError::bad_request(message))
    }
}
