//! Test harness shared by the cross-crate tests: starts real node processes on loopback.
