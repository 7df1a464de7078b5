//! Bad input and forged tokens against the routes people use at a node, with real processes:
//! central makes a registrar, two enrolled nodes of the Ibombo district (`two_factor = false`)
//! receive them, and central is stopped. Covered: the thirteen REST user actions
//! (`POST /api/events/events/{eventId}/{action}`), OpenCRVS's tRPC procedure paths (single and
//! `?batch=1`), and the `/auth/*` login routes; then JWT attacks (`alg: none`, foreign keys,
//! HS256, wrong `aud` or `iss`, expired, not yet valid, tampered, another node's token, a
//! logged-out token) against user-only routes.
//!
//! Every refusal must have the right status in the right shape (REST and auth:
//! `{message, code, issues?}`; tRPC: `{"error":{"json":{message, code, data:{code, httpStatus,
//! path}}}}`) and must **change nothing**: the watched nodes' counters (events, actions, log head,
//! free tracking ids) are the same after each case as before it, the signed logs verify, and the
//! records keep the actions they were created with.
//!
//! Cases are collected and every failing one is reported at the end, so one failure does not
//! hide the others.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crvs_common::limits::{
    CONTENT_TEXT_CHARS_MAX, REQUEST_BODY_BYTES_MAX, TRANSACTION_ID_CHARS_MAX,
};
use crvs_common::log::NodeSecretKey;
use crvs_tests::central::{CentralProcess, eventually};
use crvs_tests::users::{add_user, authenticate, claims, login, node_with_config, wait_for_user};
use crvs_tests::{
    Api, HOSPITAL_ID, NodeProcess, OFFICE_ID, Reply, Stats, action_kinds, actions,
    new_transaction_id, sample_birth_declaration,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

/// Chikobo Rural Health Centre, in the same district (Ibombo) as the office and the hospital.
const CHIKOBO_ID: &str = "7b8d2f30-0002-4000-8000-000000000012";

/// Demo mode: the login code is `000000`, nothing goes through the outbox.
const DEMO_CONFIG: &str = "two_factor = false\n";

/// Upper bound for the first tracking-id lease to reach a node (sync progress, not readiness).
const LEASE_TIMEOUT: Duration = Duration::from_secs(60);

/// The REST route segments of the user actions.
const ACTIONS: [&str; 13] = [
    "declare",
    "validate",
    "register",
    "reject",
    "archive",
    "print-certificate",
    "edit",
    "request-correction",
    "approve-correction",
    "reject-correction",
    "assign",
    "unassign",
    "custom",
];

const ASSIGN: &str = "event.actions.assignment.assign";
const JSON_TYPE: Option<&str> = Some("application/json");

// ---------------------------------------------------------------------------------------------
// Expected answers and the case collector.

/// The shape a refusal must have.
#[derive(Debug, Clone)]
enum Shape {
    /// OpenCRVS's REST envelope, with one of these statuses (the first is the preferred one).
    Envelope(Vec<u16>),
    /// tRPC's error shape with one of these statuses, for the procedure path `path`.
    Trpc(Vec<u16>, String),
    /// A tRPC batch answer: its HTTP status, then each call's status and procedure path.
    Batch(u16, Vec<(u16, String)>),
}

fn envelope(status: u16) -> Shape {
    Shape::Envelope(vec![status])
}

fn trpc(status: u16, path: &str) -> Shape {
    Shape::Trpc(vec![status], path.to_owned())
}

/// tRPC's name and JSON-RPC code for an HTTP status (`TRPC_ERROR_CODES_BY_KEY`).
fn trpc_code(status: u16) -> Option<(&'static str, i64)> {
    Some(match status {
        400 => ("BAD_REQUEST", -32600),
        401 => ("UNAUTHORIZED", -32001),
        403 => ("FORBIDDEN", -32003),
        404 => ("NOT_FOUND", -32004),
        405 => ("METHOD_NOT_SUPPORTED", -32005),
        409 => ("CONFLICT", -32009),
        413 => ("PAYLOAD_TOO_LARGE", -32013),
        415 => ("UNSUPPORTED_MEDIA_TYPE", -32015),
        429 => ("TOO_MANY_REQUESTS", -32029),
        _ => return None,
    })
}

/// Pushes a problem unless `value` is an object whose keys are all in `allowed`.
fn only_keys(value: &Value, what: &str, allowed: &[&str], problems: &mut Vec<String>) {
    match value.as_object() {
        None => problems.push(format!("{what} is not an object")),
        Some(obj) => {
            if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
                problems.push(format!("unexpected key {key:?} in {what}"));
            }
        }
    }
}

fn issues_well_formed(issues: &Value) -> bool {
    issues.as_array().is_some_and(|list| {
        list.iter().all(|issue| {
            issue["code"].is_string() && issue["message"].is_string() && issue["path"].is_array()
        })
    })
}

/// Problems with one answer as tRPC's error shape for `status` and procedure `path`.
fn trpc_error_problems(answer: &Value, status: u16, path: &str) -> Vec<String> {
    let Some((name, rpc)) = trpc_code(status) else {
        return vec![format!("no tRPC code for HTTP {status}")];
    };
    let mut problems = Vec::new();
    only_keys(answer, "the answer", &["error"], &mut problems);
    only_keys(&answer["error"], "error", &["json"], &mut problems);
    let error = &answer["error"]["json"];
    only_keys(
        error,
        "error.json",
        &["message", "code", "data"],
        &mut problems,
    );
    if !error["message"].is_string() {
        problems.push("no string error.json.message".to_owned());
    }
    if error["code"].as_i64() != Some(rpc) {
        problems.push(format!("error.json.code is not {rpc}"));
    }
    let data = &error["data"];
    only_keys(
        data,
        "error.json.data",
        &["code", "httpStatus", "path", "issues"],
        &mut problems,
    );
    if data["code"] != name {
        problems.push(format!("data.code is not {name}"));
    }
    if data["httpStatus"].as_u64() != Some(u64::from(status)) {
        problems.push(format!("data.httpStatus is not {status}"));
    }
    if data["path"] != path {
        problems.push(format!("data.path is not {path:?}"));
    }
    if let Some(issues) = data.get("issues")
        && !issues_well_formed(issues)
    {
        problems.push("data.issues is not a list of {code, message, path}".to_owned());
    }
    problems
}

/// Problems with `reply` as the REST envelope for `status`. `Reply::envelope_problem` knows no
/// 415, so that one is checked here with the same rules.
fn envelope_problem(reply: &Reply, status: u16) -> Option<String> {
    if status != 415 {
        return reply.envelope_problem(status);
    }
    let mut problems = Vec::new();
    if reply.status != 415 {
        problems.push(format!("status {} instead of 415", reply.status));
    }
    only_keys(
        &reply.body,
        "the body",
        &["message", "code", "issues"],
        &mut problems,
    );
    if !reply.body["message"].is_string() {
        problems.push("no string message".to_owned());
    }
    if reply.body["code"] != "UNSUPPORTED_MEDIA_TYPE" {
        problems.push("code is not UNSUPPORTED_MEDIA_TYPE".to_owned());
    }
    if let Some(issues) = reply.body.get("issues")
        && !issues_well_formed(issues)
    {
        problems.push("issues is not a list of {code, message, path}".to_owned());
    }
    (!problems.is_empty()).then(|| format!("{} (body: {})", problems.join("; "), reply.text))
}

