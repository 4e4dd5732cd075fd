//! Spending policy, checked by every signer on the PSBT it received, before it signs.
//!
//! Each node has its own policy in its own config, so a compromised coordinator cannot change
//! it. An output counts as the wallets' own change only when it carries a derivation record of
//! one of the wallets on the change chain (`m/1/i`), `i` within [`ChangeRule::gap`] of the
//! next change index this node knows to be unused, and that record derives exactly the
//! output's script. Anything else leaving the transaction counts as spending: an attacker
//! cannot "change" funds to a path outside the wallet's descriptors, or so far along the
//! change chain that a watch-only wallet would never look there.

use std::collections::HashMap;

use bitcoin::{psbt::Psbt, Amount};
use mpc_protocols::DerivationPath;
use serde::{Deserialize, Serialize};

use crate::{
    keys::{from_bip32, Chain},
    psbt::spent_outputs,
    validity::{signed_weight, TxRules, DEFAULT_MAX_DATA_CARRIER_BYTES},
    WalletKey,
};

/// Default for [`Policy::change_gap`]: BIP-44's address gap limit.
pub const DEFAULT_CHANGE_GAP: u32 = 20;

/// Limits a signer enforces. Every limit is optional; the default enforces none but the
/// network, the change rule and the transaction's standardness.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Networks this node signs for; empty means the cluster's.
    pub networks: Vec<mpc_types::Network>,
    /// How far past the next unused change index (`m/1/i`) change may go and still count as
    /// the wallet's own.
    pub change_gap: u32,
    /// Sign transactions paying non-standard output scripts (bare multisig, P2PK, arbitrary
    /// scripts), which mempools do not relay.
    pub allow_nonstandard_outputs: bool,
    /// Largest `OP_RETURN` output script signed (one such output per transaction).
    pub max_data_carrier_bytes: usize,
    /// Human approvals some transactions need (`[policy.approvals]`), checked by every
    /// signer against this, its own, list of approvers.
    pub approvals: crate::approval::ApprovalPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_amount_per_tx_sats: None,
            max_amount_per_24h_sats: None,
            allowed_destinations: None,
            max_fee_sats: None,
            max_fee_rate_sat_vb: None,
            networks: Vec::new(),
            change_gap: DEFAULT_CHANGE_GAP,
            allow_nonstandard_outputs: false,
            max_data_carrier_bytes: DEFAULT_MAX_DATA_CARRIER_BYTES,
            approvals: Default::default(),
        }
    }
}

impl Policy {
    /// The transaction rules this policy sets, with `max_inputs` from the node's limits.
    pub fn tx_rules(&self, max_inputs: usize) -> TxRules {
        TxRules {
            max_inputs,
            allow_nonstandard_outputs: self.allow_nonstandard_outputs,
            max_data_carrier_bytes: self.max_data_carrier_bytes,
        }
    }
}

/// A refused PSBT and the rule it broke.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("policy rule {rule} refuses this transaction: {detail}")]
pub struct PolicyViolation {
    pub rule: &'static str,
    pub detail: String,
}

/// Where change may go: per wallet (in the order of the `wallets` slice), the next change
/// index this node knows to be unused, and how far past it change may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRule {
    pub next_unused: Vec<u32>,
    pub gap: u32,
}

impl ChangeRule {
    /// Whether `path` of wallet `wallet` is a change path this rule accepts.
    pub fn accepts(&self, wallet: usize, path: &DerivationPath) -> bool {
        let next = self.next_unused.get(wallet).copied().unwrap_or(0);
        match path.indices() {
            [chain, index] => {
                *chain == Chain::Change.index() && *index < next.saturating_add(self.gap)
            }
            _ => false,
        }
    }
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
    /// The outputs that are the wallets' own change: (output, wallet, change index).
    pub change: Vec<ChangeOutputOf>,
}

/// One change output, as [`summarize`] recognised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChangeOutputOf {
    pub output: usize,
    pub wallet: usize,
    pub index: u32,
}

fn violation(rule: &'static str, detail: String) -> PolicyViolation {
    PolicyViolation { rule, detail }
}

