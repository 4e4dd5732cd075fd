//! What `demo` and `devnet` print: wallets, the signed transaction, timings. One shape for
//! both, as text or as one JSON object.

use anyhow::Result;
use mpc_bitcoin::{
    bitcoin::{psbt::Psbt, Amount},
    build::{build_psbt, synthetic_funding, Payment, SpendableOutput},
    Chain, Scheme, WalletKey,
};
use serde::Serialize;

/// The note printed with every synthetic transaction.
pub const SYNTHETIC_NOTE: &str = "SYNTHETIC funding: the spent outputs belong to made-up \
     transactions that exist on no chain; this regtest transaction demonstrates signing and \
     cannot be broadcast.";

#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub network: String,
    pub threshold: u16,
    pub parties: u16,
    /// As each mode names them: party indices in the one-process demo, node ids on a devnet.
    pub signers: Vec<u16>,
    pub note: &'static str,
    pub wallets: Vec<WalletReport>,
    pub transaction: TransactionReport,
    pub timings_ms: Vec<(String, f64)>,
    /// devnet only: where the nodes' APIs listen and how to reach them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct WalletReport {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<mpc_types::WalletId>,
    pub scheme: Scheme,
    pub script_type: &'static str,
    pub master_key: String,
    pub xpub: String,
    pub first_receive_address: String,
    pub receive_descriptor: String,
    pub change_descriptor: String,
}

#[derive(Debug, Serialize)]
pub struct TransactionReport {
    pub txid: String,
    pub signed_psbt: String,
    pub raw_transaction: String,
    pub inputs: Vec<InputReport>,
    pub verified_by: &'static str,
}

#[derive(Debug, Serialize)]
pub struct InputReport {
    pub input: usize,
    pub scheme: Scheme,
    pub path: String,
    pub sighash: String,
    pub method: String,
    pub amount_sats: u64,
}

pub const VERIFIED_BY: &str =
    "libsecp256k1 (each signature) and bitcoinconsensus 26.0 with spent outputs";

impl WalletReport {
    pub fn new(id: Option<mpc_types::WalletId>, w: &WalletKey) -> Result<Self> {
        Ok(Self {
            id,
            scheme: w.scheme,
            script_type: w.scheme.script_type(),
            master_key: w.master_key.to_string(),
            xpub: w.xpub()?.to_string(),
            first_receive_address: w.chain_address(Chain::Receive, 0)?.to_string(),
            receive_descriptor: w.descriptor(Chain::Receive)?.to_string(),
            change_descriptor: w.descriptor(Chain::Change)?.to_string(),
        })
    }
}

/// The demo transaction: SYNTHETIC outputs of each wallet at m/0/0, spent to the Taproot
/// wallet's m/0/1 with change to the ECDSA wallet's m/1/0.
pub fn synthetic_spend(
    ecdsa: &WalletKey,
    taproot: &WalletKey,
) -> Result<(Psbt, Vec<SpendableOutput>)> {
    let receive0 = Chain::Receive.path(0)?;
    let inputs = vec![
        synthetic_funding(ecdsa, &receive0, Amount::from_sat(120_000), "demo ecdsa")?,
        synthetic_funding(taproot, &receive0, Amount::from_sat(80_000), "demo taproot")?,
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
    Ok((build_psbt(&inputs, &payments)?, inputs))
}

pub fn print_human(r: &Report) {
    println!(
        "mpc-wallet {}: {}-of-{} on {} (signers {:?})\n",
        r.mode, r.threshold, r.parties, r.network, r.signers
    );
    if let Some(cluster) = &r.cluster {
        println!(
            "cluster {}\n",
            serde_json::to_string_pretty(cluster).unwrap_or_default()
        );
    }
    for w in &r.wallets {
        println!("{} wallet ({})", w.scheme, w.script_type);
        if let Some(id) = &w.id {
            println!("  id                 {id}");
        }
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
        println!("  {phase:<44} {ms:>10.1} ms");
    }
}
