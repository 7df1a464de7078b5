//! The account tables node and central both keep, with their SQL: logged-out tokens
//! (`revoked_tokens`), notifications waiting for their transport (`outbox`, login codes and
//! invitations), the audit trail (`audit_log`: reads, searches, logins, user changes) and
//! people's drafts (`drafts`, kept where they were made).
//! Every function runs on the caller's connection, inside the caller's transaction.

use rusqlite::{Connection, params};

use crate::limits::truncate_utf8;
use serde::Serialize;

/// `revoked_tokens` and `outbox` (the node's schema version 5, central's 4).
pub const TOKENS_AND_OUTBOX_DDL: &str = r#"
CREATE TABLE revoked_tokens (
    token_sha256 BLOB PRIMARY KEY,
    expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    channel         TEXT NOT NULL CHECK (channel IN ('sms', 'email')),
    recipient       TEXT NOT NULL,
    template        TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'expired')),
    last_error      TEXT
);
CREATE INDEX outbox_pending ON outbox (next_attempt_ms) WHERE state = 'pending';
"#;

/// `audit_log` (the node's schema version 7, central's 4): who (user or client), when, where
/// (the user's office), what (operation, record, query or change).
pub const AUDIT_LOG_DDL: &str = r#"
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    actor_type  TEXT NOT NULL CHECK (actor_type IN ('user', 'system')),
    location    TEXT,
    operation   TEXT NOT NULL,
    subject     TEXT,
    detail      TEXT
);
CREATE INDEX audit_by_actor ON audit_log (actor, id);
"#;

/// `drafts` (the node's schema version 8, central's 8): a user's unsubmitted work on an action
/// (OpenCRVS's action drafts), one per record and user, dropped when the record gets any action
/// other than READ, ASSIGN or UNASSIGN.
pub const DRAFTS_DDL: &str = r#"
CREATE TABLE drafts (
    event_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    id         TEXT NOT NULL UNIQUE,
    draft_json TEXT NOT NULL,
    PRIMARY KEY (event_id, user_id)
) WITHOUT ROWID;
CREATE INDEX drafts_by_user ON drafts (user_id);
"#;

/// Longest `detail` kept (a search query, for example), in bytes.
pub const AUDIT_DETAIL_BYTES_MAX: usize = 4096;

/// Most rows one audit listing returns.
pub const AUDIT_PAGE_MAX: u32 = 100;

/// One audited operation, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// User or client id.
    pub actor: String,
    /// `user` or `system`.
    pub actor_type: &'static str,
    /// The user's office, if any.
    pub location: Option<uuid::Uuid>,
    /// `record.read`, `record.search`, `user.logged_in`, `user.logged_out`, `user.created`, ...
    pub operation: &'static str,
    /// The record or user, if one.
    pub subject: Option<String>,
    /// More about it (a search's query), cut to [`AUDIT_DETAIL_BYTES_MAX`].
    pub detail: Option<String>,
}

/// One audited operation, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    /// Row id (increasing).
    pub id: i64,
    /// When (ISO 8601).
    pub at: String,
    /// User or client id.
    pub actor: String,
    /// `user` or `system`.
    pub actor_type: String,
    /// Where (the user's office).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// What.
    pub operation: String,
    /// On which record or user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Details (a search's query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Row id.
    pub id: i64,
    /// `sms` or `email`.
    pub channel: String,
    /// Phone number or email address.
    pub recipient: String,
    /// What it is (`authentication-code`, `user-invite`, ...).
    pub template: String,
    /// The text to send.
    pub body: String,
    /// Sending it after this is pointless (the code it carries has expired).
    pub expires_at_ms: u64,
    /// Failed attempts so far.
    pub attempts: u32,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Writes one audit row at `now_ms`.
pub fn audit(conn: &Connection, now_ms: u64, entry: &AuditEntry) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at_ms, actor, actor_type, location, operation, subject, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        i64_of(now_ms),
        entry.actor,
        entry.actor_type,
        entry.location.map(|l| l.to_string()),
        entry.operation,
        entry.subject,
        entry
            .detail
            .as_deref()
            .map(|d| truncate_utf8(d, AUDIT_DETAIL_BYTES_MAX)),
    ])?;
    Ok(())
}

