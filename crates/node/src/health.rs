//! Heartbeats and liveness: which peers this node has heard from recently. The coordinator
//! picks signers only among live nodes.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use mpc_transport::NodeId;
use serde::Serialize;

use crate::audit_heads::{AuditHeads, PeerAuditStatus};
use crate::now_ms;

#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    at_ms: i64,
    version: String,
    primes_ready: Option<bool>,
}

/// The liveness table of one node.
pub struct Health {
    me: NodeId,
    all: Vec<NodeId>,
    liveness: Duration,
    seen: Mutex<HashMap<NodeId, Seen>>,
    /// The peers' audit-log heads, checked over the same heartbeats.
    pub audit: AuditHeads,
}

/// One node's liveness, as reported by the API.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub node: NodeId,
    pub live: bool,
    /// Unix milliseconds of the last heartbeat (this node: now).
    pub last_heartbeat_ms: Option<i64>,
    pub version: Option<String>,
    /// The peer's audit log as this node checked it (none for this node itself).
    pub audit: Option<PeerAuditStatus>,
}

impl Health {
    pub fn new(me: NodeId, all: Vec<NodeId>, liveness: Duration) -> Self {
        Self {
            me,
            all,
            liveness,
            seen: Mutex::new(HashMap::new()),
            audit: AuditHeads::default(),
        }
    }

    /// A heartbeat from `node`: its version, and whether it holds safe primes (if it says).
    pub fn heard_from(&self, node: NodeId, version: String, primes_ready: Option<bool>) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(
                node,
                Seen {
                    at: Instant::now(),
                    at_ms: now_ms(),
                    version,
                    primes_ready,
                },
            );
        }
    }

    /// Whether live peer `node`'s last heartbeat said it holds safe primes (this node's own
    /// are in its store, not here: false).
    pub fn primes_ready(&self, node: NodeId) -> bool {
        node != self.me
            && self.is_live(node)
            && self
                .seen
                .lock()
                .ok()
                .and_then(|s| s.get(&node).and_then(|s| s.primes_ready))
                .unwrap_or(false)
    }

    pub fn is_live(&self, node: NodeId) -> bool {
        node == self.me
            || self
                .seen
                .lock()
                .ok()
                .and_then(|s| s.get(&node).map(|s| s.at.elapsed() < self.liveness))
                .unwrap_or(false)
    }

    /// Live nodes (this one included), sorted.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        self.all
            .iter()
            .copied()
            .filter(|n| self.is_live(*n))
            .collect()
    }

    pub fn statuses(&self) -> Vec<PeerStatus> {
        let seen = self.seen.lock().map(|s| s.clone()).unwrap_or_default();
        self.all
            .iter()
            .map(|n| {
                if *n == self.me {
                    return PeerStatus {
                        node: *n,
                        live: true,
                        last_heartbeat_ms: Some(now_ms()),
                        version: Some(crate::VERSION.to_string()),
                        audit: None,
                    };
                }
                let s = seen.get(n);
                PeerStatus {
                    node: *n,
                    live: s.is_some_and(|s| s.at.elapsed() < self.liveness),
                    last_heartbeat_ms: s.map(|s| s.at_ms),
                    version: s.map(|s| s.version.clone()),
                    audit: self.audit.status(*n),
                }
            })
            .collect()
    }
}
