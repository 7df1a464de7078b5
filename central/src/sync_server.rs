//! The sync server: a quinn endpoint that authenticates nodes by client certificate and drives
//! one [`CentralSession`] per connection.
//!
//! Per connection: the TLS handshake already checked the certificate against the CA and the
//! enrollment table ([`crate::pki::EnrolledNodeVerifier`]); the certificate's fingerprint maps to
//! the node id recorded at enrollment. The node opens one bidirectional stream; a reader task
//! turns it into frames (length checked against [`FRAME_BYTES_MAX`] before the body is read) and
//! the connection task feeds them to the session, running the store calls on a blocking thread,
//! and queues whatever `poll_transmit` yields for a writer task, which sends each step's
//! messages once every commit before them is durable (a node's entries are applied with a
//! deferred fsync: [`Store::write_deferred`]), while the session goes on with the next batch.
//! When central's log grows (polled every [`FEED_POLL_INTERVAL`], since operator commands
//! append from another process) the session is told, so downstream entries flow without
//! waiting for the node, and a node revoked while connected is sent away.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use crvs_common::log::{CheckedEntry, LogEntry, NodeId};
use crvs_sync::engine::{CentralSession, CentralStore as _, SyncConfig, SyncError};
use crvs_sync::wire::{FRAME_BYTES_MAX, Goodbye, Message, WireError};
use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::config::Config;
use crate::store::Store;

/// Most concurrent node connections; further handshakes are refused. Each connection holds a
/// session, a reader task and up to [`FRAMES_QUEUED_MAX`] decoded frames.
pub const CONNECTIONS_MAX: usize = 4096;

/// Decoded frames waiting for the session, per connection. QUIC flow control pushes back on the
/// node beyond it.
pub const FRAMES_QUEUED_MAX: usize = 4;

/// Most entries applied in one transaction: a checked batch takes along the batches already
/// checked and waiting behind it (group commit: one fsync and one ack for all), up to this many.
pub const APPLY_GROUP_ENTRIES_MAX: usize = 2048;

/// Steps whose messages wait to be written, per connection (each waits until the commits
/// before it are durable); the session stops taking frames beyond it.
pub const STEPS_UNSENT_MAX: usize = 8;

/// How often central's log head is polled for growth.
pub const FEED_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Threads that check one `Entries` batch's signatures (on the blocking pool, while the session
/// applies the previous batch).
pub const VERIFY_PARALLELISM: usize = 2;

/// How long a closing connection waits for the node to receive the last frames (a `Goodbye`).
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a node may take to open its sync stream after the handshake; keep-alives alone must
/// not hold a connection slot.
pub const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for connection tasks to finish.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Transport settings for clinic links (~1 s RTT, 10 s blackouts), spelled out.
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .initial_rtt(Duration::from_secs(1))
        .keep_alive_interval(Some(Duration::from_secs(5)))
        // Longer than a 10 s blackout, so a short cut does not end the session.
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(30))
                .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))),
        ))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(1))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    transport
}

/// Builds the QUIC endpoint on an already-bound UDP socket.
pub fn endpoint(
    config: &Config,
    store: Store,
    socket: UdpSocket,
) -> anyhow::Result<quinn::Endpoint> {
    let tls = crate::pki::server_tls_config(&config.file.data_dir, store)?;
    let quic = QuicServerConfig::try_from(tls).context("QUIC TLS configuration")?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(Arc::new(transport_config()));
    // Nodes behind NAT change address; quinn validates the new path.
    server.migration(true);
    let runtime = quinn::default_runtime().context("no async runtime for quinn")?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        runtime,
    )
    .context("starting QUIC endpoint")
}

