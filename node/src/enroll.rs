//! Enrollment: the bundle central issues for this node (`crvs-central node enroll`), checked and
//! kept as `<data dir>/enrollment.json` (mode 0600). Its presence is what makes a node
//! "enrolled": the sync driver dials central, and the stand-alone tracking-id pool is off (ids
//! are leased by central).
//!
//! The bundle pins central twice: the TLS CA that issued central's QUIC certificate (with the
//! server name to check), and `centralId`, the ed25519 key that signs central's log (every
//! downstream entry). It also carries this node's client certificate, issued for the node's own
//! ed25519 key; the private key never left the node.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use crvs_common::log::{NodeId, NodeSecretKey};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, DnsName, UnixTime};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::store::StoreError;

/// File name of the stored bundle inside the data directory.
pub const ENROLLMENT_FILE: &str = "enrollment.json";

/// The bundle format this node reads.
pub const BUNDLE_VERSION: u32 = 1;

/// Largest bundle accepted, in bytes (two certificates and a few names fit in a few KiB).
pub const BUNDLE_BYTES_MAX: usize = 64 * 1024;

/// Most certificates in `nodeCertPem` (the node's certificate plus intermediates).
pub const NODE_CERT_CHAIN_MAX: usize = 4;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte key follows. A
/// certificate issued for this node's key contains exactly these 44 bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The bundle as central writes it (`{"version":1, "nodeId", ...}`). Nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnrollmentBundle {
    /// Format version, 1.
    pub version: u32,
    /// The node's id (hex ed25519 public key).
    pub node_id: String,
    /// The facility (location UUID) the node serves.
    pub location_id: String,
    /// Central's log-signing key (hex): signs every downstream entry.
    pub central_id: String,
    /// Central's QUIC address, `ip:port` or `host:port`.
    pub central_quic_addr: String,
    /// Central's HTTP base URL.
    pub central_http_url: String,
    /// The DNS name in central's QUIC certificate.
    pub server_name: String,
    /// The CA that issued central's server certificate and this node's client certificate (PEM).
    pub ca_cert_pem: String,
    /// This node's client certificate (PEM; CN = node id, EKU clientAuth).
    pub node_cert_pem: String,
}

/// A checked bundle.
#[derive(Clone)]
pub struct Enrollment {
    bundle: EnrollmentBundle,
    node_id: NodeId,
    location_id: uuid::Uuid,
    central_id: NodeId,
    ca_cert: CertificateDer<'static>,
    node_certs: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for Enrollment {
    /// Names and ids only; certificates are long and add nothing to a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("node_id", &self.node_id)
            .field("central_id", &self.central_id)
            .field("central_quic_addr", &self.bundle.central_quic_addr)
            .field("server_name", &self.bundle.server_name)
            .finish_non_exhaustive()
    }
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Not JSON of the bundle's shape.
    #[error("bundle is not valid JSON of the expected shape: {0}")]
    Json(String),
    /// Too large to be a bundle.
    #[error("bundle is {0} bytes; at most {BUNDLE_BYTES_MAX} expected")]
    TooLarge(usize),
    /// Another format version.
    #[error("bundle version {0} is not supported (expected {BUNDLE_VERSION})")]
    Version(u32),
    /// A field does not parse.
    #[error("bundle field {field}: {problem}")]
    Field {
        /// The field (JSON name).
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The bundle was issued for another node.
    #[error("bundle is for node {bundle}, but this node is {node}")]
    WrongNode {
        /// Node id in the bundle.
        bundle: String,
        /// This node's id.
        node: String,
    },
}

fn field(field: &'static str, problem: impl std::fmt::Display) -> EnrollError {
    EnrollError::Field {
        field,
        problem: problem.to_string(),
    }
}

impl Enrollment {
    /// Parses and checks a bundle's structure: version, ids, addresses and PEMs.
    pub fn parse(text: &str) -> Result<Self, EnrollError> {
        if text.len() > BUNDLE_BYTES_MAX {
            return Err(EnrollError::TooLarge(text.len()));
        }
        let bundle: EnrollmentBundle =
            serde_json::from_str(text).map_err(|e| EnrollError::Json(e.to_string()))?;
        if bundle.version != BUNDLE_VERSION {
            return Err(EnrollError::Version(bundle.version));
        }
        let node_id: NodeId = bundle.node_id.parse().map_err(|e| field("nodeId", e))?;
        let location_id: uuid::Uuid = bundle
            .location_id
            .parse()
            .map_err(|e| field("locationId", e))?;
        let central_id: NodeId = bundle
            .central_id
            .parse()
            .map_err(|e| field("centralId", e))?;
        check_quic_addr(&bundle.central_quic_addr)?;
        check_http_url(&bundle.central_http_url)?;
        DnsName::try_from(bundle.server_name.as_str()).map_err(|e| field("serverName", e))?;
        let ca_cert = CertificateDer::from_pem_slice(bundle.ca_cert_pem.as_bytes())
            .map_err(|e| field("caCertPem", e))?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca_cert.clone())
            .map_err(|e| field("caCertPem", e))?;
        let node_certs = CertificateDer::pem_slice_iter(bundle.node_cert_pem.as_bytes())
            .take(NODE_CERT_CHAIN_MAX + 1)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| field("nodeCertPem", e))?;
        if node_certs.is_empty() || node_certs.len() > NODE_CERT_CHAIN_MAX {
            return Err(field(
                "nodeCertPem",
                format!("expected 1 to {NODE_CERT_CHAIN_MAX} certificates"),
            ));
        }
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(node_id.as_bytes());
        if !node_certs[0]
            .as_ref()
            .windows(spki.len())
            .any(|w| w == spki.as_slice())
        {
            return Err(field(
                "nodeCertPem",
                "the certificate is not issued for the ed25519 key named by nodeId",
            ));
        }
        Ok(Self {
            bundle,
            node_id,
            location_id,
            central_id,
            ca_cert,
            node_certs,
        })
    }

    /// Checks that the bundle was issued for `node` and that its certificate chains to its CA
    /// as a client certificate, valid now.
    pub fn check_for(&self, node: NodeId) -> Result<(), EnrollError> {
        if self.node_id != node {
            return Err(EnrollError::WrongNode {
                bundle: self.node_id.to_string(),
                node: node.to_string(),
            });
        }
        crate::sync_driver::tls::verify_node_cert(self, UnixTime::now())
            .map_err(|e| field("nodeCertPem", e))
    }

    /// Reads `path` if it exists. A file that is there but does not parse is an error, not
    /// "not enrolled".
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("reading enrollment {}", path.display()));
            }
        };
        Self::parse(&text)
            .map(Some)
            .with_context(|| format!("enrollment {} is not valid", path.display()))
    }

    /// The node this bundle is for.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The facility the node serves.
    pub fn location_id(&self) -> uuid::Uuid {
        self.location_id
    }

    /// Central's log-signing identity.
    pub fn central_id(&self) -> NodeId {
        self.central_id
    }

    /// Central's QUIC address as written (`ip:port` or `host:port`).
    pub fn central_quic_addr(&self) -> &str {
        &self.bundle.central_quic_addr
    }

    /// Central's HTTP base URL.
    pub fn central_http_url(&self) -> &str {
        &self.bundle.central_http_url
    }

    /// The name central's certificate must carry.
    pub fn server_name(&self) -> &str {
        &self.bundle.server_name
    }

    /// The CA certificate: the only root the node trusts for central.
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca_cert
    }

    /// The node's certificate chain (leaf first).
    pub fn node_certs(&self) -> &[CertificateDer<'static>] {
        &self.node_certs
    }

    /// The bundle as received.
    pub fn bundle(&self) -> &EnrollmentBundle {
        &self.bundle
    }
}

