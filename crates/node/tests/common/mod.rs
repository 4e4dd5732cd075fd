//! The in-memory cluster the node's test suites share: `n` nodes over the in-memory mesh,
//! each with a real SQLite store (in a temporary directory) and the fixture aux info.
#![allow(dead_code)] // each test binary uses its own part

use std::{sync::Arc, time::Duration};

use mpc_bitcoin::{policy::Policy, Scheme};
use mpc_node::{
    ceremony::CreateWallet,
    config::{ClusterConfig, NodeConfig, PeerEntry, StoreConfig, TlsConfig},
    Node,
};
use mpc_store::{KeySource, Store, Zeroizing};
use mpc_transport::{memory::MemoryNetwork, Router, RouterLimits, Transport};
use uuid::Uuid;

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub _dir: tempdir::TempDirGuard,
}

pub mod tempdir {
    pub struct TempDirGuard(pub std::path::PathBuf);
    impl Drop for TempDirGuard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    pub fn new() -> TempDirGuard {
        let p = std::env::temp_dir().join(format!("mpc-node-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        TempDirGuard(p)
    }
}

pub fn config(id: u16, n: u16, t: u16, dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        id,
        data_dir: dir.join(format!("node-{id}")),
        tls: TlsConfig {
            ca: "unused".into(),
            certificate: "unused".into(),
            private_key: "unused".into(),
        },
        store: StoreConfig {
            url: None,
            key_file: None,
        },
        cluster: ClusterConfig {
            threshold: t,
            network: "regtest".into(),
            nodes: (1..=n)
                .map(|i| PeerEntry {
                    id: i,
                    address: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                    api: None,
                })
                .collect(),
        },
        api: Default::default(),
        limits: Default::default(),
        primes: mpc_node::config::PrimesConfig {
            pool_target: 0,
            ..Default::default()
        },
        policy: Default::default(),
        pool: mpc_node::config::PoolConfig {
            enabled: false,
            ..Default::default()
        },
        coordination: Default::default(),
    }
}

pub async fn cluster(n: u16, t: u16) -> (Cluster, MemoryNetwork) {
    cluster_with(n, t, |_| Policy::default()).await
}

pub async fn cluster_with(
    n: u16,
    t: u16,
    policy: impl Fn(u16) -> Policy,
) -> (Cluster, MemoryNetwork) {
    cluster_configured(n, t, |cfg| cfg.policy = policy(cfg.id)).await
}

/// A cluster whose node configurations `configure` adjusts (policy, limits) before start.
pub async fn cluster_configured(
    n: u16,
    t: u16,
    configure: impl Fn(&mut NodeConfig),
) -> (Cluster, MemoryNetwork) {
    let dir = tempdir::new();
    let network = MemoryNetwork::new();
    let aux = mpc_testkit::aux_info(usize::from(n));
    let mut nodes = Vec::new();
    for id in 1..=n {
        let mut cfg = config(id, n, t, &dir.0);
        configure(&mut cfg);
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        let store = Store::open(
            &cfg.store_url(),
            &KeySource::Passphrase(Zeroizing::new(format!("passphrase of node {id}"))),
            id,
        )
        .await
        .unwrap();
        // Fixture aux info instead of the 40 s ceremony (the process test runs it for real).
        let ids: Vec<u16> = (1..=n).collect();
        let a = &aux[usize::from(id - 1)];
        store
            .put_aux_info(
                &ids,
                &a.to_bytes().unwrap(),
                &hex::encode(a.public_digest().unwrap()),
                Uuid::new_v4(),
            )
            .await
            .unwrap();
        let (router, control) = Router::new(id, RouterLimits::default());
        let transport: Arc<dyn Transport> = Arc::new(network.join(router.clone()));
        nodes.push(Node::with_transport(cfg, store, transport, router, control));
    }
    // Wait for heartbeats to make everyone live.
    for _ in 0..100 {
        if nodes.iter().all(|n| {
            n.health().live_nodes().len() == usize::from(n.config().cluster.nodes.len() as u16)
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Cluster { nodes, _dir: dir }, network)
}

pub fn wallet_request(name: &str, scheme: Scheme) -> CreateWallet {
    CreateWallet {
        name: name.into(),
        scheme,
        threshold: None,
        participants: None,
        network: None,
    }
}
