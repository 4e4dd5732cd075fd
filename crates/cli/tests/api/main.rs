//! The REST API and the CLI against five real node processes (QUIC + mutual TLS, one SQLite
//! store each), through real HTTP: what only processes can show. Wallets made over the mesh
//! and seen by every node; payments of both schemes through `/transactions`, concurrent ones
//! and their change, and a PSBT with a presignature, each verified independently
//! (bitcoinconsensus); the presignature pool; Prometheus metrics scraped from a process; the
//! rate limits the nodes were started with; the OpenAPI document a process serves; and the
//! `mpc-wallet` binary against a live node.
//!
//! The route × role matrix, every error code and every refusal a request can meet are tested
//! in process, in seconds, by mpc-api's tests (`routes.rs`, `errors.rs`, `refusals.rs`);
//! `routes.rs` also checks that every route of the OpenAPI document answers.
//!
//! One cluster serves the whole file (starting one costs CPU), so this is one test whose steps
//! run in order, each in its own module, each printing its time. The nodes start from the
//! checked-in aux info (`fixtures/aux-info-5.json`); the devnet runs that ceremony for real.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod limits;
mod payments;
mod served;
mod signing;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use common::Metrics;
use mpc_api::Role;
use mpc_bitcoin::WalletKey;
use mpc_wallet::{
    client::{ApiClient, ClientError},
    devnet::{Devnet, DevnetOptions},
};
use serde_json::Value;
use uuid::Uuid;

/// Node 2 limits each token to this sustained rate and burst.
pub const TOKEN_RATE: u32 = 1;
pub const TOKEN_BURST: u32 = 3;
/// Node 3 limits each client address to this sustained rate and burst.
pub const IP_RATE: u32 = 1;
pub const IP_BURST: u32 = 3;

/// Five node processes and clients of node 1 for each role.
pub struct Cluster {
    pub devnet: Devnet,
    pub dir: PathBuf,
    pub admin: ApiClient,
    pub signer: ApiClient,
    pub viewer: ApiClient,
}

impl Cluster {
    /// Node 2 limits each token, node 3 each client address (set through the environment
    /// `NodeConfig::load` reads); nodes 1, 4 and 5 keep the defaults.
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("mpc-api-test-{}", Uuid::new_v4()));
        let mut options =
            DevnetOptions::for_signing_tests(dir.clone(), env!("CARGO_BIN_EXE_mpc-wallet").into());
        options.aux_info_fixture = true;
        let mut devnet = Devnet::create_with_databases(options).await.unwrap();
        devnet.start(1).unwrap();
        let (rate, burst) = (TOKEN_RATE.to_string(), TOKEN_BURST.to_string());
        devnet
            .start_with_env(
                2,
                &[
                    ("MPC_WALLET_NODE__API__RATE_LIMIT_PER_SECOND", &rate),
                    ("MPC_WALLET_NODE__API__RATE_LIMIT_BURST", &burst),
                ],
            )
            .unwrap();
        let (ip_rate, ip_burst) = (IP_RATE.to_string(), IP_BURST.to_string());
        devnet
            .start_with_env(
                3,
                &[
                    ("MPC_WALLET_NODE__API__RATE_LIMIT_IP_PER_SECOND", &ip_rate),
                    ("MPC_WALLET_NODE__API__RATE_LIMIT_IP_BURST", &ip_burst),
                ],
            )
            .unwrap();
        devnet.start(4).unwrap();
        devnet.start(5).unwrap();
        let all: Vec<u16> = (1..=5).collect();
        devnet
            .wait_live(&all, 5, Duration::from_secs(90))
            .await
            .unwrap();
        Self {
            admin: devnet.client(1, Role::Admin).unwrap(),
            signer: devnet.client(1, Role::Signer).unwrap(),
            viewer: devnet.client(1, Role::Viewer).unwrap(),
            devnet,
            dir,
        }
    }

    /// A client of `node` with a fresh token of `role`.
    pub fn client(&self, node: u16, role: Role) -> ApiClient {
        self.devnet.client(node, role).unwrap()
    }

    pub fn url(&self, node: u16) -> String {
        self.client(node, Role::Viewer).base().to_string()
    }

    /// A request to node 1 by hand, for the headers the typed client does not return; the
    /// answer must have `status` and a content type starting with `content_type`.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        role: Role,
        (status, content_type): (u16, &str),
    ) -> reqwest::Response {
        let url = format!("{}{path}", self.url(1));
        let r = reqwest::Client::new()
            .request(method.parse().unwrap(), &url)
            .bearer_auth(self.devnet.token(role).unwrap())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let got = r.headers().get("content-type").cloned();
        assert!(
            got.as_ref()
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with(content_type)),
            "{method} {path}: content type {got:?}"
        );
        r
    }

    /// A node's metrics, waiting out its rate limit if need be.
    pub async fn metrics(&self, node: u16) -> Metrics {
        let what = format!("node {node}'s metrics");
        let text = patiently(&what, || async move {
            self.client(node, Role::Viewer).metrics().await
        })
        .await;
        Metrics::parse(&text)
    }
}

