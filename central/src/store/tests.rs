//! Store tests: applying node entries (idempotency, content rejects, forks), feed filtering by
//! audience and jurisdiction, tracking-id leases, and central's log chain across handles.

use std::collections::HashSet;

use crvs_common::feed::CentralRecord;
use crvs_common::log::{LogEntry, LogHead, verify_chain};
use crvs_common::state::EventStatus;
use crvs_sync::engine::{CentralSession, CentralStore as _, SyncConfig};
use crvs_sync::wire::{Entries, Hello, Message};
use serde_json::json;

use crate::testing::{NodeWriter, enroll, facility, fixture, lease, node_key};

fn record_of(entry: &LogEntry) -> CentralRecord {
    serde_json::from_slice(&entry.action).unwrap()
}

#[test]
fn applies_a_batch_and_is_idempotent() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 3);
    let (event, create) = node.create(&ids[0]);
    let notify = node.notify(&event, json!({"child.name": {"firstname": "Liam"}}));
    let batch = [create, notify];
    let mut store = fx.store.clone();
    let head_before = store.read(|r| r.central_head()).unwrap();
    let (acked, rejects) = store.apply_entries(node.node_id(), &batch).unwrap();
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(acked, node.head);
    let index = store.read(|r| r.index_entry(event.id)).unwrap().unwrap();
    assert_eq!(index.status, EventStatus::Notified);
    assert_eq!(index.tracking_id, ids[0]);
    assert_eq!(
        index.declaration["child.name"],
        json!({"firstname": "Liam"})
    );
    // Relays follow behind the sync path: none yet, both queued in the order applied.
    assert_eq!(store.read(|r| r.central_head()).unwrap(), head_before);
    assert_eq!(store.read(|r| r.stats()).unwrap().relays_pending, 2);
    let relayed = store
        .write(|w| w.append_pending_relays(100, &|| false))
        .unwrap();
    assert_eq!(relayed, 2);
    assert_eq!(store.read(|r| r.stats()).unwrap().relays_pending, 0);
    // One relay per applied entry, addressed to the event's area, from the node.
    let relays = store
        .read(|r| r.central_entries(head_before.seq, 100))
        .unwrap();
    assert_eq!(relays.len(), 2);
    for (relay, entry) in relays.iter().zip(&batch) {
        // Stored compact (schema v2) and rebuilt on read: the relayed bytes are the node's.
        match record_of(relay) {
            CentralRecord::Relay { origin, entry: hex } => {
                assert_eq!(origin, node.node_id().to_string());
                assert_eq!(hex, hex::encode(entry.encode()));
            }
            other => panic!("expected a relay, got {other:?}"),
        }
    }
    // Central's log, rebuilt rows included, is signed and chained.
    let all = store.read(|r| r.central_entries(0, 1000)).unwrap();
    assert_eq!(
        verify_chain(store.central_id(), &all).unwrap(),
        store.read(|r| r.central_head()).unwrap()
    );
    // Applying the same entries again changes nothing.
    let stats = store.read(|r| r.stats()).unwrap();
    let (again, rejects) = store.apply_entries(node.node_id(), &batch).unwrap();
    assert_eq!(again, acked);
    assert!(rejects.is_empty());
    let after = store.read(|r| r.stats()).unwrap();
    assert_eq!(after.actions, stats.actions);
    assert_eq!(after.central_log_seq, stats.central_log_seq);
    // The node's record and stored hashes follow.
    let record = store.node(node.node_id()).unwrap().unwrap();
    assert_eq!(record.acked, acked);
    assert_eq!(
        store.stored_hash(node.node_id(), 2).unwrap(),
        Some(acked.hash)
    );
}

#[test]
fn create_with_a_tracking_id_not_leased_to_the_node_is_refused_and_changes_nothing() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    enroll(&fx, 2, facility(2));
    let mut a = NodeWriter::new(1, facility(1));
    let b = NodeWriter::new(2, facility(2));
    let ids_b = lease(&fx, b.node_id(), 2);
    let ids_a = lease(&fx, a.node_id(), 2);
    let mut store = fx.store.clone();
    let (_, ok) = a.create(&ids_a[0]);
    let (_, foreign) = a.create(&ids_b[0]);
    let (_, later) = a.create(&ids_a[1]);
    let stats = store.read(|r| r.stats()).unwrap();
    let (acked, rejects) = store
        .apply_entries(a.node_id(), &[ok.clone(), foreign, later])
        .unwrap();
    assert_eq!(acked.seq, 1, "applying stops at the refused entry");
    assert_eq!(rejects.len(), 1);
    assert_eq!(rejects[0].seq, 2);
    assert_eq!(rejects[0].reason, "tracking-id");
    let after = store.read(|r| r.stats()).unwrap();
    assert_eq!(after.events, stats.events + 1);
    // An id already used is refused too (a second CREATE with the same id from a fresh event).
    let mut again = NodeWriter::new(1, facility(1));
    again.head = acked;
    let (_, reuse) = again.create(&ids_a[0]);
    let (_, rejects) = store.apply_entries(a.node_id(), &[reuse]).unwrap();
    assert_eq!(rejects[0].reason, "tracking-id");
}

