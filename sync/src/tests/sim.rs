//! Deterministic simulation of the sync protocol: central and 3–5 nodes on faulty links.
//!
//! Everything runs in one thread on a virtual clock: a priority queue of events keyed by
//! (virtual ms, sequence number), one seeded RNG per concern, `BTreeMap`s only. Messages travel
//! as bytes through [`Message::encode`] / [`Message::decode`] and may be dropped, duplicated,
//! delayed and reordered; links are partitioned (both ways or one way, and a partition longer
//! than the idle timeout closes the connection); clocks jump; nodes and central restart (their
//! sessions and the messages addressed to them are lost, messages they already sent still
//! arrive, stores survive and reload their merge documents from bytes; the peer notices the
//! dead connection only later). The nodes write throughout, also while cut off. Then everything heals and the loop runs
//! until quiescent (bounded), and the checks run: convergence of every replica, no
//! acknowledged entry lost, no duplicates, unique tracking ids.
//!
//! A failing seed prints itself and a replay command:
//! `SIM_SEED=<seed> cargo test -p crvs-sync sim_replay -- --nocapture` (add `SIM_TRACE=1` for
//! a step-by-step trace on stderr).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crvs_common::log::verify_chain;

use super::mem_store::{EPOCH_MS, EventView, MemCentral, MemNode};
use super::{Fnv, Rng};
use crate::engine::{CentralSession, CentralStore as _, NodeSession, NodeStore as _, SyncConfig};
use crate::wire::Message;

/// QUIC idle timeout: a link silent this long loses its connection.
const IDLE_TIMEOUT_MS: u64 = 30_000;

/// After healing, the system must be quiescent within this much virtual time.
const HEAL_BOUND_MS: u64 = 600_000;

/// Most events one seed may process.
const STEP_BOUND: u64 = 50_000;

/// Most messages one link may carry in one virtual second (both ways, duplicates included).
/// A healthy session sends a few per round trip; more means messages beget messages (a storm).
const LINK_MESSAGES_PER_SECOND_MAX: u64 = 100;

/// Seeds per `cargo test` run.
const SEEDS_PER_RUN: u64 = 1_000;

#[derive(Debug, Clone)]
struct LinkParams {
    latency_ms: u64,
    jitter_ms: u64,
    drop_pm: u32,
    dup_pm: u32,
}

#[derive(Debug)]
struct Link {
    params: LinkParams,
    /// Node → central messages are lost.
    up_blocked: bool,
    /// Central → node messages are lost.
    down_blocked: bool,
    partition: u64,
    /// The current virtual second and the messages sent on the link in it.
    second: u64,
    sent_in_second: u64,
}

#[derive(Debug)]
struct NodeHost {
    store: MemNode,
    session: Option<NodeSession>,
    conn: Option<u64>,
    alive: bool,
    timer_at: Option<u64>,
    timer_gen: u64,
    connect_pending: bool,
    /// The board's wall clock minus virtual time (clinic clocks are off).
    skew_ms: i64,
    write_gap_ms: u64,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        conn: u64,
        node: usize,
        to_central: bool,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        generation: u64,
    },
    Write {
        node: usize,
    },
    Connect {
        node: usize,
    },
    NodeNotices {
        node: usize,
        conn: u64,
    },
    CentralNotices {
        conn: u64,
    },
    IdleCheck {
        node: usize,
        conn: u64,
        partition: u64,
    },
    Partition {
        node: usize,
        up: bool,
        down: bool,
        duration_ms: u64,
    },
    Unpartition {
        node: usize,
        partition: u64,
    },
    Flaky {
        node: usize,
        drop_pm: u32,
        dup_pm: u32,
        jitter_ms: u64,
    },
    ClockJump {
        node: usize,
        by_ms: i64,
    },
    CrashNode {
        node: usize,
        down_ms: u64,
    },
    RecoverNode {
        node: usize,
    },
    CrashCentral {
        down_ms: u64,
    },
    RecoverCentral,
    Heal,
}

#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Counters for a run (and what the determinism test compares).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) trace: u64,
    pub(crate) nodes: usize,
    pub(crate) steps: u64,
    pub(crate) end_ms: u64,
    pub(crate) heal_ms: u64,
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) dropped: u64,
    pub(crate) duplicated: u64,
    pub(crate) writes: u64,
    pub(crate) events: usize,
    pub(crate) conflicts: usize,
    pub(crate) restarts: u64,
    pub(crate) partitions: u64,
    pub(crate) clock_jumps: u64,
    pub(crate) connections: u64,
    /// Most messages one link carried in one virtual second.
    pub(crate) peak_link_rate: u64,
}

