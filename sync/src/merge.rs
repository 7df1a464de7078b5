//! Per-event automerge documents: how concurrent writes from different places merge.
//!
//! Each event is one automerge document: `actions` maps action id → its type and status, and
//! `decl` maps field id → the field's JSON value. A write records its actions and its declaration
//! delta as one automerge change, which travels in the log entry (`crdt_change`). Applying the
//! same changes in any order gives the same document, so every replica shows the same winner for
//! a field written concurrently at two places, and both values stay visible as a conflict.

mod first_change;

/// Malformed changes built from real ones, for tests of what refuses them.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    pub use super::first_change::surgery::with_objects_at;
}

use std::collections::HashMap;

use automerge::transaction::{CommitOptions, Transactable as _};
use automerge::{
    ActorId, Automerge, Change, ObjType, ROOT, ReadDoc as _, ScalarValue, Value, hydrate, legacy,
};
use crvs_common::event::{ActionDocument, Declaration};
use crvs_common::state::FieldConflict;

const ACTIONS: &str = "actions";
const DECLARATION: &str = "decl";

/// Why a document or change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// automerge refused the bytes or the operation.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// A change does not decode.
    #[error("bad change: {0}")]
    BadChange(String),
    /// A change depends on changes this document does not hold.
    #[error("the change depends on changes this document does not hold: {0}")]
    MissingDeps(String),
    /// A stored value is not the JSON we write.
    #[error("bad value at {0}")]
    BadValue(String),
}

/// Stored documents grow by appended changes up to this size, then are saved whole (compressed).
pub const APPEND_MAX_BYTES: usize = 16 * 1024;

/// One event's merge document.
#[derive(Debug, Clone)]
pub struct EventCrdt {
    doc: Automerge,
}

/// Runs automerge work on bytes from elsewhere; `None` if automerge panicked (it does on some
/// malformed changes, see [`EventCrdt::apply_complete_change`]). The panic message still goes to
/// the panic hook (stderr).
fn unpanicked<T>(work: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).ok()
}

/// The automerge actor of a replica: its 32-byte identity (a node id, or central's key).
pub fn actor_for(identity: &[u8; 32]) -> ActorId {
    ActorId::from(identity.as_slice())
}

impl EventCrdt {
    /// A new, empty document written by `actor`.
    pub fn new(actor: ActorId) -> Self {
        Self {
            doc: Automerge::new().with_actor(actor),
        }
    }

    /// Loads a saved document; later writes are by `actor`.
    pub fn load(bytes: &[u8], actor: ActorId) -> Result<Self, MergeError> {
        Ok(Self {
            doc: Automerge::load(bytes)?.with_actor(actor),
        })
    }

    /// The whole document, compressed.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// What to store for this document after `change` was recorded in it, given the bytes stored
    /// before: those bytes with the change appended while they are under [`APPEND_MAX_BYTES`]
    /// (no re-encoding on the write path), else one compressed [`Self::save`]. Automerge loads a
    /// sequence of chunks, so both forms load back to this document.
    pub fn stored_after(&self, before: Option<&[u8]>, change: &[u8]) -> Vec<u8> {
        match before {
            Some(old) if old.len() + change.len() <= APPEND_MAX_BYTES => [old, change].concat(),
            None if change.len() <= APPEND_MAX_BYTES => change.to_vec(),
            _ => self.save(),
        }
    }

