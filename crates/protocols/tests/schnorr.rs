//! FROST (BIP-340 / BIP-341) in one process, and the BIP-340 test vectors.

use bitcoin::secp256k1 as secp29;
use mpc_protocols::{
    local,
    schnorr::{self, SchnorrKeyShare, SchnorrSignatureShare},
    signature::verify_bip340,
    DerivationPath, PartyIndex, ProtocolError,
};
use serde_json::{json, Value};

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
    let reversed: Vec<_> = a.iter().rev().cloned().collect();
    let sig = aggregate(&path, &sighash, &reversed).unwrap();
    check(&sig, &internal.0, &sighash);

    // One share made with another run's nonces: the aggregator (party 1) is no signer, so it
    // has no list of its own to tell whose list is the true one.
    let mixed = [a[0].clone(), a[1].clone(), b[2].clone()];
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
    for wrong in [
        vec![a[0].clone(), a[0].clone(), a[1].clone()],
        a[..2].to_vec(),
        Vec::new(),
    ] {
        let err = aggregate(&path, &sighash, &wrong);
        assert!(
            matches!(err, Err(ProtocolError::InvalidSignerSet { .. })),
            "{err:?}"
        );
    }
}

/// A share changed through its wire encoding, as a hostile signer would send it.
fn altered(
    share: &SchnorrSignatureShare,
    change: impl FnOnce(&mut Value),
) -> SchnorrSignatureShare {
    let mut json = serde_json::to_value(share).unwrap();
    change(&mut json);
    serde_json::from_value(json).unwrap()
}

/// Flips the lowest bit of z, the share's scalar (`{"curve": .., "scalar": hex}`).
fn flip_z(share: &mut Value) {
    let Value::String(z) = &mut share["share"]["scalar"] else {
        panic!("no scalar in {share}");
    };
    let last = z.pop().and_then(|c| c.to_digit(16)).unwrap();
    z.push(char::from_digit(last ^ 1, 16).unwrap());
}

/// Swaps the hiding and binding commitments of entry `entry` of a share's commitment list.
fn swap_commitments(share: &mut Value, entry: usize) {
    let c = &mut share["commitments"][entry][1];
    let hiding = c["hiding_comm"].take();
    assert!(!hiding.is_null(), "no commitments in {share}");
    c["hiding_comm"] = c["binding_comm"].take();
    c["binding_comm"] = hiding;
}

/// Issue 18: a signer whose FROST share is wrong is named by the aggregator, whatever the
/// fault (a bit of z, another run's share, another signer's share, its commitments changed),
/// for several paths and signer sets; the honest set still signs, verified by libsecp256k1.
/// The aggregator signs (as the node's coordinator does when it can): its own share is the
/// list it trusts. Lies that do not break aggregation (another signer's commitments listed
/// wrong) are caught by `verify_share` but cost nothing: aggregation still succeeds.
#[test]
fn a_bad_share_names_its_signer() {
    let shares = local::schnorr_keygen(3, 5).unwrap();
    for (path, set) in [
        ("m", [0u16, 2, 4]),
        ("m/0/3", [1, 2, 3]),
        ("m/1/9", [0, 3, 4]),
    ] {
        let path: DerivationPath = path.parse().unwrap();
        let signers = PartyIndex::list(&set);
        let sighash = [set[1] as u8 ^ 0x33; 32];
        let a = local::schnorr_signature_shares(&shares, &signers, &path, &sighash).unwrap();
        let b = local::schnorr_signature_shares(&shares, &signers, &path, &sighash).unwrap();
        let internal = shares[0].derive_public_key(&path).unwrap();
        let aggregate = |by: &SchnorrKeyShare, sig_shares: &[SchnorrSignatureShare]| {
            schnorr::aggregate(by, &path, &internal.x_only(), &sighash, sig_shares)
        };
        let aggregator = &shares[usize::from(set[0])];
        check(&aggregate(aggregator, &a).unwrap(), &internal.0, &sighash);
        let outsider = &shares[(0..5).find(|i| !set.contains(i)).unwrap() as usize];
        for k in 1..3 {
            let culprit = signers[k];
            let other = (k + 1) % 3;
            let faults = [
                ("z one bit off", altered(&a[k], flip_z), true),
                ("another run's share", b[k].clone(), false),
                (
                    "another signer's share",
                    altered(&a[other], |j| j["signer"] = json!(culprit.get())),
                    true,
                ),
                (
                    "its own commitments changed",
                    altered(&a[k], |j| swap_commitments(j, k)),
                    true,
                ),
            ];
            for (what, bad, fits_no_list) in faults {
                let mut sent = a.clone();
                sent[k] = bad.clone();
                let named = |by: &SchnorrKeyShare| match aggregate(by, &sent) {
                    Err(ProtocolError::BadSignatureShare { signer }) => Some(signer),
                    Err(ProtocolError::Combine(_)) => None,
                    other => panic!("{path} {set:?}, {what} by {culprit}: {other:?}"),
                };
                assert_eq!(named(aggregator), Some(culprit), "{path} {set:?}: {what}");
                // The share alone: rejected unless it is a whole share of another run, which
                // fits its own list and is caught only by the aggregator's.
                let alone = schnorr::verify_share(aggregator, &path, &sighash, &bad);
                assert_eq!(alone.is_ok(), !fits_no_list, "{path}: {what}: {alone:?}");
                // An aggregator that does not sign has no list of its own: it names the signer
                // only when the share fits no list.
                let expected = fits_no_list.then_some(culprit);
                assert_eq!(
                    named(outsider),
                    expected,
                    "{path} {set:?}: {what}, outsider"
                );
            }
            // A wrong entry for another signer in its list: aggregation uses each signer's own
            // commitments, so it succeeds, and the per-share check never runs.
            let lying = altered(&a[k], |j| swap_commitments(j, other));
            assert!(schnorr::verify_share(aggregator, &path, &sighash, &lying).is_err());
            let mut sent = a.clone();
            sent[k] = lying;
            check(
                &aggregate(aggregator, &sent).unwrap(),
                &internal.0,
                &sighash,
            );
        }
        // The aggregator's own share is bad: its own inputs are at fault, nobody is named.
        let mut sent = a.clone();
        sent[0] = altered(&a[0], flip_z);
        let err = aggregate(aggregator, &sent);
        assert!(matches!(err, Err(ProtocolError::Combine(_))), "{err:?}");
    }
}

