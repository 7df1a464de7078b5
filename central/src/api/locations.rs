//! `GET /locations` with OpenCRVS's filters (§7) and `GET /config` (the event configuration).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use crvs_common::limits::LOCATION_IDS_FILTER_MAX;
use serde::Deserialize;

use super::{ApiError, AppState, Caller};

/// Query filters of `GET /locations`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct LocationQuery {
    location_type: Option<String>,
    is_active: Option<String>,
    external_id: Option<String>,
    /// Comma-separated UUIDs.
    location_ids: Option<String>,
}

/// Lists locations (offices, facilities), filtered.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    query: Result<Query<LocationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::input_one("invalid_type", e.body_text(), &[]))?;
    let is_active = match query.is_active.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(ApiError::input_one(
                "invalid_type",
                "isActive must be true or false",
                &["isActive"],
            ));
        }
    };
    let ids: Option<Vec<uuid::Uuid>> = match query.location_ids.as_deref() {
        None => None,
        Some(list) => {
            let ids = list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.trim().parse::<uuid::Uuid>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    ApiError::input_one("invalid_string", "Invalid uuid", &["locationIds"])
                })?;
            if ids.len() > LOCATION_IDS_FILTER_MAX {
                return Err(ApiError::input_one(
                    "too_big",
                    format!("At most {LOCATION_IDS_FILTER_MAX} location ids"),
                    &["locationIds"],
                ));
            }
            Some(ids)
        }
    };
    let now = crvs_common::event::format_timestamp_ms(crate::store::wall_ms());
    let all = state.store.read_async(|r| r.locations()).await?;
    let out: Vec<_> = all
        .into_iter()
        .filter(|l| {
            query
                .location_type
                .as_ref()
                .is_none_or(|t| l.location_type.as_ref() == Some(t))
        })
        .filter(|l| {
            query
                .external_id
                .as_ref()
                .is_none_or(|x| l.external_id.as_ref() == Some(x))
        })
        .filter(|l| ids.as_ref().is_none_or(|ids| ids.contains(&l.id)))
        .filter(|l| {
            // ISO timestamps of one format compare as strings.
            let active = l
                .valid_until
                .as_ref()
                .is_none_or(|until| until.as_str() > now.as_str());
            is_active.is_none_or(|want| want == active)
        })
        .collect();
    Ok(axum::Json(out))
}

/// The event configuration, as `EventConfig[]`.
pub(crate) async fn config(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> impl IntoResponse {
    axum::Json(state.config.events.events().to_vec())
}
