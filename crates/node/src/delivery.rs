//! Runs a sans-I/O protocol over the mesh: the adapter between a registered session (router
//! inbox + transport) and a `round_based` party.
//!
//! The protocol runs on a blocking thread (its big-number steps take seconds of CPU and must
//! not stall the async runtime). Incoming envelopes are decoded into protocol messages with
//! the sender's index in the session; outgoing ones are encoded, addressed by node id and
//! sent from an async task. A session deadline ends the incoming stream with an error that
//! names the parties not heard from in the last round.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Sink, Stream};
use mpc_protocols::{encoding, ProtocolKind};
use mpc_transport::{Envelope, NodeId, SessionEvent, SessionId, SessionInbox, Transport};
use round_based::{Incoming, MessageDestination, MessageType, MpcParty, Outgoing, ProtocolMessage};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::mpsc;
use tracing::warn;

/// Why a session's message stream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    #[error("timed out after {after:?}; no message in the latest round from node(s) {silent:?}")]
    Timeout {
        after: Duration,
        silent: Vec<NodeId>,
    },
    #[error("node {from} sent a malformed message: {reason}")]
    Malformed { from: NodeId, reason: String },
    #[error("{0}")]
    Fault(String),
    #[error("outgoing channel closed")]
    Closed,
}

/// The session's parties, by index, and this node's place among them.
#[derive(Debug, Clone)]
pub struct SessionParties {
    pub session: SessionId,
    pub protocol: ProtocolKind,
    /// Node ids in protocol-index order.
    pub nodes: Vec<NodeId>,
    pub me: NodeId,
}

impl SessionParties {
    fn index_of(&self, node: NodeId) -> Option<u16> {
        self.nodes.iter().position(|n| *n == node).map(|i| i as u16)
    }
}

/// Incoming half: decodes envelopes from the session inbox.
pub struct IncomingMessages<M> {
    parties: Arc<SessionParties>,
    inbox: SessionInbox,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    next_id: u64,
    /// Highest round heard from each node, for naming the silent ones on timeout.
    rounds: HashMap<NodeId, u16>,
    _msg: std::marker::PhantomData<fn() -> M>,
}

