//! Key refresh's two-phase switch in the store: a pending share, its commit (share, key epoch
//! and presignatures in one transaction) or its drop, and presignatures bound to a key epoch.

use super::*;

on_both_backends!(
    a_committed_refresh_switches_the_share_and_retires_older_presignatures,
    a_dropped_refresh_leaves_the_old_share,
    a_pending_share_must_be_for_the_next_key_epoch,
    an_ecdsa_refresh_replaces_the_aux_info_and_moves_the_node_sets_other_wallets,
    a_dropped_ecdsa_refresh_drops_its_aux_info_and_gives_the_primes_back,
    a_committed_resharing_moves_the_wallet_to_the_new_committee,
    a_node_leaving_the_committee_deletes_its_share_at_the_commit,
    a_node_rejoins_a_wallet_it_left_only_with_the_same_key,
);

const OLD_AUX: &[u8] = b"aux info before the refresh";
const NEW_AUX: &[u8] = b"aux info of the refresh";
const PRIMES: &[u8] = b"the primes of the refresh's aux info";

/// Active wallets w and other (ECDSA, nodes 1 to 3) with a presignature each, the node set's
/// aux info, and w's refresh `session` pending: its share and its aux info.
async fn ecdsa_refresh_pending(store: &Store, session: Uuid) {
    for id in ["w", "other"] {
        active_wallet(store, id).await;
        let epoch = store.epoch().await.unwrap();
        store
            .insert_presignature(
                &presig(&format!("p-{id}"), id, "m/0/0", epoch, NOW + 3_600_000),
                b"secret",
            )
            .await
            .unwrap();
    }
    store
        .put_aux_info(&ONE_TWO_THREE, OLD_AUX, "old digest", Uuid::new_v4())
        .await
        .unwrap();
    // A first-of-node-set aux info is refused over the node set's aux info; a refresh's is not.
    let pending = |purpose: PendingAuxInfoFor| {
        store.put_pending_aux_info(
            &ONE_TWO_THREE,
            (session, N1),
            (NEW_AUX, "new digest"),
            PRIMES,
            purpose,
        )
    };
    assert!(pending(PendingAuxInfoFor::FirstOfNodeSet).await.is_err());
    pending(PendingAuxInfoFor::Refresh).await.unwrap();
    // But not over another pending one.
    assert!(store
        .put_pending_aux_info(
            &ONE_TWO_THREE,
            (Uuid::new_v4(), N1),
            (NEW_AUX, "new digest"),
            PRIMES,
            PendingAuxInfoFor::Refresh,
        )
        .await
        .is_err());
    store
        .put_pending_share(&wallet_id("w"), 1, session, N1, NEW)
        .await
        .unwrap();
}

async fn key_epoch(store: &Store, id: &str) -> u64 {
    store
        .wallet(&wallet_id(id))
        .await
        .unwrap()
        .unwrap()
        .key_epoch
}

