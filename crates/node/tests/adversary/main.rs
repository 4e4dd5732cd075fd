//! One node of three turns hostile (issue 18): on the in-memory mesh, node 2's outgoing
//! envelopes go through an [`Adversary`] that drops, duplicates, delays, relabels, truncates,
//! extends, equivocates, replays or re-attributes them, or changes one field of their payload
//! (bit flips, zero, the identity, the generator, a point off the curve, an even modulus,
//! shorter, longer, swapped with the next field). The cases are generated from what node 2 sent
//! in an honest run of the same ceremony: every envelope attack on every round and control
//! message, and fields spread over each payload × every change.
//!
//! For every case, the honest nodes (1 coordinates, 3 takes part):
//! - end the ceremony within its deadline (the case has a hard bound);
//! - never panic (a panic hook counts panics in this process);
//! - blame nobody but node 2 when they name a culprit;
//! - store no wallet unless every honest node holds the same public key, and sign nothing
//!   that libsecp256k1 and bitcoinconsensus do not verify;
//! - run the same ceremony again once node 2 behaves (a signing is first retried by the
//!   coordinator itself on a set without the culprit it named).
//!
//! `MPC_ADVERSARY_FIELDS` (default 2) sets how many fields of each payload are attacked;
//! `MPC_ADVERSARY_ECDSA_SIGNING=1` adds interactive ECDSA signing, seconds of CPU per case.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Once,
    },
    time::{Duration, Instant},
};

use mpc_bitcoin::{
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Scheme,
};
use mpc_node::evidence::{Evidence, EvidenceError, Fault, IncidentCheckError};
use mpc_node::{
    adversary::{cases, Adversary, Attack, Case, Recorder, Target},
    testing::{spend_to_self, start, wallet, wallet_request, Cluster},
    Node, NodeError,
};
use mpc_protocols::execution::ProtocolKind;
use mpc_store::{IncidentKind, WalletState};
use mpc_transport::{memory::Interceptor, Envelope, NodeId};
use mpc_types::WalletId;
use uuid::Uuid;