#[test]
fn malformed_payload_and_unknown_event_are_content_rejects() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let key = node_key(1);
    let bad = LogEntry::sign(
        &key,
        1,
        crvs_common::log::EntryHash::GENESIS,
        crvs_common::hlc::Hlc::default(),
        uuid::Uuid::new_v4(),
        b"not json".to_vec(),
        None,
    )
    .unwrap();
    let mut store = fx.store.clone();
    let (acked, rejects) = store.apply_entries(key.node_id(), &[bad]).unwrap();
    assert_eq!(acked, LogHead::GENESIS);
    assert_eq!(rejects[0].reason, "malformed-payload");
    // A NOTIFY for an event central never saw created.
    let mut node = NodeWriter::new(1, facility(1));
    let event = crate::testing::Event {
        id: uuid::Uuid::new_v4(),
        tracking_id: "ABCDEF".into(),
    };
    let orphan = node.notify(&event, json!({"child.dob": "2024-01-01"}));
    let (_, rejects) = store.apply_entries(key.node_id(), &[orphan]).unwrap();
    assert_eq!(rejects[0].reason, "unknown-event");
}

#[test]
fn session_records_bad_signatures_and_quarantines_on_fork() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 2);
    let (_, create) = node.create(&ids[0]);
    let mut store = fx.store.clone();
    let mut session = CentralSession::new(SyncConfig::for_tests(), node.node_id());
    let hello = Hello {
        version: crvs_sync::WIRE_VERSION,
        node_id: node.node_id(),
        head: node.head,
        down_cursor: 0,
        pool_free: 100,
        backlog_entries: 1,
        backlog_bytes: 100,
        oldest_unacked_ms: 5,
        rtt_ms: 900,
    };
    session
        .handle_message(1, Message::Hello(hello), &mut store)
        .unwrap();
    assert!(matches!(session.poll_transmit(), Some(Message::Welcome(_))));
    // A forged signature is refused and recorded.
    let mut forged = create.clone();
    forged.signature[0] ^= 1;
    session
        .handle_message(
            2,
            Message::Entries(Entries {
                entries: vec![forged],
            }),
            &mut store,
        )
        .unwrap();
    let Some(Message::Ack(ack)) = session.poll_transmit() else {
        panic!("expected an ack")
    };
    assert_eq!(ack.acked, LogHead::GENESIS);
    assert_eq!(ack.rejects[0].reason, "bad-signature");
    let rejects = store.read(|r| r.rejects(Some(node.node_id()), 10)).unwrap();
    assert_eq!(rejects.len(), 1);
    // The genuine entry applies.
    session
        .handle_message(
            3,
            Message::Entries(Entries {
                entries: vec![create.clone()],
            }),
            &mut store,
        )
        .unwrap();
    let Some(Message::Ack(ack)) = session.poll_transmit() else {
        panic!("expected an ack")
    };
    assert_eq!(ack.acked.seq, 1);
    // Another entry at seq 1 is a fork: recorded with both entries, node quarantined.
    let mut clone = NodeWriter::new(1, facility(1));
    let (_, other) = clone.create(&ids[1]);
    assert_ne!(other.hash(), create.hash());
    let result = session.handle_message(
        4,
        Message::Entries(Entries {
            entries: vec![other],
        }),
        &mut store,
    );
    assert!(result.is_err());
    let row = store.read(|r| r.node(node.node_id())).unwrap().unwrap();
    assert!(row.is_quarantined());
    assert_eq!(row.forks, 1);
    assert!(store.node(node.node_id()).unwrap().unwrap().quarantined);
    assert_eq!(row.reported_head_seq, Some(1));
    assert_eq!(row.rtt_ms, Some(900));
    let _ = node.head_hash();
}

