//! FROST threshold Schnorr with the Bitcoin ciphersuite (givre): BIP-340 signatures for
//! key-path Taproot spends, tweaked per BIP-341 with an empty script tree.
//!
//! FROST signing has no presignatures here: the two rounds are cheap (under a millisecond of
//! CPU), and fresh nonces per run mean there is no nonce state to keep at-most-once.

use givre::ciphersuite::{Bitcoin, Ciphersuite};
use rand_core::{CryptoRng, RngCore};
use round_based::Mpc;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{
    ecdsa::{check_parameters, position_in_signer_set},
    encoding,
    execution::ExecutionId,
    hd::DerivationPath,
    signature::{public_key_of, PublicKey, SchnorrSignature},
    PartyIndex, ProtocolError,
};

/// The curve (secp256k1, as seen by givre).
pub type Curve = <Bitcoin as Ciphersuite>::Curve;
type ProtocolDigest = sha2::Sha256;
type KeygenLevel = givre::keygen::security_level::SecurityLevel128;

/// Message type of FROST key generation (CGGMP21 DKG, as givre ships it).
pub type KeygenMsg = givre::keygen::msg::threshold::Msg<Curve, KeygenLevel, ProtocolDigest>;
/// Message type of FROST interactive signing.
pub type SigningMsg = givre::signing::full_signing::Msg<Curve>;

/// A FROST key share. Secret; the secret scalar is zeroized on drop by `generic-ec`.
#[derive(Clone, Serialize, Deserialize)]
pub struct SchnorrKeyShare(givre::KeyShare<Curve>);

impl SchnorrKeyShare {
    pub fn index(&self) -> PartyIndex {
        self.0.i
    }

    pub fn n(&self) -> u16 {
        self.0.n()
    }

    pub fn threshold(&self) -> u16 {
        self.0.min_signers()
    }

    /// The wallet's master (untweaked) public key, compressed.
    pub fn public_key(&self) -> PublicKey {
        public_key_of(&self.0.shared_public_key())
    }

    pub fn chain_code(&self) -> Result<[u8; 32], ProtocolError> {
        self.0
            .chain_code
            .ok_or_else(|| ProtocolError::InvalidKeyMaterial("key was generated without HD".into()))
    }

    /// Internal (untweaked) public key of the child at `path`.
    pub fn derive_public_key(&self, path: &DerivationPath) -> Result<PublicKey, ProtocolError> {
        let child = self
            .0
            .derive_child_public_key::<givre::hd_wallet::Slip10, _>(path.indices().iter().copied())
            .map_err(|e| ProtocolError::InvalidPath(format!("{path}: {e}")))?;
        Ok(public_key_of(&child.public_key))
    }

    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        encoding::encode_secret(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(bytes)
    }
}

impl std::fmt::Debug for SchnorrKeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SchnorrKeyShare(i {}, {}-of-{}, pk {}, <secret>)",
            self.index(),
            self.threshold(),
            self.n(),
            self.public_key()
        )
    }
}

/// Runs FROST key generation (HD-enabled) for party `i` of `n` with threshold `t`.
pub async fn keygen<M, R>(
    eid: &ExecutionId,
    i: PartyIndex,
    n: u16,
    t: u16,
    party: M,
    rng: &mut R,
) -> Result<SchnorrKeyShare, ProtocolError>
where
    M: Mpc<ProtocolMessage = KeygenMsg>,
    R: RngCore + CryptoRng,
{
    check_parameters(i, n, t)?;
    let share = givre::keygen::<Curve>(eid.givre(), i, n)
        .set_threshold(t)
        .hd_wallet(true)
        .start(rng, party)
        .await
        .map_err(|e| ProtocolError::Keygen(ProtocolError::chain(&e)))?;
    Ok(SchnorrKeyShare(share))
}

/// Signs the BIP-341 key-path sighash `sighash` (computed by this signer from the PSBT) for
/// the output key at `path`: the child key tweaked with an empty script tree.
///
/// Returns the signature after verifying it (libsecp256k1) against the tweaked output key.
pub async fn sign<M, R>(
    share: &SchnorrKeyShare,
    signers: &[PartyIndex],
    path: &DerivationPath,
    sighash: &[u8; 32],
    party: M,
    rng: &mut R,
) -> Result<SchnorrSignature, ProtocolError>
where
    M: Mpc<ProtocolMessage = SigningMsg>,
    R: RngCore + CryptoRng,
{
    let i = position_in_signer_set(signers, share.index(), share.n(), share.threshold())?;
    let mut builder = givre::signing::<Bitcoin>(i, &share.0, signers, sighash);
    if !path.is_root() {
        builder = builder
            .set_derivation_path(path.indices().iter().copied())
            .map_err(|e| ProtocolError::InvalidPath(format!("{path}: {e}")))?;
    }
    // givre's docs claim an empty-tree tweak by default, but without this call no tweak is
    // applied at all and the signature would not match the P2TR output key.
    let sig = builder
        .set_taproot_tweak(None)
        .map_err(|e| ProtocolError::Signing(format!("{e:?}")))?
        .sign(rng, party)
        .await
        .map_err(|e| ProtocolError::Signing(format!("{e:?}")))?;
    let mut bytes = [0u8; 64];
    sig.write_to_slice(&mut bytes);
    let sig = SchnorrSignature(bytes);
    let (_tweak, output_key) = taproot_output_key(&share.derive_public_key(path)?.x_only(), None)?;
    sig.verify(&output_key, sighash)?;
    Ok(sig)
}

/// The BIP-341 tweak and output key for `internal` committing to `merkle_root` (`None` for a
/// key-path-only output): `Q = P + H_TapTweak(x(P) || root) * G`. Computed with libsecp256k1,
/// independently of givre. Returns `(tweak, x-only output key)`.
pub fn taproot_output_key(
    internal: &[u8; 32],
    merkle_root: Option<[u8; 32]>,
) -> Result<([u8; 32], [u8; 32]), ProtocolError> {
    use secp256k1::{Scalar, Secp256k1, XOnlyPublicKey};
    use sha2::{Digest, Sha256};

    let x_only = XOnlyPublicKey::from_byte_array(*internal)
        .map_err(|e| ProtocolError::InvalidKeyMaterial(format!("internal key: {e}")))?;
    let tag = Sha256::digest(b"TapTweak");
    let mut h = Sha256::new()
        .chain_update(tag)
        .chain_update(tag)
        .chain_update(internal);
    if let Some(root) = merkle_root {
        h.update(root);
    }
    let tweak: [u8; 32] = h.finalize().into();
    let scalar = Scalar::from_be_bytes(tweak)
        .map_err(|_| ProtocolError::InvalidKeyMaterial("taproot tweak overflows".into()))?;
    let (output, _parity) = x_only
        .add_tweak(&Secp256k1::verification_only(), &scalar)
        .map_err(|e| ProtocolError::InvalidKeyMaterial(format!("taproot tweak: {e}")))?;
    Ok((tweak, output.serialize()))
}
