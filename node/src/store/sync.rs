//! The store's side of sync: what the sync engine reads (the node's log, what central
//! acknowledged, health) and writes (central's downstream entries, acknowledgements, errors).
//!
//! [`SyncStore`] implements [`crvs_sync::engine::NodeStore`]. It reads on a read-only connection
//! of its own and writes through the writer thread ([`Store::write_blocking`]), so the writer stays
//! the only writer of the node's log, its cached log head is never stale, and every mutating call
//! is durable on return (it waits for the fsync after the group's COMMIT). It offers central only
//! entries up to the durable head ([`Store::durable_seq`]). Its methods block: the sync driver calls
//! them on `spawn_blocking` threads.
//!
//! Downstream items are applied one savepoint each inside the one job of a `Down` batch: an item
//! whose content cannot be applied (a record kind this node does not know, a relayed entry that
//! does not verify, a tracking id clash) is rolled back alone, recorded in `sync_down_rejects`
//! and skipped, so one bad item cannot block every later pool grant; a storage failure fails the
//! whole batch and the cursor does not move.

use crvs_common::event::{ActionDocument, ActionType, EntryPayload};
use crvs_common::feed::CentralRecord;
use crvs_common::hlc::Hlc;
use crvs_common::ids::TrackingId;
use crvs_common::limits::truncate_utf8 as truncate;
use crvs_common::log::{EntryHash, LogEntry, LogHead, NodeId};
use crvs_common::scope::ScopeSet;
use crvs_common::state::assigned_to;
use crvs_sync::engine::{NodeHealth, NodeStore, StoreFault};
use crvs_sync::merge::{EventCrdt, actor_for};
use crvs_sync::wire::Reject;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use super::{ReadCtx, Store, StoreError, WriteCtx, open_connection};

/// Prefix of the `transaction_id` given to events that arrived by sync: their create request was
/// made elsewhere, so no local idempotency key may find them (a local replay of such a key
/// answers 409, because the stored request hash is empty).
pub const SYNCED_EVENT_TRANSACTION_PREFIX: &str = "synced:";

/// Entries refused by central that are kept for ops (newest first).
pub const SYNC_REJECTS_KEPT: usize = 256;

/// Downstream items this node could not apply that are kept as evidence (newest first). Each
/// keeps the whole entry, so the bound is small.
pub const DOWN_REJECTS_KEPT: usize = 100;

/// Longest error text stored in `sync_state.last_error`, in bytes.
pub const SYNC_ERROR_BYTES_MAX: usize = 1024;

/// Sync bookkeeping as stored (`sync_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncState {
    /// The last entry of this node that central acknowledged (durably applied).
    pub acked: LogHead,
    /// Position in central's feed up to which downstream entries are applied.
    pub down_cursor: u64,
    /// Last time central welcomed or acknowledged without refusing anything, ms since the epoch.
    pub last_success_ms: Option<u64>,
    /// Last sync error (refused entry, failed connection, goodbye).
    pub last_error: Option<String>,
    /// When it happened, ms since the epoch.
    pub last_error_ms: Option<u64>,
    /// Entries central refused, in total.
    pub rejects_total: u64,
    /// Downstream items this node could not apply, in total.
    pub down_rejects_total: u64,
}

/// Where a stored action came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionOrigin {
    /// `None` for this node's own actions, else the writer's id (hex): another node, or central.
    pub origin: Option<String>,
    /// The entry of this node's log that carried it (own actions only).
    pub log_seq: Option<u64>,
}

/// What applying one `Down` batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownReport {
    /// Items applied.
    pub applied: usize,
    /// Items skipped and recorded in `sync_down_rejects`, with the reason.
    pub rejected: Vec<(u64, String)>,
}

/// The sync engine's store: a read connection of its own plus the shared writer.
#[allow(missing_debug_implementations, reason = "holds a connection")]
pub struct SyncStore {
    conn: Connection,
    store: Store,
    central_id: NodeId,
}

