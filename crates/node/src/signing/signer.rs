//! The signer's side: every check made on this node's own data, then the durable commit,
//! then the partial signature or share.

use mpc_types::WalletId;
use std::{collections::HashMap, time::Instant};

use mpc_bitcoin::{
    policy,
    psbt::{analyze, parse_psbt, JobMessage, SigningJob},
};
use mpc_protocols::{
    ecdsa::{self, Presignature},
    execution::{ExecutionId, ProtocolKind},
    schnorr, PartyIndex,
};
use mpc_store::{Actor, AuditEvent, PresignatureUse, SigningRefusal, WalletRecord};
use mpc_transport::{NodeId, SessionId};
use rand_core::OsRng;
use uuid::Uuid;

use crate::{
    config::Limits,
    control::{ApprovalEvidence, InputOutcome, Outcome},
    delivery::run_blocking,
    now_ms, Node, NodeError,
};

use super::{interactive_inputs, interactive_limit, RequestWallets};

impl Node {
    /// Starts this node's FROST signing of one Taproot input: the nonce commitments go out at
    /// once; the signature share comes back to the caller, which sends it only after its own
    /// checks and durable commit.
    async fn start_frost(
        &self,
        session: Uuid,
        job: &SigningJob,
        sighash: [u8; 32],
        wallet: &WalletRecord,
        signers: &[NodeId],
        indices: &[PartyIndex],
    ) -> Result<FrostRun, NodeError> {
        let share = self.schnorr_share(wallet).await?;
        let sub = SessionId::from_uuid(session).derive(&format!("input/{}", job.input));
        // A sub-session this node already ran means the session was used before.
        let party = self
            .join_session(
                sub,
                ProtocolKind::SchnorrSign,
                signers,
                Limits::ms(self.inner.config.limits.sign_timeout_ms),
            )
            .map_err(|_| NodeError::SessionReplayed(session))?;
        let (path, indices) = (job.path.clone(), indices.to_vec());
        Ok(tokio::spawn(run_blocking(move || async move {
            schnorr::sign_share(&share, &indices, &path, &sighash, party, &mut OsRng).await
        })))
    }

    /// The coordinator's key epochs (when it sent them) must be this node's: a signer whose
    /// wallet was refreshed on one side only would sign with a share that does not combine,
    /// and be named for it. A refusal, not blame: the request fails and can be sent again.
    fn check_key_epochs(
        &self,
        wallets: &RequestWallets,
        key_epochs: &[u64],
    ) -> Result<(), NodeError> {
        if key_epochs.is_empty() {
            return Ok(());
        }
        if key_epochs.len() != wallets.records.len() {
            return Err(NodeError::InvalidRequest(format!(
                "{} key epochs for {} wallets",
                key_epochs.len(),
                wallets.records.len()
            )));
        }
        for (record, &theirs) in wallets.records.iter().zip(key_epochs) {
            if record.key_epoch != theirs {
                return Err(NodeError::InvalidRequest(format!(
                    "wallet {} is at key epoch {} on node {}, not {theirs} as proposed (a refresh \
                     committed between them): send the request again",
                    record.id,
                    record.key_epoch,
                    self.id()
                )));
            }
        }
        Ok(())
    }