#[derive(Debug)]
struct Sim {
    cfg: SyncConfig,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    net_rng: Rng,
    work_rng: Rng,
    nodes: Vec<NodeHost>,
    links: Vec<Link>,
    central: MemCentral,
    central_alive: bool,
    sessions: BTreeMap<u64, (usize, CentralSession)>,
    next_conn: u64,
    healing: bool,
    heal_at: u64,
    trace: Fnv,
    out: Outcome,
    errors: Vec<String>,
    verbose: bool,
    /// Data fingerprint when `synced` was last reset.
    version: (u64, usize, Vec<(usize, u64)>),
    /// Nodes seen synced since the data last changed.
    synced: BTreeSet<usize>,
}

impl Sim {
    fn new(seed: u64, verbose: bool) -> Self {
        let mut root = Rng::new(seed);
        let mut setup = root.fork();
        let net_rng = root.fork();
        let work_rng = root.fork();
        let mut fault_rng = root.fork();
        let central = MemCentral::new(setup.bytes32(), setup.next_u64());
        let n = setup.range(3, 6) as usize;
        let mut sim = Self {
            cfg: SyncConfig::for_tests(),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            net_rng,
            work_rng,
            nodes: Vec::new(),
            links: Vec::new(),
            central,
            central_alive: true,
            sessions: BTreeMap::new(),
            next_conn: 1,
            healing: false,
            heal_at: setup.range(20_000, 60_000),
            trace: Fnv::default(),
            out: Outcome {
                nodes: n,
                ..Outcome::default()
            },
            errors: Vec::new(),
            verbose,
            version: (0, 0, Vec::new()),
            synced: BTreeSet::new(),
        };
        for i in 0..n {
            let store = MemNode::new(setup.bytes32(), sim.central.id, &format!("n{i}"));
            let id = store.id;
            sim.central.enroll(id);
            let skew = setup.range(0, 7_200_000) as i64 - 3_600_000;
            sim.nodes.push(NodeHost {
                store,
                session: Some(NodeSession::new(sim.cfg.clone(), id, sim.central.id)),
                conn: None,
                alive: true,
                timer_at: None,
                timer_gen: 0,
                connect_pending: false,
                skew_ms: skew,
                write_gap_ms: setup.range(1_500, 8_000),
            });
            let params = LinkParams {
                latency_ms: setup.range(10, 700),
                jitter_ms: setup.range(0, 1_200),
                drop_pm: setup.range(0, 201) as u32,
                dup_pm: setup.range(0, 201) as u32,
            };
            sim.links.push(Link {
                params,
                up_blocked: false,
                down_blocked: false,
                partition: 0,
                second: 0,
                sent_in_second: 0,
            });
            let at = setup.range(0, 2_000);
            sim.schedule(at, Ev::Connect { node: i });
            sim.nodes[i].connect_pending = true;
            let at = setup.range(0, 3_000);
            sim.schedule(at, Ev::Write { node: i });
        }
        // The fault schedule, all before healing.
        let faults = fault_rng.range(0, 10);
        for _ in 0..faults {
            let at = fault_rng.range(0, sim.heal_at);
            let node = fault_rng.index(n);
            let ev = match fault_rng.index(11) {
                0..=3 => {
                    let (up, down) = match fault_rng.index(3) {
                        0 => (true, true),
                        1 => (true, false),
                        _ => (false, true),
                    };
                    Ev::Partition {
                        node,
                        up,
                        down,
                        duration_ms: fault_rng.range(1_000, 60_000),
                    }
                }
                4 | 5 => Ev::Flaky {
                    node,
                    drop_pm: fault_rng.range(0, 201) as u32,
                    dup_pm: fault_rng.range(0, 201) as u32,
                    jitter_ms: fault_rng.range(0, 3_000),
                },
                6..=8 => Ev::CrashNode {
                    node,
                    down_ms: fault_rng.range(500, 20_000),
                },
                9 => Ev::CrashCentral {
                    down_ms: fault_rng.range(500, 15_000),
                },
                // A board's clock is reset by hours either way (HLC keeps entries ordered).
                _ => Ev::ClockJump {
                    node,
                    by_ms: fault_rng.range(0, 4 * 3_600_000) as i64 - 2 * 3_600_000,
                },
            };
            sim.schedule(at, ev);
        }
        let heal_at = sim.heal_at;
        sim.schedule(heal_at, Ev::Heal);
        sim
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.verbose {
            eprintln!("[{:>7}] {}", self.now, what());
        }
    }

    fn wall_ms(&self, node: usize) -> u64 {
        (EPOCH_MS as i64 + self.now as i64 + self.nodes[node].skew_ms) as u64
    }

