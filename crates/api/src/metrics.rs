//! Prometheus metrics (`GET /metrics`, text format 0.0.4).
//!
//! Counted as they happen: API requests by route template and status, their latency, signing
//! latency as the node reports it (`duration_ms` of a signing: the cluster's part), ceremony
//! durations, and requests the rate limiter refused. Read from the node at each scrape: peer
//! liveness and last heartbeat, presignature pool levels of every active ECDSA wallet,
//! ceremonies this node coordinated (by kind and state), protocol sessions it took part in, and
//! incidents it recorded (by accused node and kind: a counter read from the store, so it
//! survives restarts; released incidents still count).
//! Wallet ids appear as labels; metrics need a token of any role unless `metrics_public`.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use mpc_node::Node;
use mpc_types::NodeId;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::{auth::Caller, error::ApiError, ratelimit::Limited, AppState};

/// Every metric of one node's API.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    signing_seconds: HistogramVec,
    ceremony_seconds: HistogramVec,
    rate_limited: IntCounterVec,
    peer_live: IntGaugeVec,
    peer_audit_log_changed: IntGaugeVec,
    peer_last_heartbeat: IntGaugeVec,
    peers_live: IntGauge,
    pool_ready: IntGaugeVec,
    pool_consumed: IntGaugeVec,
    pool_below_low_water: IntGaugeVec,
    refusals: IntCounterVec,
    ceremonies: IntGaugeVec,
    sessions: IntGaugeVec,
    incidents: IntCounterVec,
    /// Every sample name this node can export (see [`Metrics::names`]).
    names: Vec<String>,
    /// One scrape at a time: a scrape resets the gauges it reads from the node.
    scrape: tokio::sync::Mutex<()>,
}

/// Every metric's name starts with `mpc_`.
const PREFIX: &str = "mpc";

