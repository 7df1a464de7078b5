//! Users and login in tests: users made at central with its CLI, nodes with a configuration of
//! the test's choosing, waiting for a user to sync down, and the two-step login.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::central::{CentralProcess, eventually};
use crate::{Api, NodeProcess, Reply};

/// How long a user made at central may take to reach a node.
pub const USER_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a node enrolled at `location` with `config` (TOML) beside its data directory.
pub fn node_with_config(central: &CentralProcess, location: &str, config: &str) -> NodeProcess {
    let config = config.to_owned();
    NodeProcess::start_with(|data_dir, node_id| {
        let dir = data_dir.parent().expect("data dir has a parent");
        std::fs::write(dir.join("node.toml"), &config)?;
        let bundle = central.enroll(node_id, location, central.quic(), data_dir)?;
        crate::cli_json(data_dir, &["enroll", "--bundle", &bundle.to_string_lossy()])?;
        Ok(())
    })
    .unwrap()
}

/// Waits until `node` holds `username` with `status`.
pub async fn wait_for_user(node: &NodeProcess, username: &str, status: &str) {
    let data_dir = node.data_dir();
    eventually(
        &format!("user {username} ({status}) at the node"),
        USER_SYNC_TIMEOUT,
        || {
            let data_dir = data_dir.clone();
            async move {
                let users = crate::cli_json(&data_dir, &["user", "list"])?;
                let found = users.as_array().into_iter().flatten().any(|u| {
                    u["username"] == username && u["status"] == status && u["hasPassword"] == true
                });
                Ok(found.then_some(()))
            }
        },
    )
    .await
    .unwrap();
}

/// The claims of a JWT, decoded without checking it (the node checked it).
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&base64url(payload)).expect("JSON claims")
}

/// Unpadded base64url (RFC 4648 §5), as JWTs encode their parts.
fn base64url(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= value(c) << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// `POST /auth/authenticate` at a node.
pub async fn authenticate(node: &NodeProcess, username: &str, password: &str) -> Reply {
    authenticate_at(&node.anonymous(), username, password).await
}

/// `POST /auth/authenticate` at the server `api` talks to (node or central).
pub async fn authenticate_at(api: &Api, username: &str, password: &str) -> Reply {
    api.post(
        "/auth/authenticate",
        &json!({"username": username, "password": password}),
    )
    .await
    .unwrap()
}

/// Logs in at a node with a known code (`000000` in demo mode); the token.
pub async fn login(node: &NodeProcess, username: &str, password: &str, code: &str) -> String {
    let reply = authenticate(node, username, password).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let nonce = reply.body["nonce"].as_str().unwrap().to_owned();
    verify_code_at(&node.anonymous(), &nonce, code).await
}

/// `POST /auth/verifyCode`, which must succeed; the token.
pub async fn verify_code_at(api: &Api, nonce: &str, code: &str) -> String {
    let verified = api
        .post("/auth/verifyCode", &json!({"nonce": nonce, "code": code}))
        .await
        .unwrap();
    assert_eq!(verified.status, 200, "{}", verified.body);
    verified.body["token"].as_str().unwrap().to_owned()
}

/// Adds a user at central (`crvs-central user add`, mobile +260911234567); the output has
/// `userId`, `username`, `password` and `role`.
pub fn add_user(
    central: &CentralProcess,
    first: &str,
    last: &str,
    role: &str,
    office: &str,
) -> Value {
    central
        .cli(&[
            "user",
            "add",
            "--firstname",
            first,
            "--surname",
            last,
            "--role",
            role,
            "--office",
            office,
            "--mobile",
            "+260911234567",
        ])
        .unwrap()
}

/// The transport: a script that appends `recipient<TAB>message` lines to `outbox_file`.
pub fn transport_config(outbox_file: &Path) -> String {
    let script = outbox_file.with_extension("sh");
    std::fs::write(
        &script,
        format!(
            "printf '%s\\t' \"$CRVS_RECIPIENT\" >> '{path}'\ncat >> '{path}'\necho >> '{path}'\n",
            path = outbox_file.display()
        ),
    )
    .unwrap();
    format!(
        "two_factor = true\nnotification_command = [\"sh\", '{}']\n",
        script.display()
    )
}

/// The last login code sent to `recipient` through [`transport_config`]'s script.
pub fn code_in(outbox_file: &Path, recipient: &str) -> Option<String> {
    let message = messages_to(outbox_file, recipient).pop()?;
    let at = message.find("code is ")? + "code is ".len();
    Some(message.get(at..at + 6)?.to_owned())
}

/// Every message sent to `recipient` through [`transport_config`]'s script, oldest first.
pub fn messages_to(outbox_file: &Path, recipient: &str) -> Vec<String> {
    let text = std::fs::read_to_string(outbox_file).unwrap_or_default();
    // Only whole lines: the script appends recipient, text and newline in three writes, so the
    // last line may still be in progress.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter_map(|l| l.strip_prefix(recipient)?.strip_prefix('\t'))
        .map(str::to_owned)
        .collect()
}

/// Logs `user` (as `crvs-central user add` printed it) in at the central `api` talks to, with
/// demo mode's code (`two_factor = false`); the API with the user's token.
pub async fn login_at_central(api: &Api, user: &Value) -> Api {
    let reply = authenticate_at(
        api,
        user["username"].as_str().unwrap(),
        user["password"].as_str().unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = verify_code_at(api, reply.body["nonce"].as_str().unwrap(), "000000").await;
    api.with_token(Some(&token))
}
