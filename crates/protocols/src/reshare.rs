//! Resharing: new shares of the same key for another committee or threshold, from `t`-of-`S`
//! to `t′`-of-`S′` (verifiable secret redistribution: Desmedt and Jajodia 1997; Wong, Wang and
//! Wing 2002). Neither cggmp24 nor givre has it; like [`crate::refresh`], it works on the
//! `key-share` core share both schemes keep, so one protocol serves both
//! ([`reshare_schnorr`], [`reshare_ecdsa`]). The same run replaces a node, adds or removes
//! nodes, changes the threshold, and repairs a lost share (`S′ = S`, the party that lost its
//! share only receives).
//!
//! Who does what is a [`Plan`], agreed before the run: exactly `t` old parties deal (set `D`),
//! every party of `S′` receives. A run's parties are numbered by the plan (run indices), and
//! the errors name them so.
//!
//! Dealer `i ∈ D` (old index) deals a random polynomial `g_i` of degree `t′−1` with
//! `g_i(0) = λ_i·x_i`, `λ_i` its Lagrange coefficient at 0 in `D`, so `Σ_i g_i(0) = x`:
//! * round 1, broadcast: Feldman commitments `C_{i,k}`, `k = 0..t′`, and proofs of knowledge of
//!   `a_{i,k}`, `k ≥ 1` ([`crate::dealing`], as in a refresh); parties that do not deal send
//!   none;
//! * round 1, point-to-point: `g_i(J_j)` to each receiver `j` (new evaluation point
//!   `J_j = j + 1`), and nothing to the others;
//! * round 2, broadcast: a [`Verdict`].
//!
//! Every party checks every dealing: `C_{i,0} = λ_i·X_i` against the old public shares (a
//! dealer can deal nothing but its own share), the proofs, and, as a receiver, its share
//! against the commitments; then `Σ_i C_{i,0} = Y`, the group key. Receiver `j`'s new share is
//! `x′_j = Σ_i g_i(J_j)`; the new public shares `X′_j = Σ_i Σ_k J_j^k·C_{i,k}` are computed by
//! every party from the broadcasts. The new key info keeps the group key and the chain code,
//! with threshold `t′`, `n′ = |S′|` and the new evaluation points. A party succeeds only if it
//! found no fault and every other party confirmed the same digest; a receiver then returns
//! its new share, a party that only deals the digest (for the node's two-phase switch).
//!
//! No party ever holds `x`: a dealer's message to receiver `j` is one value of a random
//! polynomial of degree `t′−1`, and the commitments hide the coefficients (discrete log), so
//! fewer than `t′` receivers together learn nothing of `λ_i·x_i`, and no party learns another
//! party's old share. Repair therefore hands the party that lost its share a new share
//! without anyone reconstructing the key; all other parties' shares change with it.

use cggmp24::key_share::{
    DirtyIncompleteKeyShare as DirtyCoreKeyShare, DirtyKeyInfo, IncompleteKeyShare as CoreKeyShare,
    Validate, VssSetup,
};
use generic_ec::{Curve, NonZero, Point, Scalar, SecretScalar};
use rand_core::{CryptoRng, RngCore};
use round_based::{
    rounds_router::{simple_store::RoundInput, RoundsRouter},
    Delivery, Mpc, MpcParty, Outgoing, SinkExt,
};
use serde::{Deserialize, Serialize};

pub use crate::dealing::{Complaint, DealerFault, Dealing, DealtShare, Verdict};
use crate::{
    dealing::{self, Purpose},
    ecdsa::{check_parameters, AuxInfo, EcdsaKeyShare, IncompleteEcdsaShare},
    execution::ExecutionId,
    schnorr::SchnorrKeyShare,
    PartyIndex, ProtocolError,
};

/// The resharing message for secp256k1, as both schemes use it.
pub type ReshareMsg = Msg<generic_ec::curves::Secp256k1>;

/// Messages of the resharing protocol.
#[derive(Clone, Serialize, Deserialize, round_based::ProtocolMessage)]
#[serde(bound = "")]
pub enum Msg<E: Curve> {
    /// A dealer's commitments; `None` from a party that does not deal.
    Dealing(Option<Dealing<E>>),
    /// A dealer's share for a receiver; `None` where the sender does not deal or the recipient
    /// does not receive.
    Share(Option<DealtShare<E>>),
    Verdict(Verdict),
}

