//! The driver against a real quinn server on loopback running `CentralSession` over an
//! in-memory store ([`super::test_central`]): the backlog is pushed and acknowledged, a cut
//! resumes from the acknowledged point, downstream records are applied, a wrong CA or server name
//! fails the handshake, and `run` serves `/api/sync/status` and `/metrics` reflecting it all.

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crvs_common::event::{ActionType, Declaration};
use crvs_common::feed::CentralRecord;
use crvs_common::location::LocationSet;
use crvs_common::log::verify_chain;
use serde_json::json;
use tokio::sync::watch;

use super::test_central::{Pki, SERVER_NAME, TestCentral, bundle_json};
use super::*;
use crate::store::test_support::{Writer, action, create_event, decl, key, open, payload};

const NODE: u8 = 11;

/// Polls `check` until it holds (bounded), failing the test with `what` otherwise.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an async `check` until it holds (bounded).
async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Running {
    handle: SyncHandle,
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("driver stops promptly")
            .unwrap();
    }
}

fn start_driver(store: &Store, bundle: &str) -> Running {
    let enrollment = Arc::new(Enrollment::parse(bundle).unwrap());
    let client_config = tls::client_config(&enrollment, &key(NODE)).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let (handle, task) = start(
        store.clone(),
        enrollment,
        client_config,
        DriverOptions::for_tests(),
        shutdown,
    )
    .unwrap();
    Running { handle, task, stop }
}

async fn fill_pool(store: &Store, count: u32) {
    store.write(move |ctx| ctx.fill_pool(count)).await.unwrap();
}

async fn head(store: &Store) -> u64 {
    store.read(|r| Ok(r.log_head()?.seq)).await.unwrap()
}

