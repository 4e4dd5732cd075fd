//! What a node tells the cluster backend about itself and its wallets, and what it checks
//! there: its presence (`members/<id>`: addresses, certificate fingerprint, version; on a
//! lease, so it disappears when the node stops or stalls) and each wallet's public key
//! (`wallets/<id>`, published once by the keygen's coordinator).
//!
//! etcd is trusted for liveness only: nothing here makes a node accept anything. A member
//! record that disagrees with this node's own config is logged as an error (configuration
//! drift between operators), and a wallet record that differs from the key the participants
//! agreed on is refused loudly.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use mpc_coordination::{BackendKind, Published};
use mpc_store::WalletRecord;
use mpc_transport::NodeId;
use mpc_types::{Network, Scheme, WalletId};

use crate::{Node, NodeError};

/// `members/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: NodeId,
    pub address: String,
    pub api: Option<String>,
    /// SHA-256 of this node's certificate (DER), hex.
    pub certificate_sha256: String,
    pub version: String,
}

/// `wallets/<id>`: the public facts every participant agreed on at keygen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletPublicRecord {
    pub id: WalletId,
    pub scheme: Scheme,
    pub threshold: u16,
    pub participants: Vec<NodeId>,
    pub network: Network,
    pub public_key: String,
    pub chain_code: String,
}

impl WalletPublicRecord {
    pub fn of(w: &WalletRecord) -> Self {
        WalletPublicRecord {
            id: w.id.clone(),
            scheme: w.scheme,
            threshold: w.threshold,
            participants: w.participants.clone(),
            network: w.network,
            public_key: w.public_key.to_string(),
            chain_code: hex::encode(w.chain_code.to_bytes()),
        }
    }
}

impl Node {
    fn member_record(&self) -> Result<MemberRecord, NodeError> {
        let config = &self.inner.config;
        let pem = std::fs::read_to_string(&config.tls.certificate)
            .map_err(|e| NodeError::Config(format!("{}: {e}", config.tls.certificate.display())))?;
        let certs = mpc_transport::certs::parse_certs(&pem)?;
        let first = certs.first().ok_or_else(|| {
            NodeError::Config(format!(
                "{} holds no certificate",
                config.tls.certificate.display()
            ))
        })?;
        let me = config
            .peer(self.id())
            .ok_or_else(|| NodeError::Config("this node is not in cluster.nodes".into()))?;
        Ok(MemberRecord {
            id: self.id(),
            address: me.address.to_string(),
            api: me.api.map(|a| a.to_string()),
            certificate_sha256: mpc_transport::certs::fingerprint(first),
            version: crate::VERSION.into(),
        })
    }

    /// Under etcd: keeps `members/<id>` registered (again after a lost lease) and compares
    /// the other members' records with this node's config every `interval`.
    pub(crate) async fn membership_service(self) {
        if self.inner.config.coordination.backend != BackendKind::Etcd {
            return;
        }
        let record = match self
            .member_record()
            .and_then(|r| serde_json::to_vec(&r).map_err(|e| NodeError::Internal(e.to_string())))
        {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "cannot describe this node for the cluster backend");
                return;
            }
        };
        let ttl = self.inner.config.coordination.lease_ttl();
        let interval = Duration::from_secs(10);
        loop {
            let registered = match self.cluster_backend().await {
                Ok(backend) => backend
                    .register("members", &self.id().to_string(), &record, ttl)
                    .await
                    .map_err(NodeError::from),
                Err(e) => Err(e),
            };
            let mut presence = match registered {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "cannot register this node in etcd; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            info!("registered in etcd as members/{}", self.id());
            loop {
                self.check_members().await;
                tokio::select! {
                    _ = presence.lost() => {
                        warn!("membership lease lost; registering again");
                        break;
                    }
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        }
    }

    /// Compares the members etcd lists with this node's `cluster.nodes`; logs disagreement.
    async fn check_members(&self) {
        let listed = match self.cluster_backend().await {
            Ok(backend) => backend.list("members").await,
            Err(_) => return,
        };
        let Ok(listed) = listed else { return };
        for (name, value) in listed {
            let record: MemberRecord = match serde_json::from_slice(&value) {
                Ok(r) => r,
                Err(e) => {
                    error!(member = %name, error = %e, "unreadable member record in etcd");
                    continue;
                }
            };
            match self.inner.config.peer(record.id) {
                None => error!(
                    member = record.id.get(),
                    "etcd lists a node that is not in this node's cluster.nodes"
                ),
                Some(peer) if peer.address.to_string() != record.address => error!(
                    member = record.id.get(),
                    etcd = %record.address,
                    config = %peer.address,
                    "etcd and this node's config disagree on a member's address"
                ),
                Some(_) => {}
            }
        }
    }

    /// Publishes an activated wallet's public record (its coordinator does, once); a
    /// different record already there is an error the operator must see.
    pub(crate) async fn publish_wallet(&self, wallet: &WalletRecord) {
        let record = WalletPublicRecord::of(wallet);
        let Ok(value) = serde_json::to_vec(&record) else {
            return;
        };
        let published = match self.cluster_backend().await {
            Ok(backend) => backend
                .publish("wallets", wallet.id.as_str(), &value)
                .await
                .map_err(NodeError::from),
            Err(e) => Err(e),
        };
        match published {
            Ok(Published::Written) | Ok(Published::Same) => {}
            Ok(Published::Different(other)) => error!(
                wallet = %wallet.id,
                etcd = %String::from_utf8_lossy(&other),
                "etcd holds a different public record for this wallet"
            ),
            Err(e) => {
                warn!(wallet = %wallet.id, error = %e, "could not publish the wallet's public key")
            }
        }
    }
}