/// A party's part in a resharing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Its index in the old key, if it is one of the `t` dealers.
    pub dealer: Option<PartyIndex>,
    /// Its index in the new key, if it receives a share.
    pub receiver: Option<PartyIndex>,
}

/// Who deals and who receives, by run index; every participant must hold the same plan (bind
/// it into the execution id with [`Plan::to_bytes`]). Only made by [`Plan::new`], which checks
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    roles: Vec<Role>,
    new_threshold: u16,
}

impl Plan {
    /// Checks that every party deals or receives, that no old index deals twice, that the
    /// receivers are exactly new indices `0..n′`, and `2 <= t′ <= n′`. Whether the dealers
    /// are exactly `t` of the old key is checked against the old key info when the run starts.
    pub fn new(roles: Vec<Role>, new_threshold: u16) -> Result<Self, ProtocolError> {
        let invalid = |what: String| Err(ProtocolError::InvalidParameters(what));
        if u16::try_from(roles.len()).is_err() {
            return invalid("too many parties".into());
        }
        let mut dealers: Vec<PartyIndex> = roles.iter().filter_map(|r| r.dealer).collect();
        let mut receivers: Vec<PartyIndex> = roles.iter().filter_map(|r| r.receiver).collect();
        if roles
            .iter()
            .any(|r| r.dealer.is_none() && r.receiver.is_none())
        {
            return invalid("a party of a resharing that neither deals nor receives".into());
        }
        dealers.sort();
        if dealers.windows(2).any(|w| w[0] == w[1]) {
            return invalid(format!("an old party deals twice: {dealers:?}"));
        }
        receivers.sort();
        let n_new = u16::try_from(receivers.len())
            .map_err(|_| ProtocolError::InvalidParameters("too many receivers".into()))?;
        if receivers != PartyIndex::all(n_new) {
            return invalid(format!(
                "the receivers must be the new indices 0..{n_new}, not {receivers:?}"
            ));
        }
        check_parameters(PartyIndex::new(0), n_new, new_threshold)?;
        Ok(Self {
            roles,
            new_threshold,
        })
    }

    /// The plan from committees named by the caller's ids (node ids): the old committee in old
    /// index order, the `t` dealers among it, the new committee in new index order. The run's
    /// parties are the new committee, in order, then the dealers that leave; returned beside
    /// the plan.
    pub fn for_committees<K: PartialEq + Clone>(
        old: &[K],
        dealers: &[K],
        new: &[K],
        new_threshold: u16,
    ) -> Result<(Self, Vec<K>), ProtocolError> {
        let old_index = |k: &K| -> Result<PartyIndex, ProtocolError> {
            let i = old.iter().position(|o| o == k).ok_or_else(|| {
                ProtocolError::InvalidParameters("a dealer outside the old committee".into())
            })?;
            Ok(PartyIndex::new(u16::try_from(i).map_err(|_| {
                ProtocolError::InvalidParameters("too many parties".into())
            })?))
        };
        let leaving = dealers.iter().filter(|d| !new.contains(d));
        let run: Vec<K> = new.iter().chain(leaving).cloned().collect();
        let roles = run
            .iter()
            .enumerate()
            .map(|(r, k)| {
                let dealer = if dealers.contains(k) {
                    Some(old_index(k)?)
                } else {
                    None
                };
                let receiver = (r < new.len()).then(|| PartyIndex::new(r as u16));
                Ok(Role { dealer, receiver })
            })
            .collect::<Result<Vec<_>, ProtocolError>>()?;
        Ok((Self::new(roles, new_threshold)?, run))
    }

    /// Every party's role, in run order.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn new_threshold(&self) -> u16 {
        self.new_threshold
    }

    /// `n′`, the number of receivers.
    pub fn new_n(&self) -> u16 {
        self.roles.iter().filter(|r| r.receiver.is_some()).count() as u16
    }

    /// A fixed encoding of the plan, for the execution id's parameters.
    pub fn to_bytes(&self) -> Vec<u8> {
        let index = |p: Option<PartyIndex>| p.map_or(u16::MAX, PartyIndex::get).to_be_bytes();
        let mut out = self.new_threshold.to_be_bytes().to_vec();
        for r in &self.roles {
            out.extend(index(r.dealer));
            out.extend(index(r.receiver));
        }
        out
    }

    /// `(run index, old index)` of every dealer, in run order.
    fn dealers(&self) -> Vec<(u16, PartyIndex)> {
        (0u16..)
            .zip(&self.roles)
            .filter_map(|(r, role)| role.dealer.map(|i| (r, i)))
            .collect()
    }
}

