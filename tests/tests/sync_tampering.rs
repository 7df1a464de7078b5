//! Tampering at central, end to end: the test plays an enrolled node (its own ed25519 key, the
//! bundle central issued for it, the node's TLS client configuration) and speaks the sync protocol
//! to the real `crvs-central` process over QUIC with mutual TLS on loopback, sending crafted
//! entries. Each kind of tampering must be refused with its reason, change nothing at central,
//! and show in central's ops status:
//!
//! - a forged signature and an altered payload: `bad-signature`, recorded as rejects;
//! - a gap: `gap`, recorded but not penalised (an honest node causes it by losing a batch), recovered by
//!   re-sending;
//! - a fork (a second, validly signed entry for an applied seq): both entries kept as evidence,
//!   the node quarantined and refused on its next connection;
//! - another node's genuine entries (taken from central's own relay) replayed over this node's
//!   connection: `wrong-node`;
//! - an entry from a revoked node: the open session ends with `Goodbye{revoked}` and the next
//!   handshake fails with TLS alert `certificate_revoked`.
//!
//! A positive control shows that a genuine entry built the same way is acknowledged and applied.
//! Keys, event ids, action ids and capture times are fixed; only the tracking ids (drawn by
//! central) vary between runs. No sleeps: every wait is a protocol message under a bound.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use crvs_common::event::{
    ActionDocument, ActionStatus, ActionType, Declaration, EntryPayload, UserType,
    format_timestamp_ms,
};
use crvs_common::feed::CentralRecord;
use crvs_common::hlc::Hlc;
use crvs_common::log::{EntryHash, LogEntry, LogHead, NodeId, NodeSecretKey};
use crvs_node::enroll::Enrollment;
use crvs_sync::WIRE_VERSION;
use crvs_sync::merge::{EventCrdt, actor_for};
use crvs_sync::wire::{Ack, DownAck, Entries, FRAME_BYTES_MAX, Goodbye, Hello, Message, Welcome};
use crvs_tests::HOSPITAL_ID;
use crvs_tests::central::CentralProcess;
use serde_json::Value;

/// Bound on any one exchange with central (dial, or one message each way).
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Bound on waiting for an entry of central's feed (central polls its log every 250 ms).
const FEED_TIMEOUT: Duration = Duration::from_secs(30);

/// Secret-key seeds: the fake node under test, a second enrolled node, and an outsider whose
/// key central never saw.
const SEED_A: u8 = 0xa1;
const SEED_B: u8 = 0xb2;
const SEED_FORGER: u8 = 0xf0;

/// Capture time of every crafted action (2026-07-01T09:00:00.000Z).
const CAPTURE_MS: u64 = 1_782_896_400_000;

/// Free tracking ids reported in `Hello` once the fake node holds a lease: above central's
/// low-water mark, so no further grant is appended to its feed.
const POOL_FREE_FULL: u32 = 1_000;

/// TLS alert `certificate_revoked` (RFC 8446 §6.2).
const ALERT_CERTIFICATE_REVOKED: u8 = 44;

// ---------------------------------------------------------------------------------------------
// The fake node.

/// An enrolled node identity held by the test: key, checked bundle, and the tracking ids central
/// leased to it (learned from its feed).
struct FakeNode {
    seed: u8,
    enrollment: Enrollment,
    tracking_ids: Vec<String>,
    /// Position in central's feed after the last batch received.
    down_cursor: u64,
    _dir: tempfile::TempDir,
}

impl FakeNode {
    /// Enrolls `NodeSecretKey::from_bytes([seed; 32])` at central for the hospital and parses the
    /// bundle central wrote.
    fn enroll(central: &CentralProcess, seed: u8) -> anyhow::Result<Self> {
        let id = key(seed).node_id();
        let dir = tempfile::Builder::new()
            .prefix("crvs-fake-node-")
            .tempdir()?;
        let bundle = central.enroll(&id.to_string(), HOSPITAL_ID, central.quic(), dir.path())?;
        let text = std::fs::read_to_string(&bundle)?;
        let enrollment = Enrollment::parse(&text).context("parsing the enrollment bundle")?;
        anyhow::ensure!(enrollment.node_id() == id, "bundle issued for another node");
        Ok(Self {
            seed,
            enrollment,
            tracking_ids: Vec::new(),
            down_cursor: 0,
            _dir: dir,
        })
    }

