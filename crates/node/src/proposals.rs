//! The proposal protocol over the control channel: a coordinator proposes (session id,
//! participants, parameters), each participant checks the proposal against its own state and
//! answers with an outcome or a typed refusal, the coordinator decides the round
//! (`round::Round`) and commits or aborts, and participants acknowledge. Also the dispatcher
//! that routes every control message a peer sends.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use mpc_coordination::FencingToken;
use mpc_store::{Actor, AuditEvent};
use mpc_transport::{ControlInbox, Envelope, NodeId, SessionId};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{debug, warn, Instrument};
use uuid::Uuid;

use crate::{
    audit,
    control::{Control, Outcome, Proposal, ProposalBody},
    refusal::Refusal,
    round::{Round, Verdict},
    signing::Signed,
    Node, NodeError,
};

pub(crate) type OutcomeSender = mpsc::UnboundedSender<(NodeId, Result<Outcome, Refusal>)>;

/// A coordinator waiting for participants' outcomes of one session.
pub(crate) struct Waiter {
    pub(crate) participants: HashSet<NodeId>,
    pub(crate) tx: OutcomeSender,
    /// Each participant's outcome as it came (signed), for evidence against an outcome that
    /// fails the coordinator's check.
    pub(crate) envelopes: OutcomeEnvelopes,
}

/// The signed envelopes of participants' outcomes, by participant.
pub(crate) type OutcomeEnvelopes = Arc<Mutex<HashMap<NodeId, Envelope>>>;

/// A participant waiting for the coordinator's commit or abort.
pub(crate) struct CommitWaiter {
    pub(crate) coordinator: NodeId,
    pub(crate) tx: oneshot::Sender<Result<(), String>>,
}

/// How long a coordinator waits for acknowledgements of a commit or abort.
const ACKNOWLEDGEMENT_WAIT: Duration = Duration::from_secs(5);

/// How much longer than the protocol's own deadline the coordinator waits for outcomes: a
/// participant whose run timed out reports which nodes it did not hear from, and that report
/// must arrive before the coordinator gives up on everyone who is still silent.
fn report_grace(timeout: Duration) -> Duration {
    Duration::from_millis(500) + timeout / 10
}

/// The session id under which participants acknowledge a commit/abort of `session`.
fn commit_ack_session(session: Uuid) -> Uuid {
    SessionId::from_uuid(session).derive("commit-ack").as_uuid()
}

impl Node {
    pub(crate) async fn send_control(
        &self,
        to: NodeId,
        session: Uuid,
        msg: &Control,
    ) -> Result<(), NodeError> {
        let envelope = msg.envelope(session, self.id(), to)?;
        self.inner.transport.send(to, envelope).await?;
        Ok(())
    }

    pub(crate) async fn dispatch(self, mut control: ControlInbox) {
        while let Some(envelope) = control.recv().await {
            // The router has checked that `from` is the authenticated sender.
            let from = envelope.from;
            let msg = match Control::from_envelope(&envelope) {
                Ok(m) => m,
                Err(e) => {
                    warn!(node = self.id().get(), from = from.get(), error = %e, "malformed control message");
                    continue;
                }
            };
            match msg {
                Control::Heartbeat {
                    version,
                    audit_head,
                    audit_question,
                    audit_answer,
                    primes_ready,
                    ..
                } => {
                    self.inner.health.heard_from(from, version, primes_ready);
                    let heads = &self.inner.health.audit;
                    if let Some(problem) =
                        heads.heard(from, audit_head, audit_question, audit_answer)
                    {
                        self.peer_audit_log_changed(from, problem);
                    }
                }
                Control::Propose(proposal) => {
                    let node = self.clone();
                    let span = tracing::info_span!("participant", node = self.id().get(), session = %proposal.session, kind = proposal.body.kind(), coordinator = from.get());
                    tokio::spawn(async move { node.answer(from, proposal).await }.instrument(span));
                }
                Control::Outcome { session, result } => {
                    self.outcome_arrived(from, session, result, Some(envelope))
                }
                Control::Commit { session } => self.commit_arrived(from, session, Ok(())),
                Control::Decision { session, .. } => {
                    let node = self.clone();
                    tokio::spawn(async move { node.decision_asked(from, session).await });
                }
                Control::Abort { session, reason } => {
                    self.commit_arrived(from, session, Err(reason))
                }
                Control::Retire {
                    wallet_id,
                    presignatures,
                } => {
                    let node = self.clone();
                    tokio::spawn(async move {
                        node.retire_arrived(from, wallet_id, presignatures).await
                    });
                }
                Control::Signed {
                    wallet_ids,
                    psbt,
                    raw_transaction,
                } => self.signed_arrived(from, wallet_ids, psbt, raw_transaction),
            }
        }
    }

