//! Records brought in and listed at central: a legacy register imports whole records at central
//! (`record.import`; REST and tRPC `event.bulkImport`), checked like at a node, idempotent on
//! the same record, refused on other content, a known tracking id or registration number; an
//! imported REGISTER left requested is answered with a number, and the record reaches the node
//! of its area. People at central list the records of their jurisdiction (filters, paging,
//! tRPC), create records (central issues the tracking id; the record reaches the node) and keep
//! drafts, which an action other than an assignment drops.

use std::time::Duration;

use crvs_tests::central::{CentralProcess, eventually, wait_synced};
use crvs_tests::users::{add_user, node_with_config};
use crvs_tests::{
    Api, Credentials, HOSPITAL_ID, OFFICE_ID, action_kinds, new_transaction_id,
    sample_birth_declaration,
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

/// A client of central's with `scopes`, logged in.
async fn client_at_central(central: &CentralProcess, name: &str, scopes: &[&str]) -> Api {
    let mut args = vec!["client", "add", "--name", name];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    let credentials: Credentials = serde_json::from_value(central.cli(&args).unwrap()).unwrap();
    let anonymous = Api::new(format!("http://{}", central.http()), None);
    let reply = anonymous
        .token_by_query("/auth/token", &credentials)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    anonymous.with_token(reply.body["access_token"].as_str())
}

/// One action of a legacy record, made `minute` minutes into its day.
fn legacy_action(kind: &str, status: &str, declaration: Option<Value>, minute: u8) -> Value {
    let mut action = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": kind,
        "status": status,
        "transactionId": format!("legacy-{}", new_transaction_id()),
        "createdBy": "legacy-register",
        "createdByUserType": "system",
        "createdAtLocation": HOSPITAL_ID,
        "createdAt": format!("2019-03-04T05:{minute:02}:07.000Z"),
    });
    if let Some(declaration) = declaration {
        action["declaration"] = declaration;
    }
    action
}

/// A declared birth from a legacy register (at the Ibombo hospital) whose registration was
/// asked for but never answered, with a child no other record has.
fn legacy_record(tracking_id: &str, first_name: &str) -> Value {
    let mut declaration = sample_birth_declaration();
    declaration["child.name"] = json!({"firstname": first_name, "surname": "Legacy"});
    declaration["child.dob"] = json!("2019-03-01");
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "birth",
        "trackingId": tracking_id,
        "createdAt": "2019-03-04T05:06:07.000Z",
        "updatedAt": "2019-03-04T05:08:07.000Z",
        "actions": [
            legacy_action("CREATE", "Accepted", Some(json!({})), 6),
            legacy_action("DECLARE", "Accepted", Some(declaration), 7),
            legacy_action("REGISTER", "Requested", None, 8),
        ]
    })
}

/// The number of the Accepted REGISTER of an event document, if any.
fn registration_number(doc: &Value) -> Option<String> {
    doc["actions"].as_array()?.iter().find_map(|a| {
        (a["type"] == "REGISTER" && a["status"] == "Accepted")
            .then(|| a["registrationNumber"].as_str().map(str::to_owned))
            .flatten()
    })
}

