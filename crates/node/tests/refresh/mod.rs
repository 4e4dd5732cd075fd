//! Key refresh on the in-memory cluster (issue 19), through the real node code: the key and
//! everything public stay, every node's share changes, the wallet signs after it on more than
//! one signer set, a refresh that fails anywhere leaves every node on the old shares, and a
//! node that missed the commit learns it.

use std::time::Duration;

use mpc_bitcoin::{
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Scheme,
};
use mpc_node::{
    adversary::{Adversary, Attack, Target},
    keys::WalletInfo,
    testing::{spend_to_self, start, start_node, wait_all_live, wallet_request, Cluster},
    Node, NodeError,
};
use mpc_node::{control::ProposalBody, refusal::RefusalKind};
use mpc_store::AuditEvent;
use mpc_types::{NodeId, WalletId};
use uuid::Uuid;

/// A 2-of-3 cluster whose ceremonies give up after 3 s (a withheld report costs little).
async fn cluster() -> Cluster {
    start(3, 2, |cfg| cfg.limits.keygen_timeout_ms = 3_000).await
}

/// `n` nodes, threshold 2, with 15 minutes for the aux-info run of an ECDSA refresh: three
/// nodes' runs in one process beside other jobs on two cores took over 120 s, and scripts/test
/// runs these tests at a lower priority than its other jobs. A participant that dies is still
/// noticed within seconds (liveness), so the long deadline costs the failure tests nothing.
async fn ecdsa_cluster(n: u16) -> Cluster {
    start(n, 2, |cfg| {
        cfg.limits.keygen_timeout_ms = 3_000;
        cfg.limits.aux_info_timeout_ms = 900_000;
    })
    .await
}

async fn taproot(c: &Cluster) -> WalletInfo {
    c.nodes[0]
        .create_wallet(Uuid::new_v4(), wallet_request("t", Scheme::Schnorr))
        .await
        .unwrap()
}

/// Every node's decrypted share of `wallet`, in node order.
async fn shares(c: &Cluster, wallet: &WalletId) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for node in &c.nodes {
        out.push(
            node.store()
                .key_share(wallet)
                .await
                .unwrap()
                .unwrap()
                .to_vec(),
        );
    }
    out
}

/// Every node's key epoch of `wallet`, in node order.
async fn key_epochs(c: &Cluster, wallet: &WalletId) -> Vec<u64> {
    let mut out = Vec::new();
    for node in &c.nodes {
        out.push(
            node.store()
                .wallet(wallet)
                .await
                .unwrap()
                .unwrap()
                .key_epoch,
        );
    }
    out
}

/// Waits (at most `seconds`) until every node has `wallet` at `epoch` with no pending share.
async fn settled(c: &Cluster, wallet: &WalletId, epoch: u64, seconds: u64) {
    for _ in 0..seconds * 10 {
        let mut pending = 0;
        for node in &c.nodes {
            pending += node.store().pending_shares().await.unwrap().len();
        }
        if pending == 0 && key_epochs(c, wallet).await.iter().all(|e| *e == epoch) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "not settled at key epoch {epoch}: {:?}",
        key_epochs(c, wallet).await
    );
}

/// `node` signs a spend of `wallet`; the transaction is checked by bitcoinconsensus (Bitcoin
/// Core's interpreter, libsecp256k1's BIP-340 verification). Returns the signer set.
pub(crate) async fn signs(node: &Node, wallet: &WalletInfo, label: &str) -> Vec<NodeId> {
    let record = node.store().wallet(&wallet.id).await.unwrap().unwrap();
    let key = mpc_node::keys::wallet_key(&record).unwrap();
    let psbt = spend_to_self(&key, label);
    let report = node
        .sign_psbt(Uuid::new_v4(), std::slice::from_ref(&wallet.id), &psbt)
        .await
        .unwrap();
    let signed = parse_psbt(&report.psbt).unwrap();
    verify_transaction(&report.raw_transaction, &spent_outputs(&signed).unwrap()).unwrap();
    report.signers
}

