//! What a node process serves about itself and the cluster: the OpenAPI document, health as
//! seen over the mesh, wallets made by key generation between the processes, and aux info.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use mpc_api::routes::{Ceremony, KeygenRequest};
use mpc_bitcoin::{Chain, Scheme};
use mpc_wallet::devnet::wallet_key_from_api;
use serde_json::{json, Value};

use crate::{patiently, Cluster, Wallets};

/// Routes served without a token.
const PUBLIC: &[&str] = &["/healthz", "/api/v1/openapi.json"];

/// The document a process serves parses as OpenAPI 3.1 and marks exactly the public routes as
/// needing no token. (`routes.rs` checks, in process, that it lists exactly the routes served.)
pub async fn openapi_document(c: &Cluster) {
    let r = c
        .raw(
            "GET",
            "/api/v1/openapi.json",
            mpc_api::Role::Viewer,
            (200, "application/json"),
        )
        .await;
    let text = r.text().await.unwrap();
    let spec = oas3::from_json(&text).expect("the document parses as OpenAPI 3");
    assert!(spec.openapi.starts_with("3.1"), "version {}", spec.openapi);
    assert_eq!(spec.info.title, "mpc-wallet");
    assert!(spec
        .components
        .as_ref()
        .is_some_and(|c| c.security_schemes.contains_key("bearer")));
    let mut operations = 0;
    for (path, method, op) in spec.operations() {
        let public = PUBLIC.contains(&path.as_str());
        assert_eq!(op.security.is_empty(), public, "{method} {path} security");
        operations += 1;
    }
    assert!(operations >= 19, "{operations} operations");
}

