//! Presignatures over the network: signer sets, batches, and each participant's stored
//! share of a presignature bound to (wallet, path, signer set).

use mpc_types::WalletId;
use std::time::Instant;

use mpc_bitcoin::Scheme;
use mpc_coordination::FencingToken;
use mpc_protocols::{
    ecdsa::{self},
    encoding,
    execution::{ExecutionId, ProtocolKind},
    DerivationPath, PartyIndex,
};
use mpc_store::{PresignatureRecord, PresignatureState, WalletRecord};
use mpc_transport::{NodeId, SessionId};
use rand_core::OsRng;
use tracing::{warn, Instrument};
use uuid::Uuid;

use crate::{
    config::Limits,
    control::{Outcome, ProposalBody},
    delivery::run_blocking_background,
    keys::keygen_indices,
    now_ms, Node, NodeError,
};

use super::{sorted_unique, PresignReport};

impl Node {
    /// Picks a signer set of `t` live participants, none of `exclude` and none of the sets in
    /// `tried`, this node first if it participates. Nodes with too many unreleased incidents
    /// ([`Node::excluded_for_incidents`]) are left out too, unless that leaves fewer than `t`:
    /// then the least blamed of them sign anyway (availability over punishment).
    pub(crate) async fn pick_signers(
        &self,
        wallet: &WalletRecord,
        exclude: &[NodeId],
        tried: &[Vec<NodeId>],
    ) -> Result<Vec<NodeId>, NodeError> {
        let t = usize::from(wallet.threshold);
        let mut live: Vec<NodeId> = wallet
            .participants
            .iter()
            .copied()
            .filter(|n| !exclude.contains(n) && self.inner.health.is_live(*n))
            .collect();
        if live.len() < t {
            return Err(NodeError::Unavailable(format!(
                "wallet {} needs {t} signers; live participants: {live:?}",
                wallet.id
            )));
        }
        let mut blamed: Vec<(NodeId, u64)> = self
            .excluded_for_incidents()
            .await?
            .into_iter()
            .filter(|(n, _)| live.contains(n))
            .collect();
        if !blamed.is_empty() {
            live.retain(|n| !blamed.iter().any(|(b, _)| b == n));
            // Least blamed first, then the lowest id: the ones taken back when needed.
            blamed.sort_by_key(|&(n, count)| (count, n));
            let short = t.saturating_sub(live.len());
            if short > 0 {
                let back: Vec<NodeId> = blamed.iter().take(short).map(|(n, _)| *n).collect();
                warn!(
                    wallet = %wallet.id,
                    blamed = ?blamed,
                    signing_anyway = ?back,
                    "too few signers without the nodes kept out for their incidents: \
                     signing with some of them (availability over punishment)"
                );
                live.extend(back);
                live.sort_unstable();
            } else {
                tracing::debug!(wallet = %wallet.id, left_out = ?blamed, "nodes left out for their incidents");
            }
        }
        // This node when it can sign, then a set not tried yet. After a failure that named
        // nobody (signers' FROST nonce commitments that differ, an abort), the culprit is one
        // of that set's other members: the set sharing the fewest members with the failed
        // ones comes first (as ROAST does), so one hostile node cannot sink every retry by
        // staying in the lowest ids. Among equals, the lowest ids.
        let me = live.contains(&self.id());
        let others: Vec<NodeId> = live.iter().copied().filter(|n| *n != self.id()).collect();
        let need = t - usize::from(me);
        let suspicion = |n: &NodeId| tried.iter().filter(|set| set.contains(n)).count();
        let mut found: Option<(usize, Vec<NodeId>)> = None;
        combinations(&others, need, &mut Vec::new(), &mut |set| {
            let mut chosen = set.to_vec();
            let score = set.iter().map(suspicion).sum::<usize>();
            if me {
                chosen.push(self.id());
            }
            chosen.sort_unstable();
            let untried = !tried.contains(&chosen);
            if untried && found.as_ref().is_none_or(|(best, _)| score < *best) {
                found = Some((score, chosen));
            }
            // Stop at an untried set no failed attempt touched: nothing beats it.
            untried && score == 0
        });
        let found = found.map(|(_, set)| set);
        found.ok_or_else(|| {
            NodeError::Unavailable(format!(
                "wallet {}: every signer set of {t} among {live:?} was tried",
                wallet.id
            ))
        })
    }

