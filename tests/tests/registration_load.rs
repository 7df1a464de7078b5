//! Registration numbers under load and crashes: 1,000 declared births (made offline at a clinic
//! node by its clerk, then synced) are registered at central by 64 concurrent clients; one
//! request in ten is sent again with its transaction id, and central is killed (SIGKILL) and
//! restarted twice mid-run, clients retrying what failed. Afterwards every record holds exactly
//! one Accepted REGISTER with a number, and no number is held by two records.
//!
//! `CRVS_LOAD_REGISTRATIONS` changes the number of registrations (default 1,000; 64,000 is 64
//! clients × 1,000 each, with `CRVS_CENTRAL_BIN` / `CRVS_NODE_BIN` pointing at release builds).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crvs_tests::central::{CentralProcess, TestRng, eventually, wait_synced};
use crvs_tests::users::{add_user, login, login_at_central, node_with_config, wait_for_user};
use crvs_tests::{Api, HOSPITAL_ID, OFFICE_ID, new_transaction_id, sample_birth_declaration};
use serde_json::{Value, json};

const CLIENTS: usize = 64;
/// Tracking ids central leases the node per grant.
const POOL_LEASE: usize = 10_000;
const PREPARE_CONCURRENCY: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between two tries of a request that met a stopped central.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

fn registrations() -> usize {
    std::env::var("CRVS_LOAD_REGISTRATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// A random 8-letter name, so that no two generated births are potential duplicates.
fn name(rng: &mut TestRng) -> String {
    let mut out = String::new();
    for i in 0..8 {
        let letter = b'a' + u8::try_from(rng.below(26)).unwrap();
        out.push(if i == 0 {
            letter.to_ascii_uppercase() as char
        } else {
            letter as char
        });
    }
    out
}

fn date(rng: &mut TestRng, first_year: u64, years: u64) -> String {
    format!(
        "{}-{:02}-{:02}",
        first_year + rng.below(years),
        1 + rng.below(12),
        1 + rng.below(28)
    )
}

/// POSTs until central answers (it may be restarting): the answer.
async fn post_retrying(api: &Api, path: &str, body: &Value) -> crvs_tests::Reply {
    let started = Instant::now();
    loop {
        match api.post(path, body).await {
            Ok(reply) if reply.status < 500 => return reply,
            Ok(reply) => assert!(started.elapsed() < TIMEOUT, "{path}: {}", reply.body),
            Err(e) => assert!(started.elapsed() < TIMEOUT, "{path}: {e}"),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Registers `event_id` (assign, then register): the register request's transaction id and
/// whether it was sent twice.
async fn register(api: &Api, event_id: &str, resend: bool) {
    let assign = json!({"transactionId": new_transaction_id()});
    let path = format!("/api/events/events/{event_id}/assign");
    let reply = post_retrying(api, &path, &assign).await;
    assert_eq!(reply.status, 200, "assign {event_id}: {}", reply.body);
    let body = json!({"transactionId": new_transaction_id()});
    let path = format!("/api/events/events/{event_id}/register");
    let reply = post_retrying(api, &path, &body).await;
    assert_eq!(reply.status, 200, "register {event_id}: {}", reply.body);
    if resend {
        let again = post_retrying(api, &path, &body).await;
        assert_eq!(
            again.status, 200,
            "register again {event_id}: {}",
            again.body
        );
        assert_eq!(number_of(&again.body), number_of(&reply.body));
    }
}

/// The numbers of a record's Accepted REGISTER actions.
fn number_of(doc: &Value) -> Vec<String> {
    doc["actions"]
        .as_array()
        .map(|actions| {
            actions
                .iter()
                .filter(|a| a["type"] == "REGISTER" && a["status"] == "Accepted")
                .filter_map(|a| a["registrationNumber"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_with_retries_and_crashes_get_unique_numbers() {
    let total = registrations();
    let mut rng = TestRng::from_env(5);
    let config = format!(
        "two_factor = false\npool_lease_size = {POOL_LEASE}\npool_low_water = {}\n",
        POOL_LEASE / 2
    );
    let mut central = CentralProcess::start_with_config(Some(&config)).unwrap();
    let clerk = add_user(&central, "Kalusha", "Bwalya", "HOSPITAL_CLERK", HOSPITAL_ID);
    let registrar = add_user(&central, "Joshua", "Mutale", "LOCAL_REGISTRAR", OFFICE_ID);
    let node = node_with_config(&central, HOSPITAL_ID, "two_factor = false\n");
    wait_for_user(&node, clerk["username"].as_str().unwrap(), "active").await;
    let lease = u64::try_from(total.min(POOL_LEASE)).unwrap();
    eventually("a tracking-id lease", TIMEOUT, || async {
        Ok((node.status()?.pool_free >= lease).then_some(()))
    })
    .await
    .unwrap();

    // The clinic's clerk creates and declares every birth at the node.
    let clerk_token = login(
        &node,
        clerk["username"].as_str().unwrap(),
        clerk["password"].as_str().unwrap(),
        "000000",
    )
    .await;
    let clerk_api = node.api(&clerk_token);
    let declarations: Vec<Value> = (0..total)
        .map(|_| {
            let mut d = sample_birth_declaration();
            d["child.name"] = json!({"firstname": name(&mut rng), "surname": name(&mut rng)});
            d["child.dob"] = json!(date(&mut rng, 1990, 35));
            d["mother.name"] = json!({"firstname": name(&mut rng), "surname": name(&mut rng)});
            d["mother.dob"] = json!(date(&mut rng, 1950, 40));
            d
        })
        .collect();
    let started = Instant::now();
    let queue = Arc::new(std::sync::Mutex::new(declarations));
    let mut makers = Vec::new();
    for _ in 0..PREPARE_CONCURRENCY {
        let (queue, api) = (Arc::clone(&queue), clerk_api.clone());
        makers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let Some(declaration) = queue.lock().unwrap().pop() else {
                    return ids;
                };
                // A 503 (the node's tracking-id pool ran dry before its next lease) is retried.
                let create = json!({"type": "birth", "transactionId": new_transaction_id()});
                let created = post_retrying(&api, "/api/events/events", &create).await;
                assert_eq!(created.status, 200, "{}", created.body);
                let id = created.body["id"].as_str().unwrap().to_owned();
                let declared = api
                    .post(
                        &format!("/api/events/events/{id}/declare"),
                        &json!({"transactionId": new_transaction_id(), "declaration": declaration}),
                    )
                    .await
                    .unwrap();
                assert_eq!(declared.status, 200, "{}", declared.body);
                ids.push(id);
            }
        }));
    }
    let mut ids = Vec::new();
    for maker in makers {
        ids.extend(maker.await.unwrap());
    }
    wait_synced(&node, TIMEOUT).await.unwrap();
    eprintln!(
        "{total} births declared and synced in {:?}",
        started.elapsed()
    );

    // 64 clients register them at central; 10% resend; central is killed twice.
    let base = format!("http://{}", central.http());
    let registrar_api = login_at_central(&Api::new(base.clone(), None), &registrar).await;
    let token = registrar_api.bearer().unwrap().to_owned();
    let done = Arc::new(AtomicUsize::new(0));
    let shares: Vec<Vec<(String, bool)>> = (0..CLIENTS)
        .map(|c| {
            ids.iter()
                .enumerate()
                .filter(|(i, _)| i % CLIENTS == c)
                .map(|(i, id)| (id.clone(), i % 10 == 0))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut clients = Vec::new();
    for share in shares {
        let api = Api::new(base.clone(), Some(token.clone()));
        let done = Arc::clone(&done);
        clients.push(tokio::spawn(async move {
            for (id, resend) in share {
                register(&api, &id, resend).await;
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for crash in [total / 3, 2 * total / 3] {
        eventually("progress before a crash", TIMEOUT, || {
            let done = Arc::clone(&done);
            async move { Ok((done.load(Ordering::SeqCst) >= crash).then_some(())) }
        })
        .await
        .unwrap();
        central.restart().unwrap();
        eprintln!("central killed and restarted after {crash} registrations");
    }
    for client in clients {
        client.await.unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{total} registrations by {CLIENTS} clients in {elapsed:?} ({:.0}/s, two crashes)",
        total as f64 / elapsed.as_secs_f64()
    );

    // Exactly one number per record, no number twice.
    let reader = Api::new(base, Some(token));
    let mut owners: HashMap<String, String> = HashMap::new();
    for id in &ids {
        let reply = reader
            .get(&format!("/api/events/events/{id}"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let numbers = number_of(&reply.body);
        assert_eq!(numbers.len(), 1, "{id}: {numbers:?}");
        if let Some(other) = owners.insert(numbers[0].clone(), id.clone()) {
            panic!("{} issued to {other} and {id}", numbers[0]);
        }
    }
    let unique: HashSet<_> = owners.keys().collect();
    assert_eq!(unique.len(), total);
}
