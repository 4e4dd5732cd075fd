//! Resharing and repair on the in-memory cluster (issue 19), through the real node code: six
//! nodes, a 3-of-5 wallet on nodes 1 to 5. Node 5 replaced by node 6, the threshold raised and
//! lowered again, node 3's lost share repaired, an ECDSA replacement, a resharing that fails
//! mid-run, and what every node refuses from a coordinator.

use std::time::Duration;

use mpc_bitcoin::Scheme;
use mpc_node::{
    control::{ProposalBody, ReshareSpec, WalletSpec},
    keys::WalletInfo,
    refusal::RefusalKind,
    testing::{spend_to_self, start_fresh, wallet_request, Cluster},
    Node, NodeError,
};
use mpc_protocols::schnorr::SchnorrKeyShare;
use mpc_types::{NodeId, WalletId};
use uuid::Uuid;

use crate::refresh::{public, signing_by, signs, silence_reports_of};

/// Six nodes, no aux info (an ECDSA test puts fixture aux info for its node sets); ceremonies
/// give up after `timeout_ms`.
async fn cluster(timeout_ms: u64) -> Cluster {
    start_fresh(6, 3, |cfg| cfg.limits.keygen_timeout_ms = timeout_ms).await
}

fn ids(list: &[u16]) -> Vec<NodeId> {
    NodeId::must_list(list)
}

/// A 3-of-5 wallet on nodes 1 to 5.
async fn wallet(c: &Cluster, scheme: Scheme) -> WalletInfo {
    let mut request = wallet_request("r", scheme);
    request.participants = Some(ids(&[1, 2, 3, 4, 5]));
    request.threshold = Some(3);
    c.nodes[0]
        .create_wallet(Uuid::new_v4(), request)
        .await
        .unwrap()
}

fn node(c: &Cluster, id: u16) -> &Node {
    &c.nodes[usize::from(id - 1)]
}

