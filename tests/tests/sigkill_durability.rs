//! Durability under SIGKILL: concurrent health clients send create + notify (and the single-call
//! notify) with unique transaction ids while the node is killed with SIGKILL at a random moment,
//! round after round, on the same data directory.
//!
//! After each restart: every acknowledged request is there (its replay returns the same event),
//! nothing is half-written (an event has either just its CREATE, or CREATE plus the NOTIFY
//! Requested/Accepted pair; never anything else), every unacknowledged request replays cleanly
//! (it was either complete already or is applied now), the counters (events, actions, log
//! entries) agree with what the clients know exists, and `log verify` passes.
//!
//! The kill moment is "after N acknowledgements", N drawn from a seeded xorshift; the seed is
//! printed and `CRVS_TEST_SEED` replays a run (request interleaving still varies).

use std::collections::BTreeMap;
use std::time::Duration;

use crvs_common::event::format_timestamp_ms;
use crvs_tests::{
    Api, HOSPITAL_ID, NodeProcess, OFFICE_ID, Reply, action_kinds, actions, create_and_notify_body,
    create_body, notify_body,
};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Kill/restart rounds.
const ROUNDS: u32 = 30;
/// Concurrent clients per round.
const WORKERS: u64 = 8;
/// The kill comes after 0 to this many acknowledged requests in a round.
const KILL_AFTER_ACKS_MAX: u64 = 120;
/// Extra delay after the N-th acknowledgement before the kill, microseconds.
const KILL_JITTER_US_MAX: u64 = 15_000;
/// Bound on the operations one client starts in a round (the kill normally ends it far sooner).
const OPS_PER_WORKER_MAX: u32 = 200;
/// Seed used when `CRVS_TEST_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5eed_c0de_2026_0001;
/// Failures listed in the panic message (all are counted).
const FAILURES_SHOWN_MAX: usize = 40;

