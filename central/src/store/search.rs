//! The national search index (schema v7) and the searches over it. Each indexed event (every
//! status but CREATED) has a `search_docs` row; `search_keys` files it under the keys of
//! `crvs_common::search::index_keys` (tokens, locations with their areas, dates, registration
//! number); `search_vocabulary` maps each distinct token's deletion variants and phonetic keys
//! to it (`crvs_common::fuzzy`).
//!
//! Filing is behind the writes (schema v11): the transaction that re-derives an event's index
//! (`WriteTx::refresh_index`) only marks it in `search_pending`, with the index entry its keys
//! were filed under; [`file_pending`] files marked events by the difference between those keys
//! and the current entry's, in chunks, off the sync path (`Store::start_indexer`), so a node's
//! backlog is acknowledged at the speed of applying it, not of indexing it. Nothing is lost to
//! a search meanwhile: every search also evaluates the marked events, and duplicate checks file
//! them first. The whole index is rebuilt by the migration and whenever the location hierarchy
//! changes (a location's areas are part of its keys).
//!
//! A search resolves `Query::plan` to candidate documents (exact lookups, fuzzy tokens through
//! the vocabulary, key ranges), adds the events not filed yet, then runs the shared evaluator on
//! each candidate, so it answers exactly what the scan answers; a query with nothing indexable
//! is a scan, with the page kept bounded ([`crvs_common::search::Page`]).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use crvs_common::fuzzy;
use crvs_common::search::{self, Lookup, Plan, SearchEnv, SearchRequest};
use crvs_common::state::{EventIndex, EventStatus};
use rusqlite::{Connection, OptionalExtension as _, params};
use uuid::Uuid;

use super::StoreError;
use super::read::{ReadCtx, parse_uuid};

/// Once an `and`'s candidates are this few, its remaining (less selective) clauses are left to
/// the evaluator instead of being looked up: the answer is the same, the broad location and
/// date lookups are skipped.
const CANDIDATES_ENOUGH: usize = 512;

/// Deepest administrative hierarchy followed from a location (cycles cannot loop forever).
const HIERARCHY_DEPTH_MAX: i64 = 32;

/// Version 7 of the schema: the search index tables.
pub(super) const DDL: &str = r#"
CREATE TABLE search_docs (
    doc      INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE
);
CREATE TABLE search_keys (
    key TEXT NOT NULL,
    doc INTEGER NOT NULL,
    PRIMARY KEY (key, doc)
) WITHOUT ROWID;
CREATE TABLE search_vocabulary (
    key   TEXT NOT NULL,
    token TEXT NOT NULL,
    PRIMARY KEY (key, token)
) WITHOUT ROWID;
CREATE TABLE search_tokens (
    token TEXT PRIMARY KEY
) WITHOUT ROWID;
"#;

/// Version 11: events whose index changed and is not filed yet, with the entry (JSON, `{}` for
/// none) their current keys were filed from (the first mark wins: it names what is filed); and
/// applied node entries whose relay central has not appended to its log yet, in the order they
/// were applied (`WriteTx::append_pending_relays`).
pub(super) const PENDING_DDL: &str = r#"
CREATE TABLE search_pending (
    event_id TEXT PRIMARY KEY,
    filed    TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE relay_pending (
    id       INTEGER PRIMARY KEY,
    node_id  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    area     TEXT
);
"#;

/// Most events [`file_pending`] files in one call from the indexer (one transaction).
pub(super) const FILE_CHUNK_MAX: usize = 256;

/// The administrative areas holding a location or area, nearest first, each looked up once.
pub struct Ancestry<'c> {
    conn: &'c Connection,
    memo: RefCell<HashMap<Uuid, Vec<Uuid>>>,
}

impl std::fmt::Debug for Ancestry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ancestry").finish_non_exhaustive()
    }
}

