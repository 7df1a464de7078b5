//! The events routes: create, notify, create-and-notify, read (records a READ), search, and
//! record data by tracking id and field id. Checks run in OpenCRVS's order: token (401), scope
//! (403), input (400), record access (404), state (409); then one write job commits the actions
//! and their signed log entries together.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use crvs_common::config::{EventConfig, ValidationMode};
use crvs_common::event::{
    ActionDocument, ActionStatus, ActionType, Declaration, EventDocument, UserType,
    format_timestamp_ms,
};
use crvs_common::limits::FIELD_IDS_PER_READ_MAX;
use crvs_common::state::{
    assigned_to, derive_flags, derive_status, is_allowed, not_allowed_message,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, AppState, Caller, body};
use crate::auth::TokenUserType;
use crate::store::{EventMeta, NewEvent, StoreError, WriteCtx};
use crvs_common::state::effective_declaration;
use crvs_sync::merge::{EventCrdt, actor_for};

mod actions;
mod drafts;
mod import;
mod search;

pub(crate) use actions::{ActionInput, UserAction};
use crvs_common::server::actions::{
    Actor, check_transaction_id, parse_event_id, replay_conflict, request_hash,
};
use crvs_common::server::create::check_create;
pub(crate) use drafts::{DraftInput, create as drafts_create, list as drafts_list};
pub(crate) use search::{ListQuery, list, list_with, search};

/// `POST /events/{eventId}/notify` body (`NotifyActionInput`, strict).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NotifyInput {
    transaction_id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    action_type: Option<String>,
    #[serde(default)]
    declaration: Declaration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotation: Option<Declaration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    original_action_id: Option<String>,
    // Accepted for wire compatibility; assignment options matter once users act (issue 4).
    #[expect(
        dead_code,
        reason = "accepted for wire compatibility, not acted on yet"
    )]
    #[serde(default, skip_serializing)]
    keep_assignment: Option<bool>,
    #[expect(
        dead_code,
        reason = "accepted for wire compatibility, not acted on yet"
    )]
    #[serde(default, skip_serializing)]
    keep_assignment_if_accepted: Option<bool>,
    #[expect(
        dead_code,
        reason = "accepted for wire compatibility, not acted on yet"
    )]
    #[serde(default, skip_serializing)]
    keep_assignment_if_rejected: Option<bool>,
    // Writes are indexed in the same transaction, so there is nothing to wait for.
    #[expect(dead_code, reason = "the index is updated in the write transaction")]
    #[serde(default, skip_serializing)]
    wait_for: Option<bool>,
}

/// `POST /events/notify` body (`CreateAndNotifyInput`, system clients only).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateAndNotifyInput {
    event_type: String,
    transaction_id: String,
    created_at_location: Option<String>,
    #[serde(default)]
    declaration: Declaration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotation: Option<Declaration>,
    #[expect(
        dead_code,
        reason = "accepted for wire compatibility, not acted on yet"
    )]
    #[serde(default, skip_serializing)]
    keep_assignment: Option<bool>,
    #[expect(dead_code, reason = "the index is updated in the write transaction")]
    #[serde(default, skip_serializing)]
    wait_for: Option<bool>,
}

const LOCATION_REQUIRED: &str = "createdAtLocation is required and must be a valid location id";
const LOCATION_INVALID: &str = "createdAtLocation must be a valid location id";

/// The hash of what a create means: retries that differ only in spelling (UUID case) are the
/// same request.
fn create_hash(event_type: &str, transaction_id: &str, location: Option<Uuid>) -> Vec<u8> {
    request_hash(&serde_json::json!({
        "type": event_type,
        "transactionId": transaction_id,
        "createdAtLocation": location.map(|l| l.to_string()),
    }))
}

/// The hash of what a notify means: `type` omitted or `"NOTIFY"`, `annotation` absent or `{}`,
/// `eventId` in the body or not, and UUID case are all the same request.
fn notify_hash(
    transaction_id: &str,
    declaration: &Declaration,
    annotation: Option<&Declaration>,
    location: Option<Uuid>,
) -> Vec<u8> {
    request_hash(&serde_json::json!({
        "transactionId": transaction_id,
        "declaration": declaration,
        "annotation": annotation.cloned().unwrap_or_default(),
        "createdAtLocation": location.map(|l| l.to_string()),
    }))
}

