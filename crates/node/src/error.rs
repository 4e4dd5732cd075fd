use mpc_transport::NodeId;
use uuid::Uuid;

use crate::refusal::{Refusal, RefusalKind};

/// Errors of a node's services. The API maps them to HTTP statuses by kind.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] mpc_store::StoreError),
    #[error("transport: {0}")]
    Transport(#[from] mpc_transport::TransportError),
    #[error("protocol: {0}")]
    Protocol(#[from] mpc_protocols::ProtocolError),
    #[error("{0}")]
    Wallet(#[from] mpc_bitcoin::WalletError),
    #[error(transparent)]
    Policy(#[from] mpc_bitcoin::policy::PolicyViolation),
    /// The human approvals a transaction needs are missing, invalid or expired
    /// (`[policy.approvals]`).
    #[error(transparent)]
    Approval(#[from] mpc_bitcoin::approval::ApprovalViolation),
    /// A request waiting for approvals that is no longer pending (signed, rejected, expired).
    #[error("request {id} is {state}, no longer pending")]
    RequestClosed { id: Uuid, state: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A request over one of this node's configured limits (`[limits]`), refused before any
    /// session starts.
    #[error("limit {limit} exceeded: {detail}")]
    LimitExceeded { limit: &'static str, detail: String },
    /// A participant refused the proposal or failed it; its refusal came typed over the
    /// control channel, so the API answers it as it would answer the same error here.
    #[error("refused by node {node}: {}", refusal.message)]
    Refused { node: NodeId, refusal: Refusal },
    /// A participant answered with something the protocol does not allow (a malformed outcome,
    /// a share claiming another signer's index): blamed, and left out of the retry.
    /// `evidence`: the encoded `mpc_transport::evidence::Evidence` of it (its signed
    /// message(s) and certificate), when there is one.
    #[error("node {node} misbehaved: {reason}")]
    Misbehaved {
        node: NodeId,
        reason: String,
        evidence: Option<Vec<u8>>,
    },
    /// A proposal's session id was used before (invariant 4: a replay).
    #[error("session {0} was already used (replay refused)")]
    SessionReplayed(Uuid),
    /// A presignature a proposal names cannot be used here.
    #[error("presignature {presignature} {detail}")]
    PresignatureUnavailable {
        presignature: String,
        detail: String,
    },
    #[error("not enough live nodes: {0}")]
    Unavailable(String),
    #[error("node(s) {nodes:?} did not respond within {seconds:.1} s")]
    Timeout { nodes: Vec<NodeId>, seconds: f64 },
    #[error("coordination: {0}")]
    Coordination(#[from] mpc_coordination::CoordinationError),
    /// A proposal's fencing token is not the one etcd shows for the current holder.
    #[error(transparent)]
    FencingTokenRefused(#[from] mpc_coordination::TokenRefusal),
    #[error("nodes disagree: {0}")]
    Disagreement(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl NodeError {
    /// Nodes to blame for a failed attempt, so a retry can avoid them. Exhaustive, so a new
    /// variant must say whether it names a culprit.
    pub fn culprits(&self) -> Vec<NodeId> {
        match self {
            NodeError::Timeout { nodes, .. } => nodes.clone(),
            // A signer's own refusal (its policy, its view of the PSBT, its presignatures) or
            // failure: another signer set may have none.
            // A participant that names the nodes its run failed on blames them, not itself.
            // (Its word alone: until protocol messages are signed, a lying participant could
            // name an honest node; the retry then still avoids the set that failed.)
            NodeError::Refused { node, refusal } => match &refusal.kind {
                RefusalKind::PeersSilent { nodes } => nodes.clone(),
                RefusalKind::PeerMisbehaved { node } => vec![*node],
                // The run aborted on someone the library does not name: not the reporter.
                RefusalKind::ProtocolAborted => Vec::new(),
                _ => vec![*node],
            },
            NodeError::Misbehaved { node, .. } => vec![*node],
            // The coordinator's own errors: no other signer set changes them.
            NodeError::Config(_)
            | NodeError::Store(_)
            | NodeError::Transport(_)
            | NodeError::Protocol(_)
            | NodeError::Wallet(_)
            | NodeError::Policy(_)
            | NodeError::Approval(_)
            | NodeError::RequestClosed { .. }
            | NodeError::NotFound(_)
            | NodeError::InvalidRequest(_)
            | NodeError::LimitExceeded { .. }
            | NodeError::SessionReplayed(_)
            | NodeError::PresignatureUnavailable { .. }
            | NodeError::Unavailable(_)
            | NodeError::Coordination(_)
            | NodeError::FencingTokenRefused(_)
            | NodeError::Disagreement(_)
            | NodeError::Internal(_) => Vec::new(),
        }
    }
}