    /// Records `actions` and the declaration `delta` (`null` clears a field) as one change with
    /// the given timestamp, and returns that change's bytes (for the log entry).
    pub fn record(
        &mut self,
        actions: &[ActionDocument],
        delta: &Declaration,
        time_ms: i64,
    ) -> Result<Vec<u8>, MergeError> {
        // The action itself travels in the signed entry; the document only needs its id (the
        // merged set of actions) and a short label for people reading a document dump.
        let encoded: Vec<(String, String)> = actions
            .iter()
            .map(|a| {
                (
                    a.id.to_string(),
                    format!("{} {}", a.action_type.as_str(), a.status.as_str()),
                )
            })
            .collect();
        // A fresh document (the event's first write, which always carries its CREATE) creates
        // both maps in one batch: two op-set splices instead of one per key. Later writes find the
        // maps and put key by key, so no replica ever creates a second `decl` map concurrently.
        let fresh = self.doc.get_heads().is_empty() && self.pending_changes() == 0;
        self.doc
            .transact_with(
                |_| CommitOptions::default().with_time(time_ms),
                |tx| -> Result<(), automerge::AutomergeError> {
                    if fresh {
                        let actions_map: HashMap<String, hydrate::Value> = encoded
                            .iter()
                            .map(|(id, json)| (id.clone(), hydrate::Value::from(json.as_str())))
                            .collect();
                        let decl_map: HashMap<String, hydrate::Value> = delta
                            .iter()
                            .filter(|(_, value)| !value.is_null())
                            .map(|(field, value)| {
                                (field.clone(), hydrate::Value::scalar(value.to_string()))
                            })
                            .collect();
                        tx.batch_create_object(
                            ROOT,
                            ACTIONS,
                            &hydrate::Value::from(hydrate::Map::from(actions_map)),
                            false,
                        )?;
                        tx.batch_create_object(
                            ROOT,
                            DECLARATION,
                            &hydrate::Value::from(hydrate::Map::from(decl_map)),
                            false,
                        )?;
                        return Ok(());
                    }
                    let actions_obj = match tx.get(ROOT, ACTIONS)? {
                        Some((Value::Object(ObjType::Map), id)) => id,
                        _ => tx.put_object(ROOT, ACTIONS, ObjType::Map)?,
                    };
                    let decl_obj = match tx.get(ROOT, DECLARATION)? {
                        Some((Value::Object(ObjType::Map), id)) => id,
                        _ => tx.put_object(ROOT, DECLARATION, ObjType::Map)?,
                    };
                    for (id, json) in &encoded {
                        tx.put(&actions_obj, id.as_str(), json.as_str())?;
                    }
                    for (field, value) in delta {
                        if value.is_null() {
                            if tx.get(&decl_obj, field.as_str())?.is_some() {
                                tx.delete(&decl_obj, field.as_str())?;
                            }
                        } else {
                            tx.put(&decl_obj, field.as_str(), value.to_string())?;
                        }
                    }
                    Ok(())
                },
            )
            .map_err(|failure| MergeError::Automerge(failure.error))?;
        let change = self
            .doc
            .get_last_local_change()
            .ok_or_else(|| MergeError::BadChange("no change recorded".into()))?;
        Ok(change.raw_bytes().to_vec())
    }

    /// Applies a change only if this document holds every change it depends on (central's case:
    /// an honest node's change depends only on changes central applied before it). A change that
    /// would wait for dependencies is refused and leaves the document as it was.
    ///
    /// The bytes may come from anyone holding a node key. automerge 0.12 panics on some malformed
    /// ops (one naming an actor the change does not list), so the change is decoded first, which
    /// finds those without touching the document, and a panic while applying is caught too: it
    /// refuses the change, and the document must then be dropped, not stored.
    pub fn apply_complete_change(&mut self, bytes: &[u8]) -> Result<(), MergeError> {
        let change =
            Change::from_bytes(bytes.to_vec()).map_err(|e| MergeError::BadChange(e.to_string()))?;
        if unpanicked(|| change.decode()).is_none() {
            return Err(MergeError::BadChange("its ops do not decode".into()));
        }
        let missing = self.doc.get_missing_deps(change.deps());
        if !missing.is_empty() {
            let hashes: Vec<String> = missing.iter().map(ToString::to_string).collect();
            return Err(MergeError::MissingDeps(hashes.join(", ")));
        }
        unpanicked(|| self.doc.apply_changes([change]))
            .ok_or_else(|| MergeError::BadChange("automerge failed applying it".into()))??;
        Ok(())
    }

    /// Applies a change recorded elsewhere (relayed by central, which applied it first).
    /// Idempotent; a change whose dependencies are missing waits inside the document until they
    /// arrive. A panic inside automerge refuses the change as in [`Self::apply_complete_change`].
    pub fn apply_change(&mut self, bytes: &[u8]) -> Result<(), MergeError> {
        let change =
            Change::from_bytes(bytes.to_vec()).map_err(|e| MergeError::BadChange(e.to_string()))?;
        unpanicked(|| self.doc.apply_changes([change]))
            .ok_or_else(|| MergeError::BadChange("automerge failed applying it".into()))??;
        Ok(())
    }