/// `actor`'s audit rows, newest first (at most [`AUDIT_PAGE_MAX`]), and how many there are.
pub fn audit_of(
    conn: &Connection,
    actor: &str,
    skip: u32,
    count: u32,
) -> rusqlite::Result<(Vec<AuditRow>, u64)> {
    let total: i64 = conn
        .prepare_cached("SELECT count(*) FROM audit_log WHERE actor = ?1")?
        .query_row(params![actor], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, at_ms, actor, actor_type, location, operation, subject, detail
         FROM audit_log WHERE actor = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
    )?;
    let rows = stmt
        .query_map(
            params![actor, i64::from(count.min(AUDIT_PAGE_MAX)), i64::from(skip)],
            |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: crate::event::format_timestamp_ms(u64_of(r.get(1)?)),
                    actor: r.get(2)?,
                    actor_type: r.get(3)?,
                    location: r.get(4)?,
                    operation: r.get(5)?,
                    subject: r.get(6)?,
                    detail: r.get(7)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((rows, u64_of(total)))
}

/// SHA-256 and expiry (seconds) of every logged-out token that has not expired at `now_s`.
/// A stored hash that is not 32 bytes is skipped (it cannot match a token).
pub fn revoked_tokens(conn: &Connection, now_s: u64) -> rusqlite::Result<Vec<([u8; 32], u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT token_sha256, expires_at FROM revoked_tokens WHERE expires_at > ?1",
    )?;
    let rows = stmt
        .query_map(params![i64_of(now_s)], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(h, exp)| Some((<[u8; 32]>::try_from(h.as_slice()).ok()?, u64_of(exp))))
        .collect())
}

/// Remembers a logged-out token until it would have expired; forgets expired ones.
pub fn revoke_token(
    conn: &Connection,
    now_ms: u64,
    sha256: [u8; 32],
    expires_at_s: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM revoked_tokens WHERE expires_at <= ?1")?
        .execute(params![i64_of(now_ms / 1000)])?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO revoked_tokens (token_sha256, expires_at) VALUES (?1, ?2)",
    )?
    .execute(params![sha256.as_slice(), i64_of(expires_at_s)])?;
    Ok(())
}

/// A notification to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `sms` or `email`.
    pub channel: &'static str,
    /// Phone number or email address.
    pub recipient: String,
    /// What it is (`authentication-code`, `user-invite`, ...).
    pub template: &'static str,
    /// The text.
    pub body: String,
    /// Not sent after this.
    pub expires_at_ms: u64,
}

