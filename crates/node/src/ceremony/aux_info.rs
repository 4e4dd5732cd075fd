//! Aux info over the network: Paillier keys and ring-Pedersen parameters for the whole node
//! set, coordinated once; each participant stores its own.

use std::time::Instant;

use mpc_protocols::{
    ecdsa::{self, AuxInfoMsg, Primes},
    execution::{ExecutionId, ProtocolKind},
    PartyIndex,
};
use mpc_transport::{NodeId, SessionId};
use mpc_types::party_index;
use rand_core::OsRng;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::{
    config::Limits,
    control::{Outcome, ProposalBody},
    delivery::run_blocking,
    now_ms, Node, NodeError,
};

use super::AuxInfoReport;

impl Node {
    /// Coordinates aux-info generation for the whole cluster (once per node set).
    pub async fn run_aux_info(&self, session: Uuid) -> Result<AuxInfoReport, NodeError> {
        let result = self.run_aux_info_unaudited(session).await;
        self.audit_ceremony("aux_info", session, None, true, &result)
            .await;
        result
    }

    async fn run_aux_info_unaudited(&self, session: Uuid) -> Result<AuxInfoReport, NodeError> {
        let node_set = self.inner.config.node_ids();
        let started = Instant::now();
        let started_at = now_ms();
        let span = tracing::info_span!("aux-info", node = self.id().get(), %session);
        let result = async {
            let lock = self.ceremony_lock().await?;
            let outcomes = match self.check_all_live(&node_set) {
                Ok(()) => {
                    self.coordinate(
                        session,
                        ProposalBody::AuxInfo {
                            node_set: node_set.clone(),
                        },
                        &node_set,
                        Limits::ms(self.inner.config.limits.aux_info_timeout_ms),
                        lock.fencing_token,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            lock.release().await;
            let outcomes = outcomes?;
            let digests: Vec<&String> = outcomes
                .iter()
                .filter_map(|(_, o)| match o {
                    Outcome::AuxInfo { public_digest } => Some(public_digest),
                    _ => None,
                })
                .collect();
            if digests.len() != node_set.len() || digests.windows(2).any(|w| w[0] != w[1]) {
                return Err(NodeError::Disagreement(format!(
                    "aux info public parameters differ between nodes: {digests:?}"
                )));
            }
            Ok(AuxInfoReport {
                node_set: node_set.clone(),
                public_digest: digests[0].clone(),
                duration_ms: started.elapsed().as_millis() as u64,
            })
        }
        .instrument(span)
        .await;
        self.recorded(session, "aux-info", &node_set, started_at, result)
            .await
    }

    pub(crate) async fn aux_info_participant(
        &self,
        session: Uuid,
        node_set: Vec<NodeId>,
    ) -> Result<Outcome, NodeError> {
        if node_set != self.inner.config.node_ids() {
            return Err(NodeError::InvalidRequest(format!(
                "node set {node_set:?} is not this cluster's {:?}",
                self.inner.config.node_ids()
            )));
        }
        let store = &self.inner.store;
        if store.aux_info(&node_set).await?.is_some() {
            return Err(NodeError::InvalidRequest(format!(
                "aux info for {node_set:?} already exists on node {}",
                self.id()
            )));
        }
        let primes = store.take_primes().await?.ok_or_else(|| {
            NodeError::Unavailable(format!(
                "node {} has no safe primes ready (the pool is generating them)",
                self.id()
            ))
        })?;
        let primes_bytes = primes.to_vec();
        let primes = Primes::from_bytes(&primes)?;
        let n = node_set.len() as u16;
        let i = party_index(&node_set, self.id())
            .ok_or_else(|| NodeError::InvalidRequest("this node is not in the node set".into()))?;
        let indices = PartyIndex::all(n);
        let eid = ExecutionId::derive(ProtocolKind::AuxInfo, "", session, &indices, &[]);
        let sid = SessionId::from_uuid(session);
        let party = self.join_session::<AuxInfoMsg>(
            sid,
            ProtocolKind::AuxInfo,
            &node_set,
            Limits::ms(self.inner.config.limits.aux_info_timeout_ms),
        )?;
        let result = run_blocking(move || async move {
            ecdsa::generate_aux_info(&eid, i, n, primes, party, &mut OsRng).await
        })
        .await?;
        let aux = match result {
            Ok(aux) => aux,
            Err(e) => {
                // The primes were never used to finish a run: keep them for the next one
                // (their modulus may have been published, which is public anyway).
                if let Err(e) = store.add_primes(&primes_bytes).await {
                    warn!(error = %e, "could not return primes to the pool");
                }
                return Err(self.attribute(sid, e));
            }
        };
        let digest = hex::encode(aux.public_digest()?);
        store
            .put_aux_info(&node_set, &aux.to_bytes()?, &digest, session)
            .await?;
        info!(node = self.id().get(), %session, "aux info stored");
        Ok(Outcome::AuxInfo {
            public_digest: digest,
        })
    }
}
