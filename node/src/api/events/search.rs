//! `POST /events/search` over the node's own records, using the shared query evaluator
//! (`crvs_common::search`): fuzzy, within-location and time-period clauses belong to central's
//! national index and are refused here with a clear 400. `GET /events` (list) runs the listing
//! shared with central (`crvs_common::server::list`) over the node's index.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use crvs_common::search::{SearchInput, SearchRequest};
use crvs_common::server::list::{Jurisdiction, remove_secured};
use crvs_common::state::EventIndex;

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
    let entries = visible_entries(&state, &acting, &caller, prefilter).await?;
    let (mut results, total) = request.run(entries, |e| {
        caller.scopes.allows("record.search", &e.event_type)
    });
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
