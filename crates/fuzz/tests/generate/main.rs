//! Writes the valid seeds of `fuzz/corpus/` with the real encoders (and a truncated copy of
//! each, as a malformed seed). Ignored: the seeds are checked in. To regenerate (aux info
//! takes a minute or two on 2 cores):
//!
//! ```sh
//! cargo test -p mpc-fuzz --test generate -- --ignored --nocapture
//! ```
//!
//! Files are named `seed-*` and `trunc-*`; crash regressions (`crash-*`) are never rewritten.

use std::{
    convert::Infallible,
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    channel::mpsc::{unbounded, UnboundedSender},
    Sink, StreamExt,
};
use mpc_bitcoin::{
    bitcoin::{Amount, ScriptBuf},
    build::{build_psbt, synthetic_funding, Payment},
    Chain,
};
use mpc_node::{
    control::{Control, InputOutcome, Outcome, Proposal, ProposalBody, WalletSpec},
    refusal::{InputRefusal, Refusal, RefusalKind},
};
use mpc_protocols::{
    ecdsa::{self, SighashPreimage},
    encoding,
    execution::{ExecutionId, ProtocolKind},
    refresh, reshare, schnorr, DerivationPath, PartyIndex,
};
use mpc_transport::{Envelope, NodeId, SessionId, CONTROL};
use rand_core::OsRng;
use round_based::{Incoming, MessageDestination, MessageType, MpcParty, Outgoing, ProtocolMessage};
use serde::Serialize;
use uuid::Uuid;

mod protocols;
mod wire;
use protocols::protocol_and_control_seeds;
use wire::{backup_seed, psbt_seeds, transport_and_api_seeds};

fn corpus(target: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    dir
}

/// Writes `seed-<name>` and, for inputs long enough to cut and small enough to be worth a
/// second copy, `trunc-<name>` (its first half).
fn seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus(target);
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    if (8..=16 << 10).contains(&bytes.len()) {
        std::fs::write(dir.join(format!("trunc-{name}")), &bytes[..bytes.len() / 2])
            .expect("write seed");
    }
}

/// Removes the generated seeds of `target` (not crash regressions).
fn clear(target: &str) {
    for entry in std::fs::read_dir(corpus(target)).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("seed-") || name.starts_with("trunc-") {
            std::fs::remove_file(&path).expect("remove seed");
        }
    }
}

// ---- a simulated network that records every message, CBOR-encoded, by round ----

type Log = Arc<Mutex<Vec<(u16, Vec<u8>)>>>;

struct Recording<M> {
    me: PartyIndex,
    peers: Arc<Vec<UnboundedSender<Incoming<M>>>>,
    log: Log,
}

impl<M: Clone + Serialize + ProtocolMessage> Sink<Outgoing<M>> for Recording<M> {
    type Error = Infallible;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, out: Outgoing<M>) -> Result<(), Infallible> {
        let bytes = encoding::encode(&out.msg).expect("encode message");
        self.log.lock().expect("log").push((out.msg.round(), bytes));
        let send = |to: usize, msg_type, msg| {
            let _ = self.peers[to].unbounded_send(Incoming {
                id: 0,
                sender: self.me.get(),
                msg_type,
                msg,
            });
        };
        match out.recipient {
            MessageDestination::AllParties => {
                for to in (0..self.peers.len()).filter(|j| *j != self.me.as_usize()) {
                    send(to, MessageType::Broadcast, out.msg.clone());
                }
            }
            MessageDestination::OneParty(to) => send(usize::from(to), MessageType::P2P, out.msg),
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs `n` parties as `mpc_protocols::sim::run` does; returns the outputs and the first
/// message of each round (party 0's where it sent one).
fn record<M, T, F, Fut>(n: u16, protocol: F) -> (Vec<T>, Vec<(u16, Vec<u8>)>)
where
    M: Clone + Send + Serialize + ProtocolMessage + 'static,
    T: Send,
    F: Fn(PartyIndex, RecParty<M>) -> Fut + Sync,
    Fut: Future<Output = T>,
{
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded()).unzip();
    let peers = Arc::new(senders);
    let logs: Vec<Log> = (0..n).map(|_| Log::default()).collect();
    let protocol = &protocol;
    let outputs = std::thread::scope(|scope| {
        let handles: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let outgoing = Recording {
                    me: PartyIndex::new(i as u16),
                    peers: peers.clone(),
                    log: logs[i].clone(),
                };
                let incoming = rx.map(Ok::<_, Infallible> as fn(_) -> _);
                scope.spawn(move || {
                    let party = MpcParty::connected((incoming, outgoing));
                    futures::executor::block_on(protocol(PartyIndex::new(i as u16), party))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("party"))
            .collect()
    });
    let mut picked: Vec<(u16, Vec<u8>)> = Vec::new();
    for log in &logs {
        for (round, bytes) in log.lock().expect("log").iter() {
            if !picked.iter().any(|(r, _)| r == round) {
                picked.push((*round, bytes.clone()));
            }
        }
    }
    picked.sort_by_key(|(r, _)| *r);
    (outputs, picked)
}

type RecParty<M> = MpcParty<
    M,
    (
        futures::stream::Map<
            futures::channel::mpsc::UnboundedReceiver<Incoming<M>>,
            fn(Incoming<M>) -> Result<Incoming<M>, Infallible>,
        >,
        Recording<M>,
    ),
>;

/// The first party's output of a run.
fn first<T, E: std::fmt::Debug>(outputs: Vec<Result<T, E>>, what: &str) -> T {
    match outputs.into_iter().next() {
        Some(Ok(v)) => v,
        other => panic!("{what}: {other:?}", other = other.map(|r| r.err())),
    }
}

fn write_rounds(target: &str, prefix: &str, messages: &[(u16, Vec<u8>)]) {
    for (round, bytes) in messages {
        seed(target, &format!("{prefix}-round{round}"), bytes);
    }
}

fn eid(kind: ProtocolKind, parties: &[PartyIndex], params: &[u8]) -> ExecutionId {
    ExecutionId::derive(kind, "fuzz", Uuid::from_bytes([5; 16]), parties, params)
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand (see the file's doc)"]
fn generate_corpus() {
    for (name, _) in mpc_fuzz::TARGETS {
        clear(name);
    }
    let started = std::time::Instant::now();
    transport_and_api_seeds();
    psbt_seeds();
    protocol_and_control_seeds();
    backup_seed();
    eprintln!("corpus written in {:?}", started.elapsed());
}
