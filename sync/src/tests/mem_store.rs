//! In-memory stores for the sync engine that model durable state: a node's signed log, events,
//! tracking-id pool and cursors ([`MemNode`]), and central's node records, applied entries,
//! events, leases and signed feed ([`MemCentral`]). A simulated restart drops sessions and
//! in-flight messages only; these stores survive it (their automerge documents are reloaded
//! from their saved bytes, as a real store reloads them from disk).

use std::collections::{BTreeMap, BTreeSet};

use automerge::ActorId;
use crvs_common::event::{
    ActionDocument, ActionStatus, ActionType, Declaration, EntryPayload, UserType,
    format_timestamp_ms,
};
use crvs_common::feed::CentralRecord;
use crvs_common::hlc::HlcClock;
use crvs_common::ids::{ActionId, EventId, TrackingId};
use crvs_common::log::{EntryHash, LogEntry, LogHead, NodeId, NodeSecretKey};
use crvs_common::state::{
    EventStatus, FieldConflict, derive_flags, derive_status, effective_declaration,
};
use serde_json::{Value, json};

use super::Rng;
use crate::engine::{CentralStore, NodeHealth, NodeRecord, NodeStore, StoreFault};
use crate::merge::{EventCrdt, actor_for};
use crate::wire::{Hello, Reject};

/// Virtual time 0 as wall-clock time: 2026-07-01T09:00:00Z.
pub(crate) const EPOCH_MS: u64 = 1_782_896_400_000;

/// Central leases more ids when a node reports fewer free ones than this.
pub(crate) const POOL_LOW_WATER: u32 = 3;

/// Ids per lease.
pub(crate) const POOL_GRANT: usize = 4;

/// The declaration fields the workload writes: few, so concurrent writes to one field happen.
const FIELDS: [&str; 4] = ["child.name", "child.gender", "child.dob", "informant.phone"];

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

// Plain loops: this crate's tests run unoptimised, and relays are hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX_DIGITS[usize::from(b >> 4)]);
        out.push(HEX_DIGITS[usize::from(b & 15)]);
    }
    String::from_utf8(out).unwrap()
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let mut value = [0xFFu8; 256];
    for (i, d) in HEX_DIGITS.iter().enumerate() {
        value[usize::from(*d)] = i as u8;
    }
    let mut out = Vec::with_capacity(bytes.len() / 2);
    let mut i = 0;
    while i < bytes.len() {
        let (hi, lo) = (
            value[usize::from(bytes[i])],
            value[usize::from(bytes[i + 1])],
        );
        if hi == 0xFF || lo == 0xFF {
            return None;
        }
        out.push(hi << 4 | lo);
        i += 2;
    }
    Some(out)
}

fn fault(what: impl std::fmt::Display) -> StoreFault {
    StoreFault(what.to_string())
}

/// One event as a replica holds it: its actions (by id) and its merge document.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) event_type: String,
    pub(crate) tracking_id: String,
    pub(crate) created_at: String,
    pub(crate) actions: BTreeMap<ActionId, ActionDocument>,
    pub(crate) crdt: EventCrdt,
}

/// What must be equal on every replica after healing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EventView {
    pub(crate) event_type: String,
    pub(crate) tracking_id: String,
    pub(crate) created_at: String,
    pub(crate) action_ids: Vec<ActionId>,
    pub(crate) crdt_action_ids: Vec<String>,
    pub(crate) declaration: Declaration,
    pub(crate) conflicts: Vec<FieldConflict>,
    pub(crate) status: EventStatus,
    pub(crate) flags: Vec<String>,
    pub(crate) heads: Vec<String>,
    pub(crate) pending_changes: usize,
}

impl Event {
    fn from_payload(payload: &EntryPayload, actor: ActorId) -> Self {
        Self {
            event_type: payload.event_type.clone(),
            tracking_id: payload.tracking_id.clone(),
            created_at: payload.event_created_at.clone(),
            actions: BTreeMap::new(),
            crdt: EventCrdt::new(actor),
        }
    }

