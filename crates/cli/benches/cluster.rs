//! The networked cluster against the in-process baseline: 5 node processes on loopback
//! (QUIC + mTLS, SQLite stores), 3-of-5, everything through the REST API.
//!
//! `cargo bench -p mpc-wallet --bench cluster [-- [--quick] [--skip-pool] [--frost-only]]`
//! (`--frost-only`: FROST keygen and signing alone, without aux info; for profiling that path.
//! `MPC_BENCH_ECDSA_SIGNINGS=N` sets the number of ECDSA online signings, 5 by default (the extra
//! presignatures are made in one ceremony first).
//! `MPC_BENCH_PAUSE_MS=N` idles N ms before each signing request (0 by default: back to back).
//! `MPC_BENCH_FROST_SIGNINGS=N` sets the number of FROST signings, 40 by default.
//! `MPC_BENCH_FROST_BURST=N` the FROST burst's signings (500), `MPC_BENCH_CLIENTS=N` the
//! bursts' concurrent clients (10). The nodes run without API rate limits: the bursts measure
//! the cluster, not the limiter.)
//!
//! For each protocol: the time the coordinating node reports (ceremony duration or the sign
//! response's `duration_ms`), the client-side latency, and the same protocol run in one
//! process over `mpc_protocols::sim` (the baseline), with their ratio. Then throughput: a
//! burst of FROST signings from concurrent clients; the presignature pool's refill rate, and a
//! burst of 50 ECDSA signatures served from it.

use std::time::Instant;

use mpc_api::Role;
use mpc_bitcoin::WalletKey;
use mpc_protocols::{ecdsa::SighashPreimage, local, DerivationPath, PartyIndex};
use mpc_wallet::{
    client::ApiClient,
    devnet::{synthetic_payment, wallet_key_from_api, Devnet, DevnetOptions},
};
use serde_json::{json, Value};
use uuid::Uuid;

/// A count from the environment variable `name`, or `default` when unset or unparsable.
fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn row(phase: &str, cluster: &mut [f64], client: Option<&mut [f64]>, baseline: &mut [f64]) {
    let c50 = pct(cluster, 0.5);
    let b50 = pct(baseline, 0.5);
    let client = client
        .map(|c| format!("{:.2} / {:.2}", pct(c, 0.5), pct(c, 0.99)))
        .unwrap_or_else(|| "-".into());
    println!(
        "| {phase} | {} | {c50:.2} | {:.2} | {client} | {b50:.2} | {:.2}x |",
        cluster.len(),
        pct(cluster, 0.9),
        c50 / b50
    );
}

fn spend(key: &WalletKey, path: &str, to: &WalletKey) -> String {
    synthetic_payment(&[(key, path, 20_000)], to, 0, 1_000).unwrap()
}

async fn ceremony_ms(client: &ApiClient, path: &str, body: Value) -> (f64, Value) {
    let accepted: Value = client.post(path, &body).await.unwrap();
    let id = accepted["ceremony_id"].as_str().unwrap().to_string();
    let result = client.wait_ceremony(&id, None).await.unwrap();
    let record: Value = client
        .get(&format!("/api/v1/ceremonies/{id}"))
        .await
        .unwrap();
    (record["duration_ms"].as_f64().unwrap(), result)
}

/// Per request: what the client waited beyond what the node measured for the signing itself.
fn api_overhead(node_ms: &[f64], client_ms: &[f64]) -> Vec<f64> {
    node_ms.iter().zip(client_ms).map(|(n, c)| c - n).collect()
}

