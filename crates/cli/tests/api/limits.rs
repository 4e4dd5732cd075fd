//! The rate limits the processes were started with: node 2 per token, node 3 per client
//! address. A refused request starts nothing on any node.

use std::time::Duration;

use mpc_api::{
    routes::{KeygenRequest, PresignRequest, SignRequest},
    Role,
};
use mpc_bitcoin::{Chain, Scheme};
use mpc_wallet::client::{ApiClient, ClientError};
use serde_json::Value;

use crate::{
    common::join_all, payments::payment, Cluster, Wallets, IP_BURST, IP_RATE, TOKEN_BURST,
    TOKEN_RATE,
};

/// Protocol sessions the five nodes took part in, from their metrics.
async fn sessions(c: &Cluster) -> f64 {
    let mut total = 0.0;
    for id in 1..=5 {
        total += c.metrics(id).await.sum("mpc_sessions_seen", &[]);
    }
    total
}

/// The 429 of a refused request: its details and `Retry-After`.
fn rate_limited<T: std::fmt::Debug>(r: &Result<T, ClientError>, what: &str) -> (Value, u64) {
    match r {
        Err(ClientError::Api {
            status: 429,
            code,
            details,
            retry_after,
            ..
        }) if code == "rate_limited" => (
            details.clone(),
            retry_after.unwrap_or_else(|| panic!("{what}: 429 without Retry-After")),
        ),
        other => panic!("{what}: not rate limited: {other:?}"),
    }
}

