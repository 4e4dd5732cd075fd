//! Key generation's second phase on the in-memory cluster: a participant that misses the
//! coordinator's commit asks for it when its wait ends and activates the wallet. (It used to
//! guess an abort after 60 s and delete its share of a wallet the others had activated.)

use std::time::Duration;

use mpc_bitcoin::{
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Scheme,
};
use mpc_node::{
    adversary::{Adversary, Attack, Target},
    testing::{spend_to_self, start, wallet_request},
};
use mpc_store::WalletState;
use mpc_types::NodeId;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_the_keygen_commit_asks_and_activates_the_wallet() {
    let c = start(3, 2, |cfg| cfg.limits.keygen_timeout_ms = 3_000).await;
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
