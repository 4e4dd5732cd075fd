//! FROST threshold Schnorr with the Bitcoin ciphersuite (givre): BIP-340 signatures for
//! key-path Taproot spends, tweaked per BIP-341 with an empty script tree.
//!
//! Signing follows RFC 9591's shape: the signers exchange nonce commitments (one round), each
//! computes its signature share, and one party (the coordinator) aggregates the shares and
//! verifies the result. The signers need not see the final signature, so the second broadcast
//! round and every signer's own aggregation that givre's all-in-one `full_signing` makes are
//! left out. There are no presignatures here: fresh nonces per run mean there is no nonce
//! state to keep at-most-once.

use givre::{
    ciphersuite::{Bitcoin, Ciphersuite},
    signing::{aggregate::AggregateOptions, round1::PublicCommitments, round2::SigShare},
};
use rand_core::{CryptoRng, RngCore};
use round_based::{
    rounds_router::{simple_store::RoundInput, RoundsRouter},
    Delivery, Mpc, MpcParty, Outgoing, SinkExt,
};
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

mod blame;
pub use blame::verify_share;

/// The curve (secp256k1, as seen by givre).
pub type Curve = <Bitcoin as Ciphersuite>::Curve;
type ProtocolDigest = sha2::Sha256;
type KeygenLevel = givre::keygen::security_level::SecurityLevel128;

/// Message type of FROST key generation (CGGMP21 DKG, as givre ships it).
pub type KeygenMsg = givre::keygen::msg::threshold::Msg<Curve, KeygenLevel, ProtocolDigest>;
/// The one message signers exchange: a signer's commitments to its two fresh nonces.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, round_based::ProtocolMessage)]
pub enum SigningMsg {
    Commitments(PublicCommitments<Curve>),
}

/// One signer's FROST signature share with every signer's nonce commitments as this signer
/// used them (its own included): the signers exchange commitments among themselves, so the
/// coordinator cannot assume one list for all, and a share is judged against its own signer's
/// list ([`verify_share`]). The coordinator aggregates `t` of them. Not secret: FROST sends
/// exactly this in the clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchnorrSignatureShare {
    signer: PartyIndex,
    commitments: Vec<(PartyIndex, PublicCommitments<Curve>)>,
    share: SigShare<Curve>,
}

impl SchnorrSignatureShare {
    /// The signer's index from key generation.
    pub fn signer(&self) -> PartyIndex {
        self.signer
    }

    /// The signer's own nonce commitments, as it lists them.
    fn own_commitments(&self) -> Option<PublicCommitments<Curve>> {
        self.commitments_of(self.signer)
    }

    /// Signer `j`'s nonce commitments as this share's signer received them.
    fn commitments_of(&self, j: PartyIndex) -> Option<PublicCommitments<Curve>> {
        self.commitments
            .iter()
            .find(|(signer, _)| *signer == j)
            .map(|(_, c)| *c)
    }
}

/// A FROST key share. Secret; the secret scalar is zeroized on drop by `generic-ec`.
#[derive(Clone, Serialize, Deserialize)]
pub struct SchnorrKeyShare(pub(crate) givre::KeyShare<Curve>);