/// The public side of a key: group key, chain code, threshold, evaluation points and public
/// shares. A party that holds no share of the key (a new node, or one that lost its share)
/// takes part in a resharing with it.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyInfo(pub(crate) DirtyKeyInfo<generic_ec::curves::Secp256k1>);

impl std::fmt::Debug for KeyInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyInfo(pk {}, {} public shares)",
            crate::signature::public_key_of(&self.0.shared_public_key),
            self.0.public_shares.len()
        )
    }
}

impl KeyInfo {
    /// The group key.
    pub fn public_key(&self) -> crate::signature::PublicKey {
        crate::signature::public_key_of(&self.0.shared_public_key)
    }

    /// The BIP-32 chain code, if the key has one.
    pub fn chain_code(&self) -> Option<[u8; 32]> {
        self.0.chain_code
    }

    /// `t`: how many parties sign (and deal in a resharing); `None` for a key without VSS.
    pub fn threshold(&self) -> Option<u16> {
        self.0.vss_setup.as_ref().map(|v| v.min_signers)
    }

    /// `n`: how many parties hold a share.
    pub fn n(&self) -> usize {
        self.0.public_shares.len()
    }
}

/// Equal when every public part is: the group key, the chain code, the public shares, the
/// threshold and the evaluation points (what a party compares with its own key's before it
/// takes part in a resharing).
impl PartialEq for KeyInfo {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        let vss = |k: &DirtyKeyInfo<generic_ec::curves::Secp256k1>| {
            k.vss_setup.as_ref().map(|v| {
                (
                    v.min_signers,
                    v.I.iter().map(|p| *p.as_ref()).collect::<Vec<_>>(),
                )
            })
        };
        a.shared_public_key == b.shared_public_key
            && a.chain_code == b.chain_code
            && a.public_shares == b.public_shares
            && vss(a) == vss(b)
    }
}

impl Eq for KeyInfo {}

/// What a resharing gave one party: a receiver's new share, and the digest of the new key info
/// that every party confirmed.
#[derive(Debug)]
pub struct Reshared<S> {
    /// `None` for a party that only dealt.
    pub share: Option<S>,
    pub digest: [u8; 32],
}

