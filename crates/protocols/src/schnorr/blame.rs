//! Whose FROST signature share is wrong, once givre's aggregation has said the sum is.
//!
//! RFC 9591's per-share check (section 5.4), `z_j·G == R_j + c·λ_j·X_j`, with `X_j` and `R_j`
//! adjusted exactly as givre's `round2` adjusts the secret share and the nonce: the HD shift
//! (added to every share of a VSS key), the BIP-340 even-y negation of the child key, the
//! BIP-341 tweak, the even-y negation of the tweaked key, and that of the group commitment.
//! givre 0.2 keeps its binding-factor, group-commitment and Lagrange helpers private
//! (`signing::utils`, `round2::derive_interpolating_value`), so they are rebuilt here on
//! generic-ec from what it does expose: the ciphersuite's hashes, challenge and encodings,
//! the key's share preimages and public shares, and the taproot tweak.
//!
//! Signers exchange their nonce commitments among themselves, not through the aggregator, so
//! each share is checked against the commitment list its own signer sent with it: an honest
//! signer's share always passes, whatever the others sent it, and no honest signer is named
//! because another one equivocated.

use givre::{
    ciphersuite::{Bitcoin, Ciphersuite, NormalizedPoint},
    generic_ec::{NonZero, Point, Scalar},
    signing::taproot,
};
use sha2::Digest;

use super::{Curve, SchnorrKeyShare, SchnorrSignatureShare};
use crate::{hd::DerivationPath, PartyIndex, ProtocolError};

