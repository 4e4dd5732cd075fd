//! The cluster mesh between nodes.
//!
//! * [`envelope`]: the versioned binary envelope every message travels in.
//! * [`router`]: delivers envelopes to the protocol session they belong to; holds early ones,
//!   drops duplicates, refuses equivocation, strangers and replays from finished sessions;
//!   every peer has its own quota of what the router keeps for it.
//! * [`quic`]: the real transport, QUIC with mutual TLS; a node's identity is its certificate.
//! * [`memory`]: the same interface over in-memory channels, for unit tests.
//! * [`certs`]: the cluster CA and node certificates.
//! * [`signing`]: envelope signatures with the node's TLS key.
//! * [`evidence`]: a peer's signed envelopes and certificate, checkable by a third party.

pub mod certs;
pub mod envelope;
pub mod evidence;
pub mod memory;
pub mod quic;
mod refusal_log;
pub mod router;
pub mod signing;

use futures::future::BoxFuture;

pub use envelope::{Envelope, SessionId, CONTROL};
pub use router::{ControlInbox, Recent, Router, RouterLimits, SessionEvent, SessionInbox};
pub use signing::{NodeKey, Signature};

pub use mpc_types::NodeId;

/// Errors of the transport layer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// An envelope whose signature is missing or does not verify under the certificate of the
    /// node it came from (named): as malformed, and attributed to that node.
    #[error("malformed envelope: the signature of node {0} does not verify")]
    BadSignature(NodeId),
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("node {0} is not a peer in the cluster config")]
    UnknownPeer(NodeId),
    #[error("node {0} is unreachable: {1}")]
    Unreachable(NodeId, String),
    #[error("TLS/certificate: {0}")]
    Tls(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends envelopes to peers. Implemented by the QUIC mesh and the in-memory mesh; incoming
/// envelopes of both go to a [`Router`].
pub trait Transport: Send + Sync {
    /// This node's id.
    fn local_id(&self) -> NodeId;
    /// Sends one envelope to `to`; resolves once it was handed to the connection.
    fn send(&self, to: NodeId, envelope: Envelope) -> BoxFuture<'_, Result<(), TransportError>>;
    /// Peers with a live connection right now.
    fn connected_peers(&self) -> Vec<NodeId>;
    /// The certificate (DER) `peer` authenticated with, the one its envelopes were checked
    /// against: from its latest connection, kept after that closes. For evidence.
    fn peer_certificate(&self, peer: NodeId) -> Option<rustls_pki_types::CertificateDer<'static>>;
}

/// The certificate subject name of node `id`.
pub fn node_name(id: NodeId) -> String {
    format!("node-{id}")
}