fn ids(listing: &Value) -> Vec<String> {
    listing["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A tRPC query's URL for `input`.
fn trpc_query(procedure: &str, input: &Value) -> String {
    let encoded: String = json!({ "json": input })
        .to_string()
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    format!("/api/events/{procedure}?input={encoded}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_imported_created_listed_and_drafted_at_central_reach_the_node() {
    let central = CentralProcess::start_with_config(Some("two_factor = false\n")).unwrap();
    let agent = add_user(
        &central,
        "Kalusha",
        "Bwalya",
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
    // A record of the hospital's, created at its node, reaches central.
    let health = node.health_api().await.unwrap();
    let created = health
        .create("birth", &new_transaction_id(), HOSPITAL_ID)
        .await
        .unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    let node_record = created.body["id"].as_str().unwrap().to_owned();
    let node_tracking_id = created.body["trackingId"].as_str().unwrap().to_owned();
    wait_synced(&node, SYNC_TIMEOUT).await.unwrap();

    let importer = client_at_central(
        &central,
        "legacy register",
        &["type=record.import", "type=record.read&event=birth"],
    )
    .await;
    let system_api = central.health_api().await.unwrap();
    let agent_api = login_at_central(&central, &agent).await;
    let registrar_api = login_at_central(&central, &registrar).await;
    let far_api = login_at_central(&central, &far_registrar).await;

    // Import: stored as central's own record; the REGISTER it asked for is answered.
    let legacy = legacy_record("LEGC01", "Mwila");
    let imported_id = legacy["id"].as_str().unwrap().to_owned();
    let stored = importer
        .post("/api/events/events/import", &legacy)
        .await
        .unwrap();
    assert_eq!(stored.status, 200, "{}", stored.body);
    assert_eq!(stored.body["trackingId"], "LEGC01");
    let number = registration_number(&stored.body).expect("central answers the REGISTER");
    // The same record again: answered as stored; other content under its id: 409.
    let again = importer
        .post("/events/events/import", &legacy)
        .await
        .unwrap();
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(action_kinds(&again.body), action_kinds(&stored.body));
    let mut changed = legacy.clone();
    changed["actions"][1]["declaration"]["child.name"]["firstname"] = json!("Mwela");
    let clash = importer
        .post("/api/events/events/import", &changed)
        .await
        .unwrap();
    assert_eq!(clash.status, 409, "{}", clash.body);
    // Bad records are refused before anything is written.
    let mut headless = legacy_record("LEGC02", "Chanda");
    headless["actions"].as_array_mut().unwrap().remove(0);
    let refused = importer
        .post("/api/events/events/import", &headless)
        .await
        .unwrap();
    assert_eq!(refused.status, 400, "no CREATE: {}", refused.body);
    let bad_tracking = legacy_record("bad-id", "Chanda");
    let refused = importer
        .post("/api/events/events/import", &bad_tracking)
        .await
        .unwrap();
    assert_eq!(refused.status, 400, "bad tracking id: {}", refused.body);
    let no_scope = system_api
        .post(
            "/api/events/events/import",
            &legacy_record("LEGC03", "Chanda"),
        )
        .await
        .unwrap();
    assert_eq!(no_scope.status, 403, "{}", no_scope.body);
    // A tracking id of the national pool (the node's record's), or a number central issued,
    // belongs to another record.
    let taken = importer
        .post(
            "/api/events/events/import",
            &legacy_record(&node_tracking_id, "Chanda"),
        )
        .await
        .unwrap();
    assert_eq!(taken.status, 409, "{}", taken.body);
    let mut numbered = legacy_record("LEGC04", "Chanda");
    numbered["actions"][2]["status"] = json!("Accepted");
    numbered["actions"][2]["registrationNumber"] = json!(number);
    let taken = importer
        .post("/api/events/events/import", &numbered)
        .await
        .unwrap();
    assert_eq!(taken.status, 409, "{}", taken.body);
    // tRPC's bulk import: a registered record keeps its own number.
    numbered["actions"][2]["registrationNumber"] = json!("LEGACY-2019-0004");
    let bulk = importer
        .post("/api/events/event.bulkImport", &json!({"json": [numbered]}))
        .await
        .unwrap();
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    let bulk_doc = &bulk.body["result"]["data"]["json"][0];
    assert_eq!(
        registration_number(bulk_doc).as_deref(),
        Some("LEGACY-2019-0004")
    );

    // People at central create records: central issues the tracking id; the creator holds it.
    let create_tx = new_transaction_id();
    let made = agent_api
        .post(
            "/api/events/events",
            &json!({"type": "birth", "transactionId": create_tx}),
        )
        .await
        .unwrap();
    assert_eq!(made.status, 200, "{}", made.body);
    let made_id = made.body["id"].as_str().unwrap().to_owned();
    let made_tracking = made.body["trackingId"].as_str().unwrap().to_owned();
    assert_eq!(made_tracking.len(), 6, "{}", made.body);
    assert_eq!(
        action_kinds(&made.body),
        [
            ("CREATE".into(), "Accepted".into()),
            ("ASSIGN".into(), "Accepted".into())
        ]
    );
    assert_eq!(made.body["actions"][0]["createdAtLocation"], OFFICE_ID);
    assert_eq!(made.body["actions"][1]["assignedTo"], agent["userId"]);
    let replay = agent_api
        .post(
            "/api/events/events",
            &json!({"type": "birth", "transactionId": create_tx}),
        )
        .await
        .unwrap();
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["id"], made.body["id"]);
    let by_trpc = agent_api
        .post(
            "/api/events/event.create",
            &json!({"json": {"type": "birth", "transactionId": new_transaction_id()}}),
        )
        .await
        .unwrap();
    assert_eq!(by_trpc.status, 200, "{}", by_trpc.body);
    let trpc_made = &by_trpc.body["result"]["data"]["json"];
    assert_ne!(trpc_made["trackingId"], made.body["trackingId"]);
    let by_system = system_api
        .post(
            "/api/events/events",
            &json!({"type": "birth", "transactionId": new_transaction_id()}),
        )
        .await
        .unwrap();
    assert_eq!(by_system.status, 403, "{}", by_system.body);

    // Drafts at central: kept for their author, not for another district, dropped by a
    // declaration but not by an assignment.
    let draft_body = json!({
        "transactionId": new_transaction_id(),
        "type": "DECLARE",
        "declaration": {"child.name": {"firstname": "Tiza", "surname": "Banda"}}
    });
    let draft = agent_api
        .post(&format!("/api/events/events/{made_id}/draft"), &draft_body)
        .await
        .unwrap();
    assert_eq!(draft.status, 200, "{}", draft.body);
    assert_eq!(draft.body["eventId"], made_id.as_str());
    let hidden = far_api
        .post(&format!("/api/events/events/{made_id}/draft"), &draft_body)
        .await
        .unwrap();
    assert_eq!(hidden.status, 404, "{}", hidden.body);
    let drafts = agent_api.get("/api/events/drafts").await.unwrap();
    assert_eq!(drafts.status, 200, "{}", drafts.body);
    assert_eq!(drafts.body.as_array().unwrap().len(), 1, "{}", drafts.body);
    assert!(
        far_api
            .get("/events/drafts")
            .await
            .unwrap()
            .body
            .as_array()
            .unwrap()
            .is_empty()
    );
    let unassigned = agent_api
        .post(
            &format!("/api/events/events/{made_id}/unassign"),
            &json!({"transactionId": new_transaction_id()}),
        )
        .await
        .unwrap();
    assert_eq!(unassigned.status, 200, "{}", unassigned.body);
    let listed = agent_api
        .get(&trpc_query("event.draft.list", &Value::Null))
        .await
        .unwrap();
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.body["result"]["data"]["json"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "an unassignment keeps the draft: {}",
        listed.body
    );
    for (action, body) in [
        ("assign", json!({"transactionId": new_transaction_id()})),
        (
            "declare",
            json!({"transactionId": new_transaction_id(), "declaration": sample_birth_declaration()}),
        ),
    ] {
        let done = agent_api
            .post(&format!("/api/events/events/{made_id}/{action}"), &body)
            .await
            .unwrap();
        assert_eq!(done.status, 200, "{action}: {}", done.body);
    }
    let drafts = agent_api.get("/api/events/drafts").await.unwrap();
    assert_eq!(drafts.body, json!([]), "the declaration drops the draft");

    // Listing at central: the registrar's jurisdiction, filtered and paged.
    let registered = registrar_api
        .get("/api/events/events?status=REGISTERED&type=birth")
        .await
        .unwrap();
    assert_eq!(registered.status, 200, "{}", registered.body);
    let mut found = ids(&registered.body);
    found.sort();
    let mut expected = vec![imported_id.clone(), bulk_doc["id"].as_str().unwrap().into()];
    expected.sort();
    assert_eq!(found, expected, "{}", registered.body);
    // Undeclared records (CREATED) are not listed, as OpenCRVS does not index them.
    let all = registrar_api.get("/api/events/events").await.unwrap();
    assert_eq!(all.status, 200, "{}", all.body);
    let total = all.body["total"].as_u64().unwrap();
    assert_eq!(total, 3, "{}", all.body);
    for wanted in [&imported_id, &made_id] {
        assert!(ids(&all.body).contains(wanted), "{wanted}: {}", all.body);
    }
    assert!(!ids(&all.body).contains(&node_record), "{}", all.body);
    let first = registrar_api
        .get("/events/events?limit=2&offset=0")
        .await
        .unwrap();
    let second = registrar_api
        .get("/events/events?limit=2&offset=2")
        .await
        .unwrap();
    assert_eq!(first.body["total"].as_u64(), Some(total));
    assert_eq!(ids(&first.body).len(), 2);
    assert!(
        ids(&second.body)
            .iter()
            .all(|id| !ids(&first.body).contains(id)),
        "pages overlap: {} {}",
        first.body,
        second.body
    );
    let declared = registrar_api
        .get(&trpc_query(
            "event.list",
            &json!({"status": "DECLARED", "location": OFFICE_ID}),
        ))
        .await
        .unwrap();
    assert_eq!(declared.status, 200, "{}", declared.body);
    assert_eq!(
        ids(&declared.body["result"]["data"]["json"]),
        std::slice::from_ref(&made_id)
    );
    let assigned = registrar_api
        .post(
            &format!("/api/events/events/{made_id}/assign"),
            &json!({"transactionId": new_transaction_id()}),
        )
        .await
        .unwrap();
    assert_eq!(assigned.status, 200, "{}", assigned.body);
    let mine = registrar_api
        .get("/api/events/events?assignedTo=me")
        .await
        .unwrap();
    assert_eq!(mine.status, 200, "{}", mine.body);
    assert_eq!(
        ids(&mine.body),
        std::slice::from_ref(&made_id),
        "{}",
        mine.body
    );
    let theirs = agent_api
        .get("/api/events/events?assignedTo=me")
        .await
        .unwrap();
    assert_eq!(theirs.body["total"], 0, "{}", theirs.body);
    let elsewhere = far_api.get("/api/events/events").await.unwrap();
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.body);
    assert_eq!(elsewhere.body["total"], 0, "{}", elsewhere.body);
    let bad = registrar_api
        .get("/api/events/events?status=FILED")
        .await
        .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.body);
    let too_many = registrar_api
        .get("/api/events/events?limit=1000")
        .await
        .unwrap();
    assert_eq!(too_many.status, 400, "{}", too_many.body);

    // The imported and created records reach the node of their area, numbers and all.
    let at_node = eventually("the imported record at the node", SYNC_TIMEOUT, || async {
        let read = health.read(&imported_id).await?;
        Ok((read.status == 200).then_some(read.body))
    })
    .await
    .unwrap();
    assert_eq!(at_node["trackingId"], "LEGC01");
    assert_eq!(registration_number(&at_node), Some(number));
    let made_at_node = eventually("the created record at the node", SYNC_TIMEOUT, || async {
        let read = health.read(&made_id).await?;
        Ok((read.status == 200).then_some(read.body))
    })
    .await
    .unwrap();
    assert_eq!(made_at_node["trackingId"], made_tracking.as_str());
    assert!(
        action_kinds(&made_at_node).contains(&("DECLARE".into(), "Accepted".into())),
        "{made_at_node}"
    );
}
