//! Central's certificate authority and the sync server's TLS: a self-signed ed25519 CA
//! (`ca.pem`/`ca.key`), central's QUIC server certificate for [`SERVER_NAME`] (`server.pem`/
//! `server.key`), and each node's client certificate, issued for the node's own ed25519 public key
//! (its private key never leaves the node). The client-certificate verifier checks the CA chain
//! **and** the enrollment table, so a revoked or unknown node fails the TLS handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use crvs_common::log::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, PublicKeyData, SerialNumber,
    SignatureAlgorithm,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName as TlsName, SignatureScheme};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::store::Store;

/// The DNS name in central's server certificate; nodes check it (bundle `serverName`).
pub const SERVER_NAME: &str = "central.crvs-edge";

/// Common name of central's CA.
const CA_COMMON_NAME: &str = "crvs-edge central CA";

/// Paths of the CA and server certificate files in a data directory.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    /// CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// CA private key (PKCS#8 PEM, mode 0600).
    pub ca_key: PathBuf,
    /// Server certificate (PEM).
    pub server_cert: PathBuf,
    /// Server private key (PKCS#8 PEM, mode 0600).
    pub server_key: PathBuf,
}

impl PkiPaths {
    /// The files under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            ca_cert: data_dir.join("ca.pem"),
            ca_key: data_dir.join("ca.key"),
            server_cert: data_dir.join("server.pem"),
            server_key: data_dir.join("server.key"),
        }
    }
}

/// The CA, loaded, able to issue node certificates.
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

/// A node's ed25519 public key as rcgen's subject key (SPKI = id-Ed25519 with the raw key).
struct NodePublicKey([u8; 32]);

impl PublicKeyData for NodePublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

/// A node certificate just issued.
#[derive(Debug, Clone)]
pub struct NodeCertificate {
    /// The certificate, PEM.
    pub pem: String,
    /// SHA-256 of its DER, hex: what the enrollment table and the verifier key on.
    pub fingerprint: String,
}

/// SHA-256 of a certificate's DER, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The CA's certificate parameters. Rebuilt identically on every load, so the issuer name and key
/// identifier of issued certificates match the stored CA certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = name;
    // The CA signs end-entity certificates only (path length 0).
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn random_serial() -> anyhow::Result<SerialNumber> {
    let mut bytes = crate::keys::random_bytes::<16>()?;
    // A positive, non-zero 127-bit serial (RFC 5280 §4.1.2.2).
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Creates the CA and central's server certificate unless they exist. Idempotent.
pub fn init_pki(data_dir: &Path) -> anyhow::Result<()> {
    let paths = PkiPaths::new(data_dir);
    if !paths.ca_key.exists() {
        let key = KeyPair::generate_for(&PKCS_ED25519).context("generating CA key")?;
        let cert = ca_params().self_signed(&key).context("self-signing CA")?;
        crate::keys::write_private_file(
            &paths.ca_key,
            Zeroizing::new(key.serialize_pem()).as_bytes(),
        )?;
        crate::keys::write_private_file(&paths.ca_cert, cert.pem().as_bytes())?;
    }
    if !paths.server_key.exists() {
        let ca = load_ca(data_dir)?;
        let key = KeyPair::generate_for(&PKCS_ED25519).context("generating server key")?;
        let mut params =
            CertificateParams::new(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])
                .context("server certificate names")?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, SERVER_NAME);
        params.distinguished_name = name;
        params.serial_number = Some(random_serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &ca.issuer)
            .context("signing server certificate")?;
        crate::keys::write_private_file(
            &paths.server_key,
            Zeroizing::new(key.serialize_pem()).as_bytes(),
        )?;
        crate::keys::write_private_file(&paths.server_cert, cert.pem().as_bytes())?;
    }
    Ok(())
}

/// Loads the CA from `data_dir`.
pub fn load_ca(data_dir: &Path) -> anyhow::Result<CertAuthority> {
    let paths = PkiPaths::new(data_dir);
    let key_pem = Zeroizing::new(
        std::fs::read_to_string(&paths.ca_key)
            .with_context(|| format!("reading {}", paths.ca_key.display()))?,
    );
    let key = KeyPair::from_pem(&key_pem).context("parsing CA key")?;
    let ca_pem = std::fs::read_to_string(&paths.ca_cert)
        .with_context(|| format!("reading {}", paths.ca_cert.display()))?;
    Ok(CertAuthority {
        issuer: Issuer::new(ca_params(), key),
        ca_pem,
    })
}

impl CertAuthority {
    /// The CA certificate, PEM (goes into every bundle).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a client certificate for `node_id`'s ed25519 public key: CN = the node id in hex,
    /// EKU clientAuth, signed by the CA.
    pub fn issue_node_certificate(&self, node_id: NodeId) -> anyhow::Result<NodeCertificate> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        // 64 hex characters: exactly the X.509 upper bound of a common name.
        name.push(DnType::CommonName, node_id.to_string());
        params.distinguished_name = name;
        params.serial_number = Some(random_serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&NodePublicKey(*node_id.as_bytes()), &self.issuer)
            .context("signing node certificate")?;
        Ok(NodeCertificate {
            pem: cert.pem(),
            fingerprint: fingerprint(cert.der()),
        })
    }
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))
}

/// Reads a PKCS#8 private key PEM file.
pub fn load_private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("reading {}", path.display()))
}

/// Accepts a client certificate only if it chains to central's CA (webpki) **and** its
/// fingerprint belongs to an enrolled, unrevoked node.
#[derive(Debug)]
pub struct EnrolledNodeVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    store: Store,
}

impl EnrolledNodeVerifier {
    /// A verifier over the CA in `data_dir` and the enrollment table in `store`.
    pub fn new(
        data_dir: &Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
        store: Store,
    ) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in load_certs(&PkiPaths::new(data_dir).ca_cert)? {
            roots.add(cert).context("adding CA certificate")?;
        }
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .context("building client certificate verifier")?;
        Ok(Self { inner, store })
    }
}

impl ClientCertVerifier for EnrolledNodeVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[TlsName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let print = fingerprint(end_entity);
        // One indexed lookup on a read connection (WAL: never blocked by writers).
        match self.store.node_by_fingerprint(&print) {
            Ok(Some(node)) if !node.is_revoked() => Ok(verified),
            Ok(Some(node)) => {
                tracing::warn!(node = %node.node_id.fmt_short(), "handshake refused: node revoked");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Revoked,
                ))
            }
            Ok(None) => {
                tracing::warn!(fingerprint = %print, "handshake refused: certificate not enrolled");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "handshake: reading enrollment");
                Err(rustls::Error::General("enrollment lookup failed".into()))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The sync server's rustls configuration: TLS 1.3 only, ring, central's server certificate,
/// client certificates required and checked by [`EnrolledNodeVerifier`], ALPN `crvs-edge/sync/1`.
pub fn server_tls_config(data_dir: &Path, store: Store) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let paths = PkiPaths::new(data_dir);
    let verifier = EnrolledNodeVerifier::new(data_dir, Arc::clone(&provider), store)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 with ring")?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            load_certs(&paths.server_cert)?,
            load_private_key(&paths.server_key)?,
        )
        .context("server certificate and key")?;
    config.alpn_protocols = vec![crvs_sync::ALPN_SYNC_V1.to_vec()];
    // QUIC has no early data for this protocol: a Hello must not be replayable.
    config.max_early_data_size = 0;
    // No session resumption: a resumed TLS 1.3 session skips the client-certificate verifier,
    // so a node revoked after its first connection would get back in. Every connection runs the
    // full handshake (one extra signature per reconnect, which is rare).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}
