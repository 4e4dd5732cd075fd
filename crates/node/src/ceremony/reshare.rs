//! Resharing and repair over the network (issue 19): new shares of the same key for another
//! committee or threshold (`mpc_protocols::reshare`), in the two phases of `decision`.
//!
//! The coordinator picks `t` live old participants as dealers (leaving nodes first, so that
//! they take part and delete their shares), and proposes the resharing to every node of the
//! run: the new committee, then the dealers that leave it. Each checks the proposal against
//! its own state (`check_reshare`), runs the protocol and keeps what it got pending:
//! * an old member that stays stores its new share as a pending share with the new committee
//!   (`Store::put_pending_reshare`); the commit makes it active, with the new participants,
//!   threshold and key epoch, and retires the older presignatures, in one transaction;
//! * a dealer that leaves stores a pending row without a share; the commit deletes its share
//!   and marks the wallet `retired` on it (the record stays, with the new committee);
//! * a new node (no record of the wallet) inserts the wallet as `pending` with its share, the
//!   new committee and key epoch, as keygen does; the commit makes it active.
//!
//! The coordinator commits only when every node of the run reported the same digest of the new
//! key's public side; on any failure everyone drops what it kept and the old shares stay valid.
//!
//! A repair is a resharing to the same committee and threshold in which the repaired node does
//! not deal: it takes part with the public key info only (its share may be missing or
//! corrupt), and every node's share changes. No node ever holds the key (see the protocol).
//!
//! What a coordinator cannot make an honest node do: hand it a fake old key info (an old
//! member compares it with its own; a new node's share would not check against the dealers'
//! constant terms `λ_i·X_i`, which must add up to the group key in the old members' record);
//! deal from fewer or more than `t` (the protocol counts the dealers against the key info);
//! put a node twice in the run or a dealer outside the old committee (`Plan::for_committees`);
//! drop a node silently (every node checks the committee it joins, and an old member that is
//! left out keeps its record: the report names it); lower the threshold below 2 or above `n′`
//! (refused by every node).

use std::time::Instant;

use mpc_bitcoin::Scheme;
use mpc_coordination::FencingToken;
use mpc_protocols::{
    ecdsa::AuxInfo,
    execution::{ExecutionId, ProtocolKind},
    reshare::{reshare_ecdsa, reshare_schnorr, KeyInfo, Plan, ReshareMsg},
    PartyIndex,
};
use mpc_store::{Committee, PendingShare, WalletRecord, WalletState};
use mpc_transport::{NodeId, SessionId};
use mpc_types::WalletId;
use rand_core::OsRng;
use serde::Serialize;
use tracing::{info, Instrument};
use uuid::Uuid;

use super::{all_agree, decision::Deciding, sorted_unique};
use crate::{
    config::Limits,
    control::{Outcome, ProposalBody, ReshareSpec, WalletSpec},
    delivery::run_blocking,
    now_ms, Node, NodeError,
};

/// The ceremonies' kinds in records.
const RESHARE: &str = "reshare";
const REPAIR: &str = "repair";

/// A committed resharing or repair, as the coordinator reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ReshareReport {
    pub wallet_id: WalletId,
    /// The wallet's key epoch now.
    pub key_epoch: u64,
    /// The new committee and threshold.
    pub participants: Vec<NodeId>,
    pub threshold: u16,
    /// The old participants that dealt.
    pub dealers: Vec<NodeId>,
    /// Unchanged, as are the xpub, addresses and descriptors.
    pub public_key: String,
    pub duration_ms: u64,
    /// Nodes that did not acknowledge the commit (they learn it by asking).
    pub unacknowledged: Vec<NodeId>,
    /// Old participants outside the new committee that did not deal (more leave than the old
    /// threshold, or they were not live): not in the run, they still hold their old share,
    /// which no longer combines with the new ones; delete it there by hand.
    pub not_reached: Vec<NodeId>,
}

/// The plan every node of the run derives from the proposal, and the run's nodes in run order.
fn plan(spec: &ReshareSpec) -> Result<(Plan, Vec<NodeId>), NodeError> {
    Ok(Plan::for_committees(
        &spec.old_participants,
        &spec.dealers,
        &spec.wallet.participants,
        spec.wallet.threshold,
    )?)
}