async fn sign(client: &ApiClient, wallet: &mpc_types::WalletId, psbt: String) -> (f64, f64, Value) {
    // An idle cluster before each request: isolated signings instead of back-to-back ones.
    let pause_ms = env_count("MPC_BENCH_PAUSE_MS", 0) as u64;
    tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
    let t0 = Instant::now();
    let answer: Value = client
        .sign_psbt(wallet, &mpc_api::routes::SignRequest::new(psbt))
        .await
        .unwrap();
    let client_ms = t0.elapsed().as_secs_f64() * 1e3;
    (answer["duration_ms"].as_f64().unwrap(), client_ms, answer)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 3 } else { 20 };
    let dir = std::env::temp_dir().join(format!("mpc-bench-{}", Uuid::new_v4()));
    let mut options =
        DevnetOptions::new(5, 3, dir.clone(), env!("CARGO_BIN_EXE_mpc-wallet").into());
    options.pool.enabled = false; // measured separately below
    options.api.rate_limit_per_second = 0;
    options.api.rate_limit_ip_per_second = 0;
    let devnet = Devnet::launch(options).await.unwrap();
    let admin = devnet.client(1, Role::Admin).unwrap();
    let signer = devnet.client(1, Role::Signer).unwrap();

    println!(
        "5 node processes, 3-of-5, {} cores",
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1)
    );
    println!("| phase | runs | cluster p50 ms | cluster p90 ms | client p50 / p99 ms | in-process p50 ms | ratio |");
    println!("|---|---|---|---|---|---|---|");

    let taproot = keygen(&admin, "frost", "FROST keygen", reps, || {
        local::schnorr_keygen(3, 5).unwrap();
    })
    .await;
    let tid = mpc_wallet::commands::wallet_id_of(&taproot).unwrap();
    let tkey = wallet_key_from_api(&taproot).unwrap();

    let (mut cluster, mut client, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let frost = local::schnorr_keygen(3, 5).unwrap();
    let signers = PartyIndex::list(&[0, 1, 2]);
    let signings = env_count("MPC_BENCH_FROST_SIGNINGS", reps * 2);
    for _ in 0..signings {
        let (node_ms, client_ms, _) = sign(&signer, &tid, spend(&tkey, "m/0/0", &tkey)).await;
        cluster.push(node_ms);
        client.push(client_ms);
        let t0 = Instant::now();
        local::schnorr_sign(&frost, &signers, &"m/0/0".parse().unwrap(), &[1; 32]).unwrap();
        base.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let mut overhead = api_overhead(&cluster, &client);
    row("FROST sign", &mut cluster, Some(&mut client), &mut base);
    let frost_burst = env_count("MPC_BENCH_FROST_BURST", if quick { 50 } else { 500 });
    burst(&signer, &tid, &tkey, "m/0/0", &tkey, frost_burst, "FROST").await;

    if !std::env::args().any(|a| a == "--frost-only") {
        let (eid, ekey) = ecdsa(&admin, &signer, &tkey, reps, quick, &mut overhead).await;
        if !std::env::args().any(|a| a == "--skip-pool") {
            pool(&admin, &signer, &eid, &ekey, &tkey, quick).await;
        }
    }
    println!(
        "\nAPI overhead per signing request (client latency minus the node's own duration_ms, \
         HTTP + JSON + auth + rate limit + PSBT decode), {} requests: p50 {:.2} ms, p99 {:.2} ms",
        overhead.len(),
        pct(&mut overhead, 0.5),
        pct(&mut overhead, 0.99)
    );

    drop(devnet);
    // MPC_BENCH_KEEP_DIR keeps the node logs (run with RUST_LOG=info,mpc_node=debug for the
    // per-step timings of signing).
    if std::env::var_os("MPC_BENCH_KEEP_DIR").is_some() {
        println!("node logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Up to 5 key generations of `protocol` through the cluster, each followed by `baseline` in
/// process; prints the row and returns the last wallet.
async fn keygen(
    admin: &ApiClient,
    protocol: &str,
    phase: &str,
    reps: usize,
    baseline: impl Fn(),
) -> Value {
    let (mut cluster, mut base) = (Vec::new(), Vec::new());
    let mut wallet = Value::Null;
    for _ in 0..reps.min(5) {
        let (ms, w) = ceremony_ms(
            admin,
            "/api/v1/keygen",
            json!({"protocol": protocol, "name": "bench"}),
        )
        .await;
        cluster.push(ms);
        wallet = w;
        let t0 = Instant::now();
        baseline();
        base.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    row(phase, &mut cluster, None, &mut base);
    wallet
}

/// Aux info, ECDSA keygen, presignatures and online signing from them; returns the wallet.
async fn ecdsa(
    admin: &ApiClient,
    signer: &ApiClient,
    tkey: &WalletKey,
    reps: usize,
    quick: bool,
    overhead: &mut Vec<f64>,
) -> (mpc_types::WalletId, WalletKey) {
    let primes: mpc_protocols::ecdsa::PrimesFile =
        serde_json::from_slice(mpc_wallet::devnet::FIXTURE_PRIMES).unwrap();
    let (aux_ms, _) = ceremony_ms(admin, "/api/v1/aux-info", json!({})).await;
    let t0 = Instant::now();
    let aux = local::aux_info(primes.primes.clone()).unwrap();
    row(
        "aux info (n = 5)",
        &mut [aux_ms],
        None,
        &mut [t0.elapsed().as_secs_f64() * 1e3],
    );

    let ecdsa = keygen(admin, "cggmp24", "ECDSA keygen (CGGMP24)", reps, || {
        local::ecdsa_keygen(3, &aux).unwrap();
    })
    .await;
    let eid = mpc_wallet::commands::wallet_id_of(&ecdsa).unwrap();
    let ekey = wallet_key_from_api(&ecdsa).unwrap();
    let shares = local::ecdsa_keygen(3, &aux).unwrap();
    let signers = PartyIndex::list(&[0, 1, 2]);

    // Presignatures: one per run, so each ceremony is one presignature.
    let presigs = if quick { 2 } else { 5 };
    let (mut cluster, mut base) = (Vec::new(), Vec::new());
    for _ in 0..presigs {
        let (ms, _) = ceremony_ms(
            admin,
            &format!("/api/v1/wallets/{eid}/presignatures"),
            json!({"path": "m", "count": 1}),
        )
        .await;
        cluster.push(ms);
        let t0 = Instant::now();
        local::presign(&shares, &signers, &DerivationPath::root()).unwrap();
        base.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    row(
        "ECDSA presignature (3 signers)",
        &mut cluster,
        None,
        &mut base,
    );

    // Online signing from those presignatures (input at path m), and from more made in one
    // ceremony when MPC_BENCH_ECDSA_SIGNINGS asks for more samples than `presigs`; the
    // in-process baseline (a 4 s presignature before each) is taken `presigs` times.
    let signings = env_count("MPC_BENCH_ECDSA_SIGNINGS", presigs).max(presigs);
    if signings > presigs {
        ceremony_ms(
            admin,
            &format!("/api/v1/wallets/{eid}/presignatures"),
            json!({"path": "m", "count": signings - presigs}),
        )
        .await;
    }
    let (mut cluster, mut client, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let msg = SighashPreimage::new(b"bench".to_vec());
    for k in 0..signings {
        let (node_ms, client_ms, answer) = sign(signer, &eid, spend(&ekey, "m", tkey)).await;
        assert_eq!(answer["inputs"][0]["method"], "presignature");
        cluster.push(node_ms);
        client.push(client_ms);
        if k < presigs {
            let p = local::presign(&shares, &signers, &DerivationPath::root()).unwrap();
            let t0 = Instant::now();
            local::sign_with_presignatures(&shares, p, &msg).unwrap();
            base.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    overhead.extend(api_overhead(&cluster, &client));
    row(
        "ECDSA online sign from a presignature",
        &mut cluster,
        Some(&mut client),
        &mut base,
    );

    (eid, ekey)
}

/// The pool: refill rate, then a burst of ECDSA signatures served from it.
async fn pool(
    admin: &ApiClient,
    signer: &ApiClient,
    eid: &mpc_types::WalletId,
    ekey: &WalletKey,
    tkey: &WalletKey,
    quick: bool,
) {
    // The pool service generates in batches through the same ceremony; drive it directly so
    // nothing else runs during the other measurements.
    let burst_size: usize = if quick { 10 } else { 50 };
    let t0 = Instant::now();
    let mut generated = 0;
    while generated < burst_size {
        let count = (burst_size - generated).min(10);
        ceremony_ms(
            admin,
            &format!("/api/v1/wallets/{eid}/presignatures"),
            json!({"path": "m", "count": count}),
        )
        .await;
        generated += count;
    }
    let refill_min = t0.elapsed().as_secs_f64() / 60.0;
    println!(
        "\npool refill: {burst_size} presignatures (3-of-5, batches of 10) in {:.1} s = {:.1} per minute",
        refill_min * 60.0,
        burst_size as f64 / refill_min
    );
    burst(signer, eid, ekey, "m", tkey, burst_size, "ECDSA").await;
}

/// `count` signings of `key`'s output at `path` from [`clients`] concurrent clients, back to
/// back: signatures per second, and the node's and the client's latency.
async fn burst(
    signer: &ApiClient,
    wallet: &mpc_types::WalletId,
    key: &WalletKey,
    path: &'static str,
    to: &WalletKey,
    count: usize,
    label: &str,
) {
    let concurrency = clients();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..concurrency {
        let (signer, wallet) = (signer.clone(), wallet.clone());
        let (key, to) = (key.clone(), to.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in (k..count).step_by(concurrency) {
                out.push(sign(&signer, &wallet, spend(&key, path, &to)).await);
            }
            out
        }));
    }
    let (mut node_ms, mut client_ms, mut from_pool) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        for (n, c, answer) in t.await.unwrap() {
            node_ms.push(n);
            client_ms.push(c);
            from_pool += usize::from(answer["inputs"][0]["method"] == "presignature");
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "burst: {count} {label} signatures, {concurrency} concurrent clients, {from_pool} from the pool: \
         {:.1} signatures/s; node p50 {:.2} ms p99 {:.2} ms; client p50 {:.2} ms p99 {:.2} ms",
        count as f64 / secs,
        pct(&mut node_ms, 0.5),
        pct(&mut node_ms, 0.99),
        pct(&mut client_ms, 0.5),
        pct(&mut client_ms, 0.99),
    );
}

/// The bursts' concurrent clients: `MPC_BENCH_CLIENTS`, 10 by default.
fn clients() -> usize {
    env_count("MPC_BENCH_CLIENTS", 10).max(1)
}
