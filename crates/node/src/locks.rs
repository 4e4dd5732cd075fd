//! The cluster lock around ceremonies, and the fencing check every participant makes.
//!
//! One keygen or aux-info ceremony runs in the cluster at a time: its coordinator holds the
//! `ceremony` lock of the cluster backend while it proposes and runs it. Under etcd the lock
//! can be lost while its holder still runs (a paused process outlives its lease), so the
//! proposal carries the lock's fencing token, and **each participant** checks it against etcd
//! before taking part: it must be the token of the lock's current holder, read from etcd now
//! (refill proposals: the token of the `pool-refill` election's current leader, which must be
//! the proposer). A stale holder's token is refused, and so is a token no holder has, however
//! large: a peer's number alone changes nothing stored (design invariant 10). If etcd cannot
//! be read the proposal is refused: etcd is trusted for liveness only (invariant 7).
//!
//! Only a checked token is recorded in the store (`fencing_tokens`), as the token this node
//! last acted under. The record refuses nothing; where it is above etcd's current holder
//! (etcd recreated, or a value older versions stored from a peer unchecked) etcd wins, the
//! record is replaced and a warning logged.
//!
//! Under the static backend (one machine) the lock is in-process, so it only orders the
//! ceremonies one node coordinates, and its tokens mean nothing to other nodes: proposals then
//! carry none, and a participant refuses one that does.

use std::time::Instant;

use mpc_coordination::{BackendKind, ClusterBackend, FencingToken, LockGuard, TokenSource};
use mpc_transport::NodeId;
use tracing::{debug, info, warn};

use crate::{
    config::Limits, control::Proposal, control::ProposalBody, pool::POOL_ELECTION, Node, NodeError,
};

/// The lock (and fencing resource) of keygen and aux-info ceremonies.
pub const CEREMONY_LOCK: &str = "ceremony";

/// The ceremony lock, held by a coordinator for the length of one ceremony.
pub struct CeremonyLock {
    guard: LockGuard,
    /// The token proposals carry: `Some` under etcd only.
    pub fencing_token: Option<FencingToken>,
}

impl CeremonyLock {
    /// Releases the lock now (dropping it releases it in the background).
    pub async fn release(self) {
        if let Err(e) = self.guard.unlock().await {
            warn!(error = %e, "could not release the ceremony lock; its lease will expire");
        }
    }
}

impl ProposalBody {
    /// Whose fencing token a proposal of this kind from `proposer` carries.
    fn fenced_by<'a>(&self, proposer: &'a str) -> Option<TokenSource<'a>> {
        match self {
            ProposalBody::AuxInfo { .. }
            | ProposalBody::Keygen { .. }
            | ProposalBody::Refresh { .. }
            | ProposalBody::Reshare(_) => Some(TokenSource::Lock(CEREMONY_LOCK)),
            ProposalBody::Presign { .. } => Some(TokenSource::Leader {
                election: POOL_ELECTION,
                candidate: proposer,
            }),
            ProposalBody::Sign { .. } => None,
        }
    }
}

impl Node {
    /// The cluster backend, connected on first use (an unreachable etcd fails this call and
    /// is tried again on the next).
    pub async fn cluster_backend(&self) -> Result<ClusterBackend, NodeError> {
        let config = &self.inner.config;
        let backend = self
            .inner
            .backend
            .get_or_try_init(|| {
                ClusterBackend::from_config(
                    &config.coordination,
                    Some(config.pool_leader().to_string()),
                )
            })
            .await?;
        Ok(backend.clone())
    }

    pub(crate) fn uses_etcd(&self) -> bool {
        self.inner.config.coordination.backend == BackendKind::Etcd
    }

    /// Waits (at most `limits.ceremony_lock_wait_ms`) for the cluster's ceremony lock.
    pub(crate) async fn ceremony_lock(&self) -> Result<CeremonyLock, NodeError> {
        let config = &self.inner.config;
        let backend = self.cluster_backend().await?;
        let started = Instant::now();
        info!(backend = ?backend.kind(), "waiting for the ceremony lock");
        let guard = tokio::time::timeout(
            Limits::ms(config.limits.ceremony_lock_wait_ms),
            backend.lock(CEREMONY_LOCK, config.coordination.lease_ttl()),
        )
        .await
        .map_err(|_| {
            NodeError::Unavailable(format!(
                "another ceremony held the cluster's ceremony lock for more than {} s",
                config.limits.ceremony_lock_wait_ms / 1000
            ))
        })??;
        let fencing_token = self.uses_etcd().then(|| guard.token());
        info!(
            token = %guard.token(),
            waited_ms = started.elapsed().as_millis() as u64,
            "ceremony lock acquired"
        );
        Ok(CeremonyLock {
            guard,
            fencing_token,
        })
    }

    /// The participant's fencing check: a proposal made under the ceremony lock (or the refill
    /// leadership) must carry the token of its current holder as etcd shows it now; only then
    /// is the token recorded. A refused token changes nothing stored.
    pub(crate) async fn admit_fencing(
        &self,
        proposer: NodeId,
        proposal: &Proposal,
    ) -> Result<(), NodeError> {
        let proposer = proposer.to_string();
        let Some(source) = proposal.body.fenced_by(&proposer) else {
            return Ok(());
        };
        let Some(token) = proposal.fencing_token.map(FencingToken) else {
            // Under etcd a ceremony must come from the lock's holder. (A presignature request
            // without a token is an operator's explicit one, not the refill leader's.)
            if matches!(source, TokenSource::Lock(_)) && self.uses_etcd() {
                return Err(NodeError::InvalidRequest(format!(
                    "node {} coordinates through etcd: a {} proposal must carry the ceremony \
                     lock's fencing token",
                    self.id(),
                    proposal.body.kind()
                )));
            }
            return Ok(());
        };
        let backend = self.cluster_backend().await?;
        // One check at a time: tokens are then recorded in etcd's order of holders, so a
        // recorded token above the current holder's cannot be a newer holder's.
        let _one_at_a_time = self.inner.fencing.lock().await;
        // A read slower than a lease says nothing about who holds the lock now.
        let ttl = self.inner.config.coordination.lease_ttl();
        let verdict = tokio::time::timeout(ttl, backend.check_token(source, token))
            .await
            .map_err(|_| {
                NodeError::Unavailable(format!(
                    "etcd did not answer within {} ms: fencing token {token} for {} cannot be \
                     checked",
                    ttl.as_millis(),
                    source.name()
                ))
            })??;
        verdict?;
        debug!(resource = source.name(), %token, "fencing token is the current holder's");
        self.record_fencing_token(source.name(), token).await
    }

    /// Records a token checked against etcd. A recorded token above it did not come from
    /// etcd's current history: etcd wins, with a warning.
    async fn record_fencing_token(
        &self,
        resource: &str,
        token: FencingToken,
    ) -> Result<(), NodeError> {
        let store = &self.inner.store;
        match store.fencing_token(resource).await? {
            Some(recorded) if recorded == token.0 => return Ok(()),
            Some(recorded) if recorded > token.0 => warn!(
                resource,
                recorded,
                %token,
                "the recorded fencing token is above etcd's current holder's (stored unchecked \
                 by an older version, or etcd was recreated): replaced by the holder's"
            ),
            _ => {}
        }
        store.record_fencing_token(resource, token.0).await?;
        Ok(())
    }
}