    /// Inserts actions by id; returns how many were already present.
    fn insert_actions(&mut self, actions: &[ActionDocument]) -> u64 {
        let mut again = 0;
        for a in actions {
            if self.actions.insert(a.id, a.clone()).is_some() {
                again += 1;
            }
        }
        again
    }

    /// The actions in a deterministic order: capture time, then id.
    pub(crate) fn sorted_actions(&self) -> Vec<ActionDocument> {
        let mut out: Vec<ActionDocument> = self.actions.values().cloned().collect();
        out.sort_by(|a, b| (&a.created_at, a.id).cmp(&(&b.created_at, b.id)));
        out
    }

    pub(crate) fn view(&self) -> EventView {
        let actions = self.sorted_actions();
        let mut crdt_action_ids = self.crdt.action_ids().unwrap();
        crdt_action_ids.sort();
        EventView {
            event_type: self.event_type.clone(),
            tracking_id: self.tracking_id.clone(),
            created_at: self.created_at.clone(),
            action_ids: self.actions.keys().copied().collect(),
            crdt_action_ids,
            declaration: self.crdt.declaration().unwrap(),
            conflicts: self.crdt.conflicts().unwrap(),
            status: derive_status(&actions),
            flags: derive_flags(&actions),
            heads: self.crdt.heads(),
            pending_changes: self.crdt.pending_changes(),
        }
    }

    /// Reloads the merge document from its saved bytes (what a restart does).
    fn reload(&mut self, actor: &ActorId) {
        self.crdt = EventCrdt::load(&self.crdt.save(), actor.clone()).unwrap();
    }
}

fn action(
    rng: &mut Rng,
    action_type: ActionType,
    status: ActionStatus,
    created_by: &str,
    created_at: &str,
    declaration: Option<Declaration>,
    original: Option<ActionId>,
) -> ActionDocument {
    let id = rng.uuid();
    ActionDocument {
        id,
        action_type,
        transaction_id: format!("tx-{id}"),
        status,
        created_by: created_by.to_owned(),
        created_by_user_type: UserType::System,
        created_by_role: None,
        created_at_location: None,
        created_at: created_at.to_owned(),
        declaration,
        annotation: None,
        original_action_id: original,
        content: None,
        registration_number: None,
        request_id: None,
        assigned_to: None,
        custom_action_type: None,
    }
}

/// A few fields with values from small sets (so concurrent writers often collide); `clears`
/// allows `null` (clear the field).
fn random_declaration(rng: &mut Rng, clears: bool) -> Declaration {
    let mut out = Declaration::new();
    let n = 1 + rng.index(3);
    for _ in 0..n {
        let field = *rng.pick(&FIELDS);
        let value = if clears && rng.chance(100) {
            Value::Null
        } else {
            match field {
                "child.name" => json!({
                    "firstname": rng.pick(&["Liam", "Ama", "Kofi", "Zara"]),
                    "surname": rng.pick(&["Mensah", "Banda"]),
                }),
                "child.gender" => json!(rng.pick(&["male", "female", "unknown"])),
                "child.dob" => json!(format!("2024-06-0{}", 1 + rng.index(4))),
                _ => json!(format!("+26099{:05}", rng.index(3))),
            }
        };
        out.insert(field.to_owned(), value);
    }
    out
}

/// A NOTIFY pair: Requested with the declaration, Accepted pointing at it.
fn notify_pair(rng: &mut Rng, by: &str, at: &str) -> Vec<ActionDocument> {
    let declaration = random_declaration(rng, false);
    let requested = action(
        rng,
        ActionType::Notify,
        ActionStatus::Requested,
        by,
        at,
        Some(declaration),
        None,
    );
    let accepted = action(
        rng,
        ActionType::Notify,
        ActionStatus::Accepted,
        by,
        at,
        Some(Declaration::new()),
        Some(requested.id),
    );
    vec![requested, accepted]
}

