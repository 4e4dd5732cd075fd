//! The UTXO registry on real databases: SQLite always, PostgreSQL when `MPC_TEST_POSTGRES_URL`
//! names an admin connection (`scripts/with-postgres cargo test -p mpc-store --test utxos`).

use std::path::PathBuf;

use mpc_store::{
    generate_key_file, KeySource, NewUtxo, Reservation, Store, StoreError, UtxoOrigin, UtxoState,
    WalletRecord, WalletState,
};
use mpc_types::NodeId;
use sqlx::{AssertSqlSafe, Connection};
use uuid::Uuid;

const NOW: i64 = 1_700_000_000_000;

/// A fresh store (SQLite file, or a new PostgreSQL database) and a cleanup closure's inputs.
async fn fresh(postgres: bool) -> Option<(Store, PathBuf, Option<(String, String)>)> {
    let admin = std::env::var("MPC_TEST_POSTGRES_URL").ok();
    if postgres && admin.is_none() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("mpc-utxo-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    generate_key_file(&dir.join("store.key")).unwrap();
    let (url, pg) = if let (true, Some(admin)) = (postgres, admin) {
        let name = format!("mpc_utxo_test_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap().to_string();
        (format!("{base}/{name}"), Some((admin, name)))
    } else {
        (format!("sqlite://{}", dir.join("store.db").display()), None)
    };
    let store = Store::open(
        &url,
        &KeySource::KeyFile(dir.join("store.key")),
        NodeId::must(1),
    )
    .await
    .unwrap();
    Some((store, dir, pg))
}

async fn cleanup(store: Store, dir: PathBuf, pg: Option<(String, String)>) {
    store.close().await;
    if let Some((admin, name)) = pg {
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn wallet(id: &str) -> WalletRecord {
    WalletRecord {
        id: id.into(),
        name: id.into(),
        scheme: mpc_types::Scheme::Ecdsa,
        threshold: 2,
        participants: NodeId::must_list(&[1, 2, 3]),
        network: mpc_types::Network::Regtest,
        public_key: "02aa".into(),
        chain_code: "cc".into(),
        state: WalletState::Pending,
        session: Uuid::new_v4(),
        created_at: NOW,
        activated_at: None,
    }
}

fn utxo(n: u32, amount: u64) -> NewUtxo {
    NewUtxo {
        outpoint: format!("{:064x}:{n}", n + 1),
        amount_sats: amount,
        path: format!("m/0/{n}"),
        script_pubkey: format!("0014{:040x}", n),
        funding_transaction: None,
    }
}

async fn registry_lifecycle(store: &Store) {
    store.insert_wallet(&wallet("w1"), b"share").await.unwrap();
    store.insert_wallet(&wallet("w2"), b"share").await.unwrap();
    let a = utxo(0, 10_000);
    let b = utxo(1, 20_000);
    store
        .insert_utxos("w1", &[a.clone(), b.clone()], NOW)
        .await
        .unwrap();
    // Registering the same output again is a no-op; with another amount, or for another
    // wallet, it is refused and nothing of the batch is kept.
    store
        .insert_utxos("w1", std::slice::from_ref(&a), NOW)
        .await
        .unwrap();
    let mut other_amount = a.clone();
    other_amount.amount_sats = 1;
    let c = utxo(2, 30_000);
    let err = store
        .insert_utxos("w1", &[c.clone(), other_amount], NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    assert!(store
        .insert_utxos("w2", std::slice::from_ref(&b), NOW)
        .await
        .is_err());
    let listed = store.utxos("w1", true).await.unwrap();
    assert_eq!(listed.len(), 2, "the failed batch left nothing behind");
    assert!(listed.iter().all(|u| u.state == UtxoState::Available
        && u.origin == UtxoOrigin::Registered
        && u.wallet_id == "w1"));
    assert_eq!(listed[1].amount.to_sat(), 20_000);
    assert!(store.utxos("w2", true).await.unwrap().is_empty());

    // Two requests race for the same output: one wins, the other reserves nothing.
    assert_eq!(store.next_change_index("w1").await.unwrap(), 0);
    let r1 = store
        .reserve_utxos(
            "w1",
            std::slice::from_ref(&a.outpoint),
            "req-1",
            NOW,
            NOW - 1,
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        r1,
        Reservation::Reserved {
            change_index: Some(0)
        }
    );
    let r2 = store
        .reserve_utxos(
            "w1",
            &[b.outpoint.clone(), a.outpoint.clone()],
            "req-2",
            NOW,
            NOW - 1,
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        r2,
        Reservation::Conflict {
            outpoint: a.outpoint.clone()
        }
    );
    // b was not kept reserved by the failed request, and no change index was used.
    let spendable = store.spendable_utxos("w1", NOW - 1).await.unwrap();
    assert_eq!(spendable.len(), 1);
    assert_eq!(spendable[0].outpoint.to_string(), b.outpoint);
    assert_eq!(store.next_change_index("w1").await.unwrap(), 1);
    // A reservation older than the staleness bound is spendable again.
    assert_eq!(store.spendable_utxos("w1", NOW + 1).await.unwrap().len(), 2);

    // Released: available again; the change index stays used.
    assert_eq!(store.release_utxos("req-1").await.unwrap(), 1);
    assert_eq!(store.spendable_utxos("w1", NOW - 1).await.unwrap().len(), 2);
    let r3 = store
        .reserve_utxos(
            "w1",
            &[a.outpoint.clone(), b.outpoint.clone()],
            "req-3",
            NOW,
            NOW - 1,
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        r3,
        Reservation::Reserved {
            change_index: Some(1)
        }
    );
    let change = NewUtxo {
        outpoint: format!("{:064x}:1", 99),
        amount_sats: 25_000,
        path: "m/1/1".into(),
        script_pubkey: "0014ff".into(),
        funding_transaction: Some(format!("{:064x}", 99)),
    };
    assert_eq!(
        store
            .complete_spend("w1", "req-3", &"99".repeat(32), Some(&change), NOW + 5)
            .await
            .unwrap(),
        2
    );
    let all = store.utxos("w1", true).await.unwrap();
    assert_eq!(all.len(), 3);
    let spent: Vec<_> = all.iter().filter(|u| u.state == UtxoState::Spent).collect();
    assert_eq!(spent.len(), 2);
    assert!(spent.iter().all(
        |u| u.spent_by.as_deref() == Some(&"99".repeat(32)[..]) && u.spent_at == Some(NOW + 5)
    ));
    let unspent = store.utxos("w1", false).await.unwrap();
    assert_eq!(unspent.len(), 1);
    assert_eq!(unspent[0].origin, UtxoOrigin::Change);
    assert_eq!(unspent[0].path.to_string(), "m/1/1");
    // A spent output can never be reserved again, however old.
    let r4 = store
        .reserve_utxos(
            "w1",
            std::slice::from_ref(&a.outpoint),
            "req-4",
            NOW,
            i64::MAX,
            false,
        )
        .await
        .unwrap();
    assert!(matches!(r4, Reservation::Conflict { .. }));

    // Outputs spent by a PSBT signed elsewhere (psbt/sign) are marked by outpoint.
    assert_eq!(
        store
            .mark_utxos_spent(&[change.outpoint.clone(), "ab:0".into()], "txid2", NOW + 9)
            .await
            .unwrap(),
        1
    );
    assert!(store.utxos("w1", false).await.unwrap().is_empty());

    // Counts for metrics.
    store
        .put_ceremony(&mpc_store::CeremonyRecord {
            id: "c1".into(),
            kind: "keygen".into(),
            state: "running".into(),
            coordinator: NodeId::must(1),
            request: serde_json::json!({}),
            result: None,
            error: None,
            started_at: NOW,
            finished_at: None,
        })
        .await
        .unwrap();
    assert_eq!(
        store.ceremony_counts().await.unwrap(),
        vec![("keygen".to_string(), "running".to_string(), 1)]
    );
    store
        .mark_session_seen(Uuid::new_v4(), "sign")
        .await
        .unwrap();
    store
        .mark_session_seen(Uuid::new_v4(), "sign")
        .await
        .unwrap();
    assert_eq!(
        store.session_counts().await.unwrap(),
        vec![("sign".to_string(), 2)]
    );
}

async fn change_indices_are_unique_under_concurrency(store: &Store) {
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    let mut tasks = Vec::new();
    for k in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            match store
                .reserve_utxos("w", &[], &format!("r{k}"), NOW, NOW, true)
                .await
                .unwrap()
            {
                Reservation::Reserved { change_index } => change_index.unwrap(),
                other => panic!("{other:?}"),
            }
        }));
    }
    let mut indices = Vec::new();
    for t in tasks {
        indices.push(t.await.unwrap());
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..16).collect::<Vec<u32>>());
    assert_eq!(store.next_change_index("w").await.unwrap(), 16);
}