/// xorshift64* (Vigna): tiny, seedable, good enough to pick kill points and names.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // The all-zero state is a fixed point of xorshift.
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn seed() -> u64 {
    match std::env::var("CRVS_TEST_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("CRVS_TEST_SEED={text:?}: {e}"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// The test's wall clock in ms since the epoch (same machine as the node, so its timestamps
/// compare with the node's `createdAt`).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Which request a client sent.
#[derive(Debug, Clone)]
enum Step {
    /// `POST /events`; its notify follows if it is acknowledged.
    Create,
    /// `POST /events/{id}/notify` on an acknowledged create.
    Notify,
    /// `POST /events/notify`.
    Single,
}

/// One request as sent (kept so it can be replayed byte for byte).
#[derive(Debug, Clone)]
struct Request {
    step: Step,
    path: String,
    body: Value,
    /// The transaction id of the event's CREATE action.
    create_tx: String,
}

/// What the client learnt.
#[derive(Debug)]
enum Outcome {
    /// 200 with this EventDocument.
    Acked(Value),
    /// No answer (the node died): the request may or may not have been applied.
    Lost(String),
    /// An answer other than 200 while the node was up: always a failure.
    Refused(u16, String),
}

#[derive(Debug)]
struct Sent {
    round: u32,
    request: Request,
    outcome: Outcome,
}

fn declaration(rng: &mut XorShift) -> Value {
    json!({
        "child.name": {
            "firstname": rng.pick(&["Liam", "Ama", "Chanda", "Mutinta", "Bwalya"]),
            "surname": rng.pick(&["Banda", "Phiri", "Mwale", "Tembo"])
        },
        "child.gender": rng.pick(&["male", "female"]),
        "child.dob": format!("2026-0{}-1{}", 1 + rng.below(9), rng.below(10)),
        "child.placeOfBirth": "HEALTH_FACILITY",
        "child.birthLocation": HOSPITAL_ID,
        "informant.relation": "MOTHER",
        "mother.name": {"firstname": "Grace", "surname": rng.pick(&["Banda", "Phiri"])}
    })
}

async fn send(api: &Api, request: &Request) -> Outcome {
    match api.post(&request.path, &request.body).await {
        Ok(Reply {
            status: 200, body, ..
        }) => Outcome::Acked(body),
        Ok(reply) => Outcome::Refused(reply.status, reply.text),
        Err(e) => Outcome::Lost(e.to_string()),
    }
}

/// One client: create + notify or the single call, until the node stops answering.
async fn client(
    api: Api,
    round: u32,
    worker: u64,
    seed: u64,
    acks: watch::Sender<u64>,
) -> Vec<Sent> {
    let mut rng = XorShift::new(seed);
    let mut sent = Vec::new();
    let location = |rng: &mut XorShift| {
        if rng.below(2) == 0 {
            OFFICE_ID
        } else {
            HOSPITAL_ID
        }
    };
    'ops: for i in 0..OPS_PER_WORKER_MAX {
        let base = format!("r{round}-w{worker}-{i}");
        let at = location(&mut rng);
        let mut requests = if rng.below(2) == 0 {
            let tx = format!("{base}-s");
            vec![Request {
                step: Step::Single,
                path: "/api/events/events/notify".to_owned(),
                body: create_and_notify_body("birth", &tx, at, &declaration(&mut rng)),
                create_tx: format!("{tx}:create"),
            }]
        } else {
            let tx = format!("{base}-c");
            vec![Request {
                step: Step::Create,
                path: "/api/events/events".to_owned(),
                body: create_body("birth", &tx, at),
                create_tx: tx,
            }]
        };
        while let Some(request) = requests.pop() {
            let outcome = send(&api, &request).await;
            let acked = matches!(outcome, Outcome::Acked(_));
            if let (Step::Create, Outcome::Acked(doc)) = (&request.step, &outcome) {
                let event_id = doc["id"].as_str().unwrap_or_default();
                requests.push(Request {
                    step: Step::Notify,
                    path: format!("/api/events/events/{event_id}/notify"),
                    body: notify_body(&format!("{base}-n"), at, &declaration(&mut rng)),
                    create_tx: request.create_tx.clone(),
                });
            }
            sent.push(Sent {
                round,
                request,
                outcome,
            });
            if !acked {
                break 'ops;
            }
            acks.send_modify(|n| *n += 1);
        }
    }
    sent
}

/// What the clients know exists: event id → (tracking id, notified, made by the single call).
type Ledger = BTreeMap<String, (String, bool, bool)>;

/// Checks that an EventDocument is whole: CREATE (with `create_tx`), optionally followed by
/// exactly one NOTIFY Requested and its Accepted copy. Returns whether it is notified.
fn check_whole(doc: &Value, create_tx: &str) -> Result<bool, String> {
    let kinds = action_kinds(doc);
    let list = actions(doc);
    let first_ok = kinds
        .first()
        .is_some_and(|(t, s)| t == "CREATE" && s == "Accepted")
        && list[0]["transactionId"] == create_tx;
    if !first_ok {
        return Err(format!(
            "does not start with its CREATE ({create_tx}): {doc}"
        ));
    }
    match kinds.len() {
        1 => Ok(false),
        3 => {
            let pair_ok = kinds[1] == ("NOTIFY".to_owned(), "Requested".to_owned())
                && kinds[2] == ("NOTIFY".to_owned(), "Accepted".to_owned())
                && list[2]["originalActionId"] == list[1]["id"]
                && list[2]["transactionId"] == list[1]["transactionId"];
            if pair_ok {
                Ok(true)
            } else {
                Err(format!("half-written NOTIFY: {kinds:?} in {doc}"))
            }
        }
        _ => Err(format!("unexpected actions {kinds:?} in {doc}")),
    }
}

/// What a replay found.
#[derive(Debug)]
struct Resolved {
    event_id: String,
    /// The request's action was written before the kill (its `createdAt` is older than the
    /// kill), though its answer may never have reached the client.
    written_before_kill: bool,
}

/// Replays one request after the restart and checks what it finds. `killed_at` is the ISO time
/// just after the kill.
async fn resolve(
    api: &Api,
    sent: &Sent,
    ledger: &mut Ledger,
    killed_at: &str,
) -> Result<Resolved, String> {
    let request = &sent.request;
    let label = format!(
        "round {} {:?} {}",
        sent.round, request.step, request.body["transactionId"]
    );
    let before = match &sent.outcome {
        Outcome::Acked(_) => "acknowledged".to_owned(),
        Outcome::Lost(error) => format!("unanswered ({error})"),
        Outcome::Refused(status, text) => {
            return Err(format!(
                "{label}: refused while the node was up: {status} {text}"
            ));
        }
    };
    let replay = api
        .post(&request.path, &request.body)
        .await
        .map_err(|e| format!("{label}: replay failed: {e}"))?;
    if replay.status != 200 {
        return Err(format!(
            "{label} ({before} before the kill): replay after restart answered {} {}",
            replay.status, replay.text
        ));
    }
    let doc = &replay.body;
    let notified =
        check_whole(doc, &request.create_tx).map_err(|e| format!("{label} ({before}): {e}"))?;
    if let Outcome::Acked(acked) = &sent.outcome {
        let same_event = doc["id"] == acked["id"]
            && doc["trackingId"] == acked["trackingId"]
            && doc["createdAt"] == acked["createdAt"]
            && actions(doc).first() == actions(acked).first();
        if !same_event {
            return Err(format!(
                "{label}: acknowledged event changed or vanished: acked {acked}, now {doc}"
            ));
        }
        // Nothing writes to a notified event afterwards (no reads here): it is unchanged.
        if !matches!(request.step, Step::Create) && doc != acked {
            return Err(format!(
                "{label}: acknowledged notify changed: acked {acked}, now {doc}"
            ));
        }
    }
    if matches!(request.step, Step::Notify | Step::Single) && !notified {
        return Err(format!(
            "{label}: the replayed notify left no NOTIFY: {doc}"
        ));
    }
    let id = doc["id"].as_str().unwrap_or_default().to_owned();
    let tracking_id = doc["trackingId"].as_str().unwrap_or_default().to_owned();
    let entry = ledger.entry(id).or_insert((
        tracking_id.clone(),
        false,
        matches!(request.step, Step::Single),
    ));
    if entry.0 != tracking_id {
        return Err(format!(
            "{label}: tracking id changed from {} to {tracking_id}",
            entry.0
        ));
    }
    entry.1 |= notified;
    let own_action = match request.step {
        Step::Create => &actions(doc)[0],
        Step::Notify | Step::Single => &actions(doc)[1],
    };
    let written_at = own_action["createdAt"].as_str().unwrap_or_default();
    Ok(Resolved {
        event_id: doc["id"].as_str().unwrap_or_default().to_owned(),
        written_before_kill: written_at <= killed_at,
    })
}

/// The log agrees with the actions, and `log verify` passes over all of it.
///
/// The node signs one log entry per write step: a CREATE is one entry, a NOTIFY pair (Requested
/// and Accepted) another. This workload writes nothing else, so with E events of which N are
/// notified there are E + 2N actions and E + N entries: `2 * entries == actions + events`. An
/// action without its entry, or an entry without its actions, breaks the equation.
fn check_log(node: &NodeProcess, when: &str) -> Result<(), String> {
    let stats = node
        .status()
        .map_err(|e| format!("{when}: status: {e:#}"))?;
    // An entry holds one write: a CREATE (1 action), a NOTIFY pair (2) or, for the single
    // call, both (3). So every event has at least one entry, and at most one more per NOTIFY
    // pair; the exact count is checked against the clients' ledger in `check_ledger`.
    let pairs = stats.actions.saturating_sub(stats.events);
    if pairs % 2 != 0 || stats.log_seq < stats.events || stats.log_seq > stats.events + pairs / 2 {
        return Err(format!(
            "{when}: {} events, {} actions, but {} log entries",
            stats.events, stats.actions, stats.log_seq
        ));
    }
    let verified = node
        .verify_log()
        .map_err(|e| format!("{when}: log verify failed: {e:#}"))?;
    if verified.verified != stats.log_seq {
        return Err(format!(
            "{when}: log verify checked {} entries, log head is {}",
            verified.verified, stats.log_seq
        ));
    }
    Ok(())
}

/// The node holds exactly what the clients know exists: no duplicate events, no leftovers.
fn check_ledger(node: &NodeProcess, ledger: &Ledger, when: &str) -> Result<(), String> {
    let stats = node
        .status()
        .map_err(|e| format!("{when}: status: {e:#}"))?;
    let events = ledger.len() as u64;
    let notified = ledger.values().filter(|(_, n, _)| *n).count() as u64;
    // One entry per write: the single call's CREATE and NOTIFY pair share one.
    let entries = ledger
        .values()
        .map(|(_, n, single)| if *single { 1 } else { 1 + u64::from(*n) })
        .sum::<u64>();
    let expected = (events, events + 2 * notified, entries);
    if (stats.events, stats.actions, stats.log_seq) != expected {
        return Err(format!(
            "{when}: node holds {} events / {} actions / {} log entries, clients know of \
             {} / {} / {}",
            stats.events, stats.actions, stats.log_seq, expected.0, expected.1, expected.2
        ));
    }
    Ok(())
}

/// Every notified event is found by its tracking id as NOTIFIED / incomplete.
async fn check_search(api: &Api, ledger: &Ledger, ids: &[String]) -> Result<(), String> {
    for id in ids {
        let Some((tracking_id, true, _)) = ledger.get(id) else {
            continue;
        };
        let found = api
            .search_tracking_id(tracking_id)
            .await
            .map_err(|e| format!("search {tracking_id}: {e}"))?;
        let hit = &found.body["results"][0];
        let ok = found.status == 200
            && found.body["total"] == 1
            && hit["id"] == id.as_str()
            && hit["status"] == "NOTIFIED"
            && hit["flags"] == json!(["incomplete"]);
        if !ok {
            return Err(format!("search {tracking_id} (event {id}): {}", found.text));
        }
    }
    Ok(())
}

/// Pages through every indexed event and compares with the ledger's notified events.
async fn check_listing(api: &Api, ledger: &Ledger) -> Result<(), String> {
    let mut listed = BTreeMap::new();
    let mut offset = 0u64;
    loop {
        let page = api
            .search(&json!({
                "query": {"type": "and", "clauses": [{"eventType": "birth"}]},
                "limit": 100, "offset": offset,
                "sort": [{"field": "createdAt", "direction": "asc"}]
            }))
            .await
            .map_err(|e| format!("listing: {e}"))?;
        let results = page.body["results"]
            .as_array()
            .ok_or_else(|| format!("listing: {}", page.text))?;
        for hit in results {
            let id = hit["id"].as_str().unwrap_or_default().to_owned();
            if listed.insert(id.clone(), hit["status"].clone()).is_some() {
                return Err(format!("listing: event {id} listed twice"));
            }
        }
        offset += results.len() as u64;
        if results.is_empty() || offset >= page.body["total"].as_u64().unwrap_or(0) {
            break;
        }
    }
    let notified: Vec<&String> = ledger
        .iter()
        .filter(|(_, (_, n, _))| *n)
        .map(|(id, _)| id)
        .collect();
    let missing: Vec<&&String> = notified
        .iter()
        .filter(|id| !listed.contains_key(**id))
        .collect();
    if !missing.is_empty() || listed.len() != notified.len() {
        return Err(format!(
            "listing has {} events, {} notified ones are known; missing: {missing:?}",
            listed.len(),
            notified.len()
        ));
    }
    if let Some((id, status)) = listed.iter().find(|(_, s)| **s != "NOTIFIED") {
        return Err(format!("listing: event {id} has status {status}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let seed = seed();
    eprintln!("sigkill_durability: seed {seed:#x} (set CRVS_TEST_SEED to replay)");
    let started = std::time::Instant::now();
    let mut rng = XorShift::new(seed);
    let mut node = NodeProcess::start().expect("starting node");
    let mut ledger = Ledger::new();
    let mut failures: Vec<String> = Vec::new();
    let (mut acked_total, mut lost_total, mut lost_written_total) = (0usize, 0usize, 0usize);

    for round in 0..ROUNDS {
        let api = node.health_api().await.expect("token");
        let kill_after = rng.below(KILL_AFTER_ACKS_MAX + 1);
        let (acks, mut acks_seen) = watch::channel(0u64);
        let clients: Vec<_> = (0..WORKERS)
            .map(|worker| {
                tokio::spawn(client(api.clone(), round, worker, rng.next(), acks.clone()))
            })
            .collect();
        drop(acks);
        // Ends early only if every client stopped (each stops at its first non-200).
        let _ = acks_seen.wait_for(|n| *n >= kill_after).await;
        // Then a random few milliseconds more, so the kill lands at any point of a request
        // (parsing, queued for the writer, inside the group commit, writing the response).
        // This is fault timing, not a readiness wait.
        tokio::time::sleep(Duration::from_micros(rng.below(KILL_JITTER_US_MAX))).await;
        node.kill9().expect("SIGKILL");
        let killed_at = format_timestamp_ms(wall_ms());
        let mut sent = Vec::new();
        for handle in clients {
            sent.extend(handle.await.expect("client task"));
        }
        let acked = sent
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Acked(_)))
            .count();
        let lost = sent.len() - acked;
        acked_total += acked;
        lost_total += lost;

        node.restart().expect("restarting node");
        // Before the replays the node may hold events no client heard of, so only the log
        // is checked here.
        if let Err(e) = check_log(&node, &format!("round {round} after restart")) {
            failures.push(e);
        }
        let api = node.health_api().await.expect("token after restart");
        let mut touched = Vec::new();
        let mut lost_but_written = 0;
        for s in &sent {
            match resolve(&api, s, &mut ledger, &killed_at).await {
                Ok(resolved) => {
                    if matches!(s.outcome, Outcome::Lost(_)) && resolved.written_before_kill {
                        lost_but_written += 1;
                    }
                    touched.push(resolved.event_id);
                }
                Err(e) => failures.push(e),
            }
        }
        lost_written_total += lost_but_written;
        let when = format!("round {round} after replays");
        for check in [check_log(&node, &when), check_ledger(&node, &ledger, &when)] {
            if let Err(e) = check {
                failures.push(e);
            }
        }
        if let Err(e) = check_search(&api, &ledger, &touched).await {
            failures.push(format!("round {round}: {e}"));
        }
        eprintln!(
            "round {round:2}: kill after {kill_after:3} acks; {acked:3} acked, {lost} lost \
             ({lost_but_written} of them written); {} events known; {:?}",
            ledger.len(),
            started.elapsed()
        );
        if failures.len() > FAILURES_SHOWN_MAX {
            break;
        }
    }

    let api = node.health_api().await.expect("token");
    if let Err(e) = check_listing(&api, &ledger).await {
        failures.push(format!("final listing: {e}"));
    }
    eprintln!(
        "sigkill_durability: {acked_total} acknowledged, {lost_total} lost in flight \
         ({lost_written_total} of them written before the kill), {} events, {:?}",
        ledger.len(),
        started.elapsed()
    );
    assert!(acked_total > 0, "no request was ever acknowledged");
    assert!(
        failures.is_empty(),
        "seed {seed:#x}: {} failures:\n  {}",
        failures.len(),
        failures
            .iter()
            .take(FAILURES_SHOWN_MAX)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// Identical requests racing each other (an outbox retrying while the first attempt is still in
/// flight) make one event and one set of actions, and every caller gets the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_requests_make_one_event() {
    const RACERS: usize = 16;
    let node = NodeProcess::start().expect("starting node");
    let api = node.health_api().await.expect("token");
    let race = |path: String, body: Value| {
        let handles: Vec<_> = (0..RACERS)
            .map(|_| {
                let (api, path, body) = (api.clone(), path.clone(), body.clone());
                tokio::spawn(async move { api.post(&path, &body).await })
            })
            .collect();
        async move {
            let mut bodies = Vec::new();
            for handle in handles {
                let reply = handle.await.expect("task").expect("request");
                assert_eq!(reply.status, 200, "{}", reply.text);
                bodies.push(reply.body);
            }
            assert!(
                bodies.windows(2).all(|w| w[0] == w[1]),
                "racing replays answered differently"
            );
            bodies.swap_remove(0)
        }
    };

    let single_tx = "race-single";
    let single = race(
        "/api/events/events/notify".to_owned(),
        create_and_notify_body(
            "birth",
            single_tx,
            OFFICE_ID,
            &json!({"child.gender": "male"}),
        ),
    )
    .await;
    check_whole(&single, &format!("{single_tx}:create")).expect("whole single call");

    let created = race(
        "/api/events/events".to_owned(),
        create_body("birth", "race-create", HOSPITAL_ID),
    )
    .await;
    let event_id = created["id"].as_str().unwrap();
    let notified = race(
        format!("/api/events/events/{event_id}/notify"),
        notify_body(
            "race-notify",
            HOSPITAL_ID,
            &json!({"child.gender": "female"}),
        ),
    )
    .await;
    assert!(check_whole(&notified, "race-create").expect("whole notify"));

    let stats = node.status().expect("status");
    // Two events, CREATE + NOTIFY pair each; one log entry per write: the single call's one,
    // then the create's and the notify's (see check_log).
    assert_eq!(
        (stats.events, stats.actions, stats.log_seq),
        (2, 6, 3),
        "{stats:?}"
    );
    node.verify_log().expect("log verify");
}