/// One watched node and its counters when last checked.
struct Watched<'a> {
    node: &'a NodeProcess,
    name: &'static str,
    initial: Stats,
    baseline: Stats,
    active: bool,
}

/// Runs refusal cases and checks after each that the watched nodes wrote nothing.
struct Cases<'a> {
    nodes: Vec<Watched<'a>>,
    failures: Vec<String>,
    checked: usize,
}

impl<'a> Cases<'a> {
    fn new(nodes: &[(&'static str, &'a NodeProcess)]) -> Self {
        let nodes = nodes
            .iter()
            .map(|&(name, node)| {
                let stats = node.status().expect("status");
                Watched {
                    node,
                    name,
                    initial: stats,
                    baseline: stats,
                    active: true,
                }
            })
            .collect();
        Self {
            nodes,
            failures: Vec::new(),
            checked: 0,
        }
    }

    /// Checks after each case only the nodes named here (a node's counters are still compared
    /// with their first value at the end).
    fn watch(&mut self, names: &[&str]) {
        for watched in &mut self.nodes {
            watched.active = names.contains(&watched.name);
        }
    }

    fn fail(&mut self, text: String) {
        self.failures.push(text);
    }

    /// Records a failure unless `ok`.
    fn expect(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        self.checked += 1;
        if !ok {
            self.fail(format!("{name}: {detail}"));
        }
    }

    /// A refusal of shape `shape`, after which nothing is written.
    fn check(&mut self, name: &str, reply: Result<Reply, impl std::fmt::Display>, shape: &Shape) {
        self.check_message(name, reply, shape, None);
    }

    /// Like [`Self::check`], and the message must contain `message`.
    fn check_message(
        &mut self,
        name: &str,
        reply: Result<Reply, impl std::fmt::Display>,
        shape: &Shape,
        message: Option<&str>,
    ) {
        self.checked += 1;
        match reply {
            Err(e) => self.fail(format!("{name}: transport error {e}")),
            Ok(reply) => {
                let mut problems = Vec::new();
                let text = match shape {
                    Shape::Envelope(statuses) => {
                        let status = if statuses.contains(&reply.status) {
                            reply.status
                        } else {
                            statuses[0]
                        };
                        if let Some(problem) = envelope_problem(&reply, status) {
                            problems.push(if statuses.len() > 1 {
                                format!("{problem} (accepted statuses {statuses:?})")
                            } else {
                                problem
                            });
                        }
                        reply.body["message"].as_str()
                    }
                    Shape::Trpc(statuses, path) => {
                        let status = if statuses.contains(&reply.status) {
                            reply.status
                        } else {
                            problems.push(format!(
                                "status {} instead of one of {statuses:?}",
                                reply.status
                            ));
                            statuses[0]
                        };
                        problems.extend(trpc_error_problems(&reply.body, status, path));
                        reply.body["error"]["json"]["message"].as_str()
                    }
                    Shape::Batch(status, calls) => {
                        if reply.status != *status {
                            problems.push(format!("status {} instead of {status}", reply.status));
                        }
                        match reply.body.as_array() {
                            Some(answers) if answers.len() == calls.len() => {
                                for (i, (answer, (status, path))) in
                                    answers.iter().zip(calls).enumerate()
                                {
                                    for problem in trpc_error_problems(answer, *status, path) {
                                        problems.push(format!("call {i}: {problem}"));
                                    }
                                }
                            }
                            _ => problems
                                .push(format!("the body is not a list of {} answers", calls.len())),
                        }
                        None
                    }
                };
                if let Some(expected) = message
                    && !text.is_some_and(|t| t.contains(expected))
                {
                    problems.push(format!("message does not contain {expected:?}"));
                }
                if !problems.is_empty() {
                    let mut detail = problems.join("; ");
                    if !detail.contains("(body:") {
                        detail
                            .push_str(&format!(" (status {}, body: {})", reply.status, reply.text));
                    }
                    self.fail(format!("{name}: {detail}"));
                }
            }
        }
        self.check_nothing_written(name);
    }

    fn check_nothing_written(&mut self, name: &str) {
        let mut failures = Vec::new();
        for watched in self.nodes.iter_mut().filter(|w| w.active) {
            match watched.node.status() {
                Ok(now) if now == watched.baseline => {}
                Ok(now) => {
                    failures.push(format!(
                        "{name}: wrote something at node {}: before {:?}, after {now:?}",
                        watched.name, watched.baseline
                    ));
                    watched.baseline = now;
                }
                Err(e) => {
                    failures.push(format!("{name}: status of {} failed: {e:#}", watched.name))
                }
            }
        }
        self.failures.extend(failures);
    }

    /// Compares every watched node's counters with their values when the cases began.
    fn check_initial(&mut self) {
        for watched in &self.nodes {
            match watched.node.status() {
                Ok(now) if now == watched.initial => {}
                Ok(now) => self.failures.push(format!(
                    "node {} changed over the test: {:?} → {now:?}",
                    watched.name, watched.initial
                )),
                Err(e) => self
                    .failures
                    .push(format!("status of {} failed: {e:#}", watched.name)),
            }
        }
    }

    fn finish(self) {
        assert!(self.checked > 0);
        assert!(
            self.failures.is_empty(),
            "{} failures in {} cases:\n  {}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies.

fn with(body: &Value, key: &str, value: Value) -> Value {
    let mut body = body.clone();
    body[key] = value;
    body
}

fn without(body: &Value, key: &str) -> Value {
    let mut body = body.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.remove(key);
    }
    body
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON")
}

/// `body` with an extra `pad` string that takes it over the body limit.
fn oversized(body: &Value) -> Vec<u8> {
    let bytes = to_bytes(&with(
        body,
        "pad",
        json!("a".repeat(REQUEST_BODY_BYTES_MAX)),
    ));
    assert!(bytes.len() > REQUEST_BODY_BYTES_MAX);
    bytes
}

/// Bodies that are not the JSON object `valid` is, each with its content type. With `typed`,
/// also a body repeating a key (serde refuses it for a typed input; tRPC's `JSON.parse` keeps the
/// last value, so it is not bad input there).
fn malformed_bodies(
    valid: &Value,
    typed: bool,
) -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let text = serde_json::to_string(valid).expect("JSON");
    let form: Vec<(String, String)> = valid
        .as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            )
        })
        .collect();
    let form = serde_urlencoded::to_string(form).expect("form");
    let mut not_utf8 = vec![0xff, 0xfe];
    not_utf8.extend_from_slice(text.as_bytes());
    let mut bodies = vec![
        (
            "malformed JSON",
            JSON_TYPE,
            text.as_bytes()[..text.len() / 2].to_vec(),
        ),
        ("empty body", JSON_TYPE, Vec::new()),
        ("whitespace body", JSON_TYPE, b" \n ".to_vec()),
        ("JSON array", JSON_TYPE, b"[]".to_vec()),
        ("JSON null", JSON_TYPE, b"null".to_vec()),
        ("JSON string", JSON_TYPE, b"\"x\"".to_vec()),
        ("JSON number", JSON_TYPE, b"7".to_vec()),
        (
            "valid JSON then garbage",
            JSON_TYPE,
            format!("{text} x").into_bytes(),
        ),
        ("not UTF-8", JSON_TYPE, not_utf8),
        (
            "form-encoded body",
            Some("application/x-www-form-urlencoded"),
            form.clone().into_bytes(),
        ),
        (
            "plain text body",
            Some("text/plain"),
            b"do it please".to_vec(),
        ),
        ("no content type, not JSON", None, form.into_bytes()),
    ];
    if typed {
        let (key, value) = valid
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("a non-empty object");
        let duplicate = format!("{{{}:{value},{}", json!(key), &text[1..]);
        bodies.push(("a key given twice", JSON_TYPE, duplicate.into_bytes()));
    }
    bodies
}

