//! Three nodes over the in-memory mesh with real SQLite stores: keygen for both schemes,
//! presignatures, signing a mixed transaction, and what signers refuse.

use mpc_types::NodeId;
use mpc_types::WalletId;
use std::time::Duration;

use mpc_bitcoin::policy::Policy;
use mpc_bitcoin::{
    bitcoin::Amount,
    build::{build_psbt, synthetic_funding, Payment},
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Chain, Scheme,
};
use mpc_node::{control::ProposalBody, refusal::RefusalKind, Node, NodeError};
use uuid::Uuid;

use mpc_node::testing::{start, wallet_request, Cluster};

#[path = "pool/mod.rs"]
mod pool;
#[path = "refresh/mod.rs"]
mod refresh;
#[path = "reshare/mod.rs"]
mod reshare;
#[path = "webhooks/mod.rs"]
mod webhooks;

#[path = "aux_info/mod.rs"]
mod aux_info;

#[path = "keygen/mod.rs"]
mod keygen;

async fn cluster(n: u16, t: u16) -> Cluster {
    start(n, t, |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_presign_and_sign_a_mixed_transaction() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
    let c = cluster(3, 2).await;
    let n1 = &c.nodes[0];
    let ecdsa = n1
        .create_wallet(Uuid::new_v4(), wallet_request("e", Scheme::Ecdsa))
        .await
        .unwrap();
    let taproot = n1
        .create_wallet(Uuid::new_v4(), wallet_request("t", Scheme::Schnorr))
        .await
        .unwrap();
    // Every node holds the same active wallet.
    for node in &c.nodes {
        let w = node.wallet(&ecdsa.id).await.unwrap();
        assert_eq!(
            (w.public_key.as_str(), w.state.as_str()),
            (ecdsa.public_key.as_str(), "active")
        );
        let w = node.wallet(&taproot.id).await.unwrap();
        assert_eq!(w.public_key, taproot.public_key);
    }
    let p00 = Chain::Receive.path(0).unwrap();
    let presigned = n1
        .generate_presignatures(Uuid::new_v4(), &ecdsa.id, &p00, 2, None, None)
        .await
        .unwrap();
    assert_eq!(presigned.ids.len(), 2);
    assert!(presigned.signers.contains(&NodeId::must(1)));

    let ekey =
        mpc_node::keys::wallet_key(&n1.store().wallet(&ecdsa.id).await.unwrap().unwrap()).unwrap();
    let tkey = mpc_node::keys::wallet_key(&n1.store().wallet(&taproot.id).await.unwrap().unwrap())
        .unwrap();
    let inputs = vec![
        synthetic_funding(&ekey, &p00, Amount::from_sat(50_000), "a").unwrap(),
        synthetic_funding(
            &ekey,
            &Chain::Receive.path(1).unwrap(),
            Amount::from_sat(60_000),
            "b",
        )
        .unwrap(),
        synthetic_funding(&tkey, &p00, Amount::from_sat(70_000), "c").unwrap(),
    ];
    let payments = vec![Payment {
        script_pubkey: tkey
            .chain_address(Chain::Receive, 5)
            .unwrap()
            .script_pubkey(),
        amount: Amount::from_sat(170_000),
        owner: None,
    }];
    let psbt = build_psbt(&inputs, &payments).unwrap().to_string();
    let wallets = vec![ecdsa.id.clone(), taproot.id.clone()];
    let report = n1.sign_psbt(Uuid::new_v4(), &wallets, &psbt).await.unwrap();
    let methods: Vec<&str> = report.inputs.iter().map(|i| i.method).collect();
    assert_eq!(methods, ["presignature", "interactive", "frost"]);
    assert_eq!(
        report.inputs[0].presignature.as_deref(),
        Some(presigned.ids[0].as_str())
    );
    // Independent re-check of what the node returned.
    let signed = parse_psbt(&report.psbt).unwrap();
    let spent = spent_outputs(&signed).unwrap();
    let tx = &report.raw_transaction;
    assert_eq!(tx.compute_txid(), signed.unsigned_tx.compute_txid());
    assert_eq!(report.txid, tx.compute_txid());
    verify_transaction(tx, &spent).unwrap();

    // The used presignature is consumed at every signer; the other is still ready.
    for node in c.nodes.iter().filter(|n| report.signers.contains(&n.id())) {
        let used = node
            .store()
            .presignature(&presigned.ids[0])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(used.state, mpc_store::PresignatureState::Consumed);
        let spare = node
            .store()
            .presignature(&presigned.ids[1])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(spare.state, mpc_store::PresignatureState::Ready);
    }

    // A compromised coordinator reusing the consumed presignature (with another PSBT) is
    // refused by every signer.
    let one_input = build_psbt(
        &inputs[..1],
        &[Payment {
            script_pubkey: tkey
                .chain_address(Chain::Receive, 6)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(40_000),
            owner: None,
        }],
    )
    .unwrap()
    .to_string();
    let err = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                key_epochs: Vec::new(),
                wallet_ids: vec![ecdsa.id.clone()],
                psbt: one_input.clone(),
                signers: report.signers.clone(),
                presignatures: vec![Some(presigned.ids[0].clone())],
                approvals: None,
            },
            &report.signers,
            Duration::from_secs(10),
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");

    // The spare presignature offered for another path (m/0/1) is refused.
    let other_path = build_psbt(
        &inputs[1..2],
        &[Payment {
            script_pubkey: tkey
                .chain_address(Chain::Receive, 6)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(50_000),
            owner: None,
        }],
    )
    .unwrap()
    .to_string();
    let err = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                key_epochs: Vec::new(),
                wallet_ids: vec![ecdsa.id.clone()],
                psbt: other_path,
                signers: report.signers.clone(),
                presignatures: vec![Some(presigned.ids[1].clone())],
                approvals: None,
            },
            &report.signers,
            Duration::from_secs(10),
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bound to"), "{err}");

    // An input that is not the wallet's (claims m/0/0 of the ECDSA wallet, spends another
    // script) is refused before any protocol runs.
    let mut foreign = parse_psbt(&one_input).unwrap();
    let elsewhere = synthetic_funding(
        &ekey,
        &Chain::Receive.path(9).unwrap(),
        Amount::from_sat(50_000),
        "m/0/9",
    )
    .unwrap();
    foreign.unsigned_tx.input[0].previous_output = elsewhere.outpoint;
    foreign.inputs[0].witness_utxo = Some(elsewhere.txout);
    foreign.inputs[0].non_witness_utxo = elsewhere.funding_transaction;
    let err = n1
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&ecdsa.id),
            &foreign.to_string(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Wallet(_)), "{err}");
    let err = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                key_epochs: Vec::new(),
                wallet_ids: vec![ecdsa.id.clone()],
                psbt: foreign.to_string(),
                signers: report.signers.clone(),
                presignatures: vec![None],
                approvals: None,
            },
            &report.signers,
            Duration::from_secs(10),
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not this wallet's"), "{err}");
}

