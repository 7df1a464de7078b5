//! The events read routes over the merged national data: read an event, search, and record data
//! by tracking id and field id. Checks run in OpenCRVS's order: token (401), scope (403), input
//! (400), record access (404).
//!
//! Unlike the node, a read at central records no READ action: it writes an audit row (who,
//! when, where, what) in central's audit log, as every search does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use crvs_common::error::ErrorCode;
use crvs_common::event::{Declaration, EventDocument};
use crvs_common::limits::FIELD_IDS_PER_READ_MAX;
use crvs_common::search::{SearchInput, SearchRequest};
use crvs_common::server::accounts::AuditEntry;
use crvs_common::server::list::{Jurisdiction, remove_secured};
use crvs_common::server::wall_ms;
use crvs_common::state::EventIndex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crvs_common::event::UserType;
use crvs_common::server::actions::{Actor, acting, parse_event_id};
use crvs_common::server::login::write_audit;

use super::{ApiError, AppState, Caller, body};
use crate::store::Ancestry;

/// `GET /events/{eventId}`: the full record as merged at central. A person sees the records
/// of their jurisdiction (others are "not found", as OpenCRVS answers); every read is audited.
pub(crate) async fn read(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    caller.require_kind("record.read")?;
    let event_id = parse_event_id(&raw_id)?;
    let acting = acting(state.as_ref(), &caller).await?;
    let doc = state
        .store
        .read_async(move |r| r.event_document(event_id))
        .await?
        // A deleted draft keeps its signed actions but is not found.
        .filter(|doc| !crvs_common::state::is_deleted(&doc.actions))
        .ok_or_else(|| ApiError::event_not_found(event_id))?;
    let config = state.config.events.get(&doc.event_type).ok_or_else(|| {
        ApiError::internal(&format!("event type {} is not configured", doc.event_type))
    })?;
    let places = state.store.read_async(|r| r.location_set()).await?;
    if !acting.may(&caller.scopes, config, &doc, &["record.read"], |l| {
        places.location_chain(l)
    }) {
        return Err(ApiError::event_not_found(event_id));
    }
    write_audit(
        state.as_ref(),
        audit_entry(&acting.actor, "record.read", Some(event_id.to_string())),
    )
    .await?;
    Ok(axum::Json(doc))
}

/// The audit row of `actor` doing `operation` on `subject`.
pub(crate) fn audit_entry(
    actor: &Actor,
    operation: &'static str,
    subject: Option<String>,
) -> AuditEntry {
    AuditEntry {
        actor: actor.id.clone(),
        actor_type: match actor.user_type {
            UserType::User => "user",
            UserType::System => "system",
        },
        location: actor.location,
        operation,
        subject,
        detail: None,
    }
}

/// Search answer.
#[derive(Debug, Serialize)]
pub(crate) struct SearchOutput {
    results: Vec<EventIndex>,
    total: u64,
}

/// `POST /events/search` over every record central holds, through the national index
/// (`store::search`): the query's indexed clauses pick the candidates, the shared evaluator
/// decides. A person sees only records of their jurisdiction (the options of their
/// `record.search` scopes, as at a node); `secured` fields are removed; every search is audited.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<SearchOutput>, ApiError> {
    caller.require_kind("record.search")?;
    let raw = body::bytes(body)?;
    let input: SearchInput = body::parse(&raw)?;
    let request =
        SearchRequest::parse(&input, &state.config.events).map_err(ApiError::from_envelope)?;
    let acting = acting(state.as_ref(), &caller).await?;
    let jurisdiction = Jurisdiction::of(&state.config.events, &acting, &caller.scopes);
    let scopes = caller.scopes.clone();
    let now_ms = wall_ms();
    let (mut results, total) = state
        .store
        .read_async(move |r| {
            let mut visible = |e: &EventIndex, ancestry: &Ancestry<'_>| {
                scopes.allows("record.search", &e.event_type)
                    && jurisdiction
                        .as_ref()
                        .is_none_or(|j| j.allows(e, |l| ancestry.of(l)))
            };
            r.search(&request, now_ms, &mut visible)
        })
        .await?;
    // Every search is audited: who, where, and the query.
    let audit = AuditEntry {
        detail: Some(String::from_utf8_lossy(&raw).into_owned()),
        ..audit_entry(&acting.actor, "record.search", None)
    };
    write_audit(&*state, audit).await?;
    // Secured fields never leave through search (OpenCRVS `removeSecuredFields`).
    remove_secured(&mut results, &state.config.events);
    Ok(axum::Json(SearchOutput { results, total }))
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

fn tracking_not_found(tracking: &crvs_common::ids::TrackingId) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("Event not found with tracking ID: {tracking}"),
    )
}

/// `GET /events/tracking/{trackingId}/data?fields=child.name,child.dob`: the current (merged)
/// values of the named fields of the record with that tracking id. Needs `record.read` for the
/// event type, or `record.search`, in which case `secured` fields are withheld.
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
    let index = state
        .store
        .read_async(move |r| match r.event_by_tracking_id(&key)? {
            Some(id) => r.index_entry(id),
            None => Ok(None),
        })
        .await?
        .ok_or_else(|| tracking_not_found(&tracking))?;
    let full = caller.scopes.allows("record.read", &index.event_type);
    if !full && !caller.scopes.allows("record.search", &index.event_type) {
        return Err(tracking_not_found(&tracking));
    }
    let config = state.config.events.get(&index.event_type).ok_or_else(|| {
        ApiError::internal(&format!(
            "event type {} is not configured",
            index.event_type
        ))
    })?;
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
    let mut data = Declaration::new();
    let mut withheld = Vec::new();
    for field in fields {
        let secured = config.field(&field).is_some_and(|f| f.secured);
        if secured && !full {
            withheld.push(field);
        } else if let Some(value) = index.declaration.get(&field) {
            data.insert(field, value.clone());
        }
    }
    Ok(axum::Json(RecordData {
        event_id: index.id,
        tracking_id: index.tracking_id,
        event_type: index.event_type,
        status: index.status.as_str().to_owned(),
        data,
        withheld,
    }))
}
