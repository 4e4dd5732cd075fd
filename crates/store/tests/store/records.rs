//! Records: wallets, ceremonies, incidents, primes, concurrent writers, reopening.

use super::*;

on_both_backends!(
    wallet_lifecycle,
    ceremonies_upsert_and_list,
    incidents_are_listed_counted_and_released,
    a_wallet_row_that_does_not_decode_is_corrupt,
    primes_are_taken_once_under_concurrency,
    concurrent_writers_do_not_fail,
    reopening_gives_back_everything,
);

async fn wallet_lifecycle(db: Db) {
    let store = db.open().await;
    let w1 = wallet("w1");
    store.insert_wallet(&w1, b"share 1").await.unwrap();
    assert_eq!(
        store.wallet(&wallet_id("w1")).await.unwrap(),
        Some(w1.clone())
    );
    let error = store.insert_wallet(&w1, b"other share").await.unwrap_err();
    assert!(
        matches!(&error, StoreError::AlreadyExists { table: "wallets", id } if id == "w1"),
        "{error}"
    );
    assert_eq!(
        bytes(store.key_share(&wallet_id("w1")).await.unwrap()),
        Some(b"share 1".to_vec())
    );

    store
        .set_wallet_state(&wallet_id("w1"), WalletState::Active)
        .await
        .unwrap();
    let active = store.wallet(&wallet_id("w1")).await.unwrap().unwrap();
    assert_eq!(active.state, WalletState::Active);
    assert!(active.activated_at.unwrap() > 0);
    assert_eq!(active.participants, NodeId::must_list(&[1, 2, 3]));
    // Idempotent, and an active wallet cannot be aborted (its share would be lost).
    store
        .set_wallet_state(&wallet_id("w1"), WalletState::Active)
        .await
        .unwrap();
    let error = store
        .set_wallet_state(&wallet_id("w1"), WalletState::Aborted)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidTransition { .. }),
        "{error}"
    );
    assert_eq!(
        bytes(store.key_share(&wallet_id("w1")).await.unwrap()),
        Some(b"share 1".to_vec())
    );

    let mut w2 = wallet("w2");
    w2.created_at = NOW + 1;
    w2.participants = NodeId::must_list(&[5, 1, 3]);
    store.insert_wallet(&w2, b"share 2").await.unwrap();
    store
        .set_wallet_state(&wallet_id("w2"), WalletState::Aborted)
        .await
        .unwrap();
    let aborted = store.wallet(&wallet_id("w2")).await.unwrap().unwrap();
    assert_eq!(aborted.state, WalletState::Aborted);
    assert_eq!(aborted.activated_at, None);
    assert_eq!(aborted.participants, NodeId::must_list(&[1, 3, 5]));
    assert!(store.key_share(&wallet_id("w2")).await.unwrap().is_none());
    let error = store
        .set_wallet_state(&wallet_id("w2"), WalletState::Active)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidTransition { .. }),
        "{error}"
    );

    let error = store
        .set_wallet_state(&wallet_id("nope"), WalletState::Active)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    let ids: Vec<mpc_types::WalletId> = store
        .wallets()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, ["w1", "w2"]);
    assert!(store.wallet(&wallet_id("nope")).await.unwrap().is_none());
}

async fn ceremonies_upsert_and_list(db: Db) {
    let store = db.open().await;
    let mut c1 = ceremony("c1", NOW);
    store.put_ceremony(&c1).await.unwrap();
    assert_eq!(store.ceremony("c1").await.unwrap(), Some(c1.clone()));
    c1.state = "failed".into();
    c1.result = Some(serde_json::json!({ "public_key": "02ab", "nodes": [1, 2] }));
    c1.error = Some("node 3 timed out".into());
    c1.finished_at = Some(NOW + 5);
    store.put_ceremony(&c1).await.unwrap();
    assert_eq!(store.ceremony("c1").await.unwrap(), Some(c1.clone()));
    store.put_ceremony(&ceremony("c2", NOW + 10)).await.unwrap();
    store.put_ceremony(&ceremony("c3", NOW + 20)).await.unwrap();
    let ids: Vec<String> = store
        .ceremonies(2)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["c3", "c2"]);
    assert_eq!(store.ceremonies(10).await.unwrap().len(), 3);
    assert!(store.ceremony("nope").await.unwrap().is_none());
}

fn incident(n: u128, accused: NodeId, kind: IncidentKind, at: i64) -> IncidentRecord {
    IncidentRecord {
        id: Uuid::from_u128(n),
        accused,
        reporter: N1,
        kind,
        session: Uuid::from_u128(1000 + n),
        wallet_id: None,
        at,
        detail: format!("incident {n}"),
        evidence: None,
        released_at: None,
    }
}

