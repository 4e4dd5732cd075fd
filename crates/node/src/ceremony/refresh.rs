//! Key refresh over the network (issue 19): new shares of the same key on the same nodes, in
//! two phases. Every participant runs the refresh protocol and stores its new share as
//! pending; the coordinator commits only when every participant reported the same new public
//! shares, and each participant then makes its pending share active and bumps the wallet's key
//! epoch in one transaction (retiring the wallet's older presignatures with it). On any
//! failure every participant drops its pending share and keeps the old one. A participant
//! that never heard the decision (it restarted, or its wait ended) asks the coordinator, who
//! recorded the decision before announcing it.

use std::time::{Duration, Instant};

use mpc_bitcoin::Scheme;
use mpc_coordination::FencingToken;
use mpc_protocols::{
    execution::{ExecutionId, ProtocolKind},
    refresh::{refresh_schnorr, RefreshMsg},
    signature::PublicKey,
    PartyIndex,
};
use mpc_store::{AuditEvent, CeremonyRecord, PendingShare, WalletRecord};
use mpc_transport::{NodeId, SessionId};
use mpc_types::WalletId;
use rand_core::OsRng;
use serde::Serialize;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::{
    config::Limits,
    control::{Control, Outcome, ProposalBody},
    delivery::run_blocking,
    keys::keygen_indices,
    now_ms, Node, NodeError,
};

/// The ceremony's kind in records, audit entries and proposals.
const KIND: &str = "refresh";
/// In a running record's result: the coordinator decided to commit (it announces it next).
const COMMIT: &str = "commit_decided";
/// How often, and how many times, an undecided participant asks the coordinator.
const ASK_EVERY: Duration = Duration::from_millis(500);
const ASK_TIMES: u32 = 240;

/// A committed refresh, as the coordinator reports it.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshReport {
    pub wallet_id: WalletId,
    /// The wallet's key epoch now.
    pub key_epoch: u64,
    pub participants: Vec<NodeId>,
    /// Unchanged by the refresh, as are the xpub, addresses and descriptors.
    pub public_key: String,
    pub duration_ms: u64,
    /// Nodes that did not acknowledge the commit (they learn it by asking).
    pub unacknowledged: Vec<NodeId>,
}

/// The execution id every participant derives: bound to the wallet, the session, every party
/// and `t ‖ new key epoch`, so no message of one refresh counts in another.
fn execution_id(wallet: &WalletRecord, session: Uuid, key_epoch: u64) -> ExecutionId {
    let indices = PartyIndex::all(wallet.participants.len() as u16);
    let context = [
        &wallet.threshold.to_be_bytes()[..],
        &key_epoch.to_be_bytes(),
    ]
    .concat();
    ExecutionId::derive(
        ProtocolKind::KeyRefresh,
        wallet.id.as_str(),
        session,
        &indices,
        &context,
    )
}

impl Node {
    /// Coordinates a key refresh of `wallet_id` (every participant must be live). The wallet
    /// keeps its key, xpub, addresses and descriptors; every node's share changes.
    pub async fn refresh_wallet(
        &self,
        session: Uuid,
        wallet_id: &WalletId,
    ) -> Result<RefreshReport, NodeError> {
        let started = Instant::now();
        let started_at = now_ms();
        let span =
            tracing::info_span!("refresh", node = self.id().get(), %session, wallet = %wallet_id);
        let request = serde_json::json!({ "wallet_id": wallet_id });
        let result = async {
            let wallet = self.active_wallet(wallet_id).await?;
            let key_epoch = wallet.key_epoch + 1;
            let lock = self.ceremony_lock().await?;
            let _deciding = Deciding::new(self, session);
            // A running record first: a participant asking for the decision meanwhile is told
            // to wait, and one asking after a restart of this node is told it failed.
            self.ceremony_started(session, KIND, request.clone())
                .await?;
            self.audit_refresh("started", session, &wallet.id, key_epoch, true, None)
                .await;
            let result = self
                .refresh_locked(
                    session,
                    &wallet,
                    key_epoch,
                    started_at,
                    &request,
                    lock.fencing_token,
                )
                .await;
            lock.release().await;
            result.map(|unacknowledged| RefreshReport {
                wallet_id: wallet.id.clone(),
                key_epoch,
                participants: wallet.participants.clone(),
                public_key: wallet.public_key.to_string(),
                duration_ms: started.elapsed().as_millis() as u64,
                unacknowledged,
            })
        }
        .instrument(span)
        .await;
        self.recorded(session, KIND, &request, started_at, result)
            .await
    }

