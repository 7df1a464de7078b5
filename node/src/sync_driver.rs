//! The node's sync driver: owns the QUIC connection to central and feeds the sans-IO
//! [`NodeSession`] the way `quinn::ConnectionDriver` feeds `quinn_proto::Connection`.
//!
//! One tokio task. Per connection: resolve and dial `centralQuicAddr` (TLS as in [`tls`]), open
//! the one bidirectional stream, `connect` the session, then loop over four inputs: frames from
//! central (read by a helper task, length checked against [`wire::FRAME_BYTES_MAX`] before the
//! body is read), the store's "log appended" notification, the session's timer, and shutdown.
//! After every session call the driver drains `poll_transmit` and writes the frames. Session
//! calls reach SQLite, so they run on `spawn_blocking` threads ([`SyncStore`] blocks until its
//! writes are durable).
//!
//! On any error the driver records it (for `/api/sync/status`), drops the connection and retries
//! with exponential backoff and jitter; after central refused the node (`Goodbye` revoked,
//! quarantined, unknown node, version) or refused one of its entries, it waits much longer,
//! since only an operator can fix that.

pub mod tls;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crvs_sync::engine::{NodeSession, SessionStatus, SyncConfig, SyncError};
use crvs_sync::wire::{self, Goodbye, Message, Packing};
use tokio::sync::{mpsc, watch};

use crate::enroll::Enrollment;
use crate::store::{Store, SyncStore};

/// Decoded frames waiting for the driver (each up to [`wire::FRAME_BYTES_MAX`]): small, so a
/// fast central cannot make a 1 GB board buffer much.
pub const FRAMES_QUEUED_MAX: usize = 4;

/// How long the driver waits for central's address to resolve and the handshake to finish.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a closing connection may take to tell central (shutdown), before the socket goes.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Longest time one frame may take to be accepted by the stream. A batch is at most
/// `SyncConfig::batch_bytes_max` before compression (128 KiB on slow links): seconds at 200 kbit/s. A
/// central that stops reading must not park the driver where no timer runs.
pub const FRAME_WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// QUIC application close codes.
mod close_code {
    /// Orderly end (shutdown).
    pub(super) const DONE: u32 = 0;
    /// The session failed (protocol violation, storage failure).
    pub(super) const ERROR: u32 = 1;
}

/// Timers and protocol settings of the driver. Named presets, no hidden defaults.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Protocol settings of the session.
    pub sync: SyncConfig,
    /// First retry delay after a failure, ms.
    pub backoff_ms_min: u64,
    /// Largest retry delay after repeated failures, ms.
    pub backoff_ms_max: u64,
    /// Delay after central refused this node or one of its entries, ms: only an operator can
    /// fix that, and retrying fast only fills logs.
    pub refused_backoff_ms: u64,
    /// Seed of the jitter (deterministic per node; different nodes spread their retries).
    pub jitter_seed: u64,
}

impl DriverOptions {
    /// Production values: 1 s doubling to 60 s, 10 minutes after a refusal.
    pub fn for_links(jitter_seed: u64) -> Self {
        Self {
            sync: SyncConfig::for_links(),
            backoff_ms_min: 1_000,
            backoff_ms_max: 60_000,
            refused_backoff_ms: 10 * 60_000,
            jitter_seed,
        }
    }

    /// Short timers and small batches for tests.
    pub fn for_tests() -> Self {
        Self {
            sync: SyncConfig::for_tests(),
            backoff_ms_min: 20,
            backoff_ms_max: 200,
            refused_backoff_ms: 500,
            jitter_seed: 7,
        }
    }
}

/// The link as the driver sees it (the persisted side is in [`crate::store::SyncState`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// A session with central is open and central welcomed this node (mutual TLS done, `Hello`
    /// answered): the link works end to end.
    pub connected: bool,
    /// Central refused this node or one of its entries; the driver waits for an operator.
    pub refused: bool,
    /// QUIC's smoothed path RTT while connected, ms.
    pub rtt_ms: Option<u64>,
    /// The session's smoothed request/answer time (Hello→Welcome, Entries→Ack, including
    /// central's durable apply), ms.
    pub round_trip_ms: Option<u32>,
    /// Connections opened since start.
    pub connects_total: u64,
    /// Sessions that ended in an error since start.
    pub failures_total: u64,
    /// Frames written to and read from central's stream since start (for the sync benchmark
    /// and ops): counts and bytes, length prefixes included.
    pub wire: WireCounters,
}

