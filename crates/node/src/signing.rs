//! Signing a PSBT: the coordinator and the signer.
//!
//! The coordinator picks a live signer set and, for ECDSA inputs, a presignature it holds for
//! (wallet, path, signer set); then proposes the PSBT itself to the signers. **Each signer**
//! parses the PSBT, checks that every input belongs to the wallet at the claimed path,
//! recomputes the sighash, and only then signs: from a presignature (consumed durably before
//! the partial signature leaves the node), interactively, or with FROST. The coordinator
//! combines, verifies every signature, finalizes, verifies the transaction with
//! `bitcoinconsensus`, and returns it. A failed attempt is retried once with another signer
//! set that avoids the nodes that failed.

use std::{collections::HashMap, time::Instant};

use mpc_bitcoin::{
    bitcoin::{consensus, psbt::Psbt},
    finalize::{finalize, insert_signature, InputSignature},
    policy::{self, ChangeRule, SpendSummary},
    psbt::{analyze, parse_psbt, spent_outputs, JobMessage, SigningJob},
    verify::verify_transaction,
    Scheme, TxRules, WalletError, WalletKey,
};
use mpc_protocols::{
    ecdsa::{self, Presignature, PresignatureBinding, PresignaturePublic},
    execution::{ExecutionId, ProtocolKind},
    schnorr,
    signature::PublicKey,
};
use mpc_store::{PresignatureUse, SigningRefusal, SpendLimit, WalletRecord};
use mpc_transport::{NodeId, SessionId};
use rand_core::OsRng;
use serde::Serialize;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::{
    config::Limits,
    control::{Control, InputOutcome, Outcome, ProposalBody},
    delivery::run_blocking,
    keys::{keygen_indices, wallet_key},
    now_ms,
    ready::{ReadyKey, ReadyPresignatures, READ_AHEAD},
    refusal::RefusalKind,
    Node, NodeError,
};