    /// The current declaration: the deterministic winner of every field.
    pub fn declaration(&self) -> Result<Declaration, MergeError> {
        let mut out = Declaration::new();
        let Some((Value::Object(ObjType::Map), decl)) = self.doc.get(ROOT, DECLARATION)? else {
            return Ok(out);
        };
        for key in self.doc.keys(&decl) {
            if let Some((value, _)) = self.doc.get(&decl, key.as_str())? {
                out.insert(key.clone(), json_of(&value, &key)?);
            }
        }
        Ok(out)
    }

    /// [`Self::declaration`] and [`Self::conflicts`] in one walk of the map: each key's winner
    /// and conflict mark come from one range scan; only conflicted keys are looked up again.
    pub fn state(&self) -> Result<(Declaration, Vec<FieldConflict>), MergeError> {
        let mut declaration = Declaration::new();
        let mut conflicts = Vec::new();
        let Some((Value::Object(ObjType::Map), decl)) = self.doc.get(ROOT, DECLARATION)? else {
            return Ok((declaration, conflicts));
        };
        for item in self.doc.map_range(&decl, ..) {
            let key = item.key.into_owned();
            let winner = json_of(&item.value.into_value(), &key)?;
            if item.conflict {
                let values = self
                    .doc
                    .get_all(&decl, key.as_str())?
                    .iter()
                    .map(|(v, _)| json_of(v, &key))
                    .collect::<Result<Vec<_>, _>>()?;
                conflicts.push(FieldConflict {
                    field: key.clone(),
                    winner: winner.clone(),
                    values,
                });
            }
            declaration.insert(key, winner);
        }
        Ok((declaration, conflicts))
    }

    /// The declaration of a new document holding only `change`, read from the change itself:
    /// the same answer as applying it to an empty document and asking [`Self::state`] (which
    /// then finds no conflict), without building the document. Only for the shape
    /// [`Self::record`] gives a document's first change: no dependencies, the actor's first
    /// change, one `actions` map and one `decl` map made at the root, and string values put into
    /// them once per key, overwriting nothing. `None` for any other change (apply it instead).
    ///
    /// The change is read without automerge when it is in the canonical encoding of that shape
    /// (`first_change`), else decoded by automerge.
    pub fn fresh_state(change: &[u8]) -> Option<Declaration> {
        first_change::read(change, ACTIONS, DECLARATION)
            .or_else(|| Self::fresh_state_decoded(change))
    }

    /// [`Self::fresh_state`] by way of automerge's decoded (legacy) form of the change.
    fn fresh_state_decoded(change: &[u8]) -> Option<Declaration> {
        let change = Change::from_bytes(change.to_vec()).ok()?;
        if !change.deps().is_empty() || change.seq() != 1 || change.start_op().get() != 1 {
            return None;
        }
        let expanded = unpanicked(|| change.decode())?;
        let mut actions_map: Option<u64> = None;
        let mut decl_map: Option<u64> = None;
        let mut action_keys = std::collections::HashSet::new();
        let mut declaration = Declaration::new();
        for (counter, op) in (expanded.start_op.get()..).zip(&expanded.operations) {
            let legacy::Key::Map(key) = &op.key else {
                return None;
            };
            if op.insert || !op.pred.is_empty() || key.is_empty() {
                return None;
            }
            match (&op.action, &op.obj) {
                (legacy::OpType::Make(ObjType::Map), legacy::ObjectId::Root) => {
                    let made = match key.as_str() {
                        ACTIONS => &mut actions_map,
                        DECLARATION => &mut decl_map,
                        _ => return None,
                    };
                    if made.replace(counter).is_some() {
                        return None;
                    }
                }
                (
                    legacy::OpType::Put(ScalarValue::Str(text)),
                    legacy::ObjectId::Id(legacy::OpId(made, actor)),
                ) if *actor == expanded.actor_id => {
                    if Some(*made) == actions_map {
                        if !action_keys.insert(key.clone()) {
                            return None;
                        }
                    } else if Some(*made) == decl_map {
                        let value = serde_json::from_str(text).ok()?;
                        if declaration.insert(key.to_string(), value).is_some() {
                            return None;
                        }
                    } else {
                        return None;
                    }
                }
                _ => return None,
            }
        }
        Some(declaration)
    }

