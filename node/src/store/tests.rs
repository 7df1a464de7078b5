//! Store tests: group commit isolates a failing job, the log chains across groups and restarts,
//! and the pool never hands out an id twice.

use std::sync::Arc;

use crvs_common::event::{ActionDocument, ActionStatus, ActionType, UserType, format_timestamp_ms};
use crvs_common::log::{NodeSecretKey, verify_chain};

use super::*;

fn key() -> NodeSecretKey {
    NodeSecretKey::from_bytes(&[7; 32])
}

fn pool() -> PoolSettings {
    PoolSettings {
        size: 50,
        low_water: 10,
        standalone: true,
    }
}

fn open(dir: &tempfile::TempDir) -> Store {
    let path = dir.path().join("node.db");
    Store::init(&path, key().node_id()).unwrap();
    Store::open(&path, key(), pool(), 64).unwrap()
}

fn create_action(tx: &str) -> ActionDocument {
    ActionDocument {
        id: uuid::Uuid::new_v4(),
        action_type: ActionType::Create,
        transaction_id: tx.into(),
        status: ActionStatus::Accepted,
        created_by: "c".into(),
        created_by_user_type: UserType::System,
        created_by_role: None,
        created_at_location: None,
        created_at: format_timestamp_ms(0),
        declaration: Some(Default::default()),
        annotation: None,
        original_action_id: None,
        content: None,
        registration_number: None,
        request_id: None,
        assigned_to: None,
        custom_action_type: None,
    }
}

/// Inside a write job: creates an event with its CREATE action and signs the entry.
fn create_in(ctx: &mut WriteCtx<'_>, tx: &str) -> Result<uuid::Uuid, StoreError> {
    let id = uuid::Uuid::new_v4();
    let tracking = ctx.take_tracking_id()?.expect("pool has ids");
    ctx.insert_event(&NewEvent {
        id,
        event_type: "birth",
        tracking_id: &tracking,
        transaction_id: tx,
        request_hash: b"h",
        created_at: &format_timestamp_ms(0),
    })?;
    let meta = EventMeta {
        id,
        event_type: "birth".into(),
        tracking_id: tracking.clone(),
        created_at: format_timestamp_ms(0),
    };
    ctx.append_action(&meta, create_action(tx), None)?;
    ctx.finish_event()?;
    Ok(id)
}

/// Creates an event and its CREATE action; fails after writing if `fail` is set.
async fn create(store: &Store, tx: &'static str, fail: bool) -> Result<uuid::Uuid, StoreError> {
    store
        .write(move |ctx| {
            let id = create_in(ctx, tx)?;
            if fail {
                return Err(StoreError::Corrupt("job failed on purpose".into()));
            }
            Ok(id)
        })
        .await
}

#[tokio::test]
async fn a_job_that_forgets_its_entry_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let result = store
        .write(|ctx| -> Result<(), StoreError> {
            let id = uuid::Uuid::new_v4();
            let tracking = ctx.take_tracking_id()?.expect("pool has ids");
            ctx.insert_event(&NewEvent {
                id,
                event_type: "birth",
                tracking_id: &tracking,
                transaction_id: "t",
                request_hash: b"h",
                created_at: "x",
            })?;
            let meta = EventMeta {
                id,
                event_type: "birth".into(),
                tracking_id: tracking,
                created_at: "x".into(),
            };
            ctx.append_action(&meta, create_action("t"), None)
        })
        .await;
    assert!(
        result.is_err(),
        "an action without its entry must not commit"
    );
    let stats = store.read(|r| r.stats()).await.unwrap();
    assert_eq!((stats.events, stats.actions, stats.log_seq), (0, 0, 0));
}

#[tokio::test]
async fn a_failing_job_rolls_back_alone_and_the_chain_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // Submit many jobs at once so they share groups; every third one fails after writing.
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..60usize {
        let store = Arc::clone(&store);
        let tx: &'static str = Box::leak(format!("tx{i}").into_boxed_str());
        tasks.push(tokio::spawn(async move {
            (i, create(&store, tx, i % 3 == 0).await)
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (i, result) = t.await.unwrap();
        assert_eq!(result.is_ok(), i % 3 != 0, "job {i}");
        ok += usize::from(result.is_ok());
    }
    let stats = store.read(|r| r.stats()).await.unwrap();
    assert_eq!(stats.events, ok as u64);
    assert_eq!(stats.actions, ok as u64);
    assert_eq!(
        stats.log_seq, ok as u64,
        "failed jobs leave no log entry and no gap"
    );
    let entries = store.read(|r| r.log_entries(0, 1000)).await.unwrap();
    let head = verify_chain(key().node_id(), &entries).unwrap();
    assert_eq!(head.seq, ok as u64);
}

#[tokio::test]
async fn the_chain_continues_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        create(&store, "a", false).await.unwrap();
        create(&store, "b", false).await.unwrap();
    }
    let store = open(&dir);
    create(&store, "c", false).await.unwrap();
    let entries = store.read(|r| r.log_entries(0, 1000)).await.unwrap();
    assert_eq!(verify_chain(key().node_id(), &entries).unwrap().seq, 3);
}

#[tokio::test]
async fn another_key_cannot_open_the_database() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let other = NodeSecretKey::from_bytes(&[8; 32]);
    let err = Store::open(&dir.path().join("node.db"), other, pool(), 8).unwrap_err();
    assert!(matches!(err, StoreError::WrongNode { .. }), "{err}");
}

#[tokio::test]
async fn standalone_pool_refills_and_never_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut ids = std::collections::HashSet::new();
    for i in 0..120 {
        let tx: &'static str = Box::leak(format!("p{i}").into_boxed_str());
        let id = create(&store, tx, false).await.unwrap();
        let doc = store
            .read(move |r| r.event_document(id))
            .await
            .unwrap()
            .unwrap();
        assert!(ids.insert(doc.tracking_id.clone()), "tracking id reused");
    }
    assert!(store.read(|r| r.pool_free()).await.unwrap() >= 10);
}

/// Callers are answered only after the syncer's fsync, and the durable head it publishes (what
/// the sync driver may send) already covers every answered write; a reopened store starts with
/// everything it finds durable.
#[tokio::test]
async fn an_answered_write_is_within_the_durable_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(store.durable_seq(), 0);
    let mut handles = Vec::new();
    for tx in ["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"] {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let seq = store
                .write(move |ctx| {
                    create_in(ctx, tx)?;
                    Ok::<_, StoreError>(ctx.reader().log_head()?.seq)
                })
                .await
                .unwrap();
            // Checked the moment the caller is answered.
            (seq, store.durable_seq())
        }));
    }
    for handle in handles {
        let (seq, durable) = handle.await.unwrap();
        assert!(
            durable >= seq,
            "answered entry {seq} but durable head {durable}"
        );
    }
    let head = store.read(|r| r.log_head()).await.unwrap();
    assert_eq!(head.seq, 8);
    assert_eq!(store.durable_seq(), 8, "every answered write is durable");
    drop(store);
    let reopened = Store::open(&dir.path().join("node.db"), key(), pool(), 64).unwrap();
    assert_eq!(reopened.durable_seq(), 8);
}
