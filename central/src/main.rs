//! `crvs-central` binary: parses the command line and configuration, sets up tracing, binds the
//! HTTP and QUIC sockets and calls into the library. Operator subcommands enroll and revoke
//! nodes, manage system clients and print status.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use crvs_central::admin::{self, EnrollRequest, HEALTH_SCOPES};
use crvs_central::config::{Config, ConfigFile};
use crvs_common::location::LocationSet;
use crvs_common::log::NodeId;

/// mimalloc instead of glibc malloc: glibc's allocator was about a sixth of central's CPU while
/// it drained a node's backlog (arena locks and consolidation between the QUIC tasks, the
/// signature-check threads and the writer).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Central registry of the offline-first civil registration system.
#[derive(Debug, Parser)]
#[command(name = "crvs-central", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Configuration file (TOML). Without it, defaults apply.
    #[arg(long, global = true, env = "CRVS_CENTRAL_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (database, keys, certificates); overrides the file.
    #[arg(long, global = true, env = "CRVS_CENTRAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address; overrides the file.
    #[arg(long, global = true, env = "CRVS_CENTRAL_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// QUIC (sync) listen address; overrides the file.
    #[arg(long, global = true, env = "CRVS_CENTRAL_QUIC_LISTEN")]
    quic_listen: Option<SocketAddr>,
    /// QUIC address written into enrollment bundles; overrides the file.
    #[arg(long, global = true, env = "CRVS_CENTRAL_PUBLIC_QUIC_ADDR")]
    public_quic_addr: Option<String>,
    /// HTTP base URL written into enrollment bundles; overrides the file.
    #[arg(long, global = true, env = "CRVS_CENTRAL_PUBLIC_HTTP_URL")]
    public_http_url: Option<String>,
    /// Log format (`text` or `json`); overrides the file.
    #[arg(long, global = true, env = "CRVS_CENTRAL_LOG_FORMAT")]
    log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create keys, CA, server certificate and database; load locations. Safe to run again.
    Init {
        /// Locations file (`{administrativeAreas, locations}`) to load.
        #[arg(long, conflicts_with = "demo_locations")]
        locations: Option<PathBuf>,
        /// Load the built-in demo locations.
        #[arg(long)]
        demo_locations: bool,
    },
    /// Serve HTTP and QUIC sync until interrupted.
    Run,
    /// Enroll, list and revoke nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage system (integration) clients; their secret hashes sync down to nodes.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage users; a user and the password hash sync to the nodes of the office's area.
    #[command(subcommand)]
    User(UserCommand),
    /// Print counters and nodes as JSON.
    Status,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Enroll a node for a facility and write its bundle (stdout without --out).
    Enroll {
        /// The node id `crvs-node init` printed (64 hex characters).
        #[arg(long)]
        node_id: NodeId,
        /// The node's facility (a known location id).
        #[arg(long)]
        location: uuid::Uuid,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Where to write the bundle JSON.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List enrolled nodes (JSON).
    List,
    /// Revoke a node: its certificate fails the handshake from now on.
    Revoke {
        /// Node id.
        node_id: NodeId,
    },
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
    /// Disable a client (at central and, once synced, at every node).
    Disable {
        /// Client id.
        id: String,
    },
    /// Give a client a new secret; prints `{clientId, clientSecret, scopes}` once.
    RefreshSecret {
        /// Client id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add an active user; prints `{userId, username, password, role}` once.
    Add {
        /// First name(s).
        #[arg(long)]
        firstname: String,
        /// Surname.
        #[arg(long)]
        surname: String,
        /// Role id, e.g. `HOSPITAL_CLERK`, `REGISTRATION_AGENT`, `LOCAL_REGISTRAR`.
        #[arg(long)]
        role: String,
        /// Primary office (a known location id).
        #[arg(long)]
        office: uuid::Uuid,
        /// Mobile number (a user needs a mobile or an email).
        #[arg(long)]
        mobile: Option<String>,
        /// Email address.
        #[arg(long)]
        email: Option<String>,
        /// Login name; generated from the name when absent.
        #[arg(long)]
        username: Option<String>,
        /// The password, from this environment variable (a random one when absent).
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
    /// List users (never password hashes).
    List,
    /// Set a new password (random unless --password-env); prints the credentials once.
    SetPassword {
        /// Login name.
        username: String,
        /// The password, from this environment variable.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
    /// Deactivate a user: logins fail at central and, once synced, at the nodes.
    Deactivate {
        /// Login name.
        username: String,
    },
    /// Reactivate a user.
    Activate {
        /// Login name.
        username: String,
    },
}

fn password_from_env(var: Option<&str>) -> anyhow::Result<Option<String>> {
    var.map(|v| std::env::var(v).with_context(|| format!("environment variable {v} is not set")))
        .transpose()
}

fn user(cmd: UserCommand, config: &Config) -> anyhow::Result<()> {
    use crvs_common::user::UserStatus;
    let store = crvs_central::open_store(config)?;
    match cmd {
        UserCommand::Add {
            firstname,
            surname,
            role,
            office,
            mobile,
            email,
            username,
            password_env,
        } => {
            let new = admin::NewUser {
                firstname,
                surname,
                role,
                office,
                mobile,
                email,
                username,
                password: password_from_env(password_env.as_deref())?,
            };
            let created =
                admin::add_user(&store, &config.roles, new, crvs_central::store::wall_ms())?;
            print_json(&serde_json::to_value(created)?)
        }
        UserCommand::List => {
            let list = admin::list_users(&store)?
                .into_iter()
                .map(|row| {
                    let mut user = serde_json::to_value(&row.user)?;
                    user["username"] = serde_json::Value::String(row.username);
                    Ok(user)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            print_json(&serde_json::Value::Array(list))
        }
        UserCommand::SetPassword {
            username,
            password_env,
        } => {
            let password = password_from_env(password_env.as_deref())?;
            let credentials = admin::set_user_password(&store, &username, password)?;
            print_json(&serde_json::to_value(credentials)?)
        }
        UserCommand::Deactivate { username } => print_json(&serde_json::to_value(
            admin::set_user_status(&store, &username, UserStatus::Deactivated)?,
        )?),
        UserCommand::Activate { username } => print_json(&serde_json::to_value(
            admin::set_user_status(&store, &username, UserStatus::Active)?,
        )?),
    }
}

fn load_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let mut file = ConfigFile::load(global.config.as_deref())?;
    if let Some(dir) = &global.data_dir {
        file.data_dir = dir.clone();
    }
    if let Some(listen) = global.http_listen {
        file.http_listen = listen;
    }
    if let Some(listen) = global.quic_listen {
        file.quic_listen = listen;
    }
    if let Some(addr) = &global.public_quic_addr {
        file.public_quic_addr = Some(addr.clone());
    }
    if let Some(url) = &global.public_http_url {
        file.public_http_url = Some(url.clone());
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
        .with_writer(std::io::stderr);
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
    match cli.command {
        Command::Run => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting tokio runtime")?;
            runtime.block_on(serve(config))
        }
        command => operator(command, &config),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let http = tokio::net::TcpListener::bind(config.file.http_listen)
        .await
        .with_context(|| format!("binding {}", config.file.http_listen))?;
    let quic = std::net::UdpSocket::bind(config.file.quic_listen)
        .with_context(|| format!("binding {}", config.file.quic_listen))?;
    // One machine-readable line on stdout once both sockets are bound, so scripts and tests
    // using port 0 learn the addresses without polling.
    print_json_line(&serde_json::json!({
        "listening": http.local_addr()?.to_string(),
        "quic": quic.local_addr()?.to_string(),
    }))?;
    crvs_central::run(config, http, quic, shutdown_signal()).await
}

fn operator(command: Command, config: &Config) -> anyhow::Result<()> {
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
                (None, true) => Some(LocationSet::from_json(crvs_central::DEMO_LOCATIONS_JSON)?),
                (None, false) => None,
            };
            let report = crvs_central::init(config, set.as_ref())?;
            print_json(&serde_json::json!({
                "centralId": report.central_id,
                "alreadyInitialised": report.already_initialised,
                "locationsChanged": report.locations_changed,
                "dataDir": config.file.data_dir,
            }))
        }
        Command::Run => anyhow::bail!("`run` is served by main"),
        Command::Node(cmd) => node(cmd, config),
        Command::Client(cmd) => client(cmd, config),
        Command::User(cmd) => user(cmd, config),
        Command::Status => {
            let store = crvs_central::open_store(config)?;
            let (stats, nodes) = store.read(|r| Ok((r.stats()?, r.nodes()?)))?;
            print_json(&serde_json::json!({
                "centralId": store.central_id().to_string(),
                "stats": stats,
                "nodes": nodes,
            }))
        }
    }
}

fn node(cmd: NodeCommand, config: &Config) -> anyhow::Result<()> {
    let store = crvs_central::open_store(config)?;
    match cmd {
        NodeCommand::Enroll {
            node_id,
            location,
            name,
            out,
        } => {
            let bundle = admin::enroll_node(
                config,
                &store,
                &EnrollRequest {
                    node_id,
                    location_id: location,
                    name,
                },
            )?;
            let json = serde_json::to_string_pretty(&bundle)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, format!("{json}\n"))
                        .with_context(|| format!("writing {}", path.display()))?;
                    print_json(&serde_json::json!({"enrolled": bundle.node_id, "bundle": path}))
                }
                None => print_json(&serde_json::to_value(&bundle)?),
            }
        }
        NodeCommand::List => print_json(&serde_json::to_value(admin::list_nodes(&store)?)?),
        NodeCommand::Revoke { node_id } => {
            let revoked = admin::revoke_node(&store, node_id)?;
            print_json(&serde_json::json!({
                "nodeId": node_id.to_string(),
                "revoked": true,
                "alreadyRevoked": !revoked,
            }))
        }
    }
}

fn client(cmd: ClientCommand, config: &Config) -> anyhow::Result<()> {
    let store = crvs_central::open_store(config)?;
    match cmd {
        ClientCommand::Add {
            name,
            mut scopes,
            health,
        } => {
            if health {
                scopes.extend(HEALTH_SCOPES.iter().map(|s| (*s).to_owned()));
            }
            let created =
                admin::add_client(&store, &name, &scopes, crvs_central::store::wall_ms())?;
            print_json(&serde_json::to_value(created)?)
        }
        ClientCommand::List => {
            let list: Vec<_> = admin::list_clients(&store)?
                .iter()
                .map(|c| serde_json::json!({"clientId": c.id, "name": c.name, "scopes": c.scopes, "status": c.status, "createdAt": c.created_at}))
                .collect();
            print_json(&serde_json::Value::Array(list))
        }
        ClientCommand::Disable { id } => {
            admin::disable_client(&store, &id)?;
            print_json(&serde_json::json!({"clientId": id, "status": "disabled"}))
        }
        ClientCommand::RefreshSecret { id } => {
            let credentials = admin::refresh_client_secret(&store, &id)?;
            print_json(&serde_json::to_value(credentials)?)
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
