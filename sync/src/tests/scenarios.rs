//! Hand-written protocol scenarios, driven message by message with perfect delivery (through
//! the codec): a cloned node's fork, a revoked node, a tampered entry, a refused tracking id, an
//! up-to-date node's no-op round, and a duplicated `DownAck`.

use super::Rng;
use super::mem_store::{EPOCH_MS, MemCentral, MemNode, POOL_GRANT};
use crate::engine::{CentralSession, NodeSession, SyncConfig, SyncError};
use crate::wire::{DownAck, Message};

fn wire(msg: &Message) -> Message {
    Message::decode(&msg.encode()).unwrap()
}

fn kind(msg: &Message) -> &'static str {
    match msg {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::Entries(_) => "Entries",
        Message::Ack(_) => "Ack",
        Message::Down(_) => "Down",
        Message::DownAck(_) => "DownAck",
        Message::Goodbye(_) => "Goodbye",
    }
}

fn kinds(msgs: &[Message]) -> Vec<&'static str> {
    msgs.iter().map(kind).collect()
}

fn closed_reason(result: Result<(), SyncError>) -> String {
    match result {
        Err(SyncError::Closed { reason, .. }) => reason,
        other => panic!("expected a closed session, got {other:?}"),
    }
}

/// One node, its session, and its session at central.
#[derive(Debug)]
struct Peer {
    store: MemNode,
    session: NodeSession,
    at_central: CentralSession,
}

#[derive(Debug)]
struct World {
    cfg: SyncConfig,
    central: MemCentral,
    rng: Rng,
    now: u64,
}

impl World {
    fn new() -> Self {
        Self {
            cfg: SyncConfig::for_tests(),
            central: MemCentral::new([1; 32], 99),
            rng: Rng::new(5),
            now: 1_000,
        }
    }

    fn peer(&mut self, seed: u8, name: &str) -> Peer {
        let store = MemNode::new([seed; 32], self.central.id, name);
        self.central.enroll(store.id);
        self.attach(store)
    }

    /// New sessions (a new connection) for a node store.
    fn attach(&self, store: MemNode) -> Peer {
        Peer {
            session: NodeSession::new(self.cfg.clone(), store.id, self.central.id),
            at_central: CentralSession::new(self.cfg.clone(), store.id),
            store,
        }
    }

    /// Delivers everything both sides queue until both are silent; returns every message in
    /// the order it was sent. Panics on a session error.
    fn drive(&mut self, p: &mut Peer) -> Vec<Message> {
        let mut transcript = Vec::new();
        loop {
            let mut quiet = true;
            while let Some(msg) = p.session.poll_transmit() {
                quiet = false;
                let head = self.central.head().seq;
                p.at_central
                    .handle_message(self.now, wire(&msg), &mut self.central)
                    .unwrap();
                if self.central.head().seq != head {
                    p.at_central.notify_feed(&self.central).unwrap();
                }
                transcript.push(msg);
            }
            while let Some(msg) = p.at_central.poll_transmit() {
                quiet = false;
                p.session
                    .handle_message(self.now, wire(&msg), &mut p.store)
                    .unwrap();
                transcript.push(msg);
            }
            if quiet {
                return transcript;
            }
        }
    }

    fn connect(&mut self, p: &mut Peer) -> Vec<Message> {
        p.session.connect(self.now, &p.store).unwrap();
        self.drive(p)
    }

    /// The idle node's heartbeat fires.
    fn heartbeat(&mut self, p: &mut Peer) -> Vec<Message> {
        self.now = p.session.poll_timeout().unwrap();
        p.session.handle_timeout(self.now, &p.store).unwrap();
        self.drive(p)
    }

    fn create(&mut self, p: &mut Peer) {
        self.now += 10;
        p.store
            .create_event(&mut self.rng, EPOCH_MS + self.now)
            .unwrap();
        p.session.notify_appended(self.now, &p.store).unwrap();
    }

