//! Store side of sync: downstream items of every kind apply once however often they arrive, a
//! bad item is skipped and kept as evidence, concurrent writes show as conflicts, and the
//! backlog, acknowledgements and bounds are what the engine expects. Plain tests: the store's
//! blocking API needs no async runtime.

use crvs_common::event::{ActionType, Declaration};
use crvs_common::feed::CentralRecord;
use crvs_common::location::LocationSet;
use crvs_common::log::LogEntry;
use crvs_common::state::EventStatus;
use crvs_sync::engine::NodeStore as _;
use serde_json::json;

use super::super::test_support::{
    Writer, action, create_event_blocking, decl, fill_pool_blocking, open, payload,
};
use super::*;

const NODE: u8 = 1;
const OTHER: u8 = 2;
const THIRD: u8 = 3;
const CENTRAL: u8 = 0xce;

fn sync_store(store: &Store) -> SyncStore {
    store
        .sync_store(Writer::new(CENTRAL).key.node_id())
        .unwrap()
}

/// Central's entry carrying `record`.
fn central(
    w: &mut Writer,
    record: &CentralRecord,
    event_id: uuid::Uuid,
    change: Option<Vec<u8>>,
) -> LogEntry {
    let entry = LogEntry::sign(
        &w.key,
        w.head.seq + 1,
        w.head.hash,
        Hlc {
            wall_ms: 1_700_000_000_000,
            counter: 0,
        },
        event_id,
        serde_json::to_vec(record).unwrap(),
        change,
    )
    .unwrap();
    w.head = LogHead {
        seq: entry.seq,
        hash: entry.hash(),
    };
    entry
}

fn relay(w: &mut Writer, entry: &LogEntry) -> LogEntry {
    let record = CentralRecord::Relay {
        origin: entry.node_id.to_string(),
        entry: hex::encode(entry.encode()),
    };
    central(w, &record, entry.event_id, None)
}

fn node_hex(seed: u8) -> String {
    Writer::new(seed).key.node_id().to_string()
}

