//! People acting on records at central, with the same action core, scopes, jurisdiction and
//! state machine as at a node: a record created by a clinic's health system at its node syncs
//! up; at central a registration agent declares and validates it (REST and tRPC, batched too)
//! and a registrar registers it, which central answers in the same request with a registration
//! number. The number reaches the node in its next sync. A registrar of another district is
//! told the record does not exist; a system client may not declare; replays are idempotent and
//! a clashing replay is a 409; every read at central is audited. The same child notified again
//! (misspelled, two days apart) is flagged as a potential duplicate instead of registered,
//! until a registrar marks it not a duplicate.

use std::time::Duration;

use crvs_tests::central::{CentralProcess, eventually, wait_synced};
use crvs_tests::users::{add_user, node_with_config};
use crvs_tests::{
    Api, HOSPITAL_ID, OFFICE_ID, action_kinds, new_transaction_id, sample_birth_declaration,
};
use serde_json::{Value, json};

const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Ilanga District Office: an office in another province (Sulaka).
const ILANGA_OFFICE_ID: &str = "7b8d2f30-0002-4000-8000-000000000003";

/// Logs `user` (as `crvs-central user add` printed it) in at central; demo mode's code.
async fn login_at_central(central: &CentralProcess, user: &Value) -> Api {
    let anonymous = Api::new(format!("http://{}", central.http()), None);
    crvs_tests::users::login_at_central(&anonymous, user).await
}

async fn act(api: &Api, event_id: &str, action: &str, body: Value) -> crvs_tests::Reply {
    api.post(&format!("/api/events/events/{event_id}/{action}"), &body)
        .await
        .unwrap()
}

/// The number of the Accepted REGISTER of an event document, if any.
fn registration_number(doc: &Value) -> Option<String> {
    doc["actions"].as_array()?.iter().find_map(|a| {
        (a["type"] == "REGISTER" && a["status"] == "Accepted")
            .then(|| a["registrationNumber"].as_str().map(str::to_owned))
            .flatten()
    })
}

/// The sample birth with the mother's date of birth, which Farajaland's duplicate rules compare.
fn declaration() -> Value {
    let mut declaration = sample_birth_declaration();
    declaration["mother.dob"] = json!("1995-02-11");
    declaration
}

