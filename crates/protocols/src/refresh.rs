//! Key refresh: new shares of the same key, same threshold, same parties (proactive secret
//! sharing, Herzberg, Jarecki, Krawczyk and Yung, CRYPTO 1995). Neither cggmp24 nor givre
//! has it; both keep their key shares as the `key-share` crate's core share, so one protocol
//! over that core share serves both schemes ([`refresh_schnorr`], [`refresh_ecdsa`]).
//!
//! Party `i` deals a random polynomial `g_i` of degree `t−1` with `g_i(0) = 0`:
//! * round 1, broadcast: Feldman commitments `C_{i,k} = a_{i,k}·G` for `k = 0..t` (`C_{i,0}`
//!   must be the identity) and a Schnorr proof of knowledge of each `a_{i,k}`, `k ≥ 1`, bound
//!   to the execution id, the dealer and `k`;
//! * round 1, point-to-point: `g_i(I_j)` to each party `j`;
//! * round 2, broadcast: a verdict, either a digest of the new key info or complaints naming
//!   the dealers whose dealing did not check.
//!
//! New share `x_j' = x_j + Σ_i g_i(I_j)`; new public shares `X_j' = X_j + Σ_i Σ_k I_j^k·C_{i,k}`,
//! computed by every party from the broadcasts. The group key, the chain code, `t`, `n` and the
//! evaluation points are unchanged. A party returns its new share only if it found no fault
//! and every other party reported the same digest; the node stores it as pending and switches
//! only after every participant reported success with that digest.

use cggmp24::key_share::{
    DirtyIncompleteKeyShare as DirtyCoreKeyShare, DirtyKeyInfo, IncompleteKeyShare as CoreKeyShare,
    Validate,
};
use generic_ec::{Curve, NonZero, Point, Scalar, SecretScalar};
use rand_core::{CryptoRng, RngCore};
use round_based::{
    rounds_router::{simple_store::RoundInput, RoundsRouter},
    Delivery, Mpc, MpcParty, Outgoing, SinkExt,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    ecdsa::{check_parameters, AuxInfo, EcdsaKeyShare, IncompleteEcdsaShare},
    execution::ExecutionId,
    schnorr::SchnorrKeyShare,
    PartyIndex, ProtocolError,
};

/// The refresh message for secp256k1, as both schemes use it.
pub type RefreshMsg = Msg<generic_ec::curves::Secp256k1>;

/// Messages of the refresh protocol.
#[derive(Clone, Serialize, Deserialize, round_based::ProtocolMessage)]
#[serde(bound = "")]
pub enum Msg<E: Curve> {
    Dealing(Dealing<E>),
    Share(DealtShare<E>),
    Verdict(Verdict),
}

/// A dealer's public commitments to its zero-constant polynomial.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Dealing<E: Curve> {
    /// `C_k = a_k·G` for `k = 0..t`; `C_0` must be the identity.
    pub commitments: Vec<Point<E>>,
    /// Proofs of knowledge of `a_1..a_{t-1}`, one per commitment after `C_0`.
    pub proofs: Vec<KnowledgeProof<E>>,
}

/// Non-interactive Schnorr proof of knowledge of `a` with `C = a·G` (Fiat–Shamir).
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct KnowledgeProof<E: Curve> {
    pub r: Point<E>,
    pub z: Scalar<E>,
}

/// `g_i(I_j)`, sent by dealer `i` to party `j` only. Secret: zeroized on drop by generic-ec.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct DealtShare<E: Curve>(pub SecretScalar<E>);

/// A party's last word: the digest of the new key info it computed, or why it computed none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Agree([u8; 32]),
    /// The dealers whose dealings did not check; empty if this party failed for its own reasons.
    Refuse(Vec<Complaint>),
}

/// One dealer accused, and of what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complaint {
    pub dealer: PartyIndex,
    pub fault: DealerFault,
}