async fn sync_state(store: &Store) -> crate::store::SyncState {
    store.read(|r| r.sync_state()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_is_pushed_acknowledged_and_new_writes_follow() {
    let central = TestCentral::start();
    let node = key(NODE).node_id();
    let bundle = central.enroll(node);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    fill_pool(&store, 30).await;
    for i in 0..10 {
        create_event(
            &store,
            &format!("b{i}"),
            decl(json!({"child.dob": "2024-01-01"})),
        )
        .await;
    }
    assert_eq!(head(&store).await, 20);
    let running = start_driver(&store, &bundle);
    eventually("the backlog to be acknowledged", || {
        central.state.lock().unwrap().acked(node) == 20
    })
    .await;
    eventually_async("the node to record the ack", || async {
        sync_state(&store).await.acked.seq == 20
    })
    .await;
    // A write after the backlog is sent at once (the writer pokes the driver).
    create_event(&store, "later", decl(json!({}))).await;
    eventually("the new entries to be acknowledged", || {
        central.state.lock().unwrap().acked(node) == 22
    })
    .await;
    let applied = central.state.lock().unwrap().applied(node);
    assert_eq!(verify_chain(node, &applied).unwrap().seq, 22);
    let entries = store.read(|r| r.log_entries(0, 100)).await.unwrap();
    assert_eq!(applied, entries, "central holds exactly the node's log");
    let link = running.handle.link();
    assert!(link.connected);
    assert!(link.rtt_ms.is_some());
    assert_eq!(link.connects_total, 1);
    assert!(sync_state(&store).await.last_success_ms.is_some());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_from_the_acknowledged_point() {
    let central = TestCentral::start();
    let node = key(NODE).node_id();
    let bundle = central.enroll(node);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    fill_pool(&store, 40).await;
    for i in 0..30 {
        create_event(
            &store,
            &format!("c{i}"),
            decl(json!({"child.dob": "2024-01-01"})),
        )
        .await;
    }
    // Slow central down so the cut lands mid-backlog.
    *central.apply_delay.lock().unwrap() = Duration::from_millis(40);
    let running = start_driver(&store, &bundle);
    eventually("part of the backlog to be acknowledged", || {
        central.state.lock().unwrap().acked(node) >= 8
    })
    .await;
    central.cut();
    *central.apply_delay.lock().unwrap() = Duration::ZERO;
    eventually("everything to be acknowledged after the cut", || {
        central.state.lock().unwrap().acked(node) == 60
    })
    .await;
    assert!(central.connections() >= 2, "the driver reconnected");
    {
        let state = central.state.lock().unwrap();
        // Each connection resent from exactly the entry after what central had acknowledged.
        for (idx, connection) in state.connections.iter().enumerate() {
            if let (Some(acked), Some(first_seq)) = *connection {
                assert_eq!(
                    first_seq,
                    acked + 1,
                    "connection {idx} resumed at the acked point"
                );
            }
        }
        assert!(
            state.connections[1..]
                .iter()
                .any(|c| c.0.is_some_and(|a| a >= 8)),
            "a later connection started from the acknowledged part: {:?}",
            state.connections
        );
        // Re-sent data is bounded by the window in flight at the cut.
        let resent = state.entries_received - 60;
        assert!(resent <= 32, "{resent} entries re-sent");
        assert_eq!(verify_chain(node, &state.applied(node)).unwrap().seq, 60);
    }
    eventually_async("the node to record the final ack", || async {
        sync_state(&store).await.acked.seq == 60
    })
    .await;
    running.stop().await;
}

/// Central's feed for the downstream test: a pool grant (at Hello), a client, the demo
/// locations, a relayed write from another node, and central's own registration of that record.
fn publish_downstream(central: &TestCentral, secret_hash: &str) -> uuid::Uuid {
    let mut state = central.state.lock().unwrap();
    let event_id = uuid::Uuid::new_v4();
    let mut other = Writer::new(21);
    let create = action(ActionType::Create, "1", Declaration::new(), "other");
    let notify = action(
        ActionType::Notify,
        "1",
        decl(json!({"child.name": {"firstname": "Ada"}})),
        "other",
    );
    let e1 = other.write(
        &payload(event_id, "REL001", vec![create, notify]),
        &decl(json!({"child.name": {"firstname": "Ada"}})),
        1_700_000_000_000,
    );
    let mut crdt = crvs_sync::merge::EventCrdt::new(crvs_sync::merge::actor_for(
        state.central_id().as_bytes(),
    ));
    crdt.apply_change(e1.crdt_change.as_ref().unwrap()).unwrap();
    let mut register = action(ActionType::Register, "c-1", Declaration::new(), "central");
    register.registration_number = Some("2024REL0001".into());
    let register_payload = payload(event_id, "REL001", vec![register]);
    let change = crdt
        .record(
            &register_payload.actions,
            &Declaration::new(),
            1_700_000_001_000,
        )
        .unwrap();
    state.publish(
        None,
        &CentralRecord::Client {
            id: "synced-client".into(),
            name: "Clinic system".into(),
            secret_hash: secret_hash.to_owned(),
            scopes: vec![
                "type=record.create&event=birth,death".into(),
                "type=record.notify&event=birth,death".into(),
                "type=record.read&event=birth,death".into(),
            ],
            status: "active".into(),
            created_at: "2024-01-01T00:00:00.000Z".into(),
        },
        uuid::Uuid::nil(),
        None,
    );
    state.publish(
        None,
        &CentralRecord::Locations(LocationSet::from_json(crate::DEMO_LOCATIONS_JSON).unwrap()),
        uuid::Uuid::nil(),
        None,
    );
    state.publish(
        None,
        &CentralRecord::Relay {
            origin: e1.node_id.to_string(),
            entry: hex::encode(e1.encode()),
        },
        event_id,
        None,
    );
    state.publish(
        None,
        &CentralRecord::Actions(register_payload),
        event_id,
        Some(change),
    );
    state.pool_grant = 25;
    state.pool_low_water = 10;
    event_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_records_are_applied() {
    let central = TestCentral::start();
    let node = key(NODE).node_id();
    let bundle = central.enroll(node);
    let secret_hash = crate::auth::hash_secret("s3cret").unwrap();
    let event_id = publish_downstream(&central, &secret_hash);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    let running = start_driver(&store, &bundle);
    let feed_len = || central.state.lock().unwrap().feed.len() as u64;
    eventually_async("the feed to be applied", || async {
        let state = sync_state(&store).await;
        state.down_cursor > 0 && state.down_cursor == feed_len()
    })
    .await;
    let feed_len = feed_len();
    let down_ack = central.state.lock().unwrap().down_acks.get(&node).copied();
    assert_eq!(down_ack, Some(feed_len));
    let pool = store.read(|r| r.pool_free()).await.unwrap();
    assert_eq!(pool, 25, "the lease arrived");
    let client = store
        .read(|r| r.client("synced-client"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.secret_hash, secret_hash);
    assert!(crate::auth::verify_secret(&client.secret_hash, "s3cret"));
    let doc = store
        .read(move |r| r.event_document(event_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.actions.len(), 3);
    let index = store
        .read(|r| r.index_entries(Some("REL001")))
        .await
        .unwrap();
    assert_eq!(index[0].registration_number.as_deref(), Some("2024REL0001"));
    // Later feed entries stream down on the open session.
    central.state.lock().unwrap().publish(
        None,
        &CentralRecord::NodeRevoked {
            node_id: key(22).node_id().to_string(),
        },
        uuid::Uuid::nil(),
        None,
    );
    central.feed_grew();
    eventually_async("the new feed entry to be applied", || async {
        store.read(|r| r.revoked_nodes()).await.unwrap().len() == 1
    })
    .await;
    assert_eq!(
        head(&store).await,
        0,
        "applying the feed writes nothing to our log"
    );
    running.stop().await;
}

async fn handshake_fails(bundle: String, expected: &str) {
    let central = TestCentral::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    // Register the node at central so only TLS can refuse it.
    central.enroll(key(NODE).node_id());
    let running = start_driver(&store, &bundle.replace("{addr}", &central.addr.to_string()));
    eventually_async("the handshake error to be recorded", || async {
        sync_state(&store).await.last_error.is_some()
    })
    .await;
    let error = sync_state(&store).await.last_error.unwrap();
    assert!(error.contains(expected), "{error}");
    assert!(central.state.lock().unwrap().hellos.is_empty());
    assert!(!running.handle.link().connected);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_certificate_from_another_ca_is_refused() {
    let node = key(NODE).node_id();
    let elsewhere = Pki::new("another CA");
    let (pem, _) = elsewhere.node_cert(node);
    let bundle = bundle_json(
        node,
        key(0xce).node_id(),
        "127.0.0.1:1".parse::<SocketAddr>().unwrap(),
        SERVER_NAME,
        &elsewhere.ca_pem,
        &pem,
    )
    .replace("127.0.0.1:1", "{addr}");
    handshake_fails(bundle, "UnknownIssuer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_central_certificate_for_another_name_is_refused() {
    let central = TestCentral::start();
    let node = key(NODE).node_id();
    let (pem, _) = central.pki.node_cert(node);
    let bundle = bundle_json(
        node,
        central.central_id(),
        central.addr,
        "elsewhere.crvs-edge",
        &central.pki.ca_pem,
        &pem,
    );
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    central.enroll(node);
    let running = start_driver(&store, &bundle);
    eventually_async("the handshake error to be recorded", || async {
        sync_state(&store).await.last_error.is_some()
    })
    .await;
    let error = sync_state(&store).await.last_error.unwrap();
    assert!(error.contains("not valid for name"), "{error}");
    assert!(central.state.lock().unwrap().hellos.is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_central_does_not_accept_is_a_refusal() {
    let central = TestCentral::start();
    let node = key(NODE).node_id();
    central.enroll(node);
    // The node trusts central, but its own certificate comes from another CA.
    let (pem, _) = Pki::new("another CA").node_cert(node);
    let bundle = bundle_json(
        node,
        central.central_id(),
        central.addr,
        SERVER_NAME,
        &central.pki.ca_pem,
        &pem,
    );
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    let running = start_driver(&store, &bundle);
    eventually("the refusal to show", || running.handle.link().refused).await;
    let error = sync_state(&store).await.last_error.unwrap();
    assert!(error.contains("refused this node's certificate"), "{error}");
    assert!(central.state.lock().unwrap().hellos.is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_backs_off_and_reports_it() {
    let central = TestCentral::start();
    let node = key(NODE).node_id();
    let bundle = central.enroll(node);
    central
        .state
        .lock()
        .unwrap()
        .nodes
        .get_mut(&node)
        .unwrap()
        .revoked = true;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), NODE, false);
    let running = start_driver(&store, &bundle);
    eventually("the refusal to show", || running.handle.link().refused).await;
    let error = sync_state(&store).await.last_error.unwrap();
    assert!(error.contains("revoked"), "{error}");
    // The long wait applies: no second attempt within the test preset's short backoff.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(central.connections(), 1);
    running.stop().await;
}

// ---- `run`: status, metrics and a synced client's token over HTTP ----

/// One HTTP/1.1 request over a plain socket (the node's own dependencies have no HTTP client).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default(),
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .await
    .unwrap()
}

async fn status(addr: SocketAddr) -> serde_json::Value {
    let (code, body) = http(addr, "GET", "/api/sync/status", None, "").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_syncs_and_reports_status_and_metrics() {
    let central = TestCentral::start();
    let dir = tempfile::tempdir().unwrap();
    let file = crate::config::ConfigFile {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    crate::init(&file.clone().validate().unwrap(), None)
        .await
        .unwrap();
    let node = crate::keys::load_key_file(&dir.path().join("node.key"))
        .unwrap()
        .node_id();
    let bundle = central.enroll(node);
    crate::enroll::enroll(&file.clone().validate().unwrap(), &bundle)
        .await
        .unwrap();
    let secret_hash = crate::auth::hash_secret("s3cret").unwrap();
    publish_downstream(&central, &secret_hash);
    let config = file.validate().unwrap();
    assert!(config.enrollment.is_some());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::run_with(
        config,
        listener,
        async move {
            let _ = stopped.await;
        },
        Some(DriverOptions::for_tests()),
    ));
    eventually_async("the lease and the client to arrive", || async {
        let s = status(addr).await;
        s["poolFree"] == 25 && s["connected"] == true
    })
    .await;
    let s = status(addr).await;
    assert_eq!(s["enrolled"], true);
    assert_eq!(s["nodeId"], node.to_string());
    assert_eq!(s["centralQuicAddr"], central.addr.to_string());
    assert_eq!(s["unacknowledgedEntries"], 0);
    assert!(s["lastSuccess"].is_string(), "{s}");
    assert!(s["rttMs"].is_u64(), "{s}");
    assert_eq!(s["downCursor"], central.state.lock().unwrap().feed.len());

    // The client created at central gets a token here.
    let (code, body) = http(
        addr,
        "POST",
        "/auth/token?grant_type=client_credentials&client_id=synced-client&client_secret=s3cret",
        None,
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let token: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();

    // With central sitting on entries, the backlog shows.
    central
        .hold_entries
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let location = LocationSet::from_json(crate::DEMO_LOCATIONS_JSON)
        .unwrap()
        .locations[0]
        .id;
    let create = json!({"type": "birth", "transactionId": "run-1", "createdAtLocation": location});
    let (code, body) = http(
        addr,
        "POST",
        "/api/events/events",
        Some(&token),
        &create.to_string(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let s = status(addr).await;
    assert_eq!(s["logSeq"], 1);
    assert_eq!(s["unacknowledgedEntries"], 1);
    assert!(s["bytesPending"].as_u64().unwrap() > 0);
    assert!(s["oldestUnacknowledgedAgeMs"].is_u64(), "{s}");
    assert_eq!(s["poolFree"], 24);
    let (code, metrics) = http(addr, "GET", "/metrics", None, "").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("crvs_node_sync_backlog_entries 1"),
        "{metrics}"
    );
    assert!(metrics.contains("crvs_node_sync_connected 1"), "{metrics}");
    assert!(
        metrics.contains("crvs_node_tracking_pool_free 24"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/api/events/events",method="POST",status="200""#),
        "{metrics}"
    );

    central.release_entries();
    eventually_async("the backlog to be acknowledged", || async {
        let s = status(addr).await;
        s["unacknowledgedEntries"] == 0 && s["ackedSeq"] == 1
    })
    .await;
    let s = status(addr).await;
    assert!(s["oldestUnacknowledgedAgeMs"].is_null(), "{s}");
    assert_eq!(central.state.lock().unwrap().acked(node), 1);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the node stops")
        .unwrap()
        .unwrap();
}
