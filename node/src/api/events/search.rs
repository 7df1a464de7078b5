//! `POST /events/search` over the node's own records, using the shared query evaluator
//! (`crvs_common::search`): fuzzy, within-location and time-period clauses belong to central's
//! national index and are refused here with a clear 400.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use crvs_common::search::{SearchInput, SearchRequest};
use crvs_common::state::EventIndex;
use serde::Serialize;

use super::super::{ApiError, AppState, Caller, body};

/// Search answer.
#[derive(Debug, Serialize)]
pub(crate) struct SearchOutput {
    results: Vec<EventIndex>,
    total: u64,
}

/// `POST /events/search`.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<SearchOutput>, ApiError> {
    caller.require_kind("record.search")?;
    let input: SearchInput = body::json(body)?;
    let request =
        SearchRequest::parse(&input, &state.config.events).map_err(ApiError::from_envelope)?;
    let prefilter = request.query.required_tracking_id().map(str::to_owned);
    let entries = state
        .store
        .read(move |r| r.index_entries(prefilter.as_deref()))
        .await?;
    let (mut results, total) = request.run(entries, |e| {
        caller.scopes.allows("record.search", &e.event_type)
    });
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
