//! Human approvals through the real nodes (issue 20): a request that needs 2 of 3 approvals
//! waits until two approvers signed, then is signed and verified; a hostile coordinator that
//! sends the transaction to the signers without the approvals, or with approvals that do not
//! fit, is refused by every signer with the typed rule and gets no share; pending requests
//! survive a restart. FROST wallets: no interactive ECDSA, so each case costs milliseconds.

use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use mpc_bitcoin::{
    approval::{approval_message, ApprovalPolicy, Approver, Decision, SignedDecision},
    bitcoin::{consensus, psbt::Psbt, Amount, Transaction},
    build::{build_psbt, synthetic_funding, Payment},
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Chain, Scheme, WalletKey,
};
use mpc_node::{
    approvals::Submitted,
    control::{ApprovalEvidence, ProposalBody},
    now_ms,
    refusal::RefusalKind,
    testing::{start, start_node, wait_all_live, wallet, Cluster},
    Node, NodeError,
};
use mpc_store::{ApprovalRequestRecord, AuditEvent, RequestState};
use mpc_types::{NodeId, WalletId};
use uuid::Uuid;

/// Approvers alice, bob and carol; mallory is nobody's approver.
fn key(name: &str) -> SigningKey {
    let seed = match name {
        "alice" => 1,
        "bob" => 2,
        "carol" => 3,
        _ => 99,
    };
    SigningKey::from_bytes(&[seed; 32])
}

fn public(name: &str) -> String {
    hex::encode(key(name).verifying_key().as_bytes())
}

/// The rule every node of these tests has: 2 of alice, bob and carol, for every transaction.
fn two_of_three() -> ApprovalPolicy {
    ApprovalPolicy {
        required: 2,
        approvers: ["alice", "bob", "carol"]
            .iter()
            .map(|n| Approver {
                name: n.to_string(),
                public_key: public(n),
            })
            .collect(),
        ..ApprovalPolicy::default()
    }
}

async fn cluster() -> Cluster {
    start(3, 2, |cfg| cfg.policy.approvals = two_of_three()).await
}

/// `signer`'s signature of `decision` on (psbt, wallets, request, expiry).
fn sign(
    signer: &str,
    psbt: &Psbt,
    wallets: &[WalletId],
    request: Uuid,
    expires: i64,
    decision: Decision,
) -> SignedDecision {
    let message = approval_message(psbt, wallets, request, expires, decision).unwrap();
    SignedDecision {
        public_key: public(signer),
        signature: hex::encode(key(signer).sign(&message).to_bytes()),
    }
}

/// A 10 000-sat input of `key` paying `pay` to its receive address `to`.
fn payment(key: &WalletKey, label: &str, pay: u64, to: u32) -> Psbt {
    let input = synthetic_funding(
        key,
        &Chain::Receive.path(0).unwrap(),
        Amount::from_sat(10_000),
        label,
    )
    .unwrap();
    build_psbt(
        &[input],
        &[Payment {
            script_pubkey: key
                .chain_address(Chain::Receive, to)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(pay),
            owner: None,
        }],
    )
    .unwrap()
}

/// The signed transaction of a report, verified by Bitcoin Core's interpreter
/// (`bitcoinconsensus`, libsecp256k1 inside) against the PSBT's spent outputs.
fn verified(raw_hex: &str, psbt: &Psbt) -> Transaction {
    let tx: Transaction = consensus::encode::deserialize_hex(raw_hex).unwrap();
    assert_eq!(tx.compute_txid(), psbt.unsigned_tx.compute_txid());
    verify_transaction(&tx, &spent_outputs(psbt).unwrap()).unwrap();
    tx
}

fn pending(submitted: Submitted) -> mpc_node::approvals::RequestView {
    match submitted {
        Submitted::Pending(view) => view,
        Submitted::Signed(report) => panic!("signed without approvals: {}", report.txid),
    }
}

fn approval_rule(e: &NodeError) -> &str {
    match e {
        NodeError::Approval(v) => v.rule,
        other => panic!("not an approval refusal: {other}"),
    }
}

