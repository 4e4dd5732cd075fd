//! Backup and restore of one node of a five-process cluster, through the `mpc-wallet` binary:
//! node 2 is stopped, backed up, wiped and restored; it signs again with its restored shares,
//! its presignature pool is empty (nothing from before the backup is ever used), its backup is
//! refused on node 3 and a tampered copy is refused.

use mpc_types::NodeId;
use std::{
    path::Path,
    process::{Command, Output},
    time::{Duration, Instant},
};

use mpc_api::Role;
use mpc_bitcoin::{
    bitcoin::{consensus, Transaction},
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    WalletKey,
};
use mpc_node::config::Limits;
use mpc_store::{KeySource, Store};
use mpc_wallet::{
    client::ApiClient,
    devnet::{synthetic_payment, wallet_key_from_api, Devnet, DevnetOptions},
};
use nix::sys::signal::Signal;
use serde_json::Value;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_mpc-wallet");
const PATH: &str = "m/0/0";

fn cli(args: &[&str]) -> Output {
    let output = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    eprintln!(
        "$ mpc-wallet {}\n  exit {:?}\n  stdout: {}\n  stderr: {}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    output
}

fn psbt_at(key: &WalletKey, path: &str) -> String {
    synthetic_payment(&[(key, path, 20_000)], key, 7, 2_000).unwrap()
}

/// Signs through `client`'s node, verifies the transaction with bitcoinconsensus (with the
/// spent outputs) and returns the answer.
async fn sign_and_verify(
    client: &ApiClient,
    wallet: &mpc_types::WalletId,
    key: &WalletKey,
) -> Value {
    let answer: Value = client
        .sign_psbt(
            wallet,
            &mpc_api::routes::SignRequest::new(psbt_at(key, PATH)),
        )
        .await
        .unwrap();
    let psbt = parse_psbt(answer["psbt"].as_str().unwrap()).unwrap();
    let spent = spent_outputs(&psbt).unwrap();
    let tx: Transaction =
        consensus::encode::deserialize_hex(answer["raw_transaction"].as_str().unwrap()).unwrap();
    verify_transaction(&tx, &spent).unwrap();
    answer
}

fn method(answer: &Value) -> (String, Value) {
    let input = &answer["inputs"][0];
    (
        input["method"].as_str().unwrap().to_string(),
        input["presignature"].clone(),
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn open_store(dir: &Path, id: u16) -> Store {
    Store::open(
        &format!("sqlite://{}", dir.join("store.db").display()),
        &KeySource::KeyFile(dir.join("kek.key")),
        NodeId::must(id),
    )
    .await
    .unwrap()
}

/// Ready presignatures of `wallet` in node 2's pool, as its API reports them.
async fn ready_in_pool(client: &ApiClient, wallet: &mpc_types::WalletId) -> u64 {
    let stats: Value = client.presignature_stats().await.unwrap();
    stats["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["wallet_id"] == wallet.as_str())
        .map(|w| w["ready_total"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_its_backup_signs_with_an_empty_presignature_pool() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("mpc-restore-test-{}", Uuid::new_v4()));
    let mut options = DevnetOptions::new(5, 3, dir.clone(), BIN.into());
    options.limits = Limits {
        full_sign_timeout_ms: 60_000,
        sign_timeout_ms: 10_000,
        session_hold_ms: 1_000,
        ..Limits::default()
    };
    // The test makes its presignatures itself.
    options.pool.enabled = false;
    // Aux info is not under test here (the devnet runs it): the checked-in fixture saves
    // minutes.
    options.aux_info_fixture = true;
    let mut devnet = Devnet::launch(options).await.unwrap();
    let all: Vec<u16> = (1..=5).collect();
    let admin1 = devnet.client(1, Role::Admin).unwrap();
    let wallet = admin1
        .keygen(
            &mpc_api::routes::KeygenRequest::new(mpc_bitcoin::Scheme::Ecdsa, "restore-test"),
            None,
        )
        .await
        .unwrap();
    let wallet_id = mpc_wallet::commands::wallet_id_of(&wallet).unwrap();
    let key = wallet_key_from_api(&wallet).unwrap();
    eprintln!(
        "cluster, aux info and keygen: {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // Node 2 coordinates: presignatures for its signer set {1, 2, 3}, one of them used.
    let admin2 = devnet.client(2, Role::Admin).unwrap();
    let signer2 = devnet.client(2, Role::Signer).unwrap();
    admin2
        .presignatures(
            &wallet_id,
            &mpc_api::routes::PresignRequest {
                signers: Some(mpc_types::NodeId::must_list(&[1, 2, 3])),
                ..mpc_api::routes::PresignRequest::new(PATH, 3)
            },
            None,
        )
        .await
        .unwrap();
    let before = sign_and_verify(&signer2, &wallet_id, &key).await;
    assert_eq!(method(&before).0, "presignature");
    assert_eq!(ready_in_pool(&admin2, &wallet_id).await, 2);

    // ---- stop node 2 and back it up --------------------------------------------------------
    devnet.stop(2, Signal::SIGTERM).unwrap();
    let node2 = devnet.node_dir(2);
    let (old_ready, old_share) = {
        let store = open_store(&node2, 2).await;
        let ready = store
            .ready_presignatures(
                &wallet_id,
                PATH,
                &NodeId::must_list(&[1, 2, 3]),
                now_ms(),
                100,
            )
            .await
            .unwrap();
        let share = store.key_share(&wallet_id).await.unwrap().unwrap().to_vec();
        assert_eq!(store.epoch().await.unwrap(), 1);
        store.close().await;
        (ready, share)
    };
    assert_eq!(old_ready.len(), 2, "node 2 held two ready presignatures");

    let config2 = node2.join("node.toml");
    let config3 = devnet.node_dir(3).join("node.toml");
    let backup = dir.join("node-2.backup");
    let t0 = Instant::now();
    let out = cli(&[
        "backup",
        "--config",
        config2.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap(),
    ]);
    let backup_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert!(out.status.success());
    let bytes = std::fs::read(&backup).unwrap();
    // Sealed as at rest: the share's plaintext is not in the file. No presignature row is
    // (their ids may appear in the public ceremony records, which list what was generated).
    assert!(!bytes.windows(64).any(|w| w == &old_share[..64]));
    let body: Value = serde_json::from_slice(bytes.split(|&b| b == b'\n').nth(1).unwrap()).unwrap();
    let tables: Vec<&String> = body["tables"].as_object().unwrap().keys().collect();
    assert!(
        !tables.iter().any(|t| t.as_str() == "presignatures"),
        "{tables:?}"
    );
    assert!(
        tables.iter().any(|t| t.as_str() == "key_shares"),
        "{tables:?}"
    );
    let header = mpc_store::read_backup_header(&bytes).unwrap();
    assert_eq!((header.node_id, header.epoch), (2, 1));
    // A second backup never overwrites the first.
    assert!(!cli(&[
        "backup",
        "--config",
        config2.to_str().unwrap(),
        "--out",
        backup.to_str().unwrap()
    ])
    .status
    .success());

    // ---- wipe node 2's store ---------------------------------------------------------------
    for file in ["store.db", "store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(node2.join(file));
    }

    // Node 2's backup on node 3's configuration: refused, naming both nodes.
    let out = cli(&[
        "restore",
        "--config",
        config3.to_str().unwrap(),
        "--from",
        backup.to_str().unwrap(),
        "--force",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("backup is of node 2") && stderr.contains("configuration is of node 3"),
        "{stderr}"
    );

    // A tampered copy (one letter of the wallet's name): refused, nothing written.
    let text = String::from_utf8(bytes.clone()).unwrap();
    let tampered = dir.join("tampered.backup");
    std::fs::write(&tampered, text.replacen("restore-test", "restore-tesT", 1)).unwrap();
    let out = cli(&[
        "restore",
        "--config",
        config2.to_str().unwrap(),
        "--from",
        tampered.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not authenticate"), "{stderr}");

    // ---- restore -----------------------------------------------------------------------------
    let t0 = Instant::now();
    let out = cli(&[
        "restore",
        "--config",
        config2.to_str().unwrap(),
        "--from",
        backup.to_str().unwrap(),
    ]);
    let restore_ms = t0.elapsed().as_secs_f64() * 1e3;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("presignature epoch 2"));
    // Restoring again onto the now non-empty store needs --force.
    let out = cli(&[
        "restore",
        "--config",
        config2.to_str().unwrap(),
        "--from",
        backup.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    {
        let store = open_store(&node2, 2).await;
        assert_eq!(store.epoch().await.unwrap(), 2);
        assert_eq!(
            store.key_share(&wallet_id).await.unwrap().unwrap().to_vec(),
            old_share
        );
        for p in &old_ready {
            assert!(store.presignature(&p.id).await.unwrap().is_none());
        }
        let levels = store.presignature_counts(&wallet_id, 0).await.unwrap();
        assert!(levels.iter().all(|l| l.ready == 0), "{levels:?}");
        store.close().await;
    }

    // ---- node 2 is back: empty pool, signs with its restored share ----------------------
    devnet.start(2).unwrap();
    devnet
        .wait_live(&all, 5, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(ready_in_pool(&admin2, &wallet_id).await, 0);
    let after = sign_and_verify(&signer2, &wallet_id, &key).await;
    let signers: Vec<u16> = serde_json::from_value(after["signers"].clone()).unwrap();
    assert!(signers.contains(&2), "{signers:?}");
    // No presignature from before the backup: node 2 has none, so it signed interactively.
    assert_eq!(method(&after), ("interactive".to_string(), Value::Null));
    assert_eq!(ready_in_pool(&admin2, &wallet_id).await, 0);

    // The pool refills with new presignatures (epoch 2), which sign.
    admin2
        .presignatures(
            &wallet_id,
            &mpc_api::routes::PresignRequest {
                signers: Some(mpc_types::NodeId::must_list(&[1, 2, 3])),
                ..mpc_api::routes::PresignRequest::new(PATH, 1)
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(ready_in_pool(&admin2, &wallet_id).await, 1);
    let fresh = sign_and_verify(&signer2, &wallet_id, &key).await;
    let (m, id) = method(&fresh);
    assert_eq!(m, "presignature");
    assert!(old_ready.iter().all(|p| Value::String(p.id.clone()) != id));

    devnet.stop_all().unwrap();
    // The restored store (behind what node 2 did before) was not taken for a rolled-back one
    // at node 2's start: still epoch 2, and its rollback guard file holds the backup's one
    // consumption and the fresh one, of epoch 2.
    let store = open_store(&node2, 2).await;
    assert_eq!(store.epoch().await.unwrap(), 2);
    store.close().await;
    assert_eq!(
        mpc_store::witnessed_position(&node2.join("rollback-guard")).unwrap(),
        Some(mpc_store::Position {
            epoch: 2,
            consumed: 2
        })
    );
    eprintln!(
        "restore test: backup {backup_ms:.0} ms ({} bytes), restore {restore_ms:.0} ms, \
         total {:.0} s",
        bytes.len(),
        started.elapsed().as_secs_f64()
    );
    drop(devnet);
    let _ = std::fs::remove_dir_all(&dir);
}
