//! Test harness shared by the cross-crate tests: starts real node processes on loopback.
//!
//! [`node_bin`] finds (building it once per test process if needed) the `crvs-node` binary.
//! [`NodeProcess`] initialises a node in a temporary data directory with the demo locations and a
//! health client, runs it on `127.0.0.1:0` and learns the port from the one `{"listening": ...}`
//! line the node prints on stdout once bound: no sleeping, no polling. It can be killed with
//! SIGKILL and restarted on the same data directory, and it runs the operator subcommands
//! (`status`, `log verify`, `client add`) against that directory. [`Api`] is a small HTTP client
//! over reqwest for the OpenCRVS routes the tests call.
//!
//! Everything here talks only to 127.0.0.1 and only to processes it started; dropping a
//! [`NodeProcess`] kills its process and removes its directory.

use std::fs::OpenOptions;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Value, json};

/// The demo office, "Ibombo District Office" (`CRVS_OFFICE`).
pub const OFFICE_ID: &str = "7b8d2f30-0002-4000-8000-000000000001";
/// The demo facility, "Ibombo District Hospital" (`HEALTH_FACILITY`).
pub const HOSPITAL_ID: &str = "7b8d2f30-0002-4000-8000-000000000011";
/// The demo administrative area "Ibombo" (not a location: refused as `createdAtLocation`).
pub const ADMIN_AREA_ID: &str = "6a7c1e2f-0001-4000-8000-000000000002";
/// The demo facility "Old Mission Clinic", inactive since 2020.
pub const INACTIVE_CLINIC_ID: &str = "7b8d2f30-0002-4000-8000-000000000014";

/// How long a node may take from spawn to its `{"listening": ...}` line before the harness
/// gives up (an upper bound for a hung start, not a readiness wait).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Upper bound of one HTTP request, so a hung node fails a test instead of stalling it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables the node reads; cleared so the caller's environment cannot steer it.
const NODE_ENV_VARS: [&str; 5] = [
    "CRVS_NODE_CONFIG",
    "CRVS_NODE_DATA_DIR",
    "CRVS_NODE_LISTEN",
    "CRVS_NODE_LOG_FORMAT",
    "CRVS_LOG",
];

/// The `crvs-node` binary: `CRVS_NODE_BIN` if set, otherwise built once per test process with
/// `cargo build -p crvs-node --bin crvs-node` in the test's own profile.
///
/// Panics (failing the calling test) when the build fails.
pub fn node_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("CRVS_NODE_BIN") {
        Some(path) => PathBuf::from(path),
        None => build_bin("crvs-node", "crvs-node")
            .unwrap_or_else(|e| panic!("building crvs-node: {e:#}")),
    })
}

pub(crate) fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Builds `bin` of `package` once in the test's profile and returns the executable's path.
pub(crate) fn build_bin(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let workspace = workspace_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let release = !cfg!(debug_assertions);
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "-p", package, "--bin", bin])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null());
    if release {
        cmd.arg("--release");
    }
    let output = cmd.output().context("running cargo build")?;
    anyhow::ensure!(
        output.status.success(),
        "cargo build -p {package} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Cargo names the executable it produced; that covers target-dir configuration too.
    let from_messages = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == bin)
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from));
    let path = match from_messages {
        Some(path) => path,
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace.join("target"), |dir| workspace.join(dir));
            let profile = if release { "release" } else { "debug" };
            target
                .join(profile)
                .join(format!("{bin}{}", std::env::consts::EXE_SUFFIX))
        }
    };
    anyhow::ensure!(path.exists(), "no {bin} binary at {}", path.display());
    Ok(path)
}

/// A system client's credentials as `client add` prints them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// Client id (a UUID).
    pub client_id: String,
    /// The secret, shown once.
    pub client_secret: String,
    /// Encoded scopes.
    pub scopes: Vec<String>,
}

/// The `stats` of `crvs-node status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Events stored.
    pub events: u64,
    /// Actions stored.
    pub actions: u64,
    /// Sequence number of the log head.
    pub log_seq: u64,
    /// Free tracking ids.
    pub pool_free: u64,
}

/// The answer of `crvs-node log verify`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogVerification {
    /// Entries verified.
    pub verified: u64,
    /// Hash of the head entry.
    pub head_hash: String,
}

