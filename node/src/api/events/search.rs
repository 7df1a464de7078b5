//! `POST /events/search` over the node's own records, using the shared query evaluator
//! (`crvs_common::search`): a scan of the node's derived index (a clinic holds thousands of
//! records, not millions) with every clause central answers, fuzzy names, within-location and
//! time periods included, so search works offline too.

use std::cell::RefCell;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use std::collections::HashMap;

use axum::extract::Query;
use crvs_common::access::{grants, index_facts};
use crvs_common::event::UserType;
use crvs_common::limits::SEARCH_LIMIT_MAX;
use crvs_common::search::{SearchEnv, SearchInput, SearchRequest};
use crvs_common::state::EventIndex;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::actions::Acting;

use super::super::{ApiError, AppState, Caller, body};

/// Search answer.
#[derive(Debug, Serialize)]
pub(crate) struct SearchOutput {
    results: Vec<EventIndex>,
    total: u64,
}

/// The place-of-event field of each event type (jurisdiction is checked against it).
fn place_fields(state: &AppState) -> HashMap<String, Option<String>> {
    state
        .config
        .events
        .events()
        .iter()
        .map(|c| {
            (
                c.id().to_owned(),
                c.place_of_event_field().map(|f| f.id.clone()),
            )
        })
        .collect()
}

/// Whether a person may search an entry: the options of their `record.search` scopes against
/// the record's places. `areas_of` gives the areas holding a location, nearest first.
fn in_jurisdiction(
    e: &EventIndex,
    place_fields: &HashMap<String, Option<String>>,
    user: &crvs_common::access::UserFacts,
    scopes: &crvs_common::scope::ScopeSet,
    areas_of: impl FnMut(Uuid) -> Vec<Uuid>,
) -> bool {
    let place_field = place_fields.get(&e.event_type).cloned().flatten();
    let facts = index_facts(e, place_field.as_deref(), areas_of);
    grants(scopes, &["record.search"], None, user, &facts)
}

/// The indexed (declared or notified) records the caller may search: all of them for a system
/// client (its scopes' event types are checked by the caller), those of their jurisdiction for
/// a person (the options of their `record.search` scopes). Each location's place in the area
/// hierarchy is looked up once.
async fn visible_entries(
    state: &Arc<AppState>,
    acting: &Acting,
    caller: &Caller,
    tracking_id: Option<String>,
) -> Result<Vec<EventIndex>, ApiError> {
    let jurisdiction = (acting.actor.user_type == UserType::User).then(|| {
        (
            place_fields(state),
            acting.facts.clone(),
            caller.scopes.clone(),
        )
    });
    Ok(state
        .store
        .read(move |r| {
            let entries = r.index_entries(tracking_id.as_deref())?;
            let Some((place_fields, user, scopes)) = jurisdiction else {
                return Ok(entries);
            };
            let mut areas: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
            Ok(entries
                .into_iter()
                .filter(|e| {
                    in_jurisdiction(e, &place_fields, &user, &scopes, |location| {
                        areas
                            .entry(location)
                            .or_insert_with(|| r.area_chain(location).unwrap_or_default())
                            .clone()
                    })
                })
                .collect())
        })
        .await?)
}

/// Filters and paging of `GET /events` (OpenCRVS "list events"; tRPC `event.list`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Comma-separated statuses (any of them).
    status: Option<String>,
    /// Comma-separated flags (all of them).
    flags: Option<String>,
    /// Where the record was created or its event took place (a location id).
    location: Option<Uuid>,
    /// The assignee's user id, or `me`.
    assigned_to: Option<String>,
    /// Event type.
    #[serde(rename = "type")]
    event_type: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

/// Default page of `GET /events`.
const LIST_PAGE_DEFAULT: u32 = 20;

/// `GET /events?status=DECLARED&flags=validated&location=...&assignedTo=me&limit=20&offset=0`:
/// the records the caller may see (newest first), filtered, one page.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<SearchOutput>, ApiError> {
    caller.require_kind("record.search")?;
    let Query(query) =
        query.map_err(|e| ApiError::input_one("invalid_type", e.body_text(), &["query"]))?;
    list_with(state, caller, query).await.map(axum::Json)
}

