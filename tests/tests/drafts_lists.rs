//! A person's drafts, the list of events, and the deletion of an undeclared draft, at a node
//! with real processes: a draft is kept per record and user and dropped once the record is
//! declared; the list filters by status, flags, assignee and pages; a deleted draft is not
//! found at the node, nor at central once the DELETE has synced.

use std::time::Duration;

use crvs_tests::central::{CentralProcess, wait_synced};
use crvs_tests::users::{add_user, login, node_with_config, wait_for_user};
use crvs_tests::{HOSPITAL_ID, OFFICE_ID, new_transaction_id, sample_birth_declaration};
use serde_json::{Value, json};

const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

fn ids(reply: &Value) -> Vec<String> {
    reply["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_lists_and_deletion() {
    let central = CentralProcess::start().unwrap();
    let agent = add_user(
        &central,
        "Felix",
        "Katongo",
        "REGISTRATION_AGENT",
        OFFICE_ID,
    );
    let other = add_user(&central, "Joshua", "Mutale", "LOCAL_REGISTRAR", OFFICE_ID);
    let clerk = add_user(&central, "Kalusha", "Bwalya", "HOSPITAL_CLERK", HOSPITAL_ID);
    let node = node_with_config(&central, HOSPITAL_ID, "two_factor = false\n");
    for user in [&agent, &other, &clerk] {
        wait_for_user(&node, user["username"].as_str().unwrap(), "active").await;
    }
    let login_as = |user: &Value| {
        let (u, p) = (
            user["username"].as_str().unwrap().to_owned(),
            user["password"].as_str().unwrap().to_owned(),
        );
        let node = &node;
        async move { node.api(&login(node, &u, &p, "000000").await) }
    };
    let api = login_as(&agent).await;
    let registrar = login_as(&other).await;

    // A draft of a declaration: kept, listed (REST and tRPC), replaced, dropped on declare.
    let first = api.create_by_user("birth", &new_transaction_id()).await;
    let first_id = first.body["id"].as_str().unwrap().to_owned();
    let draft_body = |surname: &str| {
        json!({
            "transactionId": new_transaction_id(),
            "type": "DECLARE",
            "declaration": {"child.name": {"firstname": "Chanda", "surname": surname}}
        })
    };
    let saved = api
        .post(
            &format!("/api/events/events/{first_id}/draft"),
            &draft_body("Phiri"),
        )
        .await
        .unwrap();
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["action"]["type"], "DECLARE");
    assert_eq!(saved.body["action"]["createdBy"], agent["userId"]);
    let replaced = api
        .post(
            &format!("/api/events/events/{first_id}/draft"),
            &draft_body("Mwale"),
        )
        .await
        .unwrap();
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    let drafts = api.get("/api/events/drafts").await.unwrap();
    assert_eq!(drafts.status, 200, "{}", drafts.body);
    let list = drafts.body.as_array().unwrap();
    assert_eq!(
        list.len(),
        1,
        "one draft per record and user: {}",
        drafts.body
    );
    assert_eq!(
        list[0]["action"]["declaration"]["child.name"]["surname"],
        "Mwale"
    );
    let via_trpc = api.get("/api/events/event.draft.list").await.unwrap();
    assert_eq!(via_trpc.status, 200, "{}", via_trpc.body);
    assert_eq!(via_trpc.body["result"]["data"]["json"], drafts.body);
    let theirs = registrar.get("/api/events/drafts").await.unwrap();
    assert_eq!(theirs.body, json!([]), "drafts are per user");
    for (what, body) in [
        (
            "a draft of ASSIGN",
            json!({"transactionId": new_transaction_id(), "type": "ASSIGN"}),
        ),
        (
            "an unknown field",
            json!({"transactionId": new_transaction_id(), "type": "DECLARE", "declaration": {"foo.bar": 1}}),
        ),
        (
            "an unknown key",
            json!({"transactionId": new_transaction_id(), "type": "DECLARE", "x": 1}),
        ),
    ] {
        let refused = api
            .post(&format!("/api/events/events/{first_id}/draft"), &body)
            .await
            .unwrap();
        assert_eq!(refused.status, 400, "{what}: {}", refused.body);
    }
    let declared = api
        .post(
            &format!("/api/events/events/{first_id}/declare"),
            &json!({
                "transactionId": new_transaction_id(),
                "keepAssignment": true,
                "declaration": sample_birth_declaration()
            }),
        )
        .await
        .unwrap();
    assert_eq!(declared.status, 200, "{}", declared.body);
    let drafts = api.get("/api/events/drafts").await.unwrap();
    assert_eq!(drafts.body, json!([]), "declaring drops the draft");

    // Deletion of an undeclared draft: only by its assignee; then it is gone.
    let second = api.create_by_user("birth", &new_transaction_id()).await;
    let second_id = second.body["id"].as_str().unwrap().to_owned();
    let not_theirs = registrar.request(
        reqwest::Method::DELETE,
        &format!("/api/events/events/{second_id}"),
    );
    let not_theirs = registrar.send(not_theirs).await.unwrap();
    assert_eq!(not_theirs.status, 409, "{}", not_theirs.body);
    let declared_one = api
        .send(api.request(
            reqwest::Method::DELETE,
            &format!("/api/events/events/{first_id}"),
        ))
        .await
        .unwrap();
    assert_eq!(
        declared_one.status, 409,
        "a declared record is no draft: {}",
        declared_one.body
    );
    let deleted = api
        .send(api.request(
            reqwest::Method::DELETE,
            &format!("/api/events/events/{second_id}"),
        ))
        .await
        .unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    for reply in [
        api.get(&format!("/api/events/events/{second_id}")).await.unwrap(),
        api.send(api.request(reqwest::Method::DELETE, &format!("/api/events/events/{second_id}")))
            .await
            .unwrap(),
        api.post(
            &format!("/api/events/events/{second_id}/declare"),
            &json!({"transactionId": new_transaction_id(), "declaration": sample_birth_declaration()}),
        )
        .await
        .unwrap(),
    ] {
        assert_eq!(reply.status, 404, "{}", reply.body);
    }

    // The list: two notifications from the hospital's system, one declared record.
    let health = node.health_api().await.unwrap();
    let mut notified = Vec::new();
    for _ in 0..2 {
        let reply = health
            .create_and_notify(
                "birth",
                &new_transaction_id(),
                HOSPITAL_ID,
                &sample_birth_declaration(),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        notified.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let page = |query: &str| {
        let api = &api;
        let path = format!("/api/events/events{query}");
        async move { api.get(&path).await.unwrap() }
    };
    let all = page("").await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(all.body["total"], 3, "{}", all.body);
    assert_eq!(
        ids(&page("?status=DECLARED").await.body),
        [first_id.as_str()]
    );
    let mut incomplete = ids(&page("?status=NOTIFIED&flags=incomplete").await.body);
    incomplete.sort();
    notified.sort();
    assert_eq!(incomplete, notified);
    assert_eq!(ids(&page("?assignedTo=me").await.body), [first_id.as_str()]);
    let one = page("?limit=1&offset=1").await;
    assert_eq!(
        (one.body["total"].clone(), ids(&one.body).len()),
        (json!(3), 1)
    );
    assert_eq!(page("?status=BOGUS").await.status, 400);
    assert_eq!(page("?limit=1000").await.status, 400);
    assert_eq!(page("?colour=blue").await.status, 400);
    let input = serde_urlencoded::to_string([(
        "input",
        json!({"json": {"status": "DECLARED"}}).to_string(),
    )])
    .unwrap();
    let via_trpc = api
        .get(&format!("/api/events/event.list?{input}"))
        .await
        .unwrap();
    assert_eq!(via_trpc.status, 200, "{}", via_trpc.body);
    assert_eq!(
        ids(&via_trpc.body["result"]["data"]["json"]),
        [first_id.as_str()]
    );

    // Import of a whole record from another system (record.import): stored as it is, once.
    let importer = node
        .add_client(
            "legacy register",
            &["type=record.import", "type=record.read&event=birth"],
        )
        .unwrap();
    let importer = node.api(&node.token_for(&importer).await.unwrap());
    let mut legacy = health.read(&notified[0]).await.unwrap().body;
    // Another system's record: its own ids throughout.
    let copied = legacy.clone();
    let fresh: std::collections::HashMap<String, String> = copied["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                uuid::Uuid::now_v7().to_string(),
            )
        })
        .collect();
    for action in legacy["actions"].as_array_mut().unwrap() {
        action["id"] = json!(fresh[action["id"].as_str().unwrap()]);
        action["transactionId"] = json!(format!(
            "legacy-{}",
            action["transactionId"].as_str().unwrap()
        ));
        if let Some(original) = action["originalActionId"].as_str().map(str::to_owned) {
            action["originalActionId"] = json!(fresh[&original]);
        }
    }
    let imported_id = uuid::Uuid::new_v4().to_string();
    legacy["id"] = json!(imported_id);
    legacy["trackingId"] = json!("LEG001");
    let stored = importer
        .post("/api/events/events/import", &legacy)
        .await
        .unwrap();
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert_eq!(stored.body["trackingId"], "LEG001");
    assert_eq!(
        stored.body["actions"].as_array().unwrap().len(),
        legacy["actions"].as_array().unwrap().len()
    );
    let again = importer
        .post("/api/events/events/import", &legacy)
        .await
        .unwrap();
    assert_eq!(again.status, 409, "{}", again.body);
    let mut reused = copied.clone();
    reused["id"] = json!(uuid::Uuid::new_v4().to_string());
    reused["trackingId"] = json!("LEG003");
    let clash = importer
        .post("/api/events/events/import", &reused)
        .await
        .unwrap();
    assert_eq!(clash.status, 409, "action ids already here: {}", clash.body);
    let mut headless = legacy.clone();
    headless["id"] = json!(uuid::Uuid::new_v4().to_string());
    headless["trackingId"] = json!("LEG002");
    headless["actions"].as_array_mut().unwrap().remove(0);
    let refused = importer
        .post("/api/events/events/import", &headless)
        .await
        .unwrap();
    assert_eq!(refused.status, 400, "no CREATE: {}", refused.body);
    let no_scope = health
        .post("/api/events/events/import", &headless)
        .await
        .unwrap();
    assert_eq!(no_scope.status, 403, "{}", no_scope.body);

    // Users the node holds: a registration agent (user.read in their area) finds the registrar
    // by id, by mobile and by search; a hospital clerk (no user.read) sees only themselves.
    let registrar_id = other["userId"].as_str().unwrap();
    let found = api
        .get(&format!("/api/users/{registrar_id}"))
        .await
        .unwrap();
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(found.body["role"], "LOCAL_REGISTRAR");
    assert!(found.body.get("passwordHash").is_none(), "{}", found.body);
    let by_mobile = api.get("/api/users?mobile=%2B260911234567").await.unwrap();
    assert_eq!(by_mobile.status, 200, "{}", by_mobile.body);
    assert_eq!(
        by_mobile.body.as_array().unwrap().len(),
        3,
        "{}",
        by_mobile.body
    );
    let searched = api
        .post(
            "/api/users/search",
            &json!({"role": "LOCAL_REGISTRAR", "name": "mUT"}),
        )
        .await
        .unwrap();
    assert_eq!(searched.status, 200, "{}", searched.body);
    assert_eq!(searched.body["total"], 1, "{}", searched.body);
    assert_eq!(searched.body["results"][0]["id"], registrar_id);
    let bad = api
        .post("/api/users/search", &json!({"count": 1000}))
        .await
        .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
    let clerk_id = clerk["userId"].as_str().unwrap();
    let clerk_api = login_as(&clerk).await;
    let hidden = clerk_api
        .get(&format!("/api/users/{registrar_id}"))
        .await
        .unwrap();
    assert_eq!(hidden.status, 404, "{}", hidden.body);
    let me = clerk_api
        .get(&format!("/api/users/{clerk_id}"))
        .await
        .unwrap();
    assert_eq!(me.status, 200, "{}", me.body);
    let all = clerk_api
        .post("/api/users/search", &json!({}))
        .await
        .unwrap();
    assert_eq!(all.body["total"], 1, "only themselves: {}", all.body);

    // The DELETE is a signed action: once synced, central does not find the record either.
    wait_synced(&node, SYNC_TIMEOUT).await.unwrap();
    let central_api = central.health_api().await.unwrap();
    assert_eq!(central_api.read(&second_id).await.unwrap().status, 404);
    assert_eq!(central_api.read(&first_id).await.unwrap().status, 200);
    let imported = central_api.read(&imported_id).await.unwrap();
    assert_eq!(imported.status, 200, "the import syncs: {}", imported.body);
    assert_eq!(imported.body["trackingId"], "LEG001");
}