/// Runs the resharing for the party at run index `me` of `plan`. `old_info` is the old key's
/// public side; `old_share` the party's old share, needed if it deals (else unused).
pub async fn reshare_core<E, M, R>(
    eid: &ExecutionId,
    plan: &Plan,
    me: u16,
    old_info: &DirtyKeyInfo<E>,
    old_share: Option<&DirtyCoreKeyShare<E>>,
    party: M,
    rng: &mut R,
) -> Result<Reshared<CoreKeyShare<E>>, ProtocolError>
where
    E: Curve,
    M: Mpc<ProtocolMessage = Msg<E>>,
    R: RngCore + CryptoRng,
{
    let invalid = |what: String| ProtocolError::InvalidParameters(what);
    let m = plan.roles.len() as u16;
    let role = *plan
        .roles
        .get(usize::from(me))
        .ok_or_else(|| invalid(format!("run index {me} out of range for {m} parties")))?;
    let old_vss = old_info.vss_setup.as_ref().ok_or_else(|| {
        ProtocolError::InvalidKeyMaterial("resharing needs a threshold (VSS) key".into())
    })?;
    if old_vss.I.len() != old_info.public_shares.len() {
        return Err(ProtocolError::InvalidKeyMaterial(
            "evaluation points do not match the parties".into(),
        ));
    }
    let dealers = plan.dealers();
    if dealers.len() != usize::from(old_vss.min_signers) {
        return Err(invalid(format!(
            "a resharing of a {}-of-{} key needs exactly {} dealers, not {}",
            old_vss.min_signers,
            old_vss.I.len(),
            old_vss.min_signers,
            dealers.len()
        )));
    }
    // What each dealer's constant term must commit to: λ_i·X_i.
    let old_points = dealers
        .iter()
        .map(|(_, i)| old_vss.I.get(i.as_usize()).map(|p| *p.as_ref()))
        .collect::<Option<Vec<Scalar<E>>>>()
        .ok_or_else(|| invalid("a dealer outside the old key".into()))?;
    let lambdas = lagrange_at_zero(&old_points).ok_or_else(|| {
        ProtocolError::InvalidKeyMaterial("old evaluation points are not distinct".into())
    })?;
    let constants: Vec<Point<E>> = dealers
        .iter()
        .zip(&lambdas)
        .map(|((_, i), l)| *old_info.public_shares[i.as_usize()] * l)
        .collect();
    let t_new = plan.new_threshold;
    let new_points: Vec<NonZero<Scalar<E>>> = (1..=plan.new_n())
        .map(|j| NonZero::from_scalar(Scalar::from(u64::from(j))))
        .collect::<Option<_>>()
        .ok_or_else(|| invalid("evaluation point zero".into()))?;
    let receiver_point = |role: &Role| role.receiver.map(|j| new_points[j.as_usize()].as_ref());

    // A dealer's polynomial: a_0 = λ_i·x_i, a_1..a_{t′-1} random; zeroized when dropped.
    let coefficients = match role.dealer {
        None => None,
        Some(i) => {
            let share = old_share
                .filter(|s| s.i == i.get())
                .ok_or_else(|| invalid(format!("dealer {i} needs its old share")))?;
            let x: &SecretScalar<E> = share.x.as_ref();
            if Point::generator() * x != *old_info.public_shares[i.as_usize()] {
                return Err(ProtocolError::InvalidKeyMaterial(
                    "the old share does not match the old key's public share".into(),
                ));
            }
            let lambda = dealers
                .iter()
                .zip(&lambdas)
                .find_map(|((r, _), l)| (*r == me).then_some(*l))
                .ok_or_else(|| invalid(format!("dealer {i} is not in the plan's dealers")))?;
            let mut a0 = lambda * x.as_ref();
            let a0 = SecretScalar::new(&mut a0);
            Some(
                std::iter::once(a0)
                    .chain((1..t_new).map(|_| SecretScalar::random(rng)))
                    .collect::<Vec<SecretScalar<E>>>(),
            )
        }
    };

    let failed = |what: &str, e: &dyn std::error::Error| {
        ProtocolError::Reshare(format!("{what}: {}", ProtocolError::chain(e)))
    };
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut rounds = RoundsRouter::<Msg<E>>::builder();
    let round_dealings = rounds.add_round(RoundInput::<Option<Dealing<E>>>::broadcast(me, m));
    let round_shares = rounds.add_round(RoundInput::<Option<DealtShare<E>>>::p2p(me, m));
    let round_verdicts = rounds.add_round(RoundInput::<Verdict>::broadcast(me, m));
    let mut rounds = rounds.listen(incoming);

    let my_dealing = coefficients
        .as_ref()
        .map(|c| dealing::deal(Purpose::Reshare, eid, me, c, rng));
    outgoing
        .send(Outgoing::broadcast(Msg::Dealing(my_dealing.clone())))
        .await
        .map_err(|e| failed("sending the dealing", &e))?;
    let value_for = |to: &Role| {
        coefficients
            .as_ref()
            .zip(receiver_point(to))
            .map(|(c, point)| dealing::evaluate(c, point))
    };
    for (to, other) in (0u16..).zip(&plan.roles).filter(|(to, _)| *to != me) {
        // Point-to-point: in a node, one QUIC stream under mutual TLS between the two nodes.
        outgoing
            .send(Outgoing::p2p(to, Msg::Share(value_for(other))))
            .await
            .map_err(|e| failed("sending a share", &e))?;
    }
    let my_value = value_for(&role);
    drop(coefficients);

    let dealings = rounds
        .complete(round_dealings)
        .await
        .map_err(|e| failed("receiving the dealings", &e))?
        .into_vec_including_me(my_dealing);
    let shares = rounds
        .complete(round_shares)
        .await
        .map_err(|e| failed("receiving the shares", &e))?
        .into_vec_including_me(my_value);

    // Check every dealer's dealing (our own too, which cannot fail); what parties that do not
    // deal sent is ignored.
    let my_point = receiver_point(&role);
    let complaints: Vec<Complaint> = dealers
        .iter()
        .zip(&constants)
        .filter_map(|((d, _), constant)| {
            let share = my_point.map(|p| (p, shares[usize::from(*d)].as_ref()));
            let checked = match &dealings[usize::from(*d)] {
                None => Err(DealerFault::Malformed),
                Some(dealing) => dealing::check_dealing(
                    Purpose::Reshare,
                    eid,
                    *d,
                    t_new,
                    dealing,
                    constant,
                    share,
                ),
            };
            checked.err().map(|fault| Complaint {
                dealer: PartyIndex::new(*d),
                fault,
            })
        })
        .collect();

    let outcome = match dealing::first_fault(&complaints) {
        Some(fault) => Err(fault),
        None => {
            let dealt: Vec<&Dealing<E>> = dealers
                .iter()
                .filter_map(|(d, _)| dealings[usize::from(*d)].as_ref())
                .collect();
            let received = role.receiver.map(|j| {
                let values = dealers
                    .iter()
                    .filter_map(|(d, _)| shares[usize::from(*d)].as_ref());
                (j, values)
            });
            new_key(eid, old_info, t_new, new_points, &dealt, received)
        }
    };
    drop(shares);
    let received = rounds.complete(round_verdicts);
    let (share, digest) = dealing::verdict_round(
        outcome,
        &complaints,
        &mut outgoing,
        Msg::Verdict,
        received,
        failed,
    )
    .await?;
    Ok(Reshared { share, digest })
}

