//! The pool-refill leader under each coordination backend: the configured node (static), or a
//! lease-based election in a real etcd (`scripts/with-etcd` sets `MPC_TEST_ETCD_ENDPOINTS`;
//! skipped with a printed reason without it, failed if `MPC_REQUIRE_ETCD` is set).

use std::time::Duration;

use mpc_coordination::{BackendKind, ClusterBackend, CoordinationConfig};
use mpc_node::{
    config::{ClusterConfig, NodeConfig, PeerEntry, PoolConfig, StoreConfig, TlsConfig},
    Node,
};
use mpc_transport::memory::MemoryNetwork;
use uuid::Uuid;

mod common;

fn config(id: u16, n: u16, dir: &std::path::Path, coordination: CoordinationConfig) -> NodeConfig {
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
            rollback_guard_file: None,
        },
        cluster: ClusterConfig {
            threshold: 2,
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
        pool: PoolConfig {
            interval_ms: 100,
            ..Default::default()
        },
        coordination,
    }
}

async fn nodes(n: u16, coordination: CoordinationConfig, dir: &std::path::Path) -> Vec<Node> {
    let network = MemoryNetwork::new();
    let mut nodes = Vec::new();
    for id in 1..=n {
        let cfg = config(id, n, dir, coordination.clone());
        cfg.validate().unwrap();
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        nodes.push(common::start_node(cfg, &network).await);
    }
    nodes
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mpc-pool-leader-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn leaders(nodes: &[Node]) -> Vec<u16> {
    nodes
        .iter()
        .filter(|n| n.is_pool_leader())
        .map(|n| n.id())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_backend_leader_is_the_configured_node() {
    let dir = temp_dir();
    let nodes = nodes(3, CoordinationConfig::default(), &dir).await;
    assert_eq!(leaders(&nodes), vec![1]);
    for node in &nodes {
        assert!(node.pool_leader_token().is_none());
        node.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_elects_one_leader_and_fails_over() {
    let Some(endpoints) = mpc_testkit::test_etcd_endpoints() else {
        return;
    };
    // Failover here is by shutdown (the lease is revoked at once); a long lease keeps a
    // loaded machine from losing leadership by a missed keep-alive.
    let ttl_ms = 5_000;
    let coordination = CoordinationConfig {
        backend: BackendKind::Etcd,
        endpoints,
        prefix: format!("/mpc-node-test-{}", Uuid::new_v4().simple()),
        lease_ttl_ms: ttl_ms,
    };
    let dir = temp_dir();
    let nodes = nodes(3, coordination.clone(), &dir).await;

    // Exactly one leader, and etcd agrees on who and on its token.
    let mut current = Vec::new();
    for _ in 0..200 {
        current = leaders(&nodes);
        if !current.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(current.len(), 1, "leaders: {current:?}");
    let first = current[0];
    let leader = &nodes[usize::from(first - 1)];
    let token = leader.pool_leader_token().unwrap();
    let observer = ClusterBackend::from_config(&coordination, None)
        .await
        .unwrap();
    let info = observer.leader("pool-refill").await.unwrap().unwrap();
    assert_eq!(info.candidate, first.to_string());
    assert_eq!(info.token, token);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(leaders(&nodes), vec![first], "leadership is stable");

    // The leader stops: another node leads within two lease periods, with a higher token.
    let stopped = std::time::Instant::now();
    leader.shutdown().await;
    let mut next = Vec::new();
    while stopped.elapsed() < Duration::from_millis(2 * ttl_ms) {
        next = leaders(&nodes);
        if !next.is_empty() && next != vec![first] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "pool refill leader: node {first} stopped, node(s) {next:?} lead after {:?}",
        stopped.elapsed()
    );
    assert_eq!(next.len(), 1, "leaders after failover: {next:?}");
    assert_ne!(next[0], first);
    let new_token = nodes[usize::from(next[0] - 1)].pool_leader_token().unwrap();
    assert!(new_token > token);
    for node in &nodes {
        node.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