async fn incidents_are_listed_counted_and_released(db: Db) {
    let store = db.open().await;
    let first = incident(1, N2, IncidentKind::Silent, NOW);
    store.record_incident(&first).await.unwrap();
    // Idempotent on its id.
    store.record_incident(&first).await.unwrap();
    // Reported by node 3 (a participant's word), the others by node 1 itself.
    store
        .record_incident(&IncidentRecord {
            reporter: N3,
            ..incident(2, N2, IncidentKind::Misbehaved, NOW + 1)
        })
        .await
        .unwrap();
    store
        .record_incident(&incident(3, N3, IncidentKind::InvalidOutcome, NOW + 2))
        .await
        .unwrap();
    let all = store.incidents(None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|i| i.id.as_u128()).collect::<Vec<_>>(),
        [3, 2, 1],
        "newest first"
    );
    assert_eq!(all[2], first);
    assert_eq!(store.incidents(Some(N2), 1).await.unwrap().len(), 1);
    assert_eq!(store.incidents(Some(N1), 10).await.unwrap(), []);
    assert_eq!(
        store.unreleased_incident_counts(None).await.unwrap(),
        [(N2, 2), (N3, 1)]
    );
    // Counted by reporter: the exclusion rule counts only the node's own verdicts.
    let by_reporter: Vec<_> = all.iter().map(|i| i.reporter).collect();
    for reporter in [N1, N2, N3] {
        let expected: Vec<(NodeId, u64)> = [N2, N3]
            .into_iter()
            .map(|accused| {
                let n = all
                    .iter()
                    .filter(|i| i.accused == accused && i.reporter == reporter)
                    .count() as u64;
                (accused, n)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            store
                .unreleased_incident_counts(Some(reporter))
                .await
                .unwrap(),
            expected,
            "reporters {by_reporter:?}"
        );
    }
    assert_eq!(store.release_incidents(N2, NOW + 5).await.unwrap(), 2);
    assert_eq!(store.release_incidents(N2, NOW + 6).await.unwrap(), 0);
    assert_eq!(
        store.unreleased_incident_counts(None).await.unwrap(),
        [(N3, 1)]
    );
    // Released incidents stay listed and counted by kind (the metric is a counter).
    let released = store.incidents(Some(N2), 10).await.unwrap();
    assert!(released.iter().all(|i| i.released_at == Some(NOW + 5)));
    assert_eq!(
        store.incident_counts().await.unwrap(),
        [
            (N2, IncidentKind::Misbehaved, 1),
            (N2, IncidentKind::Silent, 1),
            (N3, IncidentKind::InvalidOutcome, 1)
        ]
    );
    // One by id, evidence and all; an unknown id is none.
    let with_evidence = IncidentRecord {
        evidence: Some(vec![0, 1, 2, 255]),
        ..incident(4, N3, IncidentKind::Misbehaved, NOW - 1)
    };
    store.record_incident(&with_evidence).await.unwrap();
    assert_eq!(
        store.incident(with_evidence.id).await.unwrap(),
        Some(with_evidence.clone())
    );
    assert_eq!(store.incident(Uuid::from_u128(99)).await.unwrap(), None);
    // What counts toward exclusion: node 1's own verdicts, and others' reports only with
    // evidence (incident 2, node 3's word about node 2, does not; node 1's incident 4 does).
    let proven = IncidentRecord {
        reporter: N2,
        evidence: Some(vec![7]),
        ..incident(5, N3, IncidentKind::Misbehaved, NOW)
    };
    store.record_incident(&proven).await.unwrap();
    store
        .record_incident(&IncidentRecord {
            reporter: N2,
            ..incident(6, N3, IncidentKind::Misbehaved, NOW)
        })
        .await
        .unwrap();
    assert_eq!(
        store.excluding_incident_counts(N1).await.unwrap(),
        [(N3, 3)],
        "incidents 3, 4 and 5; node 2's are released"
    );
}

/// Rows are decoded into typed values once, here: a wallet whose scheme or network is not one
/// we know, whose public key is not a point or whose chain code is not 32 bytes is an error
/// naming the row, never skipped and never a default.
async fn a_wallet_row_that_does_not_decode_is_corrupt(db: Db) {
    let store = db.open().await;
    let raw = db.raw().await;
    let set = |column: &str, value: &'static str| {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE wallets SET {column} = $1 WHERE id = 'w'"
        )))
        .bind(value)
        .execute(&raw)
    };
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    assert_eq!(
        store.wallet(&wallet_id("w")).await.unwrap().unwrap().scheme,
        mpc_types::Scheme::Ecdsa
    );
    let generator = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    let chain_code = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    for (column, bad, good) in [
        ("scheme", "rsa", "cggmp24"),
        ("network", "litecoin", "regtest"),
        // x = 5 is not on the curve.
        (
            "public_key",
            "020000000000000000000000000000000000000000000000000000000000000005",
            generator,
        ),
        ("public_key", "02aa", generator),
        ("chain_code", "cc", chain_code),
        ("chain_code", "not hex", chain_code),
    ] {
        set(column, bad).await.unwrap();
        for error in [
            store.wallet(&wallet_id("w")).await.unwrap_err(),
            store.wallets().await.unwrap_err(),
        ] {
            assert!(
                matches!(&error, StoreError::Corrupt { table: "wallets", id, reason }
                    if id == "w" && reason.contains(bad)),
                "{error}"
            );
        }
        set(column, good).await.unwrap();
        assert!(store.wallet(&wallet_id("w")).await.unwrap().is_some());
    }
}

