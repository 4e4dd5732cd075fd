//! Wallets and key shares as the node uses them: decrypted from the store on first use and
//! kept in memory (the secret scalars zeroize on drop).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use mpc_bitcoin::{Chain, Scheme, WalletKey};
use mpc_protocols::{
    ecdsa::{AuxInfo, EcdsaKeyShare, IncompleteEcdsaShare},
    schnorr::SchnorrKeyShare,
    signature::PublicKey,
    PartyIndex,
};
use mpc_store::{WalletRecord, WalletState};
use mpc_transport::NodeId;
use mpc_types::{party_index, WalletId};
use serde::Serialize;

use crate::{Node, NodeError};

/// Decrypted shares by wallet id, each with the key epoch it is of.
#[derive(Default)]
pub struct ShareCache {
    ecdsa: RwLock<HashMap<WalletId, (u64, Arc<EcdsaKeyShare>)>>,
    schnorr: RwLock<HashMap<WalletId, (u64, Arc<SchnorrKeyShare>)>>,
    /// Active wallets' records: an active wallet changes only by a key refresh's commit, which
    /// forgets it here ([`Node::forget_wallet`]), so the signing path need not read it from
    /// the store each time.
    active: RwLock<HashMap<WalletId, WalletRecord>>,
}

/// A wallet as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct WalletInfo {
    pub id: WalletId,
    pub name: String,
    pub scheme: Scheme,
    pub script_type: &'static str,
    pub threshold: u16,
    pub participants: Vec<NodeId>,
    pub network: mpc_types::Network,
    pub state: String,
    pub public_key: String,
    pub xpub: String,
    pub fingerprint: String,
    pub first_address: String,
    pub receive_descriptor: String,
    pub change_descriptor: String,
    pub created_at: i64,
}

/// The wallet's public side from its record (already decoded by the store).
pub fn wallet_key(record: &WalletRecord) -> Result<WalletKey, NodeError> {
    let master_key = PublicKey(record.public_key.serialize());
    Ok(WalletKey::new(
        record.scheme,
        master_key,
        record.chain_code.to_bytes(),
        record.network.into(),
    )?)
}

pub fn wallet_info(record: &WalletRecord) -> Result<WalletInfo, NodeError> {
    let key = wallet_key(record)?;
    Ok(WalletInfo {
        id: record.id.clone(),
        name: record.name.clone(),
        scheme: key.scheme,
        script_type: key.scheme.script_type(),
        threshold: record.threshold,
        participants: record.participants.clone(),
        network: record.network,
        state: record.state.to_string(),
        public_key: record.public_key.to_string(),
        xpub: key.xpub()?.to_string(),
        fingerprint: key.fingerprint()?.to_string(),
        first_address: key.chain_address(Chain::Receive, 0)?.to_string(),
        receive_descriptor: key.descriptor(Chain::Receive)?.to_string(),
        change_descriptor: key.descriptor(Chain::Change)?.to_string(),
        created_at: record.created_at,
    })
}

/// Key-generation indices of `nodes` within a wallet's participants.
pub fn keygen_indices(
    participants: &[NodeId],
    nodes: &[NodeId],
) -> Result<Vec<PartyIndex>, NodeError> {
    nodes
        .iter()
        .map(|n| {
            party_index(participants, *n).ok_or_else(|| {
                NodeError::InvalidRequest(format!("node {n} is not a participant of the wallet"))
            })
        })
        .collect()
}

