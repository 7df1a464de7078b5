//! Write transactions: central's own log (the feed), applying nodes' verified entries, pool
//! leases, enrollment, clients and locations. Every method runs inside the caller's
//! `BEGIN IMMEDIATE` transaction ([`super::Store::write`]).

use std::collections::{BTreeMap, BTreeSet};

use super::dedup::Registration;
use crvs_common::event::{ActionDocument, ActionStatus, ActionType, EntryPayload};
use crvs_common::feed::CentralRecord;
use crvs_common::hlc::{Hlc, HlcClock};
use crvs_common::ids::TrackingId;
use crvs_common::location::{AdministrativeArea, LocationSet};
use crvs_common::log::{EntryHash, LogEntry, LogHead, NodeId, NodeSecretKey};
use crvs_common::state::EventIndex;
use crvs_sync::merge::{EventCrdt, actor_for};
use crvs_sync::wire::{Hello, Reject};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::prepare::{FreshEvent, Prepared};
use super::read::ReadCtx;
use super::{
    Audience, ClientRow, NewNode, PoolSettings, REJECTS_KEPT_PER_NODE, StoreError,
    TRACKING_ID_ATTEMPTS_PER_ID, UserRow, hash_of,
};

/// What a write job can do. Lives for one transaction.
#[allow(
    missing_debug_implementations,
    reason = "holds a connection and key material"
)]
pub struct WriteTx<'a> {
    conn: &'a Connection,
    key: &'a NodeSecretKey,
    pool: PoolSettings,
    registration: &'a Registration,
    now_ms: u64,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn content_reject(seq: u64, reason: &str, detail: impl Into<String>) -> Reject {
    Reject {
        seq,
        reason: reason.to_owned(),
        detail: detail.into(),
    }
}

impl<'a> WriteTx<'a> {
    pub(super) fn new(
        conn: &'a Connection,
        key: &'a NodeSecretKey,
        pool: PoolSettings,
        registration: &'a Registration,
        now_ms: u64,
    ) -> Self {
        Self {
            conn,
            key,
            pool,
            registration,
            now_ms,
        }
    }

    /// The registration number format and duplicate rules.
    pub(super) fn registration(&self) -> &Registration {
        self.registration
    }

    /// The central's own identity.
    pub(super) fn central_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// Signs `record` (central's own actions on an event, with their automerge `change`) as
    /// the next entry of central's log.
    pub(super) fn append_actions_record(
        &mut self,
        record: &CentralRecord,
        event_id: uuid::Uuid,
        audience: Audience,
        change: Vec<u8>,
    ) -> Result<LogHead, StoreError> {
        self.append_signed(record, event_id, audience, None, None, Some(change))
    }