/// A clinic node's durable state.
#[derive(Debug)]
pub(crate) struct MemNode {
    key: NodeSecretKey,
    pub(crate) id: NodeId,
    actor: ActorId,
    pub(crate) central_id: NodeId,
    pub(crate) name: String,
    pub(crate) log: Vec<LogEntry>,
    hashes: Vec<EntryHash>,
    sizes: Vec<usize>,
    written_ms: Vec<u64>,
    hlc: HlcClock,
    pub(crate) events: BTreeMap<EventId, Event>,
    /// Events created here (the rest arrived from central).
    pub(crate) own_events: BTreeSet<EventId>,
    /// Free tracking ids leased to this node.
    pub(crate) pool: BTreeSet<String>,
    /// Every tracking id ever granted to this node.
    pub(crate) granted: BTreeSet<String>,
    pub(crate) down_cursor: u64,
    /// The highest head central ever acknowledged (via `record_ack`).
    pub(crate) max_acked: LogHead,
    pub(crate) rejects: Vec<Reject>,
    /// Actions delivered again to an event that already had them (must stay 0).
    pub(crate) duplicate_actions: u64,
    /// Tracking ids granted twice (must stay 0).
    pub(crate) duplicate_grants: u64,
}

impl MemNode {
    pub(crate) fn new(key_seed: [u8; 32], central_id: NodeId, name: &str) -> Self {
        let key = NodeSecretKey::from_bytes(&key_seed);
        let id = key.node_id();
        Self {
            key,
            id,
            actor: actor_for(id.as_bytes()),
            central_id,
            name: name.to_owned(),
            log: Vec::new(),
            hashes: Vec::new(),
            sizes: Vec::new(),
            written_ms: Vec::new(),
            hlc: HlcClock::default(),
            events: BTreeMap::new(),
            own_events: BTreeSet::new(),
            pool: BTreeSet::new(),
            granted: BTreeSet::new(),
            down_cursor: 0,
            max_acked: LogHead::GENESIS,
            rejects: Vec::new(),
            duplicate_actions: 0,
            duplicate_grants: 0,
        }
    }

    /// A copy with the same key and state: a cloned board (the fork scenario).
    pub(crate) fn clone_device(&self, name: &str) -> Self {
        Self {
            key: NodeSecretKey::from_bytes(&self.key.to_bytes()),
            id: self.id,
            actor: self.actor.clone(),
            central_id: self.central_id,
            name: name.to_owned(),
            log: self.log.clone(),
            hashes: self.hashes.clone(),
            sizes: self.sizes.clone(),
            written_ms: self.written_ms.clone(),
            hlc: self.hlc.clone(),
            events: self.events.clone(),
            own_events: self.own_events.clone(),
            pool: self.pool.clone(),
            granted: self.granted.clone(),
            down_cursor: self.down_cursor,
            max_acked: self.max_acked,
            rejects: self.rejects.clone(),
            duplicate_actions: self.duplicate_actions,
            duplicate_grants: self.duplicate_grants,
        }
    }

    pub(crate) fn head(&self) -> LogHead {
        match (self.log.last(), self.hashes.last()) {
            (Some(e), Some(h)) => LogHead {
                seq: e.seq,
                hash: *h,
            },
            _ => LogHead::GENESIS,
        }
    }

    /// What a restart does to the durable state: reload every merge document from its bytes.
    pub(crate) fn reload(&mut self) {
        for event in self.events.values_mut() {
            event.reload(&self.actor);
        }
    }

