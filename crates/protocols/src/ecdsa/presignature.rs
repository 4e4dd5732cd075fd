//! Presignatures: made by [`presign`] ahead of the message, each bound to one key, path and
//! signer set ([`PresignatureBinding`]), used at most once (the type is neither `Clone` nor
//! reusable after [`Presignature::issue_partial_signature`]), and their partial signatures
//! [`combine`]d and verified.

use cggmp24::generic_ec::{NonZero, Point};
use rand_core::{CryptoRng, RngCore};
use round_based::Mpc;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::*;
use crate::{
    encoding,
    execution::ExecutionId,
    hd::DerivationPath,
    signature::{public_key_of, EcdsaSignature, PublicKey},
    PartyIndex, ProtocolError,
};

/// What a presignature is bound to. It may only ever sign for exactly this key, path and
/// signer set: cggmp24 bakes the path's additive shift into the presignature at creation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PresignatureBinding {
    /// The wallet's master public key.
    pub master_key: PublicKey,
    pub path: DerivationPath,
    pub signers: Vec<PartyIndex>,
}

impl std::fmt::Display for PresignatureBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "key {} path {} signers {:?}",
            self.master_key, self.path, self.signers
        )
    }
}

/// The public part of a presignature, identical at every signer; needed to combine partial
/// signatures and to check each one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresignaturePublic {
    gamma: NonZero<Point<Curve>>,
    /// `(tilde_Delta_j, tilde_S_j)` per signer, in signer-set order.
    commitments: Vec<(Point<Curve>, Point<Curve>)>,
}

impl PresignaturePublic {
    fn from_lib(p: cggmp24::signing::PresignaturePublicData<Curve>) -> Self {
        Self {
            gamma: p.Gamma,
            commitments: p
                .commitments
                .into_iter()
                .map(|c| (c.tilde_Delta, c.tilde_S))
                .collect(),
        }
    }

    fn to_lib(&self) -> cggmp24::signing::PresignaturePublicData<Curve> {
        cggmp24::signing::PresignaturePublicData {
            Gamma: self.gamma,
            commitments: self
                .commitments
                .iter()
                .map(|(d, s)| cggmp24::signing::PresignatureCommitment {
                    tilde_Delta: *d,
                    tilde_S: *s,
                })
                .collect(),
        }
    }

    /// The signature's `r` will be the x-coordinate of this point; two presignatures never
    /// share it, so it identifies the presignature across all signers.
    pub fn nonce_point(&self) -> PublicKey {
        public_key_of(&self.gamma)
    }
}

/// One signer's presignature, bound to its key, path and signer set. Secret.
///
/// Deliberately not `Clone`: [`Presignature::issue_partial_signature`] consumes it, so a
/// presignature held in memory can be used at most once. Durable at-most-once use across
/// restarts is the store's job (mark consumed before the partial signature leaves the node).
///
/// One use compiles:
/// ```no_run
/// # use mpc_protocols::{ecdsa::*, DerivationPath, PartyIndex};
/// fn once(p: Presignature, s: &EcdsaKeyShare, m: &SighashPreimage) {
///     let set = PartyIndex::list(&[0, 1]);
///     let _ = p.issue_partial_signature(s, &DerivationPath::root(), &set, m);
/// }
/// ```
/// A second use does not (use after move, E0382; nightly rustdoc checks the code):
/// ```compile_fail,E0382
/// # use mpc_protocols::{ecdsa::*, DerivationPath, PartyIndex};
/// fn twice(p: Presignature, s: &EcdsaKeyShare, m: &SighashPreimage) {
///     let set = PartyIndex::list(&[0, 1]);
///     let _ = p.issue_partial_signature(s, &DerivationPath::root(), &set, m);
///     let _ = p.issue_partial_signature(s, &DerivationPath::root(), &set, m);
/// }
/// ```
/// Nor does copying it first:
/// ```compile_fail
/// # use mpc_protocols::ecdsa::*;
/// fn copy(p: &Presignature) -> Presignature {
///     p.clone()
/// }
/// ```
#[derive(Serialize, Deserialize)]
pub struct Presignature {
    /// Execution id of the run that created it: the same at every signer.
    id: ExecutionId,
    binding: PresignatureBinding,
    /// This signer's key-generation index.
    signer: PartyIndex,
    secret: cggmp24::Presignature<Curve>,
    public: PresignaturePublic,
}

impl std::fmt::Debug for Presignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Presignature(id {}, {}, signer {}, <secret>)",
            self.id, self.binding, self.signer
        )
    }
}

impl Presignature {
    pub fn id(&self) -> &ExecutionId {
        &self.id
    }

    pub fn binding(&self) -> &PresignatureBinding {
        &self.binding
    }

