//! Import of whole records from another system (`record.import`; OpenCRVS `event.bulkImport`):
//! an `EventDocument` with its own id, tracking id and actions is stored as it is, in one signed
//! log entry, and syncs like any write. For migrations from a legacy register. The checks are
//! shared with central (`crvs_common::server::import`).

use std::sync::Arc;

use crvs_common::event::EventDocument;
use crvs_common::server::import::{check, require_scope};

use crate::api::{ApiError, AppState, Caller};
use crate::store::{EventMeta, NewEvent};

/// Imports one record; answers it as stored. Importing the same record again is a 409.
pub(crate) async fn import(
    state: Arc<AppState>,
    caller: Caller,
    mut doc: EventDocument,
) -> Result<EventDocument, ApiError> {
    require_scope(&caller)?;
    let hash = check(&state.config.events, &mut doc)?;
    state
        .store
        .write(move |ctx| -> Result<EventDocument, ApiError> {
            let transaction_id = format!("import:{}", doc.id);
            let inserted = ctx.insert_imported_event(&NewEvent {
                id: doc.id,
                event_type: &doc.event_type,
                tracking_id: &doc.tracking_id,
                transaction_id: &transaction_id,
                request_hash: &hash,
                created_at: &doc.created_at,
            })?;
            if !inserted {
                return Err(ApiError::conflict(format!(
                    "A record with id {} or tracking id {} exists already",
                    doc.id, doc.tracking_id
                )));
            }
            for action in &doc.actions {
                let reader = ctx.reader();
                let same_key = reader.action_by_transaction(
                    &action.transaction_id,
                    action.action_type.as_str(),
                    action.status.as_str(),
                )?;
                if reader.action_document(action.id)?.is_some() || same_key.is_some() {
                    return Err(ApiError::conflict(format!(
                        "Action {} (or its transactionId for {} {}) exists already",
                        action.id,
                        action.action_type.as_str(),
                        action.status.as_str()
                    )));
                }
            }
            let meta = EventMeta::of(&doc);
            for action in doc.actions {
                ctx.append_action(&meta, action, None)?;
            }
            Ok(ctx.finish_event()?)
        })
        .await
}
