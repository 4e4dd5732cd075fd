//! The Grafana dashboard (`deploy/grafana/mpc-wallet.json`) and the alerting rules
//! (`deploy/prometheus/alerts.yml`) name only metrics the nodes export: every `mpc_...` name in
//! their PromQL is one of `Metrics::names()`, and that list covers every name a node's
//! `/metrics` served here, after wallets of both schemes, presignatures and a signing.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use common::{cluster, payment, Api};
use mpc_api::Role;
use mpc_bitcoin::Scheme;
use mpc_node::testing::wallet;
use serde_json::{json, Value};

fn deploy_file(path: &str) -> String {
    let full = format!("{}/../../deploy/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Every `mpc_[a-z0-9_]+` word of `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut i = 0;
    while let Some(at) = text[i..].find("mpc_") {
        let start = i + at;
        let mut end = start + 4;
        while end < bytes.len() && word(bytes[end]) {
            end += 1;
        }
        // Only a whole word: not the tail of another identifier.
        if start == 0 || !(word(bytes[start - 1]) || bytes[start - 1].is_ascii_uppercase()) {
            names.insert(text[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The PromQL expressions of every panel of the dashboard (and of its variables' queries).
fn dashboard_expressions(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            exprs.push(query.to_owned());
        }
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_name_only_metrics_the_nodes_export() {
    let c = cluster(|_| {}).await;
    let api = Api::of(&c.nodes[0]);
    let exported: BTreeSet<String> = mpc_api::Metrics::new()
        .unwrap()
        .names()
        .iter()
        .cloned()
        .collect();

    // A node's /metrics after some work: wallets of both schemes, presignatures, a signing.
    let (ecdsa_id, _) = wallet(&c, Scheme::Ecdsa).await;
    let (taproot_id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let presign = api
        .call(
            Method::POST,
            &format!("/api/v1/wallets/{ecdsa_id}/presignatures"),
            Some(Role::Admin),
            Some(&json!({"path": "m/0/0", "count": 1})),
        )
        .await;
    assert_eq!(presign.status, StatusCode::ACCEPTED, "{}", presign.body);
    let made = api
        .ceremony(presign.body["ceremony_id"].as_str().unwrap())
        .await;
    assert_eq!(made["state"], "succeeded", "{made}");
    let signed = api
        .call(
            Method::POST,
            &format!("/api/v1/wallets/{taproot_id}/psbt/sign"),
            Some(Role::Signer),
            Some(&json!({"psbt": payment(&tkey, 100_000, 10_000).to_string()})),
        )
        .await;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.body);
    let text = api
        .call(Method::GET, "/metrics", Some(Role::Viewer), None)
        .await
        .body;
    let served: BTreeSet<String> = text
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l[..l.find(['{', ' ']).unwrap_or(l.len())].to_owned())
        .collect();
    for family in [
        "mpc_presignatures_ready",
        "mpc_signing_duration_seconds_count",
        "mpc_peer_live",
        "mpc_incidents_total",
    ] {
        assert!(served.contains(family), "{family} not served: {served:?}");
    }
    let unlisted: Vec<&String> = served.difference(&exported).collect();
    assert!(
        unlisted.is_empty(),
        "served but not in Metrics::names(): {unlisted:?}"
    );

    let dashboard: Value =
        serde_json::from_str(&deploy_file("grafana/mpc-wallet.json")).expect("dashboard JSON");
    let exprs = dashboard_expressions(&dashboard);
    assert!(exprs.len() >= 10, "{exprs:?}");
    // The rules' expressions and texts, without the file's comments.
    let alerts: String = deploy_file("prometheus/alerts.yml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, text) in [
        ("deploy/grafana/mpc-wallet.json", exprs.join("\n")),
        ("deploy/prometheus/alerts.yml", alerts),
    ] {
        let named = metric_names(&text);
        assert!(!named.is_empty(), "{what} names no mpc_ metric");
        let unknown: Vec<&String> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics no node exports: {unknown:?}"
        );
    }
}

#[test]
fn metric_names_are_found_as_whole_words() {
    assert_eq!(
        metric_names("rate(mpc_a_total{x=\"mpc_not\"}[5m]) / notmpc_b + mpc_c_bucket"),
        ["mpc_a_total", "mpc_c_bucket", "mpc_not"]
            .map(String::from)
            .into()
    );
}
