//! `mpc-wallet`: the command-line entry point.

mod demo;
mod fixtures;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mpc-wallet",
    version,
    about = "Threshold-signature custody for Bitcoin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an ECDSA and a Taproot wallet in this process and sign a regtest transaction
    /// spending synthetic outputs of both; verify it with bitcoinconsensus.
    Demo {
        /// Signatures needed (t).
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Key holders (n).
        #[arg(long, default_value_t = 5)]
        parties: u16,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
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
        Command::Demo {
            threshold,
            parties,
            json,
        } => {
            let report = demo::run(threshold, parties)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                demo::print_human(&report);
            }
            Ok(())
        }
        Command::Primes(PrimesCommand::Generate {
            count,
            out,
            threads,
        }) => fixtures::generate_primes(count, &out, threads),
        Command::AuxInfo(AuxInfoCommand::Generate {
            primes,
            parties,
            out,
        }) => fixtures::generate_aux_info(&primes, parties, &out),
    }
}
