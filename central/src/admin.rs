//! Operator actions behind the CLI (`node enroll|list|revoke`, `client add|list|disable|
//! refresh-secret`), as library functions so tests drive them without a process. Each change to
//! a node or client is one store transaction that also appends the matching feed record.

use anyhow::Context as _;
use crvs_common::log::NodeId;
use crvs_common::scope::ScopeSet;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::pki::SERVER_NAME;
use crate::store::{ClientRow, NewNode, NodeRow, Store, UserRow};

/// Version of the enrollment bundle format.
pub const BUNDLE_VERSION: u32 = 1;

/// Scopes of a health facility's system: what the create → notify → read back → search flow needs.
pub const HEALTH_SCOPES: [&str; 4] = [
    "type=record.create&event=birth,death",
    "type=record.notify&event=birth,death",
    "type=record.read&event=birth,death",
    "type=record.search&event=birth,death",
];

/// What `crvs-node enroll --bundle` reads: central's identity and addresses, the CA to trust and
/// the node's client certificate. Holds no secret (the node's private key never left it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollmentBundle {
    /// [`BUNDLE_VERSION`].
    pub version: u32,
    /// The node's id (hex).
    pub node_id: String,
    /// Its facility.
    pub location_id: uuid::Uuid,
    /// Central's log-signing public key (hex): the only signer of downstream entries.
    pub central_id: String,
    /// Where to dial central over QUIC (`host:port`).
    pub central_quic_addr: String,
    /// Central's HTTP base URL.
    pub central_http_url: String,
    /// The name to check in central's server certificate.
    pub server_name: String,
    /// The CA that issued central's server certificate and the node's certificate (PEM).
    pub ca_cert_pem: String,
    /// The node's client certificate (PEM).
    pub node_cert_pem: String,
}

/// A node to enroll.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// The node's id, as `crvs-node init` printed it.
    pub node_id: NodeId,
    /// Its facility (a known location).
    pub location_id: uuid::Uuid,
    /// Display name.
    pub name: String,
}

/// A client's credentials, printed once.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCredentials {
    /// Client id.
    pub client_id: String,
    /// The secret (only its hash is stored).
    pub client_secret: String,
    /// Encoded scopes.
    pub scopes: Vec<String>,
}

/// Records the node and issues its client certificate; returns the bundle to hand to the node.
/// Enrolling an enrolled node again issues a new certificate (the old one stops working).
pub fn enroll_node(
    config: &Config,
    store: &Store,
    request: &EnrollRequest,
) -> anyhow::Result<EnrollmentBundle> {
    anyhow::ensure!(
        request.node_id != store.central_id(),
        "that is central's own id, not a node's"
    );
    anyhow::ensure!(
        !request.name.trim().is_empty() && request.name.chars().count() <= 200,
        "name must be 1 to 200 characters"
    );
    let ca = crate::pki::load_ca(&config.file.data_dir)?;
    let cert = ca.issue_node_certificate(request.node_id)?;
    let node = NewNode {
        node_id: request.node_id,
        name: request.name.trim().to_owned(),
        location_id: request.location_id,
        cert_fingerprint: cert.fingerprint,
    };
    store.write(|w| w.enroll_node(&node))?;
    Ok(EnrollmentBundle {
        version: BUNDLE_VERSION,
        node_id: request.node_id.to_string(),
        location_id: request.location_id,
        central_id: store.central_id().to_string(),
        central_quic_addr: config.public_quic_addr(),
        central_http_url: config.public_http_url(),
        server_name: SERVER_NAME.to_owned(),
        ca_cert_pem: ca.ca_pem().to_owned(),
        node_cert_pem: cert.pem,
    })
}

/// Revokes a node: its certificate fails the handshake from now on, a connected session is
/// ended, and every node learns of it. Returns `false` if it was already revoked.
pub fn revoke_node(store: &Store, node_id: NodeId) -> anyhow::Result<bool> {
    Ok(store.write(|w| w.revoke_node(node_id))?)
}

/// Every enrolled node.
pub fn list_nodes(store: &Store) -> anyhow::Result<Vec<NodeRow>> {
    Ok(store.read(|r| r.nodes())?)
}

