//! What the refresh and the resharing tests share: playing a cheating dealer, checking who
//! named it, and checking ECDSA signatures with libsecp256k1.

use generic_ec::{curves::Secp256k1, Scalar, SecretScalar};
use mpc_protocols::{
    dealing::DealerFault, ecdsa::SighashPreimage, signature::PublicKey, PartyIndex, ProtocolError,
};

/// The child keys the tests derive.
pub const PATHS: [&str; 4] = ["m", "m/0/0", "m/1/7", "m/0/3/5"];

/// What a refresh or a resharing must keep: the group key, the chain code and every child key
/// at [`PATHS`] (so every address and descriptor). A macro because the two share types have
/// these methods but no common trait.
macro_rules! key_side {
    ($share:expr) => {{
        let s = $share;
        let children: Vec<mpc_protocols::signature::PublicKey> = common::PATHS
            .iter()
            .map(|p| s.derive_public_key(&p.parse().unwrap()).unwrap())
            .collect();
        (s.public_key(), s.chain_code().unwrap(), children)
    }};
}

/// Adds one to a dealt share in flight.
pub fn plus_one(s: &mut SecretScalar<Secp256k1>) {
    let mut v = *s.as_ref() + Scalar::one();
    *s = SecretScalar::new(&mut v);
}

/// `accused` (a run index) is named by the parties in `found_by`, which saw its fault
/// themselves (`DealerCheated`), and by everyone else through their complaints
/// (`DealerAccused`); no party succeeds.
pub fn assert_named<T: std::fmt::Debug>(
    results: &[Result<T, ProtocolError>],
    accused: u16,
    found_by: &[u16],
    expected: DealerFault,
) {
    let accused = PartyIndex::new(accused);
    for (j, result) in (0u16..).zip(results) {
        match result {
            Err(ProtocolError::DealerCheated { dealer, fault }) => {
                assert!(found_by.contains(&j), "party {j} found a fault");
                assert_eq!((*dealer, *fault), (accused, expected), "party {j}");
            }
            Err(ProtocolError::DealerAccused {
                complainer,
                dealer,
                fault,
            }) => {
                assert!(!found_by.contains(&j), "party {j} should have found it");
                assert!(found_by.contains(&complainer.get()), "party {j}");
                assert_eq!((*dealer, *fault), (accused, expected), "party {j}");
            }
            other => panic!("party {j}: {other:?}"),
        }
    }
}

pub fn preimage(tag: &str) -> SighashPreimage {
    SighashPreimage::new(format!("a BIP-143 preimage stand-in: {tag}").into_bytes())
}

/// libsecp256k1 verifies the ECDSA signature against `key`.
pub fn ecdsa_verifies(
    sig: &mpc_protocols::signature::EcdsaSignature,
    key: &PublicKey,
    msg: &SighashPreimage,
) -> bool {
    mpc_testkit::ecdsa_verifies(&sig.to_compact(), &key.0, &msg.sighash())
}
