//! Ops routes: `GET /api/sync/status` (every enrolled node, including those failing to sync),
//! `GET /api/sync/conflicts`, `GET /api/sync/rejects?node=` and `GET /metrics` (Prometheus text).
//! They show sync health, never declaration values or entry bytes.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use crvs_common::log::NodeId;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::store::{ConflictRow, NodeRow, RejectRow, StoreStats};

/// A node not heard from for longer than this is flagged stale.
pub(crate) const STALE_AFTER_MS: u64 = 5 * 60 * 1000;

/// Most rows one ops listing returns.
pub(crate) const OPS_ROWS_MAX: u64 = 500;

/// One node as `/api/sync/status` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeStatus {
    #[serde(flatten)]
    node: NodeRow,
    /// Time since the last contact, ms (`None`: never connected).
    last_contact_age_ms: Option<u64>,
    revoked: bool,
    quarantined: bool,
    /// Not heard from for more than [`STALE_AFTER_MS`] (or never).
    stale: bool,
}

/// `/api/sync/status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SyncStatus {
    central_id: String,
    now_ms: u64,
    stats: StoreStats,
    /// Registrations waiting on the confirmation hook.
    confirmation_hook: HookStatus,
    nodes: Vec<NodeStatus>,
}

/// The confirmation hook's queue.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HookStatus {
    /// Calls to make (first attempts and retries).
    queued: u64,
    /// The hook answered 202; its callback is awaited.
    waiting_for_callback: u64,
    /// Queued after at least one failed attempt (hook down or erring).
    failing: u64,
}

fn node_status(node: NodeRow, now_ms: u64) -> NodeStatus {
    let age = node.last_contact_ms.map(|t| now_ms.saturating_sub(t));
    NodeStatus {
        last_contact_age_ms: age,
        revoked: node.is_revoked(),
        quarantined: node.is_quarantined(),
        stale: age.is_none_or(|a| a > STALE_AFTER_MS),
        node,
    }
}

async fn snapshot(state: &AppState) -> Result<(Vec<NodeStatus>, StoreStats), ApiError> {
    let (nodes, stats) = state
        .store
        .read_async(|r| Ok((r.nodes()?, r.stats()?)))
        .await?;
    let now_ms = crate::store::wall_ms();
    Ok((
        nodes.into_iter().map(|n| node_status(n, now_ms)).collect(),
        stats,
    ))
}

/// `GET /api/sync/status`.
pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<SyncStatus>, ApiError> {
    let (nodes, stats) = snapshot(&state).await?;
    let (queued, waiting_for_callback, failing) =
        state.store.read_async(|r| r.hook_counts()).await?;
    Ok(axum::Json(SyncStatus {
        central_id: state.store.central_id().to_string(),
        now_ms: crate::store::wall_ms(),
        stats,
        confirmation_hook: HookStatus {
            queued,
            waiting_for_callback,
            failing,
        },
        nodes,
    }))
}

/// `GET /api/sync/conflicts`: events whose merge kept a winner over concurrent writes.
pub(crate) async fn conflicts(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let rows: Vec<ConflictRow> = state
        .store
        .read_async(|r| r.conflicts(OPS_ROWS_MAX))
        .await?;
    Ok(axum::Json(serde_json::json!({ "events": rows })))
}

/// Query of `/api/sync/rejects`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RejectsQuery {
    node: Option<String>,
}

/// `GET /api/sync/rejects?node=<hex>`: recorded rejects, newest first.
pub(crate) async fn rejects(
    State(state): State<Arc<AppState>>,
    query: Result<Query<RejectsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::input_one("invalid_type", e.body_text(), &["node"]))?;
    let node: Option<NodeId> = query
        .node
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|_| ApiError::input_one("invalid_string", "Invalid node id", &["node"]))?;
    let rows: Vec<RejectRow> = state
        .store
        .read_async(move |r| r.rejects(node, OPS_ROWS_MAX))
        .await?;
    Ok(axum::Json(serde_json::json!({ "rejects": rows })))
}

type NodeLabels = Vec<(String, String)>;