#[test]
fn feed_filters_by_audience_and_jurisdiction() {
    let fx = fixture();
    // A at F1 (district D1), B at F2 (district D2), P at FP (the province above both).
    enroll(&fx, 1, facility(1));
    enroll(&fx, 2, facility(2));
    enroll(&fx, 3, facility(0));
    let mut a = NodeWriter::new(1, facility(1));
    let b = node_key(2).node_id();
    let p = node_key(3).node_id();
    let ids = lease(&fx, a.node_id(), 2);
    lease(&fx, b, 2);
    crate::admin::add_client(&fx.store, "clinic", &["type=record.read".into()], 0).unwrap();
    let (_, create) = a.create(&ids[0]);
    let mut store = fx.store.clone();
    store.apply_entries(a.node_id(), &[create]).unwrap();
    // The indexer's job (`Store::start_indexer`), done here at once.
    store
        .write(|w| w.append_pending_relays(100, &|| false))
        .unwrap();
    let head = store.read(|r| r.central_head()).unwrap();
    let kinds = |node| {
        let head = store.read(|r| r.central_head()).unwrap();
        let (items, cursor, more) = store.feed_after(node, 0, 100, 1 << 20).unwrap();
        assert!(!more);
        assert_eq!(cursor, head.seq, "the cursor reaches the head");
        items
            .iter()
            .map(|e| match record_of(e) {
                CentralRecord::Relay { .. } => "relay",
                CentralRecord::PoolGrant { node_id, .. } => {
                    assert_eq!(node_id, node.to_string(), "only its own grants");
                    "grant"
                }
                CentralRecord::Client { .. } => "client",
                CentralRecord::User { .. } => "user",
                CentralRecord::Locations(_) => "locations",
                CentralRecord::NodeRevoked { .. } => "revoked",
                CentralRecord::Actions(_) => "actions",
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(a.node_id()), ["locations", "grant", "client"]);
    assert_eq!(kinds(b), ["locations", "grant", "client"]);
    assert_eq!(kinds(p), ["locations", "client", "relay"]);
    // Nothing visible after the cursor: the cursor still moves to the head.
    let (items, cursor, more) = store.feed_after(b, 4, 100, 1 << 20).unwrap();
    assert!(items.is_empty());
    assert_eq!(cursor, head.seq);
    assert!(!more);
    // Bounds: one item at a time; the cursor passes the invisible grants (2, 3) but stops before
    // the next visible entry (the client, 4).
    let (items, cursor, more) = store.feed_after(p, 0, 1, 1 << 20).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].seq, 1);
    assert_eq!(cursor, 3);
    assert!(more);
    // Revocations reach everyone.
    crate::admin::revoke_node(&fx.store, b).unwrap();
    assert_eq!(kinds(p).last(), Some(&"revoked"));
}

#[test]
fn concurrent_writes_from_two_nodes_merge_and_are_listed_as_conflicts() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    enroll(&fx, 2, facility(1));
    let mut a = NodeWriter::new(1, facility(1));
    let mut b = NodeWriter::new(2, facility(1));
    let ids = lease(&fx, a.node_id(), 1);
    let (event, create) = a.create(&ids[0]);
    b.observe(&event, &create);
    let from_a = a.notify(&event, json!({"child.gender": "male"}));
    let from_b = b.notify(&event, json!({"child.gender": "female"}));
    let mut store = fx.store.clone();
    store.apply_entries(a.node_id(), &[create, from_a]).unwrap();
    let (_, rejects) = store.apply_entries(b.node_id(), &[from_b]).unwrap();
    assert!(rejects.is_empty(), "{rejects:?}");
    let index = store.read(|r| r.index_entry(event.id)).unwrap().unwrap();
    assert_eq!(index.conflicts.len(), 1);
    assert_eq!(index.conflicts[0].field, "child.gender");
    assert_eq!(index.declaration["child.gender"], index.conflicts[0].winner);
    let listed = store.read(|r| r.conflicts(10)).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fields, ["child.gender"]);
}

#[test]
fn pool_leases_are_unique_and_follow_the_low_water_mark() {
    let fx = fixture();
    let nodes: Vec<_> = (1..=4u8)
        .map(|n| {
            enroll(&fx, n, facility(1));
            node_key(n).node_id()
        })
        .collect();
    let mut all = HashSet::new();
    for node in &nodes {
        for id in lease(&fx, *node, 500) {
            assert!(all.insert(id), "tracking id leased twice");
        }
    }
    assert_eq!(all.len(), 2000);
    let mut store = fx.store.clone();
    let node = nodes[0];
    // Above the low-water mark (5): nothing; below it but holding ≥ lease size unused: nothing.
    let seq = store.read(|r| r.central_head()).unwrap().seq;
    store.ensure_pool(node, 5).unwrap();
    store.ensure_pool(node, 0).unwrap();
    assert_eq!(store.read(|r| r.central_head()).unwrap().seq, seq);
    // A fresh node below the mark gets one grant of `pool_lease_size` (20), once.
    enroll(&fx, 9, facility(1));
    let fresh = node_key(9).node_id();
    store.ensure_pool(fresh, 0).unwrap();
    store.ensure_pool(fresh, 0).unwrap();
    assert_eq!(store.read(|r| r.unused_tracking_ids(fresh)).unwrap(), 20);
    assert_eq!(store.read(|r| r.central_head()).unwrap().seq, seq + 1);
}