macro_rules! both {
    ($($name:ident),*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let (store, dir, pg) = crate::fresh(false).await.unwrap();
                super::$name(&store).await;
                crate::cleanup(store, dir, pg).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some((store, dir, pg)) = crate::fresh(true).await else {
                    assert!(
                        std::env::var_os("MPC_REQUIRE_POSTGRES").is_none(),
                        "MPC_REQUIRE_POSTGRES is set but MPC_TEST_POSTGRES_URL is not"
                    );
                    eprintln!("skipped: MPC_TEST_POSTGRES_URL is not set");
                    return;
                };
                super::$name(&store).await;
                crate::cleanup(store, dir, pg).await;
            }
        }
    )*};
}

/// A registered output's funding transaction is kept by txid (once for several outputs of
/// one transaction) and read back for spending.
async fn funding_transactions_are_kept_by_txid(store: &Store) {
    store.insert_wallet(&wallet("w1"), b"share").await.unwrap();
    let mut a = utxo(0, 10_000);
    a.funding_transaction = Some("0200aa".into());
    let mut b = a.clone();
    b.outpoint = a.outpoint.replace(":0", ":7");
    let c = utxo(3, 30_000);
    store
        .insert_utxos("w1", &[a.clone(), b.clone(), c.clone()], NOW)
        .await
        .unwrap();
    let found = store
        .funding_transactions(&[a.outpoint.clone(), b.outpoint.clone(), c.outpoint.clone()])
        .await
        .unwrap();
    let txid = a.outpoint.split(':').next().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[txid], "0200aa");
}

