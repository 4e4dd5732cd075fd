//! Resharing of both schemes in one process, with the real libraries: a node replaced, the
//! threshold raised and lowered, a lost share repaired. The key, the chain code and every
//! derived key stay; the new shares sign (checked with libsecp256k1); old and new shares do not
//! mix; a cheating dealer is named and no one gets a share.

use std::{sync::Arc, time::Instant};

use generic_ec::{curves::Secp256k1, Point, Scalar};
use mpc_protocols::{
    ecdsa::EcdsaKeyShare,
    local,
    reshare::{self, DealerFault, Msg, Plan, ReshareMsg, Reshared},
    schnorr::SchnorrKeyShare,
    signature::PublicKey,
    sim, DerivationPath, ExecutionId, PartyIndex, ProtocolError, ProtocolKind,
};
use rand_core::OsRng;

#[macro_use]
mod common;
use common::{assert_named, ecdsa_verifies, plus_one, preimage, PATHS};

type Outcome<S> = Result<Reshared<S>, ProtocolError>;

/// The plan for node ids `1..=old.len()` (old index order) to `new` (new index order), and
/// an execution id bound to it.
fn plan(old_n: u16, dealers: &[u16], new: &[u16], t_new: u16) -> (Plan, Vec<u16>, ExecutionId) {
    let old: Vec<u16> = (1..=old_n).collect();
    let (plan, run) = Plan::for_committees(&old, dealers, new, t_new).unwrap();
    let eid = ExecutionId::derive(
        ProtocolKind::KeyReshare,
        "test",
        uuid::Uuid::new_v4(),
        &[],
        &plan.to_bytes(),
    );
    (plan, run, eid)
}

/// Runs a FROST resharing from the old committee (nodes `1..=old.len()`; `None`: a lost
/// share) with `tamper` rewriting messages in flight (by run index). Outcomes in run order.
fn reshare_schnorr(
    old: &[Option<SchnorrKeyShare>],
    dealers: &[u16],
    new: &[u16],
    t_new: u16,
    tamper: impl Fn(u16, u16, &mut ReshareMsg) + Send + Sync + 'static,
) -> Vec<Outcome<SchnorrKeyShare>> {
    let (plan, _, eid) = plan(old.len() as u16, dealers, new, t_new);
    let info = old.iter().flatten().next().unwrap().key_info();
    let (plan, info) = (&plan, &info);
    sim::run_tampered(
        plan.roles().len() as u16,
        Some(Arc::new(tamper)),
        |r, party| {
            let role = plan.roles()[usize::from(r)];
            let share = role.dealer.and_then(|i| old[i.as_usize()].as_ref());
            async move { reshare::reshare_schnorr(&eid, plan, r, info, share, party, &mut OsRng).await }
        },
    )
}

/// The receivers' new shares, in new index order (the run's first `n′` parties), after
/// checking that every party succeeded with the same digest and only receivers got a share.
fn new_shares<S>(outcomes: Vec<Outcome<S>>, n_new: usize) -> Vec<S> {
    let outcomes: Vec<Reshared<S>> = outcomes
        .into_iter()
        .enumerate()
        .map(|(r, o)| o.unwrap_or_else(|e| panic!("party {r}: {e}")))
        .collect();
    assert!(outcomes.iter().all(|o| o.digest == outcomes[0].digest));
    let mut shares = Vec::new();
    for (r, o) in outcomes.into_iter().enumerate() {
        assert_eq!(o.share.is_some(), r < n_new, "run party {r}");
        shares.extend(o.share);
    }
    shares
}

fn no_tamper(_: u16, _: u16, _: &mut ReshareMsg) {}

fn some(shares: &[SchnorrKeyShare]) -> Vec<Option<SchnorrKeyShare>> {
    shares.iter().cloned().map(Some).collect()
}

