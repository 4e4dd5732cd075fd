//! Key refresh of both schemes in one process, with the real libraries: the key stays, the
//! shares change, the new shares sign (checked with libsecp256k1), old and new shares do not
//! mix, and cheating dealers and disagreeing parties make the refresh fail for everyone.

use std::{sync::Arc, time::Instant};

use generic_ec::{Point, Scalar};
use mpc_protocols::{
    ecdsa::EcdsaKeyShare,
    local,
    refresh::{self, DealerFault, Msg, RefreshMsg},
    schnorr::SchnorrKeyShare,
    signature::{PublicKey, SchnorrSignature},
    sim, DerivationPath, ExecutionId, PartyIndex, ProtocolError, ProtocolKind,
};
use rand_core::OsRng;

#[macro_use]
mod common;
use common::{assert_named, ecdsa_verifies, plus_one, preimage, PATHS};

fn taproot_verifies(sig: &SchnorrSignature, internal: &PublicKey, sighash: &[u8; 32]) -> bool {
    mpc_testkit::taproot_key_spend_verifies(&sig.to_bytes(), &internal.0, sighash)
}

/// What a refresh must keep: [`key_side!`], `t` and `n`.
macro_rules! key_side_t_n {
    ($share:expr) => {{
        let s = $share;
        (key_side!(s), s.threshold(), s.n())
    }};
}

/// Every party's own public share `X_j = x_j·G` changed (so, since `validate()` ties it to the
/// secret, every secret share changed), and all parties hold the same new public shares.
fn every_share_changed(old: &[Vec<PublicKey>], new: &[Vec<PublicKey>]) {
    for (j, (old, new_j)) in old.iter().zip(new).enumerate() {
        assert_ne!(old[j], new_j[j], "party {j}'s share did not change");
        assert_eq!(*new_j, new[0], "party {j} holds other public shares");
    }
}

#[test]
fn schnorr_refresh_keeps_the_key_changes_every_share_and_the_new_shares_sign() {
    for (t, n) in [(2u16, 3u16), (3, 5)] {
        let old = local::schnorr_keygen(t, n).unwrap();
        let started = Instant::now();
        let new = local::schnorr_refresh(&old).unwrap();
        eprintln!(
            "FROST refresh {t}-of-{n}: {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        for share in &new {
            assert_eq!(key_side_t_n!(share), key_side_t_n!(&old[0]));
        }
        every_share_changed(
            &old.iter().map(|s| s.public_shares()).collect::<Vec<_>>(),
            &new.iter().map(|s| s.public_shares()).collect::<Vec<_>>(),
        );
        // Every signer set signs, for several children.
        for (k, signers) in mpc_testkit::subsets(n, usize::from(t)).iter().enumerate() {
            let path: DerivationPath = PATHS[k % PATHS.len()].parse().unwrap();
            let sighash = [k as u8 ^ 0xa5; 32];
            let sig =
                local::schnorr_sign(&new, &PartyIndex::list(signers), &path, &sighash).unwrap();
            let internal = new[0].derive_public_key(&path).unwrap();
            assert!(taproot_verifies(&sig, &internal, &sighash));
        }
        // A second refresh gives other shares again.
        let again = local::schnorr_refresh(&new).unwrap();
        assert_ne!(again[0].public_shares(), new[0].public_shares());
    }
}

#[test]
fn schnorr_old_and_new_shares_do_not_sign_together() {
    let old = local::schnorr_keygen(3, 5).unwrap();
    let new = local::schnorr_refresh(&old).unwrap();
    let signers = PartyIndex::list(&[0, 2, 4]);
    let path: DerivationPath = "m/0/1".parse().unwrap();
    let sighash = [3; 32];
    // One signer new among old ones, and one old among new ones, for each signer.
    for odd_one in [0, 2, 4] {
        for others_new in [false, true] {
            let mixed: Vec<SchnorrKeyShare> = (0..5)
                .map(|j| {
                    if (j == odd_one) != others_new {
                        &new[j]
                    } else {
                        &old[j]
                    }
                    .clone()
                })
                .collect();
            let err = local::schnorr_sign(&mixed, &signers, &path, &sighash);
            // The aggregator (party 0) checks each share against its own epoch's public
            // shares: the first signer of the other epoch is named.
            let is_new = |j: usize| (j == odd_one) != others_new;
            let named = [0, 2, 4].into_iter().find(|j| is_new(*j) != is_new(0));
            assert!(
                matches!(
                    err,
                    Err(ProtocolError::BadSignatureShare { signer }) if Some(signer.as_usize()) == named
                ),
                "party {odd_one} (others new: {others_new}): {err:?}"
            );
        }
    }
    // Each side alone signs.
    for shares in [&old, &new] {
        let sig = local::schnorr_sign(shares, &signers, &path, &sighash).unwrap();
        let internal = shares[0].derive_public_key(&path).unwrap();
        assert!(taproot_verifies(&sig, &internal, &sighash));
    }
}