/// Application-level traffic of the sync stream since start (QUIC stream payload: the frames,
/// not UDP, QUIC headers or retransmissions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireCounters {
    /// Frames sent to central.
    pub frames_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Frames received from central.
    pub frames_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// Log entries sent again after a connection ended before central acknowledged them.
    pub entries_resent: u64,
    /// Bytes of those re-sent entries on the stream: each `Entries` frame's size is attributed
    /// to its entries in proportion to their number.
    pub entries_resent_bytes: u64,
}

/// Handle on a running driver, for ops.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    enrollment: Arc<Enrollment>,
    link: Arc<Mutex<LinkStatus>>,
}

impl SyncHandle {
    /// The link's current state.
    pub fn link(&self) -> LinkStatus {
        self.link.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The enrollment the driver dials with.
    pub fn enrollment(&self) -> &Enrollment {
        &self.enrollment
    }
}

/// Starts the driver task. It runs until `shutdown` turns true (or its sender is dropped).
pub fn start(
    store: Store,
    enrollment: Arc<Enrollment>,
    client_config: quinn::ClientConfig,
    options: DriverOptions,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SyncHandle, tokio::task::JoinHandle<()>)> {
    let session = NodeSession::new(
        options.sync.clone(),
        store.node_id(),
        enrollment.central_id(),
    );
    let sync_store = store.sync_store(enrollment.central_id())?;
    let link = Arc::new(Mutex::new(LinkStatus::default()));
    let handle = SyncHandle {
        enrollment: Arc::clone(&enrollment),
        link: Arc::clone(&link),
    };
    let driver = Driver {
        engine: Arc::new(Mutex::new(Engine {
            session,
            store: sync_store,
        })),
        backoff: Backoff::new(options.jitter_seed),
        store,
        enrollment,
        client_config,
        options,
        link,
        shutdown,
        clock: Clock::new(),
        max_seq_sent: 0,
    };
    Ok((handle, tokio::spawn(driver.run())))
}

/// The session and its store, used together on blocking threads.
struct Engine {
    session: NodeSession,
    store: SyncStore,
}

struct Driver {
    engine: Arc<Mutex<Engine>>,
    store: Store,
    enrollment: Arc<Enrollment>,
    client_config: quinn::ClientConfig,
    options: DriverOptions,
    link: Arc<Mutex<LinkStatus>>,
    shutdown: watch::Receiver<bool>,
    backoff: Backoff,
    clock: Clock,
    /// Highest log entry sent on any connection since start (re-sent entries are counted).
    max_seq_sent: u64,
}

/// How a connection ended.
#[derive(Debug)]
enum SessionEnd {
    /// The node is shutting down.
    Shutdown,
    /// Central refused the node (`Goodbye` with a reason only an operator can change) or one of
    /// its entries (the session stalled).
    Refused(String),
    /// Anything else: retry with backoff. `welcomed` says whether central answered `Hello`
    /// (the link works; start the backoff over).
    Failed { error: String, welcomed: bool },
}

/// What woke the session loop.
enum Wake {
    Shutdown,
    Frame(Result<(Message, usize), String>),
    Appended,
    Timer,
    Closed(quinn::ConnectionError),
}

/// What a session call left behind.
struct Stepped<T> {
    result: Result<T, SyncError>,
    transmit: Vec<Message>,
    timeout_ms: Option<u64>,
    status: SessionStatus,
}

impl Driver {
    async fn run(mut self) {
        tracing::info!(
            central = %self.enrollment.central_quic_addr(),
            server_name = %self.enrollment.server_name(),
            "sync driver started"
        );
        loop {
            if self.stopping() {
                break;
            }
            let end = self.session().await;
            self.set_link(|l| {
                l.connected = false;
                l.rtt_ms = None;
            });
            let delay_ms = match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Refused(reason) => {
                    tracing::warn!(%reason, "central refused this node; waiting for an operator");
                    self.record_error(reason).await;
                    self.set_link(|l| {
                        l.refused = true;
                        l.failures_total += 1;
                    });
                    self.backoff.reset();
                    self.options.refused_backoff_ms
                }
                SessionEnd::Failed { error, welcomed } => {
                    tracing::info!(%error, "sync session ended");
                    self.record_error(error).await;
                    self.set_link(|l| l.failures_total += 1);
                    if welcomed {
                        self.backoff.reset();
                    }
                    self.backoff
                        .next_ms(self.options.backoff_ms_min, self.options.backoff_ms_max)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                _ = self.shutdown.changed() => {}
            }
        }
        tracing::info!("sync driver stopped");
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn set_link(&self, f: impl FnOnce(&mut LinkStatus)) {
        if let Ok(mut link) = self.link.lock() {
            f(&mut link);
        }
    }

    async fn record_error(&self, error: String) {
        let engine = Arc::clone(&self.engine);
        let now_ms = crate::store::wall_ms();
        let result = tokio::task::spawn_blocking(move || match engine.lock() {
            Ok(engine) => engine
                .store
                .record_error(error, now_ms)
                .map_err(|e| e.to_string()),
            Err(_) => Err("sync engine lock poisoned".to_owned()),
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "recording a sync error"),
            Err(e) => tracing::error!(error = %e, "recording a sync error"),
        }
    }

    /// Runs `f` on the session with its store on a blocking thread, then drains what the session
    /// wants sent and its next timer.
    async fn step<T, F>(&self, f: F) -> Result<Stepped<T>, String>
    where
        T: Send + 'static,
        F: FnOnce(&mut Engine, u64) -> Result<T, SyncError> + Send + 'static,
    {
        let engine = Arc::clone(&self.engine);
        let now_ms = self.clock.now_ms();
        tokio::task::spawn_blocking(move || {
            let mut engine = engine
                .lock()
                .map_err(|_| "sync engine lock poisoned".to_owned())?;
            let result = f(&mut engine, now_ms);
            let transmit = std::iter::from_fn(|| engine.session.poll_transmit()).collect();
            Ok(Stepped {
                result,
                transmit,
                timeout_ms: engine.session.poll_timeout(),
                status: engine.session.status().clone(),
            })
        })
        .await
        .map_err(|e| format!("sync step failed: {e}"))?
    }

    /// One connection, from dialling to its end.
    async fn session(&mut self) -> SessionEnd {
        self.clock = Clock::new();
        let connected = tokio::select! {
            result = dial(&self.enrollment, self.client_config.clone()) => result,
            _ = self.shutdown.changed() => return SessionEnd::Shutdown,
        };
        let (endpoint, conn) = match connected {
            Ok(pair) => pair,
            Err(DialError::Refused(error)) => return SessionEnd::Refused(error),
            Err(DialError::Failed(error)) => {
                return SessionEnd::Failed {
                    error,
                    welcomed: false,
                };
            }
        };
        self.set_link(|l| l.connects_total += 1);
        let started_ms = self.clock.now_ms();
        let end = self.converse(&conn, started_ms).await;
        let (code, reason): (u32, &[u8]) = match &end {
            SessionEnd::Shutdown => (close_code::DONE, b"shutdown"),
            _ => (close_code::ERROR, b"session ended"),
        };
        conn.close(code.into(), reason);
        let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
        if let Ok(mut engine) = self.engine.lock() {
            engine.session.disconnect();
        }
        end
    }

    /// The session loop on an open connection.
    async fn converse(&mut self, conn: &quinn::Connection, started_ms: u64) -> SessionEnd {
        let welcomed =
            |status: &SessionStatus| status.last_success_ms.is_some_and(|t| t >= started_ms);
        let failed = |error: String, status: &SessionStatus| {
            // With TLS 1.3 the client finishes its handshake before central has checked its
            // certificate: a refusal arrives as the connection's close.
            match conn.close_reason() {
                Some(e) if refused_certificate(&e) => {
                    SessionEnd::Refused(format!("central refused this node's certificate: {e}"))
                }
                _ => SessionEnd::Failed {
                    error,
                    welcomed: welcomed(status),
                },
            }
        };
        let (mut send, recv) = match conn.open_bi().await {
            Ok(pair) => pair,
            Err(e) => return failed(format!("opening the sync stream: {e}"), &Default::default()),
        };
        let (frames_tx, mut frames) = mpsc::channel(FRAMES_QUEUED_MAX);
        let _reader = AbortOnDrop(tokio::spawn(read_frames(recv, frames_tx)));
        let mut wake = None;
        loop {
            let link_rtt_ms = u32::try_from(conn.rtt().as_millis()).unwrap_or(u32::MAX);
            let stepped = match self.dispatch(wake.take(), link_rtt_ms).await {
                Ok(stepped) => stepped,
                Err(error) => return failed(error, &Default::default()),
            };
            // A fast link is CPU-bound, not byte-bound: entry batches are packed fast there.
            let packing = if self.options.sync.is_fast_link(link_rtt_ms) {
                Packing::Fast
            } else {
                Packing::Small
            };
            for msg in &stepped.transmit {
                let frame = msg.encode_frame_packed(packing);
                self.count_sent(msg, frame.len());
                if let Err(e) = write_bytes(&mut send, &frame, FRAME_WRITE_TIMEOUT).await {
                    return failed(e, &stepped.status);
                }
            }
            self.set_link(|l| {
                l.connected = welcomed(&stepped.status);
                l.rtt_ms = Some(conn.rtt().as_millis() as u64);
                l.round_trip_ms = stepped.status.rtt_ms.or(l.round_trip_ms);
            });
            match stepped.result {
                Ok(()) => {}
                Err(SyncError::Closed { reason, detail }) => {
                    let text = format!("central closed the session: {reason} ({detail})");
                    return if refused_by_operator(&reason) {
                        SessionEnd::Refused(text)
                    } else {
                        failed(text, &stepped.status)
                    };
                }
                Err(e @ SyncError::Protocol(_)) => {
                    let goodbye = Message::Goodbye(Goodbye {
                        reason: "protocol".into(),
                        detail: e.to_string(),
                    });
                    let _ = write_frame(&mut send, &goodbye, CLOSE_GRACE).await;
                    return failed(e.to_string(), &stepped.status);
                }
                Err(e) => return failed(e.to_string(), &stepped.status),
            }
            if stepped.timeout_ms.is_none() {
                // Only a stalled session has no timer: central refused an entry.
                let error = stepped
                    .status
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "central refused an entry; sync is stalled".to_owned());
                return SessionEnd::Refused(error);
            }
            self.set_link(|l| l.refused = false);
            let sleep_ms = stepped
                .timeout_ms
                .map(|t| t.saturating_sub(self.clock.now_ms()));
            // Biased: a frame already read (a `Goodbye` saying why) wins over the connection's
            // close that follows it.
            let next = tokio::select! {
                biased;
                _ = self.shutdown.changed() => Wake::Shutdown,
                frame = frames.recv() => Wake::Frame(frame.unwrap_or_else(|| Err("reading from central ended".into()))),
                () = self.store.appended().notified() => Wake::Appended,
                () = sleep_opt(sleep_ms) => Wake::Timer,
                e = conn.closed() => Wake::Closed(e),
            };
            match next {
                Wake::Shutdown => {
                    let goodbye = Message::Goodbye(Goodbye {
                        reason: "shutdown".into(),
                        detail: "the node is stopping".into(),
                    });
                    let _ = write_frame(&mut send, &goodbye, CLOSE_GRACE).await;
                    let _ = send.finish();
                    return SessionEnd::Shutdown;
                }
                Wake::Frame(Err(e)) => return failed(e, &stepped.status),
                Wake::Frame(Ok((_, len))) => {
                    self.set_link(|l| {
                        l.wire.frames_received += 1;
                        l.wire.bytes_received += len as u64;
                    });
                    wake = Some(next);
                }
                Wake::Closed(e) => {
                    return failed(format!("connection closed: {e}"), &stepped.status);
                }
                other => wake = Some(other),
            }
        }
    }

