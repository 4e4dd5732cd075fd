//! Spending policy, checked by every signer on the PSBT it received, before it signs.
//!
//! Each node has its own policy in its own config, so a compromised coordinator cannot change
//! it. Change outputs count as the wallet's own only when they carry a derivation record of
//! one of the wallets and that record derives exactly the output's script; anything else
//! leaving the transaction counts as spending.

use std::collections::HashMap;

use bitcoin::{
    psbt::Psbt,
    transaction::{predict_weight, InputWeightPrediction},
    Address, ScriptBuf,
};
use serde::{Deserialize, Serialize};

use crate::{keys::from_bip32, psbt::spent_outputs, WalletKey};

/// Limits a signer enforces. Every limit is optional; the default enforces none but the
/// network.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Value leaving the wallets (payments + fee) per transaction.
    pub max_amount_per_tx_sats: Option<u64>,
    /// Value leaving each wallet over any rolling 24 hours.
    pub max_amount_per_24h_sats: Option<u64>,
    /// If set, every non-change output must pay one of these addresses.
    pub allowed_destinations: Option<Vec<String>>,
    pub max_fee_sats: Option<u64>,
    pub max_fee_rate_sat_vb: Option<f64>,
    /// Networks this node signs for (names as in the config); empty means the cluster's.
    pub networks: Vec<String>,
}

/// A refused PSBT and the rule it broke.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("policy rule {rule} refuses this transaction: {detail}")]
pub struct PolicyViolation {
    pub rule: &'static str,
    pub detail: String,
}

/// What a transaction does to the wallets, as the policy sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SpendSummary {
    pub inputs_sats: u64,
    pub change_sats: u64,
    pub payments_sats: u64,
    pub fee_sats: u64,
    /// Estimated from the finished transaction's weight.
    pub fee_rate_sat_vb: f64,
    /// Value leaving each wallet (payments + fee, split by each wallet's share of inputs).
    pub leaving_by_wallet: HashMap<usize, u64>,
}

fn violation(rule: &'static str, detail: String) -> PolicyViolation {
    PolicyViolation { rule, detail }
}

/// Whether output `index` is change: it carries a derivation record of one of `wallets` that
/// derives its script.
fn is_change(psbt: &Psbt, index: usize, wallets: &[&WalletKey]) -> bool {
    let (Some(output), Some(txout)) = (psbt.outputs.get(index), psbt.unsigned_tx.output.get(index))
    else {
        return false;
    };
    let origins = output
        .bip32_derivation
        .values()
        .chain(output.tap_key_origins.values().map(|(_, source)| source));
    for (fingerprint, path) in origins {
        for wallet in wallets {
            if wallet.fingerprint().ok().as_ref() != Some(fingerprint) {
                continue;
            }
            let Ok(path) = from_bip32(path) else { continue };
            if wallet.script_pubkey(&path).ok().as_ref() == Some(&txout.script_pubkey) {
                return true;
            }
        }
    }
    false
}

/// Summarizes `psbt` for `wallets`; `input_wallet[i]` is the wallet of input `i`.
pub fn summarize(
    psbt: &Psbt,
    wallets: &[&WalletKey],
    input_wallet: &[usize],
) -> Result<SpendSummary, PolicyViolation> {
    let spent = spent_outputs(psbt).map_err(|e| violation("inputs", format!("{e:?}")))?;
    let inputs_sats: u64 = spent.iter().map(|o| o.value.to_sat()).sum();
    let outputs_sats: u64 = psbt
        .unsigned_tx
        .output
        .iter()
        .map(|o| o.value.to_sat())
        .sum();
    let fee_sats = inputs_sats
        .checked_sub(outputs_sats)
        .ok_or_else(|| violation("fee", "outputs exceed inputs".into()))?;
    let change_sats: u64 = (0..psbt.unsigned_tx.output.len())
        .filter(|i| is_change(psbt, *i, wallets))
        .map(|i| psbt.unsigned_tx.output[i].value.to_sat())
        .sum();
    let payments_sats = outputs_sats - change_sats;
    let predictions = spent.iter().map(|o| {
        if o.script_pubkey.is_p2tr() {
            InputWeightPrediction::P2TR_KEY_NON_DEFAULT_SIGHASH
        } else {
            InputWeightPrediction::P2WPKH_MAX
        }
    });
    let weight = predict_weight(
        predictions,
        psbt.unsigned_tx
            .output
            .iter()
            .map(|o| o.script_pubkey.len()),
    );
    let vsize = weight.to_vbytes_ceil().max(1);
    let leaving = payments_sats + fee_sats;
    let mut by_wallet_inputs: HashMap<usize, u64> = HashMap::new();
    for (i, out) in spent.iter().enumerate() {
        if let Some(w) = input_wallet.get(i) {
            *by_wallet_inputs.entry(*w).or_default() += out.value.to_sat();
        }
    }
    let leaving_by_wallet = by_wallet_inputs
        .into_iter()
        .map(|(w, sats)| {
            // Share of the value leaving, by share of the inputs (u128: no overflow).
            let share =
                (u128::from(leaving) * u128::from(sats)).div_ceil(u128::from(inputs_sats.max(1)));
            (w, share as u64)
        })
        .collect();
    Ok(SpendSummary {
        inputs_sats,
        change_sats,
        payments_sats,
        fee_sats,
        fee_rate_sat_vb: fee_sats as f64 / vsize as f64,
        leaving_by_wallet,
    })
}