#[test]
fn central_log_stays_chained_across_handles() {
    let fx = fixture();
    // A second handle on the same file stands for an operator command in another process: the
    // head is read inside each transaction, so interleaved appends keep one chain.
    let other = crate::open_store(&fx.config).unwrap();
    for i in 0..5 {
        let store = if i % 2 == 0 { &fx.store } else { &other };
        crate::admin::add_client(store, &format!("c{i}"), &["type=record.read".into()], 0).unwrap();
    }
    enroll(&fx, 1, facility(1));
    crate::admin::revoke_node(&other, node_key(1).node_id()).unwrap();
    let entries = fx.store.read(|r| r.central_entries(0, 1000)).unwrap();
    assert_eq!(entries.len(), 7, "locations, 5 clients, 1 revocation");
    let head = verify_chain(fx.store.central_id(), &entries).unwrap();
    assert_eq!(head, fx.store.read(|r| r.central_head()).unwrap());
    let _ = &fx.dir;
}

#[test]
fn a_change_with_dependencies_central_lacks_is_refused_and_the_event_stays_loadable() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    enroll(&fx, 2, facility(1));
    let mut a = NodeWriter::new(1, facility(1));
    let mut b = NodeWriter::new(2, facility(1));
    let ids = lease(&fx, a.node_id(), 1);
    let (event, create) = a.create(&ids[0]);
    let first = a.notify(&event, json!({"child.gender": "male"}));
    // B saw A's notify before central did (not possible for honest nodes, which only learn of
    // other nodes' changes through central): its change depends on one central lacks.
    b.observe(&event, &create);
    b.observe(&event, &first);
    let from_b = b.notify(&event, json!({"child.gender": "female"}));
    let mut store = fx.store.clone();
    store.apply_entries(a.node_id(), &[create]).unwrap();
    let (_, rejects) = store.apply_entries(b.node_id(), &[from_b]).unwrap();
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0].reason, "bad-crdt-change");
    // The stored document was not touched: A's later entry still applies.
    let (head, rejects) = store.apply_entries(a.node_id(), &[first]).unwrap();
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(head.seq, 2);
    let index = store.read(|r| r.index_entry(event.id)).unwrap().unwrap();
    assert_eq!(index.declaration["child.gender"], "male");
}

/// A change automerge cannot apply (it panics on this one: puts into an object nobody made) is
/// refused with its reason; the entries before it in the same batch, on the same event, stay
/// applied, and the event's document and index are theirs.
#[test]
fn a_change_automerge_fails_on_is_refused_and_the_batch_before_it_stands() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut a = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, a.node_id(), 1);
    let (event, create) = a.create(&ids[0]);
    let first = a.notify(&event, json!({"child.gender": "male"}));
    let broken = a.notify_into_nothing(&event, json!({"child.gender": "female"}));
    let mut store = fx.store.clone();
    let (head, rejects) = store
        .apply_entries(a.node_id(), &[create, first, broken])
        .unwrap();
    assert_eq!(head.seq, 2);
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0].reason, "bad-crdt-change");
    assert_eq!(rejects[0].seq, 3);
    let index = store.read(|r| r.index_entry(event.id)).unwrap().unwrap();
    assert_eq!(index.declaration["child.gender"], "male");
    assert!(index.conflicts.is_empty(), "{:?}", index.conflicts);
    // The stored document loads and holds exactly the two applied changes.
    let doc = store.write(|tx| tx.load_crdt(event.id)).unwrap();
    assert_eq!(
        doc.crdt.state().unwrap().0["child.gender"],
        "\"male\"".parse::<serde_json::Value>().unwrap()
    );
}

