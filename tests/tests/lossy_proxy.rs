//! The lossy UDP proxy itself: it delays, drops, duplicates, caps bandwidth and blacks out as
//! configured, with a seeded, reproducible fault pattern (checked against a UDP echo server).

use std::time::Duration;

use crvs_tests::proxy::{LinkFaults, LossyProxy, ProxyConfig};
use tokio::net::UdpSocket;
use tokio::time::Instant;

async fn echo_server() -> std::net::SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// Sends `count` numbered packets through the proxy and collects the echoes until `quiet` passes
/// without one.
async fn round_trip(proxy: &LossyProxy, count: u32, size: usize, quiet: Duration) -> Vec<u32> {
    let client = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    client.connect(proxy.addr()).await.unwrap();
    // Read while sending, so echoes never pile up in the client's own receive buffer.
    let reader = {
        let client = std::sync::Arc::clone(&client);
        tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 2048];
            while let Ok(Ok(n)) = tokio::time::timeout(quiet, client.recv(&mut buf)).await {
                assert!(n >= 4);
                got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
            }
            got
        })
    };
    for i in 0..count {
        let mut packet = vec![0u8; size.max(4)];
        packet[..4].copy_from_slice(&i.to_be_bytes());
        client.send(&packet).await.unwrap();
        // Pace the burst so the host's UDP buffers never drop what the proxy forwarded.
        if i % 32 == 31 {
            tokio::task::yield_now().await;
        }
    }
    reader.await.unwrap()
}

#[tokio::test]
async fn clean_link_delivers_everything_with_the_configured_delay() {
    let upstream = echo_server().await;
    let delay = Duration::from_millis(40);
    let faults = LinkFaults {
        delay,
        ..LinkFaults::clean()
    };
    let proxy = LossyProxy::start(
        upstream,
        ProxyConfig {
            up: faults.clone(),
            down: faults,
            seed: 1,
        },
    )
    .await
    .unwrap();
    let start = Instant::now();
    let got = round_trip(&proxy, 1, 32, Duration::from_millis(500)).await;
    assert_eq!(got, vec![0]);
    assert!(
        start.elapsed() >= delay * 2,
        "round trip {:?} shorter than 2 × {delay:?}",
        start.elapsed()
    );
    let got = round_trip(&proxy, 200, 32, Duration::from_millis(300)).await;
    assert_eq!(got.len(), 200);
}

#[tokio::test]
async fn loss_and_duplication_rates_follow_the_settings() {
    let upstream = echo_server().await;
    let up = LinkFaults {
        drop: 0.2,
        duplicate: 0.1,
        ..LinkFaults::clean()
    };
    let proxy = LossyProxy::start(
        upstream,
        ProxyConfig {
            up,
            down: LinkFaults::clean(),
            seed: 7,
        },
    )
    .await
    .unwrap();
    let got = round_trip(&proxy, 2000, 16, Duration::from_millis(300)).await;
    let (up_stats, _) = proxy.stats();
    assert_eq!(up_stats.packets_in, 2000);
    let dropped = up_stats.dropped as f64 / 2000.0;
    assert!((0.15..0.25).contains(&dropped), "drop rate {dropped}");
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    assert!(got.len() > unique.len(), "some packets must arrive twice");
    // Everything the proxy forwarded comes back (allowing the host a handful of its own drops).
    let forwarded = 2000 - up_stats.dropped;
    assert!(unique.len() as u64 <= forwarded);
    assert!(
        unique.len() as u64 + 10 >= forwarded,
        "{} of {forwarded} came back",
        unique.len()
    );
}

#[tokio::test]
async fn reordering_lets_later_packets_overtake() {
    let upstream = echo_server().await;
    let up = LinkFaults {
        reorder: 0.3,
        delay: Duration::from_millis(10),
        ..LinkFaults::clean()
    };
    let proxy = LossyProxy::start(
        upstream,
        ProxyConfig {
            up,
            down: LinkFaults::clean(),
            seed: 3,
        },
    )
    .await
    .unwrap();
    let got = round_trip(&proxy, 300, 16, Duration::from_millis(300)).await;
    assert_eq!(got.len(), 300);
    assert!(
        got.windows(2).any(|w| w[1] < w[0]),
        "expected some packets out of order"
    );
}

#[tokio::test]
async fn bandwidth_cap_paces_delivery() {
    let upstream = echo_server().await;
    // 80 kbit/s: 100 packets of 1000 bytes = 800 kbit = about 10 s... too slow; use 50 packets at 400 kbit/s = 1 s.
    let up = LinkFaults {
        rate_bps: 400_000,
        ..LinkFaults::clean()
    };
    let proxy = LossyProxy::start(
        upstream,
        ProxyConfig {
            up,
            down: LinkFaults::clean(),
            seed: 5,
        },
    )
    .await
    .unwrap();
    let start = Instant::now();
    let got = round_trip(&proxy, 50, 1000, Duration::from_millis(400)).await;
    let elapsed = start.elapsed().saturating_sub(Duration::from_millis(400));
    assert_eq!(got.len(), 50);
    assert!(
        elapsed >= Duration::from_millis(900),
        "50 kB at 400 kbit/s took only {elapsed:?}"
    );
}

#[tokio::test]
async fn blackout_drops_everything_until_lifted() {
    let upstream = echo_server().await;
    let proxy = LossyProxy::start(
        upstream,
        ProxyConfig {
            up: LinkFaults::clean(),
            down: LinkFaults::clean(),
            seed: 9,
        },
    )
    .await
    .unwrap();
    proxy.set_blackout(true);
    assert!(
        round_trip(&proxy, 20, 16, Duration::from_millis(200))
            .await
            .is_empty()
    );
    proxy.set_blackout(false);
    assert_eq!(
        round_trip(&proxy, 20, 16, Duration::from_millis(200))
            .await
            .len(),
        20
    );
}

#[tokio::test]
async fn the_same_seed_gives_the_same_fault_pattern() {
    let upstream = echo_server().await;
    let mut patterns = Vec::new();
    for _ in 0..2 {
        let up = LinkFaults {
            drop: 0.3,
            ..LinkFaults::clean()
        };
        let proxy = LossyProxy::start(
            upstream,
            ProxyConfig {
                up,
                down: LinkFaults::clean(),
                seed: 42,
            },
        )
        .await
        .unwrap();
        let mut got = round_trip(&proxy, 300, 16, Duration::from_millis(300)).await;
        got.sort_unstable();
        patterns.push(got);
    }
    assert_eq!(patterns[0], patterns[1]);
}