    fn id(&self) -> NodeId {
        key(self.seed).node_id()
    }

    fn hex(&self) -> String {
        self.id().to_string()
    }

    /// The `i`-th tracking id central leased to this node.
    fn tracking_id(&self, i: usize) -> &str {
        self.tracking_ids
            .get(i)
            .unwrap_or_else(|| panic!("central leased fewer than {} tracking ids", i + 1))
    }

    /// A genuine CREATE of birth event `n` at `seq` on `prev`, using leased tracking id `i`.
    fn create(&self, seq: u64, prev: EntryHash, n: u128, i: usize) -> LogEntry {
        create_entry(&key(self.seed), seq, prev, n, self.tracking_id(i))
    }

    /// Dials central as this node (the node's own TLS client configuration) and opens the sync
    /// stream.
    async fn connect(&self) -> anyhow::Result<Session> {
        let config = crvs_node::sync_driver::tls::client_config(&self.enrollment, &key(self.seed))?;
        let addr: SocketAddr = self
            .enrollment
            .central_quic_addr()
            .parse()
            .context("central's QUIC address")?;
        let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let connecting = endpoint.connect_with(config, addr, self.enrollment.server_name())?;
        let conn = tokio::time::timeout(STEP_TIMEOUT, connecting)
            .await
            .context("QUIC handshake timed out")?
            .map_err(|e| anyhow::Error::new(e).context("QUIC handshake"))?;
        let (send, recv) = tokio::time::timeout(STEP_TIMEOUT, conn.open_bi())
            .await
            .context("opening the sync stream timed out")?
            .map_err(|e| anyhow::Error::new(e).context("opening the sync stream"))?;
        Ok(Session {
            _endpoint: endpoint,
            conn,
            send,
            recv,
        })
    }

    /// Connects and says `Hello` with `head`; on `Welcome` reads central's feed to its end
    /// (acknowledging intermediate batches), checks central's signature on every item, and keeps
    /// the tracking ids leased to this node. Returns the session and the `Welcome`.
    async fn join(&mut self, head: LogHead) -> anyhow::Result<(Session, Welcome)> {
        let mut session = self.connect().await?;
        let pool_free = if self.tracking_ids.is_empty() {
            0
        } else {
            POOL_FREE_FULL
        };
        let welcome = match session
            .hello(self.id(), head, self.down_cursor, pool_free)
            .await?
        {
            Message::Welcome(w) => w,
            other => anyhow::bail!("expected Welcome, got {other:?}"),
        };
        let mut down = welcome.down.clone();
        loop {
            anyhow::ensure!(
                down.from_cursor == self.down_cursor,
                "feed batch from {} while the node is at {}",
                down.from_cursor,
                self.down_cursor
            );
            for item in &down.items {
                self.take_feed_item(item)?;
            }
            self.down_cursor = down.to_cursor;
            if !down.more {
                break;
            }
            session
                .send(Message::DownAck(DownAck {
                    cursor: down.to_cursor,
                }))
                .await?;
            down = match session.recv().await? {
                Message::Down(d) => d,
                other => anyhow::bail!("expected Down, got {other:?}"),
            };
        }
        Ok((session, welcome))
    }

    /// Checks one of central's entries and keeps this node's pool grants.
    fn take_feed_item(&mut self, item: &LogEntry) -> anyhow::Result<CentralRecord> {
        anyhow::ensure!(
            item.node_id == self.enrollment.central_id(),
            "feed item not signed by central"
        );
        item.verify_signature()
            .context("central's signature on a feed item")?;
        let record: CentralRecord =
            serde_json::from_slice(&item.action).context("feed item payload")?;
        if let CentralRecord::PoolGrant {
            node_id,
            tracking_ids,
        } = &record
            && *node_id == self.hex()
        {
            self.tracking_ids.extend(tracking_ids.iter().cloned());
        }
        Ok(record)
    }
}

