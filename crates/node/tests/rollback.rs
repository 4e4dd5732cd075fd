//! A node whose store fails it underneath. Brought back in time (a VM snapshot, point-in-time
//! recovery, a failover to an asynchronous replica), it never signs with a presignature it
//! already used: its start finds the store behind its rollback guard file and retires every
//! presignature. Refusing audit appends (a trigger in the real SQLite store), it releases
//! nothing it could not record (`audit::fail_closed`).

use mpc_types::NodeId;
use mpc_types::WalletId;
use std::time::Duration;

use mpc_bitcoin::{Chain, Scheme};
use mpc_node::testing::{start, start_node, wait_all_live, wallet_request, Cluster};
use mpc_node::{
    ceremony::PresignReport, control::ProposalBody, refusal::RefusalKind, Node, NodeError,
};
use mpc_store::AuditEvent;
use uuid::Uuid;

/// An ECDSA wallet made by `node`, whose PSBTs spend a made-up output at m/0/0.
struct EcdsaWallet {
    id: WalletId,
    key: mpc_bitcoin::WalletKey,
}

impl EcdsaWallet {
    fn path() -> mpc_protocols::DerivationPath {
        Chain::Receive.path(0).unwrap()
    }

    /// A PSBT spending 50 000 sats from a made-up output `funding` names.
    fn spend(&self, funding: &str) -> String {
        mpc_node::testing::spend(&self.key, &Self::path(), 50_000, funding, 9, 40_000)
    }
}

async fn presigned_wallet(node: &Node) -> (EcdsaWallet, PresignReport) {
    let record = node
        .create_wallet(Uuid::new_v4(), wallet_request("e", Scheme::Ecdsa))
        .await
        .unwrap();
    let stored = node.store().wallet(&record.id).await.unwrap().unwrap();
    let key = mpc_node::keys::wallet_key(&stored).unwrap();
    let presigned = node
        .generate_presignatures(
            Uuid::new_v4(),
            &record.id,
            &EcdsaWallet::path(),
            2,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(presigned.signers, NodeId::must_list(&[1, 2]));
    (EcdsaWallet { id: record.id, key }, presigned)
}

fn copy_store_files(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["store.db", "store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(to.join(file));
        if from.join(file).exists() {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }
}

async fn restart(c: &mut Cluster, id: u16, while_stopped: impl FnOnce(&std::path::Path)) {
    let index = usize::from(id - 1);
    let node = c.nodes[index].clone();
    node.shutdown().await;
    c.network.disconnect(NodeId::must(id));
    while_stopped(&node.config().data_dir);
    c.nodes[index] = start_node(node.config().clone(), &c.network).await;
    wait_all_live(&c.nodes).await;
}

/// The finding of issue 17 (class 9): node 2's store goes back to a copy made before a
/// signing (a VM snapshot, point-in-time recovery, replica failover), which holds the used
/// presignature as ready. At its restart node 2 sees its store is behind its guard file and
/// retires every presignature: a coordinator that offers the used one again (compromised, or
/// itself rolled back) is refused instead of getting a second partial signature with it, which
/// would give the key away. The cluster signs on, and node 2 signs with new presignatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_store_was_copied_back_never_signs_with_a_used_presignature_again() {
    let mut c = start(3, 2, |_| {}).await;
    let n1 = c.nodes[0].clone();
    let (ecdsa, presigned) = presigned_wallet(&n1).await;
    let spend = |funding: &str| ecdsa.spend(funding);
    let wallets = std::slice::from_ref(&ecdsa.id);

    // A normal restart of node 2 (its store copied meanwhile) keeps both presignatures.
    let copy = c.nodes[1].config().data_dir.with_file_name("node-2-copy");
    restart(&mut c, 2, |data| copy_store_files(data, &copy)).await;
    let store2 = c.nodes[1].store().clone();
    assert_eq!(store2.epoch().await.unwrap(), 1);
    for id in &presigned.ids {
        let p = store2.presignature(id).await.unwrap().unwrap();
        assert_eq!(p.state, mpc_store::PresignatureState::Ready, "{id}");
    }

    // Signed with one of them: consumed at nodes 1 and 2.
    let report = n1
        .sign_psbt(Uuid::new_v4(), wallets, &spend("a"))
        .await
        .unwrap();
    assert_eq!(report.inputs[0].method, "presignature");
    let used = report.inputs[0].presignature.clone().unwrap();

    // Node 2's store goes back to the copy, where `used` is ready again.
    restart(&mut c, 2, |data| copy_store_files(&copy, data)).await;
    let store2 = c.nodes[1].store().clone();
    assert_eq!(
        store2.epoch().await.unwrap(),
        2,
        "a new epoch at the restart"
    );
    for id in &presigned.ids {
        let p = store2.presignature(id).await.unwrap().unwrap();
        assert_eq!(p.state, mpc_store::PresignatureState::Expired, "{id}");
    }

    // A coordinator asks node 2 alone for a partial signature of another transaction with the
    // used presignature: refused.
    let err = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                key_epochs: Vec::new(),
                wallet_ids: vec![ecdsa.id.clone()],
                psbt: spend("b"),
                signers: NodeId::must_list(&[1, 2]),
                presignatures: vec![Some(used.clone())],
                approvals: None,
            },
            &NodeId::must_list(&[2]),
            Duration::from_secs(10),
            None,
        )
        .await
        .expect_err("node 2 gave a second partial signature with a used presignature");
    assert!(
        matches!(&err, NodeError::Refused { node, refusal }
            if *node == NodeId::must(2) && matches!(refusal.kind, RefusalKind::PresignatureUnavailable { .. })
                && refusal.message.contains("already used")),
        "{err}"
    );

    // The cluster signs on: node 1's offer of the other presignature is refused by node 2 too,
    // and the retry without node 2 signs interactively.
    let report = n1
        .sign_psbt(Uuid::new_v4(), wallets, &spend("c"))
        .await
        .unwrap();
    assert_eq!(
        report.signers,
        NodeId::must_list(&[1, 3]),
        "{:?}",
        report.attempts
    );

    // Node 2 signs again with presignatures of its new epoch.
    let fresh = n1
        .generate_presignatures(
            Uuid::new_v4(),
            &ecdsa.id,
            &EcdsaWallet::path(),
            1,
            Some(NodeId::must_list(&[1, 2])),
            None,
        )
        .await
        .unwrap();
    let report = n1
        .sign_psbt(Uuid::new_v4(), wallets, &spend("d"))
        .await
        .unwrap();
    assert_eq!(report.signers, NodeId::must_list(&[1, 2]));
    assert_eq!(report.inputs[0].presignature.as_ref(), fresh.ids.first());
}

