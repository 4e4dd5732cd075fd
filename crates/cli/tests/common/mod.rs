//! What the process tests share: Prometheus text, the CLI runner, the registration of
//! synthetic funding (`mpc_testkit::fund`), the independent check of a payment, and running futures together.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine;
use mpc_api::payments::{RegisterUtxosRequest, UtxoEntry};
use mpc_bitcoin::{
    bitcoin::{consensus, Address, OutPoint, Transaction, TxOut},
    build::SpendableOutput,
    verify::verify_transaction,
    Chain, WalletKey,
};
use mpc_wallet::client::ApiClient;
use serde_json::Value;

// ---- Prometheus text --------------------------------------------------------------------

pub struct Metrics {
    pub text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => panic!("bad metrics line {line:?}"),
            };
            let mut labels = BTreeMap::new();
            let value_text = if let Some(rest) = rest.strip_prefix('{') {
                // key="value" pairs; values may contain commas and escaped quotes.
                let mut chars = rest.char_indices();
                let mut end = None;
                loop {
                    let mut key = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '=')) => break,
                            Some((i, '}')) if key.is_empty() => {
                                end = Some(i);
                                break;
                            }
                            Some((_, ',')) if key.is_empty() => {}
                            Some((_, c)) => key.push(c),
                            None => panic!("bad labels in {line:?}"),
                        }
                    }
                    if key.is_empty() {
                        break;
                    }
                    assert_eq!(chars.next().map(|c| c.1), Some('"'), "{line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, c)) => value.push(c),
                                None => panic!("{line:?}"),
                            },
                            Some((_, '"')) => break,
                            Some((_, c)) => value.push(c),
                            None => panic!("unterminated label in {line:?}"),
                        }
                    }
                    labels.insert(key, value);
                }
                let end = end.unwrap_or_else(|| panic!("unterminated labels in {line:?}"));
                &rest[end + 1..]
            } else {
                rest
            };
            let value: f64 = value_text
                .split_whitespace()
                .next()
                .unwrap_or_else(|| panic!("no value in {line:?}"))
                .parse()
                .unwrap_or_else(|e| panic!("{line:?}: {e}"));
            samples.push((name.to_string(), labels, value));
        }
        Self {
            text: text.to_string(),
            samples,
        }
    }

    /// The samples of `name` whose labels include `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| (l, *v))
    }

    /// The sum of the samples of `name` whose labels include `labels` (0 if none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).map(|(_, v)| v).sum()
    }

    pub fn has_type(&self, name: &str, kind: &str) -> bool {
        self.text
            .lines()
            .any(|l| l == format!("# TYPE {name} {kind}"))
    }
}

// ---- funding ----------------------------------------------------------------------------

/// The registration of `outputs` with their funding transactions.
pub fn registration(outputs: &[SpendableOutput]) -> RegisterUtxosRequest {
    RegisterUtxosRequest {
        utxos: outputs
            .iter()
            .map(|o| UtxoEntry {
                outpoint: o.outpoint.to_string(),
                amount_sats: Some(o.txout.value.to_sat()),
                path: o.path.to_string(),
                funding_transaction: o
                    .funding_transaction
                    .as_ref()
                    .map(consensus::encode::serialize_hex),
            })
            .collect(),
    }
}

/// Checks a `/transactions` answer independently of the node: the raw transaction against
/// the outputs this test funded (bitcoinconsensus), the payment, the fee and the change,
/// which must pay the wallet's own change address as the API lists it.
#[allow(clippy::too_many_arguments)]
pub async fn check_payment(
    viewer: &ApiClient,
    wallet_id: &mpc_types::WalletId,
    key: &WalletKey,
    funded: &[SpendableOutput],
    recipient: &Address,
    amount: u64,
    expected_change_index: u64,
    answer: &Value,
) -> Transaction {
    let tx: Transaction =
        consensus::encode::deserialize_hex(answer["raw_transaction"].as_str().unwrap()).unwrap();
    assert_eq!(answer["txid"], tx.compute_txid().to_string());
    let by_outpoint: HashMap<OutPoint, &TxOut> =
        funded.iter().map(|o| (o.outpoint, &o.txout)).collect();
    let spent: Vec<TxOut> = tx
        .input
        .iter()
        .map(|i| {
            (*by_outpoint
                .get(&i.previous_output)
                .unwrap_or_else(|| panic!("{} was not funded by the test", i.previous_output)))
            .clone()
        })
        .collect();
    verify_transaction(&tx, &spent).expect("bitcoinconsensus rejects the payment");
    let spend = &answer["spend"];
    let inputs: BTreeSet<String> = tx
        .input
        .iter()
        .map(|i| i.previous_output.to_string())
        .collect();
    let listed: BTreeSet<String> = spend["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert_eq!(inputs, listed);
    let in_sats: u64 = spent.iter().map(|o| o.value.to_sat()).sum();
    let out_sats: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    assert_eq!(spend["inputs_sats"], in_sats);
    assert_eq!(spend["fee_sats"], in_sats - out_sats);
    assert_eq!(spend["amount_sats"], amount);
    let pay: Vec<&TxOut> = tx
        .output
        .iter()
        .filter(|o| o.script_pubkey == recipient.script_pubkey())
        .collect();
    assert_eq!(pay.len(), 1, "one output pays the recipient");
    assert_eq!(pay[0].value.to_sat(), amount);

    let change = &spend["change"];
    assert!(change.is_object(), "a payment with change: {spend}");
    let index = change["index"].as_u64().unwrap();
    assert_eq!(index, expected_change_index);
    assert_eq!(change["path"], format!("m/1/{index}"));
    let listed = viewer
        .addresses(wallet_id, "change", index as u32, 1)
        .await
        .expect("change address");
    assert_eq!(change["address"], listed[0].address.as_str());
    assert_eq!(change["path"], listed[0].path.as_str());
    let own = key.chain_address(Chain::Change, index as u32).unwrap();
    assert_eq!(change["address"], own.to_string());
    let vout = change["vout"].as_u64().unwrap() as usize;
    assert_eq!(tx.output[vout].script_pubkey, own.script_pubkey());
    assert_eq!(change["amount_sats"], tx.output[vout].value.to_sat());
    assert_eq!(tx.output.len(), 2);
    // The fee pays the requested 2 sat/vB on the signed transaction's real size.
    let rate = (in_sats - out_sats) as f64 / tx.vsize() as f64;
    assert!((1.95..=2.6).contains(&rate), "fee rate {rate} sat/vB");
    tx
}

// ---- local processes -------------------------------------------------------------------

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

// ---- the CLI ----------------------------------------------------------------------------

/// Runs the `mpc-wallet` binary with `args` and only `env` of its variables: exit code,
/// stdout, stderr.
pub async fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mpc-wallet"))
        .args(args)
        .env_remove("MPC_WALLET_URL")
        .env_remove("MPC_WALLET_TOKEN")
        .env_remove("JWT_SECRET")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON a successful CLI run printed.
pub fn cli_json(what: &str, (code, stdout, stderr): &(i32, String, String)) -> Value {
    assert_eq!(*code, 0, "{what}: stderr: {stderr}\nstdout: {stdout}");
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"))
}

/// The claims of a compact JWT.
pub fn decode_claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// Runs the futures concurrently and returns their outputs in order.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future finished"))
        .collect()
}
