//! The pool-refill leader under each coordination backend: the configured node (static), or a
//! lease-based election in a real etcd (`scripts/with-etcd` sets `MPC_TEST_ETCD_ENDPOINTS`;
//! skipped with a printed reason without it, failed if `MPC_REQUIRE_ETCD` is set).

use mpc_types::NodeId;
use std::time::Duration;

use mpc_coordination::{BackendKind, ClusterBackend, CoordinationConfig};
use mpc_node::{config::PoolConfig, Node};
use uuid::Uuid;

/// Three nodes (threshold 2) under `coordination`, with the pool service on.
async fn cluster(coordination: CoordinationConfig) -> mpc_node::testing::Cluster {
    mpc_node::testing::start(3, 2, |cfg| {
        cfg.coordination = coordination.clone();
        cfg.pool = PoolConfig {
            interval_ms: 100,
            ..Default::default()
        };
    })
    .await
}

fn leaders(nodes: &[Node]) -> Vec<NodeId> {
    nodes
        .iter()
        .filter(|n| n.is_pool_leader())
        .map(|n| n.id())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_backend_leader_is_the_configured_node() {
    let cluster = cluster(CoordinationConfig::default()).await;
    assert_eq!(leaders(&cluster.nodes), NodeId::must_list(&[1]));
    for node in &cluster.nodes {
        assert!(node.pool_leader_token().is_none());
        node.shutdown().await;
    }
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
    let cluster = cluster(coordination.clone()).await;
    let nodes = &cluster.nodes;

    // Exactly one leader, and etcd agrees on who and on its token.
    let mut current = Vec::new();
    for _ in 0..200 {
        current = leaders(nodes);
        if !current.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(current.len(), 1, "leaders: {current:?}");
    let first = current[0];
    let leader = &nodes[usize::from(first.get() - 1)];
    let token = leader.pool_leader_token().unwrap();
    let observer = ClusterBackend::from_config(&coordination, None)
        .await
        .unwrap();
    let info = observer.leader("pool-refill").await.unwrap().unwrap();
    assert_eq!(info.candidate, first.to_string());
    assert_eq!(info.token, token);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(leaders(nodes), vec![first], "leadership is stable");

    // The leader stops: another node leads within two lease periods, with a higher token.
    let stopped = std::time::Instant::now();
    leader.shutdown().await;
    let mut next = Vec::new();
    while stopped.elapsed() < Duration::from_millis(2 * ttl_ms) {
        next = leaders(nodes);
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
    let new_token = nodes[usize::from(next[0].get() - 1)]
        .pool_leader_token()
        .unwrap();
    assert!(new_token > token);
    for node in nodes {
        node.shutdown().await;
    }
}
