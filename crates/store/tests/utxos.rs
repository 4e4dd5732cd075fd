//! The UTXO registry on real databases: SQLite always, PostgreSQL when `MPC_TEST_POSTGRES_URL`
//! names an admin connection (`scripts/with-postgres cargo test -p mpc-store --test utxos`).

use std::str::FromStr;

use bitcoin::{
    absolute::LockTime, transaction::Version, Amount, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Txid, Witness,
};
use mpc_store::{NewUtxo, PathUtxoCounts, Reservation, StoreError, UtxoOrigin, UtxoState};
use mpc_types::NodeId;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

#[macro_use]
mod common;
use common::*;

fn txid(n: u32) -> Txid {
    Txid::from_str(&format!("{n:064x}")).unwrap()
}

fn utxo(n: u32, amount: u64) -> NewUtxo {
    NewUtxo {
        outpoint: OutPoint::new(txid(n + 1), n),
        amount: Amount::from_sat(amount),
        path: format!("m/0/{n}").parse().unwrap(),
        script_pubkey: ScriptBuf::from_hex(&format!("0014{n:040x}")).unwrap(),
        funding_transaction: None,
    }
}

/// A transaction with `outputs` outputs (of which the test registers some), spending `n`.
fn funding(n: u32, outputs: usize) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(txid(n), 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![
            TxOut {
                value: Amount::from_sat(10_000),
                script_pubkey: ScriptBuf::from_hex("0014ff").unwrap(),
            };
            outputs
        ],
    }
}