/// A requested REGISTER is answered once, in the transaction that applied it: Accepted with a
/// number in the configured format, signed into central's log for the event's area; applying
/// the entry again changes nothing; a second request of the same event is Rejected; every
/// number is unique.
#[test]
fn requested_registrations_are_confirmed_exactly_once() {
    use crvs_common::event::{ActionStatus, ActionType};

    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 3);
    let mut store = fx.store.clone();
    let mut numbers = HashSet::new();
    for tracking_id in &ids[..2] {
        let (event, create) = node.create(tracking_id);
        let notify = node.notify(&event, json!({"child.name": {"firstname": "Liam"}}));
        let request = node.request_registration(&event);
        let batch = [create, notify, request];
        let (_, rejects) = store.apply_entries(node.node_id(), &batch).unwrap();
        assert!(rejects.is_empty(), "{rejects:?}");
        let doc = store.read(|r| r.event_document(event.id)).unwrap().unwrap();
        let accepted: Vec<_> = doc
            .actions
            .iter()
            .filter(|a| a.action_type == ActionType::Register && a.status == ActionStatus::Accepted)
            .collect();
        assert_eq!(accepted.len(), 1, "{:?}", doc.actions);
        let number = accepted[0].registration_number.clone().unwrap();
        assert_eq!(number.len(), 12, "{number}");
        assert!(number.starts_with("20"), "{number}");
        assert!(numbers.insert(number.clone()), "{number} issued twice");
        let index = store.read(|r| r.index_entry(event.id)).unwrap().unwrap();
        assert_eq!(index.status, EventStatus::Registered);
        // Central's answer is in its log, for the event's area, with its automerge change.
        let head = store.read(|r| r.central_head()).unwrap();
        let last = store.read(|r| r.central_entries(head.seq - 1, 1)).unwrap();
        match record_of(&last[0]) {
            CentralRecord::Actions(payload) => {
                assert_eq!(
                    payload.actions[0].registration_number.as_deref(),
                    Some(number.as_str())
                );
            }
            other => panic!("expected central's actions, got {other:?}"),
        }
        assert!(last[0].crdt_change.is_some());
        // Re-delivery: nothing new.
        let stats = store.read(|r| r.stats()).unwrap();
        store.apply_entries(node.node_id(), &batch).unwrap();
        assert_eq!(
            store.read(|r| r.stats()).unwrap().central_log_seq,
            stats.central_log_seq
        );
        // A second request for the same event (a concurrent one from elsewhere) is refused.
        let again = node.request_registration(&event);
        store.apply_entries(node.node_id(), &[again]).unwrap();
        let doc = store.read(|r| r.event_document(event.id)).unwrap().unwrap();
        let answers: Vec<_> = doc
            .actions
            .iter()
            .filter(|a| {
                a.action_type == ActionType::Register && a.status != ActionStatus::Requested
            })
            .map(|a| (a.status, a.registration_number.clone()))
            .collect();
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert_eq!(answers[1], (ActionStatus::Rejected, None));
    }
    // A node may not answer a registration itself: refused with its reason, nothing changed.
    let (event, create) = node.create(&ids[2]);
    store.apply_entries(node.node_id(), &[create]).unwrap();
    let stats = store.read(|r| r.stats()).unwrap();
    let forged = node.forge_registration(&event, "202699999999");
    let (_, rejects) = store.apply_entries(node.node_id(), &[forged]).unwrap();
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0].reason, "central-only-action");
    assert_eq!(store.read(|r| r.stats()).unwrap().actions, stats.actions);
}

/// An archived record is not registered, whatever was asked before: the request is Rejected and
/// no number is issued.
#[test]
fn an_archived_record_is_not_registered() {
    use crvs_common::event::{ActionStatus, ActionType};

    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 1);
    let (event, create) = node.create(&ids[0]);
    let notify = node.notify(&event, json!({"child.name": {"firstname": "Liam"}}));
    let archive = node.archive(&event);
    let request = node.request_registration(&event);
    let mut store = fx.store.clone();
    let (_, rejects) = store
        .apply_entries(node.node_id(), &[create, notify, archive, request])
        .unwrap();
    assert!(rejects.is_empty(), "{rejects:?}");
    let doc = store.read(|r| r.event_document(event.id)).unwrap().unwrap();
    let answers: Vec<_> = doc
        .actions
        .iter()
        .filter(|a| a.action_type == ActionType::Register && a.status != ActionStatus::Requested)
        .map(|a| (a.status, a.registration_number.clone()))
        .collect();
    assert_eq!(answers, vec![(ActionStatus::Rejected, None)]);
}

