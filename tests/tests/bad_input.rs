//! Bad input against a real `crvs-node` process: every refusal carries OpenCRVS's envelope
//! `{message, code, issues?}` (or the OAuth2 error body on the token route) with the right
//! status, and **nothing is written**: the `status` counters (events, actions, log head, free
//! tracking ids) are the same after each case as before it.
//!
//! The cases are tables; each test collects every failing case and reports them together.
//! Successful reads are avoided between cases on purpose: `GET /events/{id}` records a READ.

use std::time::{SystemTime, UNIX_EPOCH};

use crvs_common::limits::{REQUEST_BODY_BYTES_MAX, SEARCH_LIMIT_MAX};
use crvs_tests::{
    ADMIN_AREA_ID, Api, Credentials, HOSPITAL_ID, NodeProcess, OFFICE_ID, Reply, Stats,
    create_and_notify_body, create_body, new_transaction_id, notify_body, sample_birth_declaration,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// What a refusal's `message` must be.
#[derive(Debug, Clone, Copy)]
enum Message<'a> {
    /// Any string.
    Any,
    /// Exactly this.
    Exact(&'a str),
    /// Contains this.
    Contains(&'a str),
}

/// Runs cases against one node and checks that none of them writes.
struct Cases<'a> {
    node: &'a NodeProcess,
    baseline: Stats,
    failures: Vec<String>,
    checked: usize,
}

impl<'a> Cases<'a> {
    fn new(node: &'a NodeProcess) -> Self {
        let baseline = node.status().expect("status");
        Self {
            node,
            baseline,
            failures: Vec::new(),
            checked: 0,
        }
    }

    /// An events-API refusal: `status`, the envelope, `message`, and no write.
    fn refused(
        &mut self,
        name: &str,
        reply: Result<Reply, reqwest::Error>,
        status: u16,
        message: Message<'_>,
    ) {
        self.checked += 1;
        match reply {
            Err(e) => self.failures.push(format!("{name}: transport error {e}")),
            Ok(reply) => {
                if let Some(problem) = reply.envelope_problem(status) {
                    self.failures.push(format!("{name}: {problem}"));
                } else {
                    let ok = match message {
                        Message::Any => true,
                        Message::Exact(m) => reply.message() == m,
                        Message::Contains(m) => reply.message().contains(m),
                    };
                    if !ok {
                        self.failures.push(format!(
                            "{name}: message {:?} is not {message:?}",
                            reply.message()
                        ));
                    }
                }
            }
        }
        self.check_nothing_written(name);
    }

    /// A token-route refusal: `status` and the OAuth2 `{error, error_description}` body.
    fn oauth_refused(
        &mut self,
        name: &str,
        reply: Result<Reply, reqwest::Error>,
        status: u16,
        error: &str,
    ) {
        self.checked += 1;
        match reply {
            Err(e) => self.failures.push(format!("{name}: transport error {e}")),
            Ok(reply) => {
                let shape_ok = reply.body["error"] == error
                    && reply.body["error_description"].is_string()
                    && reply.body.get("access_token").is_none();
                if reply.status != status || !shape_ok {
                    self.failures.push(format!(
                        "{name}: expected {status} {{error: {error}}}, got {} {}",
                        reply.status, reply.text
                    ));
                }
            }
        }
        self.check_nothing_written(name);
    }

    fn check_nothing_written(&mut self, name: &str) {
        match self.node.status() {
            Ok(now) if now == self.baseline => {}
            Ok(now) => {
                self.failures.push(format!(
                    "{name}: wrote something: before {:?}, after {now:?}",
                    self.baseline
                ));
                self.baseline = now;
            }
            Err(e) => self.failures.push(format!("{name}: status failed: {e:#}")),
        }
    }

    fn finish(self) {
        assert!(self.checked > 0);
        assert!(
            self.failures.is_empty(),
            "{} of {} cases failed:\n  {}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n  ")
        );
    }
}

/// A node, a health API client, an event in CREATED state and one in NOTIFIED state.
struct Setup {
    node: NodeProcess,
    api: Api,
    created_id: String,
    notified_id: String,
    notified_tx: String,
    create_tx: String,
}