/// Checks `share` on its own against the nonce commitments its signer listed with it, for the
/// BIP-341 output key (empty script tree) of the child at `path` and the message `sighash`.
/// `Err(BadSignatureShare)` names the share's signer when it does not fit; an honest signer's
/// share always does.
pub fn verify_share(
    key: &SchnorrKeyShare,
    path: &DerivationPath,
    sighash: &[u8; 32],
    share: &SchnorrSignatureShare,
) -> Result<(), ProtocolError> {
    let j = share.signer;
    let bad = || ProtocolError::BadSignatureShare { signer: j };
    let info: &givre::key_share::DirtyKeyInfo<Curve> = &key.0;
    let x_j = info.public_shares.get(j.as_usize()).ok_or_else(bad)?;
    // givre shifts every share of a VSS key, but only share 0 of an additive (n-of-n) one;
    // with Lagrange coefficients summing to one, the key itself moves by the shift once.
    let vss = info.vss_setup.is_some();
    let shifted = vss || j.get() == 0;

    let mut pk: Point<Curve> = *info.shared_public_key;
    let mut x_j: Point<Curve> = **x_j;
    if !path.is_root() {
        let child = info
            .derive_child_public_key::<givre::hd_wallet::Slip10, _>(path.indices().iter().copied())
            .map_err(|e| ProtocolError::InvalidPath(format!("{path}: {e}")))?;
        let shift = child.public_key - pk;
        pk = child.public_key;
        if shifted {
            x_j += shift;
        }
    }
    let (pk, negated) = even_y_key(pk)?;
    if negated {
        x_j = -x_j;
    }
    let tweak = taproot::tweak::<Bitcoin>(pk, None)
        .ok_or_else(|| ProtocolError::InvalidKeyMaterial("taproot tweak undefined".into()))?;
    let tweak = Point::generator() * tweak;
    let (pk, negated) = even_y_key(**pk + tweak)?;
    if shifted {
        x_j += tweak;
    }
    if negated {
        x_j = -x_j;
    }

    // The commitment list as givre orders it: by share preimage, each signer once.
    let mut list = share
        .commitments
        .iter()
        .map(|(k, c)| Some((info.share_preimage(k.get())?, *c)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(bad)?;
    list.sort_unstable_by_key(|(id, _)| *id);
    if list.len() != usize::from(key.threshold()) || list.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(bad());
    }
    let my_id = info.share_preimage(j.get()).ok_or_else(bad)?;
    let me = list
        .iter()
        .position(|(id, _)| *id == my_id)
        .ok_or_else(bad)?;

    // Binding factors (RFC 9591 section 4.4), as givre's `compute_binding_factors`.
    let pk_bytes = Bitcoin::serialize_point(&pk);
    let msg_hash = Bitcoin::h4().chain_update(sighash).finalize();
    let mut encoded = Bitcoin::h5();
    for (id, c) in &list {
        encoded.update(Bitcoin::serialize_scalar(id));
        encoded.update(Bitcoin::serialize_point(&c.hiding_comm));
        encoded.update(Bitcoin::serialize_point(&c.binding_comm));
    }
    let encoded = encoded.finalize();
    let nonce_commitments: Vec<Point<Curve>> = list
        .iter()
        .map(|(id, c)| {
            let rho = Bitcoin::h1(&[
                pk_bytes.as_ref(),
                &msg_hash,
                &encoded,
                Bitcoin::serialize_scalar(id).as_ref(),
            ]);
            c.hiding_comm + c.binding_comm * rho
        })
        .collect();
    let group_commitment: Point<Curve> = nonce_commitments.iter().sum();
    // A signer negates its nonce when the group commitment has odd y (BIP-340).
    let (r, negated) = match NormalizedPoint::<Bitcoin, _>::try_normalize(group_commitment) {
        Ok(r) => (r, false),
        Err(r) => (r, true),
    };
    let mut r_j = nonce_commitments[me];
    if negated {
        r_j = -r_j;
    }
    let challenge = Bitcoin::compute_challenge(&r, &pk, sighash);
    let lambda = if vss {
        let ids: Vec<Scalar<Curve>> = list.iter().map(|(id, _)| **id).collect();
        lagrange_at_zero(&ids, *my_id).ok_or_else(bad)?
    } else {
        Scalar::one()
    };
    if Point::generator() * share.share.0 == r_j + x_j * (challenge * lambda) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Which signer made aggregation fail, when that can be proven; `None` when it cannot.
/// `shares` are sorted by signer and form a valid signer set.
///
/// Each share is checked against its own signer's commitment list (which must list exactly
/// the signer set): an honest share fails that only if the aggregator's own path, message or
/// key differ from its signer's, and then every honest share fails. So the aggregator's own
/// share, when it signs, goes first: if it fails, the fault is the aggregator's and nobody
/// else is named; when it does not sign, shares that all fail name nobody either.
///
/// If every share fits its own list, the lists differ: a signer sent different commitments to
/// different signers, or lies about what it received, and only the aggregator's own list is
/// known to be true. A signer whose own commitments differ from those the aggregator received
/// from it sent it two different ones; any other disagreement is one signer's word against
/// another's, and names nobody.
pub(super) fn find_culprit(
    key: &SchnorrKeyShare,
    path: &DerivationPath,
    sighash: &[u8; 32],
    shares: &[&SchnorrSignatureShare],
) -> Result<Option<PartyIndex>, ProtocolError> {
    let signers: Vec<PartyIndex> = shares.iter().map(|s| s.signer).collect();
    let mine = shares.iter().find(|s| s.signer == key.index());
    let mut failing = Vec::new();
    for share in mine.into_iter().chain(shares) {
        let listed = share.commitments.iter().map(|(j, _)| *j);
        let fits = listed.eq(signers.iter().copied())
            && match verify_share(key, path, sighash, share) {
                Ok(()) => true,
                Err(ProtocolError::BadSignatureShare { .. }) => false,
                Err(e) => return Err(e),
            };
        match (fits, mine) {
            (false, Some(m)) if m.signer == share.signer => return Ok(None),
            (false, Some(_)) => return Ok(Some(share.signer)),
            (false, None) => failing.push(share.signer),
            (true, _) => {}
        }
    }
    if let Some(first) = failing.first() {
        return Ok((failing.len() < shares.len()).then_some(*first));
    }
    let Some(mine) = mine else {
        return Ok(None);
    };
    Ok(shares
        .iter()
        .find(|s| s.own_commitments() != mine.commitments_of(s.signer))
        .map(|s| s.signer))
}

/// A non-zero key with even y, as BIP-340 keys are.
type EvenKey = NormalizedPoint<Bitcoin, NonZero<Point<Curve>>>;

/// The key with even y (BIP-340), and whether it had to be negated for that.
fn even_y_key(point: Point<Curve>) -> Result<(EvenKey, bool), ProtocolError> {
    let point = NonZero::from_point(point)
        .ok_or_else(|| ProtocolError::InvalidKeyMaterial("derived key is zero".into()))?;
    Ok(match NormalizedPoint::try_normalize(point) {
        Ok(p) => (p, false),
        Err(p) => (p, true),
    })
}

/// `λ_i = Π_{j≠i} x_j / (x_j − x_i)`: signer `x_i`'s Lagrange coefficient at zero over the
/// share preimages `xs` (distinct, `x_i` among them).
fn lagrange_at_zero(xs: &[Scalar<Curve>], x_i: Scalar<Curve>) -> Option<Scalar<Curve>> {
    let (mut num, mut den) = (Scalar::<Curve>::one(), Scalar::<Curve>::one());
    for x_j in xs.iter().filter(|x_j| **x_j != x_i) {
        num *= x_j;
        den *= x_j - x_i;
    }
    Some(num * den.invert()?)
}
