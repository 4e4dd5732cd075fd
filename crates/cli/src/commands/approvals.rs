//! Human approvals: `mpc-wallet approver keygen` (an Ed25519 key pair, offline),
//! `mpc-wallet requests list|show`, and `mpc-wallet approve|reject REQUEST --key FILE`, which
//! build the signed message themselves from the request's PSBT (never from the node's
//! summary of it) and post the signature.

use std::{io::Write, path::Path};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use ed25519_dalek::{Signer, SigningKey};
use mpc_api::approvals::DecisionBody;
use mpc_bitcoin::{
    approval::{approval_message, Decision},
    psbt::parse_psbt,
};
use rand::RngCore;
use serde_json::Value;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{output, s, table, Conn};

#[derive(Subcommand, Debug)]
pub enum ApproverCommand {
    /// Make an approver's Ed25519 key pair: the secret key goes to OUT (hex, mode 0600, never
    /// overwritten), the public key is printed for the nodes' `[[policy.approvals.approvers]]`.
    Keygen {
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum RequestsCommand {
    /// Requests that wait (or waited) for approvals, newest first.
    List {
        /// pending, signing, signed, rejected, expired or failed.
        #[arg(long)]
        state: Option<String>,
    },
    /// One request: its transaction, decisions and result.
    Show { request: Uuid },
}

/// `approver keygen --out FILE`
pub fn approver(command: &ApproverCommand) -> Result<()> {
    let ApproverCommand::Keygen { out } = command;
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(secret.as_mut());
    let key = SigningKey::from_bytes(&secret);
    let mut file = crate::backup::create_private_file(out)?;
    let text = Zeroizing::new(hex::encode(&secret[..]));
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}", hex::encode(key.verifying_key().as_bytes()));
    Ok(())
}

/// The approver's key from its file (hex, as `approver keygen` writes it).
fn read_key(path: &Path) -> Result<SigningKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let mut secret = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), secret.as_mut())
        .with_context(|| format!("{} does not hold a 32-byte hex key", path.display()))?;
    Ok(SigningKey::from_bytes(&secret))
}

fn print_request(r: &Value) {
    println!("request   {}", s(&r["request_id"]));
    println!("state     {}", s(&r["state"]));
    println!("wallets   {}", s(&r["wallet_ids"]));
    println!("txid      {}", s(&r["txid"]));
    println!("fee       {} sats", s(&r["fee_sats"]));
    println!("expires   {} (ms since the epoch)", s(&r["expires_at_ms"]));
    println!("approvals needed: {}", s(&r["required"]));
    let outputs: Vec<Vec<String>> = r["outputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, o)| vec![i.to_string(), s(&o["amount_sats"]), s(&o["script_pubkey"])])
                .collect()
        })
        .unwrap_or_default();
    println!("{}", table(&["output", "sats", "script"], &outputs));
    let decisions: Vec<Vec<String>> = r["decisions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| vec![s(&d["approver"]), s(&d["decision"]), s(&d["at_ms"])])
                .collect()
        })
        .unwrap_or_default();
    if !decisions.is_empty() {
        println!("{}", table(&["approver", "decision", "at_ms"], &decisions));
    }
    if let Some(error) = r["error"].as_str() {
        println!("error     {error}");
    }
    if let Some(txid) = r["signed"]["txid"].as_str() {
        println!("signed    {txid}");
        println!("raw transaction\n{}", s(&r["signed"]["raw_transaction"]));
    }
}

/// Prints a pending request (the 202 answer of `sign` and `send`).
pub(super) fn print_pending(r: &Value) {
    println!(
        "waiting for approvals: mpc-wallet approve {} --key FILE",
        s(&r["request_id"])
    );
    print_request(r);
}

/// `requests ...`
pub async fn requests(conn: &Conn, command: &RequestsCommand) -> Result<()> {
    let api = conn.client()?;
    match command {
        RequestsCommand::List { state } => {
            let path = match state {
                Some(state) => format!("/api/v1/requests?state={state}"),
                None => "/api/v1/requests".into(),
            };
            let list: Value = api.get(&path).await?;
            output(conn, &list, |v| {
                let rows: Vec<Vec<String>> = v["requests"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|r| {
                                let approved = r["decisions"]
                                    .as_array()
                                    .map(|d| {
                                        d.iter().filter(|d| d["decision"] == "approve").count()
                                    })
                                    .unwrap_or(0);
                                vec![
                                    s(&r["request_id"]),
                                    s(&r["state"]),
                                    format!("{approved}/{}", s(&r["required"])),
                                    s(&r["wallet_ids"]),
                                    s(&r["txid"]),
                                    s(&r["expires_at_ms"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{}",
                    table(
                        &[
                            "request",
                            "state",
                            "approvals",
                            "wallets",
                            "txid",
                            "expires_at_ms"
                        ],
                        &rows
                    )
                );
            })
        }
        RequestsCommand::Show { request } => {
            let r: Value = api.get(&format!("/api/v1/requests/{request}")).await?;
            output(conn, &r, print_request)
        }
    }
}

/// `approve REQUEST --key FILE` and `reject REQUEST --key FILE`.
pub async fn decide(conn: &Conn, request: Uuid, key: &Path, decision: Decision) -> Result<()> {
    let api = conn.client()?;
    let key = read_key(key)?;
    let r: Value = api.get(&format!("/api/v1/requests/{request}")).await?;
    let psbt = parse_psbt(r["psbt"].as_str().unwrap_or_default())
        .context("the request's PSBT does not parse")?;
    let wallet_ids: Vec<mpc_types::WalletId> =
        serde_json::from_value(r["wallet_ids"].clone()).context("the request's wallet ids")?;
    let Some(expires_at_ms) = r["expires_at_ms"].as_i64() else {
        bail!("the request has no expiry");
    };
    // What is signed comes from the PSBT itself, this request id and the expiry shown.
    let message = approval_message(&psbt, &wallet_ids, request, expires_at_ms, decision)?;
    if !conn.json {
        println!(
            "{} request {request}: txid {}, {} outputs, fee {} sats, expires {expires_at_ms}",
            decision.as_str(),
            psbt.unsigned_tx.compute_txid(),
            psbt.unsigned_tx.output.len(),
            s(&r["fee_sats"]),
        );
    }
    let body = DecisionBody {
        public_key: hex::encode(key.verifying_key().as_bytes()),
        signature: hex::encode(key.sign(&message).to_bytes()),
    };
    let route = match decision {
        Decision::Approve => "approvals",
        Decision::Reject => "rejections",
    };
    let answer: Value = api
        .post(&format!("/api/v1/requests/{request}/{route}"), &body)
        .await?;
    output(conn, &answer, print_request)
}
