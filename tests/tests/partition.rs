//! Two clinics of one district work on the same record while cut off from central (and so from
//! each other): a user at each assigns it and edits the same field. When the link is back, both
//! nodes (and central) show the same status, flags, assignee and value, the field conflict is
//! listed, and the node whose assignment lost is told (its sync status lists the lost lock; its
//! user is refused with a 409 from then on). A registered record (numbered by central) gets a
//! correction request at each clinic while cut off: both requests are kept everywhere, and the
//! approval of one reaches both clinics.

use std::time::Duration;

use crvs_tests::central::{CentralProcess, eventually, node_sync_status, wait_synced};
use crvs_tests::users::{add_user, login, node_with_config, wait_for_user};
use crvs_tests::{
    Api, HOSPITAL_ID, NodeProcess, OFFICE_ID, new_transaction_id, sample_birth_declaration,
};
use serde_json::{Value, json};

/// Chikobo Rural Health Centre, same district (Ibombo) as the hospital.
const CHIKOBO_ID: &str = "7b8d2f30-0002-4000-8000-000000000012";

const SYNC_TIMEOUT: Duration = Duration::from_secs(90);

/// The record's index at a node (search does not write, unlike a read).
async fn index_at(node: &NodeProcess, tracking_id: &str) -> anyhow::Result<Option<Value>> {
    let api = node.health_api().await?;
    let found = api.search_tracking_id(tracking_id).await?;
    anyhow::ensure!(found.status == 200, "search: {}", found.body);
    Ok((found.body["total"] == 1).then(|| found.body["results"][0].clone()))
}

/// What two replicas must agree on.
fn converged_view(index: &Value) -> Value {
    json!({
        "status": index["status"],
        "flags": index["flags"],
        "assignedTo": index["assignedTo"],
        "childName": index["declaration"]["child.name"],
        "conflicts": index["conflicts"],
    })
}

/// A user's API at a node, logged in there (demo mode: code 000000).
async fn token_at(node: &NodeProcess, user: &Value) -> Api {
    let username = user["username"].as_str().unwrap();
    let password = user["password"].as_str().unwrap();
    node.api(&login(node, username, password, "000000").await)
}

