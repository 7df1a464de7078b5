//! Duplicate detection before a registration number is issued (OpenCRVS §5.3): each event
//! type's rules (its REGISTER action's `deduplication`, else its DECLARE action's), the date
//! index the rules' windows query (`dedup_dates`, written with the event index in the same
//! transaction), and the verdict `confirm_registrations` acts on. The matching itself is pure
//! (`crvs_common::dedup`).

use std::collections::{BTreeMap, BTreeSet};

use crvs_common::config::EventConfigSet;
use crvs_common::dedup::{
    Clause, DeduplicationConfig, Prefilter, field_date, find_duplicates, for_action, prefilter,
};
use crvs_common::event::{ActionStatus, ActionType, EventDocument};
use crvs_common::fuzzy;
use crvs_common::regnum::RegistrationFormat;
use crvs_common::state::EventIndex;
use rusqlite::{Connection, OptionalExtension as _, params};

use super::StoreError;
use super::write::WriteTx;

/// Most existing records one registration's rules are evaluated against (from the index: the
/// first filed; from the date windows: the oldest); more candidates than this are logged and
/// the rest not compared.
pub const DEDUP_CANDIDATES_MAX: usize = 5_000;

/// How central registers: the number format and each event type's duplicate rules.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// Registration number format.
    pub format: RegistrationFormat,
    /// Event type → the rules run before registering (fixed at construction: the date fields
    /// derived from them are kept).
    dedup: BTreeMap<String, DeduplicationConfig>,
    /// Confirmation hooks, first match wins.
    pub hooks: Vec<super::hooks::ActionHook>,
    /// [`Self::date_fields`] per event type, computed on first use (the rules do not change
    /// once the store holds them).
    date_fields: std::sync::OnceLock<BTreeMap<String, Vec<String>>>,
}

impl Registration {
    /// The format, and for each configured event type the rules of its REGISTER action, else
    /// of its DECLARE action (Farajaland attaches its birth rules to DECLARE; central runs them
    /// when the registration is asked, since a node accepts a declaration offline).
    pub fn new(format: RegistrationFormat, events: &EventConfigSet) -> Self {
        let dedup = events
            .events()
            .iter()
            .filter_map(|config| {
                let rules =
                    for_action(config, "REGISTER").or_else(|| for_action(config, "DECLARE"))?;
                Some((config.id().to_owned(), rules.clone()))
            })
            .collect();
        Self {
            format,
            dedup,
            hooks: Vec::new(),
            date_fields: std::sync::OnceLock::new(),
        }
    }

    /// With these confirmation hooks.
    pub fn with_hooks(mut self, hooks: Vec<super::hooks::ActionHook>) -> Self {
        self.hooks = hooks;
        self
    }

    /// The date fields of `event_type` the rules' windows look up, sorted (kept after the
    /// first call).
    fn date_fields_of(&self, event_type: &str) -> &[String] {
        self.date_fields
            .get_or_init(|| {
                self.dedup
                    .keys()
                    .map(|t| (t.clone(), self.date_fields(t)))
                    .collect()
            })
            .get(event_type)
            .map_or(&[], Vec::as_slice)
    }

    /// The date fields of `event_type` the rules' windows look up, sorted.
    fn date_fields(&self, event_type: &str) -> Vec<String> {
        let Some(Prefilter::Windows(windows)) = self.dedup.get(event_type).map(prefilter) else {
            return Vec::new();
        };
        let mut fields: Vec<String> = windows.into_iter().map(|w| w.existing_field).collect();
        fields.sort();
        fields.dedup();
        fields
    }