/// Farajaland's duplicate rules (the builtin birth DECLARE's) run before a number is issued: the
/// same child notified twice (misspelled, two days apart) gets DUPLICATE_DETECTED listing the
/// first record and a Rejected REGISTER instead of a number; a registrar's
/// MARK_AS_NOT_DUPLICATE lets the next request through.
#[test]
fn a_potential_duplicate_is_flagged_instead_of_registered_until_reviewed() {
    use crvs_common::event::{ActionStatus, ActionType};

    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 3);
    let mut store = fx.store.clone();
    let birth = |first: &str, surname: &str, dob: &str| {
        json!({
            "child.name": {"firstname": first, "surname": surname},
            "child.dob": dob,
            "mother.name": {"firstname": "Grace", "surname": "Banda"},
            "mother.dob": "1995-02-11"
        })
    };
    let answers = |store: &super::Store, event: uuid::Uuid| {
        let doc = store.read(|r| r.event_document(event)).unwrap().unwrap();
        doc.actions
            .into_iter()
            .filter(|a| {
                matches!(
                    a.action_type,
                    ActionType::Register | ActionType::DuplicateDetected
                ) && a.status != ActionStatus::Requested
            })
            .collect::<Vec<_>>()
    };
    let (first, create) = node.create(&ids[0]);
    let notify = node.notify(&first, birth("Liam", "Banda", "2024-06-03"));
    let request = node.request_registration(&first);
    store
        .apply_entries(node.node_id(), &[create, notify, request])
        .unwrap();
    let registered = answers(&store, first.id);
    assert_eq!(registered.len(), 1, "{registered:?}");
    assert!(registered[0].registration_number.is_some());

    let (second, create) = node.create(&ids[1]);
    let notify = node.notify(&second, birth("Lium", "Bandah", "2024-06-05"));
    let request = node.request_registration(&second);
    store
        .apply_entries(node.node_id(), &[create, notify, request])
        .unwrap();
    let flagged = answers(&store, second.id);
    assert_eq!(flagged.len(), 2, "{flagged:?}");
    assert_eq!(flagged[0].action_type, ActionType::DuplicateDetected);
    assert_eq!(
        flagged[0].content.as_ref().unwrap()["duplicates"][0]["id"],
        first.id.to_string()
    );
    assert_eq!(flagged[1].status, ActionStatus::Rejected);
    assert_eq!(flagged[1].registration_number, None);
    let index = store.read(|r| r.index_entry(second.id)).unwrap().unwrap();
    assert!(
        index.flags.iter().any(|f| f == "potential-duplicate"),
        "{:?}",
        index.flags
    );

    // A different child of another mother is not a duplicate.
    let (third, create) = node.create(&ids[2]);
    let mut other = birth("Liam", "Banda", "2024-06-03");
    other["mother.name"] = json!({"firstname": "Ruth", "surname": "Zulu"});
    other["mother.dob"] = json!("1988-09-30");
    let notify = node.notify(&third, other);
    let request = node.request_registration(&third);
    store
        .apply_entries(node.node_id(), &[create, notify, request])
        .unwrap();
    let numbered = answers(&store, third.id);
    assert_eq!(numbered.len(), 1, "{numbered:?}");
    assert!(numbered[0].registration_number.is_some());
}

#[test]
fn central_records_come_after_the_relays_of_entries_applied_before_them() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 1);
    let (_, create) = node.create(&ids[0]);
    let mut store = fx.store.clone();
    let head_before = store.read(|r| r.central_head()).unwrap();
    store.apply_entries(node.node_id(), &[create]).unwrap();
    assert_eq!(store.read(|r| r.stats()).unwrap().relays_pending, 1);
    // Central appends a record of its own before the indexer ran: the relay goes first.
    crate::admin::add_client(&fx.store, "lab", &["type=record.read".into()], 0).unwrap();
    assert_eq!(store.read(|r| r.stats()).unwrap().relays_pending, 0);
    let kinds: Vec<&str> = store
        .read(|r| r.central_entries(head_before.seq, 100))
        .unwrap()
        .iter()
        .map(|e| match record_of(e) {
            CentralRecord::Relay { .. } => "relay",
            CentralRecord::Client { .. } => "client",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["relay", "client"]);
}

/// Everything stored about an event that applying derives: its row, its date-index rows and its
/// search mark.
fn derived_rows(store: &crate::store::Store, event: uuid::Uuid) -> Vec<String> {
    store
        .read(|r| {
            let conn = r.conn();
            let mut out = Vec::new();
            for sql in [
                "SELECT quote(id), quote(event_type), quote(tracking_id), quote(created_at),
                        quote(updated_at), quote(origin), quote(admin_area_id), quote(status),
                        quote(index_json), quote(conflicts), quote(crdt)
                 FROM events WHERE id = ?1",
                "SELECT quote(field_id) || quote(date) FROM dedup_dates WHERE event_id = ?1
                 ORDER BY field_id",
                "SELECT quote(filed) FROM search_pending WHERE event_id = ?1",
            ] {
                let mut stmt = conn.prepare(sql)?;
                let mut rows = stmt.query([event.to_string()])?;
                while let Some(row) = rows.next()? {
                    let cols = row.as_ref().column_count();
                    for i in 0..cols {
                        out.push(row.get::<_, String>(i)?);
                    }
                }
            }
            Ok(out)
        })
        .unwrap()
}