/// A coordinator remembers the ready presignatures it read; one consumed meanwhile in a signing
/// that another node coordinated (this node signing) is never offered from that memory: the
/// next request signs in one attempt, interactively, instead of failing on a used presignature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presignature_used_under_another_coordinator_is_not_offered_again() {
    let c = cluster(3, 2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let ecdsa = n1
        .create_wallet(Uuid::new_v4(), wallet_request("e", Scheme::Ecdsa))
        .await
        .unwrap();
    let key =
        mpc_node::keys::wallet_key(&n1.store().wallet(&ecdsa.id).await.unwrap().unwrap()).unwrap();
    let p00 = Chain::Receive.path(0).unwrap();
    let presigned = n1
        .generate_presignatures(Uuid::new_v4(), &ecdsa.id, &p00, 2, None, None)
        .await
        .unwrap();
    // Node 1 and node 2 both pick signers {1, 2}: the presignatures' set.
    assert_eq!(presigned.signers, NodeId::must_list(&[1, 2]));
    let spend = |funding: &str| mpc_node::testing::spend(&key, &p00, 50_000, funding, 9, 40_000);
    let wallets = std::slice::from_ref(&ecdsa.id);
    let sign = |node: &Node, funding: &'static str| {
        let (node, psbt) = (node.clone(), spend(funding));
        async move {
            node.sign_psbt(Uuid::new_v4(), wallets, &psbt)
                .await
                .unwrap()
        }
    };

    // Node 1 reads both, uses one and remembers the other; node 2 then uses that other one.
    let first = sign(n1, "a").await;
    let second = sign(n2, "b").await;
    let mut used: Vec<String> = [&first, &second]
        .iter()
        .map(|r| r.inputs[0].presignature.clone().unwrap())
        .collect();
    used.sort();
    let mut made = presigned.ids.clone();
    made.sort();
    assert_eq!(used, made, "each signing used one of the two presignatures");

    let third = sign(n1, "c").await;
    assert_eq!(third.attempts.len(), 1, "{:?}", third.attempts);
    assert_eq!(third.inputs[0].method, "interactive");
    assert_eq!(third.inputs[0].presignature, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_signer_is_named_and_the_retry_succeeds() {
    let c = cluster(3, 2).await;
    let n1 = &c.nodes[0];
    let taproot = n1
        .create_wallet(Uuid::new_v4(), wallet_request("t", Scheme::Schnorr))
        .await
        .unwrap();
    let tkey = mpc_node::keys::wallet_key(&n1.store().wallet(&taproot.id).await.unwrap().unwrap())
        .unwrap();
    let psbt = mpc_node::testing::spend_to_self(&tkey, "x");
    // Node 2 is still considered live (heartbeats are recent) when it dies.
    c.network.disconnect(NodeId::must(2));
    let report = n1
        .sign_psbt(Uuid::new_v4(), std::slice::from_ref(&taproot.id), &psbt)
        .await
        .unwrap();
    assert_eq!(report.attempts.len(), 2, "{:?}", report.attempts);
    let first = report.attempts[0].error.as_deref().unwrap();
    assert!(first.contains('2'), "the failure names node 2: {first}");
    assert_eq!(report.signers, NodeId::must_list(&[1, 3]));
}

/// A 2-of-3 cluster where the nodes `strict` picks run `policy`, and a Taproot wallet made
/// by node 1.
async fn taproot_with_policy(
    policy: Policy,
    strict: impl Fn(NodeId) -> bool,
) -> (Cluster, mpc_node::keys::WalletInfo, mpc_bitcoin::WalletKey) {
    let c = start(3, 2, |cfg| {
        if strict(cfg.id) {
            cfg.policy = policy.clone();
        }
    })
    .await;
    let n1 = &c.nodes[0];
    let taproot = n1
        .create_wallet(Uuid::new_v4(), wallet_request("t", Scheme::Schnorr))
        .await
        .unwrap();
    let key = mpc_node::keys::wallet_key(&n1.store().wallet(&taproot.id).await.unwrap().unwrap())
        .unwrap();
    (c, taproot, key)
}

/// `node` coordinates the signing of `psbt` (one Taproot input) by exactly `signers`, which
/// must fail: its error.
async fn refused_sign(
    node: &Node,
    session: Uuid,
    wallet_id: &WalletId,
    psbt: &str,
    signers: &[NodeId],
) -> NodeError {
    node.coordinate(
        session,
        ProposalBody::Sign {
            key_epochs: Vec::new(),
            wallet_ids: vec![wallet_id.clone()],
            psbt: psbt.to_owned(),
            signers: signers.to_vec(),
            presignatures: vec![None],
            approvals: None,
        },
        signers,
        Duration::from_secs(10),
        None,
    )
    .await
    .unwrap_err()
}

/// A PSBT paying `amount` to `to` from a fresh output of `key` at m/0/0, `fee` left over.
fn pay_from_m00(
    key: &mpc_bitcoin::WalletKey,
    amount: u64,
    fee: u64,
    to: &mpc_bitcoin::bitcoin::Address,
) -> String {
    let input = synthetic_funding(
        key,
        &Chain::Receive.path(0).unwrap(),
        Amount::from_sat(amount + fee),
        &Uuid::new_v4().to_string(),
    )
    .unwrap();
    build_psbt(
        &[input],
        &[Payment {
            script_pubkey: to.script_pubkey(),
            amount: Amount::from_sat(amount),
            owner: None,
        }],
    )
    .unwrap()
    .to_string()
}

/// Policy on nodes 2 and 3 only; node 1 coordinates with none, so each refusal comes from a
/// signer's own check, with the rule named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signer_enforces_its_own_policy() {
    let allowed = mpc_testkit::schnorr_wallet(2, 3, mpc_bitcoin::bitcoin::Network::Regtest).1;
    let allowed_address = allowed.chain_address(Chain::Receive, 0).unwrap();
    let strict = Policy {
        max_amount_per_tx_sats: Some(100_000),
        max_amount_per_24h_sats: Some(150_000),
        allowed_destinations: Some(vec![allowed_address.to_string()]),
        max_fee_sats: Some(5_000),
        max_fee_rate_sat_vb: Some(20.0),
        ..Policy::default()
    };
    let (c, taproot, key) = taproot_with_policy(strict, |id| id != NodeId::must(1)).await;
    let n1 = &c.nodes[0];
    let psbt = |amount: u64, fee: u64, to: &mpc_bitcoin::bitcoin::Address| {
        pay_from_m00(&key, amount, fee, to)
    };
    let stranger = key.chain_address(Chain::Receive, 7).unwrap();
    // Each signer (2 and 3, in turn, with coordinator 1) refuses, naming the rule.
    let refused_by_both = async |psbt: String, rule: &str| {
        for signers in [NodeId::must_list(&[1, 2]), NodeId::must_list(&[1, 3])] {
            let err = refused_sign(n1, Uuid::new_v4(), &taproot.id, &psbt, &signers).await;
            let text = err.to_string();
            assert!(
                text.contains(rule) && text.contains(&format!("node {}", signers[1])),
                "{signers:?}: {text}"
            );
        }
    };
    refused_by_both(
        psbt(120_000, 1_000, &allowed_address),
        "max_amount_per_tx_sats",
    )
    .await;
    refused_by_both(psbt(10_000, 1_000, &stranger), "allowed_destinations").await;
    refused_by_both(psbt(10_000, 50_000, &allowed_address), "max_fee_sats").await;
    refused_by_both(psbt(10_000, 4_900, &allowed_address), "max_fee_rate_sat_vb").await;
    // Through the normal path, lenient node 1 coordinating: one strict signer refuses, the
    // retry's other strict signer refuses too, and the answer is that refusal, typed, naming
    // the rule (not "unavailable"), with both attempts in its text.
    let err = n1
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&taproot.id),
            &psbt(120_000, 1_000, &allowed_address),
        )
        .await
        .unwrap_err();
    match &err {
        NodeError::Refused { node, refusal } => {
            assert!(NodeId::must_list(&[2, 3]).contains(node), "{err}");
            assert_eq!(
                refusal.kind,
                RefusalKind::Policy {
                    rule: "max_amount_per_tx_sats".into()
                },
                "{err}"
            );
            assert!(refusal.message.contains("attempts: signers"), "{err}");
        }
        other => panic!("not a signer's refusal: {other}"),
    }
    // Within limits: signs (with both strict signers, through the normal coordinator path).
    let ok = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                key_epochs: Vec::new(),
                wallet_ids: vec![taproot.id.clone()],
                psbt: psbt(90_000, 1_000, &allowed_address),
                signers: NodeId::must_list(&[2, 3]),
                presignatures: vec![None],
                approvals: None,
            },
            &NodeId::must_list(&[2, 3]),
            Duration::from_secs(10),
            None,
        )
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    // The rolling 24 h limit now refuses another 70 000 (91 000 already sent by 2 and 3).
    refused_by_both(
        psbt(60_000, 1_000, &allowed_address),
        "max_amount_per_24h_sats",
    )
    .await;
    // A strict coordinator refuses before starting any session.
    let err = c.nodes[1]
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&taproot.id),
            &psbt(120_000, 1_000, &allowed_address),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NodeError::Policy(v) if v.rule == "max_amount_per_tx_sats"),
        "{err}"
    );
}