/// Makes node `node`'s own SQLite store refuse audit appends of `kind` (every kind: `None`),
/// as a full disk or a broken replica would refuse them: a trigger, through another
/// connection to the same file, while the node runs.
async fn refuse_audit_appends(node: &Node, kind: Option<&str>) {
    let condition = kind.map_or(String::new(), |k| format!("WHEN NEW.kind = '{k}'"));
    let sql = format!(
        "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log {condition} \
         BEGIN SELECT RAISE(ABORT, 'audit log refuses appends'); END;"
    );
    let pool = sqlx::SqlitePool::connect(&node.config().store_url())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// Whether any control message in `sent` carries a signature share, a partial signature or a
/// signature (an `Outcome::Sign` that is not a refusal).
fn released_a_share(sent: &[mpc_transport::Envelope]) -> bool {
    use mpc_node::control::{Control, Outcome};
    sent.iter().any(|e| {
        matches!(
            Control::from_envelope(e),
            Ok(Control::Outcome {
                result: Ok(Outcome::Sign { .. }),
                ..
            })
        )
    })
}

/// Fail closed, a signer (issue 18): node 2's store refuses its audit appends. Asked to sign
/// with a presignature, node 2 consumes it (in the commit before anything leaves), cannot
/// record the release and so releases nothing: no partial signature leaves it, it refuses.
/// The coordinator retries on {1, 3} and signs, naming node 2 in the first attempt; the
/// presignature of the failed attempt is retired on both nodes (never offered again), and
/// node 2's log holds nothing it did not do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_whose_audit_append_fails_releases_nothing() {
    let c = start(3, 2, |_| {}).await;
    let n1 = &c.nodes[0];
    let n2 = &c.nodes[1];
    let (wallet, presigned) = presigned_wallet(n1).await;
    let [one, two, three] = [1, 2, 3].map(NodeId::must);
    let logged = n2.audit_entries(0, 0, 10_000).await.unwrap().len();
    refuse_audit_appends(n2, None).await;
    let recorder = mpc_node::adversary::Recorder::new();
    c.network.intercept(two, recorder.clone());
    let report = n1
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&wallet.id),
            &wallet.spend("audit"),
        )
        .await;
    c.network.release(two);
    let report = report.unwrap();
    assert!(
        !released_a_share(&recorder.sent()),
        "node 2 released its share"
    );
    assert_eq!(report.attempts.len(), 2, "{:?}", report.attempts);
    assert_eq!(report.attempts[0].signers, [one, two]);
    let error = report.attempts[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("node 2"), "{error}");
    assert!(error.contains("audit log refuses appends"), "{error}");
    assert_eq!(report.signers, [one, three]);
    assert_eq!(
        report.inputs[0].method, "interactive",
        "no presignature for {{1, 3}}"
    );
    let spent =
        mpc_bitcoin::psbt::spent_outputs(&mpc_bitcoin::psbt::parse_psbt(&report.psbt).unwrap())
            .unwrap();
    mpc_bitcoin::verify::verify_transaction(&report.raw_transaction, &spent).unwrap();
    // The failed attempt's presignature: consumed by node 2, retired by node 1; the batch's
    // other one still ready on both, and the next signing uses it.
    let ready = |node: &Node| {
        let id = wallet.id.clone();
        let node = node.clone();
        async move {
            node.store()
                .ready_presignatures(
                    &id,
                    &EcdsaWallet::path().to_string(),
                    &[one, two],
                    mpc_node::now_ms(),
                    10,
                )
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.id)
                .collect::<Vec<_>>()
        }
    };
    let used = &presigned.ids[0];
    assert!(
        !ready(n1).await.contains(used),
        "node 1 offers the used one again"
    );
    assert!(
        !ready(n2).await.contains(used),
        "node 2 holds the used one ready"
    );
    assert_eq!(ready(n1).await, [presigned.ids[1].clone()]);
    // Node 2's log: nothing appended while it refused.
    assert_eq!(n2.audit_entries(0, 0, 10_000).await.unwrap().len(), logged);
}

