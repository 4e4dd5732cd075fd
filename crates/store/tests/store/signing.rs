//! A signer's durable step: sessions seen once, all-or-nothing commits, spend limits.

use super::*;

on_both_backends!(
    sessions_are_seen_once,
    begin_signing_is_one_all_or_nothing_commit,
    fsynced_and_unfsynced_signings_share_the_database,
    spend_limit_holds_under_concurrent_signings,
);

async fn sessions_are_seen_once(db: Db) {
    let store = db.open().await;
    let session = Uuid::new_v4();
    assert!(store.mark_session_seen(session, "keygen").await.unwrap());
    assert!(!store.mark_session_seen(session, "keygen").await.unwrap());
    assert!(!store.mark_session_seen(session, "signing").await.unwrap());
    assert!(store
        .mark_session_seen(Uuid::new_v4(), "keygen")
        .await
        .unwrap());
    // Seen sessions survive a restart.
    let again = db.open().await;
    assert!(!again.mark_session_seen(session, "keygen").await.unwrap());
}

async fn begin_signing_is_one_all_or_nothing_commit(db: Db) {
    let store = db.open().await;
    store.insert_wallet(&wallet("w1"), b"share").await.unwrap();
    for id in ["a", "b"] {
        store
            .insert_presignature(&presig(id, "w1", "m", 1, NOW + 60_000), id.as_bytes())
            .await
            .unwrap();
    }
    let epoch = store.epoch().await.unwrap();
    assert_eq!(epoch, 1, "the fixtures' presignatures are of epoch 1");
    let (m, m01) = (DerivationPath::root(), "m/0/1".parse().unwrap());
    let w1 = wallet_id("w1");
    let for_m = |id| PresignatureUse {
        id,
        wallet_id: &w1,
        path: &m,
        signers: &ONE_TWO_THREE,
    };
    // One unavailable presignature refuses the whole step and changes nothing.
    let session = Uuid::new_v4();
    let refused = store
        .begin_signing(
            session,
            &[for_m("a"), for_m("missing")],
            &[(&wallet_id("w1"), 500)],
            None,
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        Err(SigningRefusal::PresignatureUnavailable("missing".into()))
    );
    // So does one bound to another path (or wallet, or signer set).
    let elsewhere = PresignatureUse {
        path: &m01,
        ..for_m("b")
    };
    let refused = store
        .begin_signing(
            session,
            &[for_m("a"), elsewhere],
            &[(&wallet_id("w1"), 500)],
            None,
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        Err(SigningRefusal::PresignatureBoundElsewhere {
            id: "b".into(),
            bound_to: "wallet w1 path m signers [1,2,3]".into()
        })
    );
    assert_eq!(
        store.presignature("a").await.unwrap().unwrap().state,
        PresignatureState::Ready
    );
    assert_eq!(store.spent_since(&wallet_id("w1"), 0).await.unwrap(), 0);
    // The same session then succeeds: nothing of the refused attempt was committed.
    let secrets = store
        .begin_signing(
            session,
            &[for_m("a"), for_m("b")],
            &[(&wallet_id("w1"), 500)],
            None,
            NOW,
        )
        .await
        .unwrap()
        .unwrap();
    let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
    assert_eq!(secrets, [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(store.spent_since(&wallet_id("w1"), 0).await.unwrap(), 500);
    for id in ["a", "b"] {
        assert_eq!(
            store.presignature(id).await.unwrap().unwrap().state,
            PresignatureState::Consumed
        );
    }
    // A replay of the session is refused before anything else, and counts nothing.
    let replay = store
        .begin_signing(session, &[], &[(&wallet_id("w1"), 500)], None, NOW)
        .await
        .unwrap();
    assert_eq!(replay, Err(SigningRefusal::SessionUsed));
    assert!(!store.mark_session_seen(session, "sign").await.unwrap());
    assert_eq!(store.spent_since(&wallet_id("w1"), 0).await.unwrap(), 500);
    // Without presignatures (FROST, interactive ECDSA) it marks and counts.
    let frost = store
        .begin_signing(Uuid::new_v4(), &[], &[(&wallet_id("w1"), 700)], None, NOW)
        .await
        .unwrap();
    assert_eq!(frost, Ok(Vec::new()));
    assert_eq!(store.spent_since(&wallet_id("w1"), 0).await.unwrap(), 1200);
}

/// Signings that consume a presignature (their commit fsync'd) and signings that do not (on
/// SQLite, committed through a second pool that skips the fsync) race on one wallet through
/// four handles: every one commits, the spends add up, every presignature is consumed once,
/// and after reopening the store every session is still refused as seen.
async fn fsynced_and_unfsynced_signings_share_the_database(db: Db) {
    const TASKS: usize = 24;
    let store = db.open().await;
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    for t in (1..TASKS).step_by(2) {
        let id = format!("p{t}");
        store
            .insert_presignature(&presig(&id, "w", "m", 1, NOW + 60_000), id.as_bytes())
            .await
            .unwrap();
    }
    let sessions: Vec<Uuid> = (0..TASKS).map(|_| Uuid::new_v4()).collect();
    let results = race(&db, &store, TASKS, |handle, t| {
        let session = sessions[t];
        async move {
            let id = format!("p{t}");
            let root = DerivationPath::root();
            let wallet = wallet_id("w");
            let uses = match t % 2 {
                1 => vec![PresignatureUse {
                    id: &id,
                    wallet_id: &wallet,
                    path: &root,
                    signers: &ONE_TWO_THREE,
                }],
                _ => Vec::new(),
            };
            let secrets = handle
                .begin_signing(session, &uses, &[(&wallet_id("w"), 1_000)], None, NOW)
                .await
                .unwrap()
                .unwrap();
            secrets.iter().map(|s| s.to_vec()).collect::<Vec<_>>()
        }
    })
    .await;
    for (t, secrets) in results.iter().enumerate() {
        let expected: Vec<Vec<u8>> = match t % 2 {
            1 => vec![format!("p{t}").into_bytes()],
            _ => Vec::new(),
        };
        assert_eq!(secrets, &expected, "signing {t}");
    }
    assert_eq!(
        store.spent_since(&wallet_id("w"), 0).await.unwrap(),
        1_000 * TASKS as u64
    );
    store.close().await;
    let reopened = db.open().await;
    for t in (1..TASKS).step_by(2) {
        let record = reopened
            .presignature(&format!("p{t}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.state, PresignatureState::Consumed);
    }
    for session in sessions {
        let replay = reopened
            .begin_signing(session, &[], &[(&wallet_id("w"), 1)], None, NOW)
            .await
            .unwrap();
        assert_eq!(replay, Err(SigningRefusal::SessionUsed));
    }
    assert_eq!(
        reopened.spent_since(&wallet_id("w"), 0).await.unwrap(),
        1_000 * TASKS as u64
    );
}

/// The rolling limit is checked where the spend is recorded: of 12 concurrent signings of
/// 30 000 sats each (through four separate pools) under a limit of 100 000, with 20 000 sent
/// inside the window and 50 000 before it, exactly two pass; a refusal records nothing.
async fn spend_limit_holds_under_concurrent_signings(db: Db) {
    const TASKS: usize = 12;
    let store = db.open().await;
    for id in ["w", "other"] {
        store.insert_wallet(&wallet(id), b"share").await.unwrap();
    }
    let limit = SpendLimit {
        max_sats: 100_000,
        since_ms: NOW - 1_000,
    };
    for (at, amount) in [(NOW - 5_000, 50_000), (NOW - 500, 20_000)] {
        store
            .begin_signing(Uuid::new_v4(), &[], &[(&wallet_id("w"), amount)], None, at)
            .await
            .unwrap()
            .unwrap();
    }
    // Another wallet's spends do not count against this one.
    store
        .begin_signing(
            Uuid::new_v4(),
            &[],
            &[(&wallet_id("other"), 90_000)],
            Some(limit),
            NOW,
        )
        .await
        .unwrap()
        .unwrap();
    let results = race(&db, &store, TASKS, |handle, _| async move {
        handle
            .begin_signing(
                Uuid::new_v4(),
                &[],
                &[(&wallet_id("w"), 30_000)],
                Some(limit),
                NOW,
            )
            .await
            .unwrap()
    })
    .await;
    let mut passed = 0;
    for result in results {
        match result {
            Ok(_) => passed += 1,
            Err(refusal) => {
                let SigningRefusal::SpendLimit {
                    wallet_id,
                    spent_sats,
                    amount_sats,
                    max_sats,
                } = refusal
                else {
                    panic!("unexpected refusal {refusal:?}");
                };
                assert_eq!(
                    (wallet_id.as_str(), spent_sats, amount_sats, max_sats),
                    ("w", 80_000, 30_000, 100_000)
                );
            }
        }
    }
    assert_eq!(
        passed, 2,
        "20 000 + 2 x 30 000 fits in 100 000; a third does not"
    );
    assert_eq!(
        store
            .spent_since(&wallet_id("w"), limit.since_ms)
            .await
            .unwrap(),
        80_000
    );
    assert_eq!(
        store.spent_since(&wallet_id("w"), 0).await.unwrap(),
        130_000
    );
}
