//! The participants' fencing check (design invariant 10), with node 1 playing a compromised or
//! paused coordinator through `Node::coordinate`: a proposal whose token is not the current
//! holder's as etcd shows it is refused by every node and changes nothing they store, and the
//! legitimate holder's ceremonies go on.
//!
//! The etcd tests need a real etcd (`scripts/with-etcd` sets `MPC_TEST_ETCD_ENDPOINTS`); they
//! are skipped with a printed reason without it, failed if `MPC_REQUIRE_ETCD` is set. The
//! static-backend and unreachable-etcd cases need none.

use mpc_types::NodeId;
use std::time::Duration;

use mpc_bitcoin::Scheme;
use mpc_coordination::{BackendKind, ClusterBackend, CoordinationConfig, FencingToken};
use mpc_node::{
    config::{PoolConfig, PoolLimits},
    control::{ProposalBody, WalletSpec},
    locks::CEREMONY_LOCK,
    pool::POOL_ELECTION,
    refusal::RefusalKind,
    Node, NodeError,
};
use mpc_protocols::DerivationPath;
use uuid::Uuid;

use mpc_node::testing::{start, wallet_request, Cluster};

/// A token far above any revision etcd has reached: what a compromised peer would send.
const BOGUS: u64 = 1 << 60;

fn etcd_config(endpoints: Vec<String>) -> CoordinationConfig {
    CoordinationConfig {
        backend: BackendKind::Etcd,
        endpoints,
        // Every test its own prefix: tests (and earlier runs) share one etcd.
        prefix: format!("/mpc-fencing-test-{}", Uuid::new_v4().simple()),
        // Long: no lease should expire on a loaded machine here.
        lease_ttl_ms: 10_000,
    }
}

/// Three nodes (threshold 2) under the test etcd, with its configuration; `None` without one.
async fn etcd_cluster() -> Option<(Cluster, CoordinationConfig)> {
    let coordination = etcd_config(mpc_testkit::test_etcd_endpoints()?);
    Some((cluster(&coordination).await, coordination))
}

/// Three nodes (threshold 2) under `coordination`. The pool service runs (so the nodes
/// campaign for refill leadership) but keeps no presignatures.
async fn cluster(coordination: &CoordinationConfig) -> Cluster {
    start(3, 2, |cfg| {
        cfg.coordination = coordination.clone();
        cfg.pool = PoolConfig {
            interval_ms: 100,
            defaults: PoolLimits {
                target: 0,
                low_water: 0,
                ..Default::default()
            },
            ..Default::default()
        };
    })
    .await
}

/// A FROST key generation of nodes 1-3: needs no aux info, so runs in a moment if admitted.
fn keygen() -> ProposalBody {
    ProposalBody::Keygen {
        wallet: WalletSpec {
            id: mpc_types::WalletId::from_uuid(Uuid::new_v4()),
            name: "proposed".into(),
            scheme: Scheme::Schnorr,
            threshold: 2,
            participants: NodeId::must_list(&[1, 2, 3]),
            network: mpc_types::Network::Regtest,
        },
    }
}

/// `from` proposes `body` under `token` to each node of `to` alone, so that each call returns
/// once that node has decided; returns what each refused with, all refusals of `kind`.
async fn refusals_of(
    kind: RefusalKind,
    from: &Node,
    to: &[Node],
    body: &ProposalBody,
    token: u64,
) -> Vec<String> {
    let mut refused = Vec::new();
    for node in to {
        let result = from
            .coordinate(
                Uuid::new_v4(),
                body.clone(),
                &[node.id()],
                Duration::from_secs(10),
                Some(FencingToken(token)),
            )
            .await;
        match result {
            Err(NodeError::Refused { node: by, refusal }) if by == node.id() => {
                assert_eq!(refusal.kind, kind, "{refusal:?}");
                refused.push(refusal.message)
            }
            other => panic!("node {} did not refuse token {token}: {other:?}", node.id()),
        }
    }
    refused
}