    fn error(&mut self, what: String) {
        self.log(|| format!("ERROR {what}"));
        self.errors.push(format!("t={} {what}", self.now));
    }

    // ---- network ----

    fn send(&mut self, node: usize, conn: u64, to_central: bool, msg: &Message) {
        let bytes = msg.encode();
        self.out.sent += 1;
        let link = &mut self.links[node];
        if link.second != self.now / 1000 {
            link.second = self.now / 1000;
            link.sent_in_second = 0;
        }
        link.sent_in_second += 1;
        let rate = link.sent_in_second;
        self.out.peak_link_rate = self.out.peak_link_rate.max(rate);
        if rate == LINK_MESSAGES_PER_SECOND_MAX + 1 {
            self.error(format!(
                "message storm: more than {LINK_MESSAGES_PER_SECOND_MAX} messages in one second \
                 on the link of n{node}"
            ));
        }
        let link = &self.links[node];
        let blocked = if to_central {
            link.up_blocked
        } else {
            link.down_blocked
        };
        let params = link.params.clone();
        self.log(|| {
            format!(
                "send {} n{node} c{conn} {}{}",
                if to_central { "->C" } else { "<-C" },
                describe(msg),
                if blocked { " (blocked)" } else { "" }
            )
        });
        if blocked || self.net_rng.chance(params.drop_pm) {
            self.out.dropped += 1;
            return;
        }
        let copies = if self.net_rng.chance(params.dup_pm) {
            self.out.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = params.latency_ms + self.net_rng.range(0, params.jitter_ms + 1);
            let at = self.now + delay;
            self.schedule(
                at,
                Ev::Deliver {
                    conn,
                    node,
                    to_central,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn drain_node(&mut self, i: usize) {
        let Some(conn) = self.nodes[i].conn else {
            return;
        };
        while let Some(msg) = self.nodes[i]
            .session
            .as_mut()
            .and_then(|s| s.poll_transmit())
        {
            self.send(i, conn, true, &msg);
        }
        self.rearm(i);
    }

    fn rearm(&mut self, i: usize) {
        let at = self.nodes[i]
            .session
            .as_ref()
            .and_then(|s| s.poll_timeout());
        if at != self.nodes[i].timer_at {
            self.nodes[i].timer_gen += 1;
            self.nodes[i].timer_at = at;
            if let Some(at) = at {
                let generation = self.nodes[i].timer_gen;
                self.schedule(
                    at,
                    Ev::Timer {
                        node: i,
                        generation,
                    },
                );
            }
        }
    }

    fn drain_central(&mut self, conn: u64) {
        let Some((node, session)) = self.sessions.get_mut(&conn) else {
            return;
        };
        let node = *node;
        let mut msgs = Vec::new();
        while let Some(msg) = session.poll_transmit() {
            msgs.push(msg);
        }
        let closed = session.is_closed();
        for msg in &msgs {
            self.send(node, conn, false, msg);
        }
        if closed {
            self.sessions.remove(&conn);
            let at = self.now + self.links[node].params.latency_ms + 1;
            self.schedule(at, Ev::NodeNotices { node, conn });
        }
    }

    /// Central's feed grew: every session streams it down if idle.
    fn notify_all(&mut self) {
        let conns: Vec<u64> = self.sessions.keys().copied().collect();
        for conn in conns {
            let Some((_, session)) = self.sessions.get_mut(&conn) else {
                continue;
            };
            if let Err(e) = session.notify_feed(&self.central) {
                self.error(format!("central notify_feed c{conn}: {e}"));
            }
            self.drain_central(conn);
        }
    }

    fn schedule_connect(&mut self, i: usize, delay: u64) {
        if !self.nodes[i].connect_pending {
            self.nodes[i].connect_pending = true;
            let at = self.now + delay;
            self.schedule(at, Ev::Connect { node: i });
        }
    }

    fn backoff(&mut self) -> u64 {
        if self.healing {
            self.net_rng.range(0, 500)
        } else {
            self.net_rng.range(500, 5_000)
        }
    }

    /// The node side of a connection is gone.
    fn node_disconnect(&mut self, i: usize) {
        if self.nodes[i].conn.take().is_some() {
            if let Some(s) = self.nodes[i].session.as_mut() {
                s.disconnect();
            }
            self.rearm(i);
            let delay = self.backoff();
            self.schedule_connect(i, delay);
        }
    }

    // ---- events ----

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                conn,
                node,
                to_central,
                bytes,
            } => self.deliver(conn, node, to_central, &bytes),
            Ev::Timer { node, generation } => {
                let host = &mut self.nodes[node];
                if generation != host.timer_gen || !host.alive {
                    return;
                }
                host.timer_at = None;
                let now = self.now;
                let result = match host.session.as_mut() {
                    Some(s) => s.handle_timeout(now, &host.store),
                    None => Ok(()),
                };
                self.log(|| format!("timer n{node}"));
                if let Err(e) = result {
                    self.error(format!("n{node} handle_timeout: {e}"));
                }
                self.drain_node(node);
                self.rearm(node);
            }
            Ev::Write { node } => self.write(node),
            Ev::Connect { node } => self.connect(node),
            Ev::NodeNotices { node, conn } => {
                if self.nodes[node].conn == Some(conn) {
                    self.log(|| format!("n{node} notices c{conn} is gone"));
                    self.node_disconnect(node);
                }
            }
            Ev::CentralNotices { conn } => {
                self.sessions.remove(&conn);
            }
            Ev::IdleCheck {
                node,
                conn,
                partition,
            } => {
                let link = &self.links[node];
                if link.partition == partition
                    && (link.up_blocked || link.down_blocked)
                    && self.nodes[node].conn == Some(conn)
                {
                    self.log(|| format!("c{conn} of n{node} times out"));
                    self.sessions.remove(&conn);
                    self.node_disconnect(node);
                }
            }
            Ev::Partition {
                node,
                up,
                down,
                duration_ms,
            } => {
                if self.healing {
                    return;
                }
                self.out.partitions += 1;
                let link = &mut self.links[node];
                link.up_blocked |= up;
                link.down_blocked |= down;
                link.partition += 1;
                let partition = link.partition;
                self.log(|| format!("partition n{node} up={up} down={down} for {duration_ms}"));
                let at = self.now + duration_ms;
                self.schedule(at, Ev::Unpartition { node, partition });
                if let Some(conn) = self.nodes[node].conn
                    && duration_ms > IDLE_TIMEOUT_MS
                {
                    let at = self.now + IDLE_TIMEOUT_MS;
                    self.schedule(
                        at,
                        Ev::IdleCheck {
                            node,
                            conn,
                            partition,
                        },
                    );
                }
            }
            Ev::Unpartition { node, partition } => {
                let link = &mut self.links[node];
                if link.partition == partition {
                    link.up_blocked = false;
                    link.down_blocked = false;
                    self.log(|| format!("unpartition n{node}"));
                }
            }
            Ev::Flaky {
                node,
                drop_pm,
                dup_pm,
                jitter_ms,
            } => {
                if !self.healing {
                    let p = &mut self.links[node].params;
                    p.drop_pm = drop_pm;
                    p.dup_pm = dup_pm;
                    p.jitter_ms = jitter_ms;
                }
            }
            Ev::ClockJump { node, by_ms } => {
                self.out.clock_jumps += 1;
                self.nodes[node].skew_ms += by_ms;
            }
            Ev::CrashNode { node, down_ms } => {
                if self.healing || !self.nodes[node].alive {
                    return;
                }
                self.out.restarts += 1;
                self.log(|| format!("crash n{node} for {down_ms}"));
                let host = &mut self.nodes[node];
                host.alive = false;
                host.session = None;
                host.timer_gen += 1;
                host.timer_at = None;
                if let Some(conn) = host.conn.take() {
                    let at = self.now + self.net_rng.range(1_000, IDLE_TIMEOUT_MS);
                    self.schedule(at, Ev::CentralNotices { conn });
                }
                let at = self.now + down_ms;
                self.schedule(at, Ev::RecoverNode { node });
            }
            Ev::RecoverNode { node } => self.recover_node(node),
            Ev::CrashCentral { down_ms } => {
                if self.healing || !self.central_alive {
                    return;
                }
                self.out.restarts += 1;
                self.log(|| format!("crash central for {down_ms}"));
                self.central_alive = false;
                let conns: Vec<(u64, usize)> =
                    self.sessions.iter().map(|(c, (n, _))| (*c, *n)).collect();
                self.sessions.clear();
                for (conn, node) in conns {
                    let at = self.now + self.net_rng.range(500, IDLE_TIMEOUT_MS);
                    self.schedule(at, Ev::NodeNotices { node, conn });
                }
                let at = self.now + down_ms;
                self.schedule(at, Ev::RecoverCentral);
            }
            Ev::RecoverCentral => self.recover_central(),
            Ev::Heal => {
                self.log(|| "heal".into());
                self.healing = true;
                for link in &mut self.links {
                    link.up_blocked = false;
                    link.down_blocked = false;
                    link.partition += 1;
                    link.params.drop_pm = 0;
                    link.params.dup_pm = 0;
                    link.params.jitter_ms = 0;
                }
                self.recover_central();
                for i in 0..self.nodes.len() {
                    self.recover_node(i);
                    if self.nodes[i].conn.is_none() {
                        self.schedule_connect(i, 0);
                    }
                }
            }
        }
    }

    fn recover_node(&mut self, i: usize) {
        if self.nodes[i].alive {
            return;
        }
        self.log(|| format!("recover n{i}"));
        let host = &mut self.nodes[i];
        host.alive = true;
        host.store.reload();
        host.session = Some(NodeSession::new(
            self.cfg.clone(),
            host.store.id,
            self.central.id,
        ));
        let delay = self.backoff();
        self.schedule_connect(i, delay);
    }

    fn recover_central(&mut self) {
        if self.central_alive {
            return;
        }
        self.log(|| "recover central".into());
        self.central_alive = true;
        self.central.reload();
    }

    fn connect(&mut self, i: usize) {
        self.nodes[i].connect_pending = false;
        if !self.nodes[i].alive || self.nodes[i].conn.is_some() {
            return;
        }
        let link = &self.links[i];
        if !self.central_alive || link.up_blocked || link.down_blocked {
            let delay = self.backoff();
            self.schedule_connect(i, delay);
            return;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        self.out.connections += 1;
        self.log(|| format!("n{i} connects c{conn}"));
        let id = self.nodes[i].store.id;
        self.sessions
            .insert(conn, (i, CentralSession::new(self.cfg.clone(), id)));
        self.nodes[i].conn = Some(conn);
        let now = self.now;
        let host = &mut self.nodes[i];
        let result = match host.session.as_mut() {
            Some(s) => s.connect(now, &host.store),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.error(format!("n{i} connect: {e}"));
        }
        self.drain_node(i);
    }

    fn write(&mut self, i: usize) {
        if self.healing {
            return;
        }
        let gap = self.nodes[i].write_gap_ms;
        let next = self.now + self.work_rng.range(gap / 2, gap * 3 / 2);
        self.schedule(next, Ev::Write { node: i });
        if !self.nodes[i].alive {
            return;
        }
        let wall = self.wall_ms(i);
        let Some(entry) = self.nodes[i].store.random_write(&mut self.work_rng, wall) else {
            return;
        };
        self.out.writes += 1;
        self.trace.bytes(&entry.hash().0);
        self.log(|| format!("n{i} writes entry {} on {}", entry.seq, entry.event_id));
        if self.nodes[i].conn.is_some() {
            let now = self.now;
            let host = &mut self.nodes[i];
            let result = match host.session.as_mut() {
                Some(s) => s.notify_appended(now, &host.store),
                None => Ok(()),
            };
            if let Err(e) = result {
                self.error(format!("n{i} notify_appended: {e}"));
            }
            self.drain_node(i);
        }
    }

    fn deliver(&mut self, conn: u64, node: usize, to_central: bool, bytes: &[u8]) {
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.error(format!("undecodable message: {e}"));
                return;
            }
        };
        if to_central {
            if !self.central_alive || !self.sessions.contains_key(&conn) {
                return;
            }
        } else if !self.nodes[node].alive || self.nodes[node].conn != Some(conn) {
            return;
        }
        self.out.delivered += 1;
        self.trace.u64(self.now);
        self.trace.u64(conn);
        self.trace.u64(u64::from(to_central));
        self.trace.bytes(bytes);
        self.log(|| {
            format!(
                "recv {} n{node} c{conn} {}",
                if to_central { "->C" } else { "<-C" },
                describe(&msg)
            )
        });
        if to_central {
            self.central.now_ms = EPOCH_MS + self.now;
            let before = self.central.head().seq;
            let acked_before = self.central.nodes[&self.nodes[node].store.id].record.acked;
            let result = match self.sessions.get_mut(&conn) {
                Some((_, s)) => s.handle_message(self.now, msg, &mut self.central),
                None => Ok(()),
            };
            if let Err(e) = result {
                self.error(format!("central c{conn} (n{node}): {e}"));
            }
            self.drain_central(conn);
            // Invariant: central's acknowledged prefix of a node's log only grows, and is the
            // node's own prefix.
            let node_id = self.nodes[node].store.id;
            let acked = self.central.nodes[&node_id].record.acked;
            if acked.seq < acked_before.seq {
                self.error(format!("central's acked head of n{node} went backwards"));
            }
            let store = &self.nodes[node].store;
            if acked.seq > 0 && store.hash_at(acked.seq).ok().flatten() != Some(acked.hash) {
                self.error(format!(
                    "central acked n{node} up to {acked:?}, not its log"
                ));
            }
            if self.central.head().seq != before {
                self.notify_all();
            }
        } else {
            let now = self.now;
            let host = &mut self.nodes[node];
            let result = match host.session.as_mut() {
                Some(s) => s.handle_message(now, msg, &mut host.store),
                None => Ok(()),
            };
            match result {
                Ok(()) => self.drain_node(node),
                Err(e) => {
                    self.error(format!("n{node} handle_message: {e}"));
                    self.drain_node(node);
                    self.sessions.remove(&conn);
                    self.node_disconnect(node);
                }
            }
        }
    }

