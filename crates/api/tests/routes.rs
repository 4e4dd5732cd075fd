//! The API in process: the router answered through `tower::ServiceExt::oneshot`, over a
//! three-node cluster on the in-memory mesh (`mpc_node::testing`). Every route of the OpenAPI
//! document is called with no token and with each role (`errors.rs`: every error code a
//! client can cause; `refusals.rs`: what each route refuses before it starts anything). The
//! process test (`mpc-wallet --test api`) runs the same API over QUIC and real node processes.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use common::{cluster, payment, stranger, Api, ROLES};
use mpc_api::Role;
use mpc_bitcoin::Scheme;
use mpc_node::testing::wallet;
use mpc_types::NodeId;
use serde_json::{json, Value};

/// Who may call a route.
#[derive(Clone, Copy, Debug)]
enum Access {
    Public,
    Roles(&'static [Role]),
}

/// A route as the OpenAPI document names it, the path called, who may call it, the body sent
/// and the status the admitted roles get.
type RouteCase<'a> = (
    Method,
    &'static str,
    String,
    Access,
    Option<&'a Value>,
    StatusCode,
);

const READ: Access = Access::Roles(&[Role::Viewer, Role::Signer, Role::Admin]);
const SIGN: Access = Access::Roles(&[Role::Signer]);
const ADMIN: Access = Access::Roles(&[Role::Admin]);