fn event_config<'a>(state: &'a AppState, event_type: &str) -> Result<&'a EventConfig, ApiError> {
    state.config.events.get(event_type).ok_or_else(|| {
        ApiError::input_one(
            "invalid_enum_value",
            format!("Invalid event type '{event_type}'"),
            &["type"],
        )
    })
}

/// Resolves `createdAtLocation` for the caller: required for system clients, and it must be a
/// location row (an office or a facility), never an administrative area.
async fn resolve_location(
    state: &AppState,
    caller: &Caller,
    raw: Option<&str>,
) -> Result<Option<Uuid>, ApiError> {
    match (caller.user_type, raw) {
        (TokenUserType::System, None) => Err(ApiError::bad_request(LOCATION_REQUIRED)),
        (TokenUserType::User, Some(_)) => Err(ApiError::bad_request(
            "createdAtLocation can only be set by system clients",
        )),
        (TokenUserType::User, None) => Ok(None),
        (TokenUserType::System, Some(raw)) => {
            let id: Uuid = raw
                .parse()
                .map_err(|_| ApiError::bad_request(LOCATION_INVALID))?;
            if state.store.read(move |r| r.location_exists(id)).await? {
                Ok(Some(id))
            } else {
                Err(ApiError::bad_request(LOCATION_INVALID))
            }
        }
    }
}

fn validate_declaration(
    config: &EventConfig,
    input: &Declaration,
    annotation: Option<&Declaration>,
) -> Result<(), ApiError> {
    let mut issues = match config.validate_declaration(input, ValidationMode::Notify) {
        Ok(()) => Vec::new(),
        Err(issues) => issues,
    };
    if let Some(annotation) = annotation
        && let Err(more) = config.validate_annotation("NOTIFY", annotation, ValidationMode::Notify)
    {
        issues.extend(more);
    }
    if issues.is_empty() {
        Ok(())
    } else {
        let message = serde_json::to_string(&issues).unwrap_or_else(|_| "Invalid input".to_owned());
        Err(ApiError::bad_request(message))
    }
}

/// The actions and merge-document change of a brand-new event, built before its write job (in
/// the request's task, on another core than the single writer thread). Used only if the job
/// does create the event: then no other write can come between, so the change the writer would
/// record is exactly this one (same actor, actions, declaration and time).
struct FreshEvent {
    time_ms: u64,
    create: ActionDocument,
    requested: ActionDocument,
    accepted: ActionDocument,
    change: Vec<u8>,
}

impl FreshEvent {
    fn prepare(
        node: crvs_common::log::NodeId,
        actor: &Actor,
        create_tx: &str,
        notify_tx: &str,
        declaration: &Declaration,
        annotation: Option<&Declaration>,
        time_ms: u64,
    ) -> Result<Self, ApiError> {
        let create = actor.action(
            ActionType::Create,
            ActionStatus::Accepted,
            create_tx,
            time_ms,
        );
        let (requested, accepted) =
            actor.notify_pair(notify_tx, declaration.clone(), annotation.cloned(), time_ms);
        let actions = [create.clone(), requested.clone(), accepted.clone()];
        let mut delta = Declaration::new();
        for action in &actions {
            delta.extend(effective_declaration(action, &actions));
        }
        let mut crdt = EventCrdt::new(actor_for(node.as_bytes()));
        let change = crdt
            .record(&actions, &delta, time_ms as i64)
            .map_err(|e| ApiError::from(StoreError::Corrupt(format!("merge document: {e}"))))?;
        Ok(Self {
            time_ms,
            create,
            requested,
            accepted,
            change,
        })
    }
}

/// The create step, run inside a write job. Idempotent on `(transactionId, type)`.
fn create_in_job(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    event_type: &str,
    transaction_id: &str,
    hash: &[u8],
) -> Result<EventDocument, ApiError> {
    let (id, created) = stage_create(ctx, actor, event_type, transaction_id, hash, None)?;
    if created {
        if actor.user_type == UserType::User {
            let doc = ctx
                .document(id)?
                .ok_or_else(|| ApiError::event_not_found(id))?;
            let assign = actor.self_assignment(transaction_id, ctx.now_ms());
            ctx.append_action(&EventMeta::of(&doc), assign, None)?;
        }
        return Ok(ctx.finish_event()?);
    }
    ctx.reader()
        .event_document(id)?
        .ok_or_else(|| ApiError::event_not_found(id))
}

