//! Central's tRPC procedures (OpenCRVS §2.4) over the shared tRPC-over-HTTP handlers
//! (`crvs_common::server::trpc`): the same record procedures as a node's (read, list, create,
//! import, drafts, delete and every user action), each running the same handler as its REST
//! route.

use std::sync::Arc;

use axum::extract::{Path, State};
use crvs_common::server::actions::UserAction;
use crvs_common::server::drafts::DraftInput;
use crvs_common::server::list::ListQuery;
use crvs_common::server::trpc::{
    Procedures, QUERY_PROCEDURES, RECORD_PROCEDURES, bytes_of, event_id_of,
};
use serde_json::Value;

use super::{ApiError, AppState, Caller, actions, body, drafts, events, list, records};

fn json_of<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::internal(&e))
}

impl Procedures for AppState {
    fn serves(name: &str) -> bool {
        UserAction::segment_of_procedure(name).is_some()
            || RECORD_PROCEDURES.contains(&name)
            || matches!(
                name,
                "event.actions.register.accept" | "event.actions.register.reject"
            )
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
        if let Some(verdict) = procedure.strip_prefix("event.actions.register.") {
            let doc = crate::hooks::callback(self, caller, verdict == "accept", input).await?;
            return json_of(&doc);
        }
        let state = self;
        let doc = match procedure.as_str() {
            "event.create" => records::create(State(state), caller, bytes_of(&input)).await?,
            "event.list" => {
                let query = ListQuery::from_trpc(input)?;
                return json_of(&list::list_with(state, caller, query).await?);
            }
            "event.bulkImport" => {
                let docs = crvs_common::server::import::bulk_input(input)?;
                return json_of(&records::import_many(state, caller, docs).await?);
            }
            "event.draft.create" => {
                let id = event_id_of(&input)?;
                let input: DraftInput = body::json(bytes_of(&input))?;
                return drafts::create(state, caller, &id, input).await;
            }
            "event.draft.list" => return drafts::list(state, caller).await,
            "event.get" => events::read(State(state), caller, Path(event_id_of(&input)?)).await?,
            "event.delete" => {
                actions::delete(State(state), caller, Path(event_id_of(&input)?)).await?
            }
            other => {
                let segment = UserAction::segment_of_procedure(other).unwrap_or_default();
                actions::user_action(
                    State(state),
                    caller,
                    Path((event_id_of(&input)?, segment.to_owned())),
                    bytes_of(&input),
                )
                .await?
            }
        };
        json_of(&doc.0)
    }
}