/// What a dealer did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DealerFault {
    #[error("its dealing has the wrong number of commitments or proofs")]
    Malformed,
    #[error("its polynomial's constant term is not zero (it would change the group key)")]
    NonZeroConstantTerm,
    #[error("a proof of knowledge of a coefficient does not verify")]
    BadProof,
    #[error("the share it sent does not match its commitments")]
    BadShare,
}

/// Runs the refresh for one party holding `share`; returns its new, validated core share.
pub async fn refresh_core<E, M, R>(
    eid: &ExecutionId,
    share: &DirtyCoreKeyShare<E>,
    party: M,
    rng: &mut R,
) -> Result<CoreKeyShare<E>, ProtocolError>
where
    E: Curve,
    M: Mpc<ProtocolMessage = Msg<E>>,
    R: RngCore + CryptoRng,
{
    let i = share.i;
    let n = u16::try_from(share.public_shares.len())
        .map_err(|_| ProtocolError::InvalidKeyMaterial("too many public shares".into()))?;
    let vss = share.vss_setup.as_ref().ok_or_else(|| {
        ProtocolError::InvalidKeyMaterial("refresh needs a threshold (VSS) key share".into())
    })?;
    let t = vss.min_signers;
    check_parameters(PartyIndex::new(i), n, t)?;
    if vss.I.len() != usize::from(n) {
        return Err(ProtocolError::InvalidKeyMaterial(
            "evaluation points do not match the parties".into(),
        ));
    }
    let points: Vec<Scalar<E>> = vss.I.iter().map(|p| *p.as_ref()).collect();
    let failed = |what: &str, e: &dyn std::error::Error| {
        ProtocolError::Refresh(format!("{what}: {}", ProtocolError::chain(e)))
    };

    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut rounds = RoundsRouter::<Msg<E>>::builder();
    let round_dealings = rounds.add_round(RoundInput::<Dealing<E>>::broadcast(i, n));
    let round_shares = rounds.add_round(RoundInput::<DealtShare<E>>::p2p(i, n));
    let round_verdicts = rounds.add_round(RoundInput::<Verdict>::broadcast(i, n));
    let mut rounds = rounds.listen(incoming);

    // Deal: a_1..a_{t-1} random, a_0 = 0. The coefficients are zeroized when dropped.
    let coefficients: Vec<SecretScalar<E>> = (1..t).map(|_| SecretScalar::random(rng)).collect();
    let dealing = deal(eid, i, &coefficients, rng);
    outgoing
        .send(Outgoing::broadcast(Msg::Dealing(dealing.clone())))
        .await
        .map_err(|e| failed("sending the dealing", &e))?;
    for (j, point) in points
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != usize::from(i))
    {
        // Point-to-point: in a node this is one QUIC stream under mutual TLS between the two
        // nodes, so no one else reads it and the receiver knows who sent it.
        let to = u16::try_from(j).map_err(|_| ProtocolError::Refresh("party index".into()))?;
        let value = DealtShare(evaluate(&coefficients, point));
        outgoing
            .send(Outgoing::p2p(to, Msg::Share(value)))
            .await
            .map_err(|e| failed("sending a share", &e))?;
    }
    let my_value = DealtShare(evaluate(&coefficients, &points[usize::from(i)]));
    drop(coefficients);

    let dealings = rounds
        .complete(round_dealings)
        .await
        .map_err(|e| failed("receiving the dealings", &e))?
        .into_vec_including_me(dealing);
    let shares = rounds
        .complete(round_shares)
        .await
        .map_err(|e| failed("receiving the shares", &e))?
        .into_vec_including_me(my_value);

    // Check every dealing (our own too, which cannot fail) against what we received.
    let my_point = &points[usize::from(i)];
    let complaints: Vec<Complaint> = dealings
        .iter()
        .zip(&shares)
        .enumerate()
        .filter_map(|(d, (dealing, value))| {
            let dealer = u16::try_from(d).ok()?;
            check_dealing(eid, dealer, t, dealing, my_point, value)
                .err()
                .map(|fault| Complaint {
                    dealer: PartyIndex::new(dealer),
                    fault,
                })
        })
        .collect();

    let outcome = match complaints.first() {
        None => new_share(eid, share, &points, &dealings, &shares),
        Some(first) => Err(ProtocolError::RefreshDealer {
            dealer: first.dealer,
            fault: first.fault,
        }),
    };
    drop(shares);
    let verdict = match &outcome {
        Ok((_, digest)) => Verdict::Agree(*digest),
        Err(_) => Verdict::Refuse(complaints.clone()),
    };
    // Every party sends a verdict even after finding a fault, so no one waits for it in vain.
    outgoing
        .send(Outgoing::broadcast(Msg::Verdict(verdict.clone())))
        .await
        .map_err(|e| failed("sending the verdict", &e))?;
    let verdicts = rounds
        .complete(round_verdicts)
        .await
        .map_err(|e| failed("receiving the verdicts", &e))?;

    // Our own finding first: it is the one this party can vouch for.
    let (new, digest) = outcome?;
    let mut disagreeing = Vec::new();
    for (from, _, theirs) in verdicts.into_iter_indexed() {
        let from = PartyIndex::new(from);
        match theirs {
            Verdict::Agree(d) if d == digest => {}
            Verdict::Refuse(complaints) => match complaints.first() {
                Some(c) => {
                    return Err(ProtocolError::RefreshComplaint {
                        complainer: from,
                        dealer: c.dealer,
                        fault: c.fault,
                    })
                }
                None => disagreeing.push(from),
            },
            Verdict::Agree(_) => disagreeing.push(from),
        }
    }
    if !disagreeing.is_empty() {
        return Err(ProtocolError::RefreshDisagreement {
            parties: disagreeing,
        });
    }
    Ok(new)
}