/// Everything a downstream batch can change, for before/after comparisons.
fn snapshot(s: &SyncStore) -> serde_json::Value {
    let r = s.reader();
    let events: Vec<_> = r
        .conn
        .prepare("SELECT id, tracking_id, status, index_json FROM events ORDER BY id")
        .unwrap()
        .query_map([], |row| {
            Ok(json!([
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?
            ]))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let actions: Vec<_> = r
        .conn
        .prepare("SELECT id, origin, log_seq FROM actions ORDER BY id")
        .unwrap()
        .query_map([], |row| {
            Ok(json!([
                row.get::<_, String>(0)?,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, Option<i64>>(2)?
            ]))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let clients: Vec<_> = r
        .clients()
        .unwrap()
        .into_iter()
        .map(|c| json!([c.id, c.secret_hash, c.scopes, c.status]))
        .collect();
    json!({
        "events": events,
        "actions": actions,
        "clients": clients,
        "pool": r.pool_free().unwrap(),
        "locations": r.locations().unwrap().len(),
        "revoked": r.revoked_nodes().unwrap(),
        "cursor": r.sync_state().unwrap().down_cursor,
    })
}

#[test]
fn every_record_kind_applies_once_however_often_it_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    let mut s = sync_store(&store);
    let mut central_w = Writer::new(CENTRAL);
    let mut other = Writer::new(OTHER);
    let event_id = uuid::Uuid::new_v4();
    let create = action(ActionType::Create, "1", Declaration::new(), "other-client");
    let notify = action(
        ActionType::Notify,
        "1",
        decl(json!({"child.name": {"firstname": "Ada"}})),
        "other-client",
    );
    let e1 = other.write(
        &payload(event_id, "ABC123", vec![create.clone()]),
        &Declaration::new(),
        1_700_000_000_000,
    );
    let e2 = other.write(
        &payload(event_id, "ABC123", vec![notify.clone()]),
        &decl(json!({"child.name": {"firstname": "Ada"}})),
        1_700_000_001_000,
    );
    // Central confirms: its change depends on the other node's, so it merges after them.
    let mut central_crdt = EventCrdt::new(actor_for(central_w.key.node_id().as_bytes()));
    central_crdt
        .apply_change(e1.crdt_change.as_ref().unwrap())
        .unwrap();
    central_crdt
        .apply_change(e2.crdt_change.as_ref().unwrap())
        .unwrap();
    let mut register = action(
        ActionType::Register,
        "central-1",
        Declaration::new(),
        "central",
    );
    register.registration_number = Some("2024BCAAAA0001".into());
    let register_payload = payload(event_id, "ABC123", vec![register.clone()]);
    let register_change = central_crdt
        .record(
            &register_payload.actions,
            &Declaration::new(),
            1_700_000_002_000,
        )
        .unwrap();
    let secret_hash = crate::auth::hash_secret("s3cret").unwrap();
    let items = vec![
        relay(&mut central_w, &e1),
        relay(&mut central_w, &e2),
        central(
            &mut central_w,
            &CentralRecord::Actions(register_payload),
            event_id,
            Some(register_change),
        ),
        central(
            &mut central_w,
            &CentralRecord::PoolGrant {
                node_id: node_hex(NODE),
                tracking_ids: vec!["AAA001".into(), "AAA002".into(), "AAA003".into()],
            },
            uuid::Uuid::nil(),
            None,
        ),
        central(
            &mut central_w,
            &CentralRecord::PoolGrant {
                node_id: node_hex(THIRD),
                tracking_ids: vec!["BBB001".into()],
            },
            uuid::Uuid::nil(),
            None,
        ),
        central(
            &mut central_w,
            &CentralRecord::Client {
                id: "client-1".into(),
                name: "Clinic system".into(),
                secret_hash: secret_hash.clone(),
                scopes: vec!["type=record.notify&event=birth".into()],
                status: "active".into(),
                created_at: "2024-01-01T00:00:00.000Z".into(),
            },
            uuid::Uuid::nil(),
            None,
        ),
        central(
            &mut central_w,
            &CentralRecord::Locations(LocationSet::from_json(crate::DEMO_LOCATIONS_JSON).unwrap()),
            uuid::Uuid::nil(),
            None,
        ),
        central(
            &mut central_w,
            &CentralRecord::NodeRevoked {
                node_id: node_hex(THIRD),
            },
            uuid::Uuid::nil(),
            None,
        ),
    ];
    let to = items.last().unwrap().seq;
    s.apply_down(&items, to).unwrap();
    let once = snapshot(&s);
    // Re-delivery (a lost DownAck, a restarted session) changes nothing.
    s.apply_down(&items, to).unwrap();
    s.apply_down(&items[1..3], to).unwrap();
    assert_eq!(snapshot(&s), once);

    let r = s.reader();
    assert_eq!(r.sync_state().unwrap().down_cursor, to);
    assert_eq!(r.pool_free().unwrap(), 3, "only this node's grant is used");
    let client = r.client("client-1").unwrap().unwrap();
    assert_eq!(
        (client.secret_hash, client.status),
        (secret_hash, "active".into())
    );
    assert!(!r.locations().unwrap().is_empty());
    assert_eq!(r.revoked_nodes().unwrap(), vec![node_hex(THIRD)]);
    let doc = r.event_document(event_id).unwrap().unwrap();
    assert_eq!(doc.tracking_id, "ABC123");
    let kinds: Vec<_> = doc.actions.iter().map(|a| a.action_type).collect();
    assert_eq!(
        kinds,
        [ActionType::Create, ActionType::Notify, ActionType::Register]
    );
    assert_eq!(
        r.action_origin(notify.id).unwrap(),
        Some(ActionOrigin {
            origin: Some(node_hex(OTHER)),
            log_seq: None
        }),
        "a synced action names its writer and has no entry in this node's log"
    );
    assert_eq!(
        r.action_origin(register.id).unwrap(),
        Some(ActionOrigin {
            origin: Some(central_w.key.node_id().to_string()),
            log_seq: None
        })
    );
    let index = r.index_entries(Some("ABC123")).unwrap();
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].status, EventStatus::Registered);
    assert_eq!(
        index[0].registration_number.as_deref(),
        Some("2024BCAAAA0001")
    );
    assert_eq!(
        serde_json::Value::Object(index[0].declaration.clone()),
        json!({"child.name": {"firstname": "Ada"}})
    );
    assert_eq!(
        r.log_head().unwrap(),
        LogHead::GENESIS,
        "nothing synced lands in our log"
    );
}

#[test]
fn concurrent_writes_elsewhere_show_as_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    let mut s = sync_store(&store);
    let mut central_w = Writer::new(CENTRAL);
    let event_id = uuid::Uuid::new_v4();
    let mut x = Writer::new(OTHER);
    let base = x.write(
        &payload(
            event_id,
            "ABC124",
            vec![action(ActionType::Create, "1", Declaration::new(), "x")],
        ),
        &decl(json!({"child.gender": "unknown"})),
        1,
    );
    let mut y = Writer::new(THIRD);
    y.crdt
        .apply_change(base.crdt_change.as_ref().unwrap())
        .unwrap();
    let gender = |g: &str| decl(json!({"child.gender": g}));
    let ex = x.write(
        &payload(
            event_id,
            "ABC124",
            vec![action(ActionType::Notify, "2", gender("male"), "x")],
        ),
        &gender("male"),
        2,
    );
    let ey = y.write(
        &payload(
            event_id,
            "ABC124",
            vec![action(ActionType::Notify, "2", gender("female"), "y")],
        ),
        &gender("female"),
        2,
    );
    let items = vec![
        relay(&mut central_w, &base),
        relay(&mut central_w, &ey),
        relay(&mut central_w, &ex),
    ];
    s.apply_down(&items, 3).unwrap();
    let index = s.reader().index_entries(Some("ABC124")).unwrap();
    assert_eq!(index[0].conflicts.len(), 1);
    assert_eq!(index[0].conflicts[0].field, "child.gender");
    assert_eq!(index[0].conflicts[0].values.len(), 2);
    // Both NOTIFYs use transaction id "2" (two clinics' systems): both are kept.
    let doc = s.reader().event_document(event_id).unwrap().unwrap();
    assert_eq!(doc.actions.len(), 3);
}