    /// A fingerprint of all durable data: it changes whenever any replica's data does.
    fn data_version(&self) -> (u64, usize, Vec<(usize, u64)>) {
        (
            self.central.head().seq,
            self.central.applied.len(),
            self.nodes
                .iter()
                .map(|h| (h.store.log.len(), h.store.down_cursor))
                .collect(),
        )
    }

    /// Everything healed and nothing left to exchange: since the last change of any data,
    /// every node's session has said it is synced (a node is not synced at every instant: an
    /// idle node's heartbeat `Hello` waits for its `Welcome`), and no node has feed entries
    /// waiting.
    fn quiescent(&mut self) -> bool {
        if !self.healing || !self.central_alive {
            return false;
        }
        let version = self.data_version();
        if version != self.version {
            self.version = version;
            self.synced.clear();
        }
        for (i, host) in self.nodes.iter().enumerate() {
            let Some(conn) = host.conn else { continue };
            if !host.alive || !self.sessions.contains_key(&conn) {
                continue;
            }
            if host
                .session
                .as_ref()
                .is_some_and(|s| s.is_synced(&host.store).unwrap_or(false))
            {
                self.synced.insert(i);
            }
        }
        self.synced.len() == self.nodes.len()
            && self.nodes.iter().all(|host| {
                host.alive
                    && self
                        .central
                        .feed_after(host.store.id, host.store.down_cursor, 1, usize::MAX)
                        .is_ok_and(|(items, _, _)| items.is_empty())
            })
    }

