//! The node's persistence: one SQLite file in WAL mode, owned here.
//! SQL text lives only in this module; callers use domain-level methods.
//!
//! Writes go to a single writer thread that runs each caller's job inside a savepoint and commits
//! up to `group_commit_max` jobs in one transaction. The sync thread then fsyncs the WAL (one
//! fsync serves every group queued meanwhile) and only then answers the group's callers (an
//! acknowledged write is on disk) and publishes the durable log head.
//! A failing job rolls back only its own savepoint. Reads use a small pool of read connections.
//! After every fsync that made appended log entries durable, the sync thread pokes
//! [`Store::appended`], so the sync driver sends new entries without polling. The sync side of the store (what the sync engine
//! reads and writes) is in `store::sync`, behind [`SyncStore`].

mod audit;
mod schema;
mod sync;
mod users;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crvs_common::event::{ActionDocument, EntryPayload, EventDocument};
use crvs_common::hlc::{Hlc, HlcClock};
use crvs_common::ids::TrackingId;
use crvs_common::location::{AdministrativeArea, Location, LocationSet};
use crvs_common::log::{EntryHash, LogEntry, LogHead, NodeId, NodeSecretKey};
use crvs_common::state::{EventIndex, derive_status, effective_declaration};
use crvs_sync::merge::{APPEND_MAX_BYTES, EventCrdt, actor_for};
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};
use tokio::sync::{Notify, mpsc, oneshot};

pub use audit::{AUDIT_DETAIL_BYTES_MAX, AUDIT_PAGE_MAX, AuditEntry, AuditRow};
pub use crvs_common::server::accounts::OutboxItem;
use crvs_common::server::wal::WalFile;
pub use crvs_common::server::{ClientRow, wall_ms};
pub use schema::SCHEMA_VERSION;
pub use sync::{
    ActionOrigin, DOWN_REJECTS_KEPT, DownReport, SYNC_ERROR_BYTES_MAX, SYNC_REJECTS_KEPT,
    SYNCED_EVENT_TRANSACTION_PREFIX, SyncState, SyncStore,
};
pub use users::{LostAssignment, UserRow};

/// Most write jobs waiting for the writer; callers wait (backpressure) beyond it.
pub const WRITE_QUEUE_MAX: usize = 1024;

/// Read connections kept open.
pub const READ_CONNECTIONS: usize = 2;

/// How long SQLite waits on a lock held by another connection before failing.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Committed groups waiting for the syncer's fsync; the writer blocks beyond it.
pub const SYNC_QUEUE_MAX: usize = 64;

/// The checkpointer thread copies the WAL into the database at most this often while writes
/// come in, so the writer thread never pays for a checkpoint inside its COMMIT.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// The writer's own automatic checkpoint runs once the WAL holds this many pages (64 MiB). The
/// checkpointer has copied all but the last moments' pages by then, so it is short, and it is
/// what lets the next commit write the WAL from its beginning again: a checkpoint from another
/// connection cannot restart the WAL of a busy writer (a RESTART checkpoint there starves), and
/// a WAL that only grows makes every fsync also commit the file's new size.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// After a checkpoint resets the WAL, its file is truncated to at most this many bytes (above
/// the autocheckpoint size, so a steadily written WAL is reused in place, not shrunk and grown).
const WAL_FILE_KEEP_BYTES: i64 = 96 * 1024 * 1024;

/// Store failures. Constraint violations that mean a caller error are mapped by the callers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by newer code.
    #[error(
        "database schema version {found} is newer than this node supports ({supported}); refusing to open it"
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
    /// The database belongs to another node identity.
    #[error("database belongs to node {db}, but the key file is node {key}")]
    WrongNode {
        /// Node id recorded in the database.
        db: String,
        /// Node id of the key file.
        key: String,
    },
    /// The writer thread is gone (shutting down, or it crashed).
    #[error("store writer is not running")]
    WriterGone,
    /// Signing or encoding a log entry failed.
    #[error("log entry: {0}")]
    Log(String),
    /// The OS random source failed.
    #[error("random source: {0}")]
    Random(String),
}

/// Tracking-id pool settings, as configured.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Free ids to hold.
    pub size: u32,
    /// Refill below this many free ids.
    pub low_water: u32,
    /// Whether this node may fill its own pool (no central).
    pub standalone: bool,
}

/// A new event row.
#[derive(Debug)]
pub struct NewEvent<'a> {
    /// Event id.
    pub id: uuid::Uuid,
    /// Event type.
    pub event_type: &'a str,
    /// Tracking id taken from the pool.
    pub tracking_id: &'a str,
    /// Idempotency key of the create.
    pub transaction_id: &'a str,
    /// Hash of the create request, to tell a replay from a key reuse.
    pub request_hash: &'a [u8],
    /// Creation time.
    pub created_at: &'a str,
}

/// Pool and log counters for ops and tests.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreStats {
    /// Events stored.
    pub events: u64,
    /// Actions stored.
    pub actions: u64,
    /// Log head sequence number.
    pub log_seq: u64,
    /// Free tracking ids.
    pub pool_free: u64,
}

type Reply = Box<dyn FnOnce(Result<(), Arc<StoreError>>) + Send>;
type Job = Box<dyn FnOnce(&mut WriteCtx<'_>) -> (bool, Reply) + Send>;

/// Handle to the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jobs: mpsc::Sender<Job>,
    readers: Vec<Mutex<Connection>>,
    node_id: NodeId,
    path: PathBuf,
    /// Poked by the syncer after each fsync that made appended log entries durable.
    appended: Arc<Notify>,
    /// Highest log seq known to be on disk (fsynced); the sync driver sends nothing above it.
    durable_seq: Arc<AtomicU64>,
}