#[test]
fn prepared_new_events_are_stored_as_the_ordinary_path_derives_them() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 4);
    let decl = |name: &str| {
        json!({
            "child.name": {"firstname": name, "surname": "Phiri"},
            "child.dob": "2026-06-01",
            "mother.dob": "1995-01-02",
            "child.weightAtBirth": 3.1,
        })
    };
    // A new event written whole (prepared); a new event touched again later in the batch; a new
    // event whose registration is requested in the batch; a new event created by a plain CREATE.
    let (whole, e1) = node.create_and_notify(&ids[0], decl("Liam"));
    let (touched, e2) = node.create_and_notify(&ids[1], decl("Ada"));
    let e3 = node.notify(&touched, json!({"child.name": {"firstname": "Adah"}}));
    let (registered, e4) = node.create_and_notify(&ids[2], decl("Zoe"));
    let e5 = node.request_registration(&registered);
    let (plain, e6) = node.create(&ids[3]);
    let batch = vec![e1, e2, e3, e4, e5, e6];
    let mut store = fx.store.clone();
    store.prepare_entries(&crvs_common::log::CheckedEntry::check_all(batch.clone()));
    assert_eq!(
        store.prepared_waiting(),
        batch.len(),
        "every entry prepared"
    );
    let (acked, rejects) = store.apply_entries(node.node_id(), &batch).unwrap();
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(acked, node.head);
    assert_eq!(
        store.prepared_waiting(),
        0,
        "the apply took what was prepared"
    );
    let index = store.read(|r| r.index_entry(whole.id)).unwrap().unwrap();
    assert_eq!(index.status, EventStatus::Notified);
    assert_eq!(index.declaration["child.name"]["firstname"], "Liam");
    let index = store.read(|r| r.index_entry(touched.id)).unwrap().unwrap();
    assert_eq!(index.declaration["child.name"]["firstname"], "Adah");
    let index = store
        .read(|r| r.index_entry(registered.id))
        .unwrap()
        .unwrap();
    assert_eq!(index.status, EventStatus::Registered);
    // Deriving each event again the ordinary way, from its stored actions and merge document,
    // changes nothing.
    for event in [&whole, &touched, &registered, &plain] {
        let before = derived_rows(&store, event.id);
        assert!(!before.is_empty());
        store
            .write(|w| {
                let merge = w.load_crdt(event.id)?;
                w.refresh_index(event.id, &merge)
            })
            .unwrap();
        assert_eq!(derived_rows(&store, event.id), before, "event {}", event.id);
    }
}

#[test]
fn a_prepared_event_whose_actions_were_not_all_stored_is_derived_the_ordinary_way() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 2);
    let decl = json!({"child.name": {"firstname": "Liam"}, "child.dob": "2026-06-01"});
    // The same payload shape twice: one prepared, one not.
    let (prepared, e1) = node.create_and_notify_twice(&ids[0], decl.clone());
    let (ordinary, e2) = node.create_and_notify_twice(&ids[1], decl);
    let mut store = fx.store.clone();
    store.prepare_entries(&crvs_common::log::CheckedEntry::check_all(vec![e1.clone()]));
    let (acked, rejects) = store.apply_entries(node.node_id(), &[e1, e2]).unwrap();
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(acked, node.head);
    assert_eq!(store.prepared_waiting(), 0);
    // Both are marked for the search index as having no keys filed yet, and both derive alike.
    let (a, b) = (
        derived_rows(&store, prepared.id),
        derived_rows(&store, ordinary.id),
    );
    assert_eq!(a.last(), Some(&"'{}'".to_owned()), "{a:?}");
    assert_eq!(b.last(), Some(&"'{}'".to_owned()), "{b:?}");
    let (index_a, index_b) = (
        store.read(|r| r.index_entry(prepared.id)).unwrap().unwrap(),
        store.read(|r| r.index_entry(ordinary.id)).unwrap().unwrap(),
    );
    assert_eq!(index_a.status, index_b.status);
    assert_eq!(index_a.declaration, index_b.declaration);
    assert_eq!(index_a.flags, index_b.flags);
    let stored_actions = |event: uuid::Uuid| {
        store
            .read(|r| r.event_document(event))
            .unwrap()
            .unwrap()
            .actions
            .len()
    };
    assert_eq!(stored_actions(prepared.id), 2);
    assert_eq!(stored_actions(ordinary.id), 2);
}

