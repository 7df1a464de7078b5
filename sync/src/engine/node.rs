//! The node side of a sync session: pushes the node's log upstream in pipelined batches and
//! applies central's entries downstream.

use std::collections::VecDeque;

use crvs_common::log::{EntryHash, LogEntry, LogHead, NodeId};

use super::{StoreFault, SyncConfig, SyncError};
use crate::WIRE_VERSION;
use crate::wire::{Down, DownAck, Entries, Goodbye, Hello, Message, Reject};

/// What the node session needs from the node's storage. Mutating calls are durable on return.
pub trait NodeStore {
    /// The node's log head.
    fn log_head(&self) -> Result<LogHead, StoreFault>;
    /// The hash of the node's own entry at `seq`, if it has one.
    fn hash_at(&self, seq: u64) -> Result<Option<EntryHash>, StoreFault>;
    /// Own entries with `seq > after`, in order, at most `max_entries` and about `max_bytes`
    /// (always at least one entry if any exists).
    fn entries_after(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, StoreFault>;
    /// Position in central's feed up to which downstream entries are applied.
    fn down_cursor(&self) -> Result<u64, StoreFault>;
    /// Applies central's entries (signatures already verified) and moves the cursor, atomically.
    fn apply_down(&mut self, items: &[LogEntry], to_cursor: u64) -> Result<(), StoreFault>;
    /// Records what central acknowledged (and refused), for ops.
    fn record_ack(
        &mut self,
        acked: LogHead,
        rejects: &[Reject],
        now_ms: u64,
    ) -> Result<(), StoreFault>;
    /// Health figures reported in `Hello`.
    fn health(&self, now_ms: u64) -> Result<NodeHealth, StoreFault>;
}

/// Health figures a node reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeHealth {
    /// Free tracking ids.
    pub pool_free: u32,
    /// Entries not acknowledged by central.
    pub backlog_entries: u64,
    /// Their bytes.
    pub backlog_bytes: u64,
    /// Age of the oldest unacknowledged entry, ms.
    pub oldest_unacked_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No connection.
    Disconnected,
    /// `Hello` sent, waiting for `Welcome`.
    Greeting { sent_ms: u64 },
    /// Streaming entries and downstream batches.
    Streaming,
    /// Central refused an entry or said goodbye: nothing more to send on this connection.
    Stalled,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    last_seq: u64,
    raw_bytes: usize,
    sent_ms: u64,
}

/// What the session knows for ops (`/api/sync/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStatus {
    /// Last time central acknowledged or welcomed us, ms.
    pub last_success_ms: Option<u64>,
    /// Last error (reject, goodbye, protocol violation).
    pub last_error: Option<String>,
    /// Smoothed round-trip time, ms.
    pub rtt_ms: Option<u32>,
}

/// The node's side of a sync session.
#[derive(Debug)]
pub struct NodeSession {
    config: SyncConfig,
    node_id: NodeId,
    central_id: NodeId,
    phase: Phase,
    acked: LogHead,
    next_seq: u64,
    in_flight: VecDeque<InFlight>,
    down_cursor: u64,
    last_sent_ms: u64,
    outbox: VecDeque<Message>,
    status: SessionStatus,
    /// Whether central said more downstream items wait.
    down_more: bool,
    /// The transport's smoothed RTT as the driver last reported it, ms.
    link_rtt_ms: Option<u32>,
}

impl NodeSession {
    /// A session for `node_id`, trusting entries signed by `central_id`.
    pub fn new(config: SyncConfig, node_id: NodeId, central_id: NodeId) -> Self {
        Self {
            config,
            node_id,
            central_id,
            phase: Phase::Disconnected,
            acked: LogHead::GENESIS,
            next_seq: 1,
            in_flight: VecDeque::new(),
            down_cursor: 0,
            last_sent_ms: 0,
            outbox: VecDeque::new(),
            status: SessionStatus::default(),
            down_more: false,
            link_rtt_ms: None,
        }
    }

    /// Status for ops.
    pub fn status(&self) -> &SessionStatus {
        &self.status
    }

    /// What central acknowledged, as last heard.
    pub fn acked(&self) -> LogHead {
        self.acked
    }

    /// Whether nothing is left to exchange: everything acknowledged, nothing downstream waiting,
    /// nothing in flight.
    pub fn is_synced(&self, store: &dyn NodeStore) -> Result<bool, StoreFault> {
        Ok(self.phase == Phase::Streaming
            && self.in_flight.is_empty()
            && !self.down_more
            && self.acked == store.log_head()?)
    }

    /// A connection opened: start a round with `Hello`.
    pub fn connect(&mut self, now_ms: u64, store: &dyn NodeStore) -> Result<(), SyncError> {
        self.outbox.clear();
        self.in_flight.clear();
        self.send_hello(now_ms, store)
    }

    /// The connection is gone; in-flight entries will be re-sent from what central acknowledged.
    pub fn disconnect(&mut self) {
        self.phase = Phase::Disconnected;
        self.in_flight.clear();
        self.outbox.clear();
    }

