//! An in-process central for the driver tests: a quinn server on `127.0.0.1:0` with rcgen-made
//! certificates (a CA, central's server certificate, one client certificate per node) that runs
//! `crvs_sync::engine::CentralSession` over an in-memory `CentralStore`.
//!
//! Test knobs: `cut()` closes every connection (a link cut), `hold_entries` makes central sit on
//! incoming entries (a backlog that stays unacknowledged), `apply_delay` slows each batch down.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crvs_common::feed::CentralRecord;
use crvs_common::hlc::Hlc;
use crvs_common::ids::TrackingId;
use crvs_common::log::{EntryHash, LogEntry, LogHead, NodeId, NodeSecretKey};
use crvs_sync::engine::{CentralSession, CentralStore, NodeRecord, StoreFault, SyncConfig};
use crvs_sync::wire::{Hello, Message, Reject};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ED25519, PublicKeyData,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::{Notify, mpsc};

/// The name in central's server certificate.
pub(crate) const SERVER_NAME: &str = "central.crvs-edge";

/// A test certificate authority.
pub(crate) struct Pki {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) ca_pem: String,
    pub(crate) ca_der: CertificateDer<'static>,
}

/// An ed25519 public key as rcgen wants it (a node's key: its private half stays at the node).
struct RawEd25519([u8; 32]);

impl PublicKeyData for RawEd25519 {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &PKCS_ED25519
    }
}

impl Pki {
    pub(crate) fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
        }
    }

    /// Central's server certificate and key.
    pub(crate) fn server_cert(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params
            .distinguished_name
            .push(DnType::CommonName, SERVER_NAME);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), der)
    }

    /// A client certificate for a node's ed25519 key (CN = node id hex, EKU clientAuth).
    pub(crate) fn node_cert(&self, node: NodeId) -> (String, CertificateDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .distinguished_name
            .push(DnType::CommonName, node.to_string());
        let cert = params
            .signed_by(&RawEd25519(*node.as_bytes()), &self.issuer)
            .unwrap();
        (cert.pem(), cert.der().clone())
    }
}

/// Builds a bundle's JSON.
pub(crate) fn bundle_json(
    node: NodeId,
    central: NodeId,
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    node_cert_pem: &str,
) -> String {
    serde_json::json!({
        "version": 1,
        "nodeId": node.to_string(),
        "locationId": "2f2a4f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "centralId": central.to_string(),
        "centralQuicAddr": addr.to_string(),
        "centralHttpUrl": "http://127.0.0.1:7000",
        "serverName": server_name,
        "caCertPem": ca_pem,
        "nodeCertPem": node_cert_pem,
    })
    .to_string()
}

/// What central holds, in memory.
pub(crate) struct MemCentral {
    key: NodeSecretKey,
    head: LogHead,
    /// Central's log: each entry with the one node it is for (`None`: every node).
    pub(crate) feed: Vec<(Option<NodeId>, LogEntry)>,
    pub(crate) nodes: HashMap<NodeId, NodeRecord>,
    pub(crate) entries: HashMap<NodeId, BTreeMap<u64, LogEntry>>,
    pub(crate) certs: HashMap<Vec<u8>, NodeId>,
    pub(crate) down_acks: HashMap<NodeId, u64>,
    /// Every `Hello` with what central had acknowledged when it arrived.
    pub(crate) hellos: Vec<(Hello, u64)>,
    pub(crate) rejects: Vec<Reject>,
    /// Per connection: what central had acknowledged when its first `Hello` arrived, and the
    /// seq of the first entry received on it.
    pub(crate) connections: Vec<(Option<u64>, Option<u64>)>,
    /// Entries received in `Entries` messages, duplicates included.
    pub(crate) entries_received: usize,
    /// Ids granted when a node reports fewer free ids than `pool_low_water`.
    pub(crate) pool_grant: u32,
    pub(crate) pool_low_water: u32,
    next_tracking_index: u64,
}

