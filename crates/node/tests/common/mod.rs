//! What the in-memory cluster tests share.

use std::sync::Arc;

use mpc_node::{config::NodeConfig, Node};
use mpc_store::{KeySource, Store, Zeroizing};
use mpc_transport::{memory::MemoryNetwork, Router, RouterLimits, Transport};

/// Opens node `cfg.id`'s store (under a passphrase of its own) and starts the node on
/// `network`, its store checked against its rollback guard file as every start does.
pub async fn start_node(cfg: NodeConfig, network: &MemoryNetwork) -> Node {
    let id = cfg.id;
    let store = Store::open(
        &cfg.store_url(),
        &KeySource::Passphrase(Zeroizing::new(format!("passphrase of node {id}"))),
        id,
    )
    .await
    .unwrap();
    let (router, control) = Router::new(id, RouterLimits::default());
    let transport: Arc<dyn Transport> = Arc::new(network.join(router.clone()));
    Node::with_transport(cfg, store, transport, router, control)
        .await
        .unwrap()
}
