//! Fixtures shared by the store, enrollment and sync driver tests: stores on temporary
//! directories, actions, local writes, and writes "made elsewhere" (another node's signed entry
//! with its automerge change), as central would relay them.

use crvs_common::event::{
    ActionDocument, ActionStatus, ActionType, Declaration, EntryPayload, UserType,
    format_timestamp_ms,
};
use crvs_common::hlc::Hlc;
use crvs_common::log::{LogEntry, LogHead, NodeSecretKey};
use crvs_sync::merge::{EventCrdt, actor_for};

use super::{EventMeta, NewEvent, PoolSettings, Store, StoreError, WriteCtx};

/// A node key from a seed byte.
pub(crate) fn key(seed: u8) -> NodeSecretKey {
    NodeSecretKey::from_bytes(&[seed; 32])
}

/// Opens (creating) the store of node `seed` in `dir`; enrolled nodes do not fill their pool.
pub(crate) fn open(dir: &std::path::Path, seed: u8, standalone: bool) -> Store {
    let path = dir.join("node.db");
    Store::init(&path, key(seed).node_id()).unwrap();
    let pool = PoolSettings {
        size: 50,
        low_water: 10,
        standalone,
    };
    Store::open(&path, key(seed), pool, 64).unwrap()
}

/// An accepted action of `action_type` by system client `by`. Its id is time-ordered, as the
/// node's own are, so actions made one after the other keep that order among equal times.
pub(crate) fn action(
    action_type: ActionType,
    tx: &str,
    declaration: Declaration,
    by: &str,
) -> ActionDocument {
    ActionDocument {
        id: uuid::Uuid::now_v7(),
        action_type,
        transaction_id: tx.into(),
        status: ActionStatus::Accepted,
        created_by: by.into(),
        created_by_user_type: UserType::System,
        created_by_role: None,
        created_at_location: None,
        created_at: format_timestamp_ms(1_700_000_000_000),
        declaration: Some(declaration),
        annotation: None,
        original_action_id: None,
        content: None,
        registration_number: None,
        request_id: None,
        assigned_to: None,
        custom_action_type: None,
    }
}

/// A declaration from JSON.
pub(crate) fn decl(value: serde_json::Value) -> Declaration {
    value.as_object().cloned().unwrap_or_default()
}

/// The write job of a create followed by a notify with `declaration`: two log entries.
fn create_and_notify_job(
    ctx: &mut WriteCtx<'_>,
    tx: &str,
    declaration: Declaration,
) -> Result<uuid::Uuid, StoreError> {
    let id = uuid::Uuid::new_v4();
    let tracking = ctx
        .take_tracking_id()?
        .ok_or_else(|| StoreError::Corrupt("pool is empty".into()))?;
    let created_at = format_timestamp_ms(ctx.now_ms());
    ctx.insert_event(&NewEvent {
        id,
        event_type: "birth",
        tracking_id: &tracking,
        transaction_id: tx,
        request_hash: b"h",
        created_at: &created_at,
    })?;
    let meta = EventMeta {
        id,
        event_type: "birth".into(),
        tracking_id: tracking,
        created_at,
    };
    ctx.append_action(
        &meta,
        action(ActionType::Create, tx, Declaration::new(), "c"),
        Some(b"h"),
    )?;
    ctx.finish_event()?;
    ctx.append_action(
        &meta,
        action(ActionType::Notify, tx, declaration, "c"),
        Some(b"n"),
    )?;
    ctx.finish_event()?;
    Ok(id)
}

/// Creates and notifies an event (two log entries), from async code.
pub(crate) async fn create_event(store: &Store, tx: &str, declaration: Declaration) -> uuid::Uuid {
    let tx = tx.to_owned();
    store
        .write(move |ctx| create_and_notify_job(ctx, &tx, declaration))
        .await
        .unwrap()
}

/// Creates and notifies an event (two log entries), from a blocking thread.
pub(crate) fn create_event_blocking(
    store: &Store,
    tx: &str,
    declaration: Declaration,
) -> uuid::Uuid {
    let tx = tx.to_owned();
    store
        .write_blocking(move |ctx| create_and_notify_job(ctx, &tx, declaration))
        .unwrap()
}

/// Puts `count` random ids in the pool (as a grant would), from a blocking thread.
pub(crate) fn fill_pool_blocking(store: &Store, count: u32) {
    store
        .write_blocking(move |ctx| ctx.fill_pool(count))
        .unwrap();
}

/// Another node (or central) writing on an event: its merge document and its log.
pub(crate) struct Writer {
    pub(crate) key: NodeSecretKey,
    pub(crate) head: LogHead,
    pub(crate) crdt: EventCrdt,
}

impl Writer {
    pub(crate) fn new(seed: u8) -> Self {
        let key = key(seed);
        let crdt = EventCrdt::new(actor_for(key.node_id().as_bytes()));
        Self {
            key,
            head: LogHead::GENESIS,
            crdt,
        }
    }

    /// Records `actions` with declaration `delta` on the event and signs the entry.
    pub(crate) fn write(
        &mut self,
        payload: &EntryPayload,
        delta: &Declaration,
        wall_ms: u64,
    ) -> LogEntry {
        let change = self
            .crdt
            .record(&payload.actions, delta, wall_ms as i64)
            .unwrap();
        self.sign(payload, Some(change), wall_ms)
    }

    /// Signs an entry carrying `payload` and `change` on top of this writer's log.
    pub(crate) fn sign(
        &mut self,
        payload: &EntryPayload,
        change: Option<Vec<u8>>,
        wall_ms: u64,
    ) -> LogEntry {
        let entry = LogEntry::sign(
            &self.key,
            self.head.seq + 1,
            self.head.hash,
            Hlc {
                wall_ms,
                counter: 0,
            },
            payload.event_id,
            serde_json::to_vec(payload).unwrap(),
            change,
        )
        .unwrap();
        self.head = LogHead {
            seq: entry.seq,
            hash: entry.hash(),
        };
        entry
    }
}

/// The payload of a write on a birth event.
pub(crate) fn payload(
    event_id: uuid::Uuid,
    tracking_id: &str,
    actions: Vec<ActionDocument>,
) -> EntryPayload {
    EntryPayload {
        event_id,
        event_type: "birth".into(),
        tracking_id: tracking_id.into(),
        event_created_at: format_timestamp_ms(1_700_000_000_000),
        actions,
    }
}