    /// Wall-clock time of this transaction, ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The transaction's connection, for the account tables shared with the node
    /// ([`crvs_common::server::accounts`]).
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    /// Replaces a user's security answers (`(question key, argon2id hash)`); an empty list
    /// clears them.
    pub fn set_security_answers(
        &mut self,
        user_id: uuid::Uuid,
        answers: &[(String, String)],
    ) -> Result<(), StoreError> {
        let id = user_id.to_string();
        self.conn
            .prepare_cached("DELETE FROM security_answers WHERE user_id = ?1")?
            .execute(params![id])?;
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO security_answers (user_id, question_key, answer_hash) VALUES (?1, ?2, ?3)",
        )?;
        for (key, hash) in answers {
            insert.execute(params![id, key, hash])?;
        }
        Ok(())
    }

    /// Stores one action of `event_key` as recorded by `origin` (a node's id, or central's) in
    /// its log entry `seq`; an action stored before (re-delivery) is left as it is. Returns whether
    /// it was stored now. With `Body::InNodeLog` the row keeps no copy of the action's JSON: it is
    /// in the node's entry `seq`, stored verbatim in `node_log` (read back by
    /// [`ReadCtx::event_document`]).
    pub(super) fn store_action(
        &mut self,
        event_key: &str,
        action: &ActionDocument,
        origin: &str,
        seq: u64,
        body: Body,
    ) -> Result<bool, StoreError> {
        let body = match body {
            Body::Json => {
                serde_json::to_string(action).map_err(|e| StoreError::Corrupt(e.to_string()))?
            }
            Body::InNodeLog => String::new(),
        };
        let stored = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO actions (id, event_id, action_type, status, created_at, origin, origin_seq, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                action.id.to_string(),
                event_key,
                action.action_type.as_str(),
                action.status.as_str(),
                action.created_at,
                origin,
                i64_of(seq),
                body
            ])?;
        Ok(stored == 1)
    }

    /// Read access inside the transaction (sees its own writes).
    pub fn reader(&self) -> ReadCtx<'_> {
        ReadCtx::new(self.conn)
    }

    /// Signs `record` as the next entry of central's log and stores it with its audience.
    /// The head is read here, inside the transaction: another process may have appended since.
    pub fn append_record(
        &mut self,
        record: &CentralRecord,
        event_id: uuid::Uuid,
        audience: Audience,
        origin: Option<NodeId>,
    ) -> Result<LogHead, StoreError> {
        self.append_signed(record, event_id, audience, origin, None, None)
    }

    /// [`Self::append_record`]; with `relay_seq` (the relayed entry's seq in `node_log`, whose
    /// node is `origin`) the row is stored compact: central's entry without its action, which
    /// [`ReadCtx`] rebuilds from the node log (schema v2).
    fn append_signed(
        &mut self,
        record: &CentralRecord,
        event_id: uuid::Uuid,
        audience: Audience,
        origin: Option<NodeId>,
        relay_seq: Option<u64>,
        crdt_change: Option<Vec<u8>>,
    ) -> Result<LogHead, StoreError> {
        if !matches!(
            record,
            CentralRecord::Relay { .. } | CentralRecord::PoolGrant { .. }
        ) {
            self.append_pending_relays(usize::MAX, &|| false)?;
        }
        let last: Option<(i64, Vec<u8>, i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT seq, hash, hlc_wall_ms, hlc_counter FROM central_log ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        let (head, last_hlc) = match last {
            None => (LogHead::GENESIS, Hlc::default()),
            Some((seq, hash, wall, counter)) => (
                LogHead {
                    seq: seq as u64,
                    hash: hash_of(hash)?,
                },
                Hlc {
                    wall_ms: wall.max(0) as u64,
                    counter: u32::try_from(counter).unwrap_or(u32::MAX),
                },
            ),
        };
        let hlc = HlcClock::new(last_hlc).now(self.now_ms);
        let payload = serde_json::to_vec(record).map_err(|e| StoreError::Log(e.to_string()))?;
        let seq = head.seq + 1;
        let mut entry = LogEntry::sign(
            self.key,
            seq,
            head.hash,
            hlc,
            event_id,
            payload,
            crdt_change,
        )
        .map_err(|e| StoreError::Log(e.to_string()))?;
        let hash = entry.hash();
        if relay_seq.is_some() {
            entry.action = Vec::new();
        }
        let (kind, value) = match audience {
            Audience::All => ("all", None),
            Audience::Node(n) => ("node", Some(n.to_string())),
            Audience::Area(a) => ("area", a.map(|a| a.to_string())),
        };
        let record_kind = match record {
            CentralRecord::Relay { .. } => "relay",
            CentralRecord::Actions(_) => "actions",
            CentralRecord::Client { .. } => "client",
            CentralRecord::User { .. } => "user",
            CentralRecord::Locations(_) => "locations",
            CentralRecord::PoolGrant { .. } => "poolGrant",
            CentralRecord::NodeRevoked { .. } => "nodeRevoked",
        };
        self.conn
            .prepare_cached(
                "INSERT INTO central_log (seq, hash, hlc_wall_ms, hlc_counter, kind, audience_kind,
                                          audience_value, origin, entry, relay_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                i64_of(seq),
                hash.0.as_slice(),
                i64_of(hlc.wall_ms),
                i64::from(hlc.counter),
                record_kind,
                kind,
                value,
                origin.map(|o| o.to_string()),
                entry.encode(),
                relay_seq.map(i64_of)
            ])?;
        Ok(LogHead { seq, hash })
    }

    /// Replaces every location and administrative area and, if they changed, appends a
    /// `locations` record. Returns whether anything changed.
    pub fn set_locations(&mut self, set: &LocationSet) -> Result<bool, StoreError> {
        let current = self.reader().location_set()?;
        if sorted(&current) == sorted(set) {
            return Ok(false);
        }
        self.conn
            .execute_batch("DELETE FROM locations; DELETE FROM admin_areas;")?;
        // Parents first, so the foreign key holds whatever the file order.
        let mut pending: Vec<&AdministrativeArea> = set.administrative_areas.iter().collect();
        let mut inserted = std::collections::HashSet::new();
        while !pending.is_empty() {
            let before = pending.len();
            let mut rest = Vec::new();
            for area in pending {
                if area.parent_id.is_none_or(|p| inserted.contains(&p)) {
                    self.conn.execute(
                        "INSERT INTO admin_areas (id, name, external_id, parent_id, valid_until)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            area.id.to_string(),
                            area.name,
                            area.external_id,
                            area.parent_id.map(|p| p.to_string()),
                            area.valid_until
                        ],
                    )?;
                    inserted.insert(area.id);
                } else {
                    rest.push(area);
                }
            }
            if rest.len() == before {
                return Err(StoreError::Invalid(
                    "administrative areas do not form a tree".into(),
                ));
            }
            pending = rest;
        }
        for l in &set.locations {
            self.conn.execute(
                "INSERT INTO locations (id, name, external_id, administrative_area_id, valid_until, location_type)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    l.id.to_string(),
                    l.name,
                    l.external_id,
                    l.administrative_area_id.map(|p| p.to_string()),
                    l.valid_until,
                    l.location_type
                ],
            )?;
        }
        // A node's jurisdiction follows its facility.
        self.conn.execute(
            "UPDATE nodes SET admin_area_id =
                (SELECT administrative_area_id FROM locations WHERE locations.id = nodes.location_id)",
            [],
        )?;
        // Search keys hold each location's areas: refile every event under the new hierarchy.
        super::search::rebuild(self.conn)?;
        self.append_record(
            &CentralRecord::Locations(set.clone()),
            uuid::Uuid::nil(),
            Audience::All,
            None,
        )?;
        Ok(true)
    }

    /// Inserts or replaces a system client and appends a `client` record carrying its secret
    /// hash, so nodes can authenticate it offline.
    pub fn put_client(&mut self, client: &ClientRow) -> Result<(), StoreError> {
        let scopes = serde_json::to_string(&client.scopes)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO clients (id, name, secret_hash, scopes, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, secret_hash = excluded.secret_hash,
                 scopes = excluded.scopes, status = excluded.status",
            params![
                client.id,
                client.name,
                client.secret_hash,
                scopes,
                client.status,
                client.created_at
            ],
        )?;
        self.append_record(
            &CentralRecord::Client {
                id: client.id.clone(),
                name: client.name.clone(),
                secret_hash: client.secret_hash.clone(),
                scopes: client.scopes.clone(),
                status: client.status.clone(),
                created_at: client.created_at.clone(),
            },
            uuid::Uuid::nil(),
            Audience::All,
            None,
        )?;
        Ok(())
    }

    /// Inserts or replaces a user and appends a `user` record (with the password hash) for the
    /// nodes whose area holds the user's primary office, so the user can log in there offline.
    /// The office must be a known location; the username must not belong to another user.
    pub fn put_user(&mut self, row: &UserRow) -> Result<(), StoreError> {
        let office = row.user.primary_office_id;
        let Some(area) = self.reader().location_area(office)? else {
            return Err(StoreError::Invalid(format!(
                "primary office {office} is not a known location"
            )));
        };
        if let Some(other) = self.reader().user_by_username(&row.username)?
            && other.user.id != row.user.id
        {
            return Err(StoreError::Invalid(format!(
                "username {} is taken",
                row.username
            )));
        }
        let user_json =
            serde_json::to_string(&row.user).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let status = serde_json::to_value(row.user.status)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn
            .prepare_cached(
                "INSERT INTO users (id, username, user_json, password_hash, role, status,
                                    primary_office_id, mobile, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(id) DO UPDATE SET username = excluded.username,
                     user_json = excluded.user_json, password_hash = excluded.password_hash,
                     role = excluded.role, status = excluded.status,
                     primary_office_id = excluded.primary_office_id, mobile = excluded.mobile",
            )?
            .execute(params![
                row.user.id.to_string(),
                row.username,
                user_json,
                row.password_hash,
                row.user.role,
                status.as_str().unwrap_or("pending"),
                office.to_string(),
                row.user.mobile,
                row.created_at
            ])?;
        let area = area.as_deref().map(super::read::parse_uuid).transpose()?;
        self.append_record(
            &CentralRecord::User {
                user: Box::new(row.user.clone()),
                username: row.username.clone(),
                password_hash: row.password_hash.clone(),
            },
            uuid::Uuid::nil(),
            Audience::Area(area),
            None,
        )?;
        Ok(())
    }

    /// Enrolls a node at a known location, or re-issues an enrolled node's certificate. A revoked
    /// node cannot come back: its key is no longer trusted.
    pub fn enroll_node(&mut self, node: &NewNode) -> Result<(), StoreError> {
        if let Some(existing) = self.reader().node(node.node_id)?
            && existing.is_revoked()
        {
            return Err(StoreError::Invalid(format!(
                "node {} was revoked; enroll a new node key",
                node.node_id
            )));
        }
        let Some(area) = self.reader().location_area(node.location_id)? else {
            return Err(StoreError::Invalid(format!(
                "unknown location {}; load locations with `crvs-central init --locations`",
                node.location_id
            )));
        };
        self.conn.execute(
            "INSERT INTO nodes (id, name, location_id, admin_area_id, cert_fingerprint, enrolled_at_ms, acked_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, location_id = excluded.location_id,
                 admin_area_id = excluded.admin_area_id, cert_fingerprint = excluded.cert_fingerprint",
            params![
                node.node_id.to_string(),
                node.name,
                node.location_id.to_string(),
                area,
                node.cert_fingerprint,
                i64_of(self.now_ms),
                EntryHash::GENESIS.0.as_slice()
            ],
        )?;
        Ok(())
    }

    /// Revokes a node and appends a `nodeRevoked` record. Returns `false` if it was already
    /// revoked.
    pub fn revoke_node(&mut self, node_id: NodeId) -> Result<bool, StoreError> {
        if self.reader().node(node_id)?.is_none() {
            return Err(StoreError::Invalid(format!("no enrolled node {node_id}")));
        }
        let n = self.conn.execute(
            "UPDATE nodes SET revoked_at_ms = ?1 WHERE id = ?2 AND revoked_at_ms IS NULL",
            params![i64_of(self.now_ms), node_id.to_string()],
        )?;
        if n == 0 {
            return Ok(false);
        }
        self.append_record(
            &CentralRecord::NodeRevoked {
                node_id: node_id.to_string(),
            },
            uuid::Uuid::nil(),
            Audience::All,
            None,
        )?;
        Ok(true)
    }

    /// Records a node's `Hello`: last contact and reported health.
    pub fn record_contact(
        &mut self,
        node_id: NodeId,
        hello: &Hello,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE nodes SET last_contact_ms = ?1, reported_head_seq = ?2, backlog_entries = ?3,
                     backlog_bytes = ?4, oldest_unacked_ms = ?5, rtt_ms = ?6, pool_free = ?7
                 WHERE id = ?8",
            )?
            .execute(params![
                i64_of(now_ms),
                i64_of(hello.head.seq),
                i64_of(hello.backlog_entries),
                i64_of(hello.backlog_bytes),
                i64_of(hello.oldest_unacked_ms),
                i64::from(hello.rtt_ms),
                i64::from(hello.pool_free),
                node_id.to_string()
            ])?;
        Ok(())
    }

    /// Records how far the node applied the feed.
    pub fn record_down_ack(&mut self, node_id: NodeId, cursor: u64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE nodes SET down_cursor = ?1, last_contact_ms = ?2 WHERE id = ?3",
            )?
            .execute(params![
                i64_of(cursor),
                i64_of(self.now_ms),
                node_id.to_string()
            ])?;
        Ok(())
    }

    /// Records a refused entry (reason and bytes) and counts it on the node; keeps the newest
    /// [`REJECTS_KEPT_PER_NODE`] rows per node.
    pub fn record_reject(
        &mut self,
        node_id: NodeId,
        entry: &LogEntry,
        reject: &Reject,
    ) -> Result<(), StoreError> {
        let node = node_id.to_string();
        self.conn
            .prepare_cached(
                "INSERT INTO rejects (node_id, seq, reason, detail, entry, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                node,
                i64_of(reject.seq),
                reject.reason,
                reject.detail,
                entry.encode(),
                i64_of(self.now_ms)
            ])?;
        self.conn
            .prepare_cached(
                "UPDATE nodes SET rejects = rejects + 1, last_error = ?1, last_error_ms = ?2 WHERE id = ?3",
            )?
            .execute(params![
                format!("entry {} refused: {}: {}", reject.seq, reject.reason, reject.detail),
                i64_of(self.now_ms),
                node
            ])?;
        self.conn
            .prepare_cached(
                "DELETE FROM rejects WHERE node_id = ?1 AND id <=
                    (SELECT id FROM rejects WHERE node_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(params![node, REJECTS_KEPT_PER_NODE])?;
        Ok(())
    }

    /// Records a fork with both entries as evidence and quarantines the node.
    pub fn record_fork(&mut self, node_id: NodeId, entry: &LogEntry) -> Result<(), StoreError> {
        let stored = self.reader().stored_entry(node_id, entry.seq)?;
        let node = node_id.to_string();
        self.conn.execute(
            "INSERT INTO forks (node_id, seq, stored_entry, other_entry, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![node, i64_of(entry.seq), stored, entry.encode(), i64_of(self.now_ms)],
        )?;
        self.conn.execute(
            "UPDATE nodes SET forks = forks + 1, quarantined_at_ms = coalesce(quarantined_at_ms, ?1),
                 last_error = ?2, last_error_ms = ?1
             WHERE id = ?3",
            params![
                i64_of(self.now_ms),
                format!("fork at entry {}: node quarantined", entry.seq),
                node
            ],
        )?;
        Ok(())
    }

    /// Leases `lease_size` new tracking ids to the node when it reported fewer than the
    /// low-water mark free and holds fewer than `lease_size` unused leased ids (a grant may be on
    /// its way). Appends one `poolGrant` record. Returns how many ids were leased.
    pub fn ensure_pool(&mut self, node_id: NodeId, pool_free: u32) -> Result<u32, StoreError> {
        if pool_free >= self.pool.low_water {
            return Ok(0);
        }
        if self
            .reader()
            .unused_tracking_ids_up_to(node_id, self.pool.lease_size)?
            >= u64::from(self.pool.lease_size)
        {
            return Ok(0);
        }
        self.lease_tracking_ids(node_id, self.pool.lease_size)
    }

    /// Leases `count` new random tracking ids to the node (the primary key makes each one
    /// nationally unique) and appends one `poolGrant` record.
    pub fn lease_tracking_ids(&mut self, node_id: NodeId, count: u32) -> Result<u32, StoreError> {
        let node = node_id.to_string();
        let granted = self.draw_tracking_ids(&node, count, None)?;
        self.append_record(
            &CentralRecord::PoolGrant {
                node_id: node,
                tracking_ids: granted,
            },
            uuid::Uuid::nil(),
            Audience::Node(node_id),
            None,
        )?;
        Ok(count)
    }

    /// Draws `count` new random tracking ids for `holder` (a node's id, or central's), used by
    /// `event` if given; the primary key makes each one nationally unique.
    pub(super) fn draw_tracking_ids(
        &mut self,
        holder: &str,
        count: u32,
        event: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut granted = Vec::with_capacity(count as usize);
        let mut attempts = 0u32;
        let mut stmt = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO tracking_ids (id, node_id, granted_at_ms, event_id)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        // Random bytes for a round of draws at once (one system call, not one per id).
        let mut random = Vec::new();
        while granted.len() < count as usize {
            attempts += 1;
            if attempts > count.saturating_mul(TRACKING_ID_ATTEMPTS_PER_ID) + 16 {
                return Err(StoreError::Random(
                    "could not draw unused tracking ids (id space nearly exhausted?)".into(),
                ));
            }
            if random.is_empty() {
                random = vec![0u8; 8 * (count as usize - granted.len())];
                getrandom::fill(&mut random).map_err(|e| StoreError::Random(e.to_string()))?;
            }
            let at = random.len() - 8;
            let bytes: [u8; 8] = random[at..].try_into().expect("8 bytes");
            random.truncate(at);
            let id = TrackingId::from_index(u64::from_le_bytes(bytes));
            if stmt.execute(params![id.as_str(), holder, i64_of(self.now_ms), event])? == 1 {
                granted.push(id.as_str().to_owned());
            }
        }
        Ok(granted)
    }

    /// Applies verified, contiguous entries of `node_id` after its acked head: node-log rows,
    /// actions (idempotent by id), events, merge documents (each loaded and saved once per
    /// event), derived indexes and one pending relay per entry. Stops at the first entry refused
    /// for its content. Returns the new acked head and that refusal.
    pub fn apply_entries(
        &mut self,
        node_id: NodeId,
        entries: &[LogEntry],
    ) -> Result<(LogHead, Vec<Reject>), StoreError> {
        let prepared = entries.iter().map(|e| (e.hash(), None)).collect();
        self.apply_prepared(node_id, entries, prepared)
    }

    /// [`Self::apply_entries`] with each entry's hash and what was prepared for it
    /// ([`super::prepare`]), in the entries' order. A prepared new event is written in one go
    /// (the values the ordinary path would derive); anything else takes the ordinary path.
    pub fn apply_prepared(
        &mut self,
        node_id: NodeId,
        entries: &[LogEntry],
        prepared: Vec<(EntryHash, Option<Prepared>)>,
    ) -> Result<(LogHead, Vec<Reject>), StoreError> {
        let node = self
            .reader()
            .node_state(node_id)?
            .ok_or_else(|| StoreError::Invalid(format!("no enrolled node {node_id}")))?;
        if prepared.len() != entries.len() {
            return Err(StoreError::Invalid(
                "one hash per entry is needed to apply entries".into(),
            ));
        }
        let mut head = node.acked;
        let mut docs: BTreeMap<uuid::Uuid, DocSlot> = BTreeMap::new();
        let mut registers: BTreeSet<uuid::Uuid> = BTreeSet::new();
        let mut rejects = Vec::new();
        for (entry, (hash, prepared)) in entries.iter().zip(prepared) {
            // Another session of the same node may have applied these since the caller looked.
            if entry.seq <= head.seq {
                continue;
            }
            if entry.seq != head.seq + 1 || entry.prev_hash != head.hash {
                break;
            }
            match self.apply_one(
                &Applying {
                    node_id,
                    node_area: node.admin_area_id,
                    entry,
                    hash,
                },
                prepared,
                &mut docs,
                &mut registers,
            )? {
                Ok(()) => {
                    head = LogHead {
                        seq: entry.seq,
                        hash,
                    }
                }
                Err(reject) => {
                    rejects.push(reject);
                    break;
                }
            }
        }
        for (event_id, slot) in &docs {
            if let DocSlot::Merging(doc) = slot {
                self.refresh_index(*event_id, doc)?;
            }
        }
        // Requested registrations are answered in the same transaction as the entries that
        // asked: applied and confirmed together, or neither.
        for event_id in registers {
            self.confirm_registrations(event_id)?;
        }
        self.conn
            .prepare_cached("UPDATE nodes SET acked_seq = ?1, acked_hash = ?2 WHERE id = ?3")?
            .execute(params![
                i64_of(head.seq),
                head.hash.0.as_slice(),
                node_id.to_string()
            ])?;
        Ok((head, rejects))
    }

    /// Applies one entry; `Ok(Err(reject))` when its content is refused (nothing written).
    fn apply_one(
        &mut self,
        applying: &Applying<'_>,
        prepared: Option<Prepared>,
        docs: &mut BTreeMap<uuid::Uuid, DocSlot>,
        registers: &mut BTreeSet<uuid::Uuid>,
    ) -> Result<Result<(), Reject>, StoreError> {
        let Applying {
            node_id,
            node_area,
            entry,
            hash,
        } = *applying;
        let seq = entry.seq;
        let (payload, fresh) = match prepared {
            Some(p) => (p.payload, p.fresh),
            None => match serde_json::from_slice::<EntryPayload>(&entry.action) {
                Ok(p) => (p, None),
                Err(e) => return Ok(Err(content_reject(seq, "malformed-payload", e.to_string()))),
            },
        };
        if payload.event_id != entry.event_id || payload.actions.is_empty() {
            return Ok(Err(content_reject(
                seq,
                "malformed-payload",
                "the payload must carry actions of the entry's event",
            )));
        }
        let event_key = payload.event_id.to_string();
        let node_hex = node_id.to_string();
        let existing: Option<(String, String, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT event_type, tracking_id, admin_area_id FROM events WHERE id = ?1",
            )?
            .query_row(params![event_key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let is_new = existing.is_none();
        // Registration answers and numbers are central's: a node may carry them only in the
        // entry that imports a whole record (`record.import`), whose numbers must be free.
        let answers = registration_answers(&payload.actions);
        if !answers.is_empty() {
            if !is_new {
                return Ok(Err(content_reject(
                    seq,
                    "central-only-action",
                    "only central answers a REGISTER and issues registration numbers",
                )));
            }
            if let Some(number) = self.registration_number_taken(&answers)? {
                return Ok(Err(content_reject(
                    seq,
                    "registration-number-taken",
                    format!("registration number {number} belongs to another record"),
                )));
            }
        }
        let area: Option<String> = match existing {
            Some((event_type, tracking_id, area)) => {
                if event_type != payload.event_type || tracking_id != payload.tracking_id {
                    return Ok(Err(content_reject(
                        seq,
                        "event-mismatch",
                        format!("event {event_key} has another type or tracking id at central"),
                    )));
                }
                area
            }
            None => {
                let Some(create) = payload
                    .actions
                    .iter()
                    .find(|a| a.action_type == ActionType::Create)
                else {
                    return Ok(Err(content_reject(
                        seq,
                        "unknown-event",
                        format!(
                            "event {event_key} is unknown at central and the entry does not create it"
                        ),
                    )));
                };
                let lease: Option<(String, Option<String>)> = self
                    .conn
                    .prepare_cached("SELECT node_id, event_id FROM tracking_ids WHERE id = ?1")?
                    .query_row(params![payload.tracking_id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                // A record imported at a node (`record.import`) brings its own tracking id: one
                // central never issued nor saw is claimed for it here, in this transaction, so it
                // stays nationally unique; any other id must be this node's unused lease.
                let lease = match lease {
                    None if payload.tracking_id.parse::<TrackingId>().is_ok() => {
                        self.conn
                            .prepare_cached(
                                "INSERT INTO tracking_ids (id, node_id, granted_at_ms) VALUES (?1, ?2, ?3)",
                            )?
                            .execute(params![payload.tracking_id, node_hex, i64_of(self.now_ms)])?;
                        Some((node_hex.clone(), None))
                    }
                    other => other,
                };
                if !matches!(&lease, Some((holder, None)) if *holder == node_hex) {
                    return Ok(Err(content_reject(
                        seq,
                        "tracking-id",
                        format!(
                            "tracking id {:?} was not leased to this node or is already used",
                            payload.tracking_id
                        ),
                    )));
                }
                let location_area = match create.created_at_location {
                    Some(loc) => self.reader().location_area(loc)?.flatten(),
                    None => None,
                };
                location_area.or_else(|| node_area.map(|a| a.to_string()))
            }
        };
        // A new event that no earlier entry of this batch touched, prepared ahead: its merge
        // document and index are already derived.
        let fresh = fresh.filter(|_| is_new && !docs.contains_key(&payload.event_id));
        if fresh.is_none() {
            let doc = match docs.entry(payload.event_id) {
                std::collections::btree_map::Entry::Occupied(o) => {
                    let slot = o.into_mut();
                    if let DocSlot::Written = slot {
                        // Written whole by an earlier entry of this batch: merge on top of it.
                        *slot = DocSlot::Merging(Box::new(self.load_crdt(payload.event_id)?));
                    }
                    slot
                }
                std::collections::btree_map::Entry::Vacant(v) => v.insert(DocSlot::Merging(
                    Box::new(self.load_crdt(payload.event_id)?),
                )),
            };
            if let (Some(change), DocSlot::Merging(doc)) = (&entry.crdt_change, doc) {
                // Every dependency must be here: a change left waiting would make the stored
                // document (kept as appended changes) fail to load.
                if let Err(e) = doc.crdt.apply_complete_change(change) {
                    // automerge can fail halfway through a malformed change: the document goes
                    // back to what is stored plus this batch's earlier changes before the end of
                    // the batch saves it.
                    doc.rebuild(self.key.node_id().as_bytes()).map_err(|e| {
                        StoreError::Corrupt(format!("crdt of {}: {e}", payload.event_id))
                    })?;
                    return Ok(Err(content_reject(seq, "bad-crdt-change", e.to_string())));
                }
                doc.appended.extend_from_slice(change);
            }
        }
        if is_new {
            let row = NewEventRow {
                event_key: &event_key,
                event_type: &payload.event_type,
                tracking_id: &payload.tracking_id,
                created_at: &payload.event_created_at,
                origin: &node_hex,
                area: area.as_deref(),
            };
            match &fresh {
                Some(fresh) => self.insert_fresh_event_row(&row, fresh)?,
                None => self.insert_event_row(&row)?,
            }
            self.conn
                .prepare_cached("UPDATE tracking_ids SET event_id = ?1 WHERE id = ?2")?
                .execute(params![event_key, payload.tracking_id])?;
            // An imported record's numbers are claimed, so central never issues them again.
            self.claim_registration_numbers(&event_key, &answers)?;
        }
        let mut stored_actions = 0;
        for action in &payload.actions {
            if self.store_action(&event_key, action, &node_hex, seq, Body::InNodeLog)? {
                stored_actions += 1;
            }
        }
        if let Some(fresh) = fresh {
            // A new event had no search keys: marked so, whichever way it is derived.
            super::search::mark_pending(self.conn, payload.event_id, "{}")?;
            if stored_actions == fresh.actions {
                self.index_dedup_dates(payload.event_id, &fresh.index)?;
                docs.insert(payload.event_id, DocSlot::Written);
            } else {
                // An action id already stored elsewhere: the event is what the stored rows say,
                // derived the ordinary way at the end of the batch.
                docs.insert(
                    payload.event_id,
                    DocSlot::Merging(Box::new(self.load_crdt(payload.event_id)?)),
                );
            }
        }
        if payload
            .actions
            .iter()
            .any(|a| a.action_type == ActionType::Register && a.status == ActionStatus::Requested)
        {
            registers.insert(payload.event_id);
        }
        let encoded = entry.encode();
        self.conn
            .prepare_cached(
                "INSERT INTO node_log (node_id, seq, hash, entry, applied_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                node_hex,
                i64_of(seq),
                hash.0.as_slice(),
                encoded,
                i64_of(self.now_ms)
            ])?;
        // Relayed to the other nodes of its area behind the sync path
        // (`append_pending_relays`), in the order applied.
        self.conn
            .prepare_cached(
                "INSERT INTO relay_pending (node_id, seq, event_id, area) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![node_hex, i64_of(seq), event_key, area])?;
        Ok(Ok(()))
    }

    /// Appends the relays of up to `max` applied node entries to central's log, in the order
    /// the entries were applied, stopping early (after at least one) when `yield_now` says
    /// another writer waits. Returns how many were relayed. Every other record central appends
    /// (except pool grants, which concern no event) first relays everything pending, so
    /// central's log keeps a record's relayed entries before central's own records about it.
    pub fn append_pending_relays(
        &mut self,
        max: usize,
        yield_now: &dyn Fn() -> bool,
    ) -> Result<usize, StoreError> {
        let pending: Vec<(i64, String, i64, String, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT id, node_id, seq, event_id, area FROM relay_pending ORDER BY id LIMIT ?1",
            )?
            .query_map(params![i64::try_from(max).unwrap_or(i64::MAX)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut relayed = 0;
        for (id, node_hex, seq, event_key, area) in pending {
            let encoded: Vec<u8> = self
                .conn
                .prepare_cached("SELECT entry FROM node_log WHERE node_id = ?1 AND seq = ?2")?
                .query_row(params![node_hex, seq], |r| r.get(0))?;
            let node_id: NodeId = node_hex
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("relay of node {node_hex}: {e}")))?;
            let event_id = super::read::parse_uuid(&event_key)?;
            let area = area.as_deref().map(super::read::parse_uuid).transpose()?;
            let relay = CentralRecord::Relay {
                origin: node_hex,
                entry: hex::encode(&encoded),
            };
            let seq = u64::try_from(seq).unwrap_or(0);
            // Stored compact: the entry's bytes are already in `node_log`.
            match self.append_signed(
                &relay,
                event_id,
                Audience::Area(area),
                Some(node_id),
                Some(seq),
                None,
            ) {
                Ok(_) => {}
                // Hex doubles the entry: one near the entry bound cannot be relayed in one
                // central entry. It is applied at central all the same; other nodes miss it
                // until the feed carries raw bytes.
                Err(StoreError::Log(e)) => {
                    tracing::warn!(node = %node_id.fmt_short(), seq, error = %e, "entry applied but too large to relay");
                }
                Err(e) => return Err(e),
            }
            self.conn
                .prepare_cached("DELETE FROM relay_pending WHERE id = ?1")?
                .execute(params![id])?;
            relayed += 1;
            if yield_now() {
                break;
            }
        }
        Ok(relayed)
    }

    /// The first registration number `answers` carry that another record holds already.
    pub(super) fn registration_number_taken(
        &self,
        answers: &[&ActionDocument],
    ) -> Result<Option<String>, StoreError> {
        for number in answers
            .iter()
            .filter_map(|a| a.registration_number.as_deref())
        {
            let taken = self
                .conn
                .prepare_cached("SELECT 1 FROM registration_numbers WHERE number = ?1")?
                .query_row(params![number], |_| Ok(()))
                .optional()?
                .is_some();
            if taken {
                return Ok(Some(number.to_owned()));
            }
        }
        Ok(None)
    }

    /// Claims the registration numbers an imported record carries, so central never issues
    /// them again.
    pub(super) fn claim_registration_numbers(
        &mut self,
        event_key: &str,
        answers: &[&ActionDocument],
    ) -> Result<(), StoreError> {
        for action in answers {
            if let Some(number) = &action.registration_number {
                self.conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO registration_numbers
                             (number, event_id, requested_action_id, issued_at_ms)
                         VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        number,
                        event_key,
                        action.id.to_string(),
                        i64_of(self.now_ms)
                    ])?;
            }
        }
        Ok(())
    }

    /// Inserts a new event's row, its index still to derive.
    pub(super) fn insert_event_row(&mut self, row: &NewEventRow<'_>) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO events (id, event_type, tracking_id, created_at, updated_at, origin,
                                     admin_area_id, status, index_json)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, 'CREATED', '{}')",
            )?
            .execute(params![
                row.event_key,
                row.event_type,
                row.tracking_id,
                row.created_at,
                row.origin,
                row.area
            ])?;
        Ok(())
    }

    /// Inserts a new event's row complete: derived status, index, conflicts and merge document
    /// as prepared ([`super::prepare`]), where [`Self::insert_event_row`] leaves them to
    /// [`Self::refresh_index`].
    fn insert_fresh_event_row(
        &mut self,
        row: &NewEventRow<'_>,
        fresh: &FreshEvent,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO events (id, event_type, tracking_id, created_at, updated_at, origin,
                                     admin_area_id, status, index_json, conflicts, crdt)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                row.event_key,
                row.event_type,
                row.tracking_id,
                row.created_at,
                fresh.index.updated_at,
                row.origin,
                row.area,
                fresh.index.status.as_str(),
                fresh.json,
                fresh.index.conflicts.len() as i64,
                fresh.stored_crdt
            ])?;
        Ok(())
    }

    pub(super) fn load_crdt(&self, event_id: uuid::Uuid) -> Result<MergeDoc, StoreError> {
        let actor = actor_for(self.key.node_id().as_bytes());
        let stored: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT crdt FROM events WHERE id = ?1")?
            .query_row(params![event_id.to_string()], |r| r.get(0))
            .optional()?
            .flatten();
        let crdt = match &stored {
            Some(bytes) => EventCrdt::load(bytes, actor)
                .map_err(|e| StoreError::Corrupt(format!("crdt of {event_id}: {e}")))?,
            None => EventCrdt::new(actor),
        };
        Ok(MergeDoc {
            crdt,
            stored,
            appended: Vec::new(),
        })
    }

    /// Files up to `max` events whose search keys are behind their index entries
    /// ([`super::search::file_pending`]); stops early when `yield_now` says so. Returns how many.
    pub fn file_search_pending(
        &mut self,
        max: usize,
        yield_now: &dyn Fn() -> bool,
    ) -> Result<usize, StoreError> {
        super::search::file_pending(self.conn, max, yield_now)
    }

    /// Saves the merge document and re-derives the index from the actions and the document.
    pub(super) fn refresh_index(
        &mut self,
        event_id: uuid::Uuid,
        merge: &MergeDoc,
    ) -> Result<(), StoreError> {
        let crdt = &merge.crdt;
        let Some(doc) = self.reader().event_document(event_id)? else {
            // Every entry touching a document was refused before its event was stored.
            return Ok(());
        };
        // Entries without an automerge change (none since issue "Sync") leave the document
        // empty; the aggregate of the actions is then the declaration.
        let index = if crdt.heads().is_empty() {
            EventIndex::from_document(&doc)
        } else {
            let (declaration, conflicts) = crdt
                .state()
                .map_err(|e| StoreError::Corrupt(format!("crdt of {event_id}: {e}")))?;
            EventIndex::from_document_with(&doc, declaration, conflicts)
        };
        let json = serde_json::to_string(&index).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // The national search index follows behind (`search::file_pending`): the event is
        // marked with the entry its keys are filed under now. A new event's stored entry is the
        // placeholder `{}`: it had no keys.
        let stored: Option<String> = self
            .conn
            .prepare_cached("SELECT index_json FROM events WHERE id = ?1")?
            .query_row(params![event_id.to_string()], |r| r.get(0))
            .optional()?;
        if stored.as_deref() != Some(json.as_str()) {
            super::search::mark_pending(self.conn, event_id, stored.as_deref().unwrap_or("{}"))?;
        }
        self.conn
            .prepare_cached(
                "UPDATE events SET status = ?1, index_json = ?2, updated_at = ?3, conflicts = ?4, crdt = ?5
                 WHERE id = ?6",
            )?
            .execute(params![
                index.status.as_str(),
                json,
                index.updated_at,
                index.conflicts.len() as i64,
                merge.to_store(),
                event_id.to_string()
            ])?;
        self.index_dedup_dates(event_id, &index)
    }
}