/// The old shares a resharing leaves behind: nodes that leave the committee without dealing
/// (down, or more of them than the old threshold), which keep their old share because the run
/// never reaches them. Refused when they are `t` or more: together they could still sign with
/// the old shares, of the same key, outside the new committee. Remove that many nodes in two
/// resharings, or with them live.
fn left_behind(spec: &ReshareSpec, old_threshold: u16) -> Result<Vec<NodeId>, NodeError> {
    let kept: Vec<NodeId> = spec
        .old_participants
        .iter()
        .copied()
        .filter(|n| !spec.wallet.participants.contains(n) && !spec.dealers.contains(n))
        .collect();
    if kept.len() >= usize::from(old_threshold) {
        return Err(NodeError::InvalidRequest(format!(
            "the resharing would leave the old shares of {kept:?} undeleted, enough ({} of a \
             threshold of {old_threshold}) to sign with the old committee: remove fewer nodes \
             at a time, or only live ones",
            kept.len()
        )));
    }
    Ok(kept)
}

/// Bound to the wallet, the session, the plan, the run's nodes, the old committee and the new
/// key epoch, so no message of one resharing counts in another.
fn execution_id(session: Uuid, spec: &ReshareSpec, plan: &Plan, run: &[NodeId]) -> ExecutionId {
    let ids = |nodes: &[NodeId]| -> Vec<u8> {
        nodes.iter().flat_map(|n| n.get().to_be_bytes()).collect()
    };
    let context = [
        plan.to_bytes(),
        spec.key_epoch.to_be_bytes().to_vec(),
        ids(run),
        ids(&spec.old_participants),
    ]
    .concat();
    ExecutionId::derive(
        ProtocolKind::KeyReshare,
        spec.wallet.id.as_str(),
        session,
        &PartyIndex::all(run.len() as u16),
        &context,
    )
}

/// What a node found when it checked a resharing proposal.
struct Checked {
    plan: Plan,
    run: Vec<NodeId>,
    /// This node's run index.
    me: u16,
    /// This node's record of the wallet (active), if it has one.
    record: Option<WalletRecord>,
    /// This node held the wallet before and no longer does (`retired` or `aborted`): it
    /// joins like a new node, over its old record.
    rejoins: bool,
    /// ECDSA receivers: the new committee's aux info.
    aux: Option<AuxInfo>,
}

impl Node {
    /// Coordinates a resharing of `wallet_id` to `participants` with `threshold`: the key,
    /// xpub, addresses and descriptors stay; every new participant gets a new share, and the
    /// old participants that leave delete theirs (those that deal; see
    /// [`ReshareReport::not_reached`]).
    pub async fn reshare_wallet(
        &self,
        session: Uuid,
        wallet_id: &WalletId,
        participants: Vec<NodeId>,
        threshold: u16,
    ) -> Result<ReshareReport, NodeError> {
        self.reshare_or_repair(session, wallet_id, (participants, threshold), None)
            .await
    }

    /// Coordinates the repair of `node`'s share of `wallet_id`: a resharing to the same
    /// committee and threshold in which `node` only receives. Every share changes.
    pub async fn repair_wallet(
        &self,
        session: Uuid,
        wallet_id: &WalletId,
        node: NodeId,
    ) -> Result<ReshareReport, NodeError> {
        let wallet = self.active_wallet(wallet_id).await;
        let committee = wallet.map(|w| (w.participants, w.threshold));
        let committee = match committee {
            Ok((p, t)) if p.contains(&node) => (p, t),
            Ok(_) => {
                return Err(NodeError::InvalidRequest(format!(
                    "node {node} is not a participant of wallet {wallet_id}"
                )))
            }
            Err(e) => return Err(e),
        };
        self.reshare_or_repair(session, wallet_id, committee, Some(node))
            .await
    }

