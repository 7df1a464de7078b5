//! Ops routes: `GET /api/sync/status` (JSON) and `GET /metrics` (OpenMetrics text), plus the
//! request-counting middleware.
//!
//! Both routes are unauthenticated, like `/ping`: they carry counts, times, ids of the node and
//! of central and error texts, never record data or secrets; Prometheus scrapers and clinic staff
//! have no OAuth client; and the node listens on loopback unless an operator exposes it (who
//! then puts it behind the facility's firewall or a reverse proxy).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crvs_common::event::format_timestamp_ms;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::metrics::{RequestLabels, gauge_value};
use crate::store::wall_ms;

/// `GET /api/sync/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// Whether the node is enrolled with central (it syncs only then).
    pub enrolled: bool,
    /// This node.
    pub node_id: String,
    /// Central's log-signing identity (when enrolled).
    pub central_id: Option<String>,
    /// Central's QUIC address (when enrolled).
    pub central_quic_addr: Option<String>,
    /// A session with central is open and central welcomed this node.
    pub connected: bool,
    /// Central refused this node or one of its entries; sync waits for an operator.
    pub refused: bool,
    /// The node's log head.
    pub log_seq: u64,
    /// The last entry central acknowledged.
    pub acked_seq: u64,
    /// Entries central has not acknowledged.
    pub unacknowledged_entries: u64,
    /// Their bytes.
    pub bytes_pending: u64,
    /// Age of the oldest unacknowledged entry, ms (`null` when everything is acknowledged).
    pub oldest_unacknowledged_age_ms: Option<u64>,
    /// Last time central welcomed or acknowledged without refusing anything (ISO 8601).
    pub last_success: Option<String>,
    /// Last sync error.
    pub last_error: Option<String>,
    /// When it happened (ISO 8601).
    pub last_error_at: Option<String>,
    /// Entries central refused (cumulative).
    pub rejected_entries: u64,
    /// Downstream items this node could not apply (cumulative).
    pub down_rejected_items: u64,
    /// Free tracking ids.
    pub pool_free: u64,
    /// QUIC path RTT to central while connected, ms.
    pub rtt_ms: Option<u64>,
    /// The sync protocol's smoothed request/answer time, ms.
    pub round_trip_ms: Option<u32>,
    /// Position in central's feed applied here.
    pub down_cursor: u64,
    /// Assignments made here that a concurrent assignment elsewhere overtook (newest first, at
    /// most [`LOST_ASSIGNMENTS_SHOWN`]): the loser is told on sync.
    pub lost_assignments: Vec<crate::store::LostAssignment>,
}

/// Builds the status from the store and the driver.
pub async fn sync_status(state: &AppState) -> Result<SyncStatus, ApiError> {
    let now_ms = wall_ms();
    let (sync, head, health, lost) = state
        .store
        .read(move |r| {
            Ok((
                r.sync_state()?,
                r.log_head()?,
                r.node_health(now_ms)?,
                r.lost_assignments(LOST_ASSIGNMENTS_SHOWN)?,
            ))
        })
        .await?;
    let link = state.sync.as_ref().map(|s| s.link()).unwrap_or_default();
    let enrollment = state.config.enrollment.as_ref();
    Ok(SyncStatus {
        enrolled: enrollment.is_some(),
        node_id: state.store.node_id().to_string(),
        central_id: enrollment.map(|e| e.central_id().to_string()),
        central_quic_addr: enrollment.map(|e| e.central_quic_addr().to_owned()),
        connected: link.connected,
        refused: link.refused,
        log_seq: head.seq,
        acked_seq: sync.acked.seq,
        unacknowledged_entries: health.backlog_entries,
        bytes_pending: health.backlog_bytes,
        oldest_unacknowledged_age_ms: (health.backlog_entries > 0)
            .then_some(health.oldest_unacked_ms),
        last_success: sync.last_success_ms.map(format_timestamp_ms),
        last_error: sync.last_error,
        last_error_at: sync.last_error_ms.map(format_timestamp_ms),
        rejected_entries: sync.rejects_total,
        down_rejected_items: sync.down_rejects_total,
        pool_free: u64::from(health.pool_free),
        rtt_ms: link.rtt_ms,
        round_trip_ms: link.round_trip_ms,
        down_cursor: sync.down_cursor,
        lost_assignments: lost,
    })
}

/// Lost assignments listed in the status.
pub const LOST_ASSIGNMENTS_SHOWN: usize = 20;

/// `GET /api/sync/status`.
pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<SyncStatus>, ApiError> {
    Ok(axum::Json(sync_status(&state).await?))
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let status = sync_status(&state).await?;
    let m = &state.metrics;
    m.enrolled.set(i64::from(status.enrolled));
    m.connected.set(i64::from(status.connected));
    m.backlog_entries
        .set(gauge_value(status.unacknowledged_entries));
    m.backlog_bytes.set(gauge_value(status.bytes_pending));
    m.oldest_unacked_ms.set(gauge_value(
        status.oldest_unacknowledged_age_ms.unwrap_or(0),
    ));
    m.pool_free.set(gauge_value(status.pool_free));
    m.rtt_ms.set(gauge_value(status.rtt_ms.unwrap_or(0)));
    m.log_seq.set(gauge_value(status.log_seq));
    m.acked_seq.set(gauge_value(status.acked_seq));
    m.down_cursor.set(gauge_value(status.down_cursor));
    m.rejected_entries.set(gauge_value(status.rejected_entries));
    m.down_rejected_items
        .set(gauge_value(status.down_rejected_items));
    let wire = state
        .sync
        .as_ref()
        .map(|s| s.link().wire)
        .unwrap_or_default();
    m.frames_sent.set(gauge_value(wire.frames_sent));
    m.frame_bytes_sent.set(gauge_value(wire.bytes_sent));
    m.frames_received.set(gauge_value(wire.frames_received));
    m.frame_bytes_received.set(gauge_value(wire.bytes_received));
    m.entries_resent.set(gauge_value(wire.entries_resent));
    m.entries_resent_bytes
        .set(gauge_value(wire.entries_resent_bytes));
    let success_ms = state
        .store
        .read(|r| Ok(r.sync_state()?.last_success_ms))
        .await?;
    m.last_success_age_seconds.set(match success_ms {
        Some(t) => gauge_value(wall_ms().saturating_sub(t) / 1000),
        None => -1,
    });
    let text = m.encode().map_err(|e| ApiError::internal(&e))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// Counts every routed request by route pattern, method and status.
pub(crate) async fn count_requests(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