/// Opens a connection with the pragmas every connection needs.
fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    // WAL so readers never block the writer. FULL here; the writer connection switches to NORMAL
    // because its commits are made durable by the sync thread before anyone is answered.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "journal_mode is {mode}, expected wal"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoint sub-journals in memory, not a temp file per group commit.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The checkpointer thread ([`run_checkpointer`]) does most of the copying; the automatic
    // checkpoint, which runs inside a COMMIT before the group's callers are answered, then has
    // little left to copy and restarts the WAL.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", WAL_FILE_KEEP_BYTES)?;
    Ok(conn)
}

impl Store {
    /// Creates or upgrades the database at `path` and records `node_id` on first use.
    pub fn init(path: &Path, node_id: NodeId) -> Result<(), StoreError> {
        let mut conn = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        schema::migrate(&mut conn)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('node_id', ?1)",
            params![node_id.to_string()],
        )?;
        check_node(&conn, node_id)?;
        Ok(())
    }

    /// Opens an initialised database and starts the writer thread.
    pub fn open(
        path: &Path,
        key: NodeSecretKey,
        pool: PoolSettings,
        group_commit_max: usize,
    ) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Corrupt(format!(
                "no database at {}; run `crvs-node init` first",
                path.display()
            )));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = open_connection(path, flags)?;
        schema::migrate(&mut conn)?;
        let node_id = key.node_id();
        check_node(&conn, node_id)?;
        let head = load_head(&conn)?;
        let last_hlc = load_last_hlc(&conn)?;
        let mut readers = Vec::with_capacity(READ_CONNECTIONS);
        for _ in 0..READ_CONNECTIONS {
            let reader = open_connection(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            readers.push(Mutex::new(reader));
        }
        // Durability is the syncer's job (see [`run_syncer`]): COMMIT writes the WAL without
        // fsync, and no caller is answered before the syncer's fsync of the WAL returned.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // What a previous process committed may still be only in the OS's cache: `WalFile::open`
        // makes it durable before anything of it is answered or sent to central.
        let wal = WalFile::open(path)
            .map_err(|e| StoreError::Corrupt(format!("opening and syncing the WAL: {e}")))?;
        let durable_seq = Arc::new(AtomicU64::new(head.seq));
        let sync_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX);
        let appended = Arc::new(Notify::new());
        let (to_sync, synced) = std::sync::mpsc::sync_channel(SYNC_QUEUE_MAX);
        {
            let durable_seq = Arc::clone(&durable_seq);
            let appended = Arc::clone(&appended);
            let sync_failed = Arc::clone(&sync_failed);
            std::thread::Builder::new()
                .name("store-sync".into())
                .spawn(move || {
                    run_syncer(&wal, &synced, &durable_seq, &appended, &sync_failed);
                })
                .map_err(|e| StoreError::Corrupt(format!("spawning sync thread: {e}")))?;
        }
        let checkpointer = open_connection(path, flags)?;
        // Bound 1: a commit only needs to say "there is something to copy".
        let (committed, commits) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run_checkpointer(&checkpointer, &commits))
            .map_err(|e| StoreError::Corrupt(format!("spawning checkpoint thread: {e}")))?;
        let writer = Writer {
            conn,
            key,
            head,
            hlc: HlcClock::new(last_hlc),
            pool,
            pool_spare: 0,
            group_commit_max,
            to_sync,
            sync_failed,
            committed,
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Corrupt(format!("spawning writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                jobs: tx,
                readers,
                node_id,
                path: path.to_path_buf(),
                appended,
                durable_seq,
            }),
        })
    }

    /// Notified (one stored permit, so no wake-up is lost) after every fsync that made newly
    /// appended log entries durable.
    pub fn appended(&self) -> &Notify {
        &self.inner.appended
    }

    /// The highest log seq on disk: entries above it are committed but not yet fsynced, and
    /// must not leave the node.
    pub fn durable_seq(&self) -> u64 {
        self.inner.durable_seq.load(Ordering::Acquire)
    }

    /// This node's identity.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Runs `job` on the writer thread inside its own savepoint of the next group commit and
    /// returns its result once the group is durably committed. An `Err` from `job` rolls back
    /// everything it wrote.
    pub async fn write<T, E, F>(&self, job: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, E>>();
        self.inner
            .jobs
            .send(boxed_job(job, tx))
            .await
            .map_err(|_| E::from(StoreError::WriterGone))?;
        rx.await.map_err(|_| E::from(StoreError::WriterGone))?
    }

    /// [`Self::write`] for blocking threads (the sync engine runs its store calls on
    /// `spawn_blocking` threads). Panics if called on an async runtime thread.
    pub fn write_blocking<T, E, F>(&self, job: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut WriteCtx<'_>) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, E>>();
        self.inner
            .jobs
            .blocking_send(boxed_job(job, tx))
            .map_err(|_| E::from(StoreError::WriterGone))?;
        rx.blocking_recv()
            .map_err(|_| E::from(StoreError::WriterGone))?
    }

    /// Runs a read-only closure on a pooled read connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadCtx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let guard = inner
                .readers
                .iter()
                .find_map(|m| m.try_lock().ok())
                .map_or_else(|| inner.readers[0].lock(), Ok)
                .map_err(|_| StoreError::Corrupt("reader lock poisoned".into()))?;
            f(&ReadCtx { conn: &guard })
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?
    }
}