/// Every route of the OpenAPI document, called with no token and with each role: refused with
/// `unauthorized` or `forbidden` exactly where the role table says, and answered in full for
/// the roles it admits (wallets created, outputs registered, transactions signed,
/// presignatures made, all through the router).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_role_as_documented() {
    let c = cluster(|_| {}).await;
    let api = Api::of(&c.nodes[0]);
    let (ecdsa_id, _) = wallet(&c, Scheme::Ecdsa).await;
    let (taproot_id, tkey) = wallet(&c, Scheme::Schnorr).await;

    let keygen = json!({"scheme": "frost", "name": "from-the-api"});
    let presign = json!({"path": "m/0/0", "count": 1});
    let sign = json!({"psbt": payment(&tkey, 100_000, 10_000).to_string()});
    let utxos = json!({"utxos": [{
        "outpoint": format!("{}:0", "ab".repeat(32)),
        "amount_sats": 200_000,
        "path": "m/0/3",
    }]});
    let send = json!({
        "wallet_id": taproot_id,
        "recipient": stranger().to_string(),
        "amount_sats": 20_000,
        "fee_rate_sat_vb": 2.0,
    });
    let reshare = json!({"participants": [1, 2, 3], "threshold": 2});
    let repair = json!({"node": 3});
    let w = |suffix: &str| format!("/api/v1/wallets/{taproot_id}{suffix}");
    // No approval rule here: no request to find (`approvals.rs` runs them for real).
    let request = |suffix: &str| format!("/api/v1/requests/{}{suffix}", uuid::Uuid::new_v4());
    let decision = json!({"public_key": "00".repeat(32), "signature": "00".repeat(64)});
    // Evidence to check (it does not verify: the answer says so, with 200).
    let evidence = json!({"evidence": hex::encode(b"not evidence")});
    // A ceremony to look at.
    let started = api
        .call(
            Method::POST,
            "/api/v1/keygen",
            Some(Role::Admin),
            Some(&keygen),
        )
        .await;
    let ceremony = format!(
        "/api/v1/ceremonies/{}",
        started.body["ceremony_id"].as_str().unwrap()
    );
    // In this order: outputs are registered before they are spent. aux-info runs last (it
    // starts the real ceremony, minutes of CPU).
    let routes: Vec<RouteCase> = vec![
        (
            Method::GET,
            "/healthz",
            "/healthz".into(),
            Access::Public,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/openapi.json",
            "/api/v1/openapi.json".into(),
            Access::Public,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/metrics",
            "/metrics".into(),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/cluster/health",
            "/api/v1/cluster/health".into(),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/cluster/incidents",
            "/api/v1/cluster/incidents?node=3&limit=10".into(),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/cluster/incidents/{node}/release",
            "/api/v1/cluster/incidents/3/release".into(),
            ADMIN,
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/cluster/evidence/verify",
            "/api/v1/cluster/evidence/verify".into(),
            READ,
            Some(&evidence),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/keygen",
            "/api/v1/keygen".into(),
            ADMIN,
            Some(&keygen),
            StatusCode::ACCEPTED,
        ),
        (
            Method::GET,
            "/api/v1/ceremonies/{id}",
            ceremony,
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/wallets",
            "/api/v1/wallets".into(),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/wallets/{id}",
            w(""),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/wallets/{id}/addresses",
            w("/addresses"),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/wallets/{id}/addresses/{index}/qr",
            w("/addresses/3/qr?chain=change"),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/wallets/{id}/descriptor",
            w("/descriptor"),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/wallets/{id}/presignatures",
            format!("/api/v1/wallets/{ecdsa_id}/presignatures"),
            ADMIN,
            Some(&presign),
            StatusCode::ACCEPTED,
        ),
        (
            Method::GET,
            "/api/v1/presignatures/stats",
            "/api/v1/presignatures/stats".into(),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/wallets/{id}/psbt/sign",
            w("/psbt/sign"),
            SIGN,
            Some(&sign),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/wallets/{id}/utxos",
            w("/utxos"),
            SIGN,
            Some(&utxos),
            StatusCode::CREATED,
        ),
        (
            Method::GET,
            "/api/v1/wallets/{id}/utxos",
            w("/utxos"),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/transactions",
            "/api/v1/transactions".into(),
            SIGN,
            Some(&send),
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/audit",
            "/api/v1/audit?since=2020-01-01T00:00:00Z&limit=1000".into(),
            READ,
            None,
            StatusCode::OK,
        ),
        // After the signings: a refresh that commits during a signing fails that signing.
        (
            Method::POST,
            "/api/v1/wallets/{id}/refresh",
            w("/refresh"),
            ADMIN,
            None,
            StatusCode::ACCEPTED,
        ),
        // Then (each waits for the ceremony lock) a resharing to the same committee and
        // threshold, and the repair of node 3 (dealt by nodes 1 and 2).
        (
            Method::POST,
            "/api/v1/wallets/{id}/reshare",
            w("/reshare"),
            ADMIN,
            Some(&reshare),
            StatusCode::ACCEPTED,
        ),
        (
            Method::POST,
            "/api/v1/wallets/{id}/repair",
            w("/repair"),
            ADMIN,
            Some(&repair),
            StatusCode::ACCEPTED,
        ),
        (
            Method::GET,
            "/api/v1/requests",
            "/api/v1/requests?state=pending".into(),
            READ,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/requests/{id}",
            request(""),
            READ,
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/api/v1/requests/{id}/approvals",
            request("/approvals"),
            READ,
            Some(&decision),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/api/v1/requests/{id}/rejections",
            request("/rejections"),
            READ,
            Some(&decision),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/api/v1/aux-info",
            "/api/v1/aux-info".into(),
            ADMIN,
            None,
            StatusCode::ACCEPTED,
        ),
    ];

    // The table covers the document, and the document the table.
    let doc = api
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .body;
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let tested: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, template, ..)| (m.to_string(), template.to_string()))
        .collect();
    assert_eq!(
        documented, tested,
        "routes in the OpenAPI document vs this test"
    );

    let mut ceremonies = Vec::new();
    for (method, template, path, access, body, success) in &routes {
        let what = format!("{method} {template}");
        let anonymous = api.call(method.clone(), path, None, *body).await;
        match access {
            Access::Public => assert_eq!(anonymous.status, *success, "{what}: {}", anonymous.body),
            Access::Roles(_) => {
                assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(anonymous.code(), "unauthorized", "{what}");
            }
        }
        for role in ROLES {
            let allowed = match access {
                Access::Public => true,
                Access::Roles(roles) => roles.contains(&role),
            };
            let a = api.call(method.clone(), path, Some(role), *body).await;
            if allowed {
                assert_eq!(a.status, *success, "{what} as {role:?}: {}", a.body);
                if let Some(id) = a.body["ceremony_id"].as_str() {
                    ceremonies.push((what.clone(), id.to_string()));
                }
            } else {
                assert_eq!(
                    a.status,
                    StatusCode::FORBIDDEN,
                    "{what} as {role:?}: {}",
                    a.body
                );
                assert_eq!(a.code(), "forbidden", "{what} as {role:?}");
            }
        }
    }

    // What the admitted calls did: the signed transactions and the ceremonies' results.
    let listed = api
        .call(
            Method::GET,
            &w("/utxos?include_spent=true"),
            Some(Role::Viewer),
            None,
        )
        .await;
    let registered = &listed.body["utxos"];
    assert!(
        registered
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["state"] == "spent"),
        "the payment spent the registered output: {registered}"
    );
    for (what, id) in ceremonies
        .iter()
        .filter(|(what, _)| !what.contains("aux-info"))
    {
        let record = api.ceremony(id).await;
        assert_eq!(record["state"], "succeeded", "{what}: {record}");
    }
    let wallets = api
        .call(Method::GET, "/api/v1/wallets", Some(Role::Viewer), None)
        .await;
    assert!(
        wallets.body.to_string().contains("from-the-api"),
        "the wallet made through the API: {}",
        wallets.body
    );

    // The node's audit log names each caller: the signing with its txid and outputs, the
    // payment, the release; and its head is the last entry.
    let log = api
        .call(Method::GET, "/api/v1/audit", Some(Role::Viewer), None)
        .await
        .body;
    let entries = log["entries"].as_array().unwrap();
    let of = |kind: &str, actor: &str| {
        entries
            .iter()
            .filter(|e| e["kind"] == kind && e["actor"] == actor)
            .collect::<Vec<_>>()
    };
    let signer = "caller:signer:routes-test";
    let requested = of("signing_requested", signer);
    // psbt/sign and the payment of /api/v1/transactions.
    assert_eq!(requested.len(), 2, "{log}");
    assert_eq!(
        requested[0]["details"]["outputs"][0]["amount_sats"], 10_000,
        "{log}"
    );
    assert!(requested[0]["details"]["txid"].is_string(), "{log}");
    let finished = of("signing_finished", signer);
    assert_eq!(finished.len(), 2, "{log}");
    assert!(finished.iter().all(|e| e["details"]["ok"] == true), "{log}");
    assert_eq!(
        of("incidents_released", "caller:admin:routes-test").len(),
        1,
        "{log}"
    );
    assert_eq!(log["head"]["seq"], entries.last().unwrap()["seq"]);
    assert_eq!(entries[0]["kind"], "node_started");
    let later = api
        .call(
            Method::GET,
            "/api/v1/audit?since=4000000000000",
            Some(Role::Viewer),
            None,
        )
        .await;
    assert_eq!(later.body["entries"], json!([]));
    let bad = api
        .call(
            Method::GET,
            "/api/v1/audit?since=soon",
            Some(Role::Viewer),
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

/// A hostile signer through the API (issue 18): node 2 truncates every FROST signing message
/// it sends. The request still succeeds on {1, 3} within its deadline; the response's first
/// attempt names node 2;
/// the incident is listed by `GET /api/v1/cluster/incidents` and counted in `/metrics`; an
/// admin releases node 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_signer_is_named_listed_counted_and_released() {
    use mpc_node::adversary::{Adversary, Attack, Target};
    use mpc_protocols::execution::ProtocolKind;
    let c = cluster(|_| {}).await;
    let api = Api::of(&c.nodes[0]);
    let (taproot_id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let two = NodeId::must(2);
    let hostile = Adversary::new(
        Target::EveryRound {
            code: ProtocolKind::SchnorrSign.code(),
        },
        Attack::TruncatePayload,
    );
    c.network.intercept(two, hostile.clone());
    let sign = json!({"psbt": payment(&tkey, 100_000, 10_000).to_string()});
    let started = std::time::Instant::now();
    let signed = api
        .call(
            Method::POST,
            &format!("/api/v1/wallets/{taproot_id}/psbt/sign"),
            Some(Role::Signer),
            Some(&sign),
        )
        .await;
    let took = started.elapsed();
    c.network.release(two);
    assert!(hostile.altered() > 0);
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.body);
    // Within the request's deadline, retry included.
    let deadline = std::time::Duration::from_millis(c.nodes[0].config().limits.max_sign_request_ms);
    assert!(took < deadline, "{took:?} (deadline {deadline:?})");
    let attempts = signed.body["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["signers"], json!([1, 2]));
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("node 2 misbehaved"),
        "{attempts:?}"
    );
    assert_eq!(signed.body["signers"], json!([1, 3]));

    let listed = api
        .call(
            Method::GET,
            "/api/v1/cluster/incidents?node=2",
            Some(Role::Viewer),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let incident = &listed.body["incidents"][0];
    assert_eq!(
        (
            &incident["accused"],
            &incident["reporter"],
            &incident["kind"]
        ),
        (&json!(2), &json!(1), &json!("misbehaved")),
        "{}",
        listed.body
    );
    assert_eq!(incident["session"], signed.body["session"]);
    assert_eq!(
        listed.body["unreleased"],
        json!([{"node": 2, "count": 1, "excluded": false}])
    );
    let metrics = api
        .call(Method::GET, "/metrics", Some(Role::Viewer), None)
        .await;
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains("mpc_incidents_total{kind=\"misbehaved\",node=\"2\"} 1"),
        "{text}"
    );

    // Issue 18's must-show: the evidence node 1 recorded verifies on node 1 (its listing
    // checks it), and on node 3, which saw nothing and checks it against its own CA; one hex
    // digit changed and it does not.
    let evidence = incident["evidence"].as_str().expect("evidence recorded");
    let checked = &incident["evidence_check"];
    assert_eq!(
        (
            &checked["valid"],
            &checked["accused"],
            &checked["fault"],
            &checked["fault_rechecked"],
            &checked["checked_by"]
        ),
        (
            &json!(true),
            &json!(2),
            &json!("undecodable"),
            &json!(true),
            &json!(1)
        ),
        "{checked}"
    );
    let api3 = Api::of(&c.nodes[2]);
    let verify = |evidence: String| {
        let api3 = &api3;
        async move {
            api3.call(
                Method::POST,
                "/api/v1/cluster/evidence/verify",
                Some(Role::Viewer),
                Some(&json!({ "evidence": evidence })),
            )
            .await
        }
    };
    let on_three = verify(evidence.to_string()).await;
    assert_eq!(on_three.status, StatusCode::OK, "{}", on_three.body);
    assert_eq!(on_three.body["valid"], json!(true), "{}", on_three.body);
    assert_eq!(on_three.body["checked_by"], json!(3));
    assert_eq!(
        on_three.body["certificate_fingerprint"],
        checked["certificate_fingerprint"]
    );
    assert!(on_three.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["from"] == json!(2) && m["signature"].is_string()));
    let mut changed = evidence.to_string();
    let last = if changed.ends_with('0') { "1" } else { "0" };
    changed.replace_range(changed.len() - 1.., last);
    let tampered = verify(changed).await;
    assert_eq!(tampered.status, StatusCode::OK, "{}", tampered.body);
    assert_eq!(tampered.body["valid"], json!(false), "{}", tampered.body);
    assert!(tampered.body["reason"].is_string());

    let released = api
        .call(
            Method::POST,
            "/api/v1/cluster/incidents/2/release",
            Some(Role::Admin),
            None,
        )
        .await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    assert_eq!(released.body, json!({"node": 2, "released": 1}));
    let listed = api
        .call(
            Method::GET,
            "/api/v1/cluster/incidents",
            Some(Role::Viewer),
            None,
        )
        .await;
    assert_eq!(listed.body["unreleased"], json!([]));
    assert!(listed.body["incidents"][0]["released_at_ms"].is_i64());
}
