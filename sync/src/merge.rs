//! Per-event automerge documents: how concurrent writes from different places merge.
//!
//! Each event is one automerge document: `actions` maps action id → the action's JSON, and `decl`
//! maps field id → the field's JSON value. A write records its actions and its declaration
//! delta as one automerge change, which travels in the log entry (`crdt_change`). Applying the
//! same changes in any order gives the same document, so every replica shows the same winner for
//! a field written concurrently at two places, and both values stay visible as a conflict.

use automerge::transaction::{CommitOptions, Transactable as _};

use automerge::{ActorId, Automerge, Change, ObjType, ROOT, ReadDoc as _, ScalarValue, Value};
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
    /// A stored value is not the JSON we write.
    #[error("bad value at {0}")]
    BadValue(String),
}

/// One event's merge document.
#[derive(Debug, Clone)]
pub struct EventCrdt {
    doc: Automerge,
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

    /// Records `actions` and the declaration `delta` (`null` clears a field) as one change with
    /// the given timestamp, and returns that change's bytes (for the log entry).
    pub fn record(
        &mut self,
        actions: &[ActionDocument],
        delta: &Declaration,
        time_ms: i64,
    ) -> Result<Vec<u8>, MergeError> {
        let encoded: Vec<(String, String)> = actions
            .iter()
            .map(|a| serde_json::to_string(a).map(|json| (a.id.to_string(), json)))
            .collect::<Result<_, _>>()
            .map_err(|e| MergeError::BadValue(e.to_string()))?;
        self.doc
            .transact_with(
                |_| CommitOptions::default().with_time(time_ms),
                |tx| -> Result<(), automerge::AutomergeError> {
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

    /// Applies a change recorded elsewhere. Idempotent; a change whose dependencies are missing
    /// waits inside the document until they arrive.
    pub fn apply_change(&mut self, bytes: &[u8]) -> Result<(), MergeError> {
        let change =
            Change::from_bytes(bytes.to_vec()).map_err(|e| MergeError::BadChange(e.to_string()))?;
        self.doc.apply_changes([change])?;
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
