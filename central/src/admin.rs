//! Operator actions behind the CLI (`node enroll|list|revoke`, `client add|list|disable|
//! refresh-secret`), as library functions so tests drive them without a process. Each change to
//! a node or client is one store transaction that also appends the matching feed record.

use anyhow::Context as _;
use crvs_common::log::NodeId;
use crvs_common::scope::ScopeSet;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::pki::SERVER_NAME;
use crate::store::{ClientRow, NewNode, NodeRow, Store};

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

#[cfg(test)]
mod tests {
    use crvs_common::feed::CentralRecord;

    use super::*;
    use crate::testing::{enroll, facility, fixture, locations, node_key};

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
}