/// Refusals of the fencing token itself.
async fn refusals(from: &Node, to: &[Node], body: &ProposalBody, token: u64) -> Vec<String> {
    refusals_of(RefusalKind::FencingTokenRefused, from, to, body, token).await
}

/// Asserts that every refusal says `what`.
fn all_say(refused: &[String], what: &str) {
    assert!(
        refused.iter().all(|r| r.contains(what)),
        "expected {what:?}: {refused:#?}"
    );
    println!("refused by every node: {}", refused[0]);
}

/// What each node has recorded for `resource`.
async fn recorded(nodes: &[Node], resource: &str) -> Vec<Option<u64>> {
    let mut tokens = Vec::new();
    for node in nodes {
        tokens.push(node.store().fencing_token(resource).await.unwrap());
    }
    tokens
}

async fn shutdown(cluster: Cluster) {
    for node in &cluster.nodes {
        node.shutdown().await;
    }
}

/// `coordinator` runs a legitimate keygen under the ceremony lock; then every node has recorded
/// one token, the lock's, below `BOGUS`.
async fn a_legitimate_keygen_runs_and_its_token_is_recorded(coordinator: &Node, nodes: &[Node]) {
    coordinator
        .create_wallet(
            Uuid::new_v4(),
            wallet_request("legitimate", Scheme::Schnorr),
        )
        .await
        .unwrap();
    let tokens = recorded(nodes, CEREMONY_LOCK).await;
    assert!(
        tokens
            .iter()
            .all(|t| *t == tokens[0] && t.is_some_and(|t| t < BOGUS)),
        "{tokens:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceremony_token_above_the_holders_is_refused_and_stores_nothing() {
    let Some((c, coordination)) = etcd_cluster().await else {
        return;
    };
    let compromised = &c.nodes[0];

    // Nobody holds the lock.
    let refused = refusals(compromised, &c.nodes, &keygen(), BOGUS).await;
    all_say(
        &refused,
        &format!("fencing token {BOGUS} for ceremony is ahead of every holder's: nobody holds it"),
    );
    // Someone holds it.
    let observer = ClusterBackend::from_config(&coordination, None)
        .await
        .unwrap();
    let holder = observer
        .lock(CEREMONY_LOCK, coordination.lease_ttl())
        .await
        .unwrap();
    let refused = refusals(compromised, &c.nodes, &keygen(), BOGUS).await;
    all_say(
        &refused,
        &format!("the current holder's token is {}", holder.token()),
    );
    holder.unlock().await.unwrap();
    assert_eq!(recorded(&c.nodes, CEREMONY_LOCK).await, [None, None, None]);
    assert!(c.nodes[0].store().wallets().await.unwrap().is_empty());

    // The bogus token changed nothing.
    a_legitimate_keygen_runs_and_its_token_is_recorded(&c.nodes[1], &c.nodes).await;
    shutdown(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_ceremony_token_is_refused_where_no_newer_holder_has_acted() {
    let Some((c, coordination)) = etcd_cluster().await else {
        return;
    };
    let observer = ClusterBackend::from_config(&coordination, None)
        .await
        .unwrap();
    let ttl = coordination.lease_ttl();
    // An earlier holder's token, and a newer holder that has not proposed anything yet.
    let earlier = observer.lock(CEREMONY_LOCK, ttl).await.unwrap();
    let old = earlier.token();
    earlier.unlock().await.unwrap();
    let newer = observer.lock(CEREMONY_LOCK, ttl).await.unwrap();

    let refused = refusals(&c.nodes[0], &c.nodes, &keygen(), old.0).await;
    all_say(
        &refused,
        &format!(
            "stale fencing token {old} for ceremony: the current holder's token is {}",
            newer.token()
        ),
    );
    assert_eq!(recorded(&c.nodes, CEREMONY_LOCK).await, [None, None, None]);
    newer.unlock().await.unwrap();
    shutdown(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_table_does_not_block_the_lock_holder() {
    let Some((c, _)) = etcd_cluster().await else {
        return;
    };
    // What older versions stored when a peer sent a huge token.
    for node in &c.nodes {
        node.store()
            .record_fencing_token(CEREMONY_LOCK, BOGUS)
            .await
            .unwrap();
    }
    // etcd's holder wins, and replaces the poisoned value.
    a_legitimate_keygen_runs_and_its_token_is_recorded(&c.nodes[0], &c.nodes).await;
    shutdown(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_proposal_needs_the_current_leaders_token_from_the_leader() {
    let Some((c, _)) = etcd_cluster().await else {
        return;
    };
    let mut leading = None;
    for _ in 0..200 {
        leading = c
            .nodes
            .iter()
            .find_map(|n| n.pool_leader_token().map(|t| (n.clone(), t)));
        if leading.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leader, token) = leading.expect("no refill leader elected");
    let other = c.nodes.iter().find(|n| n.id() != leader.id()).unwrap();
    let wallet = leader
        .create_wallet(Uuid::new_v4(), wallet_request("legitimate", Scheme::Ecdsa))
        .await
        .unwrap();
    let mut signers = vec![leader.id(), other.id()];
    signers.sort_unstable();
    let presign = ProposalBody::Presign {
        wallet_id: wallet.id.clone(),
        path: DerivationPath::root(),
        signers: signers.clone(),
        count: 1,
    };

    // The leader's token from another node; a token above the leader's; an older one.
    let refused = refusals(other, &c.nodes, &presign, token.0).await;
    all_say(
        &refused,
        &format!(
            "fencing token {token} for pool-refill is the leadership of candidate {}, but \
             candidate {} proposed under it",
            leader.id(),
            other.id()
        ),
    );
    let refused = refusals(&leader, &c.nodes, &presign, BOGUS).await;
    all_say(&refused, "ahead of every holder's");
    let refused = refusals(&leader, &c.nodes, &presign, token.0 - 1).await;
    all_say(&refused, &format!("stale fencing token {}", token.0 - 1));
    assert_eq!(recorded(&c.nodes, POOL_ELECTION).await, [None, None, None]);

    // The leader, with its token: presignatures are made, and the token recorded by signers.
    let report = leader
        .generate_presignatures(
            Uuid::new_v4(),
            &wallet.id,
            &DerivationPath::root(),
            1,
            Some(signers.clone()),
            Some(token),
        )
        .await
        .unwrap();
    assert_eq!(report.ids.len(), 1);
    for node in c.nodes.iter().filter(|n| signers.contains(&n.id())) {
        assert_eq!(
            node.store().fencing_token(POOL_ELECTION).await.unwrap(),
            Some(token.0)
        );
    }
    shutdown(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_read_etcd_refuses_fenced_proposals() {
    // Nothing listens there: etcd is down for every node.
    let c = cluster(&etcd_config(vec!["http://127.0.0.1:9".into()])).await;
    let refused = refusals_of(
        RefusalKind::CoordinationUnavailable,
        &c.nodes[0],
        &c.nodes,
        &keygen(),
        5,
    )
    .await;
    all_say(&refused, "etcd");
    assert_eq!(recorded(&c.nodes, CEREMONY_LOCK).await, [None, None, None]);
    shutdown(c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_static_backend_a_proposal_with_a_token_is_refused_and_stores_nothing() {
    let c = start(3, 2, |_| {}).await;
    let refused = refusals(&c.nodes[0], &c.nodes, &keygen(), BOGUS).await;
    all_say(&refused, "cannot be checked");
    assert_eq!(recorded(&c.nodes, CEREMONY_LOCK).await, [None, None, None]);
    // Proposals without a token go on as before.
    c.nodes[0]
        .create_wallet(
            Uuid::new_v4(),
            wallet_request("legitimate", Scheme::Schnorr),
        )
        .await
        .unwrap();
    assert_eq!(recorded(&c.nodes, CEREMONY_LOCK).await, [None, None, None]);
    shutdown(c).await;
}
