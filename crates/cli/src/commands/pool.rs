//! `mpc-wallet pool stats`: the presignature pool's levels and targets.

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use super::{output, s, table, Conn};

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Presignature pool levels and statistics per wallet and signer set.
    Stats,
}

/// `pool stats`
pub async fn pool(conn: &Conn, command: &PoolCommand) -> Result<()> {
    let api = conn.client()?;
    match command {
        PoolCommand::Stats => {
            let stats = api.presignature_stats().await?;
            output(conn, &stats, |v| {
                let wallets = v
                    .get("wallets")
                    .and_then(Value::as_array)
                    .or_else(|| v.as_array())
                    .cloned()
                    .unwrap_or_default();
                let mut rows = Vec::new();
                for w in &wallets {
                    let levels = w["levels"].as_array().cloned().unwrap_or_default();
                    if levels.is_empty() {
                        rows.push(vec![
                            s(&w["wallet_id"]),
                            "-".into(),
                            "-".into(),
                            "0".into(),
                            "0".into(),
                            s(&w["target"]),
                        ]);
                    }
                    for l in levels {
                        rows.push(vec![
                            s(&w["wallet_id"]),
                            s(&l["path"]),
                            s(&l["signers"]),
                            s(&l["ready"]),
                            s(&l["consumed"]),
                            s(&w["target"]),
                        ]);
                    }
                }
                println!(
                    "{}",
                    table(
                        &["wallet", "path", "signers", "ready", "consumed", "target"],
                        &rows
                    )
                );
            })
        }
    }
}
