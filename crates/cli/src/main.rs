//! `mpc-wallet`: the command-line entry point.

use std::{path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mpc_protocols::ecdsa::{AuxInfoFile, Primes, PrimesFile};

#[derive(Parser)]
#[command(name = "mpc-wallet", version, about = "Threshold-signature custody for Bitcoin")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Safe primes for aux info (Paillier moduli).
    #[command(subcommand)]
    Primes(PrimesCommand),
    /// Aux info for a node set, run in one process (test fixtures).
    #[command(subcommand, name = "aux-info")]
    AuxInfo(AuxInfoCommand),
}

#[derive(Subcommand)]
enum AuxInfoCommand {
    /// Run aux-info generation for `--parties` parties in this process, from a primes file,
    /// and write every party's aux info (secret: test fixtures only).
    Generate {
        /// Primes file from `mpc-wallet primes generate`.
        #[arg(long)]
        primes: PathBuf,
        /// Number of parties (uses the first N prime sets).
        #[arg(long)]
        parties: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum PrimesCommand {
    /// Generate sets of four 1536-bit safe primes (one set per node) into a JSON file.
    Generate {
        /// How many sets (nodes) to generate.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Primes(PrimesCommand::Generate { count, out, threads }) => {
            generate_primes(count, &out, threads)
        }
        Command::AuxInfo(AuxInfoCommand::Generate {
            primes,
            parties,
            out,
        }) => generate_aux_info(&primes, parties, &out),
    }
}

fn generate_primes(count: usize, out: &PathBuf, threads: Option<usize>) -> Result<()> {
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

fn generate_aux_info(primes: &PathBuf, parties: usize, out: &PathBuf) -> Result<()> {
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
    let bar = ProgressBar::new_spinner().with_message(format!("aux info for {parties} parties"));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
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