impl<M: DeserializeOwned> Stream for IncomingMessages<M> {
    type Item = Result<Incoming<M>, DeliveryError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.inbox.receiver().poll_recv(cx) {
                Poll::Ready(Some(SessionEvent::Message(envelope))) => {
                    let Some(sender) = this.parties.index_of(envelope.from) else {
                        continue; // the router already refuses non-participants
                    };
                    let round = this.rounds.entry(envelope.from).or_default();
                    *round = (*round).max(envelope.round);
                    let msg = match encoding::decode::<M>(&envelope.payload) {
                        Ok(m) => m,
                        Err(e) => {
                            return Poll::Ready(Some(Err(DeliveryError::Malformed {
                                from: envelope.from,
                                reason: e.to_string(),
                            })))
                        }
                    };
                    this.next_id += 1;
                    return Poll::Ready(Some(Ok(Incoming {
                        id: this.next_id,
                        sender,
                        msg_type: if envelope.to.is_some() {
                            MessageType::P2P
                        } else {
                            MessageType::Broadcast
                        },
                        msg,
                    })));
                }
                Poll::Ready(Some(SessionEvent::Fault(refusal))) => {
                    return Poll::Ready(Some(Err(DeliveryError::Fault(refusal.to_string()))))
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let latest = this.rounds.values().copied().max();
                let silent = this
                    .parties
                    .nodes
                    .iter()
                    .copied()
                    .filter(|n| *n != this.parties.me)
                    .filter(|n| match (this.rounds.get(n), latest) {
                        (Some(round), Some(latest)) => *round < latest,
                        _ => true,
                    })
                    .collect();
                Poll::Ready(Some(Err(DeliveryError::Timeout {
                    after: this.timeout,
                    silent,
                })))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Outgoing half: encodes and hands envelopes to a sending task.
pub struct OutgoingMessages<M> {
    parties: Arc<SessionParties>,
    tx: mpsc::UnboundedSender<(NodeId, Envelope)>,
    _msg: std::marker::PhantomData<fn(M)>,
}

impl<M: Serialize + ProtocolMessage> Sink<Outgoing<M>> for OutgoingMessages<M> {
    type Error = DeliveryError;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, out: Outgoing<M>) -> Result<(), Self::Error> {
        let p = &self.parties;
        let payload =
            encoding::encode(&out.msg).map_err(|e| DeliveryError::Fault(e.to_string()))?;
        let envelope = |to: Option<NodeId>| Envelope {
            protocol: p.protocol.code(),
            session: p.session,
            round: out.msg.round(),
            from: p.me,
            to,
            payload: payload.clone(),
        };
        match out.recipient {
            MessageDestination::AllParties => {
                for node in p.nodes.iter().copied().filter(|n| *n != p.me) {
                    self.tx
                        .send((node, envelope(None)))
                        .map_err(|_| DeliveryError::Closed)?;
                }
            }
            MessageDestination::OneParty(i) => {
                let node = *p.nodes.get(usize::from(i)).ok_or_else(|| {
                    DeliveryError::Fault(format!("message to party {i}, outside the session"))
                })?;
                self.tx
                    .send((node, envelope(Some(node))))
                    .map_err(|_| DeliveryError::Closed)?;
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// A protocol party connected to the mesh.
pub type MeshParty<M> = MpcParty<M, (IncomingMessages<M>, OutgoingMessages<M>)>;

/// Connects a registered session to the mesh and returns the party for the protocol. Must be
/// called inside the tokio runtime (it spawns the sending task).
pub fn connect<M>(
    parties: SessionParties,
    inbox: SessionInbox,
    transport: Arc<dyn Transport>,
    timeout: Duration,
) -> MeshParty<M>
where
    M: Serialize + DeserializeOwned + ProtocolMessage,
{
    MpcParty::connected(delivery(parties, inbox, transport, timeout))
}

fn delivery<M>(
    parties: SessionParties,
    inbox: SessionInbox,
    transport: Arc<dyn Transport>,
    timeout: Duration,
) -> (IncomingMessages<M>, OutgoingMessages<M>)
where
    M: Serialize + DeserializeOwned + ProtocolMessage,
{
    let parties = Arc::new(parties);
    let (tx, mut rx) = mpsc::unbounded_channel::<(NodeId, Envelope)>();
    let session = parties.session;
    tokio::spawn(async move {
        while let Some((to, envelope)) = rx.recv().await {
            if let Err(e) = transport.send(to, envelope).await {
                // The protocol notices through its own deadline; say which peer failed.
                warn!(%session, to = to.get(), error = %e, "protocol message not delivered");
            }
        }
    });
    let incoming = IncomingMessages {
        parties: parties.clone(),
        inbox,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        timeout,
        next_id: 0,
        rounds: HashMap::new(),
        _msg: std::marker::PhantomData,
    };
    let outgoing = OutgoingMessages {
        parties,
        tx,
        _msg: std::marker::PhantomData,
    };
    (incoming, outgoing)
}

/// Runs a protocol on a blocking thread, driven by the runtime's timers. `start` builds the
/// protocol future on that thread, so the future itself need not be `Send`.
pub async fn run_blocking<T, F, Fut>(start: F) -> Result<T, crate::NodeError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(start()))
        .await
        .map_err(|e| crate::NodeError::Internal(format!("protocol thread: {e}")))
}

/// Lowers the calling thread to the idle scheduling class until dropped, so background work
/// (presignature generation) yields the CPU to signing. Blocking-pool threads are reused, so
/// the normal class is restored afterwards.
struct IdlePriority;

impl IdlePriority {
    fn enter() -> Self {
        use thread_priority::unix::*;
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        ) {
            warn!(error = ?e, "could not lower the generation thread's priority");
        }
        IdlePriority
    }
}

impl Drop for IdlePriority {
    fn drop(&mut self) {
        use thread_priority::unix::*;
        let _ = set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        );
    }
}

/// [`run_blocking`] at idle priority: for work that must not slow down signing.
pub async fn run_blocking_background<T, F, Fut>(start: F) -> Result<T, crate::NodeError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    run_blocking(move || async move {
        let _idle = IdlePriority::enter();
        start().await
    })
    .await
}
