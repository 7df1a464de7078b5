//! `crvs-bench`: drives a running `crvs-node` and a PouchDB server over HTTP with the same
//! realistic birth notifications and prints throughput, latency percentiles, their ratio and the
//! node's memory. `packaging/bench.sh` starts both servers and runs this; see the README.
//!
//! The node is driven in both ways OpenCRVS 2.0 offers a health system: one call to
//! `POST /api/events/events/notify` (create and notify together, the 2.0 convenience route), and
//! two calls, `POST /api/events/events` then `POST /api/events/events/{id}/notify` (latency: the
//! sum), each with a ~1 KiB Farajaland declaration. The target ratio is judged on the one-call
//! flow, which does the same work as PouchDB's one write; both ratios are printed. A PouchDB notification is one `PUT /{db}/{docid}` of the same declaration plus the fields
//! an offline-first app stores beside it (`_id`, `type`, a tracking id, timestamps). Each load
//! runs `C` workers on one keep-alive connection pool; the bench's runtime is single-threaded so
//! the load generator takes at most one core from the servers it measures.
//!
//! The order is: RSS of the idle node, warm-up of both servers, then for each concurrency
//! `repeats` measured runs alternating node (one call), node (two calls) and PouchDB (medians are printed), then a sustained
//! run of the node at the highest concurrency until it holds `--fill-to` notifications, and its
//! RSS after that. Any HTTP error stops the bench with a non-zero exit; missed targets do not.
#![allow(clippy::print_stdout, reason = "a bench prints its figures")]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

use crvs_tests::cpu_busy;

/// The demo office the notifications are sent from (`createdAtLocation`).
const OFFICE_ID: &str = "7b8d2f30-0002-4000-8000-000000000001";
/// Demo health facilities where the children are born.
const FACILITIES: [&str; 2] = [
    "7b8d2f30-0002-4000-8000-000000000011",
    "7b8d2f30-0002-4000-8000-000000000012",
];
/// Demo administrative areas used in the parents' addresses.
const AREAS: [&str; 2] = [
    "6a7c1e2f-0001-4000-8000-000000000002",
    "6a7c1e2f-0001-4000-8000-000000000003",
];

/// Refresh the node token when it is older than this (the node's default lifetime is 600 s).
const TOKEN_REFRESH: Duration = Duration::from_secs(300);
/// Upper bound of one request: a hung server fails the bench instead of stalling it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the bench waits for both servers to answer before giving up.
const STARTUP_WAIT: Duration = Duration::from_secs(60);
/// Pause between runs, so background work of one server (compaction, checkpoints) settles.
const SETTLE: Duration = Duration::from_millis(500);

const MIB: f64 = 1024.0 * 1024.0;

/// Busy CPU time above this fraction while both servers idle means something else is running.
const BUSY_CPU: f64 = 0.15;

/// The targets.
const TARGET_RATIO: f64 = 3.0;
const TARGET_IDLE_RSS_MIB: f64 = 30.0;
const TARGET_FILLED_RSS_MIB: f64 = 80.0;

const USAGE: &str = "\
crvs-bench: node vs PouchDB notification throughput, latency and node memory.

Usage: crvs-bench --node-url URL --client-id ID --client-secret SECRET [options]

  --node-url URL          crvs-node base URL, e.g. http://127.0.0.1:7070
  --client-id ID          system client with record.create and record.notify for birth
  --client-secret SECRET  (or the environment variable CRVS_BENCH_CLIENT_SECRET, which keeps
                          it out of the process list)
  --pouch-url URL         PouchDB/CouchDB database URL, e.g. http://127.0.0.1:5984/bench
                          (created if missing); without it only the node is measured
  --count N               notifications per measured run (default 5000)
  --concurrency LIST      comma-separated concurrencies (default 1,16)
  --repeats R             measured runs per target and concurrency; medians printed (default 3)
  --warmup N              warm-up notifications per server (default 1000)
  --fill-to N             node notifications in total before the last RSS reading (default 100000)
  --node-pid PID          read the node's RSS from /proc/PID/status
  --pouch-pid PID         read PouchDB's RSS from /proc/PID/status
  --max-run-secs S        stop any run after S seconds and report what it did (default 900)
  --one-call-only         skip the node's two-call flow (create, then notify)
";

