//! The fencing tokens a node records (`Store::record_fencing_token`), on a fresh SQLite file
//! and, when `MPC_TEST_POSTGRES_URL` names an admin connection, on a fresh PostgreSQL database
//! (`scripts/with-postgres` sets it up). The node checks each token against etcd before it
//! records it; the store keeps the last one, whatever was there before.

use mpc_store::StoreError;

#[macro_use]
mod common;
use common::*;

on_both_backends!(
    a_recorded_token_replaces_the_previous_one_higher_or_lower,
    a_recorded_token_survives_reopening,
    out_of_range_tokens_are_errors,
);

async fn a_recorded_token_replaces_the_previous_one_higher_or_lower(db: Db) {
    let store = db.open().await;
    assert_eq!(store.fencing_token("ceremony").await.unwrap(), None);
    store.record_fencing_token("ceremony", 10).await.unwrap();
    assert_eq!(store.fencing_token("ceremony").await.unwrap(), Some(10));
    store.record_fencing_token("ceremony", 12).await.unwrap();
    assert_eq!(store.fencing_token("ceremony").await.unwrap(), Some(12));
    // Lower (etcd's current holder, below a value stored by older code or an older etcd).
    store.record_fencing_token("ceremony", 11).await.unwrap();
    assert_eq!(store.fencing_token("ceremony").await.unwrap(), Some(11));
    // Resources are independent.
    store.record_fencing_token("pool-refill", 3).await.unwrap();
    assert_eq!(store.fencing_token("pool-refill").await.unwrap(), Some(3));
    assert_eq!(store.fencing_token("ceremony").await.unwrap(), Some(11));
    store.close().await;
}

async fn a_recorded_token_survives_reopening(db: Db) {
    let store = db.open().await;
    store.record_fencing_token("ceremony", 500).await.unwrap();
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.fencing_token("ceremony").await.unwrap(), Some(500));
    store.close().await;
}

async fn out_of_range_tokens_are_errors(db: Db) {
    let store = db.open().await;
    assert!(matches!(
        store.record_fencing_token("r", u64::MAX).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.record_fencing_token("", 1).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.fencing_token("r").await.unwrap(), None);
    store.close().await;
}
