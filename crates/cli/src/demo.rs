//! `mpc-wallet demo`: both schemes end to end in one process, on regtest, spending SYNTHETIC
//! funding outputs (made-up transactions that exist on no chain).

use std::time::Instant;

use anyhow::{Context, Result};
use mpc_bitcoin::{
    bitcoin::{consensus, Network},
    finalize::{finalize, insert_signature, InputSignature},
    psbt::{analyze, spent_outputs, JobMessage},
    verify::verify_transaction,
    Scheme, TxRules, WalletKey,
};
use mpc_protocols::{
    ecdsa::{Primes, PrimesFile},
    local, PartyIndex,
};

use crate::{
    progress::spinner,
    report::{self, InputReport, Report, TransactionReport, WalletReport},
};

use crate::devnet::FIXTURE_PRIMES;

struct Phases {
    timings: Vec<(String, f64)>,
}

impl Phases {
    /// Runs one phase behind a spinner and records its wall time.
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let bar = spinner(name);
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
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            primes.push(Primes::generate_parallel(threads, || ())?);
        }
    }
    primes.truncate(usize::from(parties));
    Ok(primes)
}

pub fn run(threshold: u16, parties: u16) -> Result<Report> {
    mpc_protocols::ecdsa::check_parameters(PartyIndex::new(0), parties, threshold)?;
    let network = Network::Regtest;
    let signers = PartyIndex::all(threshold);
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

    let (mut psbt, inputs) = report::synthetic_spend(&ecdsa, &taproot)?;

    // Each input's sighash is recomputed from the PSBT, as every signer does.
    let jobs = analyze(&psbt, &[&ecdsa, &taproot], &TxRules::default())?;
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
            method: method.into(),
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

    Ok(Report {
        mode: "demo (one process)",
        network: mpc_bitcoin::network_name(network).into(),
        threshold,
        parties,
        signers: signers.iter().map(|s| s.get()).collect(),
        note: report::SYNTHETIC_NOTE,
        wallets: vec![
            WalletReport::new(None, &ecdsa)?,
            WalletReport::new(None, &taproot)?,
        ],
        transaction: TransactionReport {
            txid: tx.compute_txid().to_string(),
            signed_psbt: psbt.to_string(),
            raw_transaction: consensus::encode::serialize_hex(&tx),
            inputs: reports,
            verified_by: report::VERIFIED_BY,
        },
        timings_ms: phases.timings,
        cluster: None,
    })
}