/// Node 2: a token over its burst is refused with 429 and `Retry-After` on every route, and
/// what would have started a ceremony or a signing session started none; another token is
/// not affected; after `Retry-After` the token works again; and the CLI's client waits out a
/// 429 while polling a ceremony.
pub async fn per_token(c: &Cluster, w: &Wallets, psbt: &str) {
    let sessions_before = sessions(c).await;
    eprintln!("[api test] fact: protocol sessions seen by the 5 nodes before the burst: {sessions_before}");
    let m2_before = c.metrics(2).await;
    let admin = c.client(2, Role::Admin);
    let signer = c.client(2, Role::Signer);
    // Spend each token's burst on reads.
    for client in [&admin, &signer] {
        let mut ok = 0;
        loop {
            match client.wallets().await {
                Ok(_) => ok += 1,
                Err(ClientError::Api { status: 429, .. }) => break,
                Err(e) => panic!("GET /wallets on node 2: {e}"),
            }
            assert!(ok <= TOKEN_BURST + 1, "node 2 did not limit the token");
        }
        assert!(ok >= TOKEN_BURST - 1, "only {ok} requests before the limit");
    }
    // Then requests that would each start a session or a ceremony.
    let request = KeygenRequest::new(Scheme::Schnorr, "should not exist");
    let keygen_refusals = join_all((0..4).map(|_| admin.start_keygen(&request)).collect()).await;
    let aux = admin.start_aux_info(None).await;
    let presign = admin
        .start_presignatures(&w.eid, &PresignRequest::new("m/0/8", 1))
        .await;
    let to = w.tkey.chain_address(Chain::Receive, 5).unwrap();
    let pay = signer.send_payment(&payment(&w.eid, &to, 10_000)).await;
    let request = SignRequest {
        psbt: psbt.to_string(),
        additional_wallets: vec![w.tid.clone()],
    };
    let sign = signer.sign_psbt(&w.eid, &request).await;
    let mut retry_after = 0;
    let mut refusals = vec![
        rate_limited(&aux, "aux info"),
        rate_limited(&presign, "presignatures"),
        rate_limited(&pay, "payment"),
        rate_limited(&sign, "PSBT"),
    ];
    refusals.extend(keygen_refusals.iter().map(|r| rate_limited(r, "keygen")));
    for (details, secs) in &refusals {
        assert_eq!(details["limit"], "token");
        assert!(
            (1..=u64::from(TOKEN_BURST / TOKEN_RATE) + 1).contains(secs),
            "Retry-After {secs}"
        );
        retry_after = retry_after.max(*secs);
    }
    eprintln!(
        "[api test] fact: node 2 refused {} requests with 429, Retry-After up to {retry_after}",
        refusals.len()
    );
    c.client(2, Role::Viewer)
        .wallets()
        .await
        .expect("a fresh token on node 2");
    // Let any session that had been started show up, then compare.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m2_after = c.metrics(2).await;
    assert_eq!(
        m2_after.sum("mpc_ceremonies", &[]),
        m2_before.sum("mpc_ceremonies", &[]),
        "a refused request started a ceremony on node 2"
    );
    assert_eq!(m2_after.sum("mpc_ceremonies", &[]), 0.0);
    assert_eq!(
        sessions(c).await,
        sessions_before,
        "a refused request started a protocol session"
    );
    let limited =
        |m: &crate::common::Metrics| m.sum("mpc_api_rate_limited_total", &[("limit", "token")]);
    assert_eq!(
        limited(&m2_after) - limited(&m2_before),
        refusals.len() as f64 + 2.0,
        "every refusal counted (and the two that ended the read bursts)"
    );
    let keygen_429 = [("route", "/api/v1/keygen"), ("status", "429")];
    assert_eq!(m2_after.sum("mpc_api_requests_total", &keygen_429), 4.0);
    assert_eq!(
        m2_after.sum("mpc_ceremony_duration_seconds_count", &[]),
        0.0,
        "no ceremony ran through node 2"
    );
    let list = c.viewer.utxos(&w.eid, false).await.unwrap();
    assert_eq!(
        list.utxos[0].state, "available",
        "the refused payment reserved"
    );
    // After Retry-After the token works again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    admin
        .wallets()
        .await
        .expect("the limited token after Retry-After");

    // The CLI's client polls a ceremony every 50 ms: with its token's burst spent and 1.5 s
    // of refill (one request a second), key generation through node 2 is accepted and its
    // first poll is refused; the client waits out the 429 instead of failing.
    let throttled_before = limited(&c.metrics(2).await);
    let client = ApiClient::new(c.url(2), c.devnet.token(Role::Admin).ok());
    while client.wallets().await.is_ok() {}
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let created = client
        .keygen(&KeygenRequest::new(Scheme::Schnorr, "throttled"), None)
        .await
        .expect("a ceremony polled through the rate limit");
    assert_eq!(created["name"], "throttled", "{created}");
    let throttled = limited(&c.metrics(2).await) - throttled_before;
    eprintln!(
        "[api test] fact: the client's ceremony polls were refused {throttled} times and waited"
    );
    assert!(
        throttled >= 1.0,
        "no poll met the limit: the check proves nothing"
    );
}

/// Node 3 limits each address: fresh tokens do not help; `/healthz` is exempt.
pub async fn per_address(c: &Cluster) {
    tokio::time::sleep(Duration::from_secs(u64::from(IP_BURST / IP_RATE) + 1)).await;
    let clients: Vec<ApiClient> = (0..8).map(|_| c.client(3, Role::Viewer)).collect();
    let answers = join_all(clients.iter().map(|client| client.wallets()).collect()).await;
    let ok = answers.iter().filter(|r| r.is_ok()).count();
    eprintln!("[api test] fact: node 3 passed {ok} of 8 concurrent requests from one address");
    assert!(
        (1..=IP_BURST as usize + 1).contains(&ok),
        "{ok} of 8 requests passed a burst of {IP_BURST}"
    );
    for r in answers.iter().filter(|r| r.is_err()) {
        let (details, _) = rate_limited(r, "beyond the address limit");
        assert_eq!(details["limit"], "ip");
    }
    ApiClient::new(c.url(3), None)
        .healthz()
        .await
        .expect("healthz is not limited");
}
