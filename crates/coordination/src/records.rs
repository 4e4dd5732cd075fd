//! Records the cluster keeps in its backend for operators and for each other: members'
//! presence (a key per running node, gone when the node's lease expires) and published facts
//! (wallet public keys), written once and never changed.
//!
//! Both are informational: etcd is trusted for liveness only (design invariant 7), so a node
//! never accepts anything because etcd says so. It compares: a record that disagrees with its
//! own config or store is reported, and can only make the node refuse.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

use crate::config::validate_name;
use crate::error::{Context, CoordinationError, Result};
use crate::etcd::{EtcdBackend, Lease};
use crate::{ClusterBackend, Liveness};

/// What [`ClusterBackend::publish`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Written now.
    Written,
    /// Already there, with the same value.
    Same,
    /// Already there with another value (returned): nothing was written.
    Different(Vec<u8>),
}

/// A key this process keeps while it runs; removed when dropped or when its lease is lost.
#[derive(Debug)]
pub struct Presence {
    liveness: Liveness,
    inner: PresenceInner,
}

#[derive(Debug)]
enum PresenceInner {
    Static {
        map: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
        key: String,
        _never_lost: tokio::sync::watch::Sender<bool>,
    },
    Etcd(#[allow(dead_code)] Lease),
}

impl Presence {
    /// Resolves when the key is gone because the lease was lost (never, under static).
    pub async fn lost(&mut self) {
        self.liveness.lost().await
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        if let PresenceInner::Static { map, key, .. } = &self.inner {
            if let Ok(mut map) = map.lock() {
                map.remove(key);
            }
        }
        // etcd: dropping the lease revokes it, which deletes the key.
    }
}

fn record_key(prefix: &str, dir: &str, name: &str) -> Result<String> {
    validate_name(dir)?;
    validate_name(name)?;
    Ok(format!("{prefix}/{dir}/{name}"))
}

impl ClusterBackend {
    /// Keeps `value` at `{prefix}/{dir}/{name}` for as long as the returned [`Presence`] lives
    /// (etcd: on a lease of `ttl`, kept alive meanwhile).
    pub async fn register(
        &self,
        dir: &str,
        name: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<Presence> {
        match self {
            ClusterBackend::Static(b) => {
                let key = record_key("", dir, name)?;
                let map = b.records();
                if let Ok(mut m) = map.lock() {
                    m.insert(key.clone(), value.to_vec());
                }
                let (liveness, never_lost) = Liveness::forever();
                Ok(Presence {
                    liveness,
                    inner: PresenceInner::Static {
                        map,
                        key,
                        _never_lost: never_lost,
                    },
                })
            }
            ClusterBackend::Etcd(b) => {
                let key = record_key(b.prefix(), dir, name)?;
                let lease = Lease::grant(b.shared_client(), ttl, format!("{dir}/{name}")).await?;
                b.client()
                    .kv_client()
                    .put(
                        key.clone(),
                        value.to_vec(),
                        Some(PutOptions::new().with_lease(lease.id())),
                    )
                    .await
                    .context(|| format!("writing {key}"))?;
                Ok(Presence {
                    liveness: lease.liveness(),
                    inner: PresenceInner::Etcd(lease),
                })
            }
        }
    }

    /// Writes `value` at `{prefix}/{dir}/{name}` unless something is there already, in one
    /// etcd transaction (so two writers cannot both write).
    pub async fn publish(&self, dir: &str, name: &str, value: &[u8]) -> Result<Published> {
        match self {
            ClusterBackend::Static(b) => {
                let key = record_key("", dir, name)?;
                let map = b.records();
                let mut map = map
                    .lock()
                    .map_err(|_| CoordinationError::Protocol("records lock poisoned".into()))?;
                Ok(match map.get(&key) {
                    None => {
                        map.insert(key, value.to_vec());
                        Published::Written
                    }
                    Some(v) if v == value => Published::Same,
                    Some(v) => Published::Different(v.clone()),
                })
            }
            ClusterBackend::Etcd(b) => {
                publish_etcd(b, &record_key(b.prefix(), dir, name)?, value).await
            }
        }
    }

    /// Every record under `{prefix}/{dir}/`, by name.
    pub async fn list(&self, dir: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        validate_name(dir)?;
        match self {
            ClusterBackend::Static(b) => {
                let start = format!("/{dir}/");
                let map = b.records();
                let map = map
                    .lock()
                    .map_err(|_| CoordinationError::Protocol("records lock poisoned".into()))?;
                Ok(map
                    .iter()
                    .filter_map(|(k, v)| k.strip_prefix(&start).map(|n| (n.to_owned(), v.clone())))
                    .collect())
            }
            ClusterBackend::Etcd(b) => {
                let start = format!("{}/{dir}/", b.prefix());
                let found = b
                    .client()
                    .kv_client()
                    .get(start.clone(), Some(GetOptions::new().with_prefix()))
                    .await
                    .context(|| format!("listing {start}"))?;
                Ok(found
                    .kvs()
                    .iter()
                    .filter_map(|kv| {
                        let key = kv.key_str().ok()?;
                        Some((key.strip_prefix(&start)?.to_owned(), kv.value().to_vec()))
                    })
                    .collect())
            }
        }
    }
}

async fn publish_etcd(b: &EtcdBackend, key: &str, value: &[u8]) -> Result<Published> {
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, value.to_vec(), None)])
        .or_else([TxnOp::get(key, None)]);
    let response = b
        .client()
        .kv_client()
        .txn(txn)
        .await
        .context(|| format!("publishing {key}"))?;
    if response.succeeded() {
        return Ok(Published::Written);
    }
    let existing = response.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    });
    match existing {
        Some(v) if v == value => Ok(Published::Same),
        Some(v) => Ok(Published::Different(v)),
        None => Err(CoordinationError::Protocol(format!(
            "{key} exists but could not be read"
        ))),
    }
}
