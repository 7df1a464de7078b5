//! Central's persistence: one SQLite file in WAL mode with `synchronous=FULL`, owned here. SQL
//! text lives only in this module; callers use domain-level methods.
//!
//! Every write runs in its own `BEGIN IMMEDIATE` transaction on the one writer connection and
//! returns only after COMMIT (an acknowledged write is on disk). The one exception is the apply
//! of a quiet batch of node entries ([`Store::write_deferred`]): its fsync is left to
//! [`Store::make_durable`], and the sync server sends nothing after it before that. Central's
//! log head is read inside each write transaction, never cached: operator commands (`client
//! add`, `node revoke`) append to the same log from another process while `run` serves. Reads
//! use a small pool of read connections. [`Store`] implements
//! [`crvs_sync::engine::CentralStore`] for the sync sessions.

mod dedup;
mod hooks;
mod prepare;
mod read;
mod records;
mod register;
mod schema;
mod search;
mod write;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crvs_common::log::{CheckedEntry, EntryHash, LogEntry, LogHead, NodeId, NodeSecretKey};
use crvs_common::server::wal::WalFile;
use crvs_sync::engine::{CentralStore, NodeRecord, StoreFault};
use crvs_sync::wire::{Hello, Reject};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, TransactionBehavior, params};

pub use dedup::{DEDUP_CANDIDATES_MAX, Registration};
pub use hooks::{ActionHook, Answered, HookAnswer, HookJob};
pub use prepare::{PREPARED_BYTES_MAX, PREPARED_ENTRIES_MAX, Prepared, PreparedCache};
pub use read::ReadCtx;
pub use records::Brought;
pub use schema::SCHEMA_VERSION;
pub use search::{Ancestry, Visible};
pub use write::WriteTx;

/// Read connections kept open.
pub const READ_CONNECTIONS: usize = 4;

/// How long SQLite waits on a lock held by another connection (or process) before failing.
const BUSY_TIMEOUT_MS: u64 = 10_000;

/// Most central-log rows `feed_after` scans in one call: bounds the work of one `Down` when many
/// entries in a row are invisible to the node (the cursor still advances past them).
pub const FEED_SCAN_ROWS_MAX: usize = 4096;

/// Rejects kept per node; older ones are deleted (the count in `nodes.rejects` keeps growing).
/// A node that resends a bad entry on every round must not fill the disk.
pub const REJECTS_KEPT_PER_NODE: i64 = 1000;

/// Attempts to draw unused random tracking ids per id wanted, before giving up (the id space is
/// 36^6, so collisions are rare until it is nearly full).
const TRACKING_ID_ATTEMPTS_PER_ID: u32 = 4;

/// How often the background checkpointer ([`Store::start_checkpointer`]) considers copying the
/// WAL into the database (`PRAGMA wal_checkpoint(PASSIVE)`: it never blocks the writer or
/// readers).
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// The checkpointer copies only once no write has ended for this long (a burst of writes, such
/// as a node's backlog, keeps the CPU; pages it rewrites are then copied once, not once per
/// interval) ...
pub const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_millis(50);

/// ... or once this long has passed since its last checkpoint, so the WAL of a store that is
/// never idle stays bounded well below [`WAL_FORCED_CHECKPOINT_BYTES`].
pub const CHECKPOINT_LAG_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// With the background checkpointer running, the WAL size after which the writer checkpoints
/// on its own anyway (SQLite's `wal_autocheckpoint`, in pages of the database's size): caps the
/// WAL if the checkpointer falls behind. 256 MiB, several times what a drain writes in
/// [`CHECKPOINT_LAG_MAX`].
pub const WAL_FORCED_CHECKPOINT_BYTES: i64 = 256 * 1024 * 1024;

/// Once a checkpoint has copied the whole WAL, SQLite truncates the file to this size
/// (`journal_size_limit`), so a burst's WAL does not keep its disk space.
pub const WAL_KEPT_BYTES: i64 = 64 * 1024 * 1024;

