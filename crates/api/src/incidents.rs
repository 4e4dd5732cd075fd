//! Incidents: the blame this node recorded as coordinator (`GET /api/v1/cluster/incidents`)
//! and an operator's release of a node kept out of signer sets for it.

use axum::{
    extract::{Path, Query, State},
    Json,
};
use mpc_node::NodeError;
use mpc_store::IncidentRecord;
use mpc_types::NodeId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Caller, ADMIN, READ},
    error::{ApiError, ErrorBody},
    AppState,
};

/// The most incidents one listing returns.
const MAX_LIMIT: u32 = 1000;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IncidentQuery {
    /// Only incidents against this node id.
    node: Option<u16>,
    /// How many, newest first (1 to 1000); default 100.
    limit: Option<u32>,
}

/// One incident: `reporter` blamed `accused` in a signing attempt this node coordinated.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Incident {
    pub id: Uuid,
    pub accused: u16,
    /// This node (its own verdict: a timeout, an answer that failed its check) or the
    /// participant whose typed report named `accused`.
    pub reporter: u16,
    /// `silent`, `misbehaved` (a message that did not decode, or equivocation, as a
    /// participant saw it) or `invalid_outcome` (an answer that failed this node's check).
    pub kind: String,
    /// The failed attempt's session.
    pub session: Uuid,
    pub wallet_id: Option<String>,
    pub at_ms: i64,
    /// The error as recorded.
    pub detail: String,
    /// Evidence another node can check (hex), when there is any.
    pub evidence: Option<String>,
    /// Set once an operator released `accused`; released incidents no longer count.
    pub released_at_ms: Option<i64>,
}

impl From<IncidentRecord> for Incident {
    fn from(i: IncidentRecord) -> Self {
        Self {
            id: i.id,
            accused: i.accused.get(),
            reporter: i.reporter.get(),
            kind: i.kind.as_str().to_owned(),
            session: i.session,
            wallet_id: i.wallet_id,
            at_ms: i.at,
            detail: i.detail,
            evidence: i.evidence.map(hex::encode),
            released_at_ms: i.released_at,
        }
    }
}

/// Unreleased incidents against one node.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Unreleased {
    pub node: u16,
    pub count: u64,
    /// Whether `count` reaches `exclude_after_incidents`: the node is left out of signer sets
    /// (unless too few others are live).
    pub excluded: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IncidentList {
    /// The node that recorded these (each coordinator keeps its own).
    pub recorded_by: u16,
    /// `[limits] exclude_after_incidents`; 0: nobody is left out.
    pub exclude_after_incidents: u32,
    pub unreleased: Vec<Unreleased>,
    pub incidents: Vec<Incident>,
}

/// Incidents this node recorded, newest first, and the nodes it keeps out of signer sets.
#[utoipa::path(get, path = "/api/v1/cluster/incidents", tag = "health",
    params(IncidentQuery),
    responses((status = 200, body = IncidentList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn incidents(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<IncidentQuery>,
) -> Result<Json<IncidentList>, ApiError> {
    caller.require(READ)?;
    let accused = q
        .node
        .map(|n| NodeId::new(n).ok_or_else(|| ApiError::bad_request("node ids start at 1".into())))
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let store = s.node.store();
    let threshold = s.node.config().limits.exclude_after_incidents;
    let unreleased = store
        .unreleased_incident_counts(None)
        .await
        .map_err(NodeError::from)?
        .into_iter()
        .filter(|(n, _)| accused.is_none_or(|a| a == *n))
        .map(|(node, count)| Unreleased {
            node: node.get(),
            count,
            excluded: threshold > 0 && count >= u64::from(threshold),
        })
        .collect();
    let incidents = store
        .incidents(accused, limit)
        .await
        .map_err(NodeError::from)?
        .into_iter()
        .map(Incident::from)
        .collect();
    Ok(Json(IncidentList {
        recorded_by: s.node.id().get(),
        exclude_after_incidents: threshold,
        unreleased,
        incidents,
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Released {
    pub node: u16,
    /// Incidents released now (0 if none were pending).
    pub released: u64,
}

/// Releases a node: its incidents stop counting toward its exclusion from signer sets (they
/// stay listed). Admin only.
#[utoipa::path(post, path = "/api/v1/cluster/incidents/{node}/release", tag = "health",
    params(("node" = u16, Path, description = "the node to release")),
    responses((status = 200, body = Released), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn release(
    State(s): State<AppState>,
    caller: Caller,
    Path(node): Path<u16>,
) -> Result<Json<Released>, ApiError> {
    caller.require(ADMIN)?;
    let id =
        NodeId::new(node).ok_or_else(|| ApiError::bad_request("node ids start at 1".into()))?;
    if !s.node.config().cluster.nodes.iter().any(|p| p.id == id) {
        return Err(ApiError::not_found(format!(
            "node {node} is not in the cluster"
        )));
    }
    let released = s.node.release_incidents(id).await?;
    Ok(Json(Released { node, released }))
}