/// Whether the public shares of `parties` (0-based indices, evaluation points `index + 1`)
/// interpolate at 0 to `key`: the public image of what their secret shares would combine to.
/// Checks a threshold with public values only.
fn interpolates_to(public_shares: &[PublicKey], parties: &[u16], key: &PublicKey) -> bool {
    let point = |p: &PublicKey| Point::<Secp256k1>::from_bytes(p.0).unwrap();
    let x = |j: u16| Scalar::<Secp256k1>::from(u64::from(j) + 1);
    let sum: Point<Secp256k1> = parties
        .iter()
        .map(|&k| {
            let lambda = parties
                .iter()
                .filter(|&&m| m != k)
                .fold(Scalar::one(), |acc, &m| {
                    acc * x(m) * (x(m) - x(k)).invert().unwrap()
                });
            point(&public_shares[usize::from(k)]) * lambda
        })
        .sum();
    sum == point(key)
}

/// Every `t`-subset of `shares` signs a BIP-341 key spend, each for another child.
fn every_signer_set_signs(shares: &[SchnorrKeyShare], t: usize) {
    for (k, signers) in mpc_testkit::subsets(shares.len() as u16, t)
        .iter()
        .enumerate()
    {
        let path: DerivationPath = PATHS[k % PATHS.len()].parse().unwrap();
        let sighash = [k as u8 ^ 0x5a; 32];
        let sig = local::schnorr_sign(shares, &PartyIndex::list(signers), &path, &sighash).unwrap();
        let internal = shares[0].derive_public_key(&path).unwrap();
        assert!(
            mpc_testkit::taproot_key_spend_verifies(&sig.to_bytes(), &internal.0, &sighash),
            "signers {signers:?}"
        );
    }
}