/// Page size of a new database (an existing one keeps its own). A node's entry (about 4 KiB)
/// fits in one cell of `node_log` (a `WITHOUT ROWID` b-tree, whose cells hold at most about a
/// quarter of a page before spilling into overflow pages: with 4 KiB pages every entry took a
/// 1 KiB cell and a mostly empty overflow page), and five event rows fit in a page. Measured on
/// a backlog drain: 13% fewer database bytes, about 5% less time.
pub const PAGE_SIZE_BYTES: i64 = 16 * 1024;

/// How often the background indexer ([`Store::start_indexer`]) looks for events to file in the
/// search index.
pub const INDEXER_POLL: std::time::Duration = std::time::Duration::from_millis(25);

/// The indexer files only once no write has ended for this long (writes that come in bursts,
/// such as a node's backlog, go first) ...
pub const INDEXER_IDLE: std::time::Duration = std::time::Duration::from_millis(50);

/// ... or once this long has passed since it last filed anything, so the index never falls
/// far behind a store that is never idle. Either way it stops after the event it is filing
/// when another writer waits.
pub const INDEXER_LAG_MAX: std::time::Duration = std::time::Duration::from_secs(3);

/// Page cache of the writer connection, KiB (SQLite's default is 2,000 KiB): applying a batch
/// touches the node log, events, actions, tracking ids and central's log.
pub const WRITER_CACHE_KIB: u32 = 32 * 1024;

/// Store failures. Domain refusals an operator caused are [`StoreError::Invalid`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by newer code.
    #[error(
        "database schema version {found} is newer than this central supports ({supported}); refusing to open it"
    )]
    TooNew {
        /// Version found.
        found: i64,
        /// Highest version this code knows.
        supported: i64,
    },
    /// Stored data does not decode.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The database belongs to another central key.
    #[error("database belongs to central {db}, but the key file is {key}")]
    WrongCentral {
        /// Central id recorded in the database.
        db: String,
        /// Central id of the key file.
        key: String,
    },
    /// Signing or encoding one of central's log entries failed.
    #[error("central log entry: {0}")]
    Log(String),
    /// The OS random source failed (or the tracking-id space is exhausted).
    #[error("random source: {0}")]
    Random(String),
    /// An operator request refused (unknown location, revoked node, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Tracking-id leasing, as configured.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Ids per grant.
    pub lease_size: u32,
    /// Lease when a node reports fewer free ids than this.
    pub low_water: u32,
}

/// A user as stored: OpenCRVS's `User` plus the credentials that never leave central and the
/// nodes (the password hash is never served over HTTP).
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    /// The user.
    pub user: crvs_common::user::User,
    /// Login name (unique).
    pub username: String,
    /// argon2id PHC string; empty while `pending`.
    pub password_hash: String,
    /// Creation time.
    pub created_at: String,
}

impl UserRow {
    /// The user and credentials, as the shared login code takes them.
    pub fn account(&self) -> crvs_common::user::Account {
        crvs_common::user::Account {
            user: self.user.clone(),
            username: self.username.clone(),
            password_hash: self.password_hash.clone(),
        }
    }
}

pub use crvs_common::server::{ClientRow, wall_ms};

/// A node to enroll (or re-enroll with a new certificate).
#[derive(Debug, Clone)]
pub struct NewNode {
    /// The node's identity.
    pub node_id: NodeId,
    /// Display name.
    pub name: String,
    /// Its facility.
    pub location_id: uuid::Uuid,
    /// SHA-256 of its client certificate, hex.
    pub cert_fingerprint: String,
}

