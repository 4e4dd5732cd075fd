//! The coordinator's side of signing: picks a signer set and presignatures, proposes the
//! PSBT, combines and verifies the signatures, retries on other signer sets without the nodes
//! that failed.

use mpc_types::WalletId;
use std::time::{Duration, Instant};

use mpc_bitcoin::{
    bitcoin::psbt::Psbt,
    finalize::{finalize, insert_signature, InputSignature},
    psbt::{analyze, parse_psbt, spent_outputs, JobMessage, SigningJob},
    verify::verify_transaction,
    WalletError,
};
use mpc_protocols::{
    ecdsa::{self, PresignatureBinding, PresignaturePublic},
    schnorr,
    signature::PublicKey,
    ProtocolError,
};
use mpc_store::{AuditEvent, WalletRecord};
use mpc_transport::{
    evidence::{Evidence, Fault},
    NodeId, SessionId,
};
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::{
    audit,
    config::Limits,
    control::{ApprovalEvidence, InputOutcome, Outcome, ProposalBody},
    keys::keygen_indices,
    now_ms,
    proposals::OutcomeEnvelopes,
    ready::{ReadyKey, READ_AHEAD},
    refusal::RefusalKind,
    Node, NodeError,
};

use super::{
    interactive_inputs, interactive_limit, AttemptReport, InputReport, RequestWallets, SignReport,
};

/// What every attempt proposes as the request gave it: the PSBT (base64) and the approvals.
#[derive(Clone, Copy)]
struct Proposed<'a> {
    psbt_base64: &'a str,
    approvals: Option<&'a ApprovalEvidence>,
}

/// Signing attempts per request at most: each may cost seconds of CPU at every signer
/// (interactive ECDSA), and with one hostile node the second attempt already avoids it.
const MAX_ATTEMPTS: u32 = 4;

impl Node {
    /// Signs `psbt` (base64) with the given wallets: every input must belong to one of them.
    /// The request and its outcome are in the audit log; a failed append fails the request
    /// (before any session starts, or instead of handing out the signed transaction).
    pub async fn sign_psbt(
        &self,
        session: Uuid,
        wallet_ids: &[WalletId],
        psbt_base64: &str,
    ) -> Result<SignReport, NodeError> {
        self.sign_psbt_approved(session, wallet_ids, psbt_base64, None)
            .await
    }

    /// [`Self::sign_psbt`] with the approvals of a request that waited for them, sent along
    /// to every signer.
    pub(crate) async fn sign_psbt_approved(
        &self,
        session: Uuid,
        wallet_ids: &[WalletId],
        psbt_base64: &str,
        approvals: Option<ApprovalEvidence>,
    ) -> Result<SignReport, NodeError> {
        let (txid, outputs) = audit::psbt_summary(psbt_base64);
        self.audit(AuditEvent::SigningRequested {
            session,
            wallet_ids: wallet_ids.to_vec(),
            txid: txid.clone(),
            outputs,
        })
        .await?;
        let result = self
            .sign_psbt_unaudited(session, wallet_ids, psbt_base64, approvals.as_ref())
            .await;
        if result.is_err() {
            self.release_held_outputs(session).await;
        }
        let finished = match &result {
            Ok(report) => AuditEvent::SigningFinished {
                session,
                txid: Some(report.txid.to_string()),
                ok: true,
                signers: report.signers.iter().map(|n| n.get()).collect(),
                rule: None,
                error: None,
            },
            Err(e) => AuditEvent::SigningFinished {
                session,
                txid,
                ok: false,
                signers: Vec::new(),
                rule: Some(audit::refusal_rule(e)),
                error: Some(e.to_string()),
            },
        };
        let recorded = self.audit(finished).await;
        self.fail_closed(result, recorded)
    }