/// Accepts node connections until `stop` turns true, then closes them (bounded by
/// [`SHUTDOWN_TIMEOUT`]).
pub async fn serve(
    endpoint: quinn::Endpoint,
    store: Store,
    sync_config: SyncConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let head = store.read_async(|r| r.central_head()).await?.seq;
    let (feed_tx, feed_rx) = watch::channel(head);
    let mut tasks = JoinSet::new();
    tasks.spawn(poll_feed(store.clone(), feed_tx, stop.clone()));
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    tracing::info!(addr = %endpoint.local_addr()?, "sync server listening");
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::warn!(peer = %incoming.remote_address(), "connection refused: too many connections");
                    incoming.refuse();
                    continue;
                };
                let peer = incoming.remote_address();
                let store = store.clone();
                let feed = feed_rx.clone();
                let stop = stop.clone();
                let config = sync_config.clone();
                tasks.spawn(async move {
                    if let Err(e) = serve_connection(incoming, store, config, feed, stop).await {
                        tracing::info!(%peer, error = format!("{e:#}"), "sync connection ended");
                    }
                    drop(permit);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = stopped(&mut stop) => break,
        }
    }
    let drained = tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    tracing::debug!("sync connections closed");
    endpoint.close(quinn::VarInt::from_u32(0), b"shutdown");
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, endpoint.wait_idle()).await;
    Ok(())
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Publishes central's log head whenever it moved (another process may have appended).
async fn poll_feed(store: Store, feed: watch::Sender<u64>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(FEED_POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stopped(&mut stop) => return,
        }
        match store.read_async(|r| r.central_head()).await {
            Ok(head) => {
                feed.send_if_modified(|seq| std::mem::replace(seq, head.seq) != head.seq);
            }
            Err(e) => tracing::error!(error = %e, "sync: reading central log head"),
        }
    }
}

/// The node behind a connection: its client certificate's fingerprint, as enrolled.
async fn authenticated_node(conn: &quinn::Connection, store: &Store) -> anyhow::Result<NodeId> {
    let certs = conn
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .context("no client certificate")?;
    let leaf = certs.first().context("empty client certificate chain")?;
    let fingerprint = crate::pki::fingerprint(leaf);
    let node = store
        .read_async(move |r| r.node_by_fingerprint(&fingerprint))
        .await?
        .context("certificate is not enrolled")?;
    anyhow::ensure!(
        !node.is_revoked(),
        "node {} is revoked",
        node.node_id.fmt_short()
    );
    Ok(node.node_id)
}

/// Why the frame reader stopped.
#[derive(Debug, thiserror::Error)]
enum FrameError {
    #[error("reading stream: {0}")]
    Read(String),
    #[error("frame of {0} bytes exceeds the bound {FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("bad message: {0}")]
    Wire(#[from] WireError),
}

/// A decoded frame for the session. `Entries` arrive with their signatures already checked.
enum Inbound {
    Entries(Vec<CheckedEntry>),
    Other(Message),
}

/// Checks a batch's signatures on up to [`VERIFY_PARALLELISM`] blocking threads, keeping order,
/// and prepares the signed entries for their apply on the same threads
/// ([`Store::prepare_entries`]).
async fn check_entries(
    store: &Store,
    entries: Vec<LogEntry>,
) -> Result<Vec<CheckedEntry>, FrameError> {
    let chunk = entries.len().div_ceil(VERIFY_PARALLELISM).max(1);
    let mut rest = entries;
    let mut tasks = Vec::with_capacity(VERIFY_PARALLELISM);
    while !rest.is_empty() {
        let tail = rest.split_off(chunk.min(rest.len()));
        let head = std::mem::replace(&mut rest, tail);
        let store = store.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let checked = CheckedEntry::check_all(head);
            store.prepare_entries(&checked);
            checked
        }));
    }
    let mut checked = Vec::new();
    for task in tasks {
        checked.extend(
            task.await
                .map_err(|e| FrameError::Read(format!("signature check task failed: {e}")))?,
        );
    }
    Ok(checked)
}

