//! `crvs-central`: the national registry that clinic nodes sync with.
//!
//! It verifies and applies every node's signed log entries (merging each event's automerge
//! document), signs its own log (the feed nodes receive: relays of records in their
//! jurisdiction, tracking-id pool grants, system clients, locations, revocations), enrolls and
//! revokes nodes through its own certificate authority, and serves the node's read routes over
//! the merged national data plus the sync ops routes.
//!
//! Entry points: [`init`] prepares a data directory (keys, CA and server certificate, database,
//! locations); [`run`] serves HTTP and QUIC sync on already-bound sockets until `shutdown`
//! resolves; [`admin`] holds the operator actions (enroll, revoke, clients). `main.rs` only parses
//! the command line and configuration, sets up tracing, binds and calls these.
//!
//! Position in the dependency graph: depends on `crvs-common` and `crvs-sync` (central holds
//! every event's merge document); never on `crvs-node`.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod hooks;
pub mod pki;
pub mod store;
pub mod sync_server;
pub use crvs_common::server::keys;
#[cfg(test)]
mod testing;

use std::future::Future;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use crvs_common::location::LocationSet;
use crvs_sync::engine::SyncConfig;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::store::Store;

/// The demo locations shipped for the quick start (the node's demo set: same fixed UUIDs).
pub const DEMO_LOCATIONS_JSON: &str = include_str!("../demo/locations.json");

/// How long requests and sync sessions in flight may finish after shutdown was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What `init` did.
#[derive(Debug)]
pub struct InitReport {
    /// Central's identity (`centralId`).
    pub central_id: String,
    /// Whether the data directory already existed (init is idempotent).
    pub already_initialised: bool,
    /// Whether locations were loaded and differed from what was stored.
    pub locations_changed: bool,
}

/// Creates the data directory, keys (`central.key`, `jwt.key`), the CA and the QUIC server
/// certificate, and the database; loads `locations` when given (appending a `locations` feed
/// record if they changed). Running it again is harmless.
pub fn init(config: &Config, locations: Option<&LocationSet>) -> anyhow::Result<InitReport> {
    let dir = &config.file.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    let key_path = config.central_key_path();
    let already_initialised = key_path.exists();
    let key = if already_initialised {
        keys::load_key_file(&key_path)?
    } else {
        keys::create_key_file(&key_path)?
    };
    if !config.jwt_key_path().exists() {
        keys::create_key_file(&config.jwt_key_path())?;
    }
    pki::init_pki(dir)?;
    let central_id = key.node_id();
    Store::init(&config.db_path(), central_id)?;
    let store = open_store_with(config, key)?;
    let locations_changed = match locations {
        Some(set) => store.write(|w| w.set_locations(set))?,
        None => false,
    };
    Ok(InitReport {
        central_id: central_id.to_string(),
        already_initialised,
        locations_changed,
    })
}

fn open_store_with(config: &Config, key: crvs_common::log::NodeSecretKey) -> anyhow::Result<Store> {
    Store::open_with(
        &config.db_path(),
        key,
        config.pool(),
        store::Registration::new(config.registration.clone(), &config.events)
            .with_hooks(config.action_hooks.clone()),
    )
    .with_context(|| format!("opening central database {}", config.db_path().display()))
}

/// Opens the store of an initialised data directory.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    let key = keys::load_key_file(&config.central_key_path())
        .context("loading central key; run `crvs-central init` first")?;
    open_store_with(config, key)
}

/// Serves the HTTP API on `http` and QUIC sync on `quic` until `shutdown` resolves, then lets
/// requests and sessions in flight finish (bounded by [`SHUTDOWN_GRACE`]).
pub async fn run(
    config: Config,
    http: TcpListener,
    quic: UdpSocket,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = open_store(&config)?;
    store
        .start_checkpointer(&config.db_path())
        .context("starting the WAL checkpointer")?;
    store
        .start_indexer()
        .context("starting the search indexer")?;
    let jwt_key = keys::load_key_file(&config.jwt_key_path()).context("loading token key")?;
    let tokens = auth::TokenKeys::new(
        &jwt_key,
        auth::ISSUER.to_owned(),
        Duration::from_secs(config.file.token_ttl_secs),
    )
    .with_user_ttl(Duration::from_secs(config.file.user_token_ttl_secs));
    let now_s = store::wall_ms() / 1000;
    let revoked = store
        .read_async(move |r| r.revoked_tokens(now_s))
        .await
        .context("loading logged-out tokens")?;
    for (digest, exp) in revoked {
        tokens
            .remember_revoked(digest, exp, now_s)
            .context("loading logged-out tokens")?;
    }
    let auth = crvs_common::server::AuthCore::new(
        tokens,
        api::SECRET_VERIFICATIONS_MAX,
        Arc::new(config.roles.clone()),
        config.file.two_factor,
        config.file.notification_command.clone(),
    );
    auth.log_transport();
    let endpoint = sync_server::endpoint(&config, store.clone(), quic)?;
    let central_id = store.central_id();
    let state = Arc::new(api::AppState {
        store: store.clone(),
        config: Arc::new(config),
        auth,
        people: api::PeopleBook::default(),
    });
    let app = api::router(Arc::clone(&state));
    tracing::info!(central_id = %central_id.fmt_short(), addr = %http.local_addr()?, "central listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let outbox = tokio::spawn(crvs_common::server::outbox::run(
        Arc::clone(&state),
        stop_rx.clone(),
    ));
    let hooks = tokio::spawn(hooks::run(state, stop_rx.clone()));
    let mut http_stop = stop_rx.clone();
    let http_server = axum::serve(http, app).with_graceful_shutdown(async move {
        let _ = http_stop.wait_for(|stopped| *stopped).await;
    });
    let sync = sync_server::serve(endpoint, store, SyncConfig::for_links(), stop_rx.clone());
    let serve_all = async {
        let (http_result, sync_result) =
            tokio::join!(async { http_server.await.context("http server") }, sync);
        tracing::debug!("http server stopped");
        http_result?;
        sync_result
    };
    let mut grace = stop_rx;
    tokio::select! {
        result = serve_all => result?,
        () = async {
            let _ = grace.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("shutdown grace period over; dropping work in flight"),
    }
    // Stopped by the same signal; a send in flight is killed with its child process.
    outbox.abort();
    hooks.abort();
    tracing::debug!("central stopped");
    Ok(())
}