/// Commitments to `0, a_1..a_{t-1}` and proofs of knowledge of `a_1..a_{t-1}`.
fn deal<E: Curve, R: RngCore + CryptoRng>(
    eid: &ExecutionId,
    dealer: u16,
    coefficients: &[SecretScalar<E>],
    rng: &mut R,
) -> Dealing<E> {
    let mut commitments = vec![Point::zero()];
    let mut proofs = Vec::with_capacity(coefficients.len());
    for (k, a) in (1u16..).zip(coefficients) {
        let c = Point::generator() * a;
        let nonce = SecretScalar::<E>::random(rng);
        let r = Point::generator() * &nonce;
        let e = challenge(eid, dealer, k, &c, &r);
        proofs.push(KnowledgeProof {
            r,
            z: nonce.as_ref() + e * a.as_ref(),
        });
        commitments.push(c);
    }
    Dealing {
        commitments,
        proofs,
    }
}

/// Fiat–Shamir challenge, bound to the execution, the dealer and the coefficient's position,
/// so a proof cannot be replayed into another run or by another dealer.
fn challenge<E: Curve>(
    eid: &ExecutionId,
    dealer: u16,
    k: u16,
    c: &Point<E>,
    r: &Point<E>,
) -> Scalar<E> {
    let digest = Sha256::new()
        .chain_update(b"mpc-wallet/refresh/proof-of-knowledge/v1")
        .chain_update(eid.as_bytes())
        .chain_update(dealer.to_be_bytes())
        .chain_update(k.to_be_bytes())
        .chain_update(c.to_bytes(true))
        .chain_update(r.to_bytes(true))
        .finalize();
    Scalar::from_be_bytes_mod_order(digest)
}

/// `g(x) = Σ_k a_k·x^k` with `a_0 = 0` (Horner).
fn evaluate<E: Curve>(coefficients: &[SecretScalar<E>], x: &Scalar<E>) -> SecretScalar<E> {
    let mut acc = Scalar::<E>::zero();
    for a in coefficients.iter().rev() {
        acc = (acc + a.as_ref()) * x;
    }
    SecretScalar::new(&mut acc)
}

