//! National search through the router (`oneshot`): records synced from two districts, found by
//! every clause type through the index that sync maintains, with the caller's jurisdiction
//! enforced, `secured` fields removed, stable pages, every search audited, and bad queries
//! refused with the 400 envelope. The index answers exactly what a scan answers.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use crvs_common::search::{Plan, SearchInput, SearchRequest};
use crvs_sync::engine::CentralStore as _;
use serde_json::{Value, json};

use super::*;
use crate::testing::{NodeWriter, area, enroll, facility, fixture, lease};
use crvs_common::server::wall_ms;

/// A router, and tokens of a registration agent in district 1 and a national registrar.
struct World {
    app: Router,
    state: Arc<AppState>,
    agent: String,
    agent_id: uuid::Uuid,
    national: String,
    /// Tracking ids: John Smith and Mary Smith (district 1), Jon Smyth and Muhammad Ali
    /// (district 2).
    tracking: Vec<String>,
}

fn user_token(state: &AppState, role: &str, office: uuid::Uuid) -> (String, uuid::Uuid) {
    let creds = crate::admin::add_user(
        &state.store,
        &state.config.roles,
        crate::admin::NewUser {
            firstname: "Test".into(),
            surname: role.to_lowercase(),
            role: role.into(),
            office,
            mobile: None,
            email: Some(format!("{}@example.org", role.to_lowercase())),
            username: None,
            password: Some("a-long-test-password".into()),
        },
        0,
    )
    .unwrap();
    let row = state
        .store
        .read(|r| r.user(creds.user_id))
        .unwrap()
        .unwrap();
    let scopes = state.config.roles.scopes_of(role).unwrap().encode();
    let token = state
        .auth
        .tokens
        .mint_user(
            &creds.user_id.to_string(),
            role,
            scopes,
            crvs_common::server::auth::credential_tag(&row.password_hash),
            wall_ms() / 1000,
        )
        .unwrap();
    (token, creds.user_id)
}

fn world(fx: &crate::testing::Fixture) -> World {
    enroll(fx, 1, facility(1));
    enroll(fx, 2, facility(2));
    let mut store = fx.store.clone();
    let mut tracking = Vec::new();
    for (n, people) in [
        (
            1u8,
            [
                ("John", "Smith", "2024-03-01"),
                ("Mary", "Smith", "2024-03-02"),
            ],
        ),
        (
            2u8,
            [
                ("Jon", "Smyth", "2024-03-03"),
                ("Muhammad", "Ali", "2023-01-01"),
            ],
        ),
    ] {
        let mut node = NodeWriter::new(n, facility(u128::from(n)));
        let ids = lease(fx, node.node_id(), 2);
        let mut entries = Vec::new();
        for ((first, last, dob), id) in people.iter().zip(&ids) {
            let (event, create) = node.create(id);
            let notify = node.notify(
                &event,
                json!({"child.name": {"firstname": first, "surname": last}, "child.dob": dob}),
            );
            entries.extend([create, notify]);
            let register = node.request_registration(&event);
            entries.push(register);
            tracking.push(id.clone());
        }
        store.apply_entries(node.node_id(), &entries).unwrap();
    }
    let state = tests::state(fx);
    let (agent, agent_id) = user_token(&state, "REGISTRATION_AGENT", facility(1));
    let (national, _) = user_token(&state, "NATIONAL_REGISTRAR", facility(0));
    World {
        app: router(Arc::clone(&state)),
        state,
        agent,
        agent_id,
        national,
        tracking,
    }
}