    /// Counts one frame about to be written; entries already sent once are counted as re-sent.
    fn count_sent(&mut self, msg: &Message, frame_len: usize) {
        let mut resent = 0u64;
        let mut resent_bytes = 0u64;
        if let Message::Entries(batch) = msg {
            let count = batch.entries.len() as u64;
            resent = batch
                .entries
                .iter()
                .filter(|e| e.seq <= self.max_seq_sent)
                .count() as u64;
            resent_bytes = (frame_len as u64 * resent).checked_div(count).unwrap_or(0);
            if let Some(last) = batch.entries.last() {
                self.max_seq_sent = self.max_seq_sent.max(last.seq);
            }
        }
        self.set_link(|l| {
            l.wire.frames_sent += 1;
            l.wire.bytes_sent += frame_len as u64;
            l.wire.entries_resent += resent;
            l.wire.entries_resent_bytes += resent_bytes;
        });
    }

    /// Feeds one input to the session (`None`: the connection just opened).
    /// Hands one wake-up to the session, with QUIC's current RTT estimate (`link_rtt_ms`), which
    /// sizes the session's batches.
    async fn dispatch(&self, wake: Option<Wake>, link_rtt_ms: u32) -> Result<Stepped<()>, String> {
        match wake {
            None => {
                self.step(move |e, now| {
                    e.session.observe_link_rtt(link_rtt_ms);
                    e.session.connect(now, &e.store)
                })
                .await
            }
            Some(Wake::Frame(Ok((msg, _)))) => {
                self.step(move |e, now| {
                    e.session.observe_link_rtt(link_rtt_ms);
                    e.session.handle_message(now, msg, &mut e.store)
                })
                .await
            }
            Some(Wake::Appended) => {
                self.step(move |e, now| {
                    e.session.observe_link_rtt(link_rtt_ms);
                    e.session.notify_appended(now, &e.store)
                })
                .await
            }
            Some(Wake::Timer) => {
                self.step(move |e, now| {
                    e.session.observe_link_rtt(link_rtt_ms);
                    e.session.handle_timeout(now, &e.store)
                })
                .await
            }
            Some(Wake::Shutdown | Wake::Frame(Err(_)) | Wake::Closed(_)) => {
                Err("unexpected wake-up".into())
            }
        }
    }
}

/// Why dialling failed.
enum DialError {
    /// Central refused this node's certificate (revoked, expired, unknown CA): only an operator
    /// can fix that.
    Refused(String),
    /// Anything else (no route, timeout, central down, central's certificate not trusted).
    Failed(String),
}

/// TLS alerts central sends about this node's certificate (RFC 8446 §6.2): bad_certificate,
/// unsupported_certificate, certificate_revoked, certificate_expired, certificate_unknown,
/// unknown_ca.
const CERTIFICATE_REFUSED_ALERTS: [u8; 6] = [42, 43, 44, 45, 46, 48];

fn refused_certificate(e: &quinn::ConnectionError) -> bool {
    match e {
        quinn::ConnectionError::ConnectionClosed(close) => CERTIFICATE_REFUSED_ALERTS
            .iter()
            .any(|alert| close.error_code == quinn::TransportErrorCode::crypto(*alert)),
        _ => false,
    }
}

/// Resolves central's address and completes the QUIC handshake (bounded by [`CONNECT_TIMEOUT`]).
async fn dial(
    enrollment: &Enrollment,
    client_config: quinn::ClientConfig,
) -> Result<(quinn::Endpoint, quinn::Connection), DialError> {
    let target = enrollment.central_quic_addr().to_owned();
    let attempt = async {
        let addr = tokio::net::lookup_host(&target)
            .await
            .map_err(|e| DialError::Failed(format!("resolving {target}: {e}")))?
            .next()
            .ok_or_else(|| DialError::Failed(format!("{target} resolves to no address")))?;
        let bind: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| DialError::Failed(format!("opening a UDP socket: {e}")))?;
        let connecting = endpoint
            .connect_with(client_config, addr, enrollment.server_name())
            .map_err(|e| DialError::Failed(format!("connecting to central at {addr}: {e}")))?;
        let conn = connecting.await.map_err(|e| {
            let text = format!("connecting to central at {addr}: {e}");
            if refused_certificate(&e) {
                DialError::Refused(format!("{text} (central refused this node's certificate)"))
            } else {
                DialError::Failed(text)
            }
        })?;
        Ok((endpoint, conn))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| DialError::Failed(format!("connecting to central at {target}: timed out")))?
}

