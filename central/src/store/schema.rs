//! Schema and migrations, versioned by `PRAGMA user_version`. A database newer than the code is
//! refused without being touched; upgrades run in one immediate transaction.

use crvs_common::server::accounts;
use rusqlite::Connection;

use super::StoreError;

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 12;

/// Version 1: locations, clients, enrolled nodes and their logs, merged events and actions,
/// tracking-id leases, rejects and forks, and central's own signed log (the feed).
const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

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

CREATE TABLE clients (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at  TEXT NOT NULL
);

-- Enrolled nodes. `location_id` is checked at enrollment, not by a foreign key, so locations can
-- be replaced wholesale. Health columns are what the node last reported in `Hello`.
CREATE TABLE nodes (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    location_id        TEXT NOT NULL,
    admin_area_id      TEXT,
    cert_fingerprint   TEXT NOT NULL UNIQUE,
    enrolled_at_ms     INTEGER NOT NULL,
    revoked_at_ms      INTEGER,
    quarantined_at_ms  INTEGER,
    acked_seq          INTEGER NOT NULL DEFAULT 0,
    acked_hash         BLOB NOT NULL,
    down_cursor        INTEGER NOT NULL DEFAULT 0,
    last_contact_ms    INTEGER,
    reported_head_seq  INTEGER,
    backlog_entries    INTEGER,
    backlog_bytes      INTEGER,
    oldest_unacked_ms  INTEGER,
    rtt_ms             INTEGER,
    pool_free          INTEGER,
    rejects            INTEGER NOT NULL DEFAULT 0,
    forks              INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT,
    last_error_ms      INTEGER
);

-- Every node entry central applied, verbatim (signature included): gap-free per node from 1.
CREATE TABLE node_log (
    node_id       TEXT NOT NULL REFERENCES nodes(id),
    seq           INTEGER NOT NULL,
    hash          BLOB NOT NULL,
    entry         BLOB NOT NULL,
    applied_at_ms INTEGER NOT NULL,
    PRIMARY KEY (node_id, seq)
) WITHOUT ROWID;

CREATE TABLE events (
    id            TEXT PRIMARY KEY,
    event_type    TEXT NOT NULL,
    tracking_id   TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    -- The node that created the event (hex id).
    origin        TEXT NOT NULL,
    -- The administrative area of the creating location: decides which nodes receive relays.
    admin_area_id TEXT,
    -- Derived from the actions and the merge document on every write (never the truth).
    status        TEXT NOT NULL,
    index_json    TEXT NOT NULL,
    conflicts     INTEGER NOT NULL DEFAULT 0,
    crdt          BLOB
);
CREATE INDEX events_conflicts ON events(conflicts) WHERE conflicts > 0;

-- Append-only: rows are never updated or deleted. Idempotent by action id.
CREATE TABLE actions (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    event_id    TEXT NOT NULL REFERENCES events(id),
    action_type TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    -- The node whose entry carried the action, and that entry's seq.
    origin      TEXT NOT NULL,
    origin_seq  INTEGER NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX actions_event ON actions(event_id, seq);

-- Nationally unique tracking ids: the primary key is the guarantee. Leased to one node; used
-- once its CREATE is applied.
CREATE TABLE tracking_ids (
    id            TEXT PRIMARY KEY,
    node_id       TEXT NOT NULL REFERENCES nodes(id),
    granted_at_ms INTEGER NOT NULL,
    event_id      TEXT
) WITHOUT ROWID;
CREATE INDEX tracking_ids_unused ON tracking_ids(node_id) WHERE event_id IS NULL;

CREATE TABLE rejects (
    id      INTEGER PRIMARY KEY,
    node_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    detail  TEXT NOT NULL,
    entry   BLOB NOT NULL,
    at_ms   INTEGER NOT NULL
);
CREATE INDEX rejects_node ON rejects(node_id, id);

-- Evidence of a fork: the entry central applied and the other one with the same seq.
CREATE TABLE forks (
    id           INTEGER PRIMARY KEY,
    node_id      TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    stored_entry BLOB,
    other_entry  BLOB NOT NULL,
    at_ms        INTEGER NOT NULL
);

-- Central's own signed, hash-chained log: the feed nodes receive, filtered by audience.
CREATE TABLE central_log (
    seq            INTEGER PRIMARY KEY,
    hash           BLOB NOT NULL UNIQUE,
    hlc_wall_ms    INTEGER NOT NULL,
    hlc_counter    INTEGER NOT NULL,
    kind           TEXT NOT NULL,
    audience_kind  TEXT NOT NULL CHECK (audience_kind IN ('all', 'node', 'area')),
    audience_value TEXT,
    origin         TEXT,
    entry          BLOB NOT NULL
);
"#;

/// Version 2: a relay row of central's log may be stored compact. `relay_seq` is then the relayed
/// entry's seq in `node_log` (node `origin`), and `entry` is central's entry with an empty action:
/// the action (the `relay` record carrying that entry's bytes) is rebuilt on read and checked
/// against `hash`. The relayed bytes are stored once, not twice (hex in the feed).
const V2: &str = r#"
ALTER TABLE central_log ADD COLUMN relay_seq INTEGER;
"#;

/// Version 3: users (OpenCRVS's `User` as JSON, plus the columns looked up by): the source of
/// truth for people; each change is also a `user` record in central's log for the nodes.
const V3: &str = r#"
CREATE TABLE users (
    id                TEXT PRIMARY KEY,
    username          TEXT NOT NULL UNIQUE,
    user_json         TEXT NOT NULL,
    password_hash     TEXT NOT NULL,
    role              TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('active', 'deactivated', 'pending')),
    primary_office_id TEXT NOT NULL,
    mobile            TEXT,
    created_at        TEXT NOT NULL
);
CREATE INDEX users_office ON users (primary_office_id);
CREATE INDEX users_mobile ON users (mobile) WHERE mobile IS NOT NULL;
"#;