/// Wraps a caller's job so the writer can run it and answer once the group committed.
fn boxed_job<T, E, F>(job: F, tx: oneshot::Sender<Result<T, E>>) -> Job
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: FnOnce(&mut WriteCtx<'_>) -> Result<T, E> + Send + 'static,
{
    Box::new(move |ctx| {
        let result = job(ctx);
        let ok = result.is_ok();
        let reply: Reply = Box::new(move |commit| {
            let out = match (result, commit) {
                (Err(e), _) => Err(e),
                (Ok(v), Ok(())) => Ok(v),
                (Ok(_), Err(e)) => Err(E::from(StoreError::Corrupt(format!("commit failed: {e}")))),
            };
            let _ = tx.send(out);
        });
        (ok, reply)
    })
}

fn check_node(conn: &Connection, node_id: NodeId) -> Result<(), StoreError> {
    let db: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match db {
        Some(db) if db != node_id.to_string() => Err(StoreError::WrongNode {
            db,
            key: node_id.to_string(),
        }),
        Some(_) => Ok(()),
        None => Err(StoreError::Corrupt(
            "database has no node id; run `crvs-node init`".into(),
        )),
    }
}

fn load_head(conn: &Connection) -> Result<LogHead, StoreError> {
    let row: Option<(i64, Vec<u8>)> = conn
        .query_row(
            "SELECT seq, hash FROM log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        None => Ok(LogHead::GENESIS),
        Some((seq, hash)) => {
            let hash: [u8; 32] = hash
                .try_into()
                .map_err(|_| StoreError::Corrupt("log hash is not 32 bytes".into()))?;
            Ok(LogHead {
                seq: seq as u64,
                hash: EntryHash(hash),
            })
        }
    }
}

fn load_last_hlc(conn: &Connection) -> Result<Hlc, StoreError> {
    let entry: Option<Vec<u8>> = conn
        .query_row("SELECT entry FROM log ORDER BY seq DESC LIMIT 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    match entry {
        None => Ok(Hlc::default()),
        Some(bytes) => LogEntry::decode(&bytes)
            .map(|e| e.hlc)
            .map_err(|e| StoreError::Corrupt(format!("log head does not decode: {e}"))),
    }
}

struct Writer {
    conn: Connection,
    key: NodeSecretKey,
    head: LogHead,
    hlc: HlcClock,
    pool: PoolSettings,
    /// See [`WriteCtx::take_tracking_id`]; 0 makes the next stand-alone create count the pool.
    pool_spare: u32,
    group_commit_max: usize,
    /// Committed groups, to the syncer, which answers their callers once they are on disk.
    to_sync: std::sync::mpsc::SyncSender<Synced>,
    /// Set by the syncer when an fsync failed: from then on no job runs.
    sync_failed: Arc<std::sync::atomic::AtomicBool>,
    /// Wakes the checkpointer after a commit (never blocks: a pending wake-up is enough).
    committed: std::sync::mpsc::SyncSender<()>,
}

/// Copies committed WAL pages into the database file (PASSIVE: never blocks the writer or the
/// readers), at most every [`CHECKPOINT_INTERVAL`] while commits arrive. Ends when the writer
/// is gone.
fn run_checkpointer(conn: &Connection, commits: &std::sync::mpsc::Receiver<()>) {
    while commits.recv().is_ok() {
        let started = std::time::Instant::now();
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "store: checkpoint failed; will retry after the next commit");
        }
        if let Some(rest) = CHECKPOINT_INTERVAL.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    tracing::debug!("store checkpointer stopped");
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < self.group_commit_max {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.run_group(jobs);
        }
        tracing::debug!("store writer stopped");
    }

    fn run_group(&mut self, jobs: Vec<Job>) {
        if self.sync_failed.load(Ordering::Acquire) {
            // What is on disk is unknown after a failed fsync: write nothing more (dropping the
            // jobs answers their callers with `WriterGone`); the node must be restarted.
            tracing::error!("store: refusing writes after a failed fsync; restart the node");
            drop(jobs);
            return;
        }
        // Each reply with whether its job left staged actions unfinished (answered with an error).
        let mut replies: Vec<(Reply, bool)> = Vec::with_capacity(jobs.len());
        let head_at_begin = self.head;
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let e = Arc::new(StoreError::from(e));
            tracing::error!(error = %e, "store: BEGIN failed");
            // Jobs never ran: answer each with the error via a no-op context is impossible, so
            // drop them; their callers see `WriterGone`.
            drop(jobs);
            return;
        }
        for job in jobs {
            let head_before = self.head;
            let hlc_before = self.hlc.last();
            let ok_sp = self.conn.execute_batch("SAVEPOINT job").is_ok();
            let now_ms = wall_ms();
            let mut ctx = WriteCtx {
                conn: &self.conn,
                key: &self.key,
                head: &mut self.head,
                hlc: &mut self.hlc,
                pool: self.pool,
                pool_spare: &mut self.pool_spare,
                now_ms,
                pending: None,
                known: None,
            };
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut ctx)));
            // A job that succeeded with actions staged but no entry signed is a bug: never
            // commit actions without their signed entry. (A failing job may stop half-way; its
            // savepoint is rolled back and it answers with its own error.)
            let staged = ctx.pending.is_some();
            let unfinished = staged && matches!(outcome, Ok((true, _)));
            if unfinished {
                tracing::error!(
                    "store: a write job staged actions without finishing its log entry; rolled back"
                );
            }
            let (ok, reply) = match outcome {
                Ok((ok, reply)) => (ok && ok_sp && !staged, Some(reply)),
                Err(_) => {
                    tracing::error!("store: a write job panicked; its savepoint is rolled back");
                    (false, None)
                }
            };
            if ok {
                let _ = self.conn.execute_batch("RELEASE job");
            } else {
                let _ = self.conn.execute_batch("ROLLBACK TO job; RELEASE job");
                self.head = head_before;
                self.hlc = HlcClock::new(hlc_before);
                // The job may have refilled the pool: count again next time.
                self.pool_spare = 0;
            }
            if let Some(reply) = reply {
                replies.push((reply, unfinished));
            }
        }
        let commit = self
            .conn
            .execute_batch("COMMIT")
            .map_err(|e| Arc::new(StoreError::from(e)));
        if let Err(e) = &commit {
            tracing::error!(error = %e, "store: COMMIT failed; group rolled back");
            let _ = self.conn.execute_batch("ROLLBACK");
            self.pool_spare = 0;
            match load_head(&self.conn) {
                Ok(head) => self.head = head,
                Err(e) => tracing::error!(error = %e, "store: reloading log head failed"),
            }
        }
        if commit.is_ok() {
            let _ = self.committed.try_send(());
            // Answered by the syncer after its fsync; meanwhile this thread runs the next group.
            let group = Synced {
                replies,
                head_seq: self.head.seq,
                appended: self.head != head_at_begin,
            };
            if let Err(std::sync::mpsc::SendError(group)) = self.to_sync.send(group) {
                // The sync thread is gone: nothing can be made durable any more.
                self.sync_failed.store(true, Ordering::Release);
                group.answer(&Err(Arc::new(StoreError::WriterGone)));
            }
        } else {
            Synced {
                replies,
                head_seq: self.head.seq,
                appended: false,
            }
            .answer(&commit);
        }
    }
}