impl Node {
    /// An active wallet's record; pending, aborted and unknown wallets are errors.
    pub async fn active_wallet(&self, id: &WalletId) -> Result<WalletRecord, NodeError> {
        if let Some(record) = self
            .inner
            .shares
            .active
            .read()
            .ok()
            .and_then(|c| c.get(id).cloned())
        {
            return Ok(record);
        }
        let record = self
            .inner
            .store
            .wallet(id)
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("wallet {id}")))?;
        if record.state != WalletState::Active {
            return Err(NodeError::InvalidRequest(format!(
                "wallet {id} is {} on node {}",
                record.state,
                self.id()
            )));
        }
        if let Ok(mut c) = self.inner.shares.active.write() {
            c.insert(id.to_owned(), record.clone());
        }
        Ok(record)
    }

    pub async fn wallets(&self) -> Result<Vec<WalletInfo>, NodeError> {
        self.inner
            .store
            .wallets()
            .await?
            .iter()
            .filter(|w| !matches!(w.state, WalletState::Aborted | WalletState::Retired))
            .map(wallet_info)
            .collect()
    }

    pub async fn wallet(&self, id: &WalletId) -> Result<WalletInfo, NodeError> {
        let record = self
            .inner
            .store
            .wallet(id)
            .await?
            .ok_or_else(|| NodeError::NotFound(format!("wallet {id}")))?;
        wallet_info(&record)
    }

    pub(crate) async fn aux_info(&self, node_set: &[NodeId]) -> Result<AuxInfo, NodeError> {
        let (bytes, _digest) = self.inner.store.aux_info(node_set).await?.ok_or_else(|| {
            NodeError::InvalidRequest(format!(
                "no aux info for node set {node_set:?} on node {}: run the aux-info ceremony first",
                self.id()
            ))
        })?;
        Ok(AuxInfo::from_bytes(&bytes)?)
    }

    pub(crate) async fn ecdsa_share(
        &self,
        wallet: &WalletRecord,
    ) -> Result<Arc<EcdsaKeyShare>, NodeError> {
        if let Some(s) = cached(&self.inner.shares.ecdsa, wallet) {
            return Ok(s);
        }
        let bytes = self.share_bytes(wallet).await?;
        let incomplete = IncompleteEcdsaShare::from_bytes(&bytes)?;
        let share = Arc::new(EcdsaKeyShare::from_parts(
            incomplete,
            self.aux_info(&wallet.participants).await?,
        )?);
        if let Ok(mut c) = self.inner.shares.ecdsa.write() {
            c.insert(wallet.id.clone(), (wallet.key_epoch, share.clone()));
        }
        Ok(share)
    }

    pub(crate) async fn schnorr_share(
        &self,
        wallet: &WalletRecord,
    ) -> Result<Arc<SchnorrKeyShare>, NodeError> {
        if let Some(s) = cached(&self.inner.shares.schnorr, wallet) {
            return Ok(s);
        }
        let bytes = self.share_bytes(wallet).await?;
        let share = Arc::new(SchnorrKeyShare::from_bytes(&bytes)?);
        if let Ok(mut c) = self.inner.shares.schnorr.write() {
            c.insert(wallet.id.clone(), (wallet.key_epoch, share.clone()));
        }
        Ok(share)
    }

    /// Drops what this node keeps in memory of `wallet_id` (its record, decrypted share and
    /// the ready presignatures it remembers), after a key refresh changed them in the store.
    pub(crate) fn forget_wallet(&self, wallet_id: &WalletId) {
        let cache = &self.inner.shares;
        if let Ok(mut c) = cache.active.write() {
            c.remove(wallet_id);
        }
        if let Ok(mut c) = cache.ecdsa.write() {
            c.remove(wallet_id);
        }
        if let Ok(mut c) = cache.schnorr.write() {
            c.remove(wallet_id);
        }
        // Ready presignatures it remembers may have been retired with the old key epoch.
        if let Ok(mut ready) = self.inner.ready.lock() {
            ready.forget_wallet(wallet_id);
        }
    }

    /// The wallet's share, which must be of the record's key epoch: a refresh committed since
    /// the record was read fails this operation rather than mixing epochs in it.
    async fn share_bytes(
        &self,
        wallet: &WalletRecord,
    ) -> Result<mpc_store::Zeroizing<Vec<u8>>, NodeError> {
        let (epoch, bytes) = self
            .inner
            .store
            .key_share_with_epoch(&wallet.id)
            .await?
            .ok_or_else(|| {
                NodeError::NotFound(format!(
                    "key share of wallet {} on node {}",
                    wallet.id,
                    self.id()
                ))
            })?;
        if epoch != wallet.key_epoch {
            return Err(NodeError::Unavailable(format!(
                "wallet {}'s key was refreshed on node {} during this operation (key epoch {} \
                 to {epoch}): retry",
                wallet.id,
                self.id(),
                wallet.key_epoch
            )));
        }
        Ok(bytes)
    }
}

/// A cached share of `wallet`, if it is of the wallet's key epoch.
fn cached<S>(
    cache: &RwLock<HashMap<WalletId, (u64, Arc<S>)>>,
    wallet: &WalletRecord,
) -> Option<Arc<S>> {
    cache
        .read()
        .ok()
        .and_then(|c| c.get(&wallet.id).cloned())
        .filter(|(epoch, _)| *epoch == wallet.key_epoch)
        .map(|(_, s)| s)
}
