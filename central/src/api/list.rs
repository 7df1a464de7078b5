//! `GET /events` (OpenCRVS "list events"; tRPC `event.list`) over every record central holds,
//! with the listing shared with the node (`crvs_common::server::list`): a person sees the
//! records of their jurisdiction (their `record.search` scopes), filtered by status, flags,
//! location, assignee and type, one page, secured fields removed; every listing is audited.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use crvs_common::server::actions::acting;
use crvs_common::server::list::{Jurisdiction, ListQuery, SearchOutput};
use crvs_common::server::login::write_audit;

use super::events::audit_entry;
use super::{ApiError, AppState, Caller};

/// `GET /events?status=DECLARED&flags=validated&location=...&assignedTo=me&limit=20&offset=0`.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
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
    let acting = acting(state.as_ref(), &caller).await?;
    let jurisdiction = Jurisdiction::of(&state.config.events, &acting, &caller.scopes);
    let entries = state
        .store
        .read_async(move |r| {
            let entries = r.index_entries(None)?;
            Ok(match jurisdiction {
                None => entries,
                Some(j) => {
                    let places = r.location_set()?;
                    j.filter(entries, |location| places.location_chain(location))
                }
            })
        })
        .await?;
    let out = filter.page(entries, &caller.scopes, &state.config.events);
    let mut audit = audit_entry(&acting.actor, "record.search", None);
    audit.detail = Some(query.describe());
    write_audit(state.as_ref(), audit).await?;
    Ok(out)
}
