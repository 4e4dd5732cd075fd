//! Key generation's second phase on the in-memory cluster: a participant that misses the
//! coordinator's commit asks for it when its wait ends and activates the wallet. (It used to
//! guess an abort after 60 s and delete its share of a wallet the others had activated.) A
//! participant that restarts with a wallet still pending asks at its start, and a coordinator
//! that restarts before deciding finishes its record as failed, which is the abort it answers.

use std::time::Duration;

use mpc_bitcoin::{
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Scheme,
};
use mpc_node::{
    adversary::{Adversary, Attack, Target},
    keys::WalletInfo,
    testing::{spend_to_self, start, wallet_request, Cluster},
};
use mpc_store::{CeremonyRecord, WalletState};
use mpc_types::{NodeId, WalletId};
use uuid::Uuid;

/// A FROST keygen coordinated by node 1 whose commit reaches neither node 2 nor node 3.
async fn keygen_whose_commit_is_lost(c: &Cluster) -> WalletInfo {
    let lost = Adversary::new(
        Target::Control {
            kind: "Commit".into(),
        },
        Attack::Drop,
    );
    c.network.intercept(NodeId::must(1), lost.clone());
    let w = c.nodes[0]
        .create_wallet(Uuid::new_v4(), wallet_request("t", Scheme::Schnorr))
        .await
        .unwrap();
    c.network.release(NodeId::must(1));
    assert!(lost.altered() > 0);
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_the_keygen_commit_asks_and_activates_the_wallet() {
    let c = start(3, 2, |cfg| cfg.limits.keygen_timeout_ms = 3_000).await;
    let w = keygen_whose_commit_is_lost(&c).await;
    // Nodes 2 and 3 hold the wallet pending until their wait (3 s) ends; then they ask.
    let mut states = Vec::new();
    for node in &c.nodes[1..] {
        let record = node.store().wallet(&w.id).await.unwrap().unwrap();
        assert_eq!(record.state, WalletState::Pending, "node {}", node.id());
    }
    for _ in 0..150 {
        states.clear();
        for node in &c.nodes {
            states.push(node.store().wallet(&w.id).await.unwrap().unwrap().state);
        }
        if states.iter().all(|s| *s == WalletState::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(states, [WalletState::Active; 3]);
    for node in &c.nodes {
        assert!(node.store().key_share(&w.id).await.unwrap().is_some());
    }
    // Node 3 coordinates a signing; the transaction verifies (bitcoinconsensus, BIP-340).
    let record = c.nodes[2].store().wallet(&w.id).await.unwrap().unwrap();
    let key = mpc_node::keys::wallet_key(&record).unwrap();
    let report = c.nodes[2]
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&w.id),
            &spend_to_self(&key, "k"),
        )
        .await
        .unwrap();
    let signed = parse_psbt(&report.psbt).unwrap();
    verify_transaction(&report.raw_transaction, &spent_outputs(&signed).unwrap()).unwrap();
}

/// Waits (at most 15 s) until node `k` no longer holds wallet `id` pending; its state then.
async fn settled(c: &Cluster, k: usize, id: &WalletId) -> WalletState {
    let store = c.nodes[k].store();
    for _ in 0..150 {
        let state = store.wallet(id).await.unwrap().unwrap().state;
        if state != WalletState::Pending {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("node {} still holds wallet {id} pending", k + 1)
}

/// Node 1's commit reaches nobody, and node 3 restarts long before its wait would end: at its
/// start it finds the wallet pending, asks node 1 and activates it. Then a wallet pending on
/// node 3 from a keygen node 1 recorded as running but never decided: node 1 restarts and
/// finishes its record as failed (a client polling it would otherwise see it running for
/// ever), and node 3, restarted, asks and aborts the wallet. Fails without the settling at
/// start (the wallets stay pending) or without the finishing (the record stays running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_left_pending_by_a_restart_are_settled_as_the_coordinator_decided() {
    let mut c = start(3, 2, |cfg| cfg.limits.keygen_timeout_ms = 60_000).await;
    let w = keygen_whose_commit_is_lost(&c).await;
    let pending = c.nodes[2].store().wallet(&w.id).await.unwrap().unwrap();
    assert_eq!(pending.state, WalletState::Pending);
    assert_eq!(pending.coordinator, Some(NodeId::must(1)));
    c.restart(2, |_| {}).await;
    assert_eq!(settled(&c, 2, &w.id).await, WalletState::Active);

    // A keygen node 1 never decided: its record running, node 3's copy of the wallet pending.
    let session = Uuid::new_v4();
    let record = CeremonyRecord {
        id: session.to_string(),
        kind: "keygen".into(),
        state: "running".into(),
        coordinator: NodeId::must(1),
        request: serde_json::json!({}),
        result: None,
        error: None,
        started_at: 0,
        finished_at: None,
    };
    c.nodes[0].store().put_ceremony(&record).await.unwrap();
    let undecided = mpc_store::WalletRecord {
        id: WalletId::from_uuid(Uuid::new_v4()),
        state: WalletState::Pending,
        session,
        activated_at: None,
        ..pending
    };
    let share = c.nodes[2].store().key_share(&w.id).await.unwrap().unwrap();
    c.nodes[2]
        .store()
        .insert_wallet(&undecided, &share)
        .await
        .unwrap();
    c.restart(0, |_| {}).await;
    let finished = c.nodes[0]
        .store()
        .ceremony(&session.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.state, "failed");
    assert!(finished.finished_at.is_some());
    c.restart(2, |_| {}).await;
    assert_eq!(settled(&c, 2, &undecided.id).await, WalletState::Aborted);
    // The first wallet is untouched by all this.
    assert_eq!(settled(&c, 2, &w.id).await, WalletState::Active);
}
