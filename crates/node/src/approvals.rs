//! Requests that wait for human approvals (`[policy.approvals]`).
//!
//! A signing or payment request whose transaction this node's approval rule covers is not
//! signed: it is stored as a pending request (id = the request's session id) and answered
//! with that id. Approvers sign [`approval_message`] (built from the PSBT, the wallets, the
//! request id and its expiry); this node verifies each decision against its own approvers
//! before recording it. Any one rejection ends the request; so does its expiry. The approval
//! that brings the count to `required` runs the signing at once, in the same call, with
//! every recorded approval sent along: each signer checks them again itself
//! (`signing::check_approvals`), so this node's word counts for nothing there.

use mpc_bitcoin::{
    approval::{approval_message, ApprovalViolation, Decision, SignedDecision, APPROVAL_EXPIRED},
    bitcoin::psbt::Psbt,
    psbt::parse_psbt,
};
use mpc_store::{ApprovalRequestRecord, AuditEvent, DecisionRecord, RequestState};
use mpc_types::WalletId;
use serde::Serialize;
use tracing::{info, warn};
use uuid::Uuid;

use crate::{audit, control::ApprovalEvidence, now_ms, signing::SignReport, Node, NodeError};

/// What became of a signing request: signed at once, or waiting for approvals.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Submitted {
    Signed(SignReport),
    Pending(RequestView),
}

/// One output of a request's transaction.
#[derive(Debug, Clone, Serialize)]
pub struct OutputView {
    pub script_pubkey: String,
    pub amount_sats: u64,
}

/// One approver's decision, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub approver: String,
    pub public_key: String,
    pub decision: Decision,
    pub at_ms: i64,
}

/// A request that waits (or waited) for approvals, as the API and CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub request_id: Uuid,
    /// `pending`, `signing`, `signed`, `rejected`, `expired` or `failed`.
    pub state: String,
    pub wallet_ids: Vec<WalletId>,
    /// The unsigned PSBT (base64): an approver builds the message from it, not from the
    /// fields beside it.
    pub psbt: String,
    pub txid: String,
    pub fee_sats: u64,
    pub outputs: Vec<OutputView>,
    pub required: u16,
    pub decisions: Vec<DecisionView>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The message an approval signs (hex), for display; approvers should build it
    /// themselves (`mpc-wallet approve` does).
    pub approval_message: String,
    /// The signing's report, once signed.
    pub signed: Option<serde_json::Value>,
    pub error: Option<String>,
}

fn fee_and_outputs(psbt: &Psbt) -> (u64, Vec<OutputView>) {
    let outputs: Vec<OutputView> = psbt
        .unsigned_tx
        .output
        .iter()
        .map(|o| OutputView {
            script_pubkey: hex::encode(o.script_pubkey.as_bytes()),
            amount_sats: o.value.to_sat(),
        })
        .collect();
    let inputs = mpc_bitcoin::psbt::spent_outputs(psbt).ok().and_then(|s| {
        s.iter()
            .try_fold(0u64, |a, o| a.checked_add(o.value.to_sat()))
    });
    let paid = outputs
        .iter()
        .try_fold(0u64, |a, o| a.checked_add(o.amount_sats));
    let fee = inputs
        .zip(paid)
        .and_then(|(i, p)| i.checked_sub(p))
        .unwrap_or(0);
    (fee, outputs)
}

fn view(record: &ApprovalRequestRecord) -> Result<RequestView, NodeError> {
    let psbt = parse_psbt(&record.psbt)?;
    let (fee_sats, outputs) = fee_and_outputs(&psbt);
    let message = approval_message(
        &psbt,
        &record.wallet_ids,
        record.id,
        record.expires_at,
        Decision::Approve,
    )?;
    Ok(RequestView {
        request_id: record.id,
        state: record.state.to_string(),
        wallet_ids: record.wallet_ids.clone(),
        psbt: record.psbt.clone(),
        txid: record.txid.clone(),
        fee_sats,
        outputs,
        required: record.required,
        decisions: record
            .decisions
            .iter()
            .map(|d| DecisionView {
                approver: d.approver.clone(),
                public_key: d.public_key.clone(),
                decision: d.decision,
                at_ms: d.at,
            })
            .collect(),
        created_at_ms: record.created_at,
        expires_at_ms: record.expires_at,
        approval_message: hex::encode(message),
        signed: record
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok()),
        error: record.error.clone(),
    })
}

