//! Threshold ECDSA (CGGMP24) in one process: every signature checked with libsecp256k1.

use mpc_protocols::{
    ecdsa::{self, SighashPreimage},
    local, DerivationPath, PartyIndex, ProtocolError,
};
use secp256k1::{ecdsa::Signature, Message, PublicKey, Secp256k1};

fn preimage(tag: &str) -> SighashPreimage {
    SighashPreimage::new(format!("a BIP-143 preimage stand-in: {tag}").into_bytes())
}

/// Independent check with libsecp256k1: DER round trip, low S, verification, recovery id.
fn check(sig: &mpc_protocols::signature::EcdsaSignature, key: &[u8; 33], msg: &SighashPreimage) {
    let secp = Secp256k1::verification_only();
    let pk = PublicKey::from_slice(key).unwrap();
    let der = sig.to_der().unwrap();
    let parsed = Signature::from_der(&der).unwrap();
    let mut normalized = parsed;
    normalized.normalize_s();
    assert_eq!(parsed, normalized, "signature must be low-S");
    assert_eq!(parsed.serialize_compact(), sig.to_compact());
    secp.verify_ecdsa(Message::from_digest(msg.sighash()), &parsed, &pk)
        .expect("libsecp256k1 verifies the threshold signature");
    // The wrong message must not verify.
    assert!(secp
        .verify_ecdsa(
            Message::from_digest(preimage("other").sighash()),
            &parsed,
            &pk
        )
        .is_err());
    let rec_id = sig
        .recovery_id(&mpc_protocols::signature::PublicKey(*key), &msg.sighash())
        .unwrap();
    let rec = secp256k1::ecdsa::RecoverableSignature::from_compact(
        &sig.to_compact(),
        secp256k1::ecdsa::RecoveryId::try_from(i32::from(rec_id)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        secp.recover_ecdsa(Message::from_digest(msg.sighash()), &rec)
            .unwrap(),
        pk
    );
    assert_eq!(der.len() + 1, sig.to_der_with_sighash(0x01).unwrap().len());
}

// Aux info is loaded from the checked-in fixture here. It is generated for real, from the
// fixture primes, by `scripts/test`'s demo job (`local::aux_info` for 2 parties in one
// process, the transaction checked by embit) and its devnet job (the ceremony over the
// network, 3 nodes). A third run here cost 44 s of CPU for the same function.

#[test]
fn every_threshold_signs_with_presignatures_and_interactively() {
    // A presignature for t < n and for t = n, interactive signing once: in cggmp24 it is the
    // same presignature protocol plus the online round, so running it for every threshold
    // would repeat seconds of CPU per case for no new path. t = n at 3 parties, not 5: a
    // presignature's CPU grows with the square of its signers (a 5-of-5 is ~25 s of it).
    for (t, n) in [(2u16, 3usize), (3, 5), (3, 3)] {
        let shares = local::ecdsa_keygen(t, &mpc_testkit::aux_info(n)).unwrap();
        assert!(shares
            .iter()
            .all(|s| s.public_key() == shares[0].public_key()));
        assert!(shares
            .iter()
            .all(|s| s.threshold() == t && usize::from(s.n()) == n));
        // The last t parties sign, so the set is not always {0..t}.
        let signers: Vec<PartyIndex> = (n as u16 - t..n as u16).map(PartyIndex::new).collect();

        let path: DerivationPath = "m/0/7".parse().unwrap();
        let child = shares[0].derive_public_key(&path).unwrap();
        assert_ne!(child, shares[0].public_key());
        let msg = preimage(&format!("{t}-of-{n} presig"));
        let presigs = local::presign(&shares, &signers, &path).unwrap();
        let sig = local::sign_with_presignatures(&shares, presigs, &msg).unwrap();
        check(&sig, &child.0, &msg);

        if t == 2 {
            let path: DerivationPath = "m/1/3".parse().unwrap();
            let msg = preimage(&format!("{t}-of-{n} full"));
            let sig = local::ecdsa_sign(&shares, &signers, &path, &msg).unwrap();
            check(&sig, &shares[0].derive_public_key(&path).unwrap().0, &msg);
        }
    }
}

#[test]
fn signer_sets_of_three_of_five_sign() {
    // Sets with gaps, which together hold every party: the party indices reach the protocol in
    // the right order whichever parties sign (the contiguous {2, 3, 4} signs in the test
    // above). Every one of the ten sets would cost ten presignatures, over a minute of CPU,
    // for the same code path.
    let shares = local::ecdsa_keygen(3, &mpc_testkit::aux_info(5)).unwrap();
    let path: DerivationPath = "m/0/1".parse().unwrap();
    let child = shares[0].derive_public_key(&path).unwrap();
    let sets: [[u16; 3]; 2] = [[0, 2, 4], [1, 3, 4]];
    let mut nonces = std::collections::HashSet::new();
    for signers in sets {
        let signers = PartyIndex::list(&signers);
        let msg = preimage(&format!("{signers:?}"));
        let presigs = local::presign(&shares, &signers, &path).unwrap();
        let sig = local::sign_with_presignatures(&shares, presigs, &msg).unwrap();
        check(&sig, &child.0, &msg);
        assert!(nonces.insert(sig.r()), "two signatures share r");
    }
}

#[test]
fn a_presignature_signs_only_for_its_key_path_and_signer_set() {
    let aux = mpc_testkit::aux_info(3);
    let shares = local::ecdsa_keygen(2, &aux).unwrap();
    let other_wallet = local::ecdsa_keygen(2, &aux).unwrap();
    let path: DerivationPath = "m/0/0".parse().unwrap();
    let msg = preimage("binding");
    let signers = PartyIndex::list(&[0, 1]);

    let mismatch = |presig: ecdsa::Presignature,
                    share: &ecdsa::EcdsaKeyShare,
                    path: &str,
                    set: &[PartyIndex]| {
        let err = presig
            .issue_partial_signature(share, &path.parse().unwrap(), set, &msg)
            .unwrap_err();
        assert!(
            matches!(err, ProtocolError::PresignatureMismatch { .. }),
            "{err}"
        );
    };

    let mut presigs = local::presign(&shares, &signers, &path)
        .unwrap()
        .into_iter();
    // Another path.
    mismatch(presigs.next().unwrap(), &shares[0], "m/0/1", &signers);
    // Another signer set (party 1 asked to sign for {1, 2}).
    mismatch(
        presigs.next().unwrap(),
        &shares[1],
        "m/0/0",
        &PartyIndex::list(&[1, 2]),
    );

    let mut presigs = local::presign(&shares, &signers, &path)
        .unwrap()
        .into_iter();
    // Another key (same index, other wallet).
    mismatch(presigs.next().unwrap(), &other_wallet[0], "m/0/0", &signers);
    // Another party's share (party 1's presignature used with party 0's share).
    let _ = presigs.next();
    let mut presigs = local::presign(&shares, &signers, &path)
        .unwrap()
        .into_iter();
    let p0 = presigs.next().unwrap();
    let p1 = presigs.next().unwrap();
    mismatch(p1, &shares[0], "m/0/0", &signers);
    // Its own binding works.
    assert!(p0
        .issue_partial_signature(&shares[0], &path, &signers, &msg)
        .is_ok());
    // Using it twice does not compile: `issue_partial_signature` takes `self`, and the type
    // is not `Clone` (checked by the compile_fail doctest on `Presignature`).
}

#[test]
fn combine_refuses_missing_duplicate_and_forged_partials() {
    let shares = local::ecdsa_keygen(2, &mpc_testkit::aux_info(3)).unwrap();
    let path = DerivationPath::root();
    let signers = PartyIndex::list(&[1, 2]);
    let msg = preimage("combine");
    let presigs = local::presign(&shares, &signers, &path).unwrap();
    let binding = presigs[0].binding().clone();
    let public = presigs[0].public().clone();
    let key = shares[0].public_key();
    let partials: Vec<_> = presigs
        .into_iter()
        .zip([&shares[1], &shares[2]])
        .map(|(p, s)| p.issue_partial_signature(s, &path, &signers, &msg).unwrap())
        .collect();
    assert!(ecdsa::combine(&public, &binding, &partials[..1], &msg, &key).is_err());
    let dup = vec![partials[0].clone(), partials[0].clone()];
    assert!(ecdsa::combine(&public, &binding, &dup, &msg, &key).is_err());
    // Partials issued for one message do not combine for another.
    assert!(ecdsa::combine(&public, &binding, &partials, &preimage("other"), &key).is_err());
    // One signer's partial replaced (signer 2 sends signer 1's value): signer 2, and only
    // it, is named, whichever order the partials arrive in.
    let mut forged = serde_json::to_value(&partials[1]).unwrap();
    forged["sigma"] = serde_json::to_value(&partials[0]).unwrap()["sigma"].clone();
    let forged: ecdsa::PartialSignature = serde_json::from_value(forged).unwrap();
    for set in [
        vec![partials[0].clone(), forged.clone()],
        vec![forged.clone(), partials[0].clone()],
    ] {
        let err = ecdsa::combine(&public, &binding, &set, &msg, &key).unwrap_err();
        assert!(
            matches!(err, ProtocolError::BadPartialSignature { signer } if signer == PartyIndex::new(2)),
            "{err}"
        );
    }
    // Against the wrong key the combined signature fails verification.
    let other_key = shares[0]
        .derive_public_key(&"m/5".parse().unwrap())
        .unwrap();
    assert!(matches!(
        ecdsa::combine(&public, &binding, &partials, &msg, &other_key),
        Err(ProtocolError::InvalidSignature)
    ));
    let sig = ecdsa::combine(&public, &binding, &partials, &msg, &key).unwrap();
    check(&sig, &key.0, &msg);
}

#[test]
fn invalid_parameters_and_signer_sets_are_refused() {
    assert!(ecdsa::check_parameters(PartyIndex::new(0), 5, 1).is_err());
    assert!(ecdsa::check_parameters(PartyIndex::new(0), 5, 6).is_err());
    assert!(ecdsa::check_parameters(PartyIndex::new(5), 5, 3).is_err());
    assert!(ecdsa::check_parameters(PartyIndex::new(0), 16, 3).is_err());
    assert!(ecdsa::check_parameters(PartyIndex::new(0), 1, 1).is_err());
    assert!(ecdsa::check_parameters(PartyIndex::new(0), 15, 15).is_ok());
    assert!(ecdsa::check_parameters(PartyIndex::new(1), 2, 2).is_ok());
    for bad in [
        &[0u16, 1][..],
        &[2, 1, 0],
        &[0, 0, 1],
        &[0, 1, 5],
        &[1, 2, 3],
    ] {
        assert!(
            ecdsa::position_in_signer_set(&PartyIndex::list(bad), PartyIndex::new(0), 5, 3)
                .is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        ecdsa::position_in_signer_set(&PartyIndex::list(&[0, 2, 4]), PartyIndex::new(4), 5, 3)
            .unwrap(),
        PartyIndex::new(2)
    );
}

#[test]
fn key_material_round_trips_through_bytes_and_rejects_garbage() {
    let shares = local::ecdsa_keygen(2, &mpc_testkit::aux_info(3)).unwrap();
    let bytes = shares[1].to_bytes().unwrap();
    let back = ecdsa::EcdsaKeyShare::from_bytes(&bytes).unwrap();
    assert_eq!(back.public_key(), shares[1].public_key());
    assert_eq!(back.index(), PartyIndex::new(1));
    assert!(ecdsa::EcdsaKeyShare::from_bytes(&bytes[..bytes.len() / 2]).is_err());
    assert!(ecdsa::EcdsaKeyShare::from_bytes(b"not a key share").is_err());
    // Debug output never shows the secret.
    let debug = format!("{:?}", shares[1]);
    assert!(debug.contains("<secret>"), "{debug}");

    let presigs =
        local::presign(&shares, &PartyIndex::list(&[0, 1]), &DerivationPath::root()).unwrap();
    let id = *presigs[0].id();
    let bytes = presigs.into_iter().next().unwrap().to_bytes().unwrap();
    let back = ecdsa::Presignature::from_bytes(&bytes).unwrap();
    assert_eq!(*back.id(), id);
}