    async fn refresh_locked(
        &self,
        session: Uuid,
        wallet: &WalletRecord,
        key_epoch: u64,
        started_at: i64,
        request: &serde_json::Value,
        fencing_token: Option<FencingToken>,
    ) -> Result<Vec<NodeId>, NodeError> {
        let participants = &wallet.participants;
        let outcomes = match self.check_all_live(participants) {
            Ok(()) => {
                self.coordinate(
                    session,
                    ProposalBody::Refresh {
                        wallet_id: wallet.id.clone(),
                        key_epoch,
                    },
                    participants,
                    Limits::ms(self.inner.config.limits.keygen_timeout_ms),
                    fencing_token,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let agreed = outcomes.and_then(|outcomes| {
            let shares: Vec<&Vec<PublicKey>> = outcomes
                .iter()
                .filter_map(|(_, o)| match o {
                    Outcome::Refresh { public_shares } => Some(public_shares),
                    _ => None,
                })
                .collect();
            if shares.len() != participants.len()
                || shares.windows(2).any(|w| w[0] != w[1])
                || shares[0].len() != participants.len()
            {
                Err(NodeError::Disagreement(format!(
                    "participants reported different new public shares: {shares:?}"
                )))
            } else {
                Ok(())
            }
        });
        // The decision is recorded before anyone hears it, so that a participant asking later
        // gets the same answer, even from this node after a restart. A commit is kept in the
        // still-running record (`COMMIT`): the record becomes `succeeded`, with the report
        // clients poll for, only once the commit was announced. A commit this node could not
        // record is not announced: the refresh aborts.
        let agreed = match agreed {
            Ok(()) => {
                let decision = CeremonyRecord {
                    id: session.to_string(),
                    kind: KIND.into(),
                    state: "running".into(),
                    coordinator: self.id(),
                    request: request.clone(),
                    result: Some(serde_json::json!({ COMMIT: true, "key_epoch": key_epoch })),
                    error: None,
                    started_at,
                    finished_at: None,
                };
                self.inner
                    .store
                    .put_ceremony(&decision)
                    .await
                    .map_err(NodeError::from)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &agreed {
            self.record_ceremony(
                session,
                KIND,
                request.clone(),
                started_at,
                &Err(e.to_string()),
            )
            .await;
        }
        match agreed {
            Ok(()) => {
                let missing = self.finish_ceremony(session, participants, Ok(())).await;
                if !missing.is_empty() {
                    warn!(?missing, "nodes did not acknowledge the refresh's commit");
                }
                Ok(missing)
            }
            Err(e) => {
                self.finish_ceremony(session, participants, Err(e.to_string()))
                    .await;
                Err(e)
            }
        }
    }

    /// A participant's part: check the proposal, run the refresh, store the new share as
    /// pending and report its public shares; the commit or abort is applied in the background.
    pub(crate) async fn refresh_participant(
        &self,
        coordinator: NodeId,
        session: Uuid,
        wallet_id: &WalletId,
        key_epoch: u64,
    ) -> Result<Outcome, NodeError> {
        let wallet = self.active_wallet(wallet_id).await?;
        if key_epoch != wallet.key_epoch + 1 {
            return Err(NodeError::InvalidRequest(format!(
                "a refresh to key epoch {key_epoch}, but wallet {wallet_id} is at key epoch {} \
                 on node {}",
                wallet.key_epoch,
                self.id()
            )));
        }
        keygen_indices(&wallet.participants, &[self.id()])?;
        let eid = execution_id(&wallet, session, key_epoch);
        let sid = SessionId::from_uuid(session);
        let timeout = Limits::ms(self.inner.config.limits.keygen_timeout_ms);
        let (bytes, public_key, public_shares) = match wallet.scheme {
            Scheme::Schnorr => {
                let share = self.schnorr_share(&wallet).await?;
                let party = self.join_session::<RefreshMsg>(
                    sid,
                    ProtocolKind::KeyRefresh,
                    &wallet.participants,
                    timeout,
                )?;
                let new = run_blocking(move || async move {
                    refresh_schnorr(&eid, &share, party, &mut OsRng).await
                })
                .await?
                .map_err(|e| self.attribute(sid, e))?;
                (new.to_bytes()?, new.public_key(), new.public_shares())
            }
            Scheme::Ecdsa => {
                return Err(NodeError::InvalidRequest(format!(
                    "wallet {wallet_id} is ECDSA: its refresh needs fresh aux info for the node \
                     set, kept pending with the shares, which is not built yet (FROST wallets \
                     refresh)"
                )))
            }
        };
        if public_key.to_string() != wallet.public_key.to_string() {
            return Err(NodeError::Internal(format!(
                "the refreshed share of wallet {wallet_id} is of another key"
            )));
        }
        // Registered before reporting, so the decision cannot arrive unseen.
        let decision = self.await_commit(coordinator, session);
        self.inner
            .store
            .put_pending_share(&wallet.id, key_epoch, session, coordinator, &bytes)
            .await?;
        info!(node = self.id().get(), wallet = %wallet_id, key_epoch, "refreshed share pending, awaiting commit");
        let pending = PendingShare {
            wallet_id: wallet.id.clone(),
            key_epoch,
            session,
            coordinator,
            created_at: now_ms(),
        };
        // Then it asks (a coordinator still deciding does not answer, and is asked again).
        let wait = Limits::ms(self.inner.config.limits.keygen_timeout_ms);
        let node = self.clone();
        // On the node's task list: a node shut down mid-wait settles at its next start.
        self.spawn(
            async move {
                let decided = match tokio::time::timeout(wait, decision).await {
                    Ok(Ok(d)) => Some(d),
                    _ => None,
                };
                node.settle_pending(pending, decided).await;
            }
            .in_current_span(),
        );
        Ok(Outcome::Refresh { public_shares })
    }

    /// Applies the decision on `pending` (asking its coordinator if `decided` is `None`) and
    /// acknowledges it. Undecided after every attempt, the pending share is kept for the next
    /// start to ask again: dropping it could leave this node on the old epoch after the others
    /// committed, and committing it could do the opposite.
    async fn settle_pending(&self, pending: PendingShare, decided: Option<Result<(), String>>) {
        let decided = match decided {
            Some(d) => Some(d),
            None => self.ask_decision(&pending).await,
        };
        let Some(decision) = decided else {
            warn!(node = self.id().get(), wallet = %pending.wallet_id, session = %pending.session, "refresh still undecided: the pending share is kept until the coordinator answers");
            return;
        };
        let store = &self.inner.store;
        let applied = match &decision {
            Ok(()) => store
                .commit_pending_share(&pending.wallet_id, pending.session)
                .await
                .map(|c| {
                    info!(node = self.id().get(), wallet = %pending.wallet_id, key_epoch = c.key_epoch, presignatures_retired = c.presignatures_retired, "refresh committed");
                }),
            Err(reason) => store
                .drop_pending_share(&pending.wallet_id, pending.session)
                .await
                .map(|_| {
                    info!(node = self.id().get(), wallet = %pending.wallet_id, %reason, "refresh aborted: pending share dropped");
                }),
        };
        self.forget_wallet(&pending.wallet_id);
        let applied = applied.map_err(|e| e.to_string());
        let error = match (&decision, &applied) {
            (_, Err(e)) | (Err(e), _) => Some(e.clone()),
            _ => None,
        };
        let stage = if decision.is_ok() && applied.is_ok() {
            "committed"
        } else {
            "aborted"
        };
        self.audit_refresh(
            stage,
            pending.session,
            &pending.wallet_id,
            pending.key_epoch,
            pending.coordinator == self.id(),
            error,
        )
        .await;
        self.acknowledge(pending.coordinator, pending.session, applied.and(decision))
            .await;
    }

    /// Asks the coordinator for the decision on `pending` until it answers (`None` if it never
    /// does within the attempts).
    async fn ask_decision(&self, pending: &PendingShare) -> Option<Result<(), String>> {
        if pending.coordinator == self.id() {
            for _ in 0..ASK_TIMES {
                if let Some(d) = self.refresh_decision(pending.session).await {
                    return Some(d);
                }
                tokio::time::sleep(ASK_EVERY).await;
            }
            return None;
        }
        // One registration for every attempt, so an answer to an earlier one still counts.
        let mut answer = self.await_commit(pending.coordinator, pending.session);
        for attempt in 0..ASK_TIMES {
            // Numbered: the router drops a control message identical to one it already took.
            let asked = Control::Decision {
                session: pending.session,
                attempt,
            };
            if let Err(e) = self
                .send_control(pending.coordinator, pending.session, &asked)
                .await
            {
                warn!(node = self.id().get(), error = %e, "could not ask for the refresh's decision");
            }
            match tokio::time::timeout(ASK_EVERY, &mut answer).await {
                Ok(Ok(d)) => return Some(d),
                Ok(Err(_)) => return None,
                Err(_) => {}
            }
        }
        None
    }

    /// This node's decision on refresh `session` as its coordinator: commit or abort as
    /// recorded; abort for a refresh it has no record of (never proposed here), or whose record
    /// is still running while no ceremony runs (this node restarted before deciding, and never
    /// will); `None` while it is still deciding.
    pub(crate) async fn refresh_decision(&self, session: Uuid) -> Option<Result<(), String>> {
        let record = match self.inner.store.ceremony(&session.to_string()).await {
            Ok(r) => r,
            Err(e) => {
                warn!(node = self.id().get(), error = %e, "could not read the refresh's record");
                return None;
            }
        };
        match record {
            Some(r) if r.kind != KIND => Some(Err(format!("session {session} is no refresh"))),
            Some(r) if r.state == "succeeded" => Some(Ok(())),
            Some(r) if r.state == "failed" => {
                Some(Err(r.error.unwrap_or_else(|| "the refresh failed".into())))
            }
            Some(r) if r.result.as_ref().is_some_and(|v| v[COMMIT] == true) => Some(Ok(())),
            Some(_) if Deciding::is(self, session) => None,
            Some(_) => Some(Err(
                "the coordinator restarted before deciding the refresh".into()
            )),
            None => Some(Err(format!("no refresh {session} was coordinated here"))),
        }
    }

    /// Answers a participant's [`Control::Decision`] for `session` (nothing while deciding).
    pub(crate) async fn decision_asked(&self, from: NodeId, session: Uuid) {
        let Some(decision) = self.refresh_decision(session).await else {
            return;
        };
        let msg = match decision {
            Ok(()) => Control::Commit { session },
            Err(reason) => Control::Abort { session, reason },
        };
        if let Err(e) = self.send_control(from, session, &msg).await {
            warn!(node = self.id().get(), peer = from.get(), error = %e, "could not answer a decision request");
        }
    }

    /// At start: settle every pending share left by a refresh this node never heard decided.
    pub(crate) async fn settle_pending_refreshes(&self) {
        let pending = match self.inner.store.pending_shares().await {
            Ok(p) => p,
            Err(e) => {
                warn!(node = self.id().get(), error = %e, "could not list pending shares");
                return;
            }
        };
        for p in pending {
            let node = self.clone();
            self.spawn(async move { node.settle_pending(p, None).await });
        }
    }

    pub(crate) async fn audit_refresh(
        &self,
        stage: &str,
        session: Uuid,
        wallet_id: &WalletId,
        key_epoch: u64,
        coordinator: bool,
        error: Option<String>,
    ) {
        self.audit_after(AuditEvent::KeyRefresh {
            stage: stage.into(),
            session,
            wallet_id: wallet_id.clone(),
            key_epoch,
            coordinator,
            error,
        })
        .await
    }
}

/// Marks a refresh as being decided by this node while it lives.
struct Deciding {
    node: Node,
    session: Uuid,
}

impl Deciding {
    fn new(node: &Node, session: Uuid) -> Self {
        if let Ok(mut s) = node.inner.refreshing.lock() {
            s.insert(session);
        }
        Deciding {
            node: node.clone(),
            session,
        }
    }

    fn is(node: &Node, session: Uuid) -> bool {
        node.inner
            .refreshing
            .lock()
            .map(|s| s.contains(&session))
            .unwrap_or(false)
    }
}

impl Drop for Deciding {
    fn drop(&mut self) {
        if let Ok(mut s) = self.node.inner.refreshing.lock() {
            s.remove(&self.session);
        }
    }
}
