//! A node of the mpc-wallet cluster.
//!
//! It wires the pure layers (protocols, bitcoin) to the transport and the store:
//! * [`node`]: start-up and shutdown, ceremony records, heartbeats and other background work.
//! * `proposals`: the proposal protocol over the control channel (propose, answer, commit or
//!   abort, acknowledge) and the dispatcher of control messages; [`round`] decides a round
//!   without I/O, and [`refusal`] is a participant's refusal as it travels.
//! * [`ceremony`]: aux info, key generation and presignatures, as coordinator and participant.
//! * [`signing`]: the signing coordinator and the signer, which checks the PSBT itself.
//! * [`pool`]: the presignature pool: background refill, levels and statistics.
//! * `ready`: the coordinator's memory of ready presignatures (a hint; signers decide).
//! * [`locks`]: the cluster's ceremony lock and the participants' fencing check.
//! * [`membership`]: members' presence and wallets' public keys in the cluster backend.
//! * [`delivery`]: runs a protocol over the mesh.
//! * [`approvals`]: requests that wait for human approvals (every signer checks them again).
//! * [`utxos`]: the UTXO registry and payments from it (coin selection, change, signing).

#[cfg(feature = "test-support")]
pub mod adversary;
pub mod approvals;
pub mod audit;
pub mod audit_heads;
pub mod ceremony;
mod change;
pub mod config;
pub mod control;
pub mod delivery;
pub mod error;
pub mod evidence;
pub mod failpoint;
pub mod health;
pub mod incidents;
pub mod keys;
pub mod locks;
pub mod membership;
pub mod node;
pub mod pool;
mod proposals;
mod ready;
pub mod refusal;
pub mod round;
pub mod signing;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod utxos;
pub mod webhooks;

pub use config::NodeConfig;
pub use error::NodeError;
pub use node::Node;

/// This build's version, reported in heartbeats and health.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