/// Output `index` as change of one of `wallets`, if it is: a derivation record of one of the
/// wallets on a path `rule` accepts, deriving the output's script.
fn change_of(
    psbt: &Psbt,
    index: usize,
    wallets: &[&WalletKey],
    rule: &ChangeRule,
) -> Option<ChangeOutputOf> {
    let output = psbt.outputs.get(index)?;
    let txout = psbt.unsigned_tx.output.get(index)?;
    let origins = output
        .bip32_derivation
        .values()
        .chain(output.tap_key_origins.values().map(|(_, source)| source));
    for (fingerprint, path) in origins {
        for (w, wallet) in wallets.iter().enumerate() {
            if wallet.fingerprint().ok().as_ref() != Some(fingerprint) {
                continue;
            }
            let Ok(path) = from_bip32(path) else { continue };
            if !rule.accepts(w, &path) {
                continue;
            }
            if wallet.script_pubkey(&path).ok().as_ref() == Some(&txout.script_pubkey) {
                return Some(ChangeOutputOf {
                    output: index,
                    wallet: w,
                    index: path.indices()[1],
                });
            }
        }
    }
    None
}

/// The sum of `outputs`' values in sats, refused above `MAX_MONEY`.
fn checked_total(outputs: &[bitcoin::TxOut], what: &str) -> Result<u64, PolicyViolation> {
    outputs
        .iter()
        .try_fold(Amount::ZERO, |sum, o| sum.checked_add(o.value))
        .filter(|sum| *sum <= Amount::MAX_MONEY)
        .map(Amount::to_sat)
        .ok_or_else(|| violation("amounts", format!("{what} above 21 million BTC")))
}

/// Summarizes `psbt` for `wallets`; `input_wallet[i]` is the wallet of input `i`. Amounts are
/// the proven ones ([`spent_outputs`]); every sum is checked.
pub fn summarize(
    psbt: &Psbt,
    wallets: &[&WalletKey],
    input_wallet: &[usize],
    change_rule: &ChangeRule,
) -> Result<SpendSummary, PolicyViolation> {
    let spent = spent_outputs(psbt).map_err(|e| violation("inputs", format!("{e:?}")))?;
    let inputs_sats = checked_total(&spent, "spent amounts")?;
    let outputs_sats = checked_total(&psbt.unsigned_tx.output, "outputs")?;
    let fee_sats = inputs_sats
        .checked_sub(outputs_sats)
        .ok_or_else(|| violation("fee", "outputs exceed inputs".into()))?;
    let change: Vec<ChangeOutputOf> = (0..psbt.unsigned_tx.output.len())
        .filter_map(|i| change_of(psbt, i, wallets, change_rule))
        .collect();
    // Each output counted once, so change never exceeds the outputs.
    let change_sats: u64 = change
        .iter()
        .map(|c| psbt.unsigned_tx.output[c.output].value.to_sat())
        .sum();
    let payments_sats = outputs_sats - change_sats;
    let vsize = signed_weight(&psbt.unsigned_tx, &spent)
        .to_vbytes_ceil()
        .max(1);
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
            (w, u64::try_from(share).unwrap_or(u64::MAX))
        })
        .collect();
    Ok(SpendSummary {
        inputs_sats,
        change_sats,
        payments_sats,
        fee_sats,
        fee_rate_sat_vb: fee_sats as f64 / vsize as f64,
        leaving_by_wallet,
        change,
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
        default_network: mpc_types::Network,
    ) -> Result<(), PolicyViolation> {
        let networks = if self.networks.is_empty() {
            std::slice::from_ref(&default_network)
        } else {
            &self.networks[..]
        };
        for w in wallets {
            let name = crate::network_name(w.network);
            if !networks
                .iter()
                .any(|n| bitcoin::Network::from(*n) == w.network)
            {
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
        // With approvals for outputs outside the allow-list, such an output needs approvals
        // (checked by the caller) instead of being refused here.
        let approvals_instead = self.approvals.enabled() && self.approvals.outside_allow_list;
        if let (Some(i), false) = (
            self.first_outside_allow_list(psbt, summary, wallets),
            approvals_instead,
        ) {
            return Err(violation(
                "allowed_destinations",
                format!("output {i} pays a destination not on the allow-list"),
            ));
        }
        Ok(())
    }

    /// The first output that is not change and pays no address of `allowed_destinations`
    /// (none while no allow-list is set).
    pub fn first_outside_allow_list(
        &self,
        psbt: &Psbt,
        summary: &SpendSummary,
        wallets: &[&WalletKey],
    ) -> Option<usize> {
        let allowed = self.allowed_destinations.as_ref()?;
        let scripts =
            crate::approval::allow_list_scripts(allowed, wallets.first().map(|w| w.network));
        psbt.unsigned_tx
            .output
            .iter()
            .enumerate()
            .find_map(|(i, out)| {
                let is_change = summary.change.iter().any(|c| c.output == i);
                (!is_change && !scripts.contains(&out.script_pubkey)).then_some(i)
            })
    }
}