    /// Everything central holds, to show a refused message changed nothing.
    fn central_state(&self) -> String {
        let views: Vec<_> = self
            .central
            .events
            .iter()
            .map(|(id, e)| (id, e.view()))
            .collect();
        let records: Vec<_> = self.central.nodes.values().map(|n| &n.record).collect();
        format!(
            "{:?} {:?} {:?} {views:?} {records:?} {:?} {:?}",
            self.central.head(),
            self.central.log,
            self.central.applied,
            self.central.leased,
            self.central.used
        )
    }
}

#[test]
fn an_up_to_date_node_syncs_with_one_hello_and_one_welcome() {
    let mut w = World::new();
    let mut a = w.peer(2, "a");
    let mut b = w.peer(3, "b");

    // A's first round: Central leases ids with the Welcome.
    assert_eq!(kinds(&w.connect(&mut a)), ["Hello", "Welcome", "DownAck"]);
    assert_eq!(a.store.pool.len(), POOL_GRANT);

    // Two creates go up; central's relays are not for A, but its cursor moves past them.
    w.create(&mut a);
    w.create(&mut a);
    let round = w.drive(&mut a);
    assert_eq!(kinds(&round[..2]), ["Entries", "Entries"]);
    assert!(!kinds(&round).contains(&"Hello"));
    assert_eq!(a.session.acked(), a.store.head());
    assert_eq!(a.store.down_cursor, w.central.head().seq);

    // A is low on ids: its heartbeat round brings a new lease.
    assert_eq!(kinds(&w.heartbeat(&mut a)), ["Hello", "Welcome", "DownAck"]);
    assert_eq!(a.store.pool.len(), 2 + POOL_GRANT);

    // B's first round brings A's two events and B's own lease.
    assert_eq!(kinds(&w.connect(&mut b)), ["Hello", "Welcome", "DownAck"]);
    assert_eq!(b.store.events.len(), 2);
    for (id, event) in &w.central.events {
        assert_eq!(b.store.events[id].view(), event.view());
    }

    // B's lease moved central's head: A's next round moves A's cursor past it.
    assert_eq!(kinds(&w.heartbeat(&mut a)), ["Hello", "Welcome", "DownAck"]);

    // Now both are up to date: a heartbeat round, and a round on a new connection, are one
    // Hello and one empty Welcome each, nothing else.
    let round = w.heartbeat(&mut a);
    assert_eq!(kinds(&round), ["Hello", "Welcome"]);
    let round = w.heartbeat(&mut b);
    assert_eq!(kinds(&round), ["Hello", "Welcome"]);
    b.session.disconnect();
    b.at_central = CentralSession::new(w.cfg.clone(), b.store.id);
    let round = w.connect(&mut b);
    assert_eq!(kinds(&round), ["Hello", "Welcome"]);
    let Message::Welcome(welcome) = &round[1] else {
        unreachable!()
    };
    assert!(welcome.down.items.is_empty());
    assert_eq!(welcome.down.from_cursor, welcome.down.to_cursor);
    let bytes: usize = round.iter().map(|m| m.encode_frame().len()).sum();
    assert!(bytes <= 512, "{bytes} bytes");
    assert!(a.session.is_synced(&a.store).unwrap());
    assert!(b.session.is_synced(&b.store).unwrap());
}