/// The audit log through real signings: the coordinator records the request (with its caller,
/// txid and outputs) and its outcome, each signer its release or its refusal with the rule,
/// and every node's chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signings_and_refusals_are_in_each_nodes_audit_log() {
    use mpc_store::{Actor, AuditEvent};
    let strict = Policy {
        max_amount_per_tx_sats: Some(100_000),
        ..Policy::default()
    };
    let (c, taproot, key) = taproot_with_policy(strict, |id| id == NodeId::must(3)).await;
    let n1 = &c.nodes[0];
    let to = key.chain_address(Chain::Receive, 3).unwrap();
    let psbt = |amount: u64| pay_from_m00(&key, amount, 1_000, &to);
    let alice = Actor::Caller {
        role: "signer".into(),
        subject: "alice".into(),
    };
    let session = Uuid::new_v4();
    let wallets = std::slice::from_ref(&taproot.id);
    let report =
        mpc_node::audit::with_caller(alice.clone(), n1.sign_psbt(session, wallets, &psbt(50_000)))
            .await
            .unwrap();
    let txid = Some(report.txid.to_string());

    let log = n1.audit_entries(0, 0, 1000).await.unwrap();
    assert!(matches!(log[0].event, AuditEvent::NodeStarted { .. }));
    assert!(log.iter().any(|e| matches!(&e.event,
        AuditEvent::Ceremony { ceremony, coordinator: true, ok: true, wallet_id, .. }
            if ceremony == "keygen" && wallet_id.as_ref() == Some(&taproot.id))));
    let requested = log
        .iter()
        .find(|e| matches!(&e.event, AuditEvent::SigningRequested { session: s, .. } if *s == session))
        .unwrap();
    assert_eq!(requested.actor, alice);
    match &requested.event {
        AuditEvent::SigningRequested {
            txid: t, outputs, ..
        } => {
            assert_eq!(t, &txid);
            assert_eq!(outputs.len(), 1);
            assert_eq!(outputs[0].amount_sats, 50_000);
            assert_eq!(
                outputs[0].script_pubkey,
                hex::encode(to.script_pubkey().as_bytes())
            );
        }
        _ => unreachable!(),
    }
    let finished = log.last().unwrap();
    assert_eq!(finished.actor, alice);
    assert_eq!(
        finished.event,
        AuditEvent::SigningFinished {
            session,
            txid: txid.clone(),
            ok: true,
            signers: report.signers.iter().map(|n| n.get()).collect(),
            rule: None,
            error: None,
        }
    );
    for node in c.nodes.iter().filter(|n| report.signers.contains(&n.id())) {
        let log = node.audit_entries(0, 0, 1000).await.unwrap();
        let released = log
            .iter()
            .find(|e| matches!(&e.event, AuditEvent::SignerSigned { session: s, .. } if *s == session))
            .unwrap_or_else(|| panic!("node {}: {log:?}", node.id()));
        assert_eq!(released.actor, Actor::Peer(1));
    }

    // Node 3's own policy refuses; its log names the rule.
    let refused = Uuid::new_v4();
    let signers = NodeId::must_list(&[1, 3]);
    refused_sign(n1, refused, &taproot.id, &psbt(120_000), &signers).await;
    let log = c.nodes[2].audit_entries(0, 0, 1000).await.unwrap();
    assert!(
        log.iter().any(|e| e.event
            == AuditEvent::SignerRefused {
                session: refused,
                coordinator: 1,
                wallet_ids: vec![taproot.id.clone()],
                rule: "policy:max_amount_per_tx_sats".into(),
                error: match &e.event {
                    AuditEvent::SignerRefused { error, .. } => error.clone(),
                    _ => String::new(),
                },
            }),
        "{log:?}"
    );
    for node in &c.nodes {
        let verified = node.store().verify_audit_log(None).await.unwrap();
        assert!(verified.entries >= 3, "node {}", node.id());
    }
}

