//! Runs `n` parties of a protocol in one process, each on its own thread, over in-memory
//! channels. This is the "in-process library run" that tests use and that benchmarks compare
//! the networked cluster against: same protocol code, no serialization, no network.
//!
//! Inside [`measured`], each run also records what every party cost: its thread's CPU time and
//! the messages and bytes it sent (each message CBOR-encoded, as a node encodes it for the
//! wire), for the cost-curve benchmark.

use std::{
    cell::RefCell,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender},
    Sink, StreamExt,
};
use round_based::{Incoming, MessageDestination, MessageType, MpcParty, Outgoing, PartyIndex};
use serde::Serialize;

/// What one party of a simulated run cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartyCost {
    /// CPU time of the party's thread ([`thread_cpu`]), encoding included.
    pub cpu: Duration,
    /// Messages sent, one per recipient (a broadcast to `n - 1` parties counts `n - 1`), as
    /// the node's delivery sends one envelope per peer.
    pub messages: u64,
    /// The CBOR payload bytes of those messages; the envelope around them is not counted.
    pub bytes: u64,
}

/// CPU time of the calling thread so far (`CLOCK_THREAD_CPUTIME_ID`); `None` where the clock
/// cannot be read.
pub fn thread_cpu() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .ok()
        .map(Duration::from)
}

thread_local! {
    /// The costs of the runs started on this thread inside [`measured`]; `None` outside it,
    /// where messages are not encoded.
    static MEASURED: RefCell<Option<Vec<Vec<PartyCost>>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns, beside its output, the per-party costs of every simulated run `f`
/// started on this thread, in order (one `Vec` per run, in party order).
///
/// Inside it every message is encoded to be counted, which a party pays for in CPU as a node
/// does; a message that cannot be encoded panics the run (a node could not send it either).
pub fn measured<T>(f: impl FnOnce() -> T) -> (T, Vec<Vec<PartyCost>>) {
    let outer = MEASURED.with(|m| m.replace(Some(Vec::new())));
    let out = f();
    let runs = MEASURED.with(|m| m.replace(outer)).unwrap_or_default();
    (out, runs)
}

/// Messages and bytes one party sent, counted by its outgoing half.
#[derive(Default)]
struct Sent {
    messages: AtomicU64,
    bytes: AtomicU64,
}

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
    /// Set inside [`measured`] only.
    sent: Option<Arc<Sent>>,
}

impl<M: Clone + Serialize> Sink<Outgoing<M>> for SimOutgoing<M> {
    type Error = Infallible;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, out: Outgoing<M>) -> Result<(), Self::Error> {
        if let Some(sent) = &self.sent {
            let copies = match out.recipient {
                MessageDestination::AllParties => self.peers.len().saturating_sub(1),
                MessageDestination::OneParty(to) => usize::from(usize::from(to) < self.peers.len()),
            } as u64;
            // Encoded once, sent to each recipient: as the node's delivery does.
            let len = match crate::encoding::encode(&out.msg) {
                Ok(bytes) => bytes.len() as u64,
                Err(e) => panic!("a protocol message that cannot be encoded: {e}"),
            };
            sent.messages.fetch_add(copies, Ordering::Relaxed);
            sent.bytes.fetch_add(copies * len, Ordering::Relaxed);
        }
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
    M: Clone + Serialize + Send + 'static,
    T: Send,
    F: Fn(PartyIndex, SimParty<M>) -> Fut + Sync,
    Fut: Future<Output = T>,
{
    run_tampered(n, None, protocol)
}

/// [`run`], with every delivered message passed through `tamper` first.
pub fn run_tampered<M, T, F, Fut>(n: u16, tamper: Option<Tamper<M>>, protocol: F) -> Vec<T>
where
    M: Clone + Serialize + Send + 'static,
    T: Send,
    F: Fn(PartyIndex, SimParty<M>) -> Fut + Sync,
    Fut: Future<Output = T>,
{
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded()).unzip();
    let peers = Arc::new(senders);
    let next_id = Arc::new(AtomicU64::new(0));
    let protocol = &protocol;
    let measuring = MEASURED.with(|m| m.borrow().is_some());
    let sent: Vec<Option<Arc<Sent>>> = (0..n)
        .map(|_| measuring.then(|| Arc::new(Sent::default())))
        .collect();
    let results: Vec<(T, Duration)> = std::thread::scope(|scope| {
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
                    sent: sent[usize::from(i)].clone(),
                };
                let incoming: SimIncoming<M> = rx.map(Ok as fn(_) -> _);
                scope.spawn(move || {
                    let before = thread_cpu();
                    let party = MpcParty::connected((incoming, outgoing));
                    let out = futures::executor::block_on(protocol(i, party));
                    // A clock that cannot be read measures nothing: zero, not an error.
                    let cpu = before
                        .zip(thread_cpu())
                        .map(|(b, a)| a.saturating_sub(b))
                        .unwrap_or_default();
                    (out, cpu)
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
    });
    if measuring {
        let costs = results
            .iter()
            .zip(&sent)
            .map(|((_, cpu), sent)| PartyCost {
                cpu: *cpu,
                messages: sent
                    .as_ref()
                    .map_or(0, |s| s.messages.load(Ordering::Relaxed)),
                bytes: sent.as_ref().map_or(0, |s| s.bytes.load(Ordering::Relaxed)),
            })
            .collect();
        MEASURED.with(|m| {
            if let Some(runs) = m.borrow_mut().as_mut() {
                runs.push(costs);
            }
        });
    }
    results.into_iter().map(|(out, _)| out).collect()
}