    fn run(&mut self) -> Result<(), String> {
        while let Some(Reverse(next)) = self.queue.pop() {
            self.now = next.at;
            self.out.steps += 1;
            self.step(next.ev);
            if !self.errors.is_empty() {
                return Err(self.errors.join("\n"));
            }
            if self.quiescent() {
                self.out.end_ms = self.now;
                self.out.heal_ms = self.now - self.heal_at;
                return Ok(());
            }
            if self.out.steps > STEP_BOUND {
                return Err(format!("no quiescence after {STEP_BOUND} steps"));
            }
            if self.healing && self.now > self.heal_at + HEAL_BOUND_MS {
                return Err(format!(
                    "not quiescent {HEAL_BOUND_MS} ms after healing:\n{}",
                    self.status()
                ));
            }
        }
        Err("event queue ran dry".into())
    }

    fn status(&self) -> String {
        let mut out = String::new();
        for (i, host) in self.nodes.iter().enumerate() {
            let state = &self.central.nodes[&host.store.id];
            out.push_str(&format!(
                "n{i}: alive={} conn={:?} head={} central_acked={} cursor={} pool={} session={:?}\n",
                host.alive,
                host.conn,
                host.store.log.len(),
                state.record.acked.seq,
                host.store.down_cursor,
                host.store.pool.len(),
                host.session.as_ref().map(|s| (s.acked().seq, s.status().clone())),
            ));
        }
        out.push_str(&format!(
            "central: alive={} head={} sessions={:?}\n",
            self.central_alive,
            self.central.head().seq,
            self.sessions.keys().collect::<Vec<_>>()
        ));
        out
    }