/// Reads frames until the stream ends (clean end: the channel closes) or fails (one error).
/// Signatures of an `Entries` batch are checked (and its entries prepared) here, so that work
/// overlaps the session applying the batch before.
async fn read_frames(
    store: Store,
    mut recv: quinn::RecvStream,
    tx: mpsc::Sender<Result<Inbound, FrameError>>,
) {
    loop {
        let mut len = [0u8; 4];
        match recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return,
            Err(e) => {
                let _ = tx.send(Err(FrameError::Read(e.to_string()))).await;
                return;
            }
        }
        let frame_len = u32::from_be_bytes(len) as usize;
        // Checked before anything is allocated for the body.
        if frame_len > FRAME_BYTES_MAX {
            let _ = tx.send(Err(FrameError::TooLarge(frame_len))).await;
            return;
        }
        let mut body = vec![0u8; frame_len];
        if let Err(e) = recv.read_exact(&mut body).await {
            let _ = tx.send(Err(FrameError::Read(e.to_string()))).await;
            return;
        }
        let msg = match Message::decode(&body) {
            Ok(Message::Entries(batch)) => check_entries(&store, batch.entries)
                .await
                .map(Inbound::Entries),
            Ok(other) => Ok(Inbound::Other(other)),
            Err(e) => Err(FrameError::from(e)),
        };
        let failed = msg.is_err();
        if tx.send(msg).await.is_err() || failed {
            return;
        }
    }
}

/// The frame held back while grouping batches, else the next one from the reader.
async fn next_frame(
    held: &mut Option<Result<Inbound, FrameError>>,
    frames: &mut mpsc::Receiver<Result<Inbound, FrameError>>,
) -> Option<Result<Inbound, FrameError>> {
    match held.take() {
        Some(frame) => Some(frame),
        None => frames.recv().await,
    }
}

/// Runs `f` on the session and the store on a blocking thread (SQLite and signature checks
/// block), handing both back.
async fn step<F>(
    session: CentralSession,
    store: &Store,
    f: F,
) -> anyhow::Result<(CentralSession, Result<(), SyncError>)>
where
    F: FnOnce(&mut CentralSession, &mut Store) -> Result<(), SyncError> + Send + 'static,
{
    let mut store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut session = session;
        let result = f(&mut session, &mut store);
        (session, result)
    })
    .await
    .context("session task failed")
}

async fn serve_connection(
    incoming: quinn::Incoming,
    store: Store,
    sync_config: SyncConfig,
    feed: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let conn = incoming.accept()?.await.context("handshake")?;
    let node_id = authenticated_node(&conn, &store).await?;
    let span = tracing::info_span!("sync", node = %node_id.fmt_short());
    run_session(conn, node_id, store, sync_config, feed, stop)
        .instrument(span)
        .await
}

/// One step's messages, encoded, and the store's commit ticket when the step ended.
struct Outgoing {
    ticket: u64,
    frames: Vec<Vec<u8>>,
}

/// Writes each step's frames in order, each step's only once the store has made every commit
/// before it durable ([`Store::durable`]): an `Ack` of entries applied by a deferred commit
/// never leaves before its fsync, while the session already applies the next batch. Hands the
/// stream back (with the first error, if any) when the queue closes.
async fn write_frames(
    store: Store,
    mut send: quinn::SendStream,
    mut outgoing: mpsc::Receiver<Outgoing>,
    failed: oneshot::Sender<String>,
) -> quinn::SendStream {
    while let Some(step) = outgoing.recv().await {
        let written = async {
            store.durable(step.ticket).await?;
            for frame in &step.frames {
                send.write_all(frame).await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = written {
            let _ = failed.send(format!("{e:#}"));
            break;
        }
    }
    send
}

/// The session's messages to send, encoded as frames.
fn transmits(session: &mut CentralSession) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| session.poll_transmit())
        .map(|msg| msg.encode_frame())
        .collect()
}