    /// Coordinates the generation of `count` presignatures for (wallet, path, signers). The
    /// pool's refill passes its leadership's fencing token; an operator's request passes none.
    pub async fn generate_presignatures(
        &self,
        session: Uuid,
        wallet_id: &WalletId,
        path: &DerivationPath,
        count: u32,
        signers: Option<Vec<NodeId>>,
        fencing_token: Option<FencingToken>,
    ) -> Result<PresignReport, NodeError> {
        let started_at = now_ms();
        let request = serde_json::json!({"wallet_id": wallet_id, "path": path.to_string(), "count": count, "signers": signers});
        let result = self
            .presign_batch(session, wallet_id, path, count, signers, fencing_token)
            .instrument(
                tracing::info_span!("presign", node = self.id().get(), %session, wallet = %wallet_id),
            )
            .await;
        self.recorded(session, "presign", &request, started_at, result)
            .await
    }

    async fn presign_batch(
        &self,
        session: Uuid,
        wallet_id: &WalletId,
        path: &DerivationPath,
        count: u32,
        signers: Option<Vec<NodeId>>,
        fencing_token: Option<FencingToken>,
    ) -> Result<PresignReport, NodeError> {
        let started = Instant::now();
        let wallet = self.active_wallet(wallet_id).await?;
        let signers = match signers {
            Some(s) => s,
            None => self.pick_signers(&wallet, &[], &[]).await?,
        };
        let timeout =
            Limits::ms(self.inner.config.limits.presign_timeout_ms * u64::from(count.max(1)));
        let outcomes = self
            .coordinate(
                session,
                ProposalBody::Presign {
                    wallet_id: wallet_id.clone(),
                    path: path.clone(),
                    signers: signers.clone(),
                    count,
                },
                &signers,
                timeout,
                fencing_token,
            )
            .await;
        let agreed = outcomes.and_then(|outcomes| {
            let lists: Vec<&Vec<String>> = outcomes
                .iter()
                .filter_map(|(_, o)| match o {
                    Outcome::Presign { ids } => Some(ids),
                    _ => None,
                })
                .collect();
            match lists.first() {
                Some(first) if lists.len() == signers.len() && lists.iter().all(|l| l == first) => {
                    Ok((*first).clone())
                }
                _ => Err(NodeError::Disagreement(
                    "signers hold different presignatures".into(),
                )),
            }
        });
        let ids = match agreed {
            Ok(ids) => ids,
            Err(e) => {
                self.discard_failed_batch(session, &wallet, path, &signers, count)
                    .await;
                return Err(e);
            }
        };
        Ok(PresignReport {
            wallet_id: wallet_id.clone(),
            path: path.to_string(),
            signers,
            ids,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// After a batch that failed, discards what this node (a signer) stored of it: its own run
    /// may have finished while another signer's did not, or lied about what it holds, and
    /// only this node proposes the presignatures it holds for signing. Other signers' copies
    /// are never proposed and expire. (A run of its own still going on when the batch failed
    /// would store after this: its coordinator's deadline is its own plus a grace.)
    async fn discard_failed_batch(
        &self,
        session: Uuid,
        wallet: &WalletRecord,
        path: &DerivationPath,
        signers: &[NodeId],
        count: u32,
    ) {
        let Ok(indices) = self.check_signers(wallet, signers) else {
            return; // not a signer: it holds none
        };
        let ids: Vec<String> = (0..count)
            .map(|k| presign_execution(session, k, &wallet.id, &indices, path).to_string())
            .collect();
        for id in &ids {
            match self.inner.store.discard_presignature(id, now_ms()).await {
                Ok(true) => warn!(presignature = %id, "discarded: its batch failed"),
                Ok(false) => {}
                Err(e) => warn!(presignature = %id, error = %e, "could not discard"),
            }
        }
        if let Ok(mut ready) = self.inner.ready.lock() {
            ready.used(ids.iter().map(String::as_str));
        }
    }

    /// Checks a signer set for `wallet` with this node in it; returns the key-gen indices.
    pub(crate) fn check_signers(
        &self,
        wallet: &WalletRecord,
        signers: &[NodeId],
    ) -> Result<Vec<PartyIndex>, NodeError> {
        if !sorted_unique(signers) || signers.len() != usize::from(wallet.threshold) {
            return Err(NodeError::InvalidRequest(format!(
                "signer set {signers:?} must be {} sorted, distinct nodes",
                wallet.threshold
            )));
        }
        if !signers.contains(&self.id()) {
            return Err(NodeError::InvalidRequest(format!(
                "node {} is not in the signer set {signers:?}",
                self.id()
            )));
        }
        keygen_indices(&wallet.participants, signers)
    }

    pub(crate) async fn presign_participant(
        &self,
        session: Uuid,
        wallet_id: &WalletId,
        path: &DerivationPath,
        signers: &[NodeId],
        count: u32,
    ) -> Result<Outcome, NodeError> {
        if !(1..=100).contains(&count) {
            return Err(NodeError::InvalidRequest(format!(
                "count {count} must be 1 to 100"
            )));
        }
        let wallet = self.active_wallet(wallet_id).await?;
        if wallet.scheme != Scheme::Ecdsa {
            return Err(NodeError::InvalidRequest(
                "presignatures exist only for ECDSA wallets".into(),
            ));
        }
        let indices = self.check_signers(&wallet, signers)?;
        let share = self.ecdsa_share(&wallet).await?;
        let store = &self.inner.store;
        let limits = &self.inner.config.limits;
        let mut ids = Vec::with_capacity(count as usize);
        for k in 0..count {
            let sid = presign_session(session, k);
            let eid = presign_execution(session, k, wallet_id, &indices, path);
            let party = self.join_session(
                sid,
                ProtocolKind::EcdsaPresign,
                signers,
                Limits::ms(limits.presign_timeout_ms),
            )?;
            let (share, path_owned, indices_owned) = (share.clone(), path.clone(), indices.clone());
            let (presig, cpu) = run_blocking_background(move || async move {
                ecdsa::presign(&eid, &share, &indices_owned, &path_owned, party, &mut OsRng).await
            })
            .await?;
            let presig = presig.map_err(|e| self.attribute(sid, e))?;
            if let Some(cpu) = cpu {
                self.record_generation_cpu(wallet_id, cpu);
            }
            crate::failpoint::crash_point("presign:generated");
            let now = now_ms();
            let record = PresignatureRecord {
                id: eid.to_string(),
                wallet_id: wallet_id.clone(),
                path: path.clone(),
                signers: signers.to_vec(),
                epoch: store.epoch().await?,
                key_epoch: wallet.key_epoch,
                state: PresignatureState::Ready,
                public: encoding::encode(presig.public())?,
                created_at: now,
                expires_at: now + self.inner.config.pool.limits_for(wallet_id).ttl_ms as i64,
                consumed_at: None,
            };
            store
                .insert_presignature(&record, &presig.to_bytes()?)
                .await?;
            crate::failpoint::crash_point("presign:stored");
            ids.push(record.id);
        }
        Ok(Outcome::Presign { ids })
    }
}

/// The session of presignature `k` of the batch `session`.
fn presign_session(session: Uuid, k: u32) -> SessionId {
    SessionId::from_uuid(session).derive(&format!("presign/{k}"))
}

/// The execution id of presignature `k` of the batch `session`: its id in every store.
fn presign_execution(
    session: Uuid,
    k: u32,
    wallet_id: &WalletId,
    indices: &[PartyIndex],
    path: &DerivationPath,
) -> ExecutionId {
    ExecutionId::derive(
        ProtocolKind::EcdsaPresign,
        wallet_id.as_str(),
        presign_session(session, k).as_uuid(),
        indices,
        &path.to_bytes(),
    )
}

/// Calls `visit` with each `k`-subset of `items`, in lexicographic order of positions, until it
/// returns true. Returns whether it did.
fn combinations(
    items: &[NodeId],
    k: usize,
    prefix: &mut Vec<NodeId>,
    visit: &mut dyn FnMut(&[NodeId]) -> bool,
) -> bool {
    if prefix.len() == k {
        return visit(prefix);
    }
    for (i, item) in items.iter().enumerate() {
        if items.len() - i < k - prefix.len() {
            break;
        }
        prefix.push(*item);
        let done = combinations(&items[i + 1..], k, prefix, visit);
        prefix.pop();
        if done {
            return true;
        }
    }
    false
}
