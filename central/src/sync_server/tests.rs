//! Real QUIC handshakes on 127.0.0.1: an enrolled node connects with its bundle and syncs; an
//! unknown node (a CA-signed certificate never enrolled), a certificate from another CA and a
//! revoked node fail the handshake; a node revoked while connected is sent away.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crvs_common::feed::CentralRecord;
use crvs_common::log::{LogHead, NodeSecretKey};
use crvs_sync::wire::{Entries, Hello, Message};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::testing::{NodeWriter, enroll, facility, fixture, node_key};

/// PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410), as the node builds its TLS key.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn client_endpoint(ca_pem: &str, cert_pem: &str, key: &NodeSecretKey) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(key.to_bytes().as_ref());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
        )
        .unwrap();
    tls.alpn_protocols = vec![crvs_sync::ALPN_SYNC_V1.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(super::transport_config()));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

struct Link {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _conn: quinn::Connection,
}

impl Link {
    async fn send(&mut self, msg: &Message) -> anyhow::Result<()> {
        self.send.write_all(&msg.encode_frame()).await?;
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<Message> {
        let mut len = [0u8; 4];
        self.recv.read_exact(&mut len).await?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.recv.read_exact(&mut body).await?;
        Ok(Message::decode(&body)?)
    }
}

/// Connects and says `Hello`; returns the link and central's first answer.
async fn hello(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    key: &NodeSecretKey,
    head: LogHead,
    pool_free: u32,
) -> anyhow::Result<(Link, Message)> {
    let conn = endpoint.connect(addr, crate::pki::SERVER_NAME)?.await?;
    let (send, recv) = conn.open_bi().await?;
    let mut link = Link {
        send,
        recv,
        _conn: conn,
    };
    let hello = Message::Hello(Hello {
        version: crvs_sync::WIRE_VERSION,
        node_id: key.node_id(),
        head,
        down_cursor: 0,
        pool_free,
        backlog_entries: head.seq,
        backlog_bytes: 0,
        oldest_unacked_ms: 0,
        rtt_ms: 1,
    });
    link.send(&hello).await?;
    let answer = tokio::time::timeout(Duration::from_secs(10), link.recv()).await??;
    Ok((link, answer))
}

/// The handshake failure's text; panics if the connection was accepted.
fn refused(result: anyhow::Result<(Link, Message)>) -> String {
    match result {
        Ok((_, answer)) => panic!("connection accepted, central answered {answer:?}"),
        Err(e) => {
            let text = format!("{e:#}");
            assert!(text.contains("cryptographic handshake failed"), "{text}");
            text
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_node_syncs_and_others_fail_the_handshake() {
    let fx = fixture();
    let bundle = enroll(&fx, 1, facility(1));
    assert_eq!(bundle.server_name, "central.crvs-edge");
    assert_eq!(bundle.central_id, fx.store.central_id().to_string());
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let quic = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = quic.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::run(fx.config.clone(), http, quic, async move {
        let _ = stop_rx.await;
    }));

    // The enrolled node: Hello → Welcome with locations and a pool grant; entries → Ack.
    let key = node_key(1);
    let endpoint = client_endpoint(&bundle.ca_cert_pem, &bundle.node_cert_pem, &key);
    let (mut link, welcome) = hello(&endpoint, addr, &key, LogHead::GENESIS, 0)
        .await
        .unwrap();
    let Message::Welcome(welcome) = welcome else {
        panic!("expected Welcome, got {welcome:?}")
    };
    assert_eq!(welcome.acked, LogHead::GENESIS);
    let grant = welcome
        .down
        .items
        .iter()
        .find_map(|e| match serde_json::from_slice(&e.action).unwrap() {
            CentralRecord::PoolGrant { tracking_ids, .. } => Some(tracking_ids),
            _ => None,
        })
        .expect("a pool grant in the Welcome");
    assert_eq!(grant.len(), 20);
    let mut writer = NodeWriter::new(1, facility(1));
    let (event, create) = writer.create(&grant[0]);
    let notify = writer.notify(&event, serde_json::json!({"child.dob": "2024-06-03"}));
    link.send(&Message::Entries(Entries {
        entries: vec![create, notify],
    }))
    .await
    .unwrap();
    let ack = loop {
        match link.recv().await.unwrap() {
            Message::Ack(ack) => break ack,
            Message::Down(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(ack.acked, writer.head);
    assert!(ack.rejects.is_empty());
    let stored = fx
        .store
        .read(move |r| r.index_entry(event.id))
        .unwrap()
        .unwrap();
    assert_eq!(stored.tracking_id, grant[0]);

    // A certificate from central's CA for a node that was never enrolled.
    let stranger = node_key(7);
    let ca = crate::pki::load_ca(fx.dir.path()).unwrap();
    let unenrolled = ca.issue_node_certificate(stranger.node_id()).unwrap();
    let endpoint_7 = client_endpoint(&bundle.ca_cert_pem, &unenrolled.pem, &stranger);
    let why = refused(hello(&endpoint_7, addr, &stranger, LogHead::GENESIS, 0).await);
    assert!(why.contains("ApplicationVerificationFailure"), "{why}");

    // A certificate for an enrolled node, from another CA (another central's data dir).
    let elsewhere = fixture();
    let foreign = enroll(&elsewhere, 1, facility(1));
    let endpoint_f = client_endpoint(&bundle.ca_cert_pem, &foreign.node_cert_pem, &key);
    let why = refused(hello(&endpoint_f, addr, &key, LogHead::GENESIS, 0).await);
    // Same CA name, another key: the chain does not verify.
    assert!(why.contains("BadSignature"), "{why}");

    // Revoked while connected: the open session is told goodbye; new handshakes fail.
    crate::admin::revoke_node(&fx.store, key.node_id()).unwrap();
    let goodbye = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match link.recv().await {
                Ok(Message::Goodbye(g)) => break Some(g),
                Ok(_) => continue,
                Err(_) => break None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(goodbye.map(|g| g.reason).as_deref(), Some("revoked"));
    let why = refused(hello(&endpoint, addr, &key, writer.head, 100).await);
    assert!(why.contains("Revoked"), "{why}");

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
