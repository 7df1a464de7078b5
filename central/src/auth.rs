//! Central's tokens and secrets: the shared implementation ([`crvs_common::server::auth`]) with
//! central's issuer. A node's token does not validate here (other key, other issuer), nor the
//! other way round.

pub use crvs_common::server::auth::*;

/// Issuer of every token central mints.
pub const ISSUER: &str = "crvs-edge:central";
