//! `crvs-node` binary: parses the command line and configuration, sets up tracing, binds the
//! listener and calls into the library. Operator subcommands manage clients, the log and status.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use crvs_common::location::LocationSet;
use crvs_common::scope::ScopeSet;
use crvs_node::config::{Config, ConfigFile};
use crvs_node::store::{ClientRow, StoreError};

/// mimalloc instead of glibc malloc: fewer lock waits between the request tasks and the
/// writer and sync threads (measured in `packaging/bench.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Clinic node of the offline-first civil registration system (OpenCRVS-compatible API).
#[derive(Debug, Parser)]
#[command(name = "crvs-node", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Configuration file (TOML). Without it, defaults apply.
    #[arg(long, global = true, env = "CRVS_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (database and key files); overrides the file.
    #[arg(long, global = true, env = "CRVS_NODE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address; overrides the file.
    #[arg(long, global = true, env = "CRVS_NODE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Log format (`text` or `json`); overrides the file.
    #[arg(long, global = true, env = "CRVS_NODE_LOG_FORMAT")]
    log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create keys, database and tracking-id pool; load locations. Safe to run again.
    Init {
        /// Locations file (`{administrativeAreas, locations}`) to load.
        #[arg(long, conflicts_with = "demo_locations")]
        locations: Option<PathBuf>,
        /// Load the built-in demo locations.
        #[arg(long)]
        demo_locations: bool,
    },
    /// Serve the HTTP API (and sync with central when enrolled) until interrupted.
    Run,
    /// Enroll this node with central: check and store the bundle from `crvs-central node enroll`.
    /// Run it while the node is stopped; a node holding stand-alone records is refused.
    Enroll {
        /// The enrollment bundle (JSON).
        #[arg(long)]
        bundle: PathBuf,
    },
    /// Manage system (integration) clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Inspect the signed action log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Users central sent down (they log in here, offline too).
    #[command(subcommand)]
    User(UserCommand),
    /// Print counters (events, actions, log head, free tracking ids) as JSON.
    Status,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Add a client; prints `{clientId, clientSecret, scopes}` once (the secret is not stored).
    Add {
        /// Display name.
        #[arg(long)]
        name: String,
        /// A scope, e.g. `type=record.notify&event=birth` (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Give the scopes a health facility needs: create, notify, read, search for birth and death.
        #[arg(long)]
        health: bool,
    },
    /// List clients (never secrets).
    List,
    /// Remove a client.
    Remove {
        /// Client id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// List the users this node holds (never password hashes), as JSON.
    List,
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Verify every entry's signature and the hash chain from genesis.
    Verify,
}

/// Scopes of a health facility's system: what the create → notify → read back → search flow needs.
const HEALTH_SCOPES: [&str; 4] = [
    "type=record.create&event=birth,death",
    "type=record.notify&event=birth,death",
    "type=record.read&event=birth,death",
    "type=record.search&event=birth,death",
];

fn load_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let mut file = ConfigFile::load(global.config.as_deref())?;
    if let Some(dir) = &global.data_dir {
        file.data_dir = dir.clone();
    }
    if let Some(listen) = global.listen {
        file.http_listen = listen;
    }
    if let Some(format) = &global.log_format {
        file.log_format = format.clone();
    }
    file.validate()
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRVS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.file.log_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if config.file.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

fn print_json_line(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = load_config(&cli.global)?;
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("starting tokio runtime")?;
    runtime.block_on(dispatch(cli.command, config))
}