/// Waits (at most 30 s) until no node holds anything pending and each node of `members` has
/// `wallet` active at `epoch` with `threshold`.
async fn settled(c: &Cluster, wallet: &WalletId, members: &[u16], epoch: u64, threshold: u16) {
    let mut last = Vec::new();
    for _ in 0..300 {
        let mut pending = 0;
        for n in &c.nodes {
            pending += n.store().pending_shares().await.unwrap().len();
            pending += n.store().pending_wallets().await.unwrap().len();
        }
        last.clear();
        for &m in members {
            let r = node(c, m).store().wallet(wallet).await.unwrap();
            last.push(r.map(|r| (r.state.to_string(), r.key_epoch, r.threshold)));
        }
        let expected = Some(("active".to_string(), epoch, threshold));
        if pending == 0 && last.iter().all(|r| *r == expected) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not settled at key epoch {epoch}: {last:?}");
}

/// Node `id`'s decrypted share of `wallet`, if it holds one.
async fn share(c: &Cluster, id: u16, wallet: &WalletId) -> Option<Vec<u8>> {
    let s = node(c, id).store().key_share(wallet).await.unwrap();
    s.map(|s| s.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_5_replaced_by_node_6_keeps_the_key_and_node_6_signs() {
    let c = cluster(10_000).await;
    let w = wallet(&c, Scheme::Schnorr).await;
    let old5 = share(&c, 5, &w.id).await.unwrap();
    let report = c.nodes[0]
        .reshare_wallet(Uuid::new_v4(), &w.id, ids(&[1, 2, 3, 4, 6]), 3)
        .await
        .unwrap();
    assert_eq!((report.key_epoch, &report.public_key), (1, &w.public_key));
    // The leaving node deals, so it is reached and deletes its share.
    assert!(report.dealers.contains(&NodeId::must(5)), "{report:?}");
    assert!(report.not_reached.is_empty());
    settled(&c, &w.id, &[1, 2, 3, 4, 6], 1, 3).await;
    for id in [1, 2, 3, 4, 6] {
        let info = node(&c, id).wallet(&w.id).await.unwrap();
        assert_eq!(public(&info), public(&w), "node {id}");
        assert_eq!(info.participants, ids(&[1, 2, 3, 4, 6]));
    }
    // Node 5 no longer holds the wallet.
    let five = node(&c, 5).store().wallet(&w.id).await.unwrap().unwrap();
    assert_eq!(five.state.to_string(), "retired");
    assert_eq!(share(&c, 5, &w.id).await, None);
    assert_ne!(share(&c, 1, &w.id).await.unwrap(), old5);
    // Node 6 signs with two old nodes (verified by bitcoinconsensus / libsecp256k1).
    let signers = signs(node(&c, 6), &w, "a").await;
    assert_eq!(signers, ids(&[1, 2, 6]));
    // A signing that names node 5 is refused.
    let refused = signing_by(&c, &w, 1, &[1, 2, 5]).await;
    assert!(matches!(refused, NodeError::Refused { .. }), "{refused:?}");
    assert!(node(&c, 5).wallets().await.unwrap().is_empty());

    // And back: node 6 leaves (it deals), node 5 rejoins over its retired record and signs.
    let report = c.nodes[1]
        .reshare_wallet(Uuid::new_v4(), &w.id, ids(&[1, 2, 3, 4, 5]), 3)
        .await
        .unwrap();
    assert!(report.dealers.contains(&NodeId::must(6)), "{report:?}");
    settled(&c, &w.id, &[1, 2, 3, 4, 5], 2, 3).await;
    let six = node(&c, 6).store().wallet(&w.id).await.unwrap().unwrap();
    assert_eq!(six.state.to_string(), "retired");
    assert_eq!(share(&c, 6, &w.id).await, None);
    assert_eq!(
        public(&node(&c, 5).wallet(&w.id).await.unwrap()),
        public(&w)
    );
    assert_eq!(signs(node(&c, 5), &w, "b").await, ids(&[1, 2, 5]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_threshold_goes_from_3_to_4_of_5_and_back() {
    let c = cluster(10_000).await;
    let w = wallet(&c, Scheme::Schnorr).await;
    let all = [1, 2, 3, 4, 5];
    c.nodes[1]
        .reshare_wallet(Uuid::new_v4(), &w.id, ids(&all), 4)
        .await
        .unwrap();
    settled(&c, &w.id, &all, 1, 4).await;
    assert_eq!(signs(node(&c, 1), &w, "a").await.len(), 4);
    // With 4-of-5, three signers are refused.
    let refused = signing_by(&c, &w, 1, &[1, 2, 3]).await;
    assert!(
        matches!(&refused, NodeError::Refused { refusal, .. }
            if refusal.kind == RefusalKind::InvalidRequest && refusal.message.contains("must be 4")),
        "{refused:?}"
    );
    c.nodes[2]
        .reshare_wallet(Uuid::new_v4(), &w.id, ids(&all), 3)
        .await
        .unwrap();
    settled(&c, &w.id, &all, 2, 3).await;
    assert_eq!(signs(node(&c, 3), &w, "b").await, ids(&[1, 2, 3]));
    for id in all {
        assert_eq!(
            public(&node(&c, id).wallet(&w.id).await.unwrap()),
            public(&w)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_3_repaired_after_losing_its_share_signs_again() {
    let mut c = cluster(10_000).await;
    let w = wallet(&c, Scheme::Schnorr).await;
    let before: Vec<Vec<u8>> = {
        let mut v = Vec::new();
        for id in [1, 2, 4, 5] {
            v.push(share(&c, id, &w.id).await.unwrap());
        }
        v
    };
    // Node 3's share row is gone (restarted, so nothing of it is left in memory).
    sqlx::any::install_default_drivers();
    let raw = sqlx::AnyPool::connect_lazy(&node(&c, 3).config().store_url()).unwrap();
    sqlx::query("DELETE FROM key_shares WHERE wallet_id = $1")
        .bind(w.id.as_str())
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    c.restart(2, |_| {}).await;
    assert!(node(&c, 3)
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&w.id),
            &spend_to_self(
                &mpc_node::keys::wallet_key(
                    &node(&c, 3).store().wallet(&w.id).await.unwrap().unwrap()
                )
                .unwrap(),
                "lost"
            )
        )
        .await
        .is_err());

    let report = c.nodes[0]
        .repair_wallet(Uuid::new_v4(), &w.id, NodeId::must(3))
        .await
        .unwrap();
    assert!(!report.dealers.contains(&NodeId::must(3)), "{report:?}");
    assert_eq!(report.participants, ids(&[1, 2, 3, 4, 5]));
    settled(&c, &w.id, &[1, 2, 3, 4, 5], 1, 3).await;
    // Every share changed.
    for (id, old) in [1, 2, 4, 5].into_iter().zip(&before) {
        assert_ne!(&share(&c, id, &w.id).await.unwrap(), old, "node {id}");
    }
    assert!(signs(node(&c, 3), &w, "a").await.contains(&NodeId::must(3)));
    assert_eq!(
        public(&node(&c, 3).wallet(&w.id).await.unwrap()),
        public(&w)
    );
}

/// The checked-in aux info for five parties, as the node set `set`'s (in each node's store).
async fn put_aux_info(c: &Cluster, set: &[u16]) {
    let aux = mpc_testkit::aux_info(set.len());
    let set = ids(set);
    for (k, id) in set.iter().enumerate() {
        node(c, id.get())
            .store()
            .put_aux_info(
                &set,
                &aux[k].to_bytes().unwrap(),
                &hex::encode(aux[k].public_digest().unwrap()),
                Uuid::new_v4(),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecdsa_wallet_moves_from_node_5_to_node_6_with_the_new_sets_aux_info() {
    let c = cluster(60_000).await;
    put_aux_info(&c, &[1, 2, 3, 4, 5]).await;
    let w = wallet(&c, Scheme::Ecdsa).await;
    // No aux info for the new node set yet: a clear error before anything starts.
    let err = c.nodes[0]
        .reshare_wallet(Uuid::new_v4(), &w.id, ids(&[1, 2, 3, 4, 6]), 3)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no aux info"), "{err}");
    assert_eq!(
        node(&c, 1)
            .store()
            .wallet(&w.id)
            .await
            .unwrap()
            .unwrap()
            .key_epoch,
        0
    );

    put_aux_info(&c, &[1, 2, 3, 4, 6]).await;
    c.nodes[0]
        .reshare_wallet(Uuid::new_v4(), &w.id, ids(&[1, 2, 3, 4, 6]), 3)
        .await
        .unwrap();
    settled(&c, &w.id, &[1, 2, 3, 4, 6], 1, 3).await;
    assert_eq!(share(&c, 5, &w.id).await, None);
    assert_eq!(signs(node(&c, 6), &w, "a").await, ids(&[1, 2, 6]));
    assert_eq!(
        public(&node(&c, 6).wallet(&w.id).await.unwrap()),
        public(&w)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_fails_mid_run_leaves_every_node_on_the_old_shares() {
    let c = cluster(5_000).await;
    let w = wallet(&c, Scheme::Schnorr).await;
    let all = [1, 2, 3, 4, 5];
    let mut before = Vec::new();
    for id in all {
        before.push(share(&c, id, &w.id).await.unwrap());
    }
    // Node 4 runs the resharing and keeps its result pending, but its report never arrives.
    let silent = silence_reports_of(&c, 4);
    let err = c.nodes[0]
        .reshare_wallet(Uuid::new_v4(), &w.id, ids(&all), 4)
        .await
        .unwrap_err();
    assert!(err.to_string().contains('4'), "{err}");
    assert!(silent.altered() > 0);
    c.network.release(NodeId::must(4));
    settled(&c, &w.id, &all, 0, 3).await;
    for (id, old) in all.into_iter().zip(&before) {
        assert_eq!(&share(&c, id, &w.id).await.unwrap(), old, "node {id}");
    }
    assert_eq!(signs(node(&c, 4), &w, "a").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_whose_joining_failed_joins_on_the_next_try() {
    let c = cluster(5_000).await;
    let w = wallet(&c, Scheme::Schnorr).await;
    let old5 = share(&c, 5, &w.id).await.unwrap();
    // Node 6 stores the wallet as pending, but its report never arrives: the replacement
    // aborts, node 6's wallet is aborted with no share, node 5 keeps its share.
    let silent = silence_reports_of(&c, 6);
    let new = ids(&[1, 2, 3, 4, 6]);
    let err = c.nodes[0]
        .reshare_wallet(Uuid::new_v4(), &w.id, new.clone(), 3)
        .await
        .unwrap_err();
    assert!(err.to_string().contains('6'), "{err}");
    assert!(silent.altered() > 0);
    c.network.release(NodeId::must(6));
    settled(&c, &w.id, &[1, 2, 3, 4, 5], 0, 3).await;
    let six = node(&c, 6).store().wallet(&w.id).await.unwrap().unwrap();
    assert_eq!(six.state.to_string(), "aborted");
    assert_eq!(share(&c, 6, &w.id).await, None);
    assert_eq!(share(&c, 5, &w.id).await.unwrap(), old5);
    // The next try commits.
    c.nodes[0]
        .reshare_wallet(Uuid::new_v4(), &w.id, new, 3)
        .await
        .unwrap();
    settled(&c, &w.id, &[1, 2, 3, 4, 6], 1, 3).await;
    assert_eq!(signs(node(&c, 6), &w, "a").await, ids(&[1, 2, 6]));
}

/// A compromised coordinator's proposal, from `w`'s true one: each node of the run checks it.
async fn proposal(c: &Cluster, w: &WalletInfo, key_epoch: u64) -> ReshareSpec {
    let record = node(c, 1).store().wallet(&w.id).await.unwrap().unwrap();
    let share = SchnorrKeyShare::from_bytes(&share(c, 1, &w.id).await.unwrap()).unwrap();
    ReshareSpec {
        wallet: WalletSpec {
            id: w.id.clone(),
            name: record.name,
            scheme: record.scheme,
            threshold: 3,
            participants: ids(&[1, 2, 3, 4, 5]),
            network: record.network,
        },
        key_epoch,
        old_participants: ids(&[1, 2, 3, 4, 5]),
        dealers: ids(&[1, 2, 3]),
        key_info: share.key_info(),
    }
}

async fn refused(c: &Cluster, spec: ReshareSpec) -> String {
    let run = spec.wallet.participants.clone();
    let err = c.nodes[0]
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Reshare(Box::new(spec)),
            &run,
            Duration::from_secs(10),
            None,
        )
        .await
        .unwrap_err();
    match err {
        NodeError::Refused { refusal, .. } => refusal.message,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refuse_a_foreign_key_info_and_a_threshold_out_of_range() {
    let c = cluster(10_000).await;
    let w = wallet(&c, Scheme::Schnorr).await;
    // The key info from before a refresh: same group key, other public shares.
    let stale = proposal(&c, &w, 2).await;
    c.nodes[0]
        .refresh_wallet(Uuid::new_v4(), &w.id)
        .await
        .unwrap();
    settled(&c, &w.id, &[1, 2, 3, 4, 5], 1, 3).await;
    let message = refused(&c, stale).await;
    assert!(message.contains("differs from node"), "{message}");

    for threshold in [1, 6] {
        let mut spec = proposal(&c, &w, 2).await;
        spec.wallet.threshold = threshold;
        let message = refused(&c, spec).await;
        assert!(message.contains("it must be 2 to 5"), "{message}");
        let err = c.nodes[0]
            .reshare_wallet(Uuid::new_v4(), &w.id, ids(&[1, 2, 3, 4, 5]), threshold)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("it must be 2 to 5"), "{err}");
    }
    // 2-of-5 is a valid committee, but below the cluster's threshold (3): every node refuses
    // to lower the wallet's, as does the coordinator asked for it.
    let mut spec = proposal(&c, &w, 2).await;
    spec.wallet.threshold = 2;
    let message = refused(&c, spec).await;
    assert!(
        message.contains("no further than the cluster's (3)"),
        "{message}"
    );
    let err = c.nodes[0]
        .reshare_wallet(Uuid::new_v4(), &w.id, ids(&[1, 2, 3, 4, 5]), 2)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no further than the cluster's (3)"),
        "{err}"
    );
    // Nothing changed: the wallet still signs at key epoch 1.
    settled(&c, &w.id, &[1, 2, 3, 4, 5], 1, 3).await;
    signs(node(&c, 2), &w, "a").await;
}

/// A 2-of-5 wallet moved to {1, 2, 6} with nodes 1 and 2 dealing: nodes 3, 4 and 5 would leave
/// without being reached, keeping three old shares, which could still sign together. Every
/// node of the run refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refuse_a_resharing_that_leaves_enough_old_shares_to_sign() {
    let c = cluster(10_000).await;
    let mut request = wallet_request("low", Scheme::Schnorr);
    request.participants = Some(ids(&[1, 2, 3, 4, 5]));
    request.threshold = Some(2);
    let w = c.nodes[0]
        .create_wallet(Uuid::new_v4(), request)
        .await
        .unwrap();
    let mut spec = proposal(&c, &w, 1).await;
    spec.wallet.threshold = 2;
    spec.wallet.participants = ids(&[1, 2, 6]);
    spec.dealers = ids(&[1, 2]);
    let message = refused(&c, spec).await;
    assert!(message.contains("undeleted"), "{message}");
    settled(&c, &w.id, &[1, 2, 3, 4, 5], 0, 2).await;
    assert_eq!(node(&c, 6).store().wallet(&w.id).await.unwrap(), None);
    signs(node(&c, 2), &w, "a").await;
}

/// BENCHMARKS.md's resharing timing at n = 5: a 3-of-5 wallet of each scheme on the in-memory
/// cluster, moved from node 5 to node 6 and back `MPC_RESHARE_RUNS` times (default 3) each way;
/// each resharing's wall time and the process's CPU over all of them (all six nodes run in
/// this process; ECDSA with the checked-in aux info of both node sets, so the aux-info run a
/// new node set needs first is not in it). Not part of the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn reshare_timing_at_five_nodes() {
    let runs: usize = std::env::var("MPC_RESHARE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let c = cluster(60_000).await;
    put_aux_info(&c, &[1, 2, 3, 4, 5]).await;
    put_aux_info(&c, &[1, 2, 3, 4, 6]).await;
    for scheme in [Scheme::Schnorr, Scheme::Ecdsa] {
        let w = wallet(&c, scheme).await;
        let mut walls = Vec::new();
        let cpu = mpc_testkit::process_cpu_ms();
        let committees = [[1, 2, 3, 4, 6], [1, 2, 3, 4, 5]];
        for committee in committees.iter().cycle().take(2 * runs) {
            let started = std::time::Instant::now();
            c.nodes[0]
                .reshare_wallet(Uuid::new_v4(), &w.id, ids(committee), 3)
                .await
                .unwrap();
            walls.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let cpu_s = (mpc_testkit::process_cpu_ms() - cpu) / 1000.0;
        settled(&c, &w.id, &[1, 2, 3, 4, 5], 2 * runs as u64, 3).await;
        signs(node(&c, 5), &w, "timed").await;
        walls.sort_by(f64::total_cmp);
        eprintln!(
            "[reshare] 3-of-5 {scheme}, {} resharings (node 5 to 6 and back): wall ms min {:.1} \
             median {:.1} max {:.1}; CPU {cpu_s:.2} s in all, {:.0} ms per resharing (six nodes \
             in one process)",
            walls.len(),
            walls[0],
            walls[walls.len() / 2],
            walls[walls.len() - 1],
            cpu_s * 1000.0 / walls.len() as f64
        );
    }
}
