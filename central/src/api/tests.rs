//! Router tests (`oneshot`, no sockets): the OpenAPI document matches the routes; a client
//! created at central gets a token and reads the merged data; the ops routes list every node.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use crvs_sync::engine::CentralStore as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::testing::{Fixture, NodeWriter, enroll, facility, fixture, lease};

pub(super) fn state(fx: &Fixture) -> Arc<AppState> {
    let jwt = crate::keys::load_key_file(&fx.config.jwt_key_path()).unwrap();
    let tokens = crate::auth::TokenKeys::new(
        &jwt,
        crate::auth::ISSUER.into(),
        std::time::Duration::from_secs(600),
    );
    let roles = Arc::new(fx.config.roles.clone());
    Arc::new(AppState {
        store: fx.store.clone(),
        auth: AuthCore::new(tokens, 1, roles, false, Vec::new()),
        people: PeopleBook::default(),
        config: Arc::new(fx.config.clone()),
    })
}

pub(super) async fn call(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut req = Request::builder().method("GET").uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.body(Body::empty()).unwrap()
}

/// Every path of the OpenAPI document is routed (not the fallback), and every routed path is
/// documented, so the document stays true.
#[tokio::test]
async fn openapi_document_matches_the_router() {
    let fx = fixture();
    let app = router(state(&fx));
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, ops) in paths {
        let concrete = path
            .replace("{eventId}", "00000000-0000-4000-8000-000000000000")
            .replace("{trackingId}", "AAAAAA")
            .replace("{userId}", "00000000-0000-4000-8000-000000000001")
            .replace("{operation}", "update");
        for method in ops.as_object().unwrap().keys() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .body(Body::empty())
                .unwrap();
            let (status, text) = call(&app, req).await;
            assert!(
                !text.contains("No such route"),
                "{method} {path} is documented but not routed"
            );
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    let routed = [
        "/api/events/events",
        "/api/events/events/import",
        "/api/events/events/{eventId}/draft",
        "/api/events/drafts",
        "/api/events/events/search",
        "/api/events/events/tracking/{trackingId}/data",
        "/api/events/events/{eventId}",
        "/api/events/events/{eventId}/declare",
        "/api/events/events/{eventId}/register",
        "/api/events/locations",
        "/api/events/config",
        "/api/events/openapi.json",
        "/api/sync/status",
        "/api/sync/conflicts",
        "/api/sync/rejects",
        "/metrics",
        "/auth/token",
        "/api/auth/token",
        "/token",
        "/ping",
        "/api/ping",
        "/auth/authenticate",
        "/auth/verifyCode",
        "/auth/resendAuthenticationCode",
        "/auth/refreshToken",
        "/auth/invalidateToken",
        "/api/users",
        "/api/users/search",
        "/api/users/{userId}",
        "/api/users/{userId}/audit",
        "/api/users/{userId}/{operation}",
        "/auth/verifyUser",
        "/auth/verifyNumber",
        "/auth/verifySecurityAnswer",
        "/auth/changePassword",
        "/auth/sendUserName",
    ];
    for path in routed {
        assert!(
            paths.contains_key(path),
            "{path} is routed but not documented"
        );
        if let Some(g) = path
            .strip_prefix("/api")
            .filter(|g| g.starts_with("/events/"))
        {
            assert!(
                paths.contains_key(g),
                "{g} (gateway style) is not documented"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reads_merged_data_and_ops_routes_list_every_node() {
    let fx = fixture();
    enroll(&fx, 1, facility(1));
    enroll(&fx, 2, facility(2));
    let mut node = NodeWriter::new(1, facility(1));
    let ids = lease(&fx, node.node_id(), 2);
    let (event, create) = node.create(&ids[0]);
    let notify = node.notify(
        &event,
        json!({"child.name": {"firstname": "Liam", "surname": "Mwale"}, "child.dob": "2024-06-03"}),
    );
    let mut store = fx.store.clone();
    store
        .apply_entries(node.node_id(), &[create, notify])
        .unwrap();
    // Node 2 sends a forged entry: it is refused and shows in ops.
    let mut forged = NodeWriter::new(2, facility(2)).create("ZZZZZZ").1;
    forged.signature[1] ^= 1;
    let reject = crvs_sync::wire::Reject {
        seq: 1,
        reason: "bad-signature".into(),
        detail: "forged".into(),
    };
    store
        .record_reject(crate::testing::node_key(2).node_id(), &forged, &reject)
        .unwrap();

    let credentials = crate::admin::add_client(
        &fx.store,
        "clinic system",
        &crate::admin::HEALTH_SCOPES.map(str::to_owned),
        0,
    )
    .unwrap();
    let app = router(state(&fx));
    let token_req = Request::builder()
        .method("POST")
        .uri("/auth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            credentials.client_id, credentials.client_secret
        )))
        .unwrap();
    let (status, body) = call(&app, token_req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();

    let (status, body) = call(
        &app,
        get(&format!("/api/events/events/{}", event.id), Some(&token)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["trackingId"], ids[0].as_str());
    assert_eq!(doc["actions"].as_array().unwrap().len(), 2);
    let (status, _) = call(&app, get(&format!("/events/events/{}", event.id), None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let search = Request::builder()
        .method("POST")
        .uri("/api/events/events/search")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(
            json!({"query": {"type": "and", "clauses": [{"trackingId": {"type": "exact", "term": ids[0]}}]}})
                .to_string(),
        ))
        .unwrap();
    let (status, body) = call(&app, search).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found["total"], 1, "{body}");

    let (status, body) = call(
        &app,
        get(
            &format!(
                "/api/events/events/tracking/{}/data?fields=child.dob",
                ids[0]
            ),
            Some(&token),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(data["data"]["child.dob"], "2024-06-03");
    assert_eq!(data["status"], "NOTIFIED");

    let (status, body) = call(&app, get("/api/sync/status", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let status_json: Value = serde_json::from_str(&body).unwrap();
    let nodes = status_json["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    let failing = nodes.iter().find(|n| n["rejects"] == 1).expect("{body}");
    assert_eq!(failing["stale"], true);
    assert!(
        failing["lastError"]
            .as_str()
            .unwrap()
            .contains("bad-signature")
    );
    let synced = nodes
        .iter()
        .find(|n| n["acked"]["seq"] == 2)
        .expect("{body}");
    assert_eq!(synced["revoked"], false);

    let (status, body) = call(
        &app,
        get(
            &format!(
                "/api/sync/rejects?node={}",
                crate::testing::node_key(2).node_id()
            ),
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("bad-signature"), "{body}");
    let (status, _) = call(&app, get("/api/sync/rejects?node=nope", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(&app, get("/api/sync/conflicts", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, metrics) = call(&app, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "crvs_central_node_acked_seq",
        "crvs_central_node_backlog_entries",
        "crvs_central_node_last_contact_age_seconds",
        "crvs_central_node_rejects",
        "crvs_central_node_forks",
        "crvs_central_events 1",
        "crvs_central_rejects 1",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}