/// [`list`] with its query parsed (tRPC `event.list` passes it as JSON).
pub(crate) async fn list_with(
    state: Arc<AppState>,
    caller: Caller,
    query: ListQuery,
) -> Result<SearchOutput, ApiError> {
    caller.require_kind("record.search")?;
    let limit = query.limit.unwrap_or(LIST_PAGE_DEFAULT);
    if limit == 0 || u64::from(limit) > SEARCH_LIMIT_MAX {
        return Err(ApiError::input_one(
            "too_big",
            format!("limit must be between 1 and {SEARCH_LIMIT_MAX}"),
            &["limit"],
        ));
    }
    let statuses: Option<Vec<String>> = query
        .status
        .as_deref()
        .map(|s| s.split(',').map(|x| x.trim().to_uppercase()).collect());
    if let Some(list) = &statuses {
        let known = ["CREATED", "NOTIFIED", "DECLARED", "REGISTERED", "ARCHIVED"];
        if let Some(bad) = list.iter().find(|s| !known.contains(&s.as_str())) {
            return Err(ApiError::input_one(
                "invalid_enum_value",
                format!("Invalid status '{bad}'"),
                &["status"],
            ));
        }
    }
    let flags: Vec<String> = query
        .flags
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let assignee = match query.assigned_to.as_deref() {
        Some("me") => Some(caller.id.clone()),
        other => other.map(str::to_owned),
    };
    let acting = super::actions::acting(&state, &caller).await?;
    let entries = visible_entries(&state, &acting, &caller, None).await?;
    let mut matching: Vec<EventIndex> = entries
        .into_iter()
        .filter(|e| caller.scopes.allows("record.search", &e.event_type))
        .filter(|e| {
            query
                .event_type
                .as_deref()
                .is_none_or(|t| e.event_type == t)
        })
        .filter(|e| {
            statuses
                .as_ref()
                .is_none_or(|list| list.iter().any(|s| s == e.status.as_str()))
        })
        .filter(|e| flags.iter().all(|f| e.flags.contains(f)))
        .filter(|e| {
            assignee
                .as_ref()
                .is_none_or(|a| e.assigned_to.as_ref() == Some(a))
        })
        .filter(|e| {
            query.location.is_none_or(|loc| {
                e.created_at_location == Some(loc)
                    || e.declaration
                        .values()
                        .any(|v| v.as_str() == Some(&loc.to_string()))
            })
        })
        .collect();
    let total = matching.len() as u64;
    let offset = query.offset.unwrap_or(0) as usize;
    let mut results: Vec<EventIndex> = matching
        .drain(..)
        .skip(offset)
        .take(limit as usize)
        .collect();
    for e in &mut results {
        if let Some(config) = state.config.events.get(&e.event_type) {
            for field in config.secured_field_ids() {
                e.declaration.remove(field);
            }
        }
    }
    let audit = super::actions::audit_entry(
        &acting.actor,
        "record.search",
        None,
        serde_json::to_string(&query.describe()).ok(),
    );
    state.store.write(move |ctx| ctx.audit(&audit)).await?;
    Ok(SearchOutput { results, total })
}

impl ListQuery {
    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "list": {
                "status": self.status, "flags": self.flags, "location": self.location,
                "assignedTo": self.assigned_to, "type": self.event_type,
                "limit": self.limit, "offset": self.offset,
            }
        })
    }
}

/// `POST /events/search`.
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
    let acting = super::actions::acting(&state, &caller).await?;
    let prefilter = request.query.required_tracking_id().map(str::to_owned);
    let jurisdiction = (acting.actor.user_type == UserType::User)
        .then(|| (place_fields(&state), acting.facts.clone()));
    let scopes = caller.scopes.clone();
    let now_ms = crate::store::wall_ms();
    let (mut results, total) = state
        .store
        .read(move |r| {
            let entries = r.index_entries(prefilter.as_deref())?;
            // The areas holding each location, looked up once per search.
            let areas: RefCell<HashMap<Uuid, Vec<Uuid>>> = RefCell::new(HashMap::new());
            let ancestors = |location: Uuid| {
                areas
                    .borrow_mut()
                    .entry(location)
                    .or_insert_with(|| r.area_chain(location).unwrap_or_default())
                    .clone()
            };
            let env = SearchEnv {
                now_ms,
                ancestors: &ancestors,
            };
            Ok(request.run(entries, &env, |e| {
                scopes.allows("record.search", &e.event_type)
                    && jurisdiction.as_ref().is_none_or(|(place_fields, user)| {
                        in_jurisdiction(e, place_fields, user, &scopes, ancestors)
                    })
            }))
        })
        .await?;
    // Every search is audited: who, where, and the query.
    let audit = super::actions::audit_entry(
        &acting.actor,
        "record.search",
        None,
        Some(String::from_utf8_lossy(&raw).into_owned()),
    );
    state.store.write(move |ctx| ctx.audit(&audit)).await?;
    // Secured fields never leave through search (OpenCRVS `removeSecuredFields`).
    for e in &mut results {
        if let Some(config) = state.config.events.get(&e.event_type) {
            for field in config.secured_field_ids() {
                e.declaration.remove(field);
            }
        }
    }
    Ok(axum::Json(SearchOutput { results, total }))
}