    /// Runs our part of a proposal and reports the outcome to its coordinator.
    async fn answer(&self, coordinator: NodeId, proposal: Proposal) {
        let session = proposal.session;
        let point = match proposal.body {
            ProposalBody::Sign { .. } => Some("sign:reported"),
            ProposalBody::Keygen { .. }
            | ProposalBody::Refresh { .. }
            | ProposalBody::Reshare(_)
            | ProposalBody::AuxInfo { .. } => Some("ceremony:reported"),
            _ => None,
        };
        let result = self.participate(coordinator, proposal).await;
        if let Err(e) = &result {
            warn!(error = %e, "refused or failed");
        }
        let result = result.map_err(|e| Refusal::from(&e));
        if coordinator == self.id() {
            self.outcome_arrived(coordinator, session, result, None);
        } else if let Err(e) = self
            .send_control(coordinator, session, &Control::Outcome { session, result })
            .await
        {
            warn!(error = %e, "could not report the outcome to the coordinator");
        }
        if let Some(point) = point {
            crate::failpoint::crash_point(point);
        }
    }

    /// Checks a proposal against this node's own state, then runs it.
    async fn participate(
        &self,
        coordinator: NodeId,
        proposal: Proposal,
    ) -> Result<Outcome, NodeError> {
        // Invariant 4: a session id is used once, ever. (A signer marks it in the same commit
        // as its presignatures and spends: `Store::begin_signing`.)
        let is_sign = matches!(proposal.body, ProposalBody::Sign { .. });
        if !is_sign
            && !self
                .inner
                .store
                .mark_session_seen(proposal.session, proposal.body.kind())
                .await?
        {
            return Err(NodeError::SessionReplayed(proposal.session));
        }
        self.admit_fencing(coordinator, &proposal).await?;
        match proposal.body {
            ProposalBody::AuxInfo { node_set } => {
                let result = self
                    .aux_info_participant(coordinator, proposal.session, node_set)
                    .await;
                self.audit_ceremony("aux_info", proposal.session, None, false, &result)
                    .await;
                result
            }
            ProposalBody::Keygen { wallet } => {
                let wallet_id = Some(wallet.id.clone());
                let result = self
                    .keygen_participant(coordinator, proposal.session, wallet)
                    .await;
                self.audit_ceremony("keygen", proposal.session, wallet_id, false, &result)
                    .await;
                result
            }
            ProposalBody::Refresh {
                wallet_id,
                key_epoch,
            } => {
                let result = self
                    .refresh_participant(coordinator, proposal.session, &wallet_id, key_epoch)
                    .await;
                let key = (&wallet_id, key_epoch);
                self.audit_failed_key_change(coordinator, proposal.session, key, &result)
                    .await;
                result
            }
            ProposalBody::Reshare(spec) => {
                let (wallet_id, key_epoch) = (spec.wallet.id.clone(), spec.key_epoch);
                let result = self
                    .reshare_participant(coordinator, proposal.session, *spec)
                    .await;
                let key = (&wallet_id, key_epoch);
                self.audit_failed_key_change(coordinator, proposal.session, key, &result)
                    .await;
                result
            }
            ProposalBody::Presign {
                wallet_id,
                path,
                signers,
                count,
            } => {
                self.presign_participant(proposal.session, &wallet_id, &path, &signers, count)
                    .await
            }
            ProposalBody::Sign {
                wallet_ids,
                psbt,
                signers,
                presignatures,
                key_epochs,
                approvals,
            } => {
                let result = self
                    .sign_participant(
                        coordinator,
                        proposal.session,
                        (&wallet_ids, &key_epochs),
                        &psbt,
                        &signers,
                        &presignatures,
                        approvals.as_ref(),
                    )
                    .await;
                let (txid, _) = audit::psbt_summary(&psbt);
                let session = proposal.session;
                let event = match &result {
                    // Recorded before the interactive run that released it.
                    Ok(Signed {
                        recorded_ahead: true,
                        ..
                    }) => None,
                    Ok(_) => Some(AuditEvent::SignerSigned {
                        session,
                        coordinator: coordinator.get(),
                        wallet_ids,
                        txid,
                    }),
                    Err(e) => Some(AuditEvent::SignerRefused {
                        session,
                        coordinator: coordinator.get(),
                        wallet_ids,
                        rule: audit::refusal_rule(e),
                        error: e.to_string(),
                    }),
                };
                let result = result.map(|signed| signed.outcome);
                match event {
                    None => result,
                    Some(event) => {
                        // Fail closed: this node's share leaves only once its release is
                        // recorded.
                        let recorded = self.audit_as(&Actor::Peer(coordinator.get()), event).await;
                        self.fail_closed(result, recorded)
                    }
                }
            }
        }
    }

