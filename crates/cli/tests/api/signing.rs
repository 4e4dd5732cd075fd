//! A presignature made by the processes and used for a PSBT, and node 1's metrics of all the
//! steps so far.

use mpc_api::routes::{PresignRequest, SignRequest};
use mpc_bitcoin::{
    bitcoin::{consensus, Amount, Transaction, TxOut},
    build::{build_psbt, Payment, SpendableOutput},
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Chain,
};
use mpc_wallet::client::ClientError;

use mpc_testkit::fund;

use crate::{served::ceremony_succeeded, Cluster, Wallets};

/// A presignature for the ECDSA wallet's m/0/7, ready in the pool and in the metrics, then a
/// PSBT spending m/0/7 (with it) and a Taproot output (FROST), verified independently.
/// Returns the PSBT, which the rate-limit step sends again.
pub async fn presignature_pool_and_psbt(c: &Cluster, w: &Wallets) -> String {
    let accepted = c
        .admin
        .start_presignatures(&w.eid, &PresignRequest::new("m/0/7", 1))
        .await
        .unwrap();
    let record = ceremony_succeeded(c, &accepted.ceremony_id.to_string()).await;
    assert_eq!(record.kind, "presign");
    let stats = c.viewer.presignature_stats().await.unwrap();
    assert_eq!(stats["node"], 1);
    let pools = stats["wallets"].as_array().unwrap();
    assert!(
        pools.iter().all(|p| p["wallet_id"] != w.tid.as_str()),
        "pool stats are for ECDSA wallets only: {stats}"
    );
    let e_stats = pools
        .iter()
        .find(|p| p["wallet_id"] == w.eid.as_str())
        .unwrap_or_else(|| panic!("no pool stats for the ECDSA wallet: {stats}"));
    let level = e_stats["levels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == "m/0/7")
        .unwrap_or_else(|| panic!("no m/0/7 level: {e_stats}"));
    assert_eq!(level["ready"], 1);
    let signers: Vec<String> = level["signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let m = c.metrics(1).await;
    let signers = signers.join(",");
    let labels = [
        ("wallet", w.eid.as_str()),
        ("path", "m/0/7"),
        ("signers", signers.as_str()),
    ];
    assert_eq!(
        m.sum("mpc_presignatures_ready", &labels),
        1.0,
        "pool level in the metrics"
    );

    let inputs: Vec<SpendableOutput> = fund(&w.ekey, &[("m/0/7", 50_000)])
        .into_iter()
        .chain(fund(&w.tkey, &[("m/0/3", 60_000)]))
        .collect();
    let to = w.tkey.chain_address(Chain::Receive, 9).unwrap();
    let psbt = build_psbt(
        &inputs,
        &[Payment {
            script_pubkey: to.script_pubkey(),
            amount: Amount::from_sat(108_000),
            owner: None,
        }],
    )
    .unwrap()
    .to_string();
    let request = SignRequest {
        psbt: psbt.clone(),
        additional_wallets: vec![w.tid.clone()],
    };
    // A viewer may not sign (counted by the metrics step under the route's template).
    let refused = c.viewer.sign_psbt(&w.eid, &request).await;
    assert!(
        matches!(refused, Err(ClientError::Api { status: 403, .. })),
        "{refused:?}"
    );
    let signed = c.signer.sign_psbt(&w.eid, &request).await.expect("signed");
    let methods: Vec<&str> = signed["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["presignature", "frost"]);
    let signed_psbt = parse_psbt(signed["psbt"].as_str().unwrap()).unwrap();
    let tx: Transaction =
        consensus::encode::deserialize_hex(signed["raw_transaction"].as_str().unwrap()).unwrap();
    let funded: Vec<TxOut> = inputs.iter().map(|o| o.txout.clone()).collect();
    assert_eq!(spent_outputs(&signed_psbt).unwrap(), funded);
    verify_transaction(&tx, &funded).expect("bitcoinconsensus rejects the signed PSBT");
    assert_eq!(signed["txid"], tx.compute_txid().to_string());
    assert_eq!(signed["signers"].as_array().unwrap().len(), 3);
    psbt
}

/// Node 1's Prometheus text: every family with its type, requests counted by route template,
/// the four signings (three payments and the PSBT) by method, the ceremonies, the peers seen
/// over the mesh, and the presignature used.
pub async fn metrics_of_a_process(c: &Cluster, w: &Wallets) {
    let prometheus = (200, "text/plain; version=0.0.4");
    let r = c
        .raw("GET", "/metrics", mpc_api::Role::Viewer, prometheus)
        .await;
    let m = crate::common::Metrics::parse(&r.text().await.unwrap());
    for (name, kind) in [
        ("mpc_api_requests_total", "counter"),
        ("mpc_api_request_duration_seconds", "histogram"),
        ("mpc_signing_duration_seconds", "histogram"),
        ("mpc_ceremony_duration_seconds", "histogram"),
        ("mpc_peer_live", "gauge"),
        ("mpc_peer_last_heartbeat_timestamp_ms", "gauge"),
        ("mpc_peers_live", "gauge"),
        ("mpc_presignatures_ready", "gauge"),
        ("mpc_presignatures_consumed", "gauge"),
        ("mpc_ceremonies", "gauge"),
        ("mpc_sessions_seen", "gauge"),
    ] {
        assert!(m.has_type(name, kind), "no {kind} {name} in:\n{}", m.text);
    }
    // Request counters by route template, never by concrete path.
    let requests = |labels: &[(&str, &str)]| m.sum("mpc_api_requests_total", labels);
    assert!(
        requests(&[
            ("method", "GET"),
            ("route", "/api/v1/wallets"),
            ("status", "200")
        ]) >= 1.0
    );
    let sign = "/api/v1/wallets/{id}/psbt/sign";
    assert_eq!(requests(&[("route", sign), ("status", "403")]), 1.0);
    assert_eq!(requests(&[("route", sign), ("status", "200")]), 1.0);
    assert!(
        m.find("mpc_api_requests_total", &[])
            .all(|(l, _)| !l["route"].contains(w.eid.as_str())
                && !l["route"].contains(w.tid.as_str()))
    );
    assert!(
        m.sum(
            "mpc_api_request_duration_seconds_count",
            &[("route", "/api/v1/transactions")]
        ) >= 3.0
    );
    let signings = |labels: &[(&str, &str)]| m.sum("mpc_signing_duration_seconds_count", labels);
    assert_eq!(signings(&[]), 4.0);
    assert_eq!(signings(&[("method", "interactive")]), 1.0);
    assert_eq!(signings(&[("method", "frost")]), 2.0);
    assert_eq!(signings(&[("method", "mixed")]), 1.0);
    assert!(m.sum("mpc_signing_duration_seconds_sum", &[]) > 0.0);
    for (kind, n) in [("keygen", 2.0), ("presign", 1.0)] {
        let finished = [("kind", kind), ("outcome", "succeeded")];
        assert_eq!(m.sum("mpc_ceremony_duration_seconds_count", &finished), n);
        let recorded = [("kind", kind), ("state", "succeeded")];
        assert_eq!(m.sum("mpc_ceremonies", &recorded), n, "{kind}");
    }
    assert_eq!(m.sum("mpc_ceremonies", &[]), 3.0);
    assert_eq!(m.sum("mpc_peers_live", &[]), 5.0);
    for id in 1..=5 {
        let id = id.to_string();
        assert_eq!(m.sum("mpc_peer_live", &[("node", &id)]), 1.0, "peer {id}");
    }
    assert!(m.find("mpc_peer_last_heartbeat_timestamp_ms", &[]).count() >= 4);
    // The presignature was used for the PSBT.
    let at = [("wallet", w.eid.as_str()), ("path", "m/0/7")];
    assert_eq!(m.sum("mpc_presignatures_ready", &at), 0.0);
    assert_eq!(m.sum("mpc_presignatures_consumed", &at), 1.0);
    assert!(m.sum("mpc_sessions_seen", &[]) >= 1.0);
}