/// A `crvs-node` process over a temporary data directory.
#[derive(Debug)]
pub struct NodeProcess {
    dir: tempfile::TempDir,
    child: Option<Child>,
    addr: SocketAddr,
    node_id: String,
    health: Credentials,
    starts: u32,
}

impl NodeProcess {
    /// Initialises a data directory (`init --demo-locations`), adds a health client
    /// (`client add --health`) and runs the node on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(|_, _| Ok(()))
    }

    /// Like [`Self::start`], with `prepare(data_dir, node_id)` run after `init` and before `run`
    /// (for example to enroll the node with central).
    pub fn start_with(
        prepare: impl FnOnce(&Path, &str) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("crvs-node-test-")
            .tempdir()
            .context("creating temp dir")?;
        let data_dir = dir.path().join("data");
        let init = cli_json(&data_dir, &["init", "--demo-locations"])?;
        let node_id = init["nodeId"]
            .as_str()
            .context("init printed no nodeId")?
            .to_owned();
        let health: Credentials = serde_json::from_value(cli_json(
            &data_dir,
            &["client", "add", "--name", "health", "--health"],
        )?)
        .context("decoding client add output")?;
        prepare(&data_dir, &node_id)?;
        let mut node = Self {
            dir,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            node_id,
            health,
            starts: 0,
        };
        node.spawn_run()?;
        Ok(node)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the node's stderr goes (every start appends to it).
    pub fn stderr_log(&self) -> PathBuf {
        self.dir.path().join("node-stderr.log")
    }

    /// The node id printed by `init`.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The address the node listens on now (changes on restart).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The health client added at start (scopes create, notify, read, search for birth, death).
    pub fn health_client(&self) -> &Credentials {
        &self.health
    }

    /// An API client without a token.
    pub fn anonymous(&self) -> Api {
        Api::new(format!("http://{}", self.addr), None)
    }

    /// An API client carrying `token`.
    pub fn api(&self, token: &str) -> Api {
        Api::new(format!("http://{}", self.addr), Some(token.to_owned()))
    }

    /// A token for the health client (client credentials in the query string).
    pub async fn token(&self) -> anyhow::Result<String> {
        self.token_for(&self.health).await
    }

    /// A token for `credentials`.
    pub async fn token_for(&self, credentials: &Credentials) -> anyhow::Result<String> {
        let reply = self
            .anonymous()
            .token_by_query("/auth/token", credentials)
            .await?;
        anyhow::ensure!(reply.status == 200, "token request failed: {reply:?}");
        reply.body["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token in the token reply")
    }

    /// An API client for the health client (fetches a token).
    pub async fn health_api(&self) -> anyhow::Result<Api> {
        let token = self.token().await?;
        Ok(self.api(&token))
    }

    /// Adds a client with exactly `scopes` (`client add --scope ...`).
    pub fn add_client(&self, name: &str, scopes: &[&str]) -> anyhow::Result<Credentials> {
        let mut args = vec!["client", "add", "--name", name];
        for scope in scopes {
            args.extend(["--scope", scope]);
        }
        let value = self.cli(&args)?;
        serde_json::from_value(value).context("decoding client add output")
    }

    /// Runs an operator subcommand on this node's data directory and parses its JSON output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Value> {
        cli_json(&self.data_dir(), args)
    }

    /// Counters from `crvs-node status` (works while the node runs).
    pub fn status(&self) -> anyhow::Result<Stats> {
        let value = self.cli(&["status"])?;
        serde_json::from_value(value["stats"].clone()).context("decoding status output")
    }

    /// `crvs-node log verify`: an error unless it exits 0 and reports its count.
    pub fn verify_log(&self) -> anyhow::Result<LogVerification> {
        let value = self.cli(&["log", "verify"])?;
        serde_json::from_value(value).context("decoding log verify output")
    }

    /// Whether the node process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the node with SIGKILL (`Child::kill` on unix) and reaps it.
    pub fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("node is not running")?;
        // An already exited child makes `kill` fail; `wait` still reaps it.
        let _ = child.kill();
        child.wait().context("reaping killed node")
    }

    /// Runs the node again on the same data directory (a new port). A node still running is
    /// killed with SIGKILL first.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.kill9()?;
        }
        self.spawn_run()
    }

    /// The last `bytes` of the node's stderr, for failure messages.
    pub fn stderr_tail(&self, bytes: usize) -> String {
        tail(&self.stderr_log(), bytes)
    }

    fn spawn_run(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log_path = self.stderr_log();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        writeln!(log, "===== crvs-node run, start {} =====", self.starts)?;
        let mut cmd = Command::new(node_bin());
        for var in NODE_ENV_VARS {
            cmd.env_remove(var);
        }
        // A test that wants other settings writes `node.toml` beside the data directory.
        let config = self.dir.path().join("node.toml");
        if config.exists() {
            cmd.arg("--config").arg(&config);
        }
        let mut child = cmd
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen", "127.0.0.1:0", "run"])
            // Plain text in the captured log, which is read by people and by tests.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawning crvs-node run")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        // Reads the listening line, then drains stdout until the process exits so the node
        // never blocks on (or dies of) a full or closed pipe.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("reading node stdout: {e}");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "node printed no listening line within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                    self.stderr_tail(4000)
                );
            }
        };
        let addr = serde_json::from_str::<Value>(line.trim())
            .ok()
            .and_then(|v| {
                v["listening"]
                    .as_str()
                    .and_then(|s| s.parse::<SocketAddr>().ok())
            });
        let Some(addr) = addr else {
            let _ = child.kill();
            let status = child.wait();
            anyhow::bail!(
                "node did not print a listening line (got {line:?}, exit {status:?}); stderr:\n{}",
                self.stderr_tail(4000)
            );
        };
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "node listens on {addr}, not loopback"
        );
        self.addr = addr;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "crvs-node stderr ({}), last lines:\n{}",
                self.stderr_log().display(),
                self.stderr_tail(3000)
            );
        }
    }
}

