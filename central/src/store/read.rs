//! Read-only queries: what the sync sessions, the HTTP routes and the operator commands read.

use std::collections::{HashMap, HashSet};

use crvs_common::event::{ActionDocument, EventDocument};
use crvs_common::feed::CentralRecord;
use crvs_common::location::{AdministrativeArea, Location, LocationSet};
use crvs_common::log::{EntryHash, LogEntry, LogHead, NodeId};
use crvs_common::state::EventIndex;
use rusqlite::{Connection, OptionalExtension as _, params};
use sha2::{Digest as _, Sha256};

use super::{
    ClientRow, ConflictRow, FEED_SCAN_ROWS_MAX, NodeRow, NodeState, RejectRow, StoreError,
    StoreStats, UserRow, hash_of,
};

/// Read-only queries over one connection.
#[allow(missing_debug_implementations, reason = "holds a connection")]
pub struct ReadCtx<'a> {
    conn: &'a Connection,
}

pub(super) fn parse_uuid(s: &str) -> Result<uuid::Uuid, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("bad uuid {s:?} in store")))
}

pub(super) fn parse_node_id(s: &str) -> Result<NodeId, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("bad node id {s:?} in store")))
}

/// A stored row of central's log (see [`ReadCtx::central_entry`]).
struct CentralRow {
    seq: u64,
    hash: Vec<u8>,
    entry: Vec<u8>,
    origin: Option<String>,
    relay_seq: Option<i64>,
}

fn opt_u64(v: Option<i64>) -> Option<u64> {
    v.map(|n| n.max(0) as u64)
}

const NODE_COLUMNS: &str = "id, name, location_id, admin_area_id, cert_fingerprint, enrolled_at_ms,
    revoked_at_ms, quarantined_at_ms, acked_seq, acked_hash, down_cursor, last_contact_ms,
    reported_head_seq, backlog_entries, backlog_bytes, oldest_unacked_ms, rtt_ms, pool_free,
    rejects, forks, last_error, last_error_ms,
    (SELECT count(*) FROM tracking_ids t WHERE t.node_id = nodes.id AND t.event_id IS NULL)";

struct RawNode {
    text: [String; 3],
    admin_area_id: Option<String>,
    fingerprint: String,
    ints: [Option<i64>; 16],
    acked_hash: Vec<u8>,
    last_error: Option<String>,
}

fn raw_node(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawNode> {
    Ok(RawNode {
        text: [r.get(0)?, r.get(1)?, r.get(2)?],
        admin_area_id: r.get(3)?,
        fingerprint: r.get(4)?,
        acked_hash: r.get(9)?,
        last_error: r.get(20)?,
        ints: [
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(10)?,
            r.get(11)?,
            r.get(12)?,
            r.get(13)?,
            r.get(14)?,
            r.get(15)?,
            r.get(16)?,
            r.get(17)?,
            r.get(18)?,
            r.get(19)?,
            r.get(21)?,
            r.get(22)?,
        ],
    })
}

fn decode_node(raw: RawNode) -> Result<NodeRow, StoreError> {
    let [id, name, location] = raw.text;
    let i = raw.ints;
    Ok(NodeRow {
        node_id: parse_node_id(&id)?,
        name,
        location_id: parse_uuid(&location)?,
        admin_area_id: raw.admin_area_id.as_deref().map(parse_uuid).transpose()?,
        cert_fingerprint: raw.fingerprint,
        enrolled_at_ms: opt_u64(i[0]).unwrap_or(0),
        revoked_at_ms: opt_u64(i[1]),
        quarantined_at_ms: opt_u64(i[2]),
        acked: LogHead {
            seq: opt_u64(i[3]).unwrap_or(0),
            hash: hash_of(raw.acked_hash)?,
        },
        down_cursor: opt_u64(i[4]).unwrap_or(0),
        last_contact_ms: opt_u64(i[5]),
        reported_head_seq: opt_u64(i[6]),
        backlog_entries: opt_u64(i[7]),
        backlog_bytes: opt_u64(i[8]),
        oldest_unacked_ms: opt_u64(i[9]),
        rtt_ms: opt_u64(i[10]),
        pool_free: opt_u64(i[11]),
        rejects: opt_u64(i[12]).unwrap_or(0),
        forks: opt_u64(i[13]).unwrap_or(0),
        last_error: raw.last_error,
        last_error_ms: opt_u64(i[14]),
        pool_unused: opt_u64(i[15]).unwrap_or(0),
    })
}

type RawClient = (String, String, String, String, String, String);

fn client_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawClient> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode_client(
    (id, name, secret_hash, scopes, status, created_at): RawClient,
) -> Result<ClientRow, StoreError> {
    let scopes = serde_json::from_str(&scopes)
        .map_err(|e| StoreError::Corrupt(format!("client {id} scopes: {e}")))?;
    Ok(ClientRow {
        id,
        name,
        secret_hash,
        scopes,
        status,
        created_at,
    })
}

fn decode_user(
    (json, username, password_hash, created_at): (String, String, String, String),
) -> Result<UserRow, StoreError> {
    let user = serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("user {username}: {e}")))?;
    Ok(UserRow {
        user,
        username,
        password_hash,
        created_at,
    })
}