fn key(seed: u8) -> NodeSecretKey {
    NodeSecretKey::from_bytes(&[seed; 32])
}

/// A CREATE of birth event `n` with `tracking_id`, as a node's store writes it: the payload JSON
/// and the event's first automerge change, signed at `seq` on `prev`.
fn create_entry(
    key: &NodeSecretKey,
    seq: u64,
    prev: EntryHash,
    n: u128,
    tracking_id: &str,
) -> LogEntry {
    let event_id = uuid::Uuid::from_u128(0x7a3e_0000_0000_4000_8000_0000_0000_0000 | n);
    let action_id = uuid::Uuid::from_u128(0x7a3e_0000_0000_4000_9000_0000_0000_0000 | n);
    let capture_ms = CAPTURE_MS + u64::try_from(n).unwrap_or(0);
    let created_at = format_timestamp_ms(capture_ms);
    let location = uuid::Uuid::parse_str(HOSPITAL_ID).unwrap();
    let create = ActionDocument {
        id: action_id,
        action_type: ActionType::Create,
        transaction_id: format!("tampering-{n}"),
        status: ActionStatus::Accepted,
        created_by: "fake-node-system-client".to_owned(),
        created_by_user_type: UserType::System,
        created_by_role: None,
        created_at_location: Some(location),
        created_at: created_at.clone(),
        declaration: Some(Declaration::new()),
        annotation: None,
        original_action_id: None,
        content: None,
        registration_number: None,
        request_id: None,
        assigned_to: None,
        custom_action_type: None,
    };
    let payload = EntryPayload {
        event_id,
        event_type: "birth".to_owned(),
        tracking_id: tracking_id.to_owned(),
        event_created_at: created_at,
        actions: vec![create],
    };
    let mut crdt = EventCrdt::new(actor_for(key.node_id().as_bytes()));
    let change = crdt
        .record(&payload.actions, &Declaration::new(), capture_ms as i64)
        .unwrap();
    LogEntry::sign(
        key,
        seq,
        prev,
        Hlc {
            wall_ms: capture_ms,
            counter: 0,
        },
        event_id,
        serde_json::to_vec(&payload).unwrap(),
        Some(change),
    )
    .unwrap()
}

fn head_of(entry: &LogEntry) -> LogHead {
    LogHead {
        seq: entry.seq,
        hash: entry.hash(),
    }
}

/// One QUIC connection with its sync stream.
struct Session {
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl Session {
    /// Writes one frame: `u32 BE length || message`.
    async fn send(&mut self, msg: Message) -> anyhow::Result<()> {
        tokio::time::timeout(STEP_TIMEOUT, self.send.write_all(&msg.encode_frame()))
            .await
            .context("sending to central timed out")?
            .context("sending to central")
    }

    /// Reads one frame.
    async fn recv(&mut self) -> anyhow::Result<Message> {
        tokio::time::timeout(STEP_TIMEOUT, read_frame(&mut self.recv))
            .await
            .context("no message from central in time")?
    }

    /// Reads until a message other than an unsolicited `Down`.
    async fn recv_answer(&mut self) -> anyhow::Result<Message> {
        loop {
            match self.recv().await? {
                Message::Down(_) => {}
                other => return Ok(other),
            }
        }
    }

    async fn hello(
        &mut self,
        node_id: NodeId,
        head: LogHead,
        down_cursor: u64,
        pool_free: u32,
    ) -> anyhow::Result<Message> {
        self.send(Message::Hello(Hello {
            version: WIRE_VERSION,
            node_id,
            head,
            down_cursor,
            pool_free,
            backlog_entries: 0,
            backlog_bytes: 0,
            oldest_unacked_ms: 0,
            rtt_ms: 0,
        }))
        .await?;
        self.recv_answer().await
    }

    /// Sends one `Entries` batch and returns central's answer (`Ack` or `Goodbye`).
    async fn entries(&mut self, entries: Vec<LogEntry>) -> anyhow::Result<Message> {
        self.send(Message::Entries(Entries { entries })).await?;
        self.recv_answer().await
    }

    fn close(&self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"done");
    }
}