impl WriteTx<'_> {
    /// Stores an event's derived index entry as it is, without actions or merge document, and
    /// files it in the search index exactly as [`Self::refresh_index`] does. Only for generating
    /// large test and benchmark data sets quickly; sync never calls it.
    pub fn insert_index_entry(
        &mut self,
        entry: &EventIndex,
        origin: &str,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn
            .prepare_cached(
                "INSERT INTO events (id, event_type, tracking_id, created_at, updated_at, origin,
                                     status, index_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                entry.id.to_string(),
                entry.event_type,
                entry.tracking_id,
                entry.created_at,
                entry.updated_at,
                origin,
                entry.status.as_str(),
                json
            ])?;
        super::search::file(
            self.conn,
            entry.id,
            None,
            Some(entry),
            &super::search::Ancestry::new(self.conn),
        )
    }
}

/// The actions that answer a REGISTER or carry a registration number: central's alone, except in
/// a whole imported record.
pub(super) fn registration_answers(actions: &[ActionDocument]) -> Vec<&ActionDocument> {
    actions
        .iter()
        .filter(|a| {
            a.registration_number.is_some()
                || (a.action_type == ActionType::Register && a.status != ActionStatus::Requested)
        })
        .collect()
}

/// A new event's row: who brought it (`origin`, a node's id or central's) and the administrative
/// area of its creating location, which decides the nodes that receive it.
pub(super) struct NewEventRow<'a> {
    pub(super) event_key: &'a str,
    pub(super) event_type: &'a str,
    pub(super) tracking_id: &'a str,
    pub(super) created_at: &'a str,
    pub(super) origin: &'a str,
    pub(super) area: Option<&'a str>,
}

