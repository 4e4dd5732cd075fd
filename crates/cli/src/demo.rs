//! `mpc-wallet demo`: both schemes end to end in one process, on regtest, spending SYNTHETIC
//! funding outputs (made-up transactions that exist on no chain).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use mpc_bitcoin::{
    bitcoin::{consensus, Amount, Network},
    build::{build_psbt, synthetic_funding, Payment},
    finalize::{finalize, insert_signature, InputSignature},
    psbt::{analyze, spent_outputs, JobMessage},
    verify::verify_transaction,
    Chain, Scheme, WalletKey,
};
use mpc_protocols::{
    ecdsa::{Primes, PrimesFile},
    local,
};
use serde::Serialize;

/// The checked-in fixture primes (`fixtures/primes.json`), so the demo does not spend minutes
/// on safe primes. Public test material: never for real funds.
const FIXTURE_PRIMES: &[u8] = include_bytes!("../../../fixtures/primes.json");

#[derive(Serialize)]
pub struct DemoReport {
    network: &'static str,
    threshold: u16,
    parties: u16,
    signers: Vec<u16>,
    note: &'static str,
    wallets: Vec<WalletReport>,
    transaction: TransactionReport,
    timings_ms: Vec<(String, f64)>,
}

#[derive(Serialize)]
struct WalletReport {
    scheme: Scheme,
    script_type: &'static str,
    master_key: String,
    xpub: String,
    first_receive_address: String,
    receive_descriptor: String,
    change_descriptor: String,
}

#[derive(Serialize)]
struct TransactionReport {
    txid: String,
    signed_psbt: String,
    raw_transaction: String,
    inputs: Vec<InputReport>,
    verified_by: &'static str,
}

#[derive(Serialize)]
struct InputReport {
    input: usize,
    scheme: Scheme,
    path: String,
    sighash: String,
    method: &'static str,
    amount_sats: u64,
}

struct Phases {
    timings: Vec<(String, f64)>,
}

impl Phases {
    /// Runs one phase behind a spinner and records its wall time.
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let bar = ProgressBar::new_spinner().with_message(name.to_string());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        let started = Instant::now();
        let out = f();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        bar.finish_and_clear();
        self.timings.push((name.to_string(), ms));
        out.with_context(|| format!("phase {name:?}"))
    }
}

fn primes_for(parties: u16) -> Result<Vec<Primes>> {
    let mut primes = serde_json::from_slice::<PrimesFile>(FIXTURE_PRIMES)
        .context("embedded fixture primes")?
        .primes;
    if primes.len() < usize::from(parties) {
        eprintln!(
            "note: {} fixture prime sets, generating {} more (minutes per set)",
            primes.len(),
            usize::from(parties) - primes.len()
        );
        while primes.len() < usize::from(parties) {
            primes.push(Primes::generate(&mut rand::rngs::OsRng));
        }
    }
    primes.truncate(usize::from(parties));
    Ok(primes)
}