/// Stages the CREATE of a new event (its entry is signed by whoever finishes the job), or finds
/// the event this transaction id created before. Returns the event id and whether it is new.
fn stage_create(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    event_type: &str,
    transaction_id: &str,
    hash: &[u8],
    fresh: Option<&FreshEvent>,
) -> Result<(Uuid, bool), ApiError> {
    if let Some((id, stored)) = ctx
        .reader()
        .event_by_transaction(transaction_id, event_type)?
    {
        if stored != hash {
            return Err(replay_conflict());
        }
        return Ok((id, false));
    }
    let tracking_id = ctx.take_tracking_id()?.ok_or_else(|| {
        ApiError::new(
            crvs_common::error::ErrorCode::ServiceUnavailable,
            "No tracking ids left at this node; it needs to sync with central to get more",
        )
    })?;
    // Time-ordered: new events append to the right edge of the events table's key index.
    let id = Uuid::now_v7();
    let now_ms = fresh.map_or(ctx.now_ms(), |f| f.time_ms);
    let created_at = format_timestamp_ms(now_ms);
    ctx.insert_event(&NewEvent {
        id,
        event_type,
        tracking_id: &tracking_id,
        transaction_id,
        request_hash: hash,
        created_at: &created_at,
    })?;
    let meta = EventMeta {
        id,
        event_type: event_type.to_owned(),
        tracking_id,
        created_at,
    };
    let create = match fresh {
        Some(f) => f.create.clone(),
        None => actor.action(
            ActionType::Create,
            ActionStatus::Accepted,
            transaction_id,
            now_ms,
        ),
    };
    ctx.append_action(&meta, create, Some(hash))?;
    Ok((id, true))
}

/// The notify step, run inside a write job. Idempotent on `transactionId`. With no confirmation
/// hook configured, the Requested NOTIFY is followed by its Accepted copy (OpenCRVS §10.3).
#[allow(clippy::too_many_arguments, reason = "the notify input, spelled out")]
fn notify_in_job(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    event_id: Uuid,
    transaction_id: &str,
    declaration: Declaration,
    annotation: Option<Declaration>,
    hash: &[u8],
    fresh: Option<FreshEvent>,
) -> Result<EventDocument, ApiError> {
    let existing = ctx.reader().action_by_transaction(
        transaction_id,
        ActionType::Notify.as_str(),
        ActionStatus::Requested.as_str(),
    )?;
    if let Some((existing_event, stored)) = existing {
        if existing_event != event_id || stored.as_deref() != Some(hash) {
            return Err(replay_conflict());
        }
        return ctx
            .reader()
            .event_document(event_id)?
            .ok_or_else(|| ApiError::event_not_found(event_id));
    }
    let doc = ctx
        .document(event_id)?
        .filter(|doc| !crvs_common::state::is_deleted(&doc.actions))
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    if let Some(assignee) = assigned_to(&doc.actions)
        && (actor.user_type == UserType::System || assignee != actor.id)
    {
        return Err(ApiError::conflict(format!(
            "Event {event_id} is assigned to another user"
        )));
    }
    let status = derive_status(&doc.actions);
    let flags = derive_flags(&doc.actions);
    if !is_allowed(ActionType::Notify, status, &flags) {
        return Err(ApiError::conflict(not_allowed_message(
            ActionType::Notify,
            status,
            &flags,
        )));
    }
    let meta = EventMeta::of(&doc);
    if let Some(fresh) = fresh {
        ctx.append_action(&meta, fresh.requested, Some(hash))?;
        ctx.append_action(&meta, fresh.accepted, None)?;
        return Ok(ctx.finish_event_with_change(fresh.change)?);
    }
    // A record created in this very job has no drafts; any other may.
    ctx.clear_drafts(&event_id.to_string())?;
    let (requested, accepted) =
        actor.notify_pair(transaction_id, declaration, annotation, ctx.now_ms());
    ctx.append_action(&meta, requested, Some(hash))?;
    ctx.append_action(&meta, accepted, None)?;
    Ok(ctx.finish_event()?)
}