#[test]
fn replacing_node_5_by_node_6_keeps_the_key_and_node_5s_old_share_does_not_sign() {
    let old = local::schnorr_keygen(3, 5).unwrap();
    let key = old[0].public_key();
    // Dealers that stay, and dealers among which node 5 deals and leaves (it only deals).
    for dealers in [[1, 2, 3], [3, 4, 5]] {
        let started = Instant::now();
        let outcomes = reshare_schnorr(&some(&old), &dealers, &[1, 2, 3, 4, 6], 3, no_tamper);
        eprintln!(
            "FROST reshare 3-of-5 -> 3-of-5, dealers {dealers:?}: {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        let new = new_shares(outcomes, 5);
        for (j, share) in new.iter().enumerate() {
            assert_eq!(key_side!(share), key_side!(&old[0]));
            assert_eq!((share.threshold(), share.n()), (3, 5));
            assert_eq!(share.index().as_usize(), j);
            assert_eq!(share.public_shares(), new[0].public_shares());
        }
        every_signer_set_signs(&new, 3);

        // Node 5's old share (old index 4, evaluation point 5: node 6's new point) with any two
        // new shares: its public share is not on the new polynomial, and signing fails.
        let mut with_old = new.clone();
        with_old[4] = old[4].clone();
        for pair in mpc_testkit::subsets(4, 2) {
            let signers = [pair[0], pair[1], 4];
            let mut public = new[0].public_shares();
            assert!(interpolates_to(&public, &signers, &key));
            public[4] = old[0].public_shares()[4];
            assert!(!interpolates_to(&public, &signers, &key));
            let err = local::schnorr_sign(
                &with_old,
                &PartyIndex::list(&signers),
                &DerivationPath::root(),
                &[7; 32],
            );
            assert!(
                matches!(err, Err(ProtocolError::BadSignatureShare { signer }) if signer.get() == 4),
                "{signers:?}: {err:?}"
            );
        }
    }
}

#[test]
fn the_threshold_goes_from_3_of_5_to_4_of_5_and_back() {
    let old = local::schnorr_keygen(3, 5).unwrap();
    let key = old[0].public_key();
    let nodes = [1, 2, 3, 4, 5];

    let four = new_shares(
        reshare_schnorr(&some(&old), &[1, 2, 3], &nodes, 4, no_tamper),
        5,
    );
    for share in &four {
        assert_eq!(key_side!(share), key_side!(&old[0]));
        assert_eq!((share.threshold(), share.n()), (4, 5));
    }
    every_signer_set_signs(&four, 4);
    // Three shares of a 4-of-5 key: the library refuses the signer set, and their public
    // shares do not interpolate to the key, so no three partial signatures could combine.
    let public = four[0].public_shares();
    for three in mpc_testkit::subsets(5, 3) {
        assert!(!interpolates_to(&public, &three, &key), "{three:?}");
        let err = local::schnorr_sign(
            &four,
            &PartyIndex::list(&three),
            &"m".parse().unwrap(),
            &[1; 32],
        );
        assert!(err.is_err(), "{three:?} signed a 4-of-5 key");
    }
    for four_signers in mpc_testkit::subsets(5, 4) {
        assert!(interpolates_to(&public, &four_signers, &key));
    }

    // Back to 3-of-5: now four dealers.
    let three = new_shares(
        reshare_schnorr(&some(&four), &[2, 3, 4, 5], &nodes, 3, no_tamper),
        5,
    );
    for share in &three {
        assert_eq!(key_side!(share), key_side!(&old[0]));
        assert_eq!((share.threshold(), share.n()), (3, 5));
    }
    every_signer_set_signs(&three, 3);
    // The dealers must be exactly t of the old key.
    let err = reshare_schnorr(&some(&four), &[2, 3, 4], &nodes, 3, no_tamper);
    assert!(err
        .iter()
        .all(|e| matches!(e, Err(ProtocolError::InvalidParameters(_)))));
}

#[test]
fn repairing_party_3_gives_it_a_share_that_signs() {
    let old = local::schnorr_keygen(3, 5).unwrap();
    // Node 3 (old index 2) lost its share: it only receives; nodes 1, 2 and 4 deal.
    let mut lost = some(&old);
    lost[2] = None;
    let nodes = [1, 2, 3, 4, 5];
    let repaired = new_shares(reshare_schnorr(&lost, &[1, 2, 4], &nodes, 3, no_tamper), 5);
    for share in &repaired {
        assert_eq!(key_side!(share), key_side!(&old[0]));
        assert_eq!((share.threshold(), share.n()), (3, 5));
    }
    // Node 3 signs with any two others; every set signs.
    every_signer_set_signs(&repaired, 3);
}

#[test]
fn a_cheating_dealer_is_named_and_no_receiver_gets_a_share() {
    let old = local::schnorr_keygen(3, 5).unwrap();
    // Node 5 is replaced by node 6 and deals: run order nodes 1, 2, 3, 4, 6, 5.
    let reshare = |tamper: fn(u16, u16, &mut ReshareMsg)| {
        reshare_schnorr(&some(&old), &[1, 2, 5], &[1, 2, 3, 4, 6], 3, tamper)
    };

    // Dealer node 2 sends node 6 a share that is off by one: node 6 names it.
    let results = reshare(|from, to, msg| {
        if let (1, 4, Msg::Share(Some(s))) = (from, to, msg) {
            plus_one(&mut s.0);
        }
    });
    assert_named(&results, 1, &[4], DealerFault::BadShare);

    // Dealer node 5 deals λ·x + 1 consistently: its shares match its commitments, but its
    // constant term is not λ_5·X_5 and the group key would move by G. Everyone else sees it.
    let results = reshare(|from, _, msg| match (from, msg) {
        (5, Msg::Dealing(Some(d))) => d.commitments[0] += Point::generator().to_point(),
        (5, Msg::Share(Some(s))) => plus_one(&mut s.0),
        _ => {}
    });
    assert_named(
        &results,
        5,
        &[0, 1, 2, 3, 4],
        DealerFault::WrongConstantTerm,
    );

    // Dealer node 1 withholds node 4's share.
    let results = reshare(|from, to, msg| {
        if let (0, 3, Msg::Share(s)) = (from, to, msg) {
            *s = None;
        }
    });
    assert_named(&results, 0, &[3], DealerFault::MissingShare);

    // A dealer that sends no dealing at all.
    let results = reshare(|from, _, msg| {
        if let (1, Msg::Dealing(d)) = (from, msg) {
            *d = None;
        }
    });
    assert_named(&results, 1, &[0, 2, 3, 4, 5], DealerFault::Malformed);

    // The old shares still sign.
    every_signer_set_signs(&old, 3);
}

/// ECDSA: node 5 replaced by node 6, 3-of-5; the old and the new shares. The new committee's
/// aux info is the fixture `aux-info-5.json` (a real node set runs aux info for its new members
/// first).
fn ecdsa_replaced() -> (Vec<EcdsaKeyShare>, Vec<EcdsaKeyShare>) {
    let aux = mpc_testkit::aux_info(5);
    let old = local::ecdsa_keygen(3, &aux).unwrap();
    let (plan, _, eid) = plan(5, &[1, 2, 3], &[1, 2, 3, 4, 6], 3);
    let info = old[0].key_info();
    let (plan, info, old_ref, aux_ref) = (&plan, &info, &old, &aux);
    let started = Instant::now();
    let outcomes = sim::run(plan.roles().len() as u16, |r, party| {
        let role = plan.roles()[usize::from(r)];
        let share = role.dealer.map(|i| &old_ref[i.as_usize()]);
        let new_aux = role.receiver.map(|j| aux_ref[j.as_usize()].clone());
        async move {
            reshare::reshare_ecdsa(&eid, plan, r, info, share, new_aux, party, &mut OsRng).await
        }
    });
    eprintln!(
        "ECDSA reshare 3-of-5 -> 3-of-5 (core shares): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let new: Vec<EcdsaKeyShare> = new_shares(outcomes, 5);
    for share in &new {
        assert_eq!(key_side!(share), key_side!(&old[0]));
        assert_eq!((share.threshold(), share.n()), (3, 5));
    }
    (old, new)
}

/// Signers 1, 3 and 6 by node id: new indices 0, 2, 4.
fn ecdsa_signers() -> Vec<PartyIndex> {
    PartyIndex::list(&[0, 2, 4])
}

/// The one ECDSA signing of the default run (an interactive signing costs about 10 s of CPU).
#[test]
fn ecdsa_replacing_node_5_by_node_6_the_new_shares_sign() {
    let (old, new) = ecdsa_replaced();
    let path: DerivationPath = "m/0/4".parse().unwrap();
    let msg = preimage("reshared");
    let sig = local::ecdsa_sign(&new, &ecdsa_signers(), &path, &msg).unwrap();
    assert!(ecdsa_verifies(
        &sig,
        &old[0].derive_public_key(&path).unwrap(),
        &msg
    ));
    // Node 5's old share is not on the new polynomial: with nodes 1 and 3 it does not
    // interpolate to the key (the signing below shows it for real).
    let mut public = new[0].public_shares();
    public[4] = old[0].public_shares()[4];
    assert!(!interpolates_to(&public, &[0, 2, 4], &old[0].public_key()));
}

/// Node 5's old share, in node 6's place, with two new shares: the signing fails (cggmp24's
/// proofs against the new public shares do not verify for the old share's signer). About 10 s
/// of CPU, in the default run: it is ECDSA's only check that old and new shares do not mix.
#[test]
fn ecdsa_node_5s_old_share_does_not_sign_with_new_shares() {
    let (old, new) = ecdsa_replaced();
    let mut mixed = new.clone();
    mixed[4] = old[4].clone();
    let path: DerivationPath = "m/0/4".parse().unwrap();
    let result = local::ecdsa_sign(&mixed, &ecdsa_signers(), &path, &preimage("mixed"));
    assert!(
        matches!(result, Err(ProtocolError::Signing(_))),
        "{result:?}"
    );
}
