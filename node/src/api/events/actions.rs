//! The action set for people (OpenCRVS §1.3, §2.4): declare, validate, register, reject, archive,
//! print, edit, corrections, assign and unassign, on one record each. Checks run in OpenCRVS's
//! order: token (401), scope kind (403), input (400), record (404), jurisdiction (403), state and
//! assignment (409); then one write job appends the actions and their signed log entry, so every
//! action syncs like a notification does.

use std::sync::Arc;

use crvs_common::access::{Place, UserFacts, grants, record_facts, scope_kinds_for};
use crvs_common::config::ValidationMode;
use crvs_common::event::{
    ActionDocument, ActionStatus, ActionType, Declaration, EventDocument, UserType,
};
use crvs_common::limits::CONTENT_TEXT_CHARS_MAX;
use crvs_common::state::{
    CUSTOM_VALIDATE_DECLARATION, aggregate_declaration, assigned_to, derive_flags, derive_status,
    is_allowed, is_deleted, not_allowed_message,
};
use crvs_common::user::UserStatus;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Actor, check_transaction_id, event_config, parse_event_id, request_hash};
use crate::api::{ApiError, AppState, Caller};
use crate::auth::TokenUserType;
use crate::store::{EventMeta, WriteCtx};

/// The user actions, as the routes name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UserAction {
    /// `DECLARE`: a complete declaration (`required` enforced).
    Declare,
    /// The custom action `VALIDATE_DECLARATION` (OpenCRVS 2.0; 1.9's `VALIDATE`).
    Validate,
    /// `REGISTER`: at a node, a Requested registration that central confirms.
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
}

impl UserAction {
    fn action_type(&self) -> ActionType {
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
        }
    }

    /// The REST route segment (`POST /events/{eventId}/<segment>`).
    pub(crate) fn from_segment(segment: &str) -> Option<Self> {
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
}

/// Input of every user action (OpenCRVS's `BaseActionInput` and its per-type extensions),
/// strict: unknown keys are refused.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ActionInput {
    /// Given in tRPC bodies; REST takes it from the path (both must agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) event_id: Option<String>,
    transaction_id: String,
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

/// `DELETE /events/{eventId}`: deletes an undeclared draft (status CREATED) assigned to the
/// caller. The DELETE is a signed action like any other, so the deletion reaches central; from
/// then on the record is not found.
pub(crate) async fn delete(
    state: Arc<AppState>,
    caller: Caller,
    raw_event_id: &str,
) -> Result<EventDocument, ApiError> {
    let input = ActionInput {
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
    };
    perform(state, caller, UserAction::Delete, raw_event_id, input).await
}

/// The acting person (or client) with the facts jurisdiction is checked against.
#[derive(Debug, Clone)]
pub(crate) struct Acting {
    pub(crate) actor: Actor,
    pub(crate) facts: UserFacts,
}

/// Loads the caller's user record (a user token of a user this node no longer holds, or one
/// deactivated since, is refused with 401) and where they work.
pub(crate) async fn acting(state: &AppState, caller: &Caller) -> Result<Acting, ApiError> {
    if caller.user_type == TokenUserType::System {
        return Ok(Acting {
            actor: Actor::new(caller, None),
            facts: UserFacts {
                id: caller.id.clone(),
                office: Place::default(),
            },
        });
    }
    let id: Uuid = caller.id.parse().map_err(|_| ApiError::unauthorized())?;
    let (user, areas) = state
        .store
        .read(move |r| {
            let Some(user) = r.user(id)? else {
                return Ok(None);
            };
            let areas = r.area_chain(user.user.primary_office_id)?;
            Ok(Some((user, areas)))
        })
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    if user.user.status != UserStatus::Active {
        return Err(ApiError::unauthorized());
    }
    let office = user.user.primary_office_id;
    let mut actor = Actor::new(caller, Some(office));
    actor.role = Some(user.user.role.clone());
    Ok(Acting {
        actor,
        facts: UserFacts {
            id: caller.id.clone(),
            office: Place {
                location: Some(office),
                areas,
            },
        },
    })
}