/// `Σ_k x^k·C_k`: the public value of a committed polynomial at `x`.
fn evaluate_public<E: Curve>(commitments: &[Point<E>], x: &Scalar<E>) -> Point<E> {
    commitments
        .iter()
        .rev()
        .fold(Point::zero(), |acc, c| acc * x + c)
}

fn check_dealing<E: Curve>(
    eid: &ExecutionId,
    dealer: u16,
    t: u16,
    dealing: &Dealing<E>,
    my_point: &Scalar<E>,
    value: &DealtShare<E>,
) -> Result<(), DealerFault> {
    let Dealing {
        commitments,
        proofs,
    } = dealing;
    if commitments.len() != usize::from(t) || proofs.len() + 1 != usize::from(t) {
        return Err(DealerFault::Malformed);
    }
    if !commitments[0].is_zero() {
        return Err(DealerFault::NonZeroConstantTerm);
    }
    for ((k, c), proof) in (1u16..).zip(&commitments[1..]).zip(proofs) {
        let e = challenge(eid, dealer, k, c, &proof.r);
        if Point::generator() * proof.z != proof.r + c * e {
            return Err(DealerFault::BadProof);
        }
    }
    if Point::generator() * &value.0 != evaluate_public(commitments, my_point) {
        return Err(DealerFault::BadShare);
    }
    Ok(())
}