    async fn reshare_or_repair(
        &self,
        session: Uuid,
        wallet_id: &WalletId,
        (participants, threshold): (Vec<NodeId>, u16),
        repaired: Option<NodeId>,
    ) -> Result<ReshareReport, NodeError> {
        let started = Instant::now();
        let started_at = now_ms();
        let kind = if repaired.is_some() { REPAIR } else { RESHARE };
        let span = tracing::info_span!("reshare", node = self.id().get(), %session, wallet = %wallet_id, kind);
        let request = serde_json::json!({
            "wallet_id": wallet_id,
            "participants": participants,
            "threshold": threshold,
            "repair": repaired,
        });
        let result = async {
            self.check_reshare_request(wallet_id, &participants, threshold)
                .await?;
            // The wallet is read under the lock: a ceremony that held it may have moved the
            // wallet's key epoch.
            let lock = self.ceremony_lock().await?;
            let _deciding = Deciding::new(self, session);
            let result = async {
                let wallet = self.active_wallet(wallet_id).await?;
                let (spec, not_reached) = self
                    .propose_reshare(&wallet, participants, threshold, repaired)
                    .await?;
                self.ceremony_started(session, kind, request.clone())
                    .await?;
                self.audit_refresh("started", session, &wallet.id, spec.key_epoch, true, None)
                    .await;
                let recorded = (&request, started_at);
                let unacknowledged = self
                    .reshare_locked(session, &spec, kind, recorded, lock.fencing_token)
                    .await?;
                Ok(ReshareReport {
                    wallet_id: wallet.id.clone(),
                    key_epoch: spec.key_epoch,
                    participants: spec.wallet.participants.clone(),
                    threshold: spec.wallet.threshold,
                    dealers: spec.dealers.clone(),
                    public_key: wallet.public_key.to_string(),
                    duration_ms: started.elapsed().as_millis() as u64,
                    unacknowledged,
                    not_reached,
                })
            }
            .await;
            lock.release().await;
            result
        }
        .instrument(span)
        .await;
        self.recorded(session, kind, &request, started_at, result)
            .await
    }

    /// What a client's resharing request must be before a ceremony starts (the API answers
    /// 422 otherwise): an active wallet here, and a committee every node would accept.
    pub async fn check_reshare_request(
        &self,
        wallet_id: &WalletId,
        participants: &[NodeId],
        threshold: u16,
    ) -> Result<(), NodeError> {
        let wallet = self.active_wallet(wallet_id).await?;
        let mut participants = participants.to_vec();
        participants.sort_unstable();
        self.check_committee(&WalletSpec {
            id: wallet.id,
            name: wallet.name,
            scheme: wallet.scheme,
            threshold,
            participants,
            network: wallet.network,
        })?;
        self.check_threshold_floor(wallet.threshold, threshold)
    }

    /// The coordinator's proposal: the new committee checked, the dealers picked (`t` live old
    /// participants, leaving ones first, never the repaired node), the old key info from this
    /// node's own share. Also the leaving nodes the run does not reach.
    async fn propose_reshare(
        &self,
        wallet: &WalletRecord,
        mut participants: Vec<NodeId>,
        threshold: u16,
        repaired: Option<NodeId>,
    ) -> Result<(ReshareSpec, Vec<NodeId>), NodeError> {
        participants.sort_unstable();
        let spec = WalletSpec {
            id: wallet.id.clone(),
            name: wallet.name.clone(),
            scheme: wallet.scheme,
            threshold,
            participants,
            network: wallet.network,
        };
        self.check_committee(&spec)?;
        let key_info = self.own_key_info(wallet).await?;
        let new = &spec.participants;
        let leaving = |n: &NodeId| !new.contains(n);
        let mut candidates: Vec<NodeId> = wallet
            .participants
            .iter()
            .copied()
            .filter(|n| Some(*n) != repaired && self.inner.health.is_live(*n))
            .collect();
        // Leaving nodes first (stable: then by id).
        candidates.sort_by_key(|n| !leaving(n));
        let t = usize::from(wallet.threshold);
        if candidates.len() < t {
            return Err(NodeError::Unavailable(format!(
                "a resharing needs {t} live old participants to deal, and only {candidates:?} are"
            )));
        }
        candidates.truncate(t);
        let mut dealers = candidates;
        dealers.sort_unstable();
        let spec = ReshareSpec {
            wallet: spec,
            key_epoch: wallet.key_epoch + 1,
            old_participants: wallet.participants.clone(),
            dealers,
            key_info,
        };
        let not_reached = left_behind(&spec, wallet.threshold)?;
        let (_, run) = plan(&spec)?;
        self.check_all_live(&run)?;
        if spec.wallet.scheme == Scheme::Ecdsa && spec.wallet.participants.contains(&self.id()) {
            // Every receiver checks it too; here it fails before anything starts.
            self.aux_info(&spec.wallet.participants).await?;
        }
        Ok((spec, not_reached))
    }

