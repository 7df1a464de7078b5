//! `crvs-sync`: the node ⇄ central sync protocol, kept sans-IO and deterministic.
//!
//! Modules: [`wire`] (the versioned messages and their bounded codec), [`engine`] (the node and
//! central sessions, driven by `handle_*` / `poll_*` calls with `now_ms` passed in, reaching
//! storage through the `NodeStore` / `CentralStore` traits) and [`merge`] (per-event automerge
//! documents: how concurrent writes from different places merge and how conflicts are recorded).
//! A seeded simulator over these lives in `src/tests/`.
//!
//! Position in the dependency graph: depends only on `crvs-common`, automerge and flate2; never
//! on tokio, quinn, rusqlite or axum, and never reads a clock (times are passed in).
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod engine;
pub mod merge;
pub mod wire;

#[cfg(test)]
mod tests;

/// ALPN protocol id of the sync protocol, version 1.
pub const ALPN_SYNC_V1: &[u8] = b"crvs-edge/sync/1";

/// Version of the wire format this crate speaks.
pub const WIRE_VERSION: u16 = 1;

/// Re-exported so shells name one place for the log entry they send upstream.
pub use crvs_common::log::LogEntry;