/// Queues a notification; its transport picks it up. Returns the row id.
pub fn enqueue(conn: &Connection, now_ms: u64, n: &Notification) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "INSERT INTO outbox (channel, recipient, template, body, created_at_ms,
                             expires_at_ms, next_attempt_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)",
    )?
    .execute(params![
        n.channel,
        n.recipient,
        n.template,
        n.body,
        i64_of(now_ms),
        i64_of(n.expires_at_ms)
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Pending notifications due at `now_ms`, oldest first.
pub fn outbox_due(
    conn: &Connection,
    now_ms: u64,
    limit: usize,
) -> rusqlite::Result<Vec<OutboxItem>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, channel, recipient, template, body, expires_at_ms, attempts FROM outbox
         WHERE state = 'pending' AND next_attempt_ms <= ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(
            params![i64_of(now_ms), i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(OutboxItem {
                    id: r.get(0)?,
                    channel: r.get(1)?,
                    recipient: r.get(2)?,
                    template: r.get(3)?,
                    body: r.get(4)?,
                    expires_at_ms: u64_of(r.get(5)?),
                    attempts: u32::try_from(r.get::<_, i64>(6)?).unwrap_or(u32::MAX),
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Notifications not sent yet.
pub fn outbox_pending(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM outbox WHERE state = 'pending'")?
        .query_row([], |r| r.get(0))?;
    Ok(u64_of(n))
}

/// Marks a notification sent and forgets its text (a login code has no business on disk once
/// delivered).
pub fn outbox_sent(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE outbox SET state = 'sent', body = '' WHERE id = ?1")?
        .execute(params![id])?;
    Ok(())
}

/// Records a failed attempt; the next one is not before `next_attempt_ms`.
pub fn outbox_failed(
    conn: &Connection,
    id: i64,
    error: &str,
    next_attempt_ms: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3
         WHERE id = ?1",
    )?
    .execute(params![id, error, i64_of(next_attempt_ms)])?;
    Ok(())
}

/// Deletes sent and expired notifications created before `before_ms` (their text is gone
/// already); returns how many.
pub fn outbox_prune(conn: &Connection, before_ms: u64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM outbox WHERE state != 'pending' AND created_at_ms < ?1")?
        .execute(params![i64_of(before_ms)])
}

/// Gives up on pending notifications that expired at `now_ms`, and forgets their text.
pub fn outbox_expire(conn: &Connection, now_ms: u64) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE outbox SET state = 'expired', body = ''
         WHERE state = 'pending' AND expires_at_ms <= ?1",
    )?
    .execute(params![i64_of(now_ms)])
}

/// Stores `user_id`'s draft on `event_id` (replacing their previous one): `draft_json` is the
/// draft as answered, `id` its id.
pub fn put_draft(
    conn: &Connection,
    event_id: &str,
    user_id: &str,
    id: &str,
    draft_json: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO drafts (event_id, user_id, id, draft_json) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(event_id, user_id) DO UPDATE SET id = excluded.id,
             draft_json = excluded.draft_json",
    )?
    .execute(params![event_id, user_id, id, draft_json])?;
    Ok(())
}

/// Drops every draft on `event_id` (the record got a real action).
pub fn clear_drafts(conn: &Connection, event_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM drafts WHERE event_id = ?1")?
        .execute(params![event_id])?;
    Ok(())
}

/// `user_id`'s drafts (JSON as answered), oldest record first.
pub fn drafts_of(conn: &Connection, user_id: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT draft_json FROM drafts WHERE user_id = ?1 ORDER BY event_id")?;
    let rows = stmt
        .query_map(params![user_id], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(TOKENS_AND_OUTBOX_DDL).unwrap();
        conn.execute_batch(AUDIT_LOG_DDL).unwrap();
        conn
    }

    #[test]
    fn details_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("aéb", 3), "aé");
    }

    #[test]
    fn outbox_life() {
        let conn = db();
        let n = Notification {
            channel: "sms",
            recipient: "+260911000000".into(),
            template: "authentication-code",
            body: "123456".into(),
            expires_at_ms: 10_000,
        };
        let id = enqueue(&conn, 1_000, &n).unwrap();
        enqueue(&conn, 1_000, &n).unwrap();
        assert_eq!(outbox_pending(&conn).unwrap(), 2);
        assert_eq!(outbox_due(&conn, 1_000, 10).unwrap().len(), 2);
        outbox_failed(&conn, id, "modem", 5_000).unwrap();
        let due = outbox_due(&conn, 2_000, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_ne!(due[0].id, id);
        outbox_sent(&conn, due[0].id).unwrap();
        assert_eq!(outbox_pending(&conn).unwrap(), 1);
        assert_eq!(outbox_expire(&conn, 10_000).unwrap(), 1);
        assert_eq!(outbox_pending(&conn).unwrap(), 0);
        assert_eq!(outbox_prune(&conn, 1_000).unwrap(), 0);
        assert_eq!(outbox_prune(&conn, 1_001).unwrap(), 2);
    }

    #[test]
    fn revocations_outlive_nothing_but_their_token() {
        let conn = db();
        revoke_token(&conn, 0, [1; 32], 100).unwrap();
        revoke_token(&conn, 0, [2; 32], 50).unwrap();
        assert_eq!(revoked_tokens(&conn, 60).unwrap(), vec![([1; 32], 100)]);
        // A later revocation forgets the expired one.
        revoke_token(&conn, 60_000, [3; 32], 200).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM revoked_tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn audit_rows_page_newest_first() {
        let conn = db();
        for i in 0..3 {
            let entry = AuditEntry {
                actor: "u1".into(),
                actor_type: "user",
                location: None,
                operation: "record.read",
                subject: Some(format!("e{i}")),
                detail: Some("x".repeat(AUDIT_DETAIL_BYTES_MAX + 10)),
            };
            audit(&conn, 1_000 + i, &entry).unwrap();
        }
        let (rows, total) = audit_of(&conn, "u1", 1, 1).unwrap();
        assert_eq!(total, 3);
        assert_eq!(rows[0].subject.as_deref(), Some("e1"));
        assert_eq!(
            rows[0].detail.as_ref().map(String::len),
            Some(AUDIT_DETAIL_BYTES_MAX)
        );
    }
}