/// Where an action row's JSON lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Body {
    /// In the row (`body`): central's own actions.
    Json,
    /// In the node entry that carried it (`node_log` at `origin`, `origin_seq`); the row's `body`
    /// is empty. A node's entry is kept verbatim anyway, so its actions are not stored twice.
    InNodeLog,
}

/// One entry being applied: whose, which, and its hash.
#[derive(Clone, Copy)]
struct Applying<'e> {
    node_id: NodeId,
    node_area: Option<uuid::Uuid>,
    entry: &'e LogEntry,
    hash: EntryHash,
}

/// An event's merge document while a batch is applied.
enum DocSlot {
    /// Loaded, with the batch's changes applied; saved and re-derived at the end of the batch.
    Merging(Box<MergeDoc>),
    /// New, written complete from its prepared values; nothing left to derive.
    Written,
}

/// One event's merge document while a batch is applied: the bytes stored before and the raw
/// changes applied since, so storing it appends them instead of re-encoding the document.
pub(super) struct MergeDoc {
    pub(super) crdt: EventCrdt,
    stored: Option<Vec<u8>>,
    pub(super) appended: Vec<u8>,
}

impl MergeDoc {
    /// Loads the document again from the bytes stored before and the changes appended since.
    /// `identity`: central's, whose actor writes the document.
    fn rebuild(&mut self, identity: &[u8; 32]) -> Result<(), crvs_sync::merge::MergeError> {
        let actor = actor_for(identity);
        let bytes = [self.stored.as_deref().unwrap_or_default(), &self.appended].concat();
        self.crdt = if bytes.is_empty() {
            EventCrdt::new(actor)
        } else {
            EventCrdt::load(&bytes, actor)?
        };
        Ok(())
    }
}

impl MergeDoc {
    /// What to store: the stored bytes with the applied changes appended while that stays under
    /// the merge module's bound (automerge loads a sequence of chunks), else one full save.
    fn to_store(&self) -> Vec<u8> {
        if self.appended.is_empty() {
            return match &self.stored {
                Some(bytes) => bytes.clone(),
                None => self.crdt.save(),
            };
        }
        self.crdt
            .stored_after(self.stored.as_deref(), &self.appended)
    }
}

/// A location set in a canonical order, to tell whether a reload changes anything.
fn sorted(set: &LocationSet) -> (Vec<String>, Vec<String>) {
    let mut areas: Vec<String> = set
        .administrative_areas
        .iter()
        .map(|a| serde_json::to_string(a).unwrap_or_default())
        .collect();
    let mut locations: Vec<String> = set
        .locations
        .iter()
        .map(|l| serde_json::to_string(l).unwrap_or_default())
        .collect();
    areas.sort();
    locations.sort();
    (areas, locations)
}
