//! Presignatures: consumed at most once, epochs, expiry, pool levels.

use super::*;

on_both_backends!(
    presignature_is_consumed_at_most_once_under_concurrency,
    expired_and_other_epoch_presignatures_are_unusable,
    a_corrupt_epoch_makes_presignatures_unusable,
    bump_epoch_invalidates_every_presignature,
    presignature_counts_per_path_and_signers,
);

async fn presignature_is_consumed_at_most_once_under_concurrency(db: Db) {
    const IDS: [&str; 4] = ["p0", "p1", "p2", "p3"];
    const TASKS: usize = 64;
    let store = db.open().await;
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    for id in IDS {
        let secret = format!("secret {id}");
        store
            .insert_presignature(
                &presig(id, "w", "m/0/0", 1, NOW + 60_000),
                secret.as_bytes(),
            )
            .await
            .unwrap();
    }
    let results = race(&db, &store, TASKS * IDS.len(), |handle, t| async move {
        let id = IDS[t / TASKS];
        (
            id,
            bytes(handle.consume_presignature(id, NOW).await.unwrap()),
        )
    })
    .await;
    let mut winners: Vec<(&str, Vec<u8>)> = results
        .into_iter()
        .filter_map(|(id, secret)| secret.map(|s| (id, s)))
        .collect();
    winners.sort();
    let expected: Vec<(&str, Vec<u8>)> = IDS
        .iter()
        .map(|id| (*id, format!("secret {id}").into_bytes()))
        .collect();
    assert_eq!(
        winners, expected,
        "each presignature must be consumed exactly once"
    );
    let raw = db.raw().await;
    for id in IDS {
        let p = store.presignature(id).await.unwrap().unwrap();
        assert_eq!(
            (p.state, p.consumed_at),
            (PresignatureState::Consumed, Some(NOW))
        );
        assert!(
            sealed_of(&raw, "SELECT sealed FROM presignatures WHERE id = $1", id)
                .await
                .is_none()
        );
        assert!(store.consume_presignature(id, NOW).await.unwrap().is_none());
    }
}

async fn expired_and_other_epoch_presignatures_are_unusable(db: Db) {
    let store = db.open().await;
    let raw = db.raw().await;
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    let fresh = presig("fresh", "w", "m/0/1", 1, NOW + 1000);
    let mut older = presig("older", "w", "m/0/1", 1, NOW + 1000);
    older.created_at = NOW - 5;
    let expired = presig("expired", "w", "m/0/1", 1, NOW);
    let foreign = presig("foreign", "w", "m/0/1", 1, NOW + 1000);
    let other_path = presig("other-path", "w", "m/0/2", 1, NOW + 1000);
    let mut other_signers = presig("other-signers", "w", "m/0/1", 1, NOW + 1000);
    other_signers.signers = NodeId::must_list(&[1, 2, 4]);
    for p in [
        &fresh,
        &older,
        &expired,
        &foreign,
        &other_path,
        &other_signers,
    ] {
        store.insert_presignature(p, p.id.as_bytes()).await.unwrap();
    }
    // A ready row from another epoch (as a restored backup, or an insert racing a bump).
    sqlx::query("UPDATE presignatures SET epoch = 7 WHERE id = 'foreign'")
        .execute(&raw)
        .await
        .unwrap();

    let ready = store
        .ready_presignatures(
            &wallet_id("w"),
            "m/0/1",
            &NodeId::must_list(&[3, 2, 1]),
            NOW,
            10,
        )
        .await
        .unwrap();
    let ids: Vec<&str> = ready.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        ["older", "fresh"],
        "ready, current epoch, unexpired, oldest first"
    );
    let limited = store
        .ready_presignatures(
            &wallet_id("w"),
            "m/0/1",
            &NodeId::must_list(&[1, 2, 3]),
            NOW,
            1,
        )
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert!(store
        .consume_presignature("expired", NOW)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .consume_presignature("foreign", NOW)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .consume_presignature("missing", NOW)
        .await
        .unwrap()
        .is_none());

    let error = store
        .insert_presignature(&presig("future", "w", "m/0/1", 2, NOW + 1000), b"x")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::WrongEpoch {
                record: 2,
                current: 1,
                ..
            }
        ),
        "{error}"
    );
    let error = store
        .insert_presignature(&fresh, b"again")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::AlreadyExists { .. }), "{error}");

    assert_eq!(store.expire_presignatures(NOW).await.unwrap(), 2);
    assert_eq!(store.expire_presignatures(NOW).await.unwrap(), 0);
    for id in ["expired", "foreign"] {
        let p = store.presignature(id).await.unwrap().unwrap();
        assert_eq!(p.state, PresignatureState::Expired);
        assert!(
            sealed_of(&raw, "SELECT sealed FROM presignatures WHERE id = $1", id)
                .await
                .is_none()
        );
    }

    // Expiry is exclusive: at expires_at it is already unusable.
    assert!(store
        .consume_presignature("fresh", NOW + 1000)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        bytes(
            store
                .consume_presignature("fresh", NOW + 999)
                .await
                .unwrap()
        ),
        Some(b"fresh".to_vec())
    );

    assert!(store.discard_presignature("older", NOW).await.unwrap());
    assert!(!store.discard_presignature("older", NOW).await.unwrap());
    assert!(store
        .consume_presignature("older", NOW)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.presignature("older").await.unwrap().unwrap().state,
        PresignatureState::Consumed
    );
    assert!(sealed_of(
        &raw,
        "SELECT sealed FROM presignatures WHERE id = $1",
        "older"
    )
    .await
    .is_none());
}