/// Version 4: the account tables shared with the node ([`accounts`]): logged-out tokens, the
/// outbox of login codes and invitations, and the audit trail; and users' security answers
/// (argon2id of the lower-cased answer), which stay at central: account recovery is done here.
fn v4(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(accounts::TOKENS_AND_OUTBOX_DDL)?;
    tx.execute_batch(accounts::AUDIT_LOG_DDL)?;
    tx.execute_batch(
        "CREATE TABLE security_answers (
             user_id      TEXT NOT NULL,
             question_key TEXT NOT NULL,
             answer_hash  TEXT NOT NULL,
             PRIMARY KEY (user_id, question_key)
         ) WITHOUT ROWID;",
    )
}

/// Version 5: registration numbers, one per event and per requested REGISTER (both unique, and
/// the number itself the key), and the counters of counted formats, one per year and prefix.
const V5: &str = r#"
CREATE TABLE registration_numbers (
    number              TEXT PRIMARY KEY,
    event_id            TEXT NOT NULL UNIQUE,
    requested_action_id TEXT NOT NULL UNIQUE,
    issued_at_ms        INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE registration_counters (
    scope TEXT PRIMARY KEY,
    last  INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// Version 6: the requests behind actions people make at central, by `transactionId` and
/// action type, with the hash of what was asked: a replay answers the record, a different
/// request with the same id is refused.
const V6: &str = r#"
CREATE TABLE action_requests (
    transaction_id TEXT NOT NULL,
    action_type    TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    request_hash   BLOB NOT NULL,
    PRIMARY KEY (transaction_id, action_type)
) WITHOUT ROWID;
"#;

/// Version 7: the dates duplicate rules look records up by (`child.dob`, `mother.dob`, ...),
/// per event type and field; rebuilt from the event index when the rules change.
const V7: &str = r#"
CREATE TABLE dedup_dates (
    event_id   TEXT NOT NULL,
    event_type TEXT NOT NULL,
    field_id   TEXT NOT NULL,
    date       TEXT NOT NULL,
    PRIMARY KEY (event_id, field_id)
) WITHOUT ROWID;
CREATE INDEX dedup_dates_window ON dedup_dates(event_type, field_id, date);
"#;

/// Version 8: the confirmation hook's queue, one row per requested action a hook must answer:
/// `due` (to call at `next_at_ms`; `last_error` from the previous attempt) or `waiting` (the
/// hook answered 202; its callback answers).
const V8: &str = r#"
CREATE TABLE hook_jobs (
    action_id  TEXT PRIMARY KEY,
    event_id   TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('due', 'waiting')),
    attempts   INTEGER NOT NULL,
    next_at_ms INTEGER NOT NULL,
    last_error TEXT
) WITHOUT ROWID;
CREATE INDEX hook_jobs_due ON hook_jobs(state, next_at_ms);
"#;

/// Version 9: the national search index ([`super::search`]), filed for the events already
/// stored.
fn v9(tx: &Connection) -> Result<(), StoreError> {
    tx.execute_batch(super::search::DDL)?;
    super::search::rebuild(tx)
}

/// Version 10: central holds tracking ids too (the records its users create and the ones imported
/// at central), so `tracking_ids.node_id` names the holder, a node or central itself, without a
/// foreign key to `nodes` (the table is rebuilt; the primary key still makes every id
/// nationally unique); and people's drafts at central ([`accounts::DRAFTS_DDL`]).
fn v10(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE tracking_ids_v10 (
             id            TEXT PRIMARY KEY,
             node_id       TEXT NOT NULL,
             granted_at_ms INTEGER NOT NULL,
             event_id      TEXT
         ) WITHOUT ROWID;
         INSERT INTO tracking_ids_v10 (id, node_id, granted_at_ms, event_id)
             SELECT id, node_id, granted_at_ms, event_id FROM tracking_ids;
         DROP TABLE tracking_ids;
         ALTER TABLE tracking_ids_v10 RENAME TO tracking_ids;
         CREATE INDEX tracking_ids_unused ON tracking_ids(node_id) WHERE event_id IS NULL;",
    )?;
    tx.execute_batch(accounts::DRAFTS_DDL)
}

/// Version 11: the search index is filed, and applied entries relayed, behind the writes
/// ([`super::search::PENDING_DDL`]).
const V11: &str = super::search::PENDING_DDL;

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
        v4(&tx)?;
    }
    if version < 5 {
        tx.execute_batch(V5)?;
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
    if version < 9 {
        v9(&tx)?;
    }
    if version < 10 {
        v10(&tx)?;
    }
    if version < 11 {
        tx.execute_batch(V11)?;
    }
    // Version 12 changes no table: from it on, the `actions` rows of a node's actions have an
    // empty `body` (the action is in the node's entry in `node_log`; `Body::InNodeLog`). Code
    // before it would fail to read them, so it must refuse such a database.
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
