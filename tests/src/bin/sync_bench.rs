//! `crvs-sync-bench`: the sync benchmark of issue 3, side by side in one run. It starts real
//! `crvs-central` and `crvs-node` processes on 127.0.0.1 and prints:
//!
//! 1. **Backlog drain**: a node holding `--count` notifications (built while central was down)
//!    is restarted and syncs to central on loopback; the time from the node's start until central
//!    acknowledged its whole log (every entry's signature verified and durably applied first),
//!    and, printed beside it, when central had also relayed every entry and filed its search
//!    index (both follow the acknowledgements on its indexer thread).
//!    Beside it, PouchDB replicates the same documents from a local on-disk database to
//!    `pouchdb-server` (`packaging/bench/replicate.js`); both times and the ratio.
//! 2. **No-op sync** of an up-to-date node on an open connection: the node's heartbeat round,
//!    counted as sync-stream frames each way (QUIC stream payload, from the node's `/metrics`)
//!    and as UDP datagrams at a proxy on the path; PouchDB's no-op replication (HTTP requests,
//!    TCP payload bytes) beside it.
//! 3. **EDGE-like link** through the lossy proxy (240 kbit/s down, 200 kbit/s up, 840 ms RTT,
//!    1% loss each way): the time to deliver `--edge-count` notifications; then, for a second
//!    backlog of the same size, the link is cut at a random byte of the upload for longer than
//!    the QUIC idle timeout (the connection is lost) and the bytes re-sent after it are counted.
//!
//! Targets are printed with PASS/MISS; a missed target does not fail the run, an error does.
//! `packaging/sync-bench.sh` builds the release binaries, installs PouchDB and starts
//! `pouchdb-server`; `CRVS_NODE_BIN` / `CRVS_CENTRAL_BIN` name the binaries to run.
#![allow(clippy::print_stdout, reason = "a bench prints its figures")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use crvs_tests::central::{
    CentralProcess, TestRng, central_event_count, eventually, node_sync_status,
    start_enrolled_node, wait_synced,
};
use crvs_tests::proxy::{LinkFaults, LossyProxy, ProxyConfig, TracedPacket};
use crvs_tests::{HOSPITAL_ID, NodeProcess, OFFICE_ID};
use serde_json::{Value, json};

/// Central configuration of the bench: one grant covers the whole backlog (the default lease of
/// 1,000 ids would stop a disconnected node after 1,000 notifications).
const CENTRAL_TOML: &str = "# crvs-sync-bench\npool_lease_size = 10000\n";

/// The QUIC idle timeout of node and central (`node::sync_driver::tls::IDLE_TIMEOUT`): a cut
/// longer than this loses the connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often central's status is polled while a transfer runs. Its node listing counts the
/// node's unused tracking ids (a few milliseconds of central's CPU while 10,000 are leased), so
/// polling often would take CPU from the drain it measures; the measured time does not depend
/// on this interval (see [`until_drained`]).
const POLL: Duration = Duration::from_millis(1000);

/// The targets.
const TARGET_DRAIN_RATIO: f64 = 5.0;
const TARGET_NOOP_ROUND_TRIPS: u64 = 1;
const TARGET_NOOP_BYTES: u64 = 512;
const TARGET_EDGE_SECS: f64 = 30.0;
const TARGET_RESENT_BYTES: u64 = 64 * 1024;

const USAGE: &str = "\
crvs-sync-bench: node → central sync vs PouchDB replication (backlog drain, no-op sync, EDGE link).

Usage: crvs-sync-bench [options]

  --count N             notifications in the loopback backlog (default 10000, at most 10000)
  --edge-count N        notifications over the EDGE-like link (default 1000)
  --concurrency C       HTTP clients filling a backlog (default 16)
  --pouch-url URL       pouchdb-server base URL, e.g. http://127.0.0.1:5984; without it PouchDB
                        is not measured
  --pouch-script FILE   the replication script (default packaging/bench/replicate.js)
  --node-js FILE        Node.js executable for the script (default node)
  --seed N              seed of the proxy's faults and the cut position (default 20261126)
  --skip-edge           skip the EDGE-like link (and the no-op round measured on it)

