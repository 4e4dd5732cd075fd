//! Each error code a client can cause through the router, in process (`routes.rs` says how).

mod common;

use std::{collections::BTreeSet, net::SocketAddr};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{header, Method, Request, StatusCode},
};
use common::{cluster, payment, stranger, Answer, Api};
use mpc_api::{error::ErrorCode, Role};
use mpc_bitcoin::{
    bitcoin::{psbt::PsbtSighashType, Amount, Network},
    policy::Policy,
    Scheme,
};
use mpc_node::testing::wallet;
use mpc_types::NodeId;
use serde_json::{json, Value};

/// Each error code a client can cause through the router, with its status and details.
/// (`ErrorCode` values that need a failing peer, a timeout or etcd, such as
/// `signer_misbehaved`, `timeout` or `fencing_token_refused`, are mapped by the unit tests in
/// `error.rs` and caused by the node and process tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_codes_a_client_can_cause() {
    // Nodes 2 and 3 refuse more than 50 000 sats per transaction; node 1, which the client
    // talks to, does not: their refusal comes back typed, naming the node.
    let c = cluster(|cfg| {
        if cfg.id != NodeId::must(1) {
            cfg.policy = Policy {
                max_amount_per_tx_sats: Some(50_000),
                ..Policy::default()
            };
        }
    })
    .await;
    let api = Api::of(&c.nodes[0]);
    let (taproot_id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let (_, foreign) = mpc_testkit::schnorr_wallet(2, 3, Network::Regtest);
    let (viewer, signer, admin) = (Some(Role::Viewer), Some(Role::Signer), Some(Role::Admin));
    let sign_path = format!("/api/v1/wallets/{taproot_id}/psbt/sign");
    let sign = |psbt: String| json!({ "psbt": psbt });
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut expect = |a: Answer, status: StatusCode, code: &str, what: &str| -> Value {
        assert_eq!(a.status, status, "{what}: {}", a.body);
        assert_eq!(a.code(), code, "{what}: {}", a.body);
        assert!(
            a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        seen.insert(code.to_string());
        a.body["error"]["details"].clone()
    };

    // Who is calling.
    expect(
        api.call(Method::GET, "/api/v1/wallets", None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "no token",
    );
    let forged = Request::get("/api/v1/wallets")
        .header(header::AUTHORIZATION, "Bearer not.a.token")
        .body(Body::empty())
        .unwrap();
    expect(
        api.send(forged).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a token that does not verify",
    );
    expect(
        api.call(Method::POST, "/api/v1/aux-info", viewer, None)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "viewer starts aux info",
    );

    // The request's shape.
    expect(
        api.call(Method::GET, "/api/v1/nothing-here", viewer, None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route",
    );
    expect(
        api.call(Method::GET, "/api/v1/wallets/no-such-wallet", viewer, None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such wallet",
    );
    expect(
        api.call(Method::DELETE, "/api/v1/wallets", admin, None)
            .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "DELETE",
    );
    expect(
        api.call(Method::GET, "/api/v1/ceremonies/not-a-uuid", viewer, None)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "a ceremony id that is no UUID",
    );
    expect(
        api.call(
            Method::POST,
            "/api/v1/keygen",
            admin,
            Some(&json!({"protocol": "frost", "name": "x", "bogus": 1})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
        "an unknown field",
    );
    // An aux-info node set must be nodes of this cluster (1 to 3), sorted, unique, at least
    // two, with the node asked (1) among them: refused before any ceremony starts.
    for (node_set, what) in [
        (json!([1]), "one node"),
        (json!([2, 1]), "unsorted"),
        (json!([1, 1, 2]), "a node twice"),
        (json!([1, 9]), "a node outside the cluster"),
        (json!([2, 3]), "without the node asked"),
    ] {
        expect(
            api.call(
                Method::POST,
                "/api/v1/aux-info",
                admin,
                Some(&json!({ "node_set": node_set })),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            &format!("aux-info node set {node_set}: {what}"),
        );
    }
    expect(
        api.call(
            Method::POST,
            "/api/v1/aux-info",
            admin,
            Some(&json!({"nodes": [1, 2]})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
        "aux info with an unknown field",
    );
    let text = Request::post("/api/v1/keygen")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", api.token(Role::Admin)),
        )
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("frost please"))
        .unwrap();
    expect(
        api.send(text).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "text/plain",
    );
    let huge = json!({"psbt": "A".repeat(2 << 20)});
    expect(
        api.call(Method::POST, &sign_path, signer, Some(&huge))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "a 2 MiB body",
    );

    // Incidents: the filter, the limit, and the node to release.
    for (path, what) in [
        ("/api/v1/cluster/incidents?node=0", "node 0"),
        (
            "/api/v1/cluster/incidents?node=x",
            "a node that is no number",
        ),
        ("/api/v1/cluster/incidents?limit=0", "limit 0"),
        ("/api/v1/cluster/incidents?limit=1001", "limit over 1000"),
        ("/api/v1/cluster/incidents?bogus=1", "an unknown parameter"),
    ] {
        expect(
            api.call(Method::GET, path, viewer, None).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            what,
        );
    }
    for (path, status, code, what) in [
        (
            "/api/v1/cluster/incidents/0/release",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "release node 0",
        ),
        (
            "/api/v1/cluster/incidents/x/release",
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "release a node that is no number",
        ),
        (
            "/api/v1/cluster/incidents/9/release",
            StatusCode::NOT_FOUND,
            "not_found",
            "release a node not in the cluster",
        ),
    ] {
        expect(
            api.call(Method::POST, path, admin, None).await,
            status,
            code,
            what,
        );
    }
    expect(
        api.call(
            Method::POST,
            "/api/v1/cluster/incidents/2/release",
            signer,
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        "a signer releases a node",
    );
    // Checking evidence: any node's, copied into the body.
    for (body, status, code, what) in [
        (
            json!({"evidence": "not hex"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "evidence that is no hex",
        ),
        (
            json!({"evidence": "00", "node": 2}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "an unknown field next to the evidence",
        ),
        (
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "no evidence",
        ),
    ] {
        expect(
            api.call(
                Method::POST,
                "/api/v1/cluster/evidence/verify",
                viewer,
                Some(&body),
            )
            .await,
            status,
            code,
            what,
        );
    }
    // The listing checks each incident's evidence against this node's CA: bytes that are no
    // evidence are listed as not valid, with the reason; no evidence, no check.
    let incident_on = |evidence: Option<Vec<u8>>| {
        let node = &c.nodes[0];
        async move {
            let id = uuid::Uuid::new_v4();
            node.store()
                .record_incident(&mpc_store::IncidentRecord {
                    id,
                    accused: NodeId::must(3),
                    reporter: node.id(),
                    kind: mpc_store::IncidentKind::Misbehaved,
                    session: uuid::Uuid::new_v4(),
                    wallet_id: None,
                    at: 0,
                    detail: "recorded by the test".into(),
                    evidence,
                    released_at: None,
                })
                .await
                .unwrap();
            id
        }
    };
    let bad = incident_on(Some(b"not evidence".to_vec())).await;
    let none = incident_on(None).await;
    let listed = api
        .call(
            Method::GET,
            "/api/v1/cluster/incidents?node=3",
            viewer,
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let by_id = |id: uuid::Uuid| {
        listed.body["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == json!(id))
            .cloned()
            .unwrap()
    };
    let check = &by_id(bad)["evidence_check"];
    assert_eq!(check["valid"], json!(false), "{check}");
    assert!(check["reason"]
        .as_str()
        .is_some_and(|r| r.contains("malformed")));
    assert!(by_id(none)["evidence_check"].is_null());

    // What a signer checks.
    expect(
        api.call(
            Method::POST,
            &sign_path,
            signer,
            Some(&sign("garbage".into())),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "malformed_psbt",
        "not a PSBT",
    );
    let mut weak = payment(&tkey, 100_000, 10_000);
    weak.inputs[0].sighash_type = Some(PsbtSighashType::from_u32(0x02));
    let details = expect(
        api.call(
            Method::POST,
            &sign_path,
            signer,
            Some(&sign(weak.to_string())),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "psbt_refused",
        "SIGHASH_NONE",
    );
    assert_eq!(
        details["inputs"][0]["code"], "sighash_type_refused",
        "{details}"
    );
    let details = expect(
        api.call(
            Method::POST,
            &sign_path,
            signer,
            Some(&sign(payment(&foreign, 100_000, 10_000).to_string())),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "psbt_refused",
        "a foreign input",
    );
    assert_eq!(details["inputs"][0]["input"], 0, "{details}");
    let mut twice = payment(&tkey, 100_000, 10_000);
    twice
        .unsigned_tx
        .input
        .push(twice.unsigned_tx.input[0].clone());
    twice.inputs.push(twice.inputs[0].clone());
    twice.unsigned_tx.output[0].value += Amount::from_sat(100_000);
    let details = expect(
        api.call(
            Method::POST,
            &sign_path,
            signer,
            Some(&sign(twice.to_string())),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_transaction",
        "one output spent twice",
    );
    assert_eq!(
        details,
        json!({"rule": "duplicate_input", "input": 1, "output": null})
    );
    // Within node 1's policy, over the others': their refusal, typed, naming the signer.
    let details = expect(
        api.call(
            Method::POST,
            &sign_path,
            signer,
            Some(&sign(payment(&tkey, 100_000, 60_000).to_string())),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "policy_refused",
        "over the signers' limit",
    );
    assert_eq!(details["rule"], "max_amount_per_tx_sats", "{details}");
    assert!(
        [2, 3].contains(&details["node"].as_u64().unwrap()),
        "{details}"
    );

    // Payments from registered outputs.
    let utxos = format!("/api/v1/wallets/{taproot_id}/utxos");
    let outpoint = format!("{}:1", "cd".repeat(32));
    let entry = |sats: u64| json!({"utxos": [{"outpoint": outpoint, "amount_sats": sats, "path": "m/0/1"}]});
    let registered = api
        .call(Method::POST, &utxos, signer, Some(&entry(30_000)))
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    let details = expect(
        api.call(Method::POST, &utxos, signer, Some(&entry(31_000)))
            .await,
        StatusCode::CONFLICT,
        "utxo_conflict",
        "the same outpoint, another amount",
    );
    assert_eq!(details["outpoint"], outpoint.as_str(), "{details}");
    let pay = |recipient: &str, amount: u64, fee_rate: f64| json!({"wallet_id": taproot_id, "recipient": recipient, "amount_sats": amount, "fee_rate_sat_vb": fee_rate});
    let to = stranger().to_string();
    let mainnet = mpc_bitcoin::bitcoin::Address::from_script(
        &foreign.script_pubkey(&"m/0/0".parse().unwrap()).unwrap(),
        Network::Bitcoin,
    )
    .unwrap()
    .to_string();
    for (body, status, code, what) in [
        (
            pay("nonsense", 1_000, 2.0),
            StatusCode::BAD_REQUEST,
            "invalid_address",
            "not an address",
        ),
        (
            pay(&mainnet, 1_000, 2.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_network",
            "a mainnet address",
        ),
        (
            pay(&to, 100, 2.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "dust_output",
            "100 sats",
        ),
        (
            pay(&to, 0, 2.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            "0 sats",
        ),
        (
            pay(&to, 1_000, -1.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_fee_rate",
            "a negative fee rate",
        ),
        (
            pay(&to, 90_000, 2.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_funds",
            "more than registered",
        ),
    ] {
        expect(
            api.call(Method::POST, "/api/v1/transactions", signer, Some(&body))
                .await,
            status,
            code,
            what,
        );
    }

    // Rate limits: a token over its burst, and an address over its own.
    let mut config = c.nodes[1].config().api.clone();
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 2;
    config.rate_limit_ip_per_second = 1;
    config.rate_limit_ip_burst = 3;
    let limited = Api::with_config(&c.nodes[1], &config);
    let token = limited.token(Role::Viewer);
    let from = |ip: [u8; 4], token: &str| {
        let mut request = Request::get("/api/v1/wallets")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((ip, 40_000))));
        request
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(limited.send(from([10, 0, 0, 1], &token)).await);
    }
    assert_eq!(statuses[0].status, StatusCode::OK);
    assert_eq!(statuses[1].status, StatusCode::OK);
    let third = statuses.pop().unwrap();
    assert!(third.retry_after.is_some(), "429 without Retry-After");
    expect(
        third,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "a token over its burst",
    );
    // Another token from an address past its burst of 3: refused by the address's limit.
    let other = limited.token(Role::Signer);
    expect(
        limited.send(from([10, 0, 0, 1], &other)).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "an address over its burst",
    );

    // Every code seen is one the OpenAPI enum lists.
    let all: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    for code in &seen {
        assert!(all.contains(code.as_str()), "{code} is not an ErrorCode");
    }
    assert!(seen.len() >= 20, "{seen:?}");
    let caused_elsewhere: Vec<&&str> = all.iter().filter(|c| !seen.contains(**c)).collect();
    println!("codes caused here: {seen:?}; elsewhere: {caused_elsewhere:?}");
}