/// Buckets in seconds from 1 ms (FROST, presignature signing) to 10 minutes (aux info).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some(PREFIX.into()), None)?;
        // The names registered, as exported (a histogram as its three sample names).
        let names = std::cell::RefCell::new(Vec::new());
        let named = |name: &str, suffixes: &[&str]| {
            names.borrow_mut().extend(
                suffixes
                    .iter()
                    .map(|suffix| format!("{PREFIX}_{name}{suffix}")),
            )
        };
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                named(name, &[""]);
                Ok(c)
            };
        let histogram =
            |name: &str, help: &str, labels: &[&str]| -> Result<HistogramVec, MetricsError> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                named(name, &["_bucket", "_sum", "_count"]);
                Ok(h)
            };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, MetricsError> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                named(name, &[""]);
                Ok(g)
            };
        let peers_live =
            IntGauge::new("peers_live", "Nodes this node sees live (itself included).")?;
        registry.register(Box::new(peers_live.clone()))?;
        named("peers_live", &[""]);
        let mut metrics = Self {
            requests: counter(
                "api_requests_total",
                "API requests by method, route template and status.",
                &["method", "route", "status"],
            )?,
            request_seconds: histogram(
                "api_request_duration_seconds",
                "API request latency by route template.",
                &["method", "route"],
            )?,
            signing_seconds: histogram(
                "signing_duration_seconds",
                "Signing latency inside the cluster (the node's duration_ms), by how the inputs were signed.",
                &["method"],
            )?,
            ceremony_seconds: histogram(
                "ceremony_duration_seconds",
                "Ceremonies started through this API, by kind and outcome.",
                &["kind", "outcome"],
            )?,
            rate_limited: counter(
                "api_rate_limited_total",
                "Requests refused by the rate limiter, by limit (ip or token).",
                &["limit"],
            )?,
            peer_live: gauge("peer_live", "1 if the node is live as this node sees it.", &["node"])?,
            peer_audit_log_changed: gauge(
                "peer_audit_log_changed",
                "1 if this node saw the peer's audit log rewritten or cut (its heartbeats).",
                &["node"],
            )?,
            peer_last_heartbeat: gauge(
                "peer_last_heartbeat_timestamp_ms",
                "Unix milliseconds of the last heartbeat from the node.",
                &["node"],
            )?,
            peers_live,
            pool_ready: gauge(
                "presignatures_ready",
                "Usable presignatures per wallet, path and signer set.",
                &["wallet", "path", "signers"],
            )?,
            pool_consumed: gauge(
                "presignatures_consumed",
                "Presignatures used so far per wallet, path and signer set.",
                &["wallet", "path", "signers"],
            )?,
            pool_below_low_water: gauge(
                "presignatures_below_low_water",
                "On the refill leader: presignatures missing below low water over the paths with spendable outputs, per wallet.",
                &["wallet"],
            )?,
            refusals: counter(
                "signing_refusals_total",
                "Signings refused or failed since the node started (its audit log has the rule), as coordinator or as signer.",
                &["role"],
            )?,
            ceremonies: gauge(
                "ceremonies",
                "Ceremonies this node coordinated, by kind and state.",
                &["kind", "state"],
            )?,
            sessions: gauge(
                "sessions_seen",
                "Protocol sessions this node took part in, by protocol.",
                &["protocol"],
            )?,
            incidents: counter(
                "incidents_total",
                "Incidents this node recorded as coordinator, by accused node and kind (from its store).",
                &["node", "kind"],
            )?,
            registry,
            names: Vec::new(),
            scrape: tokio::sync::Mutex::new(()),
        };
        metrics.names = names.into_inner();
        // Every signing method's series exists from the start, at zero: Prometheus's
        // increase() does not count a series' first sample, so an alert on the first
        // interactive signing after a start would otherwise never fire.
        for method in ["presignature", "interactive", "frost", "mixed"] {
            metrics.signing_seconds.with_label_values(&[method]);
        }
        for role in ["coordinator", "signer"] {
            metrics.refusals.with_label_values(&[role]);
        }
        Ok(metrics)
    }

    /// Every sample name this node can export (`mpc_...`; a histogram's `_bucket`, `_sum` and
    /// `_count`), whether or not it has a series yet: what dashboards and alerting rules may
    /// name (`--test dashboard` checks both, and this list against a node's `/metrics`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn rate_limited(&self, which: Limited) {
        self.rate_limited.with_label_values(&[which.as_str()]).inc();
    }

    /// Records a signing's latency inside the cluster; `method` says how its inputs were
    /// signed (`presignature`, `frost`, `interactive`, or `mixed`).
    pub fn signed(&self, report: &mpc_node::signing::SignReport) {
        let mut methods: Vec<&str> = report.inputs.iter().map(|i| i.method).collect();
        methods.sort_unstable();
        methods.dedup();
        let method = match methods.as_slice() {
            [one] => *one,
            _ => "mixed",
        };
        self.signing_seconds
            .with_label_values(&[method])
            .observe(report.duration_ms / 1e3);
    }

    pub fn ceremony_finished(&self, kind: &str, ok: bool, seconds: f64) {
        self.ceremony_seconds
            .with_label_values(&[kind, if ok { "succeeded" } else { "failed" }])
            .observe(seconds);
    }

    /// Reads the node's state into the gauges, then encodes everything.
    pub async fn render(&self, node: &Node) -> Result<String, ApiError> {
        let _one = self.scrape.lock().await;
        let store = node.store();
        let store_err = |e: mpc_store::StoreError| ApiError::from(mpc_node::NodeError::from(e));
        let statuses = node.health().statuses();
        self.peer_live.reset();
        self.peer_audit_log_changed.reset();
        self.peer_last_heartbeat.reset();
        for s in &statuses {
            let id = s.node.to_string();
            self.peer_live
                .with_label_values(&[id.as_str()])
                .set(i64::from(s.live));
            if let Some(audit) = &s.audit {
                self.peer_audit_log_changed
                    .with_label_values(&[id.as_str()])
                    .set(i64::from(audit.problem.is_some()));
            }
            if let Some(at) = s.last_heartbeat_ms {
                self.peer_last_heartbeat
                    .with_label_values(&[id.as_str()])
                    .set(at);
            }
        }
        self.peers_live
            .set(statuses.iter().filter(|s| s.live).count() as i64);

        self.pool_ready.reset();
        self.pool_consumed.reset();
        self.pool_below_low_water.reset();
        for wallet in node.pool_stats().await.map_err(ApiError::from)? {
            let id = wallet.wallet_id.as_str();
            self.pool_below_low_water
                .with_label_values(&[id])
                .set(wallet.below_low_water as i64);
            for level in &wallet.levels {
                let signers = level
                    .signers
                    .iter()
                    .map(NodeId::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let path = level.path.to_string();
                let labels = [id, path.as_str(), signers.as_str()];
                self.pool_ready
                    .with_label_values(&labels)
                    .set(level.ready as i64);
                self.pool_consumed
                    .with_label_values(&labels)
                    .set(level.consumed as i64);
            }
        }
        let (coordinator, signer) = node.refusals();
        self.refusals.reset();
        self.refusals
            .with_label_values(&["coordinator"])
            .inc_by(coordinator);
        self.refusals.with_label_values(&["signer"]).inc_by(signer);
        self.ceremonies.reset();
        for (kind, state, n) in store.ceremony_counts().await.map_err(store_err)? {
            self.ceremonies
                .with_label_values(&[kind.as_str(), state.as_str()])
                .set(n as i64);
        }
        self.sessions.reset();
        for (protocol, n) in store.session_counts().await.map_err(store_err)? {
            self.sessions
                .with_label_values(&[protocol.as_str()])
                .set(n as i64);
        }
        // Counted by the store, so the counter is set anew from it (reset, then the total).
        // Every (peer, kind) series exists at zero before its first incident: increase() in
        // the alerting rules does not count a series' first sample.
        self.incidents.reset();
        for peer in node
            .config()
            .node_ids()
            .into_iter()
            .filter(|p| *p != node.id())
        {
            for kind in mpc_store::IncidentKind::ALL {
                self.incidents
                    .with_label_values(&[peer.to_string().as_str(), kind.as_str()]);
            }
        }
        for (accused, kind, n) in store.incident_counts().await.map_err(store_err)? {
            self.incidents
                .with_label_values(&[accused.to_string().as_str(), kind.as_str()])
                .inc_by(n);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| ApiError::internal(format!("metrics encoding: {e}")))?;
        String::from_utf8(out).map_err(|e| ApiError::internal(format!("metrics encoding: {e}")))
    }
}

/// Middleware: counts every request by its route template (not its concrete path, so ids
/// do not multiply the series) and status.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let m = &state.metrics;
    m.requests
        .with_label_values(&[method.as_str(), route.as_str(), response.status().as_str()])
        .inc();
    m.request_seconds
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Prometheus metrics of this node (text format).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain"),
        (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn metrics(
    State(s): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<Response, ApiError> {
    if !s.metrics_public {
        caller?.require(crate::auth::READ)?;
    }
    let body = s.metrics.render(&s.node).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