    fn send_hello(&mut self, now_ms: u64, store: &dyn NodeStore) -> Result<(), SyncError> {
        let health = store.health(now_ms)?;
        self.down_cursor = store.down_cursor()?;
        self.push(
            now_ms,
            Message::Hello(Hello {
                version: WIRE_VERSION,
                node_id: self.node_id,
                head: store.log_head()?,
                down_cursor: self.down_cursor,
                pool_free: health.pool_free,
                backlog_entries: health.backlog_entries,
                backlog_bytes: health.backlog_bytes,
                oldest_unacked_ms: health.oldest_unacked_ms,
                rtt_ms: self.status.rtt_ms.unwrap_or(0),
            }),
        );
        self.phase = Phase::Greeting { sent_ms: now_ms };
        Ok(())
    }

    fn push(&mut self, now_ms: u64, msg: Message) {
        self.last_sent_ms = now_ms;
        self.outbox.push_back(msg);
    }

    fn observe_rtt(&mut self, sample_ms: u64) {
        let sample = u32::try_from(sample_ms).unwrap_or(u32::MAX);
        self.status.rtt_ms = Some(match self.status.rtt_ms {
            None => sample,
            // Exponential smoothing with weight 1/8, as TCP's SRTT.
            Some(srtt) => ((u64::from(srtt) * 7 + u64::from(sample)) / 8) as u32,
        });
    }

    /// Handles one message from central.
    pub fn handle_message(
        &mut self,
        now_ms: u64,
        msg: Message,
        store: &mut dyn NodeStore,
    ) -> Result<(), SyncError> {
        match msg {
            Message::Welcome(w) => {
                let Phase::Greeting { sent_ms } = self.phase else {
                    // A late duplicate of an earlier round's Welcome: ignore it.
                    return Ok(());
                };
                self.observe_rtt(now_ms.saturating_sub(sent_ms));
                self.check_acked(w.acked, store)?;
                self.acked = w.acked;
                store.record_ack(w.acked, &[], now_ms)?;
                self.status.last_success_ms = Some(now_ms);
                self.next_seq = w.acked.seq + 1;
                self.in_flight.clear();
                self.phase = Phase::Streaming;
                self.apply_down(now_ms, &w.down, store)?;
                self.fill_window(now_ms, store)?;
            }
            Message::Ack(a) => {
                if self.phase != Phase::Streaming {
                    return Ok(());
                }
                if a.acked.seq > self.acked.seq {
                    self.check_acked(a.acked, store)?;
                    if let Some(front) = self
                        .in_flight
                        .iter()
                        .take_while(|f| f.last_seq <= a.acked.seq)
                        .last()
                    {
                        self.observe_rtt(now_ms.saturating_sub(front.sent_ms));
                    }
                    self.in_flight.retain(|f| f.last_seq > a.acked.seq);
                    self.acked = a.acked;
                    // Never re-send what central already holds.
                    self.next_seq = self.next_seq.max(a.acked.seq + 1);
                    self.status.last_success_ms = Some(now_ms);
                }
                store.record_ack(self.acked, &a.rejects, now_ms)?;
                if let Some(reject) = a.rejects.first() {
                    self.status.last_error = Some(format!(
                        "entry {} rejected: {} ({})",
                        reject.seq, reject.reason, reject.detail
                    ));
                    if reject.reason == "gap" {
                        // Central saw entries out of order (only possible when messages are lost
                        // or reordered): resend from what it acknowledged.
                        self.next_seq = self.acked.seq + 1;
                        self.in_flight.clear();
                    } else {
                        // A refused entry can never be accepted; stop until an operator acts.
                        self.phase = Phase::Stalled;
                        return Ok(());
                    }
                }
                self.fill_window(now_ms, store)?;
            }
            Message::Down(d) => {
                if self.phase == Phase::Streaming {
                    self.apply_down(now_ms, &d, store)?;
                }
            }
            Message::Goodbye(Goodbye { reason, detail }) => {
                self.status.last_error =
                    Some(format!("central closed the session: {reason} ({detail})"));
                self.phase = Phase::Stalled;
                return Err(SyncError::Closed { reason, detail });
            }
            Message::Hello(_) | Message::Entries(_) | Message::DownAck(_) => {
                return Err(SyncError::Protocol("central sent a node's message".into()));
            }
        }
        Ok(())
    }

    /// Central must never claim more of our log than we have, nor a different entry.
    fn check_acked(&mut self, acked: LogHead, store: &dyn NodeStore) -> Result<(), SyncError> {
        if acked.seq == 0 {
            return Ok(());
        }
        match store.hash_at(acked.seq)? {
            Some(hash) if hash == acked.hash => Ok(()),
            Some(_) => {
                let msg = format!(
                    "central holds a different entry {} of this node (cloned or restored node?)",
                    acked.seq
                );
                self.status.last_error = Some(msg.clone());
                Err(SyncError::Protocol(msg))
            }
            None => {
                let msg = format!(
                    "central acknowledged entry {} that this node does not have (restored from backup?)",
                    acked.seq
                );
                self.status.last_error = Some(msg.clone());
                Err(SyncError::Protocol(msg))
            }
        }
    }

