//! Feldman dealings, the parts that key refresh ([`crate::refresh`]) and resharing
//! ([`crate::reshare`]) share: a dealer commits to a polynomial coefficient by coefficient,
//! proves knowledge of every coefficient after the constant term, and sends each receiver the
//! polynomial's value at the receiver's evaluation point; the receiver checks that value
//! against the commitments. After the checks, every party states a [`Verdict`]: the digest of
//! the new key info it computed, or complaints naming the dealers whose dealing did not check.
//!
//! The two protocols differ only in the constant term the commitments must open to (zero for a
//! refresh, `λ_i·X_i` for a resharing), in who deals and who receives, and in the domain tags
//! of their hashes ([`Purpose`]), so a proof or a digest of one never passes in the other.

use cggmp24::key_share::DirtyKeyInfo;
use generic_ec::{Curve, Point, Scalar, SecretScalar};
use std::future::Future;

use rand_core::{CryptoRng, RngCore};
use round_based::{rounds_router::simple_store::RoundMsgs, Outgoing, Sink, SinkExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{execution::ExecutionId, PartyIndex, ProtocolError};

/// Which protocol a dealing belongs to: the domain tag of its hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Refresh,
    Reshare,
}

impl Purpose {
    fn proof_tag(self) -> &'static [u8] {
        match self {
            Purpose::Refresh => b"mpc-wallet/refresh/proof-of-knowledge/v1",
            Purpose::Reshare => b"mpc-wallet/reshare/proof-of-knowledge/v1",
        }
    }

    fn digest_tag(self) -> &'static [u8] {
        match self {
            Purpose::Refresh => b"mpc-wallet/refresh/key-info/v1",
            Purpose::Reshare => b"mpc-wallet/reshare/key-info/v1",
        }
    }
}

/// A dealer's public commitments to its polynomial.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Dealing<E: Curve> {
    /// `C_k = a_k·G` for `k = 0..t`, `t` the threshold the dealt shares are for.
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
    #[error("its dealing is missing or has the wrong number of commitments or proofs")]
    Malformed,
    #[error(
        "its polynomial's constant term is not the one required (zero in a refresh, λ_i·X_i in \
         a resharing): it would change the group key"
    )]
    WrongConstantTerm,
    #[error("a proof of knowledge of a coefficient does not verify")]
    BadProof,
    #[error("the share it sent does not match its commitments")]
    BadShare,
    #[error("it sent no share to a party that must receive one")]
    MissingShare,
}

/// Commitments to `a_0..a_{t-1}` and proofs of knowledge of `a_1..a_{t-1}`.
pub(crate) fn deal<E: Curve, R: RngCore + CryptoRng>(
    purpose: Purpose,
    eid: &ExecutionId,
    dealer: u16,
    coefficients: &[SecretScalar<E>],
    rng: &mut R,
) -> Dealing<E> {
    let mut commitments = Vec::with_capacity(coefficients.len());
    let mut proofs = Vec::with_capacity(coefficients.len().saturating_sub(1));
    for (k, a) in (0u16..).zip(coefficients) {
        let c = Point::generator() * a;
        if k > 0 {
            let nonce = SecretScalar::<E>::random(rng);
            let r = Point::generator() * &nonce;
            let e = challenge(purpose, eid, dealer, k, &c, &r);
            proofs.push(KnowledgeProof {
                r,
                z: nonce.as_ref() + e * a.as_ref(),
            });
        }
        commitments.push(c);
    }
    Dealing {
        commitments,
        proofs,
    }
}

/// Fiat–Shamir challenge, bound to the protocol, the execution, the dealer and the
/// coefficient's position, so a proof cannot be replayed into another run or by another dealer.
fn challenge<E: Curve>(
    purpose: Purpose,
    eid: &ExecutionId,
    dealer: u16,
    k: u16,
    c: &Point<E>,
    r: &Point<E>,
) -> Scalar<E> {
    let digest = Sha256::new()
        .chain_update(purpose.proof_tag())
        .chain_update(eid.as_bytes())
        .chain_update(dealer.to_be_bytes())
        .chain_update(k.to_be_bytes())
        .chain_update(c.to_bytes(true))
        .chain_update(r.to_bytes(true))
        .finalize();
    Scalar::from_be_bytes_mod_order(digest)
}

