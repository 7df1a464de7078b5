//! `POST /events/search` over the node's own records, using the shared query evaluator
//! (`crvs_common::search`): a scan of the node's derived index (a clinic holds thousands of
//! records, not millions) with every clause central answers, fuzzy names, within-location and
//! time periods included, so search works offline too. `GET /events` (list) runs the listing
//! shared with central (`crvs_common::server::list`) over the node's index.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use crvs_common::search::{SearchEnv, SearchInput, SearchRequest};
use crvs_common::server::list::{Jurisdiction, remove_secured};
use crvs_common::state::EventIndex;
use uuid::Uuid;

pub(crate) use crvs_common::server::list::{ListQuery, SearchOutput};

use super::actions::Acting;

use super::super::{ApiError, AppState, Caller, body};

/// The indexed (declared or notified) records the caller may search: all of them for a system
/// client (its scopes' event types are checked by the caller), those of their jurisdiction for
/// a person (the options of their `record.search` scopes).
async fn visible_entries(
    state: &Arc<AppState>,
    acting: &Acting,
    caller: &Caller,
    tracking_id: Option<String>,
) -> Result<Vec<EventIndex>, ApiError> {
    let jurisdiction = Jurisdiction::of(&state.config.events, acting, &caller.scopes);
    Ok(state
        .store
        .read(move |r| {
            let entries = r.index_entries(tracking_id.as_deref())?;
            Ok(match jurisdiction {
                None => entries,
                Some(j) => j.filter(entries, |location| {
                    r.area_chain(location).unwrap_or_default()
                }),
            })
        })
        .await?)
}

/// `GET /events?status=DECLARED&flags=validated&location=...&assignedTo=me&limit=20&offset=0`:
/// the records the caller may see (newest first), filtered, one page.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<SearchOutput>, ApiError> {
    let query = ListQuery::from_request(&caller, query)?;
    list_with(state, caller, query).await.map(axum::Json)
}

/// [`list`] with its query parsed (tRPC `event.list` passes it as JSON).
pub(crate) async fn list_with(
    state: Arc<AppState>,
    caller: Caller,
    query: ListQuery,
) -> Result<SearchOutput, ApiError> {
    let filter = query.check(&caller)?;
    let acting = super::actions::acting(&state, &caller).await?;
    let entries = visible_entries(&state, &acting, &caller, None).await?;
    let out = filter.page(entries, &caller.scopes, &state.config.events);
    let audit =
        super::actions::audit_entry(&acting.actor, "record.search", None, Some(query.describe()));
    state.store.write(move |ctx| ctx.audit(&audit)).await?;
    Ok(out)
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
    let jurisdiction = Jurisdiction::of(&state.config.events, &acting, &caller.scopes);
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
                    && jurisdiction.as_ref().is_none_or(|j| j.allows(e, ancestors))
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
    remove_secured(&mut results, &state.config.events);
    Ok(axum::Json(SearchOutput { results, total }))
}