fn new_secret() -> anyhow::Result<(String, String)> {
    let secret = hex::encode(crate::keys::random_bytes::<24>()?);
    let hash = crate::auth::hash_secret(&secret)?;
    Ok((secret, hash))
}

/// Adds a system client; its secret hash syncs down to every node.
pub fn add_client(
    store: &Store,
    name: &str,
    scopes: &[String],
    now_ms: u64,
) -> anyhow::Result<ClientCredentials> {
    anyhow::ensure!(!scopes.is_empty(), "give at least one --scope, or --health");
    anyhow::ensure!(
        scopes.len() <= crvs_common::limits::CLIENT_SCOPES_MAX,
        "too many scopes"
    );
    anyhow::ensure!(
        !name.trim().is_empty() && name.chars().count() <= 200,
        "name must be 1 to 200 characters"
    );
    let parsed = ScopeSet::parse_all(scopes)?;
    let (secret, secret_hash) = new_secret()?;
    let row = ClientRow {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.trim().to_owned(),
        secret_hash,
        scopes: parsed.encode(),
        status: "active".into(),
        created_at: crvs_common::event::format_timestamp_ms(now_ms),
    };
    store.write(|w| w.put_client(&row))?;
    Ok(ClientCredentials {
        client_id: row.id,
        client_secret: secret,
        scopes: row.scopes,
    })
}

/// Every system client.
pub fn list_clients(store: &Store) -> anyhow::Result<Vec<ClientRow>> {
    Ok(store.read(|r| r.clients())?)
}

fn change_client(
    store: &Store,
    id: &str,
    change: impl FnOnce(&mut ClientRow),
) -> anyhow::Result<ClientRow> {
    store.write(|w| -> Result<ClientRow, anyhow::Error> {
        let mut client = w
            .reader()
            .client(id)?
            .with_context(|| format!("no client with id {id}"))?;
        change(&mut client);
        w.put_client(&client)?;
        Ok(client)
    })
}

/// Disables a client, at central and (once synced) at every node.
pub fn disable_client(store: &Store, id: &str) -> anyhow::Result<()> {
    change_client(store, id, |c| c.status = "disabled".into()).map(|_| ())
}

/// Gives a client a new secret (the old one stops working once nodes sync).
pub fn refresh_client_secret(store: &Store, id: &str) -> anyhow::Result<ClientCredentials> {
    let (secret, hash) = new_secret()?;
    let client = change_client(store, id, |c| c.secret_hash = hash)?;
    Ok(ClientCredentials {
        client_id: client.id,
        client_secret: secret,
        scopes: client.scopes,
    })
}

/// What `user add` and `user set-password` print once (the password is not stored).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCredentials {
    /// User id.
    pub user_id: uuid::Uuid,
    /// Login name.
    pub username: String,
    /// The password.
    pub password: String,
    /// Role id.
    pub role: String,
}

/// A user to add (`crvs-central user add`).
#[derive(Debug, Clone)]
pub struct NewUser {
    /// First name(s).
    pub firstname: String,
    /// Surname.
    pub surname: String,
    /// Role id (one of the roles configuration's).
    pub role: String,
    /// Primary office (a known location).
    pub office: uuid::Uuid,
    /// Mobile number.
    pub mobile: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Login name; generated from the name (`k.bwalya`) when `None`.
    pub username: Option<String>,
    /// Password; a random one when `None`.
    pub password: Option<String>,
}

/// A random password (24 hex characters) for a new or reset account.
pub(crate) fn new_password() -> anyhow::Result<String> {
    Ok(hex::encode(crate::keys::random_bytes::<12>()?))
}

/// Checks a password's length.
pub(crate) fn check_password(password: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        password.chars().count() >= crvs_common::limits::PASSWORD_CHARS_MIN
            && password.len() <= crvs_common::limits::PASSWORD_BYTES_MAX,
        "a password must have {} to {} characters",
        crvs_common::limits::PASSWORD_CHARS_MIN,
        crvs_common::limits::PASSWORD_BYTES_MAX
    );
    Ok(())
}