pub fn run(threshold: u16, parties: u16) -> Result<DemoReport> {
    mpc_protocols::ecdsa::check_parameters(0, parties, threshold)?;
    let network = Network::Regtest;
    let signers: Vec<u16> = (0..threshold).collect();
    let mut phases = Phases {
        timings: Vec::new(),
    };
    let total = Instant::now();

    let primes = primes_for(parties)?;
    let aux = phases.run(&format!("aux info ({parties} parties)"), || {
        Ok(local::aux_info(primes)?)
    })?;
    let ecdsa_shares = phases.run("ECDSA keygen (CGGMP24)", || {
        Ok(local::ecdsa_keygen(threshold, &aux)?)
    })?;
    let schnorr_shares = phases.run("Taproot keygen (FROST)", || {
        Ok(local::schnorr_keygen(threshold, parties)?)
    })?;
    let ecdsa = WalletKey::new(
        Scheme::Ecdsa,
        ecdsa_shares[0].public_key(),
        ecdsa_shares[0].chain_code()?,
        network,
    )?;
    let taproot = WalletKey::new(
        Scheme::Schnorr,
        schnorr_shares[0].public_key(),
        schnorr_shares[0].chain_code()?,
        network,
    )?;

    // SYNTHETIC funding: one output of each wallet at m/0/0, spent to the Taproot wallet's
    // m/0/1 with change to the ECDSA wallet's m/1/0.
    let receive0 = Chain::Receive.path(0)?;
    let inputs = vec![
        synthetic_funding(&ecdsa, &receive0, Amount::from_sat(120_000), "demo ecdsa")?,
        synthetic_funding(
            &taproot,
            &receive0,
            Amount::from_sat(80_000),
            "demo taproot",
        )?,
    ];
    let change = Chain::Change.path(0)?;
    let payments = vec![
        Payment {
            script_pubkey: taproot.chain_address(Chain::Receive, 1)?.script_pubkey(),
            amount: Amount::from_sat(150_000),
            owner: None,
        },
        Payment {
            script_pubkey: ecdsa.script_pubkey(&change)?,
            amount: Amount::from_sat(49_000),
            owner: Some((ecdsa.clone(), change)),
        },
    ];
    let mut psbt = build_psbt(&inputs, &payments)?;

    // Each input's sighash is recomputed from the PSBT, as every signer does.
    let jobs = analyze(&psbt, &[&ecdsa, &taproot])?;
    let mut reports = Vec::new();
    for job in &jobs {
        let (signature, method) = match &job.message {
            JobMessage::Ecdsa { preimage, .. } => {
                let presigs = phases.run("ECDSA presignature", || {
                    Ok(local::presign(&ecdsa_shares, &signers, &job.path)?)
                })?;
                let sig = phases.run("ECDSA online sign (from presignature)", || {
                    Ok(local::sign_with_presignatures(
                        &ecdsa_shares,
                        presigs,
                        preimage,
                    )?)
                })?;
                (
                    InputSignature::Ecdsa(sig),
                    "cggmp24 presignature + online signing",
                )
            }
            JobMessage::Schnorr { sighash, .. } => {
                let sig = phases.run("Taproot sign (FROST)", || {
                    Ok(local::schnorr_sign(
                        &schnorr_shares,
                        &signers,
                        &job.path,
                        sighash,
                    )?)
                })?;
                (InputSignature::Schnorr(sig), "frost")
            }
        };
        insert_signature(&mut psbt, job, &signature)?;
        reports.push(InputReport {
            input: job.input,
            scheme: if matches!(signature, InputSignature::Ecdsa(_)) {
                Scheme::Ecdsa
            } else {
                Scheme::Schnorr
            },
            path: job.path.to_string(),
            sighash: hex::encode(job.message.sighash()),
            method,
            amount_sats: inputs[job.input].txout.value.to_sat(),
        });
    }
    let spent = spent_outputs(&psbt).map_err(mpc_bitcoin::WalletError::Inputs)?;
    let tx = phases.run("finalize + verify (bitcoinconsensus)", || {
        let tx = finalize(&mut psbt)?;
        verify_transaction(&tx, &spent)?;
        Ok(tx)
    })?;
    phases
        .timings
        .push(("total".into(), total.elapsed().as_secs_f64() * 1e3));

    let wallets = [&ecdsa, &taproot]
        .into_iter()
        .map(wallet_report)
        .collect::<Result<Vec<_>>>()?;
    Ok(DemoReport {
        network: mpc_bitcoin::network_name(network),
        threshold,
        parties,
        signers,
        note: "SYNTHETIC funding: the spent outputs belong to made-up transactions that exist \
               on no chain; this regtest transaction demonstrates signing and cannot be broadcast.",
        wallets,
        transaction: TransactionReport {
            txid: tx.compute_txid().to_string(),
            signed_psbt: psbt.to_string(),
            raw_transaction: consensus::encode::serialize_hex(&tx),
            inputs: reports,
            verified_by:
                "libsecp256k1 (each signature) and bitcoinconsensus 26.0 with spent outputs",
        },
        timings_ms: phases.timings,
    })
}

fn wallet_report(w: &WalletKey) -> Result<WalletReport> {
    Ok(WalletReport {
        scheme: w.scheme,
        script_type: w.scheme.script_type(),
        master_key: w.master_key.to_string(),
        xpub: w.xpub()?.to_string(),
        first_receive_address: w.chain_address(Chain::Receive, 0)?.to_string(),
        receive_descriptor: w.descriptor(Chain::Receive)?.to_string(),
        change_descriptor: w.descriptor(Chain::Change)?.to_string(),
    })
}

pub fn print_human(r: &DemoReport) {
    println!(
        "mpc-wallet demo: {}-of-{} on {} (signers {:?})\n",
        r.threshold, r.parties, r.network, r.signers
    );
    for w in &r.wallets {
        println!("{} wallet ({})", w.scheme, w.script_type);
        println!("  master key         {}", w.master_key);
        println!("  xpub               {}", w.xpub);
        println!("  receive m/0/0      {}", w.first_receive_address);
        println!("  receive descriptor {}", w.receive_descriptor);
        println!("  change descriptor  {}\n", w.change_descriptor);
    }
    println!("NOTE: {}\n", r.note);
    let t = &r.transaction;
    for i in &t.inputs {
        println!(
            "input {} {} {} {} sats, sighash {} ({})",
            i.input, i.scheme, i.path, i.amount_sats, i.sighash, i.method
        );
    }
    println!("\ntxid            {}", t.txid);
    println!("verified by     {}", t.verified_by);
    println!("signed PSBT     {}", t.signed_psbt);
    println!("raw transaction {}\n", t.raw_transaction);
    println!("timings");
    for (phase, ms) in &r.timings_ms {
        println!("  {phase:<40} {ms:>10.1} ms");
    }
}
