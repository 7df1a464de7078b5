//! A user-space lossy UDP proxy for tests: sits between a QUIC client and server on loopback and
//! applies seeded drop, duplication, reordering, delay, a bandwidth cap and blackouts, per
//! direction. The build machines' kernel has no netem, so bad links are emulated here.
//!
//! One proxy forwards to one upstream address. Each client address gets its own upstream socket,
//! so several clients (nodes) can share a proxy. Packets are scheduled on a virtual "wire" per
//! direction: a packet leaves after the previous one finished serialising at the capped rate, plus
//! the one-way delay and jitter; reordering adds extra delay to a random packet so later ones
//! overtake it. All randomness comes from the seed, so a run's fault pattern is reproducible
//! (timing on a real machine still varies).

use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Largest datagram relayed; QUIC stays far below it.
const DATAGRAM_BYTES_MAX: usize = 65_535;

/// Packets waiting in one direction before new ones are dropped (a router's queue).
pub const QUEUE_PACKETS_MAX: usize = 4096;

/// Faults applied to one direction of the link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkFaults {
    /// Probability of dropping a packet, 0..1.
    pub drop: f64,
    /// Probability of delivering a packet twice, 0..1.
    pub duplicate: f64,
    /// Probability of holding a packet back so later ones overtake it, 0..1.
    pub reorder: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Uniform extra delay in `0..jitter`.
    pub jitter: Duration,
    /// Bandwidth cap in bits per second; 0 means unlimited.
    pub rate_bps: u64,
}

impl LinkFaults {
    /// A perfect link.
    pub fn clean() -> Self {
        Self {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate_bps: 0,
        }
    }

    /// Loss and delay only.
    pub fn lossy(drop: f64, delay: Duration) -> Self {
        Self {
            drop,
            delay,
            ..Self::clean()
        }
    }
}

/// Settings for both directions.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Client → upstream.
    pub up: LinkFaults,
    /// Upstream → client.
    pub down: LinkFaults,
    /// Seed of all random choices.
    pub seed: u64,
}

/// One delivered datagram, recorded while tracing is on ([`LossyProxy::set_trace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracedPacket {
    /// Delivery time, since the proxy started.
    pub at: Duration,
    /// Client → upstream (`true`) or upstream → client.
    pub up: bool,
    /// UDP payload bytes.
    pub bytes: usize,
}

/// Most datagrams a trace holds; later ones are not recorded.
pub const TRACE_PACKETS_MAX: usize = 100_000;

/// Counters, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Packets received from the sender side.
    pub packets_in: u64,
    /// Packets delivered (duplicates included).
    pub packets_out: u64,
    /// Bytes delivered.
    pub bytes_out: u64,
    /// Packets dropped (loss, blackout or full queue).
    pub dropped: u64,
}

#[derive(Debug)]
struct Shared {
    config: ProxyConfig,
    blackout: bool,
    /// One generator per direction, so each direction's fault pattern depends only on its own
    /// packet order (not on how the two directions interleave).
    rng: [u64; 2],
    up: ProxyStats,
    down: ProxyStats,
    /// When each direction's wire is free again (bandwidth cap).
    wire_free: [Instant; 2],
    started: Instant,
    /// Delivered datagrams, while tracing.
    trace: Option<Vec<TracedPacket>>,
}

