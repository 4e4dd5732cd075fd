//! The presignature pool in a running cluster: the leader fills it in the background, a burst
//! of ECDSA signatures is served from it (one round each), and it refills. The burst is 20:
//! each presignature costs seconds of CPU, and the throughput of a bigger burst is the
//! benchmark's (`cargo bench -p mpc-wallet --bench cluster`, BENCHMARKS.md), not this test's.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use mpc_api::Role;
use mpc_bitcoin::{
    bitcoin::{consensus, Transaction},
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    WalletKey,
};
use mpc_wallet::{
    client::ApiClient,
    devnet::{synthetic_payment, wallet_key_from_api, Devnet, DevnetOptions},
};
use serde_json::{json, Value};
use uuid::Uuid;

const BURST: usize = 20;

fn spend(key: &WalletKey) -> String {
    synthetic_payment(&[(key, "m", 20_000)], key, 1, 1_000).unwrap()
}

async fn root_ready(client: &ApiClient, wallet: &str) -> u64 {
    let stats: Value = client.get("/api/v1/presignatures/stats").await.unwrap();
    stats["wallets"]
        .as_array()
        .expect("stats lists wallets")
        .iter()
        .filter(|w| w["wallet_id"] == wallet)
        .flat_map(|w| w["levels"].as_array().cloned().unwrap_or_default())
        .filter(|l| l["path"] == "m")
        .map(|l| l["ready"].as_u64().unwrap_or(0))
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_fills_in_the_background_and_serves_a_burst() {
    let dir = std::env::temp_dir().join(format!("mpc-pool-test-{}", Uuid::new_v4()));
    let mut options =
        DevnetOptions::new(3, 2, dir.clone(), env!("CARGO_BIN_EXE_mpc-wallet").into());
    options.pool.defaults.target = BURST as u32;
    options.pool.defaults.low_water = 5;
    options.pool.defaults.max = BURST as u32 + 5;
    options.pool.defaults.batch = 5;
    options.pool.interval_ms = 500;
    // On PostgreSQL when the test script provides a server (each node its own database).
    options.postgres_admin_url = std::env::var("MPC_TEST_POSTGRES_URL").ok();
    assert!(
        options.postgres_admin_url.is_some() || std::env::var_os("MPC_REQUIRE_POSTGRES").is_none(),
        "MPC_REQUIRE_POSTGRES is set but MPC_TEST_POSTGRES_URL is not"
    );
    eprintln!(
        "store backend: {}",
        if options.postgres_admin_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    );
    // Aux info is not under test here (the devnet runs it): the
    // checked-in fixture saves minutes.
    options.aux_info_fixture = true;
    let mut devnet = Devnet::create_with_databases(options).await.unwrap();
    devnet.start_all().unwrap();
    devnet
        .wait_live(&[1, 2, 3], 3, Duration::from_secs(60))
        .await
        .unwrap();
    let admin = devnet.client(1, Role::Admin).unwrap();
    let viewer = devnet.client(1, Role::Viewer).unwrap();
    let wallet = admin
        .ceremony(
            "/api/v1/dkg/initiate",
            &json!({"protocol": "cggmp24", "name": "pooled"}),
            None,
        )
        .await
        .unwrap();
    let id = wallet["id"].as_str().unwrap().to_string();
    let key = wallet_key_from_api(&wallet).unwrap();

    // Nobody asks for presignatures: the leader (node 1) fills the root path's pool.
    let t0 = Instant::now();
    while root_ready(&viewer, &id).await < BURST as u64 {
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "the pool did not fill"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let fill_secs = t0.elapsed().as_secs_f64();
    let stats: Value = viewer.get("/api/v1/presignatures/stats").await.unwrap();
    let mine = stats["wallets"]
        .as_array()
        .expect("stats lists wallets")
        .iter()
        .find(|w| w["wallet_id"] == id.as_str())
        .unwrap();
    assert_eq!(mine["leader"], true);
    assert!(mine["generated_total"].as_u64().unwrap() >= BURST as u64);
    assert!(mine["generation_ms_p50"].as_f64().unwrap() > 0.0);

    // The burst, 10 clients at a time: every one served from the pool.
    let signer = devnet.client(1, Role::Signer).unwrap();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..10 {
        let (signer, id, key) = (signer.clone(), id.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in (k..BURST).step_by(10) {
                answers.push(
                    signer
                        .post::<_, Value>(
                            &format!("/api/v1/wallets/{id}/psbt/sign"),
                            &json!({"psbt": spend(&key)}),
                        )
                        .await
                        .unwrap(),
                );
            }
            answers
        }));
    }
    let mut r_values = HashSet::new();
    let mut node_ms = Vec::new();
    for t in tasks {
        for answer in t.await.unwrap() {
            assert_eq!(answer["inputs"][0]["method"], "presignature", "{answer}");
            node_ms.push(answer["duration_ms"].as_f64().unwrap());
            let psbt = parse_psbt(answer["psbt"].as_str().unwrap()).unwrap();
            let spent = spent_outputs(&psbt).unwrap();
            let tx: Transaction =
                consensus::encode::deserialize_hex(answer["raw_transaction"].as_str().unwrap())
                    .unwrap();
            verify_transaction(&tx, &spent).unwrap();
            let der = tx.input[0].witness.nth(0).unwrap();
            let r =
                mpc_bitcoin::bitcoin::secp256k1::ecdsa::Signature::from_der(&der[..der.len() - 1])
                    .unwrap()
                    .serialize_compact()[..32]
                    .to_vec();
            assert!(r_values.insert(r), "nonce reused");
        }
    }
    let burst_secs = t0.elapsed().as_secs_f64();
    node_ms.sort_by(f64::total_cmp);
    eprintln!(
        "pool: filled {BURST} in {fill_secs:.0} s; burst of {BURST} in {burst_secs:.2} s ({:.0}/s), node p50 {:.1} ms",
        BURST as f64 / burst_secs,
        node_ms[node_ms.len() / 2]
    );
    let stats: Value = viewer.get("/api/v1/presignatures/stats").await.unwrap();
    let mine = stats["wallets"]
        .as_array()
        .expect("stats lists wallets")
        .iter()
        .find(|w| w["wallet_id"] == id.as_str())
        .unwrap();
    assert!(mine["used_last_hour"].as_u64().unwrap() >= BURST as u64);

    // Below low water, the leader refills.
    let t0 = Instant::now();
    while root_ready(&viewer, &id).await < 5 {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the pool did not refill"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(devnet);
    let _ = std::fs::remove_dir_all(&dir);
}