async fn act(api: &Api, event_id: &str, action: &str, body: Value) -> crvs_tests::Reply {
    api.post(&format!("/api/events/events/{event_id}/{action}"), &body)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_assignments_and_edits_converge_and_the_loser_is_told() {
    let mut central = CentralProcess::start().unwrap();
    let first = add_user(
        &central,
        "Felix",
        "Katongo",
        "REGISTRATION_AGENT",
        OFFICE_ID,
    );
    let second = add_user(
        &central,
        "Grace",
        "Mulenga",
        "REGISTRATION_AGENT",
        OFFICE_ID,
    );
    let a = node_with_config(&central, HOSPITAL_ID, "two_factor = false\n");
    let b = node_with_config(&central, CHIKOBO_ID, "two_factor = false\n");
    for node in [&a, &b] {
        for user in [&first, &second] {
            wait_for_user(node, user["username"].as_str().unwrap(), "active").await;
        }
    }

    // The hospital's system notifies a birth; it reaches the other clinic through central.
    let notified = a
        .health_api()
        .await
        .unwrap()
        .create_and_notify(
            "birth",
            &new_transaction_id(),
            HOSPITAL_ID,
            &sample_birth_declaration(),
        )
        .await
        .unwrap();
    assert_eq!(notified.status, 200, "{}", notified.body);
    let event_id = notified.body["id"].as_str().unwrap().to_owned();
    let tracking_id = notified.body["trackingId"].as_str().unwrap().to_owned();
    eventually("the record at the second clinic", SYNC_TIMEOUT, || async {
        Ok(index_at(&b, &tracking_id).await?.map(|_| ()))
    })
    .await
    .unwrap();

    // Partition: central goes away; the clinics cannot see each other's work.
    central.kill9().unwrap();
    let at_a = token_at(&a, &first).await;
    let at_b = token_at(&b, &second).await;
    for (api, surname) in [(&at_a, "Banda-Hospital"), (&at_b, "Banda-Chikobo")] {
        let assigned = act(
            api,
            &event_id,
            "assign",
            json!({"transactionId": new_transaction_id()}),
        )
        .await;
        assert_eq!(assigned.status, 200, "{}", assigned.body);
        let edited = act(
            api,
            &event_id,
            "edit",
            json!({
                "transactionId": new_transaction_id(),
                "keepAssignment": true,
                "declaration": {"child.name": {"firstname": "Liam", "surname": surname}}
            }),
        )
        .await;
        assert_eq!(edited.status, 200, "{}", edited.body);
    }
    let before_a = index_at(&a, &tracking_id).await.unwrap().unwrap();
    let before_b = index_at(&b, &tracking_id).await.unwrap().unwrap();
    assert_eq!(before_a["assignedTo"], first["userId"]);
    assert_eq!(before_b["assignedTo"], second["userId"]);

    // Healing: both drain to central and take each other's entries from it.
    central.restart().unwrap();
    wait_synced(&a, SYNC_TIMEOUT).await.unwrap();
    wait_synced(&b, SYNC_TIMEOUT).await.unwrap();
    let (view_a, view_b) = eventually("both clinics to converge", SYNC_TIMEOUT, || async {
        let ia = index_at(&a, &tracking_id).await?.unwrap_or_default();
        let ib = index_at(&b, &tracking_id).await?.unwrap_or_default();
        let (va, vb) = (converged_view(&ia), converged_view(&ib));
        let both_edits = ia["conflicts"].as_array().is_some_and(|c| !c.is_empty());
        Ok((va == vb && both_edits).then_some((va, vb)))
    })
    .await
    .unwrap();
    assert_eq!(view_a, view_b);
    // The later assignment (made second, at the other clinic) holds the lock everywhere.
    assert_eq!(view_a["assignedTo"], second["userId"], "{view_a}");
    assert!(
        view_a["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("edit-in-progress")),
        "{view_a}"
    );
    // The concurrent edits of one field: one deterministic winner, both values listed.
    let conflict = view_a["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "child.name")
        .unwrap_or_else(|| panic!("no conflict on child.name: {view_a}"))
        .clone();
    assert_eq!(conflict["winner"], view_a["childName"]);
    let values = conflict["values"].as_array().unwrap();
    assert_eq!(values.len(), 2, "{conflict}");
    for surname in ["Banda-Hospital", "Banda-Chikobo"] {
        assert!(values.iter().any(|v| v["surname"] == surname), "{conflict}");
    }

    // The hospital, whose assignment lost, is told; its user cannot act on the record now.
    let status = node_sync_status(&a).await.unwrap();
    let lost = status["lostAssignments"].as_array().unwrap();
    assert!(
        lost.iter().any(|l| l["eventId"] == event_id.as_str()
            && l["lostBy"] == first["userId"]
            && l["wonBy"] == second["userId"]),
        "{status}"
    );
    let late = act(
        &at_a,
        &event_id,
        "declare",
        json!({"transactionId": new_transaction_id(), "declaration": sample_birth_declaration()}),
    )
    .await;
    assert_eq!(late.status, 409, "{}", late.body);
    let status_b = node_sync_status(&b).await.unwrap();
    assert!(
        status_b["lostAssignments"].as_array().unwrap().is_empty(),
        "{status_b}"
    );

    // Central derives the same.
    let central_api = central.health_api().await.unwrap();
    let found = central_api.search_tracking_id(&tracking_id).await.unwrap();
    assert_eq!(
        converged_view(&found.body["results"][0]),
        view_a,
        "{}",
        found.body
    );
}

/// The surnames proposed by an event document's correction requests.
fn requested_surnames(doc: &Value) -> Vec<String> {
    let mut out: Vec<String> = doc["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "REQUEST_CORRECTION")
        .filter_map(|a| a["declaration"]["child.name"]["surname"].as_str())
        .map(str::to_owned)
        .collect();
    out.sort();
    out
}

/// A record registered with the link up (central numbers it and both clinics learn it), then
/// two clinics, cut off, each assign it and request a correction of the same field. After
/// healing, both requests are kept everywhere (none silently lost), both clinics show the same
/// status, flags and lock, and a registrar approving one request changes the record at both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_corrections_of_a_registered_record_are_all_kept() {
    let mut central = CentralProcess::start().unwrap();
    let clerk = add_user(&central, "Kalusha", "Bwalya", "HOSPITAL_CLERK", HOSPITAL_ID);
    let registrar = add_user(&central, "Joshua", "Mutale", "LOCAL_REGISTRAR", OFFICE_ID);
    let first = add_user(
        &central,
        "Felix",
        "Katongo",
        "REGISTRATION_AGENT",
        OFFICE_ID,
    );
    let second = add_user(
        &central,
        "Grace",
        "Mulenga",
        "REGISTRATION_AGENT",
        OFFICE_ID,
    );
    let a = node_with_config(&central, HOSPITAL_ID, "two_factor = false\n");
    let b = node_with_config(&central, CHIKOBO_ID, "two_factor = false\n");
    for node in [&a, &b] {
        for user in [&clerk, &registrar, &first, &second] {
            wait_for_user(node, user["username"].as_str().unwrap(), "active").await;
        }
    }

    // Declared by the clerk, registered by the registrar, numbered by central.
    let clerk_api = token_at(&a, &clerk).await;
    let created = clerk_api
        .create_by_user("birth", &new_transaction_id())
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    let event_id = created.body["id"].as_str().unwrap().to_owned();
    let tracking_id = created.body["trackingId"].as_str().unwrap().to_owned();
    let declared = act(
        &clerk_api,
        &event_id,
        "declare",
        json!({"transactionId": new_transaction_id(), "declaration": sample_birth_declaration()}),
    )
    .await;
    assert_eq!(declared.status, 200, "{}", declared.body);
    let registrar_a = token_at(&a, &registrar).await;
    for action in ["assign", "register"] {
        let done = act(
            &registrar_a,
            &event_id,
            action,
            json!({"transactionId": new_transaction_id()}),
        )
        .await;
        assert_eq!(done.status, 200, "{action}: {}", done.body);
    }
    for node in [&a, &b] {
        eventually("the registration at both clinics", SYNC_TIMEOUT, || async {
            let index = index_at(node, &tracking_id).await?;
            Ok(index.filter(|i| i["status"] == "REGISTERED").map(|_| ()))
        })
        .await
        .unwrap();
    }
    // Registering released the record (no keepAssignment).
    eventually(
        "the unassignment at the second clinic",
        SYNC_TIMEOUT,
        || async {
            let index = index_at(&b, &tracking_id).await?.unwrap_or_default();
            Ok(index["assignedTo"].is_null().then_some(()))
        },
    )
    .await
    .unwrap();

    // Partition: each clinic's agent takes the record and asks for a different correction.
    central.kill9().unwrap();
    let at_a = token_at(&a, &first).await;
    let at_b = token_at(&b, &second).await;
    for (api, surname) in [(&at_a, "Mwila-Hospital"), (&at_b, "Mwila-Chikobo")] {
        let assigned = act(
            api,
            &event_id,
            "assign",
            json!({"transactionId": new_transaction_id()}),
        )
        .await;
        assert_eq!(assigned.status, 200, "{}", assigned.body);
        let requested = act(
            api,
            &event_id,
            "request-correction",
            json!({
                "transactionId": new_transaction_id(),
                "keepAssignment": true,
                "declaration": {"child.name": {"firstname": "Liam", "surname": surname}}
            }),
        )
        .await;
        assert_eq!(requested.status, 200, "{}", requested.body);
    }

    // Healing: both requests everywhere; the same status, flags and lock at both clinics.
    central.restart().unwrap();
    wait_synced(&a, SYNC_TIMEOUT).await.unwrap();
    wait_synced(&b, SYNC_TIMEOUT).await.unwrap();
    let both = vec!["Mwila-Chikobo".to_owned(), "Mwila-Hospital".to_owned()];
    let reader_a = a.health_api().await.unwrap();
    let reader_b = b.health_api().await.unwrap();
    let docs = eventually("both requests at both clinics", SYNC_TIMEOUT, || async {
        let da = reader_a.read(&event_id).await?.body;
        let db = reader_b.read(&event_id).await?.body;
        Ok(
            (requested_surnames(&da) == both && requested_surnames(&db) == both)
                .then_some((da, db)),
        )
    })
    .await
    .unwrap();
    let central_doc = central
        .health_api()
        .await
        .unwrap()
        .read(&event_id)
        .await
        .unwrap()
        .body;
    assert_eq!(requested_surnames(&central_doc), both);
    let (view_a, view_b) = eventually("both clinics to converge", SYNC_TIMEOUT, || async {
        let ia = index_at(&a, &tracking_id).await?.unwrap_or_default();
        let ib = index_at(&b, &tracking_id).await?.unwrap_or_default();
        let (va, vb) = (converged_view(&ia), converged_view(&ib));
        Ok((va == vb).then_some((va, vb)))
    })
    .await
    .unwrap();
    assert_eq!(view_a, view_b);
    assert_eq!(view_a["status"], "REGISTERED", "{view_a}");
    assert!(
        view_a["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("correction-requested")),
        "{view_a}"
    );
    assert_eq!(view_a["assignedTo"], second["userId"], "{view_a}");

    // A registrar at the second clinic approves the hospital's request; both clinics show it.
    // The request's id is its accepted action's (the one confirming the requested one).
    let actions = docs.1["actions"].as_array().unwrap();
    let requested = actions
        .iter()
        .find(|a| {
            a["type"] == "REQUEST_CORRECTION"
                && a["declaration"]["child.name"]["surname"] == "Mwila-Hospital"
        })
        .unwrap();
    let request_id = actions
        .iter()
        .find(|a| a["type"] == "REQUEST_CORRECTION" && a["originalActionId"] == requested["id"])
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .unwrap();
    let released = act(
        &at_b,
        &event_id,
        "unassign",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(released.status, 200, "{}", released.body);
    let registrar_b = token_at(&b, &registrar).await;
    let assigned = act(
        &registrar_b,
        &event_id,
        "assign",
        json!({"transactionId": new_transaction_id()}),
    )
    .await;
    assert_eq!(assigned.status, 200, "{}", assigned.body);
    let approved = act(
        &registrar_b,
        &event_id,
        "approve-correction",
        json!({"transactionId": new_transaction_id(), "requestId": request_id}),
    )
    .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    wait_synced(&b, SYNC_TIMEOUT).await.unwrap();
    for node in [&a, &b] {
        eventually(
            "the approved correction at both clinics",
            SYNC_TIMEOUT,
            || async {
                let index = index_at(node, &tracking_id).await?.unwrap_or_default();
                Ok(
                    (index["declaration"]["child.name"]["surname"] == "Mwila-Hospital")
                        .then_some(()),
                )
            },
        )
        .await
        .unwrap();
    }
}
