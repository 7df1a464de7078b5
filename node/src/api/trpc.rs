//! OpenCRVS's tRPC-over-HTTP procedure paths (§2.4), so an OpenCRVS client (the toolkit's
//! `createClient`, the UI's `httpBatchLink`) can talk to a node: `POST {base}/{procedure}` with
//! `{"json": input}`, and the batched `POST {base}/{p1},{p2}?batch=1` with
//! `{"0": {"json": input}, ...}`. Each procedure runs the same handler as its REST route; answers
//! and errors take tRPC's shapes (`{"result":{"data":{"json":...}}}`,
//! `{"error":{"json":{message, code, data:{code, httpStatus, path}}}}`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crvs_common::error::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller, body, events};

/// Most procedure calls in one batch.
pub(crate) const BATCH_CALLS_MAX: usize = 16;

/// `?batch=1` marks a batched call.
#[derive(Debug, Deserialize)]
pub(crate) struct BatchQuery {
    batch: Option<String>,
    /// The input of a GET query (`{"json": ...}`, URL-encoded).
    input: Option<String>,
}

/// The REST route a user-action procedure stands for.
fn action_segment(procedure: &str) -> Option<&'static str> {
    Some(match procedure {
        "event.actions.declare.request" => "declare",
        "event.actions.validate.request" => "validate",
        "event.actions.register.request" => "register",
        "event.actions.reject.request" => "reject",
        "event.actions.archive.request" => "archive",
        "event.actions.printCertificate.request" => "print-certificate",
        "event.actions.edit.request" => "edit",
        "event.actions.custom.request" => "custom",
        "event.actions.correction.request.request" => "request-correction",
        "event.actions.correction.approve.request" => "approve-correction",
        "event.actions.correction.reject.request" => "reject-correction",
        "event.actions.assignment.assign" => "assign",
        "event.actions.assignment.unassign" => "unassign",
        _ => return None,
    })
}

fn bytes_of(input: &Value) -> Result<Bytes, BytesRejection> {
    Ok(Bytes::from(serde_json::to_vec(input).unwrap_or_default()))
}

fn event_id_of(input: &Value) -> Result<String, ApiError> {
    match input {
        Value::String(id) => Ok(id.clone()),
        Value::Object(map) => match map.get("eventId") {
            Some(Value::String(id)) => Ok(id.clone()),
            _ => Err(ApiError::input_one(
                "invalid_type",
                "Required",
                &["eventId"],
            )),
        },
        _ => Err(ApiError::input_one("invalid_type", "Expected object", &[])),
    }
}

/// Whether `name` is a procedure served here.
fn is_procedure(name: &str) -> bool {
    action_segment(name).is_some() || OTHER_PROCEDURES.contains(&name)
}

/// Procedures that are not user actions.
const OTHER_PROCEDURES: &[&str] = &[
    "event.bulkImport",
    "event.create",
    "event.get",
    "event.delete",
    "event.list",
    "event.draft.create",
    "event.draft.list",
];

/// Runs one procedure.
async fn call(
    state: &Arc<AppState>,
    caller: &Result<Caller, ApiError>,
    procedure: &str,
    input: Value,
) -> Result<Value, ApiError> {
    if !is_procedure(procedure) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("No procedure found on path \"{procedure}\""),
        ));
    }
    let caller = match caller {
        Ok(caller) => caller.clone(),
        Err(e) => return Err(ApiError::from_envelope(e.envelope().clone())),
    };
    let doc = match procedure {
        "event.create" => {
            events::create(State(Arc::clone(state)), caller, bytes_of(&input)).await?
        }
        "event.get" => {
            let id = event_id_of(&input)?;
            events::read(State(Arc::clone(state)), caller, Path(id)).await?
        }
        "event.list" => {
            let query: events::ListQuery =
                serde_json::from_value(if input.is_null() { json!({}) } else { input })
                    .map_err(|e| ApiError::input_one("invalid_type", e.to_string(), &[]))?;
            let out = events::list_with(Arc::clone(state), caller, query).await?;
            return serde_json::to_value(out).map_err(|e| ApiError::internal(&e));
        }
        "event.draft.create" => {
            let id = event_id_of(&input)?;
            let body = bytes_of(&input);
            let input: events::DraftInput = body::json(body)?;
            return events::drafts_create(Arc::clone(state), caller, &id, input).await;
        }
        "event.bulkImport" => {
            let docs: Vec<crvs_common::event::EventDocument> = serde_json::from_value(input)
                .map_err(|e| ApiError::input_one("invalid_type", e.to_string(), &[]))?;
            let stored = events::import_many(Arc::clone(state), caller, docs).await?;
            return serde_json::to_value(stored).map_err(|e| ApiError::internal(&e));
        }
        "event.draft.list" => {
            return events::drafts_list(Arc::clone(state), caller).await;
        }
        "event.delete" => {
            let id = event_id_of(&input)?;
            events::delete(State(Arc::clone(state)), caller, Path(id)).await?
        }
        _ => {
            let segment = action_segment(procedure).unwrap_or_default();
            let id = event_id_of(&input)?;
            events::user_action(
                State(Arc::clone(state)),
                caller,
                Path((id, segment.to_owned())),
                bytes_of(&input),
            )
            .await?
        }
    };
    serde_json::to_value(doc.0).map_err(|e| ApiError::internal(&e))
}

