//! Non-hardened HD derivation paths: the type is `mpc-types`' (every layer names a path), the
//! derivation is here, in the protocols that use it.

pub use mpc_types::{DerivationPath, HARDENED, MAX_DEPTH};
