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
use generic_ec::{Curve, NonZero, Scalar, SecretScalar};
use rand_core::{CryptoRng, RngCore};
use round_based::{
    rounds_router::{simple_store::RoundInput, RoundsRouter},
    Delivery, Mpc, MpcParty, Outgoing, SinkExt,
};
use serde::{Deserialize, Serialize};

pub use crate::dealing::{Complaint, DealerFault, Dealing, DealtShare, KnowledgeProof, Verdict};
use crate::{
    dealing::{self, Purpose},
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

    // Deal: a_0 = 0, a_1..a_{t-1} random. The coefficients are zeroized when dropped.
    let coefficients: Vec<SecretScalar<E>> = std::iter::once(SecretScalar::zero())
        .chain((1..t).map(|_| SecretScalar::random(rng)))
        .collect();
    let dealing = dealing::deal(Purpose::Refresh, eid, i, &coefficients, rng);
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
        let value = dealing::evaluate(&coefficients, point);
        outgoing
            .send(Outgoing::p2p(to, Msg::Share(value)))
            .await
            .map_err(|e| failed("sending a share", &e))?;
    }
    let my_value = dealing::evaluate(&coefficients, &points[usize::from(i)]);
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
            let zero = generic_ec::Point::zero();
            let share = Some((my_point, Some(value)));
            dealing::check_dealing(Purpose::Refresh, eid, dealer, t, dealing, &zero, share)
                .err()
                .map(|fault| Complaint {
                    dealer: PartyIndex::new(dealer),
                    fault,
                })
        })
        .collect();

    let outcome = match dealing::first_fault(&complaints) {
        None => new_share(eid, share, &points, &dealings, &shares),
        Some(fault) => Err(fault),
    };
    drop(shares);
    let received = rounds.complete(round_verdicts);
    let (new, _) = dealing::verdict_round(
        outcome,
        &complaints,
        &mut outgoing,
        Msg::Verdict,
        received,
        failed,
    )
    .await?;
    Ok(new)
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
    let t = dealings.first().map_or(0, |d| d.commitments.len());
    let summed = dealing::sum_commitments(t, dealings.iter());
    let public_shares = old
        .public_shares
        .iter()
        .zip(points)
        .map(|(x, point)| NonZero::from_point(**x + dealing::evaluate_public(&summed, point)))
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
    let digest = dealing::key_info_digest(Purpose::Refresh, eid, &key_info, dealings.iter());
    let new = DirtyCoreKeyShare {
        i: old.i,
        key_info,
        x,
    }
    .validate()
    .map_err(|e| ProtocolError::InvalidKeyMaterial(ProtocolError::chain(&e.into_error())))?;
    Ok((new, digest))
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