/// An enrolled node with what central knows of its sync health.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    /// The node's identity.
    pub node_id: NodeId,
    /// Display name.
    pub name: String,
    /// Its facility.
    pub location_id: uuid::Uuid,
    /// The facility's administrative area (its jurisdiction for relays).
    pub admin_area_id: Option<uuid::Uuid>,
    /// SHA-256 of its client certificate, hex.
    pub cert_fingerprint: String,
    /// Enrollment time, ms.
    pub enrolled_at_ms: u64,
    /// Revocation time, ms.
    pub revoked_at_ms: Option<u64>,
    /// Quarantine time (after a fork), ms.
    pub quarantined_at_ms: Option<u64>,
    /// The last entry durably applied.
    pub acked: LogHead,
    /// How far the node applied central's feed.
    pub down_cursor: u64,
    /// Last `Hello`, ms.
    pub last_contact_ms: Option<u64>,
    /// The node's log head seq as it reported it.
    pub reported_head_seq: Option<u64>,
    /// Reported entries not yet acknowledged.
    pub backlog_entries: Option<u64>,
    /// Their bytes.
    pub backlog_bytes: Option<u64>,
    /// Reported age of the oldest unacknowledged entry, ms.
    pub oldest_unacked_ms: Option<u64>,
    /// Reported round-trip time, ms.
    pub rtt_ms: Option<u64>,
    /// Reported free tracking ids.
    pub pool_free: Option<u64>,
    /// Tracking ids leased to it and not yet used by an applied CREATE.
    pub pool_unused: u64,
    /// Entries refused so far.
    pub rejects: u64,
    /// Forks seen.
    pub forks: u64,
    /// The last refusal or fork.
    pub last_error: Option<String>,
    /// When it happened, ms.
    pub last_error_ms: Option<u64>,
}

impl NodeRow {
    /// Whether the node's key is no longer trusted.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at_ms.is_some()
    }

    /// Whether the node is quarantined.
    pub fn is_quarantined(&self) -> bool {
        self.quarantined_at_ms.is_some()
    }
}

/// What the sync path reads of a node on every message (see [`ReadCtx::node_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// The last entry durably applied.
    pub acked: LogHead,
    /// Revoked by an operator.
    pub revoked: bool,
    /// Quarantined after a fork.
    pub quarantined: bool,
    /// The facility's administrative area.
    pub admin_area_id: Option<uuid::Uuid>,
}

/// A recorded reject, for ops (the entry bytes stay in the database: they hold personal data).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectRow {
    /// The node.
    pub node_id: String,
    /// The refused entry's seq.
    pub seq: u64,
    /// Reason code.
    pub reason: String,
    /// Detail.
    pub detail: String,
    /// SHA-256 of the refused entry's bytes, hex.
    pub entry_sha256: String,
    /// Size of the refused entry.
    pub entry_bytes: u64,
    /// When, ms.
    pub at_ms: u64,
}

/// An event whose merge document holds concurrent writes.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictRow {
    /// Event id.
    pub event_id: uuid::Uuid,
    /// Tracking id.
    pub tracking_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The fields written concurrently (values are not listed here: read the event for them).
    pub fields: Vec<String>,
}

/// Who may receive an entry of central's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every node (clients, locations, revocations).
    All,
    /// One node (its pool grants).
    Node(NodeId),
    /// Nodes whose administrative area contains this one (relays); `None`: no node.
    Area(Option<uuid::Uuid>),
}

/// Counters for `status` and metrics.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStats {
    /// Events stored.
    pub events: u64,
    /// Events whose latest change the search index has not filed yet (`Store::start_indexer`);
    /// searches evaluate them directly meanwhile.
    pub search_index_pending: u64,
    /// Applied node entries not yet relayed to the other nodes of their area.
    pub relays_pending: u64,
    /// Actions stored.
    pub actions: u64,
    /// Events with conflicts.
    pub conflicted_events: u64,
    /// Central's log head seq.
    pub central_log_seq: u64,
    /// Enrolled nodes (revoked included).
    pub nodes: u64,
    /// System clients.
    pub clients: u64,
    /// Tracking ids leased in total.
    pub tracking_ids_leased: u64,
}

/// Handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    /// Threads waiting for `writer` (the indexer gives way to them).
    writers_waiting: AtomicUsize,
    /// A write transaction is open (the checkpointer waits for the writer to be idle).
    writing: std::sync::atomic::AtomicBool,
    /// When the last write transaction ended (ms since `started`).
    last_write_end_ms: AtomicU64,
    started: std::time::Instant,
    readers: Vec<Mutex<Connection>>,
    key: NodeSecretKey,
    central_id: NodeId,
    pool: PoolSettings,
    registration: Registration,
    /// Node entries prepared on the signature-check threads, waiting for their apply.
    prepared: Mutex<PreparedCache>,
    /// Commit tickets and the WAL fsync of deferred commits ([`Store::write_deferred`]).
    durability: Durability,
}

