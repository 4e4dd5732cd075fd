//! Signing a PSBT: the coordinator and the signer.
//!
//! The coordinator picks a live signer set and, for ECDSA inputs, a presignature it holds for
//! (wallet, path, signer set); then proposes the PSBT itself to the signers. **Each signer**
//! parses the PSBT, checks that every input belongs to the wallet at the claimed path,
//! recomputes the sighash, and only then signs: from a presignature (consumed durably before
//! the partial signature leaves the node), interactively, or with FROST. The coordinator
//! combines, verifies every signature, finalizes, verifies the transaction with
//! `bitcoinconsensus`, and returns it. A failed attempt is retried with another signer set
//! that avoids the nodes that failed (up to 4 attempts, within the request's deadline).
//!
//! `coordinator` and `signer` hold the two sides; this module, what both use: the reports,
//! the wallets of a request, the policy and transaction rules this node applies, and what it
//! learns from signed transactions.

use mpc_types::WalletId;
use std::collections::HashMap;

use mpc_bitcoin::{
    approval::{self, ApprovalViolation},
    bitcoin::{consensus, psbt::Psbt, Transaction, Txid},
    policy::{self, ChangeRule, SpendSummary},
    psbt::{analyze, parse_psbt, spent_outputs, JobMessage, SigningJob},
    verify::verify_transaction,
    Scheme, TxRules, WalletError, WalletKey,
};
use mpc_store::{SpendLimit, WalletRecord};
use mpc_transport::NodeId;
use serde::Serialize;
use tracing::{warn, Instrument};
use uuid::Uuid;

use crate::{
    control::{ApprovalEvidence, Control},
    keys::wallet_key,
    now_ms,
    ready::ReadyPresignatures,
    Node, NodeError,
};

/// How one input was signed.
#[derive(Debug, Clone, Serialize)]
pub struct InputReport {
    pub input: usize,
    pub wallet_id: WalletId,
    pub scheme: Scheme,
    pub path: String,
    pub sighash: String,
    /// `presignature`, `interactive` (full CGGMP24 signing) or `frost`.
    pub method: &'static str,
    pub presignature: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptReport {
    pub signers: Vec<NodeId>,
    pub error: Option<String>,
    pub duration_ms: f64,
}

/// The result of a signing request.
#[derive(Debug, Clone, Serialize)]
pub struct SignReport {
    pub session: Uuid,
    /// The signed, finalized PSBT (base64).
    pub psbt: String,
    /// Hex, in consensus encoding.
    #[serde(with = "consensus::serde::With::<consensus::serde::Hex>")]
    pub raw_transaction: Transaction,
    pub txid: Txid,
    pub signers: Vec<NodeId>,
    pub inputs: Vec<InputReport>,
    pub attempts: Vec<AttemptReport>,
    pub duration_ms: f64,
}

/// Wallets named in a request, with their public sides; they must share a node set.
struct RequestWallets {
    records: Vec<WalletRecord>,
    keys: Vec<WalletKey>,
}

impl RequestWallets {
    fn keys(&self) -> Vec<&WalletKey> {
        self.keys.iter().collect()
    }

    /// The wallet ids, in the request's order (the order the approval message has them in).
    fn ids(&self) -> Vec<WalletId> {
        self.records.iter().map(|r| r.id.clone()).collect()
    }
}

impl Node {
    /// Applies this node's spending policy to a PSBT whose inputs `jobs` describes. With
    /// `history`, the 24-hour limit is checked against what the wallets sent (read when a
    /// limit is set): the coordinator's early refusal. A signer leaves that rule to its
    /// signing transaction ([`Self::spend_limit`]), where concurrent signings cannot both
    /// pass it.
    async fn check_policy(
        &self,
        psbt: &Psbt,
        jobs: &[SigningJob],
        wallets: &RequestWallets,
        history: bool,
    ) -> Result<SpendSummary, NodeError> {
        let mut input_wallet = vec![0usize; psbt.inputs.len()];
        for job in jobs {
            input_wallet[job.input] = job.wallet;
        }
        let keys = wallets.keys();
        let change_rule = self.change_rule(wallets).await?;
        let summary = policy::summarize(psbt, &keys, &input_wallet, &change_rule)?;
        let mut spent_24h = HashMap::new();
        if let (true, Some(limit)) = (history, self.spend_limit()) {
            for (i, record) in wallets.records.iter().enumerate() {
                let spent = self
                    .inner
                    .store
                    .spent_since(&record.id, limit.since_ms)
                    .await?;
                spent_24h.insert(i, spent);
            }
        }
        let config = &self.inner.config;
        config
            .policy
            .check(psbt, &summary, &keys, &spent_24h, config.cluster.network)?;
        Ok(summary)
    }

