//! Human login at a node, as OpenCRVS's auth service does it, with real processes: users made at
//! central sync down (password hashes included) to the nodes of their office's district and log
//! in there with central stopped; the second factor goes through the outbox and a real transport
//! command (or is `000000` in demo mode); 10 attempts a minute, then 429; refresh and logout
//! (a logged-out token stays refused across a restart); a node's token is refused at another
//! node; a deactivated user is refused once the change syncs.

use std::time::Duration;

use crvs_tests::central::{CentralProcess, eventually, start_enrolled_node};
use crvs_tests::users::{
    add_user, authenticate, claims, code_in, login, node_with_config, transport_config,
    wait_for_user,
};
use crvs_tests::{HOSPITAL_ID, NodeProcess, OFFICE_ID};
use serde_json::json;

/// Chikobo Rural Health Centre, same district (Ibombo) as the office and the hospital.
const CHIKOBO_ID: &str = "7b8d2f30-0002-4000-8000-000000000012";
/// Isamba District Hospital, another district.
const ISAMBA_ID: &str = "7b8d2f30-0002-4000-8000-000000000013";

const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// A route every user token reaches: reading an unknown event is 404 for a valid token with
/// `record.read`, and 401 for a refused token.
async fn token_status(node: &NodeProcess, token: &str) -> u16 {
    node.api(token)
        .get(&format!("/api/events/events/{}", uuid::Uuid::new_v4()))
        .await
        .unwrap()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_log_in_at_their_node_while_central_is_down() {
    let mut central = CentralProcess::start().unwrap();
    let clerk = add_user(&central, "Kalusha", "Bwalya", "HOSPITAL_CLERK", HOSPITAL_ID);
    let registrar = add_user(&central, "Joshua", "Mutale", "LOCAL_REGISTRAR", OFFICE_ID);
    let clerk_name = clerk["username"].as_str().unwrap().to_owned();
    let clerk_password = clerk["password"].as_str().unwrap().to_owned();
    let registrar_name = registrar["username"].as_str().unwrap().to_owned();
    let registrar_password = registrar["password"].as_str().unwrap().to_owned();
    assert_eq!(clerk_name, "k.bwalya");

    let mut demo = node_with_config(&central, HOSPITAL_ID, "two_factor = false\n");
    let outbox_dir = tempfile::tempdir().unwrap();
    let outbox_file = outbox_dir.path().join("sent.txt");
    let two_factor = node_with_config(&central, CHIKOBO_ID, &transport_config(&outbox_file));
    let elsewhere = start_enrolled_node(&central, ISAMBA_ID, central.quic()).unwrap();
    wait_for_user(&demo, &clerk_name, "active").await;
    wait_for_user(&demo, &registrar_name, "active").await;
    wait_for_user(&two_factor, &clerk_name, "active").await;

    // The link goes down: logins are checked against what the nodes hold.
    central.kill9().unwrap();

    // Demo mode: the code is 000000.
    let token = login(&demo, &clerk_name, &clerk_password, "000000").await;
    let c = claims(&token);
    assert_eq!(c["userType"], "user");
    assert_eq!(c["role"], "HOSPITAL_CLERK");
    assert_eq!(c["sub"], clerk["userId"]);
    let scopes: Vec<&str> = c["scope"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        scopes.iter().any(|s| s.starts_with("type=record.declare")),
        "{scopes:?}"
    );
    assert!(
        !scopes.iter().any(|s| s.starts_with("type=record.register")),
        "{scopes:?}"
    );
    assert!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap() == 604_800);
    assert_eq!(token_status(&demo, &token).await, 404);
    let registrar_token = login(&demo, &registrar_name, &registrar_password, "000000").await;
    assert_eq!(claims(&registrar_token)["role"], "LOCAL_REGISTRAR");

    // Wrong password, unknown user, wrong code: 401 with the envelope; nothing about which.
    let wrong = authenticate(&demo, &clerk_name, "not the password").await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.envelope_problem(401).is_none(), "{}", wrong.body);
    let unknown = authenticate(&demo, "no.such-user", "whatever1").await;
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    assert_eq!(unknown.body["message"], wrong.body["message"]);
    let nonce = authenticate(&demo, &registrar_name, &registrar_password)
        .await
        .body["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad_code = demo
        .anonymous()
        .post(
            "/auth/verifyCode",
            &json!({"nonce": nonce, "code": "123456"}),
        )
        .await
        .unwrap();
    assert_eq!(bad_code.status, 401, "{}", bad_code.body);
    let bad_shape = demo
        .anonymous()
        .post(
            "/auth/authenticate",
            &json!({"username": clerk_name, "password": 5}),
        )
        .await
        .unwrap();
    assert_eq!(bad_shape.status, 400, "{}", bad_shape.body);
    assert!(
        bad_shape.envelope_problem(400).is_none(),
        "{}",
        bad_shape.body
    );
    let extra = demo
        .anonymous()
        .post(
            "/auth/authenticate",
            &json!({"username": clerk_name, "password": "x", "admin": true}),
        )
        .await
        .unwrap();
    assert_eq!(extra.status, 400, "{}", extra.body);

    // 10 attempts a minute per username (3 used above for the clerk), then 429 even with the
    // right password; another user is not affected.
    for _ in 0..8 {
        let reply = authenticate(&demo, &clerk_name, "still wrong").await;
        assert_eq!(reply.status, 401, "{}", reply.body);
    }
    let limited = authenticate(&demo, &clerk_name, &clerk_password).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.envelope_problem(429).is_none(), "{}", limited.body);
    let limited = authenticate(&demo, &clerk_name.to_uppercase(), &clerk_password).await;
    assert_eq!(
        limited.status, 429,
        "case does not buy attempts: {}",
        limited.body
    );

    // Refresh gives a working token; logout refuses the old one, also after a restart.
    let refreshed = demo
        .anonymous()
        .post("/auth/refreshToken", &json!({"token": registrar_token}))
        .await
        .unwrap();
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let refreshed = refreshed.body["token"].as_str().unwrap().to_owned();
    assert_eq!(token_status(&demo, &refreshed).await, 404);
    let logout = demo
        .anonymous()
        .post("/auth/invalidateToken", &json!({"token": registrar_token}))
        .await
        .unwrap();
    assert_eq!(logout.status, 200, "{}", logout.body);
    assert_eq!(token_status(&demo, &registrar_token).await, 401);
    let again = demo
        .anonymous()
        .post("/auth/refreshToken", &json!({"token": registrar_token}))
        .await
        .unwrap();
    assert_eq!(again.status, 401, "a logged-out token cannot be refreshed");
    demo.restart().unwrap();
    assert_eq!(token_status(&demo, &registrar_token).await, 401);
    assert_eq!(token_status(&demo, &refreshed).await, 404);

    // A token of one node is refused at another; a user of another district is unknown there.
    assert_eq!(token_status(&two_factor, &token).await, 401);
    let not_here = authenticate(&elsewhere, &clerk_name, &clerk_password).await;
    assert_eq!(not_here.status, 401, "{}", not_here.body);

    // Two-factor node: the code goes through the transport; 000000 is refused; the real code
    // works once.
    let reply = authenticate(&two_factor, &clerk_name, &clerk_password).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["mobile"], "+********4567", "{}", reply.body);
    let nonce = reply.body["nonce"].as_str().unwrap().to_owned();
    let demo_code = two_factor
        .anonymous()
        .post(
            "/auth/verifyCode",
            &json!({"nonce": nonce, "code": "000000"}),
        )
        .await
        .unwrap();
    assert_eq!(demo_code.status, 401, "{}", demo_code.body);
    let code = eventually("the login code to be sent", SYNC_TIMEOUT, || {
        let file = outbox_file.clone();
        async move { Ok(code_in(&file, "+260911234567")) }
    })
    .await
    .unwrap();
    let verified = two_factor
        .anonymous()
        .post("/auth/verifyCode", &json!({"nonce": nonce, "code": code}))
        .await
        .unwrap();
    assert_eq!(verified.status, 200, "{}", verified.body);
    let token = verified.body["token"].as_str().unwrap();
    assert_eq!(claims(token)["role"], "HOSPITAL_CLERK");
    let replay = two_factor
        .anonymous()
        .post("/auth/verifyCode", &json!({"nonce": nonce, "code": code}))
        .await
        .unwrap();
    assert_eq!(replay.status, 401, "a code works once: {}", replay.body);

    // Central is back; the registrar is deactivated there; once synced, login is refused.
    central.restart().unwrap();
    central
        .cli(&["user", "deactivate", &registrar_name])
        .unwrap();
    wait_for_user(&demo, &registrar_name, "deactivated").await;
    let refused = authenticate(&demo, &registrar_name, &registrar_password).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let refreshed_again = demo
        .anonymous()
        .post("/auth/refreshToken", &json!({"token": refreshed}))
        .await
        .unwrap();
    assert_eq!(refreshed_again.status, 403, "{}", refreshed_again.body);
    // Their tokens stop working too, before they would have expired.
    assert_eq!(token_status(&demo, &refreshed).await, 401);
}