impl<'c> Ancestry<'c> {
    /// An empty memo over `conn`.
    pub fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            memo: RefCell::new(HashMap::new()),
        }
    }

    fn lookup(&self, id: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "WITH RECURSIVE chain(id, depth) AS (
                 SELECT administrative_area_id, 0 FROM locations WHERE id = ?1
                 UNION ALL
                 SELECT parent_id, 0 FROM admin_areas WHERE id = ?1
                 UNION ALL
                 SELECT a.parent_id, c.depth + 1 FROM admin_areas a JOIN chain c ON a.id = c.id
                 WHERE c.depth < ?2)
             SELECT id FROM chain WHERE id IS NOT NULL ORDER BY depth",
        )?;
        let ids = stmt
            .query_map(params![id.to_string(), HIERARCHY_DEPTH_MAX], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        ids.iter().map(|s| parse_uuid(s)).collect()
    }

    /// The areas holding `id`, nearest first (empty for an unknown id or a failed read).
    pub fn of(&self, id: Uuid) -> Vec<Uuid> {
        if let Some(chain) = self.memo.borrow().get(&id) {
            return chain.clone();
        }
        let chain = self.lookup(id).unwrap_or_else(|e| {
            tracing::warn!(%id, error = %e, "location hierarchy lookup failed");
            Vec::new()
        });
        self.memo.borrow_mut().insert(id, chain.clone());
        chain
    }
}

fn keys_of(entry: Option<&EventIndex>, ancestry: &Ancestry<'_>) -> BTreeSet<String> {
    match entry {
        Some(e) if e.status != EventStatus::Created => search::index_keys(e, &|id| ancestry.of(id)),
        _ => BTreeSet::new(),
    }
}

/// Key changes of several events, written together in key order ([`Filing::write`]): sorted
/// inserts touch each B-tree page once per batch instead of once per key.
#[derive(Default)]
struct Filing {
    removes: Vec<(String, i64)>,
    adds: Vec<(String, i64)>,
    tokens: BTreeSet<String>,
}

impl Filing {
    /// Adds `event_id`'s move from the keys of `old` to those of `new` (an entry with status
    /// CREATED, or none, has no keys).
    fn add(
        &mut self,
        conn: &Connection,
        event_id: Uuid,
        old: Option<&EventIndex>,
        new: Option<&EventIndex>,
        ancestry: &Ancestry<'_>,
    ) -> Result<(), StoreError> {
        let before = keys_of(old, ancestry);
        let after = keys_of(new, ancestry);
        if before == after {
            return Ok(());
        }
        let id = event_id.to_string();
        conn.prepare_cached("INSERT OR IGNORE INTO search_docs (event_id) VALUES (?1)")?
            .execute(params![id])?;
        let doc: i64 = conn
            .prepare_cached("SELECT doc FROM search_docs WHERE event_id = ?1")?
            .query_row(params![id], |r| r.get(0))?;
        self.removes
            .extend(before.difference(&after).map(|k| (k.clone(), doc)));
        self.adds
            .extend(after.difference(&before).map(|k| (k.clone(), doc)));
        self.tokens.extend(search::indexed_tokens(&after));
        Ok(())
    }

    /// Writes the collected changes, each table in key order.
    fn write(mut self, conn: &Connection) -> Result<(), StoreError> {
        self.removes.sort_unstable();
        self.adds.sort_unstable();
        let mut delete =
            conn.prepare_cached("DELETE FROM search_keys WHERE key = ?1 AND doc = ?2")?;
        for (key, doc) in &self.removes {
            delete.execute(params![key, doc])?;
        }
        let mut insert =
            conn.prepare_cached("INSERT OR IGNORE INTO search_keys (key, doc) VALUES (?1, ?2)")?;
        for (key, doc) in &self.adds {
            insert.execute(params![key, doc])?;
        }
        let mut known =
            conn.prepare_cached("INSERT OR IGNORE INTO search_tokens (token) VALUES (?1)")?;
        let mut vocabulary = Vec::new();
        for token in &self.tokens {
            // A token's vocabulary keys are written once, when it is first seen.
            if known.execute(params![token])? == 1 {
                vocabulary.extend(
                    fuzzy::vocabulary_keys(token)
                        .into_iter()
                        .map(|key| (key, token.as_str())),
                );
            }
        }
        vocabulary.sort_unstable();
        let mut insert = conn.prepare_cached(
            "INSERT OR IGNORE INTO search_vocabulary (key, token) VALUES (?1, ?2)",
        )?;
        for (key, token) in vocabulary {
            insert.execute(params![key, token])?;
        }
        Ok(())
    }
}

