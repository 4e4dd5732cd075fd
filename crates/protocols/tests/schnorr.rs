//! FROST (BIP-340 / BIP-341) in one process, and the BIP-340 test vectors.

use bitcoin::secp256k1 as secp29;
use mpc_protocols::{
    local, schnorr, signature::verify_bip340, DerivationPath, PartyIndex, ProtocolError,
};

/// Independent check through rust-bitcoin (libsecp256k1 0.29): tweak the derived internal
/// key with an empty script tree and verify the signature against the output key.
fn check(
    sig: &mpc_protocols::signature::SchnorrSignature,
    internal: &[u8; 33],
    sighash: &[u8; 32],
) {
    assert!(
        mpc_testkit::taproot_key_spend_verifies(&sig.to_bytes(), internal, sighash),
        "libsecp256k1 verifies the FROST signature against the tweaked key"
    );
    let secp = secp29::Secp256k1::verification_only();
    let internal = secp29::PublicKey::from_slice(internal)
        .unwrap()
        .x_only_public_key()
        .0;
    let sig29 = secp29::schnorr::Signature::from_slice(&sig.to_bytes()).unwrap();
    // The untweaked key must not verify: the tweak really is applied.
    assert!(secp
        .verify_schnorr(&sig29, &secp29::Message::from_digest(*sighash), &internal)
        .is_err());
}

#[test]
fn every_threshold_signs_bip340_for_tweaked_hd_keys() {
    for (t, n) in [(2u16, 3u16), (3, 5), (4, 5), (5, 5)] {
        let shares = local::schnorr_keygen(t, n).unwrap();
        assert!(shares
            .iter()
            .all(|s| s.public_key() == shares[0].public_key()));
        let signers: Vec<u16> = (n - t..n).collect();
        for path in ["m", "m/0/0", "m/1/9"] {
            let path: DerivationPath = path.parse().unwrap();
            let sighash = [t as u8 ^ 0x5a; 32];
            let sig =
                local::schnorr_sign(&shares, &PartyIndex::list(&signers), &path, &sighash).unwrap();
            check(
                &sig,
                &shares[0].derive_public_key(&path).unwrap().0,
                &sighash,
            );
        }
    }
}

#[test]
fn every_signer_set_of_three_of_five_signs() {
    let shares = local::schnorr_keygen(3, 5).unwrap();
    let path: DerivationPath = "m/0/4".parse().unwrap();
    let internal = shares[0].derive_public_key(&path).unwrap();
    for (k, signers) in mpc_testkit::subsets(5, 3).into_iter().enumerate() {
        let sighash = [k as u8; 32];
        let sig =
            local::schnorr_sign(&shares, &PartyIndex::list(&signers), &path, &sighash).unwrap();
        check(&sig, &internal.0, &sighash);
    }
}

/// The coordinator's aggregation: any holder of a share can aggregate, in any order; shares
/// that do not belong together, a different message or path, a key other than the expected
/// one, a share twice or too few shares are refused.
#[test]
fn aggregation_refuses_shares_that_do_not_belong_together() {
    let shares = local::schnorr_keygen(3, 5).unwrap();
    let signers = PartyIndex::list(&[0, 2, 4]);
    let path: DerivationPath = "m/0/3".parse().unwrap();
    let sighash = [9; 32];
    let a = local::schnorr_signature_shares(&shares, &signers, &path, &sighash).unwrap();
    let b = local::schnorr_signature_shares(&shares, &signers, &path, &sighash).unwrap();
    assert_eq!(
        a.iter().map(|s| s.signer()).collect::<Vec<_>>(),
        signers.to_vec()
    );

    let internal = shares[0].derive_public_key(&path).unwrap();
    let aggregate = |path: &DerivationPath, sighash: &[u8; 32], sig_shares: &[_]| {
        schnorr::aggregate(&shares[1], path, &internal.x_only(), sighash, sig_shares)
    };
    let reversed: Vec<_> = a.iter().rev().copied().collect();
    let sig = aggregate(&path, &sighash, &reversed).unwrap();
    check(&sig, &internal.0, &sighash);

    // One share made with another run's nonces.
    let mixed = [a[0], a[1], b[2]];
    let err = aggregate(&path, &sighash, &mixed);
    assert!(matches!(err, Err(ProtocolError::Combine(_))), "{err:?}");
    let other_path: DerivationPath = "m/0/4".parse().unwrap();
    for (path, sighash) in [(&path, [8; 32]), (&other_path, sighash)] {
        let err = aggregate(path, &sighash, &a);
        assert!(matches!(err, Err(ProtocolError::Combine(_))), "{err:?}");
    }
    // A valid signature, but not for the key the caller expects.
    let elsewhere = shares[0].derive_public_key(&other_path).unwrap().x_only();
    let err = schnorr::aggregate(&shares[1], &path, &elsewhere, &sighash, &a);
    assert!(
        matches!(err, Err(ProtocolError::InvalidSignature)),
        "{err:?}"
    );
    for wrong in [vec![a[0], a[0], a[1]], a[..2].to_vec(), Vec::new()] {
        let err = aggregate(&path, &sighash, &wrong);
        assert!(
            matches!(err, Err(ProtocolError::InvalidSignerSet { .. })),
            "{err:?}"
        );
    }
}

#[test]
fn wrong_signer_sets_are_refused() {
    let shares = local::schnorr_keygen(2, 3).unwrap();
    let err = local::schnorr_sign(
        &shares,
        &PartyIndex::list(&[0, 1, 2]),
        &DerivationPath::root(),
        &[0; 32],
    );
    assert!(err.is_err());
    let err = local::schnorr_sign(
        &shares,
        &PartyIndex::list(&[1, 1]),
        &DerivationPath::root(),
        &[0; 32],
    );
    assert!(err.is_err());
}

#[test]
fn schnorr_share_round_trips_through_bytes() {
    let shares = local::schnorr_keygen(2, 3).unwrap();
    let bytes = shares[2].to_bytes().unwrap();
    let back = schnorr::SchnorrKeyShare::from_bytes(&bytes).unwrap();
    assert_eq!(back.public_key(), shares[2].public_key());
    assert!(schnorr::SchnorrKeyShare::from_bytes(&bytes[1..]).is_err());
}

#[test]
fn bip340_test_vectors() {
    let path = mpc_testkit::vectors_dir().join("bip340-test-vectors.csv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (pk_col, msg_col, sig_col, res_col) = (
        col("public key"),
        col("message"),
        col("signature"),
        col("verification result"),
    );
    let (mut accepted, mut rejected) = (0, 0);
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let expected = f[res_col] == "TRUE";
        let pk: Option<[u8; 32]> = hex::decode(f[pk_col]).ok().and_then(|b| b.try_into().ok());
        let msg = hex::decode(f[msg_col]).unwrap();
        let sig: [u8; 64] = hex::decode(f[sig_col]).unwrap().try_into().unwrap();
        let ok = pk.is_some_and(|pk| verify_bip340(&pk, &msg, &sig).is_ok());
        assert_eq!(ok, expected, "vector {}: {}", f[0], line);
        if ok {
            accepted += 1
        } else {
            rejected += 1
        }
    }
    // The BIP's file has 19 vectors (9 TRUE, 10 FALSE);
    // a newer copy may add more, never fewer.
    assert!(
        accepted >= 9 && rejected >= 10,
        "{accepted} accepted, {rejected} rejected"
    );
}
