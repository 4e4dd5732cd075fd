//! Multiplication by the generator in the protocol crates' curve arithmetic, against
//! libsecp256k1. Our patched `generic-ec-curves` (vendor/, see its PATCHED.md) routes
//! `G * k` through k256's precomputed table instead of its generic multiplication; every
//! FROST and CGGMP24 key, nonce commitment and HD shift goes through it, so it must agree
//! with an independent implementation for every scalar, including the edges of the range.

use bitcoin::secp256k1 as secp29;
use generic_ec::{curves::Secp256k1, Point, Scalar, SecretScalar};
use rand::RngCore;

/// `k * G` by generic-ec, compressed, for a nonzero `k` given big-endian.
fn generic_ec_mul(k: &[u8; 32]) -> [u8; 33] {
    let scalar = Scalar::<Secp256k1>::from_be_bytes(k).expect("k is below the group order");
    let point = Point::generator() * scalar;
    let mut out = [0u8; 33];
    out.copy_from_slice(point.to_bytes(true).as_bytes());
    out
}

fn libsecp_mul(k: &[u8; 32]) -> [u8; 33] {
    let secret = secp29::SecretKey::from_slice(k).expect("k is a valid secret key");
    secp29::PublicKey::from_secret_key(&secp29::Secp256k1::signing_only(), &secret).serialize()
}

#[test]
fn generator_multiplication_matches_libsecp256k1() {
    // n - 1, n - 2, and small scalars: the ends of the range and the table's first digits.
    let order_minus_one =
        hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364140").unwrap();
    let mut edges: Vec<[u8; 32]> = Vec::new();
    let mut top = [0u8; 32];
    top.copy_from_slice(&order_minus_one);
    edges.push(top);
    top[31] -= 1;
    edges.push(top);
    for small in [1u8, 2, 3, 15, 16, 17, 255] {
        let mut k = [0u8; 32];
        k[31] = small;
        edges.push(k);
    }
    // One set digit at every radix-16 position the table walks.
    for nibble in 0..64 {
        let mut k = [0u8; 32];
        k[31 - nibble / 2] = if nibble % 2 == 0 { 0x0f } else { 0xf0 };
        edges.push(k);
    }
    let mut rng = rand::thread_rng();
    let random = (0..500).map(|_| {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        k
    });
    let mut checked = 0;
    for k in edges.into_iter().chain(random) {
        if secp29::SecretKey::from_slice(&k).is_err() {
            continue; // at or above the order: not a scalar (probability ~2^-128)
        }
        assert_eq!(
            generic_ec_mul(&k),
            libsecp_mul(&k),
            "k * G differs for k = {}",
            hex::encode(k)
        );
        checked += 1;
    }
    assert!(checked > 500, "only {checked} scalars checked");

    // Zero gives the identity; a secret scalar takes the same path as a public one.
    assert!((Point::<Secp256k1>::generator() * Scalar::zero()).is_zero());
    let mut k = [0u8; 32];
    rng.fill_bytes(&mut k);
    let public = Scalar::<Secp256k1>::from_be_bytes_mod_order(k);
    let secret = SecretScalar::new(&mut public.clone());
    assert_eq!(
        Point::generator() * &secret,
        Point::generator() * public,
        "secret and public scalars multiply alike"
    );
}
