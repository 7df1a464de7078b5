//! The node's QUIC client configuration: TLS 1.3 only, central's CA from the bundle as the only
//! root, client authentication with the bundle's certificate and the node's own ed25519 key, the
//! sync ALPN, and transport timers for clinic links (~1 s RTT, blackouts of several seconds).
//! Every security-relevant option is spelled out rather than left to library defaults.

use std::sync::Arc;
use std::time::Duration;

use crvs_common::log::NodeSecretKey;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};

use crate::enroll::Enrollment;

/// First RTT estimate before any sample: clinic links run near 1 s, and a low guess makes the
/// first handshake retransmit needlessly.
pub const INITIAL_RTT: Duration = Duration::from_secs(1);

/// Keep-alive interval: keeps NAT bindings open and notices a dead link between heartbeats.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The connection is dropped after this long without hearing from central: longer than a 10 s
/// blackout, so a short cut does not cost a new handshake.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The rustls crypto provider: ring (no aws-lc, no C toolchain beyond SQLite's).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The root store holding only the bundle's CA.
fn roots(enrollment: &Enrollment) -> Result<rustls::RootCertStore, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(enrollment.ca_cert().clone())
        .map_err(|e| rustls::Error::General(format!("CA certificate: {e}")))?;
    Ok(roots)
}

/// The rustls client configuration (also used to validate a bundle at enrollment).
pub(crate) fn rustls_client_config(
    enrollment: &Enrollment,
    key: &NodeSecretKey,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let der = crate::auth::ed25519_pkcs8_der(key);
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(enrollment)?)
        .with_client_auth_cert(enrollment.node_certs().to_vec(), key_der)?;
    config.alpn_protocols = vec![crvs_sync::ALPN_SYNC_V1.to_vec()];
    // 0-RTT data can be replayed; the protocol's first message is not meant to be.
    config.enable_early_data = false;
    Ok(config)
}

/// Transport parameters for clinic links. Central opens no streams towards the node.
pub(crate) fn transport_config() -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport
        .initial_rtt(INITIAL_RTT)
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0));
    // 30 s is far below the VarInt bound.
    if let Ok(idle) = IdleTimeout::try_from(IDLE_TIMEOUT) {
        transport.max_idle_timeout(Some(idle));
    }
    transport
}

/// The quinn client configuration for dialling central.
/// Public so cross-crate tests can speak the protocol as an enrolled node would.
pub fn client_config(
    enrollment: &Enrollment,
    key: &NodeSecretKey,
) -> anyhow::Result<quinn::ClientConfig> {
    let tls = rustls_client_config(enrollment, key)?;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// Checks that the bundle's node certificate chains to its CA, for client authentication, at
/// `now` (what central's verifier will check).
pub(crate) fn verify_node_cert(
    enrollment: &Enrollment,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(enrollment)?),
        provider(),
    )
    .build()
    .map_err(|e| rustls::Error::General(e.to_string()))?;
    let (leaf, intermediates) = enrollment
        .node_certs()
        .split_first()
        .ok_or_else(|| rustls::Error::General("no node certificate".into()))?;
    verifier.verify_client_cert(leaf, intermediates, now)?;
    Ok(())
}