/// Every process answers `/healthz`; node 1 sees all five live over QUIC.
pub async fn health_over_the_mesh(c: &Cluster) {
    for id in 1..=5 {
        let h = mpc_wallet::client::ApiClient::new(c.url(id), None)
            .healthz()
            .await
            .expect("healthz without a token");
        assert_eq!((h.status.as_str(), h.node.get()), ("ok", id));
    }
    let health = c.viewer.cluster_health().await.unwrap();
    assert_eq!(health["node"], 1);
    assert_eq!(health["threshold"], 3);
    assert_eq!(health["network"], "regtest");
    assert_eq!(health["live"], 5);
    assert_eq!(health["version"], mpc_node::VERSION);
    let nodes: BTreeSet<u64> = health["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert_eq!(n["live"], true, "{n}");
            n["node"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(nodes, (1..=5).collect());
    assert!(health["refused"]["connections"].is_u64(), "{health}");
}

/// Polls a ceremony on node 1 until it ends; checks its record as it goes.
async fn ceremony_outcome(c: &Cluster, id: &str) -> Ceremony {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let record = c.viewer.ceremony_status(id).await.unwrap();
        assert_eq!(record.id, id);
        match record.state.as_str() {
            "succeeded" | "failed" => {
                assert!(record.finished_at_ms.is_some(), "{record:?}");
                assert!(record.duration_ms.is_some(), "{record:?}");
                return record;
            }
            // Running, a two-phase ceremony (keygen, aux info, refresh) has no result until its
            // coordinator decided to commit; then, while it announces the commit, the record
            // holds that decision with what it commits.
            "running" => assert!(
                record
                    .result
                    .as_ref()
                    .is_none_or(|r| r["commit_decided"] == true),
                "{record:?}"
            ),
            other => panic!("ceremony {id} in an unknown state {other:?}: {record:?}"),
        }
        assert!(Instant::now() < deadline, "ceremony {id} did not finish");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A ceremony on node 1 that must succeed: its record.
pub async fn ceremony_succeeded(c: &Cluster, id: &str) -> Ceremony {
    let record = ceremony_outcome(c, id).await;
    assert_eq!(record.state, "succeeded", "{record:?}");
    assert!(record.error.is_none(), "{record:?}");
    record
}

/// Key generation of both schemes between the processes; every node then holds the wallet,
/// and the addresses and descriptors it serves are the ones derived here from the xpub.
pub async fn wallets_on_every_node(c: &Cluster) -> Wallets {
    let mut wallets: Vec<Value> = Vec::new();
    for (scheme, name) in [
        (Scheme::Ecdsa, "api ecdsa"),
        (Scheme::Schnorr, "api taproot"),
    ] {
        let accepted = c
            .admin
            .start_keygen(&KeygenRequest::new(scheme, name))
            .await
            .unwrap();
        let record = ceremony_succeeded(c, &accepted.ceremony_id.to_string()).await;
        assert_eq!(record.kind, "keygen");
        assert_eq!(record.request["name"], name);
        let w = record.result.unwrap_or_default();
        assert_eq!(w["name"], name);
        assert_eq!(w["state"], "active");
        assert_eq!(w["threshold"], 3);
        assert_eq!(w["network"], "regtest");
        assert_eq!(w["participants"], json!([1, 2, 3, 4, 5]));
        wallets.push(w);
    }
    let (ecdsa, taproot) = (wallets[0].clone(), wallets[1].clone());
    assert_eq!(ecdsa["script_type"], "p2wpkh");
    assert_eq!(taproot["script_type"], "p2tr");
    let w = Wallets {
        eid: mpc_wallet::commands::wallet_id_of(&ecdsa).unwrap(),
        tid: mpc_wallet::commands::wallet_id_of(&taproot).unwrap(),
        ekey: wallet_key_from_api(&ecdsa).unwrap(),
        tkey: wallet_key_from_api(&taproot).unwrap(),
        ecdsa,
        taproot,
    };
    let ids: BTreeSet<mpc_types::WalletId> = c
        .viewer
        .wallets()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|w| mpc_wallet::commands::wallet_id_of(w).unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from([w.eid.clone(), w.tid.clone()]));
    for node in 1..=5 {
        let what = format!("node {node}'s wallets");
        let held = patiently(&what, || async move {
            c.client(node, mpc_api::Role::Viewer).wallets().await
        })
        .await;
        for wallet in [&w.ecdsa, &w.taproot] {
            let id = wallet["id"].as_str().unwrap();
            let held = held
                .as_array()
                .and_then(|a| a.iter().find(|h| h["id"] == id))
                .unwrap_or_else(|| panic!("node {node} does not hold {id}: {held}"));
            for field in ["public_key", "xpub", "receive_descriptor", "participants"] {
                assert_eq!(held[field], wallet[field], "{field} of {id} on node {node}");
            }
        }
    }
    for (wallet, key) in [(&w.ecdsa, &w.ekey), (&w.taproot, &w.tkey)] {
        let id = &mpc_wallet::commands::wallet_id_of(wallet).unwrap();
        for (chain, name, n) in [(Chain::Receive, "receive", 0), (Chain::Change, "change", 1)] {
            let list = c.viewer.addresses(id, name, 0, 3).await.unwrap();
            assert_eq!(list.len(), 3);
            for (i, a) in list.iter().enumerate() {
                assert_eq!(a.index as usize, i);
                assert_eq!(a.path, format!("m/{n}/{i}"));
                // Derived independently from the xpub.
                let own = key.chain_address(chain, i as u32).unwrap();
                assert_eq!(a.address, own.to_string());
            }
            if n == 0 {
                assert_eq!(wallet["first_address"], list[0].address.as_str());
            }
        }
        let d = c.viewer.descriptor(id).await.unwrap();
        assert_eq!(wallet["receive_descriptor"], d.receive.as_str());
        assert_eq!(wallet["change_descriptor"], d.change.as_str());
        let prefix = if wallet["scheme"] == "cggmp24" {
            "wpkh("
        } else {
            "tr("
        };
        for text in [&d.receive, &d.change] {
            assert!(text.starts_with(prefix), "{text}");
            assert!(text.contains(wallet["xpub"].as_str().unwrap()), "{text}");
            assert_eq!(
                text.rsplit_once('#').map(|(_, c)| c.len()),
                Some(8),
                "{text}"
            );
        }
    }
    w
}

/// The route accepts (202, with the ceremony's location), and the ceremony then fails with
/// the participants' reason: aux info exists for this node set (the checked-in one the nodes
/// started from), and it is never replaced silently.
pub async fn aux_info_is_never_replaced(c: &Cluster) {
    let r = c
        .raw(
            "POST",
            "/api/v1/aux-info",
            mpc_api::Role::Admin,
            (202, "application/json"),
        )
        .await;
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["ceremony_id"].as_str().unwrap().to_string();
    assert_eq!(accepted["location"], format!("/api/v1/ceremonies/{id}"));
    assert_eq!(location.as_deref(), accepted["location"].as_str());
    let aux = ceremony_outcome(c, &id).await;
    assert_eq!(aux.kind, "aux-info");
    assert_eq!(aux.coordinator.get(), 1);
    assert_eq!(aux.state, "failed", "{aux:?}");
    let error = aux.error.unwrap_or_default();
    assert!(
        error.starts_with("refused by node ")
            && error.contains("aux info for [1, 2, 3, 4, 5] already exists"),
        "{error}"
    );
}