fn check_quic_addr(addr: &str) -> Result<(), EnrollError> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| field("centralQuicAddr", "expected host:port"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| field("centralQuicAddr", "bad port"))?;
    DnsName::try_from(host).map_err(|e| field("centralQuicAddr", e))?;
    Ok(())
}

fn check_http_url(url: &str) -> Result<(), EnrollError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| field("centralHttpUrl", "expected an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.chars().any(|c| c.is_whitespace()) {
        return Err(field("centralHttpUrl", "missing host"));
    }
    Ok(())
}

/// What `enroll` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollReport {
    /// This node.
    pub node_id: String,
    /// Central's log-signing identity.
    pub central_id: String,
    /// Central's QUIC address.
    pub central_quic_addr: String,
    /// Free self-generated tracking ids dropped (central leases ids from now on).
    pub discarded_pool_ids: u64,
    /// Whether a bundle from the same central was replaced (certificate renewal).
    pub renewed: bool,
}

/// Refusals of `enroll` that are about the node's state, not the bundle.
#[derive(Debug, thiserror::Error)]
pub enum EnrollRefused {
    /// Records made in stand-alone mode carry tracking ids that were never leased nationally.
    #[error(
        "this node holds {0} events created in stand-alone mode; their tracking ids were not leased \
         by central, so it cannot be enrolled. Enroll a fresh node (new data directory)"
    )]
    StandaloneEvents(u64),
    /// Already enrolled with another central.
    #[error("this node is already enrolled with central {0}; refusing a bundle from central {1}")]
    OtherCentral(String, String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks `bundle_text` against this node and stores it, turning the node into an enrolled one.
///
/// Refuses a node holding events created in stand-alone mode. Drops the free, self-generated
/// tracking ids. A node already enrolled may take a new bundle from the same central (certificate
/// renewal). Run it while the node is stopped: a running node picks enrollment up at its next
/// start.
pub async fn enroll(config: &Config, bundle_text: &str) -> anyhow::Result<EnrollReport> {
    let key = crate::keys::load_key_file(&config.node_key_path())
        .context("loading node key; run `crvs-node init` first")?;
    let enrollment = Enrollment::parse(bundle_text)?;
    enrollment.check_for(key.node_id())?;
    // The TLS configuration must build from this bundle and key (key and certificate match).
    crate::sync_driver::tls::client_config(&enrollment, &key)
        .context("building the TLS client configuration from the bundle")?;
    let renewed = match &config.enrollment {
        Some(existing) if existing.central_id() != enrollment.central_id() => {
            return Err(EnrollRefused::OtherCentral(
                existing.central_id().to_string(),
                enrollment.central_id().to_string(),
            )
            .into());
        }
        Some(_) => true,
        None => false,
    };
    let mut discarded_pool_ids = 0;
    if !renewed {
        let store = crate::open_store(config, clone_key(&key))?;
        discarded_pool_ids = store
            .write(|ctx| -> Result<u64, EnrollRefused> {
                let events = ctx.reader().event_count()?;
                if events > 0 {
                    return Err(EnrollRefused::StandaloneEvents(events));
                }
                Ok(ctx.discard_free_pool()?)
            })
            .await?;
    }
    write_private_file(&config.enrollment_path(), bundle_text.trim_end().as_bytes())?;
    Ok(EnrollReport {
        node_id: enrollment.node_id().to_string(),
        central_id: enrollment.central_id().to_string(),
        central_quic_addr: enrollment.central_quic_addr().to_owned(),
        discarded_pool_ids,
        renewed,
    })
}

fn clone_key(key: &NodeSecretKey) -> NodeSecretKey {
    NodeSecretKey::from_bytes(&key.to_bytes())
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the directory),
/// readable by the owner only.
fn write_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
