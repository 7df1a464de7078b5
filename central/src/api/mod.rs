//! Central's HTTP API (axum): the node's read routes over the merged national data (read an
//! event, search, record data by tracking id, locations, config) under both `/api/events` and
//! the gateway-style `/events`, the token endpoint for clients created at central, ping, the
//! OpenAPI document, and the ops routes (`/api/sync/*`, `/metrics`).

mod body;
mod error;
mod events;
mod locations;
mod ops;
mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use crvs_common::error::ErrorCode;
use crvs_common::limits::REQUEST_BODY_BYTES_MAX;
use crvs_common::scope::ScopeSet;
use tokio::sync::Semaphore;

pub use error::ApiError;

use crate::auth::{TokenKeys, TokenUserType};
use crate::config::Config;
use crate::store::Store;

/// Secret verifications (argon2id, ~19 MiB each) allowed at once.
pub const SECRET_VERIFICATIONS_MAX: usize = 4;

/// Shared state of every handler.
#[derive(Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Token keys.
    pub tokens: TokenKeys,
    /// Bounds concurrent argon2 verifications.
    pub secret_permits: Semaphore,
}

/// The OpenAPI document of every route, served at `GET /api/events/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let events = Router::new()
        .route("/events/search", post(events::search))
        .route(
            "/events/tracking/{tracking_id}/data",
            get(events::record_data),
        )
        .route("/events/{event_id}", get(events::read))
        .route("/locations", get(locations::list))
        .route("/config", get(locations::config))
        .route("/openapi.json", get(openapi));
    // Ops routes are not token-protected: they carry no personal data (no declaration values,
    // no entry bytes), and central's HTTP listener defaults to loopback. Expose them beyond it
    // only behind a proxy that authenticates operators.
    let ops = Router::new()
        .route("/api/sync/status", get(ops::status))
        .route("/api/sync/conflicts", get(ops::conflicts))
        .route("/api/sync/rejects", get(ops::rejects))
        .route("/metrics", get(ops::metrics));
    Router::new()
        .nest("/api/events", events.clone())
        .nest("/events", events)
        .merge(ops)
        .route("/auth/token", post(token::token))
        .route("/api/auth/token", post(token::token))
        .route("/token", post(token::token))
        .route("/ping", get(ping))
        .route("/api/ping", get(ping))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(
                    tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
                )
                .on_request(())
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                ),
        )
        .with_state(state)
}

async fn ping() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn openapi() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "No such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotSupported,
        "Method not allowed on this route",
    )
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Client (or user) id.
    pub id: String,
    /// `user` or `system`.
    pub user_type: TokenUserType,
    /// Parsed scopes.
    pub scopes: ScopeSet,
}

impl Caller {
    /// 403 unless some scope of `kind` exists at all.
    pub fn require_kind(&self, kind: &str) -> Result<(), ApiError> {
        if self.scopes.has_kind(kind) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("Missing scope {kind}")))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(ApiError::unauthorized)?;
        let value = value.to_str().map_err(|_| ApiError::unauthorized())?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(ApiError::unauthorized)?;
        let claims = state.tokens.validate(token).map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            ApiError::unauthorized()
        })?;
        let scopes = ScopeSet::parse_all(&claims.scope).map_err(|_| ApiError::unauthorized())?;
        Ok(Self {
            id: claims.sub,
            user_type: claims.user_type,
            scopes,
        })
    }
}

#[cfg(test)]
mod tests;
