//! What central's own log carries: the payload of each entry central signs and sends down to
//! nodes (its "feed"). A node's downstream cursor is a position in central's log, filtered to what
//! that node may see.

use serde::{Deserialize, Serialize};

use crate::event::EntryPayload;
use crate::location::LocationSet;
use crate::user::User;

/// The payload of an entry in central's log (JSON inside the signed entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum CentralRecord {
    /// Another node's entry about a record in the receiver's jurisdiction, relayed verbatim
    /// (its own signature and automerge change included), hex encoded.
    Relay {
        /// The origin node's id (hex).
        origin: String,
        /// The origin entry's encoding ([`crate::log::LogEntry::encode`]), hex.
        entry: String,
    },
    /// Actions central itself recorded on an event (confirmations, registration numbers, ...),
    /// with central's automerge change in the entry.
    Actions(EntryPayload),
    /// A system client created or changed at central; its secret hash syncs down so the
    /// client can authenticate at a node while offline.
    Client {
        /// Client id.
        id: String,
        /// Display name.
        name: String,
        /// argon2id PHC string of the secret.
        secret_hash: String,
        /// Encoded scopes.
        scopes: Vec<String>,
        /// `active` or `disabled`.
        status: String,
        /// Creation time.
        created_at: String,
    },
    /// A user created or changed at central. It goes to the nodes whose area holds the user's
    /// primary office, with the password hash, so the user can log in there while offline.
    User {
        /// The user as OpenCRVS spells it.
        user: Box<User>,
        /// Login name.
        username: String,
        /// argon2id PHC string of the password; empty while the user has none (`pending`).
        password_hash: String,
    },
    /// The full set of locations.
    Locations(LocationSet),
    /// Tracking ids leased to one node (only that node receives it).
    PoolGrant {
        /// The node (hex id).
        node_id: String,
        /// Nationally unique, unused tracking ids.
        tracking_ids: Vec<String>,
    },
    /// A node was revoked: its key is no longer trusted.
    NodeRevoked {
        /// The node (hex id).
        node_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_json_shape() {
        let r = CentralRecord::PoolGrant {
            node_id: "ab".into(),
            tracking_ids: vec!["0XK5CT".into()],
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"poolGrant","nodeId":"ab","trackingIds":["0XK5CT"]}"#
        );
        assert_eq!(serde_json::from_str::<CentralRecord>(&json).unwrap(), r);
    }

    /// Central stores relays compact and rebuilds these exact bytes when it reads its feed,
    /// checking them against the signed entry's hash: the encoding must never drift.
    #[test]
    fn relay_bytes_are_pinned() {
        let r = CentralRecord::Relay {
            origin: "0a1b".into(),
            entry: "00ff".into(),
        };
        assert_eq!(
            serde_json::to_vec(&r).unwrap(),
            br#"{"kind":"relay","origin":"0a1b","entry":"00ff"}"#
        );
    }
}