/// `POST /events`: creates an event with one CREATE action.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    let input = check_create(&caller, &state.config.events, body)?;
    let location = resolve_location(&state, &caller, input.created_at_location.as_deref()).await?;
    let actor = match caller.user_type {
        TokenUserType::System => Actor::new(&caller, location),
        // A person creates at their office, and the new record is assigned to them (OpenCRVS
        // `getOrCreateEventAndAssign`).
        TokenUserType::User => actions::acting(&state, &caller).await?.actor,
    };
    let hash = request_hash(&input);
    let doc = state
        .store
        .write(move |ctx| {
            create_in_job(ctx, &actor, &input.event_type, &input.transaction_id, &hash)
        })
        .await?;
    Ok(axum::Json(doc))
}

/// `POST /events/{eventId}/{action}`: a user action (`declare`, `validate`, `register`,
/// `reject`, `archive`, `print-certificate`, `edit`, `request-correction`,
/// `approve-correction`, `reject-correction`, `assign`, `unassign`, `custom`).
/// `POST /events/{eventId}/draft`: creates or replaces the caller's draft on the record.
pub(crate) async fn create_draft(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let input: DraftInput = body::json(body)?;
    Ok(axum::Json(
        drafts::create(state, caller, &raw_id, input).await?,
    ))
}

/// `GET /drafts`: the caller's drafts.
pub(crate) async fn list_drafts(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    Ok(axum::Json(drafts::list(state, caller).await?))
}

/// `POST /events/import`: one whole record from another system (`record.import`).
pub(crate) async fn import_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    crvs_common::server::import::require_scope(&caller)?;
    let doc: EventDocument = body::json(body)?;
    Ok(axum::Json(import::import(state, caller, doc).await?))
}

/// tRPC `event.bulkImport`: several records (at most
/// [`crvs_common::server::import::IMPORT_RECORDS_MAX`]), each in its own write; stops at the
/// first refusal (the ones before it are stored).
pub(crate) async fn import_many(
    state: Arc<AppState>,
    caller: Caller,
    docs: Vec<EventDocument>,
) -> Result<Vec<EventDocument>, ApiError> {
    crvs_common::server::import::import_each(docs, |doc| {
        import::import(Arc::clone(&state), caller.clone(), doc)
    })
    .await
}

/// `DELETE /events/{eventId}`: deletes an undeclared draft; answers the record as it was.
pub(crate) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    Ok(axum::Json(actions::delete(state, caller, &raw_id).await?))
}