    /// One write: `actions` on one event, signed into the next log entry with the write's
    /// automerge change. `create` names the new event's type and takes its tracking id from the
    /// pool.
    pub(crate) fn write(
        &mut self,
        wall_ms: u64,
        event_id: EventId,
        create: Option<(&str, String)>,
        actions: Vec<ActionDocument>,
    ) -> LogEntry {
        if let Some((event_type, tracking_id)) = create {
            assert!(self.pool.remove(&tracking_id), "id {tracking_id} not free");
            let payload = EntryPayload {
                event_id,
                event_type: event_type.to_owned(),
                tracking_id,
                event_created_at: format_timestamp_ms(wall_ms),
                actions: Vec::new(),
            };
            self.events
                .insert(event_id, Event::from_payload(&payload, self.actor.clone()));
            self.own_events.insert(event_id);
        }
        let event = self
            .events
            .get_mut(&event_id)
            .expect("write to a known event");
        event.insert_actions(&actions);
        let all: Vec<ActionDocument> = event.sorted_actions();
        let mut delta = Declaration::new();
        for a in &actions {
            delta.extend(effective_declaration(a, &all));
        }
        let change = event.crdt.record(&actions, &delta, wall_ms as i64).unwrap();
        let payload = EntryPayload {
            event_id,
            event_type: event.event_type.clone(),
            tracking_id: event.tracking_id.clone(),
            event_created_at: event.created_at.clone(),
            actions,
        };
        let head = self.head();
        let entry = LogEntry::sign(
            &self.key,
            head.seq + 1,
            head.hash,
            self.hlc.now(wall_ms),
            event_id,
            serde_json::to_vec(&payload).unwrap(),
            Some(change),
        )
        .unwrap();
        self.hashes.push(entry.hash());
        self.sizes.push(entry.encode().len());
        self.written_ms.push(wall_ms);
        self.log.push(entry.clone());
        entry
    }

    /// Creates an event (CREATE, sometimes with a NOTIFY in the same write); `None` without a
    /// free tracking id: a node never invents one.
    pub(crate) fn create_event(&mut self, rng: &mut Rng, wall_ms: u64) -> Option<LogEntry> {
        let tracking_id = self.pool.iter().next()?.clone();
        let at = format_timestamp_ms(wall_ms);
        let by = format!("client-{}", self.name);
        let mut actions = vec![action(
            rng,
            ActionType::Create,
            ActionStatus::Accepted,
            &by,
            &at,
            None,
            None,
        )];
        if rng.chance(500) {
            actions.extend(notify_pair(rng, &by, &at));
        }
        let event_id = rng.uuid();
        Some(self.write(wall_ms, event_id, Some(("birth", tracking_id)), actions))
    }

    /// A NOTIFY pair, or an accepted EDIT with a declaration (which may clear fields), on
    /// `event_id`.
    pub(crate) fn update_event(
        &mut self,
        rng: &mut Rng,
        wall_ms: u64,
        event_id: EventId,
    ) -> LogEntry {
        let at = format_timestamp_ms(wall_ms);
        let by = format!("client-{}", self.name);
        let actions = if rng.chance(500) {
            notify_pair(rng, &by, &at)
        } else {
            let declaration = random_declaration(rng, true);
            vec![action(
                rng,
                ActionType::Edit,
                ActionStatus::Accepted,
                &by,
                &at,
                Some(declaration),
                None,
            )]
        };
        self.write(wall_ms, event_id, None, actions)
    }

    /// The workload's next write: create, notify an own event, or edit one received from others.
    pub(crate) fn random_write(&mut self, rng: &mut Rng, wall_ms: u64) -> Option<LogEntry> {
        let own: Vec<EventId> = self.own_events.iter().copied().collect();
        let relayed: Vec<EventId> = self
            .events
            .keys()
            .filter(|id| !self.own_events.contains(id))
            .copied()
            .collect();
        let roll = rng.index(100);
        if roll < 40 || (own.is_empty() && relayed.is_empty()) {
            return self.create_event(rng, wall_ms);
        }
        let target = if roll < 65 && !own.is_empty() || relayed.is_empty() {
            *rng.pick(&own)
        } else {
            *rng.pick(&relayed)
        };
        Some(self.update_event(rng, wall_ms, target))
    }