    /// A refresh or resharing this node refused or failed before keeping anything pending:
    /// audited as aborted here.
    async fn audit_failed_key_change(
        &self,
        coordinator: NodeId,
        session: Uuid,
        (wallet_id, key_epoch): (&mpc_types::WalletId, u64),
        result: &Result<Outcome, NodeError>,
    ) {
        if let Err(e) = result {
            let error = Some(e.to_string());
            let coordinating = coordinator == self.id();
            self.audit_refresh(
                "aborted",
                session,
                wallet_id,
                key_epoch,
                coordinating,
                error,
            )
            .await;
        }
    }

    fn outcome_arrived(
        &self,
        from: NodeId,
        session: Uuid,
        result: Result<Outcome, Refusal>,
        envelope: Option<Envelope>,
    ) {
        let waiters = self.inner.waiters.lock();
        match waiters.ok().as_ref().and_then(|w| w.get(&session)) {
            Some(w) if w.participants.contains(&from) => {
                if let (Some(envelope), Ok(mut kept)) = (envelope, w.envelopes.lock()) {
                    kept.insert(from, envelope);
                }
                let _ = w.tx.send((from, result));
            }
            Some(_) => {
                warn!(node = self.id().get(), from = from.get(), %session, "outcome from a non-participant ignored")
            }
            None => {
                debug!(node = self.id().get(), from = from.get(), %session, "late or unknown outcome ignored")
            }
        }
    }

    fn commit_arrived(&self, from: NodeId, session: Uuid, result: Result<(), String>) {
        let waiter =
            self.inner
                .commit_waiters
                .lock()
                .ok()
                .and_then(|mut w| match w.get(&session) {
                    Some(cw) if cw.coordinator == from => w.remove(&session),
                    _ => None,
                });
        match waiter {
            Some(w) => {
                let _ = w.tx.send(result);
            }
            None => {
                warn!(node = self.id().get(), from = from.get(), %session, "commit/abort for no pending ceremony ignored")
            }
        }
    }

    /// Registers interest in the coordinator's commit/abort for `session`.
    pub(crate) fn await_commit(
        &self,
        coordinator: NodeId,
        session: Uuid,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.inner.commit_waiters.lock() {
            w.insert(session, CommitWaiter { coordinator, tx });
        }
        rx
    }

    /// Withdraws the registration of [`Self::await_commit`] (the run it was for failed).
    pub(crate) fn forget_commit(&self, session: Uuid) {
        if let Ok(mut w) = self.inner.commit_waiters.lock() {
            w.remove(&session);
        }
    }

    /// Proposes `body` to `participants` (this node may be one), runs our own part, and
    /// collects every participant's outcome within `timeout`. Public because any node may
    /// coordinate, and participants check every proposal themselves; tests use it to play a
    /// compromised coordinator.
    pub async fn coordinate(
        &self,
        session: Uuid,
        body: ProposalBody,
        participants: &[NodeId],
        timeout: Duration,
        fencing_token: Option<FencingToken>,
    ) -> Result<Vec<(NodeId, Outcome)>, NodeError> {
        let envelopes = OutcomeEnvelopes::default();
        self.coordinate_keeping(
            session,
            body,
            participants,
            timeout,
            fencing_token,
            &envelopes,
        )
        .await
    }

