//! Threshold signing protocols for mpc-wallet, with no I/O.
//!
//! Every protocol here is an `async fn` over a [`round_based::Mpc`] party: the caller supplies
//! the delivery (an in-memory simulation in tests and benchmarks, the QUIC mesh in a node), and
//! the same code runs over both.
//!
//! * [`ecdsa`]: threshold ECDSA by CGGMP24 (primes, aux info, keygen, presignatures, signing).
//! * [`schnorr`]: FROST with the Bitcoin ciphersuite (BIP-340 signatures, BIP-341 tweak).
//! * [`refresh`]: key refresh for both schemes (new shares of the same key).
//! * [`reshare`]: resharing for both schemes (another committee or threshold, repair).
//! * [`dealing`]: the Feldman dealings, checks and verdicts refresh and resharing share.
//! * [`execution`]: execution ids that bind each run to its protocol, wallet, session and signers.
//! * [`hd`]: non-hardened derivation paths, shared by both schemes.
//! * [`sim`]: runs `n` parties in one process over in-memory channels.

#[cfg(not(any(feature = "backend-num-bigint", feature = "backend-rug")))]
compile_error!(
    "choose a big-number backend: enable mpc-protocols' feature backend-num-bigint or \
     backend-rug (binaries and mpc-testkit forward these as their own features)"
);

#[cfg(all(feature = "backend-num-bigint", feature = "backend-rug"))]
compile_error!(
    "enable exactly one big-number backend: with both on, cggmp24 silently uses the slower num-bigint"
);

pub mod dealing;
pub mod ecdsa;
pub mod encoding;
pub mod error;
pub mod execution;
pub mod hd;
pub mod local;
pub mod refresh;
pub mod reshare;
pub mod schnorr;
pub mod sha256d;
pub mod signature;
pub mod sim;

pub use error::ProtocolError;
pub use execution::{ExecutionId, ProtocolKind};
pub use hd::DerivationPath;

/// Index of a party among all key holders, as fixed at key generation (0-based).
pub use mpc_types::PartyIndex;

/// The signer set of one signing run: key-generation indices, sorted, exactly `t` of them.
pub type SignerSet = Vec<PartyIndex>;
