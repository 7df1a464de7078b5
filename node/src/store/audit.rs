//! The audit trail and users' drafts (SQL in [`accounts`], shared with central). Audit: one row per
//! read of a record, per search and per login or logout, written in the same write job as what it records (a read's READ action, for example). Local to the
//! node; a user's rows are listed by `GET /api/users/{userId}/audit`.

use crvs_common::server::accounts;

use super::{ReadCtx, StoreError, WriteCtx};

pub use crvs_common::server::accounts::{
    AUDIT_DETAIL_BYTES_MAX, AUDIT_PAGE_MAX, AuditEntry, AuditRow,
};

impl WriteCtx<'_> {
    /// Writes one audit row at this job's time.
    pub fn audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        Ok(accounts::audit(self.conn, self.now_ms, entry)?)
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
        Ok(accounts::put_draft(
            self.conn, event_id, user_id, id, draft_json,
        )?)
    }

    /// Drops every draft on `event_id` (the record got a real action).
    pub fn clear_drafts(&mut self, event_id: &str) -> Result<(), StoreError> {
        clear_drafts(self.conn, event_id)
    }
}

/// Drops every draft on `event_id`.
pub(super) fn clear_drafts(conn: &rusqlite::Connection, event_id: &str) -> Result<(), StoreError> {
    Ok(accounts::clear_drafts(conn, event_id)?)
}

impl ReadCtx<'_> {
    /// `user_id`'s drafts (JSON as answered), oldest record first.
    pub fn drafts_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(accounts::drafts_of(self.conn, user_id)?)
    }

    /// `actor`'s audit rows, newest first, and how many there are in all.
    pub fn audit_of(
        &self,
        actor: &str,
        skip: u32,
        count: u32,
    ) -> Result<(Vec<AuditRow>, u64), StoreError> {
        Ok(accounts::audit_of(self.conn, actor, skip, count)?)
    }
}
