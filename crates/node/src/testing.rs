//! Test support (feature `test-support`, turned on only by test builds): a cluster of nodes
//! over the in-memory mesh, each with its own SQLite store holding the fixture aux info (so
//! ECDSA needs no 40 s ceremony; the process tests run it for real). The node's own tests and
//! the API's in-process tests share it. Panics on any failure: it is for tests only.

use mpc_types::WalletId;
use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::{
    ceremony::CreateWallet,
    config::{ClusterConfig, NodeConfig, PeerEntry, StoreConfig, TlsConfig},
    Node,
};
use mpc_bitcoin::Scheme;
use mpc_store::{KeySource, Store, Zeroizing};
use mpc_transport::{
    certs::{parse_certs, TlsIdentity},
    memory::MemoryNetwork,
    NodeId, NodeKey, Router, Transport,
};
use uuid::Uuid;

/// A running in-process cluster; its directory is removed when it is dropped.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub network: MemoryNetwork,
    dir: PathBuf,
}

impl Cluster {
    /// Restarts node `k` (0-based) on its store, with its config as `adjust` changes it: its
    /// tasks end (a wait for a decision among them) and it starts as any node does. Waits
    /// until every node hears every other.
    pub async fn restart(&mut self, k: usize, adjust: impl Fn(&mut NodeConfig)) {
        let node = self.nodes[k].clone();
        node.shutdown().await;
        self.network.disconnect(node.id());
        let mut cfg = node.config().clone();
        adjust(&mut cfg);
        self.nodes[k] = start_node(cfg, &self.network).await;
        wait_all_live(&self.nodes).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Node `id` of an `n`-node cluster with threshold `t`: static backend, pool off, no primes
/// pool. Its TLS files are under `dir/certs` ([`start`] writes them): the memory mesh signs
/// and checks every envelope with them, as the QUIC mesh does.
pub fn config(id: NodeId, n: u16, t: u16, dir: &std::path::Path) -> NodeConfig {
    let certs = dir.join("certs");
    NodeConfig {
        id,
        data_dir: dir.join(format!("node-{id}")),
        tls: TlsConfig {
            ca: mpc_transport::certs::ca_cert_path(&certs),
            certificate: mpc_transport::certs::node_cert_path(&certs, id),
            private_key: mpc_transport::certs::node_key_path(&certs, id),
        },
        store: StoreConfig {
            url: None,
            key_file: None,
            rollback_guard_file: None,
        },
        cluster: ClusterConfig {
            threshold: t,
            network: mpc_types::Network::Regtest,
            nodes: (1..=n)
                .filter_map(NodeId::new)
                .map(|i| PeerEntry {
                    id: i,
                    address: format!("127.0.0.1:{}", 7000 + i.get()).parse().unwrap(),
                    api: None,
                })
                .collect(),
        },
        api: Default::default(),
        limits: Default::default(),
        primes: crate::config::PrimesConfig {
            pool_target: 0,
            ..Default::default()
        },
        // Tests start the ceremony themselves (or hold the fixture aux info).
        aux_info: crate::config::AuxInfoConfig { auto: false },
        policy: Default::default(),
        pool: crate::config::PoolConfig {
            enabled: false,
            ..Default::default()
        },
        coordination: Default::default(),
        webhooks: Vec::new(),
        refresh: Default::default(),
    }
}

/// Starts nodes 1..=`n` (threshold `t`) with [`config`] as `adjust` changes it, and waits
/// until every node hears every other.
pub async fn start(n: u16, t: u16, adjust: impl Fn(&mut NodeConfig)) -> Cluster {
    start_with(n, t, adjust, Ceremony::FixtureAuxInfo).await
}

/// Like [`start`], but with no aux info: each node holds one fixture prime set instead, ready
/// for the aux-info ceremony (tens of seconds of CPU for three nodes).
pub async fn start_without_aux_info(n: u16, t: u16, adjust: impl Fn(&mut NodeConfig)) -> Cluster {
    start_with(n, t, adjust, Ceremony::FixturePrimes).await
}

/// Like [`start`], but with neither aux info nor primes: a fresh cluster.
pub async fn start_fresh(n: u16, t: u16, adjust: impl Fn(&mut NodeConfig)) -> Cluster {
    start_with(n, t, adjust, Ceremony::Nothing).await
}

/// What a test cluster's stores hold before it starts.
enum Ceremony {
    FixtureAuxInfo,
    FixturePrimes,
    Nothing,
}

async fn start_with(n: u16, t: u16, adjust: impl Fn(&mut NodeConfig), held: Ceremony) -> Cluster {
    let dir = std::env::temp_dir().join(format!("mpc-node-test-{}", Uuid::new_v4().simple()));
    let network = MemoryNetwork::new();
    mpc_transport::certs::init_cluster(&dir.join("certs"), n, |_| Vec::new(), 30).unwrap();
    let ids: Vec<NodeId> = (1..=n).filter_map(NodeId::new).collect();
    let mut nodes = Vec::new();
    for &id in &ids {
        let mut cfg = config(id, n, t, &dir);
        adjust(&mut cfg);
        cfg.validate().unwrap();
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        let node = start_node(cfg, &network).await;
        let k = usize::from(id.get() - 1);
        match held {
            // Fixture aux info instead of the 40 s ceremony (the process tests run it for real).
            Ceremony::FixtureAuxInfo => {
                let a = &mpc_testkit::aux_info(usize::from(n))[k];
                node.store()
                    .put_aux_info(
                        &ids,
                        &a.to_bytes().unwrap(),
                        &hex::encode(a.public_digest().unwrap()),
                        Uuid::new_v4(),
                    )
                    .await
                    .unwrap();
            }
            Ceremony::FixturePrimes => {
                let primes = mpc_testkit::primes();
                node.store()
                    .add_primes(&primes[k].to_bytes().unwrap())
                    .await
                    .unwrap();
            }
            Ceremony::Nothing => {}
        }
        nodes.push(node);
    }
    wait_all_live(&nodes).await;
    Cluster {
        nodes,
        network,
        dir,
    }
}

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
    let (router, control) = Router::new(id, cfg.limits.router());
    let identity =
        TlsIdentity::load(&cfg.tls.ca, &cfg.tls.certificate, &cfg.tls.private_key).unwrap();
    let key = NodeKey::from_pem(&identity.key_pem).unwrap();
    let cert = parse_certs(&identity.cert_pem).unwrap().remove(0);
    let transport: Arc<dyn Transport> = Arc::new(network.join(router.clone(), key, cert));
    Node::with_transport(cfg, store, transport, router, control)
        .await
        .unwrap()
}

/// Waits (at most 5 s) until every node hears every other.
pub async fn wait_all_live(nodes: &[Node]) {
    for _ in 0..100 {
        if nodes
            .iter()
            .all(|node| node.health().live_nodes().len() == nodes.len())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request for a wallet of `scheme` over every node, with the cluster's threshold.
pub fn wallet_request(name: &str, scheme: Scheme) -> CreateWallet {
    CreateWallet {
        name: name.into(),
        scheme,
        threshold: None,
        participants: None,
        network: None,
    }
}

/// A wallet of `scheme` created through node 1 (the cluster's threshold, every node), with
/// its public key.
pub async fn wallet(c: &Cluster, scheme: Scheme) -> (WalletId, mpc_bitcoin::WalletKey) {
    let n1 = &c.nodes[0];
    let created = n1
        .create_wallet(Uuid::new_v4(), wallet_request("w", scheme))
        .await
        .unwrap();
    let record = n1.store().wallet(&created.id).await.unwrap().unwrap();
    (created.id, crate::keys::wallet_key(&record).unwrap())
}

/// A PSBT spending one synthetic `funded` sat output of `key` at `path` (its funding told
/// apart by `label`) to `key`'s receive address `to`, `paid` sats.
pub fn spend(
    key: &mpc_bitcoin::WalletKey,
    path: &mpc_types::DerivationPath,
    funded: u64,
    label: &str,
    to: u32,
    paid: u64,
) -> String {
    use mpc_bitcoin::{
        bitcoin::Amount,
        build::{build_psbt, synthetic_funding, Payment},
        Chain,
    };
    let input = synthetic_funding(key, path, Amount::from_sat(funded), label).unwrap();
    let payment = Payment {
        script_pubkey: key
            .chain_address(Chain::Receive, to)
            .unwrap()
            .script_pubkey(),
        amount: Amount::from_sat(paid),
        owner: None,
    };
    build_psbt(&[input], &[payment]).unwrap().to_string()
}

/// A PSBT spending one synthetic 10 000 sat output of `key`'s first receive address (its
/// funding told apart by `label`) to its second, 9 000 sat.
pub fn spend_to_self(key: &mpc_bitcoin::WalletKey, label: &str) -> String {
    let first = mpc_bitcoin::Chain::Receive.path(0).unwrap();
    spend(key, &first, 10_000, label, 1, 9_000)
}

/// Delivers a `Control::Retire` notice to `node` as if `from` had sent it.
pub async fn retire_notice(node: &Node, from: NodeId, wallet_id: &WalletId, ids: Vec<String>) {
    node.retire_arrived(from, wallet_id.clone(), ids).await
}
