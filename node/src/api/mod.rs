//! The node's HTTP API (axum): OpenCRVS's events REST routes under both `/api/events` and the
//! gateway-style `/events`, the token endpoint, locations, config, ping and the OpenAPI document;
//! and the ops routes `/api/sync/status` and `/metrics` ([`sync`]).

mod events;
mod locations;
mod procedures;
pub mod sync;
use crvs_common::server::trpc;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use crvs_common::error::ErrorCode;
use crvs_common::limits::REQUEST_BODY_BYTES_MAX;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::sync_driver::SyncHandle;
use crvs_common::server::users::{UserHost, UserLookup};
pub use crvs_common::server::{ApiError, Caller};
use crvs_common::server::{AuthCore, AuthHost, ClientRow, body};
use crvs_common::user::Account;

/// Shared state of every handler.
#[derive(Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Token keys, argon2 permits, logins in progress, roles, the outbox's wake-up.
    pub auth: AuthCore,
    /// The sync driver, when the node is enrolled.
    pub sync: Option<SyncHandle>,
    /// Prometheus metrics.
    pub metrics: Metrics,
}

impl AuthHost for AppState {
    fn auth(&self) -> &AuthCore {
        &self.auth
    }

    async fn account_by_username(&self, username: String) -> Result<Option<Account>, ApiError> {
        Ok(self
            .store
            .read(move |r| r.user_by_username(&username))
            .await?)
    }

    async fn account(&self, id: uuid::Uuid) -> Result<Option<Account>, ApiError> {
        Ok(self.store.read(move |r| r.user(id)).await?)
    }

    async fn client(&self, id: String) -> Result<Option<ClientRow>, ApiError> {
        Ok(self.store.read(move |r| r.client(&id)).await?)
    }

    async fn accounts_read<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        Ok(self.store.read(move |r| Ok(job(r.conn())?)).await?)
    }

    async fn accounts_write<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection, u64) -> Result<T, ApiError> + Send + 'static,
    {
        self.store
            .write(move |ctx| job(ctx.conn(), ctx.now_ms()))
            .await
    }
}

impl UserHost for AppState {
    async fn accounts(&self, lookup: UserLookup) -> Result<Vec<Account>, ApiError> {
        Ok(self
            .store
            .read(move |r| match &lookup {
                UserLookup::All => r.users(),
                UserLookup::Id(id) => Ok(r.user(*id)?.into_iter().collect()),
                UserLookup::Mobile(mobile) => r.users_by_mobile(mobile),
            })
            .await?)
    }

    async fn area_chains(
        &self,
        locations: Vec<uuid::Uuid>,
    ) -> Result<HashMap<uuid::Uuid, Vec<uuid::Uuid>>, ApiError> {
        Ok(self
            .store
            .read(move |r| {
                locations
                    .into_iter()
                    .map(|l| Ok((l, r.area_chain(l)?)))
                    .collect()
            })
            .await?)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(&e)
    }
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
        .route(
            "/{procedure}",
            post(trpc::procedure::<AppState>).get(trpc::query::<AppState>),
        )
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/api/events", events.clone())
        .nest("/events", events)
        .merge(crvs_common::server::auth_routes::<AppState>())
        .route("/ping", get(ping))
        .route("/api/ping", get(ping))
        .merge(crvs_common::server::users::user_routes::<AppState>())
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
        let tokens = crate::auth::TokenKeys::new(
            &jwt,
            "crvs-edge:node:test".into(),
            std::time::Duration::from_secs(600),
        );
        let auth = AuthCore::new(tokens, 1, Arc::new(config.roles.clone()), false, Vec::new());
        Arc::new(AppState {
            store,
            auth,
            config: Arc::new(config),
            sync: None,
            metrics: Metrics::new(),
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