async fn an_ecdsa_refresh_replaces_the_aux_info_and_moves_the_node_sets_other_wallets(db: Db) {
    let store = db.open().await;
    let session = Uuid::new_v4();
    ecdsa_refresh_pending(&store, session).await;
    // Another node set's wallet is left alone.
    let mut apart = wallet("apart");
    apart.participants = NodeId::must_list(&[1, 2]);
    store.insert_wallet(&apart, OLD).await.unwrap();
    store
        .set_wallet_state(&wallet_id("apart"), WalletState::Active)
        .await
        .unwrap();
    // Pending: the node set still has its aux info.
    let (aux, digest) = store.aux_info(&ONE_TWO_THREE).await.unwrap().unwrap();
    assert_eq!((&aux[..], digest.as_str()), (OLD_AUX, "old digest"));
    let commit = store
        .commit_pending_share(&wallet_id("w"), session, NOW)
        .await
        .unwrap();
    assert_eq!(
        commit,
        KeyEpochCommit {
            key_epoch: 1,
            presignatures_retired: 2,
            aux_info_replaced: true,
            other_wallets: vec![wallet_id("other")],
            retired: false,
        }
    );
    let (aux, digest) = store.aux_info(&ONE_TWO_THREE).await.unwrap().unwrap();
    assert_eq!((&aux[..], digest.as_str()), (NEW_AUX, "new digest"));
    assert!(store.pending_aux_infos().await.unwrap().is_empty());
    assert_eq!(store.primes_count().await.unwrap(), 0);
    assert_eq!(epoch_and_share(&store).await, (1, NEW.to_vec()));
    // The other wallet: its share, at its next key epoch; its old presignature retired and
    // one of the old key epoch refused, like the refreshed wallet's.
    let (epoch, share) = store
        .key_share_with_epoch(&wallet_id("other"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((epoch, &share[..]), (1, OLD));
    for id in ["p-w", "p-other"] {
        let p = store.presignature(id).await.unwrap().unwrap();
        assert_eq!(p.state, PresignatureState::Expired, "{id}");
    }
    let epoch = store.epoch().await.unwrap();
    assert!(matches!(
        store
            .insert_presignature(&presig("late", "other", "m/0/0", epoch, NOW + 1), b"s")
            .await,
        Err(StoreError::WrongKeyEpoch { .. })
    ));
    assert_eq!(key_epoch(&store, "apart").await, 0);
    // Its key epoch did not begin anew: its shares are as old as they were.
    let other = store.wallet(&wallet_id("other")).await.unwrap().unwrap();
    assert_eq!(
        store.key_epoch_began(&wallet_id("other")).await.unwrap(),
        Some(other.activated_at.unwrap_or(other.created_at))
    );
}

async fn a_dropped_ecdsa_refresh_drops_its_aux_info_and_gives_the_primes_back(db: Db) {
    let store = db.open().await;
    let session = Uuid::new_v4();
    ecdsa_refresh_pending(&store, session).await;
    assert!(store
        .drop_pending_share(&wallet_id("w"), session)
        .await
        .unwrap());
    assert!(store.pending_aux_infos().await.unwrap().is_empty());
    assert!(store.pending_shares().await.unwrap().is_empty());
    assert_eq!(&store.take_primes().await.unwrap().unwrap()[..], PRIMES);
    let (aux, _) = store.aux_info(&ONE_TWO_THREE).await.unwrap().unwrap();
    assert_eq!(&aux[..], OLD_AUX);
    assert_eq!(epoch_and_share(&store).await, (0, OLD.to_vec()));
    assert_eq!(key_epoch(&store, "other").await, 0);
    for id in ["p-w", "p-other"] {
        let p = store.presignature(id).await.unwrap().unwrap();
        assert_eq!(p.state, PresignatureState::Ready, "{id}");
    }
    // Dropped once: the commit finds nothing.
    assert!(store
        .commit_pending_share(&wallet_id("w"), session, NOW)
        .await
        .is_err());
    assert!(store.aux_info(&ONE_TWO_THREE).await.unwrap().is_some());
}

const OLD: &[u8] = b"share of key epoch 0";
const NEW: &[u8] = b"share of key epoch 1";

/// Wallet w's key epoch and this node's share of it.
async fn epoch_and_share(store: &Store) -> (u64, Vec<u8>) {
    let (epoch, share) = store
        .key_share_with_epoch(&wallet_id("w"))
        .await
        .unwrap()
        .unwrap();
    (epoch, share.to_vec())
}

async fn active_wallet(store: &Store, id: &str) {
    store.insert_wallet(&wallet(id), OLD).await.unwrap();
    store
        .set_wallet_state(&wallet_id(id), WalletState::Active)
        .await
        .unwrap();
}

async fn a_committed_refresh_switches_the_share_and_retires_older_presignatures(db: Db) {
    let store = db.open().await;
    active_wallet(&store, "w").await;
    active_wallet(&store, "other").await;
    let epoch = store.epoch().await.unwrap();
    let later = NOW + 3_600_000;
    for (id, wallet) in [("p-w", "w"), ("p-other", "other")] {
        store
            .insert_presignature(&presig(id, wallet, "m/0/0", epoch, later), b"secret")
            .await
            .unwrap();
    }
    let session = Uuid::new_v4();
    store
        .put_pending_share(&wallet_id("w"), 1, session, N1, NEW)
        .await
        .unwrap();
    // Pending: the active share, the key epoch and the presignature are untouched.
    assert_eq!(
        bytes(store.key_share(&wallet_id("w")).await.unwrap()).unwrap(),
        OLD
    );
    let (pending_epoch, pending) = store.pending_share(&wallet_id("w")).await.unwrap().unwrap();
    assert_eq!((pending_epoch, &pending[..]), (1, NEW));
    let listed = store.pending_shares().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].wallet_id.as_str(),
            listed[0].key_epoch,
            listed[0].session,
            listed[0].coordinator
        ),
        ("w", 1, session, N1)
    );
    // Before any refresh the epoch began when the wallet became active (or was made).
    let record = store.wallet(&wallet_id("w")).await.unwrap().unwrap();
    assert_eq!(
        store.key_epoch_began(&wallet_id("w")).await.unwrap(),
        Some(record.activated_at.unwrap_or(record.created_at))
    );
    // Another session's commit finds nothing to commit.
    assert!(matches!(
        store
            .commit_pending_share(&wallet_id("w"), Uuid::new_v4(), NOW)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    let commit = store
        .commit_pending_share(&wallet_id("w"), session, NOW + 5)
        .await
        .unwrap();
    assert_eq!((commit.key_epoch, commit.presignatures_retired), (1, 1));
    assert_eq!(
        store.key_epoch_began(&wallet_id("w")).await.unwrap(),
        Some(NOW + 5)
    );
    assert_eq!(
        bytes(store.key_share(&wallet_id("w")).await.unwrap()).unwrap(),
        NEW
    );
    let (epoch_now, share) = store
        .key_share_with_epoch(&wallet_id("w"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((epoch_now, &share[..]), (1, NEW));
    assert_eq!(
        store
            .wallet(&wallet_id("w"))
            .await
            .unwrap()
            .unwrap()
            .key_epoch,
        1
    );
    assert!(store
        .pending_share(&wallet_id("w"))
        .await
        .unwrap()
        .is_none());
    // The wallet's old presignature is gone (its secret deleted); the other wallet's stays.
    let old = store.presignature("p-w").await.unwrap().unwrap();
    assert_eq!(old.state, PresignatureState::Expired);
    let raw = db.raw().await;
    assert!(sealed_of(
        &raw,
        "SELECT sealed FROM presignatures WHERE id = $1",
        "p-w"
    )
    .await
    .is_none());
    assert_eq!(
        store.presignature("p-other").await.unwrap().unwrap().state,
        PresignatureState::Ready
    );
    // Forced through: an old-key-epoch presignature is neither stored nor consumed.
    assert!(matches!(
        store
            .insert_presignature(&presig("p-late", "w", "m/0/0", epoch, later), b"s")
            .await,
        Err(StoreError::WrongKeyEpoch {
            record: 0,
            wallet: 1,
            ..
        })
    ));
    assert!(store
        .consume_presignature("p-w", NOW)
        .await
        .unwrap()
        .is_none());
    // A row of the old key epoch written behind the store's back is not usable either.
    sqlx::query("UPDATE presignatures SET state = 'ready', sealed = $2 WHERE id = $1")
        .bind("p-w")
        .bind(b"junk".to_vec())
        .execute(&raw)
        .await
        .unwrap();
    assert!(store
        .consume_presignature("p-w", NOW)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .ready_presignatures(&wallet_id("w"), "m/0/0", &ONE_TWO_THREE, NOW, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.expire_presignatures(NOW).await.unwrap(), 1);
    // A presignature of the new key epoch is.
    let mut fresh = presig("p-new", "w", "m/0/0", epoch, later);
    fresh.key_epoch = 1;
    store.insert_presignature(&fresh, b"fresh").await.unwrap();
    assert_eq!(
        bytes(store.consume_presignature("p-new", NOW).await.unwrap()).unwrap(),
        b"fresh"
    );
}

async fn a_dropped_refresh_leaves_the_old_share(db: Db) {
    let store = db.open().await;
    active_wallet(&store, "w").await;
    let session = Uuid::new_v4();
    store
        .put_pending_share(&wallet_id("w"), 1, session, N2, NEW)
        .await
        .unwrap();
    assert!(!store
        .drop_pending_share(&wallet_id("w"), Uuid::new_v4())
        .await
        .unwrap());
    assert!(store
        .drop_pending_share(&wallet_id("w"), session)
        .await
        .unwrap());
    assert!(store.pending_shares().await.unwrap().is_empty());
    assert_eq!(epoch_and_share(&store).await, (0, OLD.to_vec()));
    // A dropped refresh cannot be committed afterwards.
    assert!(store
        .commit_pending_share(&wallet_id("w"), session, NOW)
        .await
        .is_err());
    assert_eq!(
        store
            .wallet(&wallet_id("w"))
            .await
            .unwrap()
            .unwrap()
            .key_epoch,
        0
    );
}

async fn a_pending_share_must_be_for_the_next_key_epoch(db: Db) {
    let store = db.open().await;
    // A pending (not yet active) wallet has nothing to refresh.
    store.insert_wallet(&wallet("p"), OLD).await.unwrap();
    assert!(store
        .put_pending_share(&wallet_id("p"), 1, Uuid::new_v4(), N1, NEW)
        .await
        .is_err());
    active_wallet(&store, "w").await;
    for epoch in [0, 2] {
        assert!(matches!(
            store
                .put_pending_share(&wallet_id("w"), epoch, Uuid::new_v4(), N1, NEW)
                .await,
            Err(StoreError::Invalid(_))
        ));
    }
    // A pending share moved to another epoch's row does not open.
    let session = Uuid::new_v4();
    store
        .put_pending_share(&wallet_id("w"), 1, session, N1, NEW)
        .await
        .unwrap();
    let raw = db.raw().await;
    sqlx::query("UPDATE pending_key_shares SET key_epoch = 7 WHERE wallet_id = 'w'")
        .execute(&raw)
        .await
        .unwrap();
    assert!(matches!(
        store
            .commit_pending_share(&wallet_id("w"), session, NOW)
            .await,
        Err(StoreError::Tampered { .. })
    ));
    assert_eq!(
        bytes(store.key_share(&wallet_id("w")).await.unwrap()).unwrap(),
        OLD
    );
}

async fn a_committed_resharing_moves_the_wallet_to_the_new_committee(db: Db) {
    let store = db.open().await;
    active_wallet(&store, "w").await;
    let session = Uuid::new_v4();
    let committee = Committee {
        participants: NodeId::must_list(&[1, 2, 4]),
        threshold: 3,
    };
    store
        .put_pending_reshare(&wallet_id("w"), 1, (session, N2), Some(NEW), &committee)
        .await
        .unwrap();
    // Pending: the wallet is as it was.
    let w = store.wallet(&wallet_id("w")).await.unwrap().unwrap();
    assert_eq!(
        (w.participants.as_slice(), w.threshold),
        (&ONE_TWO_THREE[..], 2)
    );
    let commit = store
        .commit_pending_share(&wallet_id("w"), session, NOW)
        .await
        .unwrap();
    assert_eq!((commit.key_epoch, commit.retired), (1, false));
    let w = store.wallet(&wallet_id("w")).await.unwrap().unwrap();
    assert_eq!(
        (w.participants, w.threshold, w.state),
        (committee.participants, 3, WalletState::Active)
    );
    assert_eq!(epoch_and_share(&store).await, (1, NEW.to_vec()));
}

async fn a_node_leaving_the_committee_deletes_its_share_at_the_commit(db: Db) {
    let store = db.open().await;
    active_wallet(&store, "w").await;
    let session = Uuid::new_v4();
    let without_me = Committee {
        participants: NodeId::must_list(&[2, 3, 4]),
        threshold: 2,
    };
    // A share if and only if this node (1) is in the new committee.
    let put = |share: Option<&'static [u8]>, committee: Committee| {
        let store = store.clone();
        async move {
            store
                .put_pending_reshare(&wallet_id("w"), 1, (session, N2), share, &committee)
                .await
        }
    };
    assert!(put(Some(NEW), without_me.clone()).await.is_err());
    let with_me = Committee {
        participants: ONE_TWO_THREE.to_vec(),
        threshold: 2,
    };
    assert!(put(None, with_me).await.is_err());
    put(None, without_me.clone()).await.unwrap();
    assert_eq!(epoch_and_share(&store).await, (0, OLD.to_vec()));
    let commit = store
        .commit_pending_share(&wallet_id("w"), session, NOW)
        .await
        .unwrap();
    assert_eq!((commit.key_epoch, commit.retired), (1, true));
    let w = store.wallet(&wallet_id("w")).await.unwrap().unwrap();
    assert_eq!(
        (w.participants, w.state, w.key_epoch),
        (without_me.participants, WalletState::Retired, 1)
    );
    assert_eq!(store.key_share(&wallet_id("w")).await.unwrap(), None);
}

async fn a_node_rejoins_a_wallet_it_left_only_with_the_same_key(db: Db) {
    let store = db.open().await;
    active_wallet(&store, "w").await;
    let mut back = wallet("w");
    back.key_epoch = 2;
    back.threshold = 3;
    back.participants = NodeId::must_list(&[1, 2, 3, 4]);
    // An active wallet does not rejoin.
    assert!(store.rejoin_wallet(&back, NEW).await.is_err());
    let session = Uuid::new_v4();
    let committee = Committee {
        participants: NodeId::must_list(&[2, 3, 4]),
        threshold: 2,
    };
    store
        .put_pending_reshare(&wallet_id("w"), 1, (session, N2), None, &committee)
        .await
        .unwrap();
    store
        .commit_pending_share(&wallet_id("w"), session, NOW)
        .await
        .unwrap();
    // Another key under the same wallet id is refused.
    let mut other = back.clone();
    other.chain_code = [7u8; 32].into();
    assert!(store.rejoin_wallet(&other, NEW).await.is_err());
    store.rejoin_wallet(&back, NEW).await.unwrap();
    let w = store.wallet(&wallet_id("w")).await.unwrap().unwrap();
    assert_eq!(
        (w.state, w.key_epoch, w.threshold, w.participants.len()),
        (WalletState::Pending, 2, 3, 4)
    );
    store
        .set_wallet_state(&wallet_id("w"), WalletState::Active)
        .await
        .unwrap();
    assert_eq!(epoch_and_share(&store).await, (2, NEW.to_vec()));
}