/// Whether `acting` may do something of `kinds` to `doc` (scopes and jurisdiction). System
/// clients have no office: only their scopes' event types count for them.
pub(crate) async fn may(
    state: &Arc<AppState>,
    acting: &Acting,
    caller: &Caller,
    doc: &EventDocument,
    kinds: &'static [&'static str],
) -> Result<bool, ApiError> {
    if acting.actor.user_type == UserType::System {
        return Ok(kinds
            .iter()
            .any(|k| caller.scopes.allows(k, &doc.event_type)));
    }
    let config = event_config(state, &doc.event_type)?;
    let place = place_of_event(config, doc);
    let (event_type, actions) = (doc.event_type.clone(), doc.actions.clone());
    let facts = state
        .store
        .read(move |r| {
            Ok(record_facts(&event_type, &actions, place, |location| {
                r.area_chain(location).unwrap_or_default()
            }))
        })
        .await?;
    Ok(grants(&caller.scopes, kinds, None, &acting.facts, &facts))
}

/// The audit row of `acting` doing `operation`.
pub(crate) fn audit_entry(
    acting: &Actor,
    operation: &'static str,
    subject: Option<String>,
    detail: Option<String>,
) -> crate::store::AuditEntry {
    crate::store::AuditEntry {
        actor: acting.id.clone(),
        actor_type: match acting.user_type {
            UserType::User => "user",
            UserType::System => "system",
        },
        location: acting.location,
        operation,
        subject,
        detail,
    }
}