/// Files `event_id` under the keys of `new` in place of those of `old` (an entry with status
/// CREATED, or none, has no keys). Runs in the caller's transaction.
pub(super) fn file(
    conn: &Connection,
    event_id: Uuid,
    old: Option<&EventIndex>,
    new: Option<&EventIndex>,
    ancestry: &Ancestry<'_>,
) -> Result<(), StoreError> {
    let mut filing = Filing::default();
    filing.add(conn, event_id, old, new, ancestry)?;
    filing.write(conn)
}

/// Marks `event_id` for filing: its keys are still those of `filed` (the entry as stored before
/// this change; the earliest unfiled mark is kept). Runs in the caller's transaction.
pub(super) fn mark_pending(
    conn: &Connection,
    event_id: Uuid,
    filed: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT OR IGNORE INTO search_pending (event_id, filed) VALUES (?1, ?2)")?
        .execute(params![event_id.to_string(), filed])?;
    Ok(())
}

/// Files up to `max` marked events under their current entries, oldest mark first, stopping
/// early (after at least one) when `yield_now` says another writer waits. Returns how many
/// were filed. Runs in the caller's transaction.
pub(super) fn file_pending(
    conn: &Connection,
    max: usize,
    yield_now: &dyn Fn() -> bool,
) -> Result<usize, StoreError> {
    let marked: Vec<(String, String)> = conn
        .prepare_cached("SELECT event_id, filed FROM search_pending LIMIT ?1")?
        .query_map(params![i64::try_from(max).unwrap_or(i64::MAX)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let ancestry = Ancestry::new(conn);
    let decode = |id: &str, json: &str| -> Result<Option<EventIndex>, StoreError> {
        if json == "{}" {
            return Ok(None);
        }
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("index of {id} does not decode: {e}")))
    };
    let mut filed = 0;
    let mut filing = Filing::default();
    let mut delete = conn.prepare_cached("DELETE FROM search_pending WHERE event_id = ?1")?;
    for (id, old_json) in marked {
        let current: Option<String> = conn
            .prepare_cached("SELECT index_json FROM events WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        let old = decode(&id, &old_json)?;
        let new = match current.as_deref() {
            Some(json) => decode(&id, json)?,
            None => None,
        };
        filing.add(
            conn,
            parse_uuid(&id)?,
            old.as_ref(),
            new.as_ref(),
            &ancestry,
        )?;
        delete.execute(params![id])?;
        filed += 1;
        if yield_now() {
            break;
        }
    }
    filing.write(conn)?;
    Ok(filed)
}

/// Refiles every event from its stored index entry (migration, location hierarchy change).
pub(super) fn rebuild(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("DELETE FROM search_keys; DELETE FROM search_docs;")?;
    // Everything is filed from its current entry below, marked or not (the table is missing
    // while migrating from before v11).
    let has_pending: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'search_pending'",
        [],
        |r| r.get(0),
    )?;
    if has_pending {
        conn.execute_batch("DELETE FROM search_pending")?;
    }
    let ancestry = Ancestry::new(conn);
    let mut stmt = conn.prepare("SELECT id, index_json FROM events WHERE status != 'CREATED'")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (id, json): (String, String) = (row.get(0)?, row.get(1)?);
        let entry: EventIndex = serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("index of {id} does not decode: {e}")))?;
        file(conn, parse_uuid(&id)?, None, Some(&entry), &ancestry)?;
    }
    Ok(())
}