/// The refusal of the rolling 24-hour limit: `wallet` already sent `spent` sats, `amount`
/// more would exceed `max`.
pub fn spend_limit_violation(wallet: &str, spent: u64, amount: u64, max: u64) -> PolicyViolation {
    violation(
        "max_amount_per_24h_sats",
        format!("wallet {wallet} already sent {spent} sats in 24 h; {amount} more exceeds {max}"),
    )
}

impl Policy {
    /// Checks the summary of a PSBT. `spent_24h[w]` is what wallet `w` has already sent in
    /// the last 24 hours (as recorded by this node), where known: a wallet missing from it
    /// has only this transaction checked against the 24-hour limit. That is a pre-check; the
    /// store enforces the limit when it records the spend (`Store::begin_signing`).
    pub fn check(
        &self,
        psbt: &Psbt,
        summary: &SpendSummary,
        wallets: &[&WalletKey],
        spent_24h: &HashMap<usize, u64>,
        default_network: &str,
    ) -> Result<(), PolicyViolation> {
        let networks: Vec<&str> = if self.networks.is_empty() {
            vec![default_network]
        } else {
            self.networks.iter().map(String::as_str).collect()
        };
        for w in wallets {
            let name = crate::network_name(w.network);
            if !networks.contains(&name) {
                return Err(violation(
                    "networks",
                    format!("this node does not sign for {name}"),
                ));
            }
        }
        let leaving = summary.payments_sats + summary.fee_sats;
        if let Some(max) = self.max_amount_per_tx_sats {
            if leaving > max {
                return Err(violation(
                    "max_amount_per_tx_sats",
                    format!("{leaving} sats would leave the wallets; the limit is {max}"),
                ));
            }
        }
        if let Some(max) = self.max_amount_per_24h_sats {
            for (w, amount) in &summary.leaving_by_wallet {
                let before = spent_24h.get(w).copied().unwrap_or(0);
                if before.saturating_add(*amount) > max {
                    let wallet = wallets
                        .get(*w)
                        .map(|k| k.master_key.to_string())
                        .unwrap_or_default();
                    return Err(spend_limit_violation(&wallet, before, *amount, max));
                }
            }
        }
        if let Some(max) = self.max_fee_sats {
            if summary.fee_sats > max {
                return Err(violation(
                    "max_fee_sats",
                    format!("fee {} sats exceeds {max}", summary.fee_sats),
                ));
            }
        }
        if let Some(max) = self.max_fee_rate_sat_vb {
            if summary.fee_rate_sat_vb > max {
                return Err(violation(
                    "max_fee_rate_sat_vb",
                    format!(
                        "fee rate {:.1} sat/vB exceeds {max}",
                        summary.fee_rate_sat_vb
                    ),
                ));
            }
        }
        if let Some(allowed) = &self.allowed_destinations {
            let network = wallets.first().map(|w| w.network);
            let scripts: Vec<ScriptBuf> = allowed
                .iter()
                .filter_map(|a| a.parse::<Address<_>>().ok())
                .filter_map(|a| network.and_then(|n| a.require_network(n).ok()))
                .map(|a| a.script_pubkey())
                .collect();
            for (i, out) in psbt.unsigned_tx.output.iter().enumerate() {
                if !is_change(psbt, i, wallets) && !scripts.contains(&out.script_pubkey) {
                    return Err(violation(
                        "allowed_destinations",
                        format!("output {i} pays a destination not on the allow-list"),
                    ));
                }
            }
        }
        Ok(())
    }
}