impl MemCentral {
    fn new(key: NodeSecretKey) -> Self {
        Self {
            key,
            head: LogHead::GENESIS,
            feed: Vec::new(),
            nodes: HashMap::new(),
            entries: HashMap::new(),
            certs: HashMap::new(),
            down_acks: HashMap::new(),
            hellos: Vec::new(),
            rejects: Vec::new(),
            connections: Vec::new(),
            entries_received: 0,
            pool_grant: 0,
            pool_low_water: 0,
            next_tracking_index: 1_000_000,
        }
    }

    /// Central's identity.
    pub(crate) fn central_id(&self) -> NodeId {
        self.key.node_id()
    }

    /// Appends a record to central's log.
    pub(crate) fn publish(
        &mut self,
        to: Option<NodeId>,
        record: &CentralRecord,
        event_id: uuid::Uuid,
        crdt_change: Option<Vec<u8>>,
    ) -> LogEntry {
        let entry = LogEntry::sign(
            &self.key,
            self.head.seq + 1,
            self.head.hash,
            Hlc {
                wall_ms: crate::store::wall_ms(),
                counter: 0,
            },
            event_id,
            serde_json::to_vec(record).unwrap(),
            crdt_change,
        )
        .unwrap();
        self.head = LogHead {
            seq: entry.seq,
            hash: entry.hash(),
        };
        self.feed.push((to, entry.clone()));
        entry
    }

    /// The entries central applied for `node`, in order.
    pub(crate) fn applied(&self, node: NodeId) -> Vec<LogEntry> {
        self.entries
            .get(&node)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn acked(&self, node: NodeId) -> u64 {
        self.nodes.get(&node).map_or(0, |r| r.acked.seq)
    }
}

impl CentralStore for MemCentral {
    fn node(&self, node_id: NodeId) -> Result<Option<NodeRecord>, StoreFault> {
        Ok(self.nodes.get(&node_id).cloned())
    }

    fn stored_hash(&self, node_id: NodeId, seq: u64) -> Result<Option<EntryHash>, StoreFault> {
        Ok(self
            .entries
            .get(&node_id)
            .and_then(|m| m.get(&seq))
            .map(LogEntry::hash))
    }

    fn apply_entries(
        &mut self,
        node_id: NodeId,
        entries: &[LogEntry],
    ) -> Result<(LogHead, Vec<Reject>), StoreFault> {
        let log = self.entries.entry(node_id).or_default();
        for e in entries {
            log.insert(e.seq, e.clone());
        }
        let record = self
            .nodes
            .get_mut(&node_id)
            .ok_or_else(|| StoreFault("unknown node".into()))?;
        if let Some(last) = entries.last() {
            record.acked = LogHead {
                seq: last.seq,
                hash: last.hash(),
            };
        }
        Ok((record.acked, Vec::new()))
    }

    fn record_reject(
        &mut self,
        _node_id: NodeId,
        _entry: &LogEntry,
        reject: &Reject,
    ) -> Result<(), StoreFault> {
        self.rejects.push(reject.clone());
        Ok(())
    }

    fn record_fork(&mut self, node_id: NodeId, _entry: &LogEntry) -> Result<(), StoreFault> {
        if let Some(r) = self.nodes.get_mut(&node_id) {
            r.quarantined = true;
        }
        Ok(())
    }

    fn record_contact(
        &mut self,
        node_id: NodeId,
        hello: &Hello,
        _now_ms: u64,
    ) -> Result<(), StoreFault> {
        let acked = self.acked(node_id);
        self.hellos.push((hello.clone(), acked));
        Ok(())
    }