/// `node` refuses `approval` of `request` as `approval_invalid`.
async fn invalid_approval(node: &Node, request: Uuid, approval: &SignedDecision) {
    let err = node
        .decide(request, Decision::Approve, approval)
        .await
        .unwrap_err();
    assert_eq!(approval_rule(&err), "approval_invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_approvals_then_signed_and_verified() {
    let c = cluster().await;
    let n1 = &c.nodes[0];
    let (id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let wallets = vec![id.clone()];
    let psbt = payment(&tkey, "a", 9_000, 1);
    let request = Uuid::new_v4();
    let view = pending(
        n1.submit_psbt(request, &wallets, &psbt.to_string())
            .await
            .unwrap(),
    );
    assert_eq!((view.state.as_str(), view.required), ("pending", 2));
    assert_eq!(view.fee_sats, 1_000);
    assert_eq!(view.txid, psbt.unsigned_tx.compute_txid().to_string());
    let expires = view.expires_at_ms;

    // The coordinator's own check refuses to sign it without approvals.
    let err = n1
        .sign_psbt(Uuid::new_v4(), &wallets, &psbt.to_string())
        .await
        .unwrap_err();
    assert_eq!(approval_rule(&err), "approvals_missing");

    // Decisions that do not count: mallory (no approver), alice's key with mallory's
    // signature, and an approval of another request id.
    let mut forged = sign(
        "mallory",
        &psbt,
        &wallets,
        request,
        expires,
        Decision::Approve,
    );
    invalid_approval(n1, request, &forged).await;
    forged.public_key = public("alice");
    invalid_approval(n1, request, &forged).await;
    let elsewhere = sign(
        "alice",
        &psbt,
        &wallets,
        Uuid::new_v4(),
        expires,
        Decision::Approve,
    );
    invalid_approval(n1, request, &elsewhere).await;
    // A rejection's signature is no approval.
    let rejection = sign("alice", &psbt, &wallets, request, expires, Decision::Reject);
    invalid_approval(n1, request, &rejection).await;

    let alice = sign(
        "alice",
        &psbt,
        &wallets,
        request,
        expires,
        Decision::Approve,
    );
    let after_one = n1.decide(request, Decision::Approve, &alice).await.unwrap();
    assert_eq!(after_one.state, "pending");
    assert_eq!(after_one.decisions.len(), 1);
    // The same approver twice counts once.
    assert!(matches!(
        n1.decide(request, Decision::Approve, &alice).await,
        Err(NodeError::InvalidRequest(_))
    ));
    assert_eq!(n1.approval_request(request).await.unwrap().state, "pending");

    let bob = sign("bob", &psbt, &wallets, request, expires, Decision::Approve);
    let signed = n1.decide(request, Decision::Approve, &bob).await.unwrap();
    assert_eq!(signed.state, "signed", "{:?}", signed.error);
    let report = signed.signed.as_ref().unwrap();
    verified(report["raw_transaction"].as_str().unwrap(), &psbt);
    // Closed: no more decisions.
    let carol = sign(
        "carol",
        &psbt,
        &wallets,
        request,
        expires,
        Decision::Approve,
    );
    assert!(matches!(
        n1.decide(request, Decision::Approve, &carol).await,
        Err(NodeError::RequestClosed { .. })
    ));

    // Every signer checked the approvals and released its share once; all recorded.
    let kinds: Vec<String> = n1
        .audit_entries(0, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            AuditEvent::ApprovalPending { request: r, .. } if r == request => {
                Some("pending".into())
            }
            AuditEvent::ApprovalDecided {
                request: r,
                approver,
                ..
            } if r == request => Some(approver),
            AuditEvent::ApprovalRequestClosed {
                request: r, state, ..
            } if r == request => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["pending", "alice", "bob", "signed"]);

    // One rejection ends a request; it can then be neither approved nor signed.
    let psbt = payment(&tkey, "b", 9_000, 1);
    let request = Uuid::new_v4();
    let view = pending(
        n1.submit_psbt(request, &wallets, &psbt.to_string())
            .await
            .unwrap(),
    );
    let expires = view.expires_at_ms;
    let no = sign("carol", &psbt, &wallets, request, expires, Decision::Reject);
    let rejected = n1.decide(request, Decision::Reject, &no).await.unwrap();
    assert_eq!(rejected.state, "rejected");
    for who in ["alice", "bob"] {
        let yes = sign(who, &psbt, &wallets, request, expires, Decision::Approve);
        assert!(matches!(
            n1.decide(request, Decision::Approve, &yes).await,
            Err(NodeError::RequestClosed { .. })
        ));
    }

    // An expired request cannot be approved (nor, below, signed).
    let psbt = payment(&tkey, "c", 9_000, 1);
    let request = Uuid::new_v4();
    let past = now_ms() - 1;
    n1.store()
        .insert_approval_request(&ApprovalRequestRecord {
            id: request,
            wallet_ids: wallets.clone(),
            psbt: psbt.to_string(),
            txid: psbt.unsigned_tx.compute_txid().to_string(),
            state: RequestState::Pending,
            required: 2,
            created_at: past - 1000,
            expires_at: past,
            result: None,
            error: None,
            finished_at: None,
            decisions: Vec::new(),
        })
        .await
        .unwrap();
    let late = sign("alice", &psbt, &wallets, request, past, Decision::Approve);
    let err = n1
        .decide(request, Decision::Approve, &late)
        .await
        .unwrap_err();
    assert_eq!(approval_rule(&err), "approval_expired");
    assert_eq!(n1.approval_request(request).await.unwrap().state, "expired");
    let listed = n1
        .approval_requests(Some(RequestState::Expired), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

/// What a hostile coordinator sends along with a transaction the signers must refuse.
struct Case {
    name: &'static str,
    evidence: Option<ApprovalEvidence>,
    rule: &'static str,
}

/// Node 1, compromised, proposes the transaction straight to the signers (its own checks
/// skipped): every signer refuses every case below with the typed rule, releases no share and
/// counts no spend; the same proposal with two valid approvals is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_coordinator_cannot_get_past_the_signers_approval_check() {
    let c = cluster().await;
    let n1 = &c.nodes[0];
    let (id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let wallets = vec![id.clone()];
    let psbt = payment(&tkey, "a", 9_000, 1);
    let request = Uuid::new_v4();
    let expires = now_ms() + 3_600_000;
    let valid = |who: &[&str], psbt: &Psbt, wallets: &[WalletId], request: Uuid, at: i64| {
        who.iter()
            .map(|w| sign(w, psbt, wallets, request, at, Decision::Approve))
            .collect::<Vec<_>>()
    };
    let evidence = |approvals: Vec<SignedDecision>| {
        Some(ApprovalEvidence {
            request,
            expires_at_ms: expires,
            approvals,
        })
    };
    let two = ["alice", "bob"];
    let mut forged = valid(&["alice"], &psbt, &wallets, request, expires);
    forged.push(SignedDecision {
        public_key: public("bob"),
        ..sign(
            "mallory",
            &psbt,
            &wallets,
            request,
            expires,
            Decision::Approve,
        )
    });
    let past = now_ms() - 1;
    let other_output = payment(&tkey, "a", 9_000, 2);
    let other_amount = payment(&tkey, "a", 8_000, 1);
    // Same outputs, another input amount: only the fee (and so the txid) differs.
    let other_fee = {
        let mut p = payment(&tkey, "a", 9_000, 1);
        let input = synthetic_funding(
            &tkey,
            &Chain::Receive.path(0).unwrap(),
            Amount::from_sat(12_000),
            "a",
        )
        .unwrap();
        p = build_psbt(
            &[input],
            &[Payment {
                script_pubkey: p.unsigned_tx.output[0].script_pubkey.clone(),
                amount: Amount::from_sat(9_000),
                owner: None,
            }],
        )
        .unwrap();
        p
    };
    let cases = vec![
        Case {
            name: "no approvals",
            evidence: None,
            rule: "approvals_missing",
        },
        Case {
            name: "an empty list",
            evidence: evidence(Vec::new()),
            rule: "approvals_missing",
        },
        Case {
            name: "one approval",
            evidence: evidence(valid(&["alice"], &psbt, &wallets, request, expires)),
            rule: "approvals_missing",
        },
        Case {
            name: "the same approver twice",
            evidence: evidence(valid(
                &["alice", "alice"],
                &psbt,
                &wallets,
                request,
                expires,
            )),
            rule: "approvals_missing",
        },
        Case {
            name: "one approval and one by a key that is no approver",
            evidence: evidence(valid(
                &["alice", "mallory"],
                &psbt,
                &wallets,
                request,
                expires,
            )),
            rule: "approvals_missing",
        },
        Case {
            name: "a rejection passed off as an approval",
            evidence: evidence(vec![
                sign(
                    "alice",
                    &psbt,
                    &wallets,
                    request,
                    expires,
                    Decision::Approve,
                ),
                sign("bob", &psbt, &wallets, request, expires, Decision::Reject),
            ]),
            rule: "approval_invalid",
        },
        Case {
            name: "a forged approval (bob's key, mallory's signature)",
            evidence: evidence(forged),
            rule: "approval_invalid",
        },
        Case {
            name: "expired approvals",
            evidence: Some(ApprovalEvidence {
                request,
                expires_at_ms: past,
                approvals: valid(&two, &psbt, &wallets, request, past),
            }),
            rule: "approval_expired",
        },
        Case {
            name: "the expiry stretched by the coordinator",
            evidence: Some(ApprovalEvidence {
                request,
                expires_at_ms: expires + 60_000,
                approvals: valid(&two, &psbt, &wallets, request, expires),
            }),
            rule: "approval_invalid",
        },
        Case {
            name: "an expiry longer than the signer's expiry_secs",
            evidence: Some(ApprovalEvidence {
                request,
                expires_at_ms: now_ms() + 30 * 24 * 3_600_000,
                approvals: valid(
                    &two,
                    &psbt,
                    &wallets,
                    request,
                    now_ms() + 30 * 24 * 3_600_000,
                ),
            }),
            rule: "approval_invalid",
        },
        Case {
            name: "approvals of another output",
            evidence: evidence(valid(&two, &other_output, &wallets, request, expires)),
            rule: "approval_invalid",
        },
        Case {
            name: "approvals of another amount",
            evidence: evidence(valid(&two, &other_amount, &wallets, request, expires)),
            rule: "approval_invalid",
        },
        Case {
            name: "approvals of another fee",
            evidence: evidence(valid(&two, &other_fee, &wallets, request, expires)),
            rule: "approval_invalid",
        },
        Case {
            name: "approvals of another wallet",
            evidence: evidence(valid(
                &two,
                &psbt,
                &[WalletId::must("other")],
                request,
                expires,
            )),
            rule: "approval_invalid",
        },
        Case {
            name: "approvals of another request (a replay)",
            evidence: evidence(valid(&two, &psbt, &wallets, Uuid::new_v4(), expires)),
            rule: "approval_invalid",
        },
    ];
    let signers = NodeId::must_list(&[2, 3]);
    for case in &cases {
        // Sent to each signer alone, so every signer's own answer is seen.
        for &to in &signers {
            let body = ProposalBody::Sign {
                key_epochs: Vec::new(),
                wallet_ids: wallets.clone(),
                psbt: psbt.to_string(),
                signers: signers.clone(),
                presignatures: vec![None],
                approvals: case.evidence.clone(),
            };
            let result = n1
                .coordinate(Uuid::new_v4(), body, &[to], Duration::from_secs(10), None)
                .await;
            match result {
                Err(NodeError::Refused { node, refusal }) if node == to => assert_eq!(
                    refusal.kind,
                    RefusalKind::Approval {
                        rule: case.rule.into()
                    },
                    "{}: node {to}: {}",
                    case.name,
                    refusal.message
                ),
                other => panic!("{}: node {to} did not refuse: {other:?}", case.name),
            }
        }
    }
    for node in &c.nodes[1..] {
        assert_eq!(node.store().spent_since(&id, 0).await.unwrap(), 0);
        let released = node
            .audit_entries(0, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| matches!(e.event, AuditEvent::SignerSigned { .. }))
            .count();
        assert_eq!(released, 0, "node {} released a share", node.id());
    }

    // The check can pass: the same proposal with two valid approvals is signed by both.
    let body = ProposalBody::Sign {
        key_epochs: Vec::new(),
        wallet_ids: wallets.clone(),
        psbt: psbt.to_string(),
        signers: signers.clone(),
        presignatures: vec![None],
        approvals: evidence(valid(&two, &psbt, &wallets, request, expires)),
    };
    let outcomes = n1
        .coordinate(
            Uuid::new_v4(),
            body,
            &signers,
            Duration::from_secs(10),
            None,
        )
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 2);
}

/// A pending request is in the store: it survives its node's restart, and is then approved
/// and signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_request_survives_a_restart() {
    let mut c = cluster().await;
    let (id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let wallets = vec![id.clone()];
    let psbt = payment(&tkey, "a", 9_000, 1);
    let request = Uuid::new_v4();
    let view = pending(
        c.nodes[0]
            .submit_psbt(request, &wallets, &psbt.to_string())
            .await
            .unwrap(),
    );
    let expires = view.expires_at_ms;
    let alice = sign(
        "alice",
        &psbt,
        &wallets,
        request,
        expires,
        Decision::Approve,
    );
    c.nodes[0]
        .decide(request, Decision::Approve, &alice)
        .await
        .unwrap();

    let node = c.nodes[0].clone();
    node.shutdown().await;
    c.network.disconnect(NodeId::must(1));
    c.nodes[0] = start_node(node.config().clone(), &c.network).await;
    wait_all_live(&c.nodes).await;
    let n1 = &c.nodes[0];

    let listed = n1
        .approval_requests(Some(RequestState::Pending), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].request_id, request);
    assert_eq!(listed[0].decisions.len(), 1);
    assert_eq!(listed[0].expires_at_ms, expires);
    let bob = sign("bob", &psbt, &wallets, request, expires, Decision::Approve);
    let signed = n1.decide(request, Decision::Approve, &bob).await.unwrap();
    assert_eq!(signed.state, "signed", "{:?}", signed.error);
    let raw = signed.signed.as_ref().unwrap()["raw_transaction"]
        .as_str()
        .unwrap()
        .to_owned();
    verified(&raw, &parse_psbt(&signed.psbt).unwrap());
}

/// A request the policy refuses (over `max_amount_per_tx_sats`) does not wait for approvals:
/// it is refused with the policy's rule, and the request and its refusal are in the audit log,
/// as without an approval rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_policy_refuses_is_refused_and_audited_with_its_rule() {
    let c = start(3, 2, |cfg| {
        cfg.policy.approvals = two_of_three();
        cfg.policy.max_amount_per_tx_sats = Some(5_000);
    })
    .await;
    let (id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let psbt = payment(&tkey, "too much", 8_000, 1);
    let session = Uuid::new_v4();
    let err = c.nodes[0]
        .submit_psbt(session, &[id], &psbt.to_string())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("max_amount_per_tx_sats"), "{err}");
    let recorded: Vec<(bool, Option<String>)> = c.nodes[0]
        .audit_entries(0, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            AuditEvent::SigningRequested { session: s, .. } if s == session => Some((true, None)),
            AuditEvent::SigningFinished {
                session: s,
                ok,
                rule,
                ..
            } if s == session => Some((ok, rule)),
            _ => None,
        })
        .collect();
    assert_eq!(
        recorded,
        [
            (true, None),
            (false, Some("policy:max_amount_per_tx_sats".into()))
        ]
    );
}
