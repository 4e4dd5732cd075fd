//! The presignature pool in a running cluster: the leader fills it in the background for the
//! outputs the wallet can spend (registered outputs, so many per path, none for the root or any
//! path that holds nothing), a burst of ECDSA signatures spending them is served from it (one
//! round each), nothing is generated for what was spent, and a newly registered output gets its
//! own. The burst is 20: each presignature costs seconds of CPU, and the throughput of a bigger
//! burst is the benchmark's (`cargo bench -p mpc-wallet --bench cluster`, BENCHMARKS.md), not
//! this test's.

use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};

use mpc_api::routes::SignRequest;
use mpc_api::Role;
use mpc_bitcoin::{
    bitcoin::{consensus, Amount, Transaction},
    build::{build_psbt, Payment, SpendableOutput},
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Chain, WalletKey,
};
use mpc_wallet::{
    client::ApiClient,
    devnet::{wallet_key_from_api, Devnet, DevnetOptions},
};
use serde_json::Value;
use uuid::Uuid;

mod common;
use common::registration;

/// The burst's outputs: two at each of five receive paths (each presignature costs the three
/// signers about 3.5 s of CPU together in the test build).
const PATHS: u32 = 5;
const BURST: usize = 2 * PATHS as usize;

/// Two synthetic outputs of `key` at each receive path in `paths` (regtest only).
fn outputs(key: &WalletKey, paths: std::ops::Range<u32>) -> Vec<SpendableOutput> {
    let at: Vec<String> = paths.flat_map(|i| vec![format!("m/0/{i}"); 2]).collect();
    let spec: Vec<(&str, u64)> = at.iter().map(|p| (p.as_str(), 20_000)).collect();
    mpc_testkit::fund(key, &spec)
}

/// A PSBT spending `output` to the wallet's receive address 100.
fn spend(key: &WalletKey, output: &SpendableOutput) -> String {
    build_psbt(
        std::slice::from_ref(output),
        &[Payment {
            script_pubkey: key
                .chain_address(Chain::Receive, 100)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(19_000),
            owner: None,
        }],
    )
    .unwrap()
    .to_string()
}

/// The wallet's pool statistics as node 1 reports them.
async fn pool_stats(client: &ApiClient, wallet: &mpc_types::WalletId) -> Value {
    let stats = client.presignature_stats().await.unwrap();
    stats["wallets"]
        .as_array()
        .expect("stats lists wallets")
        .iter()
        .find(|w| w["wallet_id"] == wallet.as_str())
        .cloned()
        .unwrap_or(Value::Null)
}

/// Ready presignatures per path.
fn ready_by_path(stats: &Value) -> BTreeMap<String, u64> {
    let mut ready = BTreeMap::new();
    for level in stats["levels"].as_array().cloned().unwrap_or_default() {
        *ready
            .entry(level["path"].as_str().unwrap_or_default().to_string())
            .or_default() += level["ready"].as_u64().unwrap_or(0);
    }
    ready
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
        .keygen(
            &mpc_api::routes::KeygenRequest::new(mpc_bitcoin::Scheme::Ecdsa, "pooled"),
            None,
        )
        .await
        .unwrap();
    let id = mpc_wallet::commands::wallet_id_of(&wallet).unwrap();
    let key = wallet_key_from_api(&wallet).unwrap();

    // Outputs registered through node 1, the refill leader (the registry is per node). Nobody
    // asks for presignatures: the leader makes one per output, per path.
    let signer = devnet.client(1, Role::Signer).unwrap();
    let burst = outputs(&key, 0..PATHS);
    let registered = signer
        .register_utxos(&id, &registration(&burst))
        .await
        .unwrap();
    assert_eq!(registered.len(), BURST);
    let t0 = Instant::now();
    let wanted: BTreeMap<String, u64> = (0..PATHS)
        .map(|i| (format!("m/0/{i}"), (BURST / PATHS as usize) as u64))
        .collect();
    loop {
        let ready = ready_by_path(&pool_stats(&viewer, &id).await);
        assert!(
            ready.keys().all(|p| wanted.contains_key(p)),
            "presignatures for a path that holds nothing: {ready:?}"
        );
        if ready == wanted {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "the pool did not fill: {ready:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let fill_secs = t0.elapsed().as_secs_f64();
    let mine = pool_stats(&viewer, &id).await;
    assert_eq!(mine["leader"], true);
    assert!(mine["generated_total"].as_u64().unwrap() >= BURST as u64);
    assert!(mine["generation_ms_p50"].as_f64().unwrap() > 0.0);

    // The burst, 10 clients at a time, each spending registered outputs: every one served from
    // the pool.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..10 {
        let psbts: Vec<String> = burst
            .iter()
            .skip(k)
            .step_by(10)
            .map(|o| spend(&key, o))
            .collect();
        let (signer, id) = (signer.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for psbt in psbts {
                let request = SignRequest {
                    psbt,
                    additional_wallets: Vec::new(),
                };
                answers.push(signer.sign_psbt(&id, &request).await.unwrap());
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
    // Every presignature made was used: the outputs it was made for are spent now. Outputs
    // being signed are held, so the pool does not make presignatures again for them; one made
    // in a race anyway is retired at the next refill round.
    let mine = pool_stats(&viewer, &id).await;
    assert!(mine["used_last_hour"].as_u64().unwrap() >= BURST as u64);
    let utilization = mine["utilization"].as_f64().unwrap();
    assert!(utilization >= 0.9, "utilization {utilization}: {mine}");
    let cpu_ms = mine["generation_cpu_ms_p50"].as_f64().unwrap();
    let per_consumed = mine["cpu_s_per_consumed"].as_f64().unwrap();
    assert!(cpu_ms > 0.0 && per_consumed > 0.0, "{mine}");
    eprintln!(
        "pool: utilization {utilization:.2} after the burst; this node's CPU per presignature \
         {cpu_ms:.0} ms, the signer set's CPU per consumed presignature {per_consumed:.2} s"
    );
    let t0 = Instant::now();
    loop {
        let after = pool_stats(&viewer, &id).await;
        if after["ready_total"] == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "kept for spent outputs: {after}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Newly registered outputs at a new path get their presignatures.
    let new = outputs(&key, PATHS + 10..PATHS + 11);
    signer
        .register_utxos(&id, &registration(&new))
        .await
        .unwrap();
    let t0 = Instant::now();
    while ready_by_path(&pool_stats(&viewer, &id).await).get(&format!("m/0/{}", PATHS + 10))
        != Some(&2)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the pool did not serve the new output"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(devnet);
    let _ = std::fs::remove_dir_all(&dir);
}