/// `λ_k = Π_{m≠k} p_m / (p_m − p_k)` for each point `p_k`: the Lagrange coefficients at 0;
/// `None` if two points are equal.
fn lagrange_at_zero<E: Curve>(points: &[Scalar<E>]) -> Option<Vec<Scalar<E>>> {
    points
        .iter()
        .enumerate()
        .map(|(k, pk)| {
            points
                .iter()
                .enumerate()
                .filter(|(m, _)| *m != k)
                .try_fold(Scalar::<E>::one(), |acc, (_, pm)| {
                    Some(acc * pm * (*pm - pk).invert()?)
                })
        })
        .collect()
}

/// The new key info, its digest, and, for receiver `j`, its new share from the values it
/// received, from dealings that all checked.
fn new_key<'a, E: Curve>(
    eid: &ExecutionId,
    old: &DirtyKeyInfo<E>,
    t_new: u16,
    new_points: Vec<NonZero<Scalar<E>>>,
    dealt: &[&Dealing<E>],
    received: Option<(PartyIndex, impl Iterator<Item = &'a DealtShare<E>>)>,
) -> Result<(Option<CoreKeyShare<E>>, [u8; 32]), ProtocolError> {
    let invalid = |what: &str| ProtocolError::InvalidKeyMaterial(format!("reshared {what}"));
    let summed = dealing::sum_commitments(usize::from(t_new), dealt.iter().copied());
    // Each C_{i,0} was checked to be λ_i·X_i, so this holds if the old public shares are those
    // of the group key; checked here, as the one thing a resharing must keep.
    if summed.first() != Some(&*old.shared_public_key) {
        return Err(invalid("constant terms do not add up to the group key"));
    }
    let public_shares = new_points
        .iter()
        .map(|p| NonZero::from_point(dealing::evaluate_public(&summed, p)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| invalid("public share is zero"))?;
    let key_info = DirtyKeyInfo {
        public_shares,
        vss_setup: Some(VssSetup {
            min_signers: t_new,
            I: new_points,
        }),
        ..old.clone()
    };
    let invalid_key =
        |e: &dyn std::error::Error| ProtocolError::InvalidKeyMaterial(ProtocolError::chain(e));
    key_info.is_valid().map_err(|e| invalid_key(&e))?;
    let digest = dealing::key_info_digest(Purpose::Reshare, eid, &key_info, dealt.iter().copied());
    let Some((j, values)) = received else {
        return Ok((None, digest));
    };
    let mut x = values.fold(Scalar::<E>::zero(), |acc, s| acc + s.0.as_ref());
    let x = NonZero::from_secret_scalar(SecretScalar::new(&mut x))
        .ok_or_else(|| invalid("secret share is zero"))?;
    let new = DirtyCoreKeyShare {
        i: j.get(),
        key_info,
        x,
    }
    .validate()
    .map_err(|e| invalid_key(&e.into_error()))?;
    Ok((Some(new), digest))
}

/// Reshares a FROST key: the party at run index `me` of `plan`, with its old share if it has
/// one (a dealer must).
pub async fn reshare_schnorr<M, R>(
    eid: &ExecutionId,
    plan: &Plan,
    me: u16,
    old_info: &KeyInfo,
    old_share: Option<&SchnorrKeyShare>,
    party: M,
    rng: &mut R,
) -> Result<Reshared<SchnorrKeyShare>, ProtocolError>
where
    M: Mpc<ProtocolMessage = ReshareMsg>,
    R: RngCore + CryptoRng,
{
    let old_share = old_share.map(|s| &*s.0);
    let out = reshare_core(eid, plan, me, &old_info.0, old_share, party, rng).await?;
    Ok(Reshared {
        share: out.share.map(SchnorrKeyShare),
        digest: out.digest,
    })
}

/// Reshares an ECDSA key, and joins a receiver's new core share with `new_aux`, its aux info
/// for the new committee (`n′` parties, in new index order), which a receiver must bring and
/// a party that only deals must not.
#[allow(clippy::too_many_arguments)]
pub async fn reshare_ecdsa<M, R>(
    eid: &ExecutionId,
    plan: &Plan,
    me: u16,
    old_info: &KeyInfo,
    old_share: Option<&EcdsaKeyShare>,
    new_aux: Option<AuxInfo>,
    party: M,
    rng: &mut R,
) -> Result<Reshared<EcdsaKeyShare>, ProtocolError>
where
    M: Mpc<ProtocolMessage = ReshareMsg>,
    R: RngCore + CryptoRng,
{
    let receives = plan
        .roles
        .get(usize::from(me))
        .is_some_and(|r| r.receiver.is_some());
    match &new_aux {
        Some(aux) if receives && aux.n() == usize::from(plan.new_n()) => {}
        None if !receives => {}
        _ => {
            return Err(ProtocolError::InvalidParameters(format!(
                "a receiver needs aux info for the {} new parties, and only a receiver",
                plan.new_n()
            )))
        }
    }
    let old_share = old_share.map(|s| &s.0.core);
    let out = reshare_core(eid, plan, me, &old_info.0, old_share, party, rng).await?;
    let share = match (out.share, new_aux) {
        (Some(core), Some(aux)) => {
            Some(EcdsaKeyShare::from_parts(IncompleteEcdsaShare(core), aux)?)
        }
        _ => None,
    };
    Ok(Reshared {
        share,
        digest: out.digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use generic_ec::curves::Secp256k1;

    #[test]
    fn lagrange_coefficients_interpolate_at_zero() {
        // f(x) = 5 + 3x + 2x²: its values at 1, 3, 4 interpolate to f(0) = 5.
        let f = |x: u64| Scalar::<Secp256k1>::from(5 + 3 * x + 2 * x * x);
        let points: Vec<Scalar<Secp256k1>> = [1u64, 3, 4].map(Scalar::from).to_vec();
        let lambdas = lagrange_at_zero(&points).unwrap();
        let at_zero = [1u64, 3, 4]
            .iter()
            .zip(&lambdas)
            .fold(Scalar::zero(), |acc, (x, l)| acc + f(*x) * l);
        assert_eq!(at_zero, Scalar::from(5u64));
        assert!(lagrange_at_zero(&[points[0], points[0]]).is_none());
    }

    #[test]
    fn a_plan_names_every_party_once() {
        let (plan, run) =
            Plan::for_committees(&[1, 2, 3, 4, 5], &[5, 1, 2], &[1, 2, 3, 4, 6], 3).unwrap();
        assert_eq!(run, [1, 2, 3, 4, 6, 5]);
        let role = |d: Option<u16>, r: Option<u16>| Role {
            dealer: d.map(PartyIndex::new),
            receiver: r.map(PartyIndex::new),
        };
        assert_eq!(
            plan.roles(),
            [
                role(Some(0), Some(0)),
                role(Some(1), Some(1)),
                role(None, Some(2)),
                role(None, Some(3)),
                role(None, Some(4)),
                role(Some(4), None),
            ]
        );
        assert_eq!(plan.new_n(), 5);
        // A dealer outside the old committee, one dealing twice, a bad threshold.
        assert!(Plan::for_committees(&[1, 2, 3], &[1, 7], &[1, 2, 3], 2).is_err());
        assert!(Plan::new(vec![role(Some(0), Some(0)), role(Some(0), Some(1))], 2).is_err());
        assert!(Plan::for_committees(&[1, 2, 3], &[1, 2], &[1, 2, 3], 4).is_err());
        // Receivers that are not 0..n′, a party with no part.
        assert!(Plan::new(vec![role(Some(0), Some(0)), role(Some(1), Some(2))], 2).is_err());
        assert!(Plan::new(
            vec![
                role(Some(0), Some(0)),
                role(Some(1), Some(1)),
                role(None, None)
            ],
            2
        )
        .is_err());
    }
}