    /// Fields written concurrently at different places, with every value and the winner.
    pub fn conflicts(&self) -> Result<Vec<FieldConflict>, MergeError> {
        let mut out = Vec::new();
        let Some((Value::Object(ObjType::Map), decl)) = self.doc.get(ROOT, DECLARATION)? else {
            return Ok(out);
        };
        for key in self.doc.keys(&decl) {
            let all = self.doc.get_all(&decl, key.as_str())?;
            if all.len() < 2 {
                continue;
            }
            let winner = match self.doc.get(&decl, key.as_str())? {
                Some((value, _)) => json_of(&value, &key)?,
                None => serde_json::Value::Null,
            };
            let values = all
                .iter()
                .map(|(v, _)| json_of(v, &key))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(FieldConflict {
                field: key,
                winner,
                values,
            });
        }
        Ok(out)
    }

    /// Ids of every action the document holds.
    pub fn action_ids(&self) -> Result<Vec<String>, MergeError> {
        match self.doc.get(ROOT, ACTIONS)? {
            Some((Value::Object(ObjType::Map), actions)) => Ok(self.doc.keys(&actions).collect()),
            _ => Ok(Vec::new()),
        }
    }

    /// The document's heads, hex encoded (identifies its state).
    pub fn heads(&self) -> Vec<String> {
        self.doc
            .get_heads()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Number of changes waiting for missing dependencies.
    pub fn pending_changes(&self) -> usize {
        self.doc.get_missing_deps(&[]).len()
    }
}

fn json_of(value: &Value<'_>, key: &str) -> Result<serde_json::Value, MergeError> {
    match value {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(text) => {
                serde_json::from_str(text).map_err(|_| MergeError::BadValue(key.to_owned()))
            }
            _ => Err(MergeError::BadValue(key.to_owned())),
        },
        Value::Object(_) => Err(MergeError::BadValue(key.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy as _;
    use serde_json::json;

    use super::*;

    fn decl(v: serde_json::Value) -> Declaration {
        v.as_object().cloned().unwrap_or_default()
    }

    fn actor(n: u8) -> ActorId {
        actor_for(&[n; 32])
    }

    #[test]
    fn sequential_writes_merge_without_conflict() {
        let mut a = EventCrdt::new(actor(1));
        let c1 = a
            .record(
                &[],
                &decl(json!({"child.name": {"firstname": "Liam"}, "child.dob": "2024-06-03"})),
                1,
            )
            .unwrap();
        let c2 = a
            .record(
                &[],
                &decl(json!({"child.dob": null, "child.gender": "male"})),
                2,
            )
            .unwrap();
        let mut strict = EventCrdt::new(actor(2));
        assert!(matches!(
            strict.apply_complete_change(&c2),
            Err(MergeError::MissingDeps(_))
        ));
        assert_eq!(
            strict.pending_changes(),
            0,
            "a refused change leaves nothing queued"
        );
        strict.apply_complete_change(&c1).unwrap();
        strict.apply_complete_change(&c2).unwrap();
        strict.apply_complete_change(&c2).unwrap(); // a duplicate is fine
        assert_eq!(strict.declaration().unwrap(), a.declaration().unwrap());
        let mut b = EventCrdt::new(actor(2));
        b.apply_change(&c2).unwrap(); // out of order: waits for c1
        assert_eq!(b.declaration().unwrap(), Declaration::new());
        b.apply_change(&c1).unwrap();
        assert_eq!(b.declaration().unwrap(), a.declaration().unwrap());
        assert_eq!(
            serde_json::Value::Object(b.declaration().unwrap()),
            json!({"child.name": {"firstname": "Liam"}, "child.gender": "male"})
        );
        assert!(b.conflicts().unwrap().is_empty());
    }

    /// The CREATE a system client records.
    fn create_action() -> ActionDocument {
        serde_json::from_value(json!({
            "id": "2f0c5a1e-8d4b-4c3a-9e61-0d5f1b2a3c4d",
            "type": "CREATE",
            "status": "Accepted",
            "transactionId": "tx-1",
            "createdAt": "2024-06-03T10:00:00.000Z",
            "createdBy": "client-1",
            "createdByUserType": "system",
            "createdByRole": "HEALTH",
        }))
        .unwrap()
    }

    #[test]
    fn a_fresh_document_records_in_one_batch_and_later_writes_key_by_key() {
        let action = create_action();
        let mut a = EventCrdt::new(actor(1));
        let c1 = a
            .record(
                std::slice::from_ref(&action),
                &decl(json!({"child.name": {"firstname": "Liam"}, "child.dob": "2024-06-03", "child.gender": null})),
                1,
            )
            .unwrap();
        assert_eq!(
            serde_json::Value::Object(a.declaration().unwrap()),
            json!({"child.name": {"firstname": "Liam"}, "child.dob": "2024-06-03"})
        );
        assert_eq!(a.action_ids().unwrap(), vec![action.id.to_string()]);
        let c2 = a
            .record(&[], &decl(json!({"child.dob": "2024-06-04"})), 2)
            .unwrap();
        // Another replica sees the same document from the changes alone.
        let mut b = EventCrdt::new(actor(2));
        b.apply_change(&c1).unwrap();
        b.apply_change(&c2).unwrap();
        assert_eq!(b.declaration().unwrap(), a.declaration().unwrap());
        assert_eq!(b.heads(), a.heads());
        // A concurrent write on top of the batch-created map conflicts as usual.
        let mut c = EventCrdt::new(actor(3));
        c.apply_change(&c1).unwrap();
        let c3 = c
            .record(&[], &decl(json!({"child.dob": "2024-06-05"})), 2)
            .unwrap();
        a.apply_change(&c3).unwrap();
        b.apply_change(&c3).unwrap();
        assert_eq!(a.conflicts().unwrap(), b.conflicts().unwrap());
        assert_eq!(a.conflicts().unwrap().len(), 1);
        assert_eq!(
            a.state().unwrap(),
            (a.declaration().unwrap(), a.conflicts().unwrap())
        );
    }

    /// The applied state of a new document holding only `change`.
    fn applied_state(change: &[u8]) -> (Declaration, Vec<FieldConflict>) {
        let mut doc = EventCrdt::new(actor(9));
        doc.apply_complete_change(change).unwrap();
        doc.state().unwrap()
    }

    /// A first change that writes `decl` key by key on top of nothing and overwrites a key (an
    /// op with a predecessor): not the shape `record` gives a fresh document.
    fn overwritten_first_change() -> Vec<u8> {
        let mut doc = Automerge::new().with_actor(actor(1));
        let mut tx = doc.transaction();
        let decl_obj = tx.put_object(ROOT, DECLARATION, ObjType::Map).unwrap();
        tx.put(&decl_obj, "child.dob", "\"2024-06-03\"").unwrap();
        tx.put(&decl_obj, "child.dob", "\"2024-06-04\"").unwrap();
        tx.commit();
        doc.get_last_local_change().unwrap().raw_bytes().to_vec()
    }

    /// A first change that makes `decl` a list: not the shape either.
    fn list_first_change() -> Vec<u8> {
        let mut doc = Automerge::new().with_actor(actor(1));
        let mut tx = doc.transaction();
        let list = tx.put_object(ROOT, DECLARATION, ObjType::List).unwrap();
        tx.insert(&list, 0, "1").unwrap();
        tx.commit();
        doc.get_last_local_change().unwrap().raw_bytes().to_vec()
    }

    #[test]
    fn a_fresh_change_reads_as_the_applied_document_and_others_are_left_to_automerge() {
        let action = create_action();
        for delta in [
            json!({}),
            json!({"child.name": {"firstname": "Liam"}, "child.dob": "2024-06-03", "child.gender": null}),
            json!({"child.weightAtBirth": 3.1, "mother.previousBirths": 2, "x": [1, "two", null], "y": false}),
        ] {
            let mut a = EventCrdt::new(actor(1));
            let first = a
                .record(std::slice::from_ref(&action), &decl(delta.clone()), 1)
                .unwrap();
            let (declaration, conflicts) = applied_state(&first);
            assert!(conflicts.is_empty());
            assert_eq!(EventCrdt::fresh_state(&first), Some(declaration), "{delta}");
            // A later change depends on the first: not a fresh document's.
            let second = a
                .record(&[], &decl(json!({"child.dob": "2024-06-04"})), 2)
                .unwrap();
            assert_eq!(EventCrdt::fresh_state(&second), None);
        }
        // A first change that does not create the maps in one batch (written key by key on top
        // of nothing) is left to automerge as well, as are bytes that are no change at all.
        let keyed = overwritten_first_change();
        assert_eq!(
            EventCrdt::fresh_state(&keyed),
            None,
            "an overwrite has a pred"
        );
        let listed = list_first_change();
        assert_eq!(
            EventCrdt::fresh_state(&listed),
            None,
            "a list is not the shape"
        );
        assert_eq!(EventCrdt::fresh_state(b"not a change"), None);
    }

    /// `change` with its chunk checksum made right again (after its bytes were altered), so a
    /// corruption reaches the column parsing instead of failing the checksum.
    fn with_checksum_fixed(mut change: Vec<u8>) -> Vec<u8> {
        use sha2::Digest as _;
        if change.len() > 8 {
            let hash = sha2::Sha256::digest(&change[8..]);
            change[4..8].copy_from_slice(&hash[..4]);
        }
        change
    }

    fn fast_read(change: &[u8]) -> Option<Declaration> {
        first_change::read(change, ACTIONS, DECLARATION)
    }

    /// A node's first change of a notification-sized event.
    fn notification_change() -> Vec<u8> {
        let mut fields = json!({
            "child.name": {"firstname": "Liam", "surname": "Okafor"},
            "child.dob": "2024-06-03",
            "child.gender": "male",
            "child.placeOfBirth": "HEALTH_FACILITY",
            "child.birthLocation": "a9f1c3d2-1b2c-4d5e-8f90-123456789abc",
            "child.weightAtBirth": 3.1,
            "child.attendantAtBirth": "PHYSICIAN",
            "mother.previousBirths": 2,
            "informant.relation": "MOTHER",
            "informant.email": "mother@example.com",
        });
        for i in 0..20 {
            fields[format!("extra.field{i}")] = json!(format!("value {i}"));
        }
        let mut a = EventCrdt::new(actor(1));
        a.record(&[create_action()], &decl(fields), 1_780_000_000_000)
            .unwrap()
    }

    #[test]
    fn a_nodes_first_change_is_read_without_automerge_and_corrupt_or_other_ones_are_not() {
        let change = notification_change();
        let (declaration, conflicts) = applied_state(&change);
        assert!(conflicts.is_empty());
        assert_eq!(declaration.len(), 30);
        assert_eq!(fast_read(&change), Some(declaration));
        // A wrong checksum, a byte too many, a byte too few, another chunk type.
        let mut wrong_sum = change.clone();
        wrong_sum[4] ^= 1;
        assert_eq!(fast_read(&wrong_sum), None);
        assert_eq!(
            fast_read(&with_checksum_fixed([&change[..], &[0]].concat())),
            None
        );
        assert_eq!(
            fast_read(&with_checksum_fixed(change[..change.len() - 1].to_vec())),
            None
        );
        let mut compressed_type = change.clone();
        compressed_type[8] = 2;
        assert_eq!(fast_read(&with_checksum_fixed(compressed_type)), None);
        // A later change, an overwrite, a list: not the shape.
        let mut a = EventCrdt::new(actor(1));
        a.record(&[], &decl(json!({"child.dob": "2024-06-03"})), 1)
            .unwrap();
        let second = a
            .record(&[], &decl(json!({"child.dob": "2024-06-04"})), 2)
            .unwrap();
        assert_eq!(fast_read(&second), None);
        let keyed = overwritten_first_change();
        assert_eq!(fast_read(&keyed), None);
        let listed = list_first_change();
        assert_eq!(fast_read(&listed), None);
        assert_eq!(fast_read(b"not a change"), None);
        assert_eq!(fast_read(&[]), None);
    }

    proptest::proptest! {
        #[test]
        fn a_fresh_change_reads_as_applying_it(
            fields in proptest::collection::btree_map(
                "[a-z]{1,3}\\.[a-zé]{1,4}",
                proptest::prop_oneof![
                    proptest::strategy::Just(serde_json::Value::Null),
                    proptest::num::i64::ANY.prop_map(serde_json::Value::from),
                    proptest::num::f64::NORMAL.prop_map(serde_json::Value::from),
                    "[ -~]{0,40}".prop_map(serde_json::Value::from),
                    proptest::strategy::Just(json!({"firstname": "Liam", "middle": ["A", 1]})),
                ],
                0..40,
            ),
            with_action in proptest::bool::ANY,
            time in proptest::num::i64::ANY,
        ) {
            let delta: Declaration = fields.into_iter().collect();
            let actions = if with_action { vec![create_action()] } else { Vec::new() };
            let mut a = EventCrdt::new(actor(1));
            let change = a.record(&actions, &delta, time).unwrap();
            let (declaration, conflicts) = applied_state(&change);
            proptest::prop_assert!(conflicts.is_empty());
            // Both ways of reading a fresh change: without automerge, and its decoded form.
            proptest::prop_assert_eq!(
                EventCrdt::fresh_state_decoded(&change),
                Some(declaration.clone())
            );
            proptest::prop_assert_eq!(fast_read(&change), Some(declaration));
        }

        /// Whatever the fast read accepts, automerge applies to the same declaration: corrupt
        /// bytes of a real first change (checksum made right again) are refused or read alike.
        #[test]
        fn the_fast_read_accepts_nothing_automerge_reads_otherwise(
            edits in proptest::collection::vec(
                (proptest::num::usize::ANY, proptest::num::u8::ANY, 0..4u8),
                1..4,
            ),
        ) {
            let mut change = notification_change();
            for (at, byte, how) in edits {
                let at = 9 + at % (change.len() - 9);
                match how {
                    0 => change[at] = byte,
                    1 => change[at] ^= 1 << (byte % 8),
                    2 => change[at] = change[at].wrapping_add(1),
                    _ => change[at] = change[at].wrapping_sub(1),
                }
            }
            let change = with_checksum_fixed(change);
            if let Some(read) = fast_read(&change) {
                let mut doc = EventCrdt::new(actor(9));
                proptest::prop_assert!(doc.apply_complete_change(&change).is_ok());
                let (declaration, conflicts) = doc.state().unwrap();
                proptest::prop_assert!(conflicts.is_empty());
                proptest::prop_assert_eq!(read, declaration);
            }
        }
    }

    #[test]
    fn stored_bytes_load_back_whether_appended_or_saved_whole() {
        let mut a = EventCrdt::new(actor(1));
        let mut stored: Option<Vec<u8>> = None;
        for i in 0..200 {
            let change = a
                .record(
                    &[],
                    &decl(json!({format!("f{}", i % 7): "x".repeat(300), "n": i})),
                    i,
                )
                .unwrap();
            stored = Some(a.stored_after(stored.as_deref(), &change));
            let loaded = EventCrdt::load(stored.as_deref().unwrap(), actor(1)).unwrap();
            assert_eq!(loaded.heads(), a.heads(), "after write {i}");
            assert_eq!(loaded.declaration().unwrap(), a.declaration().unwrap());
            // A reloaded document keeps writing with the same actor: its sequence continues.
            a = loaded;
        }
        assert!(stored.unwrap().len() <= APPEND_MAX_BYTES + 4096);
    }

    #[test]
    fn concurrent_writes_pick_the_same_winner_everywhere_and_record_the_conflict() {
        let mut base = EventCrdt::new(actor(9));
        let c0 = base
            .record(&[], &decl(json!({"child.gender": "unknown"})), 1)
            .unwrap();
        let mut x = EventCrdt::new(actor(1));
        x.apply_change(&c0).unwrap();
        let mut y = EventCrdt::new(actor(2));
        y.apply_change(&c0).unwrap();
        let cx = x
            .record(&[], &decl(json!({"child.gender": "male"})), 2)
            .unwrap();
        let cy = y
            .record(&[], &decl(json!({"child.gender": "female"})), 2)
            .unwrap();
        x.apply_change(&cy).unwrap();
        y.apply_change(&cx).unwrap();
        x.apply_change(&cx).unwrap(); // duplicate delivery is harmless
        assert_eq!(x.declaration().unwrap(), y.declaration().unwrap());
        assert_eq!(
            x.state().unwrap(),
            (x.declaration().unwrap(), x.conflicts().unwrap()),
            "one walk gives what the two walks give"
        );
        assert_eq!(x.heads(), y.heads());
        let conflicts = x.conflicts().unwrap();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].field, "child.gender");
        assert_eq!(conflicts[0].values.len(), 2);
        assert_eq!(conflicts, y.conflicts().unwrap());
        // Save/load keeps everything.
        let z = EventCrdt::load(&x.save(), actor(3)).unwrap();
        assert_eq!(z.conflicts().unwrap(), conflicts);
    }
}