    async fn reshare_locked(
        &self,
        session: Uuid,
        spec: &ReshareSpec,
        kind: &str,
        recorded: (&serde_json::Value, i64),
        fencing_token: Option<FencingToken>,
    ) -> Result<Vec<NodeId>, NodeError> {
        let (_, run) = plan(spec)?;
        let outcomes = self
            .coordinate(
                session,
                ProposalBody::Reshare(Box::new(spec.clone())),
                &run,
                Limits::ms(self.inner.config.limits.keygen_timeout_ms),
                fencing_token,
            )
            .await;
        let agreed = outcomes.and_then(|outcomes| {
            let digests: Vec<&String> = outcomes
                .iter()
                .filter_map(|(_, o)| match o {
                    Outcome::Reshare { digest } => Some(digest),
                    _ => None,
                })
                .collect();
            all_agree(&digests, run.len(), "new keys")
        });
        // Recorded before anyone hears it (`decision`): a node that misses it asks.
        let kept = agreed.map(|()| serde_json::json!({ "key_epoch": spec.key_epoch }));
        self.commit_or_abort(session, kind, recorded, &run, kept)
            .await
    }

    /// The public side of this node's share of `wallet`.
    async fn own_key_info(&self, wallet: &WalletRecord) -> Result<KeyInfo, NodeError> {
        Ok(match wallet.scheme {
            Scheme::Schnorr => self.schnorr_share(wallet).await?.key_info(),
            Scheme::Ecdsa => self.ecdsa_share(wallet).await?.key_info(),
        })
    }

    /// A resharing may raise a wallet's threshold, but lower it no further than the cluster's
    /// `threshold`, which every operator set in its own configuration. Otherwise whoever
    /// starts a resharing (a stolen admin token, one hostile coordinator) could take a 3-of-5
    /// wallet to 2-of-5 and then spend with two nodes: fewer than the `t` the operators agreed
    /// to. A wallet created below the cluster's threshold keeps at least its own (design
    /// invariant 13).
    fn check_threshold_floor(&self, old: u16, new: u16) -> Result<(), NodeError> {
        let floor = self.inner.config.cluster.threshold.min(old);
        if new < floor {
            return Err(NodeError::InvalidRequest(format!(
                "a resharing from threshold {old} to {new}: node {} lowers a wallet's \
                 threshold no further than the cluster's ({})",
                self.id(),
                self.inner.config.cluster.threshold
            )));
        }
        Ok(())
    }

