//! `mpc-wallet primes generate` and `mpc-wallet aux-info generate`: the slow material,
//! made once and kept (tests and the devnet use the checked-in `fixtures/`).

use std::{path::Path, time::Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mpc_protocols::ecdsa::{AuxInfoFile, Primes, PrimesFile};

pub fn generate_primes(count: usize, out: &Path, threads: Option<usize>) -> Result<()> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    let bar = ProgressBar::new(count as u64).with_style(
        ProgressStyle::with_template("{spinner} safe primes {pos}/{len} sets [{elapsed}] {msg}")
            .context("progress template")?,
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let sets = std::sync::Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|s| {
        for _ in 0..threads.min(count) {
            s.spawn(|| {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    let primes = Primes::generate(&mut rand::rngs::OsRng);
                    if let Ok(mut sets) = sets.lock() {
                        sets.push(primes);
                    }
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish();
    let primes = sets
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a prime generation thread panicked"))?;
    let file = PrimesFile {
        note: format!(
            "{count} sets of four 1536-bit safe primes (cggmp24 SecurityLevel128), made by \
             `mpc-wallet primes generate --count {count}` in {:.0} s on {threads} threads. \
             Secret material: for tests and the local devnet only, never for real funds.",
            started.elapsed().as_secs_f64()
        ),
        primes,
    };
    std::fs::write(out, serde_json::to_vec_pretty(&file)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {} ({})", out.display(), file.note);
    Ok(())
}

pub fn generate_aux_info(primes: &Path, parties: usize, out: &Path) -> Result<()> {
    let file: PrimesFile = serde_json::from_slice(
        &std::fs::read(primes).with_context(|| format!("reading {}", primes.display()))?,
    )
    .with_context(|| format!("parsing {}", primes.display()))?;
    anyhow::ensure!(
        file.primes.len() >= parties,
        "{} holds {} prime sets, need {parties}",
        primes.display(),
        file.primes.len()
    );
    let bar = crate::progress::spinner(&format!("aux info for {parties} parties"));
    let started = Instant::now();
    let aux_info = mpc_protocols::local::aux_info(file.primes.into_iter().take(parties).collect())?;
    bar.finish_and_clear();
    let file = AuxInfoFile {
        note: format!(
            "aux info for {parties} parties, made by `mpc-wallet aux-info generate --primes {} \
             --parties {parties}` in {:.0} s (in one process). Holds every party's Paillier \
             secret: for tests only, never for real funds.",
            primes.display(),
            started.elapsed().as_secs_f64()
        ),
        aux_info,
    };
    std::fs::write(out, serde_json::to_vec(&file)?)
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {} ({})", out.display(), file.note);
    Ok(())
}

/// Loads the checked-in aux info for the devnet's node set (`fixtures/aux-info-<n>.json`, made
/// by `aux-info generate` from the fixture primes) into each node's store, as if the ceremony
/// had run over the network. For tests whose subject is not aux info: the real ceremony costs
/// one to two minutes on a 2-core machine. Call it before the nodes start.
pub async fn import_aux_info(devnet: &crate::devnet::Devnet) -> Result<()> {
    // The wallets' node set: spare nodes hold no aux info until one is made for a set with them.
    let node_set = devnet.holders();
    let n = node_set.len();
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../fixtures/aux-info-{n}.json"));
    let file: AuxInfoFile = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(
        file.aux_info.len() == n,
        "{} holds aux info for {} parties, not {n}",
        path.display(),
        file.aux_info.len()
    );
    let session = uuid::Uuid::new_v4();
    for (node, aux) in devnet.nodes.iter().take(n).zip(&file.aux_info) {
        let config = mpc_node::NodeConfig::load(&node.config)?;
        let key = mpc_node::node::key_source(&config)?;
        let store = mpc_store::Store::open(&config.store_url(), &key, node.id).await?;
        let digest = hex::encode(aux.public_digest()?);
        store
            .put_aux_info(&node_set, &aux.to_bytes()?, &digest, session)
            .await?;
        store.close().await;
    }
    Ok(())
}