    fn ensure_pool(&mut self, node_id: NodeId, pool_free: u32) -> Result<(), StoreFault> {
        if pool_free >= self.pool_low_water || self.pool_grant == 0 {
            return Ok(());
        }
        let ids = (0..self.pool_grant)
            .map(|i| TrackingId::from_index(self.next_tracking_index + u64::from(i)).to_string())
            .collect();
        self.next_tracking_index += u64::from(self.pool_grant);
        let record = CentralRecord::PoolGrant {
            node_id: node_id.to_string(),
            tracking_ids: ids,
        };
        self.publish(Some(node_id), &record, uuid::Uuid::nil(), None);
        Ok(())
    }

    fn feed_after(
        &self,
        node_id: NodeId,
        cursor: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<LogEntry>, u64, bool), StoreFault> {
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut to_cursor = cursor;
        for (to, entry) in self.feed.iter().filter(|(_, e)| e.seq > cursor) {
            if items.len() >= max_items || bytes >= max_bytes {
                break;
            }
            if to.is_none_or(|n| n == node_id) {
                bytes += entry.encode().len();
                items.push(entry.clone());
            }
            to_cursor = entry.seq;
        }
        Ok((items, to_cursor, self.head.seq > to_cursor))
    }

    fn record_down_ack(&mut self, node_id: NodeId, cursor: u64) -> Result<(), StoreFault> {
        self.down_acks.insert(node_id, cursor);
        Ok(())
    }
}

/// A running test central.
pub(crate) struct TestCentral {
    pub(crate) addr: SocketAddr,
    pub(crate) pki: Pki,
    pub(crate) state: Arc<Mutex<MemCentral>>,
    /// While set, central does not process incoming entries (they wait in the session).
    pub(crate) hold_entries: Arc<AtomicBool>,
    /// Delay before each `Entries` message is processed.
    pub(crate) apply_delay: Arc<Mutex<Duration>>,
    feed_grew: Arc<Notify>,
    released: Arc<Notify>,
    conns: Arc<Mutex<Vec<quinn::Connection>>>,
    endpoint: quinn::Endpoint,
}

impl TestCentral {
    pub(crate) fn start() -> Self {
        let pki = Pki::new("test CA");
        let central_key = NodeSecretKey::from_bytes(&[0xce; 32]);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let (cert, key) = pki.server_cert();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .unwrap();
        tls.alpn_protocols = vec![crvs_sync::ALPN_SYNC_V1.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(0u32.into());
        server.transport_config(Arc::new(transport));
        let endpoint =
            quinn::Endpoint::server(server, SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let central = Self {
            addr: endpoint.local_addr().unwrap(),
            pki,
            state: Arc::new(Mutex::new(MemCentral::new(central_key))),
            hold_entries: Arc::new(AtomicBool::new(false)),
            apply_delay: Arc::new(Mutex::new(Duration::ZERO)),
            feed_grew: Arc::new(Notify::new()),
            released: Arc::new(Notify::new()),
            conns: Arc::new(Mutex::new(Vec::new())),
            endpoint: endpoint.clone(),
        };
        let ctx = ServerCtx {
            state: Arc::clone(&central.state),
            hold_entries: Arc::clone(&central.hold_entries),
            apply_delay: Arc::clone(&central.apply_delay),
            feed_grew: Arc::clone(&central.feed_grew),
            released: Arc::clone(&central.released),
            conns: Arc::clone(&central.conns),
        };
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Ok(conn) = incoming.await {
                        ctx.conns.lock().unwrap().push(conn.clone());
                        serve(conn, ctx).await;
                    }
                });
            }
        });
        central
    }

    pub(crate) fn central_id(&self) -> NodeId {
        self.state.lock().unwrap().central_id()
    }

    /// Enrolls a node: records it and issues its certificate. Returns the bundle's JSON.
    pub(crate) fn enroll(&self, node: NodeId) -> String {
        let (pem, der) = self.pki.node_cert(node);
        let mut state = self.state.lock().unwrap();
        state.certs.insert(der.to_vec(), node);
        state.nodes.insert(
            node,
            NodeRecord {
                acked: LogHead::GENESIS,
                revoked: false,
                quarantined: false,
            },
        );
        bundle_json(
            node,
            state.central_id(),
            self.addr,
            SERVER_NAME,
            &self.pki.ca_pem,
            &pem,
        )
    }

    /// Tells open sessions that the feed grew.
    pub(crate) fn feed_grew(&self) {
        self.feed_grew.notify_waiters();
    }

    /// Lets held entries through.
    pub(crate) fn release_entries(&self) {
        self.hold_entries.store(false, Ordering::SeqCst);
        self.released.notify_waiters();
    }

    /// Closes every open connection, as a link cut would.
    pub(crate) fn cut(&self) {
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.close(9u32.into(), b"cut");
        }
    }

    pub(crate) fn connections(&self) -> usize {
        self.state.lock().unwrap().connections.len()
    }
}