    fn decode_down(&self, item: &LogEntry) -> Result<Option<DownOp>, StoreFault> {
        let record: CentralRecord = serde_json::from_slice(&item.action).map_err(fault)?;
        match record {
            CentralRecord::Relay { origin, entry } => {
                let bytes = unhex(&entry).ok_or_else(|| fault("relay entry is not hex"))?;
                let entry = LogEntry::decode(&bytes).map_err(fault)?;
                // The node trusts central's signature on the relay (checked by the session);
                // the origin's own signature was checked by central.
                if entry.node_id.to_string() != origin {
                    return Err(fault("relay origin does not sign the entry"));
                }
                let payload: EntryPayload = serde_json::from_slice(&entry.action).map_err(fault)?;
                Ok(Some(DownOp::Relay(payload, entry.crdt_change)))
            }
            CentralRecord::PoolGrant {
                node_id,
                tracking_ids,
            } if node_id == self.id.to_string() => {
                for id in &tracking_ids {
                    id.parse::<TrackingId>().map_err(fault)?;
                }
                Ok(Some(DownOp::Grant(tracking_ids)))
            }
            _ => Ok(None),
        }
    }
}

enum DownOp {
    Relay(EntryPayload, Option<Vec<u8>>),
    Grant(Vec<String>),
}

impl NodeStore for MemNode {
    fn log_head(&self) -> Result<LogHead, StoreFault> {
        Ok(self.head())
    }

    fn hash_at(&self, seq: u64) -> Result<Option<EntryHash>, StoreFault> {
        Ok(seq
            .checked_sub(1)
            .and_then(|i| self.hashes.get(i as usize))
            .copied())
    }

    fn entries_after(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogEntry>, StoreFault> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (e, len) in self.log.iter().zip(&self.sizes).skip(after as usize) {
            let len = *len;
            if !out.is_empty() && (out.len() >= max_entries || bytes + len > max_bytes) {
                break;
            }
            bytes += len;
            out.push(e.clone());
        }
        Ok(out)
    }

    fn down_cursor(&self) -> Result<u64, StoreFault> {
        Ok(self.down_cursor)
    }

    fn apply_down(&mut self, items: &[LogEntry], to_cursor: u64) -> Result<(), StoreFault> {
        // Decode everything first: a bad item changes nothing (atomic).
        let ops = items
            .iter()
            .map(|item| self.decode_down(item))
            .collect::<Result<Vec<_>, _>>()?;
        for op in ops.into_iter().flatten() {
            match op {
                DownOp::Relay(payload, change) => {
                    let actor = self.actor.clone();
                    let event = self
                        .events
                        .entry(payload.event_id)
                        .or_insert_with(|| Event::from_payload(&payload, actor));
                    self.duplicate_actions += event.insert_actions(&payload.actions);
                    if let Some(change) = change {
                        event.crdt.apply_change(&change).unwrap();
                    }
                }
                DownOp::Grant(ids) => {
                    for id in ids {
                        if self.granted.insert(id.clone()) {
                            self.pool.insert(id);
                        } else {
                            self.duplicate_grants += 1;
                        }
                    }
                }
            }
        }
        self.down_cursor = to_cursor;
        Ok(())
    }

    fn record_ack(
        &mut self,
        acked: LogHead,
        rejects: &[Reject],
        _now_ms: u64,
    ) -> Result<(), StoreFault> {
        if acked.seq > self.max_acked.seq {
            self.max_acked = acked;
        }
        self.rejects.extend_from_slice(rejects);
        Ok(())
    }

    fn health(&self, now_ms: u64) -> Result<NodeHealth, StoreFault> {
        let acked = self.max_acked.seq as usize;
        Ok(NodeHealth {
            pool_free: self.pool.len() as u32,
            backlog_entries: (self.log.len() - acked.min(self.log.len())) as u64,
            backlog_bytes: self.sizes.iter().skip(acked).map(|n| *n as u64).sum(),
            oldest_unacked_ms: self
                .written_ms
                .get(acked)
                .map_or(0, |t| now_ms.saturating_sub(*t)),
        })
    }
}

