//! Aux info's two phases in the store: a pending aux info becomes the node set's on commit, and
//! on drop is deleted with its primes back in the pool; neither is possible twice, and none is
//! stored over aux info or another pending one.

use super::*;

on_both_backends!(
    a_committed_aux_info_is_the_node_sets,
    a_dropped_aux_info_gives_its_primes_back,
    a_pending_aux_info_is_refused_over_another_or_over_aux_info,
);

const AUX: &[u8] = b"aux info of node 1";
const PRIMES: &[u8] = b"the primes it was made from";

async fn pending(store: &Store, session: Uuid) -> Result<(), StoreError> {
    store
        .put_pending_aux_info(
            &ONE_TWO_THREE,
            (session, N2),
            (AUX, "digest"),
            PRIMES,
            PendingAuxInfoFor::FirstOfNodeSet,
        )
        .await
}

async fn a_committed_aux_info_is_the_node_sets(db: Db) {
    let store = db.open().await;
    let session = Uuid::new_v4();
    pending(&store, session).await.unwrap();
    // Pending: not the node set's aux info yet.
    assert!(store.aux_info(&ONE_TWO_THREE).await.unwrap().is_none());
    let listed = store.pending_aux_infos().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            &listed[0].node_set[..],
            listed[0].session,
            listed[0].coordinator,
            listed[0].public_digest.as_str()
        ),
        (&ONE_TWO_THREE[..], session, N2, "digest")
    );
    // Another session's decision does not touch it.
    assert!(store
        .commit_pending_aux_info(&ONE_TWO_THREE, Uuid::new_v4())
        .await
        .is_err());
    assert!(!store
        .drop_pending_aux_info(&ONE_TWO_THREE, Uuid::new_v4())
        .await
        .unwrap());
    store
        .commit_pending_aux_info(&ONE_TWO_THREE, session)
        .await
        .unwrap();
    let (aux, digest) = store.aux_info(&ONE_TWO_THREE).await.unwrap().unwrap();
    assert_eq!((&aux[..], digest.as_str()), (AUX, "digest"));
    assert!(store.pending_aux_infos().await.unwrap().is_empty());
    assert_eq!(store.primes_count().await.unwrap(), 0);
    // Once: the pending one is gone, and an abort arriving late changes nothing.
    assert!(store
        .commit_pending_aux_info(&ONE_TWO_THREE, session)
        .await
        .is_err());
    assert!(!store
        .drop_pending_aux_info(&ONE_TWO_THREE, session)
        .await
        .unwrap());
    assert!(store.aux_info(&ONE_TWO_THREE).await.unwrap().is_some());
}

async fn a_dropped_aux_info_gives_its_primes_back(db: Db) {
    let store = db.open().await;
    let session = Uuid::new_v4();
    pending(&store, session).await.unwrap();
    assert!(store
        .drop_pending_aux_info(&ONE_TWO_THREE, session)
        .await
        .unwrap());
    assert!(store.aux_info(&ONE_TWO_THREE).await.unwrap().is_none());
    assert!(store.pending_aux_infos().await.unwrap().is_empty());
    assert_eq!(&store.take_primes().await.unwrap().unwrap()[..], PRIMES);
    // Once: a second abort returns no second copy of the primes.
    assert!(!store
        .drop_pending_aux_info(&ONE_TWO_THREE, session)
        .await
        .unwrap());
    assert_eq!(store.primes_count().await.unwrap(), 0);
    assert!(store
        .commit_pending_aux_info(&ONE_TWO_THREE, session)
        .await
        .is_err());
}

async fn a_pending_aux_info_is_refused_over_another_or_over_aux_info(db: Db) {
    let store = db.open().await;
    let first = Uuid::new_v4();
    pending(&store, first).await.unwrap();
    let err = pending(&store, Uuid::new_v4()).await.unwrap_err();
    assert!(err.to_string().contains(&first.to_string()), "{err}");
    store
        .commit_pending_aux_info(&ONE_TWO_THREE, first)
        .await
        .unwrap();
    let err = pending(&store, Uuid::new_v4()).await.unwrap_err();
    assert!(err.to_string().contains("already has aux info"), "{err}");
    assert_eq!(store.pending_aux_infos().await.unwrap().len(), 0);
}