    /// Whether this node's approval rule covers this request, after the checks the
    /// coordinator makes of any request (a request refused anyway does not wait).
    pub(crate) async fn approvals_needed(
        &self,
        wallet_ids: &[WalletId],
        psbt_base64: &str,
    ) -> Result<bool, NodeError> {
        if !self.inner.config.policy.approvals.enabled() {
            return Ok(false);
        }
        let wallets = self.request_wallets(wallet_ids).await?;
        let psbt = parse_psbt(psbt_base64)?;
        let jobs = analyze(&psbt, &wallets.keys(), &self.tx_rules())?;
        let summary = self.check_policy(&psbt, &jobs, &wallets, true).await?;
        Ok(self.approvals_required(&psbt, &summary, &wallets))
    }

    /// Whether this node's approval rule wants human approvals for this transaction.
    fn approvals_required(
        &self,
        psbt: &Psbt,
        summary: &SpendSummary,
        wallets: &RequestWallets,
    ) -> bool {
        let policy = &self.inner.config.policy;
        let outside = policy
            .first_outside_allow_list(psbt, summary, &wallets.keys())
            .is_some();
        policy.approvals.requires(&wallets.ids(), summary, outside)
    }

    /// The approval check, on this node's own data: when this node's rule wants approvals,
    /// `evidence` must hold enough valid ones, by this node's approvers, of the message this
    /// node builds from the PSBT it parsed itself, the request id and the expiry (its own
    /// clock decides whether that passed).
    fn check_approvals(
        &self,
        psbt: &Psbt,
        summary: &SpendSummary,
        wallets: &RequestWallets,
        evidence: Option<&ApprovalEvidence>,
    ) -> Result<(), NodeError> {
        if !self.approvals_required(psbt, summary, wallets) {
            return Ok(());
        }
        let rule = &self.inner.config.policy.approvals;
        let Some(evidence) = evidence else {
            return Err(ApprovalViolation {
                rule: approval::APPROVALS_MISSING,
                detail: format!(
                    "this transaction needs {} approvals and has none",
                    rule.required
                ),
            }
            .into());
        };
        // Approvers signed the expiry, but a request this node would not have let wait so
        // long is not one its rule allows.
        let longest = i64::try_from(rule.expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let now = now_ms();
        if evidence.expires_at_ms > now.saturating_add(longest) {
            return Err(ApprovalViolation {
                rule: approval::APPROVAL_INVALID,
                detail: format!(
                    "the request expires at {} ms, later than this node's expiry_secs allows",
                    evidence.expires_at_ms
                ),
            }
            .into());
        }
        let message = approval::approval_message(
            psbt,
            &wallets.ids(),
            evidence.request,
            evidence.expires_at_ms,
            approval::Decision::Approve,
        )?;
        let approvers = rule.check(&message, &evidence.approvals, evidence.expires_at_ms, now)?;
        tracing::info!(request = %evidence.request, ?approvers, "approvals checked");
        Ok(())
    }

    /// Where change may go for `wallets`, as this node knows their change indices.
    async fn change_rule(&self, wallets: &RequestWallets) -> Result<ChangeRule, NodeError> {
        let mut next_unused = Vec::with_capacity(wallets.records.len());
        for record in &wallets.records {
            next_unused.push(self.next_change_index(&record.id).await?);
        }
        Ok(ChangeRule {
            next_unused,
            gap: self.inner.config.policy.change_gap,
        })
    }

    /// Learns from a transaction other nodes signed: its change indices (within this node's
    /// own gap, so a notice never widens what this node accepts) and its funded paths. Only
    /// after checking that the wallets' keys signed exactly this PSBT's transaction: every
    /// input analyzed as for signing, then the whole transaction verified by Bitcoin Core's
    /// interpreter with the proven spent outputs. Returns the change indices learned.
    pub async fn learn_from_signed(
        &self,
        wallet_ids: &[WalletId],
        psbt_base64: &str,
        raw_transaction: &str,
    ) -> Result<usize, NodeError> {
        let wallets = self.request_wallets(wallet_ids).await?;
        let psbt = parse_psbt(psbt_base64)?;
        let jobs = analyze(&psbt, &wallets.keys(), &self.tx_rules())?;
        let tx: mpc_bitcoin::bitcoin::Transaction =
            consensus::encode::deserialize_hex(raw_transaction).map_err(|e| {
                NodeError::InvalidRequest(format!("signed transaction does not decode: {e}"))
            })?;
        if tx.compute_txid() != psbt.unsigned_tx.compute_txid() {
            return Err(NodeError::InvalidRequest(
                "the signed transaction is not the PSBT's".into(),
            ));
        }
        let spent = spent_outputs(&psbt).map_err(WalletError::Inputs)?;
        verify_transaction(&tx, &spent)?;
        let mut input_wallet = vec![0usize; psbt.inputs.len()];
        for job in &jobs {
            input_wallet[job.input] = job.wallet;
        }
        let change_rule = self.change_rule(&wallets).await?;
        let summary = policy::summarize(&psbt, &wallets.keys(), &input_wallet, &change_rule)?;
        self.note_change_used(&wallets, &summary).await;
        self.note_funded_paths(&summary, &wallets.keys(), &wallets.records);
        Ok(summary.change.len())
    }

    /// Tells the wallets' participants that did not sign about a transaction the cluster
    /// signed (in the background; a notice lost changes nothing but what they learn).
    fn announce_signed(&self, wallets: &RequestWallets, psbt_base64: &str, report: &SignReport) {
        let notice = Control::Signed {
            wallet_ids: wallets.records.iter().map(|r| r.id.clone()).collect(),
            psbt: psbt_base64.to_owned(),
            raw_transaction: consensus::encode::serialize_hex(&report.raw_transaction),
        };
        let others: Vec<NodeId> = wallets.records[0]
            .participants
            .iter()
            .copied()
            .filter(|n| *n != self.id() && !report.signers.contains(n))
            .collect();
        let (node, session) = (self.clone(), report.session);
        tokio::spawn(
            async move {
                for to in others {
                    if let Err(e) = node.send_control(to, session, &notice).await {
                        tracing::debug!(to = to.get(), error = %e, "signed-transaction notice not sent");
                    }
                }
            }
            .in_current_span(),
        );
    }

    /// The transaction rules of this node's policy and limits.
    fn tx_rules(&self) -> TxRules {
        let config = &self.inner.config;
        config.policy.tx_rules(config.limits.max_inputs_per_psbt)
    }

    /// Remembers the change indices a signed transaction used, so later change must stay
    /// within the gap of them. Failing to record only makes this node stricter.
    async fn note_change_used(&self, wallets: &RequestWallets, summary: &SpendSummary) {
        for change in &summary.change {
            let wallet_id = &wallets.records[change.wallet].id;
            if let Err(e) = self.note_change_index_used(wallet_id, change.index).await {
                warn!(wallet = %wallet_id, index = change.index, error = %e, "could not record a used change index");
            }
        }
    }

    /// This node's rolling 24-hour limit, if its policy sets one.
    fn spend_limit(&self) -> Option<SpendLimit> {
        let max_sats = self.inner.config.policy.max_amount_per_24h_sats?;
        Some(SpendLimit {
            max_sats,
            since_ms: now_ms() - 24 * 3600 * 1000,
        })
    }

    async fn request_wallets(&self, wallet_ids: &[WalletId]) -> Result<RequestWallets, NodeError> {
        if wallet_ids.is_empty() || wallet_ids.len() > 8 {
            return Err(NodeError::InvalidRequest("name 1 to 8 wallets".into()));
        }
        let mut records = Vec::new();
        for id in wallet_ids {
            records.push(self.active_wallet(id).await?);
        }
        let first = &records[0];
        if records
            .iter()
            .any(|r| r.participants != first.participants || r.threshold != first.threshold)
        {
            return Err(NodeError::InvalidRequest(
                "wallets signed together must have the same participants and threshold".into(),
            ));
        }
        let keys = records
            .iter()
            .map(wallet_key)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RequestWallets { records, keys })
    }

    pub(crate) fn ready(&self) -> Result<std::sync::MutexGuard<'_, ReadyPresignatures>, NodeError> {
        self.inner
            .ready
            .lock()
            .map_err(|_| NodeError::Internal("ready-presignature lock".into()))
    }
}

/// ECDSA inputs without a presignature: signed interactively.
fn interactive_inputs(jobs: &[SigningJob], presignatures: &[Option<String>]) -> usize {
    jobs.iter()
        .filter(|j| {
            matches!(j.message, JobMessage::Ecdsa { .. })
                && presignatures.get(j.input).is_none_or(Option::is_none)
        })
        .count()
}

fn interactive_limit(count: usize, max: usize) -> NodeError {
    NodeError::LimitExceeded {
        limit: "max_interactive_inputs",
        detail: format!(
            "{count} ECDSA inputs have no presignature ready; at most {max} are signed \
             interactively per request"
        ),
    }
}

mod coordinator;
mod signer;
pub(crate) use signer::Signed;
