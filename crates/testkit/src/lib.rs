//! Test support shared by the workspace's test suites.
//!
//! Fixtures were generated once and checked in (safe primes take minutes on a 2-core
//! machine): `fixtures/primes.json` by `mpc-wallet primes generate`, and
//! `fixtures/aux-info-{2,3,5}.json` and `fixtures/aux-info-3-other-primes.json` by
//! `mpc-wallet aux-info generate`. They hold secrets and are
//! for tests only.

use std::path::PathBuf;

use mpc_bitcoin::{
    bitcoin::{Amount, Network},
    build::{synthetic_funding, SpendableOutput},
    Scheme, WalletKey,
};
use mpc_protocols::{
    ecdsa::{AuxInfo, AuxInfoFile, EcdsaKeyShare, Primes, PrimesFile},
    local,
    schnorr::SchnorrKeyShare,
};

/// The repository's `fixtures/` directory.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// `fixtures/vectors`: the BIP-340 and BIP-341 test vectors, copied into the repository
/// unchanged from the BIPs (`bip340-test-vectors.csv`, `bip341-wallet-test-vectors.json`).
pub fn vectors_dir() -> PathBuf {
    fixtures_dir().join("vectors")
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// This process's CPU time (user + system, all threads, finished ones included) in ms, from
/// /proc/self/stat (Linux; 10 ms resolution): what the benchmarks report as CPU.
pub fn process_cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the ")" that closes the command name: utime is the 12th, stime the 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks * 10.0 // USER_HZ is 100 on Linux
}

/// The nine fixture prime sets.
pub fn primes() -> Vec<Primes> {
    serde_json::from_slice::<PrimesFile>(&read(fixtures_dir().join("primes.json")))
        .expect("fixtures/primes.json parses")
        .primes
}

/// Fixture aux info for a node set of `n` (2, 3 or 5), from the first `n` prime sets.
pub fn aux_info(n: usize) -> Vec<AuxInfo> {
    load_aux_info(&format!("aux-info-{n}.json"), n)
}

/// Fixture aux info for 3 parties from prime sets 6 to 8, which no other aux-info fixture
/// uses: the new aux info (new Paillier keys) for a refresh of a wallet made with
/// `aux_info(3)`.
pub fn other_aux_info_3() -> Vec<AuxInfo> {
    load_aux_info("aux-info-3-other-primes.json", 3)
}

fn load_aux_info(name: &str, n: usize) -> Vec<AuxInfo> {
    let file: AuxInfoFile =
        serde_json::from_slice(&read(fixtures_dir().join(name))).expect("aux-info fixture parses");
    assert_eq!(file.aux_info.len(), n, "{name} has the wrong party count");
    file.aux_info
}

/// Whether libsecp256k1 (through rust-bitcoin) verifies the BIP-340 signature `sig` of
/// `sighash` by the BIP-341 output key of `internal` (compressed) with no script tree: an
/// implementation independent of givre's.
pub fn taproot_key_spend_verifies(sig: &[u8; 64], internal: &[u8; 33], sighash: &[u8; 32]) -> bool {
    use mpc_bitcoin::bitcoin::{key::TapTweak, secp256k1};
    let secp = secp256k1::Secp256k1::verification_only();
    let (Ok(internal), Ok(sig)) = (
        secp256k1::PublicKey::from_slice(internal),
        secp256k1::schnorr::Signature::from_slice(sig),
    ) else {
        return false;
    };
    let (output, _) = internal.x_only_public_key().0.tap_tweak(&secp, None);
    secp.verify_schnorr(
        &sig,
        &secp256k1::Message::from_digest(*sighash),
        &output.to_x_only_public_key(),
    )
    .is_ok()
}

/// Whether libsecp256k1 verifies the compact ECDSA signature `sig` of `sighash` by `key`
/// (compressed): an implementation independent of cggmp24's.
pub fn ecdsa_verifies(sig: &[u8; 64], key: &[u8; 33], sighash: &[u8; 32]) -> bool {
    use mpc_bitcoin::bitcoin::secp256k1;
    let secp = secp256k1::Secp256k1::verification_only();
    let (Ok(key), Ok(sig)) = (
        secp256k1::PublicKey::from_slice(key),
        secp256k1::ecdsa::Signature::from_compact(sig),
    ) else {
        return false;
    };
    secp.verify_ecdsa(&secp256k1::Message::from_digest(*sighash), &sig, &key)
        .is_ok()
}

/// All `k`-subsets of `0..n`, each sorted, in lexicographic order.
pub fn subsets(n: u16, k: usize) -> Vec<Vec<u16>> {
    fn go(start: u16, n: u16, k: usize, cur: &mut Vec<u16>, out: &mut Vec<Vec<u16>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            go(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    go(0, n, k, &mut Vec::new(), &mut out);
    out
}

/// A `t`-of-`n` ECDSA wallet (fixture aux info) and its public side.
pub fn ecdsa_wallet(t: u16, n: usize, network: Network) -> (Vec<EcdsaKeyShare>, WalletKey) {
    let shares = local::ecdsa_keygen(t, &aux_info(n)).expect("ECDSA keygen");
    let key = WalletKey::new(
        Scheme::Ecdsa,
        shares[0].public_key(),
        shares[0].chain_code().expect("HD key"),
        network,
    )
    .expect("valid key");
    (shares, key)
}

/// A `t`-of-`n` FROST wallet and its public side.
pub fn schnorr_wallet(t: u16, n: u16, network: Network) -> (Vec<SchnorrKeyShare>, WalletKey) {
    let shares = local::schnorr_keygen(t, n).expect("FROST keygen");
    let key = WalletKey::new(
        Scheme::Schnorr,
        shares[0].public_key(),
        shares[0].chain_code().expect("HD key"),
        network,
    )
    .expect("valid key");
    (shares, key)
}

/// Synthetic funding outputs of `wallet`, one per (path, sats): outputs of made-up
/// transactions (regtest only), each told apart by a fresh label.
pub fn fund(wallet: &WalletKey, outputs: &[(&str, u64)]) -> Vec<SpendableOutput> {
    outputs
        .iter()
        .map(|(path, sats)| {
            let label = format!("fund {path} {}", uuid::Uuid::new_v4());
            synthetic_funding(
                wallet,
                &path.parse().expect("a derivation path"),
                Amount::from_sat(*sats),
                &label,
            )
            .expect("synthetic funding")
        })
        .collect()
}

/// The environment variable `scripts/with-etcd` sets to its etcd's client URLs.
pub const ETCD_ENDPOINTS_ENV: &str = "MPC_TEST_ETCD_ENDPOINTS";

/// The etcd `scripts/with-etcd` started, or `None` after printing why the caller skips.
/// Panics instead when `MPC_REQUIRE_ETCD` is set (the test script sets it: there, a missing
/// etcd is a failure, not a skip).
pub fn test_etcd_endpoints() -> Option<Vec<String>> {
    let endpoints: Vec<String> = std::env::var(ETCD_ENDPOINTS_ENV)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        assert!(
            std::env::var_os("MPC_REQUIRE_ETCD").is_none(),
            "MPC_REQUIRE_ETCD is set but {ETCD_ENDPOINTS_ENV} is not"
        );
        eprintln!("skipped: {ETCD_ENDPOINTS_ENV} is not set (run under scripts/with-etcd)");
        return None;
    }
    Some(endpoints)
}