async fn assign(api: &Api, event_id: &str) {
    let assigned = act(
        api,
        event_id,
        "assign",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(assigned.status, 200, "{}", assigned.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_at_central_declare_validate_and_register_and_the_number_reaches_the_node() {
    let central = CentralProcess::start_with_config(Some("two_factor = false\n")).unwrap();
    let agent = add_user(
        &central,
        "Felix",
        "Katongo",
        "REGISTRATION_AGENT",
        OFFICE_ID,
    );
    let registrar = add_user(&central, "Joshua", "Mutale", "LOCAL_REGISTRAR", OFFICE_ID);
    let far_registrar = add_user(
        &central,
        "Patrick",
        "Phiri",
        "LOCAL_REGISTRAR",
        ILANGA_OFFICE_ID,
    );
    let node = node_with_config(&central, HOSPITAL_ID, "two_factor = false\n");

    eventually("a tracking-id lease", SYNC_TIMEOUT, || async {
        Ok((node.status()?.pool_free > 0).then_some(()))
    })
    .await
    .unwrap();
    // The hospital's system creates a record at its node; it reaches central.
    let health = node.health_api().await.unwrap();
    let created = health
        .create("birth", &new_transaction_id(), HOSPITAL_ID)
        .await
        .unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    let event_id = created.body["id"].as_str().unwrap().to_owned();
    wait_synced(&node, SYNC_TIMEOUT).await.unwrap();

    let agent_api = login_at_central(&central, &agent).await;
    let registrar_api = login_at_central(&central, &registrar).await;
    let far_api = login_at_central(&central, &far_registrar).await;
    let system_api = central.health_api().await.unwrap();

    // Outside the registrar's jurisdiction the record does not exist, for reads and actions.
    let hidden = far_api
        .get(&format!("/api/events/events/{event_id}"))
        .await
        .unwrap();
    assert_eq!(hidden.status, 404, "{}", hidden.body);
    let hidden = act(
        &far_api,
        &event_id,
        "assign",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(hidden.status, 404, "{}", hidden.body);
    // A system client may not declare (OpenCRVS's system-allowed actions).
    let system = act(
        &system_api,
        &event_id,
        "declare",
        json!({"transactionId": new_transaction_id(), "declaration": declaration()}),
    )
    .await;
    assert_eq!(system.status, 403, "{}", system.body);
    // Bad input: unknown key, bad id; nothing written.
    let unknown = act(
        &agent_api,
        &event_id,
        "assign",
        json!({"transactionId": new_transaction_id(), "colour": "red"}),
    )
    .await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    let bad_id = act(
        &agent_api,
        "not-a-uuid",
        "assign",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(bad_id.status, 400, "{}", bad_id.body);

    // The agent must hold the record first (the lock), then declares it.
    let declare_body = json!({"transactionId": new_transaction_id(), "declaration": declaration()});
    let unassigned = act(&agent_api, &event_id, "declare", declare_body.clone()).await;
    assert_eq!(unassigned.status, 409, "{}", unassigned.body);
    let assigned = act(
        &agent_api,
        &event_id,
        "assign",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(assigned.status, 200, "{}", assigned.body);
    let declared = act(&agent_api, &event_id, "declare", declare_body.clone()).await;
    assert_eq!(declared.status, 200, "{}", declared.body);
    let kinds = action_kinds(&declared.body);
    assert_eq!(
        &kinds[kinds.len() - 3..],
        [
            ("DECLARE".into(), "Requested".into()),
            ("DECLARE".into(), "Accepted".into()),
            ("UNASSIGN".into(), "Accepted".into())
        ]
    );
    let declare = &declared.body["actions"][kinds.len() - 3];
    assert_eq!(declare["createdBy"], agent["userId"]);
    assert_eq!(declare["createdAtLocation"], OFFICE_ID);
    assert_eq!(declare["createdByRole"], "REGISTRATION_AGENT");
    // A replay answers the record unchanged; the same id with another body is a 409.
    let replay = act(&agent_api, &event_id, "declare", declare_body.clone()).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(action_kinds(&replay.body).len(), kinds.len());
    let mut clash_body = declare_body;
    clash_body["declaration"] = json!({"child.gender": "male"});
    let clash = act(&agent_api, &event_id, "declare", clash_body).await;
    assert_eq!(clash.status, 409, "{}", clash.body);

    // Validation over tRPC, batched with the assignment (OpenCRVS's httpBatchLink).
    let batch = agent_api
        .post(
            "/api/events/event.actions.assignment.assign,event.actions.validate.request?batch=1",
            &json!({
                "0": {"json": {"eventId": event_id, "transactionId": new_transaction_id()}},
                "1": {"json": {"eventId": event_id, "transactionId": new_transaction_id()}}
            }),
        )
        .await
        .unwrap();
    assert_eq!(batch.status, 200, "{}", batch.body);
    let validated = &batch.body[1]["result"]["data"]["json"];
    assert!(
        validated["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["type"] == "CUSTOM"
                && a["status"] == "Accepted"
                && a["customActionType"] == "VALIDATE_DECLARATION"),
        "{validated}"
    );
    // The agent may not register: 403 in tRPC's shape.
    let no_scope = agent_api
        .post(
            "/api/events/event.actions.register.request",
            &json!({"json": {"eventId": event_id, "transactionId": new_transaction_id()}}),
        )
        .await
        .unwrap();
    assert_eq!(no_scope.status, 403, "{}", no_scope.body);
    assert_eq!(no_scope.body["error"]["json"]["data"]["code"], "FORBIDDEN");

    // The registrar registers: central answers in the same request, with a number.
    let assigned = act(
        &registrar_api,
        &event_id,
        "assign",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(assigned.status, 200, "{}", assigned.body);
    let register_tx = new_transaction_id();
    let registered = act(
        &registrar_api,
        &event_id,
        "register",
        json!({"transactionId": register_tx}),
    )
    .await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let number = registration_number(&registered.body).expect("a registration number");
    let tracking_id = registered.body["trackingId"].as_str().unwrap().to_owned();
    let found = system_api.search_tracking_id(&tracking_id).await.unwrap();
    assert_eq!(
        found.body["results"][0]["status"], "REGISTERED",
        "{}",
        found.body
    );
    // Rejecting a registered record is refused by the state machine, with OpenCRVS's message; a replay of
    // the registration answers the same number.
    let again = act(
        &registrar_api,
        &event_id,
        "reject",
        json!({"transactionId": new_transaction_id(), "content": {"reason": "late"}}),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(
        again.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Action 'REJECT' cannot be performed on an event in 'REGISTERED' state"),
        "{}",
        again.body
    );
    let replay = act(
        &registrar_api,
        &event_id,
        "register",
        json!({"transactionId": register_tx}),
    )
    .await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(registration_number(&replay.body), Some(number.clone()));

    // The registrar's reads at central are audited.
    let read = registrar_api
        .post("/api/events/event.get", &json!({"json": event_id}))
        .await
        .unwrap();
    assert_eq!(read.status, 200, "{}", read.body);
    let registrar_id = registrar["userId"].as_str().unwrap();
    let audit = registrar_api
        .get(&format!("/api/users/{registrar_id}/audit?count=50"))
        .await
        .unwrap();
    assert_eq!(audit.status, 200, "{}", audit.body);
    assert!(
        audit.body["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["operation"] == "record.read"
                && r["subject"] == event_id.as_str()
                && r["location"] == OFFICE_ID),
        "{}",
        audit.body
    );

    // The same child notified again, misspelled and two days apart: central's duplicate rules
    // (Farajaland's) flag it instead of registering it, listing the first record.
    let created = health
        .create("birth", &new_transaction_id(), HOSPITAL_ID)
        .await
        .unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    let twin_id = created.body["id"].as_str().unwrap().to_owned();
    wait_synced(&node, SYNC_TIMEOUT).await.unwrap();
    let mut misspelled = declaration();
    misspelled["child.name"] = json!({"firstname": "Lium", "surname": "Bandah"});
    misspelled["child.dob"] = json!("2024-06-05");
    assign(&agent_api, &twin_id).await;
    let declared = act(
        &agent_api,
        &twin_id,
        "declare",
        json!({"transactionId": new_transaction_id(), "declaration": misspelled}),
    )
    .await;
    assert_eq!(declared.status, 200, "{}", declared.body);
    assign(&registrar_api, &twin_id).await;
    let flagged = act(
        &registrar_api,
        &twin_id,
        "register",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(flagged.status, 200, "{}", flagged.body);
    assert_eq!(registration_number(&flagged.body), None, "{}", flagged.body);
    let actions = flagged.body["actions"].as_array().unwrap();
    let detected = actions
        .iter()
        .find(|a| a["type"] == "DUPLICATE_DETECTED")
        .expect("DUPLICATE_DETECTED");
    assert_eq!(
        detected["content"]["duplicates"][0]["id"],
        event_id.as_str()
    );
    assert_eq!(
        detected["content"]["duplicates"][0]["trackingId"],
        tracking_id
    );
    let answer = actions.last().unwrap();
    assert_eq!(
        (&answer["type"], &answer["status"]),
        (&json!("REGISTER"), &json!("Rejected")),
        "{answer}"
    );
    assert_eq!(answer["content"]["reason"], "potential duplicate");
    let index = system_api
        .search_tracking_id(flagged.body["trackingId"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        index.body["results"][0]["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("potential-duplicate")),
        "{}",
        index.body
    );
    // While flagged, registration is refused; the agent may not review duplicates.
    assign(&registrar_api, &twin_id).await;
    let blocked = act(
        &registrar_api,
        &twin_id,
        "register",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(blocked.status, 409, "{}", blocked.body);
    let no_review = agent_api
        .post(
            "/api/events/event.actions.duplicate.markNotDuplicate",
            &json!({"json": {"eventId": twin_id, "transactionId": new_transaction_id()}}),
        )
        .await
        .unwrap();
    assert_eq!(no_review.status, 403, "{}", no_review.body);
    // The registrar clears the flag (they are twins after all); the next request is numbered.
    let cleared = registrar_api
        .post(
            "/api/events/event.actions.duplicate.markNotDuplicate",
            &json!({"json": {"eventId": twin_id, "transactionId": new_transaction_id(),
                "content": {"reason": "twins"}}}),
        )
        .await
        .unwrap();
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    assign(&registrar_api, &twin_id).await;
    let registered = act(
        &registrar_api,
        &twin_id,
        "register",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let twin_number = registration_number(&registered.body).expect("a number after review");
    assert_ne!(twin_number, number);

    // Central's actions reach the node: the record is registered there with the same number.
    let at_node = eventually("the registration at the node", SYNC_TIMEOUT, || async {
        let read = health.read(&event_id).await?;
        Ok(registration_number(&read.body).map(|n| (n, read.body)))
    })
    .await
    .unwrap();
    assert_eq!(at_node.0, number);
    let kinds = action_kinds(&at_node.1);
    for expected in [
        ("DECLARE", "Accepted"),
        ("CUSTOM", "Accepted"),
        ("REGISTER", "Accepted"),
    ] {
        assert!(
            kinds
                .iter()
                .any(|(t, s)| t == expected.0 && s == expected.1),
            "{expected:?} missing at the node: {kinds:?}"
        );
    }
}