/// The next change index is only ever raised by a used index, never lowered, and allocation
/// continues after it.
async fn a_used_change_index_raises_the_next_one(store: &Store) {
    store.insert_wallet(&wallet("w1"), b"share").await.unwrap();
    assert_eq!(store.next_change_index("w1").await.unwrap(), 0);
    assert_eq!(store.note_change_index_used("w1", 4).await.unwrap(), 5);
    assert_eq!(store.note_change_index_used("w1", 2).await.unwrap(), 5);
    assert_eq!(store.next_change_index("w1").await.unwrap(), 5);
    let a = utxo(0, 10_000);
    store
        .insert_utxos("w1", std::slice::from_ref(&a), NOW)
        .await
        .unwrap();
    let reserved = store
        .reserve_utxos(
            "w1",
            std::slice::from_ref(&a.outpoint),
            "req",
            NOW,
            NOW - 1,
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        reserved,
        Reservation::Reserved {
            change_index: Some(5)
        }
    );
}

/// Rows are decoded once, here: an output whose script, outpoint or path does not decode
/// fails the listing as corrupt (naming the outpoint) instead of vanishing from coin selection.
async fn an_output_that_does_not_decode_is_corrupt(store: &Store) {
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    for (n, broken) in [
        (
            0,
            NewUtxo {
                script_pubkey: "zz".into(),
                ..utxo(0, 1_000)
            },
        ),
        (
            1,
            NewUtxo {
                outpoint: "not-an-outpoint".into(),
                ..utxo(1, 1_000)
            },
        ),
        (
            2,
            NewUtxo {
                path: "m/0'".into(),
                ..utxo(2, 1_000)
            },
        ),
    ] {
        let wallet_id = format!("w{n}");
        store
            .insert_wallet(&wallet(&wallet_id), b"share")
            .await
            .unwrap();
        store
            .insert_utxos(&wallet_id, std::slice::from_ref(&broken), NOW)
            .await
            .unwrap();
        let error = store.utxos(&wallet_id, true).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt { table: "utxos", id, .. } if *id == broken.outpoint),
            "{error}"
        );
    }
    store
        .insert_utxos("w", &[utxo(3, 1_000)], NOW)
        .await
        .unwrap();
    assert_eq!(store.utxos("w", true).await.unwrap().len(), 1);
}

both!(
    registry_lifecycle,
    an_output_that_does_not_decode_is_corrupt,
    change_indices_are_unique_under_concurrency,
    funding_transactions_are_kept_by_txid,
    a_used_change_index_raises_the_next_one
);
