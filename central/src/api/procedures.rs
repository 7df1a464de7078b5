//! Central's tRPC procedures (OpenCRVS §2.4) over the shared tRPC-over-HTTP handlers
//! (`crvs_common::server::trpc`): reading a record, deleting a draft and every user action, each
//! running the same handler as its REST route.

use std::sync::Arc;

use axum::extract::{Path, State};
use crvs_common::server::actions::UserAction;
use crvs_common::server::trpc::{Procedures, bytes_of, event_id_of};
use serde_json::Value;

use super::{ApiError, AppState, Caller, actions, events};

impl Procedures for AppState {
    fn serves(name: &str) -> bool {
        UserAction::segment_of_procedure(name).is_some()
            || matches!(
                name,
                "event.get"
                    | "event.delete"
                    | "event.actions.register.accept"
                    | "event.actions.register.reject"
            )
    }

    fn is_query(name: &str) -> bool {
        name == "event.get"
    }

    async fn call(
        self: Arc<Self>,
        caller: Caller,
        procedure: String,
        input: Value,
    ) -> Result<Value, ApiError> {
        if let Some(verdict) = procedure.strip_prefix("event.actions.register.") {
            let doc = crate::hooks::callback(self, caller, verdict == "accept", input).await?;
            return serde_json::to_value(doc).map_err(|e| ApiError::internal(&e));
        }
        let id = event_id_of(&input)?;
        let doc = match procedure.as_str() {
            "event.get" => events::read(State(self), caller, Path(id)).await?,
            "event.delete" => actions::delete(State(self), caller, Path(id)).await?,
            other => {
                let segment = UserAction::segment_of_procedure(other).unwrap_or_default();
                actions::user_action(
                    State(self),
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
