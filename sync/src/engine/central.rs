//! Central's side of a sync session with one authenticated node: verifies and applies the node's
//! entries (acknowledging only what is durably applied) and streams central's feed down.

use std::collections::VecDeque;

use crvs_common::log::{
    ChainVerifier, CheckedEntry, EntryHash, LogEntry, LogHead, NodeId, Verdict, VerifyError,
};

use super::{StoreFault, SyncConfig, SyncError};
use crate::WIRE_VERSION;
use crate::wire::{Ack, Down, Goodbye, Hello, Message, Reject, Welcome};

/// What central knows of an enrolled node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// The last entry durably applied.
    pub acked: LogHead,
    /// Revoked by an operator: its key is no longer trusted.
    pub revoked: bool,
    /// Quarantined after a fork (evidence of a cloned node or tampering).
    pub quarantined: bool,
}

/// What a central session needs from central's storage. Mutating calls are durable on return,
/// except that `apply_entries` may return once committed if its driver holds everything the
/// session sends after it until that commit is durable (central's sync server does).
pub trait CentralStore {
    /// The node's record, `None` if it is not enrolled.
    fn node(&self, node_id: NodeId) -> Result<Option<NodeRecord>, StoreFault>;
    /// The hash of the node's entry `seq` that central applied, if any.
    fn stored_hash(&self, node_id: NodeId, seq: u64) -> Result<Option<EntryHash>, StoreFault>;
    /// Applies verified, contiguous entries after the node's acked head, atomically. Returns the new
    /// acked head and the entries refused for their content (applying stops at the first one).
    fn apply_entries(
        &mut self,
        node_id: NodeId,
        entries: &[LogEntry],
    ) -> Result<(LogHead, Vec<Reject>), StoreFault>;
    /// [`Self::apply_entries`] with each entry's hash, already computed by the signature check
    /// ([`CheckedEntry::hash`]). The default ignores them.
    fn apply_hashed_entries(
        &mut self,
        node_id: NodeId,
        entries: &[LogEntry],
        hashes: &[EntryHash],
    ) -> Result<(LogHead, Vec<Reject>), StoreFault> {
        let _ = hashes;
        self.apply_entries(node_id, entries)
    }
    /// Records a refused entry (reason and bytes) for ops; changes no state.
    fn record_reject(
        &mut self,
        node_id: NodeId,
        entry: &LogEntry,
        reject: &Reject,
    ) -> Result<(), StoreFault>;
    /// Records a fork (both entries are kept as evidence) and quarantines the node.
    fn record_fork(&mut self, node_id: NodeId, entry: &LogEntry) -> Result<(), StoreFault>;
    /// Records the node's `Hello` (last contact, reported backlog, RTT, pool level).
    fn record_contact(
        &mut self,
        node_id: NodeId,
        hello: &Hello,
        now_ms: u64,
    ) -> Result<(), StoreFault>;
    /// Leases more tracking ids to the node when it reported fewer than the low-water mark
    /// (appending a grant to its feed).
    fn ensure_pool(&mut self, node_id: NodeId, pool_free: u32) -> Result<(), StoreFault>;
    /// Tops up the node's tracking-id lease from central's own count of the ids it leased and saw
    /// unused, after the node's entries used some (so a busy node is refilled before it runs dry,
    /// without waiting for its next `Hello`). The default does nothing.
    fn refill_pool(&mut self, node_id: NodeId) -> Result<(), StoreFault> {
        let _ = node_id;
        Ok(())
    }

    /// Central's entries for this node after `cursor`: at most `max_items` / about `max_bytes`,
    /// the cursor after them, and whether more wait.
    fn feed_after(
        &self,
        node_id: NodeId,
        cursor: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LogEntry>, u64, bool), StoreFault>;
    /// Records how far the node applied the feed.
    fn record_down_ack(&mut self, node_id: NodeId, cursor: u64) -> Result<(), StoreFault>;
}

/// Central's side of one node's session.
#[derive(Debug)]
pub struct CentralSession {
    config: SyncConfig,
    node_id: NodeId,
    /// Cursor of the last `Down` sent and not yet acknowledged.
    down_in_flight: Option<u64>,
    /// The node's confirmed cursor in this session.
    down_cursor: Option<u64>,
    outbox: VecDeque<Message>,
    closed: bool,
    /// Entries were applied since the node's pool was last looked at ([`Self::after_entries`]).
    refill_due: bool,
}

