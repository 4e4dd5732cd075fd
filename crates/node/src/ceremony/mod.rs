//! Aux info, key generation and presignatures over the network: the coordinator's side
//! (propose, collect, check that everyone agrees, commit or abort) and the participant's side
//! (check the proposal against its own state, run the protocol, store the result).

use mpc_bitcoin::Scheme;
use mpc_transport::NodeId;
use mpc_types::WalletId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use mpc_protocols::{ecdsa::check_parameters, PartyIndex};

use crate::{control::WalletSpec, Node, NodeError};

/// A request to create a wallet (keygen).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateWallet {
    pub name: String,
    pub scheme: Scheme,
    /// Default: the cluster's threshold.
    pub threshold: Option<u16>,
    /// Default: every node of the cluster.
    pub participants: Option<Vec<NodeId>>,
    /// Default: the cluster's network.
    pub network: Option<mpc_types::Network>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuxInfoReport {
    pub node_set: Vec<NodeId>,
    pub public_digest: String,
    pub duration_ms: u64,
    /// Nodes that did not acknowledge the commit (they learn it by asking).
    pub unacknowledged: Vec<NodeId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PresignReport {
    pub wallet_id: WalletId,
    pub path: String,
    pub signers: Vec<NodeId>,
    pub ids: Vec<String>,
    pub duration_ms: u64,
}

/// The coordinator's check of a two-phase ceremony: all `expected` nodes reported, and the same
/// `what`.
fn all_agree<T: PartialEq + std::fmt::Debug>(
    reports: &[T],
    expected: usize,
    what: &str,
) -> Result<(), NodeError> {
    if reports.len() != expected || reports.windows(2).any(|w| w[0] != w[1]) {
        Err(NodeError::Disagreement(format!(
            "participants reported different {what}: {reports:?}"
        )))
    } else {
        Ok(())
    }
}

fn sorted_unique(nodes: &[NodeId]) -> bool {
    nodes.windows(2).all(|w| w[0] < w[1])
}

impl Node {
    /// A ceremony's node set (a wallet's participants, an aux-info node set): sorted, unique
    /// node ids of this cluster, at least two, this node among them.
    pub fn check_node_set(&self, nodes: &[NodeId], what: &str) -> Result<(), NodeError> {
        self.check_cluster_nodes(nodes, what)?;
        if !nodes.contains(&self.id()) {
            return Err(NodeError::InvalidRequest(format!(
                "node {} is not one of the {what} {nodes:?}",
                self.id()
            )));
        }
        Ok(())
    }

    /// At least two sorted, unique node ids of this cluster (this node need not be one).
    fn check_cluster_nodes(&self, nodes: &[NodeId], what: &str) -> Result<(), NodeError> {
        let cluster = self.inner.config.node_ids();
        if nodes.len() < 2 || !sorted_unique(nodes) || nodes.iter().any(|n| !cluster.contains(n)) {
            return Err(NodeError::InvalidRequest(format!(
                "{what} {nodes:?} must be at least two sorted, unique node ids of the cluster \
                 {cluster:?}"
            )));
        }
        Ok(())
    }

    fn check_all_live(&self, nodes: &[NodeId]) -> Result<(), NodeError> {
        let dead: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| !self.inner.health.is_live(*n))
            .collect();
        if dead.is_empty() {
            Ok(())
        } else {
            Err(NodeError::Unavailable(format!(
                "this ceremony needs every participant, and node(s) {dead:?} are not live"
            )))
        }
    }

    /// A wallet's committee as every node checks it (keygen, resharing): sorted, unique
    /// cluster nodes, `2 <= t <= n`, this node's network, a sane name.
    pub(super) fn check_committee(&self, spec: &WalletSpec) -> Result<(), NodeError> {
        let bad = |m: String| Err(NodeError::InvalidRequest(m));
        let p = &spec.participants;
        self.check_cluster_nodes(p, "participants")?;
        let n = p.len();
        if spec.threshold < 2 || usize::from(spec.threshold) > n {
            return bad(format!(
                "threshold {} for {n} participants: it must be 2 to {n}",
                spec.threshold
            ));
        }
        check_parameters(PartyIndex::new(0), n as u16, spec.threshold)?;
        if spec.network != self.inner.config.cluster.network {
            return bad(format!(
                "node {} serves {}, not {}",
                self.id(),
                self.inner.config.cluster.network,
                spec.network
            ));
        }
        if spec.name.trim().is_empty() || spec.name.len() > 100 {
            return bad("wallet name must be 1 to 100 characters".into());
        }
        Ok(())
    }

    async fn recorded<T: Serialize>(
        &self,
        session: Uuid,
        kind: &str,
        request: &impl Serialize,
        started_at: i64,
        result: Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        // The record keeps the error's own message (a participant's refusal names the node and
        // the reason), not a generic "internal" wrapping of it.
        let outcome = match &result {
            Ok(v) => serde_json::to_value(v)
                .map_err(|e| format!("the ceremony's result could not be recorded: {e}")),
            Err(e) => Err(e.to_string()),
        };
        let request = serde_json::to_value(request).unwrap_or(serde_json::Value::Null);
        self.record_ceremony(session, kind, request, started_at, &outcome)
            .await;
        result
    }
}

mod aux_info;
pub(crate) mod decision;
mod keygen;
mod presign;
mod refresh;
mod reshare;
mod schedule;

pub use refresh::RefreshReport;
pub use reshare::ReshareReport;