    // ---- checks after healing ----

    fn check(&mut self) -> Result<(), String> {
        let central_views: BTreeMap<_, EventView> = self
            .central
            .events
            .iter()
            .map(|(id, e)| (*id, e.view()))
            .collect();
        // (a) Convergence: same events, same actions, same merged declaration, conflicts,
        // status and flags, same automerge heads, nothing pending.
        for (i, host) in self.nodes.iter().enumerate() {
            let views: BTreeMap<_, EventView> = host
                .store
                .events
                .iter()
                .map(|(id, e)| (*id, e.view()))
                .collect();
            let ids: Vec<_> = views.keys().collect();
            let central_ids: Vec<_> = central_views.keys().collect();
            if ids != central_ids {
                return Err(format!(
                    "n{i} holds {} events, central {}",
                    ids.len(),
                    central_ids.len()
                ));
            }
            for (id, view) in &views {
                if view != &central_views[id] {
                    return Err(format!(
                        "n{i} diverges on event {id}:\nnode:    {view:?}\ncentral: {:?}",
                        central_views[id]
                    ));
                }
            }
        }
        for (id, view) in &central_views {
            if view.pending_changes != 0 {
                return Err(format!("event {id} has changes waiting for dependencies"));
            }
            let ids: Vec<String> = view.action_ids.iter().map(ToString::to_string).collect();
            let mut ids = ids;
            ids.sort();
            if ids != view.crdt_action_ids {
                return Err(format!(
                    "event {id}: action rows and merge document disagree"
                ));
            }
        }
        // (b) No acknowledged entry lost; every log wholly applied at central, verbatim.
        for (i, host) in self.nodes.iter().enumerate() {
            let store = &host.store;
            verify_chain(store.id, &store.log).map_err(|e| format!("n{i} log: {e}"))?;
            if store.max_acked.seq > store.log.len() as u64 {
                return Err(format!("n{i} was acked beyond its log"));
            }
            for entry in &store.log {
                match self.central.applied.get(&(store.id, entry.seq)) {
                    Some(applied) if applied == entry => {}
                    Some(_) => {
                        return Err(format!("central holds another n{i} entry {}", entry.seq));
                    }
                    None if entry.seq <= store.max_acked.seq => {
                        return Err(format!("acked entry {} of n{i} lost", entry.seq));
                    }
                    None => return Err(format!("entry {} of n{i} never applied", entry.seq)),
                }
            }
            let record = &self.central.nodes[&store.id].record;
            if record.acked != store.head() || record.quarantined || record.revoked {
                return Err(format!("central's record of n{i}: {record:?}"));
            }
        }
        let node_entries: usize = self.nodes.iter().map(|h| h.store.log.len()).sum();
        if self.central.applied.len() != node_entries {
            return Err("central applied entries no node wrote".into());
        }
        verify_chain(self.central.id, &self.central.log)
            .map_err(|e| format!("central log: {e}"))?;
        // (c) No duplicates.
        if self.central.duplicate_applies != 0 || self.central.duplicate_actions != 0 {
            return Err(format!(
                "central applied {} entries and {} actions twice",
                self.central.duplicate_applies, self.central.duplicate_actions
            ));
        }
        for (i, host) in self.nodes.iter().enumerate() {
            if host.store.duplicate_actions != 0 || host.store.duplicate_grants != 0 {
                return Err(format!("n{i} received actions or ids twice"));
            }
            if let Some(r) = host.store.rejects.iter().find(|r| r.reason != "gap") {
                return Err(format!("n{i} had an entry refused: {r:?}"));
            }
        }
        // A gap is recorded (ops see it) but is what lost or reordered batches cause: only
        // other refusals of an honest node are failures.
        if let Some((_, _, r)) = self
            .central
            .rejects
            .iter()
            .find(|(_, _, r)| r.reason != "gap")
        {
            return Err(format!("central refused an honest entry: {r:?}"));
        }
        // (d) Tracking ids: never leased twice (read from the feed itself), one per event, and
        // each event's id leased to the node that created it.
        let mut leased = BTreeSet::new();
        for entry in &self.central.log {
            if let Ok(crvs_common::feed::CentralRecord::PoolGrant { tracking_ids, .. }) =
                serde_json::from_slice(&entry.action)
            {
                for id in tracking_ids {
                    if !leased.insert(id.clone()) {
                        return Err(format!("tracking id {id} leased twice"));
                    }
                }
            }
        }
        let mut used = BTreeSet::new();
        for (id, event) in &self.central.events {
            if !used.insert(event.tracking_id.clone()) {
                return Err(format!(
                    "tracking id {} used twice ({id})",
                    event.tracking_id
                ));
            }
            if !leased.contains(&event.tracking_id) {
                return Err(format!("event {id} uses an id never leased"));
            }
        }
        for (i, host) in self.nodes.iter().enumerate() {
            for id in &host.store.own_events {
                let tracking = &host.store.events[id].tracking_id;
                if !host.store.granted.contains(tracking) {
                    return Err(format!("n{i} invented tracking id {tracking}"));
                }
            }
        }
        self.out.events = central_views.len();
        self.out.conflicts = central_views.values().map(|v| v.conflicts.len()).sum();
        self.trace.bytes(&self.central.head().hash.0);
        self.out.trace = self.trace.finish();
        Ok(())
    }
}

