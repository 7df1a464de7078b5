//! User management at central, where users are made and changed (each change is a signed
//! `user` record in central's feed, so the user's nodes can log them in offline):
//! `POST /api/users` (create, then an invitation with a temporary password through the
//! outbox) and `POST /api/users/{userId}/{operation}` with `update`, `activate`,
//! `change-password`, `change-avatar`, `send-verify-code`, `change-email`, `change-phone`,
//! `reset-password`, `resend-invite`, `username-reminder` and `verify-password`.
//!
//! Who may do what, as OpenCRVS: `user.create` / `user.edit` scopes, limited by their `role`
//! option and their `accessLevel` (`location`: the caller's office; `administrativeArea`: the
//! area holding it; none or `all`: everywhere); a user's own avatar, contact, password and
//! activation are theirs alone. Every change writes an audit row in its transaction.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crvs_common::error::ErrorCode;
use crvs_common::event::UserType;
use crvs_common::limits::{
    AVATAR_BYTES_MAX, INVITE_TTL_MS, LOGIN_CODE_TTL_MS, SECURITY_ANSWERS_MAX,
    SECURITY_TEXT_CHARS_MAX,
};
use crvs_common::login::{AttemptLimiter, CodeVerdict, PendingLogins, Recoveries};
use crvs_common::server::accounts::{self, AuditEntry};
use crvs_common::server::login::{new_code, notify, password_matches, random_hex};
use crvs_common::server::wall_ms;
use crvs_common::user::{Account, User, UserName, UserStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{ApiError, AppState, Caller, body};
use crate::store::UserRow;

/// Codes sent to confirm a change of email or phone, by nonce (the same book as login codes:
/// bounded, expiring, 5 tries).
/// Also the account recoveries in progress and the per-contact limit on their lookups.
#[derive(Debug, Default)]
pub struct PeopleBook {
    contact_codes: std::sync::Mutex<PendingLogins>,
    recoveries: std::sync::Mutex<Recoveries>,
    lookups: std::sync::Mutex<AttemptLimiter>,
}

/// Each method of these books leaves them consistent; a panic elsewhere cannot tear them.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PeopleBook {
    fn codes(&self) -> std::sync::MutexGuard<'_, PendingLogins> {
        lock(&self.contact_codes)
    }

    /// The recoveries in progress.
    pub(super) fn recoveries(&self) -> std::sync::MutexGuard<'_, Recoveries> {
        lock(&self.recoveries)
    }

    /// Counts a recovery lookup of `contact`; `false` past 10 a minute.
    pub(super) fn try_lookup(&self, contact: &str, now_ms: u64) -> bool {
        lock(&self.lookups).try_attempt(contact, now_ms)
    }
}

fn invalid(code: &str, message: impl Into<String>, path: &str) -> ApiError {
    ApiError::input_one(code, message, &[path])
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "User not found")
}

/// `POST /api/users` body (OpenCRVS's `CreateUserInput`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateInput {
    name: UserName,
    role: String,
    primary_office_id: Uuid,
    mobile: Option<String>,
    email: Option<String>,
    full_honorific_name: Option<String>,
    device: Option<String>,
    data: Option<Map<String, Value>>,
    /// A chosen username (seeding); generated from the name when absent.
    username: Option<String>,
}

