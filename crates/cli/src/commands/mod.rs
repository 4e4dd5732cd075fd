//! The CLI's API commands: `wallet`, `utxo`, `sign`, `send`, `pool`, `cluster`, `requests`,
//! `approve`, `reject` (all through a node's REST API), `token issue` and `approver keygen`
//! (offline). `--json` prints the API's JSON; otherwise
//! tables. The node URL and token come from `--url`/`--token` or `MPC_WALLET_URL` /
//! `MPC_WALLET_TOKEN`.

use std::{io::Read, path::Path};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::client::{ApiClient, ClientError};

mod approvals;
mod cluster;
mod pool;
mod send;
mod sign;
mod token;
mod utxo;
mod wallet;

pub use approvals::{approver, decide, requests, ApproverCommand, RequestsCommand};
pub use cluster::{cluster, ClusterCommand};
pub use pool::{pool, PoolCommand};
pub use send::{send, SendArgs};
pub use sign::{sign, SignArgs};
pub use token::{parse_ttl, token, TokenCommand};
pub use utxo::{utxo, UtxoCommand};
pub use wallet::{wallet, WalletCommand};

/// Where the API is and who is calling.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Node API URL, e.g. http://127.0.0.1:8101.
    #[arg(long, env = "MPC_WALLET_URL", global = true)]
    pub url: Option<String>,
    /// Bearer token (`mpc-wallet token issue`).
    #[arg(long, env = "MPC_WALLET_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Conn {
    fn client(&self) -> Result<ApiClient> {
        let url = self
            .url
            .as_deref()
            .context("no node URL: pass --url or set MPC_WALLET_URL")?;
        Ok(ApiClient::new(url, self.token.clone()))
    }
}

/// Prints `value` as JSON, or runs `human` for people.
fn output(conn: &Conn, value: &Value, human: impl FnOnce(&Value)) -> Result<()> {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human(value);
    }
    Ok(())
}

/// A plain text table with left-aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    out.push(line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    ));
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// The `id` of a wallet as the API lists it, decoded.
pub fn wallet_id_of(wallet: &Value) -> Result<mpc_types::WalletId> {
    let id = wallet["id"]
        .as_str()
        .context("a wallet in the API's answer has no id")?;
    id.parse()
        .with_context(|| format!("wallet id {id:?} in the API's answer"))
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn print_sign_report(r: &Value) {
    if r.get("request_id").is_some() {
        return approvals::print_pending(r);
    }
    println!("txid      {}", s(&r["txid"]));
    println!("signers   {}", s(&r["signers"]));
    println!(
        "duration  {:.1} ms (inside the cluster)",
        r["duration_ms"].as_f64().unwrap_or(0.0)
    );
    if let Some(spend) = r.get("spend") {
        println!(
            "paid      {} sats to {} (fee {} sats, {:.2} sat/vB)",
            s(&spend["amount_sats"]),
            s(&spend["recipient"]),
            s(&spend["fee_sats"]),
            spend["fee_rate_sat_vb"].as_f64().unwrap_or(0.0)
        );
        if let Some(change) = spend["change"].as_object() {
            println!(
                "change    {} sats to {} ({})",
                s(&change["amount_sats"]),
                s(&change["address"]),
                s(&change["path"])
            );
        }
    }
    let rows: Vec<Vec<String>> = r["inputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    vec![
                        s(&i["input"]),
                        s(&i["wallet_id"]),
                        s(&i["path"]),
                        s(&i["method"]),
                        s(&i["sighash"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    println!(
        "{}",
        table(&["input", "wallet", "path", "method", "sighash"], &rows)
    );
    println!("raw transaction\n{}", s(&r["raw_transaction"]));
}

/// A file's bytes, or standard input's for `-`.
fn read_input(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_end(&mut bytes)?;
    } else {
        bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(bytes)
}

/// Runs an API command on a fresh runtime. In `--json` mode an API error is printed as the
/// API's error object on stdout (scripts read its code) and the process exits with 1.
pub fn run_api(json: bool, command: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    let result = tokio::runtime::Runtime::new()?.block_on(command);
    if let Err(e) = &result {
        if json && print_json_error(e) {
            std::process::exit(1);
        }
    }
    result
}

/// An API error in `--json` mode: the API's error object on stdout, so scripts can read its
/// code. Returns whether it was printed.
pub fn print_json_error(err: &anyhow::Error) -> bool {
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Api {
            status,
            code,
            message,
            details,
            ..
        }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "error": {"status": status, "code": code, "message": message, "details": details}
                }))
                .unwrap_or_default()
            );
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["a", "long"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    long\n---  ----\nxyz  1");
    }
}