fn describe(msg: &Message) -> String {
    match msg {
        Message::Hello(h) => format!(
            "Hello head={} cursor={} pool={}",
            h.head.seq, h.down_cursor, h.pool_free
        ),
        Message::Welcome(w) => format!(
            "Welcome acked={} down {}..{} items={} more={}",
            w.acked.seq,
            w.down.from_cursor,
            w.down.to_cursor,
            w.down.items.len(),
            w.down.more
        ),
        Message::Entries(e) => format!(
            "Entries {}..={}",
            e.entries.first().map_or(0, |x| x.seq),
            e.entries.last().map_or(0, |x| x.seq)
        ),
        Message::Ack(a) => format!("Ack {} rejects={:?}", a.acked.seq, a.rejects),
        Message::Down(d) => format!(
            "Down {}..{} items={} more={}",
            d.from_cursor,
            d.to_cursor,
            d.items.len(),
            d.more
        ),
        Message::DownAck(d) => format!("DownAck {}", d.cursor),
        Message::Goodbye(g) => format!("Goodbye {} ({})", g.reason, g.detail),
    }
}

/// Runs one seed to the end and checks it.
pub(crate) fn run_seed(seed: u64, verbose: bool) -> Result<Outcome, String> {
    let mut sim = Sim::new(seed, verbose);
    sim.run()?;
    sim.check()?;
    Ok(sim.out)
}