impl World {
    async fn search(&self, token: &str, body: Value) -> (StatusCode, Value) {
        let req = Request::builder()
            .method("POST")
            .uri("/api/events/events/search")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(body.to_string()))
            .unwrap();
        let (status, text) = tests::call(&self.app, req).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The tracking ids found by `query` for `token`, in result order.
    async fn found(&self, token: &str, query: Value) -> Vec<String> {
        let (status, body) = self
            .search(token, json!({"query": query, "limit": 100}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(body["total"], results.len(), "{body}");
        results
            .iter()
            .map(|r| r["trackingId"].as_str().unwrap().to_owned())
            .collect()
    }

    fn names(&self, found: &[String]) -> Vec<&'static str> {
        let names = ["John", "Mary", "Jon", "Muhammad"];
        let mut out: Vec<&str> = found
            .iter()
            .map(|t| names[self.tracking.iter().position(|x| x == t).unwrap()])
            .collect();
        out.sort_unstable();
        out
    }
}

fn fuzzy(term: &str) -> Value {
    json!({"data": {"child.name": {"type": "fuzzy", "term": term}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clause_type_through_the_index_within_jurisdiction() {
    let fx = fixture();
    let w = world(&fx);
    let (national, agent) = (w.national.as_str(), w.agent.as_str());

    assert_eq!(
        w.names(&w.found(national, fuzzy("Jonh Smith")).await),
        ["John", "Jon"]
    );
    assert_eq!(
        w.names(&w.found(national, fuzzy("Mohammed")).await),
        ["Muhammad"]
    );
    assert!(w.found(national, fuzzy("Peter")).await.is_empty());
    let tracking = json!({"trackingId": {"type": "exact", "term": w.tracking[2]}});
    assert_eq!(w.names(&w.found(national, tracking.clone()).await), ["Jon"]);
    let within = |n: u128| json!({"createdAtLocation": {"type": "within", "location": area(n)}});
    assert_eq!(
        w.names(&w.found(national, within(2)).await),
        ["Jon", "Muhammad"]
    );
    assert_eq!(w.found(national, within(0)).await.len(), 4);
    let dob =
        json!({"data": {"child.dob": {"type": "range", "gte": "2024-03-02", "lte": "2024-12-31"}}});
    assert_eq!(w.names(&w.found(national, dob).await), ["Jon", "Mary"]);
    let since = json!({"createdAt": {"type": "range", "gte": "2020-01-01"}});
    assert_eq!(w.found(national, since).await.len(), 4);
    let status =
        json!({"status": {"type": "anyOf", "terms": ["DECLARED", "NOTIFIED", "REGISTERED"]}});
    assert_eq!(w.found(national, status).await.len(), 4);

    // Registration numbers central issued find their records.
    let (_, body) = w
        .search(national, json!({"query": within(1), "limit": 10}))
        .await;
    let number = body["results"][0]["legalStatuses"]["REGISTERED"]["registrationNumber"]
        .as_str()
        .expect("registered")
        .to_owned();
    let by_number =
        json!({"legalStatuses.REGISTERED.registrationNumber": {"type": "exact", "term": number}});
    assert_eq!(w.found(national, by_number).await.len(), 1);

    // The agent of district 1 never sees district 2, whatever the clause.
    assert_eq!(
        w.names(&w.found(agent, fuzzy("Jonh Smith")).await),
        ["John"]
    );
    assert!(w.found(agent, within(2)).await.is_empty());
    assert!(w.found(agent, tracking).await.is_empty());
    assert!(w.found(agent, fuzzy("Mohammed")).await.is_empty());
    assert_eq!(w.names(&w.found(agent, within(0)).await), ["John", "Mary"]);

    // Secured fields (child.dob) are removed from every result.
    let (_, body) = w
        .search(national, json!({"query": within(0), "limit": 10}))
        .await;
    for r in body["results"].as_array().unwrap() {
        assert!(r["declaration"].get("child.name").is_some(), "{r}");
        assert!(r["declaration"].get("child.dob").is_none(), "{r}");
    }

    // Every search is audited with the query.
    let agent_id = w.agent_id.to_string();
    let (rows, total) = w
        .state
        .store
        .read(move |r| r.audit_of(&agent_id, 0, 100))
        .unwrap();
    assert_eq!(total, 5);
    assert!(rows.iter().all(|r| r.operation == "record.search"));
    assert!(
        rows.iter()
            .any(|r| r.detail.as_deref().unwrap_or("").contains("Jonh"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_stable_and_the_index_answers_as_the_scan() {
    let fx = fixture();
    let w = world(&fx);
    let all_query = json!({"createdAtLocation": {"type": "within", "location": area(0)}});
    for sort in ["createdAt", "updatedAt", "trackingId"] {
        let body = |offset: u64, limit: u64| {
            json!({"query": all_query, "limit": limit, "offset": offset,
                   "sort": [{"field": sort, "direction": "asc"}]})
        };
        let (_, whole) = w.search(&w.national, body(0, 10)).await;
        let mut paged = Vec::new();
        for offset in 0..4 {
            let (status, page) = w.search(&w.national, body(offset, 1)).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(page["total"], 4);
            paged.push(page["results"][0]["id"].clone());
        }
        let whole: Vec<Value> = whole["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect();
        assert_eq!(paged, whole, "sort {sort}");
    }

    // Index and scan agree on every clause type.
    let queries = [
        fuzzy("Jonh"),
        fuzzy("Smyth"),
        json!({"createdAtLocation": {"type": "within", "location": area(1)}}),
        json!({"legalStatuses.REGISTERED.createdAtLocation": {"type": "within", "location": facility(2)}}),
        json!({"data": {"child.dob": {"type": "range", "gte": "2024-01-01"}}}),
        json!({"updatedAt": {"type": "range", "gte": "2020-01-01T00:00:00.000Z"}}),
        json!({"type": "or", "clauses": [fuzzy("Mary"), {"trackingId": {"type": "exact", "term": w.tracking[3]}}]}),
    ];
    let events = fx.config.events.clone();
    // First with every record waiting for the indexer (searches evaluate them directly), then
    // with everything filed.
    let pending = || fx.store.read(|r| r.stats()).unwrap().search_index_pending;
    let waiting = pending();
    assert!(waiting > 0, "sync marks what it changed for the indexer");
    for round in 0..2 {
        if round == 1 {
            let filed = fx
                .store
                .write(|tx| tx.file_search_pending(usize::MAX, &|| false))
                .unwrap();
            assert_eq!(filed as u64, waiting);
            assert_eq!(pending(), 0);
        }
        for query in queries.clone() {
            let input: SearchInput =
                serde_json::from_value(json!({"query": query, "limit": 100})).unwrap();
            let request = SearchRequest::parse(&input, &events).unwrap();
            let plan = request.query.plan(wall_ms());
            assert_ne!(plan, Plan::Scan, "{query}");
            let (indexed, scanned) = fx
                .store
                .read(move |r| {
                    let mut all =
                        |_: &crvs_common::state::EventIndex, _: &crate::store::Ancestry<'_>| true;
                    let now = wall_ms();
                    Ok((
                        r.search_with(&request, &plan, now, &mut all)?,
                        r.search_with(&request, &Plan::Scan, now, &mut all)?,
                    ))
                })
                .unwrap();
            assert_eq!(indexed, scanned, "{query}");
            assert!(indexed.1 > 0, "{query}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_are_refused_with_the_envelope() {
    let fx = fixture();
    let w = world(&fx);
    for query in [
        json!({"data": {"child.unknownField": {"type": "exact", "term": "x"}}}),
        json!({"data": {"child.name": {"type": "fuzzy", "text": "John"}}}),
        json!({"data": {"child.name": {"type": "sounds-like", "term": "John"}}}),
        json!({"createdAtLocation": {"type": "within", "location": "somewhere"}}),
        json!({"createdAt": {"type": "timePeriod", "term": "yesterday"}}),
        json!({"trackingId": ["ABC123"]}),
        json!({"noSuchKey": {"type": "exact", "term": "x"}}),
        json!({"type": "and", "clauses": {"status": "DECLARED"}}),
    ] {
        let (status, body) = w.search(&w.national, json!({"query": query})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body["message"].is_string(), "{body}");
        assert!(body["code"].is_string(), "{body}");
    }
    let (status, _) = w
        .search(
            &w.national,
            json!({"query": fuzzy("John"), "offset": 9_999, "limit": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