    async fn sign_psbt_unaudited(
        &self,
        session: Uuid,
        wallet_ids: &[WalletId],
        psbt_base64: &str,
        approvals: Option<&ApprovalEvidence>,
    ) -> Result<SignReport, NodeError> {
        let started = Instant::now();
        let span = tracing::info_span!("sign", node = self.id().get(), %session);
        async {
            let wallets = self.request_wallets(wallet_ids).await?;
            let psbt = parse_psbt(psbt_base64)?;
            // The coordinator checks first, so a bad request starts no session at all.
            let jobs = analyze(&psbt, &wallets.keys(), &self.tx_rules())?;
            let summary = self.check_policy(&psbt, &jobs, &wallets, true).await?;
            self.check_approvals(&psbt, &summary, &wallets, approvals)?;
            self.hold_spent_outputs(session, &psbt).await;
            tracing::debug!(
                prepare_ms = started.elapsed().as_secs_f64() * 1e3,
                "coordinator: request checked"
            );
            let mut attempts = Vec::new();
            let mut exclude: Vec<NodeId> = Vec::new();
            let mut tried: Vec<Vec<NodeId>> = Vec::new();
            let mut last_error = None;
            let mut last_refusal = None;
            // Retries go on while the failures are ones another set may not have, an untried
            // set is left and the request's deadline allows, at most MAX_ATTEMPTS in all.
            let deadline = Duration::from_millis(self.inner.config.limits.max_sign_request_ms);
            for attempt in 0..MAX_ATTEMPTS {
                if attempt > 0 && started.elapsed() >= deadline {
                    break;
                }
                let attempt_session = if attempt == 0 {
                    session
                } else {
                    SessionId::from_uuid(session)
                        .derive(&format!("retry/{attempt}"))
                        .as_uuid()
                };
                let signers = match self
                    .pick_signers(&wallets.records[0], &exclude, &tried)
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        last_error = Some(e);
                        break;
                    }
                };
                let t0 = Instant::now();
                let result = self
                    .sign_attempt(
                        attempt_session,
                        &wallets,
                        &psbt,
                        &jobs,
                        &signers,
                        Proposed {
                            psbt_base64,
                            approvals,
                        },
                    )
                    .await;
                let duration_ms = t0.elapsed().as_secs_f64() * 1e3;
                match result {
                    Ok((psbt, inputs)) => {
                        attempts.push(AttemptReport {
                            signers: signers.clone(),
                            error: None,
                            duration_ms,
                        });
                        let report =
                            self.finish_signing(session, psbt, signers, inputs, attempts, started)?;
                        self.note_change_used(&wallets, &summary).await;
                        self.announce_signed(&wallets, psbt_base64, &report);
                        return Ok(report);
                    }
                    Err(e) => {
                        warn!(attempt, ?signers, error = %e, "signing attempt failed");
                        attempts.push(AttemptReport {
                            signers: signers.clone(),
                            error: Some(e.to_string()),
                            duration_ms,
                        });
                        let culprits = e.culprits();
                        self.record_incidents(
                            attempt_session,
                            &wallets.records[0].id,
                            &signers,
                            &e,
                        )
                        .await;
                        // A run the protocol aborted on someone it does not name: another
                        // signer set may not include them.
                        let aborted = match &e {
                            NodeError::Protocol(_) => true,
                            NodeError::Refused { refusal, .. } => {
                                refusal.kind == RefusalKind::ProtocolAborted
                            }
                            _ => false,
                        };
                        let retryable = !culprits.is_empty() || aborted;
                        exclude.extend(culprits);
                        tried.push(signers.clone());
                        if let NodeError::Refused { node, refusal } = &e {
                            if refusal.kind != RefusalKind::Failed {
                                last_refusal = Some((*node, refusal.clone()));
                            }
                        }
                        last_error = Some(e);
                        if !retryable {
                            break;
                        }
                    }
                }
            }
            let detail = attempts
                .iter()
                .map(|a| {
                    format!(
                        "signers {:?}: {}",
                        a.signers,
                        a.error.as_deref().unwrap_or("ok")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            Err(match (last_refusal, last_error) {
                // A signer's own answer says more than a later lack of signers or a timeout,
                // and keeps its code (`policy_refused`, `psbt_refused`, ...) for the client.
                (Some((node, mut refusal)), _) => {
                    if attempts.len() > 1 {
                        refusal.message = format!("{} (attempts: {detail})", refusal.message);
                    }
                    NodeError::Refused { node, refusal }
                }
                (None, Some(e @ NodeError::Timeout { .. })) => e,
                (None, Some(e)) if attempts.len() > 1 => {
                    NodeError::Unavailable(format!("{e} (attempts: {detail})"))
                }
                (None, Some(e)) => e,
                (None, None) => NodeError::Internal("no signing attempt ran".into()),
            })
        }
        .instrument(span)
        .await
    }

    fn finish_signing(
        &self,
        session: Uuid,
        mut psbt: Psbt,
        signers: Vec<NodeId>,
        inputs: Vec<InputReport>,
        attempts: Vec<AttemptReport>,
        started: Instant,
    ) -> Result<SignReport, NodeError> {
        let t_finish = Instant::now();
        let spent = spent_outputs(&psbt).map_err(WalletError::Inputs)?;
        let tx = finalize(&mut psbt)?;
        // Invariant 8: nothing leaves unverified; the script interpreter gets the spent outputs.
        verify_transaction(&tx, &spent)?;
        let report = SignReport {
            session,
            psbt: psbt.to_string(),
            txid: tx.compute_txid(),
            raw_transaction: tx,
            signers,
            inputs,
            attempts,
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
        };
        info!(
            txid = %report.txid,
            signers = ?report.signers,
            ms = report.duration_ms,
            finish_ms = t_finish.elapsed().as_secs_f64() * 1e3,
            "signed and verified"
        );
        Ok(report)
    }

    /// Picks a ready presignature for each ECDSA job, if this node signs and holds one, and
    /// marks it used. Remembered ones first; the store is read only when none is remembered.
    async fn reserve_presignatures(
        &self,
        wallets: &RequestWallets,
        jobs: &[SigningJob],
        signers: &[NodeId],
        inputs: usize,
    ) -> Result<Vec<Option<String>>, NodeError> {
        let mut chosen = vec![None; inputs];
        if !signers.contains(&self.id()) {
            return Ok(chosen);
        }
        for job in jobs {
            if !matches!(job.message, JobMessage::Ecdsa { .. }) {
                continue;
            }
            let key = ReadyKey {
                wallet_id: wallets.records[job.wallet].id.clone(),
                path: job.path.to_string(),
                signers: signers.to_vec(),
            };
            let mut picked = self.ready()?.take(&key, now_ms());
            if picked.is_none() {
                let listed = self
                    .inner
                    .store
                    .ready_presignatures(&key.wallet_id, &key.path, signers, now_ms(), READ_AHEAD)
                    .await?;
                let mut ready = self.ready()?;
                ready.remember(key.clone(), listed);
                picked = ready.take(&key, now_ms());
            }
            chosen[job.input] = picked;
        }
        Ok(chosen)
    }

    async fn sign_attempt(
        &self,
        session: Uuid,
        wallets: &RequestWallets,
        psbt: &Psbt,
        jobs: &[SigningJob],
        signers: &[NodeId],
        proposed: Proposed<'_>,
    ) -> Result<(Psbt, Vec<InputReport>), NodeError> {
        let t_start = Instant::now();
        let presignatures = self
            .reserve_presignatures(wallets, jobs, signers, psbt.inputs.len())
            .await?;
        let t_reserved = Instant::now();
        let limits = &self.inner.config.limits;
        let interactive = interactive_inputs(jobs, &presignatures);
        if interactive > limits.max_interactive_inputs {
            self.ready()?.put_back(&presignatures);
            return Err(interactive_limit(
                interactive,
                limits.max_interactive_inputs,
            ));
        }
        // Bounded whatever the request: one deadline per interactive input, up to a cap.
        let timeout = Limits::ms(
            limits
                .sign_timeout_ms
                .saturating_add(interactive as u64 * limits.full_sign_timeout_ms)
                .min(limits.max_sign_request_ms),
        );
        // The signers' outcomes as they came (signed): the evidence if one fails the checks
        // below.
        let envelopes = OutcomeEnvelopes::default();
        let outcomes = self
            .coordinate_keeping(
                session,
                ProposalBody::Sign {
                    wallet_ids: wallets.records.iter().map(|r| r.id.clone()).collect(),
                    psbt: proposed.psbt_base64.to_string(),
                    signers: signers.to_vec(),
                    presignatures: presignatures.clone(),
                    key_epochs: wallets.records.iter().map(|r| r.key_epoch).collect(),
                    approvals: proposed.approvals.cloned(),
                },
                signers,
                timeout,
                None,
                &envelopes,
            )
            .await;
        let t_answered = Instant::now();
        tracing::debug!(
            reserve_ms = (t_reserved - t_start).as_secs_f64() * 1e3,
            round_trip_ms = (t_answered - t_reserved).as_secs_f64() * 1e3,
            "coordinator: signers answered"
        );
        if outcomes.is_err() {
            // Some signers may have consumed theirs; never offer these again.
            for id in presignatures.iter().flatten() {
                if let Err(e) = self.inner.store.discard_presignature(id, now_ms()).await {
                    warn!(presignature = %id, error = %e, "could not discard a presignature");
                }
            }
        }
        let outcomes = outcomes?;
        let per_signer: Vec<&Vec<InputOutcome>> = outcomes
            .iter()
            .map(|(node, o)| match o {
                Outcome::Sign { inputs } if inputs.len() == jobs.len() => Ok(inputs),
                _ => Err(NodeError::Misbehaved {
                    node: *node,
                    reason: "malformed signing outcome".into(),
                    evidence: self.outcome_evidence(*node, &envelopes),
                }),
            })
            .collect::<Result<_, _>>()?;

        let mut psbt = psbt.clone();
        let mut reports = Vec::with_capacity(jobs.len());
        for (k, job) in jobs.iter().enumerate() {
            let wallet = &wallets.records[job.wallet];
            let key = &wallets.keys[job.wallet];
            let results: Vec<&InputOutcome> = per_signer.iter().map(|inputs| &inputs[k]).collect();
            let (signature, method) = self
                .combine_input(wallet, job, signers, &results, &envelopes)
                .await?;
            insert_signature(&mut psbt, job, &signature)?;
            reports.push(InputReport {
                input: job.input,
                wallet_id: wallet.id.clone(),
                scheme: key.scheme,
                path: job.path.to_string(),
                sighash: hex::encode(job.message.sighash()),
                method,
                presignature: presignatures[job.input].clone(),
            });
        }
        Ok((psbt, reports))
    }
}

impl Node {
    /// Evidence that `node` sent the outcome it did: its signed envelope and certificate.
    /// Whether the outcome is wrong depends on the proposal it answers (the number of inputs,
    /// the signer's index in the wallet), which the envelope does not carry: the evidence
    /// shows what was sent ([`Fault::Exhibit`]), for an operator to judge.
    fn outcome_evidence(&self, node: NodeId, envelopes: &OutcomeEnvelopes) -> Option<Vec<u8>> {
        let envelope = envelopes.lock().ok()?.get(&node).cloned()?;
        let certificate = self.inner.transport.peer_certificate(node)?;
        Some(
            Evidence {
                accused: node,
                fault: Fault::Exhibit,
                certificate,
                envelopes: vec![envelope],
            }
            .encode(),
        )
    }

