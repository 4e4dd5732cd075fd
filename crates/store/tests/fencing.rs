//! Fencing tokens in the store (`Store::admit_fencing_token`), on a fresh SQLite file and, when
//! `MPC_TEST_POSTGRES_URL` names an admin connection, on a fresh PostgreSQL database
//! (`scripts/with-postgres` sets it up).

use mpc_store::StoreError;

#[macro_use]
mod common;
use common::*;

on_both_backends!(
    lower_tokens_are_refused_equal_and_higher_admitted,
    admission_survives_reopening,
    concurrent_admissions_keep_the_highest,
    out_of_range_tokens_are_errors,
);

async fn lower_tokens_are_refused_equal_and_higher_admitted(db: Db) {
    let store = db.open().await;
    assert_eq!(store.fencing_token("ceremony/1,2,3").await.unwrap(), None);
    assert!(store
        .admit_fencing_token("ceremony/1,2,3", 10)
        .await
        .unwrap());
    assert!(store
        .admit_fencing_token("ceremony/1,2,3", 10)
        .await
        .unwrap());
    assert!(store
        .admit_fencing_token("ceremony/1,2,3", 12)
        .await
        .unwrap());
    assert!(!store
        .admit_fencing_token("ceremony/1,2,3", 11)
        .await
        .unwrap());
    assert!(!store
        .admit_fencing_token("ceremony/1,2,3", 0)
        .await
        .unwrap());
    assert_eq!(
        store.fencing_token("ceremony/1,2,3").await.unwrap(),
        Some(12)
    );
    // Resources are independent.
    assert!(store.admit_fencing_token("pool-refill", 3).await.unwrap());
    assert_eq!(store.fencing_token("pool-refill").await.unwrap(), Some(3));
    store.close().await;
}

async fn admission_survives_reopening(db: Db) {
    let store = db.open().await;
    assert!(store.admit_fencing_token("wallet/w1", 500).await.unwrap());
    store.close().await;
    let store = db.open().await;
    assert!(!store.admit_fencing_token("wallet/w1", 499).await.unwrap());
    assert!(store.admit_fencing_token("wallet/w1", 501).await.unwrap());
    store.close().await;
}

async fn concurrent_admissions_keep_the_highest(db: Db) {
    // Two stores on one database (two processes' worth of pools), racing tokens 1..=60 in
    // shuffled orders: the highest ends up stored, and it is always admitted.
    let a = db.open().await;
    let b = db.open().await;
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let token = (i * 37) % 60 + 1;
        tasks.push(tokio::spawn(async move {
            (
                token,
                store.admit_fencing_token("race", token).await.unwrap(),
            )
        }));
    }
    let mut admitted = Vec::new();
    for task in tasks {
        let (token, ok) = task.await.unwrap();
        if ok {
            admitted.push(token);
        }
    }
    assert!(
        admitted.contains(&60),
        "the highest token is always admitted"
    );
    assert_eq!(a.fencing_token("race").await.unwrap(), Some(60));
    assert!(!b.admit_fencing_token("race", 59).await.unwrap());
    a.close().await;
    b.close().await;
}

async fn out_of_range_tokens_are_errors(db: Db) {
    let store = db.open().await;
    assert!(matches!(
        store.admit_fencing_token("r", u64::MAX).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.admit_fencing_token("", 1).await,
        Err(StoreError::Invalid(_))
    ));
    store.close().await;
}
