//! User management and login at central, with real processes: a national system admin logs in
//! at central (code through the outbox and a real transport command), invites a registration
//! agent (temporary password by SMS), who logs in with a scope-less token, activates the account
//! (password and security answers), changes password and phone (with a sent code); the admin
//! deactivates, resets and reminds; a forgotten password and a forgotten username are recovered
//! (code, security question, new password or username by SMS); every change is audited, bad
//! input is refused with the
//! envelope and changes nothing, and the activated user logs in at their node with the password
//! they chose at central once it syncs down.

use std::path::Path;
use std::time::Duration;

use crvs_tests::central::{CentralProcess, eventually};
use crvs_tests::users::{
    add_user, authenticate_at, claims, login, messages_to, node_with_config, transport_config,
    verify_code_at, wait_for_user,
};
use crvs_tests::{Api, HOSPITAL_ID, OFFICE_ID};
use serde_json::{Value, json};

/// The mobile number `crvs-central user add` gives the users these tests make.
const ADMIN_MOBILE: &str = "+260911234567";
const AGENT_MOBILE: &str = "+260977000001";
const AGENT_NEW_MOBILE: &str = "+260977000002";

/// `POST /api/users/{user_id}/{op}` with `body`.
async fn user_op(api: &Api, user_id: &str, op: &str, body: &Value) -> crvs_tests::Reply {
    api.post(&format!("/api/users/{user_id}/{op}"), body)
        .await
        .unwrap()
}

/// Waits for the message to `mobile` after the `seen` ones already there; the message.
async fn next_message(outbox: &Path, mobile: &str, seen: usize) -> String {
    eventually(
        &format!("message {} to {mobile}", seen + 1),
        Duration::from_secs(20),
        || async { Ok(messages_to(outbox, mobile).get(seen).cloned()) },
    )
    .await
    .unwrap()
}

/// Runs `send` (which makes central send one message to `mobile`) and returns that message.
async fn sent_by<F: Future>(outbox: &Path, mobile: &str, send: F) -> (F::Output, String) {
    let seen = messages_to(outbox, mobile).len();
    let out = send.await;
    (out, next_message(outbox, mobile, seen).await)
}

