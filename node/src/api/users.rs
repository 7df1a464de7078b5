//! People routes at a node, over the users central sent down (read only: users are made and
//! changed at central): `GET /api/users/{userId}`, `GET /api/users?mobile=`, `POST
//! /api/users/search`, and `GET /api/users/{userId}/audit`, a user's audit trail (reads,
//! searches, logins) as this node recorded it. Anyone may see themselves; seeing others needs a
//! `user.read` scope, whose `accessLevel=administrativeArea` limits it to users whose office is
//! in the caller's office's area.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use crvs_common::user::{User, UserStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, AppState, Caller, body};
use crate::store::{AUDIT_PAGE_MAX, AuditRow, UserRow};

/// Most users one search answers.
pub(crate) const USER_PAGE_MAX: u32 = 100;

/// Which users the caller may see.
enum Visibility {
    /// Everyone.
    All,
    /// Those whose office lies in this area (the one holding the caller's own office).
    InArea(Uuid),
    /// Only the caller.
    OnlySelf,
}

async fn visibility(state: &AppState, caller: &Caller) -> Result<Visibility, ApiError> {
    let scopes: Vec<_> = caller
        .scopes
        .scopes()
        .iter()
        .filter(|s| s.kind() == "user.read")
        .collect();
    if scopes.is_empty() {
        return Ok(Visibility::OnlySelf);
    }
    if scopes.iter().any(|s| {
        s.option("accessLevel")
            .is_none_or(|v| v.iter().any(|l| l == "all"))
    }) {
        return Ok(Visibility::All);
    }
    // accessLevel=administrativeArea (or location): the area of the caller's own office.
    let me: Uuid = caller.id.parse().map_err(|_| ApiError::unauthorized())?;
    let area = state
        .store
        .read(move |r| {
            let Some(user) = r.user(me)? else {
                return Ok(None);
            };
            Ok(r.area_chain(user.user.primary_office_id)?.first().copied())
        })
        .await?
        .ok_or_else(ApiError::unauthorized)?;
    Ok(Visibility::InArea(area))
}

/// The users of `rows` the caller may see.
async fn visible(
    state: &AppState,
    caller: &Caller,
    rows: Vec<UserRow>,
) -> Result<Vec<User>, ApiError> {
    let visibility = visibility(state, caller).await?;
    let area = match visibility {
        Visibility::All => return Ok(rows.into_iter().map(|r| r.user).collect()),
        Visibility::OnlySelf => {
            return Ok(rows
                .into_iter()
                .filter(|r| r.user.id.to_string() == caller.id)
                .map(|r| r.user)
                .collect());
        }
        Visibility::InArea(area) => area,
    };
    let offices: Vec<Uuid> = rows.iter().map(|r| r.user.primary_office_id).collect();
    let chains: HashMap<Uuid, Vec<Uuid>> = state
        .store
        .read(move |r| {
            offices
                .into_iter()
                .map(|o| Ok((o, r.area_chain(o)?)))
                .collect::<Result<_, _>>()
        })
        .await?;
    Ok(rows
        .into_iter()
        .filter(|r| {
            r.user.id.to_string() == caller.id
                || chains
                    .get(&r.user.primary_office_id)
                    .is_some_and(|c| c.contains(&area))
        })
        .map(|r| r.user)
        .collect())
}

/// `GET /api/users/{userId}`: one user (never a password hash). Someone the caller may not see
/// is "not found".
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    let id: Uuid = raw_id
        .parse()
        .map_err(|_| ApiError::input_one("invalid_string", "Invalid uuid", &["userId"]))?;
    let rows: Vec<UserRow> = state
        .store
        .read(move |r| r.user(id))
        .await?
        .into_iter()
        .collect();
    visible(&state, &caller, rows)
        .await?
        .pop()
        .map(axum::Json)
        .ok_or_else(|| ApiError::new(crvs_common::error::ErrorCode::NotFound, "User not found"))
}

/// Query of `GET /api/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ByMobile {
    mobile: String,
}

/// `GET /api/users?mobile=+260...`: the users with that mobile number the caller may see.
pub(crate) async fn by_mobile(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ByMobile>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Vec<User>>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::input_one("invalid_type", e.body_text(), &["mobile"]))?;
    crvs_common::user::validate_mobile(&query.mobile)
        .map_err(|e| ApiError::input_one(e.code(), e.message(), &["mobile"]))?;
    let rows = state
        .store
        .read(move |r| r.users_by_mobile(&query.mobile))
        .await?;
    Ok(axum::Json(visible(&state, &caller, rows).await?))
}

/// `POST /api/users/search` body: every given criterion must hold.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UserSearch {
    /// Part of the first name or surname, any case.
    name: Option<String>,
    role: Option<String>,
    primary_office_id: Option<Uuid>,
    status: Option<UserStatus>,
    #[serde(default)]
    skip: u32,
    count: Option<u32>,
}

/// Users search answer.
#[derive(Debug, Serialize)]
pub(crate) struct UserSearchOutput {
    results: Vec<User>,
    total: u64,
}

/// `POST /api/users/search`: users the caller may see, by name, role, office, status.
pub(crate) async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<UserSearchOutput>, ApiError> {
    let input: UserSearch = body::json(body)?;
    let count = input.count.unwrap_or(10);
    if count == 0 || count > USER_PAGE_MAX {
        return Err(ApiError::input_one(
            "too_big",
            format!("count must be between 1 and {USER_PAGE_MAX}"),
            &["count"],
        ));
    }
    let rows = state.store.read(|r| r.users()).await?;
    let needle = input.name.as_deref().map(str::to_lowercase);
    let matching: Vec<User> = visible(&state, &caller, rows)
        .await?
        .into_iter()
        .filter(|u| input.role.as_deref().is_none_or(|r| u.role == r))
        .filter(|u| {
            input
                .primary_office_id
                .is_none_or(|o| u.primary_office_id == o)
        })
        .filter(|u| input.status.is_none_or(|s| u.status == s))
        .filter(|u| {
            needle.as_deref().is_none_or(|n| {
                u.name.firstname.to_lowercase().contains(n)
                    || u.name.surname.to_lowercase().contains(n)
            })
        })
        .collect();
    let total = matching.len() as u64;
    let results = matching
        .into_iter()
        .skip(input.skip as usize)
        .take(count as usize)
        .collect();
    Ok(axum::Json(UserSearchOutput { results, total }))
}

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
