//! Key refresh over the network (issue 19): new shares of the same key on the same nodes, in
//! two phases. Every participant runs the refresh protocol and stores its new share as
//! pending; the coordinator commits only when every participant reported the same new public
//! shares, and each participant then makes its pending share active and bumps the wallet's key
//! epoch in one transaction (retiring the wallet's older presignatures with it). On any
//! failure every participant drops its pending share and keeps the old one. A participant
//! that never heard the decision (it restarted, or its wait ended) asks the coordinator, who
//! recorded the decision before announcing it.
//!
//! An ECDSA refresh also makes new aux info (fresh Paillier keys) for the wallet's node set in
//! the same ceremony, kept pending with the share and committed or dropped with it in one
//! transaction: the node set's other ECDSA wallets then sign with it too (their presignatures,
//! made under the old Paillier keys, retired).

use std::time::Instant;

use mpc_bitcoin::Scheme;
use mpc_coordination::FencingToken;
use mpc_protocols::{
    execution::{ExecutionId, ProtocolKind},
    refresh::{refresh_ecdsa, refresh_schnorr, RefreshMsg},
    signature::PublicKey,
    PartyIndex,
};
use mpc_store::{AuditEvent, PendingAuxInfoFor, PendingShare, WalletRecord};
use mpc_transport::{NodeId, SessionId};
use mpc_types::WalletId;
use rand_core::OsRng;
use serde::Serialize;
use tracing::{info, Instrument};
use uuid::Uuid;

use super::decision::{Deciding, Decision};
use crate::{
    config::Limits,
    control::{Outcome, ProposalBody},
    delivery::run_blocking,
    keys::keygen_indices,
    now_ms, Node, NodeError,
};

