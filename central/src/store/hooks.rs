//! External confirmation of registrations (OpenCRVS §4.3, the National ID / country-config
//! pattern), the store's half: which records a configured hook must confirm, the durable queue
//! of hook calls (`hook_jobs`, written in the transaction that left the REGISTER requested, so
//! nothing is lost across restarts), and the answers the hook's replies (or its signed
//! callback) turn into. The HTTP calls are `crate::hooks`.

use std::collections::BTreeMap;

use crvs_common::event::{ActionDocument, ActionStatus, ActionType};
use crvs_common::state::EventIndex;
use rusqlite::{OptionalExtension as _, params};

use super::StoreError;
use super::write::WriteTx;

/// A configured confirmation hook: for which action and records, and where to call.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionHook {
    /// The action it confirms (`REGISTER`).
    pub action: ActionType,
    /// Base URL; central calls `{url}/trigger/events/{eventType}/actions/{ActionType}`.
    pub url: String,
    /// The event types it applies to; empty = every type.
    pub event_types: Vec<String>,
    /// Declaration values a record must have to go through the hook (all of them; empty =
    /// every record), e.g. `mother.idType = "NATIONAL_ID"`.
    pub when: BTreeMap<String, serde_json::Value>,
}

impl ActionHook {
    /// Whether the record `index` goes through this hook.
    pub fn applies(&self, index: &EventIndex) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&index.event_type))
            && self
                .when
                .iter()
                .all(|(field, value)| index.declaration.get(field) == Some(value))
    }
}

/// A hook call to make (or made, waiting for its callback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookJob {
    /// The Requested action the hook confirms.
    pub action_id: uuid::Uuid,
    /// Its record.
    pub event_id: uuid::Uuid,
    /// Calls made so far.
    pub attempts: u32,
}

/// How a hook (or its callback) answered a requested registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAnswer {
    /// Accepted, with the hook's registration number if it gave one (else central issues
    /// one), and a national id if it gave one (kept in the Accepted action's `content`).
    Accept {
        /// The hook's number.
        registration_number: Option<String>,
        /// The national id the hook assigned.
        national_id: Option<String>,
    },
    /// Rejected, with the hook's reason.
    Reject {
        /// Why.
        reason: String,
    },
}

impl HookAnswer {
    /// Accepted, central issuing the number.
    pub fn accepted() -> Self {
        Self::Accept {
            registration_number: None,
            national_id: None,
        }
    }
}

/// What became of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// Recorded (or it had been, identically: a repeated callback).
    Done,
    /// The request had already been answered the other way.
    AlreadyOtherwise,
    /// No such requested REGISTER on that record.
    NoRequest,
}