#[test]
fn a_bad_item_is_skipped_kept_as_evidence_and_the_cursor_moves() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    let mut s = sync_store(&store);
    let mut central_w = Writer::new(CENTRAL);
    let mut other = Writer::new(OTHER);
    let event_id = uuid::Uuid::new_v4();
    let mut forged = other.write(
        &payload(
            event_id,
            "ABC125",
            vec![action(ActionType::Create, "1", Declaration::new(), "o")],
        ),
        &Declaration::new(),
        1,
    );
    forged.signature[0] ^= 1;
    let grant = CentralRecord::PoolGrant {
        node_id: node_hex(NODE),
        tracking_ids: vec!["CCC001".into(), "bad id".into()],
    };
    let items = vec![
        relay(&mut central_w, &forged),
        central(&mut central_w, &grant, uuid::Uuid::nil(), None),
        central(
            &mut central_w,
            &CentralRecord::PoolGrant {
                node_id: node_hex(NODE),
                tracking_ids: vec!["CCC002".into()],
            },
            uuid::Uuid::nil(),
            None,
        ),
    ];
    s.apply_down(&items, 3).unwrap();
    let r = s.reader();
    assert_eq!(r.sync_state().unwrap().down_cursor, 3);
    assert_eq!(r.sync_state().unwrap().down_rejects_total, 2);
    let rejected: Vec<u64> = r
        .down_rejects()
        .unwrap()
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(rejected, [2, 1]);
    assert!(
        r.event_document(event_id).unwrap().is_none(),
        "the forged relay changed nothing"
    );
    assert_eq!(
        r.pool_free().unwrap(),
        1,
        "the half-valid grant rolled back whole"
    );
}