/// Goodbye reasons that only an operator can change: retrying soon cannot help.
fn refused_by_operator(reason: &str) -> bool {
    matches!(
        reason,
        "revoked" | "quarantined" | "unknown-node" | "version" | "identity-mismatch"
    )
}

async fn sleep_opt(ms: Option<u64>) {
    match ms {
        Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        None => std::future::pending().await,
    }
}

/// Writes one frame, bounded by `timeout`.
async fn write_frame(
    send: &mut quinn::SendStream,
    msg: &Message,
    timeout: Duration,
) -> Result<(), String> {
    write_bytes(send, &msg.encode_frame(), timeout).await
}

/// Writes an encoded frame, bounded by `timeout`.
async fn write_bytes(
    send: &mut quinn::SendStream,
    frame: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, send.write_all(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("sending to central: {e}")),
        Err(_) => Err(format!(
            "sending to central: no progress for {} s",
            timeout.as_secs()
        )),
    }
}

/// Reads frames until the stream ends or breaks, and forwards them decoded with their size on
/// the stream. The length is checked against [`wire::FRAME_BYTES_MAX`] before the body is read
/// (or allocated).
async fn read_frames(
    mut recv: quinn::RecvStream,
    frames: mpsc::Sender<Result<(Message, usize), String>>,
) {
    loop {
        let result = read_frame(&mut recv).await;
        let stop = result.is_err();
        if frames.send(result).await.is_err() || stop {
            return;
        }
    }
}