Environment: CRVS_NODE_BIN, CRVS_CENTRAL_BIN (otherwise built with cargo).
";

#[derive(Debug, Clone)]
struct Options {
    count: usize,
    edge_count: usize,
    concurrency: usize,
    pouch_url: Option<String>,
    pouch_script: PathBuf,
    node_js: String,
    seed: u64,
    skip_edge: bool,
}

fn parse_options(args: impl IntoIterator<Item = String>) -> anyhow::Result<Option<Options>> {
    let mut options = Options {
        count: 10_000,
        edge_count: 1000,
        concurrency: 16,
        pouch_url: None,
        pouch_script: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/bench/replicate.js"),
        node_js: "node".to_owned(),
        seed: 20_261_126,
        skip_edge: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--count" => options.count = value()?.parse().context("--count")?,
            "--edge-count" => options.edge_count = value()?.parse().context("--edge-count")?,
            "--concurrency" => options.concurrency = value()?.parse().context("--concurrency")?,
            "--pouch-url" => {
                options.pouch_url = Some(value()?.trim_end_matches('/').to_owned());
            }
            "--pouch-script" => options.pouch_script = PathBuf::from(value()?),
            "--node-js" => options.node_js = value()?,
            "--seed" => options.seed = value()?.parse().context("--seed")?,
            "--skip-edge" => options.skip_edge = true,
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    ensure!(
        (1..=10_000).contains(&options.count),
        "--count must be 1..=10000 (one tracking-id grant)"
    );
    ensure!(
        (1..=4_000).contains(&options.edge_count),
        "--edge-count must be 1..=4000"
    );
    ensure!(options.concurrency >= 1, "--concurrency must be at least 1");
    Ok(Some(options))
}

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    crvs_tests::bench_main(
        "crvs-sync-bench",
        USAGE,
        "",
        parse_options(std::env::args().skip(1)),
        runtime,
        bench,
    )
}

// ---------------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------------

/// splitmix64 over the document index: document `i` is the same for the node and for PouchDB.
#[derive(Debug)]
struct Gen(u64);

