//! Schema and migrations, versioned by `PRAGMA user_version`. A database newer than the code is
//! refused without being touched; upgrades run in one immediate transaction.

use rusqlite::Connection;

use super::StoreError;

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 1;

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