impl Drop for TestCentral {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"test over");
    }
}

#[derive(Clone)]
struct ServerCtx {
    state: Arc<Mutex<MemCentral>>,
    hold_entries: Arc<AtomicBool>,
    apply_delay: Arc<Mutex<Duration>>,
    feed_grew: Arc<Notify>,
    released: Arc<Notify>,
    conns: Arc<Mutex<Vec<quinn::Connection>>>,
}

/// One node's connection: identify it by its certificate, then run a `CentralSession`.
async fn serve(conn: quinn::Connection, ctx: ServerCtx) {
    let node = {
        let Some(identity) = conn.peer_identity() else {
            return;
        };
        let Ok(certs) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
            return;
        };
        let state = ctx.state.lock().unwrap();
        match certs.first().and_then(|c| state.certs.get(c.as_ref())) {
            Some(node) => *node,
            None => return,
        }
    };
    let Ok((mut send, recv)) = conn.accept_bi().await else {
        return;
    };
    let connection_idx = {
        let mut state = ctx.state.lock().unwrap();
        state.connections.push((None, None));
        state.connections.len() - 1
    };
    let (tx, mut rx) = mpsc::channel(super::FRAMES_QUEUED_MAX);
    let _reader = super::AbortOnDrop(tokio::spawn(super::read_frames(recv, tx)));
    let mut session = CentralSession::new(SyncConfig::for_tests(), node);
    loop {
        let msg = tokio::select! {
            m = rx.recv() => match m {
                Some(Ok((m, _))) => Some(m),
                _ => return,
            },
            () = ctx.feed_grew.notified() => None,
        };
        if let Some(Message::Entries(batch)) = &msg {
            while ctx.hold_entries.load(Ordering::SeqCst) {
                let released = ctx.released.notified();
                if !ctx.hold_entries.load(Ordering::SeqCst) {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), released).await;
            }
            let delay = *ctx.apply_delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let mut state = ctx.state.lock().unwrap();
            state.entries_received += batch.entries.len();
            let first = &mut state.connections[connection_idx].1;
            if first.is_none() {
                *first = batch.entries.first().map(|e| e.seq);
            }
        }
        if let Some(Message::Hello(_)) = &msg {
            let mut state = ctx.state.lock().unwrap();
            let acked = state.acked(node);
            state.connections[connection_idx].0.get_or_insert(acked);
        }
        let (result, out) = {
            let mut state = ctx.state.lock().unwrap();
            let now_ms = crate::store::wall_ms();
            let result = match msg {
                Some(m) => session.handle_message(now_ms, m, &mut *state),
                None => session.notify_feed(&*state),
            };
            let out: Vec<Message> = std::iter::from_fn(|| session.poll_transmit()).collect();
            (result, out)
        };
        for m in out {
            if send.write_all(&m.encode_frame()).await.is_err() {
                return;
            }
        }
        if result.is_err() || session.is_closed() {
            let _ = send.finish();
            // Let the goodbye reach the node before the connection goes.
            tokio::time::sleep(Duration::from_millis(100)).await;
            conn.close(0u32.into(), b"session over");
            return;
        }
    }
}