impl Store {
    /// A [`SyncStore`] for a session with the central whose feed is signed by `central_id`.
    pub fn sync_store(&self, central_id: NodeId) -> Result<SyncStore, StoreError> {
        let conn = open_connection(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Ok(SyncStore {
            conn,
            store: self.clone(),
            central_id,
        })
    }
}

impl SyncStore {
    fn reader(&self) -> ReadCtx<'_> {
        ReadCtx { conn: &self.conn }
    }

    /// Records a failure of the link or session (for `/api/sync/status`). Blocking.
    pub fn record_error(&self, message: String, now_ms: u64) -> Result<(), StoreError> {
        self.store
            .write_blocking(move |ctx| ctx.record_sync_error(&message, now_ms))
    }
}

fn fault(e: StoreError) -> StoreFault {
    StoreFault(e.to_string())
}

impl NodeStore for SyncStore {
    /// The durable head: entries committed but not yet fsynced are not offered to central
    /// (after a power loss the node could no longer prove them, and would fork).
    fn log_head(&self) -> Result<LogHead, StoreFault> {
        self.reader()
            .log_head_at_most(self.store.durable_seq())
            .map_err(fault)
    }

    fn hash_at(&self, seq: u64) -> Result<Option<EntryHash>, StoreFault> {
        self.reader().log_hash_at(seq).map_err(fault)
    }