pub(crate) async fn user_action(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((raw_id, segment)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    let action = UserAction::from_segment(&segment)
        .ok_or_else(|| ApiError::new(crvs_common::error::ErrorCode::NotFound, "No such route"))?;
    let input: ActionInput = body::json(body)?;
    let doc = actions::perform(state, caller, action, &raw_id, input).await?;
    Ok(axum::Json(doc))
}

/// `POST /events/{eventId}/notify`: an incomplete declaration from a health system.
pub(crate) async fn notify(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    caller.require_kind("record.notify")?;
    let input: NotifyInput = body::json(body)?;
    let event_id = parse_event_id(&raw_id)?;
    check_transaction_id(&input.transaction_id)?;
    if input.action_type.as_deref().is_some_and(|t| t != "NOTIFY") {
        return Err(ApiError::input_one(
            "invalid_literal",
            "Invalid literal value, expected \"NOTIFY\"",
            &["type"],
        ));
    }
    if let Some(body_id) = &input.event_id
        && parse_event_id(body_id)? != event_id
    {
        return Err(ApiError::input_one(
            "custom",
            "eventId in the body does not match the path",
            &["eventId"],
        ));
    }
    if let Some(orig) = &input.original_action_id {
        orig.parse::<Uuid>().map_err(|_| {
            ApiError::input_one("invalid_string", "Invalid uuid", &["originalActionId"])
        })?;
    }
    let event_type = state
        .store
        .read(move |r| Ok(r.event_document(event_id)?.map(|d| d.event_type)))
        .await?
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    caller.require("record.notify", &event_type)?;
    let config = event_config(&state, &event_type)?;
    validate_declaration(config, &input.declaration, input.annotation.as_ref())?;
    let location = resolve_location(&state, &caller, input.created_at_location.as_deref()).await?;
    let actor = Actor::new(&caller, location);
    let hash = notify_hash(
        &input.transaction_id,
        &input.declaration,
        input.annotation.as_ref(),
        location,
    );
    let doc = state
        .store
        .write(move |ctx| {
            notify_in_job(
                ctx,
                &actor,
                event_id,
                &input.transaction_id,
                input.declaration,
                input.annotation,
                &hash,
                None,
            )
        })
        .await?;
    Ok(axum::Json(doc))
}

/// `POST /events/notify`: create and notify in one call (system clients only). The create step
/// uses the transaction id `"<transactionId>:create"`, as OpenCRVS does; both steps commit in one
/// transaction, and both are idempotent.
pub(crate) async fn create_and_notify(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    if caller.user_type != TokenUserType::System {
        return Err(ApiError::forbidden(
            "Only system clients can use this route",
        ));
    }
    caller.require_kind("record.create")?;
    caller.require_kind("record.notify")?;
    let input: CreateAndNotifyInput = body::json(body)?;
    check_transaction_id(&input.transaction_id)?;
    let config = state.config.events.get(&input.event_type).ok_or_else(|| {
        ApiError::input_one(
            "invalid_enum_value",
            format!("Invalid event type '{}'", input.event_type),
            &["eventType"],
        )
    })?;
    caller.require("record.create", &input.event_type)?;
    caller.require("record.notify", &input.event_type)?;
    validate_declaration(config, &input.declaration, input.annotation.as_ref())?;
    let location = resolve_location(&state, &caller, input.created_at_location.as_deref()).await?;
    let actor = Actor::new(&caller, location);
    let create_tx = format!("{}:create", input.transaction_id);
    let create_hash = create_hash(&input.event_type, &create_tx, location);
    let notify_hash = notify_hash(
        &input.transaction_id,
        &input.declaration,
        input.annotation.as_ref(),
        location,
    );
    let fresh = FreshEvent::prepare(
        state.store.node_id(),
        &actor,
        &create_tx,
        &input.transaction_id,
        &input.declaration,
        input.annotation.as_ref(),
        crate::store::wall_ms(),
    )?;
    let doc = state
        .store
        .write(move |ctx| {
            // One job, one signed entry: CREATE and the NOTIFY pair of a new event travel
            // together (a replayed create is found and only the notify is new).
            let (event_id, created) = stage_create(
                ctx,
                &actor,
                &input.event_type,
                &create_tx,
                &create_hash,
                Some(&fresh),
            )?;
            notify_in_job(
                ctx,
                &actor,
                event_id,
                &input.transaction_id,
                input.declaration,
                input.annotation,
                &notify_hash,
                created.then_some(fresh),
            )
        })
        .await?;
    Ok(axum::Json(doc))
}

/// Appends an Accepted READ action (reads are audit-logged into the action list, as OpenCRVS does).
fn read_in_job(
    ctx: &mut WriteCtx<'_>,
    actor: &Actor,
    event_id: Uuid,
) -> Result<EventDocument, ApiError> {
    let doc = ctx
        .reader()
        .event_document(event_id)?
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    let meta = EventMeta::of(&doc);
    let tx = Uuid::new_v4().to_string();
    let read = actor.action(ActionType::Read, ActionStatus::Accepted, &tx, ctx.now_ms());
    ctx.append_action(&meta, read, None)?;
    ctx.audit(&actions::audit_entry(
        actor,
        "record.read",
        Some(event_id.to_string()),
        None,
    ))?;
    Ok(ctx.finish_event()?)
}

/// `GET /events/{eventId}`: the full record; records a READ action.
pub(crate) async fn read(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    caller.require_kind("record.read")?;
    let event_id = parse_event_id(&raw_id)?;
    let acting = actions::acting(&state, &caller).await?;
    let stored = state
        .store
        .read(move |r| r.event_document(event_id))
        .await?
        .filter(|doc| !crvs_common::state::is_deleted(&doc.actions))
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    // A caller without access (scope or jurisdiction) is told "not found", as OpenCRVS does.
    if !actions::may(&state, &acting, &caller, &stored, &["record.read"]).await? {
        return Err(ApiError::event_not_found(event_id));
    }
    let actor = acting.actor;
    let doc = state
        .store
        .write(move |ctx| read_in_job(ctx, &actor, event_id))
        .await?;
    Ok(axum::Json(doc))
}

/// Query of `GET /events/tracking/{trackingId}/data`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordDataQuery {
    /// Comma-separated field ids.
    fields: String,
}