    /// A node's checks of a resharing proposal before it takes part (design invariant 7).
    async fn check_reshare(&self, spec: &ReshareSpec) -> Result<Checked, NodeError> {
        let bad = |m: String| NodeError::InvalidRequest(m);
        self.check_committee(&spec.wallet)?;
        let cluster = self.inner.config.node_ids();
        let old = &spec.old_participants;
        if !sorted_unique(old) || old.iter().any(|n| !cluster.contains(n)) {
            return Err(bad(format!(
                "the old participants {old:?} must be sorted, unique cluster node ids"
            )));
        }
        let mut dealers = spec.dealers.clone();
        dealers.sort_unstable();
        dealers.dedup();
        let info = &spec.key_info;
        if dealers.len() != spec.dealers.len()
            || Some(dealers.len()) != info.threshold().map(usize::from)
            || info.n() != old.len()
        {
            return Err(bad(format!(
                "dealers {:?} of a key of {} parties with threshold {:?}: exactly the threshold \
                 of distinct old participants must deal",
                spec.dealers,
                info.n(),
                info.threshold()
            )));
        }
        // The old threshold as the proposal states it: an old member checks it against its
        // own record below, so a new node's floor holds whenever one honest old member deals.
        let old_threshold = info
            .threshold()
            .ok_or_else(|| bad("the old key has no threshold".into()))?;
        self.check_threshold_floor(old_threshold, spec.wallet.threshold)?;
        left_behind(spec, old_threshold)?;
        let (plan, run) = plan(spec)?;
        let me = run
            .iter()
            .position(|n| *n == self.id())
            .ok_or_else(|| bad(format!("node {} is not in this resharing", self.id())))?;
        let role = plan.roles()[me];
        let id = &spec.wallet.id;
        let mut rejoins = false;
        let record = match self.inner.store.wallet(id).await? {
            Some(r) if r.state == WalletState::Active => Some(r),
            Some(r)
                if matches!(r.state, WalletState::Retired | WalletState::Aborted)
                    && role.dealer.is_none() =>
            {
                rejoins = true;
                None
            }
            Some(r) => {
                return Err(bad(format!(
                    "wallet {id} is {} on node {}: it cannot take part in a resharing of it",
                    r.state,
                    self.id()
                )))
            }
            None if role.dealer.is_some() => {
                return Err(NodeError::NotFound(format!(
                    "wallet {id} on node {}, which is to deal",
                    self.id()
                )))
            }
            None => None,
        };
        if let Some(r) = &record {
            let w = &spec.wallet;
            let same = r.participants == *old
                && Some(r.threshold) == info.threshold()
                && r.key_epoch.checked_add(1) == Some(spec.key_epoch)
                && (r.scheme, r.network, &r.name) == (w.scheme, w.network, &w.name)
                && info.public_key().0 == r.public_key.serialize()
                && info.chain_code() == Some(r.chain_code.to_bytes());
            if !same {
                return Err(bad(format!(
                    "the resharing of wallet {id} does not match node {}'s record of it \
                     (participants {:?}, threshold {}, key epoch {}, public key {})",
                    self.id(),
                    r.participants,
                    r.threshold,
                    r.key_epoch,
                    r.public_key
                )));
            }
            // A node whose share is missing or unreadable (a repair) takes part with the
            // public side only, and must not deal.
            match self.own_key_info(r).await {
                Ok(own) if own != *info => {
                    return Err(bad(format!(
                        "the proposed key info of wallet {id} differs from node {}'s own",
                        self.id()
                    )))
                }
                Ok(_) => {}
                Err(e) if role.dealer.is_some() => return Err(e),
                Err(e) => {
                    info!(node = self.id().get(), wallet = %id, error = %e, "no usable share: taking part with the public key info only");
                }
            }
        }
        let aux = match (spec.wallet.scheme, role.receiver) {
            (Scheme::Ecdsa, Some(_)) => Some(self.aux_info(&spec.wallet.participants).await?),
            _ => None,
        };
        Ok(Checked {
            plan,
            run,
            me: me as u16,
            record,
            rejoins,
            aux,
        })
    }

    /// A node's part: check the proposal, run the resharing, keep the result pending and
    /// report its digest; the commit or abort is applied in the background.
    pub(crate) async fn reshare_participant(
        &self,
        coordinator: NodeId,
        session: Uuid,
        spec: ReshareSpec,
    ) -> Result<Outcome, NodeError> {
        let checked = self.check_reshare(&spec).await?;
        // Registered before the run: an abort that arrives while it runs is not missed.
        let decision = self.await_commit(coordinator, session);
        let kept = self
            .reshare_and_keep_pending(coordinator, session, &spec, checked)
            .await;
        let (digest, new_node) = match kept {
            Ok(k) => k,
            Err(e) => {
                self.forget_commit(session);
                return Err(e);
            }
        };
        info!(node = self.id().get(), wallet = %spec.wallet.id, key_epoch = spec.key_epoch, "reshared, awaiting commit");
        let wait = Limits::ms(self.inner.config.limits.keygen_timeout_ms);
        let node = self.clone();
        let id = spec.wallet.id.clone();
        let pending = PendingShare {
            wallet_id: id.clone(),
            key_epoch: spec.key_epoch,
            session,
            coordinator,
            created_at: now_ms(),
        };
        // On the node's task list: a node shut down mid-wait settles at its next start.
        self.spawn(
            async move {
                let heard = Some((decision, wait));
                if new_node {
                    node.settle_keygen(&id, (coordinator, session), heard).await
                } else {
                    node.settle_refresh(pending, heard).await
                }
            }
            .in_current_span(),
        );
        Ok(Outcome::Reshare {
            digest: hex::encode(digest),
        })
    }