async fn registry_lifecycle(db: Db) {
    let store = &db.open().await;
    store.insert_wallet(&wallet("w1"), b"share").await.unwrap();
    store.insert_wallet(&wallet("w2"), b"share").await.unwrap();
    let a = utxo(0, 10_000);
    let b = utxo(1, 20_000);
    store
        .insert_utxos(&wallet_id("w1"), &[a.clone(), b.clone()], NOW)
        .await
        .unwrap();
    // Registering the same output again is a no-op; with another amount, or for another
    // wallet, it is refused and nothing of the batch is kept.
    store
        .insert_utxos(&wallet_id("w1"), std::slice::from_ref(&a), NOW)
        .await
        .unwrap();
    let mut other_amount = a.clone();
    other_amount.amount = Amount::from_sat(1);
    let c = utxo(2, 30_000);
    let err = store
        .insert_utxos(&wallet_id("w1"), &[c.clone(), other_amount], NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    assert!(store
        .insert_utxos(&wallet_id("w2"), std::slice::from_ref(&b), NOW)
        .await
        .is_err());
    let listed = store.utxos(&wallet_id("w1"), true).await.unwrap();
    assert_eq!(listed.len(), 2, "the failed batch left nothing behind");
    assert!(listed.iter().all(|u| u.state == UtxoState::Available
        && u.origin == UtxoOrigin::Registered
        && u.wallet_id == "w1"));
    assert_eq!(listed[1].amount.to_sat(), 20_000);
    assert!(store
        .utxos(&wallet_id("w2"), true)
        .await
        .unwrap()
        .is_empty());

    // Two requests race for the same output: one wins, the other reserves nothing.
    assert_eq!(store.next_change_index(&wallet_id("w1")).await.unwrap(), 0);
    let r1 = store
        .reserve_utxos(
            &wallet_id("w1"),
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
            &wallet_id("w1"),
            &[b.outpoint, a.outpoint],
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
            outpoint: a.outpoint
        }
    );
    // b was not kept reserved by the failed request, and no change index was used.
    let spendable = store
        .spendable_utxos(&wallet_id("w1"), NOW - 1)
        .await
        .unwrap();
    assert_eq!(spendable.len(), 1);
    assert_eq!(spendable[0].outpoint, b.outpoint);
    assert_eq!(store.next_change_index(&wallet_id("w1")).await.unwrap(), 1);
    // A reservation older than the staleness bound is spendable again.
    assert_eq!(
        store
            .spendable_utxos(&wallet_id("w1"), NOW + 1)
            .await
            .unwrap()
            .len(),
        2
    );

    // Released: available again; the change index stays used.
    assert_eq!(store.release_utxos("req-1").await.unwrap(), 1);
    assert_eq!(
        store
            .spendable_utxos(&wallet_id("w1"), NOW - 1)
            .await
            .unwrap()
            .len(),
        2
    );
    let r3 = store
        .reserve_utxos(
            &wallet_id("w1"),
            &[a.outpoint, b.outpoint],
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
    let spending = funding(99, 2);
    let spent_by = spending.compute_txid();
    let change = NewUtxo {
        outpoint: OutPoint::new(spent_by, 1),
        amount: Amount::from_sat(25_000),
        path: "m/1/1".parse().unwrap(),
        script_pubkey: ScriptBuf::from_hex("0014ff").unwrap(),
        funding_transaction: Some(spending),
    };
    assert_eq!(
        store
            .complete_spend(&wallet_id("w1"), "req-3", spent_by, Some(&change), NOW + 5)
            .await
            .unwrap(),
        2
    );
    let all = store.utxos(&wallet_id("w1"), true).await.unwrap();
    assert_eq!(all.len(), 3);
    let spent: Vec<_> = all.iter().filter(|u| u.state == UtxoState::Spent).collect();
    assert_eq!(spent.len(), 2);
    assert!(spent
        .iter()
        .all(|u| u.spent_by == Some(spent_by.to_string()) && u.spent_at == Some(NOW + 5)));
    let unspent = store.utxos(&wallet_id("w1"), false).await.unwrap();
    assert_eq!(unspent.len(), 1);
    assert_eq!(unspent[0].origin, UtxoOrigin::Change);
    assert_eq!(unspent[0].path.to_string(), "m/1/1");
    // A spent output can never be reserved again, however old.
    let r4 = store
        .reserve_utxos(
            &wallet_id("w1"),
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
            .mark_utxos_spent(
                &[change.outpoint, OutPoint::new(txid(0xab), 0)],
                txid(2),
                NOW + 9
            )
            .await
            .unwrap(),
        1
    );
    assert!(store
        .utxos(&wallet_id("w1"), false)
        .await
        .unwrap()
        .is_empty());

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

async fn change_indices_are_unique_under_concurrency(db: Db) {
    let store = &db.open().await;
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    let mut tasks = Vec::new();
    for k in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            match store
                .reserve_utxos(&wallet_id("w"), &[], &format!("r{k}"), NOW, NOW, true)
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
    assert_eq!(store.next_change_index(&wallet_id("w")).await.unwrap(), 16);
}

/// A registered output's funding transaction is kept by txid (once for several outputs of
/// one transaction) and read back for spending.
async fn funding_transactions_are_kept_by_txid(db: Db) {
    let store = &db.open().await;
    store.insert_wallet(&wallet("w1"), b"share").await.unwrap();
    let tx = funding(1, 8);
    let a = NewUtxo {
        outpoint: OutPoint::new(tx.compute_txid(), 0),
        funding_transaction: Some(tx.clone()),
        ..utxo(0, 10_000)
    };
    let b = NewUtxo {
        outpoint: OutPoint::new(tx.compute_txid(), 7),
        ..a.clone()
    };
    let c = utxo(3, 30_000);
    store
        .insert_utxos(&wallet_id("w1"), &[a.clone(), b.clone(), c.clone()], NOW)
        .await
        .unwrap();
    let found = store
        .funding_transactions(&[a.outpoint.txid, b.outpoint.txid, c.outpoint.txid])
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[&tx.compute_txid()], tx);

    // A funding transaction is stored under its own txid only.
    let wrong = NewUtxo {
        funding_transaction: Some(funding(2, 1)),
        ..utxo(4, 1_000)
    };
    let err = store
        .insert_utxos(&wallet_id("w1"), &[wrong], NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");

    // Read back, a stored transaction that is not the one its txid names, or no transaction
    // at all, is corrupt (it would be handed to every signer as the proof of an amount).
    let raw = db.raw().await;
    for bad in [
        bitcoin::consensus::encode::serialize_hex(&funding(3, 1)),
        "02000000ff".to_string(),
    ] {
        sqlx::query("UPDATE funding_transactions SET raw_transaction = $1 WHERE txid = $2")
            .bind(&bad)
            .bind(tx.compute_txid().to_string())
            .execute(&raw)
            .await
            .unwrap();
        let err = store
            .funding_transactions(&[a.outpoint.txid])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { table: "funding_transactions", id, .. }
                if *id == tx.compute_txid().to_string()),
            "{err}"
        );
    }
}