fn error_json(error: &ApiError, procedure: &str) -> Value {
    let envelope = error.envelope();
    let mut data = json!({
        "code": envelope.code,
        "httpStatus": envelope.code.http_status(),
        "path": procedure,
    });
    if let Some(issues) = &envelope.issues {
        data["issues"] = json!(issues);
    }
    json!({"error": {"json": {
        "message": envelope.message,
        "code": envelope.code.json_rpc_code(),
        "data": data,
    }}})
}

fn status_of(error: &ApiError) -> StatusCode {
    StatusCode::from_u16(error.envelope().code.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The `{"json": input}` wrapper (superjson's `meta` is accepted and ignored: inputs here are
/// plain JSON).
fn unwrap_json(wrapper: &Value) -> Result<Value, ApiError> {
    match wrapper {
        Value::Object(map) if map.keys().all(|k| k == "json" || k == "meta") => {
            Ok(map.get("json").cloned().unwrap_or(Value::Null))
        }
        _ => Err(ApiError::input_one(
            "invalid_type",
            "The body must be {\"json\": <input>}",
            &[],
        )),
    }
}

/// `POST {base}/{procedure}` and `POST {base}/{p1},{p2}?batch=1`.
pub(crate) async fn procedure(
    State(state): State<Arc<AppState>>,
    caller: Result<Caller, ApiError>,
    Path(path): Path<String>,
    Query(query): Query<BatchQuery>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    if query.input.is_some() {
        let error = ApiError::new(
            ErrorCode::MethodNotSupported,
            "Give a mutation's input in the body, not in ?input=",
        );
        return (status_of(&error), axum::Json(error_json(&error, &path))).into_response();
    }
    let body: Value = match body::json(raw) {
        Ok(v) => v,
        Err(error) => {
            return (status_of(&error), axum::Json(error_json(&error, &path))).into_response();
        }
    };
    run(
        &state,
        &caller,
        &path,
        query.batch.as_deref() == Some("1"),
        &body,
    )
    .await
}

/// `GET {base}/event.get?input=<urlencoded {"json": ...}>` (tRPC queries; batched with
/// `?batch=1`). Any other path under the base is not a route: 404 with the envelope.
pub(crate) async fn query(
    State(state): State<Arc<AppState>>,
    caller: Result<Caller, ApiError>,
    Path(path): Path<String>,
    Query(query): Query<BatchQuery>,
) -> Response {
    if !path.split(',').all(|p| QUERY_PROCEDURES.contains(&p)) {
        // A known mutation over GET is tRPC's 405; anything else under the base is no route.
        if path.split(',').all(is_procedure) {
            let error = ApiError::new(
                ErrorCode::MethodNotSupported,
                "This procedure is a mutation: POST it",
            );
            return (status_of(&error), axum::Json(error_json(&error, &path))).into_response();
        }
        return ApiError::new(ErrorCode::NotFound, "No such route").into_response();
    }
    let body = match query.input.as_deref().map(serde_json::from_str::<Value>) {
        Some(Ok(body)) => body,
        None => json!({}),
        Some(Err(_)) => {
            let error = ApiError::input_one("invalid_type", "input is not JSON", &[]);
            return (status_of(&error), axum::Json(error_json(&error, &path))).into_response();
        }
    };
    run(
        &state,
        &caller,
        &path,
        query.batch.as_deref() == Some("1"),
        &body,
    )
    .await
}

/// Procedures that are tRPC queries (GET); the others are mutations (POST).
const QUERY_PROCEDURES: &[&str] = &["event.get", "event.list", "event.draft.list"];

async fn run(
    state: &Arc<AppState>,
    caller: &Result<Caller, ApiError>,
    path: &str,
    batch: bool,
    body: &Value,
) -> Response {
    if !batch {
        let result = match unwrap_json(body) {
            Ok(input) => call(state, caller, path, input).await,
            Err(e) => Err(e),
        };
        return match result {
            Ok(value) => axum::Json(json!({"result": {"data": {"json": value}}})).into_response(),
            Err(error) => (status_of(&error), axum::Json(error_json(&error, path))).into_response(),
        };
    }
    let procedures: Vec<&str> = path.split(',').collect();
    if procedures.len() > BATCH_CALLS_MAX {
        let error = ApiError::bad_request(format!("At most {BATCH_CALLS_MAX} calls in one batch"));
        return (status_of(&error), axum::Json(error_json(&error, path))).into_response();
    }
    let mut answers = Vec::with_capacity(procedures.len());
    let mut statuses = Vec::with_capacity(procedures.len());
    for (i, name) in procedures.iter().enumerate() {
        let input = body
            .get(i.to_string())
            .map(unwrap_json)
            .unwrap_or(Ok(Value::Null));
        let result = match input {
            Ok(input) => call(state, caller, name, input).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(value) => {
                answers.push(json!({"result": {"data": {"json": value}}}));
                statuses.push(StatusCode::OK);
            }
            Err(error) => {
                statuses.push(status_of(&error));
                answers.push(error_json(&error, name));
            }
        }
    }
    // tRPC: one status if every call agrees, else 207 Multi-Status.
    let status = match statuses.split_first() {
        Some((first, rest)) if rest.iter().all(|s| s == first) => *first,
        _ => StatusCode::MULTI_STATUS,
    };
    (status, axum::Json(Value::Array(answers))).into_response()
}
