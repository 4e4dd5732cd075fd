//! The Bitcoin layer of mpc-wallet, with no network and no database.
//!
//! * [`keys`]: a wallet's public side: xpub, HD addresses (P2WPKH for ECDSA wallets, P2TR
//!   with an empty script tree for Schnorr wallets), watch-only descriptors.
//! * [`psbt`]: what a signer checks before it signs: each input's owner, path, spent output,
//!   and the sighash it computes itself.
//! * [`finalize`]: signatures into the PSBT, finalization, extraction.
//! * [`build`]: unsigned PSBTs with the derivation records signers need.
//! * [`spend`]: paying from registered outputs: recipient checks, coin selection (BDK's),
//!   fee math, the unsigned PSBT with change to the wallet.
//! * [`local`]: signing a PSBT in one process (demo, tests, baseline benchmarks).
//! * [`validity`]: the consensus rules that need no chain and the relay policy, checked
//!   before signing.
//! * [`verify`]: the whole transaction through Bitcoin Core's script interpreter
//!   (`bitcoinconsensus`), with the spent outputs, plus standardness checks consensus omits.

pub mod build;
pub mod error;
pub mod finalize;
pub mod keys;
pub mod local;
pub mod policy;
pub mod psbt;
pub mod spend;
pub mod validity;
pub mod verify;

pub use bitcoin;
pub use error::{InputError, InputProblem, WalletError};
pub use keys::{Chain, Scheme, WalletKey};
pub use psbt::{analyze, JobMessage, SigningJob};
pub use validity::{TxProblem, TxRules};

/// The process's one libsecp256k1 verification context. With `rand-std`, rust-bitcoin's
/// `Secp256k1::verification_only()` re-randomises every new context (a point multiplication)
/// and was, per signing, more work than the derivations it served; verifying and deriving
/// public keys need no blinding, so one shared context does.
pub(crate) fn secp() -> &'static bitcoin::secp256k1::Secp256k1<bitcoin::secp256k1::VerifyOnly> {
    static SECP: std::sync::LazyLock<
        bitcoin::secp256k1::Secp256k1<bitcoin::secp256k1::VerifyOnly>,
    > = std::sync::LazyLock::new(bitcoin::secp256k1::Secp256k1::verification_only);
    &SECP
}

/// Parses a network name; accepts `mainnet` as well as rust-bitcoin's `bitcoin`.
pub fn parse_network(s: &str) -> Result<bitcoin::Network, WalletError> {
    match s {
        "mainnet" | "bitcoin" => Ok(bitcoin::Network::Bitcoin),
        "testnet" => Ok(bitcoin::Network::Testnet),
        "signet" => Ok(bitcoin::Network::Signet),
        "regtest" => Ok(bitcoin::Network::Regtest),
        other => Err(WalletError::UnknownNetwork(other.to_string())),
    }
}

/// The network's name as the CLI and API spell it.
pub fn network_name(network: bitcoin::Network) -> &'static str {
    match network {
        bitcoin::Network::Bitcoin => "mainnet",
        bitcoin::Network::Testnet => "testnet",
        bitcoin::Network::Signet => "signet",
        bitcoin::Network::Regtest => "regtest",
        _ => "unknown",
    }
}