/// What makes deferred commits durable. Every commit takes the next ticket (counted under the
/// writer lock, so tickets follow commit order); `durable` is the highest ticket known to be on
/// disk. A `synchronous=FULL` commit is durable when it returns, and so is everything committed
/// before it (its fsync covers the whole WAL); a deferred one waits for [`Store::make_durable`].
struct Durability {
    wal: WalFile,
    committed: AtomicU64,
    durable: AtomicU64,
    /// Held while fsyncing, so one fsync serves every caller it covers; holds the error once an
    /// fsync failed (what was written is then of unknown state: nothing more is made durable
    /// until central restarts, which syncs the WAL again at open).
    syncing: Mutex<Option<String>>,
    /// Whether the writer connection is currently set to `synchronous=NORMAL` (only read and
    /// changed under the writer lock).
    writer_normal: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Notes when a write transaction ended (committed or not), for the indexer.
struct WriteEnd<'a>(&'a Inner);

impl Drop for WriteEnd<'_> {
    fn drop(&mut self) {
        self.0
            .last_write_end_ms
            .store(self.0.elapsed_ms(), Ordering::SeqCst);
        self.0.writing.store(false, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("central_id", &self.central_id)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// Opens a connection with the pragmas every connection needs.
fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)?;
    if flags.contains(OpenFlags::SQLITE_OPEN_CREATE) {
        // Only a database not yet written takes it (before `journal_mode` writes its header).
        conn.pragma_update(None, "page_size", PAGE_SIZE_BYTES)?;
    }
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    // WAL so readers never block the writer; FULL so every commit fsyncs the WAL: an
    // acknowledged entry survives power loss, not only a process crash.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "journal_mode is {mode}, expected wal"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// A poisoned lock only means another thread panicked while holding it; a connection itself is
/// intact (an open transaction was rolled back when it was dropped), and the prepared-entry cache
/// is only a cache.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn check_central(conn: &Connection, central_id: NodeId) -> Result<(), StoreError> {
    let db: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'central_id'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match db {
        Some(db) if db != central_id.to_string() => Err(StoreError::WrongCentral {
            db,
            key: central_id.to_string(),
        }),
        Some(_) => Ok(()),
        None => Err(StoreError::Corrupt(
            "database has no central id; run `crvs-central init`".into(),
        )),
    }
}

fn hash_of(bytes: Vec<u8>) -> Result<EntryHash, StoreError> {
    let hash: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("hash is not 32 bytes".into()))?;
    Ok(EntryHash(hash))
}