    pub fn public(&self) -> &PresignaturePublic {
        &self.public
    }

    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtocolError> {
        encoding::encode_secret(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProtocolError> {
        encoding::decode(bytes)
    }

    /// Issues this signer's partial signature on `message`, consuming the presignature.
    ///
    /// Refuses (and still consumes) if the request is for another key, path or signer set than
    /// the presignature was generated for: a presignature signs only what it was bound to.
    pub fn issue_partial_signature(
        self,
        share: &EcdsaKeyShare,
        path: &DerivationPath,
        signers: &[PartyIndex],
        message: &SighashPreimage,
    ) -> Result<PartialSignature, ProtocolError> {
        let requested = PresignatureBinding {
            master_key: share.public_key(),
            path: path.clone(),
            signers: signers.to_vec(),
        };
        if requested != self.binding || share.index() != self.signer {
            return Err(ProtocolError::PresignatureMismatch {
                bound: format!("{} (signer {})", self.binding, self.signer),
                requested: format!("{requested} (signer {})", share.index()),
            });
        }
        let partial = self.secret.issue_partial_signature(message.data_to_sign());
        Ok(PartialSignature {
            presignature: self.id,
            signer: self.signer,
            sigma: partial,
        })
    }
}

/// A partial signature from one signer. Carries no secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartialSignature {
    /// Which presignature it came from.
    pub presignature: ExecutionId,
    /// The signer's key-generation index.
    pub signer: PartyIndex,
    sigma: cggmp24::PartialSignature<Curve>,
}

/// Generates a presignature bound to (`share`'s key, `path`, `signers`). CPU-heavy (~1-2 s).
pub async fn presign<M, R>(
    eid: &ExecutionId,
    share: &EcdsaKeyShare,
    signers: &[PartyIndex],
    path: &DerivationPath,
    party: M,
    rng: &mut R,
) -> Result<Presignature, ProtocolError>
where
    M: Mpc<ProtocolMessage = SigningMsg>,
    R: RngCore + CryptoRng,
{
    let raw = raw_indices(signers);
    let (secret, public) = share
        .signing(eid, signers, &raw, path)?
        .generate_presignature(rng, party)
        .await
        .map_err(|e| ProtocolError::Presign(ProtocolError::chain(&e)))?;
    Ok(Presignature {
        id: *eid,
        binding: PresignatureBinding {
            master_key: share.public_key(),
            path: path.clone(),
            signers: signers.to_vec(),
        },
        signer: share.index(),
        secret,
        public: PresignaturePublic::from_lib(public),
    })
}

/// Combines one partial signature per signer (any order) and verifies the result against
/// `child_key`, the public key at the presignature's path.
pub fn combine(
    public: &PresignaturePublic,
    binding: &PresignatureBinding,
    partials: &[PartialSignature],
    message: &SighashPreimage,
    child_key: &PublicKey,
) -> Result<EcdsaSignature, ProtocolError> {
    let mut ordered = Vec::with_capacity(binding.signers.len());
    for signer in &binding.signers {
        let mut from_signer = partials.iter().filter(|p| p.signer == *signer);
        let p = from_signer.next().ok_or_else(|| {
            ProtocolError::Combine(format!("no partial signature from signer {signer}"))
        })?;
        if from_signer.next().is_some() {
            return Err(ProtocolError::Combine(format!(
                "two partial signatures from signer {signer}"
            )));
        }
        ordered.push(p.sigma);
    }
    if partials.len() != binding.signers.len() {
        return Err(ProtocolError::Combine(
            "partial signature from a party outside the signer set".into(),
        ));
    }
    let sig =
        cggmp24::PartialSignature::combine(&ordered, &public.to_lib(), message.data_to_sign())
            .ok_or_else(
                || match bad_partial(public, &ordered, &binding.signers, message) {
                    Some(signer) => ProtocolError::BadPartialSignature { signer },
                    None => ProtocolError::Combine(
                        "a partial signature does not match its commitment".into(),
                    ),
                },
            )?;
    let sig = EcdsaSignature::from_lib(&sig);
    sig.verify(child_key, &message.sighash())?;
    Ok(sig)
}

/// Whose partial signature is wrong, once cggmp24's `combine` has said one is: the check it
/// makes for all of them at once (sigma_j * Gamma = m * tilde_Delta_j + r * tilde_S_j,
/// against the presignature's public commitments), made signer by signer. Only on failure, so
/// a signing that combines pays for the check once.
fn bad_partial(
    public: &PresignaturePublic,
    ordered: &[cggmp24::PartialSignature<Curve>],
    signers: &[PartyIndex],
    message: &SighashPreimage,
) -> Option<PartyIndex> {
    use cggmp24::generic_ec::coords::AlwaysHasAffineX;
    if public.commitments.len() != ordered.len() {
        return None;
    }
    let r = public.gamma.x().to_scalar();
    let m = message.data_to_sign().to_scalar();
    ordered
        .iter()
        .zip(&public.commitments)
        .zip(signers)
        .find(|((partial, (delta, s)), _)| partial.sigma * public.gamma != m * delta + r * s)
        .map(|(_, signer)| *signer)
}