/// The ceremony's kind in records, audit entries and proposals.
const KIND: &str = "refresh";

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
                    self.refresh_timeout(wallet.scheme),
                    fencing_token,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let agreed = outcomes.and_then(|outcomes| {
            let reports: Vec<(&Vec<PublicKey>, &Option<String>)> = outcomes
                .iter()
                .filter_map(|(_, o)| match o {
                    Outcome::Refresh {
                        public_shares,
                        aux_info,
                    } => Some((public_shares, aux_info)),
                    _ => None,
                })
                .collect();
            // ECDSA: every participant made the same new aux info; FROST: none made any.
            let aux_expected = wallet.scheme == Scheme::Ecdsa;
            if reports.len() != participants.len()
                || reports.windows(2).any(|w| w[0] != w[1])
                || reports[0].0.len() != participants.len()
                || reports[0].1.is_some() != aux_expected
            {
                Err(NodeError::Disagreement(format!(
                    "participants reported different new public shares or aux info: {reports:?}"
                )))
            } else {
                Ok(())
            }
        });
        // Recorded before anyone hears it (`decision`): the record becomes `succeeded`, with the
        // report clients poll for, only once the commit was announced.
        let kept = agreed.map(|()| serde_json::json!({ "key_epoch": key_epoch }));
        self.commit_or_abort(session, KIND, (request, started_at), participants, kept)
            .await
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
        if wallet.scheme == Scheme::Ecdsa {
            self.check_no_pending_for(&wallet).await?;
        }
        // Registered before the run: an abort that arrives while it runs (an ECDSA refresh
        // takes as long as aux info) is not missed.
        let decision = self.await_commit(coordinator, session);
        let stored = self
            .refresh_and_keep_pending(coordinator, session, &wallet, key_epoch)
            .await;
        let (public_shares, aux_info) = match stored {
            Ok(reported) => reported,
            Err(e) => {
                self.forget_commit(session);
                return Err(e);
            }
        };
        info!(node = self.id().get(), wallet = %wallet_id, key_epoch, "refreshed share pending, awaiting commit");
        let pending = PendingShare {
            wallet_id: wallet.id.clone(),
            key_epoch,
            session,
            coordinator,
            created_at: now_ms(),
        };
        // Then it asks (a coordinator still deciding does not answer, and is asked again).
        let wait = self.refresh_timeout(wallet.scheme);
        let node = self.clone();
        // On the node's task list: a node shut down mid-wait settles at its next start.
        self.spawn(
            async move { node.settle_refresh(pending, Some((decision, wait))).await }
                .in_current_span(),
        );
        Ok(Outcome::Refresh {
            public_shares,
            aux_info,
        })
    }

    /// How long a refresh of a `scheme` wallet may take: an ECDSA refresh makes aux info too.
    fn refresh_timeout(&self, scheme: Scheme) -> std::time::Duration {
        let limits = &self.inner.config.limits;
        Limits::ms(match scheme {
            Scheme::Schnorr => limits.keygen_timeout_ms,
            Scheme::Ecdsa => limits
                .keygen_timeout_ms
                .saturating_add(limits.aux_info_timeout_ms),
        })
    }

    /// Refuses an ECDSA refresh while this node holds anything pending over the wallet's node
    /// set: its commit replaces the node set's aux info and moves every other ECDSA wallet of
    /// the set to its next key epoch, which a pending aux info of the set or another ECDSA
    /// wallet's pending share there (an undecided ceremony, settled first) would then not fit.
    async fn check_no_pending_for(&self, wallet: &WalletRecord) -> Result<(), NodeError> {
        let store = &self.inner.store;
        let mut held: Vec<(Uuid, NodeId)> = store
            .pending_aux_infos()
            .await?
            .into_iter()
            .filter(|p| p.node_set == wallet.participants)
            .map(|p| (p.session, p.coordinator))
            .collect();
        for p in store.pending_shares().await? {
            if p.wallet_id == wallet.id {
                continue;
            }
            let moved = store.wallet(&p.wallet_id).await?.is_some_and(|w| {
                w.scheme == Scheme::Ecdsa && w.participants == wallet.participants
            });
            if moved {
                held.push((p.session, p.coordinator));
            }
        }
        match held.first() {
            Some((session, coordinator)) => Err(NodeError::Unavailable(format!(
                "node {} holds the result of ceremony {session} pending, until its coordinator \
                 (node {coordinator}) decides it",
                self.id()
            ))),
            None => Ok(()),
        }
    }

    /// Runs the refresh (for ECDSA, aux info first, on a set of this node's primes) and stores
    /// its result as pending. The new public shares, and the new aux info's public digest.
    async fn refresh_and_keep_pending(
        &self,
        coordinator: NodeId,
        session: Uuid,
        wallet: &WalletRecord,
        key_epoch: u64,
    ) -> Result<(Vec<PublicKey>, Option<String>), NodeError> {
        let eid = execution_id(wallet, session, key_epoch);
        let sid = SessionId::from_uuid(session);
        let timeout = Limits::ms(self.inner.config.limits.keygen_timeout_ms);
        let store = &self.inner.store;
        let (bytes, public_key, public_shares, aux_info) = match wallet.scheme {
            Scheme::Schnorr => {
                let share = self.schnorr_share(wallet).await?;
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
                (new.to_bytes()?, new.public_key(), new.public_shares(), None)
            }
            Scheme::Ecdsa => {
                let share = self.ecdsa_share(wallet).await?;
                // Joined before the aux-info run, for as long as both take: a node whose run
                // ends first sends its refresh messages at once, and they wait in this
                // session's inbox rather than in the router's short hold for unknown sessions.
                let party = self.join_session::<RefreshMsg>(
                    sid,
                    ProtocolKind::KeyRefresh,
                    &wallet.participants,
                    self.refresh_timeout(Scheme::Ecdsa),
                )?;
                // Its own sub-session: a session runs one protocol.
                let aux_session = sid.derive("aux-info").as_uuid();
                let (aux, digest, primes) = self
                    .make_aux_info(aux_session, &wallet.participants)
                    .await?;
                let refreshed = self
                    .refresh_ecdsa_share(sid, &eid, share, &aux, party)
                    .await;
                let kept = match refreshed {
                    Ok(new) => store
                        .put_pending_aux_info(
                            &wallet.participants,
                            (session, coordinator),
                            (&aux, &digest),
                            &primes,
                            PendingAuxInfoFor::Refresh,
                        )
                        .await
                        .map(|()| new)
                        .map_err(NodeError::from),
                    Err(e) => Err(e),
                };
                let new = match kept {
                    Ok(new) => new,
                    Err(e) => {
                        self.primes_back(&primes).await;
                        return Err(e);
                    }
                };
                let public_shares = new.public_shares();
                let (core, _aux) = new.into_parts()?;
                (
                    core.to_bytes()?,
                    core.public_key(),
                    public_shares,
                    Some(digest),
                )
            }
        };
        if public_key.to_string() != wallet.public_key.to_string() {
            // Drops the pending aux info with it, if any (its primes back in the pool).
            store.drop_pending_share(&wallet.id, session).await?;
            return Err(NodeError::Internal(format!(
                "the refreshed share of wallet {} is of another key",
                wallet.id
            )));
        }
        let kept = store
            .put_pending_share(&wallet.id, key_epoch, session, coordinator, &bytes)
            .await;
        if let Err(e) = kept {
            store.drop_pending_share(&wallet.id, session).await?;
            return Err(e.into());
        }
        Ok((public_shares, aux_info))
    }

    /// The ECDSA refresh proper: `share`'s core refreshed and joined with the new aux info.
    async fn refresh_ecdsa_share(
        &self,
        sid: SessionId,
        eid: &ExecutionId,
        share: std::sync::Arc<mpc_protocols::ecdsa::EcdsaKeyShare>,
        aux: &[u8],
        party: crate::delivery::MeshParty<RefreshMsg>,
    ) -> Result<mpc_protocols::ecdsa::EcdsaKeyShare, NodeError> {
        let aux = mpc_protocols::ecdsa::AuxInfo::from_bytes(aux)?;
        let eid = *eid;
        run_blocking(
            move || async move { refresh_ecdsa(&eid, &share, aux, party, &mut OsRng).await },
        )
        .await?
        .map_err(|e| self.attribute(sid, e))
    }

    /// Settles `pending` (`decision`): commits or drops it as its coordinator decided, with
    /// the audit entry of what happened.
    pub(super) async fn settle_refresh(
        &self,
        pending: PendingShare,
        heard: Option<(
            tokio::sync::oneshot::Receiver<Decision>,
            std::time::Duration,
        )>,
    ) {
        let ceremony = (pending.coordinator, pending.session);
        self.settle(ceremony, heard, |decision| async move {
            let store = &self.inner.store;
            let applied = match &decision {
                Ok(()) => store
                    .commit_pending_share(&pending.wallet_id, pending.session, now_ms())
                    .await
                    .map(|c| {
                        // Same shares, but new aux info and key epoch: nothing kept in memory
                        // of them may be used again.
                        for other in &c.other_wallets {
                            self.forget_wallet(other);
                        }
                        info!(node = self.id().get(), wallet = %pending.wallet_id, key_epoch = c.key_epoch, presignatures_retired = c.presignatures_retired, aux_info_replaced = c.aux_info_replaced, other_wallets = ?c.other_wallets, "refresh committed");
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
            applied
        })
        .await
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
