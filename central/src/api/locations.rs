//! `GET /locations` with OpenCRVS's filters (§7) and `GET /config` (the event configuration).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use crvs_common::location::LocationQuery;

use super::{ApiError, AppState, Caller};

/// Lists locations (offices, facilities), filtered.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    query: Result<Query<LocationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::input_one("invalid_type", e.body_text(), &[]))?;
    let now = crvs_common::event::format_timestamp_ms(crate::store::wall_ms());
    let all = state.store.read_async(|r| r.locations()).await?;
    let out = query.apply(all, &now).map_err(ApiError::from_envelope)?;
    Ok(axum::Json(out))
}

/// The event configuration, as `EventConfig[]`.
pub(crate) async fn config(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> impl IntoResponse {
    axum::Json(state.config.events.events().to_vec())
}
