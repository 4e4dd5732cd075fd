//! Aux info over the network: Paillier keys and ring-Pedersen parameters for the whole node
//! set, coordinated once, in two phases (`decision`). Each participant keeps the aux info it
//! made as pending, with the primes it was made from; the coordinator commits only when every
//! participant reported the same public parameters, and each participant then makes its
//! pending aux info the node set's. On abort (or any failure) every participant drops it and
//! has its primes back, so a failed ceremony leaves no node with aux info and a retry runs.

use std::time::{Duration, Instant};

use mpc_protocols::{
    ecdsa::{self, AuxInfoMsg, Primes},
    execution::{ExecutionId, ProtocolKind},
    PartyIndex,
};
use mpc_store::{PendingAuxInfo, PendingAuxInfoFor};
use mpc_transport::{NodeId, SessionId};
use mpc_types::party_index;
use rand_core::OsRng;
use tokio::sync::oneshot;
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

use super::{
    decision::{Deciding, Decision},
    AuxInfoReport,
};
use crate::{
    config::Limits,
    control::{Outcome, ProposalBody},
    delivery::run_blocking,
    now_ms, Node, NodeError,
};

/// The ceremony's kind in records and proposals.
const KIND: &str = "aux-info";

/// How often the refill leader checks whether aux info is due (`[aux_info] auto`).
const AUTO_CHECK: Duration = Duration::from_secs(2);
/// The first and the longest wait after an automatic run that failed (doubling between).
const AUTO_RETRY: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(300));

