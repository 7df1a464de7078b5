//! `crvs-central`: the national registry that nodes sync with.
//!
//! It will hold (issues "Sync" and "Central registry"): the SQLite store behind a trait, the sync
//! server driver over QUIC, node enrollment and revocation, system clients whose secret hashes sync
//! down, registration-number allocation, deduplication and national search, with the same read
//! routes as the node over the merged national data.
//!
//! Position in the dependency graph: depends on `crvs-common` (and later `crvs-sync`); never on
//! `crvs-node`. Today it only validates that the shared vocabulary loads.

/// What this build of central can do today, printed by `crvs-central status`.
pub fn capabilities() -> &'static str {
    "central registry: not yet implemented beyond the shared event model (see ARCHITECTURE.md)"
}

/// Loads the built-in event configuration, proving central shares the node's vocabulary.
pub fn builtin_event_types() -> Vec<String> {
    crvs_common::config::EventConfigSet::builtin()
        .events()
        .iter()
        .map(|e| e.id().to_owned())
        .collect()
}
