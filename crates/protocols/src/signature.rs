//! Public keys and signatures in the byte formats Bitcoin uses, each checked with libsecp256k1
//! (an implementation independent of the protocol crates' own arithmetic).

use secp256k1::{ecdsa, schnorr, Message, XOnlyPublicKey};
use serde::{Deserialize, Serialize};

use crate::ProtocolError;

/// A compressed secp256k1 public key (33 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey(pub [u8; 33]);

impl PublicKey {
    pub fn to_secp(&self) -> Result<secp256k1::PublicKey, ProtocolError> {
        secp256k1::PublicKey::from_slice(&self.0)
            .map_err(|e| ProtocolError::InvalidKeyMaterial(format!("public key: {e}")))
    }

    /// The x-only form used by BIP-340 (drops the parity byte).
    pub fn x_only(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.0[1..]);
        out
    }
}

/// Compressed encoding of a point from the protocol crates (both use generic-ec's secp256k1).
pub(crate) fn public_key_of(p: &generic_ec::Point<generic_ec::curves::Secp256k1>) -> PublicKey {
    let mut out = [0u8; 33];
    out.copy_from_slice(p.to_bytes(true).as_bytes());
    PublicKey(out)
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl TryFrom<String> for PublicKey {
    type Error = ProtocolError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bytes = hex::decode(&s).map_err(|e| ProtocolError::Encoding(e.to_string()))?;
        let arr: [u8; 33] = bytes
            .try_into()
            .map_err(|_| ProtocolError::Encoding("public key must be 33 bytes".into()))?;
        Ok(Self(arr))
    }
}

impl From<PublicKey> for String {
    fn from(p: PublicKey) -> String {
        p.to_string()
    }
}

/// An ECDSA signature `(r, s)` with low `s` (BIP-62/146 standardness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcdsaSignature {
    r: [u8; 32],
    s: [u8; 32],
}

impl EcdsaSignature {
    pub(crate) fn from_lib(sig: &cggmp24::Signature<crate::ecdsa::Curve>) -> Self {
        let sig = sig.normalize_s();
        let mut compact = [0u8; 64];
        sig.write_to_slice(&mut compact);
        Self::from_compact(compact)
    }

    fn from_compact(compact: [u8; 64]) -> Self {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&compact[..32]);
        s.copy_from_slice(&compact[32..]);
        Self { r, s }
    }

    pub fn r(&self) -> [u8; 32] {
        self.r
    }

    /// `r || s`, 64 bytes.
    pub fn to_compact(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }

    fn to_secp(self) -> Result<ecdsa::Signature, ProtocolError> {
        ecdsa::Signature::from_compact(&self.to_compact())
            .map_err(|e| ProtocolError::Encoding(format!("ecdsa signature: {e}")))
    }

    /// Strict DER encoding (without the sighash byte).
    pub fn to_der(&self) -> Result<Vec<u8>, ProtocolError> {
        Ok(self.to_secp()?.serialize_der().to_vec())
    }

    /// DER encoding followed by the sighash-type byte, as it goes into a witness.
    pub fn to_der_with_sighash(&self, sighash_type: u8) -> Result<Vec<u8>, ProtocolError> {
        let mut out = self.to_der()?;
        out.push(sighash_type);
        Ok(out)
    }

    /// Verifies with libsecp256k1 (which also refuses high-S signatures).
    pub fn verify(&self, key: &PublicKey, sighash: &[u8; 32]) -> Result<(), ProtocolError> {
        let sig = self.to_secp()?;
        secp256k1::SECP256K1
            .verify_ecdsa(Message::from_digest(*sighash), &sig, &key.to_secp()?)
            .map_err(|_| ProtocolError::InvalidSignature)
    }

    /// The recovery id (0..=3) that recovers `key` from this signature and `sighash`.
    pub fn recovery_id(&self, key: &PublicKey, sighash: &[u8; 32]) -> Result<u8, ProtocolError> {
        let secp = secp256k1::SECP256K1;
        let expected = key.to_secp()?;
        let msg = Message::from_digest(*sighash);
        for id in 0..4 {
            let rec_id = ecdsa::RecoveryId::try_from(id)
                .map_err(|e| ProtocolError::Encoding(e.to_string()))?;
            let Ok(rec) = ecdsa::RecoverableSignature::from_compact(&self.to_compact(), rec_id)
            else {
                continue;
            };
            if secp.recover_ecdsa(msg, &rec).ok() == Some(expected) {
                return Ok(id as u8);
            }
        }
        Err(ProtocolError::InvalidSignature)
    }
}

/// A BIP-340 Schnorr signature (64 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchnorrSignature(#[serde(with = "hex::serde")] pub [u8; 64]);

impl SchnorrSignature {
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// The witness encoding: 64 bytes for `SIGHASH_DEFAULT` (0x00), 65 with the type byte
    /// otherwise (BIP-341).
    pub fn to_bitcoin(&self, sighash_type: u8) -> Vec<u8> {
        let mut out = self.0.to_vec();
        if sighash_type != 0 {
            out.push(sighash_type);
        }
        out
    }

    /// BIP-340 verification of a 32-byte message with libsecp256k1.
    pub fn verify(&self, x_only_key: &[u8; 32], message: &[u8; 32]) -> Result<(), ProtocolError> {
        verify_bip340(x_only_key, message, &self.0)
    }
}

/// BIP-340 verification of raw bytes: our one verification path for Schnorr signatures.
pub fn verify_bip340(
    x_only_key: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), ProtocolError> {
    let key = XOnlyPublicKey::from_byte_array(*x_only_key)
        .map_err(|_| ProtocolError::InvalidSignature)?;
    let sig = schnorr::Signature::from_byte_array(*signature);
    secp256k1::SECP256K1
        .verify_schnorr(&sig, message, &key)
        .map_err(|_| ProtocolError::InvalidSignature)
}
