//! In-process baseline: every phase of the product run by all parties in one process over
//! in-memory channels (`mpc_protocols::sim`), on this machine's cores. The networked cluster
//! is measured against these numbers.
//!
//! `cargo bench -p mpc-wallet --bench in_process [-- --quick]`
//! (add `--no-default-features --features backend-rug` for the GMP backend).

use std::time::Instant;

use mpc_bitcoin::{
    bitcoin::{Amount, Network},
    build::{build_psbt, synthetic_funding, Payment},
    finalize::{finalize, insert_signature, InputSignature},
    psbt::{analyze, spent_outputs, JobMessage},
    verify::verify_transaction,
    Chain, Scheme, WalletKey,
};
use mpc_protocols::{
    ecdsa::{AuxInfo, SighashPreimage},
    local, DerivationPath, PartyIndex,
};

mod common;
use common::{cores, fixture_primes, BACKEND};

/// Process CPU time (all threads) in ms, from /proc (Linux).
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks * 10.0 // USER_HZ is 100 on Linux
}

struct Row {
    phase: String,
    t: String,
    samples: Vec<f64>,
    cpu: f64,
}

fn measure<T>(
    phase: &str,
    t: &str,
    iterations: usize,
    mut f: impl FnMut() -> T,
    rows: &mut Vec<Row>,
) -> Vec<T> {
    let mut samples = Vec::with_capacity(iterations);
    let mut outs = Vec::with_capacity(iterations);
    let cpu0 = cpu_ms();
    for _ in 0..iterations {
        let started = Instant::now();
        outs.push(f());
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let cpu = (cpu_ms() - cpu0) / iterations as f64;
    samples.sort_by(f64::total_cmp);
    let row = Row {
        phase: phase.into(),
        t: t.into(),
        samples,
        cpu,
    };
    print_row(&row);
    rows.push(row);
    outs
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn print_row(r: &Row) {
    println!(
        "| {} | {} | {} | {} | {:.2} | {:.2} | {:.1} |",
        r.phase,
        r.t,
        BACKEND,
        r.samples.len(),
        pct(&r.samples, 0.5),
        pct(&r.samples, 0.9),
        r.cpu
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let it = |full: usize| if quick { full.min(2) } else { full };
    let n = 5u16;
    let primes = fixture_primes();
    println!("in-process, n = {n}, {} cores", cores());
    println!("| phase | t | backend | iterations | p50 ms | p90 ms | CPU ms/iter (all threads) |");
    println!("|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();

    let aux: Vec<Vec<AuxInfo>> = measure(
        "aux info (fixture primes)",
        "-",
        it(2),
        || local::aux_info(primes.primes[..usize::from(n)].to_vec()).expect("aux info"),
        &mut rows,
    );
    let aux = &aux[0];

    for t in [3u16, 4] {
        let ts = t.to_string();
        let signers = PartyIndex::all(t);
        let path: DerivationPath = "m/0/1".parse().expect("path");
        let shares = measure(
            "ECDSA keygen",
            &ts,
            it(20),
            || local::ecdsa_keygen(t, aux).expect("keygen"),
            &mut rows,
        )
        .pop()
        .expect("shares");
        let presigs = measure(
            "ECDSA presignature",
            &ts,
            it(5),
            || local::presign(&shares, &signers, &path).expect("presign"),
            &mut rows,
        );
        let msg = SighashPreimage::new(b"benchmark preimage".to_vec());
        let mut presigs = presigs.into_iter();
        measure(
            "ECDSA online sign (partials + combine + verify)",
            &ts,
            it(5),
            || {
                let p = presigs.next().expect("one presignature per iteration");
                local::sign_with_presignatures(&shares, p, &msg).expect("online sign")
            },
            &mut rows,
        );
        measure(
            "ECDSA full interactive signing",
            &ts,
            it(3),
            || local::ecdsa_sign(&shares, &signers, &path, &msg).expect("sign"),
            &mut rows,
        );
        let frost = measure(
            "FROST keygen",
            &ts,
            it(20),
            || local::schnorr_keygen(t, n).expect("keygen"),
            &mut rows,
        )
        .pop()
        .expect("shares");
        measure(
            "FROST sign (BIP-341 tweak)",
            &ts,
            it(50),
            || local::schnorr_sign(&frost, &signers, &path, &[7; 32]).expect("sign"),
            &mut rows,
        );

        if t == 3 {
            wallet_phases(&shares, &frost, &mut rows, it(200));
        }
    }
}

/// The Bitcoin layer around signing: PSBT analysis (sighashes) and finalize + verify.
fn wallet_phases(
    ecdsa_shares: &[mpc_protocols::ecdsa::EcdsaKeyShare],
    frost: &[mpc_protocols::schnorr::SchnorrKeyShare],
    rows: &mut Vec<Row>,
    iterations: usize,
) {
    let ecdsa = WalletKey::new(
        Scheme::Ecdsa,
        ecdsa_shares[0].public_key(),
        ecdsa_shares[0].chain_code().expect("hd"),
        Network::Regtest,
    )
    .expect("key");
    let taproot = WalletKey::new(
        Scheme::Schnorr,
        frost[0].public_key(),
        frost[0].chain_code().expect("hd"),
        Network::Regtest,
    )
    .expect("key");
    let p0 = Chain::Receive.path(0).expect("path");
    let inputs = vec![
        synthetic_funding(&ecdsa, &p0, Amount::from_sat(100_000), "bench e").expect("funding"),
        synthetic_funding(&taproot, &p0, Amount::from_sat(100_000), "bench t").expect("funding"),
    ];
    let payments = vec![Payment {
        script_pubkey: taproot
            .chain_address(Chain::Receive, 1)
            .expect("addr")
            .script_pubkey(),
        amount: Amount::from_sat(195_000),
        owner: None,
    }];
    let psbt = build_psbt(&inputs, &payments).expect("psbt");
    let jobs = measure(
        "PSBT analysis (2 inputs: ownership + sighashes)",
        "3",
        iterations,
        || analyze(&psbt, &[&ecdsa, &taproot], &mpc_bitcoin::TxRules::default()).expect("analyze"),
        rows,
    )
    .pop()
    .expect("jobs");
    let signers = PartyIndex::list(&[0, 1, 2]);
    let sigs: Vec<InputSignature> = jobs
        .iter()
        .map(|job| match &job.message {
            JobMessage::Ecdsa { preimage, .. } => InputSignature::Ecdsa(
                local::ecdsa_sign(ecdsa_shares, &signers, &job.path, preimage).expect("sign"),
            ),
            JobMessage::Schnorr { sighash, .. } => InputSignature::Schnorr(
                local::schnorr_sign(frost, &signers, &job.path, sighash).expect("sign"),
            ),
        })
        .collect();
    measure(
        "insert + finalize + bitcoinconsensus verify (2 inputs)",
        "3",
        iterations,
        || {
            let mut psbt = psbt.clone();
            for (job, sig) in jobs.iter().zip(&sigs) {
                insert_signature(&mut psbt, job, sig).expect("insert");
            }
            let spent = spent_outputs(&psbt).expect("spent");
            let tx = finalize(&mut psbt).expect("finalize");
            verify_transaction(&tx, &spent).expect("verify");
        },
        rows,
    );
}
