//! Runs a sans-I/O protocol over the mesh: the adapter between a registered session (router
//! inbox + transport) and a `round_based` party.
//!
//! The protocol runs on a blocking thread (its big-number steps take seconds of CPU and must
//! not stall the async runtime). Incoming envelopes are decoded into protocol messages with
//! the sender's index in the session; outgoing ones are encoded, addressed by node id and
//! sent from an async task. A session deadline ends the incoming stream with an error that
//! names the parties not heard from in the last round.

use std::{
    collections::{BTreeSet, HashMap},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::{Sink, Stream};
use mpc_protocols::{encoding, ProtocolKind};
use mpc_transport::{
    evidence::{Evidence, Fault},
    Envelope, NodeId, SessionEvent, SessionId, SessionInbox, Transport,
};
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
    /// `evidence`: the encoded [`Evidence`] of it (the node's signed message(s) and its
    /// certificate), when the transport knew its certificate.
    #[error("node {from} sent a malformed message: {reason}")]
    Malformed {
        from: NodeId,
        reason: String,
        evidence: Option<Vec<u8>>,
    },
    #[error("{0}")]
    Fault(String),
    #[error("outgoing channel closed")]
    Closed,
}

/// The delivery failure that ended each failed session, kept so that the protocol's error
/// (which only carries text) can be attributed to the nodes at fault: the silent ones, or the
/// one whose message did not decode ([`crate::Node`] reads and removes the entry).
#[derive(Clone, Default)]
pub struct DeliveryFailures(Arc<Mutex<HashMap<SessionId, DeliveryError>>>);

impl DeliveryFailures {
    /// Failed sessions nobody attributed (e.g. a coordinator's own aborted run) are dropped
    /// beyond this many, oldest first is not tracked: the whole log is cleared.
    const MAX: usize = 1024;

    fn record(&self, session: SessionId, error: &DeliveryError) {
        if let Ok(mut log) = self.0.lock() {
            if log.len() >= Self::MAX {
                log.clear();
            }
            log.entry(session).or_insert_with(|| error.clone());
        }
    }

    /// The failure that ended `session`, if delivery ended it.
    pub fn take(&self, session: SessionId) -> Option<DeliveryError> {
        self.0.lock().ok().and_then(|mut log| log.remove(&session))
    }
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
    /// The rounds heard from each node, for naming the silent ones on timeout.
    rounds: HashMap<NodeId, BTreeSet<u16>>,
    /// The rounds this node sent, in the order it sent them (the protocol's order).
    sent: SentRounds,
    failures: DeliveryFailures,
    /// For the certificates of peers at fault (evidence).
    transport: Arc<dyn Transport>,
    _msg: std::marker::PhantomData<fn() -> M>,
}

impl<M> IncomingMessages<M> {
    fn fail(&self, error: DeliveryError) -> Poll<Option<Result<Incoming<M>, DeliveryError>>> {
        self.failures.record(self.parties.session, &error);
        Poll::Ready(Some(Err(error)))
    }

