use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, GetOptions, LeaderKey, LockOptions, ResignOptions, SortOrder,
    SortTarget,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{validate_name, validate_prefix};
use crate::error::{Context, CoordinationError, Result};
use crate::{
    FencingToken, GuardInner, Holder, LeaderInfo, Leadership, LeadershipInner, Liveness, LockGuard,
    TokenSource,
};

/// Several machines: locks, leases and elections in etcd, every key under `prefix`.
///
/// * Lock `name`: etcd's Lock API on `{prefix}/locks/{name}` with a lease of this process. The
///   Lock API queues waiters by the creation revision of their key and grants the lock to the
///   lowest, so the **creation revision of the holder's key** strictly increases from one
///   holder to the next: that is the fencing token.
/// * Election `name`: etcd's election API on `{prefix}/elections/{name}`, the same way; the
///   token is the leader key's creation revision.
/// * A lease is kept alive every third of its TTL by a background task; when etcd answers that
///   it expired, or renewals fail for longer than the TTL, the guard reports the loss.
#[derive(Clone)]
pub struct EtcdBackend {
    client: Arc<Client>,
    prefix: String,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Whole seconds, rounded up, at least one (etcd leases count in seconds).
fn ttl_seconds(ttl: Duration) -> i64 {
    let millis = ttl.as_millis().max(1);
    i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX)
}

fn token_of(revision: i64, what: &str) -> Result<FencingToken> {
    u64::try_from(revision)
        .ok()
        .filter(|r| *r > 0)
        .map(FencingToken)
        .ok_or_else(|| CoordinationError::Protocol(format!("{what}: revision {revision}")))
}

impl EtcdBackend {
    /// Connects to `endpoints` (the client balances between them and fails over).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        validate_prefix(prefix)?;
        if endpoints.is_empty() {
            return Err(CoordinationError::Config("no etcd endpoints".into()));
        }
        // No request timeout: lock and campaign calls block until granted.
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(options))
            .await
            .context(|| format!("connecting to {}", endpoints.join(",")))?;
        tracing::info!(endpoints = %endpoints.join(","), prefix, "connected to etcd");
        Ok(EtcdBackend {
            client: Arc::new(client),
            prefix: prefix.to_owned(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The underlying client, for membership and configuration keys.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn shared_client(&self) -> &Arc<Client> {
        &self.client
    }

    fn lock_key(&self, name: &str) -> String {
        format!("{}/locks/{name}", self.prefix)
    }

    fn election_key(&self, name: &str) -> String {
        format!("{}/elections/{name}", self.prefix)
    }

    pub async fn lock(&self, name: &str, ttl: Duration) -> Result<LockGuard> {
        validate_name(name)?;
        let lease = Lease::grant(&self.client, ttl, format!("lock {name}")).await?;
        let started = Instant::now();
        let response = self
            .client
            .lock_client()
            .lock(
                self.lock_key(name),
                Some(LockOptions::new().with_lease(lease.id)),
            )
            .await
            .context(|| format!("locking {name}"))?;
        let key = response.key().to_vec();
        // The Lock API answers with the holder's key; its creation revision is the token.
        let found = self
            .client
            .kv_client()
            .get(key.clone(), None)
            .await
            .context(|| format!("reading lock key of {name}"))?;
        let Some(kv) = found.kvs().first() else {
            // Granted, then gone: the lease expired in between.
            return Err(CoordinationError::LeaseLost(format!("lock {name}")));
        };
        let token = token_of(kv.create_revision(), "lock key")?;
        tracing::debug!(
            lock = name,
            %token,
            lease = lease.id,
            waited_ms = started.elapsed().as_millis() as u64,
            "etcd lock acquired"
        );
        Ok(LockGuard {
            name: name.to_owned(),
            token,
            liveness: lease.liveness(),
            inner: GuardInner::Etcd(EtcdLock { key, lease }),
        })
    }

    pub async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        ttl: Duration,
    ) -> Result<Leadership> {
        validate_name(election)?;
        let lease = Lease::grant(&self.client, ttl, format!("election {election}")).await?;
        let response = self
            .client
            .election_client()
            .campaign(self.election_key(election), candidate, lease.id)
            .await
            .context(|| format!("campaigning in {election} as {candidate}"))?;
        let leader = response
            .leader()
            .cloned()
            .ok_or_else(|| CoordinationError::Protocol("campaign without a leader key".into()))?;
        let token = token_of(leader.rev(), "leader key")?;
        tracing::debug!(election, candidate, %token, lease = lease.id, "campaign won");
        Ok(Leadership {
            election: election.to_owned(),
            token,
            liveness: lease.liveness(),
            inner: LeadershipInner::Etcd(EtcdLeadership {
                client: Conn(self.client.clone()),
                leader,
                lease,
            }),
        })
    }

    /// The leader: the candidate key with the lowest creation revision under the election.
    pub async fn leader(&self, election: &str) -> Result<Option<LeaderInfo>> {
        validate_name(election)?;
        let (first, _) = self
            .first_created(&self.election_key(election), "leader")
            .await?;
        Ok(first.map(|(token, value)| LeaderInfo {
            candidate: String::from_utf8_lossy(&value).into_owned(),
            token,
        }))
    }

    /// Who holds `source`'s lock or leads its election now: the key created first under it,
    /// as a participant checks a proposal's token against it.
    pub async fn holder(&self, source: TokenSource<'_>) -> Result<Holder> {
        validate_name(source.name())?;
        let (dir, is_election) = match source {
            TokenSource::Lock(name) => (self.lock_key(name), false),
            TokenSource::Leader { election, .. } => (self.election_key(election), true),
        };
        let (first, revision) = self.first_created(&dir, "holder").await?;
        Ok(match first {
            Some((token, value)) => Holder::Held {
                token,
                candidate: is_election.then(|| String::from_utf8_lossy(&value).into_owned()),
            },
            None => Holder::Free { revision },
        })
    }

    /// The key created first under `dir/` (the Lock and election APIs queue holders by
    /// creation revision, the lowest holds) as (its token, its value), and etcd's revision at
    /// the read. etcd-client reads are linearizable unless asked to be serializable, so the
    /// answer is the cluster's current state, not a lagging member's.
    async fn first_created(
        &self,
        dir: &str,
        what: &str,
    ) -> Result<(Option<(FencingToken, Vec<u8>)>, u64)> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let found = self
            .client
            .kv_client()
            .get(format!("{dir}/"), Some(options))
            .await
            .context(|| format!("reading the {what} of {dir}"))?;
        let revision = found
            .header()
            .and_then(|h| u64::try_from(h.revision()).ok())
            .ok_or_else(|| CoordinationError::Protocol(format!("{what} of {dir}: no revision")))?;
        let first = found
            .kvs()
            .first()
            .map(|kv| Ok((token_of(kv.create_revision(), what)?, kv.value().to_vec())))
            .transpose()?;
        Ok((first, revision))
    }
}