async fn dispatch(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Init {
            locations,
            demo_locations,
        } => {
            let set = match (locations, demo_locations) {
                (Some(path), _) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading locations {}", path.display()))?;
                    Some(LocationSet::from_json(&text)?)
                }
                (None, true) => Some(LocationSet::from_json(crvs_node::DEMO_LOCATIONS_JSON)?),
                (None, false) => None,
            };
            let report = crvs_node::init(&config, set.as_ref()).await?;
            print_json(&serde_json::json!({
                "nodeId": report.node_id,
                "poolFree": report.pool_free,
                "alreadyInitialised": report.already_initialised,
                "dataDir": config.file.data_dir,
            }))
        }
        Command::Run => {
            let listener = tokio::net::TcpListener::bind(config.file.http_listen)
                .await
                .with_context(|| format!("binding {}", config.file.http_listen))?;
            // One machine-readable line on stdout once the socket is bound, so scripts and tests
            // using port 0 learn the address without polling.
            print_json_line(
                &serde_json::json!({ "listening": listener.local_addr()?.to_string() }),
            )?;
            crvs_node::run(config, listener, shutdown_signal()).await
        }
        Command::Enroll { bundle } => {
            let size = std::fs::metadata(&bundle)
                .with_context(|| format!("reading bundle {}", bundle.display()))?
                .len();
            anyhow::ensure!(
                size <= crvs_node::enroll::BUNDLE_BYTES_MAX as u64,
                "bundle {} is {size} bytes; a bundle is at most {} bytes",
                bundle.display(),
                crvs_node::enroll::BUNDLE_BYTES_MAX
            );
            let text = std::fs::read_to_string(&bundle)
                .with_context(|| format!("reading bundle {}", bundle.display()))?;
            let report = crvs_node::enroll::enroll(&config, &text).await?;
            print_json(&serde_json::to_value(&report)?)
        }
        Command::Client(cmd) => client(cmd, &config).await,
        Command::Log(LogCommand::Verify) => {
            let store = open(&config)?;
            let node_id = store.node_id();
            let mut after = 0u64;
            let mut checked_actions = 0u64;
            let mut verifier =
                crvs_common::log::ChainVerifier::new(node_id, crvs_common::log::LogHead::GENESIS);
            loop {
                let batch = store.read(move |r| r.log_entries(after, 1000)).await?;
                if batch.is_empty() {
                    break;
                }
                for entry in &batch {
                    let verdict = verifier
                        .accept(entry, None)
                        .map_err(|e| anyhow::anyhow!("log entry {}: {e}", entry.seq))?;
                    anyhow::ensure!(
                        verdict == crvs_common::log::Verdict::Append,
                        "log entry {} is stored twice",
                        entry.seq
                    );
                    checked_actions += check_entry_actions(&store, entry).await?;
                    after = entry.seq;
                }
            }
            // Every own action row must be one a signed entry carries.
            let stored = store.read(|r| r.own_action_count()).await?;
            anyhow::ensure!(
                stored == checked_actions,
                "the database holds {stored} own actions but the signed log carries {checked_actions}"
            );
            let head = verifier.head();
            print_json(
                &serde_json::json!({"nodeId": node_id.to_string(), "verified": head.seq, "headHash": head.hash.to_string()}),
            )
        }
        Command::User(UserCommand::List) => {
            let store = open(&config)?;
            let users = store.read(|r| r.users()).await?;
            let list: Vec<_> = users
                .iter()
                .map(|u| {
                    serde_json::json!({
                        "id": u.user.id,
                        "username": u.username,
                        "role": u.user.role,
                        "status": u.user.status,
                        "primaryOfficeId": u.user.primary_office_id,
                        "hasPassword": !u.password_hash.is_empty(),
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list))
        }
        Command::Status => {
            let store = open(&config)?;
            let (stats, sync) = store.read(|r| Ok((r.stats()?, r.sync_state()?))).await?;
            print_json(&serde_json::json!({
                "nodeId": store.node_id().to_string(),
                "stats": stats,
                "enrolled": config.enrollment.is_some(),
                "sync": {
                    "ackedSeq": sync.acked.seq,
                    "downCursor": sync.down_cursor,
                    "lastSuccessMs": sync.last_success_ms,
                    "lastError": sync.last_error,
                },
            }))
        }
    }
}

/// Checks that the actions an entry signed are exactly the stored action rows the API serves.
async fn check_entry_actions(
    store: &crvs_node::store::Store,
    entry: &crvs_common::log::LogEntry,
) -> anyhow::Result<u64> {
    let payload: crvs_common::event::EntryPayload = serde_json::from_slice(&entry.action)
        .map_err(|e| anyhow::anyhow!("log entry {}: payload does not decode: {e}", entry.seq))?;
    anyhow::ensure!(
        payload.event_id == entry.event_id,
        "log entry {}: event id mismatch",
        entry.seq
    );
    for action in &payload.actions {
        let id = action.id;
        let stored = store.read(move |r| r.action_document(id)).await?;
        match stored {
            Some((event_id, doc)) if event_id == payload.event_id && doc == *action => {}
            Some(_) => anyhow::bail!(
                "log entry {}: stored action {id} differs from the signed one",
                entry.seq
            ),
            None => anyhow::bail!(
                "log entry {}: action {id} is missing from the database",
                entry.seq
            ),
        }
    }
    Ok(payload.actions.len() as u64)
}

fn open(config: &Config) -> anyhow::Result<crvs_node::store::Store> {
    let key = crvs_node::keys::load_key_file(&config.node_key_path())
        .context("loading node key; run `crvs-node init` first")?;
    crvs_node::open_store(config, key)
}

async fn client(cmd: ClientCommand, config: &Config) -> anyhow::Result<()> {
    let store = open(config)?;
    match cmd {
        ClientCommand::Add {
            name,
            mut scopes,
            health,
        } => {
            if health {
                scopes.extend(HEALTH_SCOPES.iter().map(|s| (*s).to_owned()));
            }
            anyhow::ensure!(!scopes.is_empty(), "give at least one --scope, or --health");
            anyhow::ensure!(
                scopes.len() <= crvs_common::limits::CLIENT_SCOPES_MAX,
                "too many scopes"
            );
            let parsed = ScopeSet::parse_all(&scopes)?;
            let id = uuid::Uuid::new_v4().to_string();
            let secret = hex::encode(crvs_node::keys::random_bytes::<24>()?);
            let secret_hash = crvs_node::auth::hash_secret(&secret)?;
            let row = ClientRow {
                id: id.clone(),
                name,
                secret_hash,
                scopes: parsed.encode(),
                status: "active".into(),
                created_at: crvs_common::event::format_timestamp_ms(crvs_node::store::wall_ms()),
            };
            let scopes = row.scopes.clone();
            store
                .write(move |ctx| -> Result<(), StoreError> { ctx.insert_client(&row) })
                .await?;
            print_json(
                &serde_json::json!({"clientId": id, "clientSecret": secret, "scopes": scopes}),
            )
        }
        ClientCommand::List => {
            let clients = store.read(|r| r.clients()).await?;
            let list: Vec<_> = clients
                .iter()
                .map(|c| serde_json::json!({"clientId": c.id, "name": c.name, "scopes": c.scopes, "status": c.status, "createdAt": c.created_at}))
                .collect();
            print_json(&serde_json::Value::Array(list))
        }
        ClientCommand::Remove { id } => {
            let key = id.clone();
            let removed = store
                .write(move |ctx| -> Result<bool, StoreError> { ctx.delete_client(&key) })
                .await?;
            anyhow::ensure!(removed, "no client with id {id}");
            print_json(&serde_json::json!({"removed": id}))
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}