/// `g(x) = Σ_k a_k·x^k` (Horner).
pub(crate) fn evaluate<E: Curve>(coefficients: &[SecretScalar<E>], x: &Scalar<E>) -> DealtShare<E> {
    let mut acc = coefficients
        .iter()
        .rev()
        .fold(Scalar::<E>::zero(), |acc, a| acc * x + a.as_ref());
    DealtShare(SecretScalar::new(&mut acc))
}

/// `Σ_k x^k·C_k`: the public value of a committed polynomial at `x`.
pub(crate) fn evaluate_public<E: Curve>(commitments: &[Point<E>], x: &Scalar<E>) -> Point<E> {
    commitments
        .iter()
        .rev()
        .fold(Point::zero(), |acc, c| acc * x + c)
}

/// The sum of the dealt polynomials, committed coefficient by coefficient. Every dealing must
/// have been checked to hold exactly `t` commitments.
pub(crate) fn sum_commitments<'a, E: Curve>(
    t: usize,
    dealings: impl Iterator<Item = &'a Dealing<E>> + Clone,
) -> Vec<Point<E>> {
    (0..t)
        .map(|k| dealings.clone().map(|d| d.commitments[k]).sum())
        .collect()
}

/// Checks `dealer`'s dealing for a degree `t−1` polynomial with constant term committed as
/// `constant`, and, if this party receives a share from it, that share at `my_point`.
pub(crate) fn check_dealing<E: Curve>(
    purpose: Purpose,
    eid: &ExecutionId,
    dealer: u16,
    t: u16,
    dealing: &Dealing<E>,
    constant: &Point<E>,
    share: Option<(&Scalar<E>, Option<&DealtShare<E>>)>,
) -> Result<(), DealerFault> {
    let Dealing {
        commitments,
        proofs,
    } = dealing;
    if commitments.len() != usize::from(t) || proofs.len() + 1 != usize::from(t) {
        return Err(DealerFault::Malformed);
    }
    if commitments[0] != *constant {
        return Err(DealerFault::WrongConstantTerm);
    }
    for ((k, c), proof) in (1u16..).zip(&commitments[1..]).zip(proofs) {
        let e = challenge(purpose, eid, dealer, k, c, &proof.r);
        if Point::generator() * proof.z != proof.r + c * e {
            return Err(DealerFault::BadProof);
        }
    }
    match share {
        None => Ok(()),
        Some((_, None)) => Err(DealerFault::MissingShare),
        Some((point, Some(value)))
            if Point::generator() * &value.0 != evaluate_public(commitments, point) =>
        {
            Err(DealerFault::BadShare)
        }
        Some(_) => Ok(()),
    }
}

/// What every party must agree on: the new key info (group key, chain code, threshold,
/// evaluation points, new public shares) and every dealer's commitments, in this execution.
pub(crate) fn key_info_digest<'a, E: Curve>(
    purpose: Purpose,
    eid: &ExecutionId,
    info: &DirtyKeyInfo<E>,
    dealings: impl Iterator<Item = &'a Dealing<E>>,
) -> [u8; 32] {
    let mut h = Sha256::new()
        .chain_update(purpose.digest_tag())
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
    for c in dealings.flat_map(|d| &d.commitments) {
        h.update(c.to_bytes(true));
    }
    h.finalize().into()
}