/// A committed group waiting to be made durable.
struct Synced {
    /// Each reply with whether its job left staged actions unfinished.
    replies: Vec<(Reply, bool)>,
    /// The log head after the group.
    head_seq: u64,
    /// Whether the group appended log entries.
    appended: bool,
}

impl Synced {
    fn answer(self, outcome: &Result<(), Arc<StoreError>>) {
        for (reply, unfinished) in self.replies {
            if unfinished {
                reply(Err(Arc::new(StoreError::Corrupt(
                    "write job did not finish its log entry".into(),
                ))));
            } else {
                reply(outcome.clone());
            }
        }
    }
}

/// Pipelined durability: fsyncs the WAL for every committed group the writer hands over (one
/// fsync covers all groups queued meanwhile), then answers their callers, publishes the durable
/// log head and wakes the sync driver. The writer meanwhile runs the next group, so the fsync
/// wait no longer stalls it. fsync covers every write to the file made before it, whatever the
/// descriptor, so an answered write is on disk. If an fsync fails, what was written is of
/// unknown state: that group and every later one are answered with the error (the node must
/// be restarted, which makes the WAL durable again before anything is answered).
fn run_syncer(
    target: &WalFile,
    groups: &std::sync::mpsc::Receiver<Synced>,
    durable_seq: &AtomicU64,
    appended: &Notify,
    sync_failed: &std::sync::atomic::AtomicBool,
) {
    let mut failed: Option<Arc<StoreError>> = None;
    while let Ok(first) = groups.recv() {
        let mut batch = vec![first];
        while batch.len() < SYNC_QUEUE_MAX {
            match groups.try_recv() {
                Ok(group) => batch.push(group),
                Err(_) => break,
            }
        }
        let outcome = match &failed {
            Some(e) => Err(Arc::clone(e)),
            None => target.sync().map_err(|e| {
                let e = Arc::new(StoreError::Corrupt(format!(
                    "fsync of the WAL failed ({e}); restart the node"
                )));
                tracing::error!(error = %e, "store: fsync failed; refusing every later write");
                sync_failed.store(true, Ordering::Release);
                failed = Some(Arc::clone(&e));
                e
            }),
        };
        if outcome.is_ok() {
            let head = batch.iter().map(|g| g.head_seq).max().unwrap_or(0);
            durable_seq.fetch_max(head, Ordering::AcqRel);
            if batch.iter().any(|g| g.appended) {
                appended.notify_one();
            }
        }
        for group in batch {
            // A reply is a channel send; should one ever panic, the others are still answered.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| group.answer(&outcome)));
        }
    }
    tracing::debug!("store syncer stopped");
}

/// What a write job can do. Runs on the writer thread inside the job's savepoint.
#[allow(
    missing_debug_implementations,
    reason = "holds a connection and key material"
)]
pub struct WriteCtx<'a> {
    conn: &'a Connection,
    key: &'a NodeSecretKey,
    head: &'a mut LogHead,
    hlc: &'a mut HlcClock,
    pool: PoolSettings,
    /// Stand-alone mode: free ids known to be above the low-water mark (see
    /// [`WriteCtx::take_tracking_id`]).
    pool_spare: &'a mut u32,
    now_ms: u64,
    pending: Option<PendingEntry>,
    /// An event as it stood before this job staged actions on it (read or created in this
    /// job), so the job does not read and decode it again.
    known: Option<EventDocument>,
}

/// Actions staged by a job, waiting for [`WriteCtx::finish_event`] to sign their entry.
struct PendingEntry {
    payload: EntryPayload,
}

/// The facts of an event that every log entry about it repeats.
#[derive(Debug, Clone)]
pub struct EventMeta {
    /// Event id.
    pub id: uuid::Uuid,
    /// Event type.
    pub event_type: String,
    /// Tracking id.
    pub tracking_id: String,
    /// Creation time.
    pub created_at: String,
}

impl EventMeta {
    /// The facts of a stored document.
    pub fn of(doc: &EventDocument) -> Self {
        Self {
            id: doc.id,
            event_type: doc.event_type.clone(),
            tracking_id: doc.tracking_id.clone(),
            created_at: doc.created_at.clone(),
        }
    }
}

