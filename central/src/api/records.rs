//! Records brought in at central: whole records imported from a legacy register
//! (`POST /events/import`, tRPC `event.bulkImport`, scope `record.import`) and records central's
//! users create (`POST /events`, tRPC `event.create`). The checks are the node's
//! (`crvs_common::server::{import, create}`); the record is central's own, signed into central's
//! log for the nodes of its area (`store::records`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use crvs_common::event::EventDocument;
use crvs_common::server::actions::{acting, request_hash};
use crvs_common::server::auth::TokenUserType;
use crvs_common::server::create::check_create;
use crvs_common::server::import::{check, require_scope};

use super::{ApiError, AppState, Caller, body};
use crate::store::{Brought, WriteTx};

/// The record a write brought in, as stored, or the 409 it was refused with.
fn answer(tx: &WriteTx<'_>, brought: Brought) -> Result<EventDocument, ApiError> {
    match brought {
        Brought::Stored(id) | Brought::Replayed(id) => tx
            .reader()
            .event_document(id)?
            .ok_or_else(|| ApiError::event_not_found(id)),
        Brought::Conflict(message) => Err(ApiError::conflict(message)),
    }
}

/// `POST /events/import`: one whole record from another system.
pub(crate) async fn import_one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    require_scope(&caller)?;
    let doc: EventDocument = body::json(body)?;
    Ok(axum::Json(import(state, caller, doc).await?))
}

/// Imports one record at central; answers it as stored. Importing the same record again
/// answers it unchanged; another record under its id is a 409.
pub(crate) async fn import(
    state: Arc<AppState>,
    caller: Caller,
    mut doc: EventDocument,
) -> Result<EventDocument, ApiError> {
    require_scope(&caller)?;
    let hash = check(&state.config.events, &mut doc)?;
    state
        .store
        .write_async(move |tx| {
            let brought = tx.import_record(&doc, &hash)?;
            answer(tx, brought)
        })
        .await
}

/// tRPC `event.bulkImport`: several records, each in its own transaction; stops at the first
/// refusal (the ones before it are stored).
pub(crate) async fn import_many(
    state: Arc<AppState>,
    caller: Caller,
    docs: Vec<EventDocument>,
) -> Result<Vec<EventDocument>, ApiError> {
    crvs_common::server::import::import_each(docs, |doc| {
        import(Arc::clone(&state), caller.clone(), doc)
    })
    .await
}

/// `POST /events`: a person creates a record at their office; central issues its tracking id
/// from the national id space, and the record is assigned to its creator. Idempotent on
/// `transactionId`. System clients create records at their node.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<EventDocument>, ApiError> {
    let input = check_create(&caller, &state.config.events, body)?;
    if caller.user_type == TokenUserType::System {
        return Err(ApiError::forbidden(
            "At central, records are created by people; a system client creates them at its node",
        ));
    }
    if input.created_at_location.is_some() {
        return Err(ApiError::bad_request(
            "createdAtLocation can only be set by system clients",
        ));
    }
    let actor = acting(state.as_ref(), &caller).await?.actor;
    let hash = request_hash(&input);
    let doc = state
        .store
        .write_async(move |tx| {
            let brought = tx.create_record(
                &input.event_type,
                &input.transaction_id,
                &hash,
                actor.location,
                |now_ms| {
                    vec![
                        actor.action(
                            crvs_common::event::ActionType::Create,
                            crvs_common::event::ActionStatus::Accepted,
                            &input.transaction_id,
                            now_ms,
                        ),
                        actor.self_assignment(&input.transaction_id, now_ms),
                    ]
                },
            )?;
            answer(tx, brought)
        })
        .await?;
    Ok(axum::Json(doc))
}
