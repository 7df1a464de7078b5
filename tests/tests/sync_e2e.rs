//! Node → central → node, with real processes over real QUIC on loopback: a notification made at a
//! clinic reaches central (searchable there by tracking id), is relayed to another node of the same
//! district and not to a node elsewhere; tracking ids come from central's leases; the client
//! created at central authenticates at the node; ops status shows both sides.

use std::time::Duration;

use crvs_tests::central::{
    CentralProcess, eventually, node_sync_status, start_enrolled_node, wait_synced,
};
use crvs_tests::{HOSPITAL_ID, OFFICE_ID, sample_birth_declaration};

/// Chikobo Rural Health Centre, same district (Ibombo) as the hospital.
const CHIKOBO_ID: &str = "7b8d2f30-0002-4000-8000-000000000012";
/// Isamba District Hospital, another district.
const ISAMBA_ID: &str = "7b8d2f30-0002-4000-8000-000000000013";

const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_travels_from_a_clinic_to_central_and_to_its_district() {
    let central = CentralProcess::start().unwrap();
    let a = start_enrolled_node(&central, HOSPITAL_ID, central.quic()).unwrap();
    let b = start_enrolled_node(&central, CHIKOBO_ID, central.quic()).unwrap();
    let c = start_enrolled_node(&central, ISAMBA_ID, central.quic()).unwrap();

    // Tracking ids are leased by central: wait for A's first lease.
    eventually("a tracking-id lease at node A", SYNC_TIMEOUT, || async {
        let s = node_sync_status(&a).await?;
        Ok((s["poolFree"].as_u64().unwrap_or(0) > 0).then_some(()))
    })
    .await
    .unwrap();

    let api = a.health_api().await.unwrap();
    let tx = uuid::Uuid::new_v4().to_string();
    let created = api.create("birth", &tx, OFFICE_ID).await.unwrap();
    assert_eq!(created.status, 200, "{}", created.body);
    let event_id = created.body["id"].as_str().unwrap().to_owned();
    let tracking = created.body["trackingId"].as_str().unwrap().to_owned();
    let notified = api
        .notify(
            &event_id,
            &uuid::Uuid::new_v4().to_string(),
            OFFICE_ID,
            &sample_birth_declaration(),
        )
        .await
        .unwrap();
    assert_eq!(notified.status, 200, "{}", notified.body);
    wait_synced(&a, SYNC_TIMEOUT).await.unwrap();

    // At central: the event is searchable by its tracking id, NOTIFIED with flag incomplete.
    let central_api = central.health_api().await.unwrap();
    let found = central_api.search_tracking_id(&tracking).await.unwrap();
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(found.body["total"], 1, "{}", found.body);
    assert_eq!(found.body["results"][0]["status"], "NOTIFIED");
    assert_eq!(found.body["results"][0]["id"], event_id.as_str());
    let read = central_api.read(&event_id).await.unwrap();
    assert_eq!(read.status, 200, "{}", read.body);
    let types: Vec<&str> = read.body["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(&types[..3], ["CREATE", "NOTIFY", "NOTIFY"]);

    // Node B (same district) receives it; node C (another district) does not.
    let b_api = b.health_api().await.unwrap();
    eventually("the event at node B", SYNC_TIMEOUT, || async {
        let r = b_api.search_tracking_id(&tracking).await?;
        Ok((r.body["total"] == 1).then_some(()))
    })
    .await
    .unwrap();
    let c_status = wait_synced(&c, SYNC_TIMEOUT).await.unwrap();
    let b_cursor = node_sync_status(&b).await.unwrap()["downCursor"]
        .as_u64()
        .unwrap();
    eventually("node C to catch up with the feed", SYNC_TIMEOUT, || async {
        let s = node_sync_status(&c).await?;
        Ok((s["downCursor"].as_u64().unwrap_or(0) >= b_cursor).then_some(()))
    })
    .await
    .unwrap();
    let c_api = c.health_api().await.unwrap();
    let at_c = c_api.search_tracking_id(&tracking).await.unwrap();
    assert_eq!(
        at_c.body["total"], 0,
        "node C must not see another district's record: {}",
        at_c.body
    );
    assert_eq!(c_status["enrolled"], true);

    // The client created at central authenticates at the node (its secret hash synced down).
    let central_client = central.health_client().clone();
    let token = a.token_for(&central_client).await.unwrap();
    assert!(!token.is_empty());

    // Ops at central list every node with its acknowledged position.
    let status = central.sync_status().await.unwrap();
    let text = status.to_string();
    for node in [&a, &b, &c] {
        assert!(
            text.contains(node.node_id()),
            "central status lacks node {}: {text}",
            node.node_id()
        );
    }
    let metrics = a.anonymous().get("/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics.text.contains("backlog"), "{}", metrics.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_confirms_it_is_in_sync() {
    let central = CentralProcess::start().unwrap();
    let a = start_enrolled_node(&central, HOSPITAL_ID, central.quic()).unwrap();
    let status = wait_synced(&a, SYNC_TIMEOUT).await.unwrap();
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["unacknowledgedEntries"], 0);
    assert!(status["lastSuccess"].is_string(), "{status}");
}