fn gauge_family(registry: &mut Registry, name: &str, help: &str) -> Family<NodeLabels, Gauge> {
    let family = Family::<NodeLabels, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Renders the metrics text from a snapshot (a registry per scrape: the truth is the store).
fn render_metrics(nodes: &[NodeStatus], stats: &StoreStats) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("crvs_central");
    let acked = gauge_family(
        &mut registry,
        "node_acked_seq",
        "Last entry of the node durably applied",
    );
    let backlog = gauge_family(
        &mut registry,
        "node_backlog_entries",
        "Entries the node reported as not yet acknowledged",
    );
    let backlog_bytes = gauge_family(
        &mut registry,
        "node_backlog_bytes",
        "Bytes of the node's unacknowledged entries, as reported",
    );
    let age = gauge_family(
        &mut registry,
        "node_last_contact_age_seconds",
        "Seconds since the node's last contact (-1: never)",
    );
    let rejects = gauge_family(&mut registry, "node_rejects", "Entries of the node refused");
    let forks = gauge_family(&mut registry, "node_forks", "Forks seen from the node");
    let pool = gauge_family(
        &mut registry,
        "node_pool_free",
        "Free tracking ids the node reported",
    );
    let revoked = gauge_family(&mut registry, "node_revoked", "1 if the node is revoked");
    let quarantined = gauge_family(
        &mut registry,
        "node_quarantined",
        "1 if the node is quarantined",
    );
    for n in nodes {
        let labels = vec![
            ("node".to_owned(), n.node.node_id.to_string()),
            ("name".to_owned(), n.node.name.clone()),
        ];
        acked.get_or_create(&labels).set(clamp(n.node.acked.seq));
        backlog
            .get_or_create(&labels)
            .set(clamp(n.node.backlog_entries.unwrap_or(0)));
        backlog_bytes
            .get_or_create(&labels)
            .set(clamp(n.node.backlog_bytes.unwrap_or(0)));
        age.get_or_create(&labels)
            .set(n.last_contact_age_ms.map_or(-1, |ms| clamp(ms / 1000)));
        rejects.get_or_create(&labels).set(clamp(n.node.rejects));
        forks.get_or_create(&labels).set(clamp(n.node.forks));
        pool.get_or_create(&labels)
            .set(clamp(n.node.pool_free.unwrap_or(0)));
        revoked.get_or_create(&labels).set(i64::from(n.revoked));
        quarantined
            .get_or_create(&labels)
            .set(i64::from(n.quarantined));
    }
    gauge(&mut registry, "nodes", "Enrolled nodes", nodes.len() as u64);
    gauge(
        &mut registry,
        "nodes_stale",
        "Nodes not heard from for over 5 minutes",
        nodes.iter().filter(|n| n.stale && !n.revoked).count() as u64,
    );
    gauge(
        &mut registry,
        "rejects",
        "Entries refused, all nodes",
        nodes.iter().map(|n| n.node.rejects).sum(),
    );
    gauge(
        &mut registry,
        "forks",
        "Forks seen, all nodes",
        nodes.iter().map(|n| n.node.forks).sum(),
    );
    gauge(&mut registry, "events", "Events held", stats.events);
    gauge(
        &mut registry,
        "search_index_pending",
        "Events whose latest change the search index has not filed yet",
        stats.search_index_pending,
    );
    gauge(
        &mut registry,
        "relays_pending",
        "Applied node entries not yet relayed to the other nodes of their area",
        stats.relays_pending,
    );
    gauge(&mut registry, "actions", "Actions held", stats.actions);
    gauge(
        &mut registry,
        "conflicted_events",
        "Events with concurrent writes to a field",
        stats.conflicted_events,
    );
    gauge(
        &mut registry,
        "log_seq",
        "Head of central's own log",
        stats.central_log_seq,
    );
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

/// `GET /metrics`: Prometheus text exposition.
pub(crate) async fn metrics(
    State(state): State<Arc<AppState>>,
) -> Result<impl IntoResponse, ApiError> {
    let (nodes, stats) = snapshot(&state).await?;
    let text = render_metrics(&nodes, &stats).map_err(|e| ApiError::internal(&e))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    ))
}