/// The public side every client sees, which a refresh must not change.
pub(crate) fn public(w: &WalletInfo) -> [String; 6] {
    [
        w.public_key.clone(),
        w.xpub.clone(),
        w.fingerprint.clone(),
        w.first_address.clone(),
        w.receive_descriptor.clone(),
        w.change_descriptor.clone(),
    ]
}

/// The `key_refresh` stages in `node`'s audit log for `session`, once it has `last` (the entry
/// follows the store's change it records; at most 5 s).
async fn audited(node: &Node, session: Uuid, last: &str) -> Vec<String> {
    for _ in 0..50 {
        let stages = audited_now(node, session).await;
        if stages.last().map(String::as_str) == Some(last) {
            return stages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    audited_now(node, session).await
}

async fn audited_now(node: &Node, session: Uuid) -> Vec<String> {
    node.audit_entries(0, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            AuditEvent::KeyRefresh {
                stage, session: s, ..
            } if s == session => Some(stage),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frost_refresh_changes_every_share_and_keeps_the_key() {
    let c = cluster().await;
    let w = taproot(&c).await;
    let before = shares(&c, &w.id).await;
    let session = Uuid::new_v4();
    let report = c.nodes[0].refresh_wallet(session, &w.id).await.unwrap();
    assert_eq!(report.key_epoch, 1);
    assert_eq!(report.public_key, w.public_key);
    settled(&c, &w.id, 1, 5).await;
    let after = shares(&c, &w.id).await;
    for (i, (old, new)) in before.iter().zip(&after).enumerate() {
        assert_ne!(old, new, "node {}'s share did not change", i + 1);
    }
    for node in &c.nodes {
        assert_eq!(public(&node.wallet(&w.id).await.unwrap()), public(&w));
    }
    assert_eq!(
        audited(&c.nodes[0], session, "committed").await,
        ["started", "committed"]
    );
    for node in &c.nodes[1..] {
        assert_eq!(audited(node, session, "committed").await, ["committed"]);
    }
    // A coordinator still on the old key epoch (a refresh committed between it and its
    // signers): each signer refuses, naming the epochs, instead of signing with a share that
    // does not combine and being blamed for it.
    let stale = signing_by(&c, &w, 0, &[1, 2]).await;
    assert!(
        matches!(&stale, NodeError::Refused { refusal, .. }
            if refusal.kind == RefusalKind::InvalidRequest
                && refusal.message.contains("key epoch 1 on node")),
        "{stale:?}"
    );
    // Signs on two signer sets after the refresh (each verified).
    let first = signs(&c.nodes[0], &w, "a").await;
    let second = signs(&c.nodes[2], &w, "b").await;
    assert_ne!(first, second, "two different signer sets");

    // A second refresh moves on from the first.
    let again = c.nodes[1]
        .refresh_wallet(Uuid::new_v4(), &w.id)
        .await
        .unwrap();
    assert_eq!(again.key_epoch, 2);
    settled(&c, &w.id, 2, 5).await;
    let third = shares(&c, &w.id).await;
    assert!(third.iter().zip(&after).all(|(a, b)| a != b));
    signs(&c.nodes[1], &w, "c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_silent_before_its_report_leaves_every_node_on_the_old_shares() {
    let c = cluster().await;
    let w = taproot(&c).await;
    let before = shares(&c, &w.id).await;
    // Node 3 runs the refresh (and stores its pending share) but its report never arrives,
    // as if it died right after storing it.
    let silent = silence_reports_of(&c, 3);
    let session = Uuid::new_v4();
    let err = c.nodes[0].refresh_wallet(session, &w.id).await.unwrap_err();
    assert!(err.to_string().contains('3'), "{err}");
    assert!(silent.altered() > 0);
    c.network.release(NodeId::must(3));
    settled(&c, &w.id, 0, 10).await;
    assert_eq!(shares(&c, &w.id).await, before);
    aborted_everywhere(&c, session).await;
    signs(&c.nodes[0], &w, "a").await;
    signs(&c.nodes[2], &w, "b").await;
}

/// Drops every report (`Outcome`) node `id` sends; the adversary counts them.
pub(crate) fn silence_reports_of(c: &Cluster, id: u16) -> std::sync::Arc<Adversary> {
    let silent = Adversary::new(
        Target::Control {
            kind: "Outcome".into(),
        },
        Attack::Drop,
    );
    c.network.intercept(NodeId::must(id), silent.clone());
    silent
}

/// Every node's last `key_refresh` entry for `session` is `aborted`.
async fn aborted_everywhere(c: &Cluster, session: Uuid) {
    for node in &c.nodes {
        assert_eq!(
            audited(node, session, "aborted")
                .await
                .last()
                .map(String::as_str),
            Some("aborted"),
            "node {}",
            node.id()
        );
    }
}

/// An ECDSA wallet of the cluster, made by the nodes' key generation.
async fn ecdsa_wallet(c: &Cluster, name: &str) -> WalletInfo {
    c.nodes[0]
        .create_wallet(Uuid::new_v4(), wallet_request(name, Scheme::Ecdsa))
        .await
        .unwrap()
}

/// Every node's aux info of the node set (sealed bytes opened, and public digest), in node order.
async fn aux_infos(c: &Cluster) -> Vec<(Vec<u8>, String)> {
    let set: Vec<NodeId> = c.nodes.iter().map(Node::id).collect();
    let mut out = Vec::new();
    for node in &c.nodes {
        let (aux, digest) = node.store().aux_info(&set).await.unwrap().unwrap();
        out.push((aux.to_vec(), digest));
    }
    out
}

/// Gives node `k` the fixture prime set `6 + k` (no aux-info fixture of the cluster uses
/// sets 6 to 8): what its refresh makes its new Paillier key from.
async fn give_primes(c: &Cluster) {
    let primes = mpc_testkit::primes();
    for (k, node) in c.nodes.iter().enumerate() {
        node.store()
            .add_primes(&primes[6 + k].to_bytes().unwrap())
            .await
            .unwrap();
    }
}

/// One presignature of `wallet` at m/0/0 for signers 1 and 2 (the set node 1 signs with).
async fn presign(c: &Cluster, wallet: &WalletId) -> String {
    let report = c.nodes[0]
        .generate_presignatures(
            Uuid::new_v4(),
            wallet,
            &"m/0/0".parse().unwrap(),
            1,
            Some(NodeId::must_list(&[1, 2])),
            None,
        )
        .await
        .unwrap();
    report.ids[0].clone()
}

/// How `node` signed a spend of `wallet` (`presignature` or `interactive`), the transaction
/// checked as in [`signs`].
async fn signs_by(node: &Node, wallet: &WalletInfo, label: &str) -> &'static str {
    let record = node.store().wallet(&wallet.id).await.unwrap().unwrap();
    let key = mpc_node::keys::wallet_key(&record).unwrap();
    let report = node
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&wallet.id),
            &spend_to_self(&key, label),
        )
        .await
        .unwrap();
    let signed = parse_psbt(&report.psbt).unwrap();
    verify_transaction(&report.raw_transaction, &spent_outputs(&signed).unwrap()).unwrap();
    report.inputs[0].method
}

/// Waits (at most `seconds`) until no node holds a pending share or pending aux info.
async fn nothing_pending(c: &Cluster, seconds: u64) {
    for _ in 0..seconds * 10 {
        let mut pending = 0;
        for node in &c.nodes {
            pending += node.store().pending_shares().await.unwrap().len();
            pending += node.store().pending_aux_infos().await.unwrap().len();
        }
        if pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("something still pending after {seconds} s");
}

/// An ECDSA refresh: new shares and new aux info (one real aux-info run), the key and every
/// public part kept; the node set's other ECDSA wallet keeps its shares, moves to the new aux
/// info with them and signs; both wallets' presignatures, made under the old Paillier keys,
/// are retired, and new ones sign. 2-of-2: every signature then uses every node's new share
/// and aux info (a 2-of-3 needed two signer sets for that, and its aux-info run cost half as
/// much again: three parties' proofs instead of two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a real aux-info run (about 35 s of CPU): scripts/test runs it as its own job, \
            node.aux_info_runs, one test at a time"]
async fn an_ecdsa_refresh_changes_every_share_and_the_aux_info_and_keeps_the_key() {
    let c = ecdsa_cluster(2).await;
    give_primes(&c).await;
    let w = ecdsa_wallet(&c, "e").await;
    let other = ecdsa_wallet(&c, "f").await;
    let old_presignatures = [presign(&c, &w.id).await, presign(&c, &other.id).await];
    let before = shares(&c, &w.id).await;
    let other_before = shares(&c, &other.id).await;
    let aux_before = aux_infos(&c).await;

    let session = Uuid::new_v4();
    let started = std::time::Instant::now();
    let cpu = mpc_testkit::process_cpu_ms();
    let report = c.nodes[0].refresh_wallet(session, &w.id).await.unwrap();
    eprintln!(
        "[ecdsa refresh] 2-of-2 with new aux info: {:.1} s wall, {:.1} s CPU (both nodes in \
         this process)",
        started.elapsed().as_secs_f64(),
        (mpc_testkit::process_cpu_ms() - cpu) / 1000.0
    );
    assert_eq!((report.key_epoch, &report.public_key), (1, &w.public_key));
    settled(&c, &w.id, 1, 10).await;
    nothing_pending(&c, 10).await;

    let after = shares(&c, &w.id).await;
    for (i, (old, new)) in before.iter().zip(&after).enumerate() {
        assert_ne!(old, new, "node {}'s share did not change", i + 1);
    }
    let aux_after = aux_infos(&c).await;
    for (i, (old, new)) in aux_before.iter().zip(&aux_after).enumerate() {
        // The digest is over every party's Paillier modulus.
        assert_ne!(old.0, new.0, "node {}'s aux info did not change", i + 1);
        assert_ne!(
            old.1,
            new.1,
            "node {}'s Paillier moduli did not change",
            i + 1
        );
        assert_eq!(
            new.1,
            aux_after[0].1,
            "nodes 1 and {} made other aux info",
            i + 1
        );
    }
    for node in &c.nodes {
        assert_eq!(public(&node.wallet(&w.id).await.unwrap()), public(&w));
        assert_eq!(
            public(&node.wallet(&other.id).await.unwrap()),
            public(&other)
        );
        // The primes it was made from are used up.
        assert_eq!(node.store().primes_count().await.unwrap(), 0);
    }
    // The other wallet: same shares, but the next key epoch (its signing material changed).
    assert_eq!(shares(&c, &other.id).await, other_before);
    assert_eq!(key_epochs(&c, &other.id).await, [1, 1]);
    for node in &c.nodes {
        for id in &old_presignatures {
            let p = node.store().presignature(id).await.unwrap().unwrap();
            assert_eq!(p.state, mpc_store::PresignatureState::Expired, "{id}");
        }
    }
    assert_eq!(
        audited(&c.nodes[0], session, "committed").await,
        ["started", "committed"]
    );
    for node in &c.nodes[1..] {
        assert_eq!(audited(node, session, "committed").await, ["committed"]);
    }

    // Both wallets sign: interactively (no presignature is left), coordinated by either node,
    // then from a presignature made under the new shares and aux info (each verified).
    assert_eq!(signs_by(&c.nodes[0], &w, "a").await, "interactive");
    assert_eq!(signs_by(&c.nodes[1], &w, "b").await, "interactive");
    assert_eq!(signs_by(&c.nodes[0], &other, "c").await, "interactive");
    presign(&c, &w.id).await;
    presign(&c, &other.id).await;
    assert_eq!(signs_by(&c.nodes[0], &w, "d").await, "presignature");
    assert_eq!(signs_by(&c.nodes[0], &other, "e").await, "presignature");
}

/// Node 2 of a 2-of-2 cluster runs the ECDSA refresh (aux info included) and stores its
/// pending share and aux info, but its report never arrives and it dies. Both nodes end on
/// their old share and old aux info, byte for byte, with their primes back in the pool; node 2
/// learns the abort when it starts again; the wallet signs, so with node 2's old share. Two
/// nodes, not three: what is shown does not depend on the count, and the aux-info run costs
/// half (two parties' proofs instead of three).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a real aux-info run (about 35 s of CPU): scripts/test runs it as its own job, \
            node.aux_info_runs, one test at a time"]
async fn an_ecdsa_refresh_whose_participant_dies_before_reporting_changes_nothing() {
    let mut c = ecdsa_cluster(2).await;
    give_primes(&c).await;
    let w = ecdsa_wallet(&c, "e").await;
    let before = shares(&c, &w.id).await;
    let aux_before = aux_infos(&c).await;
    let silent = silence_reports_of(&c, 2);
    let session = Uuid::new_v4();
    let coordinator = c.nodes[0].clone();
    let id = w.id.clone();
    let refresh = tokio::spawn(async move { coordinator.refresh_wallet(session, &id).await });
    // Node 2 dies once its pending share is stored (its report is already lost).
    let two = c.nodes[1].clone();
    for _ in 0..3000 {
        if !two.store().pending_shares().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(two.store().pending_aux_infos().await.unwrap().len(), 1);
    two.shutdown().await;
    c.network.disconnect(two.id());
    let err = refresh.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("node(s) [2]"), "{err}");
    assert!(silent.altered() > 0);
    c.network.release(NodeId::must(2));
    c.nodes[1] = start_node(two.config().clone(), &c.network).await;
    wait_all_live(&c.nodes).await;

    nothing_pending(&c, 15).await;
    settled(&c, &w.id, 0, 5).await;
    assert_eq!(shares(&c, &w.id).await, before);
    assert_eq!(aux_infos(&c).await, aux_before);
    for node in &c.nodes {
        assert_eq!(
            node.store().primes_count().await.unwrap(),
            1,
            "node {}'s primes are back in its pool",
            node.id()
        );
    }
    aborted_everywhere(&c, session).await;
    signs(&c.nodes[0], &w, "a").await;
    signs(&c.nodes[1], &w, "b").await;
}

/// `[refresh] every_secs`: the refill leader (node 1) refreshes a FROST wallet each period,
/// every node's share changes, the key stays and the wallet signs; an ECDSA wallet is left on
/// its shares (its own period, `ecdsa_every_secs`, is off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frost_wallets_are_refreshed_on_schedule() {
    let c = start(3, 2, |cfg| cfg.refresh.every_secs = 2).await;
    let w = taproot(&c).await;
    let ecdsa = c.nodes[0]
        .create_wallet(Uuid::new_v4(), wallet_request("e", Scheme::Ecdsa))
        .await
        .unwrap();
    let before = shares(&c, &w.id).await;
    let ecdsa_before = shares(&c, &ecdsa.id).await;
    // Two periods: two scheduled refreshes, each within a second of its due time.
    settled(&c, &w.id, 2, 30).await;
    let after = shares(&c, &w.id).await;
    assert!(before.iter().zip(&after).all(|(b, a)| b != a));
    let record = c.nodes[1].store().wallet(&w.id).await.unwrap().unwrap();
    assert_eq!(record.public_key.to_string(), w.public_key.to_string());
    assert_eq!(signs(&c.nodes[0], &w, "scheduled").await.len(), 2);
    assert_eq!(key_epochs(&c, &ecdsa.id).await, vec![0, 0, 0]);
    assert_eq!(shares(&c, &ecdsa.id).await, ecdsa_before);
}

/// Node 1 commits, but its commit reaches neither node 2 nor node 3. Node 3 restarts before
/// hearing anything and asks at its start; node 2 asks when its wait ends. Both learn the
/// commit, and nodes 2 and 3 then sign together (the set without the coordinator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_the_commit_learns_it() {
    let mut c = cluster().await;
    let w = taproot(&c).await;
    let before = shares(&c, &w.id).await;
    let lost = Adversary::new(
        Target::Control {
            kind: "Commit".into(),
        },
        Attack::Drop,
    );
    c.network.intercept(NodeId::must(1), lost.clone());
    let report = c.nodes[0]
        .refresh_wallet(Uuid::new_v4(), &w.id)
        .await
        .unwrap();
    assert_eq!(report.unacknowledged, NodeId::must_list(&[2, 3]));
    assert_eq!(key_epochs(&c, &w.id).await, [1, 0, 0]);
    c.network.release(NodeId::must(1));

    let three = c.nodes[2].clone();
    three.shutdown().await;
    c.network.disconnect(three.id());
    c.nodes[2] = start_node(three.config().clone(), &c.network).await;
    wait_all_live(&c.nodes).await;
    settled(&c, &w.id, 1, 15).await;
    let after = shares(&c, &w.id).await;
    assert!(after.iter().zip(&before).all(|(a, b)| a != b));
    let signers = signs(&c.nodes[1], &w, "a").await;
    assert!(signers.contains(&NodeId::must(2)));
    signs(&c.nodes[2], &w, "b").await;
}

/// This process's CPU time (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the command name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// BENCHMARKS.md's refresh timing: a FROST wallet at 3-of-5 on the in-memory cluster, refreshed
/// `MPC_REFRESH_RUNS` times (default 5); each refresh's wall time and the process's CPU time
/// over all of them (all five nodes run in this process). Not part of the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn refresh_timing_at_five_nodes() {
    let runs: u64 = std::env::var("MPC_REFRESH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let c = start(5, 3, |_| {}).await;
    let w = taproot(&c).await;
    let mut walls = Vec::new();
    let cpu = cpu_seconds();
    for _ in 0..runs {
        let started = std::time::Instant::now();
        c.nodes[0]
            .refresh_wallet(Uuid::new_v4(), &w.id)
            .await
            .unwrap();
        walls.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let cpu = cpu_seconds() - cpu;
    settled(&c, &w.id, runs, 10).await;
    signs(&c.nodes[0], &w, "timed").await;
    walls.sort_by(f64::total_cmp);
    eprintln!(
        "[refresh] 3-of-5 FROST, {runs} refreshes: wall ms min {:.1} median {:.1} max {:.1}; \
         CPU {:.2} s in all, {:.0} ms per refresh (five nodes in one process)",
        walls[0],
        walls[walls.len() / 2],
        walls[walls.len() - 1],
        cpu,
        cpu * 1000.0 / runs as f64
    );
}

/// Node 1 proposes a signing of `wallet` by exactly `signers`; the error it got.
pub(crate) async fn signing_by(
    c: &Cluster,
    wallet: &WalletInfo,
    key_epoch: u64,
    signers: &[u16],
) -> NodeError {
    let record = c.nodes[0]
        .store()
        .wallet(&wallet.id)
        .await
        .unwrap()
        .unwrap();
    let psbt = spend_to_self(&mpc_node::keys::wallet_key(&record).unwrap(), "named");
    let signers = NodeId::must_list(signers);
    c.nodes[0]
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                key_epochs: vec![key_epoch],
                wallet_ids: vec![wallet.id.clone()],
                psbt,
                signers: signers.clone(),
                presignatures: vec![None],
                approvals: None,
            },
            &signers,
            Duration::from_secs(10),
            None,
        )
        .await
        .unwrap_err()
}
