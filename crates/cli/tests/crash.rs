//! Kill test: nodes die (SIGKILL) at every durable step of presignature generation and
//! consumption, chosen by seeded randomness, while presignatures are generated and used.
//! Afterwards no two signatures share an ECDSA nonce `r`, and every key share still decrypts.
//!
//! `MPC_KILLS` sets the number of kills (default: one per failpoint; `scripts/kill-test` runs 100+ and
//! its numbers are in RELIABILITY.md). `MPC_KILL_SEED` offsets the seeds.

use mpc_types::NodeId;
use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    time::{Duration, Instant},
};

use mpc_api::Role;
use mpc_bitcoin::WalletKey;
use mpc_node::{config::Limits, failpoint::POINTS};
use mpc_store::{KeySource, Store};
use mpc_wallet::{
    client::ApiClient,
    devnet::{synthetic_payment, verify_answer, wallet_key_from_api, Devnet, DevnetOptions},
};
use nix::sys::signal::Signal;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use uuid::Uuid;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn psbt_at(key: &WalletKey, path: &str, to: &WalletKey) -> String {
    synthetic_payment(&[(key, path, 10_000)], to, 0, 1_000).unwrap()
}

async fn check_stores_decrypt(dir: &Path, nodes: u16, wallets: &[mpc_types::WalletId]) {
    let ids: Vec<NodeId> = (1..=nodes).filter_map(NodeId::new).collect();
    for &id in &ids {
        let node_dir = dir.join(format!("node-{id}"));
        let store = Store::open(
            &format!("sqlite://{}", node_dir.join("store.db").display()),
            &KeySource::KeyFile(node_dir.join("kek.key")),
            id,
        )
        .await
        .unwrap();
        for w in wallets {
            let share = store
                .key_share(w)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("node {id} lost wallet {w}"));
            mpc_protocols::ecdsa::IncompleteEcdsaShare::from_bytes(&share)
                .unwrap_or_else(|e| panic!("node {id}'s share of {w} does not decode: {e}"));
        }
        let (aux, _) = store.aux_info(&ids).await.unwrap().expect("aux info");
        mpc_protocols::ecdsa::AuxInfo::from_bytes(&aux).unwrap();
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_at_every_durable_step_never_reuse_a_presignature() {
    // By default one kill per failpoint: each point is hit once, whichever the seed (the
    // victim, coordinator and occurrence stay random). `scripts/kill-test` runs hundreds.
    let kills = env_u64("MPC_KILLS", POINTS.len() as u64);
    let seed0 = env_u64("MPC_KILL_SEED", 0);
    let n = 3u16;
    let dir = std::env::temp_dir().join(format!("mpc-crash-test-{}", Uuid::new_v4()));
    let mut options = DevnetOptions::new(
        n,
        2,
        dir.clone(),
        env!("CARGO_BIN_EXE_mpc-wallet-failpoints").into(),
    );
    options.limits = Limits {
        full_sign_timeout_ms: 20_000,
        presign_timeout_ms: 20_000,
        sign_timeout_ms: 5_000,
        ..Limits::default()
    };
    // The test drives generation itself.
    options.pool.enabled = false;
    // Aux info is not under test here (the devnet runs it): the checked-in fixture saves
    // minutes.
    options.aux_info_fixture = true;
    let mut devnet = Devnet::launch(options).await.unwrap();
    let all: Vec<u16> = (1..=n).collect();
    let admin1 = devnet.client(1, Role::Admin).unwrap();
    let wallet = admin1
        .keygen(
            &mpc_api::routes::KeygenRequest::new(mpc_bitcoin::Scheme::Ecdsa, "crash"),
            None,
        )
        .await
        .unwrap();
    let wallet_id = mpc_wallet::commands::wallet_id_of(&wallet).unwrap();
    let key = wallet_key_from_api(&wallet).unwrap();

    let started = Instant::now();
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    let mut crashed_at: BTreeMap<String, u32> = BTreeMap::new();
    let mut failed_requests = 0u32;
    for k in 0..kills {
        let mut rng = StdRng::seed_from_u64(seed0 + k);
        let point = POINTS[((seed0 + k) % POINTS.len() as u64) as usize];
        let victim = rng.gen_range(1..=n);
        let coordinator = rng.gen_range(1..=n);
        let nth = rng.gen_range(1..=2u32);
        let path = format!("m/0/{}", rng.gen_range(0..3u32));
        devnet.stop(victim, Signal::SIGKILL).unwrap();
        devnet
            .start_with_env(
                victim,
                &[("MPC_WALLET_CRASH_AT", &format!("{point}:{nth}"))],
            )
            .unwrap();
        devnet
            .wait_live(&all, n as usize, Duration::from_secs(60))
            .await
            .unwrap();

        let admin: ApiClient = devnet.client(coordinator, Role::Admin).unwrap();
        let signer: ApiClient = devnet.client(coordinator, Role::Signer).unwrap();
        // Generate two presignatures, then spend three times at that path: the first two
        // from presignatures (if they survived), the third interactively.
        if admin
            .presignatures(
                &wallet_id,
                &mpc_api::routes::PresignRequest::new(path.as_str(), 2),
                None,
            )
            .await
            .is_err()
        {
            failed_requests += 1;
        }
        for _ in 0..3 {
            let answer: Result<Value, _> = signer
                .sign_psbt(
                    &wallet_id,
                    &mpc_api::routes::SignRequest::new(psbt_at(&key, &path, &key)),
                )
                .await;
            match answer {
                Ok(a) => signatures.extend(verify_answer(&a).unwrap()),
                Err(_) => failed_requests += 1,
            }
        }
        // The crash point may not have been reached (e.g. the victim was not a signer):
        // then it is killed now, at whatever it was doing.
        let reached = !devnet.is_running(victim).unwrap();
        *crashed_at
            .entry(if reached {
                point.to_string()
            } else {
                "SIGKILL (external)".to_string()
            })
            .or_default() += 1;
        if !reached {
            devnet.stop(victim, Signal::SIGKILL).unwrap();
        }
        devnet.start(victim).unwrap();
    }
    devnet
        .wait_live(&all, n as usize, Duration::from_secs(60))
        .await
        .unwrap();
    // The cluster still signs after every crash.
    let last = devnet
        .client(1, Role::Signer)
        .unwrap()
        .sign_psbt(
            &wallet_id,
            &mpc_api::routes::SignRequest::new(psbt_at(&key, "m/1/0", &key)),
        )
        .await
        .unwrap();
    signatures.extend(verify_answer(&last).unwrap());
    devnet.stop_all().unwrap();

    let distinct: HashSet<&Vec<u8>> = signatures.iter().collect();
    eprintln!(
        "kill test: {kills} kills in {:.0} s, by point {crashed_at:?}; {} signatures, {} distinct r; {failed_requests} requests failed during crashes",
        started.elapsed().as_secs_f64(),
        signatures.len(),
        distinct.len()
    );
    assert_eq!(
        distinct.len(),
        signatures.len(),
        "an ECDSA nonce was reused"
    );
    let external = crashed_at.get("SIGKILL (external)").copied().unwrap_or(0);
    assert!(
        u64::from(external) < kills,
        "no crash point was ever reached: {crashed_at:?}"
    );
    assert!(
        signatures.len() as u64 >= kills,
        "too few signatures to mean anything"
    );
    check_stores_decrypt(&dir, n, &[wallet_id]).await;
    drop(devnet);
    let _ = std::fs::remove_dir_all(&dir);
}
