//! Harness for the central registry as a real process: init with demo locations, a health
//! client, `run` on `127.0.0.1:0` for HTTP and QUIC (addresses read from its one
//! `{"listening": .., "quic": ..}` line), node enrollment, SIGKILL and restart on the same ports.

use std::fs::OpenOptions;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::{Api, Credentials, build_bin};

/// Environment variables central reads; cleared so the caller's environment cannot steer it.
const CENTRAL_ENV_VARS: [&str; 8] = [
    "CRVS_CENTRAL_CONFIG",
    "CRVS_CENTRAL_DATA_DIR",
    "CRVS_CENTRAL_HTTP_LISTEN",
    "CRVS_CENTRAL_QUIC_LISTEN",
    "CRVS_CENTRAL_PUBLIC_QUIC_ADDR",
    "CRVS_CENTRAL_PUBLIC_HTTP_URL",
    "CRVS_CENTRAL_LOG_FORMAT",
    "CRVS_LOG",
];

/// How long a started process may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The `crvs-central` binary: `CRVS_CENTRAL_BIN` if set, otherwise built once per test process.
pub fn central_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("CRVS_CENTRAL_BIN") {
        Some(path) => PathBuf::from(path),
        None => build_bin("crvs-central", "crvs-central")
            .unwrap_or_else(|e| panic!("building crvs-central: {e:#}")),
    })
}

/// A running central registry.
#[derive(Debug)]
pub struct CentralProcess {
    dir: tempfile::TempDir,
    child: Option<Child>,
    http: SocketAddr,
    quic: SocketAddr,
    health: Credentials,
    starts: u32,
    /// `central.toml` passed to `run` (`--config`), when started with one.
    config: Option<PathBuf>,
}

