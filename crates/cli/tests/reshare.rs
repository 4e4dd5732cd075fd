//! Resharing and refresh of both schemes through the API, on node processes (issue 19): a
//! devnet of two key holders (nodes 1 and 2, 2-of-2) and one spare node (3) that joins the
//! cluster holding nothing. Aux info for the new node set {1, 3} is made over QUIC, both
//! wallets are reshared from {1, 2} to {1, 3}, node 2 is stopped, and nodes 1 and 3 sign a
//! P2WPKH + P2TR transaction that Bitcoin Core's interpreter accepts; then both wallets are
//! refreshed on {1, 3} (the ECDSA one with new aux info) and sign again. The key, xpub, first
//! address and descriptors never change, as nodes 1 and 3 report them.

use std::time::{Duration, Instant};

use mpc_api::{
    routes::{KeygenRequest, ReshareRequest, SignRequest},
    Role,
};
use mpc_bitcoin::Scheme;
use mpc_node::NodeConfig;
use mpc_types::{NodeId, WalletId};
use mpc_wallet::{
    client::ApiClient,
    commands::wallet_id_of,
    devnet::{synthetic_payment, verify_signed, wallet_key_from_api, Devnet, DevnetOptions},
};
use nix::sys::signal::Signal;
use serde_json::Value;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_mpc-wallet");

/// What must never change about a wallet, as a node's API reports it.
fn public_side(wallet: &Value) -> [String; 5] {
    [
        "public_key",
        "xpub",
        "first_address",
        "receive_descriptor",
        "change_descriptor",
    ]
    .map(|k| {
        wallet[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} in {wallet}"))
            .to_string()
    })
}