/// The next change index is only ever raised by a used index, never lowered, and allocation
/// continues after it.
async fn a_used_change_index_raises_the_next_one(db: Db) {
    let store = &db.open().await;
    store.insert_wallet(&wallet("w1"), b"share").await.unwrap();
    assert_eq!(store.next_change_index(&wallet_id("w1")).await.unwrap(), 0);
    assert_eq!(
        store
            .note_change_index_used(&wallet_id("w1"), 4)
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store
            .note_change_index_used(&wallet_id("w1"), 2)
            .await
            .unwrap(),
        5
    );
    assert_eq!(store.next_change_index(&wallet_id("w1")).await.unwrap(), 5);
    let a = utxo(0, 10_000);
    store
        .insert_utxos(&wallet_id("w1"), std::slice::from_ref(&a), NOW)
        .await
        .unwrap();
    let reserved = store
        .reserve_utxos(
            &wallet_id("w1"),
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
/// Nothing written through `NewUtxo` can be such a row (its fields are typed); a database
/// edited by hand, or by another program, can.
async fn an_output_that_does_not_decode_is_corrupt(db: Db) {
    let store = &db.open().await;
    let raw = db.raw().await;
    for (n, column, bad) in [
        (0, "script_pubkey", "zz"),
        (1, "outpoint", "not-an-outpoint"),
        (2, "path", "m/0'"),
    ] {
        let name = format!("w{n}");
        let id = wallet_id(&name);
        store.insert_wallet(&wallet(&name), b"share").await.unwrap();
        let good = utxo(n, 1_000);
        store
            .insert_utxos(&id, std::slice::from_ref(&good), NOW)
            .await
            .unwrap();
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE utxos SET {column} = $1 WHERE outpoint = $2"
        )))
        .bind(bad)
        .bind(good.outpoint.to_string())
        .execute(&raw)
        .await
        .unwrap();
        let named = if column == "outpoint" {
            bad.to_string()
        } else {
            good.outpoint.to_string()
        };
        let error = store.utxos(&id, true).await.unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt { table: "utxos", id, .. } if *id == named),
            "{error}"
        );
    }
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    store
        .insert_utxos(&wallet_id("w"), &[utxo(3, 1_000)], NOW)
        .await
        .unwrap();
    assert_eq!(store.utxos(&wallet_id("w"), true).await.unwrap().len(), 1);
}

/// What the presignature pool reads: per path, outputs spendable and outputs not spent. An
/// output held by a signing in progress is unspent but not spendable; a hold takes only
/// available outputs and is released, or becomes spent.
async fn outputs_held_while_signed_are_counted_unspent_not_spendable(db: Db) {
    let store = &db.open().await;
    let w = wallet_id("w");
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    let (a, b, mut c) = (utxo(0, 1_000), utxo(1, 1_000), utxo(2, 1_000));
    c.path = a.path.clone();
    store
        .insert_utxos(&w, &[a.clone(), b.clone(), c.clone()], NOW)
        .await
        .unwrap();
    let counts = |spendable_at_0: u64, unspent_at_0: u64, spendable_at_1: u64, unspent_at_1| {
        vec![
            PathUtxoCounts {
                path: a.path.clone(),
                spendable: spendable_at_0,
                unspent: unspent_at_0,
            },
            PathUtxoCounts {
                path: b.path.clone(),
                spendable: spendable_at_1,
                unspent: unspent_at_1,
            },
        ]
    };
    assert_eq!(
        store.utxo_counts(&w, NOW).await.unwrap(),
        counts(2, 2, 1, 1)
    );

    // A signing holds a and b; another request's reservation of c is not taken over.
    let reserved = store
        .reserve_utxos(&w, &[c.outpoint], "send", NOW, NOW, false)
        .await
        .unwrap();
    assert!(matches!(reserved, Reservation::Reserved { .. }));
    let held = store
        .hold_utxos(&[a.outpoint, b.outpoint, c.outpoint], "sign-1", NOW)
        .await
        .unwrap();
    assert_eq!(held, 2);
    assert_eq!(
        store.utxo_counts(&w, NOW).await.unwrap(),
        counts(0, 2, 0, 1)
    );
    // Held outputs of a request that died count as spendable again once stale.
    assert_eq!(
        store.utxo_counts(&w, NOW + 1).await.unwrap(),
        counts(2, 2, 1, 1)
    );
    // A failed signing releases only what it held; a signed one marks it spent.
    assert_eq!(store.release_utxos("sign-1").await.unwrap(), 2);
    assert_eq!(
        store.utxo_counts(&w, NOW).await.unwrap(),
        counts(1, 2, 1, 1)
    );
    store
        .hold_utxos(&[b.outpoint], "sign-2", NOW)
        .await
        .unwrap();
    store
        .mark_utxos_spent(&[b.outpoint], txid(99), NOW)
        .await
        .unwrap();
    assert_eq!(
        store.utxo_counts(&w, NOW).await.unwrap(),
        counts(1, 2, 0, 0)
    );
}

on_both_backends!(
    outputs_held_while_signed_are_counted_unspent_not_spendable,
    registry_lifecycle,
    an_output_that_does_not_decode_is_corrupt,
    change_indices_are_unique_under_concurrency,
    funding_transactions_are_kept_by_txid,
    a_used_change_index_raises_the_next_one
);
