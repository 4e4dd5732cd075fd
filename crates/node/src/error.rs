use mpc_transport::NodeId;

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
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A request over one of this node's configured limits (`[limits]`), refused before any
    /// session starts.
    #[error("limit {limit} exceeded: {detail}")]
    LimitExceeded { limit: &'static str, detail: String },
    #[error("refused by node {node}: {reason}")]
    Refused { node: NodeId, reason: String },
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
    /// Nodes to blame for a failed attempt, so a retry can avoid them.
    pub fn culprits(&self) -> Vec<NodeId> {
        match self {
            NodeError::Timeout { nodes, .. } => nodes.clone(),
            NodeError::Refused { node, .. } => vec![*node],
            _ => Vec::new(),
        }
    }
}
