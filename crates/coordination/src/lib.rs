//! Cluster coordination: named locks that carry fencing tokens, and the lease-based leader
//! that drives presignature-pool refill.
//!
//! Two backends behind one API ([`ClusterBackend`]):
//!
//! * **static** (one machine, the default): in-process locks (a `tokio` mutex per name), a
//!   fixed leader named in the configuration, fencing tokens from an in-process counter.
//! * **etcd** (several machines): a lock is etcd's Lock API under `{prefix}/locks/{name}` on a
//!   lease this process keeps alive; a leader is etcd's election API under
//!   `{prefix}/elections/{name}`. The fencing token is the etcd revision at which the lock (or
//!   leader) key was created.
//!
//! # Fencing
//!
//! A lock can be lost while its holder still believes it holds it: a process paused (GC, swap,
//! SIGSTOP) longer than its lease comes back after another process took the lock. So every
//! action taken under a lock carries the lock's [`FencingToken`], and **the node that performs
//! the action** checks it against the lock service before acting
//! ([`ClusterBackend::check_token`]): it must be the token of the current holder (for an
//! election, of the current leader, which must be the proposer), as one linearizable etcd
//! read shows now. An older holder's token is refused as stale, a token above the current
//! holder's as one nobody holds, and a node that cannot read etcd refuses too: etcd is trusted
//! for liveness only (design invariant 7), so its absence may stop an action, and nothing a
//! peer sends alone can let one through or change what a node stores (design invariant 10).
//!
//! This crate knows nothing of the node, the store or the transport.

mod config;
mod error;
mod etcd;
mod fence;
mod records;
mod static_backend;

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;

pub use config::{split_endpoints, BackendKind, CoordinationConfig};
pub use error::{CoordinationError, Result};
pub use etcd::EtcdBackend;
pub use fence::{Holder, TokenRefusal, TokenSource};
pub use records::{Presence, Published};
pub use static_backend::StaticBackend;

/// A fencing token: strictly greater for each later holder of the same lock (or leadership).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who leads an election, as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The candidate id the leader campaigned with.
    pub candidate: String,
    /// The leader's fencing token.
    pub token: FencingToken,
}

/// The coordination backend of a node.
#[derive(Debug, Clone)]
pub enum ClusterBackend {
    Static(StaticBackend),
    Etcd(EtcdBackend),
}

impl ClusterBackend {
    /// Builds the configured backend. `static_leader` is the candidate that leads every
    /// election under the static backend (ignored by etcd).
    pub async fn from_config(
        config: &CoordinationConfig,
        static_leader: Option<String>,
    ) -> Result<Self> {
        config.validate()?;
        Ok(match config.backend {
            BackendKind::Static => ClusterBackend::Static(StaticBackend::new(static_leader)),
            BackendKind::Etcd => {
                ClusterBackend::Etcd(EtcdBackend::connect(&config.endpoints, &config.prefix).await?)
            }
        })
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            ClusterBackend::Static(_) => BackendKind::Static,
            ClusterBackend::Etcd(_) => BackendKind::Etcd,
        }
    }

    /// Waits until this process holds lock `name`; the lock is held until the guard is
    /// dropped or [`LockGuard::unlock`]ed, or its lease (`ttl`, kept alive meanwhile) is lost.
    /// Bound the wait with `tokio::time::timeout`: a cancelled attempt leaves nothing behind.
    pub async fn lock(&self, name: &str, ttl: Duration) -> Result<LockGuard> {
        match self {
            ClusterBackend::Static(b) => b.lock(name).await,
            ClusterBackend::Etcd(b) => b.lock(name, ttl).await,
        }
    }

    /// Campaigns in election `election` as `candidate`, waiting until elected.
    pub async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Leadership> {
        match self {
            ClusterBackend::Static(b) => b.campaign(election, candidate).await,
            ClusterBackend::Etcd(b) => b.campaign(election, candidate, ttl).await,
        }
    }

    /// The current leader of `election`, if any.
    pub async fn leader(&self, election: &str) -> Result<Option<LeaderInfo>> {
        match self {
            ClusterBackend::Static(b) => b.leader(election),
            ClusterBackend::Etcd(b) => b.leader(election).await,
        }
    }

    /// Whether an action under `source` carrying `token` may go ahead: `Ok(Ok(()))` only if
    /// `token` is the current holder's (see [`Holder::admits`]); `Ok(Err(refusal))` if not;
    /// `Err` if the backend cannot be read, and then nothing may be admitted either. The
    /// static backend refuses every token: its tokens are one process's counter, which no
    /// other process can check.
    pub async fn check_token(
        &self,
        source: TokenSource<'_>,
        token: FencingToken,
    ) -> Result<Result<(), TokenRefusal>> {
        match self {
            ClusterBackend::Static(_) => Ok(Err(TokenRefusal::Unverifiable {
                resource: source.name().to_owned(),
                token,
            })),
            ClusterBackend::Etcd(b) => Ok(b.holder(source).await?.admits(source, token)),
        }
    }

    /// Campaigns in the background for as long as the handle lives, re-campaigning after a
    /// lost lease; [`ElectionHandle::current`] says whether this process leads now.
    pub fn spawn_election(&self, election: &str, candidate: &str, ttl: Duration) -> ElectionHandle {
        ElectionHandle::spawn(self.clone(), election.to_owned(), candidate.to_owned(), ttl)
    }
}

