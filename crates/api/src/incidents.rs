//! Incidents: the blame this node recorded as coordinator (`GET /api/v1/cluster/incidents`,
//! each with its evidence checked against this node's cluster CA), an operator's release of a
//! node kept out of signer sets for it, and the check of evidence any node recorded against
//! this node's own CA (`POST /api/v1/cluster/evidence/verify`).

use axum::{
    extract::{Path, Query, State},
    Json,
};
use mpc_node::{
    evidence::{EvidenceError, IncidentCheckError, VerifiedEvidence},
    NodeError,
};
use mpc_store::IncidentRecord;
use mpc_types::{NodeId, WalletId};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Caller, ADMIN, READ},
    error::{ApiError, ErrorBody},
    routes::ApiJson,
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
    #[schema(value_type = Option<String>)]
    pub wallet_id: Option<WalletId>,
    pub at_ms: i64,
    /// The error as recorded.
    pub detail: String,
    /// Evidence another node can check (hex), when there is any: the accused's signed
    /// message(s) and certificate (`POST /api/v1/cluster/evidence/verify` on any node).
    pub evidence: Option<String>,
    /// This node's check of `evidence` against its own cluster CA, when there is evidence.
    pub evidence_check: Option<EvidenceCheck>,
    /// Set once an operator released `accused`; released incidents no longer count.
    pub released_at_ms: Option<i64>,
}

impl Incident {
    /// The listing of `i`, its evidence checked by `node` against `ca` (its cluster CA).
    fn checked(i: IncidentRecord, node: NodeId, ca: &CertificateDer<'_>) -> Self {
        let evidence_check = i
            .evidence
            .as_deref()
            .map(|e| EvidenceCheck::of(node, mpc_node::evidence::verify_evidence(e, ca)));
        Self {
            evidence_check,
            ..Self::from(i)
        }
    }
}

impl From<IncidentRecord> for Incident {
    fn from(i: IncidentRecord) -> Self {
        Self {
            evidence_check: None,
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
    /// Whether the incidents that count toward exclusion (this node's own verdicts, and
    /// reports that came with evidence it verified) reach `exclude_after_incidents`: the node
    /// is left out of signer sets (unless too few others are live).
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

/// Incidents this node recorded, newest first, each with its evidence checked against this
/// node's cluster CA, and the nodes it keeps out of signer sets.
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
    let excluding = store
        .excluding_incident_counts(s.node.id())
        .await
        .map_err(NodeError::from)?;
    let excluded = |node: NodeId| {
        threshold > 0
            && excluding
                .iter()
                .any(|(n, count)| *n == node && *count >= u64::from(threshold))
    };
    let unreleased = store
        .unreleased_incident_counts(None)
        .await
        .map_err(NodeError::from)?
        .into_iter()
        .filter(|(n, _)| accused.is_none_or(|a| a == *n))
        .map(|(node, count)| Unreleased {
            node: node.get(),
            count,
            excluded: excluded(node),
        })
        .collect();
    let ca = s.node.cluster_ca()?;
    let me = s.node.id();
    let incidents = store
        .incidents(accused, limit)
        .await
        .map_err(NodeError::from)?
        .into_iter()
        .map(|i| Incident::checked(i, me, &ca))
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
    let released =
        mpc_node::audit::with_caller(caller.actor(), s.node.release_incidents(id)).await?;
    Ok(Json(Released { node, released }))
}

/// One of the accused's messages in a piece of evidence, as it signed it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvidenceMessage {
    pub session: Uuid,
    /// 0: a control message; else the protocol's code.
    pub protocol: u8,
    pub round: u16,
    pub from: u16,
    /// `null`: a broadcast.
    pub to: Option<u16>,
    /// The payload (hex).
    pub payload: String,
    /// The sender's ECDSA P-256 signature over the envelope (hex, `r || s`).
    pub signature: Option<String>,
}

/// The answering node's check of a piece of evidence against its own cluster CA.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvidenceCheck {
    /// The node that checked (it trusts only its own cluster CA, not the recorder).
    pub checked_by: u16,
    /// Whether the evidence verifies: the accused's certificate chains to the CA and names
    /// it, every message is the accused's and its signature verifies, and the fault holds
    /// where it can be re-checked.
    pub valid: bool,
    /// Why it does not verify.
    pub reason: Option<String>,
    pub accused: Option<u16>,
    /// `undecodable` (a protocol message that does not decode), `equivocation` (two
    /// different messages for one slot) or `exhibit` (messages shown as sent: an outcome that
    /// failed the recorder's check, which needs context the messages do not carry).
    pub fault: Option<String>,
    /// Whether the fault itself was re-checked from the messages; otherwise the evidence
    /// proves only that the accused sent exactly these messages.
    pub fault_rechecked: bool,
    /// SHA-256 of the accused's certificate (hex).
    pub certificate_fingerprint: Option<String>,
    pub messages: Vec<EvidenceMessage>,
}

impl EvidenceCheck {
    fn of(checked_by: NodeId, result: Result<VerifiedEvidence, EvidenceError>) -> Self {
        match result {
            Ok(v) => Self {
                checked_by: checked_by.get(),
                valid: true,
                reason: None,
                accused: Some(v.accused.get()),
                fault: Some(v.fault.as_str().to_owned()),
                fault_rechecked: v.fault_rechecked,
                certificate_fingerprint: Some(v.certificate_fingerprint),
                messages: v
                    .envelopes
                    .iter()
                    .map(|e| EvidenceMessage {
                        session: e.session.as_uuid(),
                        protocol: e.protocol,
                        round: e.round,
                        from: e.from.get(),
                        to: e.to.map(NodeId::get),
                        payload: hex::encode(&e.payload),
                        signature: e.signature.map(|s| hex::encode(s.0)),
                    })
                    .collect(),
            },
            Err(e) => Self {
                checked_by: checked_by.get(),
                valid: false,
                reason: Some(e.to_string()),
                accused: None,
                fault: None,
                fault_rechecked: false,
                certificate_fingerprint: None,
                messages: Vec::new(),
            },
        }
    }
}

/// The answer to a check: evidence that does not verify is an answer (`valid: false`), not
/// an error; this node's own trouble (its CA file) is.
fn checked(
    node: NodeId,
    result: Result<VerifiedEvidence, IncidentCheckError>,
) -> Result<Json<EvidenceCheck>, ApiError> {
    match result {
        Ok(v) => Ok(Json(EvidenceCheck::of(node, Ok(v)))),
        Err(IncidentCheckError::Invalid(e)) => Ok(Json(EvidenceCheck::of(node, Err(e)))),
        Err(e @ (IncidentCheckError::NotFound(_) | IncidentCheckError::NoEvidence(_))) => {
            Err(ApiError::not_found(e.to_string()))
        }
        Err(IncidentCheckError::Node(e)) => Err(e.into()),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRequest {
    /// Evidence as any node lists it (`GET /api/v1/cluster/incidents`, `evidence`), hex.
    pub evidence: String,
}

/// Checks evidence recorded by any node (copied from its incident listing) against this
/// node's cluster CA: whoever recorded it need not be trusted.
#[utoipa::path(post, path = "/api/v1/cluster/evidence/verify", tag = "health",
    request_body = EvidenceRequest,
    responses((status = 200, body = EvidenceCheck), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify_evidence(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<EvidenceRequest>,
) -> Result<Json<EvidenceCheck>, ApiError> {
    caller.require(READ)?;
    let evidence = hex::decode(req.evidence.trim())
        .map_err(|e| ApiError::bad_request(format!("evidence is not hex: {e}")))?;
    checked(s.node.id(), s.node.verify_evidence(&evidence))
}