/// Answer of `GET /events/tracking/{trackingId}/data`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordData {
    event_id: Uuid,
    tracking_id: String,
    #[serde(rename = "type")]
    event_type: String,
    status: String,
    /// The requested fields that have a value (absent fields are left out).
    data: Declaration,
    /// Requested `secured` fields left out because the caller may only search, not read.
    withheld: Vec<String>,
}

/// `GET /events/tracking/{trackingId}/data?fields=child.name,child.dob`: the current values of
/// the named fields of the record with that tracking id. Needs `record.read` for the event type,
/// or `record.search`, in which case `secured` fields are withheld (as search results do).
/// Records a READ action, like a full read.
pub(crate) async fn record_data(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(tracking_id): Path<String>,
    query: Result<Query<RecordDataQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<RecordData>, ApiError> {
    if !caller.scopes.has_kind("record.read") && !caller.scopes.has_kind("record.search") {
        return Err(ApiError::forbidden(
            "Missing scope record.read or record.search",
        ));
    }
    let Query(query) =
        query.map_err(|e| ApiError::input_one("invalid_type", e.body_text(), &["fields"]))?;
    let tracking: crvs_common::ids::TrackingId = tracking_id.parse().map_err(|_| {
        ApiError::input_one("invalid_string", "Invalid tracking id", &["trackingId"])
    })?;
    let fields: Vec<String> = query
        .fields
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if fields.is_empty() || fields.len() > FIELD_IDS_PER_READ_MAX {
        return Err(ApiError::input_one(
            "too_big",
            format!("fields must name 1 to {FIELD_IDS_PER_READ_MAX} field ids"),
            &["fields"],
        ));
    }
    let key = tracking.to_string();
    let event_id = state
        .store
        .read(move |r| r.event_by_tracking_id(&key))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                crvs_common::error::ErrorCode::NotFound,
                format!("Event not found with tracking ID: {tracking}"),
            )
        })?;
    let doc = state
        .store
        .read(move |r| r.event_document(event_id))
        .await?
        .filter(|doc| !crvs_common::state::is_deleted(&doc.actions))
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    let acting = actions::acting(&state, &caller).await?;
    let full = actions::may(&state, &acting, &caller, &doc, &["record.read"]).await?;
    if !full && !actions::may(&state, &acting, &caller, &doc, &["record.search"]).await? {
        return Err(ApiError::new(
            crvs_common::error::ErrorCode::NotFound,
            format!("Event not found with tracking ID: {tracking}"),
        ));
    }
    let config = event_config(&state, &doc.event_type)?;
    let unknown: Vec<_> = fields
        .iter()
        .filter(|f| config.field(f).is_none())
        .collect();
    if !unknown.is_empty() {
        let issues: Vec<_> = unknown
            .iter()
            .map(|f| serde_json::json!({"message": "Unexpected field", "id": f}))
            .collect();
        return Err(ApiError::bad_request(
            serde_json::Value::Array(issues).to_string(),
        ));
    }
    let actor = acting.actor;
    let doc = state
        .store
        .write(move |ctx| read_in_job(ctx, &actor, event_id))
        .await?;
    let declaration = crvs_common::state::aggregate_declaration(&doc.actions);
    let mut data = Declaration::new();
    let mut withheld = Vec::new();
    for field in fields {
        let secured = config.field(&field).is_some_and(|f| f.secured);
        if secured && !full {
            withheld.push(field);
        } else if let Some(value) = declaration.get(&field) {
            data.insert(field, value.clone());
        }
    }
    Ok(axum::Json(RecordData {
        event_id,
        tracking_id: doc.tracking_id.clone(),
        event_type: doc.event_type.clone(),
        status: derive_status(&doc.actions).as_str().to_owned(),
        data,
        withheld,
    }))
}