impl Store {
    /// Creates or upgrades the database at `path` and records `central_id` on first use.
    pub fn init(path: &Path, central_id: NodeId) -> Result<(), StoreError> {
        let mut conn = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        schema::migrate(&mut conn)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('central_id', ?1)",
            params![central_id.to_string()],
        )?;
        check_central(&conn, central_id)
    }

    /// Opens an initialised database, issuing registration numbers in the default format.
    pub fn open(path: &Path, key: NodeSecretKey, pool: PoolSettings) -> Result<Self, StoreError> {
        Self::open_with(path, key, pool, Registration::default())
    }

    /// [`Self::open`] with the registration number format and duplicate rules.
    pub fn open_with(
        path: &Path,
        key: NodeSecretKey,
        pool: PoolSettings,
        registration: Registration,
    ) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Corrupt(format!(
                "no database at {}; run `crvs-central init` first",
                path.display()
            )));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut writer = open_connection(path, flags)?;
        writer.pragma_update(None, "cache_size", -i64::from(WRITER_CACHE_KIB))?;
        schema::migrate(&mut writer)?;
        let central_id = key.node_id();
        check_central(&writer, central_id)?;
        dedup::ensure_date_index(&mut writer, &registration)?;
        // A previous process's deferred commits may still be only in the OS's cache: they are
        // made durable here, before anything of them is read and sent.
        let wal = WalFile::open(path)
            .map_err(|e| StoreError::Corrupt(format!("opening and syncing the WAL: {e}")))?;
        let mut readers = Vec::with_capacity(READ_CONNECTIONS);
        for _ in 0..READ_CONNECTIONS {
            let reader = open_connection(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            readers.push(Mutex::new(reader));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                writers_waiting: AtomicUsize::new(0),
                writing: std::sync::atomic::AtomicBool::new(false),
                last_write_end_ms: AtomicU64::new(0),
                started: std::time::Instant::now(),
                readers,
                key,
                central_id,
                pool,
                registration,
                prepared: Mutex::new(PreparedCache::default()),
                durability: Durability {
                    wal,
                    committed: AtomicU64::new(0),
                    durable: AtomicU64::new(0),
                    syncing: Mutex::new(None),
                    writer_normal: std::sync::atomic::AtomicBool::new(false),
                },
            }),
        })
    }

    /// Does the pure part of applying these node entries ([`prepare::prepare`]: payload parsed,
    /// a new event's merge document and index derived) and keeps it for their apply, by hash.
    /// For the threads that check signatures, while the writer applies the batch before; entries
    /// whose signature failed are skipped. Applying never depends on it: a miss is applied the
    /// ordinary way.
    pub fn prepare_entries(&self, entries: &[CheckedEntry]) {
        let central_id = *self.inner.central_id.as_bytes();
        let prepared: Vec<(EntryHash, Prepared)> = entries
            .iter()
            .filter(|c| c.is_signed())
            .filter_map(|c| Some((c.hash(), prepare::prepare(c.entry(), &central_id)?)))
            .collect();
        let mut cache = lock(&self.inner.prepared);
        for (hash, p) in prepared {
            cache.insert(hash, p);
        }
    }

    /// Prepared entries waiting for their apply ([`Self::prepare_entries`]).
    pub fn prepared_waiting(&self) -> usize {
        lock(&self.inner.prepared).len()
    }

    /// Moves WAL checkpoints off the write path: the writer checkpoints only past
    /// [`WAL_FORCED_CHECKPOINT_BYTES`] of WAL, and a background thread with its own connection runs a
    /// passive checkpoint every [`CHECKPOINT_INTERVAL`] once the writer has been idle for
    /// [`CHECKPOINT_IDLE`] (or [`CHECKPOINT_LAG_MAX`] has passed), until the last handle to the
    /// store is dropped. For long-running processes (`run`); a short CLI command keeps SQLite's
    /// default.
    pub fn start_checkpointer(&self, path: &Path) -> Result<(), StoreError> {
        let conn = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        {
            let writer = lock(&self.inner.writer);
            let page_size: i64 = writer.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            writer.pragma_update(
                None,
                "wal_autocheckpoint",
                WAL_FORCED_CHECKPOINT_BYTES / page_size.max(512),
            )?;
            writer.pragma_update(None, "journal_size_limit", WAL_KEPT_BYTES)?;
        }
        let inner = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("crvs-checkpoint".into())
            .spawn(move || {
                let mut last_checkpoint = std::time::Instant::now();
                loop {
                    std::thread::sleep(CHECKPOINT_INTERVAL);
                    let Some(store) = inner.upgrade() else {
                        return;
                    };
                    let idle_ms = store
                        .elapsed_ms()
                        .saturating_sub(store.last_write_end_ms.load(Ordering::SeqCst));
                    let busy = idle_ms < CHECKPOINT_IDLE.as_millis() as u64
                        || store.writing.load(Ordering::SeqCst)
                        || store.writers_waiting.load(Ordering::SeqCst) > 0;
                    drop(store);
                    if busy && last_checkpoint.elapsed() < CHECKPOINT_LAG_MAX {
                        continue;
                    }
                    last_checkpoint = std::time::Instant::now();
                    // (busy, WAL frames, frames checkpointed); a busy result only means
                    // another checkpoint was running.
                    let result: rusqlite::Result<(i64, i64, i64)> =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        });
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "background WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("starting the checkpoint thread: {e}")))?;
        Ok(())
    }

    /// Appends the relays of applied node entries (`WriteTx::append_pending_relays`) and files
    /// the search index (`search::file_pending`) behind the writes, on a background thread:
    /// every [`INDEXER_POLL`], when the writer has been idle for [`INDEXER_IDLE`] or the index
    /// has waited [`INDEXER_LAG_MAX`], in transactions of at most `search::FILE_CHUNK_MAX`
    /// events that end early when another writer waits. Runs until the last handle to the store
    /// is dropped. For long-running processes (`run`); without it searches stay exact (they
    /// evaluate unfiled events) but grow slower, and relays wait for central's next own record.
    pub fn start_indexer(&self) -> Result<(), StoreError> {
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("crvs-indexer".into())
            .spawn(move || {
                let mut last_filed = std::time::Instant::now();
                loop {
                    std::thread::sleep(INDEXER_POLL);
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let store = Self { inner };
                    let idle_ms = store
                        .inner
                        .elapsed_ms()
                        .saturating_sub(store.inner.last_write_end_ms.load(Ordering::SeqCst));
                    let due = idle_ms >= INDEXER_IDLE.as_millis() as u64
                        || last_filed.elapsed() >= INDEXER_LAG_MAX;
                    if !due || store.inner.writers_waiting.load(Ordering::SeqCst) > 0 {
                        continue;
                    }
                    match store.read(|r| r.indexer_work_pending()) {
                        Ok(false) => {
                            last_filed = std::time::Instant::now();
                            continue;
                        }
                        Ok(true) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "search index: reading what to file failed");
                            continue;
                        }
                    }
                    let inner = Arc::clone(&store.inner);
                    let yield_now = move || inner.writers_waiting.load(Ordering::SeqCst) > 0;
                    match store.write(|tx| {
                        let relayed =
                            tx.append_pending_relays(search::FILE_CHUNK_MAX, &yield_now)?;
                        if relayed > 0 && yield_now() {
                            return Ok(relayed);
                        }
                        tx.file_search_pending(search::FILE_CHUNK_MAX, &yield_now)
                    }) {
                        Ok(_) => last_filed = std::time::Instant::now(),
                        Err(e) => tracing::warn!(error = %e, "search index: filing failed"),
                    }
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("starting the indexer thread: {e}")))?;
        Ok(())
    }

    /// Central's identity (the public key of its log-signing key).
    pub fn central_id(&self) -> NodeId {
        self.inner.central_id
    }

    /// Runs `job` in one `BEGIN IMMEDIATE` transaction and returns once it is committed and on
    /// disk (`synchronous=FULL`). An `Err` rolls everything back. Blocking: call it from a
    /// blocking thread in async code.
    pub fn write<T, E, F>(&self, job: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E>,
    {
        self.write_with(false, job).map(|(out, _)| out)
    }

    /// [`Self::write`], but COMMIT does not wait for the disk (`synchronous=NORMAL`): returns
    /// the commit's ticket, durable once [`Self::make_durable`] (or any later `write`) returned
    /// for it. Until then, nothing that depends on the transaction may leave central: the sync
    /// server holds a session's messages until the commits before them are durable. For the
    /// apply of a node's entries, so the writer applies the next batch while the disk syncs this
    /// one. Never for a transaction that appends to central's log (its entries would be visible
    /// to other sessions before they are on disk) or queues a confirmation hook.
    pub fn write_deferred<T, E, F>(&self, job: F) -> Result<(T, u64), E>
    where
        E: From<StoreError>,
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E>,
    {
        self.write_with(true, job)
    }

    fn write_with<T, E, F>(&self, deferred: bool, job: F) -> Result<(T, u64), E>
    where
        E: From<StoreError>,
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E>,
    {
        self.inner.writers_waiting.fetch_add(1, Ordering::SeqCst);
        let mut conn = lock(&self.inner.writer);
        self.inner.writers_waiting.fetch_sub(1, Ordering::SeqCst);
        self.inner.writing.store(true, Ordering::SeqCst);
        let _ended = WriteEnd(&self.inner);
        let durability = &self.inner.durability;
        // Set before every transaction that needs the other level, so no write ever commits
        // at a level it did not ask for.
        if durability.writer_normal.load(Ordering::SeqCst) != deferred {
            let level = if deferred { "NORMAL" } else { "FULL" };
            conn.pragma_update(None, "synchronous", level)
                .map_err(StoreError::from)?;
            durability.writer_normal.store(deferred, Ordering::SeqCst);
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let mut ctx = WriteTx::new(
            &tx,
            &self.inner.key,
            self.inner.pool,
            &self.inner.registration,
            wall_ms(),
        );
        let out = job(&mut ctx)?;
        tx.commit().map_err(StoreError::from)?;
        // Still under the writer lock: tickets follow commit order.
        let ticket = durability.committed.fetch_add(1, Ordering::SeqCst) + 1;
        if !deferred {
            // This commit's fsync covered every frame written before it.
            durability.durable.fetch_max(ticket, Ordering::SeqCst);
        }
        Ok((out, ticket))
    }

    /// The ticket of the latest commit: once it is durable, so is everything committed so far.
    pub fn commit_ticket(&self) -> u64 {
        self.inner.durability.committed.load(Ordering::SeqCst)
    }

    /// Whether the commit with this ticket (and every one before it) is on disk.
    pub fn is_durable(&self, ticket: u64) -> bool {
        self.inner.durability.durable.load(Ordering::SeqCst) >= ticket
    }

    /// Makes every commit up to `ticket` durable: one fsync of the WAL, shared with the callers
    /// waiting meanwhile (it covers every commit counted when it starts). Blocking.
    pub fn make_durable(&self, ticket: u64) -> Result<(), StoreError> {
        let durability = &self.inner.durability;
        if self.is_durable(ticket) {
            return Ok(());
        }
        let mut failed = lock(&durability.syncing);
        if let Some(error) = failed.as_ref() {
            return Err(StoreError::Corrupt(error.clone()));
        }
        if self.is_durable(ticket) {
            return Ok(());
        }
        // Every commit counted here has written its frames: the fsync below covers them.
        let covered = durability.committed.load(Ordering::SeqCst);
        match durability.wal.sync() {
            Ok(()) => {
                durability.durable.fetch_max(covered, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                let error = format!("fsync of the WAL failed ({e}); restart central");
                tracing::error!(%error, "store: nothing more is made durable");
                *failed = Some(error.clone());
                Err(StoreError::Corrupt(error))
            }
        }
    }

    /// [`Self::make_durable`] off the async runtime (at once when it is durable already).
    pub async fn durable(&self, ticket: u64) -> Result<(), StoreError> {
        if self.is_durable(ticket) {
            return Ok(());
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.make_durable(ticket))
            .await
            .map_err(|e| StoreError::Corrupt(format!("fsync task failed: {e}")))?
    }

    /// Runs a read-only closure on a pooled read connection. Blocking.
    pub fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&ReadCtx<'_>) -> Result<T, StoreError>,
    {
        let guard = self
            .inner
            .readers
            .iter()
            .find_map(|m| m.try_lock().ok())
            .unwrap_or_else(|| lock(&self.inner.readers[0]));
        f(&ReadCtx::new(&guard))
    }

    /// [`Self::read`] off the async runtime.
    pub async fn read_async<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(f))
            .await
            .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?
    }

    /// [`Self::write`] off the async runtime.
    pub async fn write_async<T, E, F>(&self, job: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut WriteTx<'_>) -> Result<T, E> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(job))
            .await
            .map_err(|e| E::from(StoreError::Corrupt(format!("write task failed: {e}"))))?
    }

    /// The enrolled node holding the certificate with this fingerprint.
    pub fn node_by_fingerprint(&self, fingerprint: &str) -> Result<Option<NodeRow>, StoreError> {
        let fingerprint = fingerprint.to_owned();
        self.read(move |r| r.node_by_fingerprint(&fingerprint))
    }
}

