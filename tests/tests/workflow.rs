//! The life of a birth carried by people at a clinic node while central is unreachable, over
//! both wire forms (REST and OpenCRVS's tRPC procedures, batched too): a hospital clerk creates
//! and declares, a registration agent validates, a registrar asks for registration; scopes,
//! assignment and the state machine refuse what OpenCRVS refuses (403 / 409 with its message).
//! When the link is back, central holds every action, answers the Requested REGISTER with a
//! registration number, and the number reaches the node in its next sync.

use std::time::Duration;

use crvs_tests::central::{CentralProcess, wait_synced};
use crvs_tests::users::{add_user, login, node_with_config, wait_for_user};
use crvs_tests::{
    Api, HOSPITAL_ID, OFFICE_ID, action_kinds, new_transaction_id, sample_birth_declaration,
};
use serde_json::{Value, json};

const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

fn flags(doc: &Value) -> Vec<String> {
    doc["flags"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn act(api: &Api, event_id: &str, action: &str, body: Value) -> crvs_tests::Reply {
    api.post(&format!("/api/events/events/{event_id}/{action}"), &body)
        .await
        .unwrap()
}

/// The record's index (status, flags, assignee) as the node's search shows it.
async fn index_of(api: &Api, tracking_id: &str) -> Value {
    let found = api.search_tracking_id(tracking_id).await.unwrap();
    assert_eq!(found.status, 200, "{}", found.body);
    found.body["results"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_birth_goes_from_draft_to_requested_registration_offline_then_syncs() {
    let mut central = CentralProcess::start().unwrap();
    let clerk = add_user(&central, "Kalusha", "Bwalya", "HOSPITAL_CLERK", HOSPITAL_ID);
    let agent = add_user(
        &central,
        "Felix",
        "Katongo",
        "REGISTRATION_AGENT",
        OFFICE_ID,
    );
    let registrar = add_user(&central, "Joshua", "Mutale", "LOCAL_REGISTRAR", OFFICE_ID);
    let node = node_with_config(&central, HOSPITAL_ID, "two_factor = false\n");
    for user in [&clerk, &agent, &registrar] {
        wait_for_user(&node, user["username"].as_str().unwrap(), "active").await;
    }
    central.kill9().unwrap();

    let token_of = |user: &Value| {
        let node = &node;
        let username = user["username"].as_str().unwrap().to_owned();
        let password = user["password"].as_str().unwrap().to_owned();
        async move { node.api(&login(node, &username, &password, "000000").await) }
    };
    let clerk_api = token_of(&clerk).await;
    let agent_api = token_of(&agent).await;
    let registrar_api = token_of(&registrar).await;

    // The clerk creates a draft: it is theirs (assigned) and records their office and role.
    let created = clerk_api
        .create_by_user("birth", &new_transaction_id())
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let event_id = created.body["id"].as_str().unwrap().to_owned();
    let tracking_id = created.body["trackingId"].as_str().unwrap().to_owned();
    assert_eq!(
        action_kinds(&created.body),
        [
            ("CREATE".into(), "Accepted".into()),
            ("ASSIGN".into(), "Accepted".into())
        ]
    );
    let create = &created.body["actions"][0];
    assert_eq!(create["createdBy"], clerk["userId"]);
    assert_eq!(create["createdByRole"], "HOSPITAL_CLERK");
    assert_eq!(create["createdAtLocation"], HOSPITAL_ID);

    // Declaring with a required field missing is a 400 naming it; nothing is written.
    let mut partial = sample_birth_declaration();
    partial.as_object_mut().unwrap().remove("child.dob");
    let refused = act(
        &clerk_api,
        &event_id,
        "declare",
        json!({"transactionId": new_transaction_id(), "declaration": partial}),
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("child.dob"),
        "{}",
        refused.body
    );
    // The agent may not act on a record assigned to the clerk.
    let locked = act(
        &agent_api,
        &event_id,
        "assign",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(locked.status, 409, "{}", locked.body);

    let declare_tx = new_transaction_id();
    let declare_body = json!({
        "transactionId": declare_tx,
        "declaration": sample_birth_declaration(),
        "annotation": {"review.comment": "Checked with the mother"}
    });
    let declared = act(&clerk_api, &event_id, "declare", declare_body.clone()).await;
    assert_eq!(declared.status, 200, "{}", declared.body);
    let kinds = action_kinds(&declared.body);
    assert_eq!(
        &kinds[2..],
        [
            ("DECLARE".into(), "Requested".into()),
            ("DECLARE".into(), "Accepted".into()),
            ("UNASSIGN".into(), "Accepted".into())
        ]
    );
    // A replay answers the record as it is; the same transaction id with another body is 409.
    let replay = act(&clerk_api, &event_id, "declare", declare_body).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(action_kinds(&replay.body).len(), kinds.len());
    let clash = act(
        &clerk_api,
        &event_id,
        "declare",
        json!({"transactionId": declare_tx, "declaration": {"child.gender": "female"}}),
    )
    .await;
    assert_eq!(clash.status, 409, "{}", clash.body);
    let index = index_of(&clerk_api, &tracking_id).await;
    assert_eq!(index["status"], "DECLARED", "{index}");

    // The agent validates, over tRPC, batched with the assignment (OpenCRVS's httpBatchLink).
    let batch = agent_api
        .post(
            "/api/events/event.actions.assignment.assign,event.actions.custom.request?batch=1",
            &json!({
                "0": {"json": {"eventId": event_id, "transactionId": new_transaction_id(), "type": "ASSIGN", "assignedTo": agent["userId"]}},
                "1": {"json": {"eventId": event_id, "transactionId": new_transaction_id(), "type": "CUSTOM", "customActionType": "VALIDATE_DECLARATION"}}
            }),
        )
        .await
        .unwrap();
    assert_eq!(batch.status, 200, "{}", batch.body);
    let validated = &batch.body[1]["result"]["data"]["json"];
    assert_eq!(validated["id"], event_id.as_str(), "{}", batch.body);
    let index = index_of(&agent_api, &tracking_id).await;
    assert!(flags(&index).contains(&"validated".to_owned()), "{index}");

    // The agent cannot register (no scope): 403 in tRPC's shape.
    let no_scope = agent_api
        .post(
            "/api/events/event.actions.register.request",
            &json!({"json": {"eventId": event_id, "transactionId": new_transaction_id()}}),
        )
        .await
        .unwrap();
    assert_eq!(no_scope.status, 403, "{}", no_scope.body);
    assert_eq!(
        no_scope.body["error"]["json"]["data"]["code"], "FORBIDDEN",
        "{}",
        no_scope.body
    );
    assert_eq!(no_scope.body["error"]["json"]["code"], -32003);

    // The registrar must assign first; then registration is requested (central numbers it).
    let unassigned = act(
        &registrar_api,
        &event_id,
        "register",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(unassigned.status, 409, "{}", unassigned.body);
    let assign = act(
        &registrar_api,
        &event_id,
        "assign",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(assign.status, 200, "{}", assign.body);
    let registered = registrar_api
        .post(
            "/api/events/event.actions.register.request",
            &json!({"json": {"eventId": event_id, "transactionId": new_transaction_id(), "keepAssignment": true}}),
        )
        .await
        .unwrap();
    assert_eq!(registered.status, 200, "{}", registered.body);
    let doc = &registered.body["result"]["data"]["json"];
    assert_eq!(
        action_kinds(doc).last().unwrap(),
        &("REGISTER".to_owned(), "Requested".to_owned())
    );
    let index = index_of(&registrar_api, &tracking_id).await;
    assert_eq!(index["status"], "DECLARED", "{index}");
    assert!(
        flags(&index).contains(&"register:requested".to_owned()),
        "{index}"
    );
    // While registration is pending, anything else is refused with OpenCRVS's message.
    let pending = act(
        &registrar_api,
        &event_id,
        "archive",
        json!({"transactionId": new_transaction_id(), "content": {"reason": "duplicate"}}),
    )
    .await;
    assert_eq!(pending.status, 409, "{}", pending.body);
    assert!(
        pending.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Action 'ARCHIVE' cannot be performed on an event in 'DECLARED' state"),
        "{}",
        pending.body
    );
    // Reads and searches are audited: who, when, where, what; a user lists their own trail.
    let read = registrar_api
        .get(&format!("/api/events/events/{event_id}"))
        .await
        .unwrap();
    assert_eq!(read.status, 200, "{}", read.body);
    let registrar_id = registrar["userId"].as_str().unwrap();
    let audit = registrar_api
        .get(&format!("/api/users/{registrar_id}/audit?count=50"))
        .await
        .unwrap();
    assert_eq!(audit.status, 200, "{}", audit.body);
    let rows = audit.body["results"].as_array().unwrap();
    let has = |operation: &str, subject: Option<&str>| {
        rows.iter().any(|r| {
            r["operation"] == operation
                && r["actor"] == registrar_id
                && r["location"] == OFFICE_ID
                && subject.is_none_or(|s| r["subject"] == s)
        })
    };
    assert!(has("record.read", Some(&event_id)), "{}", audit.body);
    assert!(has("record.search", None), "{}", audit.body);
    assert!(has("user.logged_in", None), "{}", audit.body);
    let search_row = rows
        .iter()
        .find(|r| r["operation"] == "record.search")
        .unwrap();
    assert!(
        search_row["detail"]
            .as_str()
            .unwrap()
            .contains(&tracking_id),
        "the query is kept: {search_row}"
    );
    let clerks_view = clerk_api
        .get(&format!("/api/users/{registrar_id}/audit"))
        .await
        .unwrap();
    assert_eq!(clerks_view.status, 403, "{}", clerks_view.body);

    // Every write is one entry of the signed, chained log: create, declare, assign, validate,
    // assign, register, and the registrar's read.
    let log = node.verify_log().unwrap();
    assert_eq!(log.verified, 7, "{log:?}");

    // The link is back: central holds the whole story and answers the requested REGISTER
    // with a registration number, which reaches the node in its next sync.
    central.restart().unwrap();
    wait_synced(&node, SYNC_TIMEOUT).await.unwrap();
    let central_api = central.health_api().await.unwrap();
    let at_central = central_api.read(&event_id).await.unwrap();
    assert_eq!(at_central.status, 200, "{}", at_central.body);
    let kinds = action_kinds(&at_central.body);
    for expected in [
        ("DECLARE", "Accepted"),
        ("CUSTOM", "Accepted"),
        ("REGISTER", "Requested"),
        ("REGISTER", "Accepted"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|(t, s)| t == expected.0 && s == expected.1),
            "{expected:?} missing at central: {kinds:?}"
        );
    }
    let number = registration_number(&at_central.body).expect("a registration number");
    let found = central_api.search_tracking_id(&tracking_id).await.unwrap();
    assert_eq!(
        found.body["results"][0]["status"], "REGISTERED",
        "{}",
        found.body
    );
    assert!(
        !flags(&found.body["results"][0]).contains(&"register:requested".to_owned()),
        "{}",
        found.body
    );
    let at_node = crvs_tests::central::eventually(
        "the registration number at the node",
        SYNC_TIMEOUT,
        || async {
            let read = registrar_api.read(&event_id).await?;
            Ok(registration_number(&read.body).map(|n| (n, read.body)))
        },
    )
    .await
    .unwrap();
    assert_eq!(at_node.0, number);
    assert_eq!(
        index_of(&registrar_api, &tracking_id).await["status"],
        "REGISTERED"
    );
    // Found by its registration number, at central and at the node.
    let by_number = json!({"query": {"type": "and", "clauses": [
        {"legalStatuses.REGISTERED.registrationNumber": {"type": "exact", "term": number}}
    ]}});
    for api in [&central_api, &registrar_api] {
        let found = api
            .post("/api/events/events/search", &by_number)
            .await
            .unwrap();
        assert_eq!(found.status, 200, "{}", found.body);
        assert_eq!(found.body["total"], 1, "{}", found.body);
        assert_eq!(found.body["results"][0]["trackingId"], tracking_id.as_str());
    }
}

/// The number of the Accepted REGISTER of an event document, if any.
fn registration_number(doc: &Value) -> Option<String> {
    doc["actions"].as_array()?.iter().find_map(|a| {
        (a["type"] == "REGISTER" && a["status"] == "Accepted")
            .then(|| a["registrationNumber"].as_str().map(str::to_owned))
            .flatten()
    })
}