impl WriteCtx<'_> {
    /// The transaction's connection, for the account tables shared with central
    /// ([`crvs_common::server::accounts`]).
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// Wall-clock time of this job, ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The event as this job sees it: stored actions and the ones it staged. Read from the
    /// database once per job; later calls reuse it.
    pub fn document(&mut self, event_id: uuid::Uuid) -> Result<Option<EventDocument>, StoreError> {
        if let Some(known) = self.known.as_ref().filter(|k| k.id == event_id) {
            let mut doc = known.clone();
            if let Some(pending) = self
                .pending
                .as_ref()
                .filter(|p| p.payload.event_id == event_id)
            {
                doc.actions.extend(pending.payload.actions.iter().cloned());
                crvs_common::state::canonical_order(&mut doc.actions);
            }
            return Ok(Some(doc));
        }
        let doc = self.reader().event_document(event_id)?;
        // Staged rows are in the database too: remember only a document read before staging.
        if self.pending.is_none()
            && let Some(doc) = &doc
        {
            self.known = Some(doc.clone());
        }
        Ok(doc)
    }

    /// Read access inside the write transaction (sees this job's own writes).
    pub fn reader(&self) -> ReadCtx<'_> {
        ReadCtx { conn: self.conn }
    }

    /// Takes a free tracking id from the pool; `None` when the pool is empty. In stand-alone
    /// mode the pool is refilled first when it is below its low-water mark. The pool is counted
    /// only when the ids known to be spare (free above the low-water mark at the last count,
    /// minus those taken since) run out. A refill from central only makes the figure low, and
    /// the writer zeroes it whenever a job or a group rolls back, so it is never high.
    pub fn take_tracking_id(&mut self) -> Result<Option<String>, StoreError> {
        if self.pool.standalone {
            if *self.pool_spare == 0 {
                let mut free = self.reader().pool_free()?;
                if free < u64::from(self.pool.low_water) {
                    fill_pool(self.conn, self.pool.size.saturating_sub(free as u32))?;
                    free = self.reader().pool_free()?;
                }
                *self.pool_spare =
                    u32::try_from(free.saturating_sub(u64::from(self.pool.low_water)))
                        .unwrap_or(u32::MAX);
            } else {
                *self.pool_spare -= 1;
            }
        }
        // Start at a random point of the id space so ids do not reveal creation order, then take
        // the next free one (wrapping to the smallest).
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
        let start = TrackingId::from_index(u64::from_le_bytes(bytes)).to_string();
        let id: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT tracking_id FROM tracking_pool WHERE event_id IS NULL AND tracking_id >= ?1
                 ORDER BY tracking_id LIMIT 1",
            )?
            .query_row(params![start], |r| r.get(0))
            .optional()?;
        if id.is_some() {
            return Ok(id);
        }
        let id: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT tracking_id FROM tracking_pool WHERE event_id IS NULL ORDER BY tracking_id LIMIT 1",
            )?
            .query_row([], |r| r.get(0))
            .optional()?;
        Ok(id)
    }

    /// Inserts a new event and marks its tracking id used.
    pub fn insert_event(&mut self, event: &NewEvent<'_>) -> Result<(), StoreError> {
        self.insert_event_row(event)?;
        let n = self
            .conn
            .prepare_cached("UPDATE tracking_pool SET event_id = ?1 WHERE tracking_id = ?2 AND event_id IS NULL")?
            .execute(params![event.id.to_string(), event.tracking_id])?;
        if n != 1 {
            return Err(StoreError::Corrupt(format!(
                "tracking id {} was not free",
                event.tracking_id
            )));
        }
        Ok(())
    }

    /// The event's row, still without actions; the job knows it from here on.
    fn insert_event_row(&mut self, event: &NewEvent<'_>) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO events (id, event_type, tracking_id, transaction_id, request_hash,
                                     created_at, updated_at, status, index_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 'CREATED', '{}')",
            )?
            .execute(params![
                event.id.to_string(),
                event.event_type,
                event.tracking_id,
                event.transaction_id,
                event.request_hash,
                event.created_at
            ])?;
        self.known = Some(EventDocument {
            id: event.id,
            event_type: event.event_type.to_owned(),
            created_at: event.created_at.to_owned(),
            updated_at: event.created_at.to_owned(),
            actions: Vec::new(),
            tracking_id: event.tracking_id.to_owned(),
        });
        Ok(())
    }

    /// Inserts an event imported from another system (`record.import`) with its own id and
    /// tracking id, outside this node's pool (if the id happens to be free in the pool it is
    /// taken out, so it is never handed out again). Refused if either id is already a record's.
    pub fn insert_imported_event(&mut self, event: &NewEvent<'_>) -> Result<bool, StoreError> {
        let id = event.id.to_string();
        let taken: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM events WHERE id = ?1 OR tracking_id = ?2")?
            .query_row(params![id, event.tracking_id], |r| r.get(0))
            .optional()?;
        if taken.is_some() {
            return Ok(false);
        }
        self.insert_event_row(event)?;
        self.conn
            .prepare_cached(
                "UPDATE tracking_pool SET event_id = ?1 WHERE tracking_id = ?2 AND event_id IS NULL",
            )?
            .execute(params![id, event.tracking_id])?;
        Ok(true)
    }

    /// Stages one action of `event`: its row is written now, its signed log entry by
    /// [`Self::finish_event`], which the job must call before returning (one entry per write, one
    /// event per entry). Everything lands in this job's savepoint, so it commits or vanishes
    /// together.
    pub fn append_action(
        &mut self,
        event: &EventMeta,
        action: ActionDocument,
        request_hash: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let pending = self.pending.get_or_insert_with(|| PendingEntry {
            payload: EntryPayload {
                event_id: event.id,
                event_type: event.event_type.clone(),
                tracking_id: event.tracking_id.clone(),
                event_created_at: event.created_at.clone(),
                actions: Vec::new(),
            },
        });
        if pending.payload.event_id != event.id {
            return Err(StoreError::Corrupt(
                "one write may record actions of one event only".into(),
            ));
        }
        let seq = self.head.seq + 1;
        let body = serde_json::to_string(&action).map_err(|e| StoreError::Log(e.to_string()))?;
        self.conn
            .prepare_cached(
                "INSERT INTO actions (id, event_id, action_type, status, transaction_id, request_hash, log_seq, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                action.id.to_string(),
                event.id.to_string(),
                action.action_type.as_str(),
                action.status.as_str(),
                action.transaction_id,
                request_hash,
                seq as i64,
                body
            ])?;
        pending.payload.actions.push(action);
        Ok(())
    }

    /// Signs the staged actions into one log entry, carrying the event's automerge change,
    /// records the change in the event's merge document and refreshes the derived index.
    pub fn finish_event(&mut self) -> Result<EventDocument, StoreError> {
        self.finish_event_inner(None)
    }

    /// [`Self::finish_event`] for the first write of an event whose merge-document change was
    /// recorded before the job (same actor, actions and declaration, in a fresh document). If
    /// the event turns out to have a document already, the change is recorded here instead.
    pub fn finish_event_with_change(
        &mut self,
        change: Vec<u8>,
    ) -> Result<EventDocument, StoreError> {
        self.finish_event_inner(Some(change))
    }

    fn finish_event_inner(
        &mut self,
        prepared: Option<Vec<u8>>,
    ) -> Result<EventDocument, StoreError> {
        let Some(pending) = self.pending.take() else {
            return Err(StoreError::Corrupt(
                "finish_event without staged actions".into(),
            ));
        };
        let payload = pending.payload;
        let event_id = payload.event_id;
        // Put back for `document`, then read the event with its staged actions.
        self.pending = Some(PendingEntry { payload });
        let doc = self
            .document(event_id)?
            .ok_or_else(|| StoreError::Corrupt(format!("event {event_id} vanished")))?;
        let payload = self
            .pending
            .take()
            .map(|p| p.payload)
            .ok_or_else(|| StoreError::Corrupt("staged actions vanished".into()))?;
        self.known = None;
        debug_assert_eq!(
            serde_json::to_value(&doc.actions).ok(),
            serde_json::to_value(
                self.reader()
                    .event_document(event_id)
                    .ok()
                    .flatten()
                    .map(|d| d.actions)
            )
            .ok(),
            "the remembered document must equal the stored one"
        );
        let mut delta = crvs_common::event::Declaration::new();
        for action in &payload.actions {
            delta.extend(effective_declaration(action, &doc.actions));
        }
        let actor = actor_for(self.key.node_id().as_bytes());
        let (stored, index_json): (Option<Vec<u8>>, String) = self
            .conn
            .prepare_cached("SELECT crdt, index_json FROM events WHERE id = ?1")?
            .query_row(params![event_id.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let (crdt, change) = match (&stored, prepared) {
            // The prepared change is the whole document: load it only where it is needed
            // (a document too large to store as one change, or debug checks).
            (None, Some(change)) => {
                let crdt = if cfg!(debug_assertions) || change.len() > APPEND_MAX_BYTES {
                    Some(EventCrdt::load(&change, actor).map_err(|e| {
                        StoreError::Corrupt(format!("prepared crdt of {event_id}: {e}"))
                    })?)
                } else {
                    None
                };
                (crdt, change)
            }
            (stored, _) => {
                let mut crdt = match stored {
                    Some(bytes) => EventCrdt::load(bytes, actor)
                        .map_err(|e| StoreError::Corrupt(format!("crdt of {event_id}: {e}")))?,
                    None => EventCrdt::new(actor),
                };
                let change = crdt
                    .record(&payload.actions, &delta, self.now_ms as i64)
                    .map_err(|e| StoreError::Corrupt(format!("crdt of {event_id}: {e}")))?;
                (Some(crdt), change)
            }
        };
        let bytes = serde_json::to_vec(&payload).map_err(|e| StoreError::Log(e.to_string()))?;
        let hlc = self.hlc.now(self.now_ms);
        let seq = self.head.seq + 1;
        let crdt_bytes = match &crdt {
            Some(crdt) => crdt.stored_after(stored.as_deref(), &change),
            // A prepared change of at most APPEND_MAX_BYTES: stored as it is.
            None => change.clone(),
        };
        let entry = LogEntry::sign(
            self.key,
            seq,
            self.head.hash,
            hlc,
            event_id,
            bytes,
            Some(change),
        )
        .map_err(|e| StoreError::Log(e.to_string()))?;
        let hash = entry.hash();
        self.conn
            .prepare_cached(
                "INSERT INTO log (seq, hash, entry, bytes_through)
                 VALUES (?1, ?2, ?3,
                         coalesce((SELECT bytes_through FROM log WHERE seq = ?1 - 1), 0)
                         + length(?3))",
            )?
            .execute(params![seq as i64, hash.0.as_slice(), entry.encode()])?;
        *self.head = LogHead { seq, hash };
        let index = local_index(&doc, stored.is_none(), &index_json, &delta, crdt.as_ref())?;
        let json = serde_json::to_string(&index).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn
            .prepare_cached(
                "UPDATE events SET crdt = ?1, status = ?2, index_json = ?3 WHERE id = ?4",
            )?
            .execute(params![
                crdt_bytes,
                index.status.as_str(),
                json,
                event_id.to_string()
            ])?;
        Ok(doc)
    }

    fn refresh_index_with(
        &mut self,
        doc: EventDocument,
        crdt: &EventCrdt,
    ) -> Result<EventDocument, StoreError> {
        let mut index = EventIndex::from_document(&doc);
        (index.declaration, index.conflicts) = crdt
            .state()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let json = serde_json::to_string(&index).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn
            .prepare_cached("UPDATE events SET status = ?1, index_json = ?2 WHERE id = ?3")?
            .execute(params![
                derive_status(&doc.actions).as_str(),
                json,
                doc.id.to_string()
            ])?;
        Ok(doc)
    }

    /// Adds a system client.
    pub fn insert_client(&mut self, client: &ClientRow) -> Result<(), StoreError> {
        let scopes = serde_json::to_string(&client.scopes)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO clients (id, name, secret_hash, scopes, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![client.id, client.name, client.secret_hash, scopes, client.status, client.created_at],
        )?;
        Ok(())
    }

    /// Removes a system client; returns whether it existed.
    pub fn delete_client(&mut self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM clients WHERE id = ?1", params![id])?
            == 1)
    }

    /// Replaces every location and administrative area.
    pub fn replace_locations(&mut self, set: &LocationSet) -> Result<(), StoreError> {
        self.conn
            .execute_batch("DELETE FROM locations; DELETE FROM admin_areas;")?;
        // Parents first, so the foreign key holds whatever the file order.
        let mut pending: Vec<&AdministrativeArea> = set.administrative_areas.iter().collect();
        let mut inserted = std::collections::HashSet::new();
        while !pending.is_empty() {
            let before = pending.len();
            let mut rest = Vec::new();
            for area in pending {
                if area.parent_id.is_none_or(|p| inserted.contains(&p)) {
                    self.conn.execute(
                        "INSERT INTO admin_areas (id, name, external_id, parent_id, valid_until) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            area.id.to_string(),
                            area.name,
                            area.external_id,
                            area.parent_id.map(|p| p.to_string()),
                            area.valid_until
                        ],
                    )?;
                    inserted.insert(area.id);
                } else {
                    rest.push(area);
                }
            }
            if rest.len() == before {
                return Err(StoreError::Corrupt(
                    "administrative areas do not form a tree".into(),
                ));
            }
            pending = rest;
        }
        for l in &set.locations {
            self.conn.execute(
                "INSERT INTO locations (id, name, external_id, administrative_area_id, valid_until, location_type)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    l.id.to_string(),
                    l.name,
                    l.external_id,
                    l.administrative_area_id.map(|p| p.to_string()),
                    l.valid_until,
                    l.location_type
                ],
            )?;
        }
        Ok(())
    }

    /// Fills the pool up to `count` new random ids (stand-alone mode only).
    pub fn fill_pool(&mut self, count: u32) -> Result<u64, StoreError> {
        fill_pool(self.conn, count)
    }
}