/// Drives one authenticated node's session until it ends.
async fn run_session(
    conn: quinn::Connection,
    node_id: NodeId,
    store: Store,
    sync_config: SyncConfig,
    mut feed: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tracing::info!(peer = %conn.remote_address(), "node connected");
    let (send, recv) = tokio::time::timeout(STREAM_OPEN_TIMEOUT, conn.accept_bi())
        .await
        .context("no sync stream opened in time")?
        .context("accepting the sync stream")?;
    let (frames_tx, mut frames) = mpsc::channel(FRAMES_QUEUED_MAX);
    let reader = tokio::spawn(read_frames(store.clone(), recv, frames_tx));
    let (outgoing, steps) = mpsc::channel(STEPS_UNSENT_MAX);
    let (failed_tx, mut write_failed) = oneshot::channel();
    let mut writer = tokio::spawn(write_frames(store.clone(), send, steps, failed_tx));
    // Queues `frames` behind what is queued, to leave once everything committed so far is
    // durable.
    let queue = |frames: Vec<Vec<u8>>| {
        let outgoing = outgoing.clone();
        let ticket = store.commit_ticket();
        async move {
            if frames.is_empty() {
                return Ok(());
            }
            outgoing
                .send(Outgoing { ticket, frames })
                .await
                .map_err(|_| anyhow::anyhow!("the frame writer stopped"))
        }
    };
    let goodbye = |reason: &str, detail: String| {
        vec![
            Message::Goodbye(Goodbye {
                reason: reason.into(),
                detail,
            })
            .encode_frame(),
        ]
    };
    let mut session = CentralSession::new(sync_config, node_id);
    // A frame taken from the queue while grouping batches, handled next.
    let mut held: Option<Result<Inbound, FrameError>> = None;
    let outcome: anyhow::Result<()> = async {
        loop {
            let result = tokio::select! {
                frame = next_frame(&mut held, &mut frames) => match frame {
                    None => return Ok(()),
                    Some(Err(e)) => {
                        queue(goodbye("protocol", e.to_string())).await?;
                        return Err(e.into());
                    }
                    Some(Ok(Inbound::Entries(mut entries))) => {
                        // Group commit: checked batches already waiting are applied with this one.
                        while held.is_none() && entries.len() < APPLY_GROUP_ENTRIES_MAX {
                            match frames.try_recv() {
                                Ok(Ok(Inbound::Entries(more))) => entries.extend(more),
                                Ok(other) => held = Some(other),
                                Err(_) => break,
                            }
                        }
                        let (s, r) = step(session, &store, move |s, st| s.handle_checked_entries(entries, st)).await?;
                        session = s;
                        if r.is_err() || session.is_closed() {
                            r
                        } else {
                            // The `Ack` goes out first; a pool refill follows it.
                            queue(transmits(&mut session)).await?;
                            let (s, r) = step(session, &store, |s, st| s.after_entries(st)).await?;
                            session = s;
                            r
                        }
                    }
                    Some(Ok(Inbound::Other(msg))) => {
                        let now_ms = crate::store::wall_ms();
                        let (s, r) = step(session, &store, move |s, st| s.handle_message(now_ms, msg, st)).await?;
                        session = s;
                        r
                    }
                },
                changed = feed.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let (s, r) = step(session, &store, move |s, st| match st.node(node_id)? {
                        Some(record) if record.revoked => {
                            s.revoke();
                            Ok(())
                        }
                        _ => s.notify_feed(st),
                    })
                    .await?;
                    session = s;
                    r
                }
                Ok(error) = &mut write_failed => {
                    return Err(anyhow::anyhow!("writing to the node: {error}"));
                }
                () = stopped(&mut stop) => {
                    queue(goodbye("shutdown", "central is shutting down".into())).await?;
                    return Ok(());
                }
            };
            queue(transmits(&mut session)).await?;
            match result {
                Ok(()) => {}
                Err(SyncError::Closed { reason, detail }) => {
                    tracing::info!(%reason, %detail, "session closed");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            if session.is_closed() {
                return Ok(());
            }
        }
    }
    .await;
    // What is queued (a last `Ack`, a `Goodbye`) still goes out, bounded.
    drop(outgoing);
    match tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, &mut writer).await {
        Ok(Ok(mut send)) => {
            let _ = send.finish();
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, send.stopped()).await;
        }
        _ => writer.abort(),
    }
    conn.close(quinn::VarInt::from_u32(0), b"bye");
    reader.abort();
    tracing::info!("node disconnected");
    outcome
}

#[cfg(test)]
mod tests;
