//! People routes at a node: `GET /api/users/{userId}/audit`, a user's audit trail (reads,
//! searches, logins) as this node recorded it. A user may list their own; listing someone
//! else's needs a `user.read` scope.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, Caller};
use crate::store::{AUDIT_PAGE_MAX, AuditRow};

/// Paging of the audit listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    skip: u32,
    #[serde(default = "default_count")]
    count: u32,
}

fn default_count() -> u32 {
    10
}

/// Audit listing answer.
#[derive(Debug, Serialize)]
pub(crate) struct AuditOutput {
    results: Vec<AuditRow>,
    total: u64,
}

/// `GET /api/users/{userId}/audit?skip=0&count=10`: newest first.
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(user_id): Path<String>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AuditOutput>, ApiError> {
    if caller.id != user_id && !caller.scopes.has_kind("user.read") {
        return Err(ApiError::forbidden(
            "Missing scope user.read to list another user's audit",
        ));
    }
    let Query(query) =
        query.map_err(|e| ApiError::input_one("invalid_type", e.body_text(), &["query"]))?;
    if query.count == 0 || query.count > AUDIT_PAGE_MAX {
        return Err(ApiError::input_one(
            "too_big",
            format!("count must be between 1 and {AUDIT_PAGE_MAX}"),
            &["count"],
        ));
    }
    let (results, total) = state
        .store
        .read(move |r| r.audit_of(&user_id, query.skip, query.count))
        .await?;
    Ok(axum::Json(AuditOutput { results, total }))
}
