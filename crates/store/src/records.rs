//! The public rows. Secrets never appear here: they go in and out as bytes, sealed in between.

use std::fmt;

use bitcoin::bip32::ChainCode;
use bitcoin::secp256k1::PublicKey;
use mpc_types::{DerivationPath, Network, NodeId, Scheme, WalletId};
use uuid::Uuid;

use crate::error::{Result, StoreError};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A wallet is one key (ECDSA or Schnorr). It becomes active only when every node reported
/// the same public key, so a half-finished keygen never leaves an active wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletRecord {
    pub id: WalletId,
    pub name: String,
    pub scheme: Scheme,
    pub threshold: u16,
    pub participants: Vec<NodeId>,
    pub network: Network,
    /// The group's master public key (the HD root, before any derivation or tweak).
    pub public_key: PublicKey,
    pub chain_code: ChainCode,
    pub state: WalletState,
    pub session: Uuid,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    /// Bumped by every committed key refresh: the shares of this node and every other
    /// participant are of this epoch, and so is every usable presignature.
    pub key_epoch: u64,
    /// The node that coordinated the keygen, which decides a pending wallet; `None` for a
    /// wallet stored before this was recorded.
    pub coordinator: Option<NodeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalletState {
    Pending,
    Active,
    Aborted,
    /// This node left the wallet's committee in a resharing: its share is deleted, the record
    /// stays (with the new committee) so the wallet is known as not held here.
    Retired,
}

/// A coordinator's record of a ceremony (keygen, aux info, signing); public data only.
#[derive(Debug, Clone, PartialEq)]
pub struct CeremonyRecord {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub coordinator: NodeId,
    pub request: serde_json::Value,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// A presignature's public part. It is bound to (wallet, path, signers) and to the store's
/// epoch; its secret is sealed beside it until it is consumed, discarded or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignatureRecord {
    pub id: String,
    pub wallet_id: WalletId,
    pub path: DerivationPath,
    pub signers: Vec<NodeId>,
    pub epoch: u64,
    /// The wallet's key epoch it was made under; it signs under no other.
    pub key_epoch: u64,
    pub state: PresignatureState,
    pub public: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
}

/// A refreshed key share waiting for its refresh's commit (public part; the share is sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingShare {
    pub wallet_id: WalletId,
    /// The key epoch the share is for: the wallet's current one plus one.
    pub key_epoch: u64,
    pub session: Uuid,
    /// Who decides the refresh: the node to ask for the decision after a restart.
    pub coordinator: NodeId,
    pub created_at: i64,
}

/// This node's aux info waiting for its ceremony's commit (public part; the aux info and the
/// primes it was made from are sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAuxInfo {
    pub node_set: Vec<NodeId>,
    pub session: Uuid,
    /// Who decides the ceremony: the node to ask for the decision.
    pub coordinator: NodeId,
    pub public_digest: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresignatureState {
    Ready,
    Consumed,
    Expired,
}

/// Pool depth of one (path, signer set) of a wallet, for the refill loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLevel {
    pub path: DerivationPath,
    pub signers: Vec<NodeId>,
    /// Usable now: ready, current epoch, unexpired.
    pub ready: u64,
    pub consumed: u64,
    /// Every presignature this node holds or held for it, in any state.
    pub generated: u64,
}

/// Text forms of the two state enums, as stored.
macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),* }
            }

            pub(crate) fn parse(text: &str, table: &'static str, id: &str) -> Result<Self> {
                match text {
                    $($text => Ok($ty::$variant),)*
                    other => Err(StoreError::Corrupt {
                        table,
                        id: id.to_owned(),
                        reason: format!("unknown state {other:?}"),
                    }),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(WalletState { Pending => "pending", Active => "active", Aborted => "aborted", Retired => "retired" });
text_enum!(PresignatureState { Ready => "ready", Consumed => "consumed", Expired => "expired" });

/// Node ids as stored: sorted, without duplicates, comma-separated ("1,2,3").
pub(crate) fn id_list(ids: &[NodeId]) -> String {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.iter()
        .map(NodeId::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn parse_id_list(text: &str, table: &'static str, id: &str) -> Result<Vec<NodeId>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| {
            part.parse().map_err(|_| StoreError::Corrupt {
                table,
                id: id.to_owned(),
                reason: format!("bad node id list {text:?}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_are_sorted_and_parse_back() {
        assert_eq!(id_list(&NodeId::must_list(&[3, 1, 2, 3])), "1,2,3");
        assert_eq!(
            parse_id_list("1,2,3", "t", "x").unwrap(),
            NodeId::must_list(&[1, 2, 3])
        );
        assert_eq!(parse_id_list("", "t", "x").unwrap(), Vec::<NodeId>::new());
        assert!(parse_id_list("1,,2", "t", "x").is_err());
        assert!(parse_id_list("70000", "t", "x").is_err());
        assert!(parse_id_list("0,1", "t", "x").is_err());
    }
}