/// Who may see a central entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Every node except this one (a relay of its own entry).
    AllBut(NodeId),
    /// Only this node (a pool grant).
    Only(NodeId),
}

/// What central knows of one node.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub(crate) record: NodeRecord,
    /// Seq of the last pool grant to this node in central's log.
    last_grant_seq: u64,
    /// The furthest down cursor the node reported.
    pub(crate) cursor_seen: u64,
    pub(crate) contacts: u64,
}

/// Central's durable state.
#[derive(Debug)]
pub(crate) struct MemCentral {
    key: NodeSecretKey,
    pub(crate) id: NodeId,
    actor: ActorId,
    /// Wall clock for central's own entries, set by the driver.
    pub(crate) now_ms: u64,
    hlc: HlcClock,
    pub(crate) nodes: BTreeMap<NodeId, NodeState>,
    /// Every applied node entry, by (node, seq).
    pub(crate) applied: BTreeMap<(NodeId, u64), LogEntry>,
    /// Entries applied although (node, seq) was already applied (must stay 0).
    pub(crate) duplicate_applies: u64,
    /// Actions applied again to an event that already had them (must stay 0).
    pub(crate) duplicate_actions: u64,
    pub(crate) events: BTreeMap<EventId, Event>,
    /// Central's own signed log: the feed.
    pub(crate) log: Vec<LogEntry>,
    audience: Vec<Audience>,
    sizes: Vec<usize>,
    head: LogHead,
    /// Tracking id → the node it was leased to.
    pub(crate) leased: BTreeMap<String, NodeId>,
    /// Tracking id → the event that used it.
    pub(crate) used: BTreeMap<String, EventId>,
    id_rng: Rng,
    pub(crate) rejects: Vec<(NodeId, LogEntry, Reject)>,
    pub(crate) forks: Vec<LogEntry>,
}

impl MemCentral {
    pub(crate) fn new(key_seed: [u8; 32], id_seed: u64) -> Self {
        let key = NodeSecretKey::from_bytes(&key_seed);
        let id = key.node_id();
        Self {
            key,
            id,
            actor: actor_for(id.as_bytes()),
            now_ms: EPOCH_MS,
            hlc: HlcClock::default(),
            nodes: BTreeMap::new(),
            applied: BTreeMap::new(),
            duplicate_applies: 0,
            duplicate_actions: 0,
            events: BTreeMap::new(),
            log: Vec::new(),
            audience: Vec::new(),
            sizes: Vec::new(),
            head: LogHead::GENESIS,
            leased: BTreeMap::new(),
            used: BTreeMap::new(),
            id_rng: Rng::new(id_seed),
            rejects: Vec::new(),
            forks: Vec::new(),
        }
    }

    pub(crate) fn enroll(&mut self, node: NodeId) {
        self.nodes.insert(
            node,
            NodeState {
                record: NodeRecord {
                    acked: LogHead::GENESIS,
                    revoked: false,
                    quarantined: false,
                },
                last_grant_seq: 0,
                cursor_seen: 0,
                contacts: 0,
            },
        );
    }

    pub(crate) fn head(&self) -> LogHead {
        self.head
    }

    pub(crate) fn reload(&mut self) {
        for event in self.events.values_mut() {
            event.reload(&self.actor);
        }
    }

    fn append(&mut self, event_id: EventId, record: &CentralRecord, audience: Audience) {
        let entry = LogEntry::sign(
            &self.key,
            self.head.seq + 1,
            self.head.hash,
            self.hlc.now(self.now_ms),
            event_id,
            serde_json::to_vec(record).unwrap(),
            None,
        )
        .unwrap();
        self.head = LogHead {
            seq: entry.seq,
            hash: entry.hash(),
        };
        self.sizes.push(entry.encode().len());
        self.log.push(entry);
        self.audience.push(audience);
    }