/// The new share and the digest of the new key info, from dealings that all checked.
fn new_share<E: Curve>(
    eid: &ExecutionId,
    old: &DirtyCoreKeyShare<E>,
    points: &[Scalar<E>],
    dealings: &[Dealing<E>],
    shares: &[DealtShare<E>],
) -> Result<(CoreKeyShare<E>, [u8; 32]), ProtocolError> {
    let invalid = |what: &str| ProtocolError::InvalidKeyMaterial(format!("refreshed {what}"));
    // The sum of the dealt polynomials, committed coefficient by coefficient (every dealing
    // was checked to hold exactly `t` commitments).
    let t = dealings.first().map_or(0, |d| d.commitments.len());
    let summed: Vec<Point<E>> = (0..t)
        .map(|k| dealings.iter().map(|d| d.commitments[k]).sum())
        .collect();
    let public_shares = old
        .public_shares
        .iter()
        .zip(points)
        .map(|(x, point)| NonZero::from_point(**x + evaluate_public(&summed, point)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| invalid("public share is zero"))?;
    let old_x: &SecretScalar<E> = old.x.as_ref();
    let mut x = shares
        .iter()
        .fold(*old_x.as_ref(), |acc, s| acc + s.0.as_ref());
    let x = NonZero::from_secret_scalar(SecretScalar::new(&mut x))
        .ok_or_else(|| invalid("secret share is zero"))?;
    let key_info = DirtyKeyInfo {
        public_shares,
        ..old.key_info.clone()
    };
    let digest = key_info_digest(eid, &key_info, dealings);
    let new = DirtyCoreKeyShare {
        i: old.i,
        key_info,
        x,
    }
    .validate()
    .map_err(|e| ProtocolError::InvalidKeyMaterial(ProtocolError::chain(&e.into_error())))?;
    Ok((new, digest))
}

/// What every party must agree on: the new key info (group key, chain code, threshold,
/// evaluation points, new public shares) and every dealer's commitments, in this execution.
fn key_info_digest<E: Curve>(
    eid: &ExecutionId,
    info: &DirtyKeyInfo<E>,
    dealings: &[Dealing<E>],
) -> [u8; 32] {
    let mut h = Sha256::new()
        .chain_update(b"mpc-wallet/refresh/key-info/v1")
        .chain_update(eid.as_bytes())
        .chain_update(info.shared_public_key.to_bytes(true));
    match &info.chain_code {
        Some(code) => h.update([&[1u8][..], &code[..]].concat()),
        None => h.update([0u8]),
    }
    if let Some(vss) = &info.vss_setup {
        h.update(vss.min_signers.to_be_bytes());
        for p in &vss.I {
            h.update(p.as_ref().to_be_bytes());
        }
    }
    for x in &info.public_shares {
        h.update(x.to_bytes(true));
    }
    for c in dealings.iter().flat_map(|d| &d.commitments) {
        h.update(c.to_bytes(true));
    }
    h.finalize().into()
}

/// Refreshes a FROST key share: same key, new share.
pub async fn refresh_schnorr<M, R>(
    eid: &ExecutionId,
    share: &SchnorrKeyShare,
    party: M,
    rng: &mut R,
) -> Result<SchnorrKeyShare, ProtocolError>
where
    M: Mpc<ProtocolMessage = RefreshMsg>,
    R: RngCore + CryptoRng,
{
    refresh_core(eid, &share.0, party, rng)
        .await
        .map(SchnorrKeyShare)
}

/// Refreshes an ECDSA key share and joins the new core share with `new_aux`: aux info from a
/// fresh run (new Paillier keys), since a leaked share often leaks the node's Paillier secret
/// with it. Aux info equal to the share's current one is refused before anything runs.
pub async fn refresh_ecdsa<M, R>(
    eid: &ExecutionId,
    share: &EcdsaKeyShare,
    new_aux: AuxInfo,
    party: M,
    rng: &mut R,
) -> Result<EcdsaKeyShare, ProtocolError>
where
    M: Mpc<ProtocolMessage = RefreshMsg>,
    R: RngCore + CryptoRng,
{
    if new_aux.public_digest()? == share.aux_public_digest()? {
        return Err(ProtocolError::InvalidParameters(
            "refresh needs new aux info, not the share's current one".into(),
        ));
    }
    let core = refresh_core(eid, &share.0.core, party, rng).await?;
    EcdsaKeyShare::from_parts(IncompleteEcdsaShare(core), new_aux)
}

#[cfg(test)]
mod tests {
    use super::*;
    use generic_ec::curves::Secp256k1;
    use rand_core::OsRng;

    #[test]
    fn shares_lie_on_the_committed_zero_polynomial() {
        let eid = ExecutionId::derive(
            crate::ProtocolKind::KeyRefresh,
            "w",
            uuid::Uuid::nil(),
            &[],
            &[],
        );
        let coefficients: Vec<SecretScalar<Secp256k1>> =
            (0..3).map(|_| SecretScalar::random(&mut OsRng)).collect();
        let dealing = deal(&eid, 2, &coefficients, &mut OsRng);
        let x = Scalar::from(7u64);
        let value = DealtShare(evaluate(&coefficients, &x));
        assert!(evaluate(&coefficients, &Scalar::zero()).as_ref().is_zero());
        assert_eq!(check_dealing(&eid, 2, 4, &dealing, &x, &value), Ok(()));
        // The proofs are bound to the dealer and to the execution.
        assert_eq!(
            check_dealing(&eid, 1, 4, &dealing, &x, &value),
            Err(DealerFault::BadProof)
        );
        let other = ExecutionId::derive(
            crate::ProtocolKind::KeyRefresh,
            "v",
            uuid::Uuid::nil(),
            &[],
            &[],
        );
        assert_eq!(
            check_dealing(&other, 2, 4, &dealing, &x, &value),
            Err(DealerFault::BadProof)
        );
        assert_eq!(
            check_dealing(&eid, 2, 3, &dealing, &x, &value),
            Err(DealerFault::Malformed)
        );
        let elsewhere = DealtShare(evaluate(&coefficients, &Scalar::from(8u64)));
        assert_eq!(
            check_dealing(&eid, 2, 4, &dealing, &x, &elsewhere),
            Err(DealerFault::BadShare)
        );
    }
}
