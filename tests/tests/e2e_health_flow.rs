//! End-to-end health-facility flow against a real `crvs-node` process, step by step as
//! OpenCRVS's sample integration does it (opencrvs-api.md §10, §12): token, locations by name,
//! create, notify, read back, search, record data, the single-call notify and the 409 on a
//! second notify; then the signed log verifies and the counters match what was done.

use crvs_tests::{
    ADMIN_AREA_ID, HOSPITAL_ID, INACTIVE_CLINIC_ID, NodeProcess, OFFICE_ID, action_kinds, actions,
    is_tracking_id, new_transaction_id, sample_birth_declaration,
};
use serde_json::{Value, json};

fn kinds(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(t, s)| ((*t).to_owned(), (*s).to_owned()))
        .collect()
}

fn sorted_keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    keys
}

/// The id of the location called `name` in a `GET /locations` answer.
fn location_id<'a>(list: &'a Value, name: &str) -> &'a str {
    list.as_array()
        .and_then(|l| l.iter().find(|loc| loc["name"] == name))
        .and_then(|loc| loc["id"].as_str())
        .unwrap_or_else(|| panic!("no location named {name:?} in {list}"))
}

fn location_names(list: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = list
        .as_array()
        .map(|l| l.iter().filter_map(|loc| loc["name"].as_str()).collect())
        .unwrap_or_default();
    names.sort_unstable();
    names
}

/// Checks the EventDocument shape OpenCRVS returns (§1.1, §12.8).
fn assert_event_document(doc: &Value) {
    assert_eq!(
        sorted_keys(doc),
        [
            "actions",
            "createdAt",
            "id",
            "trackingId",
            "type",
            "updatedAt"
        ],
        "EventDocument keys: {doc}"
    );
    let tracking_id = doc["trackingId"].as_str().unwrap_or_default();
    assert!(is_tracking_id(tracking_id), "trackingId {tracking_id:?}");
    assert!(
        doc["id"]
            .as_str()
            .is_some_and(|id| id.parse::<uuid::Uuid>().is_ok()),
        "id is a UUID: {doc}"
    );
    for action in actions(doc) {
        for key in [
            "id",
            "type",
            "transactionId",
            "status",
            "createdBy",
            "createdByUserType",
            "createdAt",
        ] {
            assert!(action.get(key).is_some(), "action has {key}: {action}");
        }
        assert!(
            action
                .as_object()
                .is_some_and(|o| o.values().all(|v| !v.is_null())),
            "nulls are dropped from actions: {action}"
        );
    }
}