#[test]
fn a_fork_from_a_cloned_node_is_quarantined_with_both_entries_recorded() {
    let mut w = World::new();
    let mut a = w.peer(2, "a");
    w.connect(&mut a);
    w.create(&mut a);
    w.drive(&mut a);
    assert_eq!(a.session.acked().seq, 1);

    // The board is cloned; each copy writes its own entry 2.
    let mut clone = w.attach(a.store.clone_device("a-clone"));
    w.now += 10;
    a.store.create_event(&mut w.rng, EPOCH_MS + w.now).unwrap();
    let forked = clone
        .store
        .create_event(&mut w.rng, EPOCH_MS + w.now)
        .unwrap();
    let original = a.store.log[1].clone();
    assert_eq!((original.seq, forked.seq), (2, 2));
    assert_ne!(original.hash(), forked.hash());

    // The clone connects while central still holds entry 1 only, and sends its entry 2.
    clone.session.connect(w.now, &clone.store).unwrap();
    let hello = clone.session.poll_transmit().unwrap();
    clone
        .at_central
        .handle_message(w.now, wire(&hello), &mut w.central)
        .unwrap();
    let welcome = clone.at_central.poll_transmit().unwrap();
    clone
        .session
        .handle_message(w.now, wire(&welcome), &mut clone.store)
        .unwrap();
    // It acknowledges the downstream part of the Welcome and sends its entry 2 (held back).
    let mut clone_entries = None;
    while let Some(msg) = clone.session.poll_transmit() {
        match msg {
            Message::Entries(_) => clone_entries = Some(msg),
            other => clone
                .at_central
                .handle_message(w.now, wire(&other), &mut w.central)
                .unwrap(),
        }
    }
    let clone_entries = clone_entries.unwrap();
    while clone.at_central.poll_transmit().is_some() {}

    // Meanwhile the original's entry 2 is applied.
    a.session.notify_appended(w.now, &a.store).unwrap();
    w.drive(&mut a);
    assert_eq!(a.session.acked().seq, 2);

    // The clone's entry 2 arrives: a fork.
    let result = clone
        .at_central
        .handle_message(w.now, wire(&clone_entries), &mut w.central);
    assert_eq!(closed_reason(result), "quarantined");
    let goodbye = clone.at_central.poll_transmit().unwrap();
    assert_eq!(kind(&goodbye), "Goodbye");
    assert!(clone.at_central.is_closed());
    let result = clone
        .session
        .handle_message(w.now, wire(&goodbye), &mut clone.store);
    assert_eq!(closed_reason(result), "quarantined");

    // Both entries are kept: the applied one, and the fork as evidence; the node is quarantined
    // and nothing of the fork was applied.
    let id = a.store.id;
    assert!(w.central.nodes[&id].record.quarantined);
    assert_eq!(w.central.applied[&(id, 2)], original);
    assert_eq!(w.central.forks.len(), 1);
    assert_eq!(w.central.forks[0], forked);
    assert_eq!(w.central.rejects.len(), 1);
    assert_eq!(w.central.rejects[0].1, forked);
    assert_eq!(w.central.rejects[0].2.reason, "fork");
    assert!(!w.central.events.contains_key(&forked.event_id));
    assert_eq!(w.central.events.len(), 2);

    // From now on the original is turned away too.
    w.now = a.session.poll_timeout().unwrap();
    a.session.handle_timeout(w.now, &a.store).unwrap();
    let hello = a.session.poll_transmit().unwrap();
    let result = a
        .at_central
        .handle_message(w.now, wire(&hello), &mut w.central);
    assert_eq!(closed_reason(result), "quarantined");
    assert_eq!(kind(&a.at_central.poll_transmit().unwrap()), "Goodbye");
}

#[test]
fn a_revoked_node_gets_goodbye() {
    let mut w = World::new();
    let mut a = w.peer(2, "a");
    let id = a.store.id;
    w.central.nodes.get_mut(&id).unwrap().record.revoked = true;

    a.session.connect(w.now, &a.store).unwrap();
    let hello = a.session.poll_transmit().unwrap();
    let result = a
        .at_central
        .handle_message(w.now, wire(&hello), &mut w.central);
    assert_eq!(closed_reason(result), "revoked");
    assert!(a.at_central.is_closed());
    let goodbye = a.at_central.poll_transmit().unwrap();
    assert!(a.at_central.poll_transmit().is_none());
    let result = a
        .session
        .handle_message(w.now, wire(&goodbye), &mut a.store);
    assert_eq!(closed_reason(result), "revoked");
    assert_eq!(a.session.poll_timeout(), None, "a refused node stops");
    assert!(
        a.session
            .status()
            .last_error
            .as_deref()
            .unwrap()
            .contains("revoked")
    );
    // Central leased nothing and recorded nothing for it.
    assert!(w.central.log.is_empty());
    assert_eq!(w.central.nodes[&id].contacts, 0);

    // Revoked while connected: the session ends with a Goodbye.
    let mut b = w.peer(3, "b");
    w.connect(&mut b);
    b.at_central.revoke();
    let goodbye = b.at_central.poll_transmit().unwrap();
    let result = b
        .session
        .handle_message(w.now, wire(&goodbye), &mut b.store);
    assert_eq!(closed_reason(result), "revoked");
}