/// Logs in at central, reading the code the transport wrote for `mobile`.
async fn central_login(api: &Api, outbox: &Path, mobile: &str, user: &str, pw: &str) -> String {
    let (reply, text) = sent_by(outbox, mobile, authenticate_at(api, user, pw)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let nonce = reply.body["nonce"].as_str().unwrap().to_owned();
    verify_code_at(api, &nonce, &word_after(&text, "code is ")).await
}

/// A code sent to confirm a change of phone number: `(nonce, code)`.
async fn phone_code(api: &Api, outbox: &Path, mobile: &str, user_id: &str) -> (String, String) {
    let (sent, text) = sent_by(
        outbox,
        mobile,
        api.post(
            &format!("/api/users/{user_id}/send-verify-code"),
            &json!({"notificationEvent": "change-phone-number"}),
        ),
    )
    .await;
    let sent = sent.unwrap();
    assert_eq!(sent.status, 200, "{}", sent.body);
    let nonce = sent.body["nonce"].as_str().unwrap().to_owned();
    (nonce, word_after(&text, "number is "))
}

/// The word after `marker` in `text`.
fn word_after(text: &str, marker: &str) -> String {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {text:?}"))
        + marker.len();
    text[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('.')
        .to_owned()
}

fn assert_envelope(reply: &crvs_tests::Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert!(reply.envelope_problem(status).is_none(), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_manages_users_and_changes_reach_the_node() {
    let outbox_dir = tempfile::tempdir().unwrap();
    let outbox = outbox_dir.path().join("sent.txt");
    let central = CentralProcess::start_with_config(Some(&transport_config(&outbox))).unwrap();
    let anonymous = Api::new(format!("http://{}", central.http()), None);
    let admin = add_user(
        &central,
        "Jonathan",
        "Campbell",
        "NATIONAL_SYSTEM_ADMIN",
        OFFICE_ID,
    );
    let admin_name = admin["username"].as_str().unwrap().to_owned();
    let admin_token = central_login(
        &anonymous,
        &outbox,
        ADMIN_MOBILE,
        &admin_name,
        admin["password"].as_str().unwrap(),
    )
    .await;
    assert_eq!(claims(&admin_token)["iss"], "crvs-edge:central");
    let admin_api = anonymous.with_token(Some(&admin_token));

    // Bad input changes nothing: unknown key, unknown role, unknown office, bad mobile.
    let good = json!({
        "name": {"firstname": "Felix", "surname": "Katongo"},
        "role": "REGISTRATION_AGENT",
        "primaryOfficeId": OFFICE_ID,
        "mobile": AGENT_MOBILE,
    });
    let mut with_unknown_key = good.clone();
    with_unknown_key["nickname"] = json!("fk");
    let mut unknown_role = good.clone();
    unknown_role["role"] = json!("KING");
    let mut unknown_office = good.clone();
    unknown_office["primaryOfficeId"] = json!(uuid::Uuid::new_v4());
    let mut bad_mobile = good.clone();
    bad_mobile["mobile"] = json!("call me");
    for bad in [
        &with_unknown_key,
        &unknown_role,
        &unknown_office,
        &bad_mobile,
    ] {
        let reply = admin_api.post("/api/users", bad).await.unwrap();
        assert_envelope(&reply, 400);
    }
    let users = admin_api
        .post("/api/users/search", &json!({"count": 100}))
        .await
        .unwrap();
    assert_eq!(users.body["total"], 1, "{}", users.body);

    // The admin invites a registration agent: pending, temporary password by SMS.
    let (created, invite) =
        sent_by(&outbox, AGENT_MOBILE, admin_api.post("/api/users", &good)).await;
    let created = created.unwrap();
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["status"], "pending");
    let agent_id = created.body["id"].as_str().unwrap().to_owned();
    let agent_name = word_after(&invite, "username is ");
    let temporary = word_after(&invite, "temporary password is ");
    assert_eq!(agent_name, "f.katongo");
    let duplicate = admin_api.post("/api/users", &good).await.unwrap();
    assert_envelope(&duplicate, 409);

    // Someone without user.create may not invite.
    let pending_token =
        central_login(&anonymous, &outbox, AGENT_MOBILE, &agent_name, &temporary).await;
    assert_eq!(claims(&pending_token)["scope"], json!([]));
    let pending_api = anonymous.with_token(Some(&pending_token));
    let refused = pending_api.post("/api/users", &good).await.unwrap();
    assert_envelope(&refused, 403);
    let me = pending_api
        .get(&format!("/api/users/{agent_id}"))
        .await
        .unwrap();
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body.get("passwordHash").is_none(), "{}", me.body);

    // Activation: password and security answers; only once, only by the user.
    let activate = json!({
        "password": "chosen-by-felix",
        "securityQNAs": [
            {"questionKey": "BIRTH_TOWN", "answer": "Kabwe"},
            {"questionKey": "FAVORITE_FOOD", "answer": "Nshima"},
        ],
    });
    let by_admin = user_op(&admin_api, &agent_id, "activate", &activate).await;
    assert_envelope(&by_admin, 403);
    let short = user_op(
        &pending_api,
        &agent_id,
        "activate",
        &json!({"password": "short", "securityQNAs": activate["securityQNAs"]}),
    )
    .await;
    assert_envelope(&short, 400);
    let activated = user_op(&pending_api, &agent_id, "activate", &activate).await;
    assert_eq!(activated.status, 201, "{}", activated.body);
    assert_eq!(activated.body["userId"], agent_id.as_str());
    // The pending token died with the temporary password.
    let stale = pending_api
        .get(&format!("/api/users/{agent_id}"))
        .await
        .unwrap();
    assert_envelope(&stale, 401);

    // The agent logs in with the chosen password and gets the role's scopes.
    let agent_token = central_login(
        &anonymous,
        &outbox,
        AGENT_MOBILE,
        &agent_name,
        "chosen-by-felix",
    )
    .await;
    let agent_claims = claims(&agent_token);
    assert_eq!(agent_claims["role"], "REGISTRATION_AGENT");
    assert!(!agent_claims["scope"].as_array().unwrap().is_empty());
    let agent_api = anonymous.with_token(Some(&agent_token));
    let again = user_op(&agent_api, &agent_id, "activate", &activate).await;
    assert_envelope(&again, 409);
    let verified = user_op(
        &agent_api,
        &agent_id,
        "verify-password",
        &json!({"password": "chosen-by-felix"}),
    )
    .await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verified.body["username"], agent_name.as_str());
    let wrong = user_op(
        &agent_api,
        &agent_id,
        "verify-password",
        &json!({"password": "not-it-at-all"}),
    )
    .await;
    assert_envelope(&wrong, 401);

    // Change password: the existing one is required.
    let change =
        |existing: &str| json!({"existingPassword": existing, "password": "felix-second-choice"});
    let refused = user_op(
        &agent_api,
        &agent_id,
        "change-password",
        &change("a wrong guess"),
    )
    .await;
    assert_envelope(&refused, 401);
    let changed = user_op(
        &agent_api,
        &agent_id,
        "change-password",
        &change("chosen-by-felix"),
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    // A password change ends every earlier token of the user; a new login works.
    let stale = agent_api
        .get(&format!("/api/users/{agent_id}"))
        .await
        .unwrap();
    assert_envelope(&stale, 401);
    let agent_token = central_login(
        &anonymous,
        &outbox,
        AGENT_MOBILE,
        &agent_name,
        "felix-second-choice",
    )
    .await;
    let agent_api = anonymous.with_token(Some(&agent_token));

    // Change phone: a code goes to the current number; a wrong code and the admin's number
    // are refused.
    let (nonce, _) = phone_code(&agent_api, &outbox, AGENT_MOBILE, &agent_id).await;
    let bad_code = user_op(
        &agent_api,
        &agent_id,
        "change-phone",
        &json!({"phoneNumber": AGENT_NEW_MOBILE, "nonce": nonce, "verifyCode": "999999x"}),
    )
    .await;
    assert_envelope(&bad_code, 400);
    let (nonce, code) = phone_code(&agent_api, &outbox, AGENT_MOBILE, &agent_id).await;
    let taken = user_op(
        &agent_api,
        &agent_id,
        "change-phone",
        &json!({"phoneNumber": ADMIN_MOBILE, "nonce": nonce, "verifyCode": code}),
    )
    .await;
    assert_envelope(&taken, 409);
    let (nonce, code) = phone_code(&agent_api, &outbox, AGENT_MOBILE, &agent_id).await;
    let moved = user_op(
        &agent_api,
        &agent_id,
        "change-phone",
        &json!({"phoneNumber": AGENT_NEW_MOBILE, "nonce": nonce, "verifyCode": code}),
    )
    .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(moved.body["mobile"], AGENT_NEW_MOBILE);

    // Others' accounts are not the agent's to change.
    let admin_id = admin["userId"].as_str().unwrap();
    let not_mine = user_op(
        &agent_api,
        admin_id,
        "change-avatar",
        &json!({"avatar": "/avatars/x.png"}),
    )
    .await;
    assert_envelope(&not_mine, 403);
    let unknown_op = user_op(&agent_api, &agent_id, "promote", &json!({})).await;
    assert_envelope(&unknown_op, 404);
    let bad_id = agent_api
        .post("/api/users/not-a-uuid/update", &json!({}))
        .await
        .unwrap();
    assert_envelope(&bad_id, 400);

    // The user reaches their district's node with the password they chose at central.
    let node = node_with_config(&central, HOSPITAL_ID, "two_factor = false\n");
    wait_for_user(&node, &agent_name, "active").await;
    let at_node = eventually(
        "the new password at the node",
        Duration::from_secs(60),
        || {
            let (node, name) = (&node, &agent_name);
            async move {
                let reply =
                    crvs_tests::users::authenticate(node, name, "felix-second-choice").await;
                Ok((reply.status == 200).then_some(()))
            }
        },
    )
    .await;
    assert!(at_node.is_ok());
    let node_token = login(&node, &agent_name, "felix-second-choice", "000000").await;
    assert_eq!(claims(&node_token)["role"], "REGISTRATION_AGENT");

    // Forgotten password: a code to the phone, the security question (a miss asks the other
    // one), a new password; each step only after the one before, and only once.
    let answer_of = |key: &str| match key {
        "BIRTH_TOWN" => "  KABWE ",
        "FAVORITE_FOOD" => "nshima",
        other => panic!("unexpected question {other}"),
    };
    let (started, text) = sent_by(
        &outbox,
        AGENT_NEW_MOBILE,
        anonymous.post(
            "/auth/verifyUser",
            &json!({"mobile": AGENT_NEW_MOBILE, "retrieveFlow": "password"}),
        ),
    )
    .await;
    let started = started.unwrap();
    assert_eq!(started.status, 200, "{}", started.body);
    assert!(
        started.body.get("securityQuestionKey").is_none(),
        "{}",
        started.body
    );
    let nonce = started.body["nonce"].as_str().unwrap().to_owned();
    let code = word_after(&text, "password is ");
    let early = anonymous
        .post(
            "/auth/verifySecurityAnswer",
            &json!({"nonce": nonce, "answer": "Kabwe"}),
        )
        .await
        .unwrap();
    assert_envelope(&early, 401);
    let wrong_code = anonymous
        .post(
            "/auth/verifyNumber",
            &json!({"nonce": nonce, "code": "000001"}),
        )
        .await
        .unwrap();
    assert_envelope(&wrong_code, 401);
    let number = anonymous
        .post("/auth/verifyNumber", &json!({"nonce": nonce, "code": code}))
        .await
        .unwrap();
    assert_eq!(number.status, 200, "{}", number.body);
    let first_key = number.body["securityQuestionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let missed = anonymous
        .post(
            "/auth/verifySecurityAnswer",
            &json!({"nonce": nonce, "answer": "Lusaka"}),
        )
        .await
        .unwrap();
    assert_eq!(missed.status, 200, "{}", missed.body);
    assert_eq!(missed.body["matched"], false);
    let next_key = missed.body["securityQuestionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(next_key, first_key);
    let matched = anonymous
        .post(
            "/auth/verifySecurityAnswer",
            &json!({"nonce": nonce, "answer": answer_of(&next_key)}),
        )
        .await
        .unwrap();
    assert_eq!(matched.body["matched"], true, "{}", matched.body);
    let new_password = json!({"nonce": nonce, "newPassword": "felix-third-choice"});
    let changed = anonymous
        .post("/auth/changePassword", &new_password)
        .await
        .unwrap();
    assert_eq!(changed.status, 200, "{}", changed.body);
    let replayed = anonymous
        .post("/auth/changePassword", &new_password)
        .await
        .unwrap();
    assert_envelope(&replayed, 401);
    // (Its login code is awaited, so the next message read is the recovery's.)
    let (with_new, _) = sent_by(
        &outbox,
        AGENT_NEW_MOBILE,
        authenticate_at(&anonymous, &agent_name, "felix-third-choice"),
    )
    .await;
    assert_eq!(with_new.status, 200, "{}", with_new.body);

    // Forgotten username: a code to the phone too, then the question, then the username by SMS.
    let (started, text) = sent_by(
        &outbox,
        AGENT_NEW_MOBILE,
        anonymous.post(
            "/auth/verifyUser",
            &json!({"mobile": AGENT_NEW_MOBILE, "retrieveFlow": "username"}),
        ),
    )
    .await;
    let started = started.unwrap();
    assert_eq!(started.status, 200, "{}", started.body);
    let nonce = started.body["nonce"].as_str().unwrap().to_owned();
    let number = anonymous
        .post(
            "/auth/verifyNumber",
            &json!({"nonce": nonce, "code": word_after(&text, "username is ")}),
        )
        .await
        .unwrap();
    assert_eq!(number.status, 200, "{}", number.body);
    let key = number.body["securityQuestionKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let matched = anonymous
        .post(
            "/auth/verifySecurityAnswer",
            &json!({"nonce": nonce, "answer": answer_of(&key)}),
        )
        .await
        .unwrap();
    assert_eq!(matched.body["matched"], true, "{}", matched.body);
    let (sent, text) = sent_by(
        &outbox,
        AGENT_NEW_MOBILE,
        anonymous.post("/auth/sendUserName", &json!({"nonce": nonce})),
    )
    .await;
    assert_eq!(sent.unwrap().status, 200);
    assert_eq!(word_after(&text, "username is "), agent_name);
    let unknown = anonymous
        .post(
            "/auth/verifyUser",
            &json!({"mobile": "+260977999999", "retrieveFlow": "username"}),
        )
        .await
        .unwrap();
    assert_envelope(&unknown, 401);
    let both = anonymous
        .post(
            "/auth/verifyUser",
            &json!({"mobile": AGENT_NEW_MOBILE, "email": "f@example.org", "retrieveFlow": "username"}),
        )
        .await
        .unwrap();
    assert_envelope(&both, 400);

    // The admin deactivates the agent: refused at login.
    let deactivated = user_op(
        &admin_api,
        &agent_id,
        "update",
        &json!({"status": "deactivated"}),
    )
    .await;
    assert_eq!(deactivated.status, 200, "{}", deactivated.body);
    let refused = authenticate_at(&anonymous, &agent_name, "felix-third-choice").await;
    assert_envelope(&refused, 403);
    let pending_status = user_op(
        &admin_api,
        &agent_id,
        "update",
        &json!({"status": "pending"}),
    )
    .await;
    assert_envelope(&pending_status, 400);

    // Reset: a new temporary password, pending again; a reminder carries the username.
    let refused = user_op(&admin_api, &agent_id, "reset-password", &json!({})).await;
    assert_envelope(&refused, 409);
    let reactivated = user_op(
        &admin_api,
        &agent_id,
        "update",
        &json!({"status": "active"}),
    )
    .await;
    assert_eq!(reactivated.status, 200, "{}", reactivated.body);
    let (reset, text) = sent_by(
        &outbox,
        AGENT_NEW_MOBILE,
        admin_api.post(&format!("/api/users/{agent_id}/reset-password"), &json!({})),
    )
    .await;
    let reset = reset.unwrap();
    assert_eq!(reset.status, 200, "{}", reset.body);
    let temporary = word_after(&text, "temporary password is ");
    let (pending_again, _) = sent_by(
        &outbox,
        AGENT_NEW_MOBILE,
        authenticate_at(&anonymous, &agent_name, &temporary),
    )
    .await;
    assert_eq!(pending_again.status, 200, "{}", pending_again.body);
    assert_eq!(pending_again.body["status"], "pending");
    let (resent, _) = sent_by(
        &outbox,
        AGENT_NEW_MOBILE,
        admin_api.post(&format!("/api/users/{agent_id}/resend-invite"), &json!({})),
    )
    .await;
    let resent = resent.unwrap();
    assert_eq!(resent.status, 200, "{}", resent.body);
    let (reminder, text) = sent_by(
        &outbox,
        AGENT_NEW_MOBILE,
        admin_api.post(
            &format!("/api/users/{agent_id}/username-reminder"),
            &json!({}),
        ),
    )
    .await;
    let reminder = reminder.unwrap();
    assert_eq!(reminder.status, 200, "{}", reminder.body);
    assert_eq!(word_after(&text, "username is "), agent_name);

    // Every change is in the admin's audit trail, newest first.
    let audit = admin_api
        .get(&format!("/api/users/{admin_id}/audit?count=50"))
        .await
        .unwrap();
    assert_eq!(audit.status, 200, "{}", audit.body);
    let operations: Vec<&str> = audit.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r: &Value| r["operation"].as_str().unwrap())
        .collect();
    for expected in [
        "user.logged_in",
        "user.create_user",
        "user.edit_user",
        "user.password_reset_by_admin",
        "user.resend_invite",
        "user.username_reminder_by_admin",
    ] {
        assert!(
            operations.contains(&expected),
            "{expected} in {operations:?}"
        );
    }
    assert_eq!(
        operations
            .iter()
            .filter(|o| **o == "user.create_user")
            .count(),
        1
    );
}
