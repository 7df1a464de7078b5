//! The external confirmation hook (OpenCRVS §4.3, the National ID pattern) with a real central
//! and a hook server played here: a registration requested at central goes to the hook before
//! a number is issued. 200 accepts with the hook's number and national id; 202 leaves it
//! requested until the hook calls back with its single-record token (accept, or reject); 400
//! rejects with the hook's reason; while the hook is down (503) central retries with backoff,
//! across a kill -9 and restart, and the registration completes once the hook is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use crvs_tests::central::{CentralProcess, eventually, wait_synced};
use crvs_tests::users::{add_user, node_with_config};
use crvs_tests::{Api, HOSPITAL_ID, OFFICE_ID, new_transaction_id, sample_birth_declaration};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// What the hook server saw: per child first name, the calls and the last token and action.
#[derive(Default)]
struct Hook {
    down: AtomicBool,
    calls: Mutex<HashMap<String, Call>>,
}

#[derive(Clone, Default)]
struct Call {
    count: u32,
    token: String,
    action_id: String,
}

fn first_name(doc: &Value) -> String {
    doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find_map(|a| a["declaration"]["child.name"]["firstname"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The country's hook: its answer depends on the child's first name.
async fn trigger(
    State(hook): State<Arc<Hook>>,
    headers: HeaderMap,
    axum::Json(doc): axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    let name = first_name(&doc);
    let requested = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|a| a["type"] == "REGISTER" && a["status"] == "Requested")
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .unwrap_or_default();
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    {
        let mut calls = hook.calls.lock().unwrap();
        let call = calls.entry(name.clone()).or_default();
        call.count += 1;
        call.token = token;
        call.action_id = requested;
    }
    match name.as_str() {
        "Adebayo" => (
            StatusCode::OK,
            axum::Json(json!({"registrationNumber": "HOOK-0001", "nationalId": "NID-7731"})),
        ),
        "Bisi" | "Chidi" => (StatusCode::ACCEPTED, axum::Json(json!({}))),
        "Dayo" => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"message": "Not in the national ID register"})),
        ),
        _ if hook.down.load(Ordering::SeqCst) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({})))
        }
        _ => (StatusCode::OK, axum::Json(json!({}))),
    }
}

async fn login_at_central(central: &CentralProcess, user: &Value) -> Api {
    let anonymous = Api::new(format!("http://{}", central.http()), None);
    crvs_tests::users::login_at_central(&anonymous, user).await
}

async fn act(api: &Api, event_id: &str, action: &str, body: Value) -> Value {
    let reply = api
        .post(&format!("/api/events/events/{event_id}/{action}"), &body)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{action}: {}", reply.body);
    reply.body
}

/// The answer to the record's requested REGISTER, if any.
fn register_answer(doc: &Value) -> Option<Value> {
    doc["actions"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "REGISTER" && a["status"] != "Requested")
        .cloned()
}