/// Polls `check` every 100 ms for up to 20 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, check: impl Fn() -> F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn peer_audit(of: &Node, peer: NodeId) -> Option<mpc_node::audit_heads::PeerAuditStatus> {
    of.health()
        .statuses()
        .into_iter()
        .find(|s| s.node == peer)
        .and_then(|s| s.audit)
}

/// Whose audit logs `node`'s own log says changed: (peer, seq, the hash there now).
async fn logged_changes(node: &Node) -> Vec<(u16, u64, Option<mpc_store::AuditHash>)> {
    let mut seen: Vec<_> = node
        .audit_entries(0, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            mpc_store::AuditEvent::PeerAuditLogChanged { node, seq, now, .. } => {
                Some((node, seq, now))
            }
            _ => None,
        })
        .collect();
    seen.sort_by_key(|(peer, _, _)| *peer);
    seen
}

/// Waits until `node` has checked `peer`'s audit head as it is now; returns that head.
async fn checked_head(node: &Node, peer: &Node) -> mpc_store::AuditHead {
    let head = peer.store().audit_head().await.unwrap().unwrap();
    eventually(
        &format!("node {} checked node {}'s head", node.id(), peer.id()),
        || async { peer_audit(node, peer.id()).and_then(|s| s.checked_head) == Some(head) },
    )
    .await;
    head
}

