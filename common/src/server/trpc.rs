//! OpenCRVS's tRPC-over-HTTP procedure paths (§2.4), the same at node and central, so an
//! OpenCRVS client (the toolkit's `createClient`, the UI's `httpBatchLink`) can talk to either:
//! `POST {base}/{procedure}` with `{"json": input}`, the batched `POST {base}/{p1},{p2}?batch=1`
//! with `{"0": {"json": input}, ...}`, and queries over `GET ...?input=`. Each server says which
//! procedures it serves and runs them ([`Procedures`]); answers and errors take tRPC's shapes
//! (`{"result":{"data":{"json":...}}}`,
//! `{"error":{"json":{message, code, data:{code, httpStatus, path}}}}`).

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AuthHost, Caller, body};
use crate::error::ErrorCode;

/// Most procedure calls in one batch.
pub const BATCH_CALLS_MAX: usize = 16;

/// The record procedures both servers serve besides the user actions
/// (`crate::server::actions::UserAction`).
pub const RECORD_PROCEDURES: &[&str] = &[
    "event.bulkImport",
    "event.create",
    "event.get",
    "event.delete",
    "event.list",
    "event.draft.create",
    "event.draft.list",
];

/// The record procedures that are tRPC queries (GET).
pub const QUERY_PROCEDURES: &[&str] = &["event.get", "event.list", "event.draft.list"];

/// `?batch=1` marks a batched call.
#[derive(Debug, Deserialize)]
pub struct BatchQuery {
    batch: Option<String>,
    /// The input of a GET query (`{"json": ...}`, URL-encoded).
    input: Option<String>,
}

/// A server's procedures.
pub trait Procedures: AuthHost {
    /// Whether `name` is a procedure served here.
    fn serves(name: &str) -> bool;

    /// Whether `name` is a tRPC query (GET); the others are mutations (POST).
    fn is_query(name: &str) -> bool;

    /// Runs one procedure (`name` is served) for an authenticated caller.
    fn call(
        self: Arc<Self>,
        caller: Caller,
        name: String,
        input: Value,
    ) -> impl Future<Output = Result<Value, ApiError>> + Send;
}

/// The event id a procedure's input names: the input itself (`event.get`) or its `eventId`.
pub fn event_id_of(input: &Value) -> Result<String, ApiError> {
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

/// A procedure's input as the body its REST route takes.
pub fn bytes_of(input: &Value) -> Result<Bytes, BytesRejection> {
    Ok(Bytes::from(serde_json::to_vec(input).unwrap_or_default()))
}

async fn call<S: Procedures>(
    state: &Arc<S>,
    caller: &Result<Caller, ApiError>,
    procedure: &str,
    input: Value,
) -> Result<Value, ApiError> {
    if !S::serves(procedure) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("No procedure found on path \"{procedure}\""),
        ));
    }
    let caller = match caller {
        Ok(caller) => caller.clone(),
        Err(e) => return Err(ApiError::from_envelope(e.envelope().clone())),
    };
    Arc::clone(state)
        .call(caller, procedure.to_owned(), input)
        .await
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

fn error_response(error: &ApiError, path: &str) -> Response {
    (status_of(error), axum::Json(error_json(error, path))).into_response()
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
pub async fn procedure<S: Procedures>(
    State(state): State<Arc<S>>,
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
        return error_response(&error, &path);
    }
    let body: Value = match body::json(raw) {
        Ok(v) => v,
        Err(error) => return error_response(&error, &path),
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
pub async fn query<S: Procedures>(
    State(state): State<Arc<S>>,
    caller: Result<Caller, ApiError>,
    Path(path): Path<String>,
    Query(query): Query<BatchQuery>,
) -> Response {
    if !path.split(',').all(S::is_query) {
        // A known mutation over GET is tRPC's 405; anything else under the base is no route.
        if path.split(',').all(S::serves) {
            let error = ApiError::new(
                ErrorCode::MethodNotSupported,
                "This procedure is a mutation: POST it",
            );
            return error_response(&error, &path);
        }
        return ApiError::new(ErrorCode::NotFound, "No such route").into_response();
    }
    let body = match query.input.as_deref().map(serde_json::from_str::<Value>) {
        Some(Ok(body)) => body,
        None => json!({}),
        Some(Err(_)) => {
            let error = ApiError::input_one("invalid_type", "input is not JSON", &[]);
            return error_response(&error, &path);
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

async fn run<S: Procedures>(
    state: &Arc<S>,
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
            Err(error) => error_response(&error, path),
        };
    }
    let procedures: Vec<&str> = path.split(',').collect();
    if procedures.len() > BATCH_CALLS_MAX {
        let error = ApiError::bad_request(format!("At most {BATCH_CALLS_MAX} calls in one batch"));
        return error_response(&error, path);
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
