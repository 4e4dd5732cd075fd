//! Key refresh over the network (issue 19): new shares of the same key on the same nodes, in
//! two phases. Every participant runs the refresh protocol and stores its new share as
//! pending; the coordinator commits only when every participant reported the same new public
//! shares, and each participant then makes its pending share active and bumps the wallet's key
//! epoch in one transaction (retiring the wallet's older presignatures with it). On any
//! failure every participant drops its pending share and keeps the old one. A participant
//! that never heard the decision (it restarted, or its wait ended) asks the coordinator, who
//! recorded the decision before announcing it.

use std::time::Instant;

use mpc_bitcoin::Scheme;
use mpc_coordination::FencingToken;
use mpc_protocols::{
    execution::{ExecutionId, ProtocolKind},
    refresh::{refresh_schnorr, RefreshMsg},
    signature::PublicKey,
    PartyIndex,
};
use mpc_store::{AuditEvent, PendingShare, WalletRecord};
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
            async move { node.settle_refresh(pending, Some((decision, wait))).await }
                .in_current_span(),
        );
        Ok(Outcome::Refresh { public_shares })
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