    /// The signer at key-generation index `signer` misbehaved, as the protocol layer proved
    /// from its outcome (`e`): named, with that outcome as evidence.
    fn misbehaved(
        &self,
        wallet: &WalletRecord,
        signer: mpc_protocols::PartyIndex,
        reason: String,
        envelopes: &OutcomeEnvelopes,
        e: ProtocolError,
    ) -> NodeError {
        match mpc_types::node_at(&wallet.participants, signer) {
            Some(node) => NodeError::Misbehaved {
                node,
                reason,
                evidence: self.outcome_evidence(node, envelopes),
            },
            None => NodeError::Protocol(e),
        }
    }

    /// Turns the signers' results for one input into one verified signature.
    async fn combine_input(
        &self,
        wallet: &WalletRecord,
        job: &SigningJob,
        signers: &[NodeId],
        results: &[&InputOutcome],
        envelopes: &OutcomeEnvelopes,
    ) -> Result<(InputSignature, &'static str), NodeError> {
        match (&job.message, results.first()) {
            (
                JobMessage::Ecdsa {
                    preimage,
                    public_key,
                    ..
                },
                Some(InputOutcome::Partial { public, .. }),
            ) => {
                let mut partials = Vec::with_capacity(results.len());
                for r in results {
                    match r {
                        InputOutcome::Partial { partial, public: p } if p == public => {
                            partials.push(partial.clone())
                        }
                        _ => {
                            return Err(NodeError::Disagreement(format!(
                                "signers answered input {} with different presignatures",
                                job.input
                            )))
                        }
                    }
                }
                let binding = PresignatureBinding {
                    master_key: PublicKey(wallet.public_key.serialize()),
                    path: job.path.clone(),
                    signers: keygen_indices(&wallet.participants, signers)?,
                };
                // The key the PSBT check derived (rust-bitcoin) and matched to the spent script.
                let child = PublicKey(public_key.serialize());
                let public: &PresignaturePublic = public;
                let sig =
                    ecdsa::combine(public, &binding, &partials, preimage, &child).map_err(|e| {
                        match e {
                            // The partial does not match the commitment every signer reported for
                            // it: that signer cheated, whatever the others did.
                            ProtocolError::BadPartialSignature { signer } => self.misbehaved(
                                wallet,
                                signer,
                                format!(
                                    "its partial signature for input {} does not match its \
                                     presignature commitment",
                                    job.input
                                ),
                                envelopes,
                                e,
                            ),
                            e => NodeError::Protocol(e),
                        }
                    })?;
                Ok((InputSignature::Ecdsa(sig), "presignature"))
            }
            (JobMessage::Ecdsa { .. }, Some(InputOutcome::Ecdsa(sig))) => {
                Ok((InputSignature::Ecdsa(*sig), "interactive"))
            }
            (
                JobMessage::Schnorr {
                    sighash,
                    internal_key,
                    ..
                },
                Some(InputOutcome::FrostShare(_)),
            ) => {
                // Results come in signer order; each share must claim its sender's index.
                let indices = keygen_indices(&wallet.participants, signers)?;
                let mut shares = Vec::with_capacity(results.len());
                for ((r, node), index) in results.iter().zip(signers).zip(indices) {
                    match r {
                        InputOutcome::FrostShare(share) if share.signer() == index => {
                            shares.push(share.clone())
                        }
                        InputOutcome::FrostShare(share) => {
                            return Err(NodeError::Misbehaved {
                                node: *node,
                                reason: format!(
                                    "its FROST share for input {} claims signer index {}, \
                                     not its own {index}",
                                    job.input,
                                    share.signer()
                                ),
                                evidence: self.outcome_evidence(*node, envelopes),
                            })
                        }
                        _ => {
                            return Err(NodeError::Disagreement(format!(
                                "signers answered Taproot input {} with something other than \
                                 a FROST signature share",
                                job.input
                            )))
                        }
                    }
                }
                // Only the public part of this node's share is used; the signature must verify
                // against the key the PSBT check derived (rust-bitcoin) and matched.
                let key_share = self.schnorr_share(wallet).await?;
                let internal_key = internal_key.serialize();
                let sig =
                    schnorr::aggregate(&key_share, &job.path, &internal_key, sighash, &shares)
                        .map_err(|e| match e {
                            // The share does not fit the nonce commitments its own signer listed
                            // with it, or that signer sent this node other commitments than it
                            // lists: it cheated, whatever the others did.
                            ProtocolError::BadSignatureShare { signer } => self.misbehaved(
                                wallet,
                                signer,
                                format!(
                                    "its FROST signature share for input {} does not verify",
                                    job.input
                                ),
                                envelopes,
                                e,
                            ),
                            e => NodeError::Protocol(e),
                        })?;
                Ok((InputSignature::Schnorr(sig), "frost"))
            }
            _ => Err(NodeError::Disagreement(format!(
                "unexpected signer results for input {}",
                job.input
            ))),
        }
    }
}