#[derive(Debug)]
struct Options {
    node_url: String,
    client_id: String,
    client_secret: String,
    pouch_url: Option<String>,
    count: u64,
    concurrency: Vec<usize>,
    repeats: usize,
    warmup: u64,
    fill_to: u64,
    node_pid: Option<u32>,
    pouch_pid: Option<u32>,
    max_run: Duration,
    /// Also measure the node's two-call flow (create, then notify).
    two_calls: bool,
}

fn parse_options(args: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Options>> {
    let mut node_url = None;
    let mut client_id = None;
    let mut client_secret = None;
    let mut pouch_url = None;
    let mut count = 5000;
    let mut two_calls = true;
    let mut concurrency = vec![1, 16];
    let mut repeats = 3;
    let mut warmup = 1000;
    let mut fill_to = 100_000;
    let mut node_pid = None;
    let mut pouch_pid = None;
    let mut max_run_secs = 900;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || -> anyhow::Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--node-url" => node_url = Some(value()?.trim_end_matches('/').to_owned()),
            "--client-id" => client_id = Some(value()?),
            "--client-secret" => client_secret = Some(value()?),
            "--pouch-url" => pouch_url = Some(value()?.trim_end_matches('/').to_owned()),
            "--count" => count = value()?.parse().context("--count")?,
            "--concurrency" => {
                concurrency = value()?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--concurrency")?;
            }
            "--repeats" => repeats = value()?.parse().context("--repeats")?,
            "--warmup" => warmup = value()?.parse().context("--warmup")?,
            "--fill-to" => fill_to = value()?.parse().context("--fill-to")?,
            "--node-pid" => node_pid = Some(value()?.parse().context("--node-pid")?),
            "--pouch-pid" => pouch_pid = Some(value()?.parse().context("--pouch-pid")?),
            "--max-run-secs" => max_run_secs = value()?.parse().context("--max-run-secs")?,
            "--one-call-only" => two_calls = false,
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    ensure!(count > 0, "--count must be positive");
    ensure!(repeats > 0, "--repeats must be positive");
    ensure!(max_run_secs > 0, "--max-run-secs must be positive");
    ensure!(
        !concurrency.is_empty() && concurrency.iter().all(|&c| (1..=1024).contains(&c)),
        "--concurrency values must be between 1 and 1024"
    );
    concurrency.sort_unstable();
    concurrency.dedup();
    Ok(Some(Options {
        node_url: node_url.context("--node-url is required")?,
        client_id: client_id.context("--client-id is required")?,
        client_secret: match client_secret {
            Some(secret) => secret,
            None => std::env::var("CRVS_BENCH_CLIENT_SECRET")
                .context("--client-secret or CRVS_BENCH_CLIENT_SECRET is required")?,
        },
        pouch_url,
        count,
        concurrency,
        repeats,
        warmup,
        fill_to,
        node_pid,
        pouch_pid,
        max_run: Duration::from_secs(max_run_secs),
        two_calls,
    }))
}

// ---------------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------------

/// A small deterministic generator (splitmix64): document `i` is the same for every server.
#[derive(Debug)]
struct Mix(u64);

impl Mix {
    fn new(index: u64) -> Self {
        Self(index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FF_EE00_D15E_A5E5)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }

    /// `YYYY-MM-DD` with a year in `years`.
    fn date(&mut self, years: std::ops::Range<u64>) -> String {
        let year = years.start + self.below(years.end - years.start);
        format!("{year}-{:02}-{:02}", 1 + self.below(12), 1 + self.below(28))
    }
}

const GIVEN_FEMALE: [&str; 12] = [
    "Grace", "Mercy", "Chipo", "Naledi", "Thandiwe", "Esther", "Ruth", "Precious", "Mwila", "Bupe",
    "Natasha", "Memory",
];
const GIVEN_MALE: [&str; 12] = [
    "Joseph", "Liam", "Emmanuel", "Kondwani", "Mutale", "Chanda", "Peter", "Bwalya", "Daniel",
    "Tiyamike", "Musonda", "Brian",
];
const SURNAMES: [&str; 12] = [
    "Banda", "Phiri", "Mwale", "Tembo", "Zulu", "Lungu", "Mulenga", "Sakala", "Ngoma", "Chilufya",
    "Kabwe", "Mumba",
];
const TOWNS: [&str; 4] = ["Ibombo", "Isamba", "Chikobo", "Kalulu"];
const AREAS_RES: [&str; 5] = ["Kalulu", "Mwansa", "New Town", "Chisokone", "Railway"];
const STREETS: [&str; 6] = [
    "Mwansa Road",
    "Independence Avenue",
    "Freedom Way",
    "Church Road",
    "Market Street",
    "Chiwala Lane",
];
const OCCUPATIONS: [&str; 8] = [
    "Teacher",
    "Farmer",
    "Nurse",
    "Trader",
    "Driver",
    "Tailor",
    "Mechanic",
    "Civil servant",
];
const ATTENDANTS: [&str; 4] = [
    "PHYSICIAN",
    "NURSE",
    "MIDWIFE",
    "OTHER_PARAMEDICAL_PERSONNEL",
];
const EDUCATION: [&str; 4] = [
    "NO_SCHOOLING",
    "PRIMARY_ISCED_1",
    "POST_SECONDARY_ISCED_4",
    "FIRST_STAGE_TERTIARY_ISCED_5",
];

/// The birth declaration of notification `index`: a mother informant, a facility birth, both
/// parents' details and the mother's address, as a health facility's system sends it (field ids
/// of the Farajaland birth form).
fn declaration(index: u64) -> Value {
    let mut r = Mix::new(index);
    let surname = r.pick(&SURNAMES);
    let female = r.below(2) == 0;
    let child_first = if female {
        r.pick(&GIVEN_FEMALE)
    } else {
        r.pick(&GIVEN_MALE)
    };
    let child_middle = r.pick(&GIVEN_MALE);
    let mother_first = r.pick(&GIVEN_FEMALE);
    let father_first = r.pick(&GIVEN_MALE);
    let facility = r.pick(&FACILITIES);
    let birth_type = if r.below(30) == 0 { "TWIN" } else { "SINGLE" };
    let weight = 2.3 + r.below(20) as f64 / 10.0;
    json!({
        "child.name": {"firstname": child_first, "middlename": child_middle, "surname": surname},
        "child.gender": if female { "female" } else { "male" },
        "child.dob": r.date(2024..2026),
        "child.placeOfBirth": "HEALTH_FACILITY",
        "child.birthLocation": facility,
        "child.birthLocationId": facility,
        "child.attendantAtBirth": r.pick(&ATTENDANTS),
        "child.birthType": birth_type,
        "child.weightAtBirth": weight,
        "informant.relation": "MOTHER",
        "informant.email": format!(
            "{}.{}{}@example.com",
            mother_first.to_lowercase(),
            surname.to_lowercase(),
            r.below(1000)
        ),
        "informant.phoneNo": format!("0{}{}", if r.below(2) == 0 { 7 } else { 9 }, r.digits(8)),
        "mother.detailsNotAvailable": false,
        "mother.name": {"firstname": mother_first, "surname": surname},
        "mother.dob": r.date(1982..2006),
        "mother.nationality": "FAR",
        "mother.idType": "NATIONAL_ID",
        "mother.nid": r.digits(10),
        "mother.maritalStatus": "MARRIED",
        "mother.educationalAttainment": r.pick(&EDUCATION),
        "mother.occupation": r.pick(&OCCUPATIONS),
        "mother.previousBirths": r.below(5),
        "mother.address": {
            "country": "FAR",
            "addressType": "DOMESTIC",
            "administrativeArea": r.pick(&AREAS),
            "streetLevelDetails": {
                "town": r.pick(&TOWNS),
                "residentialArea": r.pick(&AREAS_RES),
                "street": r.pick(&STREETS),
                "number": (1 + r.below(250)).to_string(),
            },
        },
        "father.detailsNotAvailable": false,
        "father.name": {"firstname": father_first, "surname": surname},
        "father.dob": r.date(1975..2003),
        "father.nationality": "FAR",
        "father.idType": "NATIONAL_ID",
        "father.nid": r.digits(10),
        "father.maritalStatus": "MARRIED",
        "father.occupation": r.pick(&OCCUPATIONS),
        "father.addressSameAs": "YES",
    })
}

/// A tracking-id-like code for the PouchDB document (the node draws real ones from its pool).
fn tracking_like(index: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut r = Mix::new(index ^ 0x5EED);
    (0..7)
        .map(|_| char::from(ALPHABET[r.below(32) as usize]))
        .collect()
}

fn now_iso() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    crvs_common::event::format_timestamp_ms(ms)
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: String,
}