impl WriteTx<'_> {
    /// Queues the hook call for `request` (idempotent).
    pub(super) fn enqueue_hook(
        &mut self,
        event_id: uuid::Uuid,
        request: uuid::Uuid,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT OR IGNORE INTO hook_jobs
                     (action_id, event_id, state, attempts, next_at_ms, last_error)
                 VALUES (?1, ?2, 'due', 0, ?3, NULL)",
            )?
            .execute(params![
                request.to_string(),
                event_id.to_string(),
                i64::try_from(self.now_ms()).unwrap_or(i64::MAX)
            ])?;
        Ok(())
    }

    /// Whether a hook call for `request` is queued or waiting for its callback.
    pub(super) fn hook_pending(&self, request: uuid::Uuid) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT 1 FROM hook_jobs WHERE action_id = ?1")?
            .query_row(params![request.to_string()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The hook answered 202: no more calls; its callback answers.
    pub fn hook_waiting(&mut self, request: uuid::Uuid) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE hook_jobs SET state = 'waiting', attempts = attempts + 1, last_error = NULL
                 WHERE action_id = ?1",
            )?
            .execute(params![request.to_string()])?;
        Ok(())
    }

    /// The call failed (hook down, timeout, an unexpected status): try again at `next_at_ms`.
    pub fn hook_retry(
        &mut self,
        request: uuid::Uuid,
        next_at_ms: u64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE hook_jobs SET attempts = attempts + 1, next_at_ms = ?2, last_error = ?3
                 WHERE action_id = ?1",
            )?
            .execute(params![
                request.to_string(),
                i64::try_from(next_at_ms).unwrap_or(i64::MAX),
                crvs_common::limits::truncate_utf8(error, 500)
            ])?;
        Ok(())
    }

    /// Records the hook's `answer` to the requested REGISTER `request` of `event_id` and drops
    /// its job. A record archived or sent back meanwhile is rejected whatever the hook said; a
    /// number the hook gave that another record holds rejects the request (logged).
    pub fn answer_hook(
        &mut self,
        event_id: uuid::Uuid,
        request: uuid::Uuid,
        answer: HookAnswer,
    ) -> Result<Answered, StoreError> {
        let Some(doc) = self.reader().event_document(event_id)? else {
            return Ok(Answered::NoRequest);
        };
        let Some(requested) = doc
            .actions
            .iter()
            .find(|a| {
                a.id == request
                    && a.action_type == ActionType::Register
                    && a.status == ActionStatus::Requested
            })
            .cloned()
        else {
            return Ok(Answered::NoRequest);
        };
        let given = doc
            .actions
            .iter()
            .find(|a| a.original_action_id == Some(request) && a.status != ActionStatus::Requested)
            .map(|a| a.status);
        let wanted = match answer {
            HookAnswer::Accept { .. } => ActionStatus::Accepted,
            HookAnswer::Reject { .. } => ActionStatus::Rejected,
        };
        if let Some(given) = given {
            self.drop_hook_job(request)?;
            return Ok(if given == wanted {
                Answered::Done
            } else {
                Answered::AlreadyOtherwise
            });
        }
        self.drop_hook_job(request)?;
        let outcome = match answer {
            HookAnswer::Reject { reason } => Outcome::Reject(reason),
            HookAnswer::Accept { .. } if self.registered_number(event_id)?.is_some() => {
                Outcome::Reject("already registered".to_owned())
            }
            HookAnswer::Accept { .. } if !self.registrable(&doc)? => {
                Outcome::Reject("archived or sent back for updates".to_owned())
            }
            HookAnswer::Accept {
                registration_number,
                national_id,
            } => match registration_number {
                Some(number) => {
                    if self.claim_registration_number(event_id, request, &number)? {
                        Outcome::Accept(number, national_id)
                    } else {
                        tracing::warn!(event = %event_id, %number, "the hook's registration number belongs to another record");
                        Outcome::Reject(format!(
                            "registration number {number} belongs to another record"
                        ))
                    }
                }
                None => match self.issue_number(event_id, request)? {
                    Some(number) => Outcome::Accept(number, national_id),
                    None => return Ok(Answered::NoRequest),
                },
            },
        };
        let answer = match outcome {
            Outcome::Accept(number, national_id) => ActionDocument {
                registration_number: Some(number),
                content: national_id.map(|id| serde_json::json!({"nationalId": id})),
                ..self.answer_of(&requested, ActionStatus::Accepted)
            },
            Outcome::Reject(reason) => ActionDocument {
                content: Some(serde_json::json!({"reason": reason})),
                ..self.answer_of(&requested, ActionStatus::Rejected)
            },
        };
        self.record_actions(event_id, vec![answer])?;
        Ok(Answered::Done)
    }

    fn drop_hook_job(&mut self, request: uuid::Uuid) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM hook_jobs WHERE action_id = ?1")?
            .execute(params![request.to_string()])?;
        Ok(())
    }
}

enum Outcome {
    Accept(String, Option<String>),
    Reject(String),
}

impl super::read::ReadCtx<'_> {
    /// Hook calls due at `now_ms` (oldest first), at most `limit`.
    pub fn due_hook_jobs(&self, now_ms: u64, limit: u32) -> Result<Vec<HookJob>, StoreError> {
        let rows: Vec<(String, String, i64)> = self
            .conn()
            .prepare_cached(
                "SELECT action_id, event_id, attempts FROM hook_jobs
                 WHERE state = 'due' AND next_at_ms <= ?1 ORDER BY next_at_ms, action_id LIMIT ?2",
            )?
            .query_map(
                params![i64::try_from(now_ms).unwrap_or(i64::MAX), limit],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(action, event, attempts)| {
                Ok(HookJob {
                    action_id: super::read::parse_uuid(&action)?,
                    event_id: super::read::parse_uuid(&event)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    /// The earliest time a queued hook call is due, if any.
    pub fn next_hook_due(&self) -> Result<Option<u64>, StoreError> {
        let at: Option<i64> = self
            .conn()
            .prepare_cached("SELECT min(next_at_ms) FROM hook_jobs WHERE state = 'due'")?
            .query_row([], |r| r.get(0))?;
        Ok(at.map(|v| u64::try_from(v).unwrap_or(0)))
    }

    /// Hook calls queued, waiting for a callback, and failing (at least one failed attempt).
    pub fn hook_counts(&self) -> Result<(u64, u64, u64), StoreError> {
        Ok(self.conn().query_row(
            "SELECT
                 coalesce(sum(state = 'due'), 0),
                 coalesce(sum(state = 'waiting'), 0),
                 coalesce(sum(state = 'due' AND last_error IS NOT NULL), 0)
             FROM hook_jobs",
            [],
            |r| {
                Ok((
                    u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                ))
            },
        )?)
    }
}