    fn apply_down(
        &mut self,
        now_ms: u64,
        down: &Down,
        store: &mut dyn NodeStore,
    ) -> Result<(), SyncError> {
        if down.from_cursor != self.down_cursor || down.to_cursor < down.from_cursor {
            // Duplicate or reordered batch: tell central where we are.
            self.push(
                now_ms,
                Message::DownAck(DownAck {
                    cursor: self.down_cursor,
                }),
            );
            return Ok(());
        }
        for item in &down.items {
            if item.node_id != self.central_id {
                return Err(SyncError::Protocol(
                    "downstream entry not signed by central".into(),
                ));
            }
            item.verify_signature()
                .map_err(|e| SyncError::Protocol(format!("downstream entry {}: {e}", item.seq)))?;
        }
        if down.to_cursor != self.down_cursor || !down.items.is_empty() {
            store.apply_down(&down.items, down.to_cursor)?;
            self.down_cursor = down.to_cursor;
            self.push(
                now_ms,
                Message::DownAck(DownAck {
                    cursor: self.down_cursor,
                }),
            );
        }
        self.down_more = down.more;
        Ok(())
    }

    /// The transport's smoothed RTT (QUIC's estimate, without central's apply time), ms: it
    /// picks the batch and window sizes ([`crate::engine::FastLink`]).
    pub fn observe_link_rtt(&mut self, rtt_ms: u32) {
        self.link_rtt_ms = Some(rtt_ms);
    }

    /// Whether the link, as last observed, counts as fast ([`SyncConfig::fast_link`]).
    pub fn link_is_fast(&self) -> bool {
        self.link_rtt_ms
            .is_some_and(|rtt| self.config.is_fast_link(rtt))
    }

    /// Batch entries, batch bytes and window for the link as last observed.
    fn window(&self) -> (usize, usize, usize) {
        match &self.config.fast_link {
            Some(fast) if self.link_is_fast() => (
                fast.batch_entries_max,
                fast.batch_bytes_max,
                fast.in_flight_bytes_max,
            ),
            _ => (
                self.config.batch_entries_max,
                self.config.batch_bytes_max,
                self.config.in_flight_bytes_max,
            ),
        }
    }

    fn in_flight_bytes(&self) -> usize {
        self.in_flight.iter().map(|f| f.raw_bytes).sum()
    }

    fn fill_window(&mut self, now_ms: u64, store: &dyn NodeStore) -> Result<(), SyncError> {
        if self.phase != Phase::Streaming {
            return Ok(());
        }
        let head = store.log_head()?;
        let (batch_entries_max, batch_bytes_max, in_flight_bytes_max) = self.window();
        while self.next_seq <= head.seq && self.in_flight_bytes() < in_flight_bytes_max {
            let entries =
                store.entries_after(self.next_seq - 1, batch_entries_max, batch_bytes_max)?;
            let Some(last) = entries.last() else { break };
            let last_seq = last.seq;
            if entries[0].seq != self.next_seq {
                return Err(SyncError::Store(StoreFault(format!(
                    "log has no entry {}",
                    self.next_seq
                ))));
            }
            let raw_bytes = entries.iter().map(LogEntry::encoded_len).sum();
            self.in_flight.push_back(InFlight {
                last_seq,
                raw_bytes,
                sent_ms: now_ms,
            });
            self.push(now_ms, Message::Entries(Entries { entries }));
            self.next_seq = last_seq + 1;
        }
        Ok(())
    }

    /// New local entries were committed: send them if the window allows.
    pub fn notify_appended(&mut self, now_ms: u64, store: &dyn NodeStore) -> Result<(), SyncError> {
        self.fill_window(now_ms, store)
    }

    /// When the driver should call [`Self::handle_timeout`] next, ms.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::Disconnected | Phase::Stalled => None,
            Phase::Greeting { sent_ms } => Some(sent_ms + self.config.answer_timeout_ms),
            // Waiting for acknowledgements: only the answer timer runs. Idle: the heartbeat.
            Phase::Streaming => Some(match self.in_flight.front() {
                Some(f) => f.sent_ms + self.config.answer_timeout_ms,
                None => self.last_sent_ms + self.config.hello_interval_ms,
            }),
        }
    }

    /// Timers: restart a round that got no answer, or send a heartbeat `Hello` when idle.
    pub fn handle_timeout(&mut self, now_ms: u64, store: &dyn NodeStore) -> Result<(), SyncError> {
        let Some(deadline) = self.poll_timeout() else {
            return Ok(());
        };
        if now_ms < deadline {
            return Ok(());
        }
        // Both cases restart the round: Hello re-synchronises acked entries and the down cursor.
        self.in_flight.clear();
        self.send_hello(now_ms, store)
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.outbox.pop_front()
    }
}