/// `update` body: every field optional; `status` activates or deactivates (not `pending`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UpdateInput {
    name: Option<UserName>,
    role: Option<String>,
    primary_office_id: Option<Uuid>,
    mobile: Option<String>,
    email: Option<String>,
    full_honorific_name: Option<String>,
    device: Option<String>,
    data: Option<Map<String, Value>>,
    status: Option<UserStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecurityQna {
    question_key: String,
    answer: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActivateInput {
    password: String,
    #[serde(rename = "securityQNAs")]
    security_qnas: Vec<SecurityQna>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChangePasswordInput {
    existing_password: String,
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AvatarInput {
    avatar: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SendCodeInput {
    notification_event: ContactChange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ContactChange {
    ChangePhoneNumber,
    ChangeEmailAddress,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChangeEmailInput {
    email: String,
    nonce: String,
    verify_code: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChangePhoneInput {
    phone_number: String,
    nonce: String,
    verify_code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordInput {
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// What `verify-password` answers.
#[derive(Debug, Serialize)]
struct VerifiedUser {
    id: Uuid,
    username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mobile: Option<String>,
    status: UserStatus,
}

/// The `accessLevel`s of `caller`'s `kind` scopes that cover `role` (`all` for a scope without
/// one); empty when no such scope.
fn access_levels(caller: &Caller, kind: &str, role: &str) -> Vec<String> {
    let mut levels = Vec::new();
    for scope in caller.scopes.scopes() {
        if scope.kind() != kind {
            continue;
        }
        if let Some(roles) = scope.option("role")
            && !roles.iter().any(|r| r == role)
        {
            continue;
        }
        match scope.option("accessLevel") {
            None => levels.push("all".to_owned()),
            Some(values) => levels.extend(values.iter().cloned()),
        }
    }
    levels
}

/// Whether `caller` holds a `kind` scope (`user.create` or `user.edit`) that covers a user of
/// `role` at `office`.
async fn may_manage(
    state: &AppState,
    caller: &Caller,
    kind: &str,
    office: Uuid,
    role: &str,
) -> Result<(), ApiError> {
    let denied = || ApiError::forbidden(format!("Missing scope {kind} for this user and role"));
    let levels = access_levels(caller, kind, role);
    if levels.is_empty() {
        return Err(denied());
    }
    if levels.iter().any(|l| l == "all") {
        return Ok(());
    }
    let me: Uuid = caller.id.parse().map_err(|_| denied())?;
    let Some(mine) = state.store.read_async(move |r| r.user(me)).await? else {
        return Err(denied());
    };
    let my_office = mine.user.primary_office_id;
    if levels.iter().any(|l| l == "location") && my_office == office {
        return Ok(());
    }
    if levels.iter().any(|l| l == "administrativeArea") {
        let set = state.store.read_async(|r| r.location_set()).await?;
        let my_area = set.location_chain(my_office).first().copied();
        if my_area.is_some_and(|a| set.location_chain(office).contains(&a)) {
            return Ok(());
        }
    }
    Err(denied())
}

/// [`may_manage`] with `user.edit` over `row` as it stands.
async fn may_edit(state: &AppState, caller: &Caller, row: &UserRow) -> Result<(), ApiError> {
    may_manage(
        state,
        caller,
        "user.edit",
        row.user.primary_office_id,
        &row.user.role,
    )
    .await
}

fn check_role(state: &AppState, role: &str) -> Result<(), ApiError> {
    if state.config.roles.get(role).is_some() {
        Ok(())
    } else {
        Err(invalid(
            "invalid_enum_value",
            format!("Unknown role {role}"),
            "role",
        ))
    }
}

async fn check_office(state: &AppState, office: Uuid) -> Result<(), ApiError> {
    let known = state
        .store
        .read_async(move |r| r.location_area(office))
        .await?;
    if known.is_some() {
        Ok(())
    } else {
        Err(invalid(
            "invalid_string",
            format!("Unknown location {office}"),
            "primaryOfficeId",
        ))
    }
}

fn check_user(user: &User) -> Result<(), ApiError> {
    let problems = user.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::input(
            problems.iter().map(|p| p.to_issue()).collect(),
        ))
    }
}

fn check_password(password: &str, field: &str) -> Result<(), ApiError> {
    crate::admin::check_password(password).map_err(|e| invalid("too_small", e.to_string(), field))
}

/// Another user holding `user`'s mobile number or email: 409 as OpenCRVS words it.
async fn check_unique_contact(state: &AppState, user: &User) -> Result<(), ApiError> {
    let (id, mobile, email) = (user.id, user.mobile.clone(), user.email.clone());
    let others = state.store.read_async(|r| r.users()).await?;
    for other in others.iter().filter(|o| o.user.id != id) {
        if mobile.is_some() && other.user.mobile == mobile {
            return Err(ApiError::conflict("DUPLICATE_MOBILE"));
        }
        if email.is_some()
            && other.user.email.as_deref().map(str::to_lowercase)
                == email.as_deref().map(str::to_lowercase)
        {
            return Err(ApiError::conflict("DUPLICATE_EMAIL"));
        }
    }
    Ok(())
}

/// Hashes a secret off the runtime, under one of the argon2 permits.
pub(super) async fn hash(state: &AppState, secret: String) -> Result<String, ApiError> {
    let _permit = state.auth.secret_permit().await?;
    tokio::task::spawn_blocking(move || crate::auth::hash_secret(&secret))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))
}

/// The temporary password of an invitation or reset: the configured demo password when set,
/// else a random one.
fn temporary_password(state: &AppState) -> Result<String, ApiError> {
    match &state.config.file.default_user_password {
        Some(p) => Ok(p.clone()),
        None => crate::admin::new_password().map_err(|e| ApiError::internal(&e)),
    }
}

fn audit_of(caller: &Caller, operation: &'static str, subject: Uuid) -> AuditEntry {
    AuditEntry {
        actor: caller.id.clone(),
        actor_type: match caller.user_type {
            crvs_common::server::auth::TokenUserType::User => "user",
            crvs_common::server::auth::TokenUserType::System => "system",
        },
        location: None,
        operation,
        subject: Some(subject.to_string()),
        detail: None,
    }
}

/// How a stored user changes.
pub(super) struct Change {
    /// The user as read before the change was worked out: if the stored one differs by the
    /// time the change is written (another change came in between), nothing is written (409).
    pub(super) original: UserRow,
    pub(super) row: UserRow,
    pub(super) answers: Option<Vec<(String, String)>>,
    pub(super) audit: AuditEntry,
}

/// Stores a changed user (and a new set of security answers), appends its feed record and
/// writes the audit row, in one transaction, unless the user changed since it was read.
pub(super) async fn save(state: &AppState, change: Change) -> Result<(), ApiError> {
    state
        .store
        .write_async(move |w| -> Result<(), ApiError> {
            if w.reader().user(change.original.user.id)?.as_ref() != Some(&change.original) {
                return Err(ApiError::conflict(
                    "The user was changed by another request meanwhile; try again",
                ));
            }
            w.put_user(&change.row).map_err(|e| match e {
                crate::store::StoreError::Invalid(message) => ApiError::conflict(message),
                other => ApiError::from(other),
            })?;
            if let Some(answers) = &change.answers {
                w.set_security_answers(change.row.user.id, answers)?;
            }
            accounts::audit(w.conn(), w.now_ms(), &change.audit).map_err(|e| ApiError::internal(&e))
        })
        .await
}

/// `POST /api/users`: creates a `pending` user and sends the invitation (username and a
/// temporary password). 201 with the user.
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input: CreateInput = body::json(body)?;
    check_role(&state, &input.role)?;
    check_office(&state, input.primary_office_id).await?;
    may_manage(
        &state,
        &caller,
        "user.create",
        input.primary_office_id,
        &input.role,
    )
    .await?;
    let user = User {
        id: Uuid::new_v4(),
        name: UserName {
            firstname: input.name.firstname.trim().to_owned(),
            surname: input.name.surname.trim().to_owned(),
        },
        role: input.role,
        avatar: None,
        signature: None,
        primary_office_id: input.primary_office_id,
        administrative_area_id: None,
        device: input.device,
        full_honorific_name: input.full_honorific_name,
        user_type: UserType::User,
        mobile: input.mobile,
        email: input.email.map(|e| e.to_lowercase()),
        status: UserStatus::Pending,
        data: input.data,
    };
    check_user(&user)?;
    check_unique_contact(&state, &user).await?;
    state.auth.can_notify()?;
    let password = temporary_password(&state)?;
    let password_hash = hash(&state, password.clone()).await?;
    let audit = audit_of(&caller, "user.create_user", user.id);
    let requested = input.username;
    let created = user.clone();
    let username = state
        .store
        .write_async(move |w| -> Result<String, ApiError> {
            let username = crate::admin::pick_username(&w.reader(), &created, requested.as_deref())
                .map_err(|e| {
                    let text = e.to_string();
                    if text.contains("taken") {
                        ApiError::conflict(text)
                    } else {
                        ApiError::input_one("invalid_string", text, &["username"])
                    }
                })?;
            w.put_user(&UserRow {
                user: created,
                username: username.clone(),
                password_hash,
                created_at: crvs_common::event::format_timestamp_ms(w.now_ms()),
            })?;
            accounts::audit(w.conn(), w.now_ms(), &audit).map_err(|e| ApiError::internal(&e))?;
            Ok(username)
        })
        .await?;
    let account = Account {
        user: user.clone(),
        username: username.clone(),
        password_hash: String::new(),
    };
    let text = format!(
        "You have been invited to OpenCRVS. Your username is {username} and your temporary \
         password is {password}. Log in to set your own password."
    );
    notify(&*state, &account, "user-created", text, INVITE_TTL_MS).await?;
    tracing::info!(user = %user.id, %username, "user created");
    Ok((StatusCode::CREATED, axum::Json(user)).into_response())
}

/// `POST /api/users/{userId}/{operation}`.
pub(crate) async fn operation(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((raw_id, operation)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id: Uuid = raw_id
        .parse()
        .map_err(|_| invalid("invalid_string", "Invalid uuid", "userId"))?;
    let bytes = body::bytes(body)?;
    let row = state
        .store
        .read_async(move |r| r.user(id))
        .await?
        .ok_or_else(not_found)?;
    let is_self = caller.id == id.to_string();
    let out = match operation.as_str() {
        "update" => update(&state, &caller, row, body::parse(&bytes)?).await?,
        "activate" => {
            own(is_self)?;
            activate(&state, &caller, row, body::parse(&bytes)?).await?
        }
        "change-password" => {
            own(is_self)?;
            change_password(&state, &caller, row, body::parse(&bytes)?).await?
        }
        "change-avatar" => {
            own(is_self)?;
            let input: AvatarInput = body::parse(&bytes)?;
            if input.avatar.is_empty() || input.avatar.len() > AVATAR_BYTES_MAX {
                return Err(invalid(
                    "too_big",
                    format!("avatar must be 1 to {AVATAR_BYTES_MAX} bytes"),
                    "avatar",
                ));
            }
            let original = row.clone();
            let mut row = active(row)?;
            row.user.avatar = Some(input.avatar);
            let audit = audit_of(&caller, "user.avatar_changed", id);
            save_user(&state, original, row, audit).await?
        }
        "send-verify-code" => {
            own(is_self)?;
            let input: SendCodeInput = body::parse(&bytes)?;
            send_verify_code(&state, active(row)?, input.notification_event).await?
        }
        "change-email" => {
            own(is_self)?;
            let input: ChangeEmailInput = body::parse(&bytes)?;
            crvs_common::user::validate_email(&input.email)
                .map_err(|e| invalid(e.code(), e.message(), "email"))?;
            check_code(&state, id, &input.nonce, &input.verify_code)?;
            let original = row.clone();
            let mut row = active(row)?;
            row.user.email = Some(input.email.to_lowercase());
            check_unique_contact(&state, &row.user)
                .await
                .map_err(|_| ApiError::conflict("Email is already in use"))?;
            let audit = audit_of(&caller, "user.email_address_changed", id);
            save_user(&state, original, row, audit).await?
        }
        "change-phone" => {
            own(is_self)?;
            let input: ChangePhoneInput = body::parse(&bytes)?;
            crvs_common::user::validate_mobile(&input.phone_number)
                .map_err(|e| invalid(e.code(), e.message(), "phoneNumber"))?;
            check_code(&state, id, &input.nonce, &input.verify_code)?;
            let original = row.clone();
            let mut row = active(row)?;
            row.user.mobile = Some(input.phone_number);
            check_unique_contact(&state, &row.user)
                .await
                .map_err(|_| ApiError::conflict("Phone number is already in use"))?;
            let audit = audit_of(&caller, "user.phone_number_changed", id);
            save_user(&state, original, row, audit).await?
        }
        "reset-password" | "resend-invite" => {
            let _: Empty = body::parse(&bytes)?;
            may_edit(&state, &caller, &row).await?;
            reinvite(&state, &caller, row, operation == "resend-invite").await?
        }
        "username-reminder" => {
            let _: Empty = body::parse(&bytes)?;
            may_edit(&state, &caller, &row).await?;
            send_username(&state, &row).await?;
            let audit = audit_of(&caller, "user.username_reminder_by_admin", id);
            crvs_common::server::login::write_audit(&*state, audit).await?;
            axum::Json(serde_json::json!({})).into_response()
        }
        "verify-password" => {
            if !is_self {
                may_edit(&state, &caller, &row).await?;
            }
            let input: PasswordInput = body::parse(&bytes)?;
            password_attempt(&state, &row)?;
            let account = row.account();
            if !password_matches(&*state, Some(&account), input.password).await? {
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "Password does not match",
                ));
            }
            axum::Json(VerifiedUser {
                id,
                username: row.username,
                mobile: row.user.mobile,
                status: row.user.status,
            })
            .into_response()
        }
        _ => return Err(ApiError::new(ErrorCode::NotFound, "No such route")),
    };
    Ok(out)
}

/// Sends the user their username (a reminder, or the end of a username recovery).
pub(super) async fn send_username(state: &AppState, row: &UserRow) -> Result<(), ApiError> {
    let text = format!("Your OpenCRVS username is {}.", row.username);
    notify(
        state,
        &row.account(),
        "username-reminder",
        text,
        INVITE_TTL_MS,
    )
    .await
}

fn own(is_self: bool) -> Result<(), ApiError> {
    if is_self {
        Ok(())
    } else {
        Err(ApiError::forbidden("Only the user themselves may do this"))
    }
}

fn active(row: UserRow) -> Result<UserRow, ApiError> {
    if row.user.status == UserStatus::Active {
        Ok(row)
    } else {
        Err(ApiError::forbidden("User is not active"))
    }
}

/// Counts a password check on `row`'s account against the login limit (10 a minute).
fn password_attempt(state: &AppState, row: &UserRow) -> Result<(), ApiError> {
    if state.auth.try_password_attempt(&row.username, wall_ms()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::TooManyRequests,
            "Too many password attempts for this user; try again in a minute",
        ))
    }
}

async fn save_user(
    state: &AppState,
    original: UserRow,
    row: UserRow,
    audit: AuditEntry,
) -> Result<Response, ApiError> {
    let user = row.user.clone();
    save(
        state,
        Change {
            original,
            row,
            answers: None,
            audit,
        },
    )
    .await?;
    Ok(axum::Json(user).into_response())
}

async fn update(
    state: &AppState,
    caller: &Caller,
    mut row: UserRow,
    input: UpdateInput,
) -> Result<Response, ApiError> {
    let original = row.clone();
    may_edit(state, caller, &row).await?;
    let new_role = input.role.unwrap_or_else(|| row.user.role.clone());
    let new_office = input
        .primary_office_id
        .unwrap_or(row.user.primary_office_id);
    if new_role != row.user.role || new_office != row.user.primary_office_id {
        check_role(state, &new_role)?;
        check_office(state, new_office).await?;
        may_manage(state, caller, "user.edit", new_office, &new_role).await?;
    }
    let user = &mut row.user;
    user.role = new_role;
    user.primary_office_id = new_office;
    if let Some(name) = input.name {
        user.name = UserName {
            firstname: name.firstname.trim().to_owned(),
            surname: name.surname.trim().to_owned(),
        };
    }
    if let Some(mobile) = input.mobile {
        user.mobile = Some(mobile).filter(|m| !m.is_empty());
    }
    if let Some(email) = input.email {
        user.email = Some(email.to_lowercase()).filter(|e| !e.is_empty());
    }
    if let Some(v) = input.full_honorific_name {
        user.full_honorific_name = Some(v).filter(|v| !v.is_empty());
    }
    if let Some(v) = input.device {
        user.device = Some(v).filter(|v| !v.is_empty());
    }
    if let Some(v) = input.data {
        user.data = Some(v);
    }
    match input.status {
        None => {}
        Some(UserStatus::Pending) => {
            return Err(invalid(
                "invalid_enum_value",
                "status can be set to active or deactivated, not pending",
                "status",
            ));
        }
        Some(UserStatus::Active) if row.password_hash.is_empty() => {
            return Err(ApiError::conflict("User has no password yet"));
        }
        Some(status) => row.user.status = status,
    }
    check_user(&row.user)?;
    check_unique_contact(state, &row.user).await?;
    let audit = audit_of(caller, "user.edit_user", row.user.id);
    save_user(state, original, row, audit).await
}

async fn activate(
    state: &AppState,
    caller: &Caller,
    mut row: UserRow,
    input: ActivateInput,
) -> Result<Response, ApiError> {
    let original = row.clone();
    if row.user.status != UserStatus::Pending {
        return Err(ApiError::conflict("User is not in pending state"));
    }
    check_password(&input.password, "password")?;
    if input.security_qnas.is_empty() || input.security_qnas.len() > SECURITY_ANSWERS_MAX {
        return Err(invalid(
            "too_small",
            format!("1 to {SECURITY_ANSWERS_MAX} security answers are required"),
            "securityQNAs",
        ));
    }
    let mut answers: HashMap<String, String> = HashMap::new();
    for qna in input.security_qnas {
        let (key, answer) = (
            qna.question_key.trim().to_owned(),
            qna.answer.trim().to_lowercase(),
        );
        if key.is_empty()
            || answer.is_empty()
            || key.chars().count() > SECURITY_TEXT_CHARS_MAX
            || answer.chars().count() > SECURITY_TEXT_CHARS_MAX
        {
            return Err(invalid(
                "too_small",
                format!(
                    "question keys and answers must have 1 to {SECURITY_TEXT_CHARS_MAX} characters"
                ),
                "securityQNAs",
            ));
        }
        let hashed = hash(state, answer).await?;
        if answers.insert(key.clone(), hashed).is_some() {
            return Err(invalid(
                "custom",
                format!("question {key} is answered twice"),
                "securityQNAs",
            ));
        }
    }
    row.password_hash = hash(state, input.password).await?;
    row.user.status = UserStatus::Active;
    let id = row.user.id;
    save(
        state,
        Change {
            original,
            row,
            answers: Some(answers.into_iter().collect()),
            audit: audit_of(caller, "user.activated", id),
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "userId": id })),
    )
        .into_response())
}

