//! Schema and migrations, versioned by `PRAGMA user_version`. A database newer than the code is
//! refused without being touched; upgrades run in one immediate transaction.

use crvs_common::server::accounts;
use rusqlite::Connection;

use super::StoreError;

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 8;

/// Version 1: events, actions, the signed log, the tracking-id pool, clients and locations.
const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    id             TEXT PRIMARY KEY,
    event_type     TEXT NOT NULL,
    tracking_id    TEXT NOT NULL UNIQUE,
    transaction_id TEXT NOT NULL,
    request_hash   BLOB NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    -- Derived from the actions on every write (never the truth; rebuilt by `reindex`).
    status         TEXT NOT NULL,
    index_json     TEXT NOT NULL,
    -- The event's automerge document (sync::merge): merged declaration and conflicts.
    crdt           BLOB,
    UNIQUE (transaction_id, event_type)
);

-- Append-only, as OpenCRVS's event_actions: rows are never updated or deleted.
CREATE TABLE actions (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    event_id       TEXT NOT NULL REFERENCES events(id),
    action_type    TEXT NOT NULL,
    status         TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    request_hash   BLOB,
    -- The entry that carried this action (one entry may carry several actions of one event);
    -- the entry row is written after its actions, so the check waits for COMMIT.
    log_seq        INTEGER REFERENCES log(seq) DEFERRABLE INITIALLY DEFERRED,
    -- NULL for this node's own actions; the writer's node id (hex) for actions synced down.
    origin         TEXT,
    body           TEXT NOT NULL,
    UNIQUE (transaction_id, action_type, status)
);
CREATE INDEX actions_event ON actions(event_id, seq);

-- The node's signed, hash-chained action log. `seq` is gap-free from 1.
CREATE TABLE log (
    seq   INTEGER PRIMARY KEY,
    hash  BLOB NOT NULL UNIQUE,
    entry BLOB NOT NULL
);

-- Tracking ids held by this node: free while event_id is NULL.
CREATE TABLE tracking_pool (
    tracking_id TEXT PRIMARY KEY,
    event_id    TEXT
) WITHOUT ROWID;
CREATE INDEX tracking_pool_free ON tracking_pool(tracking_id) WHERE event_id IS NULL;

CREATE TABLE clients (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at  TEXT NOT NULL
);

CREATE TABLE admin_areas (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    external_id TEXT,
    parent_id   TEXT REFERENCES admin_areas(id),
    valid_until TEXT
);

CREATE TABLE locations (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    external_id            TEXT,
    administrative_area_id TEXT REFERENCES admin_areas(id),
    valid_until            TEXT,
    location_type          TEXT
);
"#;

