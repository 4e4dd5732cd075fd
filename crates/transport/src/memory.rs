//! The mesh interface over in-memory channels: every envelope is signed with the sender's node
//! key, encoded and decoded as on the wire, its signature checked against the sender's
//! certificate, and goes through the receiving node's [`Router`], without sockets or TLS. For
//! unit tests of the layers above. With the `adversary` feature (test builds only), a node's
//! outgoing envelopes can be handed to an [`Interceptor`] that plays a malicious node.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

#[cfg(feature = "adversary")]
use std::time::Duration;

use futures::future::BoxFuture;
use rustls_pki_types::CertificateDer;
use tracing::warn;

use crate::{Envelope, NodeId, NodeKey, Router, Transport, TransportError};

/// A set of nodes joined in memory; [`MemoryNetwork::disconnect`] cuts one off.
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    routers: Arc<Mutex<HashMap<NodeId, Arc<Router>>>>,
    /// Each node's certificate, as a TLS handshake would have shown it (kept when it leaves).
    certs: Arc<Mutex<HashMap<NodeId, CertificateDer<'static>>>>,
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

    /// Adds a node whose incoming envelopes go to `router`, which signs with `key` and whose
    /// envelopes are checked against `cert` (its certificate, DER).
    pub fn join(
        &self,
        router: Arc<Router>,
        key: NodeKey,
        cert: CertificateDer<'static>,
    ) -> MemoryTransport {
        let me = router.local_id();
        if let Ok(mut c) = self.certs.lock() {
            c.insert(me, cert);
        }
        if let Ok(mut r) = self.routers.lock() {
            r.insert(me, router);
        }
        MemoryTransport {
            me,
            key: Arc::new(key),
            network: self.clone(),
        }
    }

    fn cert(&self, id: NodeId) -> Option<CertificateDer<'static>> {
        self.certs.lock().ok().and_then(|c| c.get(&id).cloned())
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
    key: Arc<NodeKey>,
    network: MemoryNetwork,
}

/// Decodes `bytes` as the receiving end of a connection would, checks the signature against
/// the certificate of the sender the connection authenticated (`from`), and hands the
/// envelope to `to`'s router.
fn deliver(network: &MemoryNetwork, from: NodeId, to: NodeId, router: &Router, bytes: &[u8]) {
    let checked = Envelope::decode(bytes).and_then(|decoded| {
        let cert = network
            .cert(from)
            .ok_or(TransportError::BadSignature(from))?;
        decoded
            .verify(&cert)
            .map_err(|_| TransportError::BadSignature(from))?;
        Ok(decoded)
    });
    match checked {
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
                    // A malicious node signs whatever it sends with its own key.
                    for (delay, envelope) in interceptor.outgoing(to, envelope) {
                        let (me, router) = (self.me, router.clone());
                        let bytes = envelope.signed(&self.key)?.encode();
                        let network = self.network.clone();
                        if delay.is_zero() {
                            deliver(&network, me, to, &router, &bytes);
                        } else {
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                deliver(&network, me, to, &router, &bytes);
                            });
                        }
                    }
                    return Ok(());
                }
            }
            let bytes = envelope.signed(&self.key)?.encode();
            deliver(&self.network, self.me, to, &router, &bytes);
            Ok(())
        })
    }

    fn peer_certificate(&self, peer: NodeId) -> Option<CertificateDer<'static>> {
        self.network.cert(peer)
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