#[tokio::test]
async fn health_facility_flow() {
    let node = NodeProcess::start().expect("starting node");
    let health = node.health_client().clone();
    let anonymous = node.anonymous();

    // 1. Token: query string (with the sample's JSON content type and empty body) and form body,
    //    on every route OpenCRVS integrations use.
    let mut token = String::new();
    for route in ["/auth/token", "/api/auth/token", "/token"] {
        for reply in [
            anonymous.token_by_query(route, &health).await.unwrap(),
            anonymous.token_by_form(route, &health).await.unwrap(),
        ] {
            assert_eq!(reply.status, 200, "{route}: {}", reply.text);
            assert_eq!(reply.header("cache-control"), Some("no-store"), "{route}");
            assert_eq!(reply.body["token_type"], "Bearer", "{route}");
            assert_eq!(
                sorted_keys(&reply.body),
                ["access_token", "token_type"],
                "{route}: no expires_in, no refresh token"
            );
            token = reply.body["access_token"].as_str().unwrap().to_owned();
        }
    }
    let api = node.api(&token);

    // 2. Locations, looked up by name as the sample integration does.
    let locations = api.get("/api/events/locations").await.unwrap();
    assert_eq!(locations.status, 200, "{}", locations.text);
    for location in locations.body.as_array().expect("a bare JSON array") {
        assert_eq!(
            sorted_keys(location),
            [
                "administrativeAreaId",
                "externalId",
                "id",
                "locationType",
                "name",
                "validUntil"
            ],
            "{location}"
        );
    }
    let office = location_id(&locations.body, "Ibombo District Office").to_owned();
    let hospital = location_id(&locations.body, "Ibombo District Hospital").to_owned();
    assert_eq!(
        (office.as_str(), hospital.as_str()),
        (OFFICE_ID, HOSPITAL_ID)
    );

    // 3. Create.
    let create_tx = new_transaction_id();
    let created = api.create("birth", &create_tx, &office).await.unwrap();
    assert_eq!(created.status, 200, "{}", created.text);
    let doc = &created.body;
    assert_event_document(doc);
    assert_eq!(doc["type"], "birth");
    assert_eq!(action_kinds(doc), kinds(&[("CREATE", "Accepted")]));
    let create_action = &actions(doc)[0];
    assert_eq!(create_action["transactionId"], create_tx.as_str());
    assert_eq!(create_action["createdBy"], health.client_id.as_str());
    assert_eq!(create_action["createdByUserType"], "system");
    assert_eq!(create_action["createdAtLocation"], office.as_str());
    let event_id = doc["id"].as_str().unwrap().to_owned();
    let tracking_id = doc["trackingId"].as_str().unwrap().to_owned();

    // 4. The same create again: the same event, byte for byte.
    let replay = api.create("birth", &create_tx, &office).await.unwrap();
    assert_eq!(replay.status, 200, "{}", replay.text);
    assert_eq!(
        replay.body, created.body,
        "a replayed create returns the same body"
    );

    // 5. Notify with the official sample's declaration.
    let declaration = sample_birth_declaration();
    let notify_tx = new_transaction_id();
    let notified = api
        .notify(&event_id, &notify_tx, &office, &declaration)
        .await
        .unwrap();
    assert_eq!(notified.status, 200, "{}", notified.text);
    let doc = &notified.body;
    assert_event_document(doc);
    assert_eq!(
        action_kinds(doc),
        kinds(&[
            ("CREATE", "Accepted"),
            ("NOTIFY", "Requested"),
            ("NOTIFY", "Accepted")
        ])
    );
    let (requested, accepted) = (&actions(doc)[1], &actions(doc)[2]);
    assert_eq!(&actions(doc)[0], create_action, "CREATE is unchanged");
    assert_eq!(requested["declaration"], declaration);
    assert_eq!(requested["annotation"], json!({}));
    assert_eq!(requested["transactionId"], notify_tx.as_str());
    assert_eq!(requested["createdAtLocation"], office.as_str());
    assert_eq!(requested.get("originalActionId"), None);
    assert_eq!(accepted["originalActionId"], requested["id"]);
    assert_eq!(accepted["transactionId"], notify_tx.as_str());
    assert_eq!(accepted["declaration"], json!({}));
    assert_eq!(doc["trackingId"], tracking_id.as_str());

    // The same notify again: idempotent, nothing new.
    let replay = api
        .notify(&event_id, &notify_tx, &office, &declaration)
        .await
        .unwrap();
    assert_eq!(replay.status, 200, "{}", replay.text);
    assert_eq!(
        replay.body, notified.body,
        "a replayed notify returns the same body"
    );

    // 6. Read back under both base paths; each read is recorded as a READ action.
    let mut expected = notified.body.clone();
    for path in [
        format!("/api/events/events/{event_id}"),
        format!("/events/events/{event_id}"),
    ] {
        let read = api.get(&path).await.unwrap();
        assert_eq!(read.status, 200, "{path}: {}", read.text);
        assert_event_document(&read.body);
        let read_actions = actions(&read.body);
        let last = read_actions.last().unwrap();
        assert_eq!(last["type"], "READ", "{path}");
        assert_eq!(last["status"], "Accepted", "{path}");
        assert_eq!(last["createdBy"], health.client_id.as_str());
        expected["actions"]
            .as_array_mut()
            .unwrap()
            .push(last.clone());
        assert_eq!(read.body["actions"], expected["actions"], "{path}");
    }

    // 7. Search by tracking id: NOTIFIED, incomplete, without secured fields.
    let found = api.search_tracking_id(&tracking_id).await.unwrap();
    assert_eq!(found.status, 200, "{}", found.text);
    assert_eq!(sorted_keys(&found.body), ["results", "total"]);
    assert_eq!(found.body["total"], 1, "{}", found.text);
    let hit = &found.body["results"][0];
    assert_eq!(hit["id"], event_id.as_str());
    assert_eq!(hit["type"], "birth");
    assert_eq!(hit["trackingId"], tracking_id.as_str());
    assert_eq!(hit["status"], "NOTIFIED");
    assert_eq!(hit["flags"], json!(["incomplete"]));
    assert_eq!(hit["createdBy"], health.client_id.as_str());
    assert_eq!(hit["createdByUserType"], "system");
    assert_eq!(hit["createdAtLocation"], office.as_str());
    let hit_declaration = hit["declaration"].as_object().expect("declaration object");
    for secured in ["child.dob", "child.placeOfBirth"] {
        assert!(
            !hit_declaration.contains_key(secured),
            "secured field {secured} leaked into search: {hit}"
        );
    }
    assert_eq!(hit["declaration"]["child.name"], declaration["child.name"]);
    assert_eq!(hit["declaration"]["child.gender"], "male");
    assert_eq!(
        hit["declaration"]["mother.name"],
        declaration["mother.name"]
    );
    // The same search under the gateway-style base path.
    let again = api
        .post(
            "/events/events/search",
            &json!({"query": {"type": "and", "clauses": [{"trackingId": {"type": "exact", "term": tracking_id}}]}}),
        )
        .await
        .unwrap();
    assert_eq!(again.body, found.body);
    // The node answers fuzzy, within-location and time-period clauses itself, offline: a
    // misspelt name, the area holding the office, this week.
    let fuzzy_search = |term: &str| {
        json!({"query": {"type": "and", "clauses": [
            {"data": {"child.name": {"type": "fuzzy", "term": term}}},
            {"createdAtLocation": {"type": "within", "location": ADMIN_AREA_ID}},
            {"createdAt": {"type": "timePeriod", "term": "last7Days"}},
        ]}})
    };
    let offline = api
        .post("/api/events/events/search", &fuzzy_search("Lima Bandaa"))
        .await
        .unwrap();
    assert_eq!(offline.status, 200, "{}", offline.text);
    let ids: Vec<&Value> = offline.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert!(ids.contains(&&json!(event_id)), "{}", offline.text);
    let other = api
        .post("/api/events/events/search", &fuzzy_search("Peter Banda"))
        .await
        .unwrap();
    assert_eq!(other.status, 200, "{}", other.text);
    assert_eq!(other.body["total"], 0, "{}", other.text);

    // 8. Record data by tracking id (a full read: the client holds record.read).
    let data = api
        .get(&format!(
            "/api/events/events/tracking/{tracking_id}/data?fields=child.name,child.dob"
        ))
        .await
        .unwrap();
    assert_eq!(data.status, 200, "{}", data.text);
    assert_eq!(data.body["eventId"], event_id.as_str());
    assert_eq!(data.body["trackingId"], tracking_id.as_str());
    assert_eq!(data.body["status"], "NOTIFIED");
    assert_eq!(
        data.body["data"],
        json!({"child.name": declaration["child.name"], "child.dob": "2024-06-03"})
    );
    assert_eq!(data.body["withheld"], json!([]));

    // 9. The single call: create and notify at once (§10.2).
    let single_tx = new_transaction_id();
    let single_declaration = json!({
        "child.name": {"firstname": "A", "surname": "B"},
        "child.dob": "2026-06-30"
    });
    let single = api
        .create_and_notify("birth", &single_tx, &hospital, &single_declaration)
        .await
        .unwrap();
    assert_eq!(single.status, 200, "{}", single.text);
    assert_event_document(&single.body);
    assert_eq!(
        action_kinds(&single.body),
        kinds(&[
            ("CREATE", "Accepted"),
            ("NOTIFY", "Requested"),
            ("NOTIFY", "Accepted")
        ])
    );
    let single_actions = actions(&single.body);
    assert_eq!(
        single_actions[0]["transactionId"],
        format!("{single_tx}:create"),
        "the create step uses <transactionId>:create"
    );
    assert_eq!(single_actions[1]["transactionId"], single_tx.as_str());
    assert_eq!(single_actions[1]["declaration"], single_declaration);
    assert_eq!(
        single_actions[2]["originalActionId"],
        single_actions[1]["id"]
    );
    assert_ne!(single.body["trackingId"], tracking_id.as_str());
    let replay = api
        .create_and_notify("birth", &single_tx, &hospital, &single_declaration)
        .await
        .unwrap();
    assert_eq!(replay.status, 200, "{}", replay.text);
    assert_eq!(
        replay.body, single.body,
        "a replayed single call returns the same body"
    );

    // 10. A second notify on a NOTIFIED event is a state conflict, worded as OpenCRVS words it.
    let conflict = api
        .notify(&event_id, &new_transaction_id(), &office, &json!({}))
        .await
        .unwrap();
    assert_eq!(conflict.envelope_problem(409), None);
    assert_eq!(
        conflict.message(),
        "Action 'NOTIFY' cannot be performed on an event in 'NOTIFIED' state with [incomplete] \
         flags. Available actions: READ, EDIT, MARK_AS_DUPLICATE, ARCHIVE, REJECT, CUSTOM"
    );

    // 11. The signed log verifies, and the counters match what was done: 2 events; 9 actions
    //     (CREATE, the NOTIFY pair, 2 READs, 1 READ for record data, and the single call's
    //     CREATE and NOTIFY pair); 6 log entries, one signed entry per write (create, notify,
    //     read, read, record data, and the single call, whose CREATE and NOTIFY pair travel in
    //     one entry).
    let stats = node.status().expect("status");
    assert_eq!(
        (stats.events, stats.actions, stats.log_seq),
        (2, 9, 6),
        "{stats:?}"
    );
    let verified = node.verify_log().expect("log verify");
    assert_eq!(verified.verified, 6);
}