    fn entries_after(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, StoreFault> {
        let durable = self.store.durable_seq();
        let mut entries = self
            .reader()
            .log_entries_bounded(after, max_entries, max_bytes)
            .map_err(fault)?;
        entries.retain(|e| e.seq <= durable);
        Ok(entries)
    }

    fn down_cursor(&self) -> Result<u64, StoreFault> {
        Ok(self.reader().sync_state().map_err(fault)?.down_cursor)
    }

    fn apply_down(&mut self, items: &[LogEntry], to_cursor: u64) -> Result<(), StoreFault> {
        let items = items.to_vec();
        let central_id = self.central_id;
        let report = self
            .store
            .write_blocking(move |ctx| ctx.apply_down(&items, to_cursor, central_id))
            .map_err(fault)?;
        for (seq, reason) in &report.rejected {
            tracing::warn!(central_seq = seq, %reason, "downstream item skipped");
        }
        Ok(())
    }

    fn record_ack(
        &mut self,
        acked: LogHead,
        rejects: &[Reject],
        now_ms: u64,
    ) -> Result<(), StoreFault> {
        let rejects = rejects.to_vec();
        self.store
            .write_blocking(move |ctx| ctx.record_ack(acked, &rejects, now_ms))
            .map_err(fault)
    }

    fn health(&self, now_ms: u64) -> Result<NodeHealth, StoreFault> {
        self.reader().node_health(now_ms).map_err(fault)
    }
}

impl ReadCtx<'_> {
    /// The sync bookkeeping row.
    pub fn sync_state(&self) -> Result<SyncState, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT acked_seq, acked_hash, down_cursor, last_success_ms, last_error,
                        last_error_ms, rejects_total, down_rejects_total
                 FROM sync_state WHERE id = 1",
            )?
            .query_row([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?;
        let (acked_seq, hash, down_cursor, success, error, error_ms, rejects, down_rejects) = row;
        Ok(SyncState {
            acked: LogHead {
                seq: acked_seq as u64,
                hash: hash_of(hash)?,
            },
            down_cursor: down_cursor as u64,
            last_success_ms: success.map(|v| v as u64),
            last_error: error,
            last_error_ms: error_ms.map(|v| v as u64),
            rejects_total: rejects as u64,
            down_rejects_total: down_rejects as u64,
        })
    }

    /// The node's log head as committed.
    pub fn log_head(&self) -> Result<LogHead, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT seq, hash FROM log ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            None => Ok(LogHead::GENESIS),
            Some((seq, hash)) => Ok(LogHead {
                seq: seq as u64,
                hash: hash_of(hash)?,
            }),
        }
    }

    /// The node's head among entries up to `max_seq`.
    pub fn log_head_at_most(&self, max_seq: u64) -> Result<LogHead, StoreError> {
        let max_seq = i64::try_from(max_seq).unwrap_or(i64::MAX);
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT seq, hash FROM log WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1")?
            .query_row(params![max_seq], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            None => Ok(LogHead::GENESIS),
            Some((seq, hash)) => Ok(LogHead {
                seq: seq as u64,
                hash: hash_of(hash)?,
            }),
        }
    }

    /// The hash of the node's entry `seq`.
    pub fn log_hash_at(&self, seq: u64) -> Result<Option<EntryHash>, StoreError> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        let hash: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT hash FROM log WHERE seq = ?1")?
            .query_row(params![seq], |r| r.get(0))
            .optional()?;
        hash.map(hash_of).transpose()
    }

    /// Entries after `after`, in order: at most `max_entries`, and stopping once `max_bytes` of
    /// encodings are collected (always at least one entry if any exists).
    pub fn log_entries_bounded(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, hash, entry FROM log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let limit = i64::try_from(max_entries).unwrap_or(i64::MAX);
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![after, limit])?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Rows are stepped lazily: nothing past the byte bound is read.
        while bytes < max_bytes
            && let Some(row) = rows.next()?
        {
            let seq: i64 = row.get(0)?;
            let hash: Vec<u8> = row.get(1)?;
            let encoded: Vec<u8> = row.get(2)?;
            let entry = decode_own_entry(seq, &hash, &encoded)?;
            bytes += encoded.len();
            out.push(entry);
        }
        Ok(out)
    }

    /// Health figures: free ids, what central has not acknowledged, and how old it is.
    pub fn node_health(&self, now_ms: u64) -> Result<NodeHealth, StoreError> {
        let acked = self.sync_state()?.acked.seq;
        let head = self.log_head()?.seq;
        let acked = i64::try_from(acked.min(head)).unwrap_or(i64::MAX);
        // Running totals (schema v4): two lookups, however long the backlog.
        let through = |seq: i64| -> Result<i64, StoreError> {
            Ok(self
                .conn
                .prepare_cached("SELECT bytes_through FROM log WHERE seq = ?1")?
                .query_row(params![seq], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        };
        let head_seq = i64::try_from(head).unwrap_or(i64::MAX);
        let backlog_bytes = through(head_seq)?.saturating_sub(through(acked)?).max(0);
        let oldest: Option<(i64, Vec<u8>, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT seq, hash, entry FROM log WHERE seq > ?1 ORDER BY seq LIMIT 1")?
            .query_row(params![acked], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let oldest_unacked_ms = match oldest {
            None => 0,
            Some((seq, hash, bytes)) => {
                let entry = decode_own_entry(seq, &hash, &bytes)?;
                now_ms.saturating_sub(entry.hlc.wall_ms)
            }
        };
        Ok(NodeHealth {
            pool_free: u32::try_from(self.pool_free()?).unwrap_or(u32::MAX),
            backlog_entries: head.saturating_sub(acked as u64),
            backlog_bytes: backlog_bytes as u64,
            oldest_unacked_ms,
        })
    }

    /// Number of events held (own and synced).
    pub fn event_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM events")?
            .query_row([], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Entries of ours central refused, newest first.
    pub fn sync_rejects(&self) -> Result<Vec<Reject>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, reason, detail FROM sync_rejects ORDER BY at_ms DESC, seq DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Reject {
                seq: r.get::<_, i64>(0)? as u64,
                reason: r.get(1)?,
                detail: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Downstream items skipped, newest first: central seq and reason.
    pub fn down_rejects(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT central_seq, reason FROM sync_down_rejects ORDER BY central_seq DESC",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Nodes central announced as revoked (hex ids).
    pub fn revoked_nodes(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT node_id FROM revoked_nodes ORDER BY node_id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Where an action came from (`None` if there is no such action).
    pub fn action_origin(&self, action_id: uuid::Uuid) -> Result<Option<ActionOrigin>, StoreError> {
        let row: Option<(Option<String>, Option<i64>)> = self
            .conn
            .prepare_cached("SELECT origin, log_seq FROM actions WHERE id = ?1")?
            .query_row(params![action_id.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(row.map(|(origin, seq)| ActionOrigin {
            origin,
            log_seq: seq.map(|s| s as u64),
        }))
    }
}

fn hash_of(bytes: Vec<u8>) -> Result<EntryHash, StoreError> {
    let hash: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("stored hash is not 32 bytes".into()))?;
    Ok(EntryHash(hash))
}

fn decode_own_entry(seq: i64, hash: &[u8], bytes: &[u8]) -> Result<LogEntry, StoreError> {
    let entry = LogEntry::decode(bytes)
        .map_err(|e| StoreError::Corrupt(format!("log entry {seq}: {e}")))?;
    if entry.seq != seq as u64 || entry.hash().0.as_slice() != hash {
        return Err(StoreError::Corrupt(format!(
            "log entry {seq} does not match its row"
        )));
    }
    Ok(entry)
}

/// Why one downstream item was not applied.
enum ItemError {
    /// Its content cannot be applied here: skip it and keep it as evidence.
    Content(String),
    /// Storage failed: fail the batch.
    Store(StoreError),
}

impl From<StoreError> for ItemError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Sqlite(e) => Self::from(e),
            other => Self::Store(other),
        }
    }
}

impl From<rusqlite::Error> for ItemError {
    fn from(e: rusqlite::Error) -> Self {
        // A constraint violation is about the item's content (an id clash); anything else is the
        // store's problem.
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Self::Content(format!("constraint: {e}"))
            }
            _ => Self::Store(StoreError::Sqlite(e)),
        }
    }
}

fn content(what: &str, e: impl std::fmt::Display) -> ItemError {
    ItemError::Content(format!("{what}: {e}"))
}

impl WriteCtx<'_> {
    /// Applies central's entries (signatures already verified by the session) and moves the
    /// downstream cursor to `to_cursor`, all in this job's savepoint.
    pub fn apply_down(
        &mut self,
        items: &[LogEntry],
        to_cursor: u64,
        central_id: NodeId,
    ) -> Result<DownReport, StoreError> {
        let mut report = DownReport::default();
        for item in items {
            if item.node_id != central_id {
                return Err(StoreError::Corrupt(
                    "downstream entry not signed by central".into(),
                ));
            }
            self.conn.execute_batch("SAVEPOINT down_item")?;
            match self.apply_down_item(item) {
                Ok(()) => {
                    self.conn.execute_batch("RELEASE down_item")?;
                    report.applied += 1;
                }
                Err(ItemError::Content(reason)) => {
                    self.conn
                        .execute_batch("ROLLBACK TO down_item; RELEASE down_item")?;
                    self.record_down_reject(item, &reason)?;
                    report.rejected.push((item.seq, reason));
                }
                Err(ItemError::Store(e)) => {
                    let _ = self
                        .conn
                        .execute_batch("ROLLBACK TO down_item; RELEASE down_item");
                    return Err(e);
                }
            }
        }
        let cursor = i64::try_from(to_cursor)
            .map_err(|_| StoreError::Corrupt(format!("cursor {to_cursor} out of range")))?;
        self.conn
            .prepare_cached(
                "UPDATE sync_state SET down_cursor = ?1,
                        down_rejects_total = down_rejects_total + ?2 WHERE id = 1",
            )?
            .execute(params![cursor, report.rejected.len() as i64])?;
        Ok(report)
    }

    fn apply_down_item(&mut self, item: &LogEntry) -> Result<(), ItemError> {
        let record: CentralRecord =
            serde_json::from_slice(&item.action).map_err(|e| content("record", e))?;
        match record {
            CentralRecord::Relay { origin, entry } => {
                let bytes = hex::decode(entry).map_err(|e| content("relayed entry hex", e))?;
                let relayed = LogEntry::decode(&bytes).map_err(|e| content("relayed entry", e))?;
                if relayed.node_id.to_string() != origin {
                    return Err(ItemError::Content(
                        "relayed entry is not signed by its named origin".into(),
                    ));
                }
                relayed
                    .verify_signature()
                    .map_err(|e| content("relayed entry", e))?;
                if relayed.node_id == self.key.node_id() {
                    // Our own entry coming back: everything in it is here already.
                    return Ok(());
                }
                let payload: EntryPayload = serde_json::from_slice(&relayed.action)
                    .map_err(|e| content("relayed payload", e))?;
                if payload.event_id != relayed.event_id {
                    return Err(ItemError::Content(
                        "relayed payload names another event than its entry".into(),
                    ));
                }
                self.merge_remote(
                    &payload,
                    relayed.crdt_change.as_deref(),
                    &origin,
                    relayed.hlc,
                )
            }
            CentralRecord::Actions(payload) => {
                if payload.event_id != item.event_id {
                    return Err(ItemError::Content(
                        "central's payload names another event than its entry".into(),
                    ));
                }
                let origin = item.node_id.to_string();
                self.merge_remote(&payload, item.crdt_change.as_deref(), &origin, item.hlc)
            }
            CentralRecord::Client {
                id,
                name,
                secret_hash,
                scopes,
                status,
                created_at,
            } => {
                ScopeSet::parse_all(&scopes).map_err(|e| content("client scopes", e))?;
                if !secret_hash.starts_with("$argon2id$") {
                    return Err(ItemError::Content(
                        "client secret hash is not an argon2id PHC string".into(),
                    ));
                }
                let scopes = serde_json::to_string(&scopes)
                    .map_err(|e| ItemError::Store(StoreError::Corrupt(e.to_string())))?;
                self.conn
                    .prepare_cached(
                        "INSERT INTO clients (id, name, secret_hash, scopes, status, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT(id) DO UPDATE SET name = excluded.name,
                             secret_hash = excluded.secret_hash, scopes = excluded.scopes,
                             status = excluded.status, created_at = excluded.created_at",
                    )?
                    .execute(params![id, name, secret_hash, scopes, status, created_at])?;
                Ok(())
            }
            CentralRecord::User {
                user,
                username,
                password_hash,
            } => {
                let problems = user.problems();
                if let Some(problem) = problems.first() {
                    return Err(ItemError::Content(format!(
                        "user {}: {}: {}",
                        user.id,
                        problem.field(),
                        problem.message()
                    )));
                }
                crvs_common::user::validate_username(&username)
                    .map_err(|e| ItemError::Content(format!("username: {}", e.message())))?;
                if !password_hash.is_empty() && !password_hash.starts_with("$argon2id$") {
                    return Err(ItemError::Content(
                        "user password hash is not an argon2id PHC string".into(),
                    ));
                }
                super::users::put_user(self.conn, &user, &username, &password_hash)?;
                Ok(())
            }
            CentralRecord::Locations(set) => {
                set.check().map_err(|e| content("locations", e))?;
                self.replace_locations(&set)?;
                Ok(())
            }
            CentralRecord::PoolGrant {
                node_id,
                tracking_ids,
            } => {
                if node_id != self.key.node_id().to_string() {
                    // Another node's lease: never ours to use.
                    return Ok(());
                }
                let mut stmt = self.conn.prepare_cached(
                    "INSERT OR IGNORE INTO tracking_pool (tracking_id) VALUES (?1)",
                )?;
                for raw in &tracking_ids {
                    let id: TrackingId = raw
                        .parse()
                        .map_err(|_| content("pool grant", format!("bad tracking id {raw:?}")))?;
                    stmt.execute(params![id.as_str()])?;
                }
                Ok(())
            }
            CentralRecord::NodeRevoked { node_id } => {
                node_id
                    .parse::<NodeId>()
                    .map_err(|e| content("revoked node id", e))?;
                self.conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO revoked_nodes (node_id, central_seq) VALUES (?1, ?2)",
                    )?
                    .execute(params![node_id, item.seq as i64])?;
                Ok(())
            }
        }
    }

    /// Records actions written elsewhere (another node, or central) on an event: creates the event
    /// row if it is new here, inserts each action once (by id), applies the writer's automerge
    /// change and refreshes the derived index.
    fn merge_remote(
        &mut self,
        payload: &EntryPayload,
        change: Option<&[u8]>,
        origin: &str,
        hlc: Hlc,
    ) -> Result<(), ItemError> {
        if let Err(e) = self.hlc.observe(hlc, self.now_ms) {
            // A clock far ahead elsewhere must not drag ours along; the entry still applies.
            tracing::warn!(error = %e, "downstream entry's clock not observed");
        }
        let event_id = payload.event_id.to_string();
        let known: Option<String> = self
            .conn
            .prepare_cached("SELECT event_type FROM events WHERE id = ?1")?
            .query_row(params![event_id], |r| r.get(0))
            .optional()?;
        match known {
            Some(t) if t != payload.event_type => {
                return Err(ItemError::Content(format!(
                    "event {event_id} is a {t} here, not a {}",
                    payload.event_type
                )));
            }
            Some(_) => {}
            None => {
                payload
                    .tracking_id
                    .parse::<TrackingId>()
                    .map_err(|_| content("tracking id", &payload.tracking_id))?;
                self.conn
                    .prepare_cached(
                        "INSERT INTO events (id, event_type, tracking_id, transaction_id, request_hash,
                                             created_at, updated_at, status, index_json)
                         VALUES (?1, ?2, ?3, ?4, x'', ?5, ?5, 'CREATED', '{}')",
                    )?
                    .execute(params![
                        event_id,
                        payload.event_type,
                        payload.tracking_id,
                        format!("{SYNCED_EVENT_TRANSACTION_PREFIX}{event_id}"),
                        payload.event_created_at
                    ])?;
                // Never hand out an id that is already some record's, even if central leased it.
                self.conn
                    .prepare_cached(
                        "UPDATE tracking_pool SET event_id = ?1 WHERE tracking_id = ?2 AND event_id IS NULL",
                    )?
                    .execute(params![event_id, payload.tracking_id])?;
            }
        }
        let assignee_before = match known {
            Some(_) => self
                .reader()
                .event_document(payload.event_id)?
                .and_then(|doc| assigned_to(&doc.actions)),
            None => None,
        };
        for action in &payload.actions {
            self.insert_remote_action(&event_id, action, origin)?;
        }
        let actor = actor_for(self.key.node_id().as_bytes());
        let stored: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT crdt FROM events WHERE id = ?1")?
            .query_row(params![event_id], |r| r.get(0))?;
        let mut crdt = match stored {
            Some(bytes) => EventCrdt::load(&bytes, actor).map_err(|e| {
                ItemError::Store(StoreError::Corrupt(format!("crdt of {event_id}: {e}")))
            })?,
            None => EventCrdt::new(actor),
        };
        if let Some(change) = change {
            crdt.apply_change(change)
                .map_err(|e| content("automerge change", e))?;
        }
        self.conn
            .prepare_cached("UPDATE events SET crdt = ?1 WHERE id = ?2")?
            .execute(params![crdt.save(), event_id])?;
        let doc = self
            .reader()
            .event_document(payload.event_id)?
            .ok_or_else(|| ItemError::Store(StoreError::Corrupt("event vanished".into())))?;
        if payload
            .actions
            .iter()
            .any(|a| crvs_common::server::drafts::clears_drafts(a.action_type))
        {
            super::audit::clear_drafts(self.conn, &event_id)?;
        }
        let assignee_after = assigned_to(&doc.actions);
        if let (Some(lost_by), Some(won_by)) = (&assignee_before, &assignee_after)
            && lost_by != won_by
            && payload
                .actions
                .iter()
                .any(|a| a.action_type == ActionType::Assign)
        {
            super::users::record_lost_assignment(
                self.conn,
                &event_id,
                lost_by,
                won_by,
                self.now_ms,
            )?;
            tracing::warn!(event = %event_id, %lost_by, %won_by, "a concurrent assignment made elsewhere won the record lock");
        }
        self.refresh_index_with(doc, &crdt)?;
        Ok(())
    }

    fn insert_remote_action(
        &mut self,
        event_id: &str,
        action: &ActionDocument,
        origin: &str,
    ) -> Result<(), ItemError> {
        let body = serde_json::to_string(action).map_err(|e| content("action", e))?;
        self.conn
            .prepare_cached(
                "INSERT INTO actions (id, event_id, action_type, status, transaction_id,
                                      request_hash, log_seq, origin, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6, ?7)
                 ON CONFLICT(id) DO NOTHING",
            )?
            .execute(params![
                action.id.to_string(),
                event_id,
                action.action_type.as_str(),
                action.status.as_str(),
                action.transaction_id,
                origin,
                body
            ])?;
        Ok(())
    }

    fn record_down_reject(&mut self, item: &LogEntry, reason: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO sync_down_rejects (central_seq, reason, entry, at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                item.seq as i64,
                truncate(reason, SYNC_ERROR_BYTES_MAX),
                item.encode(),
                self.now_ms as i64
            ])?;
        self.conn
            .prepare_cached(
                "DELETE FROM sync_down_rejects WHERE central_seq NOT IN
                     (SELECT central_seq FROM sync_down_rejects ORDER BY central_seq DESC LIMIT ?1)",
            )?
            .execute(params![DOWN_REJECTS_KEPT as i64])?;
        Ok(())
    }

    /// Records what central acknowledged, and what it refused.
    pub fn record_ack(
        &mut self,
        acked: LogHead,
        rejects: &[Reject],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let seq = i64::try_from(acked.seq)
            .map_err(|_| StoreError::Corrupt(format!("acked seq {} out of range", acked.seq)))?;
        self.conn
            .prepare_cached("UPDATE sync_state SET acked_seq = ?1, acked_hash = ?2 WHERE id = 1")?
            .execute(params![seq, acked.hash.0.as_slice()])?;
        let Some(first) = rejects.first() else {
            self.conn
                .prepare_cached("UPDATE sync_state SET last_success_ms = ?1 WHERE id = 1")?
                .execute(params![now_ms as i64])?;
            return Ok(());
        };
        for reject in rejects {
            self.conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO sync_rejects (seq, reason, detail, at_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    reject.seq as i64,
                    truncate(&reject.reason, SYNC_ERROR_BYTES_MAX),
                    truncate(&reject.detail, SYNC_ERROR_BYTES_MAX),
                    now_ms as i64
                ])?;
        }
        self.conn
            .prepare_cached(
                "DELETE FROM sync_rejects WHERE (seq, reason) NOT IN
                     (SELECT seq, reason FROM sync_rejects ORDER BY at_ms DESC, seq DESC LIMIT ?1)",
            )?
            .execute(params![SYNC_REJECTS_KEPT as i64])?;
        self.conn
            .prepare_cached(
                "UPDATE sync_state SET rejects_total = rejects_total + ?1 WHERE id = 1",
            )?
            .execute(params![rejects.len() as i64])?;
        let message = format!(
            "central refused entry {}: {} ({})",
            first.seq, first.reason, first.detail
        );
        self.record_sync_error(&message, now_ms)
    }

    /// Records the last sync error.
    pub fn record_sync_error(&mut self, message: &str, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE sync_state SET last_error = ?1, last_error_ms = ?2 WHERE id = 1",
            )?
            .execute(params![
                truncate(message, SYNC_ERROR_BYTES_MAX),
                now_ms as i64
            ])?;
        Ok(())
    }

    /// Enrollment: drops the free, self-generated tracking ids (they were never leased
    /// nationally). Returns how many were dropped.
    pub fn discard_free_pool(&mut self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM tracking_pool WHERE event_id IS NULL", [])? as u64)
    }
}

#[cfg(test)]
mod tests;
