//! The node: start-up, the control dispatcher, heartbeats, and the coordination helper that
//! every ceremony uses (propose to participants, run our own part, collect outcomes with a
//! deadline that names whoever stayed silent).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use mpc_coordination::{ClusterBackend, FencingToken};
use mpc_protocols::ProtocolKind;
use mpc_store::{CeremonyRecord, KeySource, Store, Zeroizing};
use mpc_transport::{
    certs::TlsIdentity,
    quic::{MeshConfig, PeerConfig, QuicMesh},
    ControlInbox, NodeId, Router, SessionId, Transport,
};
use round_based::ProtocolMessage;
use serde::{de::DeserializeOwned, Serialize};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn, Instrument};
use uuid::Uuid;

use crate::{
    config::{Limits, NodeConfig},
    control::{Control, Outcome, Proposal, ProposalBody},
    delivery::{connect, MeshParty, SessionParties},
    health::Health,
    keys::ShareCache,
    now_ms,
    ready::ReadyPresignatures,
    refusal::Refusal,
    round::{Round, Verdict},
    NodeError,
};

type OutcomeSender = mpsc::UnboundedSender<(NodeId, Result<Outcome, Refusal>)>;

/// A coordinator waiting for participants' outcomes of one session.
struct Waiter {
    participants: HashSet<NodeId>,
    tx: OutcomeSender,
}

/// A participant waiting for the coordinator's commit or abort.
struct CommitWaiter {
    coordinator: NodeId,
    tx: oneshot::Sender<Result<(), String>>,
}