/// Whether a lease-backed guard is still valid, shared with the task that keeps it alive.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    lost: watch::Receiver<bool>,
    /// The lease certainly expired at this instant unless renewed (etcd; `None` for static).
    deadline: Option<std::sync::Arc<std::sync::Mutex<tokio::time::Instant>>>,
}

impl Liveness {
    /// A liveness that is never lost (static backend), with the sender that keeps it so.
    pub(crate) fn forever() -> (Liveness, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            Liveness {
                lost: rx,
                deadline: None,
            },
            tx,
        )
    }

    fn is_lost(&self) -> bool {
        if *self.lost.borrow() {
            return true;
        }
        match &self.deadline {
            Some(deadline) => match deadline.lock() {
                Ok(deadline) => tokio::time::Instant::now() >= *deadline,
                Err(_) => true,
            },
            None => false,
        }
    }

    async fn lost(&mut self) {
        // A dropped sender means the keep-alive task is gone: treat as lost.
        let _ = self.lost.wait_for(|lost| *lost).await;
    }
}

/// A held lock. Dropping it releases the lock (in the background); [`LockGuard::unlock`]
/// releases it and waits.
#[derive(Debug)]
pub struct LockGuard {
    name: String,
    token: FencingToken,
    liveness: Liveness,
    inner: GuardInner,
}

#[derive(Debug)]
enum GuardInner {
    Static {
        _guard: tokio::sync::OwnedMutexGuard<()>,
        _never_lost: watch::Sender<bool>,
    },
    Etcd(etcd::EtcdLock),
}

impl LockGuard {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token every action under this lock must carry.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// True once the lease is known lost or has certainly expired (its deadline passed without
    /// a renewal). A `false` is no guarantee: the token is what protects the resource.
    pub fn is_lost(&self) -> bool {
        self.liveness.is_lost()
    }

    /// `Err(LeaseLost)` if [`Self::is_lost`].
    pub fn check(&self) -> Result<()> {
        if self.is_lost() {
            return Err(CoordinationError::LeaseLost(self.name.clone()));
        }
        Ok(())
    }

    /// Resolves when the lease is lost (never, under the static backend).
    pub async fn lost(&mut self) {
        self.liveness.lost().await
    }

    /// Releases the lock and waits until it is released.
    pub async fn unlock(self) -> Result<()> {
        match self.inner {
            GuardInner::Static { .. } => Ok(()),
            GuardInner::Etcd(lock) => lock.unlock().await,
        }
    }
}

/// This process leads an election until the value is dropped, [`Leadership::resign`]ed, or
/// its lease is lost.
#[derive(Debug)]
pub struct Leadership {
    election: String,
    token: FencingToken,
    liveness: Liveness,
    inner: LeadershipInner,
}

#[derive(Debug)]
enum LeadershipInner {
    Static { _never_lost: watch::Sender<bool> },
    Etcd(etcd::EtcdLeadership),
}

impl Leadership {
    pub fn election(&self) -> &str {
        &self.election
    }

    pub fn token(&self) -> FencingToken {
        self.token
    }

    pub fn is_lost(&self) -> bool {
        self.liveness.is_lost()
    }

    pub async fn lost(&mut self) {
        self.liveness.lost().await
    }

    pub async fn resign(self) -> Result<()> {
        match self.inner {
            LeadershipInner::Static { .. } => Ok(()),
            LeadershipInner::Etcd(leadership) => leadership.resign().await,
        }
    }
}

/// A background campaign. Dropping the handle stops campaigning and gives up leadership.
#[derive(Debug)]
pub struct ElectionHandle {
    state: watch::Receiver<Option<FencingToken>>,
    task: tokio::task::JoinHandle<()>,
}

impl ElectionHandle {
    fn spawn(backend: ClusterBackend, election: String, candidate: String, ttl: Duration) -> Self {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match backend.campaign(&election, &candidate, ttl).await {
                    Ok(mut leadership) => {
                        backoff = Duration::from_millis(200);
                        tracing::info!(%election, %candidate, token = %leadership.token(), "elected");
                        tx.send_replace(Some(leadership.token()));
                        leadership.lost().await;
                        tx.send_replace(None);
                        tracing::warn!(%election, %candidate, "leadership lost; campaigning again");
                    }
                    Err(error) => {
                        tx.send_replace(None);
                        tracing::warn!(%election, %candidate, %error, "campaign failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        ElectionHandle { state: rx, task }
    }

    /// `Some(token)` while this process leads.
    pub fn current(&self) -> Option<FencingToken> {
        *self.state.borrow()
    }

    pub fn is_leader(&self) -> bool {
        self.current().is_some()
    }

    /// Waits for the next change of leadership state.
    pub async fn changed(&mut self) -> Option<FencingToken> {
        let _ = self.state.changed().await;
        self.current()
    }
}

impl Drop for ElectionHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
