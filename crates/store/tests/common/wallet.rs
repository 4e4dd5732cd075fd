//! A wallet record for store tests and benches (shared by `#[path]`, so both use one).

use mpc_store::{WalletRecord, WalletState};
use mpc_types::{NodeId, WalletId};
use uuid::Uuid;

/// `id` as a wallet id.
pub fn wallet_id(id: &str) -> WalletId {
    WalletId::must(id)
}

/// A pending 2-of-3 ECDSA wallet record on nodes 1 to 3 (regtest), its keygen coordinated by
/// node 1, named after `id`. Its
/// public key is the generator, a valid point: the store decodes what it reads back.
pub fn wallet(id: &str) -> WalletRecord {
    WalletRecord {
        id: wallet_id(id),
        name: format!("wallet {id}"),
        scheme: mpc_types::Scheme::Ecdsa,
        threshold: 2,
        participants: NodeId::must_list(&[1, 2, 3]),
        network: mpc_types::Network::Regtest,
        public_key: "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
            .parse()
            .expect("the generator"),
        chain_code: [0xcc; 32].into(),
        state: WalletState::Pending,
        session: Uuid::new_v4(),
        created_at: 1_700_000_000_000,
        activated_at: None,
        key_epoch: 0,
        coordinator: Some(NodeId::must(1)),
    }
}
