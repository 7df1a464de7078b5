//! The part of applying a node entry that depends only on the entry's bytes, done ahead of the
//! apply transaction (on the signature-check threads) and cached by entry hash.
//!
//! Applying an entry that creates an event does, besides its SQL writes, pure work: parsing the
//! payload, applying the automerge change to an empty document, deriving the event's index entry
//! (status, declaration, conflicts) and encoding it. [`prepare`] does that work for one entry;
//! [`PreparedCache`] keeps the results until the apply transaction takes them
//! ([`super::WriteTx::apply_prepared`]), so the single writer spends its time on SQL only.
//!
//! A prepared entry is a cache, never a second truth: it is keyed by the entry's hash, it is what
//! the apply path would derive for an event the entry creates from nothing, and the apply path
//! uses it only in exactly that case (the event is not at central and no earlier entry of the
//! batch touched it; every action was stored). Anything else, or a miss, takes the ordinary
//! path, which derives the same values from the stored rows.

use std::collections::{HashMap, VecDeque};

use crvs_common::event::{ActionDocument, ActionType, EntryPayload, EventDocument};
use crvs_common::log::{EntryHash, LogEntry};
use crvs_common::state::{EventIndex, canonical_order};
use crvs_sync::merge::{APPEND_MAX_BYTES, EventCrdt, actor_for};

/// Prepared entries kept waiting for their apply transaction; the oldest are dropped beyond it
/// (a dropped one is applied the ordinary way): several batches of the largest size
/// ([`crvs_sync::engine::FastLink`]). Shared by every connection.
pub const PREPARED_ENTRIES_MAX: usize = 4096;

/// ... and at most this many bytes of the entries they were prepared from (payload and change;
/// the parsed form is a few times larger). Entries that are never applied (re-sent duplicates,
/// entries after a refused one) wait until newer ones push them out.
pub const PREPARED_BYTES_MAX: usize = 32 * 1024 * 1024;

/// An entry's payload, parsed, and what the event it creates derives to.
#[derive(Debug)]
pub struct Prepared {
    pub(super) payload: EntryPayload,
    pub(super) fresh: Option<FreshEvent>,
    /// Bytes of the entry it was prepared from (its payload and change), for the cache bound.
    weight: usize,
}

impl Prepared {
    /// Whether the entry carries a REGISTER action: applying it may answer a registration
    /// request (central's log, a confirmation hook), so it is never committed deferred.
    pub(super) fn touches_registration(&self) -> bool {
        self.payload
            .actions
            .iter()
            .any(|a| a.action_type == ActionType::Register)
    }
}

/// What a new event holds once the entry creating it is applied, with nothing else applied.
#[derive(Debug)]
pub(super) struct FreshEvent {
    /// The derived index entry and its JSON text.
    pub(super) index: EventIndex,
    pub(super) json: String,
    /// The merge document as stored (the change itself while it is small).
    pub(super) stored_crdt: Vec<u8>,
    /// How many actions the document was derived from: all of the payload's.
    pub(super) actions: usize,
}

/// Parses `entry`'s payload and, when the entry creates its event, derives that event as central
/// would (merge document written by central, `central_id`). `None` when the payload does not
/// parse: the apply path then refuses the entry with its reason.
pub(super) fn prepare(entry: &LogEntry, central_id: &[u8; 32]) -> Option<Prepared> {
    let payload: EntryPayload = serde_json::from_slice(&entry.action).ok()?;
    let fresh = fresh_event(entry, &payload, central_id);
    let weight = entry.action.len() + entry.crdt_change.as_ref().map_or(0, Vec::len);
    Some(Prepared {
        payload,
        fresh,
        weight,
    })
}

fn fresh_event(
    entry: &LogEntry,
    payload: &EntryPayload,
    central_id: &[u8; 32],
) -> Option<FreshEvent> {
    if payload.event_id != entry.event_id
        || !payload
            .actions
            .iter()
            .any(|a| a.action_type == ActionType::Create)
    {
        return None;
    }
    let change = entry.crdt_change.as_deref()?;
    // The stored form of a document holding just this change is the change itself while it is
    // small (`EventCrdt::stored_after`); a larger one is saved whole, which needs the document.
    if change.len() > APPEND_MAX_BYTES {
        return None;
    }
    // The shape every node's first change of an event has is read without building the
    // document; any other is applied to an empty document, as the apply path would.
    let (declaration, conflicts) = match EventCrdt::fresh_state(change) {
        Some(declaration) => (declaration, Vec::new()),
        None => {
            let mut crdt = EventCrdt::new(actor_for(central_id));
            crdt.apply_complete_change(change).ok()?;
            crdt.state().ok()?
        }
    };
    // The actions as the read path finds them: parsed from this entry's payload, where they are
    // kept (`Body::InNodeLog`). The index derives from their types, statuses, authors and times;
    // its declaration comes from the merge document, so copies without their data do.
    let mut actions: Vec<_> = payload
        .actions
        .iter()
        .map(ActionDocument::metadata)
        .collect();
    canonical_order(&mut actions);
    let doc = EventDocument {
        id: payload.event_id,
        event_type: payload.event_type.clone(),
        created_at: payload.event_created_at.clone(),
        updated_at: payload.event_created_at.clone(),
        actions,
        tracking_id: payload.tracking_id.clone(),
    };
    // A document holding a change has heads: its state is the index's declaration.
    let index = EventIndex::from_document_with(&doc, declaration, conflicts);
    let json = serde_json::to_string(&index).ok()?;
    Some(FreshEvent {
        index,
        json,
        stored_crdt: change.to_vec(),
        actions: payload.actions.len(),
    })
}

/// Prepared entries by hash, oldest dropped first beyond its bounds.
#[derive(Debug)]
pub struct PreparedCache {
    by_hash: HashMap<EntryHash, Prepared>,
    /// Insertion order; may hold hashes already taken (skipped when dropping).
    order: VecDeque<EntryHash>,
    bound: usize,
    /// Sum of the waiting entries' weights, at most [`PREPARED_BYTES_MAX`].
    bytes: usize,
}

impl Default for PreparedCache {
    fn default() -> Self {
        Self::with_bound(PREPARED_ENTRIES_MAX)
    }
}

impl PreparedCache {
    /// A cache keeping at most `bound` prepared entries (and [`PREPARED_BYTES_MAX`] bytes).
    pub fn with_bound(bound: usize) -> Self {
        Self {
            by_hash: HashMap::new(),
            order: VecDeque::new(),
            bound,
            bytes: 0,
        }
    }

    /// Keeps `prepared` for the entry with hash `hash`, dropping the oldest beyond the bounds.
    pub fn insert(&mut self, hash: EntryHash, prepared: Prepared) {
        self.bytes += prepared.weight;
        match self.by_hash.insert(hash, prepared) {
            Some(old) => self.bytes -= old.weight,
            None => self.order.push_back(hash),
        }
        while self.by_hash.len() > self.bound
            || self.bytes > PREPARED_BYTES_MAX
            || self.order.len() > 2 * self.bound
        {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(dropped) = self.by_hash.remove(&oldest) {
                self.bytes -= dropped.weight;
            }
        }
    }

    /// Takes what was prepared for the entry with hash `hash`.
    pub fn take(&mut self, hash: &EntryHash) -> Option<Prepared> {
        let taken = self.by_hash.remove(hash)?;
        self.bytes -= taken.weight;
        Some(taken)
    }

    /// Prepared entries waiting.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}