/// Runs one seed, turning a panic into an error that names the seed.
fn run_seed_caught(seed: u64) -> Result<Outcome, String> {
    match catch_unwind(AssertUnwindSafe(|| run_seed(seed, false))) {
        Ok(result) => result,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic".into())),
    }
}

fn replay_hint(seed: u64) -> String {
    format!("replay: SIM_SEED={seed} cargo test -p crvs-sync sim_replay -- --nocapture")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// `SEEDS_PER_RUN` seeds (from `SIM_SEED_START`, default 0; `SIM_SEEDS` overrides the count),
/// on two threads.
#[test]
fn sim_many_seeds() {
    let start = env_u64("SIM_SEED_START").unwrap_or(0);
    let count = env_u64("SIM_SEEDS").unwrap_or(SEEDS_PER_RUN);
    let threads = 2u64;
    let results: Vec<(u64, Result<Outcome, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut results = Vec::new();
                    let mut seed = start + t;
                    while seed < start + count {
                        let result = run_seed_caught(seed);
                        if let Err(e) = &result {
                            eprintln!("seed {seed} FAILED: {e}\n{}", replay_hint(seed));
                        }
                        results.push((seed, result));
                        seed += threads;
                    }
                    results
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let outs: Vec<&Outcome> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .collect();
    let sum = |f: fn(&Outcome) -> u64| outs.iter().map(|o| f(o)).sum::<u64>();
    eprintln!(
        "sim: {} seeds ok; writes {}, events {}, conflicts {}, messages sent {} (dropped {}, \
         duplicated {}), restarts {}, partitions {}, clock jumps {}, connections {}; \
         slowest heal {} ms, most steps {}, most messages {}, peak link rate {}/s",
        outs.len(),
        sum(|o| o.writes),
        sum(|o| o.events as u64),
        sum(|o| o.conflicts as u64),
        sum(|o| o.sent),
        sum(|o| o.dropped),
        sum(|o| o.duplicated),
        sum(|o| o.restarts),
        sum(|o| o.partitions),
        sum(|o| o.clock_jumps),
        sum(|o| o.connections),
        outs.iter().map(|o| o.heal_ms).max().unwrap_or(0),
        outs.iter().map(|o| o.steps).max().unwrap_or(0),
        outs.iter().map(|o| o.sent).max().unwrap_or(0),
        outs.iter().map(|o| o.peak_link_rate).max().unwrap_or(0),
    );
    let failures: Vec<(u64, String)> = results
        .into_iter()
        .filter_map(|(seed, r)| r.err().map(|e| (seed, e)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed: {:?}\n{}",
        failures.len(),
        failures.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        failures
            .iter()
            .map(|(s, _)| replay_hint(*s))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Replays the seed in `SIM_SEED` (nothing if unset); `SIM_TRACE=1` prints every step.
#[test]
fn sim_replay() {
    let Some(seed) = env_u64("SIM_SEED") else {
        return;
    };
    let verbose = std::env::var_os("SIM_TRACE").is_some();
    match run_seed(seed, verbose) {
        Ok(out) => eprintln!("seed {seed}: {out:?}"),
        Err(e) => panic!("seed {seed} FAILED: {e}\n{}", replay_hint(seed)),
    }
}

/// The same seed gives a bit-identical run (every delivered message, in order and time).
#[test]
fn sim_is_deterministic() {
    for seed in [3, 17, 4242] {
        let a = run_seed(seed, false).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let b = run_seed(seed, false).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(a, b, "seed {seed}");
        assert!(a.delivered > 0 && a.writes > 0, "{a:?}");
    }
    assert_ne!(
        run_seed(3, false).unwrap().trace,
        run_seed(4, false).unwrap().trace
    );
}