    /// What the date index holds, as a string: a change of rules rebuilds it.
    fn signature(&self) -> String {
        self.dedup
            .keys()
            .map(|t| format!("{t}:{}", self.date_fields(t).join(",")))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Whether a requested registration may get a number, as far as duplicates go.
#[derive(Debug)]
pub(super) enum Verdict {
    /// No rules, no match, or a registrar marked the record not a duplicate.
    Clear,
    /// Potential duplicates of these records (id, tracking id): DUPLICATE_DETECTED, no number.
    Duplicates(Vec<(uuid::Uuid, String)>),
    /// Flagged and not yet reviewed, or marked a duplicate by a registrar: no number.
    Refused(&'static str),
}

/// Rebuilds the date index when the rules' fields changed since it was built (or it was never
/// built), from every record's derived index.
pub(super) fn ensure_date_index(
    conn: &mut Connection,
    registration: &Registration,
) -> Result<(), StoreError> {
    let signature = registration.signature();
    let built: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'dedup_dates'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if built.as_deref() == Some(signature.as_str()) {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute("DELETE FROM dedup_dates", [])?;
    {
        let mut rows = tx.prepare("SELECT id, index_json FROM events")?;
        let mut insert = tx.prepare(
            "INSERT OR REPLACE INTO dedup_dates (event_id, event_type, field_id, date)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut cursor = rows.query([])?;
        while let Some(row) = cursor.next()? {
            let id: String = row.get(0)?;
            let index: EventIndex = serde_json::from_str(&row.get::<_, String>(1)?)
                .map_err(|e| StoreError::Corrupt(format!("index does not decode: {e}")))?;
            for field in registration.date_fields(&index.event_type) {
                if let Some(date) = field_date(&index.declaration, &field) {
                    insert.execute(params![id, index.event_type, field, date])?;
                }
            }
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('dedup_dates', ?1)",
        params![signature],
    )?;
    tx.commit()?;
    Ok(())
}

impl WriteTx<'_> {
    /// Writes `index`'s dates for its type's rules into the date index (with the event index).
    pub(super) fn index_dedup_dates(
        &mut self,
        event_id: uuid::Uuid,
        index: &EventIndex,
    ) -> Result<(), StoreError> {
        let key = event_id.to_string();
        self.conn()
            .prepare_cached("DELETE FROM dedup_dates WHERE event_id = ?1")?
            .execute(params![key])?;
        for field in self.registration().date_fields_of(&index.event_type) {
            if let Some(date) = field_date(&index.declaration, field) {
                self.conn()
                    .prepare_cached(
                        "INSERT INTO dedup_dates (event_id, event_type, field_id, date)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![key, index.event_type, field, date])?;
            }
        }
        Ok(())
    }

    /// The duplicate verdict on `doc` before it is registered: a registrar's review stands
    /// (the latest of DUPLICATE_DETECTED, MARK_AS_DUPLICATE, MARK_AS_NOT_DUPLICATE); without
    /// one, the event type's rules run over the records its windows admit.
    pub(super) fn duplicate_verdict(&self, doc: &EventDocument) -> Result<Verdict, StoreError> {
        let review = doc
            .actions
            .iter()
            .filter(|a| a.status == ActionStatus::Accepted)
            .filter_map(|a| match a.action_type {
                t @ (ActionType::DuplicateDetected
                | ActionType::MarkAsDuplicate
                | ActionType::MarkAsNotDuplicate) => Some(t),
                _ => None,
            })
            .next_back();
        match review {
            Some(ActionType::MarkAsNotDuplicate) => return Ok(Verdict::Clear),
            Some(ActionType::MarkAsDuplicate) => {
                return Ok(Verdict::Refused("marked as a duplicate by a registrar"));
            }
            Some(_) => return Ok(Verdict::Refused("potential duplicate not yet reviewed")),
            None => {}
        }
        let Some(rules) = self.registration().dedup.get(&doc.event_type) else {
            return Ok(Verdict::Clear);
        };
        let Some(candidate) = self.reader().index_entry(doc.id)? else {
            return Ok(Verdict::Clear);
        };
        let ids = self.candidate_ids(doc, rules, &candidate)?;
        let mut existing = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(index) = self.reader().index_entry(id)? {
                existing.push(index);
            }
        }
        existing.retain(|e| e.status.as_str() != "CREATED" && e.event_type == doc.event_type);
        existing.sort_by(|a, b| (&a.created_at, a.id).cmp(&(&b.created_at, b.id)));
        if existing.len() > DEDUP_CANDIDATES_MAX {
            tracing::warn!(
                event = %doc.id,
                candidates = existing.len(),
                "more duplicate candidates than compared; the oldest are"
            );
            existing.truncate(DEDUP_CANDIDATES_MAX);
        }
        let found = find_duplicates(
            rules,
            &candidate.declaration,
            existing
                .iter()
                .map(|e| ((e.id, e.tracking_id.clone()), &e.declaration)),
        );
        Ok(if found.is_empty() {
            Verdict::Clear
        } else {
            Verdict::Duplicates(found)
        })
    }

    /// The records of `doc`'s type that can match `rules`: when every branch of the rules
    /// needs a fuzzy match on some fields (Farajaland's all need the mother's name), the
    /// records sharing a similar token with each of the candidate's given names and surnames
    /// there (through the national search index's vocabulary); otherwise those the rules'
    /// date windows admit (all of them without windows). `doc` itself is left out.
    fn candidate_ids(
        &self,
        doc: &EventDocument,
        rules: &DeduplicationConfig,
        candidate: &EventIndex,
    ) -> Result<Vec<uuid::Uuid>, StoreError> {
        let fields = required_fuzzy(&rules.query);
        if !fields.is_empty() {
            // Candidates come from the search index: file what is behind first, in this
            // transaction, so no record is missed.
            super::search::file_pending(self.conn(), usize::MAX, &|| false)?;
            let reader = self.reader();
            let mut found: Option<BTreeSet<i64>> = None;
            for field in &fields {
                let Some(value) = candidate.declaration.get(field) else {
                    // A fuzzy clause never matches a missing value.
                    return Ok(Vec::new());
                };
                for group in token_groups(value) {
                    let mut docs = BTreeSet::new();
                    for token in &group {
                        docs.extend(reader.fuzzy_docs(field, token)?);
                    }
                    let narrowed = match found {
                        None => docs,
                        Some(so_far) => &so_far & &docs,
                    };
                    if narrowed.is_empty() {
                        return Ok(Vec::new());
                    }
                    found = Some(narrowed);
                }
            }
            if let Some(docs) = found {
                if docs.len() > DEDUP_CANDIDATES_MAX {
                    tracing::warn!(
                        event = %doc.id,
                        candidates = docs.len(),
                        "more duplicate candidates than compared; the first are"
                    );
                }
                let mut ids = Vec::with_capacity(docs.len().min(DEDUP_CANDIDATES_MAX));
                for doc_key in docs.into_iter().take(DEDUP_CANDIDATES_MAX + 1) {
                    if let Some(id) = reader.doc_event(doc_key)?
                        && id != doc.id
                    {
                        ids.push(id);
                    }
                }
                return Ok(ids);
            }
        }
        let me = doc.id.to_string();
        let limit = i64::try_from(DEDUP_CANDIDATES_MAX + 1).unwrap_or(i64::MAX);
        let mut ids: Vec<String> = Vec::new();
        match prefilter(rules) {
            Prefilter::AllRecords => {
                ids = self
                    .conn()
                    .prepare_cached(
                        "SELECT id FROM events WHERE event_type = ?1 AND id != ?2
                         ORDER BY created_at, id LIMIT ?3",
                    )?
                    .query_map(params![doc.event_type, me, limit], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
            }
            Prefilter::Windows(windows) => {
                for window in windows {
                    let Some((low, high)) = window.bounds(&candidate.declaration) else {
                        continue;
                    };
                    let found: Vec<String> = self
                        .conn()
                        .prepare_cached(
                            "SELECT event_id FROM dedup_dates
                             WHERE event_type = ?1 AND field_id = ?2 AND date BETWEEN ?3 AND ?4
                               AND event_id != ?5
                             LIMIT ?6",
                        )?
                        .query_map(
                            params![doc.event_type, window.existing_field, low, high, me, limit],
                            |r| r.get(0),
                        )?
                        .collect::<Result<_, _>>()?;
                    ids.extend(found);
                }
                ids.sort();
                ids.dedup();
            }
        }
        ids.iter().map(|id| super::read::parse_uuid(id)).collect()
    }
}

/// The fields every way of satisfying `clause` fuzzy-matches (on the same field of both
/// records): an `and` needs its operands' fields, an `or` only those all its branches need.
fn required_fuzzy(clause: &Clause) -> BTreeSet<String> {
    match clause {
        Clause::And { clauses } => clauses.iter().flat_map(required_fuzzy).collect(),
        Clause::Or { clauses } => {
            let mut branches = clauses.iter().map(required_fuzzy);
            let first = branches.next().unwrap_or_default();
            branches.fold(first, |acc, b| &acc & &b)
        }
        Clause::Fuzzy(m) if m.options.as_ref().is_none_or(|o| o.match_against.is_none()) => {
            BTreeSet::from([m.field_id.clone()])
        }
        _ => BTreeSet::new(),
    }
}

/// The token groups of a value a fuzzy match needs one similar token from each of: a name's
/// given names and its surname; any other text as one group. Empty groups are left out.
fn token_groups(value: &serde_json::Value) -> Vec<Vec<String>> {
    let groups = match value {
        serde_json::Value::Object(name) => {
            let part = |keys: &[&str]| {
                let text: Vec<&str> = keys
                    .iter()
                    .filter_map(|k| name.get(*k).and_then(serde_json::Value::as_str))
                    .collect();
                fuzzy::tokens(&text.join(" "))
            };
            vec![part(&["firstname", "middlename"]), part(&["surname"])]
        }
        other => vec![fuzzy::value_tokens(other)],
    };
    groups.into_iter().filter(|g| !g.is_empty()).collect()
}
