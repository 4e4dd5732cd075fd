//! `mpc-wallet wallet`: create (key generation, with progress), refresh, list, show, address,
//! descriptor.

use anyhow::Result;
use clap::Subcommand;
use mpc_api::routes::KeygenRequest;
use mpc_types::WalletId;
use serde_json::Value;

use super::{output, s, table, Conn};
use crate::progress::spinner;

#[derive(Subcommand, Debug)]
pub enum WalletCommand {
    /// Create a wallet (distributed key generation); waits for the ceremony.
    Create {
        /// `cggmp24` (threshold ECDSA, P2WPKH) or `frost` (Schnorr, P2TR); `--protocol` is
        /// its former name.
        #[arg(long, alias = "protocol", default_value = "frost")]
        scheme: mpc_bitcoin::Scheme,
        #[arg(long)]
        name: String,
        #[arg(long)]
        threshold: Option<u16>,
        /// Node ids, comma-separated (default: every node).
        #[arg(long, value_delimiter = ',')]
        participants: Vec<mpc_types::NodeId>,
        /// mainnet, testnet, signet or regtest (default: the cluster's).
        #[arg(long)]
        network: Option<mpc_bitcoin::Network>,
    },
    /// Refresh a wallet's key shares on every participant (same key, xpub, addresses and
    /// descriptors; new shares); waits for the ceremony. An ECDSA wallet also gets new aux
    /// info (fresh Paillier keys) for its node set, shared with the set's other ECDSA wallets.
    Refresh { wallet: WalletId },
    /// Every wallet of the node.
    List,
    /// One wallet: keys, xpub, first address, descriptors.
    Show { wallet: WalletId },
    /// HD addresses.
    Address {
        wallet: WalletId,
        /// receive (m/0/i) or change (m/1/i).
        #[arg(long, default_value = "receive")]
        chain: String,
        #[arg(long, default_value_t = 0)]
        from: u32,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Watch-only descriptors.
    Descriptor { wallet: WalletId },
}

fn print_wallet(w: &Value) {
    let rows: Vec<Vec<String>> = [
        "id",
        "name",
        "scheme",
        "script_type",
        "network",
        "state",
        "threshold",
        "participants",
        "public_key",
        "xpub",
        "fingerprint",
        "first_address",
        "receive_descriptor",
        "change_descriptor",
    ]
    .iter()
    .map(|k| vec![k.to_string(), s(&w[*k])])
    .collect();
    println!("{}", table(&["field", "value"], &rows));
}

/// `wallet ...`
pub async fn wallet(conn: &Conn, command: &WalletCommand) -> Result<()> {
    let api = conn.client()?;
    match command {
        WalletCommand::Create {
            scheme,
            name,
            threshold,
            participants,
            network,
        } => {
            let request = KeygenRequest {
                scheme: *scheme,
                name: name.clone(),
                threshold: *threshold,
                participants: (!participants.is_empty()).then(|| participants.clone()),
                network: *network,
            };
            let bar = (!conn.json).then(|| spinner(&format!("key generation ({scheme})")));
            let result = api.keygen(&request, bar.as_ref()).await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            output(conn, &result?, print_wallet)
        }
        WalletCommand::Refresh { wallet } => {
            let bar = (!conn.json).then(|| spinner("key refresh"));
            let result = api.refresh(wallet, bar.as_ref()).await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            output(conn, &result?, |r| {
                let rows: Vec<Vec<String>> =
                    ["wallet_id", "key_epoch", "public_key", "duration_ms"]
                        .iter()
                        .map(|k| vec![k.to_string(), s(&r[*k])])
                        .collect();
                println!("{}", table(&["field", "value"], &rows));
            })
        }
        WalletCommand::List => {
            let wallets = api.wallets().await?;
            output(conn, &wallets, |w| {
                let rows: Vec<Vec<String>> = w
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|w| {
                                vec![
                                    s(&w["id"]),
                                    s(&w["name"]),
                                    s(&w["scheme"]),
                                    s(&w["network"]),
                                    format!(
                                        "{}-of-{}",
                                        s(&w["threshold"]),
                                        w["participants"].as_array().map_or(0, Vec::len)
                                    ),
                                    s(&w["state"]),
                                    s(&w["first_address"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{}",
                    table(
                        &[
                            "id",
                            "name",
                            "scheme",
                            "network",
                            "threshold",
                            "state",
                            "first address"
                        ],
                        &rows
                    )
                );
            })
        }
        WalletCommand::Show { wallet } => {
            let w = api.wallet(wallet).await?;
            output(conn, &w, print_wallet)
        }
        WalletCommand::Address {
            wallet,
            chain,
            from,
            count,
        } => {
            let a = serde_json::to_value(api.addresses(wallet, chain, *from, *count).await?)?;
            output(conn, &a, |a| {
                let rows: Vec<Vec<String>> = a
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| vec![s(&e["index"]), s(&e["path"]), s(&e["address"])])
                            .collect()
                    })
                    .unwrap_or_default();
                println!("{}", table(&["index", "path", "address"], &rows));
            })
        }
        WalletCommand::Descriptor { wallet } => {
            let d = serde_json::to_value(api.descriptor(wallet).await?)?;
            output(conn, &d, |d| {
                println!("receive  {}", s(&d["receive"]));
                println!("change   {}", s(&d["change"]));
            })
        }
    }
}
