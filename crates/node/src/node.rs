//! The node: start-up and shutdown, the records of ceremonies, and the background services
//! (heartbeats, primes, the pool). The proposal protocol every ceremony uses is in
//! `proposals`.

use mpc_types::WalletId;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use mpc_coordination::ClusterBackend;
use mpc_protocols::ProtocolKind;
use mpc_store::{CeremonyRecord, KeySource, Store, Zeroizing};
use mpc_transport::{
    certs::TlsIdentity,
    quic::{MeshConfig, PeerConfig, QuicMesh},
    ControlInbox, NodeId, Router, SessionId, Transport,
};
use round_based::ProtocolMessage;
use serde::{de::DeserializeOwned, Serialize};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use uuid::Uuid;

use crate::audit_heads::AuditAnswer;
use crate::{
    ceremony::decision::finish_interrupted_ceremonies,
    config::{Limits, NodeConfig},
    control::Control,
    delivery::{connect, DeliveryError, DeliveryFailures, MeshParty, SessionParties},
    health::Health,
    keys::ShareCache,
    now_ms,
    proposals::{CommitWaiter, Waiter},
    ready::ReadyPresignatures,
    NodeError,
};

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
    pub(crate) change_next: Mutex<HashMap<WalletId, u32>>,
    /// Bounds the signed-transaction notices checked at once (`change.rs`).
    pub(crate) notice_checks: Arc<tokio::sync::Semaphore>,
    pub(crate) waiters: Mutex<HashMap<Uuid, Waiter>>,
    pub(crate) commit_waiters: Mutex<HashMap<Uuid, CommitWaiter>>,
    /// Two-phase ceremonies (refresh, aux info, keygen) this node coordinates now (undecided until
    /// removed).
    pub(crate) deciding: Mutex<std::collections::HashSet<Uuid>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    mesh: Option<Arc<QuicMesh>>,
    /// The cluster backend (ceremony lock, refill election), connected on first use.
    pub backend: tokio::sync::OnceCell<ClusterBackend>,
    /// Held while a proposal's fencing token is checked and recorded (`locks`).
    pub(crate) fencing: tokio::sync::Mutex<()>,
    /// How each failed protocol session ended, for [`Node::attribute`].
    delivery_failures: DeliveryFailures,
    pub(crate) webhooks: crate::webhooks::Webhooks,
    /// Signings refused since start: as coordinator, as signer (`Node::refusals`).
    pub(crate) refusals: [std::sync::atomic::AtomicU64; 2],
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
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
    info!(node = config.id.get(), path = %path.display(), ?check, "store checked for a rollback");
    Ok(())
}