fn tail(path: &Path, bytes: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let start = text.len().saturating_sub(bytes);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// Runs `crvs-node --data-dir DIR ARGS...` to completion and parses stdout as JSON.
/// Runs a `crvs-node` subcommand on `data_dir` and parses its JSON output.
pub fn cli_json(data_dir: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let mut cmd = Command::new(node_bin());
    for var in NODE_ENV_VARS {
        cmd.env_remove(var);
    }
    let output = cmd
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running crvs-node {}", args.join(" ")))?;
    anyhow::ensure!(
        output.status.success(),
        "crvs-node {} failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "crvs-node {} printed no JSON: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// An HTTP answer: status, headers, and the body (parsed as JSON when it is JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON, or `Value::Null` when it is not JSON.
    pub body: Value,
    /// The raw body.
    pub text: String,
}

impl Reply {
    /// Reads a response to the end.
    pub async fn read(response: reqwest::Response) -> Result<Self, reqwest::Error> {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Self {
            status,
            headers,
            body,
            text,
        })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Problems with the body as OpenCRVS's REST error envelope `{message, code, issues?}` for
    /// `status`: `None` when it is one.
    pub fn envelope_problem(&self, status: u16) -> Option<String> {
        let code = match status {
            400 => "BAD_REQUEST",
            401 => "UNAUTHORIZED",
            403 => "FORBIDDEN",
            404 => "NOT_FOUND",
            405 => "METHOD_NOT_SUPPORTED",
            409 => "CONFLICT",
            413 => "PAYLOAD_TOO_LARGE",
            429 => "TOO_MANY_REQUESTS",
            500 => "INTERNAL_SERVER_ERROR",
            503 => "SERVICE_UNAVAILABLE",
            _ => "?",
        };
        let mut problems = Vec::new();
        if self.status != status {
            problems.push(format!("status {} instead of {status}", self.status));
        }
        match self.body.as_object() {
            None => problems.push("body is not a JSON object".to_owned()),
            Some(obj) => {
                if let Some(k) = obj
                    .keys()
                    .find(|k| !matches!(k.as_str(), "message" | "code" | "issues"))
                {
                    problems.push(format!("unexpected key {k:?}"));
                }
                if !obj.get("message").is_some_and(Value::is_string) {
                    problems.push("no string message".to_owned());
                }
                if obj.get("code").and_then(Value::as_str) != Some(code) {
                    problems.push(format!("code is not {code}"));
                }
                if let Some(issues) = obj.get("issues") {
                    let well_formed = issues.as_array().is_some_and(|list| {
                        list.iter().all(|issue| {
                            issue["code"].is_string()
                                && issue["message"].is_string()
                                && issue["path"].is_array()
                        })
                    });
                    if !well_formed {
                        problems.push("issues is not a list of {code, message, path}".to_owned());
                    }
                }
            }
        }
        if problems.is_empty() {
            None
        } else {
            Some(format!("{} (body: {})", problems.join("; "), self.text))
        }
    }

    /// The envelope's `message` (empty when absent).
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

/// A small client for the node's HTTP API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client for `base` (`http://host:port`), sending `token` as a bearer token if given.
    pub fn new(base: String, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            // Building a plain HTTP client without TLS or proxies only fails if the OS cannot
            // give us a resolver, which is a broken test environment.
            .expect("building reqwest client");
        Self { http, base, token }
    }

    /// The same client with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            token: token.map(str::to_owned),
        }
    }

    /// The bearer token sent, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request builder for `path` with the bearer token set.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a built request and reads the answer.
    pub async fn send(&self, builder: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
        Reply::read(builder.send().await?).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Reply, reqwest::Error> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, reqwest::Error> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `POST path` with raw bytes and an optional content type.
    pub async fn post_bytes(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Reply, reqwest::Error> {
        let mut builder = self.request(reqwest::Method::POST, path).body(body);
        if let Some(content_type) = content_type {
            builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        self.send(builder).await
    }

    /// The token route with the credentials in the query string, as OpenCRVS's sample
    /// integration sends them (with `Content-Type: application/json` and an empty body).
    pub async fn token_by_query(
        &self,
        route: &str,
        credentials: &Credentials,
    ) -> Result<Reply, reqwest::Error> {
        let query = token_params(credentials);
        self.post_bytes(
            &format!("{route}?{query}"),
            Some("application/json"),
            Vec::new(),
        )
        .await
    }

    /// The token route with the credentials in a form-urlencoded body.
    pub async fn token_by_form(
        &self,
        route: &str,
        credentials: &Credentials,
    ) -> Result<Reply, reqwest::Error> {
        self.post_bytes(
            route,
            Some("application/x-www-form-urlencoded"),
            token_params(credentials).into_bytes(),
        )
        .await
    }

    /// `POST /api/events/events`.
    pub async fn create(
        &self,
        event_type: &str,
        transaction_id: &str,
        location: &str,
    ) -> Result<Reply, reqwest::Error> {
        self.post(
            "/api/events/events",
            &create_body(event_type, transaction_id, location),
        )
        .await
    }

    /// `POST /api/events/events` as a user does it: no `createdAtLocation` (a user creates at
    /// their office).
    pub async fn create_by_user(&self, event_type: &str, transaction_id: &str) -> Reply {
        self.post(
            "/api/events/events",
            &json!({"type": event_type, "transactionId": transaction_id}),
        )
        .await
        .expect("POST /api/events/events")
    }

    /// `POST /api/events/events/{eventId}/notify`.
    pub async fn notify(
        &self,
        event_id: &str,
        transaction_id: &str,
        location: &str,
        declaration: &Value,
    ) -> Result<Reply, reqwest::Error> {
        self.post(
            &format!("/api/events/events/{event_id}/notify"),
            &notify_body(transaction_id, location, declaration),
        )
        .await
    }

    /// `POST /api/events/events/notify` (create and notify in one call).
    pub async fn create_and_notify(
        &self,
        event_type: &str,
        transaction_id: &str,
        location: &str,
        declaration: &Value,
    ) -> Result<Reply, reqwest::Error> {
        self.post(
            "/api/events/events/notify",
            &create_and_notify_body(event_type, transaction_id, location, declaration),
        )
        .await
    }

    /// `GET /api/events/events/{eventId}` (records a READ action).
    pub async fn read(&self, event_id: &str) -> Result<Reply, reqwest::Error> {
        self.get(&format!("/api/events/events/{event_id}")).await
    }

    /// `POST /api/events/events/search` with `body`.
    pub async fn search(&self, body: &Value) -> Result<Reply, reqwest::Error> {
        self.post("/api/events/events/search", body).await
    }

    /// The tracking-id lookup OpenCRVS's apps do (§2.5).
    pub async fn search_tracking_id(&self, tracking_id: &str) -> Result<Reply, reqwest::Error> {
        self.search(&json!({
            "query": {"type": "and", "clauses": [{"trackingId": {"type": "exact", "term": tracking_id}}]},
            "limit": 1
        }))
        .await
    }
}

fn token_params(credentials: &Credentials) -> String {
    serde_urlencoded::to_string([
        ("client_id", credentials.client_id.as_str()),
        ("client_secret", credentials.client_secret.as_str()),
        ("grant_type", "client_credentials"),
    ])
    // Encoding a list of string pairs cannot fail.
    .unwrap_or_default()
}

/// The `POST /events` body (`EventInput`).
pub fn create_body(event_type: &str, transaction_id: &str, location: &str) -> Value {
    json!({"type": event_type, "transactionId": transaction_id, "createdAtLocation": location})
}

/// The `POST /events/{id}/notify` body (`NotifyActionInput`), as the official sample sends it.
pub fn notify_body(transaction_id: &str, location: &str, declaration: &Value) -> Value {
    json!({
        "transactionId": transaction_id,
        "type": "NOTIFY",
        "createdAtLocation": location,
        "declaration": declaration,
        "annotation": {}
    })
}

/// The `POST /events/notify` body (`CreateAndNotifyInput`).
pub fn create_and_notify_body(
    event_type: &str,
    transaction_id: &str,
    location: &str,
    declaration: &Value,
) -> Value {
    json!({
        "eventType": event_type,
        "transactionId": transaction_id,
        "createdAtLocation": location,
        "declaration": declaration,
        "annotation": {}
    })
}

/// The declaration of OpenCRVS's official health-facility sample (§10.1), born at the demo
/// hospital.
pub fn sample_birth_declaration() -> Value {
    json!({
        "child.name": {"firstname": "Liam", "surname": "Banda"},
        "child.gender": "male",
        "child.dob": "2024-06-03",
        "child.placeOfBirth": "HEALTH_FACILITY",
        "child.birthLocation": HOSPITAL_ID,
        "informant.relation": "MOTHER",
        "informant.email": "liam.banda@example.com",
        "mother.detailsNotAvailable": false,
        "mother.name": {"firstname": "Grace", "surname": "Banda"}
    })
}

/// The actions of an EventDocument, or an empty slice.
pub fn actions(doc: &Value) -> &[Value] {
    doc["actions"].as_array().map_or(&[], Vec::as_slice)
}

/// `(type, status)` of each action of an EventDocument, in order.
pub fn action_kinds(doc: &Value) -> Vec<(String, String)> {
    actions(doc)
        .iter()
        .map(|a| {
            (
                a["type"].as_str().unwrap_or_default().to_owned(),
                a["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Whether `s` looks like an OpenCRVS tracking id: 6 characters from `0-9A-Z`.
pub fn is_tracking_id(s: &str) -> bool {
    s.len() == 6
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// A fresh transaction id.
pub fn new_transaction_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
/// `(busy, total)` CPU time of the whole machine so far, from the first line of `/proc/stat`
/// (benches print how busy the machine was beside their figures).
pub fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The fraction of the machine's CPU time spent busy since `before` ([`cpu_times`]).
pub fn busy_since(before: Option<(u64, u64)>) -> Option<f64> {
    let (busy0, total0) = before?;
    let (busy1, total1) = cpu_times()?;
    let total = total1.checked_sub(total0).filter(|t| *t > 0)?;
    Some(busy1.saturating_sub(busy0) as f64 / total as f64)
}

/// The fraction of the machine's CPU time spent busy over the next `window`.
pub async fn cpu_busy(window: Duration) -> Option<f64> {
    let before = cpu_times();
    tokio::time::sleep(window).await;
    busy_since(before)
}

/// The `main` of a bench binary: `parsed` is its options (`Ok(None)`: `--help`, so `usage` is
/// printed), `runtime` the runtime it asked for, `bench` the measurement. Bad options exit 2, a
/// failed bench 1, each with one line on stderr prefixed by `name` (and `failure_prefix`).
pub fn bench_main<O, F>(
    name: &str,
    usage: &str,
    failure_prefix: &str,
    parsed: anyhow::Result<Option<O>>,
    runtime: std::io::Result<tokio::runtime::Runtime>,
    bench: impl FnOnce(O) -> F,
) -> std::process::ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let options = match parsed {
        Ok(Some(options)) => options,
        Ok(None) => {
            // The usage text is the answer to --help, on stdout.
            let _ = std::io::stdout().write_all(usage.as_bytes());
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(options)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {failure_prefix}{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

pub mod central;
pub mod proxy;
pub mod users;