impl Gen {
    fn new(index: u64) -> Self {
        Self(index ^ 0x5EED_0FB1_2745)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn one_of<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn number(&mut self, digits: u32) -> String {
        format!(
            "{:0width$}",
            self.next() % 10u64.pow(digits),
            width = digits as usize
        )
    }

    fn day(&mut self, from_year: u64, years: u64) -> String {
        format!(
            "{}-{:02}-{:02}",
            from_year + self.next() % years,
            1 + self.next() % 12,
            1 + self.next() % 28
        )
    }
}

const FIRST_NAMES: [&str; 10] = [
    "Chipo", "Mwila", "Thandiwe", "Bupe", "Natasha", "Kondwani", "Mutale", "Bwalya", "Musonda",
    "Tiyamike",
];
const LAST_NAMES: [&str; 8] = [
    "Phiri", "Tembo", "Zulu", "Lungu", "Mulenga", "Ngoma", "Kabwe", "Mumba",
];
const JOBS: [&str; 5] = ["Farmer", "Teacher", "Nurse", "Trader", "Mechanic"];

/// A birth declaration as a health facility's system notifies it (~1 KiB of JSON: the child,
/// a mother informant with contact details, both parents and the mother's address).
fn declaration(index: u64) -> Value {
    let mut g = Gen::new(index);
    let family = g.one_of(&LAST_NAMES);
    let mother = g.one_of(&FIRST_NAMES);
    let father = g.one_of(&FIRST_NAMES);
    let female = g.next().is_multiple_of(2);
    json!({
        "child.name": {"firstname": g.one_of(&FIRST_NAMES), "surname": family},
        "child.gender": if female { "female" } else { "male" },
        "child.dob": g.day(2024, 2),
        "child.placeOfBirth": "HEALTH_FACILITY",
        "child.birthLocation": HOSPITAL_ID,
        "child.attendantAtBirth": g.one_of(&["MIDWIFE", "NURSE", "PHYSICIAN"]),
        "child.birthType": "SINGLE",
        "child.weightAtBirth": 2.5 + (g.next() % 15) as f64 / 10.0,
        "informant.relation": "MOTHER",
        "informant.phoneNo": format!("09{}", g.number(8)),
        "informant.email": format!("{}.{}{}@example.org", mother.to_lowercase(), family.to_lowercase(), g.number(3)),
        "mother.detailsNotAvailable": false,
        "mother.name": {"firstname": mother, "surname": family},
        "mother.dob": g.day(1985, 20),
        "mother.nationality": "FAR",
        "mother.idType": "NATIONAL_ID",
        "mother.nid": g.number(10),
        "mother.maritalStatus": "MARRIED",
        "mother.occupation": g.one_of(&JOBS),
        "mother.previousBirths": g.next() % 4,
        "mother.address": {
            "country": "FAR",
            "addressType": "DOMESTIC",
            "administrativeArea": "6a7c1e2f-0001-4000-8000-000000000002",
            "streetLevelDetails": {"town": "Ibombo", "street": "Market Street", "number": g.number(3)},
        },
        "father.detailsNotAvailable": false,
        "father.name": {"firstname": father, "surname": family},
        "father.dob": g.day(1978, 22),
        "father.nationality": "FAR",
        "father.idType": "NATIONAL_ID",
        "father.nid": g.number(10),
        "father.maritalStatus": "MARRIED",
        "father.occupation": g.one_of(&JOBS),
        "father.addressSameAs": "YES",
    })
}

/// The PouchDB document of notification `index`: the same declaration plus what an
/// offline-first app stores beside it.
fn pouch_doc(index: u64, created_at: &str) -> Value {
    json!({
        "_id": uuid::Uuid::new_v4().to_string(),
        "type": "birth",
        "transactionId": format!("sync-bench-{index}"),
        "status": "NOTIFIED",
        "createdAtLocation": OFFICE_ID,
        "createdAt": created_at,
        "declaration": declaration(index),
    })
}

// ---------------------------------------------------------------------------------------------
// Driving the node
// ---------------------------------------------------------------------------------------------

/// Sends notifications `first..first + count` to the node (create-and-notify, one request
/// each) from `concurrency` clients; returns the time taken.
async fn fill(
    node: &NodeProcess,
    first: u64,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let api = Arc::new(node.health_api().await?);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let api = Arc::clone(&api);
        tasks.push(tokio::spawn(async move {
            for i in (worker..count).step_by(concurrency) {
                let index = first + i as u64;
                let reply = api
                    .create_and_notify(
                        "birth",
                        &format!("sync-bench-{index}"),
                        OFFICE_ID,
                        &declaration(index),
                    )
                    .await
                    .context("POST /api/events/events/notify")?;
                ensure!(
                    reply.status == 200,
                    "notify {index}: {} {}",
                    reply.status,
                    reply.text
                );
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await.context("fill task")??;
    }
    Ok(started.elapsed())
}

fn as_u64(status: &Value, key: &str) -> u64 {
    status[key].as_u64().unwrap_or(0)
}

/// Milliseconds since the epoch of an ISO 8601 UTC timestamp as the node prints it
/// (`2025-11-26T06:19:00.123Z`).
fn parse_timestamp_ms(text: &str) -> Option<u64> {
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Days from 1970-01-01 (the inverse of the civil calendar conversion, March-based years).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((((days * 24 + h) * 60 + mi) * 60 + sec) * 1000 + ms).ok()
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits until central acknowledged the node's log up to `target_seq`, and returns when the
/// node received that acknowledgement, measured from `started_wall_ms`.
///
/// Central's `/api/sync/status` is polled every [`POLL`] (a cheap query there); the node's own
/// status, which sums the bytes of its unacknowledged entries (a scan of the whole backlog), is
/// read only at the end. The time comes from the node's `lastSuccess`, the wall-clock time it
/// handled the final `Ack` (same machine, same clock), so polling adds no error.
async fn until_drained(
    node: &NodeProcess,
    central: &CentralProcess,
    target_seq: u64,
    started_wall_ms: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = central.sync_status().await?;
        let acked = status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["nodeId"] == node.node_id()))
            .and_then(|n| n["acked"]["seq"].as_u64())
            .unwrap_or(0);
        if acked >= target_seq {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "central acknowledged {acked} of {target_seq} entries within {timeout:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let status = eventually("the node to receive the last Ack", timeout, || async {
        let status = node_sync_status(node).await?;
        Ok((as_u64(&status, "ackedSeq") >= target_seq).then_some(status))
    })
    .await?;
    let done_ms = status["lastSuccess"]
        .as_str()
        .and_then(parse_timestamp_ms)
        .with_context(|| format!("node status without lastSuccess: {status}"))?;
    ensure!(
        done_ms >= started_wall_ms,
        "lastSuccess {done_ms} precedes the start {started_wall_ms}"
    );
    Ok(Duration::from_millis(done_ms - started_wall_ms))
}

/// Waits for a tracking-id pool of at least `ids` and a fully acknowledged log.
async fn ready_with_pool(node: &NodeProcess, ids: u64, timeout: Duration) -> anyhow::Result<()> {
    eventually("a tracking-id grant", timeout, || async {
        let status = node_sync_status(node).await?;
        Ok((as_u64(&status, "poolFree") >= ids).then_some(()))
    })
    .await?;
    wait_synced(node, timeout).await?;
    Ok(())
}

/// The node's sync-stream counters from `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct Wire {
    frames_sent: u64,
    bytes_sent: u64,
    frames_received: u64,
    bytes_received: u64,
    entries_resent: u64,
    entries_resent_bytes: u64,
}

async fn wire(node: &NodeProcess) -> anyhow::Result<Wire> {
    let reply = node.anonymous().get("/metrics").await?;
    ensure!(reply.status == 200, "GET /metrics: {}", reply.status);
    let metric = |name: &str| -> anyhow::Result<u64> {
        let prefix = format!("crvs_node_{name} ");
        reply
            .text
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .with_context(|| format!("/metrics has no crvs_node_{name} (node too old?)"))
    };
    Ok(Wire {
        frames_sent: metric("sync_frames_sent")?,
        bytes_sent: metric("sync_frame_bytes_sent")?,
        frames_received: metric("sync_frames_received")?,
        bytes_received: metric("sync_frame_bytes_received")?,
        entries_resent: metric("sync_entries_resent")?,
        entries_resent_bytes: metric("sync_entries_resent_bytes")?,
    })
}

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

// ---------------------------------------------------------------------------------------------
// Legs
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Drain {
    entries: u64,
    time: Duration,
    /// From the node's start until central had also relayed every entry and filed the search
    /// index behind the acknowledgements (its background indexer).
    caught_up: Duration,
    start: Duration,
    wire: Wire,
}

/// Backlog drain on loopback, node straight to central.
async fn drain_leg(options: &Options) -> anyhow::Result<Drain> {
    let count = options.count;
    let mut central = CentralProcess::start_with_config(Some(CENTRAL_TOML))?;
    let mut node = start_enrolled_node(&central, HOSPITAL_ID, central.quic())?;
    ready_with_pool(&node, count as u64, Duration::from_secs(120)).await?;

    // Central goes away; the node keeps accepting notifications.
    central.kill9()?;
    let fill = fill(&node, 0, count, options.concurrency).await?;
    let before = node_sync_status(&node).await?;
    let entries = as_u64(&before, "unacknowledgedEntries");
    let entry_bytes = as_u64(&before, "bytesPending");
    ensure!(
        entries >= count as u64,
        "the node holds {entries} unacknowledged entries, expected {count}: {before}"
    );
    println!(
        "  backlog: {entries} entries, {:.0} KiB (signed log entries, uncompressed), written in {:.1} s",
        kib(entry_bytes),
        fill.as_secs_f64()
    );

    // Central back; the node restarts and syncs as it would after a power cut.
    let target_seq = as_u64(&before, "logSeq");
    central.restart()?;
    node.kill9()?;
    let started_wall_ms = wall_ms();
    let started = Instant::now();
    node.restart()?;
    let start = started.elapsed();
    let time = until_drained(
        &node,
        &central,
        target_seq,
        started_wall_ms,
        Duration::from_secs(600),
    )
    .await?;
    // Central's relays and search index follow the acknowledgements on its indexer thread.
    loop {
        let stats = &central.sync_status().await?["stats"];
        if as_u64(stats, "searchIndexPending") == 0 && as_u64(stats, "relaysPending") == 0 {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "central's indexer did not catch up: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught_up = started.elapsed();
    let wire = wire(&node).await?;

    let api = central.health_api().await?;
    let at_central = central_event_count(&api, "birth").await?;
    ensure!(
        at_central == count as u64,
        "central holds {at_central} birth events, expected {count}"
    );
    Ok(Drain {
        entries,
        time,
        caught_up,
        start,
        wire,
    })
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PouchResult {
    docs: u64,
    doc_bytes: u64,
    replicate_ms: f64,
    noop: PouchNoop,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PouchNoop {
    requests: u64,
    bytes_up: u64,
    bytes_down: u64,
}

/// PouchDB's replication of the same documents to pouchdb-server.
async fn pouch_leg(options: &Options, server: &str) -> anyhow::Result<PouchResult> {
    let dir = tempfile::Builder::new()
        .prefix("crvs-sync-bench-pouch-")
        .tempdir()?;
    let docs_path = dir.path().join("docs.ndjson");
    let created_at = crvs_common::event::format_timestamp_ms(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    let mut text = String::new();
    for i in 0..options.count as u64 {
        text.push_str(&serde_json::to_string(&pouch_doc(i, &created_at))?);
        text.push('\n');
    }
    std::fs::write(&docs_path, text)?;
    let db = format!(
        "sync-bench-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let mut command = std::process::Command::new(&options.node_js);
    command
        .arg(&options.pouch_script)
        .arg("--docs")
        .arg(&docs_path)
        .args(["--server", server, "--db", &db, "--dir"])
        .arg(dir.path().join("local"))
        .stdin(std::process::Stdio::null());
    let what = format!(
        "running {} {}",
        options.node_js,
        options.pouch_script.display()
    );
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .context("replicate.js task")?
        .context(what)?;
    ensure!(
        output.status.success(),
        "replicate.js failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .context("replicate.js printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("replicate.js printed {line:?}"))
}

/// The EDGE-like link of the issue, one direction.
fn edge(rate_bps: u64) -> LinkFaults {
    LinkFaults {
        drop: 0.01,
        delay: Duration::from_millis(420),
        rate_bps,
        ..LinkFaults::clean()
    }
}

#[derive(Debug)]
struct Transfer {
    time: Duration,
    up_bytes: u64,
    down_bytes: u64,
    up_packets: u64,
    wire: Wire,
}

/// Builds a backlog of `count` notifications while the link is black, restarts the node with the
/// link up and times the drain. `cut_at`: cut the link once this many UDP bytes went up.
async fn edge_transfer(
    node: &mut NodeProcess,
    central: &CentralProcess,
    proxy: &LossyProxy,
    first: u64,
    count: usize,
    options: &Options,
    cut_at: Option<u64>,
) -> anyhow::Result<Transfer> {
    proxy.set_blackout(true);
    fill(node, first, count, options.concurrency).await?;
    let target_seq = as_u64(&node_sync_status(node).await?, "logSeq");
    node.kill9()?;
    proxy.set_blackout(false);
    let (up0, down0) = proxy.stats();
    let started_wall_ms = wall_ms();
    let started = Instant::now();
    node.restart()?;
    if let Some(cut_at) = cut_at {
        loop {
            if proxy.stats().0.bytes_out - up0.bytes_out >= cut_at {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(300),
                "the cut position was never reached"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let status = node_sync_status(node).await?;
        println!(
            "    cut after {} UDP bytes up, {:.1} s in (node saw {} of {} entries acknowledged); link black for {} s",
            proxy.stats().0.bytes_out - up0.bytes_out,
            started.elapsed().as_secs_f64(),
            as_u64(&status, "ackedSeq"),
            as_u64(&status, "logSeq"),
            IDLE_TIMEOUT.as_secs() + 1
        );
        proxy.set_blackout(true);
        tokio::time::sleep(IDLE_TIMEOUT + Duration::from_secs(1)).await;
        proxy.set_blackout(false);
    }
    let time = until_drained(
        node,
        central,
        target_seq,
        started_wall_ms,
        Duration::from_secs(600),
    )
    .await?;
    let (up1, down1) = proxy.stats();
    Ok(Transfer {
        time,
        up_bytes: up1.bytes_out - up0.bytes_out,
        down_bytes: down1.bytes_out - down0.bytes_out,
        up_packets: up1.packets_out - up0.packets_out,
        wire: wire(node).await?,
    })
}

#[derive(Debug)]
struct Noop {
    frames_sent: u64,
    bytes_sent: u64,
    frames_received: u64,
    bytes_received: u64,
    packets: Vec<TracedPacket>,
}

/// Waits for the node's next heartbeat round on an idle, up-to-date connection and counts it.
async fn noop_round(node: &NodeProcess, proxy: &LossyProxy) -> anyhow::Result<Noop> {
    let deadline = Instant::now() + Duration::from_secs(120);
    'attempt: loop {
        ensure!(
            Instant::now() < deadline,
            "no quiet heartbeat round within 120 s"
        );
        wait_synced(node, Duration::from_secs(60)).await?;
        let w0 = wire(node).await?;
        proxy.set_trace(true);
        // The Hello: the last proxy time seen before the node's counter moved bounds its start.
        let mut before_hello = proxy.elapsed();
        loop {
            let seen = proxy.elapsed();
            let w = wire(node).await?;
            if w.frames_received != w0.frames_received {
                // Central sent something unasked (feed growth): not a quiet round, try again.
                continue 'attempt;
            }
            if w.frames_sent != w0.frames_sent {
                break;
            }
            before_hello = seen;
            ensure!(Instant::now() < deadline, "no heartbeat within 120 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let answered = loop {
            let w = wire(node).await?;
            if w.frames_received != w0.frames_received {
                break w;
            }
            ensure!(Instant::now() < deadline, "no answer to the heartbeat");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // Let the last acknowledgements cross the link, then close the window.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let w1 = wire(node).await?;
        if w1.frames_sent != answered.frames_sent || w1.frames_received != answered.frames_received
        {
            continue 'attempt;
        }
        let packets = proxy
            .take_trace()
            .into_iter()
            .filter(|p| p.at >= before_hello)
            .collect();
        proxy.set_trace(false);
        return Ok(Noop {
            frames_sent: w1.frames_sent - w0.frames_sent,
            bytes_sent: w1.bytes_sent - w0.bytes_sent,
            frames_received: w1.frames_received - w0.frames_received,
            bytes_received: w1.bytes_received - w0.bytes_received,
            packets,
        });
    }
}

#[derive(Debug)]
struct Edge {
    first: Transfer,
    noop: Noop,
    cut_at: u64,
    cut: Transfer,
}

async fn edge_leg(options: &Options) -> anyhow::Result<Edge> {
    let mut rng = TestRng::new(options.seed);
    let central = CentralProcess::start_with_config(Some(CENTRAL_TOML))?;
    let proxy = LossyProxy::start(
        central.quic(),
        ProxyConfig {
            up: edge(200_000),
            down: edge(240_000),
            seed: rng.next_u64(),
        },
    )
    .await?;
    let mut node = start_enrolled_node(&central, HOSPITAL_ID, proxy.addr())?;
    ready_with_pool(
        &node,
        2 * options.edge_count as u64,
        Duration::from_secs(300),
    )
    .await?;
    let first = edge_transfer(
        &mut node,
        &central,
        &proxy,
        0,
        options.edge_count,
        options,
        None,
    )
    .await?;

    // The no-op round on the same, now idle connection; a clean link keeps the window short.
    proxy.set_config(LinkFaults::clean(), LinkFaults::clean());
    let noop = noop_round(&node, &proxy).await?;
    proxy.set_config(edge(200_000), edge(240_000));

    let cut_at = rng.below(first.up_bytes.max(1));
    let cut = edge_transfer(
        &mut node,
        &central,
        &proxy,
        options.edge_count as u64,
        options.edge_count,
        options,
        Some(cut_at),
    )
    .await?;
    let api = central.health_api().await?;
    let at_central = central_event_count(&api, "birth").await?;
    ensure!(
        at_central == 2 * options.edge_count as u64,
        "central holds {at_central} birth events after the EDGE transfers, expected {}",
        2 * options.edge_count
    );
    Ok(Edge {
        first,
        noop,
        cut_at,
        cut,
    })
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

async fn bench(options: Options) -> anyhow::Result<()> {
    println!(
        "crvs-sync-bench: {} notifications on loopback, {} over the EDGE-like link; {} CPUs",
        options.count,
        options.edge_count,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!();
    println!("== Backlog drain (loopback)");
    let drain = drain_leg(&options).await?;
    let node_s = drain.time.as_secs_f64();
    println!(
        "  node → central: {:.3} s for {} entries ({:.0} entries/s; node start {:.0} ms included), \
         {:.0} KiB sent in {} frames, {:.0} KiB received in {} frames",
        node_s,
        drain.entries,
        drain.entries as f64 / node_s,
        drain.start.as_secs_f64() * 1000.0,
        kib(drain.wire.bytes_sent),
        drain.wire.frames_sent,
        kib(drain.wire.bytes_received),
        drain.wire.frames_received,
    );
    println!(
        "  central's relays to other nodes and its search index (filed behind the acknowledgements; \
         searches meanwhile evaluate unfiled records): caught up {:.3} s after the node's start",
        drain.caught_up.as_secs_f64()
    );
    let pouch = match &options.pouch_url {
        Some(url) => {
            let pouch = pouch_leg(&options, url).await?;
            let pouch_s = pouch.replicate_ms / 1000.0;
            println!(
                "  PouchDB → pouchdb-server: {:.3} s for {} documents ({:.0} docs/s; {:.0} KiB of JSON)",
                pouch_s,
                pouch.docs,
                pouch.docs as f64 / pouch_s,
                kib(pouch.doc_bytes)
            );
            let ratio = pouch_s / node_s;
            println!(
                "  ratio: node is {ratio:.1}× faster (target ≥ {TARGET_DRAIN_RATIO}×) {}",
                verdict(ratio >= TARGET_DRAIN_RATIO)
            );
            Some(pouch)
        }
        None => {
            println!("  PouchDB: not measured (no --pouch-url)");
            None
        }
    };

    if options.skip_edge {
        println!();
        println!("EDGE-like link and no-op round skipped (--skip-edge).");
        return Ok(());
    }
    println!();
    println!(
        "== EDGE-like link (lossy proxy: 240 kbit/s down, 200 kbit/s up, 840 ms RTT, 1% loss each way)"
    );
    let edge = edge_leg(&options).await?;
    let t = edge.first.time.as_secs_f64();
    println!(
        "  {} notifications delivered in {t:.1} s from the node's start (target ≤ {TARGET_EDGE_SECS} s) {}; \
         UDP {:.0} KiB up in {} datagrams, {:.0} KiB down; stream {:.0} KiB up",
        options.edge_count,
        verdict(t <= TARGET_EDGE_SECS),
        kib(edge.first.up_bytes),
        edge.first.up_packets,
        kib(edge.first.down_bytes),
        kib(edge.first.wire.bytes_sent),
    );
    let cut = &edge.cut;
    println!(
        "  cut at a random byte ({} of ~{} UDP bytes up), link down {} s (connection lost): \
         {} entries re-sent = {} bytes of stream (target ≤ {} KiB) {}",
        edge.cut_at,
        edge.first.up_bytes,
        IDLE_TIMEOUT.as_secs() + 1,
        cut.wire.entries_resent,
        cut.wire.entries_resent_bytes,
        TARGET_RESENT_BYTES / 1024,
        verdict(cut.wire.entries_resent_bytes <= TARGET_RESENT_BYTES),
    );
    println!(
        "    (every entry sent again counts, whether or not it had reached central); UDP up {:.0} KiB \
         vs {:.0} KiB without the cut ({:+.0} KiB: handshake, Hello, re-sent entries, loss); \
         {:.1} s in all",
        kib(cut.up_bytes),
        kib(edge.first.up_bytes),
        (cut.up_bytes as f64 - edge.first.up_bytes as f64) / 1024.0,
        cut.time.as_secs_f64()
    );

    println!();
    println!("== No-op sync of an up-to-date node on an open connection");
    let noop = &edge.noop;
    let stream = noop.bytes_sent + noop.bytes_received;
    let round_trips = noop.frames_sent.max(noop.frames_received);
    println!(
        "  node: {} message(s) up ({} bytes), {} down ({} bytes) = {round_trips} round trip, {stream} bytes of \
         stream payload (targets {TARGET_NOOP_ROUND_TRIPS} and ≤ {TARGET_NOOP_BYTES} bytes) {}",
        noop.frames_sent,
        noop.bytes_sent,
        noop.frames_received,
        noop.bytes_received,
        verdict(round_trips <= TARGET_NOOP_ROUND_TRIPS && stream <= TARGET_NOOP_BYTES),
    );
    let udp: usize = noop.packets.iter().map(|p| p.bytes).sum();
    let list: Vec<String> = noop
        .packets
        .iter()
        .map(|p| format!("{}{}", if p.up { "↑" } else { "↓" }, p.bytes))
        .collect();
    println!(
        "        on the wire: {} UDP datagrams, {udp} bytes of UDP payload (QUIC headers, ACKs, AEAD tags): {}",
        noop.packets.len(),
        list.join(" ")
    );
    if let Some(pouch) = &pouch {
        println!(
            "  PouchDB: {} HTTP requests, {} bytes ({} up, {} down; HTTP headers and bodies)",
            pouch.noop.requests,
            pouch.noop.bytes_up + pouch.noop.bytes_down,
            pouch.noop.bytes_up,
            pouch.noop.bytes_down
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_timestamp_ms;

    #[test]
    fn timestamps_read_back_as_the_node_writes_them() {
        for ms in [0, 951_782_400_123, 1_764_138_000_999, 4_107_542_399_001] {
            let text = crvs_common::event::format_timestamp_ms(ms);
            assert_eq!(parse_timestamp_ms(&text), Some(ms), "{text}");
        }
        assert_eq!(parse_timestamp_ms("yesterday"), None);
    }
}
