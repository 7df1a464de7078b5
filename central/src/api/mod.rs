//! Central's HTTP API (axum): the node's record routes over the merged national data (read an
//! event, search, list, record data by tracking id, people's actions and drafts, create,
//! import, locations, config) under both `/api/events` and the gateway-style `/events`, with
//! OpenCRVS's tRPC procedure paths; the token endpoint for clients created at central, login,
//! user management and recovery, ping, the OpenAPI document, and the ops routes
//! (`/api/sync/*`, `/metrics`).

mod actions;
mod drafts;
mod events;
mod list;
mod locations;
mod ops;
mod people;
mod procedures;
mod records;
mod recovery;
pub use people::PeopleBook;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use crvs_common::error::ErrorCode;
use crvs_common::limits::REQUEST_BODY_BYTES_MAX;

use crvs_common::server::users::{UserHost, UserLookup};
pub use crvs_common::server::{ApiError, Caller};
use crvs_common::server::{AuthCore, AuthHost, ClientRow, body, trpc};
use crvs_common::user::Account;

use crate::config::Config;
use crate::store::Store;

/// Secret verifications (argon2id, ~19 MiB each) allowed at once (central's machine is larger
/// than a clinic's board).
pub const SECRET_VERIFICATIONS_MAX: usize = 4;

/// Shared state of every handler.
#[derive(Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Token keys, argon2 permits, logins in progress, roles, the outbox's wake-up.
    pub auth: AuthCore,
    /// Codes confirming changes of contact, in flight.
    pub people: PeopleBook,
}

impl AuthHost for AppState {
    fn auth(&self) -> &AuthCore {
        &self.auth
    }

    async fn account_by_username(&self, username: String) -> Result<Option<Account>, ApiError> {
        let row = self
            .store
            .read_async(move |r| r.user_by_username(&username))
            .await?;
        Ok(row.as_ref().map(crate::store::UserRow::account))
    }

    async fn account(&self, id: uuid::Uuid) -> Result<Option<Account>, ApiError> {
        let row = self.store.read_async(move |r| r.user(id)).await?;
        Ok(row.as_ref().map(crate::store::UserRow::account))
    }

    async fn client(&self, id: String) -> Result<Option<ClientRow>, ApiError> {
        Ok(self.store.read_async(move |r| r.client(&id)).await?)
    }

    async fn accounts_read<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        Ok(self.store.read_async(move |r| Ok(job(r.conn())?)).await?)
    }

    async fn accounts_write<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection, u64) -> Result<T, ApiError> + Send + 'static,
    {
        self.store
            .write_async(move |tx| job(tx.conn(), tx.now_ms()))
            .await
    }
}

impl UserHost for AppState {
    async fn accounts(&self, lookup: UserLookup) -> Result<Vec<Account>, ApiError> {
        let rows = self
            .store
            .read_async(move |r| match &lookup {
                UserLookup::All => r.users(),
                UserLookup::Id(id) => Ok(r.user(*id)?.into_iter().collect()),
                UserLookup::Mobile(mobile) => r.users_by_mobile(mobile),
            })
            .await?;
        Ok(rows.iter().map(crate::store::UserRow::account).collect())
    }

    async fn area_chains(
        &self,
        locations: Vec<uuid::Uuid>,
    ) -> Result<HashMap<uuid::Uuid, Vec<uuid::Uuid>>, ApiError> {
        let set = self.store.read_async(|r| r.location_set()).await?;
        Ok(locations
            .into_iter()
            .map(|l| (l, set.location_chain(l)))
            .collect())
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
        .route("/events", get(list::list).post(records::create))
        .route("/events/import", post(records::import_one))
        .route("/events/search", post(events::search))
        .route(
            "/events/tracking/{tracking_id}/data",
            get(events::record_data),
        )
        .route(
            "/events/{event_id}",
            get(events::read).delete(actions::delete),
        )
        .route("/events/{event_id}/draft", post(drafts::create_route))
        .route("/events/{event_id}/{action}", post(actions::user_action))
        .route("/drafts", get(drafts::list_route))
        .route("/locations", get(locations::list))
        .route("/config", get(locations::config))
        .route("/openapi.json", get(openapi))
        .route(
            "/{procedure}",
            post(trpc::procedure::<AppState>).get(trpc::query::<AppState>),
        );
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
        .merge(crvs_common::server::auth_routes::<AppState>())
        .merge(crvs_common::server::users::user_routes::<AppState>())
        .route("/api/users", post(people::create))
        .route("/api/users/{user_id}/{operation}", post(people::operation))
        .route("/auth/verifyUser", post(recovery::verify_user))
        .route("/auth/verifyNumber", post(recovery::verify_number))
        .route(
            "/auth/verifySecurityAnswer",
            post(recovery::verify_security_answer),
        )
        .route("/auth/changePassword", post(recovery::change_password))
        .route("/auth/sendUserName", post(recovery::send_user_name))
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

#[cfg(test)]
mod search_tests;
#[cfg(test)]
mod tests;
