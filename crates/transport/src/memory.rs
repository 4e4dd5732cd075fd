//! The mesh interface over in-memory channels: every envelope is encoded and decoded as on
//! the wire and goes through the receiving node's [`Router`], without sockets or TLS. For
//! unit tests of the layers above.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::future::BoxFuture;
use tracing::warn;

use crate::{Envelope, NodeId, Router, Transport, TransportError};

/// A set of nodes joined in memory; [`MemoryNetwork::disconnect`] cuts one off.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    routers: Arc<Mutex<HashMap<NodeId, Arc<Router>>>>,
}

impl MemoryNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node whose incoming envelopes go to `router`.
    pub fn join(&self, router: Arc<Router>) -> MemoryTransport {
        let me = router.local_id();
        if let Ok(mut r) = self.routers.lock() {
            r.insert(me, router);
        }
        MemoryTransport {
            me,
            network: self.clone(),
        }
    }

    /// Removes a node: messages to it fail as unreachable, as if it had died.
    pub fn disconnect(&self, id: NodeId) {
        if let Ok(mut r) = self.routers.lock() {
            r.remove(&id);
        }
    }

    fn router(&self, id: NodeId) -> Option<Arc<Router>> {
        self.routers.lock().ok().and_then(|r| r.get(&id).cloned())
    }
}

/// One node's sending side on a [`MemoryNetwork`].
pub struct MemoryTransport {
    me: NodeId,
    network: MemoryNetwork,
}

impl Transport for MemoryTransport {
    fn local_id(&self) -> NodeId {
        self.me
    }

    fn send(&self, to: NodeId, envelope: Envelope) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let router = self
                .network
                .router(to)
                .ok_or_else(|| TransportError::Unreachable(to, "not on the network".into()))?;
            if self.network.router(self.me).is_none() {
                return Err(TransportError::Unreachable(
                    to,
                    "this node is disconnected".into(),
                ));
            }
            let decoded = Envelope::decode(&envelope.encode())?;
            if let Err(refusal) = router.deliver(self.me, decoded) {
                warn!(from = self.me.get(), to = to.get(), %refusal, "envelope refused");
            }
            Ok(())
        })
    }

    fn connected_peers(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .network
            .routers
            .lock()
            .map(|r| r.keys().copied().filter(|id| *id != self.me).collect())
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }
}