#[tokio::test]
async fn locations_filters() {
    let node = NodeProcess::start().expect("starting node");
    let api = node.health_api().await.expect("token");
    let names = |reply: &crvs_tests::Reply| -> Vec<String> {
        assert_eq!(reply.status, 200, "{}", reply.text);
        location_names(&reply.body)
            .into_iter()
            .map(str::to_owned)
            .collect()
    };

    let all = names(&api.get("/api/events/locations").await.unwrap());
    assert_eq!(all.len(), 7, "{all:?}");

    let facilities = names(
        &api.get("/api/events/locations?locationType=HEALTH_FACILITY")
            .await
            .unwrap(),
    );
    assert_eq!(
        facilities,
        [
            "Chikobo Rural Health Centre",
            "Ibombo District Hospital",
            "Isamba District Hospital",
            "Old Mission Clinic"
        ]
    );
    let active_facilities = names(
        &api.get("/api/events/locations?locationType=HEALTH_FACILITY&isActive=true")
            .await
            .unwrap(),
    );
    assert!(
        !active_facilities.contains(&"Old Mission Clinic".to_owned()),
        "{active_facilities:?}"
    );
    assert_eq!(active_facilities.len(), 3);

    let inactive = api
        .get("/api/events/locations?isActive=false")
        .await
        .unwrap();
    assert_eq!(names(&inactive), ["Old Mission Clinic"]);
    assert_eq!(inactive.body[0]["id"], INACTIVE_CLINIC_ID);
    assert_eq!(inactive.body[0]["validUntil"], "2020-01-01T00:00:00.000Z");

    let by_external = api
        .get("/api/events/locations?externalId=VoBEqNv3jPU")
        .await
        .unwrap();
    assert_eq!(names(&by_external), ["Ibombo District Hospital"]);
    assert_eq!(by_external.body[0]["id"], HOSPITAL_ID);

    let by_ids = names(
        &api.get(&format!(
            "/api/events/locations?locationIds={OFFICE_ID},{HOSPITAL_ID}"
        ))
        .await
        .unwrap(),
    );
    assert_eq!(
        by_ids,
        ["Ibombo District Hospital", "Ibombo District Office"]
    );

    let offices = names(
        &api.get("/events/locations?locationType=CRVS_OFFICE")
            .await
            .unwrap(),
    );
    assert_eq!(
        offices,
        [
            "Ibombo District Office",
            "Ilanga District Office",
            "Isamba District Office"
        ]
    );

    let none = api
        .get("/api/events/locations?externalId=no-such-code")
        .await
        .unwrap();
    assert_eq!((none.status, none.body.clone()), (200, json!([])));

    // Locations need a token like every events route.
    let anonymous = node.anonymous().get("/api/events/locations").await.unwrap();
    assert_eq!(anonymous.envelope_problem(401), None);
}

