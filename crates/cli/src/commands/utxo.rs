//! `mpc-wallet utxo`: register outputs the wallet received (with their funding transactions) and list them.

use mpc_types::WalletId;
use std::path::Path;

use anyhow::{Context, Result};
use clap::Subcommand;
use mpc_api::payments::{RegisterUtxosRequest, UtxoEntry};
use serde_json::Value;

use super::{output, read_input, s, table, Conn};

#[derive(Subcommand, Debug)]
pub enum UtxoCommand {
    /// Register a funding output of a wallet.
    Add {
        wallet: WalletId,
        /// txid:vout
        #[arg(long)]
        outpoint: String,
        /// Amount in satoshis (taken from --funding-transaction when given; required without).
        #[arg(long)]
        amount: Option<u64>,
        /// The wallet's path that receives it, e.g. m/0/0.
        #[arg(long)]
        path: String,
        /// The transaction that created the output, hex (or a file holding it; `-` reads
        /// standard input). Required for P2WPKH wallets: every signer checks the amount
        /// against it.
        #[arg(long)]
        funding_transaction: Option<String>,
    },
    /// A wallet's registered outputs.
    List {
        wallet: WalletId,
        /// Include spent outputs.
        #[arg(long)]
        all: bool,
    },
}

/// `utxo ...`
pub async fn utxo(conn: &Conn, command: &UtxoCommand) -> Result<()> {
    let api = conn.client()?;
    let print_list = |v: &Value| {
        let list = v.get("utxos").unwrap_or(v);
        let rows: Vec<Vec<String>> = list
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|u| {
                        vec![
                            s(&u["outpoint"]),
                            s(&u["amount_sats"]),
                            s(&u["path"]),
                            s(&u["state"]),
                            s(&u["origin"]),
                            s(&u["address"]),
                        ]
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{}",
            table(
                &["outpoint", "sats", "path", "state", "origin", "address"],
                &rows
            )
        );
        if let Some(available) = v.get("available_sats") {
            println!(
                "available {} sats; next change {} ({})",
                s(available),
                s(&v["next_change_address"]),
                s(&v["next_change_index"])
            );
        }
    };
    match command {
        UtxoCommand::Add {
            wallet,
            outpoint,
            amount,
            path,
            funding_transaction,
        } => {
            let funding_transaction = funding_transaction
                .as_deref()
                .map(read_hex_argument)
                .transpose()?;
            let request = RegisterUtxosRequest {
                utxos: vec![UtxoEntry {
                    outpoint: outpoint.clone(),
                    amount_sats: *amount,
                    path: path.clone(),
                    funding_transaction,
                }],
            };
            let added = serde_json::to_value(api.register_utxos(wallet, &request).await?)?;
            output(conn, &added, print_list)
        }
        UtxoCommand::List { wallet, all } => {
            let list = serde_json::to_value(api.utxos(wallet, *all).await?)?;
            output(conn, &list, print_list)
        }
    }
}

/// A hex argument given inline, or as a file holding it (`-` for standard input).
fn read_hex_argument(argument: &str) -> Result<String> {
    let text = if hex::decode(argument.trim()).is_ok() {
        argument.to_owned()
    } else {
        String::from_utf8(read_input(Path::new(argument))?)
            .with_context(|| format!("{argument} does not hold hex text"))?
    };
    let text = text.trim().to_owned();
    hex::decode(&text).with_context(|| format!("{argument} is neither hex nor a file of hex"))?;
    Ok(text)
}