/// `call`'s answer, waiting out its 429s (node 3 limits each address, and starting the
/// cluster polled it).
pub async fn patiently<T, F, Fut>(what: &str, call: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    for _ in 0..10 {
        match call().await {
            Ok(answer) => return answer,
            Err(ClientError::Api {
                status: 429,
                retry_after,
                ..
            }) => tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await,
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what} stayed rate limited");
}

/// The two wallets the steps share, as the API returned them and as keys.
pub struct Wallets {
    pub ecdsa: Value,
    pub taproot: Value,
    pub eid: mpc_types::WalletId,
    pub tid: mpc_types::WalletId,
    pub ekey: WalletKey,
    pub tkey: WalletKey,
}

/// Each step's wall time, printed as it ends and summed up at the end.
struct Steps {
    started: Instant,
    step: Instant,
    done: Vec<(&'static str, f64)>,
}

impl Steps {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            step: Instant::now(),
            done: Vec::new(),
        }
    }

    fn done(&mut self, name: &'static str) {
        let secs = self.step.elapsed().as_secs_f64();
        eprintln!("[api test] {name}: {secs:.1} s");
        self.done.push((name, secs));
        self.step = Instant::now();
    }

    fn report(&self) {
        eprintln!(
            "[api test] total {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
        for (name, secs) in &self.done {
            eprintln!("[api test]   {name:<45} {secs:>7.1} s");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_and_cli_against_five_node_processes() {
    let mut steps = Steps::new();
    let cluster = Cluster::start().await;
    steps.done("start 5 node processes");
    served::openapi_document(&cluster).await;
    served::health_over_the_mesh(&cluster).await;
    steps.done("OpenAPI document and health");
    let wallets = served::wallets_on_every_node(&cluster).await;
    steps.done("keygen (CGGMP24, FROST), addresses, descriptors");
    let paid = payments::payments_of_both_schemes(&cluster, &wallets).await;
    steps.done("ECDSA and Taproot payments through /transactions");
    payments::change_spent_by_concurrent_payments(&cluster, &wallets, &paid).await;
    steps.done("change spent; concurrent payments");
    let psbt = signing::presignature_pool_and_psbt(&cluster, &wallets).await;
    steps.done("presignature pool; PSBT signing");
    signing::metrics_of_a_process(&cluster, &wallets).await;
    steps.done("metrics");
    limits::per_token(&cluster, &wallets, &psbt).await;
    steps.done("per-token rate limit (node 2)");
    limits::per_address(&cluster).await;
    steps.done("per-address rate limit (node 3)");
    cli::commands_against_a_live_node(&cluster, &wallets).await;
    steps.done("CLI");
    served::aux_info_is_never_replaced(&cluster).await;
    steps.done("aux info");
    let dir = cluster.dir.clone();
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    steps.report();
}