/// Fail closed, interactive ECDSA (no presignature): the protocol itself would carry node 2's
/// partial signature to node 1 in its last round, before node 2's outcome. So node 2 records
/// its release before the run, and with its store refusing that, it sends no message of the
/// signing protocol at all; the request signs on {1, 3}.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interactive_signer_whose_audit_append_fails_sends_no_protocol_message() {
    let c = start(3, 2, |_| {}).await;
    let n1 = &c.nodes[0];
    let n2 = &c.nodes[1];
    let (id, key) = mpc_node::testing::wallet(&c, Scheme::Ecdsa).await;
    let psbt = mpc_node::testing::spend_to_self(&key, "interactive audit");
    let [one, two, three] = [1, 2, 3].map(NodeId::must);
    refuse_audit_appends(n2, None).await;
    let recorder = mpc_node::adversary::Recorder::new();
    c.network.intercept(two, recorder.clone());
    let report = n1
        .sign_psbt(Uuid::new_v4(), std::slice::from_ref(&id), &psbt)
        .await;
    c.network.release(two);
    let report = report.unwrap();
    let sent = recorder.sent();
    let signing = mpc_protocols::execution::ProtocolKind::EcdsaSign.code();
    assert!(
        sent.iter().all(|e| e.protocol != signing),
        "node 2 took part in the signing protocol"
    );
    assert!(!released_a_share(&sent), "node 2 released its share");
    assert_eq!(report.attempts.len(), 2, "{:?}", report.attempts);
    assert_eq!(report.attempts[0].signers, [one, two]);
    let error = report.attempts[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("audit log refuses appends"), "{error}");
    assert_eq!(report.signers, [one, three]);
    assert_eq!(report.inputs[0].method, "interactive");
}

/// Fail closed, the coordinator (issue 18): node 1's store refuses the record of a finished
/// signing. The signers signed, but node 1 hands out an error, not the signed transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_audit_append_fails_returns_no_transaction() {
    let c = start(3, 2, |_| {}).await;
    let n1 = &c.nodes[0];
    let (id, key) = mpc_node::testing::wallet(&c, Scheme::Schnorr).await;
    let psbt = mpc_node::testing::spend_to_self(&key, "audit");
    refuse_audit_appends(n1, Some("signing_finished")).await;
    let session = Uuid::new_v4();
    let result = n1
        .sign_psbt(session, std::slice::from_ref(&id), &psbt)
        .await;
    match result {
        Err(NodeError::Store(e)) => {
            assert!(e.to_string().contains("audit log refuses appends"), "{e}")
        }
        other => panic!("expected the store's error, got {other:?}"),
    }
    // Its log holds the request (and its own release as a signer), never a finished signing.
    let log = n1.audit_entries(0, 0, 10_000).await.unwrap();
    let of_session = |e: &&mpc_store::AuditEntry| match &e.event {
        AuditEvent::SigningRequested { session: s, .. }
        | AuditEvent::SigningFinished { session: s, .. }
        | AuditEvent::SignerSigned { session: s, .. } => *s == session,
        _ => false,
    };
    let kinds: Vec<&AuditEvent> = log.iter().filter(of_session).map(|e| &e.event).collect();
    assert!(
        matches!(
            kinds[..],
            [
                AuditEvent::SigningRequested { .. },
                AuditEvent::SignerSigned { .. }
            ]
        ),
        "{kinds:?}"
    );
}