#[test]
fn a_tampered_entry_is_rejected_with_its_reason_and_changes_nothing() {
    let mut w = World::new();
    let mut a = w.peer(2, "a");
    w.connect(&mut a);
    w.now += 10;
    a.store.create_event(&mut w.rng, EPOCH_MS + w.now).unwrap();
    // One bit of the stored action bytes flips.
    let tampered_bit = a.store.log[0].action.len() / 2;
    a.store.log[0].action[tampered_bit] ^= 0x04;
    let tampered = a.store.log[0].clone();
    let before = w.central_state();

    a.session.notify_appended(w.now, &a.store).unwrap();
    let round = w.drive(&mut a);
    assert_eq!(kinds(&round), ["Entries", "Ack"]);
    let Message::Ack(ack) = &round[1] else {
        unreachable!()
    };
    assert_eq!(ack.acked.seq, 0);
    assert_eq!(ack.rejects.len(), 1);
    assert_eq!(ack.rejects[0].reason, "bad-signature");
    assert_eq!(ack.rejects[0].seq, 1);

    // Central changed nothing but recorded the refusal with the entry's bytes.
    assert_eq!(w.central_state(), before);
    assert_eq!(w.central.rejects.len(), 1);
    assert_eq!(w.central.rejects[0].0, a.store.id);
    assert_eq!(w.central.rejects[0].1, tampered);
    assert_eq!(w.central.rejects[0].2.reason, "bad-signature");
    // The node stops sending and says why.
    assert!(!a.session.is_synced(&a.store).unwrap());
    assert_eq!(a.session.poll_timeout(), None);
    let error = a.session.status().last_error.clone().unwrap();
    assert!(error.contains("bad-signature"), "{error}");
    assert_eq!(a.store.rejects[0].reason, "bad-signature");
}

#[test]
fn a_create_with_a_tracking_id_never_leased_is_refused_and_changes_nothing() {
    let mut w = World::new();
    let mut a = w.peer(2, "a");
    w.connect(&mut a);
    w.create(&mut a);
    w.drive(&mut a);
    let before = w.central_state();

    // The node's pool gets an id central never leased (a node must never invent one).
    a.store.pool.clear();
    a.store.pool.insert("ZZZZZZ".into());
    w.create(&mut a);
    let round = w.drive(&mut a);
    assert_eq!(kinds(&round), ["Entries", "Ack"]);
    let Message::Ack(ack) = &round[1] else {
        unreachable!()
    };
    assert_eq!(ack.acked.seq, 1);
    assert_eq!(
        (ack.rejects[0].seq, ack.rejects[0].reason.as_str()),
        (2, "tracking-id")
    );
    assert_eq!(w.central_state(), before);
    assert_eq!(w.central.rejects[0].2.reason, "tracking-id");
    assert_eq!(a.session.poll_timeout(), None);
}