async fn read_frame(recv: &mut quinn::RecvStream) -> anyhow::Result<Message> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(read_error)?;
    let len = u32::from_be_bytes(len) as usize;
    anyhow::ensure!(
        len > 0 && len <= FRAME_BYTES_MAX,
        "central sent a frame of {len} bytes"
    );
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(read_error)?;
    Message::decode(&body).context("central sent a malformed message")
}

/// Keeps a lost connection's cause reachable by downcasting.
fn read_error(e: quinn::ReadExactError) -> anyhow::Error {
    match e {
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => {
            anyhow::Error::new(c).context("connection lost")
        }
        other => anyhow::Error::new(other).context("reading from central"),
    }
}

fn ack(msg: Message) -> Ack {
    match msg {
        Message::Ack(a) => a,
        other => panic!("expected Ack, got {other:?}"),
    }
}

fn goodbye(msg: Message) -> Goodbye {
    match msg {
        Message::Goodbye(g) => g,
        other => panic!("expected Goodbye, got {other:?}"),
    }
}

/// Asserts an `Ack` that applied nothing past `acked` and refused entry `seq` for `reason`.
fn assert_refused(ack: &Ack, acked: LogHead, seq: u64, reason: &str) {
    assert_eq!(ack.acked, acked, "the acknowledged head moved: {ack:?}");
    assert_eq!(ack.rejects.len(), 1, "{ack:?}");
    assert_eq!(ack.rejects[0].seq, seq, "{ack:?}");
    assert_eq!(ack.rejects[0].reason, reason, "{ack:?}");
}

// ---------------------------------------------------------------------------------------------
// Central's state, as its ops and read routes show it.

/// What tampering must not change: events and actions held, and every node's acknowledged head.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    events: u64,
    actions: u64,
    acked: Vec<(String, Value)>,
}

async fn held(central: &CentralProcess) -> Held {
    let status = central.sync_status().await.unwrap();
    let mut acked: Vec<(String, Value)> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["nodeId"].as_str().unwrap().to_owned(), n["acked"].clone()))
        .collect();
    acked.sort_by(|a, b| a.0.cmp(&b.0));
    Held {
        events: status["stats"]["events"].as_u64().unwrap(),
        actions: status["stats"]["actions"].as_u64().unwrap(),
        acked,
    }
}

/// The node's row in `GET /api/sync/status`.
async fn node_row(central: &CentralProcess, node: &FakeNode) -> Value {
    let status = central.sync_status().await.unwrap();
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["nodeId"] == node.hex().as_str())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "node {} missing from central's status: {status}",
                node.hex()
            )
        })
}

/// `GET /api/sync/rejects?node=<id>`, newest first.
async fn rejects(central: &CentralProcess, node: &FakeNode) -> Vec<Value> {
    let api = crvs_tests::Api::new(format!("http://{}", central.http()), None);
    let reply = api
        .get(&format!("/api/sync/rejects?node={}", node.hex()))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["rejects"].as_array().unwrap().clone()
}

/// The event as central serves it (`GET /api/events/events/{id}` as a health client), `None`
/// when central does not hold it. (Search would not do: a record with only its CREATE is a draft
/// and, as in OpenCRVS, not searchable.)
async fn event_at_central(central: &CentralProcess, entry: &LogEntry) -> Option<Value> {
    let api = central.health_api().await.unwrap();
    let reply = api.read(&entry.event_id.to_string()).await.unwrap();
    match reply.status {
        200 => Some(reply.body),
        404 => None,
        other => panic!("reading event {}: {other} {}", entry.event_id, reply.body),
    }
}