/// How one input was signed.
#[derive(Debug, Clone, Serialize)]
pub struct InputReport {
    pub input: usize,
    pub wallet_id: String,
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
    pub raw_transaction: String,
    pub txid: String,
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
            .check(psbt, &summary, &keys, &spent_24h, &config.cluster.network)?;
        Ok(summary)
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
        wallet_ids: &[String],
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
        self.note_funded_paths(&jobs, &summary, &wallets.keys(), &wallets.records);
        Ok(summary.change.len())
    }

    /// Tells the wallets' participants that did not sign about a transaction the cluster
    /// signed (in the background; a notice lost changes nothing but what they learn).
    fn announce_signed(&self, wallets: &RequestWallets, psbt_base64: &str, report: &SignReport) {
        let notice = Control::Signed {
            wallet_ids: wallets.records.iter().map(|r| r.id.clone()).collect(),
            psbt: psbt_base64.to_owned(),
            raw_transaction: report.raw_transaction.clone(),
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
                        tracing::debug!(to, error = %e, "signed-transaction notice not sent");
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

    async fn request_wallets(&self, wallet_ids: &[String]) -> Result<RequestWallets, NodeError> {
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

    /// Signs `psbt` (base64) with the given wallets: every input must belong to one of them.
    pub async fn sign_psbt(
        &self,
        session: Uuid,
        wallet_ids: &[String],
        psbt_base64: &str,
    ) -> Result<SignReport, NodeError> {
        let started = Instant::now();
        let span = tracing::info_span!("sign", node = self.id(), %session);
        async {
            let wallets = self.request_wallets(wallet_ids).await?;
            let psbt = parse_psbt(psbt_base64)?;
            // The coordinator checks first, so a bad request starts no session at all.
            let jobs = analyze(&psbt, &wallets.keys(), &self.tx_rules())?;
            let summary = self.check_policy(&psbt, &jobs, &wallets, true).await?;
            tracing::debug!(
                prepare_ms = started.elapsed().as_secs_f64() * 1e3,
                "coordinator: request checked"
            );
            let mut attempts = Vec::new();
            let mut exclude: Vec<NodeId> = Vec::new();
            let mut last_error = None;
            let mut last_refusal = None;
            for attempt in 0..2u32 {
                let attempt_session = if attempt == 0 {
                    session
                } else {
                    SessionId::from_uuid(session)
                        .derive(&format!("retry/{attempt}"))
                        .as_uuid()
                };
                let signers = match self.pick_signers(&wallets.records[0], &exclude) {
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
                        psbt_base64,
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
                        let retryable = !culprits.is_empty();
                        exclude.extend(culprits);
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
                (Some((node, mut refusal)), Some(_)) if attempts.len() > 1 => {
                    refusal.message = format!("{} (attempts: {detail})", refusal.message);
                    NodeError::Refused { node, refusal }
                }
                (Some((node, refusal)), _) => NodeError::Refused { node, refusal },
                (None, Some(NodeError::Timeout { nodes, seconds })) => {
                    NodeError::Timeout { nodes, seconds }
                }
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
            raw_transaction: consensus::encode::serialize_hex(&tx),
            txid: tx.compute_txid().to_string(),
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

    fn ready(&self) -> Result<std::sync::MutexGuard<'_, ReadyPresignatures>, NodeError> {
        self.inner
            .ready
            .lock()
            .map_err(|_| NodeError::Internal("ready-presignature lock".into()))
    }

    async fn sign_attempt(
        &self,
        session: Uuid,
        wallets: &RequestWallets,
        psbt: &Psbt,
        jobs: &[SigningJob],
        signers: &[NodeId],
        psbt_base64: &str,
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
        let outcomes = self
            .coordinate(
                session,
                ProposalBody::Sign {
                    wallet_ids: wallets.records.iter().map(|r| r.id.clone()).collect(),
                    psbt: psbt_base64.to_string(),
                    signers: signers.to_vec(),
                    presignatures: presignatures.clone(),
                },
                signers,
                timeout,
                None,
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
                }),
            })
            .collect::<Result<_, _>>()?;

        let mut psbt = psbt.clone();
        let mut reports = Vec::with_capacity(jobs.len());
        for (k, job) in jobs.iter().enumerate() {
            let wallet = &wallets.records[job.wallet];
            let key = &wallets.keys[job.wallet];
            let results: Vec<&InputOutcome> = per_signer.iter().map(|inputs| &inputs[k]).collect();
            let (signature, method) = self.combine_input(wallet, job, signers, &results).await?;
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
        indices: &[u16],
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

    /// The signer's side: every check made here, on this node's own data.
    pub(crate) async fn sign_participant(
        &self,
        session: Uuid,
        wallet_ids: &[String],
        psbt_base64: &str,
        signers: &[NodeId],
        presignatures: &[Option<String>],
    ) -> Result<Outcome, NodeError> {
        let t_start = Instant::now();
        let wallets = self.request_wallets(wallet_ids).await?;
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
        self.note_funded_paths(&jobs, &summary, &wallets.keys(), &wallets.records);
        // Each presignature must be for this wallet, path and signer set (checked again where
        // it is consumed, in the same transaction) and for an ECDSA input.
        let paths: Vec<String> = jobs.iter().map(|job| job.path.to_string()).collect();
        let mut chosen: Vec<PresignatureUse> = Vec::new();
        for (job, path) in jobs.iter().zip(&paths) {
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
                    path,
                    signers,
                });
            }
        }
        let t_checked = Instant::now();
        let spends: Vec<(&str, u64)> = summary
            .leaving_by_wallet
            .iter()
            .map(|(w, amount)| (wallets.records[*w].id.as_str(), *amount))
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
                    &wallet_id,
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
                        &wallet.id,
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
                    .await??;
                    InputOutcome::Ecdsa(sig)
                }
                (JobMessage::Schnorr { .. }, None) => {
                    let run = frost_runs.remove(&job.input).ok_or_else(|| {
                        NodeError::Internal("a Taproot input was not started".into())
                    })?;
                    let share = run
                        .await
                        .map_err(|e| NodeError::Internal(format!("FROST task: {e}")))???;
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
        Ok(Outcome::Sign { inputs: outcomes })
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

/// A signer's FROST run (one input) on its own thread.
type FrostRun = tokio::task::JoinHandle<
    Result<Result<schnorr::SchnorrSignatureShare, mpc_protocols::ProtocolError>, NodeError>,
>;

impl Node {
    /// Turns the signers' results for one input into one verified signature.
    async fn combine_input(
        &self,
        wallet: &WalletRecord,
        job: &SigningJob,
        signers: &[NodeId],
        results: &[&InputOutcome],
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
                    master_key: PublicKey::try_from(wallet.public_key.clone())?,
                    path: job.path.clone(),
                    signers: keygen_indices(&wallet.participants, signers)?,
                };
                // The key the PSBT check derived (rust-bitcoin) and matched to the spent script.
                let child = PublicKey(public_key.serialize());
                let public: &PresignaturePublic = public;
                let sig = ecdsa::combine(public, &binding, &partials, preimage, &child)?;
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
                            shares.push(*share)
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
                    schnorr::aggregate(&key_share, &job.path, &internal_key, sighash, &shares)?;
                Ok((InputSignature::Schnorr(sig), "frost"))
            }
            _ => Err(NodeError::Disagreement(format!(
                "unexpected signer results for input {}",
                job.input
            ))),
        }
    }
}
