//! `crvs-node`: the clinic node. It accepts OpenCRVS create/notify/read/search calls locally,
//! with or without a link, and turns every accepted action into an ed25519-signed, hash-chained
//! log entry committed in the same SQLite transaction as the action itself.
//!
//! Entry points: [`init`] prepares a data directory (keys, database, pool, locations),
//! [`enroll::enroll`] turns it into a node enrolled with central (from central's bundle), and
//! [`run`] serves HTTP on an already-bound listener until `shutdown` resolves; when the node is
//! enrolled, [`run`] also starts the [`sync_driver`], which pushes the log to central over QUIC
//! and applies central's feed. `main.rs` only parses the command line and configuration, sets up
//! tracing, binds and calls these.
//!
//! Position in the dependency graph: depends on `crvs-common` and `crvs-sync`; never on
//! `crvs-central`.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod config;
pub mod enroll;
pub mod metrics;
pub mod store;
pub use crvs_common::server::{auth, keys};
pub mod sync_driver;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use crvs_common::location::LocationSet;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::store::{PoolSettings, Store};

/// The demo locations shipped for the quick start (Farajaland-like names, fixed UUIDs).
pub const DEMO_LOCATIONS_JSON: &str = include_str!("../demo/locations.json");

/// What `init` did.
#[derive(Debug)]
pub struct InitReport {
    /// The node's identity.
    pub node_id: String,
    /// Free tracking ids after init.
    pub pool_free: u64,
    /// Whether the data directory already existed (init is idempotent).
    pub already_initialised: bool,
}

/// Creates the data directory, key files and database, fills the tracking-id pool in
/// stand-alone mode and loads `locations` when given. Running it again is harmless.
pub async fn init(config: &Config, locations: Option<&LocationSet>) -> anyhow::Result<InitReport> {
    std::fs::create_dir_all(&config.file.data_dir)
        .with_context(|| format!("creating data dir {}", config.file.data_dir.display()))?;
    let key_path = config.node_key_path();
    let already_initialised = key_path.exists();
    let key = if already_initialised {
        keys::load_key_file(&key_path)?
    } else {
        keys::create_key_file(&key_path)?
    };
    if !config.jwt_key_path().exists() {
        keys::create_key_file(&config.jwt_key_path())?;
    }
    let node_id = key.node_id();
    Store::init(&config.db_path(), node_id)?;
    let store = open_store(config, key)?;
    let locations = locations.cloned();
    let pool = pool_settings(config);
    store
        .write(move |ctx| -> Result<(), store::StoreError> {
            if let Some(set) = &locations {
                ctx.replace_locations(set)?;
            }
            if pool.standalone {
                let free = ctx.reader().pool_free()?;
                ctx.fill_pool(pool.size.saturating_sub(free as u32))?;
            }
            Ok(())
        })
        .await?;
    let pool_free = store.read(|r| r.pool_free()).await?;
    Ok(InitReport {
        node_id: node_id.to_string(),
        pool_free,
        already_initialised,
    })
}

fn pool_settings(config: &Config) -> PoolSettings {
    PoolSettings {
        size: config.file.pool_size,
        low_water: config.file.pool_low_water,
        standalone: config.standalone_pool(),
    }
}

/// Opens the store of an initialised data directory.
pub fn open_store(config: &Config, key: crvs_common::log::NodeSecretKey) -> anyhow::Result<Store> {
    Store::open(
        &config.db_path(),
        key,
        pool_settings(config),
        config.file.group_commit_max,
    )
    .with_context(|| format!("opening node database {}", config.db_path().display()))
}

/// Serves the node's HTTP API on `listener` until `shutdown` resolves, then drains requests
/// in flight (bounded by [`SHUTDOWN_GRACE`]). When the node is enrolled, the sync driver runs
/// alongside and stops with it.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let options = config
        .enrollment
        .as_ref()
        .map(|e| sync_driver::DriverOptions::for_links(jitter_seed(e.node_id())));
    run_with(config, listener, shutdown, options).await
}