    /// The first content problem of `entry`, given what earlier entries of the same batch
    /// created (`new_events`) and used (`new_ids`).
    fn content_check(
        &self,
        node_id: NodeId,
        entry: &LogEntry,
        new_events: &mut BTreeSet<EventId>,
        new_ids: &mut BTreeSet<String>,
    ) -> Result<EntryPayload, (&'static str, String)> {
        let payload: EntryPayload = serde_json::from_slice(&entry.action)
            .map_err(|e| ("malformed-payload", e.to_string()))?;
        if payload.event_id != entry.event_id {
            return Err(("event-mismatch", "payload names another event".into()));
        }
        if let Some(change) = &entry.crdt_change {
            automerge::Change::from_bytes(change.clone())
                .map_err(|e| ("bad-change", e.to_string()))?;
        }
        let known =
            self.events.contains_key(&payload.event_id) || new_events.contains(&payload.event_id);
        let creates = payload
            .actions
            .iter()
            .any(|a| a.action_type == ActionType::Create);
        if creates {
            if known {
                return Err(("duplicate-create", "event already exists".into()));
            }
            let id = &payload.tracking_id;
            if self.leased.get(id) != Some(&node_id) {
                return Err(("tracking-id", format!("{id} was not leased to this node")));
            }
            if self.used.contains_key(id) || new_ids.contains(id) {
                return Err(("tracking-id", format!("{id} is already used")));
            }
            new_events.insert(payload.event_id);
            new_ids.insert(id.clone());
        } else if !known {
            return Err(("unknown-event", "no CREATE for this event".into()));
        }
        Ok(payload)
    }
}

impl CentralStore for MemCentral {
    fn node(&self, node_id: NodeId) -> Result<Option<NodeRecord>, StoreFault> {
        Ok(self.nodes.get(&node_id).map(|n| n.record.clone()))
    }

    fn stored_hash(&self, node_id: NodeId, seq: u64) -> Result<Option<EntryHash>, StoreFault> {
        Ok(self.applied.get(&(node_id, seq)).map(LogEntry::hash))
    }

    fn apply_entries(
        &mut self,
        node_id: NodeId,
        entries: &[LogEntry],
    ) -> Result<(LogHead, Vec<Reject>), StoreFault> {
        let state = self
            .nodes
            .get(&node_id)
            .ok_or_else(|| fault("unknown node"))?;
        let mut acked = state.record.acked;
        // Check everything first, then apply the accepted prefix: all or nothing per call.
        let mut new_events = BTreeSet::new();
        let mut new_ids = BTreeSet::new();
        let mut accepted = Vec::new();
        let mut rejects = Vec::new();
        for entry in entries {
            if entry.seq != acked.seq + 1 + accepted.len() as u64 {
                return Err(fault(format!(
                    "apply_entries got entry {} after head {}",
                    entry.seq, acked.seq
                )));
            }
            match self.content_check(node_id, entry, &mut new_events, &mut new_ids) {
                Ok(payload) => accepted.push((entry, payload)),
                Err((reason, detail)) => {
                    rejects.push(Reject {
                        seq: entry.seq,
                        reason: reason.to_owned(),
                        detail,
                    });
                    break;
                }
            }
        }
        for (entry, payload) in accepted {
            let actor = self.actor.clone();
            let event = self
                .events
                .entry(payload.event_id)
                .or_insert_with(|| Event::from_payload(&payload, actor));
            self.duplicate_actions += event.insert_actions(&payload.actions);
            if let Some(change) = &entry.crdt_change {
                event.crdt.apply_change(change).map_err(fault)?;
            }
            if payload
                .actions
                .iter()
                .any(|a| a.action_type == ActionType::Create)
            {
                self.used
                    .insert(payload.tracking_id.clone(), payload.event_id);
            }
            if self
                .applied
                .insert((node_id, entry.seq), entry.clone())
                .is_some()
            {
                self.duplicate_applies += 1;
            }
            acked = LogHead {
                seq: entry.seq,
                hash: entry.hash(),
            };
            self.append(
                entry.event_id,
                &CentralRecord::Relay {
                    origin: node_id.to_string(),
                    entry: hex(&entry.encode()),
                },
                Audience::AllBut(node_id),
            );
        }
        if let Some(state) = self.nodes.get_mut(&node_id) {
            state.record.acked = acked;
        }
        Ok((acked, rejects))
    }