/// The judgement of the verdict round, given this party's own digest: every other party must
/// have agreed on it. A complaint is reported first (it names a dealer), then the parties
/// that confirmed another digest or refused without a complaint.
fn judge(
    digest: &[u8; 32],
    verdicts: impl IntoIterator<Item = (u16, Verdict)>,
) -> Result<(), ProtocolError> {
    let mut disagreeing = Vec::new();
    for (from, theirs) in verdicts {
        let from = PartyIndex::new(from);
        match theirs {
            Verdict::Agree(d) if d == *digest => {}
            Verdict::Refuse(complaints) => match complaints.first() {
                Some(c) => {
                    return Err(ProtocolError::DealerAccused {
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
    if disagreeing.is_empty() {
        Ok(())
    } else {
        Err(ProtocolError::NotConfirmed {
            parties: disagreeing,
        })
    }
}

/// The verdict round: sends this party's verdict on its `outcome` (its digest, or its
/// complaints; sent even after a fault, so no one waits for it in vain), waits for everyone
/// else's (`received`), and succeeds only if this party found no fault and every other party
/// confirmed its digest.
pub(crate) async fn verdict_round<T, M, O, F, Err>(
    outcome: Result<(T, [u8; 32]), ProtocolError>,
    complaints: &[Complaint],
    outgoing: &mut O,
    message: fn(Verdict) -> M,
    received: F,
    failed: impl Fn(&str, &dyn std::error::Error) -> ProtocolError,
) -> Result<(T, [u8; 32]), ProtocolError>
where
    O: Sink<Outgoing<M>> + Unpin,
    O::Error: std::error::Error,
    F: Future<Output = Result<RoundMsgs<Verdict>, Err>>,
    Err: std::error::Error,
{
    let verdict = match &outcome {
        Ok((_, digest)) => Verdict::Agree(*digest),
        Err(_) => Verdict::Refuse(complaints.to_vec()),
    };
    outgoing
        .send(Outgoing::broadcast(message(verdict)))
        .await
        .map_err(|e| failed("sending the verdict", &e))?;
    let verdicts = received
        .await
        .map_err(|e| failed("receiving the verdicts", &e))?;
    // Our own finding first: it is the one this party can vouch for.
    let (value, digest) = outcome?;
    judge(
        &digest,
        verdicts.into_iter_indexed().map(|(from, _, v)| (from, v)),
    )?;
    Ok((value, digest))
}

/// The error for this party's own first complaint.
pub(crate) fn first_fault(complaints: &[Complaint]) -> Option<ProtocolError> {
    complaints.first().map(|c| ProtocolError::DealerCheated {
        dealer: c.dealer,
        fault: c.fault,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use generic_ec::curves::Secp256k1;
    use rand_core::OsRng;

    fn eid(wallet: &str) -> ExecutionId {
        ExecutionId::derive(
            crate::ProtocolKind::KeyRefresh,
            wallet,
            uuid::Uuid::nil(),
            &[],
            &[],
        )
    }

    #[test]
    fn shares_lie_on_the_committed_polynomial() {
        let eid = eid("w");
        let coefficients: Vec<SecretScalar<Secp256k1>> =
            (0..4).map(|_| SecretScalar::random(&mut OsRng)).collect();
        let constant = Point::generator() * &coefficients[0];
        let dealing = deal(Purpose::Reshare, &eid, 2, &coefficients, &mut OsRng);
        let x = Scalar::from(7u64);
        let value = evaluate(&coefficients, &x);
        let check = |purpose, eid: &ExecutionId, dealer, t, value: Option<&DealtShare<_>>| {
            check_dealing(
                purpose,
                eid,
                dealer,
                t,
                &dealing,
                &constant,
                Some((&x, value)),
            )
        };
        assert_eq!(
            evaluate(&coefficients, &Scalar::zero()).0.as_ref(),
            coefficients[0].as_ref()
        );
        assert_eq!(check(Purpose::Reshare, &eid, 2, 4, Some(&value)), Ok(()));
        // The proofs are bound to the protocol, the dealer and the execution.
        for (purpose, eid, dealer) in [
            (Purpose::Refresh, eid, 2),
            (Purpose::Reshare, eid, 1),
            (Purpose::Reshare, super::tests::eid("v"), 2),
        ] {
            assert_eq!(
                check(purpose, &eid, dealer, 4, Some(&value)),
                Err(DealerFault::BadProof)
            );
        }
        assert_eq!(
            check(Purpose::Reshare, &eid, 2, 3, Some(&value)),
            Err(DealerFault::Malformed)
        );
        let elsewhere = evaluate(&coefficients, &Scalar::from(8u64));
        assert_eq!(
            check(Purpose::Reshare, &eid, 2, 4, Some(&elsewhere)),
            Err(DealerFault::BadShare)
        );
        assert_eq!(
            check(Purpose::Reshare, &eid, 2, 4, None),
            Err(DealerFault::MissingShare)
        );
        assert_eq!(
            check_dealing(Purpose::Reshare, &eid, 2, 4, &dealing, &Point::zero(), None),
            Err(DealerFault::WrongConstantTerm)
        );
    }
}
