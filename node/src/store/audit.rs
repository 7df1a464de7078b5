//! The audit trail and users' drafts. Audit: one row per read of a record, per search and per login or logout, written
//! in the same write job as what it records (a read's READ action, for example). Local to the
//! node; a user's rows are listed by `GET /api/users/{userId}/audit`.

use rusqlite::params;
use serde::Serialize;

use super::{ReadCtx, StoreError, WriteCtx};

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
    /// `record.read`, `record.search`, `user.logged_in`, `user.logged_out`.
    pub operation: &'static str,
    /// The record, if one.
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
    /// On which record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Details (a search's query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl WriteCtx<'_> {
    /// Writes one audit row at this job's time.
    pub fn audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit_log (at_ms, actor, actor_type, location, operation, subject, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                self.now_ms as i64,
                entry.actor,
                entry.actor_type,
                entry.location.map(|l| l.to_string()),
                entry.operation,
                entry.subject,
                entry.detail.as_deref().map(|d| cut(d, AUDIT_DETAIL_BYTES_MAX)),
            ])?;
        Ok(())
    }
}

impl WriteCtx<'_> {
    /// Stores `user_id`'s draft on `event_id` (replacing their previous one): `draft_json` is
    /// the draft as answered, `id` its id.
    pub fn put_draft(
        &mut self,
        event_id: &str,
        user_id: &str,
        id: &str,
        draft_json: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO drafts (event_id, user_id, id, draft_json) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(event_id, user_id) DO UPDATE SET id = excluded.id,
                     draft_json = excluded.draft_json",
            )?
            .execute(params![event_id, user_id, id, draft_json])?;
        Ok(())
    }

    /// Drops every draft on `event_id` (the record got a real action).
    pub fn clear_drafts(&mut self, event_id: &str) -> Result<(), StoreError> {
        clear_drafts(self.conn, event_id)
    }
}

/// Drops every draft on `event_id`.
pub(super) fn clear_drafts(conn: &rusqlite::Connection, event_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM drafts WHERE event_id = ?1")?
        .execute(params![event_id])?;
    Ok(())
}

impl ReadCtx<'_> {
    /// `user_id`'s drafts (JSON as answered), oldest record first.
    pub fn drafts_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT draft_json FROM drafts WHERE user_id = ?1 ORDER BY event_id")?;
        let rows = stmt
            .query_map(params![user_id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }

    /// `actor`'s audit rows, newest first, and how many there are in all.
    pub fn audit_of(
        &self,
        actor: &str,
        skip: u32,
        count: u32,
    ) -> Result<(Vec<AuditRow>, u64), StoreError> {
        let total: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM audit_log WHERE actor = ?1")?
            .query_row(params![actor], |r| r.get(0))?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at_ms, actor, actor_type, location, operation, subject, detail
             FROM audit_log WHERE actor = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt
            .query_map(
                params![actor, i64::from(count.min(AUDIT_PAGE_MAX)), i64::from(skip)],
                |r| {
                    Ok(AuditRow {
                        id: r.get(0)?,
                        at: crvs_common::event::format_timestamp_ms(
                            r.get::<_, i64>(1)?.max(0) as u64
                        ),
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
        Ok((rows, total.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn details_are_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aéb", 3), "aé");
    }
}