fn action_path(event_id: &str, action: &str) -> String {
    format!("/api/events/events/{event_id}/{action}")
}

fn procedure_path(procedure: &str) -> String {
    format!("/api/events/{procedure}")
}

/// POSTs `body` as JSON with `Transfer-Encoding: chunked` over a plain connection: without a
/// `Content-Length` the size limit can only be enforced while the body is read.
async fn post_chunked(
    node: &NodeProcess,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<Reply, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let addr = node.addr();
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n"
    );
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    for chunk in body.chunks(64 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The node may answer and close before it has read everything: its answer is still there
    // to read, so a failed write is not the verdict.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(format!("no HTTP answer ({read:?}): {text:?}"));
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    Ok(Reply {
        status,
        headers: reqwest::header::HeaderMap::new(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
        text: body.to_owned(),
    })
}

/// A body each action route accepts up to the record lookup.
fn valid_body(action: &str) -> Value {
    let tx = new_transaction_id();
    match action {
        "declare" => json!({"transactionId": tx, "declaration": sample_birth_declaration()}),
        "request-correction" => {
            json!({"transactionId": tx, "declaration": {"child.gender": "female"}})
        }
        "reject" => json!({"transactionId": tx, "content": {"reason": "Wrong office"}}),
        "approve-correction" => json!({"transactionId": tx, "requestId": Uuid::new_v4()}),
        "reject-correction" => json!({
            "transactionId": tx,
            "requestId": Uuid::new_v4(),
            "content": {"reason": "Not needed"}
        }),
        "custom" => json!({"transactionId": tx, "customActionType": "VALIDATE_DECLARATION"}),
        _ => json!({"transactionId": tx}),
    }
}

/// A value nested `depth` lists deep (built by hand: parsing it would hit serde_json's limit).
fn nested(depth: usize) -> Value {
    let mut value = json!([]);
    for _ in 1..depth {
        value = json!([value]);
    }
    value
}

/// Wrong types, unknown keys and missing fields for `action` (statuses accepted for each).
fn shape_cases(action: &str, valid: &Value) -> Vec<(String, Vec<u16>, Value)> {
    let bad = |what: &str, body: Value| (what.to_owned(), vec![400], body);
    let mut cases = vec![
        bad("transactionId missing", without(valid, "transactionId")),
        bad(
            "transactionId is a number",
            with(valid, "transactionId", json!(7)),
        ),
        bad(
            "transactionId is null",
            with(valid, "transactionId", Value::Null),
        ),
        bad(
            "transactionId is empty",
            with(valid, "transactionId", json!("")),
        ),
        bad(
            "transactionId over the limit",
            with(
                valid,
                "transactionId",
                json!("t".repeat(TRANSACTION_ID_CHARS_MAX + 1)),
            ),
        ),
        bad("unknown key", with(valid, "foo", json!(1))),
        bad(
            "type names another action",
            with(valid, "type", json!("NOTIFY")),
        ),
        bad("type is a number", with(valid, "type", json!(5))),
        bad(
            "eventId of another record",
            with(valid, "eventId", json!(Uuid::new_v4())),
        ),
        bad("eventId is a number", with(valid, "eventId", json!(5))),
        bad(
            "createdAtLocation given by a user",
            with(valid, "createdAtLocation", json!(OFFICE_ID)),
        ),
        bad(
            "keepAssignment is a string",
            with(valid, "keepAssignment", json!("yes")),
        ),
        bad("waitFor is a string", with(valid, "waitFor", json!("yes"))),
        bad(
            "declaration is a string",
            with(valid, "declaration", json!("x")),
        ),
        bad(
            "declaration is a list",
            with(valid, "declaration", json!([])),
        ),
        bad("annotation is a list", with(valid, "annotation", json!([]))),
        bad("content is a string", with(valid, "content", json!("x"))),
        bad("requestId is a number", with(valid, "requestId", json!(5))),
        bad(
            "customActionType is a number",
            with(valid, "customActionType", json!(5)),
        ),
        bad(
            "originalActionId is a number",
            with(valid, "originalActionId", json!(5)),
        ),
    ];
    let declaration = |d: Value| with(valid, "declaration", d);
    let content = |c: Value| with(valid, "content", c);
    match action {
        "declare" => {
            let mut partial = sample_birth_declaration();
            partial.as_object_mut().expect("object").remove("child.dob");
            cases.extend([
                bad("unknown field id", declaration(json!({"foo.bar": "x"}))),
                bad(
                    "field of the wrong type",
                    declaration(json!({"child.name": {"surname": 12345}})),
                ),
                bad("required field missing", declaration(partial)),
                bad(
                    "deeply nested field value",
                    declaration(json!({"child.name": nested(200)})),
                ),
                bad(
                    "annotation with an unknown field",
                    with(valid, "annotation", json!({"foo.bar": "x"})),
                ),
            ]);
        }
        // The declaration is checked against the record's configuration, after the record is
        // read: a scope that does not cover this record (403) or its state (409) may come first.
        "validate" | "register" | "edit" | "request-correction" | "custom" => cases.push((
            "unknown field id".to_owned(),
            vec![400, 403, 409],
            declaration(json!({"foo.bar": "x"})),
        )),
        "reject" => cases.extend([
            bad("content.reason missing", without(valid, "content")),
            bad("content.reason empty", content(json!({"reason": " "}))),
            bad("content.reason is a number", content(json!({"reason": 5}))),
            bad(
                "content.reason over the limit",
                content(json!({"reason": "r".repeat(CONTENT_TEXT_CHARS_MAX + 1)})),
            ),
            bad(
                "with a declaration",
                declaration(json!({"child.gender": "male"})),
            ),
        ]),
        "archive" => cases.push(bad(
            "content.reason is a number",
            content(json!({"reason": 5})),
        )),
        "print-certificate" => cases.push(bad(
            "content.templateId is a number",
            content(json!({"templateId": 5})),
        )),
        "approve-correction" => cases.extend([
            bad("requestId missing", without(valid, "requestId")),
            bad(
                "requestId not a uuid",
                with(valid, "requestId", json!("abc")),
            ),
        ]),
        "reject-correction" => cases.extend([
            bad("content.reason missing", without(valid, "content")),
            bad("requestId missing", without(valid, "requestId")),
        ]),
        "assign" => cases.extend([
            bad(
                "with a declaration",
                declaration(json!({"child.gender": "male"})),
            ),
            bad(
                "assignedTo is a number",
                with(valid, "assignedTo", json!(5)),
            ),
            (
                "assignedTo another user".to_owned(),
                vec![403],
                with(valid, "assignedTo", json!(Uuid::new_v4())),
            ),
        ]),
        "unassign" => cases.push(bad(
            "with a declaration",
            declaration(json!({"child.gender": "male"})),
        )),
        _ => {}
    }
    if action == "custom" {
        cases.extend([
            bad(
                "customActionType missing",
                without(valid, "customActionType"),
            ),
            bad(
                "customActionType in lower case",
                with(valid, "customActionType", json!("validate_declaration")),
            ),
            bad(
                "customActionType over 64 characters",
                with(valid, "customActionType", json!("A".repeat(65))),
            ),
        ]);
    }
    if action == "validate" {
        cases.push(bad("type DECLARE", with(valid, "type", json!("DECLARE"))));
    }
    cases
}

// ---------------------------------------------------------------------------------------------
// Tokens.

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410), followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn now_secs() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit")
}