#[test]
fn an_entry_not_signed_by_central_fails_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    let mut s = sync_store(&store);
    let mut impostor = Writer::new(OTHER);
    let item = central(
        &mut impostor,
        &CentralRecord::PoolGrant {
            node_id: node_hex(NODE),
            tracking_ids: vec!["DDD001".into()],
        },
        uuid::Uuid::nil(),
        None,
    );
    assert!(s.apply_down(&[item], 1).is_err());
    assert_eq!(s.reader().sync_state().unwrap().down_cursor, 0);
    assert_eq!(s.reader().pool_free().unwrap(), 0);
}

#[test]
fn backlog_acks_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    let mut s = sync_store(&store);
    fill_pool_blocking(&store, 5);
    for i in 0..3 {
        create_event_blocking(
            &store,
            &format!("t{i}"),
            decl(json!({"child.dob": "2024-01-01"})),
        );
    }
    let head = s.log_head().unwrap();
    assert_eq!(head.seq, 6);
    let now = crate::store::wall_ms() + 5_000;
    let health = s.health(now).unwrap();
    assert_eq!(health.backlog_entries, 6);
    assert_eq!(health.pool_free, 2);
    let all = s.entries_after(0, 100, usize::MAX).unwrap();
    let total: usize = all.iter().map(|e| e.encode().len()).sum();
    assert_eq!(
        health.backlog_bytes, total as u64,
        "running totals match the entries"
    );
    let after_four: usize = all[4..].iter().map(|e| e.encode().len()).sum();
    assert!(health.oldest_unacked_ms >= 5_000, "{health:?}");
    // Bounds: at least one entry, never more than asked.
    assert_eq!(s.entries_after(0, 100, 1).unwrap().len(), 1);
    assert_eq!(s.entries_after(0, 4, usize::MAX).unwrap().len(), 4);
    let rest = s.entries_after(4, 100, usize::MAX).unwrap();
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
    assert_eq!(s.hash_at(6).unwrap(), Some(head.hash));
    assert_eq!(s.hash_at(7).unwrap(), None);

    let acked = LogHead {
        seq: 4,
        hash: s.hash_at(4).unwrap().unwrap(),
    };
    s.record_ack(acked, &[], now).unwrap();
    let health = s.health(now).unwrap();
    assert_eq!(health.backlog_entries, 2);
    assert_eq!(health.backlog_bytes, after_four as u64);
    let state = s.reader().sync_state().unwrap();
    assert_eq!((state.acked, state.last_success_ms), (acked, Some(now)));

    let reject = Reject {
        seq: 5,
        reason: "bad-signature".into(),
        detail: "signature does not verify".into(),
    };
    s.record_ack(acked, std::slice::from_ref(&reject), now + 1)
        .unwrap();
    let state = s.reader().sync_state().unwrap();
    assert_eq!(state.rejects_total, 1);
    assert_eq!(
        state.last_success_ms,
        Some(now),
        "a refusal is not a success"
    );
    assert!(state.last_error.unwrap().contains("bad-signature"));
    assert_eq!(s.reader().sync_rejects().unwrap(), [reject]);

    s.record_error("connecting: timed out".into(), now + 2)
        .unwrap();
    let state = s.reader().sync_state().unwrap();
    assert_eq!(state.last_error.as_deref(), Some("connecting: timed out"));
    assert_eq!(state.last_error_ms, Some(now + 2));
}

#[test]
fn local_idempotency_ignores_synced_actions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    let mut s = sync_store(&store);
    fill_pool_blocking(&store, 5);
    let local = create_event_blocking(&store, "same-tx", Declaration::new());
    let mut central_w = Writer::new(CENTRAL);
    let mut other = Writer::new(OTHER);
    let remote = uuid::Uuid::new_v4();
    let entry = other.write(
        &payload(
            remote,
            "EEE001",
            vec![action(
                ActionType::Notify,
                "same-tx",
                Declaration::new(),
                "o",
            )],
        ),
        &Declaration::new(),
        1,
    );
    s.apply_down(&[relay(&mut central_w, &entry)], 1).unwrap();
    let found = s
        .reader()
        .action_by_transaction("same-tx", "NOTIFY", "Accepted")
        .unwrap();
    assert_eq!(found.map(|(event, _)| event), Some(local));
}