async fn primes_are_taken_once_under_concurrency(db: Db) {
    const SETS: usize = 24;
    let store = db.open().await;
    let mut added = HashSet::new();
    for i in 0..SETS {
        let primes = format!("primes set {i}").into_bytes();
        store.add_primes(&primes).await.unwrap();
        added.insert(primes);
    }
    assert_eq!(store.primes_count().await.unwrap(), SETS as u64);
    let taken: Vec<Vec<u8>> = race(&db, &store, 2 * SETS, |handle, _| async move {
        bytes(handle.take_primes().await.unwrap())
    })
    .await
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(taken.len(), SETS, "every set is handed out");
    let distinct: HashSet<Vec<u8>> = taken.into_iter().collect();
    assert_eq!(distinct, added, "and none twice");
    assert_eq!(store.primes_count().await.unwrap(), 0);
}

/// Mixed writes from 64 tasks over four pools: none may fail (on SQLite: no SQLITE_BUSY).
async fn concurrent_writers_do_not_fail(db: Db) {
    const TASKS: usize = 64;
    let store = db.open().await;
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    race(&db, &store, TASKS, |handle, t| async move {
        let id = format!("p{t}");
        handle
            .insert_presignature(&presig(&id, "w", "m", 1, NOW + 1000), id.as_bytes())
            .await
            .unwrap();
        assert!(handle
            .mark_session_seen(Uuid::new_v4(), "signing")
            .await
            .unwrap());
        handle.add_primes(id.as_bytes()).await.unwrap();
        handle
            .put_ceremony(&ceremony(&id, NOW + t as i64))
            .await
            .unwrap();
        handle
            .put_aux_info(
                &NodeId::must_list(&[1, 2, 3]),
                id.as_bytes(),
                &id,
                Uuid::new_v4(),
            )
            .await
            .unwrap();
        let taken = handle.consume_presignature(&id, NOW).await.unwrap();
        assert_eq!(bytes(taken), Some(id.into_bytes()));
    })
    .await;
    assert_eq!(store.primes_count().await.unwrap(), TASKS as u64);
    assert_eq!(store.ceremonies(1000).await.unwrap().len(), TASKS);
    let levels = store
        .presignature_counts(&wallet_id("w"), NOW)
        .await
        .unwrap();
    assert_eq!((levels[0].ready, levels[0].consumed), (0, TASKS as u64));
}

async fn reopening_gives_back_everything(db: Db) {
    let key = KeySource::Passphrase(Zeroizing::new("reopen me".into()));
    let session = Uuid::new_v4();
    let w = wallet("w");
    let c = ceremony("c", NOW);
    let p = presig("p", "w", "m", 1, NOW + 1000);
    let store_id = {
        let store = Store::open(&db.url, &key, N3).await.unwrap();
        store.add_primes(b"primes").await.unwrap();
        store
            .put_aux_info(&NodeId::must_list(&[1, 2, 3]), b"aux", "digest", session)
            .await
            .unwrap();
        store.insert_wallet(&w, b"share").await.unwrap();
        store
            .set_wallet_state(&wallet_id("w"), WalletState::Active)
            .await
            .unwrap();
        store.put_ceremony(&c).await.unwrap();
        store.mark_session_seen(session, "aux-info").await.unwrap();
        store.insert_presignature(&p, b"presig").await.unwrap();
        let id = store.store_id();
        store.close().await;
        id
    };
    let store = Store::open(&db.url, &key, N3).await.unwrap();
    assert_eq!(store.store_id(), store_id);
    assert_eq!(store.epoch().await.unwrap(), 1);
    assert_eq!(store.primes_count().await.unwrap(), 1);
    assert_eq!(
        bytes(store.take_primes().await.unwrap()),
        Some(b"primes".to_vec())
    );
    let (aux, digest) = store
        .aux_info(&NodeId::must_list(&[1, 2, 3]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (aux.to_vec(), digest),
        (b"aux".to_vec(), "digest".to_owned())
    );
    let reopened = store.wallet(&wallet_id("w")).await.unwrap().unwrap();
    assert_eq!(reopened.state, WalletState::Active);
    assert_eq!(
        WalletRecord {
            state: WalletState::Pending,
            activated_at: None,
            key_epoch: 0,
            ..reopened
        },
        w
    );
    assert_eq!(
        bytes(store.key_share(&wallet_id("w")).await.unwrap()),
        Some(b"share".to_vec())
    );
    assert_eq!(store.ceremony("c").await.unwrap(), Some(c));
    assert!(!store.mark_session_seen(session, "aux-info").await.unwrap());
    assert_eq!(store.presignature("p").await.unwrap(), Some(p));
    assert_eq!(
        bytes(store.consume_presignature("p", NOW).await.unwrap()),
        Some(b"presig".to_vec())
    );
}

// ---- not backend-specific ----