/// The hostile node; 1 coordinates, 3 is the other honest one.
const ADVERSARY: NodeId = NodeId::must(2);
/// Clusters each test spreads its cases over, run at once: most of a case's time is a
/// deadline passing, not CPU.
const SHARDS: usize = 8;
/// Each ceremony's deadline here: short, so that withheld messages cost little.
const DEADLINE: Duration = Duration::from_millis(1500);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Held by interactive ECDSA signing against short deadlines (seconds of CPU on 2 cores)
/// and by the five-node cluster: run together, the signing's retry misses its deadline.
static CPU_HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Counts every panic in this process (the nodes' tasks included), keeping the default report.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn fields_per_round() -> usize {
    std::env::var("MPC_ADVERSARY_FIELDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// Every deadline from [`DEADLINE`].
fn short_deadlines(cfg: &mut mpc_node::NodeConfig) {
    let ms = DEADLINE.as_millis() as u64;
    cfg.limits.keygen_timeout_ms = ms;
    cfg.limits.sign_timeout_ms = ms;
    cfg.limits.presign_timeout_ms = ms * 4;
    cfg.limits.full_sign_timeout_ms = ms * 4;
    cfg.limits.ceremony_lock_wait_ms = ms * 4;
}

async fn cluster() -> Cluster {
    count_panics();
    start(3, 2, |cfg| {
        short_deadlines(cfg);
        // Hundreds of cases on one cluster blame node 2 again and again: kept out after a few,
        // it would take part in none of the rest (`blamed_signers_are_kept_out_until_released`
        // tests that rule).
        cfg.limits.exclude_after_incidents = 0;
    })
    .await
}

/// What the cases of one ceremony came to.
#[derive(Default, Debug)]
struct Tally {
    cases: usize,
    /// The adversary's target was never sent (e.g. no field of that kind): nothing tested.
    idle: usize,
    succeeded: usize,
    failed: usize,
    culprit_named: usize,
    retried_without_culprit: usize,
    outcomes: BTreeMap<String, usize>,
}

impl Tally {
    fn sum(parts: Vec<Tally>) -> Tally {
        let mut total = Tally::default();
        for part in parts {
            total.cases += part.cases;
            total.idle += part.idle;
            total.succeeded += part.succeeded;
            total.failed += part.failed;
            total.culprit_named += part.culprit_named;
            total.retried_without_culprit += part.retried_without_culprit;
            for (outcome, n) in part.outcomes {
                *total.outcomes.entry(outcome).or_default() += n;
            }
        }
        total
    }

    /// Reports, and checks that most cases altered what they targeted.
    fn finish(&self, what: &str) {
        self.report(what);
        assert!(
            self.idle * 4 < self.cases,
            "most cases must alter something: {self:?}"
        );
    }

    fn report(&self, what: &str) {
        eprintln!(
            "[adversary] {what}: {} cases ({} idle), {} succeeded, {} failed, node {ADVERSARY} named in {}, {} signed on a retry without it",
            self.cases, self.idle, self.succeeded, self.failed, self.culprit_named, self.retried_without_culprit
        );
        for (outcome, n) in &self.outcomes {
            eprintln!("[adversary]   {n:>4} × {outcome}");
        }
    }
}

/// The error's kind, for the report (the variant name, without its details).
fn kind(e: &NodeError) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Asserts what every failed case must show: only node 2 is blamed.
fn check_blame(case: &Case, e: &NodeError, tally: &mut Tally) {
    let culprits = e.culprits();
    assert!(
        culprits.iter().all(|c| *c == ADVERSARY),
        "{}: an honest node was blamed: {culprits:?} ({e})",
        case.name
    );
    if !culprits.is_empty() {
        tally.culprit_named += 1;
    }
}

/// Runs `case` against `run` with node 2 hostile, within a hard bound, and checks no panic.
async fn attacked<T>(
    c: &Cluster,
    case: &Case,
    bound: Duration,
    run: impl std::future::Future<Output = Result<T, NodeError>>,
) -> (Result<T, NodeError>, usize) {
    let panics = PANICS.load(Ordering::SeqCst);
    let adversary = Adversary::new(case.target.clone(), case.attack.clone());
    c.network.intercept(ADVERSARY, adversary.clone());
    let started = Instant::now();
    let result = tokio::time::timeout(bound, run).await;
    c.network.release(ADVERSARY);
    let result = result.unwrap_or_else(|_| {
        panic!(
            "{}: the ceremony did not end within {bound:?} ({:?} passed)",
            case.name,
            started.elapsed()
        )
    });
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        panics,
        "{}: something panicked",
        case.name
    );
    (result, adversary.altered())
}

/// The cases for `protocol`, from node 2's messages in an honest run of `honest`.
async fn generate<T>(
    c: &Cluster,
    protocol: ProtocolKind,
    honest: impl std::future::Future<Output = Result<T, NodeError>>,
) -> Vec<Case> {
    let recorder = Recorder::new();
    c.network.intercept(ADVERSARY, recorder.clone());
    let done = honest.await;
    c.network.release(ADVERSARY);
    assert!(done.is_ok(), "the honest run failed");
    let sent = recorder.sent();
    let generated = cases(
        &sent,
        protocol.code(),
        &["Outcome"],
        NodeId::must(3),
        DEADLINE,
        fields_per_round(),
    );
    assert!(
        generated.len() >= 50,
        "{protocol:?}: only {} cases from {} envelopes",
        generated.len(),
        sent.len()
    );
    generated
}

/// Every honest node holds wallet `id`, active, with one public key.
async fn honest_nodes_agree(c: &Cluster, id: &WalletId, case: &str) {
    let mut keys = Vec::new();
    for node in c.nodes.iter().filter(|n| n.id() != ADVERSARY) {
        let record = node
            .store()
            .wallet(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{case}: node {} lacks the wallet", node.id()));
        assert_eq!(record.state, WalletState::Active, "{case}");
        keys.push(record.public_key);
    }
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "{case}: {keys:?}");
}

/// Active wallets an honest node holds.
async fn active_wallets(node: &Node) -> usize {
    node.store()
        .wallets()
        .await
        .unwrap()
        .iter()
        .filter(|w| w.state == WalletState::Active)
        .count()
}

/// Runs `cases` over the clusters at once, cluster `k` taking every `SHARDS`-th case from
/// the `k`-th, and adds up their tallies.
async fn sharded<'a, Run, Done>(clusters: &'a [Cluster], cases: &'a [Case], run: Run) -> Tally
where
    Run: Fn(&'a Cluster, Vec<&'a Case>) -> Done,
    Done: std::future::Future<Output = Tally>,
{
    let shards = clusters
        .iter()
        .enumerate()
        .map(|(k, c)| run(c, cases.iter().skip(k).step_by(SHARDS).collect()));
    Tally::sum(futures::future::join_all(shards).await)
}

mod blame;
mod cases;
mod forged;
mod refresh;
