//! The alerting rules of `deploy/prometheus/alerts.yml` on live nodes: a real Prometheus
//! (Debian's `prometheus` package) scrapes three node processes every second and evaluates the
//! rules, with every `for:` shortened to two seconds (the expressions and the metrics behind
//! them are what is under test here; `promtool test rules` in scripts/check-deploy checks the
//! rules with their real durations). Nothing fires while the cluster is healthy; then each
//! alert that can be provoked on one machine is provoked and must fire: an ECDSA signing with
//! no presignature (`MpcSigningWithoutPresignatures`), bad tokens (`MpcApiAuthFailures`),
//! payments over the policy's limit (`MpcSigningRefusalsRising`), two nodes killed
//! (`MpcNodeDown`, and `MpcPeerUnreachable` from the node left), and an output registered that
//! no live signer set can make a presignature for (`MpcPoolBelowLowWater`).
//! `MpcPeerAuditLogChanged` needs a node's database rewritten (the in-memory cluster's test
//! does that); `MpcIncidentsRising` a misbehaving node (the adversary tests); `MpcSigningSlow`
//! and `MpcApiServerErrors` sustained trouble: their rules are covered by promtool's tests.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mpc_api::{
    routes::{KeygenRequest, SignRequest},
    Role,
};
use mpc_bitcoin::Scheme;
use mpc_wallet::{
    client::ApiClient,
    commands::wallet_id_of,
    devnet::{synthetic_payment, verify_answer, wallet_key_from_api, Devnet, DevnetOptions},
};
use nix::sys::signal::Signal;
use serde_json::Value;

mod common;
use common::{free_port, registration, which};

/// Prometheus, stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rules as shipped, each `for:` cut to two seconds.
fn rules_with_short_durations() -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/alerts.yml"
    ))
    .unwrap();
    let mut shortened = 0;
    let rules: Vec<String> = shipped
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for:") {
            Some(_) => {
                shortened += 1;
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}for: 2s")
            }
            None => line.to_owned(),
        })
        .collect();
    assert!(shortened >= 3, "the rules have `for:` durations to shorten");
    rules.join("\n")
}

