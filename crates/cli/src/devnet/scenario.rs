//! The devnet's main job (`mpc-wallet devnet`): aux info and two wallets through the API, a
//! payment signed by the cluster, every signature verified by libsecp256k1 and the
//! transaction by Bitcoin Core's interpreter; and the helpers tests use for the same checks.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mpc_api::routes::{KeygenRequest, PresignRequest, SignRequest};
use mpc_bitcoin::{
    bitcoin::{bip32::Xpub, consensus, Amount, Network, Psbt, Script, Transaction, TxOut},
    build::{build_psbt, synthetic_funding, Payment},
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Chain, Scheme, WalletKey,
};
use mpc_protocols::signature::PublicKey;
use serde_json::{json, Value};

use crate::report::{self, InputReport, Report, TransactionReport, WalletReport};

use super::{Devnet, DevnetOptions};
use crate::commands::wallet_id_of;
use crate::progress::spinner;

/// A PSBT (base64) spending SYNTHETIC outputs `(wallet, path, sats)` to `to`'s receive
/// address `to_index`, leaving `fee_sats` as the fee: test and benchmark traffic for a devnet.
pub fn synthetic_payment(
    inputs: &[(&WalletKey, &str, u64)],
    to: &WalletKey,
    to_index: u32,
    fee_sats: u64,
) -> Result<String> {
    let spendable = inputs
        .iter()
        .enumerate()
        .map(|(k, (wallet, path, sats))| {
            Ok(synthetic_funding(
                wallet,
                &path.parse()?,
                Amount::from_sat(*sats),
                &format!("{k}-{}", uuid::Uuid::new_v4()),
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    let total: u64 = inputs.iter().map(|(_, _, sats)| sats).sum();
    let payment = Payment {
        script_pubkey: to.chain_address(Chain::Receive, to_index)?.script_pubkey(),
        amount: Amount::from_sat(
            total
                .checked_sub(fee_sats)
                .context("fee above the inputs")?,
        ),
        owner: None,
    };
    Ok(build_psbt(&spendable, &[payment])?.to_string())
}

/// A signed transaction that passed [`verify_signed`], parsed.
pub struct Verified {
    pub psbt: Psbt,
    pub tx: Transaction,
    /// The outputs its inputs spend, in input order.
    pub spent: Vec<TxOut>,
}

/// Checks a signed transaction independently of the nodes: every input's witness against the
/// output it spends (taken from the PSBT), with libbitcoinconsensus.
pub fn verify_signed(psbt: &str, raw_transaction: &str) -> Result<Verified> {
    let psbt = parse_psbt(psbt)?;
    let spent = spent_outputs(&psbt).map_err(mpc_bitcoin::WalletError::Inputs)?;
    let tx: Transaction = consensus::encode::deserialize_hex(raw_transaction)
        .context("the signed transaction's hex")?;
    verify_transaction(&tx, &spent)?;
    Ok(Verified { psbt, tx, spent })
}

/// Verifies a signing answer of the API (its `psbt` and `raw_transaction`) with
/// [`verify_signed`] and returns its ECDSA `r` values ([`Verified::ecdsa_r_values`]).
pub fn verify_answer(answer: &Value) -> Result<Vec<Vec<u8>>> {
    verify_signed(
        answer["psbt"].as_str().context("psbt")?,
        answer["raw_transaction"]
            .as_str()
            .context("raw_transaction")?,
    )?
    .ecdsa_r_values()
}

impl Verified {
    /// The `r` of every P2WPKH input's ECDSA signature (a reused presignature would show as a
    /// repeated `r`).
    pub fn ecdsa_r_values(&self) -> Result<Vec<Vec<u8>>> {
        self.signatures("P2WPKH", Script::is_p2wpkh)?
            .map(|der| {
                let der = der.split_last().map(|(_, d)| d).unwrap_or_default();
                let sig = mpc_bitcoin::bitcoin::secp256k1::ecdsa::Signature::from_der(der)?;
                Ok(sig.serialize_compact()[..32].to_vec())
            })
            .collect()
    }

    /// The nonce point `R` (its x coordinate) of every P2TR input's Schnorr signature: a FROST
    /// nonce used twice for different messages would show as a repeated `R`.
    pub fn schnorr_r_values(&self) -> Result<Vec<Vec<u8>>> {
        self.signatures("P2TR", Script::is_p2tr)?
            .map(|sig| {
                anyhow::ensure!(
                    sig.len() >= 64,
                    "a Schnorr signature of {} bytes",
                    sig.len()
                );
                Ok(sig[..32].to_vec())
            })
            .collect()
    }

    /// The signature (first witness item) of every input whose spent output's script is of
    /// `kind`; an error names the first such input without one.
    fn signatures(
        &self,
        kind: &str,
        is_kind: fn(&Script) -> bool,
    ) -> Result<impl Iterator<Item = &[u8]>> {
        let spends: Vec<_> = self
            .tx
            .input
            .iter()
            .zip(&self.spent)
            .filter(|(_, out)| is_kind(&out.script_pubkey))
            .map(|(input, _)| input.witness.nth(0))
            .collect();
        anyhow::ensure!(
            spends.iter().all(Option::is_some),
            "a {kind} input without a signature"
        );
        Ok(spends.into_iter().flatten())
    }
}

/// A wallet's public side from the API's wallet object (its xpub).
pub fn wallet_key_from_api(wallet: &Value) -> Result<WalletKey> {
    let scheme: Scheme = serde_json::from_value(wallet["scheme"].clone())?;
    let xpub: Xpub = wallet["xpub"].as_str().context("xpub")?.parse()?;
    let network: mpc_bitcoin::Network = serde_json::from_value(wallet["network"].clone())?;
    Ok(WalletKey::new(
        scheme,
        PublicKey(xpub.public_key.serialize()),
        xpub.chain_code.to_bytes(),
        network.into(),
    )?)
}

/// The devnet's main job. Returns the report and the devnet (still running).
pub async fn run(options: DevnetOptions) -> Result<(Report, Devnet)> {
    let total = Instant::now();
    let mut timings: Vec<(String, f64)> = Vec::new();
    let mut phase = |name: &str, since: Instant| {
        timings.push((name.to_string(), since.elapsed().as_secs_f64() * 1e3))
    };
    let n = options.nodes;
    let t = options.threshold;

    let t0 = Instant::now();
    let spare = options.spare;
    let bar = spinner(&format!("starting {} node processes", n + spare));
    let devnet = Devnet::launch(options).await?;
    bar.finish_and_clear();
    phase("start nodes and mesh", t0);

    let admin = devnet.client(1, mpc_api::Role::Admin)?;
    let signer = devnet.client(1, mpc_api::Role::Signer)?;
    // The wallets' nodes: every node but the spare ones.
    let holders = devnet.holders();
    let t0 = Instant::now();
    if devnet.options.aux_info_fixture {
        phase("aux info (checked-in fixture, imported at start)", t0);
    } else if devnet.options.generate_primes {
        let bar = spinner(&format!(
            "safe primes on every node, then aux info started by node 1 by itself ({n} nodes, minutes)"
        ));
        devnet.wait_aux_info(Duration::from_secs(3_600)).await?;
        bar.finish_and_clear();
        phase("safe primes generated and aux info by itself", t0);
    } else {
        let bar = spinner(&format!(
            "aux info over the network ({n} nodes, about a minute)"
        ));
        admin.aux_info(Some(&holders), Some(&bar)).await?;
        bar.finish_and_clear();
        phase("aux info", t0);
    }

    let mut wallets = Vec::new();
    for (scheme, label) in [
        (Scheme::Ecdsa, "ECDSA keygen (CGGMP24)"),
        (Scheme::Schnorr, "Taproot keygen (FROST)"),
    ] {
        let t0 = Instant::now();
        let bar = spinner(label);
        let request = KeygenRequest {
            participants: Some(holders.clone()),
            ..KeygenRequest::new(scheme, format!("devnet {scheme}"))
        };
        let result = admin.keygen(&request, Some(&bar)).await?;
        bar.finish_and_clear();
        phase(label, t0);
        if scheme == Scheme::Ecdsa && devnet.options.generate_primes {
            phase("first ECDSA wallet, from the first start", total);
        }
        wallets.push(result);
    }
    let ecdsa_id = wallet_id_of(&wallets[0])?;
    let taproot_id = wallet_id_of(&wallets[1])?;
    let ecdsa = wallet_key_from_api(&wallets[0])?;
    let taproot = wallet_key_from_api(&wallets[1])?;

    let t0 = Instant::now();
    let bar = spinner("ECDSA presignature for m/0/0");
    admin
        .presignatures(&ecdsa_id, &PresignRequest::new("m/0/0", 1), Some(&bar))
        .await?;
    bar.finish_and_clear();
    phase("ECDSA presignature", t0);

    let (psbt, inputs) = report::synthetic_spend(&ecdsa, &taproot)?;
    let t0 = Instant::now();
    let signed = signer
        .sign_psbt(
            &ecdsa_id,
            &SignRequest {
                psbt: psbt.to_string(),
                additional_wallets: vec![taproot_id.clone()],
            },
        )
        .await?;
    phase("sign (presignature + FROST) through the cluster", t0);

    // Check the node's answer independently of the node.
    let t0 = Instant::now();
    let raw = signed["raw_transaction"]
        .as_str()
        .context("raw_transaction")?;
    let Verified {
        psbt: signed_psbt,
        tx,
        ..
    } = verify_signed(signed["psbt"].as_str().context("psbt")?, raw)?;
    phase("verify (bitcoinconsensus, client side)", t0);
    phase("total", total);

    let input_reports = signed["inputs"]
        .as_array()
        .context("inputs")?
        .iter()
        .map(|i| {
            let index = i["input"].as_u64().context("input")? as usize;
            Ok(InputReport {
                input: index,
                scheme: serde_json::from_value(i["scheme"].clone())?,
                path: i["path"].as_str().unwrap_or_default().into(),
                sighash: i["sighash"].as_str().unwrap_or_default().into(),
                method: i["method"].as_str().unwrap_or_default().into(),
                amount_sats: inputs
                    .get(index)
                    .map(|s| s.txout.value.to_sat())
                    .unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let signers: Vec<u16> = serde_json::from_value(signed["signers"].clone())?;
    let env_file = devnet.write_env_file()?;
    let cluster = json!({
        "env_file": env_file,
        "pool": devnet.pool_levels().await?,
        "dir": devnet.options.dir,
        "nodes": devnet.nodes.iter().map(|n| json!({"id": n.id, "api": format!("http://{}", n.api), "quic": n.quic, "spare": !holders.contains(&n.id)})).collect::<Vec<_>>(),
        "tokens": {
            "admin": devnet.token(mpc_api::Role::Admin)?,
            "signer": devnet.token(mpc_api::Role::Signer)?,
            "viewer": devnet.token(mpc_api::Role::Viewer)?,
        },
    });
    let report = Report {
        mode: "devnet",
        network: mpc_bitcoin::network_name(Network::Regtest).into(),
        threshold: t,
        parties: n,
        signers,
        note: report::SYNTHETIC_NOTE,
        wallets: vec![
            WalletReport::new(Some(ecdsa_id), &ecdsa)?,
            WalletReport::new(Some(taproot_id), &taproot)?,
        ],
        transaction: TransactionReport {
            txid: tx.compute_txid().to_string(),
            signed_psbt: signed_psbt.to_string(),
            raw_transaction: raw.to_string(),
            inputs: input_reports,
            verified_by: report::VERIFIED_BY,
        },
        timings_ms: timings,
        cluster: Some(cluster),
    };
    Ok((report, devnet))
}