fn fill_pool(conn: &Connection, count: u32) -> Result<u64, StoreError> {
    let mut stmt =
        conn.prepare_cached("INSERT OR IGNORE INTO tracking_pool (tracking_id) VALUES (?1)")?;
    let mut added = 0u64;
    let mut attempts = 0u64;
    // Random ids; a collision with an id already held is skipped and retried, bounded.
    while added < u64::from(count) && attempts < u64::from(count) * 4 + 16 {
        attempts += 1;
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
        let id = TrackingId::from_index(u64::from_le_bytes(bytes));
        added += stmt.execute(params![id.as_str()])? as u64;
    }
    Ok(added)
}

/// Read-only queries.
#[allow(missing_debug_implementations, reason = "holds a connection")]
pub struct ReadCtx<'a> {
    conn: &'a Connection,
}

/// The index of an event after a local write, derived incrementally: a local write wins every
/// field it touches (automerge's put and delete supersede every value visible at the key), so
/// the declaration is the previous one with `delta` applied, and the previous conflicts stay
/// except on touched fields. Falls back to reading the merge document when there is no previous
/// index to start from. Debug builds check the result against the merge document.
fn local_index(
    doc: &EventDocument,
    new_document: bool,
    previous_json: &str,
    delta: &crvs_common::event::Declaration,
    crdt: Option<&EventCrdt>,
) -> Result<EventIndex, StoreError> {
    let mut index = EventIndex::from_document(doc);
    let previous = if new_document {
        Some((crvs_common::event::Declaration::new(), Vec::new()))
    } else {
        serde_json::from_str::<EventIndex>(previous_json)
            .ok()
            .map(|p| (p.declaration, p.conflicts))
    };
    match previous {
        Some((mut declaration, mut conflicts)) => {
            for (field, value) in delta {
                if value.is_null() {
                    declaration.remove(field);
                } else {
                    declaration.insert(field.clone(), value.clone());
                }
            }
            conflicts.retain(|c| !delta.contains_key(&c.field));
            index.declaration = declaration;
            index.conflicts = conflicts;
            if cfg!(debug_assertions)
                && let Some(crdt) = crdt
            {
                assert_eq!(crdt.declaration().ok().as_ref(), Some(&index.declaration));
                assert_eq!(crdt.conflicts().ok().as_ref(), Some(&index.conflicts));
            }
        }
        None => {
            let crdt = crdt.ok_or_else(|| {
                StoreError::Corrupt(format!("no merge document for the index of {}", doc.id))
            })?;
            (index.declaration, index.conflicts) = crdt
                .state()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
    }
    Ok(index)
}

fn parse_uuid(s: &str) -> Result<uuid::Uuid, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("bad uuid {s:?} in store")))
}

