//! `crvs-common`: the shared vocabulary of the offline-first civil registration system.
//!
//! It holds the OpenCRVS 2.0 event model with its exact wire names ([`event`]), the pure
//! status/flags/allowed-actions derivation ([`state`]), the event configuration and declaration
//! validation ([`config`]), deduplication rules and their matcher ([`dedup`]), OpenCRVS scopes
//! ([`scope`]) and the roles that grant them ([`role`]), the user model ([`user`]), the REST
//! error envelope ([`error`]), search ([`search`], with fuzzy name matching in [`fuzzy`]),
//! identifiers ([`ids`]), the hybrid logical clock ([`hlc`]), locations ([`location`]), named
//! bounds ([`limits`]) and the ed25519-signed, hash-chained action log ([`log`]).
//!
//! Position in the dependency graph: `common` depends on no workspace crate. It has no async
//! runtime, performs no IO, reads no clock and draws no randomness: time and random bytes are
//! passed in by the shells (`node`, `central`).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod access;
pub mod config;
pub mod dedup;
pub mod error;
pub mod event;
pub mod feed;
pub mod fuzzy;
pub mod hlc;
pub mod ids;
pub mod limits;
pub mod location;
pub mod log;
pub mod login;
pub mod regnum;
pub mod role;
pub mod scope;
pub mod search;
#[cfg(feature = "server")]
pub mod server;
pub mod state;
pub mod user;