impl Shared {
    fn next_f64(&mut self, dir: usize) -> f64 {
        // splitmix64
        self.rng[dir] = self.rng[dir].wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng[dir];
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn stats_mut(&mut self, dir: usize) -> &mut ProxyStats {
        if dir == 0 {
            &mut self.up
        } else {
            &mut self.down
        }
    }

    /// Decides the fate of one packet: the delivery times (empty when dropped).
    fn schedule(&mut self, dir: usize, len: usize, now: Instant) -> Vec<Instant> {
        let faults = if dir == 0 {
            self.config.up.clone()
        } else {
            self.config.down.clone()
        };
        self.stats_mut(dir).packets_in += 1;
        if self.blackout || self.next_f64(dir) < faults.drop {
            self.stats_mut(dir).dropped += 1;
            return Vec::new();
        }
        // Serialisation at the capped rate: the wire is busy for len*8/rate seconds.
        let start = self.wire_free[dir].max(now);
        let busy = ((len as u64 * 8).saturating_mul(1_000_000_000))
            .checked_div(faults.rate_bps)
            .map_or(Duration::ZERO, Duration::from_nanos);
        self.wire_free[dir] = start + busy;
        let jitter = faults.jitter.mul_f64(self.next_f64(dir));
        let mut at = start + busy + faults.delay + jitter;
        if self.next_f64(dir) < faults.reorder {
            at += faults
                .delay
                .max(Duration::from_millis(5))
                .mul_f64(0.5 + self.next_f64(dir));
        }
        let mut times = vec![at];
        if self.next_f64(dir) < faults.duplicate {
            times.push(at + Duration::from_millis(1));
        }
        times
    }

    fn delivered(&mut self, dir: usize, len: usize, now: Instant) {
        let stats = self.stats_mut(dir);
        stats.packets_out += 1;
        stats.bytes_out += len as u64;
        let at = now.saturating_duration_since(self.started);
        if let Some(trace) = &mut self.trace
            && trace.len() < TRACE_PACKETS_MAX
        {
            trace.push(TracedPacket {
                at,
                up: dir == 0,
                bytes: len,
            });
        }
    }
}

/// A running proxy. Dropping it stops its tasks.
#[derive(Debug)]
pub struct LossyProxy {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    // Reversed ordering through `std::cmp::Reverse` at the heap.
    at: Instant,
    seq: u64,
    dir: usize,
    client: SocketAddr,
    bytes: Vec<u8>,
}

impl LossyProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream` (which must be on loopback).
    pub async fn start(upstream: SocketAddr, config: ProxyConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            upstream.ip().is_loopback(),
            "the proxy only forwards to loopback addresses"
        );
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let now = Instant::now();
        let shared = Arc::new(Mutex::new(Shared {
            rng: [config.seed, config.seed ^ 0xD1B5_4A32_D192_ED03],
            config,
            blackout: false,
            up: ProxyStats::default(),
            down: ProxyStats::default(),
            wire_free: [now, now],
            started: now,
            trace: None,
        }));
        let (tx, rx) = mpsc::channel::<Pending>(QUEUE_PACKETS_MAX);
        let backs: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
        let tasks = vec![
            tokio::spawn(Self::deliver(
                rx,
                Arc::clone(&front),
                Arc::clone(&backs),
                upstream,
                Arc::clone(&shared),
            )),
            tokio::spawn(Self::front_loop(
                Arc::clone(&front),
                Arc::clone(&shared),
                tx,
                Arc::clone(&backs),
            )),
        ];
        // Each per-client upstream socket's receive loop is spawned by front_loop.
        Ok(Self {
            addr,
            shared,
            tasks,
        })
    }

    /// The address clients should dial instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every packet in both directions while `on`.
    pub fn set_blackout(&self, on: bool) {
        if let Ok(mut s) = self.shared.lock() {
            s.blackout = on;
        }
    }

    /// Replaces the fault settings (the RNG stream continues).
    pub fn set_config(&self, up: LinkFaults, down: LinkFaults) {
        if let Ok(mut s) = self.shared.lock() {
            s.config.up = up;
            s.config.down = down;
        }
    }

    /// Starts recording every delivered datagram (a fresh trace), or stops and discards it.
    pub fn set_trace(&self, on: bool) {
        if let Ok(mut s) = self.shared.lock() {
            s.trace = on.then(Vec::new);
        }
    }

    /// The datagrams delivered since tracing started, leaving an empty trace running.
    pub fn take_trace(&self) -> Vec<TracedPacket> {
        self.shared
            .lock()
            .ok()
            .and_then(|mut s| s.trace.as_mut().map(std::mem::take))
            .unwrap_or_default()
    }

    /// Time since the proxy started, on the clock of [`TracedPacket::at`].
    pub fn elapsed(&self) -> Duration {
        self.shared
            .lock()
            .map(|s| s.started.elapsed())
            .unwrap_or_default()
    }

    /// Counters: (client → upstream, upstream → client).
    pub fn stats(&self) -> (ProxyStats, ProxyStats) {
        self.shared
            .lock()
            .map(|s| (s.up, s.down))
            .unwrap_or_default()
    }

    async fn front_loop(
        front: Arc<UdpSocket>,
        shared: Arc<Mutex<Shared>>,
        tx: mpsc::Sender<Pending>,
        backs: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
    ) {
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
        let mut seq = 0u64;
        loop {
            let Ok((len, client)) = front.recv_from(&mut buf).await else {
                return;
            };
            let known = backs
                .lock()
                .map(|b| b.contains_key(&client))
                .unwrap_or(true);
            if !known {
                let Ok(back) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                let back = Arc::new(back);
                if let Ok(mut b) = backs.lock() {
                    b.insert(client, Arc::clone(&back));
                }
                tokio::spawn(Self::back_loop(
                    back,
                    client,
                    Arc::clone(&shared),
                    tx.clone(),
                ));
            }
            let times = match shared.lock() {
                Ok(mut s) => s.schedule(0, len, Instant::now()),
                Err(_) => return,
            };
            for at in times {
                seq += 1;
                let pending = Pending {
                    at,
                    seq,
                    dir: 0,
                    client,
                    bytes: buf[..len].to_vec(),
                };
                if tx.try_send(pending).is_err()
                    && let Ok(mut s) = shared.lock()
                {
                    s.up.dropped += 1;
                }
            }
        }
    }

    async fn back_loop(
        back: Arc<UdpSocket>,
        client: SocketAddr,
        shared: Arc<Mutex<Shared>>,
        tx: mpsc::Sender<Pending>,
    ) {
        let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
        // Sequence numbers for this direction start high so they never collide with the front's.
        let mut seq = 1u64 << 62;
        loop {
            let Ok((len, _)) = back.recv_from(&mut buf).await else {
                return;
            };
            let times = match shared.lock() {
                Ok(mut s) => s.schedule(1, len, Instant::now()),
                Err(_) => return,
            };
            for at in times {
                seq += 1;
                let pending = Pending {
                    at,
                    seq,
                    dir: 1,
                    client,
                    bytes: buf[..len].to_vec(),
                };
                if tx.try_send(pending).is_err()
                    && let Ok(mut s) = shared.lock()
                {
                    s.down.dropped += 1;
                }
            }
        }
    }

    /// Sends each scheduled packet at its time, in time order.
    async fn deliver(
        mut rx: mpsc::Receiver<Pending>,
        front: Arc<UdpSocket>,
        backs: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
        upstream: SocketAddr,
        shared: Arc<Mutex<Shared>>,
    ) {
        let mut heap: BinaryHeap<std::cmp::Reverse<Pending>> = BinaryHeap::new();
        loop {
            let next_at = heap.peek().map(|p| p.0.at);
            tokio::select! {
                incoming = rx.recv() => match incoming {
                    Some(p) => {
                        if heap.len() < QUEUE_PACKETS_MAX {
                            heap.push(std::cmp::Reverse(p));
                        }
                    }
                    None => return,
                },
                () = async {
                    match next_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let now = Instant::now();
                    while heap.peek().is_some_and(|p| p.0.at <= now) {
                        let Some(std::cmp::Reverse(p)) = heap.pop() else { break };
                        if let Ok(mut s) = shared.lock() {
                            s.delivered(p.dir, p.bytes.len(), now);
                        }
                        if p.dir == 0 {
                            let back = backs.lock().ok().and_then(|b| b.get(&p.client).cloned());
                            if let Some(back) = back {
                                let _ = back.send_to(&p.bytes, upstream).await;
                            }
                        } else {
                            let _ = front.send_to(&p.bytes, p.client).await;
                        }
                    }
                }
            }
        }
    }
}
