//! People at the node: the users central sent down (so they can log in here offline) and the
//! assignments other places won. The logged-out tokens and the outbox live in tables shared
//! with central ([`crvs_common::server::accounts`]).

use crvs_common::server::accounts;
use crvs_common::user::{User, UserStatus};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{ReadCtx, StoreError};

/// A user as the node stores it.
pub use crvs_common::user::Account as UserRow;

/// Inserts or replaces a user sent down by central.
pub(super) fn put_user(
    conn: &Connection,
    user: &User,
    username: &str,
    password_hash: &str,
) -> Result<(), StoreError> {
    let user_json = serde_json::to_string(user).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    // Another user may have held this username before central renamed them: the newer record
    // wins (central keeps usernames unique, so the older one is stale).
    conn.prepare_cached("DELETE FROM users WHERE username = ?1 AND id <> ?2")?
        .execute(params![username, user.id.to_string()])?;
    conn.prepare_cached(
        "INSERT INTO users (id, username, user_json, password_hash, role, status, primary_office_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET username = excluded.username,
             user_json = excluded.user_json, password_hash = excluded.password_hash,
             role = excluded.role, status = excluded.status,
             primary_office_id = excluded.primary_office_id",
    )?
    .execute(params![
        user.id.to_string(),
        username,
        user_json,
        password_hash,
        user.role,
        status_str(user.status),
        user.primary_office_id.to_string()
    ])?;
    Ok(())
}

/// Most lost-assignment notices kept (the oldest go first).
pub(super) const ASSIGNMENT_NOTICES_KEPT: i64 = 1000;

/// A record whose lock, taken here, went to a user elsewhere once both assignments met.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LostAssignment {
    /// The record.
    pub event_id: String,
    /// Who held it here.
    pub lost_by: String,
    /// Who holds it now, everywhere.
    pub won_by: String,
    /// When the sync told us (ms since the epoch).
    pub at_ms: u64,
}

/// Records that `lost_by`'s assignment of `event_id` was overtaken by `won_by`'s.
pub(super) fn record_lost_assignment(
    conn: &Connection,
    event_id: &str,
    lost_by: &str,
    won_by: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO assignment_notices (event_id, lost_by, won_by, at_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![event_id, lost_by, won_by, now_ms as i64])?;
    conn.prepare_cached(
        "DELETE FROM assignment_notices WHERE id NOT IN
             (SELECT id FROM assignment_notices ORDER BY id DESC LIMIT ?1)",
    )?
    .execute(params![ASSIGNMENT_NOTICES_KEPT])?;
    Ok(())
}

fn status_str(status: UserStatus) -> &'static str {
    match status {
        UserStatus::Active => "active",
        UserStatus::Deactivated => "deactivated",
        UserStatus::Pending => "pending",
    }
}

fn decode_user(
    (json, username, password_hash): (String, String, String),
) -> Result<UserRow, StoreError> {
    let user = serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("user {username}: {e}")))?;
    Ok(UserRow {
        user,
        username,
        password_hash,
    })
}

impl ReadCtx<'_> {
    /// A user by login name.
    pub fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT user_json, username, password_hash FROM users WHERE username = ?1",
            )?
            .query_row(params![username], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        row.map(decode_user).transpose()
    }

    /// A user by id.
    pub fn user(&self, id: uuid::Uuid) -> Result<Option<UserRow>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT user_json, username, password_hash FROM users WHERE id = ?1")?
            .query_row(params![id.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        row.map(decode_user).transpose()
    }

    /// Users with this mobile number.
    pub fn users_by_mobile(&self, mobile: &str) -> Result<Vec<UserRow>, StoreError> {
        Ok(self
            .users()?
            .into_iter()
            .filter(|u| u.user.mobile.as_deref() == Some(mobile))
            .collect())
    }

    /// Every user, by login name.
    pub fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT user_json, username, password_hash FROM users ORDER BY username",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(decode_user).collect()
    }

    /// SHA-256 and expiry (seconds since the epoch) of every logged-out token that has not
    /// expired yet.
    pub fn revoked_tokens(&self, now_s: u64) -> Result<Vec<([u8; 32], u64)>, StoreError> {
        Ok(accounts::revoked_tokens(self.conn, now_s)?)
    }

    /// The most recent lost assignments, newest first.
    pub fn lost_assignments(&self, limit: usize) -> Result<Vec<LostAssignment>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT event_id, lost_by, won_by, at_ms FROM assignment_notices
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(LostAssignment {
                    event_id: r.get(0)?,
                    lost_by: r.get(1)?,
                    won_by: r.get(2)?,
                    at_ms: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
