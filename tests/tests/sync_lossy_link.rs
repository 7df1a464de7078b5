//! A thousand notifications at a clinic reach central exactly once over a bad link: 5% loss,
//! 150 ms delay each way and two 10 s blackouts, emulated by the user-space UDP proxy between the
//! node's QUIC client and central.

use std::sync::Arc;
use std::time::Duration;

use crvs_tests::central::{
    CentralProcess, TestRng, central_event_count, eventually, node_sync_status,
    start_enrolled_node, wait_synced,
};
use crvs_tests::proxy::{LinkFaults, LossyProxy, ProxyConfig};
use crvs_tests::{HOSPITAL_ID, sample_birth_declaration};

const NOTIFICATIONS: usize = 1000;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_notifications_cross_a_lossy_link_exactly_once() {
    let mut rng = TestRng::from_env(20261126);
    let central = CentralProcess::start().unwrap();
    let link = LinkFaults {
        drop: 0.05,
        delay: Duration::from_millis(150),
        ..LinkFaults::clean()
    };
    let proxy = Arc::new(
        LossyProxy::start(
            central.quic(),
            ProxyConfig {
                up: link.clone(),
                down: link,
                seed: rng.next_u64(),
            },
        )
        .await
        .unwrap(),
    );
    let node = start_enrolled_node(&central, HOSPITAL_ID, proxy.addr()).unwrap();

    // Wait for the first tracking-id lease (it crosses the lossy link too).
    eventually("a tracking-id lease", Duration::from_secs(120), || async {
        let s = node_sync_status(&node).await?;
        Ok((s["poolFree"].as_u64().unwrap_or(0) > 0).then_some(()))
    })
    .await
    .unwrap();

    // Blackouts of 10 s while the backlog drains.
    let blackout = {
        let proxy = Arc::clone(&proxy);
        let first = Duration::from_millis(500 + rng.below(1500));
        tokio::spawn(async move {
            for pause in [first, Duration::from_secs(3)] {
                tokio::time::sleep(pause).await;
                proxy.set_blackout(true);
                tokio::time::sleep(Duration::from_secs(10)).await;
                proxy.set_blackout(false);
            }
        })
    };

    // A thousand notifications (single-call notify), from several concurrent clients.
    let api = Arc::new(node.health_api().await.unwrap());
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let api = Arc::clone(&api);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (c..NOTIFICATIONS).step_by(CLIENTS) {
                let tx = format!("lossy-{i}");
                let reply = api
                    .create_and_notify("birth", &tx, HOSPITAL_ID, &sample_birth_declaration())
                    .await
                    .unwrap();
                assert_eq!(reply.status, 200, "{}", reply.body);
                ids.push(reply.body["id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    let mut event_ids = Vec::new();
    for t in tasks {
        event_ids.extend(t.await.unwrap());
    }
    assert_eq!(event_ids.len(), NOTIFICATIONS);
    blackout.await.unwrap();

    let status = wait_synced(&node, Duration::from_secs(300)).await.unwrap();
    eprintln!("node status after sync: {status}");
    let (up, down) = proxy.stats();
    eprintln!("proxy up {up:?} down {down:?}");
    assert!(
        up.dropped > 0 && down.dropped > 0,
        "the link must actually have lost packets"
    );

    // Exactly once at central: a thousand events, each with its three actions.
    let central_api = central.health_api().await.unwrap();
    assert_eq!(
        central_event_count(&central_api, "birth").await.unwrap(),
        NOTIFICATIONS as u64
    );
    for id in event_ids.iter().step_by(97) {
        let doc = central_api.read(id).await.unwrap();
        assert_eq!(doc.status, 200, "{}", doc.body);
        let types: Vec<&str> = doc.body["actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types.iter().filter(|t| **t == "CREATE").count(),
            1,
            "{types:?}"
        );
        assert_eq!(
            types.iter().filter(|t| **t == "NOTIFY").count(),
            2,
            "{types:?}"
        );
    }
    // Central acknowledged the node's whole log and recorded no reject.
    let central_status = central.sync_status().await.unwrap().to_string();
    assert!(central_status.contains(node.node_id()), "{central_status}");
    assert_eq!(status["rejectedEntries"], 0, "{status}");
}