/// Records the start with the config's digest. Fail closed: a node that cannot keep its
/// audit log does not start.
async fn audit_start(config: &NodeConfig, store: &Store) -> Result<(), NodeError> {
    let event = mpc_store::AuditEvent::NodeStarted {
        version: env!("CARGO_PKG_VERSION").into(),
        config_sha256: crate::audit::config_digest(config)?,
    };
    store.append_audit(&mpc_store::Actor::Node, &event).await?;
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
        audit_start(&config, &store).await?;
        finish_interrupted_ceremonies(&store, config.id).await;
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
        let node = Self::assemble(config, store, mesh.clone(), router, control, Some(mesh))?;
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
        audit_start(&config, &store).await?;
        finish_interrupted_ceremonies(&store, config.id).await;
        Self::assemble(config, store, transport, router, control, None)
    }

    fn assemble(
        config: NodeConfig,
        store: Store,
        transport: Arc<dyn Transport>,
        router: Arc<Router>,
        control: ControlInbox,
        mesh: Option<Arc<QuicMesh>>,
    ) -> Result<Self, NodeError> {
        let webhooks = crate::webhooks::Webhooks::start(&config.webhooks, config.id)?;
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
                deciding: Mutex::default(),
                tasks: Mutex::new(Vec::new()),
                mesh,
                backend: tokio::sync::OnceCell::new(),
                fencing: tokio::sync::Mutex::new(()),
                delivery_failures: DeliveryFailures::default(),
                webhooks,
                refusals: Default::default(),
            }),
        };
        node.spawn(node.clone().dispatch(control));
        node.spawn(node.clone().heartbeats());
        node.spawn(node.clone().prime_pool());
        node.spawn(node.clone().aux_info_auto());
        node.spawn(node.clone().pool_service());
        node.spawn(node.clone().refresh_schedule());
        node.spawn(node.clone().membership_service());
        let settling = node.clone();
        node.spawn(async move { settling.settle_pending_at_start().await });
        info!(node = node.id().get(), "node started");
        Ok(node)
    }

    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
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
        info!(node = self.id().get(), "node stopped");
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

    // ---- ceremony records -------------------------------------------------------------

    pub(crate) async fn record_ceremony(
        &self,
        session: Uuid,
        kind: &str,
        request: serde_json::Value,
        started_at: i64,
        outcome: &Result<serde_json::Value, String>,
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
            error: outcome.as_ref().err().cloned(),
            started_at,
            finished_at: Some(now_ms()),
        };
        if let Err(e) = self.inner.store.put_ceremony(&record).await {
            warn!(node = self.id().get(), %session, error = %e, "could not record the ceremony");
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
            // A store that cannot be read gives no head and no answers: never a false one. A
            // busy one must not make the heartbeat late (peers would count this node dead):
            // what it does not answer within half an interval is left out of this beat.
            let store = &self.inner.store;
            let (audit_head, primes) = tokio::join!(
                tokio::time::timeout(interval / 2, store.audit_head()),
                tokio::time::timeout(interval / 2, store.primes_count()),
            );
            let audit_head = audit_head.ok().and_then(Result::ok).flatten();
            let primes_ready = primes.ok().and_then(Result::ok).map(|count| count > 0);
            for &p in &peers {
                let heads = &self.inner.health.audit;
                let audit_answer = match heads.asked_by(p) {
                    Some(seq) => store
                        .audit_hash_at(seq)
                        .await
                        .ok()
                        .map(|hash| AuditAnswer { seq, hash }),
                    None => None,
                };
                let msg = Control::Heartbeat {
                    version: crate::VERSION.into(),
                    sent_at_ms: now_ms(),
                    audit_head,
                    audit_question: heads.question_for(p),
                    audit_answer,
                    primes_ready,
                };
                let node = self.clone();
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
        info!(node = self.id().get(), file = %file.display(), index, "imported pregenerated primes");
        Ok(())
    }

    /// Keeps `primes.pool_target` sets of safe primes ready, generating in the background
    /// from the start, one set at a time, its four primes on `primes.threads` threads at idle
    /// priority (minutes per set on one thread).
    async fn prime_pool(self) {
        let target = self.inner.config.primes.pool_target;
        let threads = self.inner.config.primes.threads();
        loop {
            match self.inner.store.primes_count().await {
                Ok(count) if count < target => {
                    info!(
                        node = self.id().get(),
                        count, target, threads, "generating safe primes"
                    );
                    let started = std::time::Instant::now();
                    let generated = tokio::task::spawn_blocking(move || {
                        mpc_protocols::ecdsa::Primes::generate_parallel(
                            threads,
                            crate::delivery::IdlePriority::enter,
                        )?
                        .to_bytes()
                    })
                    .await;
                    match generated {
                        Ok(Ok(bytes)) => match self.inner.store.add_primes(&bytes).await {
                            Ok(_) => info!(
                                node = self.id().get(),
                                threads,
                                secs = started.elapsed().as_secs_f64(),
                                "safe primes ready"
                            ),
                            Err(e) => {
                                warn!(node = self.id().get(), error = %e, "could not store primes")
                            }
                        },
                        Ok(Err(e)) => {
                            warn!(node = self.id().get(), error = %e, "prime generation failed")
                        }
                        Err(e) => {
                            warn!(node = self.id().get(), error = %e, "prime generation failed")
                        }
                    }
                }
                Ok(_) => tokio::time::sleep(Duration::from_secs(10)).await,
                Err(e) => {
                    warn!(node = self.id().get(), error = %e, "prime pool check failed");
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
            self.inner.delivery_failures.clone(),
        ))
    }

    /// This node's error for a protocol run of `session` that failed with `error`: when the
    /// session's message delivery ended it, the nodes at fault are named (the silent ones, or
    /// the one whose message did not decode), so the coordinator blames them and not the node
    /// reporting; otherwise the protocol's own error.
    pub(crate) fn attribute(
        &self,
        session: SessionId,
        error: mpc_protocols::ProtocolError,
    ) -> NodeError {
        match self.inner.delivery_failures.take(session) {
            Some(DeliveryError::Timeout { after, silent }) if !silent.is_empty() => {
                NodeError::Timeout {
                    nodes: silent,
                    seconds: after.as_secs_f64(),
                }
            }
            Some(DeliveryError::Malformed {
                from,
                reason,
                evidence,
            }) => NodeError::Misbehaved {
                node: from,
                reason: format!("its message in session {session} did not decode: {reason}"),
                evidence,
            },
            _ => NodeError::Protocol(error),
        }
    }
}
