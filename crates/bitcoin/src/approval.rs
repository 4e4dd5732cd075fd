//! Human approvals: the approval rule of a node's policy (`[policy.approvals]`), the one
//! message an approver signs, and the check every signer makes of the approvals that travel
//! with a signing proposal.
//!
//! The message ([`approval_message`]) is built from the PSBT by whoever checks it (the CLI
//! before signing, the API node before recording, each signer before signing), never taken
//! from someone else: `APPROVAL_DOMAIN || decision (u8) || request id (16 bytes) || wallet
//! count (u32 BE) || each wallet id (u32 BE length, UTF-8) || txid (32 bytes, as displayed)
//! || fee sats (u64 BE) || output count (u32 BE) || each output (amount sats u64 BE, script
//! length u32 BE, script) || expires_at_ms (i64 BE)`. Signed with Ed25519 (RFC 8032).

use std::collections::HashSet;

use bitcoin::{hashes::Hash, psbt::Psbt, ScriptBuf};
use ed25519_dalek::{Signature, VerifyingKey};
use mpc_types::WalletId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{policy::SpendSummary, psbt::spent_outputs};

/// Separates an approval from any other Ed25519 signature of the same key.
pub const APPROVAL_DOMAIN: &[u8] = b"mpc-wallet/approval/v1\0";

/// Default for [`ApprovalPolicy::expiry_secs`]: 24 hours.
pub const DEFAULT_EXPIRY_SECS: u64 = 24 * 3600;

pub use mpc_types::Decision;

/// The decision's byte in the signed message.
fn decision_tag(decision: Decision) -> u8 {
    match decision {
        Decision::Approve => 1,
        Decision::Reject => 2,
    }
}

/// One named approver of a node's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    pub name: String,
    /// The Ed25519 public key, 32 bytes hex (`mpc-wallet approver keygen` prints it).
    pub public_key: String,
}

/// The approval rule (`[policy.approvals]`). Off while `required` is 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalPolicy {
    /// M: distinct approvers' approvals needed; 0 turns approvals off.
    pub required: u16,
    /// The N approvers.
    pub approvers: Vec<Approver>,
    /// Wallet ids the rule applies to; empty: every wallet.
    pub wallets: Vec<WalletId>,
    /// Only when more than this leaves the wallets (payments + fee).
    pub above_sats: Option<u64>,
    /// Only when an output pays outside `policy.allowed_destinations`; with it, the allow-list
    /// no longer refuses such an output: it needs approvals instead.
    pub outside_allow_list: bool,
    /// How long a request may wait for approvals.
    pub expiry_secs: u64,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            required: 0,
            approvers: Vec::new(),
            wallets: Vec::new(),
            above_sats: None,
            outside_allow_list: false,
            expiry_secs: DEFAULT_EXPIRY_SECS,
        }
    }
}

/// A signed decision as it travels: the approver's public key and its signature, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDecision {
    pub public_key: String,
    pub signature: String,
}

/// The rule of a refused approval check: `approvals_missing`, `approval_invalid`,
/// `approval_expired`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("approval rule {rule} refuses this request: {detail}")]
pub struct ApprovalViolation {
    pub rule: &'static str,
    pub detail: String,
}

pub const APPROVALS_MISSING: &str = "approvals_missing";
pub const APPROVAL_INVALID: &str = "approval_invalid";
pub const APPROVAL_EXPIRED: &str = "approval_expired";

fn violation(rule: &'static str, detail: String) -> ApprovalViolation {
    ApprovalViolation { rule, detail }
}

/// A 32-byte hex Ed25519 public key.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{hex_key:?} is not a 32-byte hex Ed25519 public key"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("{hex_key:?}: {e}"))
}

