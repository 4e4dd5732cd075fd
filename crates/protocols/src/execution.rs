//! Execution ids: every protocol run gets a fresh id that all participants derive from the same
//! agreed session, so messages from one run can never be replayed into another (design
//! invariant 4).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::PartyIndex;

/// Which protocol a run executes. Part of the execution id, so the same session id can never be
/// reused across protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolKind {
    AuxInfo,
    EcdsaKeygen,
    EcdsaPresign,
    EcdsaSign,
    SchnorrKeygen,
    SchnorrSign,
    /// Key refresh of either scheme (one message type serves both).
    KeyRefresh,
    /// Resharing of either scheme to another committee or threshold, and repair.
    KeyReshare,
}

impl ProtocolKind {
    pub const ALL: [ProtocolKind; 8] = [
        ProtocolKind::AuxInfo,
        ProtocolKind::EcdsaKeygen,
        ProtocolKind::EcdsaPresign,
        ProtocolKind::EcdsaSign,
        ProtocolKind::SchnorrKeygen,
        ProtocolKind::SchnorrSign,
        ProtocolKind::KeyRefresh,
        ProtocolKind::KeyReshare,
    ];

    /// Wire code in the transport envelope (0 is reserved for control messages).
    pub fn code(self) -> u8 {
        match self {
            ProtocolKind::AuxInfo => 1,
            ProtocolKind::EcdsaKeygen => 2,
            ProtocolKind::EcdsaPresign => 3,
            ProtocolKind::EcdsaSign => 4,
            ProtocolKind::SchnorrKeygen => 5,
            ProtocolKind::SchnorrSign => 6,
            ProtocolKind::KeyRefresh => 7,
            ProtocolKind::KeyReshare => 8,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolKind::AuxInfo => "aux-info",
            ProtocolKind::EcdsaKeygen => "ecdsa-keygen",
            ProtocolKind::EcdsaPresign => "ecdsa-presign",
            ProtocolKind::EcdsaSign => "ecdsa-sign",
            ProtocolKind::SchnorrKeygen => "schnorr-keygen",
            ProtocolKind::SchnorrSign => "schnorr-sign",
            ProtocolKind::KeyRefresh => "key-refresh",
            ProtocolKind::KeyReshare => "key-reshare",
        }
    }
}

impl std::fmt::Display for ProtocolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 32-byte execution id: SHA-256 over a length-prefixed encoding of
/// (domain, protocol, wallet, session, parties, parameters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecutionId([u8; 32]);

impl ExecutionId {
    /// Derives the execution id. `parties` are key-generation indices of the participants
    /// (all `n` for aux info and keygen, the signer set for signing); `params` carries anything
    /// else every participant must agree on (threshold, derivation path, message digest...).
    pub fn derive(
        protocol: ProtocolKind,
        wallet: &str,
        session: Uuid,
        parties: &[PartyIndex],
        params: &[u8],
    ) -> Self {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(b"mpc-wallet/execution-id/v1");
        field(protocol.as_str().as_bytes());
        field(wallet.as_bytes());
        field(session.as_bytes());
        let parties: Vec<u8> = parties.iter().flat_map(|p| p.get().to_be_bytes()).collect();
        field(&parties);
        field(params);
        Self(h.finalize().into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn cggmp24(&self) -> cggmp24::ExecutionId<'_> {
        cggmp24::ExecutionId::new(&self.0)
    }

    pub(crate) fn givre(&self) -> givre::keygen::ExecutionId<'_> {
        givre::keygen::ExecutionId::new(&self.0)
    }
}

impl std::fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExecutionId({})", hex::encode(self.0))
    }
}

impl std::fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_id() {
        let s = Uuid::from_u128(7);
        let (p012, p013) = (PartyIndex::list(&[0, 1, 2]), PartyIndex::list(&[0, 1, 3]));
        let base = ExecutionId::derive(ProtocolKind::EcdsaSign, "w", s, &p012, b"p");
        assert_eq!(
            base,
            ExecutionId::derive(ProtocolKind::EcdsaSign, "w", s, &p012, b"p")
        );
        let variants = [
            ExecutionId::derive(ProtocolKind::EcdsaPresign, "w", s, &p012, b"p"),
            ExecutionId::derive(ProtocolKind::EcdsaSign, "v", s, &p012, b"p"),
            ExecutionId::derive(
                ProtocolKind::EcdsaSign,
                "w",
                Uuid::from_u128(8),
                &p012,
                b"p",
            ),
            ExecutionId::derive(ProtocolKind::EcdsaSign, "w", s, &p013, b"p"),
            ExecutionId::derive(ProtocolKind::EcdsaSign, "w", s, &p012, b"q"),
            // Length prefixes keep field boundaries: moving a byte between fields changes the id.
            ExecutionId::derive(ProtocolKind::EcdsaSign, "wp", s, &p012, b""),
        ];
        for v in variants {
            assert_ne!(base, v);
        }
    }
}
