//! The Bitcoin layer of mpc-wallet, with no network and no database.
//!
//! * [`keys`]: a wallet's public side: xpub, HD addresses (P2WPKH for ECDSA wallets, P2TR
//!   with an empty script tree for Schnorr wallets), watch-only descriptors.
//! * [`psbt`]: what a signer checks before it signs: each input's owner, path, spent output,
//!   and the sighash it computes itself.
//! * [`finalize`]: signatures into the PSBT, finalization, extraction.
//! * [`approval`]: the approval rule, the message an approver signs, and its check.
//! * [`build`]: unsigned PSBTs with the derivation records signers need.
//! * [`spend`]: paying from registered outputs: recipient checks, coin selection (BDK's),
//!   fee math, the unsigned PSBT with change to the wallet.
//! * [`local`]: signing a PSBT in one process (demo, tests, baseline benchmarks).
//! * [`validity`]: the consensus rules that need no chain and the relay policy, checked
//!   before signing.
//! * [`verify`]: the whole transaction through Bitcoin Core's script interpreter
//!   (`bitcoinconsensus`), with the spent outputs, plus standardness checks consensus omits.

pub mod approval;
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
pub use mpc_types::Network;
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

/// A rust-bitcoin network's name as ours ([`Network`]); "unknown" for one we do not serve.
pub fn network_name(network: bitcoin::Network) -> &'static str {
    Network::try_from(network).map_or("unknown", Network::as_str)
}