    /// Evidence that `from` sent `envelopes` (as received, signed), showing `fault`; `None`
    /// if the transport does not know its certificate (it always does for a peer it heard).
    fn evidence(&self, from: NodeId, fault: Fault, envelopes: Vec<Envelope>) -> Option<Vec<u8>> {
        let certificate = self.transport.peer_certificate(from)?;
        Some(
            Evidence {
                accused: from,
                fault,
                certificate,
                envelopes,
            }
            .encode(),
        )
    }
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
                    this.rounds
                        .entry(envelope.from)
                        .or_default()
                        .insert(envelope.round);
                    let msg = match encoding::decode::<M>(&envelope.payload) {
                        Ok(m) => m,
                        Err(e) => {
                            let from = envelope.from;
                            let evidence = this.evidence(from, Fault::Undecodable, vec![envelope]);
                            return this.fail(DeliveryError::Malformed {
                                from,
                                reason: e.to_string(),
                                evidence,
                            });
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
                Poll::Ready(Some(SessionEvent::Fault { refusal, envelopes })) => {
                    // Equivocation has a culprit: the session fails on it, by name, and its
                    // two signed messages are the evidence.
                    return match refusal {
                        mpc_transport::router::Refusal::Equivocation { from, .. } => {
                            let evidence = this.evidence(from, Fault::Equivocation, envelopes);
                            this.fail(DeliveryError::Malformed {
                                from,
                                reason: refusal.to_string(),
                                evidence,
                            })
                        }
                        other => Poll::Ready(Some(Err(DeliveryError::Fault(other.to_string())))),
                    };
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let sent = this.sent.lock().map(|s| s.clone()).unwrap_or_default();
                let silent = silent_nodes(&this.parties, &sent, &this.rounds);
                this.fail(DeliveryError::Timeout {
                    after: this.timeout,
                    silent,
                })
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Rounds a session's party sent, in order (shared by its two halves).
type SentRounds = Arc<Mutex<Vec<u16>>>;

/// The peers the protocol is waiting for. A party sends its message of a round, then waits for
/// everyone else's of the same round: the round it is stuck in is the last one it sent, and the
/// silent are the peers missing from it (a peer that skipped it and went on is the one to
/// blame, not those who wait for it). Round numbers need not follow the protocol's order, so
/// the order this party sent them in is what counts. When every peer sent that round (or this
/// party sent nothing yet), the peers missing from any round another peer sent, else all.
fn silent_nodes(
    parties: &SessionParties,
    sent: &[u16],
    heard: &HashMap<NodeId, BTreeSet<u16>>,
) -> Vec<NodeId> {
    let peers: Vec<NodeId> = parties
        .nodes
        .iter()
        .copied()
        .filter(|n| *n != parties.me)
        .collect();
    let missing_from = |round: u16| -> Vec<NodeId> {
        peers
            .iter()
            .copied()
            .filter(|n| !heard.get(n).is_some_and(|r| r.contains(&round)))
            .collect()
    };
    if let Some(current) = sent.last() {
        let missing = missing_from(*current);
        if !missing.is_empty() {
            return missing;
        }
    }
    let rounds: BTreeSet<u16> = heard.values().flatten().copied().collect();
    for round in rounds {
        let missing = missing_from(round);
        if !missing.is_empty() {
            return missing;
        }
    }
    peers
}

/// Outgoing half: encodes and hands envelopes to a sending task.
pub struct OutgoingMessages<M> {
    parties: Arc<SessionParties>,
    sent: SentRounds,
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
        if let Ok(mut sent) = self.sent.lock() {
            if sent.last() != Some(&out.msg.round()) {
                sent.push(out.msg.round());
            }
        }
        let envelope = |to: Option<NodeId>| Envelope {
            protocol: p.protocol.code(),
            session: p.session,
            round: out.msg.round(),
            from: p.me,
            to,
            payload: payload.clone(),
            signature: None,
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
    failures: DeliveryFailures,
) -> MeshParty<M>
where
    M: Serialize + DeserializeOwned + ProtocolMessage,
{
    MpcParty::connected(delivery(parties, inbox, transport, timeout, failures))
}

fn delivery<M>(
    parties: SessionParties,
    inbox: SessionInbox,
    transport: Arc<dyn Transport>,
    timeout: Duration,
    failures: DeliveryFailures,
) -> (IncomingMessages<M>, OutgoingMessages<M>)
where
    M: Serialize + DeserializeOwned + ProtocolMessage,
{
    let parties = Arc::new(parties);
    let sent = SentRounds::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<(NodeId, Envelope)>();
    let session = parties.session;
    let certificates = transport.clone();
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
        sent: sent.clone(),
        failures,
        transport: certificates,
        _msg: std::marker::PhantomData,
    };
    let outgoing = OutgoingMessages {
        parties,
        sent,
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
/// (presignatures, safe primes) yields the CPU to signing. Blocking-pool threads are reused,
/// so the normal class is restored afterwards.
pub(crate) struct IdlePriority;

impl IdlePriority {
    pub(crate) fn enter() -> Self {
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

/// [`run_blocking`] at idle priority: for work that must not slow down signing. Returns the
/// CPU time the thread spent on it too (the protocol runs on this one thread; `None` if the
/// clock cannot be read).
pub async fn run_blocking_background<T, F, Fut>(
    start: F,
) -> Result<(T, Option<Duration>), crate::NodeError>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    run_blocking(move || async move {
        let _idle = IdlePriority::enter();
        let before = mpc_protocols::sim::thread_cpu();
        let result = start().await;
        let cpu = before
            .zip(mpc_protocols::sim::thread_cpu())
            .map(|(b, a)| a.saturating_sub(b));
        (result, cpu)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_silent_are_those_missing_from_the_round_the_protocol_is_stuck_in() {
        let parties = SessionParties {
            session: SessionId([0; 16]),
            protocol: ProtocolKind::SchnorrKeygen,
            nodes: NodeId::must_list(&[1, 2, 3, 4]),
            me: NodeId::must(1),
        };
        let heard = |entries: &[(u16, &[u16])]| -> HashMap<NodeId, BTreeSet<u16>> {
            entries
                .iter()
                .map(|(n, r)| (NodeId::must(*n), r.iter().copied().collect()))
                .collect()
        };
        let ids = NodeId::must_list;
        // Node 2 skipped round 0 and went on to round 1: it is to blame, not 3 and 4, who
        // wait in round 0 for it.
        let skipped = heard(&[(2, &[1]), (3, &[0]), (4, &[0])]);
        assert_eq!(silent_nodes(&parties, &[0], &skipped), ids(&[2]));
        assert_eq!(silent_nodes(&parties, &[], &skipped), ids(&[2]));
        // Round numbers out of the protocol's order (a reliability check numbered 4 comes
        // right after round 0): this party sent 0 then 4 and waits for node 2's 4, which
        // skipped it and sent 1 and 2.
        let out_of_order = heard(&[(2, &[0, 1, 2]), (3, &[0, 4]), (4, &[0, 4])]);
        assert_eq!(silent_nodes(&parties, &[0, 4], &out_of_order), ids(&[2]));
        // Nothing from node 4 at all.
        let none_from_4 = heard(&[(2, &[0]), (3, &[0])]);
        assert_eq!(silent_nodes(&parties, &[0], &none_from_4), ids(&[4]));
        // Every round heard is complete: everyone is behind in the next.
        let complete = heard(&[(2, &[0, 1]), (3, &[0, 1]), (4, &[0, 1])]);
        assert_eq!(silent_nodes(&parties, &[0, 1], &complete), ids(&[2, 3, 4]));
        assert_eq!(
            silent_nodes(&parties, &[], &HashMap::new()),
            ids(&[2, 3, 4])
        );
        // Node 3 is a round behind the others.
        let behind = heard(&[(2, &[0, 1]), (3, &[0]), (4, &[0, 1])]);
        assert_eq!(silent_nodes(&parties, &[0, 1], &behind), ids(&[3]));
    }
}