fn fault(e: StoreError) -> StoreFault {
    StoreFault(e.to_string())
}

impl CentralStore for Store {
    fn node(&self, node_id: NodeId) -> Result<Option<NodeRecord>, StoreFault> {
        let row = self.read(|r| r.node_state(node_id)).map_err(fault)?;
        Ok(row.map(|n| NodeRecord {
            acked: n.acked,
            revoked: n.revoked,
            quarantined: n.quarantined,
        }))
    }

    fn stored_hash(&self, node_id: NodeId, seq: u64) -> Result<Option<EntryHash>, StoreFault> {
        self.read(|r| r.stored_hash(node_id, seq)).map_err(fault)
    }

    fn apply_entries(
        &mut self,
        node_id: NodeId,
        entries: &[LogEntry],
    ) -> Result<(LogHead, Vec<Reject>), StoreFault> {
        // Hashed here, before the writer is taken.
        let hashes: Vec<EntryHash> = entries.iter().map(LogEntry::hash).collect();
        self.apply_hashed_entries(node_id, entries, &hashes)
    }

    fn apply_hashed_entries(
        &mut self,
        node_id: NodeId,
        entries: &[LogEntry],
        hashes: &[EntryHash],
    ) -> Result<(LogHead, Vec<Reject>), StoreFault> {
        if hashes.len() != entries.len() {
            return Err(StoreFault("one hash per entry is needed".into()));
        }
        debug_assert!(entries.iter().zip(hashes).all(|(e, h)| e.hash() == *h));
        // Each entry's prepared part (if any) goes with it.
        let prepared: Vec<(EntryHash, Option<Prepared>)> = {
            let mut cache = lock(&self.inner.prepared);
            hashes.iter().map(|h| (*h, cache.take(h))).collect()
        };
        // A batch whose entries were all prepared and touch no registration only writes node
        // data and derived rows: it commits without waiting for the disk, and the sync server
        // sends nothing after it before it is durable (`Store::durable`). A registration request
        // appends to central's log and queues its hook, so such a batch (and one not prepared)
        // commits the ordinary way.
        let deferred = prepared
            .iter()
            .all(|(_, p)| p.as_ref().is_some_and(|p| !p.touches_registration()));
        let apply = |w: &mut WriteTx<'_>| w.apply_prepared(node_id, entries, prepared);
        if deferred {
            self.write_deferred(apply).map(|(out, _)| out)
        } else {
            self.write(apply)
        }
        .map_err(fault)
    }

