//! SIGKILL of the node and of central at random moments while they sync, 50 rounds: no
//! acknowledged action is lost and both sides converge once everything runs again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crvs_tests::central::{
    CentralProcess, TestRng, central_event_count, eventually, node_sync_status,
    start_enrolled_node, wait_synced,
};
use crvs_tests::{HOSPITAL_ID, sample_birth_declaration};

const ROUNDS: usize = 50;
const CLIENTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_actions_survive_kills_of_node_and_central_during_sync() {
    let mut rng = TestRng::from_env(0x005E_ED0F_5107);
    let mut central = CentralProcess::start().unwrap();
    let mut node = start_enrolled_node(&central, HOSPITAL_ID, central.quic()).unwrap();
    eventually("a tracking-id lease", Duration::from_secs(60), || async {
        let s = node_sync_status(&node).await?;
        Ok((s["poolFree"].as_u64().unwrap_or(0) > 0).then_some(()))
    })
    .await
    .unwrap();

    // transaction id → event id, for every notification the node acknowledged.
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    let mut node_kills = 0;
    let mut central_kills = 0;
    for round in 0..ROUNDS {
        let api = Arc::new(node.health_api().await.unwrap());
        let per_client = 2 + rng.below(4) as usize;
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let api = Arc::clone(&api);
            tasks.push(tokio::spawn(async move {
                let mut done = Vec::new();
                for i in 0..per_client {
                    let tx = format!("kill-{round}-{c}-{i}");
                    match api
                        .create_and_notify("birth", &tx, HOSPITAL_ID, &sample_birth_declaration())
                        .await
                    {
                        Ok(reply) if reply.status == 200 => {
                            done.push((
                                tx,
                                reply.body["id"].as_str().unwrap_or_default().to_owned(),
                            ));
                        }
                        // Refused because the node is dying, or the pool ran dry mid-round: not acknowledged.
                        _ => {}
                    }
                }
                done
            }));
        }
        // Kill one side at a random moment while the notifications are being written and synced.
        tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
        let kill_node = rng.below(2) == 0;
        if kill_node {
            node.kill9().unwrap();
            node_kills += 1;
        } else {
            central.kill9().unwrap();
            central_kills += 1;
        }
        for t in tasks {
            acknowledged.extend(t.await.unwrap());
        }
        if kill_node {
            node.restart().unwrap();
        } else {
            central.restart().unwrap();
        }
    }
    eprintln!(
        "{ROUNDS} rounds: {node_kills} node kills, {central_kills} central kills, {} acknowledged",
        acknowledged.len()
    );
    assert!(node_kills > 0 && central_kills > 0);
    assert!(!acknowledged.is_empty());

    // Converge: the node's whole log acknowledged by central.
    let status = wait_synced(&node, Duration::from_secs(180)).await.unwrap();
    assert_eq!(status["rejectedEntries"], 0, "{status}");
    // Every acknowledged notification is at central, complete.
    let central_api = central.health_api().await.unwrap();
    let node_api = node.health_api().await.unwrap();
    for (tx, event_id) in &acknowledged {
        let doc = central_api.read(event_id).await.unwrap();
        assert_eq!(
            doc.status, 200,
            "acknowledged {tx} ({event_id}) missing at central: {}",
            doc.body
        );
        let notifies = doc.body["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "NOTIFY")
            .count();
        assert_eq!(notifies, 2, "{tx}: {}", doc.body);
        // And still at the node after its restarts.
        let replay = node_api
            .create_and_notify("birth", tx, HOSPITAL_ID, &sample_birth_declaration())
            .await
            .unwrap();
        assert_eq!(replay.status, 200, "{}", replay.body);
        assert_eq!(replay.body["id"], event_id.as_str());
    }
    // Same number of events on both sides (nothing duplicated, nothing half-applied).
    let at_node = node.status().unwrap();
    let at_central = central_event_count(&central_api, "birth").await.unwrap();
    assert_eq!(
        at_central, at_node.events,
        "node has {} events, central {at_central}",
        at_node.events
    );
    assert!(node.verify_log().is_ok());
}