/// The node's bearer token, refreshed in the background before it expires.
#[derive(Debug)]
struct Token {
    header: Mutex<HeaderValue>,
}

impl Token {
    fn get(&self) -> HeaderValue {
        self.header
            .lock()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |h| h.clone())
    }

    fn set(&self, value: HeaderValue) {
        match self.header.lock() {
            Ok(mut h) => *h = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

#[derive(Debug)]
struct NodeTarget {
    http: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: String,
    token: Token,
}

impl NodeTarget {
    async fn fetch_token(
        http: &reqwest::Client,
        base: &str,
        id: &str,
        secret: &str,
    ) -> anyhow::Result<HeaderValue> {
        // OpenCRVS's integrations send the credentials in the query string.
        let url = reqwest::Url::parse_with_params(
            &format!("{base}/auth/token"),
            [
                ("client_id", id),
                ("client_secret", secret),
                ("grant_type", "client_credentials"),
            ],
        )
        .context("building the token URL")?;
        let response = http
            .post(url)
            .send()
            .await
            .context("requesting a node token")?;
        let body: TokenResponse = decode(&ok_body(response, "POST /auth/token").await?)?;
        Ok(HeaderValue::from_str(&format!(
            "Bearer {}",
            body.access_token
        ))?)
    }

    async fn refresh(&self) -> anyhow::Result<()> {
        let header =
            Self::fetch_token(&self.http, &self.base, &self.client_id, &self.client_secret).await?;
        self.token.set(header);
        Ok(())
    }

    /// One notification in one call: `POST /api/events/events/notify` with declaration `index`.
    async fn create_and_notify(&self, index: u64) -> anyhow::Result<()> {
        let body = json!({
            "eventType": "birth",
            "transactionId": uuid::Uuid::new_v4().to_string(),
            "createdAtLocation": OFFICE_ID,
            "declaration": declaration(index),
            "annotation": {},
        });
        let response = self
            .http
            .post(format!("{}/api/events/events/notify", self.base))
            .header(AUTHORIZATION, self.token.get())
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body)?)
            .send()
            .await
            .context("POST /api/events/events/notify")?;
        let created: Created = decode(&ok_body(response, "POST /api/events/events/notify").await?)?;
        ensure!(
            !created.id.is_empty(),
            "POST /api/events/events/notify: no event id"
        );
        Ok(())
    }

    /// One notification in two calls: create the event, then notify it with declaration `index`.
    async fn notify(&self, index: u64) -> anyhow::Result<()> {
        let token = self.token.get();
        let create = json!({
            "type": "birth",
            "transactionId": uuid::Uuid::new_v4().to_string(),
            "createdAtLocation": OFFICE_ID,
        });
        let response = self
            .http
            .post(format!("{}/api/events/events", self.base))
            .header(AUTHORIZATION, token.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&create)?)
            .send()
            .await
            .context("POST /api/events/events")?;
        let created: Created = decode(&ok_body(response, "POST /api/events/events").await?)?;
        let notify = json!({
            "transactionId": uuid::Uuid::new_v4().to_string(),
            "type": "NOTIFY",
            "createdAtLocation": OFFICE_ID,
            "declaration": declaration(index),
            "annotation": {},
        });
        let response = self
            .http
            .post(format!(
                "{}/api/events/events/{}/notify",
                self.base, created.id
            ))
            .header(AUTHORIZATION, token)
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&notify)?)
            .send()
            .await
            .context("POST /api/events/events/{id}/notify")?;
        ok_body(response, "POST /api/events/events/{id}/notify").await?;
        Ok(())
    }
}