fn sign_eddsa(seed: &[u8; 32], claims: &Value) -> String {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(seed);
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("JWT".to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&der)).expect("signing")
}

fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("signing")
}

/// 32 random bytes (two v4 UUIDs: 244 random bits, plenty for a key nobody else holds).
fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    seed
}

/// A node's token-signing seed, from `jwt.key` in its data directory.
fn jwt_seed(node: &NodeProcess) -> [u8; 32] {
    let text = std::fs::read_to_string(node.data_dir().join("jwt.key")).expect("jwt.key");
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).expect("jwt.key is 32 hex bytes");
    seed
}

/// Unpadded base64url (RFC 4648 §5), as JWTs encode their parts.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let bits = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..=chunk.len() {
            let index = (bits >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The world: central (stopped), two nodes of one district, a registrar and two records.

struct World {
    /// Kept so its directory lives as long as the nodes' bundles refer to it.
    _central: CentralProcess,
    a: NodeProcess,
    b: NodeProcess,
    username: String,
    password: String,
    /// The registrar's tokens at node A and at node B.
    token_a: String,
    token_b: String,
    /// Another token of the registrar at A, used as the subject of bad logout requests.
    spare_a: String,
    /// A birth the registrar created at A (assigned to them), and one at B.
    record_a: String,
    record_b: String,
    /// The ids of those records' actions right after creation.
    created_a: Vec<String>,
    created_b: Vec<String>,
}

fn action_ids(doc: &Value, skip_reads: bool) -> Vec<String> {
    actions(doc)
        .iter()
        .filter(|a| !(skip_reads && a["type"] == "READ"))
        .map(|a| a["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn create_record(node: &NodeProcess, token: &str) -> (String, Vec<String>) {
    let created = node
        .api(token)
        .create_by_user("birth", &new_transaction_id())
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(
        action_kinds(&created.body),
        [
            ("CREATE".to_owned(), "Accepted".to_owned()),
            ("ASSIGN".to_owned(), "Accepted".to_owned())
        ]
    );
    let id = created.body["id"].as_str().expect("id").to_owned();
    (id, action_ids(&created.body, false))
}

async fn world() -> World {
    let mut central = CentralProcess::start().expect("central");
    let registrar = add_user(&central, "Joshua", "Mutale", "LOCAL_REGISTRAR", OFFICE_ID);
    let username = registrar["username"].as_str().expect("username").to_owned();
    let password = registrar["password"].as_str().expect("password").to_owned();
    let a = node_with_config(&central, HOSPITAL_ID, DEMO_CONFIG);
    let b = node_with_config(&central, CHIKOBO_ID, DEMO_CONFIG);
    for node in [&a, &b] {
        wait_for_user(node, &username, "active").await;
        eventually("a tracking-id lease", LEASE_TIMEOUT, || async move {
            Ok((node.status()?.pool_free > 0).then_some(()))
        })
        .await
        .expect("lease");
    }
    // Everything the test needs is at the nodes now; nothing more comes down.
    central.kill9().expect("stopping central");
    let token_a = login(&a, &username, &password, "000000").await;
    let token_b = login(&b, &username, &password, "000000").await;
    let spare_a = login(&a, &username, &password, "000000").await;
    let (record_a, created_a) = create_record(&a, &token_a).await;
    let (record_b, created_b) = create_record(&b, &token_b).await;
    World {
        _central: central,
        a,
        b,
        username,
        password,
        token_a,
        token_b,
        spare_a,
        record_a,
        record_b,
        created_a,
        created_b,
    }
}

// ---------------------------------------------------------------------------------------------
// The sections.

/// Bad input on the thirteen REST action routes, against a record the registrar holds (so each
/// request would write if it were taken).
async fn action_routes(cases: &mut Cases<'_>, w: &World) {
    let api = w.a.api(&w.token_a);
    let record = w.record_a.as_str();
    let unknown = Uuid::new_v4().to_string();
    let not_found = format!("Event not found with ID: {unknown}");
    for action in ACTIONS {
        let path = action_path(record, action);
        let name = |what: &str| format!("REST {action}: {what}");
        let valid = valid_body(action);

        // Ids: the body is fine, so the answer is about the id.
        cases.check_message(
            &name("unknown event id"),
            api.post(&action_path(&unknown, action), &valid).await,
            &envelope(404),
            Some(&not_found),
        );
        let mut bad_ids = vec![
            ("event id is not a uuid", "not-a-uuid".to_owned()),
            ("event id is a number", "12345".to_owned()),
        ];
        // Other spellings of a UUID (zod's `uuid()` refuses them); one parser serves every
        // action, so two actions stand for all.
        if matches!(action, "declare" | "assign") {
            bad_ids.extend([
                ("event id as urn:uuid", format!("urn:uuid:{unknown}")),
                ("event id without hyphens", unknown.replace('-', "")),
            ]);
        }
        for (what, id) in bad_ids {
            cases.check(
                &name(what),
                api.post(&action_path(&id, action), &valid).await,
                &envelope(400),
            );
        }

        for (what, content_type, bytes) in malformed_bodies(&valid, true) {
            cases.check(
                &name(what),
                api.post_bytes(&path, content_type, bytes).await,
                &envelope(400),
            );
        }
        cases.check(
            &name("body over 256 KiB"),
            api.post_bytes(&path, JSON_TYPE, oversized(&valid)).await,
            &envelope(413),
        );
        cases.check(
            &name("body over 256 KiB, chunked (no Content-Length)"),
            post_chunked(&w.a, &path, Some(&w.token_a), &oversized(&valid)).await,
            &envelope(413),
        );
        // A well-formed body labelled as something else: 415 (OpenCRVS's REST layer refuses
        // other content types), or handled as JSON; on an unknown record either way writes
        // nothing.
        cases.check(
            &name("valid JSON labelled text/plain (unknown event)"),
            api.post_bytes(
                &action_path(&unknown, action),
                Some("text/plain"),
                to_bytes(&valid),
            )
            .await,
            &Shape::Envelope(vec![415, 404]),
        );

        for (what, statuses, body) in shape_cases(action, &valid) {
            cases.check(
                &name(&what),
                api.post(&path, &body).await,
                &Shape::Envelope(statuses),
            );
        }
    }

    // Route-level refusals.
    let assign_path = action_path(record, "assign");
    cases.check(
        "REST: unknown action segment",
        api.post(&action_path(record, "frobnicate"), &valid_body("assign"))
            .await,
        &envelope(404),
    );
    cases.check(
        "REST: GET on an action route",
        api.get(&assign_path).await,
        &envelope(405),
    );
    cases.check(
        "REST: no token",
        w.a.anonymous()
            .post(&assign_path, &valid_body("assign"))
            .await,
        &envelope(401),
    );
    let system = w.a.health_api().await.expect("health client token");
    for action in ["assign", "declare", "register"] {
        cases.check(
            &format!("REST: system client on user-only {action}"),
            system
                .post(&action_path(record, action), &valid_body(action))
                .await,
            &envelope(403),
        );
    }
    cases.check(
        "REST (gateway path): event id is not a uuid",
        api.post("/events/events/not-a-uuid/assign", &valid_body("assign"))
            .await,
        &envelope(400),
    );
    cases.check_message(
        "REST (gateway path): unknown event id",
        api.post(
            &format!("/events/events/{unknown}/assign"),
            &valid_body("assign"),
        )
        .await,
        &envelope(404),
        Some(&not_found),
    );
}

/// Bad input on the tRPC procedure paths.
async fn trpc_procedures(cases: &mut Cases<'_>, w: &World) {
    let api = w.a.api(&w.token_a);
    let record = w.record_a.as_str();
    let unknown = Uuid::new_v4().to_string();
    let not_found = format!("Event not found with ID: {unknown}");
    let assign_input =
        |id: &str| json!({"eventId": id, "transactionId": new_transaction_id(), "type": "ASSIGN"});
    let wrap = |input: Value| json!({ "json": input });
    let assign_url = procedure_path(ASSIGN);

    // The wrapper: each of these would assign the record if its content were taken as input.
    let wrapped = wrap(assign_input(record));
    for (what, body) in [
        ("body not wrapped in {json}", assign_input(record)),
        ("{json} with another key", with(&wrapped, "input", json!(1))),
        ("body is a list of wrappers", json!([wrapped.clone()])),
        ("body is a string", json!("x")),
        ("body is null", Value::Null),
        (
            "body is {input: ...}",
            json!({"input": assign_input(record)}),
        ),
    ] {
        cases.check(
            &format!("tRPC: {what}"),
            api.post(&assign_url, &body).await,
            &trpc(400, ASSIGN),
        );
    }
    for (what, content_type, bytes) in malformed_bodies(&wrapped, false) {
        cases.check(
            &format!("tRPC: {what}"),
            api.post_bytes(&assign_url, content_type, bytes).await,
            &trpc(400, ASSIGN),
        );
    }
    cases.check(
        "tRPC: body over 256 KiB",
        api.post_bytes(&assign_url, JSON_TYPE, oversized(&wrapped))
            .await,
        &trpc(413, ASSIGN),
    );
    cases.check(
        "tRPC: body over 256 KiB, chunked (no Content-Length)",
        post_chunked(&w.a, &assign_url, Some(&w.token_a), &oversized(&wrapped)).await,
        &trpc(413, ASSIGN),
    );
    cases.check(
        "tRPC: valid JSON labelled text/plain (unknown event)",
        api.post_bytes(
            &procedure_path("event.get"),
            Some("text/plain"),
            to_bytes(&wrap(json!(unknown))),
        )
        .await,
        &Shape::Trpc(vec![415, 404], "event.get".to_owned()),
    );

    // Procedures that do not exist here.
    for procedure in [
        "event.actions.frobnicate.request",
        "event.actions.assignment",
        "event.get.request",
        "user.frobnicate",
        "event",
        "EVENT.GET",
    ] {
        cases.check(
            &format!("tRPC: unknown procedure {procedure}"),
            api.post(&procedure_path(procedure), &wrapped).await,
            &trpc(404, procedure),
        );
    }

    // Ids in the input.
    for procedure in [
        ASSIGN,
        "event.actions.declare.request",
        "event.actions.register.request",
        "event.actions.custom.request",
        "event.get",
    ] {
        let input = |id: Value| {
            let mut input = json!({"eventId": id, "transactionId": new_transaction_id()});
            if procedure == "event.actions.custom.request" {
                input["customActionType"] = json!("VALIDATE_DECLARATION");
            }
            if procedure == "event.get" {
                input = json!({ "eventId": id });
            }
            wrap(input)
        };
        let mut bad_ids = vec![
            ("eventId is not a uuid", json!("not-a-uuid")),
            ("eventId is a number", json!(5)),
            ("eventId is null", Value::Null),
        ];
        if matches!(procedure, ASSIGN | "event.get") {
            bad_ids.push(("eventId as urn:uuid", json!(format!("urn:uuid:{unknown}"))));
        }
        for (what, id) in bad_ids {
            cases.check(
                &format!("tRPC {procedure}: {what}"),
                api.post(&procedure_path(procedure), &input(id)).await,
                &trpc(400, procedure),
            );
        }
        let mut missing = input(Value::Null);
        missing["json"]
            .as_object_mut()
            .expect("object")
            .remove("eventId");
        cases.check(
            &format!("tRPC {procedure}: eventId missing"),
            api.post(&procedure_path(procedure), &missing).await,
            &trpc(400, procedure),
        );
        cases.check_message(
            &format!("tRPC {procedure}: unknown event id"),
            api.post(&procedure_path(procedure), &input(json!(unknown)))
                .await,
            &trpc(404, procedure),
            Some(&not_found),
        );
    }
    cases.check(
        "tRPC event.get: input is a string, not a uuid",
        api.post(&procedure_path("event.get"), &wrap(json!("not-a-uuid")))
            .await,
        &trpc(400, "event.get"),
    );
    cases.check_message(
        "tRPC event.get: input is an unknown id",
        api.post(&procedure_path("event.get"), &wrap(json!(unknown)))
            .await,
        &trpc(404, "event.get"),
        Some(&not_found),
    );
    for (what, input) in [
        ("input is a number", json!(5)),
        ("input is a list", json!([record])),
        ("no input", Value::Null),
    ] {
        cases.check(
            &format!("tRPC {ASSIGN}: {what}"),
            api.post(&assign_url, &wrap(input)).await,
            &trpc(400, ASSIGN),
        );
    }
    cases.check(
        &format!("tRPC {ASSIGN}: {{json}} missing (meta only)"),
        api.post(&assign_url, &json!({"meta": {}})).await,
        &trpc(400, ASSIGN),
    );

    // Wrong types and unknown keys, on the record the registrar holds.
    let input = assign_input(record);
    for (what, input) in [
        (
            "transactionId is a number",
            with(&input, "transactionId", json!(7)),
        ),
        ("transactionId missing", without(&input, "transactionId")),
        ("unknown key", with(&input, "foo", json!(1))),
        (
            "keepAssignment is a string",
            with(&input, "keepAssignment", json!("yes")),
        ),
        (
            "type names another action",
            with(&input, "type", json!("DECLARE")),
        ),
        (
            "declaration given",
            with(&input, "declaration", json!({"child.gender": "male"})),
        ),
    ] {
        cases.check(
            &format!("tRPC {ASSIGN}: {what}"),
            api.post(&assign_url, &wrap(input)).await,
            &trpc(400, ASSIGN),
        );
    }
    let declare = "event.actions.declare.request";
    let declare_input = json!({
        "eventId": record,
        "transactionId": new_transaction_id(),
        "declaration": sample_birth_declaration()
    });
    for (what, input) in [
        (
            "unknown field id",
            with(&declare_input, "declaration", json!({"foo.bar": "x"})),
        ),
        ("unknown key", with(&declare_input, "foo", json!(1))),
        (
            "declaration is a string",
            with(&declare_input, "declaration", json!("x")),
        ),
    ] {
        cases.check(
            &format!("tRPC {declare}: {what}"),
            api.post(&procedure_path(declare), &wrap(input)).await,
            &trpc(400, declare),
        );
    }
    let create = json!({"type": "birth", "transactionId": new_transaction_id()});
    for (what, input) in [
        (
            "transactionId is a number",
            with(&create, "transactionId", json!(7)),
        ),
        ("unknown key", with(&create, "foo", json!(1))),
        (
            "unknown event type",
            with(&create, "type", json!("marriage")),
        ),
        ("type missing", without(&create, "type")),
    ] {
        cases.check(
            &format!("tRPC event.create: {what}"),
            api.post(&procedure_path("event.create"), &wrap(input))
                .await,
            &trpc(400, "event.create"),
        );
    }
    cases.check(
        "tRPC: no token",
        w.a.anonymous().post(&assign_url, &wrapped).await,
        &trpc(401, ASSIGN),
    );

    // Over GET (`?input=`): `event.get` is a query; the actions are mutations, which tRPC
    // refuses over GET (405 METHOD_NOT_SUPPORTED), in its own shape either way.
    let query =
        |input: &Value| serde_urlencoded::to_string([("input", input.to_string())]).expect("query");
    let get_url = |input: &str| format!("{}?{input}", procedure_path("event.get"));
    cases.check(
        "tRPC: GET with ?input= (a mutation)",
        api.get(&format!("{assign_url}?{}", query(&wrapped))).await,
        &Shape::Trpc(vec![405, 404], ASSIGN.to_owned()),
    );
    cases.check_message(
        "tRPC event.get over GET: unknown event id",
        api.get(&get_url(&query(&wrap(json!(unknown))))).await,
        &trpc(404, "event.get"),
        Some(&not_found),
    );
    for (what, input) in [
        ("id is not a uuid", query(&wrap(json!("not-a-uuid")))),
        (
            "eventId is not a uuid",
            query(&wrap(json!({"eventId": "not-a-uuid"}))),
        ),
        ("eventId is a number", query(&wrap(json!({"eventId": 5})))),
        ("input not wrapped in {json}", query(&json!(unknown))),
        ("input is not JSON", "input=%7B%22json%22%3A".to_owned()),
        ("no input", String::new()),
    ] {
        cases.check(
            &format!("tRPC event.get over GET: {what}"),
            api.get(&get_url(&input)).await,
            &trpc(400, "event.get"),
        );
    }
    cases.check(
        "tRPC event.get over GET: no token",
        w.a.anonymous()
            .get(&get_url(&query(&wrap(json!(record)))))
            .await,
        &trpc(401, "event.get"),
    );
    cases.check(
        "tRPC: POST with ?input=",
        api.send(
            api.request(
                reqwest::Method::POST,
                &format!("{assign_url}?{}", query(&wrapped)),
            )
            .json(&wrapped),
        )
        .await,
        &trpc(405, ASSIGN),
    );

    // Batches.
    let batch_url = |procedures: &[&str]| format!("/api/events/{}?batch=1", procedures.join(","));
    let batch_body = |inputs: Vec<Value>| {
        let map: serde_json::Map<String, Value> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, input)| (i.to_string(), wrap(input)))
            .collect();
        Value::Object(map)
    };
    let seventeen = vec![ASSIGN; 17];
    cases.check(
        "tRPC batch: 17 calls",
        api.post(
            &batch_url(&seventeen),
            &batch_body((0..17).map(|_| assign_input(record)).collect()),
        )
        .await,
        &trpc(400, &seventeen.join(",")),
    );
    let sixteen = vec!["event.get"; 16];
    cases.check(
        "tRPC batch: 16 calls (the most), each for an unknown event",
        api.post(
            &batch_url(&sixteen),
            &batch_body((0..16).map(|_| json!(Uuid::new_v4())).collect()),
        )
        .await,
        &Shape::Batch(404, vec![(404, "event.get".to_owned()); 16]),
    );
    cases.check(
        "tRPC batch: an unknown procedure among known ones",
        api.post(
            &batch_url(&["event.get", "event.nope"]),
            &batch_body(vec![json!(unknown), assign_input(record)]),
        )
        .await,
        &Shape::Batch(
            404,
            vec![
                (404, "event.get".to_owned()),
                (404, "event.nope".to_owned()),
            ],
        ),
    );
    cases.check(
        "tRPC batch: a call not wrapped, a call without input",
        api.post(
            &batch_url(&[ASSIGN, ASSIGN]),
            &json!({"0": assign_input(record)}),
        )
        .await,
        &Shape::Batch(400, vec![(400, ASSIGN.to_owned()); 2]),
    );
    cases.check(
        "tRPC batch: body is a list",
        api.post(&batch_url(&[ASSIGN]), &json!([wrap(assign_input(record))]))
            .await,
        &Shape::Batch(400, vec![(400, ASSIGN.to_owned())]),
    );
    cases.check(
        "tRPC batch: mixed refusals",
        api.post(
            &batch_url(&["event.get", ASSIGN]),
            &batch_body(vec![json!(unknown), assign_input("not-a-uuid")]),
        )
        .await,
        &Shape::Batch(
            207,
            vec![(404, "event.get".to_owned()), (400, ASSIGN.to_owned())],
        ),
    );
    let two = format!("{ASSIGN},{ASSIGN}");
    let two_body = batch_body(vec![assign_input(record), assign_input(record)]);
    cases.check(
        "tRPC batch: malformed JSON",
        api.post_bytes(
            &batch_url(&[ASSIGN, ASSIGN]),
            JSON_TYPE,
            b"{\"0\":{\"json\":".to_vec(),
        )
        .await,
        &trpc(400, &two),
    );
    cases.check(
        "tRPC batch: body over 256 KiB",
        api.post_bytes(
            &batch_url(&[ASSIGN, ASSIGN]),
            JSON_TYPE,
            oversized(&two_body),
        )
        .await,
        &trpc(413, &two),
    );
    cases.check(
        "tRPC batch: GET with ?input= (mutations)",
        api.get(&format!(
            "{}&{}",
            batch_url(&[ASSIGN, ASSIGN]),
            query(&two_body)
        ))
        .await,
        &Shape::Trpc(vec![405, 404], two.clone()),
    );
    let seventeen_gets = vec!["event.get"; 17];
    cases.check(
        "tRPC batch over GET: 17 calls",
        api.get(&format!(
            "{}&{}",
            batch_url(&seventeen_gets),
            query(&batch_body((0..17).map(|_| json!(record)).collect()))
        ))
        .await,
        &trpc(400, &seventeen_gets.join(",")),
    );
    cases.check(
        "tRPC batch over GET: 16 calls (the most), each for an unknown event",
        api.get(&format!(
            "{}&{}",
            batch_url(&sixteen),
            query(&batch_body(
                (0..16).map(|_| json!(Uuid::new_v4())).collect()
            ))
        ))
        .await,
        &Shape::Batch(404, vec![(404, "event.get".to_owned()); 16]),
    );
}

/// Bad input on the `/auth/*` routes (no token needed there).
async fn auth_routes(cases: &mut Cases<'_>, w: &World) {
    let anonymous = w.a.anonymous();
    let garbage_nonce = "0".repeat(32);
    let routes = [
        (
            "/auth/authenticate",
            json!({"username": w.username, "password": "not the password"}),
        ),
        (
            "/auth/verifyCode",
            json!({"nonce": garbage_nonce, "code": "000000"}),
        ),
        (
            "/auth/resendAuthenticationCode",
            json!({ "nonce": garbage_nonce }),
        ),
        ("/auth/refreshToken", json!({"token": w.spare_a})),
        ("/auth/invalidateToken", json!({"token": w.spare_a})),
    ];
    for (route, valid) in &routes {
        let name = |what: &str| format!("{route}: {what}");
        for (what, content_type, bytes) in malformed_bodies(valid, true) {
            cases.check(
                &name(what),
                anonymous.post_bytes(route, content_type, bytes).await,
                &envelope(400),
            );
        }
        cases.check(
            &name("body over 256 KiB"),
            anonymous
                .post_bytes(route, JSON_TYPE, oversized(valid))
                .await,
            &envelope(413),
        );
        cases.check(
            &name("body over 256 KiB, chunked (no Content-Length)"),
            post_chunked(&w.a, route, None, &oversized(valid)).await,
            &envelope(413),
        );
        cases.check(
            &name("unknown key"),
            anonymous
                .post(route, &with(valid, "extra", json!(true)))
                .await,
            &envelope(400),
        );
        for key in valid.as_object().expect("object").keys() {
            for (what, body) in [
                ("missing", without(valid, key)),
                ("is a number", with(valid, key, json!(12_345_678))),
                ("is null", with(valid, key, Value::Null)),
                ("is a list", with(valid, key, json!([valid[key]]))),
                (
                    "is an object",
                    with(valid, key, json!({"value": valid[key]})),
                ),
            ] {
                cases.check(
                    &name(&format!("{key} {what}")),
                    anonymous.post(route, &body).await,
                    &envelope(400),
                );
            }
        }
    }

    // Well-formed but refused: 401, nothing written.
    let other_node_token = w.token_b.as_str();
    for (what, route, body) in [
        (
            "unknown nonce",
            "/auth/verifyCode",
            json!({"nonce": garbage_nonce, "code": "000000"}),
        ),
        (
            "unknown nonce",
            "/auth/resendAuthenticationCode",
            json!({ "nonce": garbage_nonce }),
        ),
        (
            "not a JWT",
            "/auth/refreshToken",
            json!({"token": "foobar"}),
        ),
        (
            "not a JWT",
            "/auth/invalidateToken",
            json!({"token": "foobar"}),
        ),
        (
            "another node's token",
            "/auth/refreshToken",
            json!({ "token": other_node_token }),
        ),
        (
            "another node's token",
            "/auth/invalidateToken",
            json!({ "token": other_node_token }),
        ),
        (
            "unknown user",
            "/auth/authenticate",
            json!({"username": "no.such-user", "password": "whatever1"}),
        ),
    ] {
        cases.check(
            &format!("{route}: {what}"),
            anonymous.post(route, &body).await,
            &envelope(401),
        );
    }
    for (route, body, other) in [
        (
            "/auth/authenticate",
            json!({"username": "no.such-user", "password": "whatever1"}),
            401,
        ),
        (
            "/auth/verifyCode",
            json!({"nonce": garbage_nonce, "code": "000000"}),
            401,
        ),
        ("/auth/invalidateToken", json!({"token": "foobar"}), 401),
    ] {
        cases.check(
            &format!("{route}: valid JSON labelled text/plain"),
            anonymous
                .post_bytes(route, Some("text/plain"), to_bytes(&body))
                .await,
            &Shape::Envelope(vec![415, other]),
        );
    }

    // Bad-shape requests are not login attempts: more than the 10 a minute, then the real
    // password still works.
    for i in 0..11 {
        cases.check(
            &format!("/auth/authenticate: password is a number (attempt {i})"),
            anonymous
                .post(
                    "/auth/authenticate",
                    &json!({"username": w.username, "password": 12_345_678}),
                )
                .await,
            &envelope(400),
        );
    }
    let started = authenticate(&w.a, &w.username, &w.password).await;
    cases.expect(
        "bad-shape requests do not use up login attempts",
        started.status == 200,
        format!("authenticate answered {} {}", started.status, started.text),
    );
    // Bad input on a pending login does not spend it.
    if let Some(nonce) = started.body["nonce"].as_str() {
        for (what, route, body) in [
            (
                "code is a number",
                "/auth/verifyCode",
                json!({"nonce": nonce, "code": 0}),
            ),
            (
                "code missing",
                "/auth/verifyCode",
                json!({ "nonce": nonce }),
            ),
            (
                "unknown key",
                "/auth/verifyCode",
                json!({"nonce": nonce, "code": "000000", "remember": true}),
            ),
            (
                "nonce is a list",
                "/auth/verifyCode",
                json!({"nonce": [nonce], "code": "000000"}),
            ),
            (
                "unknown key",
                "/auth/resendAuthenticationCode",
                json!({"nonce": nonce, "channel": "sms"}),
            ),
        ] {
            cases.check(
                &format!("{route} (pending login): {what}"),
                anonymous.post(route, &body).await,
                &envelope(400),
            );
        }
        cases.check(
            "/auth/verifyCode (pending login): wrong code",
            anonymous
                .post(
                    "/auth/verifyCode",
                    &json!({"nonce": nonce, "code": "123456"}),
                )
                .await,
            &envelope(401),
        );
        let verified = anonymous
            .post(
                "/auth/verifyCode",
                &json!({"nonce": nonce, "code": "000000"}),
            )
            .await
            .expect("verifyCode");
        cases.expect(
            "a pending login survives bad input",
            verified.status == 200 && verified.body["token"].is_string(),
            format!("verifyCode answered {} {}", verified.status, verified.text),
        );
    }
    // Bad logout and refresh requests leave the token valid.
    let token_status =
        w.a.api(&w.spare_a)
            .get(&format!("/api/events/events/{}", Uuid::new_v4()))
            .await
            .map(|r| r.status);
    cases.expect(
        "bad logout requests leave the token valid",
        matches!(token_status, Ok(404)),
        format!("a read with the token answered {token_status:?}"),
    );
}

/// Forged, foreign, expired and logged-out tokens against user-only routes, at both nodes.
async fn forged_tokens(cases: &mut Cases<'_>, w: &World) {
    let now = now_secs();
    let seed_a = jwt_seed(&w.a);
    let mut base = claims(&w.token_a);
    base["iat"] = json!(now - 10);
    base["exp"] = json!(now + 600);
    base["jti"] = json!(Uuid::new_v4());
    let forge = |change: &dyn Fn(&mut Value)| {
        let mut claims = base.clone();
        change(&mut claims);
        sign_eddsa(&seed_a, &claims)
    };

    // Control: the forging helper makes a token node A accepts, so each 401 below is about the
    // one thing that differs.
    let control = forge(&|_| {});
    let reply =
        w.a.api(&control)
            .get(&format!("/api/events/events/{}", Uuid::new_v4()))
            .await
            .expect("control read");
    assert_eq!(reply.status, 404, "forged control token: {}", reply.text);

    let none_header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    assert_eq!(none_header, "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0");
    let parts: Vec<&str> = w.token_a.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut tampered_claims = claims(&w.token_a);
    tampered_claims["sub"] = json!(Uuid::new_v4());
    let tampered_payload = base64url(&to_bytes(&tampered_claims));
    let token_public = NodeSecretKey::from_bytes(&seed_a).node_id();
    let issuer_b = claims(&w.token_b)["iss"].clone();

    // A logged-out token.
    let logged_out = login(&w.a, &w.username, &w.password, "000000").await;
    let logout =
        w.a.anonymous()
            .post("/auth/invalidateToken", &json!({ "token": logged_out }))
            .await
            .expect("logout");
    assert_eq!(logout.status, 200, "{}", logout.text);
    for route in ["/auth/refreshToken", "/auth/invalidateToken"] {
        cases.check(
            &format!("{route}: a logged-out token"),
            w.a.anonymous()
                .post(route, &json!({ "token": logged_out }))
                .await,
            &envelope(401),
        );
    }

    let tokens: Vec<(&str, String)> = vec![
        (
            "alg none, no signature",
            format!("{none_header}.{}.", parts[1]),
        ),
        (
            "alg none, the real signature",
            format!("{none_header}.{}.{}", parts[1], parts[2]),
        ),
        ("EdDSA with a random key", sign_eddsa(&random_seed(), &base)),
        (
            "HS256 keyed with the node's token public key",
            sign_hs256(token_public.as_bytes(), &base),
        ),
        (
            "HS256 with a random secret",
            sign_hs256(&random_seed(), &base),
        ),
        (
            "wrong aud",
            forge(&|c| c["aud"] = json!(["opencrvs:documents-user"])),
        ),
        ("no aud", forge(&|c| c["aud"] = json!([]))),
        (
            "wrong iss (OpenCRVS's auth service)",
            forge(&|c| c["iss"] = json!("opencrvs:auth-service")),
        ),
        (
            "iss of node B, signed with node A's key",
            forge(&|c| c["iss"] = issuer_b.clone()),
        ),
        (
            "expired",
            forge(&|c| {
                c["iat"] = json!(now - 3600);
                c["exp"] = json!(now - 120);
            }),
        ),
        (
            "not valid for another hour (nbf)",
            forge(&|c| c["nbf"] = json!(now + 3600)),
        ),
        (
            "no exp",
            forge(&|c| {
                c.as_object_mut().expect("claims").remove("exp");
            }),
        ),
        (
            "payload changed (another sub), the real signature",
            format!("{}.{tampered_payload}.{}", parts[0], parts[2]),
        ),
        ("the user's token from node B", w.token_b.clone()),
        ("a logged-out token", logged_out.clone()),
        ("not a JWT", "foobar".to_owned()),
        ("empty bearer token", String::new()),
    ];
    for (what, token) in &tokens {
        attack(cases, &w.a, "node A", &w.record_a, what, token).await;
    }
    // Replays at node B: the user's token of node A, and a token signed with A's key.
    for (what, token) in [
        ("the user's token from node A", w.token_a.as_str()),
        ("node A's forged control token", control.as_str()),
    ] {
        attack(cases, &w.b, "node B", &w.record_b, what, token).await;
    }
}

/// One token against the user-only routes of `node`: assign and read over REST, the same over
/// tRPC (the read over POST and GET). Each must be 401 in its shape.
async fn attack(
    cases: &mut Cases<'_>,
    node: &NodeProcess,
    at: &str,
    record: &str,
    what: &str,
    token: &str,
) {
    let api: Api = node.api(token);
    let assign = json!({"transactionId": new_transaction_id(), "type": "ASSIGN"});
    cases.check(
        &format!("{at}, {what}: REST assign"),
        api.post(&action_path(record, "assign"), &assign).await,
        &envelope(401),
    );
    cases.check(
        &format!("{at}, {what}: REST read"),
        api.get(&format!("/api/events/events/{record}")).await,
        &envelope(401),
    );
    cases.check(
        &format!("{at}, {what}: tRPC assign"),
        api.post(
            &procedure_path(ASSIGN),
            &json!({"json": with(&assign, "eventId", json!(record))}),
        )
        .await,
        &trpc(401, ASSIGN),
    );
    cases.check(
        &format!("{at}, {what}: tRPC event.get"),
        api.post(
            &procedure_path("event.get"),
            &json!({"json": {"eventId": record}}),
        )
        .await,
        &trpc(401, "event.get"),
    );
    let input = serde_urlencoded::to_string([("input", json!({"json": record}).to_string())])
        .expect("query");
    cases.check(
        &format!("{at}, {what}: tRPC event.get over GET"),
        api.get(&format!("{}?{input}", procedure_path("event.get")))
            .await,
        &trpc(401, "event.get"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_routes_refuse_bad_input_and_forged_tokens_and_write_nothing() {
    let w = world().await;
    let mut cases = Cases::new(&[("A", &w.a), ("B", &w.b)]);

    cases.watch(&["A"]);
    action_routes(&mut cases, &w).await;
    trpc_procedures(&mut cases, &w).await;
    auth_routes(&mut cases, &w).await;
    cases.watch(&["A", "B"]);
    forged_tokens(&mut cases, &w).await;

    // Nothing changed over the whole run; the logs verify; each record still has exactly the
    // actions it was created with (the read below records a READ, left out of the comparison).
    cases.check_initial();
    for (name, node, token, record, created) in [
        ("A", &w.a, &w.token_a, &w.record_a, &w.created_a),
        ("B", &w.b, &w.token_b, &w.record_b, &w.created_b),
    ] {
        match (node.verify_log(), node.status()) {
            (Ok(log), Ok(stats)) => cases.expect(
                &format!("node {name}: the log verifies"),
                log.verified == stats.log_seq,
                format!("{log:?} for {stats:?}"),
            ),
            (log, stats) => cases.fail(format!(
                "node {name}: log verify or status failed: {log:?} {stats:?}"
            )),
        }
        let read = node.api(token).read(record).await.expect("read");
        cases.expect(
            &format!("node {name}: the record keeps its actions"),
            read.status == 200 && action_ids(&read.body, true) == *created,
            format!("{} {}", read.status, read.text),
        );
    }
    cases.finish();
}
