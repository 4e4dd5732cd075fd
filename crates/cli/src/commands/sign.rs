//! `mpc-wallet sign`: a PSBT file signed by the cluster; the wallets are found from its inputs.

use mpc_types::WalletId;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use mpc_api::routes::SignRequest;
use mpc_bitcoin::psbt::parse_psbt;

use crate::client::ApiClient;

use super::{output, print_sign_report, read_input, s, wallet_id_of, Conn};

#[derive(Args, Debug)]
pub struct SignArgs {
    /// PSBT file: base64 text or binary; `-` reads standard input.
    #[arg(long)]
    pub psbt: PathBuf,
    /// The wallet (default: every wallet of the node whose fingerprint the PSBT's inputs
    /// carry).
    #[arg(long)]
    pub wallet: Option<WalletId>,
    /// Also write the signed PSBT (base64) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Reads a PSBT file (base64 text or BIP-174 binary; `-` for stdin) as base64.
fn read_psbt(path: &Path) -> Result<String> {
    let bytes = read_input(path)?;
    if bytes.starts_with(b"psbt\xff") {
        let psbt = mpc_bitcoin::bitcoin::psbt::Psbt::deserialize(&bytes)
            .context("the file is not a valid binary PSBT")?;
        return Ok(psbt.to_string());
    }
    let text = String::from_utf8(bytes).context("the PSBT file is neither base64 nor binary")?;
    let text = text.trim().to_string();
    parse_psbt(&text).context("the file is not a valid base64 PSBT")?;
    Ok(text)
}

/// The node's wallets whose master fingerprints the PSBT's inputs carry.
async fn wallets_of(api: &ApiClient, psbt: &str) -> Result<Vec<WalletId>> {
    let psbt = parse_psbt(psbt)?;
    let mut fingerprints = std::collections::HashSet::new();
    for input in &psbt.inputs {
        for (fp, _) in input.bip32_derivation.values() {
            fingerprints.insert(fp.to_string());
        }
        for (_, (fp, _)) in input.tap_key_origins.values() {
            fingerprints.insert(fp.to_string());
        }
    }
    let wallets = api.wallets().await?;
    let ids = wallets
        .as_array()
        .context("the node's wallet list is not a list")?
        .iter()
        .filter(|w| w["state"] == "active")
        .filter(|w| {
            w["fingerprint"]
                .as_str()
                .is_some_and(|f| fingerprints.contains(f))
        })
        .map(wallet_id_of)
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        bail!("no wallet of this node appears in the PSBT's derivation records; pass --wallet");
    }
    Ok(ids)
}

/// `sign --psbt FILE`
pub async fn sign(conn: &Conn, args: &SignArgs) -> Result<()> {
    let api = conn.client()?;
    let psbt = read_psbt(&args.psbt)?;
    let wallets = match &args.wallet {
        Some(w) => vec![w.clone()],
        None => wallets_of(&api, &psbt).await?,
    };
    let (first, rest) = wallets.split_first().context("no wallet")?;
    let signed = api
        .sign_psbt(
            first,
            &SignRequest {
                psbt,
                additional_wallets: rest.to_vec(),
            },
        )
        .await?;
    if let Some(out) = &args.out {
        std::fs::write(out, s(&signed["psbt"]))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    output(conn, &signed, print_sign_report)
}