impl Drop for CentralProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a `crvs-central` subcommand on `data_dir` and parses its JSON output.
pub fn central_cli(data_dir: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let mut cmd = Command::new(central_bin());
    for var in CENTRAL_ENV_VARS {
        cmd.env_remove(var);
    }
    let output = cmd
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running crvs-central {}", args.join(" ")))?;
    anyhow::ensure!(
        output.status.success(),
        "crvs-central {} failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "crvs-central {} printed no JSON: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

impl CentralProcess {
    /// Initialises central with the demo locations and a health client, and runs it.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_config(None)
    }

    /// Like [`Self::start`], with `config_toml` (the text of a `central.toml`, e.g.
    /// `pool_lease_size = 10000`) given to every `run`; command-line addresses still win.
    pub fn start_with_config(config_toml: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("crvs-central-test-")
            .tempdir()?;
        let data_dir = dir.path().join("data");
        central_cli(&data_dir, &["init", "--demo-locations"])?;
        let health: Credentials = serde_json::from_value(central_cli(
            &data_dir,
            &["client", "add", "--name", "health", "--health"],
        )?)
        .context("decoding client add output")?;
        let config = match config_toml {
            Some(text) => {
                let path = dir.path().join("central.toml");
                std::fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut central = Self {
            dir,
            child: None,
            http: any,
            quic: any,
            health,
            starts: 0,
            config,
        };
        central.spawn_run(any, any)?;
        Ok(central)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// HTTP address.
    pub fn http(&self) -> SocketAddr {
        self.http
    }

    /// QUIC (sync) address.
    pub fn quic(&self) -> SocketAddr {
        self.quic
    }

    /// The health client created at init (it syncs down to every node).
    pub fn health_client(&self) -> &Credentials {
        &self.health
    }

    /// An HTTP client for central's API with a token of the health client.
    pub async fn health_api(&self) -> anyhow::Result<Api> {
        let anonymous = Api::new(format!("http://{}", self.http), None);
        let reply = anonymous
            .token_by_query("/auth/token", &self.health)
            .await?;
        let token = reply.body["access_token"]
            .as_str()
            .with_context(|| format!("central token: {} {}", reply.status, reply.body))?
            .to_owned();
        Ok(anonymous.with_token(Some(&token)))
    }

    /// Enrolls a node for `location` and writes its bundle into `node_data_dir`; the bundle
    /// points the node at `quic_addr` (central itself, or a proxy in front of it). Returns the
    /// bundle path.
    pub fn enroll(
        &self,
        node_id: &str,
        location: &str,
        quic_addr: SocketAddr,
        node_data_dir: &Path,
    ) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(node_data_dir)?;
        let bundle = node_data_dir.join("bundle.json");
        let bundle_arg = bundle.to_string_lossy().into_owned();
        let quic = quic_addr.to_string();
        let http = format!("http://{}", self.http);
        let mut cmd = Command::new(central_bin());
        for var in CENTRAL_ENV_VARS {
            cmd.env_remove(var);
        }
        let output = cmd
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--public-quic-addr", &quic, "--public-http-url", &http])
            .args([
                "node",
                "enroll",
                "--node-id",
                node_id,
                "--location",
                location,
                "--name",
                "test node",
            ])
            .args(["--out", &bundle_arg])
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "node enroll failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(bundle)
    }

    /// Runs a subcommand against this central's data directory.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Value> {
        central_cli(&self.data_dir(), args)
    }

    /// `GET /api/sync/status` at central.
    pub async fn sync_status(&self) -> anyhow::Result<Value> {
        let api = Api::new(format!("http://{}", self.http), None);
        let reply = api.get("/api/sync/status").await?;
        anyhow::ensure!(
            reply.status == 200,
            "sync status: {} {}",
            reply.status,
            reply.body
        );
        Ok(reply.body)
    }

    /// Kills central with SIGKILL.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Restarts central (after `kill9`) on the same HTTP and QUIC addresses, so enrolled nodes
    /// find it again.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9()?;
        self.spawn_run(self.http, self.quic)
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Where central's stderr goes.
    pub fn stderr_log(&self) -> PathBuf {
        self.dir.path().join("central-stderr.log")
    }

    fn spawn_run(&mut self, http: SocketAddr, quic: SocketAddr) -> anyhow::Result<()> {
        self.starts += 1;
        let log_path = self.stderr_log();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        writeln!(log, "===== crvs-central run, start {} =====", self.starts)?;
        let mut cmd = Command::new(central_bin());
        for var in CENTRAL_ENV_VARS {
            cmd.env_remove(var);
        }
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "--http-listen",
                &http.to_string(),
                "--quic-listen",
                &quic.to_string(),
                "run",
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning crvs-central run")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(STARTUP_TIMEOUT).map_err(|_| {
            let _ = child.kill();
            anyhow::anyhow!(
                "crvs-central printed no listening line; see {}",
                log_path.display()
            )
        })?;
        let value: Value = serde_json::from_str(line.trim()).with_context(|| {
            format!("crvs-central printed {line:?}; see {}", log_path.display())
        })?;
        self.http = value["listening"]
            .as_str()
            .context("no http address")?
            .parse()?;
        self.quic = value["quic"].as_str().context("no quic address")?.parse()?;
        self.child = Some(child);
        Ok(())
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout` naming `what`.
/// For waiting on sync progress (which has no push notification), never on readiness.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow::anyhow!(
                "timed out after {timeout:?} waiting for {what} (last error: {last_error:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node's `GET /api/sync/status`.
pub async fn node_sync_status(node: &crate::NodeProcess) -> anyhow::Result<Value> {
    let reply = node.anonymous().get("/api/sync/status").await?;
    anyhow::ensure!(
        reply.status == 200,
        "node sync status: {} {}",
        reply.status,
        reply.body
    );
    Ok(reply.body)
}

/// Starts a node enrolled with `central` for `location`, dialing `quic_addr` (central or a proxy).
pub fn start_enrolled_node(
    central: &CentralProcess,
    location: &str,
    quic_addr: SocketAddr,
) -> anyhow::Result<crate::NodeProcess> {
    crate::NodeProcess::start_with(|data_dir, node_id| {
        let bundle = central.enroll(node_id, location, quic_addr, data_dir)?;
        crate::cli_json(data_dir, &["enroll", "--bundle", &bundle.to_string_lossy()])?;
        Ok(())
    })
}

/// Waits until the node is connected, has been welcomed, and has no unacknowledged entries.
pub async fn wait_synced(node: &crate::NodeProcess, timeout: Duration) -> anyhow::Result<Value> {
    eventually("the node to be fully acknowledged", timeout, || async {
        let status = node_sync_status(node).await?;
        // Connected and welcomed at least once: a node that never reached central also shows
        // 0 == 0 before its first contact.
        let done = status["unacknowledgedEntries"] == 0
            && status["ackedSeq"] == status["logSeq"]
            && status["connected"] == true
            && status["lastSuccess"].is_string();
        Ok(done.then_some(status))
    })
    .await
}

/// Number of events of `event_type` central's search sees.
pub async fn central_event_count(api: &Api, event_type: &str) -> anyhow::Result<u64> {
    let reply = api
        .search(&serde_json::json!({
            "query": {"type": "and", "clauses": [{"eventType": {"type": "exact", "term": event_type}}]},
            "limit": 1
        }))
        .await?;
    anyhow::ensure!(
        reply.status == 200,
        "central search: {} {}",
        reply.status,
        reply.body
    );
    reply.body["total"]
        .as_u64()
        .context("search answer has no total")
}

/// A small seeded generator (splitmix64) for fault timing in tests.
#[derive(Debug, Clone)]
pub struct TestRng(u64);

impl TestRng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The seed from `CRVS_TEST_SEED`, or `default`; printed so a failure can be replayed.
    pub fn from_env(default: u64) -> Self {
        let seed = std::env::var("CRVS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        eprintln!("test seed: {seed} (replay with CRVS_TEST_SEED={seed})");
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