#[test]
fn the_prepared_entry_cache_is_bounded_and_a_miss_is_applied_the_ordinary_way() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 2);
    let (first, e1) = node.create_and_notify(&ids[0], json!({"child.dob": "2026-06-01"}));
    let (second, e2) = node.create_and_notify(&ids[1], json!({"child.dob": "2026-06-02"}));
    let mut store = fx.store.clone();
    // Only the second is prepared; the first is a miss.
    store.prepare_entries(&crvs_common::log::CheckedEntry::check_all(vec![e2.clone()]));
    let (acked, rejects) = store.apply_entries(node.node_id(), &[e1, e2]).unwrap();
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(acked, node.head);
    for event in [&first, &second] {
        let index = store.read(|r| r.index_entry(event.id)).unwrap().unwrap();
        assert_eq!(index.status, EventStatus::Notified);
    }
    // The cache keeps at most its bound, dropping the oldest.
    let mut cache = super::prepare::PreparedCache::with_bound(3);
    let mut other = NodeWriter::new(2, facility(1));
    let mut hashes = Vec::new();
    for i in 0..5 {
        let (_, entry) = other.create_and_notify(&format!("X{i:05}"), json!({}));
        let prepared = super::prepare::prepare(&entry, store.central_id().as_bytes()).unwrap();
        assert!(
            prepared.fresh.is_some(),
            "a creating entry is prepared whole"
        );
        hashes.push(entry.hash());
        cache.insert(entry.hash(), prepared);
    }
    assert_eq!(cache.len(), 3);
    assert!(cache.take(&hashes[0]).is_none(), "the oldest was dropped");
    assert!(cache.take(&hashes[1]).is_none(), "the oldest was dropped");
    assert!(cache.take(&hashes[hashes.len() - 1]).is_some());
}

#[test]
fn a_quiet_batch_commits_deferred_and_a_registration_request_commits_durably() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 2);
    let mut store = fx.store.clone();
    assert!(
        store.is_durable(store.commit_ticket()),
        "FULL writes so far"
    );

    // Prepared, no REGISTER: committed without waiting for the disk, visible at once.
    let (event, entry) = node.create_and_notify(&ids[0], json!({"child.dob": "2026-06-01"}));
    store.prepare_entries(&crvs_common::log::CheckedEntry::check_all(vec![
        entry.clone(),
    ]));
    let (acked, rejects) = store.apply_entries(node.node_id(), &[entry]).unwrap();
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(acked, node.head);
    let ticket = store.commit_ticket();
    assert!(!store.is_durable(ticket), "a quiet batch defers its fsync");
    assert!(store.read(|r| r.index_entry(event.id)).unwrap().is_some());
    // One fsync of the WAL covers it (and a second call finds it done).
    store.make_durable(ticket).unwrap();
    assert!(store.is_durable(ticket));
    store.make_durable(ticket).unwrap();

    // A deferred commit is also covered by any later FULL write's fsync.
    let (_, entry) = node.create_and_notify(&ids[1], json!({"child.dob": "2026-06-02"}));
    store.prepare_entries(&crvs_common::log::CheckedEntry::check_all(vec![
        entry.clone(),
    ]));
    store.apply_entries(node.node_id(), &[entry]).unwrap();
    let deferred = store.commit_ticket();
    assert!(!store.is_durable(deferred));
    store
        .write(|w| {
            w.conn().execute("DELETE FROM rejects WHERE 0", [])?;
            Ok::<_, crate::store::StoreError>(())
        })
        .unwrap();
    assert!(
        store.is_durable(deferred),
        "a FULL commit covers the WAL before it"
    );
    assert!(store.is_durable(store.commit_ticket()));

    // A batch that requests a registration (central answers it in the same transaction, in its
    // own log) commits durably, prepared or not.
    let request = node.request_registration(&event);
    store.prepare_entries(&crvs_common::log::CheckedEntry::check_all(vec![
        request.clone(),
    ]));
    store.apply_entries(node.node_id(), &[request]).unwrap();
    assert!(store.is_durable(store.commit_ticket()));
    // ... and so does a batch that was not prepared.
    let notify = node.notify(&event, json!({"child.name": {"firstname": "Liam"}}));
    store.apply_entries(node.node_id(), &[notify]).unwrap();
    assert!(store.is_durable(store.commit_ticket()));
    // The writer is back at FULL for everything else.
    let level: i64 = crate::store::lock(&store.inner.writer)
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(level, 2, "synchronous=FULL");
    // A new database has central's page size.
    let page_size: i64 = crate::store::lock(&store.inner.writer)
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    assert_eq!(page_size, super::PAGE_SIZE_BYTES);
}