fn call_of(hook: &Hook, name: &str) -> Option<Call> {
    hook.calls.lock().unwrap().get(name).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_accepts_waits_rejects_and_is_retried_while_down() {
    let hook = Arc::new(Hook::default());
    hook.down.store(true, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/trigger/events/{event_type}/actions/{action}",
            post(trigger),
        )
        .with_state(Arc::clone(&hook));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = format!(
        "two_factor = false\n\n[[action_hooks]]\naction = \"REGISTER\"\nurl = \"http://{hook_addr}/\"\nevent_types = [\"birth\"]\n"
    );
    let mut central = CentralProcess::start_with_config(Some(&config)).unwrap();
    let registrar = add_user(&central, "Joshua", "Mutale", "LOCAL_REGISTRAR", OFFICE_ID);
    let node = node_with_config(&central, HOSPITAL_ID, "two_factor = false\n");
    eventually("a tracking-id lease", TIMEOUT, || async {
        Ok((node.status()?.pool_free >= 5).then_some(()))
    })
    .await
    .unwrap();
    let health = node.health_api().await.unwrap();
    let names = ["Adebayo", "Bisi", "Chidi", "Dayo", "Emeka"];
    let mut ids = HashMap::new();
    for name in names {
        let created = health
            .create("birth", &new_transaction_id(), HOSPITAL_ID)
            .await
            .unwrap();
        assert_eq!(created.status, 200, "{}", created.body);
        ids.insert(name, created.body["id"].as_str().unwrap().to_owned());
    }
    wait_synced(&node, TIMEOUT).await.unwrap();
    let registrar_api = login_at_central(&central, &registrar).await;

    // Each record declared and sent for registration at central: it stays requested, the hook
    // is asked.
    for (i, name) in names.iter().enumerate() {
        let id = &ids[name];
        let mut declaration = sample_birth_declaration();
        declaration["child.name"] = json!({"firstname": name, "surname": "Okafor"});
        // Different mothers, so the duplicate rules keep out of the way.
        declaration["mother.name"] =
            json!({"firstname": format!("Mother{i}"), "surname": format!("Family{i}")});
        declaration["mother.dob"] = json!(format!("19{}-01-15", 70 + i * 5));
        act(
            &registrar_api,
            id,
            "assign",
            json!({"transactionId": new_transaction_id()}),
        )
        .await;
        act(
            &registrar_api,
            id,
            "declare",
            json!({"transactionId": new_transaction_id(), "declaration": declaration, "keepAssignment": true}),
        )
        .await;
        let requested = act(
            &registrar_api,
            id,
            "register",
            json!({"transactionId": new_transaction_id()}),
        )
        .await;
        assert!(register_answer(&requested).is_none(), "{requested}");
    }
    let read = |id: String| {
        let api = registrar_api.clone();
        async move {
            let reply = api.get(&format!("/api/events/events/{id}")).await.unwrap();
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body
        }
    };
    let answer_of = |name: &'static str| {
        let id = ids[name].clone();
        let read = &read;
        async move {
            eventually(
                &format!("the hook's answer for {name}"),
                TIMEOUT,
                || async { Ok(register_answer(&read(id.clone()).await)) },
            )
            .await
            .unwrap()
        }
    };

    // 200: accepted with the hook's number and national id.
    let accepted = answer_of("Adebayo").await;
    assert_eq!(accepted["status"], "Accepted", "{accepted}");
    assert_eq!(accepted["registrationNumber"], "HOOK-0001");
    assert_eq!(accepted["content"]["nationalId"], "NID-7731");
    // 400: rejected with the hook's reason.
    let rejected = answer_of("Dayo").await;
    assert_eq!(rejected["status"], "Rejected", "{rejected}");
    assert_eq!(
        rejected["content"]["reason"],
        "Not in the national ID register"
    );

    // 202: still requested until the hook calls back with its single-record token.
    let waiting = |name: &'static str| {
        let hook = Arc::clone(&hook);
        async move {
            eventually(&format!("the hook asked about {name}"), TIMEOUT, || async {
                Ok(call_of(&hook, name))
            })
            .await
            .unwrap()
        }
    };
    let bisi = waiting("Bisi").await;
    let chidi = waiting("Chidi").await;
    assert!(register_answer(&read(ids["Bisi"].clone()).await).is_none());
    let anonymous = Api::new(format!("http://{}", central.http()), None);
    let callback = |token: &str, procedure: &str, input: Value| {
        let api = anonymous.with_token(Some(token));
        let path = format!("/api/events/event.actions.register.{procedure}");
        async move { api.post(&path, &json!({"json": input})).await.unwrap() }
    };
    let bisi_input = json!({"eventId": ids["Bisi"], "actionId": bisi.action_id, "transactionId": new_transaction_id()});
    // Another record's token does not answer this one.
    let wrong = callback(&chidi.token, "accept", bisi_input.clone()).await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    // No token: 401.
    let none = anonymous
        .post(
            "/api/events/event.actions.register.accept",
            &json!({"json": bisi_input}),
        )
        .await
        .unwrap();
    assert_eq!(none.status, 401, "{}", none.body);
    let accepted = callback(&bisi.token, "accept", bisi_input.clone()).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let answer = register_answer(&accepted.body["result"]["data"]["json"]).unwrap();
    assert_eq!(answer["status"], "Accepted");
    let number = answer["registrationNumber"].as_str().unwrap().to_owned();
    assert!(number.starts_with("20"), "central issued it: {number}");
    // Idempotent; the opposite answer afterwards is a 400.
    let again = callback(&bisi.token, "accept", bisi_input.clone()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    let flip = callback(&bisi.token, "reject", bisi_input).await;
    assert_eq!(flip.status, 400, "{}", flip.body);
    let chidi_input = json!({"eventId": ids["Chidi"], "actionId": chidi.action_id,
        "transactionId": new_transaction_id(), "reason": "Identity not confirmed"});
    let refused = callback(&chidi.token, "reject", chidi_input).await;
    assert_eq!(refused.status, 200, "{}", refused.body);
    let answer = register_answer(&refused.body["result"]["data"]["json"]).unwrap();
    assert_eq!(answer["status"], "Rejected");
    assert_eq!(answer["content"]["reason"], "Identity not confirmed");

    // Down: central keeps retrying (with backoff), across a kill -9 and restart.
    eventually("a failed call to the hook", TIMEOUT, || async {
        Ok(call_of(&hook, "Emeka").filter(|c| c.count >= 1))
    })
    .await
    .unwrap();
    assert!(register_answer(&read(ids["Emeka"].clone()).await).is_none());
    // Ops see the queue: one failing, one waiting... (Bisi and Chidi answered by now).
    let status = central.sync_status().await.unwrap();
    assert_eq!(status["confirmationHook"]["queued"], 1, "{status}");
    assert_eq!(
        status["confirmationHook"]["waitingForCallback"], 0,
        "{status}"
    );
    central.restart().unwrap();
    let before = call_of(&hook, "Emeka").unwrap().count;
    eventually("a retry after the restart", TIMEOUT, || async {
        Ok(call_of(&hook, "Emeka").filter(|c| c.count > before))
    })
    .await
    .unwrap();
    hook.down.store(false, Ordering::SeqCst);
    let registrar_api = login_at_central(&central, &registrar).await;
    let emeka = eventually(
        "the registration once the hook is back",
        TIMEOUT,
        || async {
            let reply = registrar_api
                .get(&format!("/api/events/events/{}", ids["Emeka"]))
                .await?;
            Ok(register_answer(&reply.body))
        },
    )
    .await
    .unwrap();
    assert_eq!(emeka["status"], "Accepted", "{emeka}");
    assert!(
        emeka["registrationNumber"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
}