impl<'a> ReadCtx<'a> {
    /// The read connection, for the account tables shared with the node
    /// ([`crvs_common::server::accounts`]).
    pub fn conn(&self) -> &Connection {
        self.conn
    }

    pub(super) fn new(conn: &'a Connection) -> Self {
        Self { conn }
    }

    /// Central's log head.
    pub fn central_head(&self) -> Result<LogHead, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT seq, hash FROM central_log ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            None => Ok(LogHead::GENESIS),
            Some((seq, hash)) => Ok(LogHead {
                seq: seq as u64,
                hash: hash_of(hash)?,
            }),
        }
    }

    /// One of central's entries as signed, from its stored row: a compact relay row (schema v2:
    /// `relay_seq` set, action left out) gets its action rebuilt from the node log and must hash
    /// to the stored hash.
    fn central_entry(&self, row: CentralRow) -> Result<LogEntry, StoreError> {
        let CentralRow {
            seq,
            hash,
            entry,
            origin,
            relay_seq,
        } = row;
        let corrupt =
            |what: String| StoreError::Corrupt(format!("central log entry {seq}: {what}"));
        let mut decoded = LogEntry::decode(&entry).map_err(|e| corrupt(e.to_string()))?;
        let Some(relay_seq) = relay_seq else {
            return Ok(decoded);
        };
        let origin = origin.ok_or_else(|| corrupt("compact relay without origin".into()))?;
        let relayed: Vec<u8> = self
            .conn
            .prepare_cached("SELECT entry FROM node_log WHERE node_id = ?1 AND seq = ?2")?
            .query_row(params![origin, relay_seq], |r| r.get(0))
            .optional()?
            .ok_or_else(|| corrupt(format!("relayed entry {relay_seq} is not in the node log")))?;
        let record = CentralRecord::Relay {
            origin,
            entry: hex::encode(&relayed),
        };
        decoded.action = serde_json::to_vec(&record).map_err(|e| corrupt(e.to_string()))?;
        if decoded.hash().0.as_slice() != hash.as_slice() {
            return Err(corrupt("rebuilt relay does not match its hash".into()));
        }
        Ok(decoded)
    }

    /// Central's own entries after `after_seq`, in order (for verification and tests).
    pub fn central_entries(&self, after_seq: u64, limit: u64) -> Result<Vec<LogEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, hash, entry, origin, relay_seq FROM central_log
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![after_seq as i64, limit as i64], |r| {
                Ok(CentralRow {
                    seq: r.get::<_, i64>(0)? as u64,
                    hash: r.get(1)?,
                    entry: r.get(2)?,
                    origin: r.get(3)?,
                    relay_seq: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|row| self.central_entry(row))
            .collect()
    }

    /// One enrolled node.
    pub fn node(&self, node_id: NodeId) -> Result<Option<NodeRow>, StoreError> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1");
        let raw = self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![node_id.to_string()], raw_node)
            .optional()?;
        raw.map(decode_node).transpose()
    }

    /// What the sync path needs of one enrolled node: a primary-key lookup of a few columns
    /// (no pool count, unlike [`Self::node`], which ops listings use).
    pub fn node_state(&self, node_id: NodeId) -> Result<Option<NodeState>, StoreError> {
        type Raw = (Option<i64>, Option<i64>, i64, Vec<u8>, Option<String>);
        let raw: Option<Raw> = self
            .conn
            .prepare_cached(
                "SELECT revoked_at_ms, quarantined_at_ms, acked_seq, acked_hash, admin_area_id
                 FROM nodes WHERE id = ?1",
            )?
            .query_row(params![node_id.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        raw.map(|(revoked, quarantined, seq, hash, area)| {
            Ok(NodeState {
                acked: LogHead {
                    seq: seq.max(0) as u64,
                    hash: hash_of(hash)?,
                },
                revoked: revoked.is_some(),
                quarantined: quarantined.is_some(),
                admin_area_id: area.as_deref().map(parse_uuid).transpose()?,
            })
        })
        .transpose()
    }

    /// The node holding the certificate with this fingerprint.
    pub fn node_by_fingerprint(&self, fingerprint: &str) -> Result<Option<NodeRow>, StoreError> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE cert_fingerprint = ?1");
        let raw = self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![fingerprint], raw_node)
            .optional()?;
        raw.map(decode_node).transpose()
    }

    /// Every enrolled node, revoked ones included, by enrollment time.
    pub fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY enrolled_at_ms, id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let raws = stmt
            .query_map([], raw_node)?
            .collect::<Result<Vec<_>, _>>()?;
        raws.into_iter().map(decode_node).collect()
    }

    /// The hash of the node's entry `seq` that central applied.
    pub fn stored_hash(&self, node_id: NodeId, seq: u64) -> Result<Option<EntryHash>, StoreError> {
        let hash: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT hash FROM node_log WHERE node_id = ?1 AND seq = ?2")?
            .query_row(params![node_id.to_string(), seq as i64], |r| r.get(0))
            .optional()?;
        hash.map(hash_of).transpose()
    }

    /// The node's entry `seq` that central applied, encoded.
    pub fn stored_entry(&self, node_id: NodeId, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT entry FROM node_log WHERE node_id = ?1 AND seq = ?2")?
            .query_row(params![node_id.to_string(), seq as i64], |r| r.get(0))
            .optional()?)
    }

    /// The administrative area `area` and every area below it.
    fn areas_within(&self, area: &str) -> Result<HashSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, parent_id FROM admin_areas")?;
        let mut children: HashMap<String, Vec<String>> = HashMap::new();
        for row in stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
        })? {
            let (id, parent) = row?;
            if let Some(p) = parent {
                children.entry(p).or_default().push(id);
            }
        }
        let mut out = HashSet::new();
        let mut queue = vec![area.to_owned()];
        while let Some(next) = queue.pop() {
            if out.insert(next.clone()) {
                queue.extend(children.remove(&next).unwrap_or_default());
            }
        }
        Ok(out)
    }

    /// Central's entries after `cursor` that `node_id` may see: its own pool grants, every
    /// client, location and revocation record, and relays of events whose area lies within the
    /// node's facility's area (never the node's own entries). At most `max_items` and about
    /// `max_bytes` (at least one item if any is visible). Returns the items, the cursor after
    /// them (past invisible entries too, up to the head when nothing visible remains) and whether
    /// more may wait.
    pub fn feed_after(
        &self,
        node_id: NodeId,
        cursor: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LogEntry>, u64, bool), StoreError> {
        let node_hex = node_id.to_string();
        let area: Option<String> = self
            .conn
            .prepare_cached("SELECT admin_area_id FROM nodes WHERE id = ?1")?
            .query_row(params![node_hex], |r| r.get(0))
            .optional()?
            .flatten();
        let areas = match &area {
            Some(a) => self.areas_within(a)?,
            None => HashSet::new(),
        };
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, audience_kind, audience_value, origin, entry, hash, relay_seq
             FROM central_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let visible = |kind: &str, value: Option<&str>, origin: Option<&str>| match kind {
            "all" => true,
            "node" => value == Some(node_hex.as_str()),
            _ => origin != Some(node_hex.as_str()) && value.is_some_and(|v| areas.contains(v)),
        };
        // The entry column is read only for visible rows: most rows a node scans are relays of
        // its own entries, whose bytes sit in overflow pages.
        let rows = stmt.query_map(params![cursor as i64, FEED_SCAN_ROWS_MAX as i64], |r| {
            let seq = r.get::<_, i64>(0)? as u64;
            let kind = r.get_ref(1)?.as_str()?;
            let value = r.get_ref(2)?.as_str_or_null()?;
            let origin = r.get_ref(3)?.as_str_or_null()?;
            let entry = if visible(kind, value, origin) {
                Some(CentralRow {
                    seq,
                    hash: r.get(5)?,
                    entry: r.get(4)?,
                    origin: origin.map(str::to_owned),
                    relay_seq: r.get(6)?,
                })
            } else {
                None
            };
            Ok((seq, entry))
        })?;
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut scanned = 0usize;
        let mut to_cursor = cursor;
        for row in rows {
            let (seq, entry) = row?;
            scanned += 1;
            if let Some(row) = entry {
                if items.len() >= max_items {
                    return Ok((items, to_cursor, true));
                }
                let entry = self.central_entry(row)?;
                let len = entry.encoded_len();
                if !items.is_empty() && bytes + len > max_bytes {
                    return Ok((items, to_cursor, true));
                }
                bytes += len;
                items.push(entry);
            }
            to_cursor = seq;
        }
        Ok((items, to_cursor, scanned == FEED_SCAN_ROWS_MAX))
    }

    /// The full event document, CREATE first, then the actions by capture time (ties by arrival).
    pub fn event_document(
        &self,
        event_id: uuid::Uuid,
    ) -> Result<Option<EventDocument>, StoreError> {
        let id = event_id.to_string();
        let row: Option<(String, String, String, String)> = self
            .conn
            .prepare_cached(
                "SELECT event_type, tracking_id, created_at, updated_at FROM events WHERE id = ?1",
            )?
            .query_row(params![id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let Some((event_type, tracking_id, created_at, updated_at)) = row else {
            return Ok(None);
        };
        let rows: Vec<(String, String, String, i64)> = self
            .conn
            .prepare_cached(
                "SELECT id, body, origin, origin_seq FROM actions WHERE event_id = ?1
                 ORDER BY action_type != 'CREATE', created_at, seq",
            )?
            .query_map(params![id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        // A node's actions are kept once, in its entry (`Body::InNodeLog`); each entry is read
        // once for all of its actions.
        let mut entries: HashMap<(String, i64), Vec<ActionDocument>> = HashMap::new();
        let mut actions = Vec::with_capacity(rows.len());
        for (action_id, body, origin, origin_seq) in rows {
            if !body.is_empty() {
                actions.push(serde_json::from_str::<ActionDocument>(&body).map_err(|e| {
                    StoreError::Corrupt(format!("action of {id} does not decode: {e}"))
                })?);
                continue;
            }
            let key = (origin, origin_seq);
            if !entries.contains_key(&key) {
                let carried = self.entry_actions(&key.0, key.1)?;
                entries.insert(key.clone(), carried);
            }
            let action = entries[&key]
                .iter()
                .find(|a| a.id.to_string() == action_id)
                .cloned()
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "action {action_id} of {id} is not in entry {} of node {}",
                        key.1, key.0
                    ))
                })?;
            actions.push(action);
        }
        crvs_common::state::canonical_order(&mut actions);
        Ok(Some(EventDocument {
            id: event_id,
            event_type,
            created_at,
            updated_at,
            actions,
            tracking_id,
        }))
    }

    /// The actions a node's applied entry carried (its payload's, as the node signed them).
    fn entry_actions(&self, node: &str, seq: i64) -> Result<Vec<ActionDocument>, StoreError> {
        let bytes: Vec<u8> = self
            .conn
            .prepare_cached("SELECT entry FROM node_log WHERE node_id = ?1 AND seq = ?2")?
            .query_row(params![node, seq], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::Corrupt(format!("no entry {seq} of node {node}")))?;
        let entry = LogEntry::decode(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("entry {seq} of node {node}: {e}")))?;
        let payload: crvs_common::event::EntryPayload = serde_json::from_slice(&entry.action)
            .map_err(|e| StoreError::Corrupt(format!("payload of entry {seq} of {node}: {e}")))?;
        Ok(payload.actions)
    }

    /// The event id with this tracking id.
    pub fn event_by_tracking_id(
        &self,
        tracking_id: &str,
    ) -> Result<Option<uuid::Uuid>, StoreError> {
        let id: Option<String> = self
            .conn
            .prepare_cached("SELECT id FROM events WHERE tracking_id = ?1")?
            .query_row(params![tracking_id], |r| r.get(0))
            .optional()?;
        id.map(|s| parse_uuid(&s)).transpose()
    }

    /// The derived index entry of one event.
    pub fn index_entry(&self, event_id: uuid::Uuid) -> Result<Option<EventIndex>, StoreError> {
        let json: Option<String> = self
            .conn
            .prepare_cached("SELECT index_json FROM events WHERE id = ?1")?
            .query_row(params![event_id.to_string()], |r| r.get(0))
            .optional()?;
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| StoreError::Corrupt(format!("index does not decode: {e}")))
        })
        .transpose()
    }

    /// Derived index entries of every event except undeclared drafts (status CREATED, which
    /// OpenCRVS does not index), newest first, optionally only the one with `tracking_id`.
    pub fn index_entries(&self, tracking_id: Option<&str>) -> Result<Vec<EventIndex>, StoreError> {
        // A scan of the derived index, as at the node; the national index (fuzzy, within-location)
        // comes with issue "Central registry".
        let rows: Vec<String> = match tracking_id {
            Some(t) => self
                .conn
                .prepare_cached(
                    "SELECT index_json FROM events WHERE tracking_id = ?1 AND status != 'CREATED'",
                )?
                .query_map(params![t], |r| r.get(0))?
                .collect::<Result<_, _>>()?,
            None => self
                .conn
                .prepare_cached(
                    "SELECT index_json FROM events WHERE status != 'CREATED' ORDER BY created_at DESC, id",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?,
        };
        rows.iter()
            .map(|json| {
                serde_json::from_str(json)
                    .map_err(|e| StoreError::Corrupt(format!("index does not decode: {e}")))
            })
            .collect()
    }

    /// Events whose merge document holds concurrent writes, newest first, at most `limit`.
    pub fn conflicts(&self, limit: u64) -> Result<Vec<ConflictRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT index_json FROM events WHERE conflicts > 0 ORDER BY updated_at DESC, id LIMIT ?1",
        )?;
        let rows = stmt
            .query_map(params![limit as i64], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.iter()
            .map(|json| {
                let index: EventIndex = serde_json::from_str(json)
                    .map_err(|e| StoreError::Corrupt(format!("index does not decode: {e}")))?;
                Ok(ConflictRow {
                    event_id: index.id,
                    tracking_id: index.tracking_id,
                    event_type: index.event_type,
                    fields: index.conflicts.into_iter().map(|c| c.field).collect(),
                })
            })
            .collect()
    }

    /// Recorded rejects, newest first, optionally of one node, at most `limit`.
    pub fn rejects(&self, node: Option<NodeId>, limit: u64) -> Result<Vec<RejectRow>, StoreError> {
        let node = node.map(|n| n.to_string());
        let mut stmt = self.conn.prepare_cached(
            "SELECT node_id, seq, reason, detail, entry, at_ms FROM rejects
             WHERE ?1 IS NULL OR node_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![node, limit as i64], |r| {
            let entry: Vec<u8> = r.get(4)?;
            Ok(RejectRow {
                node_id: r.get(0)?,
                seq: r.get::<_, i64>(1)?.max(0) as u64,
                reason: r.get(2)?,
                detail: r.get(3)?,
                entry_sha256: hex::encode(Sha256::digest(&entry)),
                entry_bytes: entry.len() as u64,
                at_ms: r.get::<_, i64>(5)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Locations, by name.
    pub fn locations(&self) -> Result<Vec<Location>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, external_id, administrative_area_id, valid_until, location_type
             FROM locations ORDER BY name, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        rows.map(|row| {
            let (id, name, external_id, area, valid_until, location_type) = row?;
            Ok(Location {
                id: parse_uuid(&id)?,
                name,
                external_id,
                administrative_area_id: area.as_deref().map(parse_uuid).transpose()?,
                valid_until,
                location_type,
            })
        })
        .collect()
    }

    /// Administrative areas, by name.
    pub fn admin_areas(&self) -> Result<Vec<AdministrativeArea>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, external_id, parent_id, valid_until FROM admin_areas ORDER BY name, id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (id, name, external_id, parent, valid_until) = row?;
            Ok(AdministrativeArea {
                id: parse_uuid(&id)?,
                name,
                external_id,
                parent_id: parent.as_deref().map(parse_uuid).transpose()?,
                valid_until,
            })
        })
        .collect()
    }

    /// Areas and locations as one set (what a `locations` feed record carries).
    pub fn location_set(&self) -> Result<LocationSet, StoreError> {
        Ok(LocationSet {
            administrative_areas: self.admin_areas()?,
            locations: self.locations()?,
        })
    }

    /// A location's administrative area: `None` if the location is unknown, `Some(None)` if it
    /// has no area.
    pub fn location_area(
        &self,
        location_id: uuid::Uuid,
    ) -> Result<Option<Option<String>>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT administrative_area_id FROM locations WHERE id = ?1")?
            .query_row(params![location_id.to_string()], |r| r.get(0))
            .optional()?)
    }

    /// Who an entry of central's log is for: `(audience kind, audience value)`.
    #[cfg(test)]
    pub fn central_log_audience(&self, seq: u64) -> Result<(String, Option<String>), StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT audience_kind, audience_value FROM central_log WHERE seq = ?1")?
            .query_row(params![seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))?)
    }

    /// SHA-256 and expiry (seconds) of every logged-out token not expired at `now_s`.
    pub fn revoked_tokens(&self, now_s: u64) -> Result<Vec<([u8; 32], u64)>, StoreError> {
        Ok(crvs_common::server::accounts::revoked_tokens(
            self.conn, now_s,
        )?)
    }

    /// `actor`'s audit rows, newest first, and how many there are in all.
    pub fn audit_of(
        &self,
        actor: &str,
        skip: u32,
        count: u32,
    ) -> Result<(Vec<crvs_common::server::accounts::AuditRow>, u64), StoreError> {
        Ok(crvs_common::server::accounts::audit_of(
            self.conn, actor, skip, count,
        )?)
    }

    /// A user's security answers: `(question key, argon2id hash)`, by key.
    pub fn security_answers(
        &self,
        user_id: uuid::Uuid,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .conn
            .prepare_cached(
                "SELECT question_key, answer_hash FROM security_answers WHERE user_id = ?1
                 ORDER BY question_key",
            )?
            .query_map(params![user_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// A user by username (exact; usernames are stored lowercase).
    pub fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        self.user_where("username = ?1", username)
    }

    /// A user by id.
    pub fn user(&self, id: uuid::Uuid) -> Result<Option<UserRow>, StoreError> {
        self.user_where("id = ?1", &id.to_string())
    }

    fn user_where(&self, clause: &str, value: &str) -> Result<Option<UserRow>, StoreError> {
        let sql = format!(
            "SELECT user_json, username, password_hash, created_at FROM users WHERE {clause}"
        );
        let row: Option<(String, String, String, String)> = self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![value], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        row.map(decode_user).transpose()
    }

    /// Every user, by username.
    pub fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        self.users_where("", params![])
    }

    /// The users with this mobile number, by username.
    pub fn users_by_mobile(&self, mobile: &str) -> Result<Vec<UserRow>, StoreError> {
        self.users_where("WHERE mobile = ?1", params![mobile])
    }

    fn users_where(
        &self,
        clause: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<UserRow>, StoreError> {
        let sql = format!(
            "SELECT user_json, username, password_hash, created_at FROM users {clause}
             ORDER BY username"
        );
        let rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map(values, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode_user).collect()
    }

    /// A system client by id.
    pub fn client(&self, id: &str) -> Result<Option<ClientRow>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, name, secret_hash, scopes, status, created_at FROM clients WHERE id = ?1",
            )?
            .query_row(params![id], client_row)
            .optional()?;
        row.map(decode_client).transpose()
    }

    /// Every system client.
    pub fn clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, name, secret_hash, scopes, status, created_at FROM clients ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([], client_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode_client).collect()
    }

    /// [`Self::unused_tracking_ids`], counting no further than `limit`: a bounded walk of the
    /// partial index, for the sync path (a lease can hold thousands of ids).
    pub fn unused_tracking_ids_up_to(
        &self,
        node_id: NodeId,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM tracking_ids
                     WHERE node_id = ?1 AND event_id IS NULL LIMIT ?2)",
            )?
            .query_row(params![node_id.to_string(), i64::from(limit)], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Tracking ids leased to the node and not yet used (counts the whole lease).
    pub fn unused_tracking_ids(&self, node_id: NodeId) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM tracking_ids WHERE node_id = ?1 AND event_id IS NULL",
            )?
            .query_row(params![node_id.to_string()], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Counters.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            Ok(self.conn.query_row(sql, [], |r| r.get::<_, i64>(0))?.max(0) as u64)
        };
        Ok(StoreStats {
            events: count("SELECT count(*) FROM events")?,
            search_index_pending: count("SELECT count(*) FROM search_pending")?,
            relays_pending: count("SELECT count(*) FROM relay_pending")?,
            actions: count("SELECT count(*) FROM actions")?,
            conflicted_events: count("SELECT count(*) FROM events WHERE conflicts > 0")?,
            central_log_seq: count("SELECT coalesce(max(seq), 0) FROM central_log")?,
            nodes: count("SELECT count(*) FROM nodes")?,
            clients: count("SELECT count(*) FROM clients")?,
            tracking_ids_leased: count("SELECT count(*) FROM tracking_ids")?,
        })
    }
}