impl CentralSession {
    /// A session with the node whose identity the transport authenticated.
    pub fn new(config: SyncConfig, authenticated: NodeId) -> Self {
        Self {
            config,
            node_id: authenticated,
            down_in_flight: None,
            down_cursor: None,
            outbox: VecDeque::new(),
            closed: false,
            refill_due: false,
        }
    }

    /// Whether the session ended (a `Goodbye` is the last message queued).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn goodbye(&mut self, reason: &str, detail: String) -> SyncError {
        self.outbox.push_back(Message::Goodbye(Goodbye {
            reason: reason.to_owned(),
            detail: detail.clone(),
        }));
        self.closed = true;
        SyncError::Closed {
            reason: reason.to_owned(),
            detail,
        }
    }

    /// The node's record, or a goodbye if it may not sync.
    fn admitted(&mut self, store: &dyn CentralStore) -> Result<NodeRecord, SyncError> {
        match store.node(self.node_id)? {
            None => Err(self.goodbye(
                "unknown-node",
                format!("node {} is not enrolled", self.node_id.fmt_short()),
            )),
            Some(r) if r.revoked => Err(self.goodbye("revoked", "this node was revoked".into())),
            Some(r) if r.quarantined => Err(self.goodbye(
                "quarantined",
                "this node is quarantined after a fork".into(),
            )),
            Some(r) => Ok(r),
        }
    }

    /// Handles one message from the node.
    pub fn handle_message(
        &mut self,
        now_ms: u64,
        msg: Message,
        store: &mut dyn CentralStore,
    ) -> Result<(), SyncError> {
        if self.closed {
            return Ok(());
        }
        match msg {
            Message::Hello(hello) => self.on_hello(now_ms, &hello, store),
            Message::Entries(batch) => {
                self.on_entries(CheckedEntry::check_all(batch.entries), store)?;
                self.after_entries(store)
            }
            Message::DownAck(ack) => {
                self.admitted(store)?;
                // A node's cursor only grows, so an older cursor, or the one a batch in flight
                // already starts from, is a duplicated or overtaken DownAck: answering it with
                // a batch would let every duplicate start another endless Down/DownAck chain.
                if self.down_cursor.is_some_and(|known| {
                    ack.cursor < known || (ack.cursor == known && self.down_in_flight.is_some())
                }) {
                    return Ok(());
                }
                store.record_down_ack(self.node_id, ack.cursor)?;
                self.down_cursor = Some(ack.cursor);
                if self.down_in_flight.is_some_and(|c| ack.cursor >= c)
                    || ack.cursor < self.down_in_flight.unwrap_or(0)
                {
                    self.down_in_flight = None;
                }
                self.push_down(store)
            }
            Message::Goodbye(g) => {
                self.closed = true;
                Err(SyncError::Closed {
                    reason: g.reason,
                    detail: g.detail,
                })
            }
            Message::Welcome(_) | Message::Ack(_) | Message::Down(_) => {
                Err(self.goodbye("protocol", "a node sent central's message".into()))
            }
        }
    }

    /// Handles an `Entries` message whose signatures the driver already checked
    /// ([`CheckedEntry::check`], e.g. on other threads while the previous batch was applied),
    /// up to its `Ack`: the driver sends that, then calls [`Self::after_entries`]. Both together
    /// have the outcome of [`Self::handle_message`] with the message.
    pub fn handle_checked_entries(
        &mut self,
        entries: Vec<CheckedEntry>,
        store: &mut dyn CentralStore,
    ) -> Result<(), SyncError> {
        if self.closed {
            return Ok(());
        }
        self.on_entries(entries, store)
    }

    /// What follows an `Entries` batch's `Ack` without delaying it: refilling the node's
    /// tracking-id pool once the applied entries used it below its low-water mark (a write of a
    /// whole lease, when it is due), then streaming down whatever central's feed holds.
    pub fn after_entries(&mut self, store: &mut dyn CentralStore) -> Result<(), SyncError> {
        if self.closed {
            return Ok(());
        }
        if std::mem::take(&mut self.refill_due) {
            store.refill_pool(self.node_id)?;
        }
        // A refill (or any other feed growth) goes down right away.
        self.push_down(store)
    }

    fn on_hello(
        &mut self,
        now_ms: u64,
        hello: &Hello,
        store: &mut dyn CentralStore,
    ) -> Result<(), SyncError> {
        if hello.node_id != self.node_id {
            return Err(self.goodbye(
                "identity-mismatch",
                "Hello names another node than the TLS identity".into(),
            ));
        }
        if hello.version != WIRE_VERSION {
            return Err(self.goodbye(
                "version",
                format!("central speaks wire version {WIRE_VERSION}"),
            ));
        }
        let record = self.admitted(store)?;
        store.record_contact(self.node_id, hello, now_ms)?;
        store.ensure_pool(self.node_id, hello.pool_free)?;
        let (items, to_cursor, more) = store.feed_after(
            self.node_id,
            hello.down_cursor,
            self.config.down_items_max,
            self.config.down_bytes_max,
        )?;
        self.down_cursor = Some(hello.down_cursor);
        self.down_in_flight = (to_cursor != hello.down_cursor).then_some(to_cursor);
        self.outbox.push_back(Message::Welcome(Welcome {
            acked: record.acked,
            down: Down {
                from_cursor: hello.down_cursor,
                to_cursor,
                items,
                more,
            },
        }));
        Ok(())
    }

    fn on_entries(
        &mut self,
        entries: Vec<CheckedEntry>,
        store: &mut dyn CentralStore,
    ) -> Result<(), SyncError> {
        let record = self.admitted(store)?;
        let mut verifier = ChainVerifier::new(self.node_id, record.acked);
        let mut fresh: Vec<LogEntry> = Vec::new();
        let mut hashes: Vec<EntryHash> = Vec::new();
        let mut rejects = Vec::new();
        for checked in entries {
            let entry = checked.entry();
            let stored = if entry.seq < record.acked.seq {
                store.stored_hash(self.node_id, entry.seq)?
            } else {
                None
            };
            match verifier.accept_checked(&checked, stored) {
                Ok(Verdict::Append) => {
                    hashes.push(checked.hash());
                    fresh.push(checked.into_entry());
                }
                Ok(Verdict::Duplicate) => {}
                Err(VerifyError::Fork { seq }) => {
                    store.record_fork(self.node_id, entry)?;
                    let reject = Reject {
                        seq,
                        reason: "fork".into(),
                        detail: "another entry with this seq was applied".into(),
                    };
                    store.record_reject(self.node_id, entry, &reject)?;
                    return Err(self.goodbye(
                        "quarantined",
                        format!("fork at entry {seq}: node quarantined"),
                    ));
                }
                Err(e) => {
                    let reject = Reject {
                        seq: entry.seq,
                        reason: e.reason().to_owned(),
                        detail: e.to_string(),
                    };
                    // Every refusal is recorded and visible to ops. A gap is the only one an honest
                    // node can cause (a lost batch); it is recorded but never quarantines, and the
                    // node simply resends from what central acknowledged.
                    store.record_reject(self.node_id, entry, &reject)?;
                    rejects.push(reject);
                    break;
                }
            }
        }
        let mut acked = record.acked;
        if !fresh.is_empty() {
            let (applied, content_rejects) =
                store.apply_hashed_entries(self.node_id, &fresh, &hashes)?;
            acked = applied;
            for r in &content_rejects {
                if let Some(entry) = fresh.iter().find(|e| e.seq == r.seq) {
                    store.record_reject(self.node_id, entry, r)?;
                }
            }
            rejects.splice(0..0, content_rejects);
            self.refill_due = true;
        }
        self.outbox.push_back(Message::Ack(Ack { acked, rejects }));
        Ok(())
    }

    fn push_down(&mut self, store: &dyn CentralStore) -> Result<(), SyncError> {
        let Some(cursor) = self.down_cursor else {
            return Ok(());
        };
        if self.down_in_flight.is_some() {
            return Ok(());
        }
        let (items, to_cursor, more) = store.feed_after(
            self.node_id,
            cursor,
            self.config.down_items_max,
            self.config.down_bytes_max,
        )?;
        if items.is_empty() && to_cursor == cursor {
            return Ok(());
        }
        self.down_in_flight = Some(to_cursor);
        self.outbox.push_back(Message::Down(Down {
            from_cursor: cursor,
            to_cursor,
            items,
            more,
        }));
        Ok(())
    }

    /// Central's feed grew (or the node's pool was refilled): stream it down if idle.
    pub fn notify_feed(&mut self, store: &dyn CentralStore) -> Result<(), SyncError> {
        if self.closed {
            return Ok(());
        }
        self.push_down(store)
    }

    /// The node was revoked while connected: end the session.
    pub fn revoke(&mut self) {
        if !self.closed {
            let _ = self.goodbye("revoked", "this node was revoked".into());
        }
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.outbox.pop_front()
    }
}