#[derive(Debug)]
struct PouchTarget {
    http: reqwest::Client,
    db: String,
}

impl PouchTarget {
    /// Creates the database unless it exists.
    async fn ensure_db(&self) -> anyhow::Result<()> {
        let response = self
            .http
            .put(&self.db)
            .send()
            .await
            .context("PUT database")?;
        if response.status() == reqwest::StatusCode::PRECONDITION_FAILED {
            return Ok(());
        }
        ok_body(response, "PUT database").await?;
        Ok(())
    }

    /// One notification: one `PUT` of the declaration as a new document.
    async fn notify(&self, index: u64) -> anyhow::Result<()> {
        let id = uuid::Uuid::new_v4().to_string();
        let doc = json!({
            "_id": id,
            "type": "birth",
            "trackingId": tracking_like(index),
            "transactionId": uuid::Uuid::new_v4().to_string(),
            "status": "NOTIFIED",
            "createdAtLocation": OFFICE_ID,
            "createdAt": now_iso(),
            "declaration": declaration(index),
        });
        let response = self
            .http
            .put(format!("{}/{id}", self.db))
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&doc)?)
            .send()
            .await
            .context("PUT document")?;
        ok_body(response, "PUT document").await?;
        Ok(())
    }
}

/// The response body of a 2xx, or an error with the status and the start of the body.
async fn ok_body(response: reqwest::Response, what: &str) -> anyhow::Result<impl AsRef<[u8]>> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .with_context(|| format!("{what}: reading the response"))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        let text: String = text.chars().take(400).collect();
        bail!("{what}: HTTP {status}: {text}");
    }
    Ok(bytes)
}