async fn setup() -> Setup {
    let node = NodeProcess::start().expect("starting node");
    let api = node.health_api().await.expect("token");
    let create_tx = new_transaction_id();
    let created = api.create("birth", &create_tx, OFFICE_ID).await.unwrap();
    assert_eq!(created.status, 200, "{}", created.text);
    let notified_tx = new_transaction_id();
    let notified = api
        .create_and_notify(
            "birth",
            &notified_tx,
            HOSPITAL_ID,
            &sample_birth_declaration(),
        )
        .await
        .unwrap();
    assert_eq!(notified.status, 200, "{}", notified.text);
    Setup {
        created_id: created.body["id"].as_str().unwrap().to_owned(),
        notified_id: notified.body["id"].as_str().unwrap().to_owned(),
        notified_tx,
        create_tx,
        api,
        node,
    }
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

#[tokio::test]
async fn malformed_and_invalid_bodies_write_nothing() {
    let s = setup().await;
    let api = &s.api;
    let notify_path = format!("/api/events/events/{}/notify", s.created_id);
    let json_type = Some("application/json");
    let mut cases = Cases::new(&s.node);
    let input_failed = Message::Exact("Input validation failed");

    for (name, path) in [
        ("create", "/api/events/events"),
        ("notify", notify_path.as_str()),
        ("single call", "/api/events/events/notify"),
        ("search", "/api/events/events/search"),
    ] {
        cases.refused(
            &format!("malformed JSON ({name})"),
            api.post_bytes(path, json_type, b"{\"type\":".to_vec())
                .await,
            400,
            input_failed,
        );
        cases.refused(
            &format!("empty body ({name})"),
            api.post_bytes(path, json_type, Vec::new()).await,
            400,
            input_failed,
        );
        cases.refused(
            &format!("JSON array body ({name})"),
            api.post_bytes(path, json_type, b"[]".to_vec()).await,
            400,
            input_failed,
        );
    }

    let mut extra = create_body("birth", &new_transaction_id(), OFFICE_ID);
    extra["foo"] = json!(1);
    cases.refused(
        "unknown top-level key (create)",
        api.post("/api/events/events", &extra).await,
        400,
        input_failed,
    );
    let mut extra = notify_body(&new_transaction_id(), OFFICE_ID, &json!({}));
    extra["foo"] = json!(1);
    cases.refused(
        "unknown top-level key (notify)",
        api.post(&notify_path, &extra).await,
        400,
        input_failed,
    );
    let mut extra = create_and_notify_body("birth", &new_transaction_id(), OFFICE_ID, &json!({}));
    extra["type"] = json!("birth");
    cases.refused(
        "unknown top-level key (single call)",
        api.post("/api/events/events/notify", &extra).await,
        400,
        input_failed,
    );
    // `issues` says which key: zod's `unrecognized_keys`.
    let mut extra = create_body("birth", &new_transaction_id(), OFFICE_ID);
    extra["foo"] = json!(1);
    let reply = api.post("/api/events/events", &extra).await.unwrap();
    assert_eq!(
        reply.body["issues"][0]["code"], "unrecognized_keys",
        "{}",
        reply.text
    );

    cases.refused(
        "unknown field id",
        api.notify(
            &s.created_id,
            &new_transaction_id(),
            OFFICE_ID,
            &json!({"foo.bar": "x"}),
        )
        .await,
        400,
        Message::Exact(r#"[{"message":"Unexpected field","id":"foo.bar","value":"x"}]"#),
    );
    cases.refused(
        "unknown field id (single call)",
        api.create_and_notify(
            "birth",
            &new_transaction_id(),
            OFFICE_ID,
            &json!({"foo.bar": "x"}),
        )
        .await,
        400,
        Message::Exact(r#"[{"message":"Unexpected field","id":"foo.bar","value":"x"}]"#),
    );
    cases.refused(
        "wrong value type",
        api.notify(
            &s.created_id,
            &new_transaction_id(),
            OFFICE_ID,
            &json!({"child.name": {"surname": 12345}}),
        )
        .await,
        400,
        Message::Exact(
            r#"[{"message":"Invalid input","id":"child.name","value":{"surname":12345}}]"#,
        ),
    );
    cases.refused(
        "declaration is not an object",
        api.notify(&s.created_id, &new_transaction_id(), OFFICE_ID, &json!("x"))
            .await,
        400,
        input_failed,
    );
    let mut wrong_type = notify_body(&new_transaction_id(), OFFICE_ID, &json!({}));
    wrong_type["type"] = json!("DECLARE");
    cases.refused(
        "notify body with type DECLARE",
        api.post(&notify_path, &wrong_type).await,
        400,
        input_failed,
    );
    let mut other_event = notify_body(&new_transaction_id(), OFFICE_ID, &json!({}));
    other_event["eventId"] = json!(s.notified_id);
    cases.refused(
        "eventId in the body differs from the path",
        api.post(&notify_path, &other_event).await,
        400,
        input_failed,
    );
    cases.refused(
        "empty transactionId",
        api.create("birth", "", OFFICE_ID).await,
        400,
        input_failed,
    );
    cases.refused(
        "transactionId is a number",
        api.post(
            "/api/events/events",
            &json!({"type": "birth", "transactionId": 7, "createdAtLocation": OFFICE_ID}),
        )
        .await,
        400,
        input_failed,
    );

    // Size limit: one byte over is 413 before anything is parsed; exactly at the limit the body
    // is read and judged on its content (here: an unknown key, so 400).
    let oversized = padded_body(REQUEST_BODY_BYTES_MAX + 1, "declaration");
    cases.refused(
        "body one byte over 256 KiB",
        api.post_bytes(&notify_path, json_type, oversized).await,
        413,
        Message::Any,
    );
    let at_limit = padded_body(REQUEST_BODY_BYTES_MAX, "pad");
    cases.refused(
        "body of exactly 256 KiB",
        api.post_bytes(&notify_path, json_type, at_limit).await,
        400,
        input_failed,
    );
    cases.finish();
}

/// A notify body of exactly `size` bytes, padded through `child.name.firstname` (when `into` is
/// `declaration`, a valid body but for its size) or through an unknown top-level key `pad`.
fn padded_body(size: usize, into: &str) -> Vec<u8> {
    let make = |pad: &str| {
        let mut body = notify_body(
            "padded-transaction",
            OFFICE_ID,
            &json!({"child.name": {"firstname": pad, "surname": "X"}}),
        );
        if into == "pad" {
            body["declaration"] = json!({});
            body["pad"] = json!(pad);
        }
        bytes(&body)
    };
    let overhead = make("").len();
    assert!(size > overhead);
    let body = make(&"a".repeat(size - overhead));
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn created_at_location_is_checked_before_writing() {
    let s = setup().await;
    let api = &s.api;
    let mut cases = Cases::new(&s.node);
    let required = Message::Exact("createdAtLocation is required and must be a valid location id");
    let invalid = Message::Exact("createdAtLocation must be a valid location id");

    cases.refused(
        "missing (create)",
        api.post(
            "/api/events/events",
            &json!({"type": "birth", "transactionId": new_transaction_id()}),
        )
        .await,
        400,
        required,
    );
    let mut body = notify_body(&new_transaction_id(), OFFICE_ID, &json!({}));
    body.as_object_mut().unwrap().remove("createdAtLocation");
    cases.refused(
        "missing (notify)",
        api.post(
            &format!("/api/events/events/{}/notify", s.created_id),
            &body,
        )
        .await,
        400,
        required,
    );
    let mut body = create_and_notify_body("birth", &new_transaction_id(), OFFICE_ID, &json!({}));
    body.as_object_mut().unwrap().remove("createdAtLocation");
    cases.refused(
        "missing (single call)",
        api.post("/api/events/events/notify", &body).await,
        400,
        required,
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    for (what, location) in [
        ("unknown UUID", unknown.as_str()),
        ("administrative area", ADMIN_AREA_ID),
    ] {
        cases.refused(
            &format!("{what} (create)"),
            api.create("birth", &new_transaction_id(), location).await,
            400,
            invalid,
        );
        cases.refused(
            &format!("{what} (notify)"),
            api.notify(&s.created_id, &new_transaction_id(), location, &json!({}))
                .await,
            400,
            invalid,
        );
        cases.refused(
            &format!("{what} (single call)"),
            api.create_and_notify("birth", &new_transaction_id(), location, &json!({}))
                .await,
            400,
            invalid,
        );
    }
    cases.refused(
        "not a UUID (create)",
        api.create("birth", &new_transaction_id(), "ibombo-office")
            .await,
        400,
        Message::Any,
    );
    cases.finish();
}

/// The PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410), followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The claims the node puts in a system token (auth.rs), valid from `iat` to `exp`.
fn claims(node: &NodeProcess, client: &Credentials, iat: i64, exp: i64) -> Value {
    json!({
        "sub": client.client_id,
        "scope": client.scopes,
        "userType": "system",
        "iss": format!("crvs-edge:node:{}", node.node_id()),
        "aud": ["opencrvs:gateway-user", "opencrvs:events-user"],
        "iat": iat,
        "exp": exp,
    })
}

fn sign_eddsa(seed: &[u8; 32], claims: &Value) -> String {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(seed);
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("JWT".to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&der)).unwrap()
}

/// The node's token-signing seed, from `jwt.key` in its data directory.
fn node_jwt_seed(node: &NodeProcess) -> [u8; 32] {
    let text = std::fs::read_to_string(node.data_dir().join("jwt.key")).expect("jwt.key");
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).expect("jwt.key is 32 hex bytes");
    seed
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401() {
    let s = setup().await;
    let node = &s.node;
    let client = node.health_client();
    let real = node.token().await.unwrap();
    let now = now_secs();
    let node_seed = node_jwt_seed(node);
    // A fixed key that is not the node's: deterministic, and as foreign as a random one.
    let foreign_seed = [0x5a; 32];

    // Controls: the forging helpers make tokens the node accepts when key and times are right,
    // so each 401 below is about the one thing that differs.
    let forged_ok = sign_eddsa(&node_seed, &claims(node, client, now - 10, now + 300));
    let control = node
        .api(&forged_ok)
        .get("/api/events/locations")
        .await
        .unwrap();
    assert_eq!(
        control.status, 200,
        "forged control token: {}",
        control.text
    );

    let expired = sign_eddsa(&node_seed, &claims(node, client, now - 3600, now - 120));
    let foreign = sign_eddsa(&foreign_seed, &claims(node, client, now - 10, now + 300));
    let payload = real.split('.').nth(1).unwrap();
    // base64url of {"alg":"none","typ":"JWT"}, the real token's claims, no signature.
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    // Algorithm confusion: HS256 keyed with the node's public key (the node id).
    let mut public = [0u8; 32];
    hex::decode_to_slice(node.node_id(), &mut public).unwrap();
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(node, client, now - 10, now + 300),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    let mut wrong_issuer = claims(node, client, now - 10, now + 300);
    wrong_issuer["iss"] = json!("opencrvs:auth-service");
    let wrong_issuer = sign_eddsa(&node_seed, &wrong_issuer);
    let mut wrong_audience = claims(node, client, now - 10, now + 300);
    wrong_audience["aud"] = json!(["opencrvs:documents-user"]);
    let wrong_audience = sign_eddsa(&node_seed, &wrong_audience);
    let mut tampered = real.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });

    let body = create_body("birth", &new_transaction_id(), OFFICE_ID);
    let mut cases = Cases::new(node);
    let anonymous = node.anonymous();
    cases.refused(
        "no Authorization header",
        anonymous.post("/api/events/events", &body).await,
        401,
        Message::Any,
    );
    for (name, token) in [
        ("expired token", expired.as_str()),
        ("token signed by another key", foreign.as_str()),
        ("alg none", alg_none.as_str()),
        ("HS256 with the public key", hs256.as_str()),
        ("wrong issuer", wrong_issuer.as_str()),
        ("wrong audience", wrong_audience.as_str()),
        ("tampered signature", tampered.as_str()),
        ("foobar", "foobar"),
        ("empty bearer", ""),
    ] {
        let api = node.api(token);
        cases.refused(
            &format!("{name} (create)"),
            api.post("/api/events/events", &body).await,
            401,
            Message::Any,
        );
        cases.refused(
            &format!("{name} (single call)"),
            api.create_and_notify("birth", &new_transaction_id(), OFFICE_ID, &json!({}))
                .await,
            401,
            Message::Any,
        );
        cases.refused(
            &format!("{name} (read)"),
            api.read(&s.created_id).await,
            401,
            Message::Any,
        );
    }
    for (name, header) in [
        ("Basic scheme", format!("Basic {real}")),
        ("token without scheme", real.clone()),
    ] {
        cases.refused(
            name,
            anonymous
                .send(
                    anonymous
                        .request(reqwest::Method::POST, "/api/events/events")
                        .header(reqwest::header::AUTHORIZATION, header)
                        .json(&body),
                )
                .await,
            401,
            Message::Any,
        );
    }
    cases.finish();
}

#[tokio::test]
async fn missing_scopes_and_unknown_events_write_nothing() {
    let s = setup().await;
    let node = &s.node;
    let api = &s.api;
    let reader = node
        .add_client("reader", &["type=record.read"])
        .expect("client add");
    let reader = node.api(&node.token_for(&reader).await.unwrap());
    let death_only = node
        .add_client(
            "death-only",
            &[
                "type=record.create&event=death",
                "type=record.notify&event=death",
                "type=record.search&event=death",
            ],
        )
        .expect("client add");
    let death_only = node.api(&node.token_for(&death_only).await.unwrap());

    let mut cases = Cases::new(node);
    cases.refused(
        "record.read only: create",
        reader
            .create("birth", &new_transaction_id(), OFFICE_ID)
            .await,
        403,
        Message::Any,
    );
    cases.refused(
        "record.read only: notify",
        reader
            .notify(&s.created_id, &new_transaction_id(), OFFICE_ID, &json!({}))
            .await,
        403,
        Message::Any,
    );
    cases.refused(
        "record.read only: single call",
        reader
            .create_and_notify("birth", &new_transaction_id(), OFFICE_ID, &json!({}))
            .await,
        403,
        Message::Any,
    );
    cases.refused(
        "record.read only: search",
        reader
            .search(&json!({"query": {"type": "and", "clauses": [{"eventType": "birth"}]}}))
            .await,
        403,
        Message::Any,
    );
    cases.refused(
        "death scopes: create birth",
        death_only
            .create("birth", &new_transaction_id(), OFFICE_ID)
            .await,
        403,
        Message::Any,
    );
    cases.refused(
        "death scopes: notify a birth",
        death_only
            .notify(&s.created_id, &new_transaction_id(), OFFICE_ID, &json!({}))
            .await,
        403,
        Message::Any,
    );
    cases.refused(
        "death scopes: single call birth",
        death_only
            .create_and_notify("birth", &new_transaction_id(), OFFICE_ID, &json!({}))
            .await,
        403,
        Message::Any,
    );
    cases.refused(
        "death scopes: read a birth (no record.read at all)",
        death_only.read(&s.created_id).await,
        403,
        Message::Any,
    );

    let unknown = uuid::Uuid::new_v4().to_string();
    let not_found = format!("Event not found with ID: {unknown}");
    cases.refused(
        "unknown event id: notify",
        api.notify(&unknown, &new_transaction_id(), OFFICE_ID, &json!({}))
            .await,
        404,
        Message::Exact(&not_found),
    );
    cases.refused(
        "unknown event id: read",
        api.read(&unknown).await,
        404,
        Message::Exact(&not_found),
    );
    cases.refused(
        "unknown event id: read (gateway path)",
        api.get(&format!("/events/events/{unknown}")).await,
        404,
        Message::Exact(&not_found),
    );
    cases.refused(
        "bad event id: notify",
        api.notify("not-a-uuid", &new_transaction_id(), OFFICE_ID, &json!({}))
            .await,
        400,
        Message::Any,
    );
    cases.refused(
        "bad event id: read",
        api.read("not-a-uuid").await,
        400,
        Message::Any,
    );
    cases.refused(
        "unknown tracking id: record data",
        api.get("/api/events/events/tracking/ZZZZZZ/data?fields=child.name")
            .await,
        404,
        Message::Any,
    );
    cases.refused(
        "bad tracking id: record data",
        api.get("/api/events/events/tracking/abc/data?fields=child.name")
            .await,
        400,
        Message::Any,
    );
    cases.refused(
        "no such route",
        api.get("/api/events/nothing-here").await,
        404,
        Message::Any,
    );
    cases.finish();
}

#[tokio::test]
async fn transaction_id_reuse_with_another_body_conflicts() {
    let s = setup().await;
    let api = &s.api;
    let mut cases = Cases::new(&s.node);
    cases.refused(
        "create: same transactionId, another location",
        api.create("birth", &s.create_tx, HOSPITAL_ID).await,
        409,
        Message::Any,
    );
    cases.refused(
        "single call: same transactionId, another declaration",
        api.create_and_notify(
            "birth",
            &s.notified_tx,
            HOSPITAL_ID,
            &json!({"child.gender": "female"}),
        )
        .await,
        409,
        Message::Any,
    );
    cases.refused(
        "single call: same transactionId, another location",
        api.create_and_notify(
            "birth",
            &s.notified_tx,
            OFFICE_ID,
            &sample_birth_declaration(),
        )
        .await,
        409,
        Message::Any,
    );
    // The notify half of the single call was recorded with `notified_tx` on `notified_id`.
    cases.refused(
        "notify: same transactionId, another declaration",
        api.notify(
            &s.notified_id,
            &s.notified_tx,
            HOSPITAL_ID,
            &json!({"child.gender": "female"}),
        )
        .await,
        409,
        Message::Any,
    );
    cases.refused(
        "notify: same transactionId, another event",
        api.notify(
            &s.created_id,
            &s.notified_tx,
            HOSPITAL_ID,
            &sample_birth_declaration(),
        )
        .await,
        409,
        Message::Any,
    );
    cases.refused(
        "notify: a NOTIFIED event again",
        api.notify(&s.notified_id, &new_transaction_id(), OFFICE_ID, &json!({}))
            .await,
        409,
        Message::Contains("Action 'NOTIFY' cannot be performed on an event in 'NOTIFIED' state"),
    );
    cases.finish();
}

#[tokio::test]
async fn token_route_errors_use_oauth_bodies() {
    let s = setup().await;
    let node = &s.node;
    let anonymous = node.anonymous();
    let client = node.health_client();
    let id = client.client_id.as_str();
    let secret = client.client_secret.as_str();
    let removed = node.add_client("gone", &["type=record.read"]).unwrap();
    node.cli(&["client", "remove", &removed.client_id])
        .expect("client remove");

    let mut cases = Cases::new(node);
    let query = |q: String| {
        let anonymous = anonymous.clone();
        async move {
            anonymous
                .post_bytes(&format!("/auth/token?{q}"), None, Vec::new())
                .await
        }
    };
    let form = |f: String| {
        let anonymous = anonymous.clone();
        async move {
            anonymous
                .post_bytes(
                    "/api/auth/token",
                    Some("application/x-www-form-urlencoded"),
                    f.into_bytes(),
                )
                .await
        }
    };
    cases.oauth_refused(
        "grant_type=password",
        query(format!(
            "grant_type=password&client_id={id}&client_secret={secret}"
        ))
        .await,
        400,
        "unsupported_grant_type",
    );
    cases.oauth_refused(
        "grant_type=refresh_token",
        query(format!(
            "grant_type=refresh_token&client_id={id}&client_secret={secret}"
        ))
        .await,
        400,
        "unsupported_grant_type",
    );
    cases.oauth_refused(
        "form: grant_type=password",
        form(format!(
            "grant_type=password&client_id={id}&client_secret={secret}"
        ))
        .await,
        400,
        "unsupported_grant_type",
    );
    cases.oauth_refused(
        "no grant_type",
        query(format!("client_id={id}&client_secret={secret}")).await,
        400,
        "invalid_request",
    );
    cases.oauth_refused(
        "no client_secret",
        query(format!("grant_type=client_credentials&client_id={id}")).await,
        400,
        "invalid_request",
    );
    cases.oauth_refused(
        "form: no client_id",
        form(format!(
            "grant_type=client_credentials&client_secret={secret}"
        ))
        .await,
        400,
        "invalid_request",
    );
    cases.oauth_refused(
        "no parameters at all",
        query(String::new()).await,
        400,
        "invalid_request",
    );
    cases.oauth_refused(
        "wrong secret",
        query(format!(
            "grant_type=client_credentials&client_id={id}&client_secret=wrong"
        ))
        .await,
        401,
        "invalid_client",
    );
    cases.oauth_refused(
        "form: wrong secret",
        form(format!(
            "grant_type=client_credentials&client_id={id}&client_secret={secret}x"
        ))
        .await,
        401,
        "invalid_client",
    );
    cases.oauth_refused(
        "unknown client id",
        query(format!(
            "grant_type=client_credentials&client_id={}&client_secret={secret}",
            uuid::Uuid::new_v4()
        ))
        .await,
        401,
        "invalid_client",
    );
    cases.oauth_refused(
        "removed client",
        query(format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            removed.client_id, removed.client_secret
        ))
        .await,
        401,
        "invalid_client",
    );
    cases.finish();
}

#[tokio::test]
async fn unknown_event_types_and_bad_searches_are_refused() {
    let s = setup().await;
    let api = &s.api;
    let mut cases = Cases::new(&s.node);
    let search = |query: Value, limit: Option<u64>| {
        let mut body = json!({"query": query});
        if let Some(limit) = limit {
            body["limit"] = json!(limit);
        }
        body
    };
    let by_type = json!({"type": "and", "clauses": [{"eventType": "birth"}]});

    cases.refused(
        "unknown event type (create)",
        api.create("marriage", &new_transaction_id(), OFFICE_ID)
            .await,
        400,
        Message::Any,
    );
    cases.refused(
        "unknown event type (single call)",
        api.create_and_notify("marriage", &new_transaction_id(), OFFICE_ID, &json!({}))
            .await,
        400,
        Message::Any,
    );
    cases.refused(
        "unknown clause key",
        api.search(&search(
            json!({"type": "and", "clauses": [{"nope": {"type": "exact", "term": "x"}}]}),
            None,
        ))
        .await,
        400,
        Message::Any,
    );
    cases.refused(
        "unknown data field",
        api.search(&search(
            json!({"type": "and", "clauses": [{"data": {"foo.bar": {"type": "exact", "term": "x"}}}]}),
            None,
        ))
        .await,
        400,
        Message::Contains("Unexpected field"),
    );
    cases.refused(
        "limit over the maximum",
        api.search(&search(by_type.clone(), Some(SEARCH_LIMIT_MAX + 1)))
            .await,
        400,
        Message::Any,
    );
    cases.refused(
        "limit 0",
        api.search(&search(by_type.clone(), Some(0))).await,
        400,
        Message::Any,
    );
    cases.refused(
        "no clauses",
        api.search(&search(json!({"type": "and", "clauses": []}), None))
            .await,
        400,
        Message::Any,
    );
    cases.refused(
        "query type xor",
        api.search(&search(
            json!({"type": "xor", "clauses": [{"eventType": "birth"}]}),
            None,
        ))
        .await,
        400,
        Message::Any,
    );
    cases.refused(
        "unknown top-level search key",
        api.search(&json!({"query": by_type, "pageSize": 5})).await,
        400,
        Message::Any,
    );
    cases.refused(
        "record data: unknown tracking id",
        api.get("/api/events/events/tracking/ZZZZZZ/data?fields=foo.bar")
            .await,
        404,
        Message::Any,
    );
    cases.finish();

    // With the full limit the search is fine (and search writes nothing).
    let ok = api
        .search(&search(by_type, Some(SEARCH_LIMIT_MAX)))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["total"], 1, "the one NOTIFIED event: {}", ok.text);
}

/// Record data for an existing tracking id with an unknown field id is refused before the READ
/// action would be written.
#[tokio::test]
async fn record_data_with_unknown_fields_writes_nothing() {
    let s = setup().await;
    let api = &s.api;
    let found = api
        .search(&json!({"query": {"type": "and", "clauses": [{"id": {"type": "exact", "term": s.notified_id}}]}}))
        .await
        .unwrap();
    let tracking_id = found.body["results"][0]["trackingId"]
        .as_str()
        .unwrap_or_else(|| panic!("search by id: {}", found.text))
        .to_owned();
    let mut cases = Cases::new(&s.node);
    for fields in ["foo.bar", "child.name,foo.bar", ""] {
        cases.refused(
            &format!("fields={fields}"),
            api.get(&format!(
                "/api/events/events/tracking/{tracking_id}/data?fields={fields}"
            ))
            .await,
            400,
            Message::Any,
        );
    }
    cases.refused(
        "no fields parameter",
        api.get(&format!("/api/events/events/tracking/{tracking_id}/data"))
            .await,
        400,
        Message::Any,
    );
    cases.finish();
}
