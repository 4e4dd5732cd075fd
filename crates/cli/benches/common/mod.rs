//! What the in-process benchmarks share: the backend's name and the fixture primes.

use mpc_protocols::ecdsa::PrimesFile;

pub const BACKEND: &str = if cfg!(feature = "backend-rug") {
    "rug"
} else {
    "num-bigint"
};

/// `fixtures/primes.json`: one set of primes per party, for up to nine parties.
pub fn fixture_primes() -> PrimesFile {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/primes.json");
    serde_json::from_slice(&std::fs::read(path).expect("fixture primes"))
        .expect("fixture primes parse")
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1)
}