/// Adds an active user; the user and the password hash sync to the nodes of the office's area.
pub fn add_user(
    store: &Store,
    roles: &crvs_common::role::RoleSet,
    new: NewUser,
    now_ms: u64,
) -> anyhow::Result<UserCredentials> {
    use crvs_common::user::{User, UserName, UserStatus};
    anyhow::ensure!(
        roles.get(&new.role).is_some(),
        "unknown role {:?}; known: {}",
        new.role,
        roles
            .ids()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let user = User {
        id: uuid::Uuid::new_v4(),
        name: UserName {
            firstname: new.firstname.trim().to_owned(),
            surname: new.surname.trim().to_owned(),
        },
        role: new.role.clone(),
        avatar: None,
        signature: None,
        primary_office_id: new.office,
        administrative_area_id: None,
        device: None,
        full_honorific_name: None,
        user_type: crvs_common::event::UserType::User,
        mobile: new.mobile,
        email: new.email,
        status: UserStatus::Active,
        data: None,
    };
    let problems = user.problems();
    anyhow::ensure!(
        problems.is_empty(),
        "invalid user: {}",
        problems
            .iter()
            .map(|p| format!("{}: {}", p.field(), p.message()))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let password = match new.password {
        Some(p) => p,
        None => new_password()?,
    };
    check_password(&password)?;
    let password_hash = crate::auth::hash_secret(&password)?;
    let created_at = crvs_common::event::format_timestamp_ms(now_ms);
    let username = store.write(|w| -> anyhow::Result<String> {
        let username = pick_username(&w.reader(), &user, new.username.as_deref())?;
        w.put_user(&UserRow {
            user: user.clone(),
            username: username.clone(),
            password_hash,
            created_at,
        })?;
        Ok(username)
    })?;
    Ok(UserCredentials {
        user_id: user.id,
        username,
        password,
        role: new.role,
    })
}

/// The username for `user`: `requested` if valid and free, else one made from the name
/// (`k.bwalya`, then `k.bwalya2`, ...) that is free.
pub(crate) fn pick_username(
    reader: &crate::store::ReadCtx<'_>,
    user: &crvs_common::user::User,
    requested: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(u) = requested {
        crvs_common::user::validate_username(u)
            .map_err(|e| anyhow::anyhow!("username: {}", e.message()))?;
        anyhow::ensure!(
            reader.user_by_username(u)?.is_none(),
            "username {u} is taken"
        );
        return Ok(u.to_owned());
    }
    let mut suffix = None;
    loop {
        let candidate =
            crvs_common::user::username_from_name(&user.name.firstname, &user.name.surname, suffix)
                .map_err(|e| anyhow::anyhow!("username: {}", e.message()))?;
        if reader.user_by_username(&candidate)?.is_none() {
            return Ok(candidate);
        }
        let next = suffix.unwrap_or(1) + 1;
        anyhow::ensure!(next < 10_000, "no free username for this name");
        suffix = Some(next);
    }
}

/// Every user with their username (callers must not print the password hash).
pub fn list_users(store: &Store) -> anyhow::Result<Vec<UserRow>> {
    Ok(store.read(|r| r.users())?)
}

fn change_user(
    store: &Store,
    username: &str,
    change: impl FnOnce(&mut UserRow) -> anyhow::Result<()>,
) -> anyhow::Result<UserRow> {
    store.write(|w| -> anyhow::Result<UserRow> {
        let mut row = w
            .reader()
            .user_by_username(username)?
            .with_context(|| format!("no user {username}"))?;
        change(&mut row)?;
        w.put_user(&row)?;
        Ok(row)
    })
}

/// Sets a user's password (a random one when `None`); the new hash syncs down.
pub fn set_user_password(
    store: &Store,
    username: &str,
    password: Option<String>,
) -> anyhow::Result<UserCredentials> {
    let password = match password {
        Some(p) => p,
        None => new_password()?,
    };
    check_password(&password)?;
    let hash = crate::auth::hash_secret(&password)?;
    let row = change_user(store, username, |row| {
        row.password_hash = hash;
        if row.user.status == crvs_common::user::UserStatus::Pending {
            row.user.status = crvs_common::user::UserStatus::Active;
        }
        Ok(())
    })?;
    Ok(UserCredentials {
        user_id: row.user.id,
        username: row.username,
        password,
        role: row.user.role,
    })
}

/// Activates or deactivates a user, at central and (once synced) at the nodes.
pub fn set_user_status(
    store: &Store,
    username: &str,
    status: crvs_common::user::UserStatus,
) -> anyhow::Result<crvs_common::user::User> {
    let row = change_user(store, username, |row| {
        anyhow::ensure!(
            status != crvs_common::user::UserStatus::Active || !row.password_hash.is_empty(),
            "user {username} has no password yet; set one"
        );
        row.user.status = status;
        Ok(())
    })?;
    Ok(row.user)
}

#[cfg(test)]
mod tests {
    use crvs_common::feed::CentralRecord;

    use super::*;
    use crate::testing::{area, enroll, facility, fixture, locations, node_key};

    fn last_record(store: &Store) -> CentralRecord {
        let head = store.read(|r| r.central_head()).unwrap();
        let entries = store.read(|r| r.central_entries(head.seq - 1, 1)).unwrap();
        serde_json::from_slice(&entries[0].action).unwrap()
    }

    #[test]
    fn init_is_idempotent_and_reloads_locations_only_when_changed() {
        let fx = fixture();
        let again = crate::init(&fx.config, Some(&locations())).unwrap();
        assert!(again.already_initialised);
        assert!(!again.locations_changed);
        assert_eq!(again.central_id, fx.store.central_id().to_string());
        let mut changed = locations();
        changed.locations[0].name = "renamed".into();
        assert!(
            crate::init(&fx.config, Some(&changed))
                .unwrap()
                .locations_changed
        );
        assert!(matches!(
            last_record(&fx.store),
            CentralRecord::Locations(_)
        ));
        for file in [
            "central.key",
            "jwt.key",
            "ca.key",
            "ca.pem",
            "server.key",
            "server.pem",
        ] {
            let path = fx.dir.path().join(file);
            assert!(path.exists(), "{file}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{file}");
            }
        }
    }

    #[test]
    fn enrollment_writes_the_bundle_and_revocation_is_final() {
        let fx = fixture();
        let bundle = enroll(&fx, 1, facility(1));
        let json = serde_json::to_value(&bundle).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "caCertPem",
                "centralHttpUrl",
                "centralId",
                "centralQuicAddr",
                "locationId",
                "nodeCertPem",
                "nodeId",
                "serverName",
                "version"
            ]
        );
        assert_eq!(bundle.version, 1);
        assert_eq!(bundle.central_quic_addr, fx.config.public_quic_addr());
        assert!(
            bundle
                .node_cert_pem
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        let nodes = list_nodes(&fx.store).unwrap();
        assert_eq!(nodes.len(), 1);
        let der =
            rustls::pki_types::pem::PemObject::from_pem_slice(bundle.node_cert_pem.as_bytes())
                .map(|c: rustls::pki_types::CertificateDer<'static>| c.to_vec())
                .unwrap();
        assert_eq!(nodes[0].cert_fingerprint, crate::pki::fingerprint(&der));
        // Unknown location.
        let err = enroll_node(
            &fx.config,
            &fx.store,
            &EnrollRequest {
                node_id: node_key(2).node_id(),
                location_id: uuid::Uuid::from_u128(99),
                name: "x".into(),
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown location"), "{err}");
        // Revocation: recorded once, fed to every node, and the node cannot be re-enrolled.
        let node_id = node_key(1).node_id();
        assert!(revoke_node(&fx.store, node_id).unwrap());
        assert!(matches!(
            last_record(&fx.store),
            CentralRecord::NodeRevoked { .. }
        ));
        assert!(!revoke_node(&fx.store, node_id).unwrap());
        let again = enroll_node(
            &fx.config,
            &fx.store,
            &EnrollRequest {
                node_id,
                location_id: facility(1),
                name: "again".into(),
            },
        );
        assert!(again.is_err());
        assert!(list_nodes(&fx.store).unwrap()[0].is_revoked());
    }

    #[test]
    fn client_changes_sync_their_secret_hash() {
        let fx = fixture();
        let scopes: Vec<String> = HEALTH_SCOPES.map(str::to_owned).to_vec();
        let created = add_client(&fx.store, "clinic", &scopes, 0).unwrap();
        let CentralRecord::Client {
            id,
            secret_hash,
            status,
            ..
        } = last_record(&fx.store)
        else {
            panic!("expected a client record")
        };
        assert_eq!(id, created.client_id);
        assert_eq!(status, "active");
        assert!(crate::auth::verify_secret(
            &secret_hash,
            &created.client_secret
        ));

        let refreshed = refresh_client_secret(&fx.store, &created.client_id).unwrap();
        assert_ne!(refreshed.client_secret, created.client_secret);
        let CentralRecord::Client { secret_hash, .. } = last_record(&fx.store) else {
            panic!("expected a client record")
        };
        assert!(crate::auth::verify_secret(
            &secret_hash,
            &refreshed.client_secret
        ));
        assert!(!crate::auth::verify_secret(
            &secret_hash,
            &created.client_secret
        ));

        disable_client(&fx.store, &created.client_id).unwrap();
        let CentralRecord::Client { status, .. } = last_record(&fx.store) else {
            panic!("expected a client record")
        };
        assert_eq!(status, "disabled");
        assert_eq!(list_clients(&fx.store).unwrap()[0].status, "disabled");
        assert!(disable_client(&fx.store, "nope").is_err());
        assert!(add_client(&fx.store, "x", &[], 0).is_err());
        assert!(add_client(&fx.store, "x", &["not a scope".into()], 0).is_err());
    }

    fn clerk(office: uuid::Uuid) -> NewUser {
        NewUser {
            firstname: "Kalusha".into(),
            surname: "Bwalya".into(),
            role: "HOSPITAL_CLERK".into(),
            office,
            mobile: Some("+260911234567".into()),
            email: None,
            username: None,
            password: None,
        }
    }

    #[test]
    fn users_sync_to_their_office_area_with_their_password_hash() {
        use crvs_common::user::UserStatus;
        let fx = fixture();
        let roles = crvs_common::role::RoleSet::default_set();
        let first = add_user(&fx.store, &roles, clerk(facility(1)), 0).unwrap();
        assert_eq!(first.username, "k.bwalya");
        let CentralRecord::User {
            user,
            username,
            password_hash,
        } = last_record(&fx.store)
        else {
            panic!("expected a user record")
        };
        assert_eq!(username, "k.bwalya");
        assert_eq!(user.id, first.user_id);
        assert!(crate::auth::verify_secret(&password_hash, &first.password));
        // Delivered to the nodes of the office's area only.
        let audience: (String, Option<String>) = fx
            .store
            .read(|r| r.central_log_audience(r.central_head()?.seq))
            .unwrap();
        assert_eq!(audience, ("area".into(), Some(area(1).to_string())));

        // A namesake gets the next free username; a taken or malformed one is refused.
        let second = add_user(&fx.store, &roles, clerk(facility(2)), 0).unwrap();
        assert_eq!(second.username, "k.bwalya2");
        let taken = NewUser {
            username: Some("k.bwalya".into()),
            ..clerk(facility(1))
        };
        assert!(add_user(&fx.store, &roles, taken, 0).is_err());
        for bad in [
            NewUser {
                role: "NO_SUCH_ROLE".into(),
                ..clerk(facility(1))
            },
            NewUser {
                office: area(1),
                ..clerk(facility(1))
            },
            NewUser {
                mobile: None,
                ..clerk(facility(1))
            },
            NewUser {
                password: Some("short".into()),
                ..clerk(facility(1))
            },
            NewUser {
                username: Some("No Spaces".into()),
                ..clerk(facility(1))
            },
        ] {
            let head = fx.store.read(|r| r.central_head()).unwrap();
            assert!(add_user(&fx.store, &roles, bad, 0).is_err());
            assert_eq!(
                fx.store.read(|r| r.central_head()).unwrap(),
                head,
                "nothing written"
            );
        }

        let changed = set_user_password(&fx.store, "k.bwalya", None).unwrap();
        let CentralRecord::User { password_hash, .. } = last_record(&fx.store) else {
            panic!("expected a user record")
        };
        assert!(crate::auth::verify_secret(
            &password_hash,
            &changed.password
        ));
        let user = set_user_status(&fx.store, "k.bwalya", UserStatus::Deactivated).unwrap();
        assert_eq!(user.status, UserStatus::Deactivated);
        let CentralRecord::User { user, .. } = last_record(&fx.store) else {
            panic!("expected a user record")
        };
        assert_eq!(user.status, UserStatus::Deactivated);
        assert_eq!(list_users(&fx.store).unwrap().len(), 2);
        assert!(set_user_status(&fx.store, "nobody", UserStatus::Active).is_err());
    }
}