/// The etcd client, printable (the client itself is not `Debug`).
#[derive(Clone)]
pub(crate) struct Conn(Arc<Client>);

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("etcd client")
    }
}

/// An etcd lease kept alive by a background task until dropped or revoked.
#[derive(Debug)]
pub(crate) struct Lease {
    id: i64,
    client: Conn,
    what: String,
    lost: watch::Receiver<bool>,
    deadline: Arc<Mutex<Instant>>,
    task: tokio::task::JoinHandle<()>,
    revoked: bool,
}

impl Lease {
    pub(crate) async fn grant(client: &Arc<Client>, ttl: Duration, what: String) -> Result<Lease> {
        let requested = ttl_seconds(ttl);
        let sent = Instant::now();
        let mut leases = client.lease_client();
        let granted = leases
            .grant(requested, None)
            .await
            .context(|| format!("granting a lease for {what}"))?;
        let (id, granted_ttl) = (granted.id(), granted.ttl());
        if granted_ttl <= 0 {
            return Err(CoordinationError::Protocol(format!(
                "lease for {what} granted with TTL {granted_ttl}"
            )));
        }
        let ttl = Duration::from_secs(granted_ttl.unsigned_abs());
        let deadline = Arc::new(Mutex::new(sent + ttl));
        let (lost_tx, lost) = watch::channel(false);
        let keep_alive = leases.keep_alive(id).await;
        let (keeper, stream) = match keep_alive {
            Ok(pair) => pair,
            Err(source) => {
                let _ = leases.revoke(id).await;
                return Err(CoordinationError::Etcd {
                    context: format!("keeping the lease of {what} alive"),
                    source,
                });
            }
        };
        let task = tokio::spawn(keep_alive_loop(
            keeper,
            stream,
            ttl,
            deadline.clone(),
            lost_tx,
            what.clone(),
        ));
        tracing::debug!(lease = id, ttl_s = granted_ttl, %what, "lease granted");
        Ok(Lease {
            id,
            client: Conn(client.clone()),
            what,
            lost,
            deadline,
            task,
            revoked: false,
        })
    }

    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    pub(crate) fn liveness(&self) -> Liveness {
        Liveness {
            lost: self.lost.clone(),
            deadline: Some(self.deadline.clone()),
        }
    }