/// Version 2: sync with central.
///
/// - `sync_state` (one row): what central acknowledged of this node's log, the downstream cursor
///   in central's feed, and the last success and error, for ops and for resuming after a cut.
/// - `sync_rejects`: entries of ours central refused (bounded; newest kept).
/// - `sync_down_rejects`: central entries this node could not apply (kept as evidence; the cursor
///   moves past them so one bad item cannot block every later pool grant or client).
/// - `revoked_nodes`: nodes central announced as revoked.
/// - `actions` is rebuilt so the idempotency key `(transactionId, type, status)` is unique among
///   this node's own actions only (`origin IS NULL`): two clinics' systems may well both use
///   transaction id `1`, and their actions meet here once synced.
const V2: &str = r#"
CREATE TABLE sync_state (
    id                  INTEGER PRIMARY KEY CHECK (id = 1),
    acked_seq           INTEGER NOT NULL DEFAULT 0,
    acked_hash          BLOB NOT NULL DEFAULT (zeroblob(32)),
    down_cursor         INTEGER NOT NULL DEFAULT 0,
    last_success_ms     INTEGER,
    last_error          TEXT,
    last_error_ms       INTEGER,
    rejects_total       INTEGER NOT NULL DEFAULT 0,
    down_rejects_total  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO sync_state (id) VALUES (1);

CREATE TABLE sync_rejects (
    seq     INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    detail  TEXT NOT NULL,
    at_ms   INTEGER NOT NULL,
    PRIMARY KEY (seq, reason)
) WITHOUT ROWID;

CREATE TABLE sync_down_rejects (
    central_seq INTEGER PRIMARY KEY,
    reason      TEXT NOT NULL,
    entry       BLOB NOT NULL,
    at_ms       INTEGER NOT NULL
);

CREATE TABLE revoked_nodes (
    node_id     TEXT PRIMARY KEY,
    central_seq INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE actions_v2 (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    event_id       TEXT NOT NULL REFERENCES events(id),
    action_type    TEXT NOT NULL,
    status         TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    request_hash   BLOB,
    log_seq        INTEGER REFERENCES log(seq) DEFERRABLE INITIALLY DEFERRED,
    origin         TEXT,
    body           TEXT NOT NULL
);
INSERT INTO actions_v2 (seq, id, event_id, action_type, status, transaction_id, request_hash,
                        log_seq, origin, body)
    SELECT seq, id, event_id, action_type, status, transaction_id, request_hash,
           log_seq, origin, body
    FROM actions;
DROP TABLE actions;
ALTER TABLE actions_v2 RENAME TO actions;
CREATE INDEX actions_event ON actions(event_id, seq);
CREATE UNIQUE INDEX actions_local_transaction
    ON actions(transaction_id, action_type, status) WHERE origin IS NULL;
"#;

/// Version 3: an index on `actions.log_seq`. Without it every log insert settles the deferred
/// foreign key `actions.log_seq → log.seq` by scanning all actions, and writes slow down as the
/// store grows (quadratic over a node's life).
const V3: &str = r#"
CREATE INDEX actions_log ON actions(log_seq);
"#;

/// Version 4: `log.bytes_through`, the total size of the entries up to and including this one,
/// so the bytes central has not acknowledged are two row lookups instead of a read of the whole
/// backlog (which after days offline is tens of megabytes on an SD card).
const V4: &str = r#"
ALTER TABLE log ADD COLUMN bytes_through INTEGER NOT NULL DEFAULT 0;
UPDATE log SET bytes_through = totals.through
  FROM (SELECT seq, sum(length(entry)) OVER (ORDER BY seq) AS through FROM log) AS totals
 WHERE totals.seq = log.seq;
"#;

/// Version 5: people. `users` holds the users central sent down (OpenCRVS's `User` as JSON and
/// the password hash, so they can log in here offline); `revoked_tokens` the tokens logged out
/// before they expire; `outbox` the notifications (login codes) waiting for their transport
/// (those two are [`accounts::TOKENS_AND_OUTBOX_DDL`], shared with central).
const V5: &str = r#"
CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    username          TEXT NOT NULL UNIQUE,
    user_json         TEXT NOT NULL,
    password_hash     TEXT NOT NULL,
    role              TEXT NOT NULL,
    status            TEXT NOT NULL,
    primary_office_id TEXT NOT NULL
);
"#;

/// Version 6: `assignment_notices`, assignments made here that a concurrent assignment made
/// elsewhere overtook once both met in a sync (the record lock went to the other user).
const V6: &str = r#"
CREATE TABLE assignment_notices (
    id        INTEGER PRIMARY KEY,
    event_id  TEXT NOT NULL,
    lost_by   TEXT NOT NULL,
    won_by    TEXT NOT NULL,
    at_ms     INTEGER NOT NULL
);
"#;

/// Version 7: `audit_log`, one row per read of a record, per search and per login or logout:
/// who (user or client), when, where (the user's office), what (operation, record, query).
const V7: &str = accounts::AUDIT_LOG_DDL;

/// Version 8: `drafts`, a user's unsubmitted work on an action (OpenCRVS's action drafts): one
/// per record and user, local to the node, dropped when the record gets any action other than
/// READ, ASSIGN or UNASSIGN.
const V8: &str = accounts::DRAFTS_DDL;

/// Upgrades `conn` to [`SCHEMA_VERSION`]; refuses a newer database.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if version < 1 {
        tx.execute_batch(V1)?;
    }
    if version < 2 {
        tx.execute_batch(V2)?;
    }
    if version < 3 {
        tx.execute_batch(V3)?;
    }
    if version < 4 {
        tx.execute_batch(V4)?;
    }
    if version < 5 {
        tx.execute_batch(V5)?;
        tx.execute_batch(accounts::TOKENS_AND_OUTBOX_DDL)?;
    }
    if version < 6 {
        tx.execute_batch(V6)?;
    }
    if version < 7 {
        tx.execute_batch(V7)?;
    }
    if version < 8 {
        tx.execute_batch(V8)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_fresh_db_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }

    /// A version-1 database with one event, its action and entry, upgraded in place.
    #[test]
    fn upgrades_a_version_1_database_keeping_its_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        // As the store opens every connection: the rebuild of `actions` runs under foreign keys.
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO log (seq, hash, entry) VALUES (1, x'01', x'02');
             INSERT INTO log (seq, hash, entry) VALUES (2, x'03', x'040506');
             INSERT INTO log (seq, hash, entry) VALUES (3, x'07', x'08090a0b');
             INSERT INTO events (id, event_type, tracking_id, transaction_id, request_hash,
                                 created_at, updated_at, status, index_json)
                 VALUES ('e1', 'birth', 'AAAAAA', 't1', x'00', 'c', 'c', 'CREATED', '{}');
             INSERT INTO actions (id, event_id, action_type, status, transaction_id, log_seq, body)
                 VALUES ('a1', 'e1', 'CREATE', 'Accepted', 't1', 1, '{}');
             INSERT INTO tracking_pool (tracking_id) VALUES ('BBBBBB');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'actions_log'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 1, "v3 indexes actions.log_seq");
        let totals: Vec<i64> = conn
            .prepare("SELECT bytes_through FROM log ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            totals,
            vec![1, 4, 8],
            "v4 keeps running totals of entry sizes"
        );
        let action: (String, String, Option<i64>, Option<String>) = conn
            .query_row(
                "SELECT id, event_id, log_seq, origin FROM actions",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(action, ("a1".into(), "e1".into(), Some(1), None));
        let state: (i64, Vec<u8>, i64) = conn
            .query_row(
                "SELECT acked_seq, acked_hash, down_cursor FROM sync_state",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(state, (0, vec![0; 32], 0));
        // The idempotency key is unique among this node's own actions only.
        let insert = |id: &str, origin: Option<&str>| {
            conn.execute(
                "INSERT INTO actions (id, event_id, action_type, status, transaction_id, origin, body)
                 VALUES (?1, 'e1', 'CREATE', 'Accepted', 't1', ?2, '{}')",
                rusqlite::params![id, origin],
            )
        };
        assert!(
            insert("a2", None).is_err(),
            "a local duplicate key is refused"
        );
        insert("a3", Some("other node")).unwrap();
        insert("a4", Some("third node")).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!tables.contains(&"actions_v2".to_owned()), "{tables:?}");
        assert!(tables.contains(&"sync_state".to_owned()), "{tables:?}");
    }

    /// A failing upgrade leaves the version-1 database as it was.
    #[test]
    fn a_failed_upgrade_rolls_back() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        // A table in the way makes V2 fail half-way.
        conn.execute_batch("CREATE TABLE revoked_nodes (x)")
            .unwrap();
        assert!(migrate(&mut conn).is_err());
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
        let sync_state: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'sync_state'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sync_state, 0);
    }

    #[test]
    fn refuses_newer_db_without_touching_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0);
    }
}