    /// The signer's side: every check made here, on this node's own data.
    // The proposal's parts, as `participate` unpacks them, and who proposed it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn sign_participant(
        &self,
        coordinator: NodeId,
        session: Uuid,
        (wallet_ids, key_epochs): (&[WalletId], &[u64]),
        psbt_base64: &str,
        signers: &[NodeId],
        presignatures: &[Option<String>],
        approvals: Option<&ApprovalEvidence>,
    ) -> Result<Signed, NodeError> {
        let t_start = Instant::now();
        let wallets = self.request_wallets(wallet_ids).await?;
        self.check_key_epochs(&wallets, key_epochs)?;
        let indices = self.check_signers(&wallets.records[0], signers)?;
        let psbt = parse_psbt(psbt_base64)?;
        // Invariants 2 and 9: the sighashes are computed here, from the PSBT and the spent
        // outputs proven to this node, for a transaction valid by this node's rules.
        let jobs = analyze(&psbt, &wallets.keys(), &self.tx_rules())?;
        if presignatures.len() != psbt.inputs.len() {
            return Err(NodeError::InvalidRequest(
                "one presignature slot per input expected".into(),
            ));
        }
        let max_interactive = self.inner.config.limits.max_interactive_inputs;
        let interactive = interactive_inputs(&jobs, presignatures);
        if interactive > max_interactive {
            return Err(interactive_limit(interactive, max_interactive));
        }
        // FROST inputs start now, all at once, for the sighashes computed here: their one
        // round (nonce commitments, which reveal nothing about the share) travels while the
        // policy check and the durable commit below run; the signature shares leave only in
        // this node's outcome, after both passed, and never if either refuses.
        let mut frost_runs = HashMap::new();
        for job in &jobs {
            if let JobMessage::Schnorr { sighash, .. } = &job.message {
                let run = self
                    .start_frost(
                        session,
                        job,
                        *sighash,
                        &wallets.records[job.wallet],
                        signers,
                        &indices,
                    )
                    .await?;
                frost_runs.insert(job.input, run);
            }
        }
        // This node's own limits, whatever the coordinator decided.
        let summary = self.check_policy(&psbt, &jobs, &wallets, false).await?;
        // And this node's approval rule, against its own approvers and clock: a coordinator
        // cannot skip, reuse or stretch the approvals.
        self.check_approvals(&psbt, &summary, &wallets, approvals)?;
        self.note_funded_paths(&summary, &wallets.keys(), &wallets.records);
        // Each presignature must be for this wallet, path and signer set (checked again where
        // it is consumed, in the same transaction) and for an ECDSA input.
        let mut chosen: Vec<PresignatureUse> = Vec::new();
        for job in &jobs {
            if let Some(id) = &presignatures[job.input] {
                if !matches!(job.message, JobMessage::Ecdsa { .. }) {
                    return Err(NodeError::InvalidRequest(format!(
                        "input {} is Taproot: presignatures are ECDSA only",
                        job.input
                    )));
                }
                chosen.push(PresignatureUse {
                    id,
                    wallet_id: &wallets.records[job.wallet].id,
                    path: &job.path,
                    signers,
                });
            }
        }
        let t_checked = Instant::now();
        let spends: Vec<(&WalletId, u64)> = summary
            .leaving_by_wallet
            .iter()
            .map(|(w, amount)| (&wallets.records[*w].id, *amount))
            .collect();
        // Invariants 1 and 4, and the 24-hour limit, in one commit before anything derived
        // from this node's shares leaves it: session marked seen, amounts checked against the
        // limit and counted (counted even if the signing then fails: the safe direction),
        // presignatures consumed.
        if !chosen.is_empty() {
            crate::failpoint::crash_point("consume:before");
        }
        let secrets = self
            .inner
            .store
            .begin_signing(session, &chosen, &spends, self.spend_limit(), now_ms())
            .await?
            .map_err(|refusal| match refusal {
                SigningRefusal::SessionUsed => NodeError::SessionReplayed(session),
                SigningRefusal::PresignatureUnavailable(id) => NodeError::PresignatureUnavailable {
                    presignature: id,
                    detail: "was already used, has expired, or is unknown here".into(),
                },
                SigningRefusal::PresignatureBoundElsewhere { id, bound_to } => {
                    NodeError::PresignatureUnavailable {
                        presignature: id,
                        detail: format!("is bound to {bound_to}, not to this input"),
                    }
                }
                SigningRefusal::SpendLimit {
                    wallet_id,
                    spent_sats,
                    amount_sats,
                    max_sats,
                } => NodeError::Policy(policy::spend_limit_violation(
                    wallet_id.as_str(),
                    spent_sats,
                    amount_sats,
                    max_sats,
                )),
            })?;
        if !chosen.is_empty() {
            crate::failpoint::crash_point("consume:committed");
            self.ready()?.used(chosen.iter().map(|p| p.id));
        }
        self.note_change_used(&wallets, &summary).await;
        // Interactive ECDSA sends this node's partial signature to the other signers in the
        // protocol's last round, before any outcome: its release is recorded first, and
        // nothing runs if that fails (fail closed, like the outcome's record otherwise).
        let recorded_ahead = interactive > 0;
        if recorded_ahead {
            self.audit_as(
                &Actor::Peer(coordinator.get()),
                AuditEvent::SignerSigned {
                    session,
                    coordinator: coordinator.get(),
                    wallet_ids: wallet_ids.to_vec(),
                    txid: Some(psbt.unsigned_tx.compute_txid().to_string()),
                },
            )
            .await?;
        }
        let t_committed = Instant::now();
        let mut secrets = secrets.into_iter();
        let limits = &self.inner.config.limits;
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let wallet = &wallets.records[job.wallet];
            let sub = SessionId::from_uuid(session).derive(&format!("input/{}", job.input));
            let outcome = match (&job.message, &presignatures[job.input]) {
                (JobMessage::Ecdsa { preimage, .. }, Some(_)) => {
                    let secret = secrets.next().ok_or_else(|| {
                        NodeError::Internal("a consumed presignature is missing".into())
                    })?;
                    let share = self.ecdsa_share(wallet).await?;
                    let presig = Presignature::from_bytes(&secret)?;
                    let public = presig.public().clone();
                    let partial =
                        presig.issue_partial_signature(&share, &job.path, &indices, preimage)?;
                    InputOutcome::Partial { partial, public }
                }
                (JobMessage::Ecdsa { preimage, .. }, None) => {
                    let share = self.ecdsa_share(wallet).await?;
                    let eid = ExecutionId::derive(
                        ProtocolKind::EcdsaSign,
                        wallet.id.as_str(),
                        sub.as_uuid(),
                        &indices,
                        &preimage.sighash(),
                    );
                    let party = self.join_session(
                        sub,
                        ProtocolKind::EcdsaSign,
                        signers,
                        Limits::ms(limits.full_sign_timeout_ms),
                    )?;
                    let (path, preimage, indices) =
                        (job.path.clone(), preimage.clone(), indices.clone());
                    let sig = run_blocking(move || async move {
                        ecdsa::sign(&eid, &share, &indices, &path, &preimage, party, &mut OsRng)
                            .await
                    })
                    .await?
                    .map_err(|e| self.attribute(sub, e))?;
                    InputOutcome::Ecdsa(sig)
                }
                (JobMessage::Schnorr { .. }, None) => {
                    let run = frost_runs.remove(&job.input).ok_or_else(|| {
                        NodeError::Internal("a Taproot input was not started".into())
                    })?;
                    let share = run
                        .await
                        .map_err(|e| NodeError::Internal(format!("FROST task: {e}")))??
                        .map_err(|e| self.attribute(sub, e))?;
                    InputOutcome::FrostShare(share)
                }
                (JobMessage::Schnorr { .. }, Some(_)) => {
                    return Err(NodeError::Internal(
                        "a Taproot input passed the presignature check".into(),
                    ))
                }
            };
            outcomes.push(outcome);
        }
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        tracing::debug!(
            checks_ms = ms(t_start, t_checked),
            commit_ms = ms(t_checked, t_committed),
            sign_ms = ms(t_committed, Instant::now()),
            "signer steps"
        );
        Ok(Signed {
            outcome: Outcome::Sign { inputs: outcomes },
            recorded_ahead,
        })
    }
}

/// A signer's outcome, and whether its release was recorded in the audit log before it ran.
pub(crate) struct Signed {
    pub outcome: Outcome,
    pub recorded_ahead: bool,
}

/// A signer's FROST run (one input) on its own thread.
type FrostRun = tokio::task::JoinHandle<
    Result<Result<schnorr::SchnorrSignatureShare, mpc_protocols::ProtocolError>, NodeError>,
>;
