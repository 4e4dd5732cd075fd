//! The cluster's ceremony lock in a real etcd, with four real node processes: two coordinators
//! asking for a keygen at once run one after the other, and a coordinator SIGSTOPped while it
//! holds the lock, past its lease, cannot complete its ceremony once resumed: every node checks
//! its fencing token against etcd and refuses it as stale. Also: each node keeps
//! its member record (addresses, certificate fingerprint) in etcd on a lease, gone while it is
//! stopped and back after, and each new wallet's public key is published there.
//!
//! Needs `scripts/with-etcd` (`MPC_TEST_ETCD_ENDPOINTS`); skipped with a printed reason
//! without it, failed if `MPC_REQUIRE_ETCD` is set. FROST keygen only: it needs no aux info, so
//! the test takes seconds.

use std::time::{Duration, Instant};

use mpc_api::routes::KeygenRequest;
use mpc_api::Role;
use mpc_bitcoin::Scheme;
use mpc_types::NodeId;
use std::collections::BTreeMap;

use mpc_coordination::{BackendKind, ClusterBackend, CoordinationConfig, EtcdBackend};
use mpc_transport::certs;
use mpc_wallet::{
    client::ApiClient,
    devnet::{Devnet, DevnetOptions},
};
use nix::sys::signal::Signal;
use serde_json::Value;
use uuid::Uuid;

/// Node 1 waits this long before each proposal it makes under the ceremony lock.
const HOLD_MS: u64 = 4_000;
const LEASE_MS: u64 = 2_000;

/// Starts a FROST keygen; returns the ceremony id.
async fn initiate(client: &ApiClient, name: &str, participants: Option<&[u16]>) -> String {
    let mut request = KeygenRequest::new(Scheme::Schnorr, name);
    if let Some(p) = participants {
        request.participants = Some(NodeId::must_list(p));
        request.threshold = Some(2);
    }
    let accepted = client
        .start_keygen(&request)
        .await
        .expect("keygen accepted");
    accepted.ceremony_id.to_string()
}

/// Polls a ceremony until it has finished; returns its record.
async fn finished(client: &ApiClient, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let record = client.ceremony_status(id).await.expect("ceremony record");
        let record = serde_json::to_value(record).expect("a ceremony record is JSON");
        if record["state"] == "succeeded" || record["state"] == "failed" {
            return record;
        }
        assert!(Instant::now() < deadline, "ceremony {id} still {record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_count(devnet: &Devnet, id: u16, needle: &str) -> usize {
    std::fs::read_to_string(devnet.node_dir(id).join("node.log"))
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// The records the nodes keep in etcd under `dir` (`members`, `wallets`), parsed.
async fn etcd_records(etcd: &ClusterBackend, dir: &str) -> BTreeMap<String, Value> {
    etcd.list(dir)
        .await
        .expect("etcd list")
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_slice(&v).expect("JSON record")))
        .collect()
}