/// An epoch in `meta` that is not a number lists nothing and stops a consumption with an
/// error: never a guess (a lenient parse would read "1x" as epoch 1).
async fn a_corrupt_epoch_makes_presignatures_unusable(db: Db) {
    let store = db.open().await;
    let raw = db.raw().await;
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    let p = presig("p", "w", "m/0/1", 1, NOW + 1000);
    store.insert_presignature(&p, b"p").await.unwrap();
    let signers = NodeId::must_list(&[1, 2, 3]);
    let ready = || store.ready_presignatures(&p.wallet_id, "m/0/1", &signers, NOW, 10);
    let listed = ready().await.unwrap();
    assert_eq!(listed.len(), 1, "listed before the corruption");
    sqlx::query("UPDATE meta SET value = $1 WHERE key = 'epoch'")
        .bind(b"1x".to_vec())
        .execute(&raw)
        .await
        .unwrap();
    let listed = ready().await;
    assert!(
        listed.as_ref().map_or(true, Vec::is_empty),
        "listed under a corrupt epoch: {listed:?}"
    );
    let error = store.consume_presignature("p", NOW).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Corrupt { table: "meta", .. }),
        "{error}"
    );
    let still = store.presignature("p").await.unwrap().unwrap();
    assert_eq!(still.state, PresignatureState::Ready, "nothing consumed");
}

async fn bump_epoch_invalidates_every_presignature(db: Db) {
    let store = db.open().await;
    let raw = db.raw().await;
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    for id in ["a", "b", "c"] {
        store
            .insert_presignature(&presig(id, "w", "m", 1, NOW + 1000), b"secret")
            .await
            .unwrap();
    }
    assert!(store
        .consume_presignature("c", NOW)
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.epoch().await.unwrap(), 1);
    assert_eq!(store.bump_epoch().await.unwrap(), 2);
    assert_eq!(store.epoch().await.unwrap(), 2);
    assert_eq!(
        db.open().await.epoch().await.unwrap(),
        2,
        "the epoch is durable"
    );

    assert!(store
        .ready_presignatures(
            &wallet_id("w"),
            "m",
            &NodeId::must_list(&[1, 2, 3]),
            NOW,
            10
        )
        .await
        .unwrap()
        .is_empty());
    for id in ["a", "b"] {
        assert!(store.consume_presignature(id, NOW).await.unwrap().is_none());
        assert_eq!(
            store.presignature(id).await.unwrap().unwrap().state,
            PresignatureState::Expired
        );
    }
    let remaining: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM presignatures WHERE sealed IS NOT NULL")
            .fetch_one(&raw)
            .await
            .unwrap();
    assert_eq!(remaining, 0, "every presignature secret is deleted");

    let error = store
        .insert_presignature(&presig("old", "w", "m", 1, NOW + 1000), b"x")
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::WrongEpoch {
                record: 1,
                current: 2,
                ..
            }
        ),
        "{error}"
    );
    store
        .insert_presignature(&presig("new", "w", "m", 2, NOW + 1000), b"new secret")
        .await
        .unwrap();
    assert_eq!(
        bytes(store.consume_presignature("new", NOW).await.unwrap()),
        Some(b"new secret".to_vec())
    );
}

async fn presignature_counts_per_path_and_signers(db: Db) {
    let store = db.open().await;
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    store.insert_wallet(&wallet("v"), b"share").await.unwrap();
    let mut all = Vec::new();
    for i in 0..3 {
        all.push(presig(&format!("root-{i}"), "w", "m", 1, NOW + 1000));
    }
    all.push(presig("root-expired", "w", "m", 1, NOW));
    for i in 0..2 {
        let mut p = presig(&format!("other-{i}"), "w", "m", 1, NOW + 1000);
        p.signers = NodeId::must_list(&[2, 3, 4]);
        all.push(p);
    }
    all.push(presig("child", "w", "m/0/7", 1, NOW + 1000));
    all.push(presig("other-wallet", "v", "m", 1, NOW + 1000));
    for p in &all {
        store.insert_presignature(p, b"s").await.unwrap();
    }
    assert!(store
        .consume_presignature("root-0", NOW)
        .await
        .unwrap()
        .is_some());
    assert!(store.discard_presignature("other-0", NOW).await.unwrap());
    let levels = store
        .presignature_counts(&wallet_id("w"), NOW)
        .await
        .unwrap();
    let level = |path: &str, signers: Vec<NodeId>, ready, consumed, generated| PoolLevel {
        path: path.parse().unwrap(),
        signers,
        ready,
        consumed,
        generated,
    };
    // Generated counts every state: the expired one too.
    assert_eq!(
        levels,
        vec![
            level("m", NodeId::must_list(&[1, 2, 3]), 2, 1, 4),
            level("m", NodeId::must_list(&[2, 3, 4]), 1, 1, 2),
            level("m/0/7", NodeId::must_list(&[1, 2, 3]), 1, 0, 1),
        ]
    );
    assert!(store
        .presignature_counts(&wallet_id("none"), NOW)
        .await
        .unwrap()
        .is_empty());
}