/// [`run`] with the sync driver's options spelled out (tests use short timers). `driver` is
/// ignored when the node is not enrolled.
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    driver: Option<sync_driver::DriverOptions>,
) -> anyhow::Result<()> {
    let key = keys::load_key_file(&config.node_key_path())
        .context("loading node key; run `crvs-node init` first")?;
    let jwt_key = keys::load_key_file(&config.jwt_key_path()).context("loading token key")?;
    let node_id = key.node_id();
    let client_config = match &config.enrollment {
        Some(enrollment) => {
            anyhow::ensure!(
                enrollment.node_id() == node_id,
                "{} was issued for node {}, but this node is {node_id}",
                config.enrollment_path().display(),
                enrollment.node_id()
            );
            Some(
                sync_driver::tls::client_config(enrollment, &key)
                    .context("building the sync TLS configuration from the enrollment")?,
            )
        }
        None => None,
    };
    let store = open_store(&config, key)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let driver = match (&config.enrollment, client_config) {
        (Some(enrollment), Some(client_config)) => Some(sync_driver::start(
            store.clone(),
            Arc::clone(enrollment),
            client_config,
            driver.unwrap_or_else(|| sync_driver::DriverOptions::for_links(jitter_seed(node_id))),
            stop_rx.clone(),
        )?),
        _ => None,
    };
    let tokens = auth::TokenKeys::new(
        &jwt_key,
        format!("crvs-edge:node:{node_id}"),
        Duration::from_secs(config.file.token_ttl_secs),
    )
    .with_user_ttl(Duration::from_secs(config.file.user_token_ttl_secs));
    let now_s = store::wall_ms() / 1000;
    for (digest, exp) in store.read(move |r| r.revoked_tokens(now_s)).await? {
        tokens
            .remember_revoked(digest, exp, now_s)
            .context("loading logged-out tokens")?;
    }
    let auth = crvs_common::server::AuthCore::new(
        tokens,
        crvs_common::server::SECRET_VERIFICATIONS_MAX,
        Arc::new(config.roles.clone()),
        config.file.two_factor,
        config.file.notification_command.clone(),
    );
    auth.log_transport();
    let state = Arc::new(api::AppState {
        store,
        config: Arc::new(config),
        auth,
        sync: driver.as_ref().map(|(handle, _)| handle.clone()),
        metrics: metrics::Metrics::new(),
    });
    let outbox = tokio::spawn(crvs_common::server::outbox::run(
        Arc::clone(&state),
        stop_rx.clone(),
    ));
    let app = api::router(state);
    tracing::info!(
        node_id = %node_id.fmt_short(),
        addr = %listener.local_addr()?,
        enrolled = driver.is_some(),
        "node listening"
    );
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop_rx = stop_rx;
    tokio::select! {
        result = server => result.context("http server")?,
        () = async {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("shutdown grace period over; dropping requests in flight"),
    }
    // Stopped by the same signal; a send in flight is killed with its child process.
    let abort = outbox.abort_handle();
    if tokio::time::timeout(SYNC_STOP_GRACE, outbox).await.is_err() {
        abort.abort();
    }
    if let Some((_, task)) = driver {
        // The server future (and with it the stop sender) is gone: the driver is stopping.
        let abort = task.abort_handle();
        if tokio::time::timeout(SYNC_STOP_GRACE, task).await.is_err() {
            tracing::warn!("sync driver did not stop in time; aborted");
            abort.abort();
        }
    }
    Ok(())
}

/// How long the sync driver may take to say goodbye to central at shutdown.
pub const SYNC_STOP_GRACE: Duration = Duration::from_secs(3);

/// The backoff jitter seed of a node: its id, so nodes spread their retries after an outage of
/// central, and one node's retries replay identically.
fn jitter_seed(node_id: crvs_common::log::NodeId) -> u64 {
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&node_id.as_bytes()[..8]);
    u64::from_le_bytes(seed)
}

/// How long requests in flight may finish after shutdown was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