fn start_prometheus(dir: &Path, targets: &[String], token: &str) -> Option<Prometheus> {
    let binary = match which("prometheus") {
        Some(binary) => binary,
        None if std::env::var_os("MPC_REQUIRE_PROMETHEUS").is_some() => {
            panic!("MPC_REQUIRE_PROMETHEUS is set but prometheus is not on PATH")
        }
        None => {
            eprintln!("prometheus not found (Debian's prometheus package): test skipped");
            return None;
        }
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("alerts.yml"), rules_with_short_durations()).unwrap();
    std::fs::write(dir.join("viewer.token"), token).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\n\
         scrape_configs:\n  - job_name: mpc-wallet\n    metrics_path: /metrics\n    \
         scrape_timeout: 900ms\n    authorization:\n      type: Bearer\n      \
         credentials_file: viewer.token\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Some(Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

/// Alerts firing now, by name; and every alert Prometheus has (pending ones too).
async fn alerts(prometheus: &Prometheus) -> (BTreeSet<String>, Vec<Value>) {
    let Ok(response) = reqwest::get(format!("{}/api/v1/alerts", prometheus.url)).await else {
        return (BTreeSet::new(), Vec::new());
    };
    let Ok(body) = response.json::<Value>().await else {
        return (BTreeSet::new(), Vec::new());
    };
    let all = body["data"]["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let firing = all
        .iter()
        .filter(|a| a["state"] == "firing")
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .collect();
    (firing, all)
}

/// Up to 90 s for `wanted` to be firing.
async fn wait_firing(prometheus: &Prometheus, wanted: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (firing, all) = alerts(prometheus).await;
        if wanted.iter().all(|w| firing.contains(*w)) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "not firing within 90 s: {wanted:?}; alerts now: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether Prometheus scraped every target successfully at least three times.
async fn scraped(prometheus: &Prometheus, targets: usize) -> bool {
    let query = format!(
        "{}/api/v1/query?query=count(count_over_time(up%5B1m%5D)%20%3E%3D%203%20and%20up%20%3D%3D%201)",
        prometheus.url
    );
    let Ok(response) = reqwest::get(query).await else {
        return false;
    };
    let Ok(body) = response.json::<Value>().await else {
        return false;
    };
    body["data"]["result"][0]["value"][1].as_str() == Some(&targets.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_that_can_be_provoked_here_fire_and_stay_quiet_otherwise() {
    let dir = std::env::temp_dir().join(format!("mpc-alerts-{}", uuid::Uuid::new_v4().simple()));
    let mut options = DevnetOptions::new(
        3,
        2,
        dir.join("devnet"),
        env!("CARGO_BIN_EXE_mpc-wallet").into(),
    );
    options.aux_info_fixture = true;
    // Node 1 leads refill; nothing is registered, so it makes nothing until the end.
    options.pool.enabled = true;
    options.policy.max_amount_per_tx_sats = Some(25_000);
    let mut devnet = Devnet::launch(options).await.unwrap();
    let targets: Vec<String> = (1..=3)
        .map(|id| {
            let client = devnet.client(id, Role::Viewer).unwrap();
            client.base().trim_start_matches("http://").to_owned()
        })
        .collect();
    let token = devnet.token(Role::Viewer).unwrap();
    let Some(prometheus) = start_prometheus(&dir.join("prometheus"), &targets, &token) else {
        return;
    };

    // Healthy: every node scraped a few times, and nothing fires or is even pending.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !scraped(&prometheus, targets.len()).await {
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape the nodes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, quiet) = alerts(&prometheus).await;
    assert!(quiet.is_empty(), "alerts on a healthy cluster: {quiet:?}");

    // An ECDSA signing with no presignature (the pool is off).
    let admin = devnet.client(1, Role::Admin).unwrap();
    let wallet = admin
        .keygen(&KeygenRequest::new(Scheme::Ecdsa, "alerts"), None)
        .await
        .unwrap();
    let (id, key) = (
        wallet_id_of(&wallet).unwrap(),
        wallet_key_from_api(&wallet).unwrap(),
    );
    let signer = devnet.client(1, Role::Signer).unwrap();
    let request =
        SignRequest::new(synthetic_payment(&[(&key, "m/0/0", 20_000)], &key, 9, 2_000).unwrap());
    let answer = signer.sign_psbt(&id, &request).await.unwrap();
    assert_eq!(answer["inputs"][0]["method"], "interactive");
    verify_answer(&answer).unwrap();

    // Eleven payments over the limit, refused by node 1 as coordinator.
    for k in 0..11 {
        let too_much = synthetic_payment(&[(&key, "m/0/1", 30_000)], &key, 20 + k, 2_000).unwrap();
        let refused = signer.sign_psbt(&id, &SignRequest::new(too_much)).await;
        assert!(refused.is_err(), "{refused:?}");
    }

    // Bad tokens at node 2: one, then (after a scrape saw the new series) 25 more.
    let forged = ApiClient::new(
        devnet.client(2, Role::Viewer).unwrap().base(),
        Some("not-a-token".into()),
    );
    assert!(forged.wallets().await.is_err());
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..25 {
        assert!(forged.wallets().await.is_err());
    }
    let all = wait_firing(
        &prometheus,
        &[
            "MpcSigningWithoutPresignatures",
            "MpcApiAuthFailures",
            "MpcSigningRefusalsRising",
        ],
    )
    .await;
    let names: BTreeSet<&str> = all
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    assert!(
        !names.contains("MpcPoolBelowLowWater") && !names.contains("MpcNodeDown"),
        "{all:?}"
    );

    // Nodes 2 and 3 killed: Prometheus cannot scrape them, node 1 stops hearing them, and an
    // output registered now gets no presignature (no live signer set).
    devnet.stop(3, Signal::SIGKILL).unwrap();
    devnet.stop(2, Signal::SIGKILL).unwrap();
    let funded = mpc_testkit::fund(&key, &[("m/0/4", 20_000)]);
    signer
        .register_utxos(&id, &registration(&funded))
        .await
        .unwrap();
    let firing = |all: &[Value], name: &str, label: &str| -> BTreeSet<String> {
        all.iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
            .filter_map(|a| a["labels"][label].as_str().map(str::to_owned))
            .collect()
    };
    // Each killed node's alerts fire on their own clock (node 2 went a moment after node 3):
    // wait until two of each fire, not only the first.
    let deadline = Instant::now() + Duration::from_secs(90);
    let all = loop {
        let all = wait_firing(
            &prometheus,
            &["MpcNodeDown", "MpcPeerUnreachable", "MpcPoolBelowLowWater"],
        )
        .await;
        if firing(&all, "MpcPeerUnreachable", "node").len() >= 2
            && firing(&all, "MpcNodeDown", "instance").len() >= 2
        {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "not both killed nodes within 90 s: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        firing(&all, "MpcPeerUnreachable", "node"),
        set(&["2", "3"]),
        "{all:?}"
    );
    assert_eq!(
        firing(&all, "MpcNodeDown", "instance"),
        set(&[&targets[1], &targets[2]])
    );
    assert_eq!(
        firing(&all, "MpcPoolBelowLowWater", "wallet"),
        set(&[id.as_str()])
    );
    eprintln!(
        "alerts: quiet on the healthy cluster; fired: MpcSigningWithoutPresignatures, \
         MpcApiAuthFailures, MpcSigningRefusalsRising, MpcNodeDown, MpcPeerUnreachable, \
         MpcPoolBelowLowWater"
    );
    drop(prometheus);
    drop(devnet);
    let _ = std::fs::remove_dir_all(&dir);
}