    /// Runs the resharing and keeps its result pending: returns the digest, and whether this
    /// node is new to the wallet (it inserted a pending wallet).
    async fn reshare_and_keep_pending(
        &self,
        coordinator: NodeId,
        session: Uuid,
        spec: &ReshareSpec,
        checked: Checked,
    ) -> Result<([u8; 32], bool), NodeError> {
        let Checked {
            plan,
            run,
            me,
            record,
            rejoins,
            aux,
        } = checked;
        let eid = execution_id(session, spec, &plan, &run);
        let sid = SessionId::from_uuid(session);
        let timeout = Limits::ms(self.inner.config.limits.keygen_timeout_ms);
        let party =
            self.join_session::<ReshareMsg>(sid, ProtocolKind::KeyReshare, &run, timeout)?;
        let info = spec.key_info.clone();
        let (share, digest) = match spec.wallet.scheme {
            Scheme::Schnorr => {
                let old = match &record {
                    Some(r) => self.schnorr_share(r).await.ok(),
                    None => None,
                };
                let out = run_blocking(move || async move {
                    let old = old.as_deref();
                    reshare_schnorr(&eid, &plan, me, &info, old, party, &mut OsRng).await
                })
                .await?
                .map_err(|e| self.attribute(sid, e))?;
                let share = out.share.map(|s| s.to_bytes()).transpose()?;
                (share, out.digest)
            }
            Scheme::Ecdsa => {
                let old = match &record {
                    Some(r) => self.ecdsa_share(r).await.ok(),
                    None => None,
                };
                let out = run_blocking(move || async move {
                    let old = old.as_deref();
                    reshare_ecdsa(&eid, &plan, me, &info, old, aux, party, &mut OsRng).await
                })
                .await?
                .map_err(|e| self.attribute(sid, e))?;
                let share = match out.share {
                    Some(s) => Some(s.into_parts()?.0.to_bytes()?),
                    None => None,
                };
                (share, out.digest)
            }
        };
        let store = &self.inner.store;
        let committee = Committee {
            participants: spec.wallet.participants.clone(),
            threshold: spec.wallet.threshold,
        };
        if record.is_some() {
            store
                .put_pending_reshare(
                    &spec.wallet.id,
                    spec.key_epoch,
                    (session, coordinator),
                    share.as_deref().map(|s| &s[..]),
                    &committee,
                )
                .await?;
            return Ok((digest, false));
        }
        let share = share.ok_or_else(|| {
            NodeError::Internal("a new node of a resharing received no share".into())
        })?;
        let public_key = spec.key_info.public_key();
        let chain_code = spec
            .key_info
            .chain_code()
            .ok_or_else(|| NodeError::InvalidRequest("the key has no chain code".into()))?;
        let wallet = WalletRecord {
            id: spec.wallet.id.clone(),
            name: spec.wallet.name.clone(),
            scheme: spec.wallet.scheme,
            threshold: spec.wallet.threshold,
            participants: spec.wallet.participants.clone(),
            network: spec.wallet.network,
            public_key: mpc_bitcoin::bitcoin::secp256k1::PublicKey::from_slice(&public_key.0)
                .map_err(|e| NodeError::Internal(format!("the group key: {e}")))?,
            chain_code: chain_code.into(),
            state: WalletState::Pending,
            session,
            created_at: now_ms(),
            activated_at: None,
            key_epoch: spec.key_epoch,
            coordinator: Some(coordinator),
        };
        if rejoins {
            store.rejoin_wallet(&wallet, &share).await?;
        } else {
            store.insert_wallet(&wallet, &share).await?;
        }
        Ok((digest, true))
    }
}