/// Regression (seed 403 of the simulation): a duplicated `DownAck` for the cursor a batch in
/// flight already starts from made central send that batch again, and every duplicate started
/// another endless Down/DownAck chain.
#[test]
fn a_duplicated_down_ack_does_not_resend_the_batch() {
    let mut w = World::new();
    let mut a = w.peer(2, "a");
    w.connect(&mut a);
    for _ in 0..3 {
        // Three leases' worth of events: more than two downstream batches for B.
        for _ in 0..POOL_GRANT {
            if !a.store.pool.is_empty() {
                w.create(&mut a);
            }
        }
        w.drive(&mut a);
        w.heartbeat(&mut a);
    }
    let relays = a.store.log.len();
    assert!(relays > 2 * w.cfg.down_items_max, "{relays}");

    let mut b = w.peer(3, "b");
    b.session.connect(w.now, &b.store).unwrap();
    let hello = b.session.poll_transmit().unwrap();
    b.at_central
        .handle_message(w.now, wire(&hello), &mut w.central)
        .unwrap();
    let welcome = b.at_central.poll_transmit().unwrap();
    let Message::Welcome(first) = &welcome else {
        unreachable!()
    };
    assert!(first.down.more);
    b.session
        .handle_message(w.now, wire(&welcome), &mut b.store)
        .unwrap();
    let down_ack = b.session.poll_transmit().unwrap();
    assert_eq!(
        down_ack,
        Message::DownAck(DownAck {
            cursor: first.down.to_cursor
        })
    );
    // The DownAck arrives: central sends the next batch.
    b.at_central
        .handle_message(w.now, wire(&down_ack), &mut w.central)
        .unwrap();
    assert_eq!(kind(&b.at_central.poll_transmit().unwrap()), "Down");
    // A duplicate of it arrives while that batch is in flight: nothing is sent again.
    b.at_central
        .handle_message(w.now, wire(&down_ack), &mut w.central)
        .unwrap();
    assert!(b.at_central.poll_transmit().is_none());
    // So is an older one.
    b.at_central
        .handle_message(
            w.now,
            Message::DownAck(DownAck { cursor: 0 }),
            &mut w.central,
        )
        .unwrap();
    assert!(b.at_central.poll_transmit().is_none());
}

#[test]
fn a_fast_link_gets_larger_batches_and_a_slow_one_the_link_sizes() {
    let mut w = World::new();
    w.cfg.fast_link = Some(crate::engine::FastLink {
        rtt_ms_max: 10,
        batch_entries_max: 16,
        batch_bytes_max: 64 * 1024,
        in_flight_bytes_max: 256 * 1024,
    });
    let mut a = w.peer(2, "a");
    w.connect(&mut a);
    w.create(&mut a);
    let event = a.store.log[0].event_id;
    w.drive(&mut a);
    let update = |w: &mut World, a: &mut Peer| {
        for _ in 0..40 {
            w.now += 10;
            a.store.update_event(&mut w.rng, EPOCH_MS + w.now, event);
        }
    };
    update(&mut w, &mut a);
    let batch_sizes = |msgs: &[Message]| -> Vec<usize> {
        msgs.iter()
            .filter_map(|m| match m {
                Message::Entries(b) => Some(b.entries.len()),
                _ => None,
            })
            .collect()
    };

    // Unknown or slow link: the configured sizes (4 entries per batch).
    a.session.observe_link_rtt(250);
    a.session.notify_appended(w.now, &a.store).unwrap();
    let slow = w.drive(&mut a);
    assert_eq!(a.session.acked().seq, 41);
    assert!(batch_sizes(&slow).iter().all(|n| *n <= 4), "{slow:?}");

    update(&mut w, &mut a);
    // A 2 ms link: up to 16 entries per batch, the same entries acknowledged once each.
    a.session.observe_link_rtt(2);
    a.session.notify_appended(w.now, &a.store).unwrap();
    let fast = w.drive(&mut a);
    assert_eq!(a.session.acked().seq, 81);
    let sizes = batch_sizes(&fast);
    assert_eq!(sizes.iter().sum::<usize>(), 40, "{sizes:?}");
    assert!(sizes.iter().any(|n| *n > 4), "{sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 16), "{sizes:?}");
}
