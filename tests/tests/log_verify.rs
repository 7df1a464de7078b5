//! `crvs-node log verify` as the operator's integrity check of a data directory: it passes on an
//! untouched node and fails (exit code != 0) when the signed log was altered, or when a stored
//! action (what the API serves) no longer matches the log entry that signed it.
//!
//! Each test writes through the API, stops the node with SIGKILL, alters `node.db` directly,
//! and runs `log verify` on the stopped directory.

use crvs_tests::{HOSPITAL_ID, NodeProcess, new_transaction_id, sample_birth_declaration};
use rusqlite::{Connection, params};

/// A node holding one notified event, stopped; returns it and the event id.
async fn stopped_node_with_one_event() -> (NodeProcess, String) {
    let mut node = NodeProcess::start().expect("starting node");
    let api = node.health_api().await.expect("token");
    let doc = api
        .create_and_notify(
            "birth",
            &new_transaction_id(),
            HOSPITAL_ID,
            &sample_birth_declaration(),
        )
        .await
        .unwrap();
    assert_eq!(doc.status, 200, "{}", doc.text);
    node.verify_log().expect("log verify before any change");
    node.kill9().expect("SIGKILL");
    (node, doc.body["id"].as_str().unwrap().to_owned())
}

fn open_db(node: &NodeProcess) -> Connection {
    Connection::open(node.data_dir().join("node.db")).expect("opening node.db")
}

#[tokio::test]
async fn log_verify_fails_on_an_altered_log_entry() {
    let (node, _) = stopped_node_with_one_event().await;
    let db = open_db(&node);
    let (seq, mut entry): (i64, Vec<u8>) = db
        .query_row(
            "SELECT seq, entry FROM log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let last = entry.len() - 1;
    entry[last] ^= 0x01;
    db.execute(
        "UPDATE log SET entry = ?1 WHERE seq = ?2",
        params![entry, seq],
    )
    .unwrap();
    drop(db);
    let verdict = node.verify_log();
    assert!(
        verdict.is_err(),
        "log verify passed over an altered entry: {verdict:?}"
    );
}

/// The actions table is what the API serves; an action changed after it was signed must not
/// pass verification (here: the child's name in the NOTIFY declaration).
#[tokio::test]
async fn log_verify_fails_when_a_stored_action_differs_from_its_signed_entry() {
    let (node, event_id) = stopped_node_with_one_event().await;
    let db = open_db(&node);
    let changed = db
        .execute(
            "UPDATE actions SET body = replace(body, '\"firstname\":\"Liam\"', '\"firstname\":\"Mallory\"')
             WHERE event_id = ?1 AND action_type = 'NOTIFY' AND status = 'Requested'",
            params![event_id],
        )
        .unwrap();
    assert_eq!(changed, 1, "the NOTIFY Requested row of {event_id}");
    drop(db);
    let verdict = node.verify_log();
    assert!(
        verdict.is_err(),
        "log verify passed although a stored action differs from its signed entry: {verdict:?}"
    );
}
