//! The `mpc-wallet` command line: the local demo, fixtures, the node process, the devnet and
//! the API client. The binary (`main.rs`) parses arguments and calls into these modules; the
//! integration tests drive the same devnet.

pub mod audit;
pub mod backup;
pub mod client;
pub mod commands;
pub mod demo;
pub mod devnet;
pub mod fixtures;
pub mod node_cmd;
pub mod progress;
pub mod report;
