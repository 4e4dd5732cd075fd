//! What each route refuses before it starts anything, in process: forged tokens, malformed
//! queries and bodies, outputs that cannot be registered, payments and PSBTs a signer token
//! cannot get signed. Each refusal has the API's one error shape, and the node ran no ceremony
//! for any of them. (The process test, `mpc-wallet --test api`, keeps what needs processes.)

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
};
use base64::Engine;
use common::{cluster, metric_sum, Answer, Api, SECRET};
use mpc_api::Role;
use mpc_bitcoin::{
    bitcoin::{consensus, psbt::PsbtSighashType, Amount},
    build::{build_psbt, Payment, SpendableOutput},
    Chain, Scheme,
};
use mpc_node::testing::wallet;
use mpc_testkit::fund;
use serde_json::{json, Value};
use uuid::Uuid;

/// Asserts `a` is the API's error shape `{"error": {code, message, details}}`, as JSON, with
/// `status` and `code`; returns the details.
fn refused(a: &Answer, status: StatusCode, code: &str, what: &str) -> Value {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    assert!(
        a.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content type {:?}",
        a.content_type
    );
    let error = a.body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not the error shape: {}", a.body));
    assert_eq!(error["code"], code, "{what}: {}", a.body);
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        a.body
    );
    assert!(error.contains_key("details"), "{what}: {}", a.body);
    assert_eq!(a.body.as_object().map(|o| o.len()), Some(1), "{what}");
    a.body["error"]["details"].clone()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as the API expects them, valid for ten minutes.
fn claims(role: &str) -> Value {
    let now = now_s();
    json!({
        "sub": "refusals-test", "role": role, "iss": "mpc-wallet", "aud": "mpc-wallet-api",
        "iat": now, "exp": now + 600, "jti": Uuid::new_v4().to_string(),
    })
}

/// A compact JWT with `header` and `claims`, HMAC-SHA256 signed with `key` (or unsigned).
fn forge(header: &Value, claims: &Value, key: Option<&[u8]>) -> String {
    use hmac::Mac;
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key
        .map(|k| {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(k).unwrap();
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        })
        .unwrap_or_default();
    format!("{input}.{}", b64(&signature))
}

/// `claims("admin")` changed by `change`, signed with the cluster's secret.
fn admin_with(change: impl Fn(&mut Value)) -> String {
    let mut c = claims("admin");
    change(&mut c);
    forge(&json!({"alg": "HS256", "typ": "JWT"}), &c, Some(&SECRET))
}

async fn with_token(api: &Api, method: Method, path: &str, authorization: &str) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, authorization);
    let body = if path.ends_with("initiate") {
        request = request.header(header::CONTENT_TYPE, "application/json");
        Body::from(json!({"scheme": "frost", "name": "forged"}).to_string())
    } else {
        Body::empty()
    };
    api.send(request.body(body).unwrap()).await
}