    fn record_reject(
        &mut self,
        node_id: NodeId,
        entry: &LogEntry,
        reject: &Reject,
    ) -> Result<(), StoreFault> {
        self.write(|w| w.record_reject(node_id, entry, reject))
            .map_err(fault)
    }

    fn record_fork(&mut self, node_id: NodeId, entry: &LogEntry) -> Result<(), StoreFault> {
        self.write(|w| w.record_fork(node_id, entry)).map_err(fault)
    }

    fn record_contact(
        &mut self,
        node_id: NodeId,
        hello: &Hello,
        now_ms: u64,
    ) -> Result<(), StoreFault> {
        self.write(|w| w.record_contact(node_id, hello, now_ms))
            .map_err(fault)
    }

    fn ensure_pool(&mut self, node_id: NodeId, pool_free: u32) -> Result<(), StoreFault> {
        self.write(|w| w.ensure_pool(node_id, pool_free).map(|_| ()))
            .map_err(fault)
    }

    fn refill_pool(&mut self, node_id: NodeId) -> Result<(), StoreFault> {
        // Called after every applied batch: a read first (counting at most `low_water` unused
        // ids), so the common case opens no write transaction; the check is repeated inside it.
        let low_water = self.inner.pool.low_water;
        let unused = self
            .read(|r| r.unused_tracking_ids_up_to(node_id, low_water))
            .map_err(fault)?;
        if unused >= u64::from(low_water) {
            return Ok(());
        }
        self.write(|w| {
            let unused = w.reader().unused_tracking_ids_up_to(node_id, low_water)?;
            w.ensure_pool(node_id, u32::try_from(unused).unwrap_or(u32::MAX))
                .map(|_| ())
        })
        .map_err(fault)
    }

    fn feed_after(
        &self,
        node_id: NodeId,
        cursor: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LogEntry>, u64, bool), StoreFault> {
        self.read(|r| r.feed_after(node_id, cursor, max_items, max_bytes))
            .map_err(fault)
    }

    fn record_down_ack(&mut self, node_id: NodeId, cursor: u64) -> Result<(), StoreFault> {
        self.write(|w| w.record_down_ack(node_id, cursor))
            .map_err(fault)
    }
}

#[cfg(test)]
mod tests;