/// Runs a FROST refresh of `shares` with `tamper` rewriting messages in flight.
fn refresh_tampered(
    shares: &[SchnorrKeyShare],
    tamper: impl Fn(u16, u16, &mut RefreshMsg) + Send + Sync + 'static,
) -> Vec<Result<SchnorrKeyShare, ProtocolError>> {
    let n = shares[0].n();
    let eid = ExecutionId::derive(
        ProtocolKind::KeyRefresh,
        "test",
        uuid::Uuid::new_v4(),
        &PartyIndex::all(n),
        &[],
    );
    sim::run_tampered(n, Some(Arc::new(tamper)), |i, party| {
        let share = &shares[usize::from(i)];
        async move { refresh::refresh_schnorr(&eid, share, party, &mut OsRng).await }
    })
}

#[test]
fn a_cheating_dealer_is_named_and_nobody_gets_a_new_share() {
    let shares = local::schnorr_keygen(3, 5).unwrap();

    // Dealer 1 sends party 3 a share that is off by one: party 3 names it, the others learn
    // of it through party 3's complaint.
    let results = refresh_tampered(&shares, |from, to, msg| {
        if let (1, 3, Msg::Share(s)) = (from, to, msg) {
            plus_one(&mut s.0);
        }
    });
    assert_named(&results, 1, &[3], DealerFault::BadShare);

    // Dealer 2 deals g + 1 consistently (constant-term commitment G, every share one more): its
    // shares check against its commitments, but the group key would move by G. Refused.
    let results = refresh_tampered(&shares, |from, _, msg| match (from, msg) {
        (2, Msg::Dealing(d)) => d.commitments[0] = Point::generator().to_point(),
        (2, Msg::Share(s)) => plus_one(&mut s.0),
        _ => {}
    });
    assert_named(&results, 2, &[0, 1, 3, 4], DealerFault::WrongConstantTerm);

    // Dealer 0's proof of knowledge of a coefficient is broken, only towards party 4.
    let results = refresh_tampered(&shares, |from, to, msg| {
        if let (0, 4, Msg::Dealing(d)) = (from, to, msg) {
            d.proofs[1].z += Scalar::one();
        }
    });
    assert_named(&results, 0, &[4], DealerFault::BadProof);

    // A dealing with a coefficient missing.
    let results = refresh_tampered(&shares, |from, _, msg| {
        if let (4, Msg::Dealing(d)) = (from, msg) {
            d.commitments.pop();
            d.proofs.pop();
        }
    });
    assert_named(&results, 4, &[0, 1, 2, 3], DealerFault::Malformed);

    // The old shares still sign.
    let signers = PartyIndex::list(&[1, 2, 3]);
    let sig = local::schnorr_sign(&shares, &signers, &DerivationPath::root(), &[1; 32]).unwrap();
    let internal = shares[0].public_key();
    assert!(taproot_verifies(&sig, &internal, &[1; 32]));
}