impl ReadCtx<'_> {
    /// The read connection, for the account tables shared with central
    /// ([`crvs_common::server::accounts`]).
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// The event created with this `(transactionId, type)`: its id and request hash.
    pub fn event_by_transaction(
        &self,
        transaction_id: &str,
        event_type: &str,
    ) -> Result<Option<(uuid::Uuid, Vec<u8>)>, StoreError> {
        let row: Option<(String, Vec<u8>)> = self
            .conn
            .prepare_cached(
                "SELECT id, request_hash FROM events WHERE transaction_id = ?1 AND event_type = ?2",
            )?
            .query_row(params![transaction_id, event_type], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(id, h)| Ok((parse_uuid(&id)?, h))).transpose()
    }

    /// An action this node recorded with this `(transactionId, type, status)`: its event and
    /// request hash. Actions synced from elsewhere have their own clients' keys and never match.
    pub fn action_by_transaction(
        &self,
        transaction_id: &str,
        action_type: &str,
        status: &str,
    ) -> Result<Option<ActionByTransaction>, StoreError> {
        let row: Option<(String, Option<Vec<u8>>)> = self
            .conn
            .prepare_cached(
                "SELECT event_id, request_hash FROM actions
                 WHERE transaction_id = ?1 AND action_type = ?2 AND status = ?3 AND origin IS NULL",
            )?
            .query_row(params![transaction_id, action_type, status], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(id, h)| Ok((parse_uuid(&id)?, h))).transpose()
    }

    /// The full event document, actions in order (CREATE first, then recording order).
    pub fn event_document(
        &self,
        event_id: uuid::Uuid,
    ) -> Result<Option<EventDocument>, StoreError> {
        let id = event_id.to_string();
        let row: Option<(String, String, String, String)> = self
            .conn
            .prepare_cached(
                "SELECT event_type, tracking_id, created_at, updated_at FROM events WHERE id = ?1",
            )?
            .query_row(params![id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((event_type, tracking_id, created_at, updated_at)) = row else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT body FROM actions WHERE event_id = ?1 ORDER BY seq")?;
        let mut actions = stmt
            .query_map(params![id], |r| r.get::<_, String>(0))?
            .map(|body| {
                let body = body?;
                serde_json::from_str::<ActionDocument>(&body).map_err(|e| {
                    StoreError::Corrupt(format!("action of {id} does not decode: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        crvs_common::state::canonical_order(&mut actions);
        Ok(Some(EventDocument {
            id: event_id,
            event_type,
            created_at,
            updated_at,
            actions,
            tracking_id,
        }))
    }

    /// The event id with this tracking id.
    pub fn event_by_tracking_id(
        &self,
        tracking_id: &str,
    ) -> Result<Option<uuid::Uuid>, StoreError> {
        let id: Option<String> = self
            .conn
            .prepare_cached("SELECT id FROM events WHERE tracking_id = ?1")?
            .query_row(params![tracking_id], |r| r.get(0))
            .optional()?;
        id.map(|s| parse_uuid(&s)).transpose()
    }

    /// Derived index entries of every event except undeclared drafts (status CREATED, which
    /// OpenCRVS does not index), newest first, optionally only the one with `tracking_id`.
    pub fn index_entries(&self, tracking_id: Option<&str>) -> Result<Vec<EventIndex>, StoreError> {
        // The node holds one clinic's records; a scan of the derived index is fine at that scale.
        // Central gets a real search index (issue "Central registry").
        let rows: Vec<String> = match tracking_id {
            Some(t) => self
                .conn
                .prepare_cached("SELECT index_json FROM events WHERE tracking_id = ?1 AND status != 'CREATED'")?
                .query_map(params![t], |r| r.get(0))?
                .collect::<Result<_, _>>()?,
            None => self
                .conn
                .prepare_cached(
                    "SELECT index_json FROM events WHERE status != 'CREATED' ORDER BY created_at DESC, id",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?,
        };
        rows.iter()
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|e| StoreError::Corrupt(format!("index does not decode: {e}")))
            })
            .collect()
    }

    /// Locations, optionally filtered.
    pub fn locations(&self) -> Result<Vec<Location>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, external_id, administrative_area_id, valid_until, location_type FROM locations ORDER BY name, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        rows.map(|row| {
            let (id, name, external_id, area, valid_until, location_type) = row?;
            Ok(Location {
                id: parse_uuid(&id)?,
                name,
                external_id,
                administrative_area_id: area.as_deref().map(parse_uuid).transpose()?,
                valid_until,
                location_type,
            })
        })
        .collect()
    }

    /// The administrative areas holding a location, nearest first (empty for an unknown one).
    pub fn area_chain(&self, location: uuid::Uuid) -> Result<Vec<uuid::Uuid>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "WITH RECURSIVE chain(id, depth) AS (
                 SELECT administrative_area_id, 0 FROM locations WHERE id = ?1
                 UNION ALL
                 SELECT a.parent_id, c.depth + 1 FROM admin_areas a JOIN chain c ON a.id = c.id
                 WHERE a.parent_id IS NOT NULL AND c.depth < 32)
             SELECT id FROM chain WHERE id IS NOT NULL ORDER BY depth",
        )?;
        let ids = stmt
            .query_map(params![location.to_string()], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.iter().map(|id| parse_uuid(id)).collect()
    }

    /// Whether `id` is a location (office or facility) this node knows.
    pub fn location_exists(&self, id: uuid::Uuid) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM locations WHERE id = ?1")?
            .query_row(params![id.to_string()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// A system client by id.
    pub fn client(&self, id: &str) -> Result<Option<ClientRow>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT id, name, secret_hash, scopes, status, created_at FROM clients WHERE id = ?1")?
            .query_row(params![id], client_row)
            .optional()?;
        row.map(decode_client).transpose()
    }

    /// Every system client.
    pub fn clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id, name, secret_hash, scopes, status, created_at FROM clients ORDER BY created_at, id")?;
        let rows = stmt
            .query_map([], client_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode_client).collect()
    }

    /// Free tracking ids.
    pub fn pool_free(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM tracking_pool WHERE event_id IS NULL")?
            .query_row([], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// One stored action by id, with its event id.
    pub fn action_document(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<(uuid::Uuid, ActionDocument)>, StoreError> {
        let row: Option<(String, String)> = self
            .conn
            .prepare_cached("SELECT event_id, body FROM actions WHERE id = ?1")?
            .query_row(params![id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(event_id, body)| {
            let doc = serde_json::from_str(&body)
                .map_err(|e| StoreError::Corrupt(format!("action {id} does not decode: {e}")))?;
            Ok((parse_uuid(&event_id)?, doc))
        })
        .transpose()
    }

    /// Actions this node recorded itself (not synced down from others).
    pub fn own_action_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM actions WHERE origin IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Counters.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            Ok(self.conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64)
        };
        Ok(StoreStats {
            events: count("SELECT count(*) FROM events")?,
            actions: count("SELECT count(*) FROM actions")?,
            log_seq: count("SELECT coalesce(max(seq), 0) FROM log")?,
            pool_free: self.pool_free()?,
        })
    }

    /// The whole log, in order (for verification and, later, sync).
    pub fn log_entries(&self, after_seq: u64, limit: u64) -> Result<Vec<LogEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, hash, entry FROM log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![after_seq as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(seq, hash, bytes)| {
                let entry = LogEntry::decode(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("log entry {seq}: {e}")))?;
                if entry.seq != seq as u64 || entry.hash().0.as_slice() != hash.as_slice() {
                    return Err(StoreError::Corrupt(format!(
                        "log entry {seq} does not match its row"
                    )));
                }
                Ok(entry)
            })
            .collect()
    }
}

/// An action found by its idempotency key: its event and the hash of the request that made it.
pub type ActionByTransaction = (uuid::Uuid, Option<Vec<u8>>);

type RawClient = (String, String, String, String, String, String);

fn client_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawClient> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode_client(
    (id, name, secret_hash, scopes, status, created_at): RawClient,
) -> Result<ClientRow, StoreError> {
    let scopes = serde_json::from_str(&scopes)
        .map_err(|e| StoreError::Corrupt(format!("client {id} scopes: {e}")))?;
    Ok(ClientRow {
        id,
        name,
        secret_hash,
        scopes,
        status,
        created_at,
    })
}

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
