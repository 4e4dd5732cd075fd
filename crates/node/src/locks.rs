//! The cluster lock around ceremonies, and the fencing check every participant makes.
//!
//! One DKG or aux-info ceremony runs in the cluster at a time: its coordinator holds the
//! `ceremony` lock of the cluster backend while it proposes and runs it. Under etcd the lock
//! can be lost while its holder still runs (a paused process outlives its lease), so the
//! proposal carries the lock's fencing token and **each participant** admits it durably
//! (`Store::admit_fencing_token`) before taking part: once a newer holder has acted at a node,
//! the old holder's proposals are refused there (design invariant 7: etcd is trusted for
//! liveness only). Refill proposals carry the pool leader's token the same way.
//!
//! Under the static backend (one machine) the lock is in-process, so it only orders the
//! ceremonies one node coordinates, and its tokens mean nothing to other nodes: proposals then
//! carry none.

use std::time::Instant;

use mpc_coordination::{BackendKind, ClusterBackend, FencingToken, LockGuard};
use tracing::{info, warn};

use crate::{config::Limits, control::Proposal, control::ProposalBody, Node, NodeError};

/// The lock (and fencing resource) of DKG and aux-info ceremonies.
pub const CEREMONY_LOCK: &str = "ceremony";
/// The fencing resource of pool refill (the election's token).
pub const POOL_REFILL: &str = "pool-refill";

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
    /// The resource whose fencing token a proposal of this kind carries.
    fn fencing_resource(&self) -> Option<&'static str> {
        match self {
            ProposalBody::AuxInfo { .. } | ProposalBody::Keygen { .. } => Some(CEREMONY_LOCK),
            ProposalBody::Presign { .. } => Some(POOL_REFILL),
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

    /// The participant's fencing check, on this node's own store: a proposal made under a
    /// lock (or leadership) must carry a token at least as high as any admitted here before.
    pub(crate) async fn admit_fencing(&self, proposal: &Proposal) -> Result<(), NodeError> {
        let Some(resource) = proposal.body.fencing_resource() else {
            return Ok(());
        };
        match proposal.fencing_token {
            Some(token) => {
                if self
                    .inner
                    .store
                    .admit_fencing_token(resource, token)
                    .await?
                {
                    Ok(())
                } else {
                    Err(NodeError::StaleFencingToken {
                        resource: resource.into(),
                        token,
                    })
                }
            }
            // Under etcd a ceremony must come from the lock's holder. (A presignature request
            // without a token is an operator's explicit one, not the refill leader's.)
            None if resource == CEREMONY_LOCK && self.uses_etcd() => {
                Err(NodeError::InvalidRequest(format!(
                    "node {} coordinates through etcd: a {} proposal must carry the ceremony \
                     lock's fencing token",
                    self.id(),
                    proposal.body.kind()
                )))
            }
            None => Ok(()),
        }
    }
}
