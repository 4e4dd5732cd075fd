//! The CLI's API commands: `wallet`, `utxo`, `sign`, `send`, `pool`, `cluster` (all through
//! a node's REST API) and `token issue` (offline). `--json` prints the API's JSON; otherwise
//! tables. The node URL and token come from `--url`/`--token` or `MPC_WALLET_URL` /
//! `MPC_WALLET_TOKEN`.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use mpc_api::auth::{self, Claims, Role};
use mpc_bitcoin::psbt::parse_psbt;
use serde_json::{json, Value};

use crate::client::{ApiClient, ClientError};

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

#[derive(Subcommand, Debug)]
pub enum WalletCommand {
    /// Create a wallet (distributed key generation); waits for the ceremony.
    Create {
        /// `cggmp24` (threshold ECDSA, P2WPKH) or `frost` (Schnorr, P2TR).
        #[arg(long, default_value = "frost")]
        protocol: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        threshold: Option<u16>,
        /// Node ids, comma-separated (default: every node).
        #[arg(long, value_delimiter = ',')]
        participants: Vec<u16>,
        /// mainnet, testnet, signet or regtest (default: the cluster's).
        #[arg(long)]
        network: Option<String>,
    },
    /// Every wallet of the node.
    List,
    /// One wallet: keys, xpub, first address, descriptors.
    Show { wallet: String },
    /// HD addresses.
    Address {
        wallet: String,
        /// receive (m/0/i) or change (m/1/i).
        #[arg(long, default_value = "receive")]
        chain: String,
        #[arg(long, default_value_t = 0)]
        from: u32,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Watch-only descriptors.
    Descriptor { wallet: String },
}

#[derive(Subcommand, Debug)]
pub enum UtxoCommand {
    /// Register a funding output of a wallet.
    Add {
        wallet: String,
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
        wallet: String,
        /// Include spent outputs.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// PSBT file: base64 text or binary; `-` reads standard input.
    #[arg(long)]
    pub psbt: PathBuf,
    /// The wallet (default: every wallet of the node whose fingerprint the PSBT's inputs
    /// carry).
    #[arg(long)]
    pub wallet: Option<String>,
    /// Also write the signed PSBT (base64) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SendArgs {
    #[arg(long)]
    pub wallet: String,
    /// Recipient address (the wallet's network).
    #[arg(long)]
    pub to: String,
    /// Amount in satoshis.
    #[arg(long)]
    pub amount: u64,
    /// Fee rate in sat/vB.
    #[arg(long, default_value_t = 2.0)]
    pub fee_rate: f64,
}

#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Presignature pool levels and statistics per wallet and signer set.
    Stats,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every node's liveness, last heartbeat and version, as this node sees them.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a token for a role (offline: signs with the cluster's secret or a private key).
    Issue {
        /// admin, signer or viewer.
        #[arg(long)]
        role: Role,
        /// Lifetime: e.g. 30m, 1h, 7d, 3600s.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// File holding the HS256 secret (at least 32 bytes); else `JWT_SECRET`.
        #[arg(long, env = "JWT_SECRET_FILE")]
        secret_file: Option<PathBuf>,
        /// Sign with this RS256 or EdDSA private key (PEM) instead of the HS256 secret.
        #[arg(long, conflicts_with = "secret_file")]
        private_key: Option<PathBuf>,
        /// Algorithm of `--private-key`: RS256 or EdDSA.
        #[arg(long, default_value = "EdDSA", requires = "private_key")]
        algorithm: String,
        #[arg(long, default_value = "operator")]
        subject: String,
        #[arg(long, default_value = "mpc-wallet")]
        issuer: String,
        #[arg(long, default_value = "mpc-wallet-api")]
        audience: String,
        /// Print {"token", "expires_at", ...} as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `1h`, `30m`, `7d`, `90s` or plain seconds.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m, h or d"))?;
    let seconds = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        other => return Err(format!("{text:?}: unknown unit {other:?} (s, m, h or d)")),
    }
    .ok_or_else(|| format!("{text:?} is too long"))?;
    if seconds == 0 {
        return Err("the lifetime must be positive".into());
    }
    Ok(Duration::from_secs(seconds))
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

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn spinner(message: &str) -> ProgressBar {
    // indicatif draws only when stderr is a terminal.
    let bar = ProgressBar::new_spinner().with_message(message.to_string());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
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

fn print_sign_report(r: &Value) {
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

/// `wallet ...`
pub async fn wallet(conn: &Conn, command: &WalletCommand) -> Result<()> {
    let api = conn.client()?;
    match command {
        WalletCommand::Create {
            protocol,
            name,
            threshold,
            participants,
            network,
        } => {
            let mut body = json!({"protocol": protocol, "name": name});
            if let Some(t) = threshold {
                body["threshold"] = json!(t);
            }
            if !participants.is_empty() {
                body["participants"] = json!(participants);
            }
            if let Some(n) = network {
                body["network"] = json!(n);
            }
            let bar = (!conn.json).then(|| spinner(&format!("key generation ({protocol})")));
            let result = api
                .ceremony("/api/v1/dkg/initiate", &body, bar.as_ref())
                .await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            output(conn, &result?, print_wallet)
        }
        WalletCommand::List => {
            let wallets: Value = api.get("/api/v1/wallets").await?;
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
            let w: Value = api.get(&format!("/api/v1/wallets/{wallet}")).await?;
            output(conn, &w, print_wallet)
        }
        WalletCommand::Address {
            wallet,
            chain,
            from,
            count,
        } => {
            let a: Value = api
                .get(&format!(
                    "/api/v1/wallets/{wallet}/addresses?chain={chain}&from={from}&count={count}"
                ))
                .await?;
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
            let d: Value = api
                .get(&format!("/api/v1/wallets/{wallet}/descriptor"))
                .await?;
            output(conn, &d, |d| {
                println!("receive  {}", s(&d["receive"]));
                println!("change   {}", s(&d["change"]));
            })
        }
    }
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
            let added: Value = api
                .post(
                    &format!("/api/v1/wallets/{wallet}/utxos"),
                    &json!({"utxos": [{
                        "outpoint": outpoint,
                        "amount_sats": amount,
                        "path": path,
                        "funding_transaction": funding_transaction,
                    }]}),
                )
                .await?;
            output(conn, &added, print_list)
        }
        UtxoCommand::List { wallet, all } => {
            let list: Value = api
                .get(&format!(
                    "/api/v1/wallets/{wallet}/utxos?include_spent={all}"
                ))
                .await?;
            output(conn, &list, print_list)
        }
    }
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
async fn wallets_of(api: &ApiClient, psbt: &str) -> Result<Vec<String>> {
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
    let wallets: Value = api.get("/api/v1/wallets").await?;
    let ids: Vec<String> = wallets
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|w| w["state"] == "active")
                .filter(|w| {
                    w["fingerprint"]
                        .as_str()
                        .is_some_and(|f| fingerprints.contains(f))
                })
                .filter_map(|w| w["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
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
    let signed: Value = api
        .post(
            &format!("/api/v1/wallets/{first}/psbt/sign"),
            &json!({"psbt": psbt, "additional_wallets": rest}),
        )
        .await?;
    if let Some(out) = &args.out {
        std::fs::write(out, s(&signed["psbt"]))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    output(conn, &signed, print_sign_report)
}

/// `send --wallet W --to ADDR --amount SATS`
pub async fn send(conn: &Conn, args: &SendArgs) -> Result<()> {
    let api = conn.client()?;
    let report: Value = api
        .post(
            "/api/v1/transactions",
            &json!({
                "wallet_id": args.wallet,
                "recipient": args.to,
                "amount_sats": args.amount,
                "fee_rate_sat_vb": args.fee_rate,
            }),
        )
        .await?;
    output(conn, &report, print_sign_report)
}

/// `pool stats`
pub async fn pool(conn: &Conn, command: &PoolCommand) -> Result<()> {
    let api = conn.client()?;
    match command {
        PoolCommand::Stats => {
            let stats: Value = api.get("/api/v1/presignatures/stats").await?;
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

/// `cluster status`
pub async fn cluster(conn: &Conn, command: &ClusterCommand) -> Result<()> {
    let api = conn.client()?;
    match command {
        ClusterCommand::Status => {
            let health: Value = api.get("/api/v1/cluster/health").await?;
            output(conn, &health, |h| {
                println!(
                    "node {} ({} {}), threshold {}, {} live",
                    s(&h["node"]),
                    s(&h["network"]),
                    s(&h["version"]),
                    s(&h["threshold"]),
                    s(&h["live"])
                );
                let now = mpc_node::now_ms();
                let rows: Vec<Vec<String>> = h["nodes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|n| {
                                vec![
                                    s(&n["node"]),
                                    if n["live"] == true { "live" } else { "DOWN" }.into(),
                                    n["last_heartbeat_ms"]
                                        .as_i64()
                                        .map(|t| format!("{} ms ago", (now - t).max(0)))
                                        .unwrap_or_else(|| "never".into()),
                                    s(&n["version"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{}",
                    table(&["node", "state", "last heartbeat", "version"], &rows)
                );
            })
        }
    }
}

/// `token issue`
pub fn token(command: &TokenCommand) -> Result<()> {
    let TokenCommand::Issue {
        role,
        ttl,
        secret_file,
        private_key,
        algorithm,
        subject,
        issuer,
        audience,
        json,
    } = command;
    let claims = Claims::new(subject, *role, issuer, audience, *ttl);
    let (token, alg) = match private_key {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            (
                auth::issue_with_private_key(algorithm, &pem, &claims)?,
                algorithm.clone(),
            )
        }
        None => {
            let secret = match secret_file {
                Some(path) => std::fs::read(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim_ascii()
                    .to_vec(),
                None => std::env::var("JWT_SECRET")
                    .map(String::into_bytes)
                    .map_err(|_| {
                        anyhow::anyhow!("no secret: pass --secret-file or set JWT_SECRET")
                    })?,
            };
            (
                auth::issue_with_secret(&secret, &claims)?,
                "HS256".to_string(),
            )
        }
    };
    if *json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "token": token,
                "role": role.as_str(),
                "subject": subject,
                "algorithm": alg,
                "issued_at": claims.iat,
                "expires_at": claims.exp,
            }))?
        );
    } else {
        println!("{token}");
    }
    Ok(())
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
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86_400));
        for bad in ["", "h", "1y", "0s", "-1h", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["a", "long"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    long\n---  ----\nxyz  1");
    }
}