/// Which entries a search may show: called with each match and the location hierarchy (for
/// jurisdiction), after the query matched.
pub type Visible<'v> = dyn FnMut(&EventIndex, &Ancestry<'_>) -> bool + 'v;

impl ReadCtx<'_> {
    /// Whether the indexer has work: an applied entry to relay (`WriteTx::append_pending_relays`)
    /// or an event to file ([`file_pending`]). The counts are in `stats`.
    pub fn indexer_work_pending(&self) -> Result<bool, StoreError> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM relay_pending) OR EXISTS (SELECT 1 FROM search_pending)",
            [],
            |r| r.get(0),
        )?)
    }

    fn docs(&self, sql: &str, values: impl rusqlite::Params) -> Result<BTreeSet<i64>, StoreError> {
        let mut stmt = self.conn().prepare_cached(sql)?;
        let rows = stmt.query_map(values, |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn key_docs(&self, key: &str) -> Result<BTreeSet<i64>, StoreError> {
        self.docs("SELECT doc FROM search_keys WHERE key = ?1", params![key])
    }

    /// The documents whose `field` has a token matching `term` (fuzzy).
    pub(super) fn fuzzy_docs(&self, field: &str, term: &str) -> Result<BTreeSet<i64>, StoreError> {
        let mut tokens = BTreeSet::new();
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT token FROM search_vocabulary WHERE key = ?1")?;
        for key in fuzzy::term_keys(term) {
            for token in stmt.query_map(params![key], |r| r.get::<_, String>(0))? {
                let token = token?;
                if fuzzy::token_matches(term, &token) {
                    tokens.insert(token);
                }
            }
        }
        let mut docs = BTreeSet::new();
        for token in tokens {
            docs.extend(self.key_docs(&search::token_key(field, &token))?);
        }
        Ok(docs)
    }

    /// The event a search document stands for.
    pub(super) fn doc_event(&self, doc: i64) -> Result<Option<Uuid>, StoreError> {
        let id: Option<String> = self
            .conn()
            .prepare_cached("SELECT event_id FROM search_docs WHERE doc = ?1")?
            .query_row(params![doc], |r| r.get(0))
            .optional()?;
        id.map(|id| parse_uuid(&id)).transpose()
    }

    fn lookup_docs(&self, lookup: &Lookup) -> Result<BTreeSet<i64>, StoreError> {
        match lookup {
            Lookup::Ids(ids) => {
                let mut docs = BTreeSet::new();
                for id in ids {
                    docs.extend(self.docs(
                        "SELECT doc FROM search_docs WHERE event_id = ?1",
                        params![id],
                    )?);
                }
                Ok(docs)
            }
            Lookup::TrackingId(t) => self.docs(
                "SELECT d.doc FROM events e JOIN search_docs d ON d.event_id = e.id
                 WHERE e.tracking_id = ?1",
                params![t],
            ),
            Lookup::Keys(keys) => {
                let mut docs = BTreeSet::new();
                for key in keys {
                    docs.extend(self.key_docs(key)?);
                }
                Ok(docs)
            }
            Lookup::Range { from, to } => self.docs(
                "SELECT doc FROM search_keys WHERE key BETWEEN ?1 AND ?2",
                params![from, to],
            ),
            Lookup::Fuzzy { field, tokens } => {
                let mut result: Option<BTreeSet<i64>> = None;
                for term in tokens {
                    let docs = self.fuzzy_docs(field, term)?;
                    let narrowed = match result {
                        None => docs,
                        Some(so_far) => &so_far & &docs,
                    };
                    if narrowed.is_empty() {
                        return Ok(narrowed);
                    }
                    result = Some(narrowed);
                }
                Ok(result.unwrap_or_default())
            }
        }
    }

    /// The candidate documents of a plan; `None` for a scan.
    fn plan_docs(&self, plan: &Plan) -> Result<Option<BTreeSet<i64>>, StoreError> {
        Ok(match plan {
            Plan::Scan => None,
            Plan::Lookup(l) => Some(self.lookup_docs(l)?),
            Plan::And(ps) => {
                let mut result: Option<BTreeSet<i64>> = None;
                for p in ps {
                    // Few candidates left: the evaluator checks the remaining clauses faster
                    // than their (broad) lookups would narrow them.
                    if result
                        .as_ref()
                        .is_some_and(|r| r.len() <= CANDIDATES_ENOUGH)
                    {
                        break;
                    }
                    let Some(docs) = self.plan_docs(p)? else {
                        continue;
                    };
                    let narrowed = match result {
                        None => docs,
                        Some(so_far) => &so_far & &docs,
                    };
                    if narrowed.is_empty() {
                        return Ok(Some(narrowed));
                    }
                    result = Some(narrowed);
                }
                result
            }
            Plan::Or(ps) => {
                let mut all = BTreeSet::new();
                for p in ps {
                    match self.plan_docs(p)? {
                        Some(docs) => all.extend(docs),
                        None => return Ok(None),
                    }
                }
                Some(all)
            }
        })
    }

    /// Runs a search with the index: the page and the number of matches.
    pub fn search(
        &self,
        request: &SearchRequest,
        now_ms: u64,
        visible: &mut Visible<'_>,
    ) -> Result<(Vec<EventIndex>, u64), StoreError> {
        self.search_with(request, &request.query.plan(now_ms), now_ms, visible)
    }

    /// [`Self::search`] following `plan` ([`Plan::Scan`] evaluates every indexed entry: the
    /// baseline the benchmark compares with).
    pub fn search_with(
        &self,
        request: &SearchRequest,
        plan: &Plan,
        now_ms: u64,
        visible: &mut Visible<'_>,
    ) -> Result<(Vec<EventIndex>, u64), StoreError> {
        let ancestry = Ancestry::new(self.conn());
        let ancestors = |id: Uuid| ancestry.of(id);
        let env = SearchEnv {
            now_ms,
            ancestors: &ancestors,
        };
        let mut page = request.page();
        let mut consider = |json: &str| -> Result<(), StoreError> {
            let entry: EventIndex = serde_json::from_str(json)
                .map_err(|e| StoreError::Corrupt(format!("index does not decode: {e}")))?;
            if request.query.matches(&entry, &env) && visible(&entry, &ancestry) {
                page.push(entry);
            }
            Ok(())
        };
        match self.plan_docs(plan)? {
            Some(docs) => {
                let mut seen = BTreeSet::new();
                let mut stmt = self.conn().prepare_cached(
                    "SELECT e.id, e.index_json FROM search_docs d JOIN events e ON e.id = d.event_id
                     WHERE d.doc = ?1",
                )?;
                for doc in docs {
                    let row: Option<(String, String)> = stmt
                        .query_row(params![doc], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    if let Some((id, json)) = row {
                        consider(&json)?;
                        seen.insert(id);
                    }
                }
                // Events not filed yet under their current entry: the index may not list them.
                let mut pending = self.conn().prepare_cached(
                    "SELECT e.id, e.index_json FROM search_pending p JOIN events e ON e.id = p.event_id
                     WHERE e.status != 'CREATED'",
                )?;
                let mut rows = pending.query([])?;
                while let Some(row) = rows.next()? {
                    let id: String = row.get(0)?;
                    if !seen.contains(&id) {
                        consider(row.get_ref(1)?.as_str().map_err(|e| {
                            StoreError::Corrupt(format!("index is not text: {e}"))
                        })?)?;
                    }
                }
            }
            None => {
                let mut stmt = self
                    .conn()
                    .prepare_cached("SELECT index_json FROM events WHERE status != 'CREATED'")?;
                let mut rows = stmt.query([])?;
                while let Some(row) = rows.next()? {
                    consider(
                        row.get_ref(0)?
                            .as_str()
                            .map_err(|e| StoreError::Corrupt(format!("index is not text: {e}")))?,
                    )?;
                }
            }
        }
        Ok(page.finish())
    }
}
