//! `mpc-wallet wallet`: create (key generation, with progress), refresh, reshare, repair, list,
//! show, address, descriptor.

use anyhow::Result;
use clap::Subcommand;
use mpc_api::routes::{KeygenRequest, RepairRequest, ReshareRequest};
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
    /// Reshare a wallet's key to another committee or threshold (same key, xpub, addresses
    /// and descriptors; new shares); waits for the ceremony. Nodes that leave and deal delete
    /// their shares. An ECDSA wallet needs aux info for the new committee first.
    Reshare {
        wallet: WalletId,
        /// Node ids of the new committee, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        participants: Vec<mpc_types::NodeId>,
        #[arg(long)]
        threshold: u16,
    },
    /// Repair a node's lost share of a wallet: the other nodes deal it a new one (every share
    /// changes; the key is never reconstructed); waits for the ceremony.
    Repair {
        wallet: WalletId,
        #[arg(long)]
        node: mpc_types::NodeId,
    },
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

/// `fields` of `r`, a row each.
fn print_fields(r: &Value, fields: &[&str]) {
    let rows: Vec<Vec<String>> = fields
        .iter()
        .map(|k| vec![k.to_string(), s(&r[*k])])
        .collect();
    println!("{}", table(&["field", "value"], &rows));
}

fn print_reshared(r: &Value) {
    print_fields(
        r,
        &[
            "wallet_id",
            "key_epoch",
            "participants",
            "threshold",
            "dealers",
            "public_key",
            "not_reached",
            "duration_ms",
        ],
    )
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
                print_fields(r, &["wallet_id", "key_epoch", "public_key", "duration_ms"])
            })
        }
        WalletCommand::Reshare {
            wallet,
            participants,
            threshold,
        } => {
            let request = ReshareRequest {
                participants: participants.clone(),
                threshold: *threshold,
            };
            let bar = (!conn.json).then(|| spinner("resharing"));
            let result = api.reshare(wallet, &request, bar.as_ref()).await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            output(conn, &result?, print_reshared)
        }
        WalletCommand::Repair { wallet, node } => {
            let bar = (!conn.json).then(|| spinner(&format!("repair of node {node}")));
            let result = api
                .repair(wallet, &RepairRequest { node: *node }, bar.as_ref())
                .await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            output(conn, &result?, print_reshared)
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