    async fn revoke(mut self) -> Result<()> {
        self.task.abort();
        self.revoked = true;
        let result = self.client.0.lease_client().revoke(self.id).await;
        match result {
            Ok(_) => Ok(()),
            // Already expired: nothing left to release.
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("lease not found") =>
            {
                Ok(())
            }
            Err(source) => Err(CoordinationError::Etcd {
                context: format!("revoking the lease of {}", self.what),
                source,
            }),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
        if self.revoked {
            return;
        }
        // Release in the background; if there is no runtime the lease simply expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut leases = self.client.0.lease_client();
            let (id, what) = (self.id, self.what.clone());
            runtime.spawn(async move {
                if let Err(error) = leases.revoke(id).await {
                    tracing::debug!(lease = id, %what, %error, "revoking a dropped lease failed");
                }
            });
        }
    }
}

async fn keep_alive_loop(
    mut keeper: etcd_client::LeaseKeeper,
    mut stream: etcd_client::LeaseKeepAliveStream,
    ttl: Duration,
    deadline: Arc<Mutex<Instant>>,
    lost: watch::Sender<bool>,
    what: String,
) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let expired = match deadline.lock() {
            Ok(deadline) => Instant::now() >= *deadline,
            Err(_) => true,
        };
        if expired {
            tracing::warn!(%what, "lease deadline passed without renewal: lost");
            break;
        }
        let sent = Instant::now();
        if let Err(error) = keeper.keep_alive().await {
            tracing::warn!(%what, %error, "lease keep-alive could not be sent: lost");
            break;
        }
        let remaining = match deadline.lock() {
            Ok(deadline) => deadline.saturating_duration_since(Instant::now()),
            Err(_) => Duration::ZERO,
        };
        match tokio::time::timeout(remaining, stream.message()).await {
            Ok(Ok(Some(response))) if response.ttl() > 0 => {
                let renewed = sent + Duration::from_secs(response.ttl().unsigned_abs());
                if let Ok(mut deadline) = deadline.lock() {
                    *deadline = renewed;
                }
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(%what, "etcd says the lease expired: lost");
                break;
            }
            Ok(Ok(None)) => {
                tracing::warn!(%what, "lease keep-alive stream closed: lost");
                break;
            }
            Ok(Err(error)) => {
                tracing::warn!(%what, %error, "lease keep-alive failed: lost");
                break;
            }
            Err(_) => {
                tracing::warn!(%what, "no keep-alive answer before the lease deadline: lost");
                break;
            }
        }
    }
    lost.send_replace(true);
}

/// The etcd part of a [`LockGuard`].
#[derive(Debug)]
pub(crate) struct EtcdLock {
    key: Vec<u8>,
    lease: Lease,
}

impl EtcdLock {
    pub(crate) async fn unlock(self) -> Result<()> {
        let EtcdLock { key, lease, .. } = self;
        // Revoking the lease deletes the lock key with it (one write, not two), which hands
        // the lock to the next waiter.
        tracing::debug!(key = %String::from_utf8_lossy(&key), lease = lease.id, "unlocking");
        lease.revoke().await
    }
}

/// The etcd part of a [`Leadership`].
#[derive(Debug)]
pub(crate) struct EtcdLeadership {
    client: Conn,
    leader: LeaderKey,
    lease: Lease,
}

impl EtcdLeadership {
    pub(crate) async fn resign(self) -> Result<()> {
        let EtcdLeadership {
            client,
            leader,
            lease,
        } = self;
        let resigned = client
            .0
            .election_client()
            .resign(Some(ResignOptions::new().with_leader(leader)))
            .await;
        let revoked = lease.revoke().await;
        resigned.context(|| "resigning".into())?;
        revoked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_seconds() {
        assert_eq!(ttl_seconds(Duration::from_millis(0)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(2000)), 2);
        assert_eq!(ttl_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn tokens_must_be_positive_revisions() {
        assert_eq!(token_of(7, "k").unwrap(), FencingToken(7));
        assert!(token_of(0, "k").is_err());
        assert!(token_of(-1, "k").is_err());
    }
}
