//! The sync engine: one [`NodeSession`] at a node and one [`CentralSession`] per connected node at
//! central, both sans-IO and deterministic.
//!
//! Drivers own the connection and call, in this order: `connect` (node) when a stream opens,
//! `handle_message` for every message received, `notify_*` when local state changed,
//! `handle_timeout` when `poll_timeout` is reached; after each call they drain `poll_transmit`
//! and send what it returns. Time comes in as `now_ms`; storage is reached through the
//! [`NodeStore`] / [`CentralStore`] traits, whose implementations must make every mutating call
//! durable before returning (a driver never sends an acknowledgement before its data is on disk),
//! or, for [`CentralStore::apply_entries`] only, leave the fsync to a driver that sends nothing
//! the call led to before the commit is durable.

mod central;
mod node;

pub use central::{CentralSession, CentralStore, NodeRecord};
pub use node::{NodeHealth, NodeSession, NodeStore, SessionStatus};

/// Batch and window sizes on a link the driver measured as fast (transport RTT at most
/// `rtt_ms_max`): larger batches let central verify and commit a backlog in fewer, larger
/// transactions (one fsync per batch), while what a cut can force to be re-sent stays a few
/// milliseconds of such a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastLink {
    /// Largest transport RTT, ms, at which a link counts as fast.
    pub rtt_ms_max: u32,
    /// Most entries per `Entries` batch (≤ [`crate::wire::BATCH_ENTRIES_MAX`]).
    pub batch_entries_max: usize,
    /// Most uncompressed entry bytes per batch (≤ [`crate::wire::BATCH_BYTES_MAX`], less one
    /// large entry: a batch may end with the entry that crosses the bound).
    pub batch_bytes_max: usize,
    /// Most uncompressed entry bytes sent and not yet acknowledged.
    pub in_flight_bytes_max: usize,
}

/// Tunables of the protocol. Named presets, no hidden defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// Most entries per `Entries` batch (≤ [`crate::wire::BATCH_ENTRIES_MAX`]).
    pub batch_entries_max: usize,
    /// Most uncompressed entry bytes per batch (≤ [`crate::wire::BATCH_BYTES_MAX`]).
    pub batch_bytes_max: usize,
    /// Most uncompressed entry bytes sent and not yet acknowledged: the pipelining window, and
    /// the bound on what a cut can force to be re-sent.
    pub in_flight_bytes_max: usize,
    /// Larger batches and window once the driver reports a fast link
    /// ([`NodeSession::observe_link_rtt`]); `None` keeps the sizes above on every link.
    pub fast_link: Option<FastLink>,
    /// Most downstream entries per `Down` batch.
    pub down_items_max: usize,
    /// Most uncompressed downstream bytes per batch.
    pub down_bytes_max: usize,
    /// An idle, connected node says `Hello` this often (heartbeat and no-op sync), ms.
    pub hello_interval_ms: u64,
    /// Without an answer for this long, the node restarts the round from what central
    /// acknowledged, ms.
    pub answer_timeout_ms: u64,
}

impl SyncConfig {
    /// Production values for clinic links (~1 s RTT, ~200 kbit/s). A notification's entry is
    /// ~4.4 KB and compresses to ~0.5 KB in a batch, so a 128 KiB batch (~30 entries) is ~15 KiB
    /// on the wire and the 384 KiB window ~45 KiB: about twice an EDGE link's bandwidth-delay
    /// product (25 KB/s × 0.84 s), under the 64 KiB a cut may force to be re-sent. Heartbeats
    /// every 15 s. On a link under 10 ms RTT (a LAN, a clinic next to the data centre, loopback)
    /// batches grow to 512 entries / 896 KiB and the window to 4 MiB (~0.5 MiB on the wire).
    pub fn for_links() -> Self {
        Self {
            batch_entries_max: 256,
            batch_bytes_max: 128 * 1024,
            in_flight_bytes_max: 384 * 1024,
            fast_link: Some(FastLink {
                rtt_ms_max: 10,
                batch_entries_max: 512,
                batch_bytes_max: 896 * 1024,
                in_flight_bytes_max: 4 * 1024 * 1024,
            }),
            down_items_max: 256,
            down_bytes_max: 256 * 1024,
            hello_interval_ms: 15_000,
            answer_timeout_ms: 30_000,
        }
    }

    /// Whether a link with this transport RTT counts as fast ([`Self::fast_link`]).
    pub fn is_fast_link(&self, rtt_ms: u32) -> bool {
        self.fast_link
            .as_ref()
            .is_some_and(|fast| rtt_ms <= fast.rtt_ms_max)
    }

    /// Small batches and short timers, so a simulation exercises many rounds.
    pub fn for_tests() -> Self {
        Self {
            batch_entries_max: 4,
            batch_bytes_max: 16 * 1024,
            in_flight_bytes_max: 32 * 1024,
            fast_link: None,
            down_items_max: 4,
            down_bytes_max: 16 * 1024,
            hello_interval_ms: 2_000,
            answer_timeout_ms: 5_000,
        }
    }
}

/// A storage failure reported by a driver's store. The engine treats it as fatal for the
/// session: the driver drops the connection and retries later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreFault(pub String);

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreFault),
    /// The peer broke the protocol (unexpected message, impossible position, bad signature).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer said goodbye.
    #[error("peer closed the session: {reason} ({detail})")]
    Closed {
        /// Reason code.
        reason: String,
        /// Detail.
        detail: String,
    },
}