impl SchnorrKeyShare {
    pub fn index(&self) -> PartyIndex {
        PartyIndex::new(self.0.i)
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

    /// Every party's public share `X_j = x_j·G`, in key-generation order.
    pub fn public_shares(&self) -> Vec<PublicKey> {
        self.0
            .public_shares
            .iter()
            .map(|x| public_key_of(x))
            .collect()
    }

    /// The public side of the key, for a party without a share in a resharing.
    pub fn key_info(&self) -> crate::reshare::KeyInfo {
        crate::reshare::KeyInfo(self.0.key_info.clone())
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
    let share = givre::keygen::<Curve>(eid.givre(), i.get(), n)
        .set_threshold(t)
        .hd_wallet(true)
        .start(rng, party)
        .await
        .map_err(|e| ProtocolError::Keygen(ProtocolError::chain(&e)))?;
    Ok(SchnorrKeyShare(share))
}

/// This signer's share of the BIP-340 signature of the BIP-341 key-path sighash `sighash`
/// (computed by this signer from the PSBT) for the output key at `path`: the child key tweaked
/// with an empty script tree. One round: the signers broadcast nonce commitments; the share
/// is returned, not sent, so the caller decides when it may leave the node.
pub async fn sign_share<M, R>(
    share: &SchnorrKeyShare,
    signers: &[PartyIndex],
    path: &DerivationPath,
    sighash: &[u8; 32],
    party: M,
    rng: &mut R,
) -> Result<SchnorrSignatureShare, ProtocolError>
where
    M: Mpc<ProtocolMessage = SigningMsg>,
    R: RngCore + CryptoRng,
{
    let i = position_in_signer_set(signers, share.index(), share.n(), share.threshold())?;
    let failed = |what: &str, e: &dyn std::error::Error| {
        ProtocolError::Signing(format!("{what}: {}", ProtocolError::chain(e)))
    };
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut rounds = RoundsRouter::<SigningMsg>::builder();
    let round1 = rounds.add_round(RoundInput::<PublicCommitments<Curve>>::broadcast(
        i.get(),
        share.threshold(),
    ));
    let mut rounds = rounds.listen(incoming);

    // Fresh nonces for this run only; they are moved into the share computation and dropped.
    let (nonces, commitments) = givre::signing::round1::commit::<Bitcoin>(rng, &share.0);
    outgoing
        .send(Outgoing::broadcast(SigningMsg::Commitments(commitments)))
        .await
        .map_err(|e| failed("sending the nonce commitments", &e))?;
    let received = rounds
        .complete(round1)
        .await
        .map_err(|e| failed("receiving the nonce commitments", &e))?;
    let commitment_list: Vec<_> = signers
        .iter()
        .map(|s| s.get())
        .zip(received.iter_including_me(&commitments).copied())
        .collect();

    let mut options = givre::signing::round2::SigningOptions::<Bitcoin>::new(
        &share.0,
        nonces,
        sighash,
        &commitment_list,
    );
    if !path.is_root() {
        options = options
            .set_derivation_path(path.indices().iter().copied())
            .map_err(|e| ProtocolError::InvalidPath(format!("{path}: {e}")))?;
    }
    // givre's docs claim an empty-tree tweak by default, but without this call no tweak is
    // applied at all and the signature would not match the P2TR output key.
    let signature_share = options
        .set_taproot_tweak(None)
        .map_err(|e| failed("taproot tweak", &e))?
        .sign()
        .map_err(|e| failed("signature share", &e))?;
    Ok(SchnorrSignatureShare {
        signer: share.index(),
        commitments: commitment_list
            .into_iter()
            .map(|(j, c)| (PartyIndex::new(j), c))
            .collect(),
        share: signature_share,
    })
}

/// Combines `t` signature shares into the signature for the output key at `path`, by any
/// holder of a share of the same key (only its public part is used), and verifies it with
/// libsecp256k1 against the output key of `internal_key`: the x-only key at `path` as the
/// caller derived it on its own (the node: rust-bitcoin's BIP-32 on the wallet's xpub, the
/// key its PSBT check matched against the spent script).
///
/// When the shares do not aggregate, each is checked on its own ([`blame::find_culprit`]):
/// [`ProtocolError::BadSignatureShare`] names a signer only when the fault is provably its
/// own; the caller's own share, if it is a signer, is trusted as the caller's view.
pub fn aggregate(
    key: &SchnorrKeyShare,
    path: &DerivationPath,
    internal_key: &[u8; 32],
    sighash: &[u8; 32],
    shares: &[SchnorrSignatureShare],
) -> Result<SchnorrSignature, ProtocolError> {
    let mut shares: Vec<&SchnorrSignatureShare> = shares.iter().collect();
    shares.sort_by_key(|s| s.signer);
    let signers: Vec<PartyIndex> = shares.iter().map(|s| s.signer).collect();
    let first = signers.first().copied().unwrap_or_default();
    position_in_signer_set(&signers, first, key.n(), key.threshold())?;
    let failed = |e: &dyn std::error::Error| ProtocolError::Combine(ProtocolError::chain(e));
    let list = shares
        .iter()
        .map(|s| {
            // An honest signer always lists its own commitments.
            let own = s
                .own_commitments()
                .ok_or(ProtocolError::BadSignatureShare { signer: s.signer })?;
            Ok((s.signer.get(), own, s.share))
        })
        .collect::<Result<Vec<_>, ProtocolError>>()?;
    let mut options = AggregateOptions::<Bitcoin>::new(key.0.as_ref(), &list, sighash);
    if !path.is_root() {
        options = options
            .set_derivation_path(path.indices().iter().copied())
            .map_err(|e| ProtocolError::InvalidPath(format!("{path}: {e}")))?;
    }
    let sig = options
        .set_taproot_tweak(None)
        .map_err(|e| failed(&e))?
        .aggregate()
        .map_err(|e| match blame::find_culprit(key, path, sighash, &shares) {
            Ok(None) => failed(&e),
            Ok(Some(signer)) => ProtocolError::BadSignatureShare { signer },
            Err(other) => other,
        })?;
    let mut bytes = [0u8; 64];
    sig.write_to_slice(&mut bytes);
    let sig = SchnorrSignature(bytes);
    let (_tweak, output_key) = taproot_output_key(internal_key, None)?;
    // No per-share check here: givre verified the sum against the key it derived, so a
    // failure now is that key differing from the caller's, which no signer's share causes.
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
    use secp256k1::{Scalar, XOnlyPublicKey};
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
        .add_tweak(secp256k1::SECP256K1, &scalar)
        .map_err(|e| ProtocolError::InvalidKeyMaterial(format!("taproot tweak: {e}")))?;
    Ok((tweak, output.serialize()))
}