pub(crate) struct Inner {
    pub config: NodeConfig,
    pub store: Store,
    pub transport: Arc<dyn Transport>,
    pub router: Arc<Router>,
    pub health: Health,
    pub shares: ShareCache,
    pub pool: crate::pool::PoolState,
    /// The ready presignatures this node can offer as coordinator, remembered between
    /// signings, and those it offered or consumed (never offered again).
    pub(crate) ready: Mutex<ReadyPresignatures>,
    /// Each wallet's next unused change index, as far as this node knows (`change.rs`).
    pub(crate) change_next: Mutex<HashMap<String, u32>>,
    /// Bounds the signed-transaction notices checked at once (`change.rs`).
    pub(crate) notice_checks: Arc<tokio::sync::Semaphore>,
    waiters: Mutex<HashMap<Uuid, Waiter>>,
    commit_waiters: Mutex<HashMap<Uuid, CommitWaiter>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    mesh: Option<Arc<QuicMesh>>,
    /// The cluster backend (ceremony lock, refill election), connected on first use.
    pub backend: tokio::sync::OnceCell<ClusterBackend>,
    /// Held while a proposal's fencing token is checked and recorded (`locks`).
    pub(crate) fencing: tokio::sync::Mutex<()>,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

/// How long a coordinator waits for acknowledgements of a commit or abort.
const ACKNOWLEDGEMENT_WAIT: Duration = Duration::from_secs(5);

/// The session id under which participants acknowledge a commit/abort of `session`.
fn commit_ack_session(session: Uuid) -> Uuid {
    SessionId::from_uuid(session).derive("commit-ack").as_uuid()
}

/// Loads the key-encryption key source from the config or the environment.
pub fn key_source(config: &NodeConfig) -> Result<KeySource, NodeError> {
    if let Some(path) = &config.store.key_file {
        return Ok(KeySource::KeyFile(path.clone()));
    }
    match std::env::var("MPC_WALLET_PASSPHRASE") {
        Ok(p) if !p.is_empty() => Ok(KeySource::Passphrase(Zeroizing::new(p))),
        _ => Err(NodeError::Config(
            "no key-encryption key: set store.key_file or MPC_WALLET_PASSPHRASE".into(),
        )),
    }
}

/// Checks the store against the node's rollback guard file before anything can use a
/// presignature from it (every service starts after this); a rolled-back store has its
/// presignatures retired (the store logs the details).
async fn guard_store(config: &NodeConfig, store: &Store) -> Result<(), NodeError> {
    let path = config.rollback_guard_file();
    let check = store.guard_against_rollback(&path).await?;
    info!(node = config.id, path = %path.display(), ?check, "store checked for a rollback");
    Ok(())
}

impl Node {
    /// Opens the store, starts the QUIC mesh and every background service.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        config.validate()?;
        crate::failpoint::log_requested();
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| NodeError::Config(format!("{}: {e}", config.data_dir.display())))?;
        let store = Store::open(&config.store_url(), &key_source(&config)?, config.id).await?;
        guard_store(&config, &store).await?;
        let (router, control) = Router::new(config.id, config.limits.router());
        let me = config
            .peer(config.id)
            .ok_or_else(|| NodeError::Config("this node is not in cluster.nodes".into()))?;
        let identity = TlsIdentity::load(
            &config.tls.ca,
            &config.tls.certificate,
            &config.tls.private_key,
        )?;
        let mut mesh_config = MeshConfig::new(
            config.id,
            me.address,
            config
                .cluster
                .nodes
                .iter()
                .filter(|p| p.id != config.id)
                .map(|p| PeerConfig {
                    id: p.id,
                    address: p.address,
                })
                .collect(),
            identity,
        );
        mesh_config.max_frame_bytes = config.limits.max_frame_bytes;
        mesh_config.max_streams_per_peer = config.limits.max_streams_per_peer;
        mesh_config.frame_read_timeout = Limits::ms(config.limits.frame_read_timeout_ms);
        let mesh = Arc::new(QuicMesh::start(mesh_config, router.clone()).await?);
        let node = Self::assemble(config, store, mesh.clone(), router, control, Some(mesh));
        node.import_primes().await?;
        Ok(node)
    }

    /// Builds a node over any transport (the in-memory mesh in tests), checking its store
    /// against the rollback guard file first as [`Node::start`] does.
    pub async fn with_transport(
        config: NodeConfig,
        store: Store,
        transport: Arc<dyn Transport>,
        router: Arc<Router>,
        control: ControlInbox,
    ) -> Result<Self, NodeError> {
        guard_store(&config, &store).await?;
        Ok(Self::assemble(
            config, store, transport, router, control, None,
        ))
    }

    fn assemble(
        config: NodeConfig,
        store: Store,
        transport: Arc<dyn Transport>,
        router: Arc<Router>,
        control: ControlInbox,
        mesh: Option<Arc<QuicMesh>>,
    ) -> Self {
        let health = Health::new(
            config.id,
            config.node_ids(),
            Limits::ms(config.limits.liveness_ms),
        );
        let node = Node {
            inner: Arc::new(Inner {
                config,
                store,
                transport,
                router,
                health,
                shares: ShareCache::default(),
                pool: Default::default(),
                ready: Mutex::default(),
                change_next: Mutex::default(),
                notice_checks: Arc::new(tokio::sync::Semaphore::new(crate::change::NOTICE_CHECKS)),
                waiters: Mutex::new(HashMap::new()),
                commit_waiters: Mutex::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
                mesh,
                backend: tokio::sync::OnceCell::new(),
                fencing: tokio::sync::Mutex::new(()),
            }),
        };
        node.spawn(node.clone().dispatch(control));
        node.spawn(node.clone().heartbeats());
        node.spawn(node.clone().prime_pool());
        node.spawn(node.clone().pool_service());
        node.spawn(node.clone().membership_service());
        info!(node = node.id(), "node started");
        node
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            tasks.push(handle);
        }
    }

    /// Stops background services and closes the mesh gracefully.
    pub async fn shutdown(&self) {
        if let Ok(mut tasks) = self.inner.tasks.lock() {
            for t in tasks.drain(..) {
                t.abort();
            }
        }
        self.stop_pool_election();
        if let Some(mesh) = &self.inner.mesh {
            mesh.shutdown().await;
        }
        self.inner.store.close().await;
        info!(node = self.id(), "node stopped");
    }

    pub fn id(&self) -> NodeId {
        self.inner.config.id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// Frames and connections the mesh refused (bad certificates, bad frames, replays).
    pub fn mesh_stats(&self) -> Option<&mpc_transport::quic::MeshStats> {
        self.inner.mesh.as_ref().map(|m| m.stats())
    }

    // ---- control messages -------------------------------------------------------------

    pub(crate) async fn send_control(
        &self,
        to: NodeId,
        session: Uuid,
        msg: &Control,
    ) -> Result<(), NodeError> {
        let envelope = msg.envelope(session, self.id(), to)?;
        self.inner.transport.send(to, envelope).await?;
        Ok(())
    }

    async fn dispatch(self, mut control: ControlInbox) {
        while let Some(envelope) = control.recv().await {
            // The router has checked that `from` is the authenticated sender.
            let from = envelope.from;
            let msg = match Control::from_envelope(&envelope) {
                Ok(m) => m,
                Err(e) => {
                    warn!(node = self.id(), from, error = %e, "malformed control message");
                    continue;
                }
            };
            match msg {
                Control::Heartbeat { version, .. } => self.inner.health.heard_from(from, version),
                Control::Propose(proposal) => {
                    let node = self.clone();
                    let span = tracing::info_span!("participant", node = self.id(), session = %proposal.session, kind = proposal.body.kind(), coordinator = from);
                    tokio::spawn(async move { node.answer(from, proposal).await }.instrument(span));
                }
                Control::Outcome { session, result } => self.outcome_arrived(from, session, result),
                Control::Commit { session } => self.commit_arrived(from, session, Ok(())),
                Control::Abort { session, reason } => {
                    self.commit_arrived(from, session, Err(reason))
                }
                Control::Signed {
                    wallet_ids,
                    psbt,
                    raw_transaction,
                } => self.signed_arrived(from, wallet_ids, psbt, raw_transaction),
            }
        }
    }

    /// Runs our part of a proposal and reports the outcome to its coordinator.
    async fn answer(&self, coordinator: NodeId, proposal: Proposal) {
        let session = proposal.session;
        let is_sign = matches!(proposal.body, ProposalBody::Sign { .. });
        let result = self.participate(coordinator, proposal).await;
        if let Err(e) = &result {
            warn!(error = %e, "refused or failed");
        }
        let result = result.map_err(|e| Refusal::from(&e));
        if coordinator == self.id() {
            self.outcome_arrived(coordinator, session, result);
        } else if let Err(e) = self
            .send_control(coordinator, session, &Control::Outcome { session, result })
            .await
        {
            warn!(error = %e, "could not report the outcome to the coordinator");
        }
        if is_sign {
            crate::failpoint::crash_point("sign:reported");
        }
    }

    /// Checks a proposal against this node's own state, then runs it.
    async fn participate(
        &self,
        coordinator: NodeId,
        proposal: Proposal,
    ) -> Result<Outcome, NodeError> {
        // Invariant 4: a session id is used once, ever. (A signer marks it in the same commit
        // as its presignatures and spends: `Store::begin_signing`.)
        let is_sign = matches!(proposal.body, ProposalBody::Sign { .. });
        if !is_sign
            && !self
                .inner
                .store
                .mark_session_seen(proposal.session, proposal.body.kind())
                .await?
        {
            return Err(NodeError::SessionReplayed(proposal.session));
        }
        self.admit_fencing(coordinator, &proposal).await?;
        match proposal.body {
            ProposalBody::AuxInfo { node_set } => {
                self.aux_info_participant(proposal.session, node_set).await
            }
            ProposalBody::Keygen { wallet } => {
                self.keygen_participant(coordinator, proposal.session, wallet)
                    .await
            }
            ProposalBody::Presign {
                wallet_id,
                path,
                signers,
                count,
            } => {
                self.presign_participant(proposal.session, &wallet_id, &path, &signers, count)
                    .await
            }
            ProposalBody::Sign {
                wallet_ids,
                psbt,
                signers,
                presignatures,
            } => {
                self.sign_participant(
                    proposal.session,
                    &wallet_ids,
                    &psbt,
                    &signers,
                    &presignatures,
                )
                .await
            }
        }
    }

    fn outcome_arrived(&self, from: NodeId, session: Uuid, result: Result<Outcome, Refusal>) {
        let waiters = self.inner.waiters.lock();
        match waiters.ok().as_ref().and_then(|w| w.get(&session)) {
            Some(w) if w.participants.contains(&from) => {
                let _ = w.tx.send((from, result));
            }
            Some(_) => {
                warn!(node = self.id(), from, %session, "outcome from a non-participant ignored")
            }
            None => debug!(node = self.id(), from, %session, "late or unknown outcome ignored"),
        }
    }

    fn commit_arrived(&self, from: NodeId, session: Uuid, result: Result<(), String>) {
        let waiter =
            self.inner
                .commit_waiters
                .lock()
                .ok()
                .and_then(|mut w| match w.get(&session) {
                    Some(cw) if cw.coordinator == from => w.remove(&session),
                    _ => None,
                });
        match waiter {
            Some(w) => {
                let _ = w.tx.send(result);
            }
            None => {
                warn!(node = self.id(), from, %session, "commit/abort for no pending ceremony ignored")
            }
        }
    }

    /// Registers interest in the coordinator's commit/abort for `session`.
    pub(crate) fn await_commit(
        &self,
        coordinator: NodeId,
        session: Uuid,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.inner.commit_waiters.lock() {
            w.insert(session, CommitWaiter { coordinator, tx });
        }
        rx
    }

    /// Proposes `body` to `participants` (this node may be one), runs our own part, and
    /// collects every participant's outcome within `timeout`. Public because any node may
    /// coordinate, and participants check every proposal themselves; tests use it to play a
    /// compromised coordinator.
    pub async fn coordinate(
        &self,
        session: Uuid,
        body: ProposalBody,
        participants: &[NodeId],
        timeout: Duration,
        fencing_token: Option<FencingToken>,
    ) -> Result<Vec<(NodeId, Outcome)>, NodeError> {
        if participants.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.insert(
                session,
                Waiter {
                    participants: participants.iter().copied().collect(),
                    tx: tx.clone(),
                },
            );
        }
        if fencing_token.is_some() {
            // Test hook: lets a test stop this process after its own checks, holding the lock.
            crate::failpoint::pause_point("propose:fenced").await;
        }
        let proposal = Proposal {
            session,
            body,
            fencing_token: fencing_token.map(|t| t.0),
        };
        for &p in participants {
            let node = self.clone();
            let proposal = proposal.clone();
            let tx = tx.clone();
            if p == self.id() {
                tokio::spawn(async move { node.answer(p, proposal).await }.in_current_span());
            } else {
                tokio::spawn(
                    async move {
                        if let Err(e) = node
                            .send_control(p, session, &Control::Propose(proposal))
                            .await
                        {
                            let _ = tx.send((p, Err(Refusal::failed(format!("unreachable: {e}")))));
                        }
                    }
                    .in_current_span(),
                );
            }
        }
        drop(tx);
        let mut round = Round::new(participants, Instant::now(), timeout);
        let verdict = loop {
            let decided =
                match tokio::time::timeout_at(round.wake_at(Instant::now()), rx.recv()).await {
                    Ok(Some((from, result))) => round.answer(from, result),
                    Ok(None) => round.closed(Instant::now()),
                    Err(_) => round.tick(Instant::now(), |p| self.inner.health.is_live(p)),
                };
            if let Some(verdict) = decided {
                break verdict;
            }
        };
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.remove(&session);
        }
        match verdict {
            Verdict::Complete(outcomes) => Ok(outcomes),
            Verdict::Refused { node, refusal } => Err(NodeError::Refused { node, refusal }),
            Verdict::Dead { nodes, waited } | Verdict::TimedOut { nodes, waited } => {
                Err(NodeError::Timeout {
                    nodes,
                    seconds: waited.as_secs_f64(),
                })
            }
        }
    }

    /// Tells participants to commit (or abort) `session` and waits briefly for their
    /// acknowledgements. Returns the nodes that did not acknowledge.
    pub(crate) async fn finish_ceremony(
        &self,
        session: Uuid,
        participants: &[NodeId],
        result: Result<(), String>,
    ) -> Vec<NodeId> {
        let ack = commit_ack_session(session);
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.insert(
                ack,
                Waiter {
                    participants: participants.iter().copied().collect(),
                    tx,
                },
            );
        }
        let msg = match &result {
            Ok(()) => Control::Commit { session },
            Err(reason) => Control::Abort {
                session,
                reason: reason.clone(),
            },
        };
        for &p in participants {
            if p == self.id() {
                self.commit_arrived(p, session, result.clone());
            } else if let Err(e) = self.send_control(p, session, &msg).await {
                warn!(node = self.id(), peer = p, %session, error = %e, "commit/abort not delivered");
            }
        }
        // Any answer counts as an acknowledgement (a participant that could not commit says
        // so, and has been told the outcome all the same); only silence is reported.
        let mut round = Round::new(participants, Instant::now(), ACKNOWLEDGEMENT_WAIT);
        let verdict = loop {
            let decided =
                match tokio::time::timeout_at(round.wake_at(Instant::now()), rx.recv()).await {
                    Ok(Some((from, _))) => round.answer(from, Ok(())),
                    Ok(None) => round.closed(Instant::now()),
                    // Liveness does not shorten this short wait: a dead node is reported as silent.
                    Err(_) => round.tick(Instant::now(), |_| true),
                };
            if let Some(verdict) = decided {
                break verdict;
            }
        };
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.remove(&ack);
        }
        match verdict {
            Verdict::Complete(_) | Verdict::Refused { .. } => Vec::new(),
            Verdict::Dead { nodes, .. } | Verdict::TimedOut { nodes, .. } => nodes,
        }
    }

    /// Acknowledges a commit/abort to the coordinator.
    pub(crate) async fn acknowledge(
        &self,
        coordinator: NodeId,
        session: Uuid,
        result: Result<(), String>,
    ) {
        let ack = commit_ack_session(session);
        let result = result.map(|()| Outcome::Committed).map_err(Refusal::failed);
        if coordinator == self.id() {
            self.outcome_arrived(coordinator, ack, result);
        } else if let Err(e) = self
            .send_control(
                coordinator,
                ack,
                &Control::Outcome {
                    session: ack,
                    result,
                },
            )
            .await
        {
            warn!(node = self.id(), %session, error = %e, "acknowledgement not delivered");
        }
    }

    // ---- ceremony records -------------------------------------------------------------

    pub(crate) async fn record_ceremony(
        &self,
        session: Uuid,
        kind: &str,
        request: serde_json::Value,
        started_at: i64,
        outcome: &Result<serde_json::Value, NodeError>,
    ) {
        let record = CeremonyRecord {
            id: session.to_string(),
            kind: kind.into(),
            state: if outcome.is_ok() {
                "succeeded"
            } else {
                "failed"
            }
            .into(),
            coordinator: self.id(),
            request,
            result: outcome.as_ref().ok().cloned(),
            error: outcome.as_ref().err().map(ToString::to_string),
            started_at,
            finished_at: Some(now_ms()),
        };
        if let Err(e) = self.inner.store.put_ceremony(&record).await {
            warn!(node = self.id(), %session, error = %e, "could not record the ceremony");
        }
    }

    /// Records a ceremony as running (for clients polling a long one).
    pub async fn ceremony_started(
        &self,
        session: Uuid,
        kind: &str,
        request: serde_json::Value,
    ) -> Result<(), NodeError> {
        self.inner
            .store
            .put_ceremony(&CeremonyRecord {
                id: session.to_string(),
                kind: kind.into(),
                state: "running".into(),
                coordinator: self.id(),
                request,
                result: None,
                error: None,
                started_at: now_ms(),
                finished_at: None,
            })
            .await?;
        Ok(())
    }

    // ---- background services ------------------------------------------------------------

    async fn heartbeats(self) {
        let interval = Limits::ms(self.inner.config.limits.heartbeat_interval_ms);
        let peers: Vec<NodeId> = self
            .inner
            .config
            .node_ids()
            .into_iter()
            .filter(|p| *p != self.id())
            .collect();
        loop {
            let msg = Control::Heartbeat {
                version: crate::VERSION.into(),
                sent_at_ms: now_ms(),
            };
            for &p in &peers {
                let node = self.clone();
                let msg = msg.clone();
                // A dead peer must not delay heartbeats to the others.
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(interval, node.send_control(p, Uuid::nil(), &msg))
                        .await;
                });
            }
            self.inner.router.sweep();
            tokio::time::sleep(interval).await;
        }
    }

    /// Imports the configured fixture primes once (pool empty and no aux info yet).
    async fn import_primes(&self) -> Result<(), NodeError> {
        let cfg = &self.inner.config.primes;
        let (Some(file), Some(index)) = (&cfg.import_file, cfg.import_index) else {
            return Ok(());
        };
        let store = &self.inner.store;
        if store.primes_count().await? > 0
            || store
                .aux_info(&self.inner.config.node_ids())
                .await?
                .is_some()
        {
            return Ok(());
        }
        let bytes = std::fs::read(file)
            .map_err(|e| NodeError::Config(format!("{}: {e}", file.display())))?;
        let parsed: mpc_protocols::ecdsa::PrimesFile = serde_json::from_slice(&bytes)
            .map_err(|e| NodeError::Config(format!("{}: {e}", file.display())))?;
        let primes = parsed.primes.get(index).ok_or_else(|| {
            NodeError::Config(format!("{} has no prime set {index}", file.display()))
        })?;
        store.add_primes(&primes.to_bytes()?).await?;
        info!(node = self.id(), file = %file.display(), index, "imported pregenerated primes");
        Ok(())
    }

    /// Keeps `primes.pool_target` sets of safe primes ready, generating in the background
    /// with one low-priority thread (minutes per set).
    async fn prime_pool(self) {
        let target = self.inner.config.primes.pool_target;
        loop {
            match self.inner.store.primes_count().await {
                Ok(count) if count < target => {
                    info!(node = self.id(), count, target, "generating safe primes");
                    let generated = tokio::task::spawn_blocking(|| {
                        mpc_protocols::ecdsa::Primes::generate(&mut rand_core::OsRng).to_bytes()
                    })
                    .await;
                    match generated {
                        Ok(Ok(bytes)) => {
                            if let Err(e) = self.inner.store.add_primes(&bytes).await {
                                warn!(node = self.id(), error = %e, "could not store primes");
                            }
                        }
                        Ok(Err(e)) => warn!(node = self.id(), error = %e, "prime encoding failed"),
                        Err(e) => warn!(node = self.id(), error = %e, "prime generation failed"),
                    }
                }
                Ok(_) => tokio::time::sleep(Duration::from_secs(10)).await,
                Err(e) => {
                    warn!(node = self.id(), error = %e, "prime pool check failed");
                    tokio::time::sleep(Duration::from_secs(10)).await
                }
            }
        }
    }

    /// Registers a protocol session (sub-sessions included) with its parties, in protocol-index
    /// order, and connects this node's party to the mesh.
    pub(crate) fn join_session<M>(
        &self,
        session: SessionId,
        protocol: ProtocolKind,
        nodes: &[NodeId],
        timeout: Duration,
    ) -> Result<MeshParty<M>, NodeError>
    where
        M: Serialize + DeserializeOwned + ProtocolMessage,
    {
        let inbox = self
            .inner
            .router
            .register(session, nodes)
            .map_err(|e| NodeError::InvalidRequest(e.to_string()))?;
        let parties = SessionParties {
            session,
            protocol,
            nodes: nodes.to_vec(),
            me: self.id(),
        };
        Ok(connect(
            parties,
            inbox,
            self.inner.transport.clone(),
            timeout,
        ))
    }
}
