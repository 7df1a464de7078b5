//! The node's tRPC procedures (OpenCRVS §2.4) over the shared tRPC-over-HTTP handlers
//! (`crvs_common::server::trpc`): each procedure runs the same handler as its REST route.

use std::sync::Arc;

use axum::extract::{Path, State};
use crvs_common::server::trpc::{
    Procedures, QUERY_PROCEDURES, RECORD_PROCEDURES, bytes_of, event_id_of,
};
use serde_json::Value;

use super::{ApiError, AppState, Caller, body, events};
use crate::api::events::UserAction;

impl Procedures for AppState {
    fn serves(name: &str) -> bool {
        UserAction::segment_of_procedure(name).is_some() || RECORD_PROCEDURES.contains(&name)
    }

    fn is_query(name: &str) -> bool {
        QUERY_PROCEDURES.contains(&name)
    }

    async fn call(
        self: Arc<Self>,
        caller: Caller,
        procedure: String,
        input: Value,
    ) -> Result<Value, ApiError> {
        let state = self;
        let doc = match procedure.as_str() {
            "event.create" => events::create(State(state), caller, bytes_of(&input)).await?,
            "event.get" => {
                let id = event_id_of(&input)?;
                events::read(State(state), caller, Path(id)).await?
            }
            "event.list" => {
                let query = events::ListQuery::from_trpc(input)?;
                let out = events::list_with(state, caller, query).await?;
                return serde_json::to_value(out).map_err(|e| ApiError::internal(&e));
            }
            "event.draft.create" => {
                let id = event_id_of(&input)?;
                let body = bytes_of(&input);
                let input: events::DraftInput = body::json(body)?;
                return events::drafts_create(state, caller, &id, input).await;
            }
            "event.bulkImport" => {
                let docs = crvs_common::server::import::bulk_input(input)?;
                let stored = events::import_many(state, caller, docs).await?;
                return serde_json::to_value(stored).map_err(|e| ApiError::internal(&e));
            }
            "event.draft.list" => return events::drafts_list(state, caller).await,
            "event.delete" => {
                let id = event_id_of(&input)?;
                events::delete(State(state), caller, Path(id)).await?
            }
            other => {
                let segment = UserAction::segment_of_procedure(other).unwrap_or_default();
                let id = event_id_of(&input)?;
                events::user_action(
                    State(state),
                    caller,
                    Path((id, segment.to_owned())),
                    bytes_of(&input),
                )
                .await?
            }
        };
        serde_json::to_value(doc.0).map_err(|e| ApiError::internal(&e))
    }
}