async fn read_frame(recv: &mut quinn::RecvStream) -> Result<(Message, usize), String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| format!("reading from central: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > wire::FRAME_BYTES_MAX {
        return Err(format!(
            "central sent a frame of {len} bytes (bound {})",
            wire::FRAME_BYTES_MAX
        ));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| format!("reading from central: {e}"))?;
    Message::decode(&body)
        .map(|msg| (msg, len + 4))
        .map_err(|e| format!("central sent a malformed message: {e}"))
}

/// Aborts the task when dropped, so a reader never outlives its connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The session's clock: wall-clock milliseconds at the start of a connection, advanced by a
/// monotonic clock, so a wall-clock jump during a session cannot stall or fire its timers.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall_ms_at_start: u64,
    start: Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            wall_ms_at_start: crate::store::wall_ms(),
            start: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.wall_ms_at_start
            .saturating_add(self.start.elapsed().as_millis() as u64)
    }
}

/// Exponential backoff with deterministic "equal jitter": the n-th delay is uniform in
/// `[d/2, d]` with `d = min(min_ms · 2ⁿ, max_ms)`.
#[derive(Debug, Clone)]
struct Backoff {
    attempt: u32,
    rng: u64,
}

/// Doublings before the cap applies regardless of the bounds (2^16 × 1 s is far past 60 s).
const BACKOFF_DOUBLINGS_MAX: u32 = 16;

impl Backoff {
    fn new(seed: u64) -> Self {
        Self {
            attempt: 0,
            rng: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_ms(&mut self, min_ms: u64, max_ms: u64) -> u64 {
        let doublings = self.attempt.min(BACKOFF_DOUBLINGS_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = min_ms.saturating_mul(1 << doublings).min(max_ms).max(1);
        let half = ceiling / 2;
        half + self.next_random() % (ceiling - half + 1)
    }

    /// xorshift64*: enough to spread retries; not for anything secret.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
pub(crate) mod test_central;
#[cfg(test)]
mod tests;
