//! Aux info, key generation and presignatures over the network: the coordinator's side
//! (propose, collect, check that everyone agrees, commit or abort) and the participant's side
//! (check the proposal against its own state, run the protocol, store the result).

use std::time::Instant;

use mpc_bitcoin::Scheme;
use mpc_coordination::FencingToken;
use mpc_protocols::{
    ecdsa::{self, AuxInfoMsg, EcdsaKeyShare, Primes},
    encoding,
    execution::{ExecutionId, ProtocolKind},
    schnorr, DerivationPath, PartyIndex,
};
use mpc_store::{PresignatureRecord, PresignatureState, WalletRecord, WalletState};
use mpc_transport::{NodeId, SessionId};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::{
    config::Limits,
    control::{Outcome, ProposalBody, WalletSpec},
    delivery::{run_blocking, run_blocking_background},
    keys::{keygen_indices, wallet_info, WalletInfo},
    now_ms, Node, NodeError,
};

/// A request to create a wallet (DKG).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateWallet {
    pub name: String,
    pub scheme: Scheme,
    /// Default: the cluster's threshold.
    pub threshold: Option<u16>,
    /// Default: every node of the cluster.
    pub participants: Option<Vec<NodeId>>,
    /// Default: the cluster's network.
    pub network: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuxInfoReport {
    pub node_set: Vec<NodeId>,
    pub public_digest: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PresignReport {
    pub wallet_id: String,
    pub path: String,
    pub signers: Vec<NodeId>,
    pub ids: Vec<String>,
    pub duration_ms: u64,
}

fn sorted_unique(nodes: &[NodeId]) -> bool {
    nodes.windows(2).all(|w| w[0] < w[1])
}

impl Node {
    fn check_all_live(&self, nodes: &[NodeId]) -> Result<(), NodeError> {
        let dead: Vec<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| !self.inner.health.is_live(*n))
            .collect();
        if dead.is_empty() {
            Ok(())
        } else {
            Err(NodeError::Unavailable(format!(
                "this ceremony needs every participant, and node(s) {dead:?} are not live"
            )))
        }
    }

    async fn recorded<T: Serialize>(
        &self,
        session: Uuid,
        kind: &str,
        request: &impl Serialize,
        started_at: i64,
        result: Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let json = result
            .as_ref()
            .map(|v| serde_json::to_value(v).unwrap_or(serde_json::Value::Null))
            .map_err(|e| NodeError::Internal(e.to_string()));
        let outcome = match (&result, json) {
            (Ok(_), Ok(v)) => Ok(v),
            (Err(e), _) => Err(NodeError::Internal(e.to_string())),
            (Ok(_), Err(e)) => Err(e),
        };
        let request = serde_json::to_value(request).unwrap_or(serde_json::Value::Null);
        self.record_ceremony(session, kind, request, started_at, &outcome)
            .await;
        result
    }

    // ---- aux info ----------------------------------------------------------------------

    /// Coordinates aux-info generation for the whole cluster (once per node set).
    pub async fn run_aux_info(&self, session: Uuid) -> Result<AuxInfoReport, NodeError> {
        let node_set = self.inner.config.node_ids();
        let started = Instant::now();
        let started_at = now_ms();
        let span = tracing::info_span!("aux-info", node = self.id(), %session);
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
        let i = node_set
            .iter()
            .position(|p| *p == self.id())
            .ok_or_else(|| NodeError::InvalidRequest("this node is not in the node set".into()))?
            as PartyIndex;
        let indices: Vec<PartyIndex> = (0..n).collect();
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
                return Err(e.into());
            }
        };
        let digest = hex::encode(aux.public_digest()?);
        store
            .put_aux_info(&node_set, &aux.to_bytes()?, &digest, session)
            .await?;
        info!(node = self.id(), %session, "aux info stored");
        Ok(Outcome::AuxInfo {
            public_digest: digest,
        })
    }

    // ---- key generation ----------------------------------------------------------------

    /// Coordinates a DKG. The wallet is active only after every participant reported the
    /// same key; on any failure every participant discards its share.
    pub async fn create_wallet(
        &self,
        session: Uuid,
        request: CreateWallet,
    ) -> Result<WalletInfo, NodeError> {
        let started_at = now_ms();
        let config = &self.inner.config;
        let participants = request
            .participants
            .clone()
            .unwrap_or_else(|| config.node_ids());
        let spec = WalletSpec {
            id: Uuid::new_v4().to_string(),
            name: request.name.clone(),
            scheme: request.scheme,
            threshold: request.threshold.unwrap_or(config.cluster.threshold),
            participants,
            network: request
                .network
                .clone()
                .unwrap_or_else(|| config.cluster.network.clone()),
        };
        let span = tracing::info_span!("keygen", node = self.id(), %session, wallet = %spec.id);
        let result = async {
            self.check_spec(&spec)?;
            // Held until the wallet is committed or aborted everywhere.
            let lock = self.ceremony_lock().await?;
            let result = self.keygen_locked(session, &spec, lock.fencing_token).await;
            lock.release().await;
            result
        }
        .instrument(span)
        .await;
        self.recorded(session, "keygen", &request, started_at, result)
            .await
    }

    async fn keygen_locked(
        &self,
        session: Uuid,
        spec: &WalletSpec,
        fencing_token: Option<FencingToken>,
    ) -> Result<WalletInfo, NodeError> {
        let participants = &spec.participants;
        self.check_all_live(participants)?;
        let outcomes = self
            .coordinate(
                session,
                ProposalBody::Keygen {
                    wallet: spec.clone(),
                },
                participants,
                Limits::ms(self.inner.config.limits.keygen_timeout_ms),
                fencing_token,
            )
            .await;
        let agreed = outcomes.and_then(|outcomes| {
            let keys: Vec<(String, String)> = outcomes
                .iter()
                .filter_map(|(_, o)| match o {
                    Outcome::Keygen {
                        public_key,
                        chain_code,
                    } => Some((public_key.to_string(), chain_code.clone())),
                    _ => None,
                })
                .collect();
            if keys.len() != participants.len() || keys.windows(2).any(|w| w[0] != w[1]) {
                Err(NodeError::Disagreement(format!(
                    "participants reported different keys: {keys:?}"
                )))
            } else {
                Ok(())
            }
        });
        match agreed {
            Ok(()) => {
                let missing = self.finish_ceremony(session, participants, Ok(())).await;
                if !missing.is_empty() {
                    warn!(
                        ?missing,
                        "nodes did not acknowledge the wallet's activation"
                    );
                }
                let record = self.active_wallet(&spec.id).await?;
                self.publish_wallet(&record).await;
                wallet_info(&record)
            }
            Err(e) => {
                self.finish_ceremony(session, participants, Err(e.to_string()))
                    .await;
                Err(e)
            }
        }
    }

    fn check_spec(&self, spec: &WalletSpec) -> Result<(), NodeError> {
        let bad = |m: String| Err(NodeError::InvalidRequest(m));
        let cluster = self.inner.config.node_ids();
        let p = &spec.participants;
        if !sorted_unique(p) || p.iter().any(|n| !cluster.contains(n)) {
            return bad(format!(
                "participants {p:?} must be sorted, unique cluster node ids"
            ));
        }
        if !p.contains(&self.id()) {
            return bad(format!("node {} is not a participant", self.id()));
        }
        ecdsa::check_parameters(0, p.len() as u16, spec.threshold)?;
        if spec.network != self.inner.config.cluster.network {
            return bad(format!(
                "node {} serves {}, not {}",
                self.id(),
                self.inner.config.cluster.network,
                spec.network
            ));
        }
        if spec.name.trim().is_empty() || spec.name.len() > 100 {
            return bad("wallet name must be 1 to 100 characters".into());
        }
        Ok(())
    }

    pub(crate) async fn keygen_participant(
        &self,
        coordinator: NodeId,
        session: Uuid,
        spec: WalletSpec,
    ) -> Result<Outcome, NodeError> {
        self.check_spec(&spec)?;
        let store = &self.inner.store;
        if store.wallet(&spec.id).await?.is_some() {
            return Err(NodeError::InvalidRequest(format!(
                "wallet {} already exists",
                spec.id
            )));
        }
        let n = spec.participants.len() as u16;
        let t = spec.threshold;
        let i = keygen_indices(&spec.participants, &[self.id()])?[0];
        let indices: Vec<PartyIndex> = (0..n).collect();
        let sid = SessionId::from_uuid(session);
        let timeout = Limits::ms(self.inner.config.limits.keygen_timeout_ms);
        let (kind, share_bytes, public_key, chain_code) = match spec.scheme {
            Scheme::Ecdsa => {
                let aux = self.aux_info(&spec.participants).await?;
                let eid = ExecutionId::derive(
                    ProtocolKind::EcdsaKeygen,
                    &spec.id,
                    session,
                    &indices,
                    &t.to_be_bytes(),
                );
                let party =
                    self.join_session(sid, ProtocolKind::EcdsaKeygen, &spec.participants, timeout)?;
                let share = run_blocking(move || async move {
                    ecdsa::keygen(&eid, i, n, t, party, &mut OsRng).await
                })
                .await??;
                // Check now that the share completes with our aux info.
                let complete = EcdsaKeyShare::from_parts(share.clone(), aux)?;
                (
                    ProtocolKind::EcdsaKeygen,
                    share.to_bytes()?,
                    complete.public_key(),
                    complete.chain_code()?,
                )
            }
            Scheme::Schnorr => {
                let eid = ExecutionId::derive(
                    ProtocolKind::SchnorrKeygen,
                    &spec.id,
                    session,
                    &indices,
                    &t.to_be_bytes(),
                );
                let party = self.join_session(
                    sid,
                    ProtocolKind::SchnorrKeygen,
                    &spec.participants,
                    timeout,
                )?;
                let share = run_blocking(move || async move {
                    schnorr::keygen(&eid, i, n, t, party, &mut OsRng).await
                })
                .await??;
                (
                    ProtocolKind::SchnorrKeygen,
                    share.to_bytes()?,
                    share.public_key(),
                    share.chain_code()?,
                )
            }
        };
        let record = WalletRecord {
            id: spec.id.clone(),
            name: spec.name.clone(),
            scheme: spec.scheme.as_str().into(),
            threshold: t,
            participants: spec.participants.clone(),
            network: spec.network.clone(),
            public_key: public_key.to_string(),
            chain_code: hex::encode(chain_code),
            state: WalletState::Pending,
            session,
            created_at: now_ms(),
            activated_at: None,
        };
        // Register for the commit before reporting, so it cannot arrive unseen.
        let commit = self.await_commit(coordinator, session);
        store.insert_wallet(&record, &share_bytes).await?;
        info!(node = self.id(), wallet = %spec.id, %kind, "key share stored, awaiting commit");
        let node = self.clone();
        let wallet_id = spec.id.clone();
        tokio::spawn(
            async move {
                let decision = match tokio::time::timeout(std::time::Duration::from_secs(60), commit).await {
                    Ok(Ok(d)) => d,
                    _ => Err("no commit from the coordinator".into()),
                };
                let state = if decision.is_ok() {
                    WalletState::Active
                } else {
                    WalletState::Aborted
                };
                let stored = node.inner.store.set_wallet_state(&wallet_id, state).await;
                match &stored {
                    Ok(()) => info!(node = node.id(), wallet = %wallet_id, %state, "wallet state set"),
                    Err(e) => warn!(node = node.id(), wallet = %wallet_id, error = %e, "could not set wallet state"),
                }
                let ack = stored.map_err(|e| e.to_string()).and(decision.map(|_| ()));
                node.acknowledge(coordinator, session, ack).await;
            }
            .in_current_span(),
        );
        Ok(Outcome::Keygen {
            public_key,
            chain_code: hex::encode(chain_code),
        })
    }

    // ---- presignatures -----------------------------------------------------------------

    /// Picks a signer set of `t` live participants, this node first if it participates.
    pub(crate) fn pick_signers(
        &self,
        wallet: &WalletRecord,
        exclude: &[NodeId],
    ) -> Result<Vec<NodeId>, NodeError> {
        let t = usize::from(wallet.threshold);
        let live: Vec<NodeId> = wallet
            .participants
            .iter()
            .copied()
            .filter(|n| !exclude.contains(n) && self.inner.health.is_live(*n))
            .collect();
        let mut chosen: Vec<NodeId> = live.iter().copied().filter(|n| *n == self.id()).collect();
        chosen.extend(
            live.iter()
                .copied()
                .filter(|n| *n != self.id())
                .take(t - chosen.len().min(t)),
        );
        chosen.truncate(t);
        if chosen.len() < t {
            return Err(NodeError::Unavailable(format!(
                "wallet {} needs {t} signers; live participants: {live:?}",
                wallet.id
            )));
        }
        chosen.sort_unstable();
        Ok(chosen)
    }

    /// Coordinates the generation of `count` presignatures for (wallet, path, signers). The
    /// pool's refill passes its leadership's fencing token; an operator's request passes none.
    pub async fn generate_presignatures(
        &self,
        session: Uuid,
        wallet_id: &str,
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
                tracing::info_span!("presign", node = self.id(), %session, wallet = %wallet_id),
            )
            .await;
        self.recorded(session, "presign", &request, started_at, result)
            .await
    }

    async fn presign_batch(
        &self,
        session: Uuid,
        wallet_id: &str,
        path: &DerivationPath,
        count: u32,
        signers: Option<Vec<NodeId>>,
        fencing_token: Option<FencingToken>,
    ) -> Result<PresignReport, NodeError> {
        let started = Instant::now();
        let wallet = self.active_wallet(wallet_id).await?;
        let signers = match signers {
            Some(s) => s,
            None => self.pick_signers(&wallet, &[])?,
        };
        let timeout =
            Limits::ms(self.inner.config.limits.presign_timeout_ms * u64::from(count.max(1)));
        let outcomes = self
            .coordinate(
                session,
                ProposalBody::Presign {
                    wallet_id: wallet_id.into(),
                    path: path.clone(),
                    signers: signers.clone(),
                    count,
                },
                &signers,
                timeout,
                fencing_token,
            )
            .await?;
        let lists: Vec<&Vec<String>> = outcomes
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Presign { ids } => Some(ids),
                _ => None,
            })
            .collect();
        if lists.len() != signers.len() || lists.windows(2).any(|w| w[0] != w[1]) {
            return Err(NodeError::Disagreement(
                "signers hold different presignatures".into(),
            ));
        }
        Ok(PresignReport {
            wallet_id: wallet_id.into(),
            path: path.to_string(),
            signers,
            ids: lists[0].clone(),
            duration_ms: started.elapsed().as_millis() as u64,
        })
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
        wallet_id: &str,
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
        if wallet.scheme != Scheme::Ecdsa.as_str() {
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
            let sid = SessionId::from_uuid(session).derive(&format!("presign/{k}"));
            let eid = ExecutionId::derive(
                ProtocolKind::EcdsaPresign,
                wallet_id,
                sid.as_uuid(),
                &indices,
                &path.to_bytes(),
            );
            let party = self.join_session(
                sid,
                ProtocolKind::EcdsaPresign,
                signers,
                Limits::ms(limits.presign_timeout_ms),
            )?;
            let (share, path_owned, indices_owned) = (share.clone(), path.clone(), indices.clone());
            let presig = run_blocking_background(move || async move {
                ecdsa::presign(&eid, &share, &indices_owned, &path_owned, party, &mut OsRng).await
            })
            .await??;
            crate::failpoint::crash_point("presign:generated");
            let now = now_ms();
            let record = PresignatureRecord {
                id: eid.to_string(),
                wallet_id: wallet_id.into(),
                path: path.to_string(),
                signers: signers.to_vec(),
                epoch: store.epoch().await?,
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
