//! The user read routes node and central both serve (a node over the users central sent down,
//! central over all of them): `GET /api/users/{userId}`, `GET /api/users?mobile=`, `POST
//! /api/users/search`, and `GET /api/users/{userId}/audit`, a user's audit trail (reads,
//! searches, logins, changes) as that server recorded it. Anyone may see themselves; seeing
//! others needs a `user.read` scope, whose `accessLevel=administrativeArea` limits it to users
//! whose office is in the caller's office's area.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::accounts::{AUDIT_PAGE_MAX, AuditRow};
use super::{ApiError, AuthHost, Caller, body};
use crate::error::ErrorCode;
use crate::user::{Account, User, UserStatus};

/// Which users to load.
#[derive(Debug, Clone)]
pub enum UserLookup {
    /// Every user.
    All,
    /// The user with this id.
    Id(Uuid),
    /// The users with this mobile number.
    Mobile(String),
}

/// What a server provides to the user routes, beyond [`AuthHost`].
pub trait UserHost: AuthHost {
    /// The accounts `lookup` names.
    fn accounts(
        &self,
        lookup: UserLookup,
    ) -> impl Future<Output = Result<Vec<Account>, ApiError>> + Send;

    /// For each location (office), the areas holding it, its own area first.
    fn area_chains(
        &self,
        locations: Vec<Uuid>,
    ) -> impl Future<Output = Result<HashMap<Uuid, Vec<Uuid>>, ApiError>> + Send;
}

/// The routes of this module.
pub fn user_routes<H: UserHost>() -> Router<Arc<H>> {
    Router::new()
        .route("/api/users", get(by_mobile::<H>))
        .route("/api/users/search", post(search::<H>))
        .route("/api/users/{user_id}", get(get_user::<H>))
        .route("/api/users/{user_id}/audit", get(audit::<H>))
}

/// Most users one search answers.
pub const USER_PAGE_MAX: u32 = 100;

/// Which users the caller may see.
enum Visibility {
    /// Everyone.
    All,
    /// Those whose office lies in this area (the one holding the caller's own office).
    InArea(Uuid),
    /// Only the caller.
    OnlySelf,
}

async fn visibility<H: UserHost>(host: &H, caller: &Caller) -> Result<Visibility, ApiError> {
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
    let office = host
        .account(me)
        .await?
        .ok_or_else(ApiError::unauthorized)?
        .user
        .primary_office_id;
    let area = host
        .area_chains(vec![office])
        .await?
        .get(&office)
        .and_then(|chain| chain.first().copied())
        .ok_or_else(ApiError::unauthorized)?;
    Ok(Visibility::InArea(area))
}

/// The users of `rows` the caller may see.
pub async fn visible<H: UserHost>(
    host: &H,
    caller: &Caller,
    rows: Vec<Account>,
) -> Result<Vec<User>, ApiError> {
    let visibility = visibility(host, caller).await?;
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
    let chains = host.area_chains(offices).await?;
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
pub async fn get_user<H: UserHost>(
    State(host): State<Arc<H>>,
    caller: Caller,
    Path(raw_id): Path<String>,
) -> Result<axum::Json<User>, ApiError> {
    let id: Uuid = raw_id
        .parse()
        .map_err(|_| ApiError::input_one("invalid_string", "Invalid uuid", &["userId"]))?;
    let rows = host.accounts(UserLookup::Id(id)).await?;
    visible(&*host, &caller, rows)
        .await?
        .pop()
        .map(axum::Json)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "User not found"))
}

/// Query of `GET /api/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByMobile {
    mobile: String,
}

/// `GET /api/users?mobile=+260...`: the users with that mobile number the caller may see.
pub async fn by_mobile<H: UserHost>(
    State(host): State<Arc<H>>,
    caller: Caller,
    query: Result<Query<ByMobile>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Vec<User>>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::input_one("invalid_type", e.body_text(), &["mobile"]))?;
    crate::user::validate_mobile(&query.mobile)
        .map_err(|e| ApiError::input_one(e.code(), e.message(), &["mobile"]))?;
    let rows = host.accounts(UserLookup::Mobile(query.mobile)).await?;
    Ok(axum::Json(visible(&*host, &caller, rows).await?))
}

/// `POST /api/users/search` body: every given criterion must hold.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSearch {
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
pub struct UserSearchOutput {
    results: Vec<User>,
    total: u64,
}

/// `POST /api/users/search`: users the caller may see, by name, role, office, status.
pub async fn search<H: UserHost>(
    State(host): State<Arc<H>>,
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
    let rows = host.accounts(UserLookup::All).await?;
    let needle = input.name.as_deref().map(str::to_lowercase);
    let matching: Vec<User> = visible(&*host, &caller, rows)
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
pub struct AuditQuery {
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
pub struct AuditOutput {
    results: Vec<AuditRow>,
    total: u64,
}

/// `GET /api/users/{userId}/audit?skip=0&count=10`: newest first.
pub async fn audit<H: UserHost>(
    State(host): State<Arc<H>>,
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
    // Another user's trail only within the caller's `user.read` reach (its accessLevel).
    if caller.id != user_id {
        let id: Uuid = user_id
            .parse()
            .map_err(|_| ApiError::input_one("invalid_string", "Invalid uuid", &["userId"]))?;
        let rows = host.accounts(UserLookup::Id(id)).await?;
        if visible(&*host, &caller, rows).await?.is_empty() {
            return Err(ApiError::new(ErrorCode::NotFound, "User not found"));
        }
    }
    let (results, total) = host
        .accounts_read(move |conn| {
            super::accounts::audit_of(conn, &user_id, query.skip, query.count)
        })
        .await?;
    Ok(axum::Json(AuditOutput { results, total }))
}