/// The ceremonies node 1 recorded, from its metrics.
async fn ceremonies(api: &Api) -> f64 {
    let m = api
        .call(Method::GET, "/metrics", Some(Role::Viewer), None)
        .await;
    assert_eq!(m.status, StatusCode::OK);
    metric_sum(m.body.as_str().unwrap_or_default(), "mpc_ceremonies")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_and_refused_roles_start_nothing() {
    let c = cluster(|_| {}).await;
    let api = Api::of(&c.nodes[0]);
    let good = forge(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims("viewer"),
        Some(&SECRET),
    );
    // The hand-built token is right: the same construction with the real secret passes.
    let a = with_token(
        &api,
        Method::GET,
        "/api/v1/wallets",
        &format!("Bearer {good}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        let mut c = claims("viewer");
        c["role"] = json!("admin");
        parts[1] = b64(c.to_string().as_bytes());
        parts.join(".")
    };
    let bad_signature = {
        let (head, sig) = good.rsplit_once('.').unwrap();
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        raw[0] ^= 1;
        format!("{head}.{}", b64(&raw))
    };
    let forged = [
        (
            "expired",
            admin_with(|c| {
                c["iat"] = json!(now_s() - 3600);
                c["exp"] = json!(now_s() - 60);
            }),
        ),
        (
            "wrong audience",
            admin_with(|c| c["aud"] = json!("another-api")),
        ),
        ("wrong issuer", admin_with(|c| c["iss"] = json!("evil"))),
        (
            "alg none",
            forge(
                &json!({"alg": "none", "typ": "JWT"}),
                &claims("admin"),
                None,
            ),
        ),
        (
            "alg None",
            forge(
                &json!({"alg": "None", "typ": "JWT"}),
                &claims("admin"),
                None,
            ),
        ),
        ("tampered claims", tampered),
        ("tampered signature", bad_signature),
        (
            "HS256 with another secret",
            forge(
                &json!({"alg": "HS256", "typ": "JWT"}),
                &claims("admin"),
                Some(b"another secret of at least 32 bytes, not the cluster's"),
            ),
        ),
        (
            "no exp",
            admin_with(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        ("unknown role", admin_with(|c| c["role"] = json!("root"))),
        (
            "not yet valid",
            admin_with(|c| {
                c["nbf"] = json!(now_s() + 3600);
                c["exp"] = json!(now_s() + 7200);
            }),
        ),
        ("garbage", "not.a.jwt".to_string()),
        ("empty", String::new()),
    ];
    for (what, token) in &forged {
        for (method, path) in [
            (Method::GET, "/api/v1/wallets"),
            (Method::POST, "/api/v1/keygen"),
        ] {
            let a = with_token(&api, method.clone(), path, &format!("Bearer {token}")).await;
            refused(
                &a,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                &format!("{what} token on {method} {path}"),
            );
        }
    }
    // Without "Bearer ", a good token is no bearer token.
    let a = with_token(
        &api,
        Method::GET,
        "/api/v1/wallets",
        &format!("Token {good}"),
    )
    .await;
    refused(&a, StatusCode::UNAUTHORIZED, "unauthorized", "Token scheme");
    // Roles that may not start ceremonies start none either.
    for role in [Role::Viewer, Role::Signer] {
        for (path, body) in [
            ("/api/v1/aux-info", None),
            (
                "/api/v1/keygen",
                Some(json!({"scheme": "frost", "name": "x"})),
            ),
        ] {
            let a = api
                .call(Method::POST, path, Some(role), body.as_ref())
                .await;
            refused(
                &a,
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("{role:?} {path}"),
            );
        }
    }
    assert_eq!(
        ceremonies(&api).await,
        0.0,
        "a forged token or a refused role started one"
    );
}

fn registration(outputs: &[SpendableOutput]) -> Value {
    json!({"utxos": outputs.iter().map(|o| json!({
        "outpoint": o.outpoint.to_string(),
        "amount_sats": o.txout.value.to_sat(),
        "path": o.path.to_string(),
        "funding_transaction": o.funding_transaction.as_ref().map(consensus::encode::serialize_hex),
    })).collect::<Vec<_>>()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_before_anything_starts() {
    let c = cluster(|_| {}).await;
    let api = Api::of(&c.nodes[0]);
    let (eid, ekey) = wallet(&c, Scheme::Ecdsa).await;
    let (tid, tkey) = wallet(&c, Scheme::Schnorr).await;
    let ceremonies_before = ceremonies(&api).await;
    let (viewer, signer, admin) = (Some(Role::Viewer), Some(Role::Signer), Some(Role::Admin));

    // Key generation and ceremonies.
    let a = api
        .call(
            Method::POST,
            "/api/v1/keygen",
            admin,
            Some(&json!({"protocol": "rsa", "name": "x"})),
        )
        .await;
    refused(&a, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", "rsa");
    let a = api
        .call(
            Method::GET,
            &format!("/api/v1/ceremonies/{}", Uuid::new_v4()),
            viewer,
            None,
        )
        .await;
    refused(&a, StatusCode::NOT_FOUND, "not_found", "unknown ceremony");
    let a = api
        .call(
            Method::POST,
            &format!("/api/v1/wallets/{eid}/presignatures"),
            admin,
            Some(&json!({"path": "m/0/7", "count": 101})),
        )
        .await;
    refused(&a, StatusCode::BAD_REQUEST, "invalid_request", "101");
    // Resharing and repair: a committee no node would accept, a node outside the wallet.
    for (body, what) in [
        (
            json!({"participants": [1, 2, 3], "threshold": 1}),
            "threshold 1",
        ),
        (
            json!({"participants": [1, 2, 3], "threshold": 4}),
            "threshold 4 of 3",
        ),
        (json!({"participants": [1, 2, 9], "threshold": 2}), "node 9"),
        (
            json!({"participants": [1, 2, 2], "threshold": 2}),
            "node 2 twice",
        ),
    ] {
        let path = format!("/api/v1/wallets/{tid}/reshare");
        let a = api.call(Method::POST, &path, admin, Some(&body)).await;
        refused(
            &a,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            what,
        );
    }
    let path = format!("/api/v1/wallets/{tid}/repair");
    let a = api
        .call(Method::POST, &path, admin, Some(&json!({"node": 9})))
        .await;
    refused(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "repair node 9",
    );

    // Addresses.
    for (query, what) in [
        ("chain=sideways", "unknown chain"),
        ("count=0", "count 0"),
        ("count=1001", "count 1001"),
        ("from=2147483647&count=2", "hardened index"),
        ("from=-1", "negative index"),
    ] {
        let path = format!("/api/v1/wallets/{eid}/addresses?{query}");
        let a = api.call(Method::GET, &path, viewer, None).await;
        refused(&a, StatusCode::BAD_REQUEST, "invalid_request", what);
    }

    // The UTXO registry: bad entries are refused whole; the same data again is a no-op.
    let utxos = format!("/api/v1/wallets/{eid}/utxos");
    let e_funded = fund(&ekey, &[("m/0/0", 60_000), ("m/0/1", 40_000)]);
    for _ in 0..2 {
        let a = api
            .call(Method::POST, &utxos, signer, Some(&registration(&e_funded)))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        assert_eq!(a.body.as_array().map(Vec::len), Some(2), "{}", a.body);
    }
    let hex = |o: &SpendableOutput| {
        consensus::encode::serialize_hex(o.funding_transaction.as_ref().unwrap())
    };
    let other = fund(&ekey, &[("m/0/5", 1_000)]).remove(0);
    let outpoint = e_funded[0].outpoint;
    for (entry, what) in [
        (
            json!({"outpoint": outpoint.to_string(), "path": "m/0/0"}),
            "P2WPKH output without its funding transaction",
        ),
        (
            json!({"outpoint": outpoint.to_string(), "path": "m/0/0",
                   "funding_transaction": hex(&other)}),
            "funding transaction of another txid",
        ),
        (
            json!({"outpoint": outpoint.to_string(), "path": "m/0/0",
                   "amount_sats": 1, "funding_transaction": hex(&e_funded[0])}),
            "amount other than the funding transaction's",
        ),
        (
            json!({"outpoint": outpoint.to_string(), "path": "m/0/1",
                   "funding_transaction": hex(&e_funded[0])}),
            "funding output paying another path's script",
        ),
        (
            json!({"outpoint": outpoint.to_string(), "path": "m/0/0",
                   "funding_transaction": "00zz"}),
            "funding transaction that does not decode",
        ),
        (
            json!({"outpoint": "nope", "amount_sats": 1000, "path": "m/0/0"}),
            "bad outpoint",
        ),
        (
            json!({"outpoint": format!("{}:1", outpoint.txid), "amount_sats": 0, "path": "m/0/0"}),
            "zero amount",
        ),
        (
            json!({"outpoint": format!("{}:2", outpoint.txid), "amount_sats": 1000, "path": "m/0'/0"}),
            "hardened path",
        ),
    ] {
        let body = json!({ "utxos": [entry] });
        let a = api.call(Method::POST, &utxos, signer, Some(&body)).await;
        refused(
            &a,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            what,
        );
    }
    let a = api
        .call(Method::POST, &utxos, signer, Some(&json!({"utxos": []})))
        .await;
    refused(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "none",
    );
    let a = api
        .call(Method::GET, "/api/v1/wallets/nope/utxos", viewer, None)
        .await;
    refused(
        &a,
        StatusCode::NOT_FOUND,
        "not_found",
        "unknown wallet's outputs",
    );
    let a = api
        .call(
            Method::GET,
            &format!("{utxos}?include_spent=maybe"),
            viewer,
            None,
        )
        .await;
    refused(&a, StatusCode::BAD_REQUEST, "invalid_request", "maybe");

    // Payments: each refusal with its details, and nothing reserved.
    let to = tkey.chain_address(Chain::Receive, 5).unwrap().to_string();
    let pay = |wallet: &str, to: &str, amount: u64, rate: f64| json!({"wallet_id": wallet, "recipient": to, "amount_sats": amount, "fee_rate_sat_vb": rate});
    let mainnet = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq";
    for (body, status, code, details) in [
        (
            pay(eid.as_str(), &to, 5_000_000, 2.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_funds",
            json!({"available_sats": 100_000, "utxos": 2}),
        ),
        (
            pay(eid.as_str(), &to, 100, 2.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "dust_output",
            json!({"amount_sats": 100}),
        ),
        (
            pay(eid.as_str(), mainnet, 10_000, 2.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_network",
            json!({"expected": "regtest"}),
        ),
        (
            pay(eid.as_str(), &to, 10_000, 0.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_fee_rate",
            json!({}),
        ),
        (
            pay("no-such-wallet", &to, 10_000, 2.0),
            StatusCode::NOT_FOUND,
            "not_found",
            json!({}),
        ),
    ] {
        let a = api
            .call(Method::POST, "/api/v1/transactions", signer, Some(&body))
            .await;
        let got = refused(&a, status, code, code);
        for (k, v) in details.as_object().unwrap() {
            assert_eq!(&got[k], v, "{code}: {got}");
        }
        if code == "insufficient_funds" {
            assert!(got["needed_sats"].as_u64().unwrap() > 5_000_000, "{got}");
        }
    }
    let list = api.call(Method::GET, &utxos, viewer, None).await;
    assert_eq!(
        list.body["available_sats"], 100_000,
        "a refused payment reserved outputs"
    );

    // PSBTs: malformed bodies, then what a signer token cannot get signed.
    let sign = format!("/api/v1/wallets/{eid}/psbt/sign");
    let mixed_inputs: Vec<SpendableOutput> = fund(&ekey, &[("m/0/7", 50_000)])
        .into_iter()
        .chain(fund(&tkey, &[("m/0/3", 60_000)]))
        .collect();
    let mixed = build_psbt(
        &mixed_inputs,
        &[Payment {
            script_pubkey: tkey
                .chain_address(Chain::Receive, 9)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(108_000),
            owner: None,
        }],
    )
    .unwrap();
    let psbt = mixed.to_string();
    let garbage = base64::engine::general_purpose::STANDARD.encode(b"certainly not a PSBT");
    for (body, status, code, what) in [
        (
            json!({"psbt": "%%% not base64 %%%"}),
            StatusCode::BAD_REQUEST,
            "malformed_psbt",
            "bad base64",
        ),
        (
            json!({ "psbt": garbage }),
            StatusCode::BAD_REQUEST,
            "malformed_psbt",
            "garbage PSBT",
        ),
        (
            json!({"psbt": psbt, "fee": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "unknown field",
        ),
        (
            json!({"additional_wallets": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "missing psbt",
        ),
        (
            json!({"psbt": 7}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "psbt of the wrong type",
        ),
    ] {
        let a = api.call(Method::POST, &sign, signer, Some(&body)).await;
        refused(&a, status, code, what);
    }
    let truncated = Request::post(sign.as_str())
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", api.token(Role::Signer)),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"psbt\": "))
        .unwrap();
    let a = api.send(truncated).await;
    refused(
        &a,
        StatusCode::BAD_REQUEST,
        "invalid_body",
        "truncated JSON",
    );
    // The ECDSA wallet alone with a Taproot input it does not own.
    let a = api
        .call(Method::POST, &sign, signer, Some(&json!({ "psbt": psbt })))
        .await;
    let details = refused(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "psbt_refused",
        "foreign",
    );
    assert_eq!(details["inputs"][0]["input"], 1, "{details}");
    let mut weak = mixed.clone();
    weak.inputs[0].sighash_type = Some(PsbtSighashType::from_u32(0x82));
    let mut unproven = mixed.clone();
    unproven.inputs[0].non_witness_utxo = None;
    let mut dust = mixed.clone();
    dust.unsigned_tx.output[0].value = Amount::from_sat(1);
    for (bad, code, expected, what) in [
        (
            weak,
            "psbt_refused",
            json!({"input": 0, "code": "sighash_type_refused"}),
            "SIGHASH_NONE|ANYONECANPAY",
        ),
        (
            unproven,
            "psbt_refused",
            json!({"input": 0, "code": "amount_unproven"}),
            "amount without its previous transaction",
        ),
        (
            dust,
            "invalid_transaction",
            json!({"rule": "dust_output", "output": 0}),
            "dust output",
        ),
    ] {
        let body = json!({"psbt": bad.to_string(), "additional_wallets": [tid]});
        let a = api.call(Method::POST, &sign, signer, Some(&body)).await;
        let details = refused(&a, StatusCode::UNPROCESSABLE_ENTITY, code, what);
        let got = if code == "psbt_refused" {
            &details["inputs"][0]
        } else {
            &details
        };
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(&got[k], v, "{what}: {details}");
        }
    }
    assert_eq!(
        ceremonies(&api).await,
        ceremonies_before,
        "a refused request started a ceremony"
    );
}
