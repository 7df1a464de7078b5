//! The node's HTTP API (axum): OpenCRVS's events REST routes under both `/api/events` and the
//! gateway-style `/events`, the token endpoint, locations, config, ping and the OpenAPI document;
//! and the ops routes `/api/sync/status` and `/metrics` ([`sync`]).

mod body;
mod error;
mod events;
mod locations;
mod login;
pub mod sync;
mod token;
mod trpc;
mod users;

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
pub use login::LoginBook;

use crate::auth::{TokenKeys, TokenUserType};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::sync_driver::SyncHandle;

/// Secret verifications (argon2id, ~19 MiB each) allowed at once: bounds memory on a 1 GB board.
pub const SECRET_VERIFICATIONS_MAX: usize = 2;

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
    /// The sync driver, when the node is enrolled.
    pub sync: Option<SyncHandle>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Login attempts and the logins waiting for their code.
    pub logins: std::sync::Mutex<LoginBook>,
    /// Wakes the outbox transport when a notification is queued.
    pub outbox_wake: Arc<tokio::sync::Notify>,
}

/// The OpenAPI document of every route, served at `GET /api/events/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let events = Router::new()
        .route("/events", post(events::create).get(events::list))
        .route("/events/notify", post(events::create_and_notify))
        .route("/events/import", post(events::import_one))
        .route("/events/search", post(events::search))
        .route(
            "/events/tracking/{tracking_id}/data",
            get(events::record_data),
        )
        .route(
            "/events/{event_id}",
            get(events::read).delete(events::delete),
        )
        .route("/events/{event_id}/notify", post(events::notify))
        .route("/events/{event_id}/draft", post(events::create_draft))
        .route("/drafts", get(events::list_drafts))
        .route("/events/{event_id}/{action}", post(events::user_action))
        .route("/locations", get(locations::list))
        .route("/config", get(locations::config))
        .route("/{procedure}", post(trpc::procedure).get(trpc::query))
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/api/events", events.clone())
        .nest("/events", events)
        .route("/auth/token", post(token::token))
        .route("/api/auth/token", post(token::token))
        .route("/token", post(token::token))
        .route("/auth/authenticate", post(login::authenticate))
        .route("/auth/verifyCode", post(login::verify_code))
        .route(
            "/auth/resendAuthenticationCode",
            post(login::resend_code),
        )
        .route("/auth/refreshToken", post(login::refresh_token))
        .route("/auth/invalidateToken", post(login::invalidate_token))
        .route("/ping", get(ping))
        .route("/api/ping", get(ping))
        .route("/api/users", get(users::by_mobile))
        .route("/api/users/search", post(users::search))
        .route("/api/users/{user_id}", get(users::get))
        .route("/api/users/{user_id}/audit", get(users::audit))
        .route("/api/sync/status", get(sync::status))
        .route("/metrics", get(sync::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            sync::count_requests,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                // Method and path only: the query string may carry `client_secret` (OpenCRVS's
                // token route takes it there), and secrets never reach the logs.
                .make_span_with(|req: &axum::http::Request<_>| {
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
                })
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
    /// The user's role (users only).
    pub role: Option<String>,
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

    /// 403 unless a scope of `kind` covers `event_type`.
    pub fn require(&self, kind: &str, event_type: &str) -> Result<(), ApiError> {
        if self.scopes.allows(kind, event_type) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "Missing scope {kind} for event type {event_type}"
            )))
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
            role: claims.role,
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    async fn state(dir: &tempfile::TempDir) -> Arc<AppState> {
        let file = crate::config::ConfigFile {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let config = file.validate().unwrap();
        crate::init(&config, None).await.unwrap();
        let key = crate::keys::load_key_file(&config.node_key_path()).unwrap();
        let store = crate::open_store(&config, key).unwrap();
        let jwt = crate::keys::load_key_file(&config.jwt_key_path()).unwrap();
        Arc::new(AppState {
            store,
            tokens: TokenKeys::new(
                &jwt,
                "crvs-edge:node:test".into(),
                std::time::Duration::from_secs(600),
            ),
            config: Arc::new(config),
            secret_permits: Semaphore::new(1),
            sync: None,
            metrics: Metrics::new(),
            logins: std::sync::Mutex::new(LoginBook::default()),
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Every path of the OpenAPI document is routed (not the fallback), and every routed path is
    /// documented, so the document stays true.
    #[tokio::test]
    async fn openapi_document_matches_the_router() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(&dir).await);
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, ops) in paths {
            let concrete = path
                .replace("{eventId}", "00000000-0000-4000-8000-000000000000")
                .replace("{trackingId}", "AAAAAA")
                .replace("{userId}", "00000000-0000-4000-8000-000000000001");
            for method in ops.as_object().unwrap().keys() {
                let req = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&concrete)
                    .body(Body::empty())
                    .unwrap();
                let res = app.clone().oneshot(req).await.unwrap();
                let status = res.status();
                let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let text = String::from_utf8_lossy(&body);
                assert!(
                    !text.contains("No such route"),
                    "{method} {path} is documented but not routed"
                );
                assert_ne!(
                    status,
                    axum::http::StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
            }
        }
        let routed = [
            "/api/events/events",
            "/api/events/events/notify",
            "/api/events/events/import",
            "/api/events/events/search",
            "/api/events/events/tracking/{trackingId}/data",
            "/api/events/events/{eventId}",
            "/api/events/events/{eventId}/notify",
            "/api/events/events/{eventId}/draft",
            "/api/events/drafts",
            "/api/events/events/{eventId}/declare",
            "/api/events/events/{eventId}/validate",
            "/api/events/events/{eventId}/register",
            "/api/events/events/{eventId}/reject",
            "/api/events/events/{eventId}/archive",
            "/api/events/events/{eventId}/print-certificate",
            "/api/events/events/{eventId}/edit",
            "/api/events/events/{eventId}/request-correction",
            "/api/events/events/{eventId}/approve-correction",
            "/api/events/events/{eventId}/reject-correction",
            "/api/events/events/{eventId}/assign",
            "/api/events/events/{eventId}/unassign",
            "/api/events/events/{eventId}/custom",
            "/api/events/locations",
            "/api/events/config",
            "/api/events/openapi.json",
            "/auth/token",
            "/api/auth/token",
            "/token",
            "/auth/authenticate",
            "/auth/verifyCode",
            "/auth/resendAuthenticationCode",
            "/auth/refreshToken",
            "/auth/invalidateToken",
            "/ping",
            "/api/ping",
            "/api/sync/status",
            "/api/users/{userId}/audit",
            "/api/users/{userId}",
            "/api/users",
            "/api/users/search",
            "/metrics",
        ];
        for path in routed {
            assert!(
                paths.contains_key(path),
                "{path} is routed but not documented"
            );
            let gateway = path.strip_prefix("/api");
            if let Some(g) = gateway.filter(|g| g.starts_with("/events/")) {
                assert!(
                    paths.contains_key(g),
                    "{g} (gateway style) is not documented"
                );
            }
        }
    }
}