fn parse_signature(hex_sig: &str) -> Option<Signature> {
    let bytes: [u8; 64] = hex::decode(hex_sig.trim()).ok()?.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

/// The message an approver signs for `decision` on request `request`: see the module's
/// documentation. Fails on a PSBT whose spent amounts are not proven (no fee to state).
pub fn approval_message(
    psbt: &Psbt,
    wallet_ids: &[WalletId],
    request: Uuid,
    expires_at_ms: i64,
    decision: Decision,
) -> Result<Vec<u8>, ApprovalViolation> {
    let bad = |d: String| violation(APPROVAL_INVALID, d);
    let spent = spent_outputs(psbt).map_err(|e| bad(format!("spent outputs: {e:?}")))?;
    let total = |outs: &[bitcoin::TxOut]| {
        outs.iter()
            .try_fold(0u64, |sum, o| sum.checked_add(o.value.to_sat()))
    };
    let fee = total(&spent)
        .zip(total(&psbt.unsigned_tx.output))
        .and_then(|(inputs, outputs)| inputs.checked_sub(outputs))
        .ok_or_else(|| bad("the amounts do not add up to a fee".into()))?;
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    let mut m = Vec::with_capacity(256);
    m.extend_from_slice(APPROVAL_DOMAIN);
    m.push(decision_tag(decision));
    m.extend_from_slice(request.as_bytes());
    m.extend_from_slice(&len(wallet_ids.len()));
    for id in wallet_ids {
        m.extend_from_slice(&len(id.as_str().len()));
        m.extend_from_slice(id.as_str().as_bytes());
    }
    // As displayed (reversed from the internal order): what a human compares.
    let mut txid = psbt.unsigned_tx.compute_txid().to_byte_array();
    txid.reverse();
    m.extend_from_slice(&txid);
    m.extend_from_slice(&fee.to_be_bytes());
    m.extend_from_slice(&len(psbt.unsigned_tx.output.len()));
    for out in &psbt.unsigned_tx.output {
        m.extend_from_slice(&out.value.to_sat().to_be_bytes());
        m.extend_from_slice(&len(out.script_pubkey.len()));
        m.extend_from_slice(out.script_pubkey.as_bytes());
    }
    m.extend_from_slice(&expires_at_ms.to_be_bytes());
    Ok(m)
}

impl ApprovalPolicy {
    pub fn enabled(&self) -> bool {
        self.required > 0
    }

    /// The config's own consistency: M <= N, keys that parse and differ, names unique.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        let n = self.approvers.len();
        if usize::from(self.required) > n {
            return Err(format!(
                "required = {} approvals but only {n} approvers",
                self.required
            ));
        }
        if self.expiry_secs == 0 {
            return Err("expiry_secs must be positive".into());
        }
        let (mut names, mut keys) = (HashSet::new(), HashSet::new());
        for a in &self.approvers {
            if a.name.trim().is_empty() || !names.insert(a.name.as_str()) {
                return Err(format!(
                    "approver names must be non-empty and unique ({:?})",
                    a.name
                ));
            }
            let key = parse_public_key(&a.public_key)?;
            if !keys.insert(key.to_bytes()) {
                return Err(format!("approver {:?} has another approver's key", a.name));
            }
        }
        Ok(())
    }

    /// The approver whose key is `public_key` (hex), if this policy names one.
    pub fn approver(&self, public_key: &str) -> Option<&Approver> {
        let key = parse_public_key(public_key).ok()?;
        self.approvers
            .iter()
            .find(|a| parse_public_key(&a.public_key).ok() == Some(key))
    }

    /// The approver of this policy who signed `message` as `signed` says, if the signature
    /// verifies; `approval_invalid` if it does not or the key is no approver here.
    pub fn verify_one(
        &self,
        message: &[u8],
        signed: &SignedDecision,
    ) -> Result<&Approver, ApprovalViolation> {
        let approver = self.approver(&signed.public_key).ok_or_else(|| {
            violation(
                APPROVAL_INVALID,
                format!("{} is not an approver's key here", signed.public_key),
            )
        })?;
        let verifies = match (
            parse_public_key(&approver.public_key),
            parse_signature(&signed.signature),
        ) {
            (Ok(key), Some(sig)) => key.verify_strict(message, &sig).is_ok(),
            _ => false,
        };
        if !verifies {
            return Err(violation(
                APPROVAL_INVALID,
                format!(
                    "the signature of {:?} does not verify for this transaction and request",
                    approver.name
                ),
            ));
        }
        Ok(approver)
    }

    /// Whether a transaction of `wallet_ids` doing `summary` needs approvals;
    /// `outside_allow_list` says whether an output pays outside the allow-list. The conditions
    /// set (`above_sats`, `outside_allow_list`) are alternatives: either one calls for
    /// approvals; with neither set, every transaction does.
    pub fn requires(
        &self,
        wallet_ids: &[WalletId],
        summary: &SpendSummary,
        outside_allow_list: bool,
    ) -> bool {
        if !self.enabled() {
            return false;
        }
        if !self.wallets.is_empty() && !wallet_ids.iter().any(|w| self.wallets.contains(w)) {
            return false;
        }
        if self.above_sats.is_none() && !self.outside_allow_list {
            return true;
        }
        let leaving = summary.payments_sats.saturating_add(summary.fee_sats);
        self.above_sats.is_some_and(|a| leaving > a)
            || (self.outside_allow_list && outside_allow_list)
    }

    /// Checks approvals of `message` (built here from the PSBT): each must be by an approver
    /// of this policy, with a valid signature, and at least `required` distinct approvers must
    /// have signed, before `expires_at_ms` by `now_ms`. An approval by a key this policy does
    /// not know is not counted; one by a known key that does not verify refuses the whole
    /// request (someone forged or altered it). Returns the approvers counted.
    pub fn check(
        &self,
        message: &[u8],
        approvals: &[SignedDecision],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<String>, ApprovalViolation> {
        if now_ms >= expires_at_ms {
            return Err(violation(
                APPROVAL_EXPIRED,
                format!("the request expired at {expires_at_ms} ms; it is {now_ms} ms"),
            ));
        }
        let mut counted: Vec<String> = Vec::new();
        for a in approvals {
            // Not an approver here: not counted (another node's list may differ).
            if self.approver(&a.public_key).is_none() {
                continue;
            }
            let approver = self.verify_one(message, a)?;
            if !counted.contains(&approver.name) {
                counted.push(approver.name.clone());
            }
        }
        if counted.len() < usize::from(self.required) {
            return Err(violation(
                APPROVALS_MISSING,
                format!(
                    "{} of {} approvals ({})",
                    counted.len(),
                    self.required,
                    counted.join(", ")
                ),
            ));
        }
        Ok(counted)
    }
}

/// Output scripts of the allow-list's addresses on `network`.
pub(crate) fn allow_list_scripts(
    allowed: &[String],
    network: Option<bitcoin::Network>,
) -> Vec<ScriptBuf> {
    allowed
        .iter()
        .filter_map(|a| a.parse::<bitcoin::Address<_>>().ok())
        .filter_map(|a| network.and_then(|n| a.require_network(n).ok()))
        .map(|a| a.script_pubkey())
        .collect()
}
