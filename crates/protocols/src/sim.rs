//! Runs `n` parties of a protocol in one process, each on its own thread, over in-memory
//! channels. This is the "in-process library run" that tests use and that benchmarks compare
//! the networked cluster against: same protocol code, no serialization, no network.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use futures::{
    channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender},
    Sink, StreamExt,
};
use round_based::{Incoming, MessageDestination, MessageType, MpcParty, Outgoing, PartyIndex};

/// Incoming half of a simulated party's delivery.
pub type SimIncoming<M> = futures::stream::Map<
    UnboundedReceiver<Incoming<M>>,
    fn(Incoming<M>) -> Result<Incoming<M>, Infallible>,
>;

/// A party connected to the simulated network.
pub type SimParty<M> = MpcParty<M, (SimIncoming<M>, SimOutgoing<M>)>;

/// Rewrites a message in flight: `(sender, recipient, message)`. Tests use it to play a
/// cheating party against the real protocol code of the others.
pub type Tamper<M> = Arc<dyn Fn(PartyIndex, PartyIndex, &mut M) + Send + Sync>;

/// Outgoing half: routes each message to its recipients' channels.
pub struct SimOutgoing<M> {
    me: PartyIndex,
    peers: Arc<Vec<UnboundedSender<Incoming<M>>>>,
    next_id: Arc<AtomicU64>,
    tamper: Option<Tamper<M>>,
}

impl<M: Clone> Sink<Outgoing<M>> for SimOutgoing<M> {
    type Error = Infallible;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, out: Outgoing<M>) -> Result<(), Self::Error> {
        let deliver = |to: usize, msg_type: MessageType, mut msg: M| {
            if let (Some(tamper), Ok(to)) = (&self.tamper, PartyIndex::try_from(to)) {
                tamper(self.me, to, &mut msg);
            }
            let incoming = Incoming {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                sender: self.me,
                msg_type,
                msg,
            };
            // A party that already finished has dropped its receiver; that is not an error.
            let _ = self.peers[to].unbounded_send(incoming);
        };
        match out.recipient {
            MessageDestination::AllParties => {
                for to in (0..self.peers.len()).filter(|j| *j != usize::from(self.me)) {
                    deliver(to, MessageType::Broadcast, out.msg.clone());
                }
            }
            MessageDestination::OneParty(to) if usize::from(to) < self.peers.len() => {
                deliver(usize::from(to), MessageType::P2P, out.msg);
            }
            // A message to a non-existent party is dropped, as a network would.
            MessageDestination::OneParty(_) => {}
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

/// Runs `n` parties: party `i` runs `protocol(i, party)` on its own thread. Returns the
/// outputs in party order.
pub fn run<M, T, F, Fut>(n: u16, protocol: F) -> Vec<T>
where
    M: Clone + Send + 'static,
    T: Send,
    F: Fn(PartyIndex, SimParty<M>) -> Fut + Sync,
    Fut: Future<Output = T>,
{
    run_tampered(n, None, protocol)
}

/// [`run`], with every delivered message passed through `tamper` first.
pub fn run_tampered<M, T, F, Fut>(n: u16, tamper: Option<Tamper<M>>, protocol: F) -> Vec<T>
where
    M: Clone + Send + 'static,
    T: Send,
    F: Fn(PartyIndex, SimParty<M>) -> Fut + Sync,
    Fut: Future<Output = T>,
{
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded()).unzip();
    let peers = Arc::new(senders);
    let next_id = Arc::new(AtomicU64::new(0));
    let protocol = &protocol;
    std::thread::scope(|scope| {
        let handles: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let i = i as PartyIndex;
                let outgoing = SimOutgoing {
                    me: i,
                    peers: peers.clone(),
                    next_id: next_id.clone(),
                    tamper: tamper.clone(),
                };
                let incoming: SimIncoming<M> = rx.map(Ok as fn(_) -> _);
                scope.spawn(move || {
                    let party = MpcParty::connected((incoming, outgoing));
                    futures::executor::block_on(protocol(i, party))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(out) => out,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}