impl Node {
    /// `[aux_info] auto`: on the refill leader, starts the ceremony once the node set has no
    /// aux info and every node holds a set of safe primes (this node's in its store, the
    /// others' as their heartbeats say), so a fresh cluster makes its aux info as soon as its
    /// primes exist. A failed run is tried again after a wait that doubles up to five minutes;
    /// the ceremony lock keeps it to one run at a time, an operator's included.
    pub(crate) async fn aux_info_auto(self) {
        if !self.inner.config.aux_info.auto {
            return;
        }
        let mut retry = AUTO_RETRY.0;
        loop {
            tokio::time::sleep(AUTO_CHECK).await;
            match self.aux_info_due().await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    debug!(node = self.id().get(), error = %e, "automatic aux info: cannot read the store");
                    continue;
                }
            }
            let session = Uuid::new_v4();
            info!(node = self.id().get(), %session, "every node holds safe primes and the node set has no aux info: starting aux info");
            match self.run_aux_info(session).await {
                Ok(report) => {
                    info!(node = self.id().get(), %session, duration_ms = report.duration_ms, "automatic aux info made");
                    retry = AUTO_RETRY.0;
                }
                Err(e) => {
                    warn!(node = self.id().get(), %session, error = %e, retry_in_secs = retry.as_secs(), "automatic aux info failed");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(AUTO_RETRY.1);
                }
            }
        }
    }

    /// Whether this node should start aux info now: it leads refill, the node set has no aux
    /// info (nor one pending here), and every node holds safe primes.
    async fn aux_info_due(&self) -> Result<bool, NodeError> {
        if !self.is_pool_leader() {
            return Ok(false);
        }
        let node_set = self.inner.config.node_ids();
        let health = &self.inner.health;
        if !node_set
            .iter()
            .all(|&n| n == self.id() || health.primes_ready(n))
        {
            return Ok(false);
        }
        let store = &self.inner.store;
        Ok(store.primes_count().await? > 0
            && store.aux_info(&node_set).await?.is_none()
            && !store
                .pending_aux_infos()
                .await?
                .iter()
                .any(|p| p.node_set == node_set))
    }

    /// Coordinates aux-info generation for the whole cluster (once per node set).
    pub async fn run_aux_info(&self, session: Uuid) -> Result<AuxInfoReport, NodeError> {
        self.run_aux_info_for(session, self.inner.config.node_ids())
            .await
    }

    /// Coordinates aux-info generation for `node_set`, some of the cluster's nodes with this
    /// one among them: the aux info an ECDSA wallet on exactly those nodes needs (a wallet
    /// created on, or reshared to, a part of the cluster). Each node spends a set of its safe
    /// primes on it.
    pub async fn run_aux_info_for(
        &self,
        session: Uuid,
        node_set: Vec<NodeId>,
    ) -> Result<AuxInfoReport, NodeError> {
        let result = self.run_aux_info_unaudited(session, node_set).await;
        self.audit_ceremony("aux_info", session, None, true, &result)
            .await;
        result
    }

    async fn run_aux_info_unaudited(
        &self,
        session: Uuid,
        node_set: Vec<NodeId>,
    ) -> Result<AuxInfoReport, NodeError> {
        self.check_node_set(&node_set, "aux-info node set")?;
        let started = Instant::now();
        let started_at = now_ms();
        let request = serde_json::json!(node_set);
        let span = tracing::info_span!("aux-info", node = self.id().get(), %session);
        let result = async {
            // Held until the aux info is committed or aborted everywhere.
            let lock = self.ceremony_lock().await?;
            let _deciding = Deciding::new(self, session);
            // A running record first: a participant asking for the decision meanwhile is told
            // to wait, and one asking after a restart of this node is told it failed.
            let result = match self.ceremony_started(session, KIND, request.clone()).await {
                Ok(()) => {
                    self.aux_info_locked(session, &node_set, started_at, lock.fencing_token)
                        .await
                }
                Err(e) => Err(e),
            };
            lock.release().await;
            result.map(|(public_digest, unacknowledged)| AuxInfoReport {
                node_set: node_set.clone(),
                public_digest,
                duration_ms: started.elapsed().as_millis() as u64,
                unacknowledged,
            })
        }
        .instrument(span)
        .await;
        self.recorded(session, KIND, &node_set, started_at, result)
            .await
    }

    /// Proposes, checks that every participant made the same public parameters, commits or
    /// aborts. The public digest and the nodes that did not acknowledge the commit.
    async fn aux_info_locked(
        &self,
        session: Uuid,
        node_set: &[NodeId],
        started_at: i64,
        fencing_token: Option<mpc_coordination::FencingToken>,
    ) -> Result<(String, Vec<NodeId>), NodeError> {
        let outcomes = match self.check_all_live(node_set) {
            Ok(()) => {
                self.coordinate(
                    session,
                    ProposalBody::AuxInfo {
                        node_set: node_set.to_vec(),
                    },
                    node_set,
                    Limits::ms(self.inner.config.limits.aux_info_timeout_ms),
                    fencing_token,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let agreed = outcomes.and_then(|outcomes| {
            let digests: Vec<&String> = outcomes
                .iter()
                .filter_map(|(_, o)| match o {
                    Outcome::AuxInfo { public_digest } => Some(public_digest),
                    _ => None,
                })
                .collect();
            if digests.len() != node_set.len() || digests.windows(2).any(|w| w[0] != w[1]) {
                Err(NodeError::Disagreement(format!(
                    "aux info public parameters differ between nodes: {digests:?}"
                )))
            } else {
                Ok(digests[0].clone())
            }
        });
        let digest = agreed.as_ref().ok().cloned();
        let kept = agreed.map(|d| serde_json::json!({ "public_digest": d }));
        let request = serde_json::json!(node_set);
        let unacknowledged = self
            .commit_or_abort(session, KIND, (&request, started_at), node_set, kept)
            .await?;
        let digest = digest.ok_or_else(|| NodeError::Internal("a commit without digest".into()))?;
        Ok((digest, unacknowledged))
    }

    /// A participant's part: check the proposal, run the protocol, keep the aux info as pending
    /// and report its public digest; the commit or abort is applied in the background.
    pub(crate) async fn aux_info_participant(
        &self,
        coordinator: NodeId,
        session: Uuid,
        node_set: Vec<NodeId>,
    ) -> Result<Outcome, NodeError> {
        self.check_node_set(&node_set, "aux-info node set")?;
        let store = &self.inner.store;
        if store.aux_info(&node_set).await?.is_some() {
            return Err(NodeError::InvalidRequest(format!(
                "aux info for {node_set:?} already exists on node {}",
                self.id()
            )));
        }
        if let Some(p) = store
            .pending_aux_infos()
            .await?
            .into_iter()
            .find(|p| p.node_set == node_set)
        {
            return Err(NodeError::Unavailable(format!(
                "node {} holds the aux info of ceremony {} pending, until its coordinator \
                 (node {}) decides it",
                self.id(),
                p.session,
                p.coordinator
            )));
        }
        // Registered before the run: an abort that arrives while it runs is not missed.
        let decision = self.await_commit(coordinator, session);
        let made = self.make_aux_info(session, &node_set).await;
        let (aux, digest, primes) = match made {
            Ok(made) => made,
            Err(e) => {
                self.forget_commit(session);
                return Err(e);
            }
        };
        let stored = store
            .put_pending_aux_info(
                &node_set,
                (session, coordinator),
                (&aux, &digest),
                &primes,
                PendingAuxInfoFor::FirstOfNodeSet,
            )
            .await;
        if let Err(e) = stored {
            self.forget_commit(session);
            self.primes_back(&primes).await;
            return Err(e.into());
        }
        info!(node = self.id().get(), %session, "aux info pending, awaiting commit");
        let pending = PendingAuxInfo {
            node_set,
            session,
            coordinator,
            public_digest: digest.clone(),
            created_at: now_ms(),
        };
        // The coordinator decides within its own wait for outcomes; then this node asks.
        let wait = Limits::ms(self.inner.config.limits.aux_info_timeout_ms);
        let node = self.clone();
        // On the node's task list: a node shut down mid-wait settles at its next start.
        self.spawn(
            async move { node.settle_aux_info(pending, Some((decision, wait))).await }
                .in_current_span(),
        );
        Ok(Outcome::AuxInfo {
            public_digest: digest,
        })
    }

    /// Runs the protocol on one set of this node's primes: the aux info, its public digest and
    /// the primes. The primes go back to the pool if the run fails.
    pub(super) async fn make_aux_info(
        &self,
        session: Uuid,
        node_set: &[NodeId],
    ) -> Result<(Vec<u8>, String, Vec<u8>), NodeError> {
        let store = &self.inner.store;
        let primes = store.take_primes().await?.ok_or_else(|| {
            NodeError::Unavailable(format!(
                "node {} has no safe primes ready (the pool is generating them)",
                self.id()
            ))
        })?;
        let primes_bytes = primes.to_vec();
        let primes = Primes::from_bytes(&primes)?;
        let n = node_set.len() as u16;
        let Some(i) = party_index(node_set, self.id()) else {
            self.primes_back(&primes_bytes).await;
            return Err(NodeError::InvalidRequest(
                "this node is not in the node set".into(),
            ));
        };
        let indices = PartyIndex::all(n);
        let eid = ExecutionId::derive(ProtocolKind::AuxInfo, "", session, &indices, &[]);
        let sid = SessionId::from_uuid(session);
        let timeout = Limits::ms(self.inner.config.limits.aux_info_timeout_ms);
        let result =
            match self.join_session::<AuxInfoMsg>(sid, ProtocolKind::AuxInfo, node_set, timeout) {
                Ok(party) => run_blocking(move || async move {
                    ecdsa::generate_aux_info(&eid, i, n, primes, party, &mut OsRng).await
                })
                .await
                .and_then(|r| r.map_err(|e| self.attribute(sid, e))),
                Err(e) => Err(e),
            };
        let made = result
            .and_then(|aux| Ok((aux.to_bytes()?.to_vec(), hex::encode(aux.public_digest()?))));
        match made {
            Ok((aux, digest)) => Ok((aux, digest, primes_bytes)),
            Err(e) => {
                // The primes were never used to finish a run: keep them for the next one
                // (their modulus may have been published, which is public anyway).
                self.primes_back(&primes_bytes).await;
                Err(e)
            }
        }
    }

    pub(super) async fn primes_back(&self, primes: &[u8]) {
        if let Err(e) = self.inner.store.add_primes(primes).await {
            warn!(node = self.id().get(), error = %e, "could not return primes to the pool");
        }
    }

    /// Settles `pending`: makes it the node set's aux info, or drops it (its primes back in the
    /// pool), as its coordinator decided.
    pub(super) async fn settle_aux_info(
        &self,
        pending: PendingAuxInfo,
        heard: Option<(oneshot::Receiver<Decision>, Duration)>,
    ) {
        let ceremony = (pending.coordinator, pending.session);
        self.settle(ceremony, heard, |decision| async move {
            let store = &self.inner.store;
            let (set, session) = (&pending.node_set, pending.session);
            let applied = match &decision {
                Ok(()) => store.commit_pending_aux_info(set, session).await.map(|()| {
                    info!(node = self.id().get(), %session, "aux info committed");
                }),
                Err(reason) => store.drop_pending_aux_info(set, session).await.map(|_| {
                    info!(node = self.id().get(), %session, %reason, "aux info aborted: pending aux info dropped, primes back in the pool");
                }),
            };
            applied.map_err(|e| e.to_string())
        })
        .await
    }
}