/// Decodes a JSON response body.
fn decode<T: serde::de::DeserializeOwned>(body: &impl AsRef<[u8]>) -> anyhow::Result<T> {
    serde_json::from_slice(body.as_ref()).context("decoding a response body")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    /// The node, one call per notification.
    Node,
    /// The node, create then notify.
    NodeTwoCalls,
    Pouch,
}

impl Which {
    fn label(self) -> &'static str {
        match self {
            Self::Node => "crvs-node",
            Self::NodeTwoCalls => "crvs-node 2 calls",
            Self::Pouch => "PouchDB",
        }
    }

    /// The name in progress lines.
    fn short(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::NodeTwoCalls => "node 2 calls",
            Self::Pouch => "PouchDB",
        }
    }
}

#[derive(Debug)]
struct Targets {
    node: NodeTarget,
    pouch: Option<PouchTarget>,
}

impl Targets {
    async fn notify(&self, which: Which, index: u64) -> anyhow::Result<()> {
        match (which, &self.pouch) {
            (Which::Node, _) => self.node.create_and_notify(index).await,
            (Which::NodeTwoCalls, _) => self.node.notify(index).await,
            (Which::Pouch, Some(pouch)) => pouch.notify(index).await,
            (Which::Pouch, None) => bail!("no PouchDB URL given"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

/// What one run measured.
#[derive(Debug, Clone)]
struct RunStats {
    /// Notifications asked for.
    requested: u64,
    /// Notifications done: fewer than asked when the run hit `--max-run-secs`.
    count: u64,
    elapsed: Duration,
    /// Per-notification latencies, microseconds, sorted.
    latencies_us: Vec<u32>,
}

impl RunStats {
    fn cut(&self) -> bool {
        self.count < self.requested
    }

    /// The progress note printed after a run.
    fn brief(&self) -> String {
        if self.cut() {
            format!(
                "{:.0}/s (cut after {:.0} s: {} of {})",
                self.throughput(),
                self.elapsed.as_secs_f64(),
                self.count,
                self.requested
            )
        } else {
            format!("{:.0}/s", self.throughput())
        }
    }

    fn throughput(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (nearest rank), milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let n = self.latencies_us.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        f64::from(self.latencies_us[rank - 1]) / 1000.0
    }
}

/// Sends notifications `first..first + count` with `concurrency` workers.
async fn run_load(
    targets: &Arc<Targets>,
    which: Which,
    first: u64,
    count: u64,
    concurrency: usize,
    max_run: Duration,
) -> anyhow::Result<RunStats> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + max_run;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let targets = Arc::clone(targets);
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity((count as usize) / concurrency + 1);
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let t0 = Instant::now();
                targets.notify(which, first + i).await?;
                latencies.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies_us = Vec::with_capacity(count as usize);
    while let Some(joined) = workers.join_next().await {
        match joined.context("a load worker panicked")? {
            Ok(mut l) => latencies_us.append(&mut l),
            Err(e) => {
                workers.abort_all();
                return Err(e.context(format!("{} load failed", which.label())));
            }
        }
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Ok(RunStats {
        requested: count,
        count: latencies_us.len() as u64,
        elapsed,
        latencies_us,
    })
}

/// Median of a set of figures (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Medians over repeated runs of one target at one concurrency.
#[derive(Debug, Clone)]
struct Summary {
    which: Which,
    concurrency: usize,
    runs: Vec<RunStats>,
}

impl Summary {
    fn throughput(&self) -> f64 {
        median(self.runs.iter().map(RunStats::throughput).collect())
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        median(self.runs.iter().map(|r| r.quantile_ms(q)).collect())
    }

    fn row(&self) -> String {
        let runs = self
            .runs
            .iter()
            .map(|r| format!("{:.0}{}", r.throughput(), if r.cut() { "*" } else { "" }))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{:<18}{:>5}{:>11.0}{:>10.2}{:>10.2}{:>10.2}   {runs}",
            self.which.label(),
            self.concurrency,
            self.throughput(),
            self.quantile_ms(0.50),
            self.quantile_ms(0.95),
            self.quantile_ms(0.99),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// `(VmRSS, VmHWM)` of a process in bytes, from `/proc/PID/status`.
fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kib: u64 = line
            .trim_start_matches(name)
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("parsing {line:?}"))?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

/// Waits until `url` answers at all (any status), so the script need not poll.
async fn wait_until_up(http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_WAIT;
    loop {
        match http.get(url).send().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context(format!("{url} does not answer")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    crvs_tests::bench_main(
        "crvs-bench",
        USAGE,
        "FAILED: ",
        parse_options(std::env::args().skip(1)),
        runtime,
        bench,
    )
}

async fn bench(options: Options) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(1024)
        .build()
        .context("building the HTTP client")?;

    wait_until_up(&http, &format!("{}/ping", options.node_url)).await?;
    // Idle: started, nothing asked of it yet.
    let node_idle = options.node_pid.map(rss).transpose()?;

    let token = NodeTarget::fetch_token(
        &http,
        &options.node_url,
        &options.client_id,
        &options.client_secret,
    )
    .await?;
    let pouch = match &options.pouch_url {
        Some(db) => {
            let base = db.rsplit_once('/').map_or(db.as_str(), |(base, _)| base);
            wait_until_up(&http, &format!("{base}/")).await?;
            let pouch = PouchTarget {
                http: http.clone(),
                db: db.clone(),
            };
            pouch.ensure_db().await?;
            Some(pouch)
        }
        None => None,
    };
    let targets = Arc::new(Targets {
        node: NodeTarget {
            http: http.clone(),
            base: options.node_url.clone(),
            client_id: options.client_id.clone(),
            client_secret: options.client_secret.clone(),
            token: Token {
                header: Mutex::new(token),
            },
        },
        pouch,
    });
    let refresher = {
        let targets = Arc::clone(&targets);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TOKEN_REFRESH).await;
                if let Err(e) = targets.node.refresh().await {
                    eprintln!("crvs-bench: token refresh failed (will retry): {e:#}");
                }
            }
        })
    };
    let result = measure(&options, &targets, node_idle).await;
    refresher.abort();
    result
}

async fn measure(
    options: &Options,
    targets: &Arc<Targets>,
    node_idle: Option<(u64, u64)>,
) -> anyhow::Result<()> {
    let with_pouch = targets.pouch.is_some();
    let sample = serde_json::to_vec(&declaration(0))?.len();
    let mean_size = (0..100u64)
        .map(|i| serde_json::to_vec(&declaration(i)).map_or(0, |v| v.len()))
        .sum::<usize>()
        / 100;
    let high = options.concurrency.iter().copied().max().unwrap_or(16);

    println!("crvs-bench");
    match cpu_busy(Duration::from_secs(2)).await {
        Some(busy) if busy > BUSY_CPU => println!(
            "  WARNING: the CPUs were {:.0} % busy just before the bench: other work is running \
             on this machine and will lower both servers' figures",
            busy * 100.0
        ),
        Some(busy) => println!(
            "  CPUs {:.0} % busy just before the bench (nothing else running)",
            busy * 100.0
        ),
        None => {}
    }
    println!("  node:    {}", options.node_url);
    match &options.pouch_url {
        Some(url) => println!("  PouchDB: {url}"),
        None => println!("  PouchDB: not measured (no --pouch-url)"),
    }
    println!(
        "  documents: Farajaland birth declarations, {mean_size} bytes of JSON on average \
         (first: {sample}); document i is the same for both servers"
    );
    println!(
        "  node notification = POST /api/events/events/notify (create + notify, one call); \
         node 2 calls = POST /api/events/events + POST .../{{id}}/notify (latency: both); \
         PouchDB notification = one PUT /{{db}}/{{docid}}"
    );
    println!(
        "  {} measured runs of {} notifications per server and concurrency, alternating \
         servers; figures are medians over the runs",
        options.repeats, options.count
    );
    println!();

    // Warm-up: connections, caches, the servers' first allocations.
    let mut node_next = 0u64;
    let mut pouch_next = 0u64;
    let mut node_total = 0u64;
    if options.warmup > 0 {
        print!(
            "warm-up: {} notifications per server at concurrency {high} ...",
            options.warmup
        );
        flush();
        let node = run_load(
            targets,
            Which::Node,
            node_next,
            options.warmup,
            high,
            options.max_run,
        )
        .await?;
        node_next += options.warmup;
        node_total += node.count;
        print!(" node {}", node.brief());
        if with_pouch {
            let pouch = run_load(
                targets,
                Which::Pouch,
                pouch_next,
                options.warmup,
                high,
                options.max_run,
            )
            .await?;
            pouch_next += options.warmup;
            print!(", PouchDB {}", pouch.brief());
        }
        println!();
    }

    // Alternating in this order within each repeat, so slow drift hits every target alike.
    let mut order = vec![Which::Node];
    if options.two_calls {
        order.push(Which::NodeTwoCalls);
    }
    if with_pouch {
        order.push(Which::Pouch);
    }
    let mut summaries: Vec<Summary> = Vec::new();
    for &concurrency in &options.concurrency {
        let mut runs: Vec<Vec<RunStats>> = vec![Vec::new(); order.len()];
        for rep in 0..options.repeats {
            print!(
                "concurrency {concurrency}, run {}/{}:",
                rep + 1,
                options.repeats
            );
            for (i, &which) in order.iter().enumerate() {
                print!("{} {} ...", if i == 0 { "" } else { "," }, which.short());
                flush();
                tokio::time::sleep(SETTLE).await;
                // Node flows share one document sequence; PouchDB has its own.
                let next = if which == Which::Pouch {
                    &mut pouch_next
                } else {
                    &mut node_next
                };
                let stats = run_load(
                    targets,
                    which,
                    *next,
                    options.count,
                    concurrency,
                    options.max_run,
                )
                .await?;
                *next += options.count;
                if which != Which::Pouch {
                    node_total += stats.count;
                }
                print!(" {}", stats.brief());
                runs[i].push(stats);
            }
            println!();
        }
        for (which, runs) in order.iter().zip(runs) {
            summaries.push(Summary {
                which: *which,
                concurrency,
                runs,
            });
        }
    }
    let pouch_rss = options.pouch_pid.map(rss).transpose()?;

    // Sustained: the node at the highest concurrency until it holds --fill-to notifications.
    let fill = if node_total < options.fill_to {
        let count = options.fill_to - node_total;
        print!(
            "sustained: node, {count} more notifications at concurrency {high} \
             (to {} in total) ...",
            options.fill_to
        );
        flush();
        tokio::time::sleep(SETTLE).await;
        let stats = run_load(
            targets,
            Which::Node,
            node_next,
            count,
            high,
            options.max_run,
        )
        .await?;
        node_total += stats.count;
        println!(" {}", stats.brief());
        Some(stats)
    } else {
        None
    };
    let node_filled = options.node_pid.map(rss).transpose()?;

    println!();
    println!(
        "{:<18}{:>5}{:>11}{:>10}{:>10}{:>10}   runs (notifications/s)",
        "server", "conc", "notif/s", "p50 ms", "p95 ms", "p99 ms"
    );
    for s in &summaries {
        println!("{}", s.row());
    }
    let any_cut = summaries.iter().flat_map(|s| &s.runs).any(RunStats::cut)
        || fill.as_ref().is_some_and(RunStats::cut);
    if let Some(stats) = &fill {
        println!(
            "{:<18}{:>5}{:>11.0}{:>10.2}{:>10.2}{:>10.2}   one run of {} (sustained, to {} in total)",
            "crvs-node",
            high,
            stats.throughput(),
            stats.quantile_ms(0.50),
            stats.quantile_ms(0.95),
            stats.quantile_ms(0.99),
            stats.count,
            node_total,
        );
    }
    if any_cut {
        println!(
            "* a run hit --max-run-secs ({} s) and was cut short; its figures cover what it did",
            options.max_run.as_secs()
        );
    }

    let find = |which: Which, c: usize| {
        summaries
            .iter()
            .find(|s| s.which == which && s.concurrency == c)
    };
    let mut ratio_high = None;
    let mut two_call_ratio_high = None;
    if with_pouch {
        println!();
        for (which, name) in [(Which::Node, "node"), (Which::NodeTwoCalls, "node 2 calls")] {
            for &c in &options.concurrency {
                if let (Some(node), Some(pouch)) = (find(which, c), find(Which::Pouch, c)) {
                    let ratio = node.throughput() / pouch.throughput();
                    println!(
                        "{name:<12} / PouchDB at concurrency {c:>3}: throughput {ratio:.2}x, \
                         p50 latency {:.2}x, p99 latency {:.2}x",
                        node.quantile_ms(0.50) / pouch.quantile_ms(0.50),
                        node.quantile_ms(0.99) / pouch.quantile_ms(0.99),
                    );
                    if c == high && which == Which::Node {
                        ratio_high = Some(ratio);
                    }
                    if c == high && which == Which::NodeTwoCalls {
                        two_call_ratio_high = Some(ratio);
                    }
                }
            }
        }
    }

    println!();
    let show = |label: &str, reading: Option<(u64, u64)>| match reading {
        Some((rss, hwm)) => println!(
            "{label}: {:.1} MiB (peak so far {:.1} MiB)",
            mib(rss),
            mib(hwm)
        ),
        None => println!("{label}: not measured (no pid given)"),
    };
    show("node RSS idle, before any request", node_idle);
    show(
        &format!("node RSS after {node_total} notifications"),
        node_filled,
    );
    show("PouchDB RSS after its measured runs", pouch_rss);

    println!();
    println!(
        "targets (the node answers a write only after the fsync of the WAL holding it: group commit;"
    );
    println!(" its request log is on at its default level; PouchDB keeps its request log on)");
    let mut line = String::new();
    match ratio_high {
        Some(ratio) => {
            let _ = write!(
                line,
                "  {} node throughput (one call) at concurrency {high} >= {TARGET_RATIO}x PouchDB's: {ratio:.2}x",
                verdict(ratio >= TARGET_RATIO)
            );
        }
        None => line.push_str("  n/a  node/PouchDB throughput ratio: PouchDB not measured"),
    }
    println!("{line}");
    if let Some(ratio) = two_call_ratio_high {
        println!(
            "  info node 2 calls (create, then notify) at concurrency {high}: {ratio:.2}x PouchDB's"
        );
    }
    match node_idle {
        Some((rss, _)) => println!(
            "  {} node idle RSS <= {TARGET_IDLE_RSS_MIB} MiB: {:.1} MiB",
            verdict(mib(rss) <= TARGET_IDLE_RSS_MIB),
            mib(rss)
        ),
        None => println!("  n/a  node idle RSS: no --node-pid"),
    }
    match node_filled {
        Some((rss, _)) if node_total >= 100_000 => println!(
            "  {} node RSS after 100,000 notifications <= {TARGET_FILLED_RSS_MIB} MiB: {:.1} MiB \
             ({node_total} sent)",
            verdict(mib(rss) <= TARGET_FILLED_RSS_MIB),
            mib(rss)
        ),
        Some((rss, _)) if any_cut => println!(
            "  FAIL node RSS after 100,000 notifications: not reached, runs were cut by \
             --max-run-secs at {node_total} notifications ({:.1} MiB then)",
            mib(rss)
        ),
        Some((rss, _)) => println!(
            "  n/a  node RSS after 100,000 notifications: only {node_total} sent \
             (--fill-to); {:.1} MiB then",
            mib(rss)
        ),
        None => println!("  n/a  node RSS after 100,000 notifications: no --node-pid"),
    }
    Ok(())
}

fn flush() {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}