async fn change_password(
    state: &AppState,
    caller: &Caller,
    row: UserRow,
    input: ChangePasswordInput,
) -> Result<Response, ApiError> {
    let original = row.clone();
    let mut row = active(row)?;
    check_password(&input.password, "password")?;
    password_attempt(state, &row)?;
    let account = row.account();
    if !password_matches(state, Some(&account), input.existing_password).await? {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "Existing password does not match",
        ));
    }
    row.password_hash = hash(state, input.password).await?;
    let audit = audit_of(caller, "user.password_changed", row.user.id);
    save_user(state, original, row, audit).await?;
    Ok(axum::Json(serde_json::json!({})).into_response())
}

async fn send_verify_code(
    state: &AppState,
    row: UserRow,
    change: ContactChange,
) -> Result<Response, ApiError> {
    let nonce = random_hex::<16>()?;
    let code = new_code(state)?;
    let what = match change {
        ContactChange::ChangePhoneNumber => "phone number",
        ContactChange::ChangeEmailAddress => "email address",
    };
    let text = format!("Your code to confirm the change of your {what} is {code}.");
    let template = match change {
        ContactChange::ChangePhoneNumber => "change-phone-number",
        ContactChange::ChangeEmailAddress => "change-email-address",
    };
    notify(state, &row.account(), template, text, LOGIN_CODE_TTL_MS).await?;
    state
        .people
        .codes()
        .start(nonce.clone(), row.user.id.to_string(), code, wall_ms());
    Ok(axum::Json(serde_json::json!({ "nonce": nonce })).into_response())
}

