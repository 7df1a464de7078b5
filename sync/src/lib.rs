//! `crvs-sync`: the node ⇄ central sync protocol, kept sans-IO and deterministic.
//!
//! It will hold (issue "Sync"): the versioned wire messages and their codec (`wire`), per-event
//! automerge documents and merge rules (`merge`), and a `SyncEngine` driven by `handle_*` /
//! `poll_*` calls with `now` and a seed passed in, so a seeded simulator can drive it through
//! drops, duplicates, reordering, partitions and restarts. The QUIC glue lives in its own module.
//!
//! Position in the dependency graph: depends only on `crvs-common`; never on tokio, quinn,
//! rusqlite or axum, and never reads a clock or an OS random source.
//!
//! Today it holds only the protocol's name and version, which the foundation already pins.
#![warn(missing_docs)]

/// ALPN protocol id of the sync protocol, version 1.
pub const ALPN_SYNC_V1: &[u8] = b"crvs-edge/sync/1";

/// Version of the wire format this crate speaks.
pub const WIRE_VERSION: u16 = 1;

/// Re-exported so shells name one place for the log entry they send upstream.
pub use crvs_common::log::LogEntry;