/// Waits until `members/<id>` is present (or absent) in etcd.
async fn wait_member(etcd: &ClusterBackend, id: u16, present: bool, within: Duration) {
    let deadline = Instant::now() + within;
    while etcd_records(etcd, "members")
        .await
        .contains_key(&id.to_string())
        != present
    {
        assert!(
            Instant::now() < deadline,
            "members/{id} still {}present after {within:?}",
            if present { "not " } else { "" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wallet_names(client: &ApiClient) -> Vec<String> {
    let wallets: Value = client.wallets().await.expect("wallets");
    wallets
        .as_array()
        .or_else(|| wallets["wallets"].as_array())
        .expect("wallet list")
        .iter()
        .filter(|w| w["state"].as_str().unwrap_or("active") == "active")
        .filter_map(|w| w["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ceremony_at_a_time_and_a_paused_holder_is_fenced_off() {
    let Some(endpoints) = mpc_testkit::test_etcd_endpoints() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("mpc-lock-test-{}", Uuid::new_v4()));
    let mut options = DevnetOptions::new(
        4,
        2,
        dir.clone(),
        env!("CARGO_BIN_EXE_mpc-wallet-failpoints").into(),
    );
    options.pool.enabled = false;
    options.coordination = CoordinationConfig {
        backend: BackendKind::Etcd,
        endpoints,
        // A fresh prefix: other tests (and earlier runs) share this etcd.
        prefix: format!("/mpc-lock-test-{}", Uuid::new_v4().simple()),
        lease_ttl_ms: LEASE_MS,
    };
    let mut devnet = Devnet::create(options).expect("devnet files");
    let pause = format!("propose:fenced:{HOLD_MS}");
    devnet
        .start_with_env(1, &[("MPC_WALLET_PAUSE_AT", pause.as_str())])
        .expect("node 1");
    for id in 2..=4 {
        devnet.start(id).expect("node");
    }
    devnet
        .wait_live(&[1, 2, 3, 4], 4, Duration::from_secs(60))
        .await
        .expect("cluster live");
    let node1 = devnet.client(1, Role::Admin).expect("client 1");
    let node2 = devnet.client(2, Role::Admin).expect("client 2");
    let etcd = ClusterBackend::Etcd(
        EtcdBackend::connect(
            &devnet.options.coordination.endpoints,
            &devnet.options.coordination.prefix,
        )
        .await
        .expect("etcd"),
    );

    // ---- membership: every node registered itself, as its certificate and config say ------
    for id in 1..=4u16 {
        wait_member(&etcd, id, true, Duration::from_secs(20)).await;
    }
    let members = etcd_records(&etcd, "members").await;
    for node in &devnet.nodes {
        let member = &members[&node.id.to_string()];
        let config = mpc_node::NodeConfig::load(&node.config).expect("config");
        let pem = std::fs::read_to_string(&config.tls.certificate).expect("certificate");
        let cert = certs::parse_certs(&pem).expect("PEM");
        assert_eq!(member["certificate_sha256"], certs::fingerprint(&cert[0]));
        assert_eq!(member["address"], node.quic.to_string());
        assert_eq!(member["api"], node.api.to_string());
    }

    // ---- contention: node 2 asks while node 1 holds the lock --------------------------
    let first = initiate(&node1, "first", None).await;
    while log_count(&devnet, 1, "pause point reached") < 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = initiate(&node2, "second", None).await;
    let first = finished(&node1, &first, Duration::from_secs(60)).await;
    let second = finished(&node2, &second, Duration::from_secs(60)).await;
    assert_eq!(first["state"], "succeeded", "{first}");
    assert_eq!(second["state"], "succeeded", "{second}");
    let first_done = first["finished_at_ms"].as_i64().expect("finished_at");
    // Node 2's ceremony was requested while node 1's ran, and finished only after it: it
    // waited for the lock (without the lock it would finish seconds before node 1's).
    assert!(second["started_at_ms"].as_i64().expect("started_at") < first_done);
    assert!(
        second["finished_at_ms"].as_i64().expect("finished_at") > first_done,
        "node 2's keygen ran while node 1 held the ceremony lock: {first} / {second}"
    );
    assert!(log_count(&devnet, 2, "waiting for the ceremony lock") >= 1);
    println!(
        "contention: node 2 waited for node 1's ceremony, finishing {} ms after it",
        second["finished_at_ms"].as_i64().unwrap_or(0) - first_done
    );

    // ---- fencing: node 1 paused while it holds the lock, past its lease ----------------
    let stale = initiate(&node1, "stale", None).await;
    while log_count(&devnet, 1, "pause point reached") < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    devnet.signal(1, Signal::SIGSTOP).expect("SIGSTOP node 1");
    let stopped = Instant::now();
    // A stopped node's presence goes with its lease.
    wait_member(&etcd, 1, false, Duration::from_millis(3 * LEASE_MS)).await;
    // The lease expires unrenewed; node 2 then gets the lock and runs a keygen without node 1.
    tokio::time::sleep(Duration::from_millis(2 * LEASE_MS + 500)).await;
    let newer = initiate(&node2, "newer", Some(&[2, 3, 4])).await;
    let newer = finished(&node2, &newer, Duration::from_secs(60)).await;
    assert_eq!(newer["state"], "succeeded", "{newer}");
    devnet.signal(1, Signal::SIGCONT).expect("SIGCONT node 1");
    println!(
        "fencing: node 1 stopped for {:.1} s; node 2's keygen succeeded meanwhile",
        stopped.elapsed().as_secs_f64()
    );
    let stale = finished(&node1, &stale, Duration::from_secs(60)).await;
    assert_eq!(stale["state"], "failed", "{stale}");
    let error = stale["error"].as_str().unwrap_or_default();
    assert!(error.contains("stale fencing token"), "{error}");
    println!("fencing: node 1's resumed ceremony failed: {error}");

    // Nothing from the stale ceremony became active anywhere; the cluster still works.
    for id in 1..=4 {
        let client = devnet.client(id, Role::Admin).expect("client");
        let names = wallet_names(&client).await;
        assert!(
            !names.contains(&"stale".to_string()),
            "node {id}: {names:?}"
        );
        if id >= 2 {
            assert!(names.contains(&"newer".to_string()), "node {id}: {names:?}");
        }
    }
    devnet
        .wait_live(&[1, 2, 3, 4], 4, Duration::from_secs(30))
        .await
        .expect("node 1 back");
    let after = initiate(&node1, "after", None).await;
    let after = finished(&node1, &after, Duration::from_secs(60)).await;
    assert_eq!(after["state"], "succeeded", "{after}");
    // Back in etcd after its lease was lost, and every active wallet's public key is
    // published (by its coordinator) exactly as the nodes hold it; the stale one is not.
    wait_member(&etcd, 1, true, Duration::from_secs(20)).await;
    let published = etcd_records(&etcd, "wallets").await;
    let wallets: Value = node2.wallets().await.expect("wallets");
    let wallets = wallets.as_array().expect("wallet list");
    assert_eq!(published.len(), wallets.len(), "{published:?}");
    for w in wallets {
        let id = w["id"].as_str().expect("id");
        assert_eq!(published[id]["public_key"], w["public_key"], "{id}");
        assert_eq!(published[id]["participants"], w["participants"], "{id}");
    }
    println!(
        "etcd: members 1-4 registered with their certificate fingerprints; {} wallet keys published",
        published.len()
    );

    devnet.stop_all().expect("stop");
    let _ = std::fs::remove_dir_all(&dir);
}
