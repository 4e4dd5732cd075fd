//! The presignature pool on the in-memory cluster: presignatures are kept for outputs not
//! yet spent; what was made for an output spent some other way is retired at every signer
//! holding a share, and what is kept still signs.

use std::time::{Duration, Instant};

use mpc_bitcoin::{
    bitcoin::{consensus, hashes::Hash, Amount, Txid},
    build::{build_psbt, Payment, SpendableOutput},
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Chain, Scheme,
};
use mpc_node::{utxos::RegisterUtxo, Node};
use mpc_store::PresignatureState;
use mpc_types::{NodeId, WalletId};
use uuid::Uuid;

use mpc_node::testing::{retire_notice, start, wallet};

/// Ready presignatures `node` holds for `wallet` at `path` with signer set {1, 2}.
async fn ready(node: &Node, wallet: &WalletId, path: &str) -> Vec<String> {
    let signers = [NodeId::must(1), NodeId::must(2)];
    node.store()
        .ready_presignatures(wallet, path, &signers, mpc_node::now_ms(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect()
}

/// Polls until `node` holds exactly `count` ready presignatures of `wallet` at `path`
/// (generation runs at idle priority: allow for a loaded machine).
async fn wait_ready(node: &Node, wallet: &WalletId, path: &str, count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let ids = ready(node, wallet, path).await;
        if ids.len() == count {
            return ids;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "node {} holds {} ready at {path}, not {count}",
            node.id(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn state(node: &Node, id: &str) -> PresignatureState {
    node.store().presignature(id).await.unwrap().unwrap().state
}

fn registration(outputs: &[SpendableOutput]) -> Vec<RegisterUtxo> {
    outputs
        .iter()
        .map(|o| RegisterUtxo {
            outpoint: o.outpoint.to_string(),
            amount_sats: None,
            path: o.path.to_string(),
            funding_transaction: o
                .funding_transaction
                .as_ref()
                .map(consensus::encode::serialize_hex),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presignatures_of_spent_outputs_are_retired_at_every_signer() {
    let c = start(3, 2, |cfg| {
        cfg.pool.enabled = true;
        cfg.pool.interval_ms = 200;
        cfg.pool.defaults.batch = 2;
    })
    .await;
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let (id, key) = wallet(&c, Scheme::Ecdsa).await;
    let path = "m/0/7";
    let funded = mpc_testkit::fund(&key, &[(path, 20_000), (path, 20_000)]);
    n1.register_utxos(&id, &registration(&funded))
        .await
        .unwrap();

    // Node 1 leads refill: one presignature per output, for the lowest live set {1, 2}; both
    // members hold a share of each.
    let made = wait_ready(n1, &id, path, 2).await;
    assert_eq!(wait_ready(n2, &id, path, 2).await, made);

    // A notice from a node outside the signer set retires nothing, nor does one from a
    // member that names the presignatures under another wallet.
    retire_notice(n2, NodeId::must(3), &id, made.clone()).await;
    assert_eq!(ready(n2, &id, path).await, made);
    let other = WalletId::from_uuid(Uuid::new_v4());
    retire_notice(n2, NodeId::must(1), &other, made.clone()).await;
    assert_eq!(ready(n2, &id, path).await, made);

    // One output is spent by a transaction the pool did not serve (recorded here as
    // `psbt/sign` records what it signs): its presignature is retired at both signers, the
    // same one at each, as expired (it bought no signature).
    n1.store()
        .mark_utxos_spent(&[funded[0].outpoint], Txid::all_zeros(), mpc_node::now_ms())
        .await
        .unwrap();
    let kept = wait_ready(n1, &id, path, 1).await;
    assert_eq!(wait_ready(n2, &id, path, 1).await, kept);
    let retired: Vec<&String> = made.iter().filter(|p| !kept.contains(p)).collect();
    assert_eq!(retired.len(), 1);
    for node in [n1, n2] {
        assert_eq!(state(node, retired[0]).await, PresignatureState::Expired);
        assert_eq!(state(node, &kept[0]).await, PresignatureState::Ready);
    }

    // The kept one signs the other output, from the pool; nothing is made again for it.
    let psbt = build_psbt(
        &funded[1..],
        &[Payment {
            script_pubkey: key
                .chain_address(Chain::Receive, 9)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(19_000),
            owner: None,
        }],
    )
    .unwrap()
    .to_string();
    let report = n1
        .sign_psbt(Uuid::new_v4(), std::slice::from_ref(&id), &psbt)
        .await
        .unwrap();
    assert_eq!(report.inputs[0].method, "presignature");
    assert_eq!(report.inputs[0].presignature.as_ref(), Some(&kept[0]));
    let signed = parse_psbt(&report.psbt).unwrap();
    verify_transaction(&report.raw_transaction, &spent_outputs(&signed).unwrap()).unwrap();
    n1.record_signed(&report).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in [n1, n2, n3] {
        assert!(
            ready(node, &id, path).await.is_empty(),
            "node {}",
            node.id()
        );
    }
}