#[tokio::test]
async fn config_openapi_and_ping() {
    let node = NodeProcess::start().expect("starting node");
    let api = node.health_api().await.expect("token");

    let config = api.get("/api/events/config").await.unwrap();
    assert_eq!(config.status, 200, "{}", config.text);
    let ids: Vec<&str> = config
        .body
        .as_array()
        .expect("EventConfig[]")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(ids.contains(&"birth") && ids.contains(&"death"), "{ids:?}");
    let gateway = api.get("/events/config").await.unwrap();
    assert_eq!(gateway.body, config.body);

    let openapi = api.get("/api/events/openapi.json").await.unwrap();
    assert_eq!(openapi.status, 200);
    assert!(
        serde_json::from_str::<Value>(&openapi.text).is_ok(),
        "openapi.json parses: {}",
        openapi.text
    );

    for path in ["/ping", "/api/ping"] {
        let ping = node.anonymous().get(path).await.unwrap();
        assert_eq!(ping.status, 200, "{path}");
    }

    // None of this wrote anything.
    let stats = node.status().expect("status");
    assert_eq!((stats.events, stats.actions, stats.log_seq), (0, 0, 0));
}

/// The served OpenAPI document describes the routes (it is what integrators generate clients
/// from), rather than being an empty object.
#[tokio::test]
async fn openapi_document_describes_the_routes() {
    let node = NodeProcess::start().expect("starting node");
    let api = node.health_api().await.expect("token");
    let openapi = api.get("/api/events/openapi.json").await.unwrap();
    assert_eq!(openapi.status, 200);
    let doc = &openapi.body;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "an OpenAPI 3 document: {}",
        openapi.text
    );
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/events",
        "/events/{eventId}",
        "/events/{eventId}/notify",
        "/events/notify",
        "/events/search",
        "/locations",
    ] {
        assert!(
            paths.keys().any(|p| p.ends_with(path)),
            "no {path} in {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
}

/// Search results leave out every field Farajaland marks `secured` (§2.5, `removeSecuredFields`):
/// the date and place of birth, including the facility and both address variants.
#[tokio::test]
async fn search_results_omit_every_secured_birth_field() {
    let node = NodeProcess::start().expect("starting node");
    let api = node.health_api().await.expect("token");
    let mut declaration = sample_birth_declaration();
    declaration["child.birthLocationId"] = json!(HOSPITAL_ID);
    let doc = api
        .create_and_notify("birth", &new_transaction_id(), HOSPITAL_ID, &declaration)
        .await
        .unwrap();
    assert_eq!(doc.status, 200, "{}", doc.text);
    // A home birth too, so the address variants are there to leak. NOTIFY does not evaluate
    // conditionals, so one declaration can carry both addresses.
    let address =
        json!({"country": "FAR", "addressType": "DOMESTIC", "administrativeArea": ADMIN_AREA_ID});
    let home = json!({
        "child.name": {"firstname": "Ama", "surname": "Phiri"},
        "child.dob": "2026-05-01",
        "child.placeOfBirth": "PRIVATE_HOME",
        "child.birthLocation.privateHome": address,
        "child.birthLocation.other": address,
        "child.birthLocationId": ADMIN_AREA_ID
    });
    let home_doc = api
        .create_and_notify("birth", &new_transaction_id(), OFFICE_ID, &home)
        .await
        .unwrap();
    assert_eq!(home_doc.status, 200, "{}", home_doc.text);
    let mut leaked = Vec::new();
    for (doc, sent) in [(&doc, &declaration), (&home_doc, &home)] {
        let tracking_id = doc.body["trackingId"].as_str().unwrap();
        let found = api.search_tracking_id(tracking_id).await.unwrap();
        assert_eq!(found.body["total"], 1, "{}", found.text);
        let hit = &found.body["results"][0]["declaration"];
        assert_eq!(
            hit["child.name"], sent["child.name"],
            "the hit carries its data"
        );
        leaked.extend(
            [
                "child.dob",
                "child.placeOfBirth",
                "child.birthLocation",
                "child.birthLocation.privateHome",
                "child.birthLocation.other",
            ]
            .into_iter()
            .filter(|field| hit.get(*field).is_some()),
        );
    }
    assert!(
        leaked.is_empty(),
        "secured fields in search results: {leaked:?}"
    );
}

/// OpenCRVS's sample integration sends the client secret in the query string, so the node must
/// not write request URIs with their query into its log.
#[tokio::test]
async fn client_secret_stays_out_of_the_node_log() {
    let node = NodeProcess::start().expect("starting node");
    let secret = node.health_client().client_secret.clone();
    let anonymous = node.anonymous();
    for route in ["/auth/token", "/api/auth/token", "/token"] {
        let reply = anonymous
            .token_by_query(route, node.health_client())
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{route}: {}", reply.text);
    }
    // A wrong secret must not be logged either (it is often a real secret with a typo).
    let mut wrong = node.health_client().clone();
    wrong.client_secret = format!("{secret}-typo");
    let reply = anonymous
        .token_by_query("/auth/token", &wrong)
        .await
        .unwrap();
    assert_eq!(reply.status, 401, "{}", reply.text);
    // The request log line is written before the response is sent, so it is in the file now.
    let log = std::fs::read_to_string(node.stderr_log()).expect("reading node log");
    assert!(log.contains("/auth/token"), "requests are logged: {log}");
    let leaks = log.lines().filter(|line| line.contains(&secret)).count();
    assert_eq!(leaks, 0, "the client secret is in {leaks} log lines");
}

/// Search results are `EventIndex` objects, which always carry `legalStatuses` (§1.4;
/// `EventMetadata.legalStatuses` is not optional), empty before declaration.
#[tokio::test]
async fn search_results_carry_legal_statuses() {
    let node = NodeProcess::start().expect("starting node");
    let api = node.health_api().await.expect("token");
    let doc = api
        .create_and_notify(
            "birth",
            &new_transaction_id(),
            OFFICE_ID,
            &sample_birth_declaration(),
        )
        .await
        .unwrap();
    assert_eq!(doc.status, 200, "{}", doc.text);
    let tracking_id = doc.body["trackingId"].as_str().unwrap();
    let found = api.search_tracking_id(tracking_id).await.unwrap();
    let hit = &found.body["results"][0];
    assert!(
        hit["legalStatuses"].is_object(),
        "legalStatuses missing from {hit}"
    );
}

/// A client that may search but not read gets record data without the `secured` fields, and is
/// told which ones were withheld.
#[tokio::test]
async fn record_data_withholds_secured_fields_from_search_only_clients() {
    let node = NodeProcess::start().expect("starting node");
    let api = node.health_api().await.expect("token");
    let doc = api
        .create_and_notify(
            "birth",
            &new_transaction_id(),
            OFFICE_ID,
            &sample_birth_declaration(),
        )
        .await
        .unwrap();
    assert_eq!(doc.status, 200, "{}", doc.text);
    let tracking_id = doc.body["trackingId"].as_str().unwrap();
    let searcher = node
        .add_client("searcher", &["type=record.search&event=birth"])
        .expect("client add");
    let searcher = node.api(&node.token_for(&searcher).await.unwrap());
    let data = searcher
        .get(&format!(
            "/api/events/events/tracking/{tracking_id}/data?fields=child.name,child.dob,child.placeOfBirth"
        ))
        .await
        .unwrap();
    assert_eq!(data.status, 200, "{}", data.text);
    assert_eq!(
        data.body["data"],
        json!({"child.name": {"firstname": "Liam", "surname": "Banda"}})
    );
    assert_eq!(
        data.body["withheld"],
        json!(["child.dob", "child.placeOfBirth"])
    );
}