/// Asserts the newest recorded reject of `node`: `reason`, `seq`, and the refused entry's bytes.
async fn assert_recorded(
    central: &CentralProcess,
    node: &FakeNode,
    entry: &LogEntry,
    reason: &str,
) {
    let rows = rejects(central, node).await;
    let newest = rows.first().unwrap_or_else(|| panic!("no reject recorded"));
    assert_eq!(newest["reason"], reason, "{rows:?}");
    assert_eq!(newest["seq"], entry.seq, "{rows:?}");
    assert_eq!(newest["nodeId"], node.hex().as_str(), "{rows:?}");
    assert_eq!(
        newest["entrySha256"],
        entry.hash().to_string().as_str(),
        "the recorded entry is not the refused one: {rows:?}"
    );
    let row = node_row(central, node).await;
    let last_error = row["lastError"].as_str().unwrap_or_default();
    assert!(last_error.contains(reason), "{row}");
}

// ---------------------------------------------------------------------------------------------
// Cases.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_entry_is_acknowledged_and_applied() {
    let central = CentralProcess::start().unwrap();
    let mut node = FakeNode::enroll(&central, SEED_A).unwrap();
    let (mut s, welcome) = node.join(LogHead::GENESIS).await.unwrap();
    assert_eq!(welcome.acked, LogHead::GENESIS);
    let before = held(&central).await;

    let entry = node.create(1, EntryHash::GENESIS, 1, 0);
    let a = ack(s.entries(vec![entry.clone()]).await.unwrap());
    assert_eq!(a.acked, head_of(&entry), "{a:?}");
    assert!(a.rejects.is_empty(), "{a:?}");
    s.close();

    let after = held(&central).await;
    assert_eq!(after.events, before.events + 1);
    assert_eq!(after.actions, before.actions + 1);
    let event = event_at_central(&central, &entry)
        .await
        .expect("the event is at central");
    assert_eq!(event["trackingId"], node.tracking_id(0), "{event}");
    assert_eq!(event["type"], "birth", "{event}");
    assert_eq!(event["actions"][0]["type"], "CREATE", "{event}");
    let row = node_row(&central, &node).await;
    assert_eq!(row["acked"]["seq"], 1, "{row}");
    assert_eq!(row["rejects"], 0, "{row}");
    assert_eq!(row["quarantined"], false, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_signature_is_refused_and_recorded() {
    let central = CentralProcess::start().unwrap();
    let mut node = FakeNode::enroll(&central, SEED_A).unwrap();
    let (mut s, _) = node.join(LogHead::GENESIS).await.unwrap();
    let before = held(&central).await;

    // Built and signed by a key central never enrolled, then labelled as ours.
    let mut forged = create_entry(
        &key(SEED_FORGER),
        1,
        EntryHash::GENESIS,
        1,
        node.tracking_id(0),
    );
    forged.node_id = node.id();
    let a = ack(s.entries(vec![forged.clone()]).await.unwrap());
    assert_refused(&a, LogHead::GENESIS, 1, "bad-signature");

    assert_eq!(
        held(&central).await,
        before,
        "a forged entry changed central"
    );
    assert!(event_at_central(&central, &forged).await.is_none());
    assert_recorded(&central, &node, &forged, "bad-signature").await;
    let row = node_row(&central, &node).await;
    assert_eq!(row["rejects"], 1, "{row}");
    assert_eq!(row["quarantined"], false, "{row}");

    // The session and the chain are intact: the genuine entry for that seq is taken.
    let genuine = node.create(1, EntryHash::GENESIS, 1, 0);
    let a = ack(s.entries(vec![genuine.clone()]).await.unwrap());
    assert_eq!(a.acked, head_of(&genuine), "{a:?}");
    assert!(a.rejects.is_empty(), "{a:?}");
    s.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_payload_is_refused_and_recorded() {
    let central = CentralProcess::start().unwrap();
    let mut node = FakeNode::enroll(&central, SEED_A).unwrap();
    let (mut s, _) = node.join(LogHead::GENESIS).await.unwrap();
    let before = held(&central).await;

    // One byte of the signed action changed: the last character of the tracking id, so the
    // payload is still well-formed JSON naming another plausible tracking id.
    let genuine = node.create(1, EntryHash::GENESIS, 1, 0);
    let tracking = node.tracking_id(0).to_owned();
    let at = genuine
        .action
        .windows(tracking.len())
        .position(|w| w == tracking.as_bytes())
        .unwrap()
        + tracking.len()
        - 1;
    let mut altered = genuine.clone();
    altered.action[at] = if altered.action[at] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let payload: EntryPayload = serde_json::from_slice(&altered.action).unwrap();
    assert_ne!(payload.tracking_id, tracking);
    let a = ack(s.entries(vec![altered.clone()]).await.unwrap());
    assert_refused(&a, LogHead::GENESIS, 1, "bad-signature");

    assert_eq!(
        held(&central).await,
        before,
        "an altered entry changed central"
    );
    assert!(event_at_central(&central, &altered).await.is_none());
    assert_recorded(&central, &node, &altered, "bad-signature").await;
    assert_eq!(node_row(&central, &node).await["quarantined"], false);

    let a = ack(s.entries(vec![genuine.clone()]).await.unwrap());
    assert_eq!(a.acked, head_of(&genuine), "{a:?}");
    s.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_refused_without_penalty() {
    let central = CentralProcess::start().unwrap();
    let mut node = FakeNode::enroll(&central, SEED_A).unwrap();
    let (mut s, _) = node.join(LogHead::GENESIS).await.unwrap();
    let e1 = node.create(1, EntryHash::GENESIS, 1, 0);
    let e2 = node.create(2, e1.hash(), 2, 1);
    let e3 = node.create(3, e2.hash(), 3, 2);
    let a = ack(s.entries(vec![e1.clone()]).await.unwrap());
    assert_eq!(a.acked, head_of(&e1), "{a:?}");
    let before = held(&central).await;

    // Seq 3 right after the acknowledged seq 1: entry 2 "was lost".
    let a = ack(s.entries(vec![e3.clone()]).await.unwrap());
    assert_refused(&a, head_of(&e1), 3, "gap");
    assert!(a.rejects[0].detail.contains("expected seq 2"), "{a:?}");

    assert_eq!(held(&central).await, before, "a gap changed central");
    assert!(event_at_central(&central, &e3).await.is_none());
    // Visible to ops with its reason, but not evidence of tampering: no quarantine.
    let row = node_row(&central, &node).await;
    assert_eq!(row["rejects"], 1, "{row}");
    assert_eq!(row["forks"], 0, "{row}");
    assert_eq!(row["quarantined"], false, "{row}");
    let recorded = rejects(&central, &node).await;
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(recorded[0].to_string().contains("gap"), "{recorded:?}");

    // The node says where it is; central's status shows it behind, and Welcome tells it where to
    // resume. Re-sending from there is taken.
    let w = match s
        .hello(node.id(), head_of(&e3), node.down_cursor, POOL_FREE_FULL)
        .await
        .unwrap()
    {
        Message::Welcome(w) => w,
        other => panic!("expected Welcome, got {other:?}"),
    };
    assert_eq!(w.acked, head_of(&e1));
    let row = node_row(&central, &node).await;
    assert_eq!(row["reportedHeadSeq"], 3, "{row}");
    assert_eq!(row["acked"]["seq"], 1, "{row}");
    let a = ack(s.entries(vec![e2, e3.clone()]).await.unwrap());
    assert_eq!(a.acked, head_of(&e3), "{a:?}");
    assert!(a.rejects.is_empty(), "{a:?}");
    s.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_quarantines_the_node_with_both_entries_kept() {
    let central = CentralProcess::start().unwrap();
    let mut node = FakeNode::enroll(&central, SEED_A).unwrap();
    let (mut s, _) = node.join(LogHead::GENESIS).await.unwrap();
    let e1 = node.create(1, EntryHash::GENESIS, 1, 0);
    let e2 = node.create(2, e1.hash(), 2, 1);
    let a = ack(s.entries(vec![e1.clone(), e2.clone()]).await.unwrap());
    assert_eq!(a.acked, head_of(&e2), "{a:?}");
    let before = held(&central).await;

    // Properly signed by the node's own key, for the already applied seq 1, with other content
    // (a cloned node, or a node whose log was rewritten).
    let fork = node.create(1, EntryHash::GENESIS, 3, 2);
    assert_ne!(fork.hash(), e1.hash());
    let g = goodbye(s.entries(vec![fork.clone()]).await.unwrap());
    assert_eq!(g.reason, "quarantined", "{g:?}");

    assert_eq!(
        held(&central).await,
        before,
        "a fork changed central's data"
    );
    assert!(event_at_central(&central, &fork).await.is_none());
    let kept = event_at_central(&central, &e1).await.unwrap();
    assert_eq!(kept["trackingId"], node.tracking_id(0), "{kept}");
    let row = node_row(&central, &node).await;
    assert!(row["forks"].as_u64().unwrap() >= 1, "{row}");
    assert_eq!(row["quarantined"], true, "{row}");
    assert!(row["quarantinedAtMs"].is_u64(), "{row}");
    assert_recorded(&central, &node, &fork, "fork").await;

    // Both entries are kept as evidence: the applied one and the other one.
    let db = rusqlite::Connection::open_with_flags(
        central.data_dir().join("central.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let evidence: Vec<(i64, Vec<u8>, Vec<u8>)> = db
        .prepare("SELECT seq, stored_entry, other_entry FROM forks WHERE node_id = ?1")
        .unwrap()
        .query_map([node.hex()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        evidence,
        vec![(1, e1.encode(), fork.encode())],
        "fork evidence"
    );
    drop(db);

    // A later connection passes TLS (quarantine is not revocation) but the session is refused.
    s.close();
    let mut again = node.connect().await.unwrap();
    let g = goodbye(
        again
            .hello(node.id(), head_of(&e2), node.down_cursor, POOL_FREE_FULL)
            .await
            .unwrap(),
    );
    assert_eq!(g.reason, "quarantined", "{g:?}");
    let e3 = node.create(3, e2.hash(), 4, 3);
    // Whatever the node sends after that is not applied.
    let _ = again
        .send(Message::Entries(Entries {
            entries: vec![e3.clone()],
        }))
        .await;
    again.close();
    assert_eq!(held(&central).await, before);
    assert!(event_at_central(&central, &e3).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_nodes_entries_replayed_are_refused() {
    let central = CentralProcess::start().unwrap();
    let mut a_node = FakeNode::enroll(&central, SEED_A).unwrap();
    let mut b_node = FakeNode::enroll(&central, SEED_B).unwrap();
    let (mut a, _) = a_node.join(LogHead::GENESIS).await.unwrap();
    // A is idle (its whole feed acknowledged), so central streams new feed items to it.
    a.send(Message::DownAck(DownAck {
        cursor: a_node.down_cursor,
    }))
    .await
    .unwrap();

    // B syncs a genuine entry; central relays it to A (same district).
    let (mut b, _) = b_node.join(LogHead::GENESIS).await.unwrap();
    let b1 = b_node.create(1, EntryHash::GENESIS, 11, 0);
    let ack_b = ack(b.entries(vec![b1.clone()]).await.unwrap());
    assert_eq!(ack_b.acked, head_of(&b1), "{ack_b:?}");
    b.close();
    let relayed = tokio::time::timeout(FEED_TIMEOUT, async {
        loop {
            let down = match a.recv().await.unwrap() {
                Message::Down(d) => d,
                other => panic!("expected Down, got {other:?}"),
            };
            a_node.down_cursor = down.to_cursor;
            let mut relay = None;
            for item in &down.items {
                if let CentralRecord::Relay { origin, entry } = a_node.take_feed_item(item).unwrap()
                    && origin == b_node.hex()
                {
                    relay = Some(entry);
                }
            }
            a.send(Message::DownAck(DownAck {
                cursor: down.to_cursor,
            }))
            .await
            .unwrap();
            if let Some(hex) = relay {
                break LogEntry::decode(&hex::decode(hex).unwrap()).unwrap();
            }
        }
    })
    .await
    .expect("central relayed B's entry to A in time");
    assert_eq!(relayed, b1, "central relays the entry verbatim");
    let before = held(&central).await;

    // A sends B's genuine, validly signed entry as if it were its own.
    let answer = ack(a.entries(vec![relayed.clone()]).await.unwrap());
    assert_refused(&answer, LogHead::GENESIS, 1, "wrong-node");
    a.close();

    assert_eq!(held(&central).await, before, "a replay changed central");
    assert!(event_at_central(&central, &b1).await.is_some());
    assert_recorded(&central, &a_node, &relayed, "wrong-node").await;
    let row_a = node_row(&central, &a_node).await;
    assert_eq!(row_a["rejects"], 1, "{row_a}");
    assert_eq!(row_a["acked"]["seq"], 0, "{row_a}");
    let row_b = node_row(&central, &b_node).await;
    assert_eq!(row_b["rejects"], 0, "{row_b}");
    assert_eq!(row_b["acked"]["seq"], 1, "{row_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_sent_away_and_refused_at_the_handshake() {
    let central = CentralProcess::start().unwrap();
    let mut node = FakeNode::enroll(&central, SEED_A).unwrap();
    let (mut s, _) = node.join(LogHead::GENESIS).await.unwrap();
    let e1 = node.create(1, EntryHash::GENESIS, 1, 0);
    let e2 = node.create(2, e1.hash(), 2, 1);
    let a = ack(s.entries(vec![e1.clone()]).await.unwrap());
    assert_eq!(a.acked, head_of(&e1), "{a:?}");

    let revoked = central.cli(&["node", "revoke", &node.hex()]).unwrap();
    assert_eq!(revoked["revoked"], true, "{revoked}");
    let before = held(&central).await;

    // Still connected: the next entry is not applied and the session ends. Central may already
    // have sent the goodbye (it watches its log for the revocation record), so a failed write
    // is fine; the goodbye is read all the same.
    let _ = s
        .send(Message::Entries(Entries {
            entries: vec![e2.clone()],
        }))
        .await;
    let g = goodbye(s.recv_answer().await.unwrap());
    assert_eq!(g.reason, "revoked", "{g:?}");
    s.close();

    assert_eq!(
        held(&central).await,
        before,
        "a revoked node's entry changed central"
    );
    assert!(event_at_central(&central, &e2).await.is_none());
    let row = node_row(&central, &node).await;
    assert_eq!(row["revoked"], true, "{row}");
    assert_eq!(row["acked"]["seq"], 1, "{row}");

    // A new connection fails the TLS handshake: central's client-certificate verifier refuses
    // the revoked certificate (alert certificate_revoked). With TLS 1.3 the client finishes its
    // side first, so the refusal may surface only when the stream is opened or first read.
    let refusal = match node.connect().await {
        Err(e) => e,
        Ok(mut s) => {
            let sent = s
                .hello(node.id(), head_of(&e1), node.down_cursor, POOL_FREE_FULL)
                .await;
            match sent {
                Err(e) => e,
                Ok(msg) => panic!("a revoked node got an answer: {msg:?}"),
            }
        }
    };
    let conn_error = refusal
        .chain()
        .find_map(|c| c.downcast_ref::<quinn::ConnectionError>())
        .unwrap_or_else(|| panic!("not a connection error: {refusal:#}"));
    let code = match conn_error {
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
        quinn::ConnectionError::TransportError(e) => e.code,
        other => panic!("unexpected connection error: {other}"),
    };
    assert_eq!(
        code,
        quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_REVOKED),
        "{conn_error}"
    );
    assert_eq!(held(&central).await, before);
}
