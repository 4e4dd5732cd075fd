//! Approvals through the API in process (issue 20): a PSBT the node's rule covers answers 202
//! with a request id; a signer-role client cannot approve it without an approver's key (its
//! token counts for nothing); two approvers' signatures, posted with a viewer token, sign it;
//! one rejection ends another; a payment through `/transactions` waits, is signed once
//! approved, and its registered output is then spent.

mod common;

use axum::http::{Method, StatusCode};
use common::{cluster, payment, stranger, Api};
use ed25519_dalek::{Signer, SigningKey};
use mpc_api::Role;
use mpc_bitcoin::{
    approval::{approval_message, ApprovalPolicy, Approver, Decision},
    psbt::parse_psbt,
    Scheme,
};
use mpc_node::testing::wallet;
use serde_json::{json, Value};
use uuid::Uuid;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The decision body `key` signs for the request as the API shows it, built from its PSBT.
fn decision(key: &SigningKey, request: &Value, decision: Decision) -> Value {
    let psbt = parse_psbt(request["psbt"].as_str().unwrap()).unwrap();
    let wallets: Vec<mpc_types::WalletId> =
        serde_json::from_value(request["wallet_ids"].clone()).unwrap();
    let id: Uuid = request["request_id"].as_str().unwrap().parse().unwrap();
    let expires = request["expires_at_ms"].as_i64().unwrap();
    let message = approval_message(&psbt, &wallets, id, expires, decision).unwrap();
    if decision == Decision::Approve {
        assert_eq!(request["approval_message"], json!(hex::encode(&message)));
    }
    json!({
        "public_key": hex::encode(key.verifying_key().as_bytes()),
        "signature": hex::encode(key.sign(&message).to_bytes()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_until_two_approve_and_a_signer_token_cannot_approve() {
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let approvers = [("alice", &alice), ("bob", &bob), ("carol", &carol)]
        .iter()
        .map(|(name, k)| Approver {
            name: name.to_string(),
            public_key: hex::encode(k.verifying_key().as_bytes()),
        })
        .collect::<Vec<_>>();
    let c = cluster(|cfg| {
        cfg.policy.approvals = ApprovalPolicy {
            required: 2,
            approvers: approvers.clone(),
            ..ApprovalPolicy::default()
        }
    })
    .await;
    let api = Api::of(&c.nodes[0]);
    let (id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let sign_path = format!("/api/v1/wallets/{id}/psbt/sign");
    let submit = || {
        let body = json!({"psbt": payment(&tkey, 100_000, 10_000).to_string()});
        let (api, path) = (&api, sign_path.clone());
        async move {
            api.call(Method::POST, &path, Some(Role::Signer), Some(&body))
                .await
        }
    };

    let accepted = submit().await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let request = accepted.body.clone();
    let rid = request["request_id"].as_str().unwrap().to_owned();
    assert_eq!(accepted.location, Some(format!("/api/v1/requests/{rid}")));
    assert_eq!(
        (request["state"].as_str(), request["required"].as_u64()),
        (Some("pending"), Some(2))
    );
    let listed = api
        .call(
            Method::GET,
            "/api/v1/requests?state=pending",
            Some(Role::Viewer),
            None,
        )
        .await;
    assert_eq!(listed.body["requests"][0]["request_id"], json!(rid));

    // A signer-role client, with no approver's key: its own key, alice's key with its own
    // signature, or alice's key with garbage. Refused each time; nothing recorded.
    let approvals = format!("/api/v1/requests/{rid}/approvals");
    let intruder = key(42);
    let mut posing = decision(&intruder, &request, Decision::Approve);
    let own = posing.clone();
    posing["public_key"] = json!(hex::encode(alice.verifying_key().as_bytes()));
    let garbage = json!({
        "public_key": hex::encode(alice.verifying_key().as_bytes()),
        "signature": "00".repeat(64),
    });
    for body in [&own, &posing, &garbage] {
        let refused = api
            .call(Method::POST, &approvals, Some(Role::Signer), Some(body))
            .await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            refused.body
        );
        assert_eq!(refused.code(), "approval_invalid", "{}", refused.body);
    }
    let shown = api
        .call(
            Method::GET,
            &format!("/api/v1/requests/{rid}"),
            Some(Role::Viewer),
            None,
        )
        .await;
    assert_eq!(shown.body["decisions"], json!([]));
    assert_eq!(shown.body["state"], json!("pending"));

    // The approvers, through a viewer token: the signature is what counts.
    let first = api
        .call(
            Method::POST,
            &approvals,
            Some(Role::Viewer),
            Some(&decision(&alice, &request, Decision::Approve)),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.body["state"], json!("pending"));
    let second = api
        .call(
            Method::POST,
            &approvals,
            Some(Role::Viewer),
            Some(&decision(&bob, &request, Decision::Approve)),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["state"], json!("signed"), "{}", second.body);
    assert_eq!(second.body["signed"]["txid"], request["txid"]);
    let late = api
        .call(
            Method::POST,
            &approvals,
            Some(Role::Viewer),
            Some(&decision(&carol, &request, Decision::Approve)),
        )
        .await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "request_closed")
    );

    // Another request, rejected by one approver.
    let other = submit().await.body;
    let rejected = api
        .call(
            Method::POST,
            &format!(
                "/api/v1/requests/{}/rejections",
                other["request_id"].as_str().unwrap()
            ),
            Some(Role::Viewer),
            Some(&decision(&carol, &other, Decision::Reject)),
        )
        .await;
    assert_eq!(rejected.status, StatusCode::OK, "{}", rejected.body);
    assert_eq!(rejected.body["state"], json!("rejected"));

    // A payment from registered outputs waits the same way; once approved, it is signed and
    // the output it spends is marked spent.
    let registered = api
        .call(
            Method::POST,
            &format!("/api/v1/wallets/{id}/utxos"),
            Some(Role::Signer),
            Some(&json!({"utxos": [{
                "outpoint": format!("{}:0", "cd".repeat(32)),
                "amount_sats": 200_000,
                "path": "m/0/3",
            }]})),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.body
    );
    let paid = api
        .call(
            Method::POST,
            "/api/v1/transactions",
            Some(Role::Signer),
            Some(&json!({
                "wallet_id": id,
                "recipient": stranger().to_string(),
                "amount_sats": 20_000,
                "fee_rate_sat_vb": 2.0,
            })),
        )
        .await;
    assert_eq!(paid.status, StatusCode::ACCEPTED, "{}", paid.body);
    let payment_id = paid.body["request_id"].as_str().unwrap().to_owned();
    let approvals = format!("/api/v1/requests/{payment_id}/approvals");
    for approver in [&alice, &carol] {
        let answer = api
            .call(
                Method::POST,
                &approvals,
                Some(Role::Viewer),
                Some(&decision(approver, &paid.body, Decision::Approve)),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let done = api
        .call(
            Method::GET,
            &format!("/api/v1/requests/{payment_id}"),
            Some(Role::Viewer),
            None,
        )
        .await;
    assert_eq!(done.body["state"], json!("signed"), "{}", done.body);
    let utxos = api
        .call(
            Method::GET,
            &format!("/api/v1/wallets/{id}/utxos?include_spent=true"),
            Some(Role::Viewer),
            None,
        )
        .await;
    assert_eq!(
        utxos.body["utxos"][0]["state"],
        json!("spent"),
        "{}",
        utxos.body
    );
}
