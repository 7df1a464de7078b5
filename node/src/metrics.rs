//! Prometheus metrics of the node (`GET /metrics`, OpenMetrics text via `prometheus-client`).
//!
//! Sync figures are gauges refreshed from the store and the driver at each scrape, so they are
//! never stale and cost nothing between scrapes. HTTP requests are counted by matched route,
//! method and status: routes are the router's patterns (never raw paths), so the label set is
//! bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route pattern, e.g. `/api/events/events/{event_id}`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Response status code.
    pub status: u16,
}

/// Every metric of the node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// 1 when enrolled with central.
    pub enrolled: Gauge,
    /// 1 while a sync session with central is open and central welcomed this node.
    pub connected: Gauge,
    /// Log entries central has not acknowledged.
    pub backlog_entries: Gauge,
    /// Their bytes.
    pub backlog_bytes: Gauge,
    /// Age of the oldest unacknowledged entry, ms (0 when none).
    pub oldest_unacked_ms: Gauge,
    /// Free tracking ids.
    pub pool_free: Gauge,
    /// QUIC path RTT to central, ms (0 when not connected).
    pub rtt_ms: Gauge,
    /// The node's log head.
    pub log_seq: Gauge,
    /// The last entry central acknowledged.
    pub acked_seq: Gauge,
    /// Position in central's feed applied here.
    pub down_cursor: Gauge,
    /// Entries central refused, cumulative.
    pub rejected_entries: Gauge,
    /// Downstream items this node could not apply, cumulative.
    pub down_rejected_items: Gauge,
    /// Seconds since the last successful exchange with central (-1 when never).
    pub last_success_age_seconds: Gauge,
    /// Sync stream frames sent to central since start.
    pub frames_sent: Gauge,
    /// Their bytes (QUIC stream payload).
    pub frame_bytes_sent: Gauge,
    /// Sync stream frames received from central since start.
    pub frames_received: Gauge,
    /// Their bytes (QUIC stream payload).
    pub frame_bytes_received: Gauge,
    /// Log entries sent again after a connection ended before central acknowledged them.
    pub entries_resent: Gauge,
    /// Stream bytes of those re-sent entries.
    pub entries_resent_bytes: Gauge,
}

impl Metrics {
    /// Registers every metric under the `crvs_node` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("crvs_node");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by matched route, method and status",
            requests.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let enrolled = gauge("sync_enrolled", "1 when the node is enrolled with central");
        let connected = gauge(
            "sync_connected",
            "1 while a sync session with central is open",
        );
        let backlog_entries = gauge(
            "sync_backlog_entries",
            "Log entries central has not acknowledged",
        );
        let backlog_bytes = gauge(
            "sync_backlog_bytes",
            "Bytes of log entries central has not acknowledged",
        );
        let oldest_unacked_ms = gauge(
            "sync_oldest_unacked_age_milliseconds",
            "Age of the oldest unacknowledged log entry (0 when none)",
        );
        let pool_free = gauge("tracking_pool_free", "Free tracking ids held by the node");
        let rtt_ms = gauge(
            "sync_rtt_milliseconds",
            "QUIC path round-trip time to central (0 when not connected)",
        );
        let log_seq = gauge("log_seq", "Sequence number of the node's last log entry");
        let acked_seq = gauge(
            "sync_acked_seq",
            "Sequence number of the last entry central acknowledged",
        );
        let down_cursor = gauge(
            "sync_down_cursor",
            "Position in central's feed applied at this node",
        );
        let rejected_entries = gauge(
            "sync_rejected_entries",
            "Log entries central refused (cumulative)",
        );
        let down_rejected_items = gauge(
            "sync_down_rejected_items",
            "Downstream items this node could not apply (cumulative)",
        );
        let last_success_age_seconds = gauge(
            "sync_last_success_age_seconds",
            "Seconds since central last acknowledged or welcomed this node (-1 when never)",
        );
        let frames_sent = gauge(
            "sync_frames_sent",
            "Sync stream frames sent to central since start",
        );
        let frame_bytes_sent = gauge(
            "sync_frame_bytes_sent",
            "Bytes of sync stream frames sent to central since start",
        );
        let frames_received = gauge(
            "sync_frames_received",
            "Sync stream frames received from central since start",
        );
        let frame_bytes_received = gauge(
            "sync_frame_bytes_received",
            "Bytes of sync stream frames received from central since start",
        );
        let entries_resent = gauge(
            "sync_entries_resent",
            "Log entries sent again after a connection ended before central acknowledged them",
        );
        let entries_resent_bytes = gauge(
            "sync_entries_resent_bytes",
            "Sync stream bytes of log entries sent again after a connection ended",
        );
        Self {
            registry,
            requests,
            enrolled,
            connected,
            backlog_entries,
            backlog_bytes,
            oldest_unacked_ms,
            pool_free,
            rtt_ms,
            log_seq,
            acked_seq,
            down_cursor,
            rejected_entries,
            down_rejected_items,
            last_success_age_seconds,
            frames_sent,
            frame_bytes_sent,
            frames_received,
            frame_bytes_received,
            entries_resent,
            entries_resent_bytes,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Saturating conversion for gauges.
pub fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