/// Signs a spend of both wallets' `m/0/0` through `signer`'s node, checks every input with
/// libbitcoinconsensus, and returns the signer set.
async fn sign_both(
    signer: &ApiClient,
    (ecdsa, taproot): (&WalletId, &WalletId),
    keys: (&mpc_bitcoin::WalletKey, &mpc_bitcoin::WalletKey),
) -> Vec<u16> {
    let psbt = synthetic_payment(
        &[(keys.0, "m/0/0", 60_000), (keys.1, "m/0/0", 40_000)],
        keys.0,
        3,
        2_000,
    )
    .unwrap();
    let answer = signer
        .sign_psbt(
            ecdsa,
            &SignRequest {
                psbt,
                additional_wallets: vec![taproot.clone()],
            },
        )
        .await
        .unwrap();
    let verified = verify_signed(
        answer["psbt"].as_str().unwrap(),
        answer["raw_transaction"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(verified.ecdsa_r_values().unwrap().len(), 1, "{answer}");
    assert_eq!(verified.schnorr_r_values().unwrap().len(), 1, "{answer}");
    serde_json::from_value(answer["signers"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_schemes_move_to_a_spare_node_and_refresh_there_keeping_every_address() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("mpc-reshare-test-{}", Uuid::new_v4()));
    let mut options = DevnetOptions::new(2, 2, dir.clone(), BIN.into());
    options.spare = 1;
    options.pool.enabled = false;
    // The holders' aux info is not under test: the checked-in fixture for {1, 2}.
    options.aux_info_fixture = true;
    let mut devnet = Devnet::launch(options).await.unwrap();
    let admin = devnet.client(1, Role::Admin).unwrap();
    let holders = NodeId::must_list(&[1, 2]);
    let new_set = NodeId::must_list(&[1, 3]);

    let mut ids = Vec::new();
    let mut keys = Vec::new();
    let mut before = Vec::new();
    for scheme in [Scheme::Ecdsa, Scheme::Schnorr] {
        let request = KeygenRequest {
            participants: Some(holders.clone()),
            ..KeygenRequest::new(scheme, format!("moving {scheme}"))
        };
        let wallet = admin.keygen(&request, None).await.unwrap();
        let id = wallet_id_of(&wallet).unwrap();
        keys.push(wallet_key_from_api(&wallet).unwrap());
        before.push(public_side(&admin.wallet(&id).await.unwrap()));
        ids.push(id);
    }
    let both = (&ids[0], &ids[1]);
    let key_pair = (&keys[0], &keys[1]);
    let signer1 = devnet.client(1, Role::Signer).unwrap();
    assert_eq!(sign_both(&signer1, both, key_pair).await, [1, 2]);

    // The spare node holds nothing yet, and the new node set has no aux info: an ECDSA
    // resharing onto it is refused before anything starts.
    let admin3 = devnet.client(3, Role::Admin).unwrap();
    let wallets3 = admin3.wallets().await.unwrap();
    assert_eq!(wallets3.as_array().map(Vec::len), Some(0), "{wallets3}");
    let reshare = ReshareRequest {
        participants: new_set.clone(),
        threshold: 2,
    };
    let refused = admin.reshare(&ids[0], &reshare, None).await;
    assert!(refused.is_err(), "reshared without aux info: {refused:?}");

    // Aux info for {1, 3} over the network (a real run), then both wallets move.
    let t0 = Instant::now();
    let aux = admin.aux_info(Some(&new_set), None).await.unwrap();
    assert_eq!(aux["node_set"], serde_json::json!([1, 3]), "{aux}");
    let aux_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for id in &ids {
        let report = admin.reshare(id, &reshare, None).await.unwrap();
        assert_eq!(report["key_epoch"], 1, "{report}");
    }
    let reshare_s = t0.elapsed().as_secs_f64();
    for (id, before) in ids.iter().zip(&before) {
        for node in [1, 3] {
            let wallet = devnet
                .client(node, Role::Viewer)
                .unwrap()
                .wallet(id)
                .await
                .unwrap();
            assert_eq!(&public_side(&wallet), before, "node {node}: {wallet}");
            assert_eq!(wallet["participants"], serde_json::json!([1, 3]));
            assert_eq!(wallet["state"], "active", "node {node}: {wallet}");
        }
        let left = devnet
            .client(2, Role::Viewer)
            .unwrap()
            .wallet(id)
            .await
            .unwrap();
        assert_eq!(left["state"], "retired", "node 2: {left}");
    }

    // Node 2 is gone; nodes 1 and 3 sign, coordinated by the new node.
    devnet.stop(2, Signal::SIGTERM).unwrap();
    let signer3 = devnet.client(3, Role::Signer).unwrap();
    assert_eq!(sign_both(&signer3, both, key_pair).await, [1, 3]);

    // Refresh on the new committee: new shares and, for ECDSA, new aux info for {1, 3}, made
    // from a set of safe primes on each node. Their fixture sets went into the aux info above,
    // and these nodes generate none (minutes each): they restart with the fixture's next
    // unused sets, as an operator would hand a node pregenerated primes.
    for (node, set) in [(1u16, 3usize), (3, 4)] {
        devnet.stop(node, Signal::SIGTERM).unwrap();
        let path = devnet.node_dir(node).join("node.toml");
        let mut config = NodeConfig::load(&path).unwrap();
        config.primes.import_index = Some(set);
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        devnet.start(node).unwrap();
    }
    devnet
        .wait_live(&[1, 3], 2, Duration::from_secs(60))
        .await
        .unwrap();
    let t0 = Instant::now();
    for id in &ids {
        let report = admin3.refresh(id, None).await.unwrap();
        assert_eq!(report["key_epoch"], 2, "{report}");
    }
    let refresh_s = t0.elapsed().as_secs_f64();
    for (id, before) in ids.iter().zip(&before) {
        let wallet = admin3.wallet(id).await.unwrap();
        assert_eq!(&public_side(&wallet), before, "{wallet}");
    }
    assert_eq!(sign_both(&signer1, both, key_pair).await, [1, 3]);
    eprintln!(
        "reshare test: aux info for {{1, 3}} {aux_s:.1} s, both reshares {reshare_s:.1} s, both \
         refreshes {refresh_s:.1} s (ECDSA with new aux info), {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
    drop(devnet);
    let _ = std::fs::remove_dir_all(&dir);
}
