//! Records central itself brings in: whole records imported at central from a legacy register
//! (`record.import`) and records central's users create. Each is central's own: its tracking id
//! is claimed in the national id space (`tracking_ids`, held by central), its row and actions
//! stored, its actions merged into a new automerge document and signed into central's log as an
//! `actions` record for the nodes of the record's area, its index derived, and drafts kept at
//! central for central's users, all in the caller's transaction.

use crvs_common::event::{ActionDocument, ActionType, EventDocument};
use rusqlite::{OptionalExtension as _, params};

use super::StoreError;
use super::write::{NewEventRow, WriteTx, registration_answers};

/// The `action_requests` type under which an import at central is kept (by `import:<id>`), so
/// a re-import of the same record is recognised.
const IMPORT_REQUEST: &str = "IMPORT";

/// The `action_requests` type under which a create at central is kept (by `transactionId`).
const CREATE_REQUEST: &str = "CREATE";

/// What became of an import or a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brought {
    /// Stored now.
    Stored(uuid::Uuid),
    /// The same request was answered before (a replay): the record it stored.
    Replayed(uuid::Uuid),
    /// Refused: the id, tracking id, an action id or a registration number belongs to another
    /// record, or the request id was used for another request (a 409).
    Conflict(String),
}

impl WriteTx<'_> {
    /// Imports a whole record at central (checked and put in canonical order by the caller;
    /// `hash` is the hash of the record as imported). The same record imported again is a
    /// replay; another record with its id, or with a tracking id, action id or registration
    /// number central knows, is a conflict. A REGISTER it requested but no one answered is
    /// answered here.
    pub fn import_record(
        &mut self,
        doc: &EventDocument,
        hash: &[u8],
    ) -> Result<Brought, StoreError> {
        let request = format!("import:{}", doc.id);
        if let Some((event_id, stored)) = self.request_by_transaction(&request, IMPORT_REQUEST)? {
            return Ok(if event_id == doc.id && stored == hash {
                Brought::Replayed(event_id)
            } else {
                Brought::Conflict(format!(
                    "Record {} was imported before with other content",
                    doc.id
                ))
            });
        }
        let event_key = doc.id.to_string();
        if self.reader().event_document(doc.id)?.is_some() {
            return Ok(Brought::Conflict(format!(
                "A record with id {} exists already",
                doc.id
            )));
        }
        if self.tracking_id_known(&doc.tracking_id)? {
            return Ok(Brought::Conflict(format!(
                "Tracking id {} was issued or used already",
                doc.tracking_id
            )));
        }
        for action in &doc.actions {
            let known = self
                .conn()
                .prepare_cached("SELECT 1 FROM actions WHERE id = ?1")?
                .query_row(params![action.id.to_string()], |_| Ok(()))
                .optional()?
                .is_some();
            if known {
                return Ok(Brought::Conflict(format!(
                    "Action {} exists already",
                    action.id
                )));
            }
        }
        let answers = registration_answers(&doc.actions);
        if let Some(number) = self.registration_number_taken(&answers)? {
            return Ok(Brought::Conflict(format!(
                "Registration number {number} belongs to another record"
            )));
        }
        let created_at_location = doc
            .actions
            .iter()
            .find(|a| a.action_type == ActionType::Create)
            .and_then(|a| a.created_at_location);
        self.insert_own_event(doc, created_at_location)?;
        // The imported tracking id is claimed in the national id space, held by central.
        let holder = self.central_id().to_string();
        self.conn()
            .prepare_cached(
                "INSERT INTO tracking_ids (id, node_id, granted_at_ms, event_id)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                doc.tracking_id,
                holder,
                i64::try_from(self.now_ms()).unwrap_or(i64::MAX),
                event_key
            ])?;
        self.claim_registration_numbers(&event_key, &answers)?;
        self.record_request(&request, IMPORT_REQUEST, doc.id, hash)?;
        self.record_actions(doc.id, doc.actions.clone())?;
        self.confirm_registrations(doc.id)?;
        Ok(Brought::Stored(doc.id))
    }

    /// Creates a record at central for one of its users: a tracking id drawn from the national
    /// id space for central, the event row in the area of `location` (the user's office), and
    /// the actions `make` builds for the new record (its CREATE and the creator's ASSIGN), at
    /// this transaction's time. Idempotent on `transaction_id` (a replay with another `hash` is
    /// a conflict).
    pub fn create_record(
        &mut self,
        event_type: &str,
        transaction_id: &str,
        hash: &[u8],
        location: Option<uuid::Uuid>,
        make: impl FnOnce(u64) -> Vec<ActionDocument>,
    ) -> Result<Brought, StoreError> {
        if let Some((event_id, stored)) =
            self.request_by_transaction(transaction_id, CREATE_REQUEST)?
        {
            return Ok(if stored == hash {
                Brought::Replayed(event_id)
            } else {
                Brought::Conflict(
                    "transactionId has already been used with a different request".to_owned(),
                )
            });
        }
        // Time-ordered, as a node's new records are.
        let id = uuid::Uuid::now_v7();
        let holder = self.central_id().to_string();
        let tracking_id = self
            .draw_tracking_ids(&holder, 1, Some(&id.to_string()))?
            .pop()
            .ok_or_else(|| StoreError::Random("no tracking id drawn".into()))?;
        let actions = make(self.now_ms());
        let created_at = actions
            .first()
            .map(|a| a.created_at.clone())
            .ok_or_else(|| StoreError::Invalid("a new record needs its CREATE".into()))?;
        let doc = EventDocument {
            id,
            event_type: event_type.to_owned(),
            tracking_id,
            created_at: created_at.clone(),
            updated_at: created_at,
            actions: Vec::new(),
        };
        self.insert_own_event(&doc, location)?;
        self.record_request(transaction_id, CREATE_REQUEST, id, hash)?;
        self.record_actions(id, actions)?;
        Ok(Brought::Stored(id))
    }

    /// Whether central issued, leased or saw `tracking_id` (or a record holds it).
    fn tracking_id_known(&self, tracking_id: &str) -> Result<bool, StoreError> {
        let leased = self
            .conn()
            .prepare_cached("SELECT 1 FROM tracking_ids WHERE id = ?1")?
            .query_row(params![tracking_id], |_| Ok(()))
            .optional()?
            .is_some();
        Ok(leased || self.reader().event_by_tracking_id(tracking_id)?.is_some())
    }

    /// Inserts the row of a record central brings in, in the area of `location`.
    fn insert_own_event(
        &mut self,
        doc: &EventDocument,
        location: Option<uuid::Uuid>,
    ) -> Result<(), StoreError> {
        let event_key = doc.id.to_string();
        let area = match location {
            Some(location) => self.reader().location_area(location)?.flatten(),
            None => None,
        };
        let origin = self.central_id().to_string();
        self.insert_event_row(&NewEventRow {
            event_key: &event_key,
            event_type: &doc.event_type,
            tracking_id: &doc.tracking_id,
            created_at: &doc.created_at,
            origin: &origin,
            area: area.as_deref(),
        })?;
        Ok(())
    }

    /// Stores `user_id`'s draft on `event_id` (replacing their previous one).
    pub fn put_draft(
        &mut self,
        event_id: uuid::Uuid,
        user_id: &str,
        id: uuid::Uuid,
        draft_json: &str,
    ) -> Result<(), StoreError> {
        Ok(crvs_common::server::accounts::put_draft(
            self.conn(),
            &event_id.to_string(),
            user_id,
            &id.to_string(),
            draft_json,
        )?)
    }

    /// Drops every draft on `event_id` (the record got a real action).
    pub fn clear_drafts(&mut self, event_id: uuid::Uuid) -> Result<(), StoreError> {
        Ok(crvs_common::server::accounts::clear_drafts(
            self.conn(),
            &event_id.to_string(),
        )?)
    }
}

impl super::ReadCtx<'_> {
    /// `user_id`'s drafts (JSON as answered), oldest record first.
    pub fn drafts_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(crvs_common::server::accounts::drafts_of(
            self.conn(),
            user_id,
        )?)
    }
}