    fn record_reject(
        &mut self,
        node_id: NodeId,
        entry: &LogEntry,
        reject: &Reject,
    ) -> Result<(), StoreFault> {
        self.rejects.push((node_id, entry.clone(), reject.clone()));
        Ok(())
    }

    fn record_fork(&mut self, node_id: NodeId, entry: &LogEntry) -> Result<(), StoreFault> {
        self.forks.push(entry.clone());
        if let Some(state) = self.nodes.get_mut(&node_id) {
            state.record.quarantined = true;
        }
        Ok(())
    }

    fn record_contact(
        &mut self,
        node_id: NodeId,
        hello: &Hello,
        _now_ms: u64,
    ) -> Result<(), StoreFault> {
        if let Some(state) = self.nodes.get_mut(&node_id) {
            state.contacts += 1;
            state.cursor_seen = state.cursor_seen.max(hello.down_cursor);
        }
        Ok(())
    }

    fn ensure_pool(&mut self, node_id: NodeId, pool_free: u32) -> Result<(), StoreFault> {
        let Some(state) = self.nodes.get(&node_id) else {
            return Ok(());
        };
        // Lease only when the node is low and has applied every earlier grant, so a node that
        // says Hello often while behind does not collect lease after lease.
        if pool_free >= POOL_LOW_WATER || state.cursor_seen < state.last_grant_seq {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(POOL_GRANT);
        while ids.len() < POOL_GRANT {
            let id = TrackingId::from_index(self.id_rng.next_u64()).to_string();
            if self.leased.contains_key(&id) {
                continue; // never lease an id twice
            }
            self.leased.insert(id.clone(), node_id);
            ids.push(id);
        }
        self.append(
            uuid::Uuid::nil(),
            &CentralRecord::PoolGrant {
                node_id: node_id.to_string(),
                tracking_ids: ids,
            },
            Audience::Only(node_id),
        );
        let seq = self.head.seq;
        if let Some(state) = self.nodes.get_mut(&node_id) {
            state.last_grant_seq = seq;
        }
        Ok(())
    }

    fn feed_after(
        &self,
        node_id: NodeId,
        cursor: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LogEntry>, u64, bool), StoreFault> {
        let mut items: Vec<LogEntry> = Vec::new();
        let mut bytes = 0;
        let all = self.log.iter().zip(&self.audience).zip(&self.sizes);
        for ((entry, audience), len) in all.skip(cursor as usize) {
            let visible = match *audience {
                Audience::AllBut(origin) => origin != node_id,
                Audience::Only(target) => target == node_id,
            };
            if !visible {
                continue;
            }
            let len = *len;
            if !items.is_empty() && (items.len() >= max_items || bytes + len > max_bytes) {
                // Bounded: stop after the last item taken; more visible entries wait.
                let to = items.last().map_or(cursor, |e| e.seq);
                return Ok((items, to, true));
            }
            bytes += len;
            items.push(entry.clone());
        }
        // Everything visible is in `items`: move the cursor past invisible entries too.
        Ok((items, self.head.seq.max(cursor), false))
    }

    fn record_down_ack(&mut self, node_id: NodeId, cursor: u64) -> Result<(), StoreFault> {
        if let Some(state) = self.nodes.get_mut(&node_id) {
            state.cursor_seen = state.cursor_seen.max(cursor);
        }
        Ok(())
    }
}