#[test]
fn a_party_with_other_key_info_makes_the_refresh_fail_for_all() {
    let mut shares = local::schnorr_keygen(3, 5).unwrap();
    // Party 4 holds the same key with another chain code (a stale or corrupted record): every
    // check on the dealings passes, but the key info it confirms differs.
    let mut json = serde_json::to_value(&shares[4]).unwrap();
    json["chain_code"] = serde_json::Value::String(hex::encode([7u8; 32]));
    shares[4] = serde_json::from_value(json).unwrap();
    assert_ne!(
        shares[4].chain_code().unwrap(),
        shares[0].chain_code().unwrap()
    );

    let results = refresh_tampered(&shares, |_, _, _| {});
    for (j, result) in results.iter().enumerate() {
        let expected = if j == 4 {
            PartyIndex::list(&[0, 1, 2, 3])
        } else {
            PartyIndex::list(&[4])
        };
        assert!(
            matches!(result, Err(ProtocolError::NotConfirmed { parties }) if *parties == expected),
            "party {j}: {result:?}"
        );
    }

    // A party that reports another digest is refused by everyone it reports to.
    let shares = local::schnorr_keygen(2, 3).unwrap();
    let results = refresh_tampered(&shares, |from, _, msg| {
        if let (2, Msg::Verdict(refresh::Verdict::Agree(d))) = (from, msg) {
            d[0] ^= 1;
        }
    });
    for result in &results[..2] {
        assert!(
            matches!(result, Err(ProtocolError::NotConfirmed { parties }) if *parties == PartyIndex::list(&[2])),
            "{result:?}"
        );
    }
    // Party 2 itself saw everyone agree with it: the pure protocol cannot tell it that its own
    // last word was refused, which is why a node switches only after all participants report
    // success.
    assert!(results[2].is_ok());
}

/// The one ECDSA refresh: 2-of-3, the new aux info from prime sets 6 to 8, which the wallet's
/// (`aux-info-3.json`, sets 1 to 3) does not use. A fixture, made by `mpc-wallet aux-info
/// generate` (the function `scripts/test`'s demo job runs for real), because that run costs a
/// minute of CPU.
#[test]
fn ecdsa_refresh_with_new_aux_info_keeps_the_key_and_old_and_new_do_not_mix() {
    let old_aux = mpc_testkit::aux_info(3);
    let old = local::ecdsa_keygen(2, &old_aux).unwrap();

    // The current aux info is refused: a refresh must bring new Paillier keys.
    let err = local::ecdsa_refresh(&old, &old_aux);
    assert!(
        matches!(err, Err(ProtocolError::InvalidParameters(_))),
        "{err:?}"
    );

    let new_aux = mpc_testkit::other_aux_info_3();
    let started = Instant::now();
    let new = local::ecdsa_refresh(&old, &new_aux).unwrap();
    eprintln!(
        "ECDSA refresh 2-of-3 (core shares): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    for (share, aux) in new.iter().zip(&new_aux) {
        assert_eq!(key_side_t_n!(share), key_side_t_n!(&old[0]));
        assert_eq!(
            share.aux_public_digest().unwrap(),
            aux.public_digest().unwrap()
        );
        assert_ne!(
            share.aux_public_digest().unwrap(),
            old[0].aux_public_digest().unwrap()
        );
    }
    every_share_changed(
        &old.iter().map(|s| s.public_shares()).collect::<Vec<_>>(),
        &new.iter().map(|s| s.public_shares()).collect::<Vec<_>>(),
    );

    // The new shares sign: presignatures for two signer sets, and interactively for a third.
    for (signers, path) in [([0u16, 1], "m/0/4"), ([1, 2], "m")] {
        let signers = PartyIndex::list(&signers);
        let path: DerivationPath = path.parse().unwrap();
        let msg = preimage(&format!("refreshed {signers:?}"));
        let presigs = local::presign(&new, &signers, &path).unwrap();
        let sig = local::sign_with_presignatures(&new, presigs, &msg).unwrap();
        assert!(ecdsa_verifies(
            &sig,
            &new[0].derive_public_key(&path).unwrap(),
            &msg
        ));
    }
    let path: DerivationPath = "m/1/2".parse().unwrap();
    let msg = preimage("refreshed interactive");
    let sig = local::ecdsa_sign(&new, &PartyIndex::list(&[0, 2]), &path, &msg).unwrap();
    assert!(ecdsa_verifies(
        &sig,
        &old[0].derive_public_key(&path).unwrap(),
        &msg
    ));

    // Party 0's old share, joined with its new aux info so only the key shares differ, does
    // not sign with party 1's new share.
    let (old_core, _) = old[0].clone().into_parts().unwrap();
    let (_, aux0) = new[0].clone().into_parts().unwrap();
    let mixed = vec![
        EcdsaKeyShare::from_parts(old_core, aux0).unwrap(),
        new[1].clone(),
        new[2].clone(),
    ];
    let signers = PartyIndex::list(&[0, 1]);
    let path = DerivationPath::root();
    let msg = preimage("mixed");
    let result = local::presign(&mixed, &signers, &path)
        .and_then(|presigs| local::sign_with_presignatures(&mixed, presigs, &msg));
    assert!(result.is_err(), "old and new shares signed together");
}
