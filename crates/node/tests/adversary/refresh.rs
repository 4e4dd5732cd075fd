//! A hostile participant in a key refresh (issue 19): every envelope attack and field change
//! on node 2's refresh messages and on its report. Whatever it does, the honest nodes end on
//! one key epoch: all on the new shares if the refresh committed, all on their old shares
//! (unchanged, no pending share left) if it aborted; only node 2 is blamed; and the wallet
//! signs afterwards (each signature verified by bitcoinconsensus).

use super::*;

/// Each honest node's key epoch and share of `wallet`, and whether it still holds a pending
/// share, once every honest node settled (at most `bound`).
async fn honest_state(
    c: &Cluster,
    wallet: &mpc_types::WalletId,
    bound: Duration,
) -> Vec<(u64, Vec<u8>)> {
    let started = Instant::now();
    loop {
        let mut pending = 0;
        for node in c.nodes.iter().filter(|n| n.id() != ADVERSARY) {
            pending += node.store().pending_shares().await.unwrap().len();
        }
        if pending == 0 || started.elapsed() > bound {
            assert_eq!(pending, 0, "an honest node kept a pending share");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut state = Vec::new();
    for node in c.nodes.iter().filter(|n| n.id() != ADVERSARY) {
        let (epoch, share) = node
            .store()
            .key_share_with_epoch(wallet)
            .await
            .unwrap()
            .unwrap();
        state.push((epoch, share.to_vec()));
    }
    state
}

async fn refresh_cases(c: &Cluster, cases: Vec<&Case>) -> Tally {
    let n1 = &c.nodes[0];
    let (id, key) = wallet(c, Scheme::Schnorr).await;
    let wallets = vec![id.clone()];
    let mut tally = Tally::default();
    for (k, case) in cases.into_iter().enumerate() {
        let before = honest_state(c, &id, DEADLINE * 4).await;
        let (result, altered) = attacked(
            c,
            case,
            DEADLINE * 6,
            n1.refresh_wallet(Uuid::new_v4(), &id),
        )
        .await;
        tally.cases += 1;
        if altered == 0 {
            tally.idle += 1;
        }
        let after = honest_state(c, &id, DEADLINE * 4).await;
        assert_eq!(
            after[0].0, after[1].0,
            "{}: the honest nodes are on different key epochs",
            case.name
        );
        match &result {
            Ok(report) => {
                tally.succeeded += 1;
                *tally.outcomes.entry("committed".into()).or_default() += 1;
                assert_eq!(report.key_epoch, before[0].0 + 1, "{}", case.name);
                assert_eq!(after[0].0, report.key_epoch, "{}", case.name);
                for (old, new) in before.iter().zip(&after) {
                    assert_ne!(old.1, new.1, "{}: a share did not change", case.name);
                }
            }
            Err(e) => {
                tally.failed += 1;
                *tally.outcomes.entry(kind(e)).or_default() += 1;
                check_blame(case, e, &mut tally);
                assert_eq!(
                    before, after,
                    "{}: a failed refresh changed a share",
                    case.name
                );
            }
        }
        // The shares the honest nodes hold sign (node 2 behaves again).
        let psbt = spend_to_self(&key, &format!("after case {k}"));
        let report = n1
            .sign_psbt(Uuid::new_v4(), &wallets, &psbt)
            .await
            .unwrap_or_else(|e| panic!("{}: no signature after it: {e}", case.name));
        let signed = parse_psbt(&report.psbt).unwrap();
        verify_transaction(&report.raw_transaction, &spent_outputs(&signed).unwrap())
            .unwrap_or_else(|e| panic!("{}: an invalid signature: {e}", case.name));
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frost_refresh_with_a_hostile_participant() {
    let clusters = futures::future::join_all((0..SHARDS).map(|_| cluster())).await;
    let (id, _) = wallet(&clusters[0], Scheme::Schnorr).await;
    let honest = clusters[0].nodes[0].refresh_wallet(Uuid::new_v4(), &id);
    let all = generate(&clusters[0], ProtocolKind::KeyRefresh, honest).await;
    sharded(&clusters, &all, refresh_cases)
        .await
        .finish("KeyRefresh");
}