impl Node {
    /// Signs `psbt` for `wallet_ids`, or, when this node's approval rule covers the
    /// transaction, records it as a request pending approvals (id `session`) and returns it.
    pub async fn submit_psbt(
        &self,
        session: Uuid,
        wallet_ids: &[WalletId],
        psbt_base64: &str,
    ) -> Result<Submitted, NodeError> {
        // A request the checks refuse before it could wait (its policy, a PSBT that does not
        // parse) goes the signing's way too: that path refuses it again, the same way, and
        // records the request and the refusal with its rule in the audit log. It cannot sign
        // without approvals: its own approval check comes after the policy's.
        if !self
            .approvals_needed(wallet_ids, psbt_base64)
            .await
            .unwrap_or(false)
        {
            return Ok(Submitted::Signed(
                self.sign_psbt(session, wallet_ids, psbt_base64).await?,
            ));
        }
        let psbt = parse_psbt(psbt_base64)?;
        let rule = &self.inner.config.policy.approvals;
        let now = now_ms();
        let expiry_ms = i64::try_from(rule.expiry_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let record = ApprovalRequestRecord {
            id: session,
            wallet_ids: wallet_ids.to_vec(),
            psbt: psbt_base64.to_owned(),
            txid: psbt.unsigned_tx.compute_txid().to_string(),
            state: RequestState::Pending,
            required: rule.required,
            created_at: now,
            expires_at: now.saturating_add(expiry_ms),
            result: None,
            error: None,
            finished_at: None,
            decisions: Vec::new(),
        };
        let pending = view(&record)?;
        self.inner.store.insert_approval_request(&record).await?;
        let (_, outputs) = audit::psbt_summary(psbt_base64);
        self.audit(AuditEvent::ApprovalPending {
            request: session,
            wallet_ids: wallet_ids.to_vec(),
            txid: record.txid.clone(),
            outputs,
            fee_sats: pending.fee_sats,
            required: record.required,
            expires_at_ms: record.expires_at,
        })
        .await?;
        info!(request = %session, txid = %record.txid, required = record.required, "waiting for approvals");
        Ok(Submitted::Pending(pending))
    }

    /// Requests this node holds (in `state` if given), newest first.
    pub async fn approval_requests(
        &self,
        state: Option<RequestState>,
        limit: u32,
    ) -> Result<Vec<RequestView>, NodeError> {
        self.expire_due().await?;
        self.inner
            .store
            .approval_requests(state, limit)
            .await?
            .iter()
            .map(view)
            .collect()
    }

    /// The request `id`.
    pub async fn approval_request(&self, id: Uuid) -> Result<RequestView, NodeError> {
        self.expire_due().await?;
        view(&self.request_record(id).await?)
    }

    async fn request_record(&self, id: Uuid) -> Result<ApprovalRequestRecord, NodeError> {
        self.inner
            .store
            .approval_request(id)
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("request {id}")))
    }

    /// Records an approver's signed `decision` on request `id`, after checking it against
    /// this node's approvers. A rejection ends the request; the approval that completes the
    /// count runs the signing before this returns. Returns the request as it then is.
    pub async fn decide(
        &self,
        id: Uuid,
        decision: Decision,
        signed: &SignedDecision,
    ) -> Result<RequestView, NodeError> {
        self.expire_due().await?;
        let record = self.request_record(id).await?;
        match record.state {
            RequestState::Pending => {}
            RequestState::Expired => {
                return Err(ApprovalViolation {
                    rule: APPROVAL_EXPIRED,
                    detail: format!("request {id} expired at {} ms", record.expires_at),
                }
                .into())
            }
            state => {
                return Err(NodeError::RequestClosed {
                    id,
                    state: state.to_string(),
                })
            }
        }
        let psbt = parse_psbt(&record.psbt)?;
        let message = approval_message(&psbt, &record.wallet_ids, id, record.expires_at, decision)?;
        let approver = self
            .inner
            .config
            .policy
            .approvals
            .verify_one(&message, signed)?
            .clone();
        let recorded = self
            .inner
            .store
            .record_approval_decision(
                id,
                &DecisionRecord {
                    public_key: signed.public_key.trim().to_lowercase(),
                    approver: approver.name.clone(),
                    decision,
                    signature: signed.signature.trim().to_lowercase(),
                    at: now_ms(),
                },
            )
            .await?;
        if !recorded {
            return Err(NodeError::InvalidRequest(format!(
                "approver {:?} already decided on request {id}",
                approver.name
            )));
        }
        self.audit(AuditEvent::ApprovalDecided {
            request: id,
            approver: approver.name.clone(),
            public_key: signed.public_key.trim().to_lowercase(),
            decision: decision.as_str().into(),
        })
        .await?;
        info!(request = %id, approver = %approver.name, decision = decision.as_str(), "decision recorded");
        match decision {
            Decision::Reject => {
                self.close(
                    &record,
                    RequestState::Pending,
                    RequestState::Rejected,
                    None,
                    None,
                )
                .await?;
            }
            Decision::Approve => self.sign_if_approved(id).await?,
        }
        view(&self.request_record(id).await?)
    }

    /// Signs request `id` if it has enough approvals by this node's approvers and this call
    /// is the one that moves it from pending to signing.
    async fn sign_if_approved(&self, id: Uuid) -> Result<(), NodeError> {
        let record = self.request_record(id).await?;
        let rule = &self.inner.config.policy.approvals;
        let approvals: Vec<SignedDecision> = record
            .decisions
            .iter()
            .filter(|d| d.decision == Decision::Approve && rule.approver(&d.public_key).is_some())
            .map(|d| SignedDecision {
                public_key: d.public_key.clone(),
                signature: d.signature.clone(),
            })
            .collect();
        if approvals.len() < usize::from(record.required) {
            return Ok(());
        }
        let now = now_ms();
        if !self
            .inner
            .store
            .transition_approval_request(
                id,
                RequestState::Pending,
                RequestState::Signing,
                None,
                None,
                now,
            )
            .await?
        {
            return Ok(());
        }
        let evidence = ApprovalEvidence {
            request: id,
            expires_at_ms: record.expires_at,
            approvals,
        };
        let signed = self
            .sign_psbt_approved(id, &record.wallet_ids, &record.psbt, Some(evidence))
            .await;
        match signed {
            Ok(report) => {
                // A payment's inputs are spent now (its change output is not registered:
                // register it as after `psbt/sign`).
                if let Err(e) = self.record_signed(&report).await {
                    warn!(request = %id, error = %e, "could not mark registered outputs spent");
                }
                let json = serde_json::to_string(&report)
                    .map_err(|e| NodeError::Internal(format!("sign report: {e}")))?;
                self.close(
                    &record,
                    RequestState::Signing,
                    RequestState::Signed,
                    Some(&json),
                    None,
                )
                .await
            }
            Err(e) => {
                let error = e.to_string();
                self.close(
                    &record,
                    RequestState::Signing,
                    RequestState::Failed,
                    None,
                    Some(&error),
                )
                .await?;
                Err(e)
            }
        }
    }

    async fn close(
        &self,
        record: &ApprovalRequestRecord,
        from: RequestState,
        to: RequestState,
        result: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), NodeError> {
        if self
            .inner
            .store
            .transition_approval_request(record.id, from, to, result, error, now_ms())
            .await?
        {
            self.audit_after(AuditEvent::ApprovalRequestClosed {
                request: record.id,
                state: to.to_string(),
                txid: record.txid.clone(),
                error: error.map(str::to_owned),
            })
            .await;
        }
        Ok(())
    }

    /// Marks the pending requests whose expiry passed expired, each in the audit log.
    async fn expire_due(&self) -> Result<(), NodeError> {
        for id in self.inner.store.expire_approval_requests(now_ms()).await? {
            let txid = match self.inner.store.approval_request(id).await? {
                Some(r) => r.txid,
                None => String::new(),
            };
            self.audit_after(AuditEvent::ApprovalRequestClosed {
                request: id,
                state: RequestState::Expired.to_string(),
                txid,
                error: None,
            })
            .await;
        }
        Ok(())
    }
}
