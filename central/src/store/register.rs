//! Central's own actions on events, and the one that matters most: confirming a requested
//! REGISTER with a registration number. Central signs its actions into its log as an `actions`
//! record with its automerge change, for the nodes of the event's area, in the transaction that
//! applied what asked for them.
//!
//! Exactly once: a requested REGISTER gets one answer: Accepted with a number, or Rejected (with
//! `content.reason`) when the event already has one, was archived or sent back, or is a
//! potential duplicate (the event type's rules, `dedup.rs`; a DUPLICATE_DETECTED action lists
//! the matches, and a registrar's MARK_AS_NOT_DUPLICATE lets the next request through); and the number is unique by the `registration_numbers` keys
//! (number, event, requested action) as well as by construction (a counter per year and prefix),
//! so a retry, a re-delivered entry or a restart never issues a second one.

use crvs_common::event::EventDocument;
use crvs_common::event::{ActionDocument, ActionStatus, ActionType, Declaration, EntryPayload};
use crvs_common::feed::CentralRecord;
use crvs_common::state::{EventIndex, EventStatus, FLAG_REJECTED, effective_declaration};
use rusqlite::{OptionalExtension as _, params};

use super::dedup::Verdict;
use super::write::WriteTx;
use super::{Audience, StoreError};

/// Numbers tried before a registration is left requested (a random clash is one in 36^N; a
/// counted one happens only after a change of format).
const NUMBER_ATTEMPTS: usize = 8;

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl WriteTx<'_> {
    /// Records `actions` as central's, on an event central holds: stored, merged into the
    /// event's automerge document, signed into central's log for the event's area, and the
    /// index re-derived.
    pub fn record_actions(
        &mut self,
        event_id: uuid::Uuid,
        actions: Vec<ActionDocument>,
    ) -> Result<(), StoreError> {
        let event_key = event_id.to_string();
        let (event_type, tracking_id, created_at, area): (String, String, String, Option<String>) =
            self.conn()
                .prepare_cached(
                    "SELECT event_type, tracking_id, created_at, admin_area_id FROM events
                     WHERE id = ?1",
                )?
                .query_row(params![event_key], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?
                .ok_or_else(|| StoreError::Invalid(format!("no event {event_id}")))?;
        let doc = self
            .reader()
            .event_document(event_id)?
            .ok_or_else(|| StoreError::Invalid(format!("no event {event_id}")))?;
        // References resolve against the record as it will stand: an Accepted action made
        // here points at the Requested one recorded with it.
        let mut all = doc.actions;
        all.extend(actions.iter().cloned());
        let mut delta = Declaration::new();
        for action in &actions {
            delta.extend(effective_declaration(action, &all));
        }
        let mut merge = self.load_crdt(event_id)?;
        let change = merge
            .crdt
            .record(&actions, &delta, i64_of(self.now_ms()))
            .map_err(|e| StoreError::Corrupt(format!("crdt of {event_id}: {e}")))?;
        merge.appended.extend_from_slice(&change);
        let payload = EntryPayload {
            event_id,
            event_type,
            tracking_id,
            event_created_at: created_at,
            actions: actions.clone(),
        };
        let area = area.as_deref().map(super::read::parse_uuid).transpose()?;
        let head = self.append_actions_record(
            &CentralRecord::Actions(payload),
            event_id,
            Audience::Area(area),
            change,
        )?;
        let origin = self.central_id().to_string();
        for action in &actions {
            self.store_action(
                &event_key,
                action,
                &origin,
                head.seq,
                super::write::Body::Json,
            )?;
        }
        self.refresh_index(event_id, &merge)
    }

    /// The event and request hash of the action a person asked for at central with
    /// `transaction_id`, if any.
    pub fn request_by_transaction(
        &self,
        transaction_id: &str,
        action_type: &str,
    ) -> Result<Option<(uuid::Uuid, Vec<u8>)>, StoreError> {
        let row: Option<(String, Vec<u8>)> = self
            .conn()
            .prepare_cached(
                "SELECT event_id, request_hash FROM action_requests
                 WHERE transaction_id = ?1 AND action_type = ?2",
            )?
            .query_row(params![transaction_id, action_type], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        row.map(|(event, hash)| Ok((super::read::parse_uuid(&event)?, hash)))
            .transpose()
    }

    /// Records the request behind an action a person made at central (see
    /// [`Self::request_by_transaction`]).
    pub fn record_request(
        &mut self,
        transaction_id: &str,
        action_type: &str,
        event_id: uuid::Uuid,
        hash: &[u8],
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO action_requests (transaction_id, action_type, event_id, request_hash)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                transaction_id,
                action_type,
                event_id.to_string(),
                hash
            ])?;
        Ok(())
    }

    /// Answers every REGISTER of `event_id` still requested: the first with an Accepted
    /// REGISTER carrying a new registration number, any other (the event is registered by then)
    /// with a Rejected one. Before a number: the duplicate rules, then the confirmation hook if
    /// one applies (the request then stays requested until the hook answers, `hooks.rs`). A
    /// request no number could be issued for stays requested (logged).
    pub fn confirm_registrations(&mut self, event_id: uuid::Uuid) -> Result<(), StoreError> {
        let Some(doc) = self.reader().event_document(event_id)? else {
            return Ok(());
        };
        let answered = |request: &ActionDocument| {
            doc.actions.iter().any(|a| {
                a.action_type == ActionType::Register
                    && a.status != ActionStatus::Requested
                    && a.original_action_id == Some(request.id)
            })
        };
        let pending: Vec<ActionDocument> = doc
            .actions
            .iter()
            .filter(|a| {
                a.action_type == ActionType::Register
                    && a.status == ActionStatus::Requested
                    && !answered(a)
            })
            .cloned()
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let registrable = self.registrable(&doc)?;
        // Duplicates are looked for once, before the first number would be issued.
        let mut verdict = None;
        for request in pending {
            if self.hook_pending(request.id)? {
                continue;
            }
            let registered = self.registered_number(event_id)?;
            if registered.is_none() && registrable && verdict.is_none() {
                verdict = Some(self.duplicate_verdict(&doc)?);
            }
            let mut actions = Vec::with_capacity(2);
            let (status, number, reason) = match (&registered, &verdict) {
                // Another request of this event got the number (this one is answered below).
                (Some(_), _) => (ActionStatus::Rejected, None, "already registered"),
                // Archived or rejected meanwhile (by an action that reached central first).
                (None, _) if !registrable => (
                    ActionStatus::Rejected,
                    None,
                    "archived or sent back for updates",
                ),
                (None, Some(Verdict::Duplicates(found))) => {
                    let duplicates: Vec<serde_json::Value> = found
                        .iter()
                        .map(|(id, tracking)| serde_json::json!({"id": id, "trackingId": tracking}))
                        .collect();
                    actions.push(ActionDocument {
                        action_type: ActionType::DuplicateDetected,
                        original_action_id: None,
                        content: Some(serde_json::json!({"duplicates": duplicates})),
                        ..self.answer_of(&request, ActionStatus::Accepted)
                    });
                    // Reported once; a later request of this batch is refused as unreviewed.
                    verdict = Some(Verdict::Refused("potential duplicate not yet reviewed"));
                    (ActionStatus::Rejected, None, "potential duplicate")
                }
                (None, Some(Verdict::Refused(reason))) => (ActionStatus::Rejected, None, *reason),
                (None, _) => {
                    let index = self.reader().index_entry(event_id)?;
                    let hooked = index.as_ref().is_some_and(|index| {
                        self.registration()
                            .hooks
                            .iter()
                            .any(|h| h.action == ActionType::Register && h.applies(index))
                    });
                    if hooked {
                        self.enqueue_hook(event_id, request.id)?;
                        continue;
                    }
                    match self.issue_number(event_id, request.id)? {
                        Some(number) => (ActionStatus::Accepted, Some(number), ""),
                        None => continue,
                    }
                }
            };
            actions.push(ActionDocument {
                registration_number: number,
                content: (status == ActionStatus::Rejected)
                    .then(|| serde_json::json!({"reason": reason})),
                ..self.answer_of(&request, status)
            });
            self.record_actions(event_id, actions)?;
        }
        Ok(())
    }

    /// The skeleton of central's answer to `request`: same actor and transaction, a new id,
    /// pointing back at the request, nothing carried.
    pub(super) fn answer_of(
        &self,
        request: &ActionDocument,
        status: ActionStatus,
    ) -> ActionDocument {
        ActionDocument {
            id: uuid::Uuid::now_v7(),
            status,
            original_action_id: Some(request.id),
            registration_number: None,
            created_at: crvs_common::event::format_timestamp_ms(self.now_ms()),
            declaration: None,
            annotation: None,
            content: None,
            assigned_to: None,
            request_id: None,
            ..request.clone()
        }
    }

    /// Whether the record, as the actions other than REGISTER leave it, may be registered: not
    /// archived, not sent back for updates.
    pub(super) fn registrable(&self, doc: &EventDocument) -> Result<bool, StoreError> {
        let others: Vec<ActionDocument> = doc
            .actions
            .iter()
            .filter(|a| a.action_type != ActionType::Register)
            .cloned()
            .collect();
        let index = EventIndex::from_document(&EventDocument {
            actions: others,
            ..doc.clone()
        });
        Ok(
            index.status != EventStatus::Archived
                && !index.flags.iter().any(|f| f == FLAG_REJECTED),
        )
    }

    /// The registration number `event_id` holds, if any.
    pub(super) fn registered_number(
        &self,
        event_id: uuid::Uuid,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT number FROM registration_numbers WHERE event_id = ?1")?
            .query_row(params![event_id.to_string()], |r| r.get::<_, String>(0))
            .optional()?)
    }

    /// Claims `number` (given by a confirmation hook) for `event_id`; false when another
    /// record or request holds it, or the event has a number already.
    pub(super) fn claim_registration_number(
        &mut self,
        event_id: uuid::Uuid,
        requested: uuid::Uuid,
        number: &str,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .conn()
            .prepare_cached(
                "INSERT INTO registration_numbers (number, event_id, requested_action_id, issued_at_ms)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                number,
                event_id.to_string(),
                requested.to_string(),
                i64_of(self.now_ms())
            ])?;
        Ok(inserted == 1)
    }

    /// A new number for `requested`, or `None` (logged) when none could be issued: the request
    /// stays requested.
    pub(super) fn issue_number(
        &mut self,
        event_id: uuid::Uuid,
        requested: uuid::Uuid,
    ) -> Result<Option<String>, StoreError> {
        let number = self.issue_registration_number(event_id, requested)?;
        if number.is_none() {
            tracing::error!(
                event = %event_id,
                "no registration number could be issued; REGISTER stays requested"
            );
        }
        Ok(number)
    }

    /// A new registration number for `event_id`, answering `requested`; `None` when a counted
    /// format has no number left this year.
    fn issue_registration_number(
        &mut self,
        event_id: uuid::Uuid,
        requested: uuid::Uuid,
    ) -> Result<Option<String>, StoreError> {
        let format = self.registration().format.clone();
        let year: i32 = crvs_common::event::format_timestamp_ms(self.now_ms())
            .get(..4)
            .and_then(|y| y.parse().ok())
            .unwrap_or(1970);
        // A counted number can clash only with one issued under another format (or imported):
        // the next counter value is tried, as a random one is redrawn.
        for _ in 0..NUMBER_ATTEMPTS {
            let seq = if format.counted() {
                let scope = format.counter_scope(year);
                let last: u64 = self
                    .conn()
                    .prepare_cached(
                        "INSERT INTO registration_counters (scope, last) VALUES (?1, 1)
                         ON CONFLICT(scope) DO UPDATE SET last = last + 1
                         RETURNING last",
                    )?
                    .query_row(params![scope], |r| r.get::<_, i64>(0))
                    .map(|v| u64::try_from(v).unwrap_or(0))?;
                if last > format.seq_max() {
                    return Ok(None);
                }
                last
            } else {
                0
            };
            let random = crate::keys::random_bytes::<64>()
                .map_err(|e| StoreError::Corrupt(format!("random source: {e}")))?;
            let mut draws = random.into_iter().cycle();
            let Some(number) = format.render(year, seq, || draws.next().unwrap_or(0)) else {
                return Ok(None);
            };
            let inserted = self
                .conn()
                .prepare_cached(
                    "INSERT INTO registration_numbers (number, event_id, requested_action_id, issued_at_ms)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT(number) DO NOTHING",
                )?
                .execute(params![
                    number,
                    event_id.to_string(),
                    requested.to_string(),
                    i64_of(self.now_ms())
                ])?;
            if inserted == 1 {
                return Ok(Some(number));
            }
        }
        tracing::error!(
            event = %event_id,
            "no free registration number after {NUMBER_ATTEMPTS} tries; widen the format"
        );
        Ok(None)
    }
}
