//! Webhooks from a real node to a real HTTP receiver: signed with HMAC over the timestamp and
//! body, retried after a failure with the same delivery id, and only the events configured.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use mpc_bitcoin::{Chain, Scheme};
use mpc_node::webhooks::{signature, WebhookConfig, WebhookEvent};
use mpc_types::NodeId;
use serde_json::Value;
use uuid::Uuid;

use mpc_node::testing::{spend, spend_to_self, start, wallet};

const SECRET: &str = "webhook-secret-of-node-1";

/// What the receiver got: (headers, body), every attempt, failed ones included.
type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// An HTTP receiver that answers 503 to its first request and 200 to the others.
async fn receiver() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Received>, headers: HeaderMap, body: String| async move {
                    let mut got = got.lock().unwrap();
                    got.push((headers, body));
                    if got.len() == 1 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, received)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_and_refused_signings_are_posted_signed_with_hmac_and_retried() {
    let (address, received) = receiver().await;
    let secret_file = std::env::temp_dir().join(format!("mpc-hook-{}", Uuid::new_v4().simple()));
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let url = format!("http://{address}/hook");
    let c = start(3, 2, |cfg| {
        if cfg.id == NodeId::must(1) {
            cfg.webhooks = vec![WebhookConfig {
                url: url.clone(),
                secret_file: secret_file.clone(),
                events: vec![WebhookEvent::Signed, WebhookEvent::Refused],
                max_attempts: 3,
                timeout_ms: 2_000,
            }];
            // Refuses any payment over 15 000 sats (fee included), so a refusal can be provoked.
            cfg.policy.max_amount_per_tx_sats = Some(15_000);
        }
    })
    .await;
    let n1 = &c.nodes[0];
    let (id, key) = wallet(&c, Scheme::Schnorr).await;

    // Signed: 10 000 sats leave (9 000 paid, 1 000 fee), within node 1's policy.
    let report = n1
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&id),
            &spend_to_self(&key, "hook"),
        )
        .await
        .unwrap();
    // Refused by node 1's policy: 20 000 sats leave.
    let too_much = spend(
        &key,
        &Chain::Receive.path(0).unwrap(),
        20_000,
        "big",
        2,
        9_800,
    );
    let refusal = n1
        .sign_psbt(Uuid::new_v4(), std::slice::from_ref(&id), &too_much)
        .await
        .unwrap_err();
    assert!(
        refusal.to_string().contains("max_amount_per_tx"),
        "{refusal}"
    );

    let started = Instant::now();
    while received.lock().unwrap().len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "deliveries: {:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = received.lock().unwrap().clone();
    let _ = std::fs::remove_file(&secret_file);
    for (headers, body) in &got {
        let timestamp: u64 = header(headers, "x-mpc-timestamp").parse().unwrap();
        assert_eq!(
            Some(header(headers, "x-mpc-signature").to_owned()),
            signature(SECRET.as_bytes(), timestamp, body),
            "the signature checks with the secret"
        );
        assert_ne!(
            Some(header(headers, "x-mpc-signature").to_owned()),
            signature(b"another-secret-entirely", timestamp, body)
        );
        let json: Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["event"], header(headers, "x-mpc-event"));
        assert_eq!(json["delivery"], header(headers, "x-mpc-delivery"));
        assert_eq!(json["node"], 1);
        assert!(json["seq"].as_u64().unwrap() > 0);
    }
    // The first attempt failed (503) and was retried with the same delivery id and body.
    assert_eq!(
        header(&got[0].0, "x-mpc-delivery"),
        header(&got[1].0, "x-mpc-delivery")
    );
    assert_eq!(got[0].1, got[1].1);
    let signed: Value = serde_json::from_str(&got[1].1).unwrap();
    assert_eq!(signed["event"], "signed");
    assert_eq!(signed["kind"], "signing_finished");
    assert_eq!(signed["details"]["txid"], report.txid.to_string());
    let refusal: Value = serde_json::from_str(&got[2].1).unwrap();
    assert_eq!(refusal["event"], "refused");
    assert_eq!(refusal["details"]["ok"], false);
    assert!(refusal["details"]["rule"].is_string(), "{refusal}");
}