/// The per-share check is not vacuous the other way either: it accepts every honest share, for
/// every signer set of 2-of-3 and several of 3-of-5, at the root and at derived paths (the HD
/// shift and the BIP-341 tweak with either parity), and rejects each one for another message,
/// another path or with one bit of z flipped.
#[test]
fn verify_share_accepts_every_honest_share() {
    let (mut accepted, mut rejected) = (0, 0);
    for (t, n) in [(2u16, 3u16), (3, 5)] {
        let shares = local::schnorr_keygen(t, n).unwrap();
        let sets: Vec<Vec<u16>> = mpc_testkit::subsets(n, usize::from(t))
            .into_iter()
            .take(4)
            .collect();
        for (k, set) in sets.iter().enumerate() {
            for path in ["m", "m/0/3", "m/1/9"] {
                let path: DerivationPath = path.parse().unwrap();
                let sighash = [k as u8 ^ t as u8; 32];
                let signers = PartyIndex::list(set);
                let sig_shares =
                    local::schnorr_signature_shares(&shares, &signers, &path, &sighash).unwrap();
                let other_path: DerivationPath = "m/0/4".parse().unwrap();
                for share in &sig_shares {
                    for by in &shares {
                        schnorr::verify_share(by, &path, &sighash, share)
                            .unwrap_or_else(|e| panic!("{t}-of-{n} {set:?} {path}: {e}"));
                        accepted += 1;
                    }
                    let flipped = altered(share, flip_z);
                    for (path, sighash, share) in [
                        (&path, [0xee; 32], share),
                        (&other_path, sighash, share),
                        (&path, sighash, &flipped),
                    ] {
                        let err = schnorr::verify_share(&shares[0], path, &sighash, share);
                        assert!(
                            matches!(err, Err(ProtocolError::BadSignatureShare { signer }) if signer == share.signer()),
                            "{err:?}"
                        );
                        rejected += 1;
                    }
                }
            }
        }
    }
    assert_eq!(
        (accepted, rejected),
        (3 * 3 * 2 * 3 + 4 * 3 * 3 * 5, (3 * 2 + 4 * 3) * 3 * 3)
    );
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

/// `sim::measured` counts what each party sent, once per recipient, and the runs it saw.
#[test]
fn measured_runs_count_each_partys_messages_and_cpu() {
    use mpc_protocols::sim;
    let (shares, keygen) = sim::measured(|| local::schnorr_keygen(3, 4).unwrap());
    assert_eq!(keygen.len(), 1, "one simulated run");
    assert_eq!(keygen[0].len(), 4, "one cost per party");
    let signers = PartyIndex::list(&[0, 2, 3]);
    let path: DerivationPath = "m/0/5".parse().unwrap();
    let (shares_out, signing) = sim::measured(|| {
        local::schnorr_signature_shares(&shares, &signers, &path, &[3; 32]).unwrap()
    });
    assert_eq!(shares_out.len(), 3);
    assert_eq!(signing.len(), 1);
    for party in &signing[0] {
        // One round among the signers: a commitment to each of the two others.
        assert_eq!(party.messages, 2);
        assert!(party.bytes > 0 && party.bytes % 2 == 0, "{party:?}");
        assert!(party.cpu > std::time::Duration::ZERO, "{party:?}");
    }
    // Outside `measured` nothing is recorded, and nesting keeps the runs apart.
    let ((_, inner), outer) = sim::measured(|| {
        local::schnorr_keygen(2, 3).unwrap();
        sim::measured(|| local::schnorr_keygen(2, 3).unwrap())
    });
    assert_eq!((outer.len(), inner.len()), (1, 1));
}
