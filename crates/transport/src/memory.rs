//! The mesh interface over in-memory channels: every envelope is encoded and decoded as on
//! the wire and goes through the receiving node's [`Router`], without sockets or TLS. For
//! unit tests of the layers above. With the `adversary` feature (test builds only), a node's
//! outgoing envelopes can be handed to an [`Interceptor`] that plays a malicious node.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

#[cfg(feature = "adversary")]
use std::time::Duration;

use futures::future::BoxFuture;
use tracing::warn;

use crate::{Envelope, NodeId, Router, Transport, TransportError};

/// A set of nodes joined in memory; [`MemoryNetwork::disconnect`] cuts one off.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    routers: Arc<Mutex<HashMap<NodeId, Arc<Router>>>>,
    #[cfg(feature = "adversary")]
    interceptors: Arc<Mutex<HashMap<NodeId, Arc<dyn Interceptor>>>>,
}

/// Plays a malicious node on the in-memory mesh: sees every envelope the node sends and
/// decides what is delivered instead (feature `adversary`, never in a release build).
#[cfg(feature = "adversary")]
pub trait Interceptor: Send + Sync {
    /// What reaches `to` in place of `envelope`, in order, each after its delay: nothing
    /// (dropped), the envelope as it was, altered copies, or several (duplicated).
    fn outgoing(&self, to: NodeId, envelope: Envelope) -> Vec<(Duration, Envelope)>;
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

    /// Hands node `id`'s outgoing envelopes to `interceptor` from now on.
    #[cfg(feature = "adversary")]
    pub fn intercept(&self, id: NodeId, interceptor: Arc<dyn Interceptor>) {
        if let Ok(mut i) = self.interceptors.lock() {
            i.insert(id, interceptor);
        }
    }

    /// Node `id` behaves again.
    #[cfg(feature = "adversary")]
    pub fn release(&self, id: NodeId) {
        if let Ok(mut i) = self.interceptors.lock() {
            i.remove(&id);
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

/// Decodes `bytes` as the receiving end of a connection would, and hands the envelope to
/// `to`'s router with the sender the connection authenticated (`from`).
fn deliver(from: NodeId, to: NodeId, router: &Router, bytes: &[u8]) {
    match Envelope::decode(bytes) {
        Ok(decoded) => {
            if let Err(refusal) = router.deliver(from, decoded) {
                warn!(from = from.get(), to = to.get(), %refusal, "envelope refused");
            }
        }
        Err(error) => warn!(from = from.get(), to = to.get(), %error, "malformed envelope dropped"),
    }
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
            #[cfg(feature = "adversary")]
            {
                let interceptor = self
                    .network
                    .interceptors
                    .lock()
                    .ok()
                    .and_then(|i| i.get(&self.me).cloned());
                if let Some(interceptor) = interceptor {
                    for (delay, envelope) in interceptor.outgoing(to, envelope) {
                        let (me, router) = (self.me, router.clone());
                        if delay.is_zero() {
                            deliver(me, to, &router, &envelope.encode());
                        } else {
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                deliver(me, to, &router, &envelope.encode());
                            });
                        }
                    }
                    return Ok(());
                }
            }
            deliver(self.me, to, &router, &envelope.encode());
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
