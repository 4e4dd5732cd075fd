//! A node whose store is brought back in time (a VM snapshot, point-in-time recovery, a
//! failover to an asynchronous replica) never signs with a presignature it already used: its
//! start finds the store behind its rollback guard file and retires every presignature.

use mpc_types::NodeId;
use mpc_types::WalletId;
use std::time::Duration;

use mpc_bitcoin::{Chain, Scheme};
use mpc_node::testing::{start, start_node, wait_all_live, wallet_request, Cluster};
use mpc_node::{
    ceremony::PresignReport, control::ProposalBody, refusal::RefusalKind, Node, NodeError,
};
use uuid::Uuid;

/// An ECDSA wallet made by `node`, whose PSBTs spend a made-up output at m/0/0.
struct EcdsaWallet {
    id: WalletId,
    key: mpc_bitcoin::WalletKey,
}

impl EcdsaWallet {
    fn path() -> mpc_protocols::DerivationPath {
        Chain::Receive.path(0).unwrap()
    }

    /// A PSBT spending 50 000 sats from a made-up output `funding` names.
    fn spend(&self, funding: &str) -> String {
        mpc_node::testing::spend(&self.key, &Self::path(), 50_000, funding, 9, 40_000)
    }
}

async fn presigned_wallet(node: &Node) -> (EcdsaWallet, PresignReport) {
    let record = node
        .create_wallet(Uuid::new_v4(), wallet_request("e", Scheme::Ecdsa))
        .await
        .unwrap();
    let stored = node.store().wallet(&record.id).await.unwrap().unwrap();
    let key = mpc_node::keys::wallet_key(&stored).unwrap();
    let presigned = node
        .generate_presignatures(
            Uuid::new_v4(),
            &record.id,
            &EcdsaWallet::path(),
            2,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(presigned.signers, NodeId::must_list(&[1, 2]));
    (EcdsaWallet { id: record.id, key }, presigned)
}

fn copy_store_files(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["store.db", "store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(to.join(file));
        if from.join(file).exists() {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }
}

async fn restart(c: &mut Cluster, id: u16, while_stopped: impl FnOnce(&std::path::Path)) {
    let index = usize::from(id - 1);
    let node = c.nodes[index].clone();
    node.shutdown().await;
    c.network.disconnect(NodeId::must(id));
    while_stopped(&node.config().data_dir);
    c.nodes[index] = start_node(node.config().clone(), &c.network).await;
    wait_all_live(&c.nodes).await;
}

/// The finding of issue 17 (class 9): node 2's store goes back to a copy made before a
/// signing (a VM snapshot, point-in-time recovery, replica failover), which holds the used
/// presignature as ready. At its restart node 2 sees its store is behind its guard file and
/// retires every presignature: a coordinator that offers the used one again (compromised, or
/// itself rolled back) is refused instead of getting a second partial signature with it, which
/// would give the key away. The cluster signs on, and node 2 signs with new presignatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_store_was_copied_back_never_signs_with_a_used_presignature_again() {
    let mut c = start(3, 2, |_| {}).await;
    let n1 = c.nodes[0].clone();
    let (ecdsa, presigned) = presigned_wallet(&n1).await;
    let spend = |funding: &str| ecdsa.spend(funding);
    let wallets = std::slice::from_ref(&ecdsa.id);

    // A normal restart of node 2 (its store copied meanwhile) keeps both presignatures.
    let copy = c.nodes[1].config().data_dir.with_file_name("node-2-copy");
    restart(&mut c, 2, |data| copy_store_files(data, &copy)).await;
    let store2 = c.nodes[1].store().clone();
    assert_eq!(store2.epoch().await.unwrap(), 1);
    for id in &presigned.ids {
        let p = store2.presignature(id).await.unwrap().unwrap();
        assert_eq!(p.state, mpc_store::PresignatureState::Ready, "{id}");
    }

    // Signed with one of them: consumed at nodes 1 and 2.
    let report = n1
        .sign_psbt(Uuid::new_v4(), wallets, &spend("a"))
        .await
        .unwrap();
    assert_eq!(report.inputs[0].method, "presignature");
    let used = report.inputs[0].presignature.clone().unwrap();

    // Node 2's store goes back to the copy, where `used` is ready again.
    restart(&mut c, 2, |data| copy_store_files(&copy, data)).await;
    let store2 = c.nodes[1].store().clone();
    assert_eq!(
        store2.epoch().await.unwrap(),
        2,
        "a new epoch at the restart"
    );
    for id in &presigned.ids {
        let p = store2.presignature(id).await.unwrap().unwrap();
        assert_eq!(p.state, mpc_store::PresignatureState::Expired, "{id}");
    }

    // A coordinator asks node 2 alone for a partial signature of another transaction with the
    // used presignature: refused.
    let err = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                wallet_ids: vec![ecdsa.id.clone()],
                psbt: spend("b"),
                signers: NodeId::must_list(&[1, 2]),
                presignatures: vec![Some(used.clone())],
                approvals: None,
            },
            &NodeId::must_list(&[2]),
            Duration::from_secs(10),
            None,
        )
        .await
        .expect_err("node 2 gave a second partial signature with a used presignature");
    assert!(
        matches!(&err, NodeError::Refused { node, refusal }
            if *node == NodeId::must(2) && matches!(refusal.kind, RefusalKind::PresignatureUnavailable { .. })
                && refusal.message.contains("already used")),
        "{err}"
    );

    // The cluster signs on: node 1's offer of the other presignature is refused by node 2 too,
    // and the retry without node 2 signs interactively.
    let report = n1
        .sign_psbt(Uuid::new_v4(), wallets, &spend("c"))
        .await
        .unwrap();
    assert_eq!(
        report.signers,
        NodeId::must_list(&[1, 3]),
        "{:?}",
        report.attempts
    );

    // Node 2 signs again with presignatures of its new epoch.
    let fresh = n1
        .generate_presignatures(
            Uuid::new_v4(),
            &ecdsa.id,
            &EcdsaWallet::path(),
            1,
            Some(NodeId::must_list(&[1, 2])),
            None,
        )
        .await
        .unwrap();
    let report = n1
        .sign_psbt(Uuid::new_v4(), wallets, &spend("d"))
        .await
        .unwrap();
    assert_eq!(report.signers, NodeId::must_list(&[1, 2]));
    assert_eq!(report.inputs[0].presignature.as_ref(), fresh.ids.first());
}