/// One node's audit log cut and then another's rewritten, underneath the running cluster (as
/// an attacker with their disks would): the other nodes notice through heartbeats, show it
/// in cluster health, and keep it in their own audit logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_or_cut_audit_log_is_noticed_by_the_peers() {
    use mpc_node::audit_heads::AuditProblem;
    use mpc_store::AuditHash;
    let c = cluster(3, 2).await;
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    sqlx::any::install_default_drivers();
    let raw = |node: &Node| sqlx::AnyPool::connect_lazy(&node.config().store_url()).unwrap();

    // Node 3's last entry deleted.
    let head3 = checked_head(n1, n3).await;
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(i64::try_from(head3.seq).unwrap())
        .execute(&raw(n3))
        .await
        .unwrap();
    let cut = AuditProblem::Truncated {
        seq: head3.seq,
        shown: head3.hash,
        head: Some(head3.seq - 1).filter(|seq| *seq > 0),
    };
    for node in [n1, n2] {
        eventually(&format!("node {} names node 3", node.id()), || async {
            peer_audit(node, n3.id()).and_then(|s| s.problem) == Some(cut)
        })
        .await;
    }

    // Node 2 logged that (its head moved on); once its peers checked its new head, that entry's
    // hash is rewritten.
    eventually("node 2's log says node 3's changed", || async {
        logged_changes(n2).await.len() == 1
    })
    .await;
    let head2 = checked_head(n1, n2).await;
    assert_eq!(checked_head(n3, n2).await, head2);
    let forged = AuditHash([0xee; 32]);
    sqlx::query("UPDATE audit_log SET hash = $1 WHERE seq = $2")
        .bind(forged.to_hex())
        .bind(i64::try_from(head2.seq).unwrap())
        .execute(&raw(n2))
        .await
        .unwrap();
    let rewritten = AuditProblem::Rewritten {
        seq: head2.seq,
        shown: head2.hash,
        now: forged,
    };
    for node in [n1, n3] {
        eventually(&format!("node {} names node 2", node.id()), || async {
            peer_audit(node, n2.id()).and_then(|s| s.problem) == Some(rewritten)
        })
        .await;
    }
    // Nobody names node 1, whose log nobody touched.
    for node in [n2, n3] {
        assert_eq!(peer_audit(node, n1.id()).unwrap().problem, None);
    }
    // Node 1 keeps what it saw in its own audit log (appended just after it noticed).
    eventually("node 1's log has both", || async {
        logged_changes(n1).await.len() == 2
    })
    .await;
    assert_eq!(
        logged_changes(n1).await,
        [(2, head2.seq, Some(forged)), (3, head3.seq, None)]
    );
}