fn forbidden_here(action: &UserAction) -> ApiError {
    ApiError::forbidden(format!(
        "Not allowed to {} this record",
        action.action_type().as_str()
    ))
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

/// Checks the input's shape for `action` (before any record is read).
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

/// Runs one user action on `event_id`. Idempotent on `transactionId`: a replay of the same
/// request answers the record as it is; a different request with the same id is a 409.
pub(crate) async fn perform(
    state: Arc<AppState>,
    caller: Caller,
    action: UserAction,
    raw_event_id: &str,
    input: ActionInput,
) -> Result<EventDocument, ApiError> {
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
    let acting = acting(&state, &caller).await?;
    let hash = request_hash(&(&action_label(&action), &input));
    let state_for_job = Arc::clone(&state);
    let can_unassign_others = caller.scopes.has_kind("record.unassign-others");
    state
        .store
        .write(move |ctx| {
            act_in_job(
                ctx,
                &state_for_job,
                &acting,
                &caller,
                &action,
                event_id,
                input,
                custom,
                &hash,
                can_unassign_others,
            )
        })
        .await
}

fn action_label(action: &UserAction) -> String {
    format!("{action:?}")
}

#[allow(clippy::too_many_arguments, reason = "the action, spelled out")]
fn act_in_job(
    ctx: &mut WriteCtx<'_>,
    state: &AppState,
    acting: &Acting,
    caller: &Caller,
    action: &UserAction,
    event_id: Uuid,
    input: ActionInput,
    custom: Option<String>,
    hash: &[u8],
    can_unassign_others: bool,
) -> Result<EventDocument, ApiError> {
    let action_type = action.action_type();
    // The Requested action carries the request hash; a replay finds it.
    if let Some((existing_event, stored)) = ctx.reader().action_by_transaction(
        &input.transaction_id,
        action_type.as_str(),
        first_status(action).as_str(),
    )? {
        if existing_event != event_id || stored.as_deref() != Some(hash) {
            return Err(super::replay_conflict());
        }
        return ctx
            .reader()
            .event_document(event_id)?
            .ok_or_else(|| ApiError::event_not_found(event_id));
    }
    let doc = ctx
        .document(event_id)?
        .filter(|doc| !is_deleted(&doc.actions))
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    let config = event_config(state, &doc.event_type)?;
    let facts = {
        let reader = ctx.reader();
        let place_of_event = place_of_event(config, &doc);
        record_facts(&doc.event_type, &doc.actions, place_of_event, |location| {
            reader.area_chain(location).unwrap_or_default()
        })
    };
    // Someone who may not read the record is told it does not exist.
    let may_read = acting.actor.user_type == UserType::System
        || grants(
            &caller.scopes,
            &["record.read"],
            None,
            &acting.facts,
            &facts,
        );
    if !may_read {
        return Err(ApiError::event_not_found(event_id));
    }
    let kinds = scope_kinds_for(action_type);
    if !kinds.is_empty()
        && !grants(
            &caller.scopes,
            kinds,
            custom.as_deref(),
            &acting.facts,
            &facts,
        )
    {
        return Err(forbidden_here(action));
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
    check_declaration(config, action, &doc, &input)?;
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

    let meta = EventMeta::of(&doc);
    if !matches!(action, UserAction::Assign | UserAction::Unassign) {
        ctx.clear_drafts(&event_id.to_string())?;
    }
    let now = ctx.now_ms();
    let tx = input.transaction_id.clone();
    let mut first = acting
        .actor
        .action(action_type, first_status(action), &tx, now);
    first.custom_action_type = custom;
    first.content = input.content.clone().map(serde_json::Value::Object);
    first.request_id = input.request_id.clone();
    match action {
        UserAction::Assign => {
            first.assigned_to = Some(me.to_owned());
            first.declaration = None;
            ctx.append_action(&meta, first, Some(hash))?;
        }
        UserAction::Unassign | UserAction::Delete => {
            first.declaration = None;
            ctx.append_action(&meta, first, Some(hash))?;
        }
        _ => {
            first.declaration = Some(input.declaration.clone());
            first.annotation = Some(input.annotation.clone().unwrap_or_default());
            let requested_id = first.id;
            ctx.append_action(&meta, first, Some(hash))?;
            // A node confirms everything but registration itself (no hook configured); the
            // registration number is central's: its Accepted REGISTER comes back in a sync.
            if action != &UserAction::Register {
                let mut accepted =
                    acting
                        .actor
                        .action(action_type, ActionStatus::Accepted, &tx, now);
                accepted.original_action_id = Some(requested_id);
                accepted.custom_action_type = acting_custom(action, &input);
                accepted.request_id = input.request_id.clone();
                accepted.content = input.content.clone().map(serde_json::Value::Object);
                ctx.append_action(&meta, accepted, None)?;
            }
            if acting.actor.user_type == UserType::User && input.keep_assignment != Some(true) {
                let unassign =
                    acting
                        .actor
                        .action(ActionType::Unassign, ActionStatus::Accepted, &tx, now);
                ctx.append_action(
                    &meta,
                    ActionDocument {
                        declaration: None,
                        ..unassign
                    },
                    None,
                )?;
            }
        }
    }
    Ok(ctx.finish_event()?)
}

fn acting_custom(action: &UserAction, input: &ActionInput) -> Option<String> {
    match action {
        UserAction::Validate => Some(CUSTOM_VALIDATE_DECLARATION.to_owned()),
        UserAction::Custom => input.custom_action_type.clone(),
        _ => None,
    }
}

/// ASSIGN, UNASSIGN and DELETE are written Accepted; every other action starts Requested.
fn first_status(action: &UserAction) -> ActionStatus {
    match action {
        UserAction::Assign | UserAction::Unassign | UserAction::Delete => ActionStatus::Accepted,
        _ => ActionStatus::Requested,
    }
}

/// The configured place of the event (a location field such as `child.birthLocationId`), if
/// the record has one.
fn place_of_event(config: &crvs_common::config::EventConfig, doc: &EventDocument) -> Option<Uuid> {
    let field = config.place_of_event_field()?;
    aggregate_declaration(&doc.actions)
        .get(&field.id)
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
}

/// Validates the action's declaration: a complete record for DECLARE and REGISTER (`required`
/// enforced over the record as it would stand), partial data otherwise.
fn check_declaration(
    config: &crvs_common::config::EventConfig,
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
