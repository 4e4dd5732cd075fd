//! What the rollback guard file adds to a signer's durable step: `begin_signing` consuming one
//! presignature on SQLite, on a store without a guard and on one with it, alternating (which
//! goes first too) so the disk's drift falls on both. Isolated (20 ms idle before each) and
//! back to back.
//!
//! `cargo bench -p mpc-store --bench rollback_guard` (`MPC_BENCH_SIGNINGS`, default 300; the
//! stores live under `target/`, on the disk a node's `data_dir` would be on).

use mpc_types::NodeId;
use std::path::Path;
use std::time::{Duration, Instant};

use mpc_store::{
    generate_key_file, KeySource, PresignatureRecord, PresignatureState, PresignatureUse, Store,
    WalletState,
};
use uuid::Uuid;

const NOW: i64 = 1_700_000_000_000;

#[path = "../tests/common/wallet.rs"]
mod wallet;

async fn open(dir: &Path, guarded: bool) -> Store {
    std::fs::create_dir_all(dir).unwrap();
    generate_key_file(&dir.join("key")).unwrap();
    let url = format!("sqlite://{}", dir.join("store.db").display());
    let store = Store::open(&url, &KeySource::KeyFile(dir.join("key")), NodeId::must(1))
        .await
        .unwrap();
    if guarded {
        store
            .guard_against_rollback(&dir.join("rollback-guard"))
            .await
            .unwrap();
    }
    let mut wallet = wallet::wallet("w");
    wallet.state = WalletState::Active;
    wallet.activated_at = Some(NOW);
    store.insert_wallet(&wallet, b"share").await.unwrap();
    store
}

async fn add_presignature(store: &Store, id: &str) {
    let record = PresignatureRecord {
        id: id.into(),
        wallet_id: wallet::wallet_id("w"),
        path: mpc_types::DerivationPath::root(),
        signers: NodeId::must_list(&[1, 2, 3]),
        epoch: 1,
        key_epoch: 0,
        state: PresignatureState::Ready,
        public: Vec::new(),
        created_at: NOW,
        expires_at: NOW + 3_600_000,
        consumed_at: None,
    };
    store.insert_presignature(&record, b"secret").await.unwrap();
}

/// One signer's durable step consuming presignature `id`, in milliseconds.
async fn signing(store: &Store, id: &str, idle: Duration) -> f64 {
    tokio::time::sleep(idle).await;
    let root = mpc_types::DerivationPath::root();
    let uses = [PresignatureUse {
        id,
        wallet_id: &wallet::wallet_id("w"),
        path: &root,
        signers: &NodeId::must_list(&[1, 2, 3]),
    }];
    let started = Instant::now();
    store
        .begin_signing(
            Uuid::new_v4(),
            &uses,
            &[(&wallet::wallet_id("w"), 1_000)],
            None,
            NOW,
        )
        .await
        .unwrap()
        .unwrap();
    started.elapsed().as_secs_f64() * 1e3
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.3} / p90 {:.3} / p99 {:.3} ms",
        at(0.5),
        at(0.9),
        at(0.99)
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let signings: usize = std::env::var("MPC_BENCH_SIGNINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(format!("rollback-guard-bench-{}", Uuid::new_v4().simple()));
    let plain = open(&dir.join("without"), false).await;
    let guarded = open(&dir.join("with"), true).await;
    for (idle, name) in [(20, "isolated"), (0, "back to back")] {
        let idle = Duration::from_millis(idle);
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for i in 0..signings {
            let id = format!("{name}-{i}");
            add_presignature(&plain, &id).await;
            add_presignature(&guarded, &id).await;
            if i % 2 == 0 {
                without.push(signing(&plain, &id, idle).await);
                with.push(signing(&guarded, &id, idle).await);
            } else {
                with.push(signing(&guarded, &id, idle).await);
                without.push(signing(&plain, &id, idle).await);
            }
        }
        println!("{name}, {signings} signings each:");
        println!("  without the guard file: {}", summary(without));
        println!("  with the guard file:    {}", summary(with));
    }
    plain.close().await;
    guarded.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