    /// [`Self::coordinate`], keeping in `envelopes` each other participant's outcome as it
    /// came (signed), so that an outcome failing the caller's check can be shown.
    pub(crate) async fn coordinate_keeping(
        &self,
        session: Uuid,
        body: ProposalBody,
        participants: &[NodeId],
        timeout: Duration,
        fencing_token: Option<FencingToken>,
        envelopes: &OutcomeEnvelopes,
    ) -> Result<Vec<(NodeId, Outcome)>, NodeError> {
        if participants.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.insert(
                session,
                Waiter {
                    participants: participants.iter().copied().collect(),
                    tx: tx.clone(),
                    envelopes: envelopes.clone(),
                },
            );
        }
        if fencing_token.is_some() {
            // Test hook: lets a test stop this process after its own checks, holding the lock.
            crate::failpoint::pause_point("propose:fenced").await;
        }
        let proposal = Proposal {
            session,
            body,
            fencing_token: fencing_token.map(|t| t.0),
        };
        for &p in participants {
            let node = self.clone();
            let proposal = proposal.clone();
            let tx = tx.clone();
            if p == self.id() {
                tokio::spawn(async move { node.answer(p, proposal).await }.in_current_span());
            } else {
                tokio::spawn(
                    async move {
                        if let Err(e) = node
                            .send_control(p, session, &Control::Propose(proposal))
                            .await
                        {
                            let _ = tx.send((p, Err(Refusal::failed(format!("unreachable: {e}")))));
                        }
                    }
                    .in_current_span(),
                );
            }
        }
        drop(tx);
        let wait = timeout + report_grace(timeout);
        let deadline = Instant::now() + wait;
        let mut round = Round::new(participants, Instant::now(), wait);
        let mut verdict = loop {
            let decided =
                match tokio::time::timeout_at(round.wake_at(Instant::now()), rx.recv()).await {
                    Ok(Some((from, result))) => round.answer(from, result),
                    Ok(None) => round.closed(Instant::now()),
                    Err(_) => round.tick(Instant::now(), |p| self.inner.health.is_live(p)),
                };
            if let Some(verdict) = decided {
                break verdict;
            }
        };
        // Another participant blames nodes for its failed run. This node took part too, and
        // trusts its own view over another's word: when its own run failed on someone, that
        // is the blame reported (a hostile participant cannot steer it onto honest nodes).
        if let Verdict::Refused { node, refusal } = &verdict {
            if *node != self.id() && refusal.accuses() && participants.contains(&self.id()) {
                while let Ok(Some((from, result))) =
                    tokio::time::timeout_at(deadline, rx.recv()).await
                {
                    if from != self.id() {
                        continue;
                    }
                    if let Err(own) = result {
                        if own.accuses() {
                            verdict = Verdict::Refused {
                                node: from,
                                refusal: own,
                            };
                        }
                    }
                    break;
                }
            }
        }
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.remove(&session);
        }
        match verdict {
            Verdict::Complete(outcomes) => Ok(outcomes),
            Verdict::Refused { node, refusal } => Err(NodeError::Refused { node, refusal }),
            Verdict::Dead { nodes, waited } | Verdict::TimedOut { nodes, waited } => {
                Err(NodeError::Timeout {
                    nodes,
                    seconds: waited.as_secs_f64(),
                })
            }
        }
    }

    /// Tells participants to commit (or abort) `session` and waits briefly for their
    /// acknowledgements of a commit. Returns the nodes that did not acknowledge it. An abort is
    /// not waited for: a participant that never hears it discards its pending share when its
    /// own wait for the commit ends, and a hostile participant's silence must not hold the
    /// coordinator's answer back.
    pub(crate) async fn finish_ceremony(
        &self,
        session: Uuid,
        participants: &[NodeId],
        result: Result<(), String>,
    ) -> Vec<NodeId> {
        let ack = commit_ack_session(session);
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.insert(
                ack,
                Waiter {
                    participants: participants.iter().copied().collect(),
                    tx,
                    envelopes: OutcomeEnvelopes::default(),
                },
            );
        }
        let msg = match &result {
            Ok(()) => Control::Commit { session },
            Err(reason) => Control::Abort {
                session,
                reason: reason.clone(),
            },
        };
        for &p in participants {
            if p == self.id() {
                self.commit_arrived(p, session, result.clone());
            } else if let Err(e) = self.send_control(p, session, &msg).await {
                warn!(node = self.id().get(), peer = p.get(), %session, error = %e, "commit/abort not delivered");
            }
        }
        if result.is_err() {
            if let Ok(mut w) = self.inner.waiters.lock() {
                w.remove(&ack);
            }
            return Vec::new();
        }
        // Any answer counts as an acknowledgement (a participant that could not commit says
        // so, and has been told the outcome all the same); only silence is reported.
        let mut round = Round::new(participants, Instant::now(), ACKNOWLEDGEMENT_WAIT);
        let verdict = loop {
            let decided =
                match tokio::time::timeout_at(round.wake_at(Instant::now()), rx.recv()).await {
                    Ok(Some((from, _))) => round.answer(from, Ok(())),
                    Ok(None) => round.closed(Instant::now()),
                    // Liveness does not shorten this short wait: a dead node is reported as silent.
                    Err(_) => round.tick(Instant::now(), |_| true),
                };
            if let Some(verdict) = decided {
                break verdict;
            }
        };
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.remove(&ack);
        }
        match verdict {
            Verdict::Complete(_) | Verdict::Refused { .. } => Vec::new(),
            Verdict::Dead { nodes, .. } | Verdict::TimedOut { nodes, .. } => nodes,
        }
    }

    /// Acknowledges a commit/abort to the coordinator.
    pub(crate) async fn acknowledge(
        &self,
        coordinator: NodeId,
        session: Uuid,
        result: Result<(), String>,
    ) {
        let ack = commit_ack_session(session);
        let result = result.map(|()| Outcome::Committed).map_err(Refusal::failed);
        if coordinator == self.id() {
            self.outcome_arrived(coordinator, ack, result, None);
        } else if let Err(e) = self
            .send_control(
                coordinator,
                ack,
                &Control::Outcome {
                    session: ack,
                    result,
                },
            )
            .await
        {
            warn!(node = self.id().get(), %session, error = %e, "acknowledgement not delivered");
        }
    }
}
