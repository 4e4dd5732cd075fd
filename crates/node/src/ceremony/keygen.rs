//! Key generation over the network (CGGMP24 or FROST): the wallet is active only after every
//! participant reported the same key, in the two phases of `decision` (a participant that
//! misses the coordinator's commit or abort asks for it instead of guessing).

use mpc_bitcoin::Scheme;
use mpc_coordination::FencingToken;
use mpc_protocols::{
    ecdsa::{self, EcdsaKeyShare},
    execution::{ExecutionId, ProtocolKind},
    schnorr, PartyIndex,
};
use mpc_store::{WalletRecord, WalletState};
use mpc_transport::{NodeId, SessionId};
use mpc_types::WalletId;
use rand_core::OsRng;
use tracing::{info, warn, Instrument};
use uuid::Uuid;

use crate::{
    config::Limits,
    control::{Outcome, ProposalBody, WalletSpec},
    delivery::run_blocking,
    keys::{keygen_indices, wallet_info, WalletInfo},
    now_ms, Node, NodeError,
};

use super::{
    all_agree,
    decision::{Deciding, Decision},
    CreateWallet,
};

/// The ceremony's kind in records and proposals.
const KIND: &str = "keygen";

impl Node {
    /// Coordinates a keygen. The wallet is active only after every participant reported the
    /// same key; on any failure every participant discards its share.
    pub async fn create_wallet(
        &self,
        session: Uuid,
        request: CreateWallet,
    ) -> Result<WalletInfo, NodeError> {
        let result = self.create_wallet_unaudited(session, request).await;
        let wallet_id = result.as_ref().ok().map(|w| w.id.clone());
        self.audit_ceremony("keygen", session, wallet_id, true, &result)
            .await;
        result
    }

    async fn create_wallet_unaudited(
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
            id: WalletId::from_uuid(Uuid::new_v4()),
            name: request.name.clone(),
            scheme: request.scheme,
            threshold: request.threshold.unwrap_or(config.cluster.threshold),
            participants,
            network: request.network.unwrap_or(config.cluster.network),
        };
        let span =
            tracing::info_span!("keygen", node = self.id().get(), %session, wallet = %spec.id);
        let recorded_request = serde_json::to_value(&request).unwrap_or_default();
        let result = async {
            self.check_spec(&spec)?;
            // Held until the wallet is committed or aborted everywhere.
            let lock = self.ceremony_lock().await?;
            let _deciding = Deciding::new(self, session);
            // A running record first: a participant asking for the decision meanwhile is told
            // to wait, and one asking after a restart of this node is told it failed.
            let result = match self
                .ceremony_started(session, KIND, recorded_request.clone())
                .await
            {
                Ok(()) => {
                    let recorded = (&recorded_request, started_at);
                    self.keygen_locked(session, &spec, recorded, lock.fencing_token)
                        .await
                }
                Err(e) => Err(e),
            };
            lock.release().await;
            result
        }
        .instrument(span)
        .await;
        self.recorded(session, KIND, &request, started_at, result)
            .await
    }

    async fn keygen_locked(
        &self,
        session: Uuid,
        spec: &WalletSpec,
        recorded: (&serde_json::Value, i64),
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
            all_agree(&keys, participants.len(), "keys")
        });
        // Recorded before anyone hears it (`decision`): a participant that misses it asks.
        let kept = agreed.map(|()| serde_json::json!({ "wallet_id": spec.id }));
        self.commit_or_abort(session, KIND, recorded, participants, kept)
            .await?;
        let record = self.active_wallet(&spec.id).await?;
        self.publish_wallet(&record).await;
        wallet_info(&record)
    }

    fn check_spec(&self, spec: &WalletSpec) -> Result<(), NodeError> {
        self.check_committee(spec)?;
        self.check_node_set(&spec.participants, "participants")
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
        let indices = PartyIndex::all(n);
        let sid = SessionId::from_uuid(session);
        let timeout = Limits::ms(self.inner.config.limits.keygen_timeout_ms);
        let (kind, share_bytes, public_key, chain_code) = match spec.scheme {
            Scheme::Ecdsa => {
                let aux = self.aux_info(&spec.participants).await?;
                let eid = ExecutionId::derive(
                    ProtocolKind::EcdsaKeygen,
                    spec.id.as_str(),
                    session,
                    &indices,
                    &t.to_be_bytes(),
                );
                let party =
                    self.join_session(sid, ProtocolKind::EcdsaKeygen, &spec.participants, timeout)?;
                let share = run_blocking(move || async move {
                    ecdsa::keygen(&eid, i, n, t, party, &mut OsRng).await
                })
                .await?
                .map_err(|e| self.attribute(sid, e))?;
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
                    spec.id.as_str(),
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
                .await?
                .map_err(|e| self.attribute(sid, e))?;
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
            scheme: spec.scheme,
            threshold: t,
            participants: spec.participants.clone(),
            network: spec.network,
            public_key: mpc_bitcoin::bitcoin::secp256k1::PublicKey::from_slice(&public_key.0)
                .map_err(|e| NodeError::Internal(format!("the group key: {e}")))?,
            chain_code: chain_code.into(),
            state: WalletState::Pending,
            session,
            created_at: now_ms(),
            activated_at: None,
            key_epoch: 0,
            coordinator: Some(coordinator),
        };
        // Register for the commit before reporting, so it cannot arrive unseen.
        let commit = self.await_commit(coordinator, session);
        store.insert_wallet(&record, &share_bytes).await?;
        info!(node = self.id().get(), wallet = %spec.id, %kind, "key share stored, awaiting commit");
        // Not heard within the ceremony's deadline, the decision is asked for, never guessed:
        // an abort deletes the share, which the others may have activated.
        let wait = Limits::ms(self.inner.config.limits.keygen_timeout_ms);
        let node = self.clone();
        self.spawn(
            async move {
                node.settle_keygen(&record.id, (coordinator, session), Some((commit, wait)))
                    .await
            }
            .in_current_span(),
        );
        Ok(Outcome::Keygen {
            public_key,
            chain_code: hex::encode(chain_code),
        })
    }

    /// Settles pending wallet `wallet_id` of keygen `ceremony` (`decision`): active on a commit,
    /// aborted otherwise, as its coordinator decided. At a start (`heard` is `None`) for every
    /// wallet still pending, so a participant that died between its report and the decision
    /// does not keep a wallet the others activated pending for ever.
    pub(super) async fn settle_keygen(
        &self,
        wallet_id: &WalletId,
        ceremony: (NodeId, Uuid),
        heard: Option<(
            tokio::sync::oneshot::Receiver<Decision>,
            std::time::Duration,
        )>,
    ) {
        self.settle(ceremony, heard, |decision| async move {
            let state = if decision.is_ok() {
                WalletState::Active
            } else {
                WalletState::Aborted
            };
            let stored = self.inner.store.set_wallet_state(wallet_id, state).await;
            match &stored {
                Ok(()) => info!(node = self.id().get(), wallet = %wallet_id, %state, "wallet state set"),
                Err(e) => warn!(node = self.id().get(), wallet = %wallet_id, error = %e, "could not set wallet state"),
            }
            stored.map_err(|e| e.to_string())
        })
        .await
    }
}