fn check_code(state: &AppState, id: Uuid, nonce: &str, code: &str) -> Result<(), ApiError> {
    let verdict = state
        .people
        .codes()
        .verify(nonce, code, !state.auth.two_factor, wall_ms());
    match verdict {
        CodeVerdict::Accepted { user_id } if user_id == id.to_string() => Ok(()),
        _ => Err(ApiError::bad_request(
            "Verification failed: wrong or expired code",
        )),
    }
}

/// `reset-password` and `resend-invite`: a new temporary password, the user back to
/// `pending` (their security answers go: they set new ones when activating), and the message.
async fn reinvite(
    state: &AppState,
    caller: &Caller,
    mut row: UserRow,
    resend: bool,
) -> Result<Response, ApiError> {
    if row.user.status == UserStatus::Deactivated {
        return Err(ApiError::conflict(
            "User is deactivated; reactivate them before resetting their password",
        ));
    }
    if resend && row.user.status != UserStatus::Pending {
        return Err(ApiError::bad_request(
            "Can only resend invite to a user in pending status",
        ));
    }
    state.auth.can_notify()?;
    let original = row.clone();
    let password = temporary_password(state)?;
    row.password_hash = hash(state, password.clone()).await?;
    row.user.status = UserStatus::Pending;
    let id = row.user.id;
    let account = row.account();
    let (template, operation, text) = if resend {
        (
            "resend-invite",
            "user.resend_invite",
            format!(
                "Your OpenCRVS invitation: your username is {} and your temporary password is \
                 {password}.",
                row.username
            ),
        )
    } else {
        (
            "reset-password-by-admin",
            "user.password_reset_by_admin",
            format!("Your OpenCRVS password was reset. Your temporary password is {password}."),
        )
    };
    save(
        state,
        Change {
            original,
            row,
            answers: Some(Vec::new()),
            audit: audit_of(caller, operation, id),
        },
    )
    .await?;
    notify(state, &account, template, text, INVITE_TTL_MS).await?;
    Ok(axum::Json(serde_json::json!({})).into_response())
}
