//! Rollback detection against real databases: a store copied back in time (SQLite's files
//! copied back; on PostgreSQL, the database recreated from a copy made with `CREATE DATABASE
//! ... TEMPLATE`) is recognized by its guard file, and every presignature in it is retired,
//! while a normal restart keeps them. Runs on SQLite and, when `MPC_TEST_POSTGRES_URL` is set,
//! on PostgreSQL (as `store.rs`).

use std::path::PathBuf;

use mpc_store::{
    create_backup, restore_backup, witnessed_position, GuardCheck, Position, PresignatureRecord,
    PresignatureState, PresignatureUse, RestoreOptions, SigningRefusal, Store, WalletRecord,
    WalletState,
};
use mpc_types::NodeId;
use uuid::Uuid;

#[macro_use]
mod common;
use common::*;

on_both_backends!(
    a_store_copied_back_in_time_retires_every_presignature,
    a_restart_keeps_presignatures_even_after_a_crash_before_the_file_was_advanced,
    without_a_guard_file_ready_presignatures_are_retired,
    concurrent_consumptions_are_each_counted_and_witnessed,
    a_restore_starts_above_the_witnessed_epoch,
);

const WALLET: &str = "w";
const PATH: &str = "m/0/0";
const SIGNERS: &[NodeId] = &[NodeId::must(1), NodeId::must(2), NodeId::must(3)];

fn at(epoch: u64, consumed: u64) -> Position {
    Position { epoch, consumed }
}

fn guard_file(db: &Db) -> PathBuf {
    db.dir.join("rollback-guard")
}

/// The store, checked against the guard file as a node does at start.
async fn open_guarded(db: &Db) -> (Store, GuardCheck) {
    let store = db.open().await;
    let check = store.guard_against_rollback(&guard_file(db)).await.unwrap();
    (store, check)
}

fn wallet() -> WalletRecord {
    let mut wallet = common::wallet(WALLET);
    wallet.state = WalletState::Active;
    wallet.activated_at = Some(NOW);
    wallet
}

async fn add_presignatures(store: &Store, ids: &[&str]) {
    let epoch = store.epoch().await.unwrap();
    for id in ids {
        let record = PresignatureRecord {
            id: (*id).into(),
            wallet_id: wallet_id(WALLET),
            path: PATH.parse().unwrap(),
            signers: SIGNERS.to_vec(),
            epoch,
            key_epoch: 0,
            state: PresignatureState::Ready,
            public: b"public".to_vec(),
            created_at: NOW,
            expires_at: NOW + 3_600_000,
            consumed_at: None,
        };
        store
            .insert_presignature(&record, format!("secret {id}").as_bytes())
            .await
            .unwrap();
    }
}

/// A signer's durable step with presignature `id`, as `sign_participant` runs it.
async fn sign_with(store: &Store, id: &str) -> Result<Vec<u8>, SigningRefusal> {
    let path = PATH.parse().unwrap();
    let wallet = wallet_id(WALLET);
    let uses = [PresignatureUse {
        id,
        wallet_id: &wallet,
        path: &path,
        signers: SIGNERS,
    }];
    store
        .begin_signing(Uuid::new_v4(), &uses, &[(&wallet, 1_000)], None, NOW)
        .await
        .unwrap()
        .map(|mut secrets| secrets.remove(0).to_vec())
}

async fn state(store: &Store, id: &str) -> PresignatureState {
    store.presignature(id).await.unwrap().unwrap().state
}

async fn ready_ids(store: &Store) -> Vec<String> {
    store
        .ready_presignatures(&wallet_id(WALLET), PATH, SIGNERS, NOW, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect()
}

/// The finding itself: a copy of the store from before a signing comes back (VM snapshot,
/// point-in-time recovery, replica failover) with the used presignature ready again.
async fn a_store_copied_back_in_time_retires_every_presignature(db: Db) {
    let (store, check) = open_guarded(&db).await;
    assert_eq!(
        check,
        GuardCheck::Unwitnessed {
            reason: "missing".into(),
            store: at(1, 0),
            epoch: 1,
            discarded: 0,
        },
        "a new store has nothing to retire"
    );
    store.insert_wallet(&wallet(), b"share").await.unwrap();
    add_presignatures(&store, &["p1", "p2", "p3"]).await;
    store.close().await;
    let before_signing = db.snapshot().await;

    let (store, check) = open_guarded(&db).await;
    assert_eq!(check, GuardCheck::InStep { store: at(1, 0) });
    assert_eq!(sign_with(&store, "p1").await.unwrap(), b"secret p1");
    assert_eq!(store.position().await.unwrap(), at(1, 1));
    assert_eq!(
        witnessed_position(&guard_file(&db)).unwrap(),
        Some(at(1, 1)),
        "the file holds the consumption before the secret came back"
    );
    store.close().await;

    db.roll_back_to(&before_signing).await;
    let (store, check) = open_guarded(&db).await;
    assert_eq!(
        check,
        GuardCheck::RolledBack {
            store: at(1, 0),
            witnessed: at(1, 1),
            epoch: 2,
            discarded: 3,
        }
    );
    // The used presignature is refused, and so is every other one of the copy.
    for id in ["p1", "p2", "p3"] {
        assert_eq!(
            sign_with(&store, id).await,
            Err(SigningRefusal::PresignatureUnavailable(id.into()))
        );
        assert_eq!(state(&store, id).await, PresignatureState::Expired);
    }
    assert!(ready_ids(&store).await.is_empty());
    assert!(store
        .consume_presignature("p1", NOW)
        .await
        .unwrap()
        .is_none());
    store.close().await;

    // Detected once: the next start is in step, and new presignatures sign.
    let (store, check) = open_guarded(&db).await;
    assert_eq!(check, GuardCheck::InStep { store: at(2, 0) });
    add_presignatures(&store, &["new"]).await;
    assert_eq!(sign_with(&store, "new").await.unwrap(), b"secret new");
    assert_eq!(
        witnessed_position(&guard_file(&db)).unwrap(),
        Some(at(2, 1))
    );
    store.close().await;
}

/// No false alarm: a restart keeps the pool, and a store ahead of its file (the node died
/// between a consuming commit and the file's update, so that presignature never left) is in
/// step.
async fn a_restart_keeps_presignatures_even_after_a_crash_before_the_file_was_advanced(db: Db) {
    let (store, _) = open_guarded(&db).await;
    store.insert_wallet(&wallet(), b"share").await.unwrap();
    add_presignatures(&store, &["p1", "p2", "p3"]).await;
    sign_with(&store, "p1").await.unwrap();
    store.close().await;

    let (store, check) = open_guarded(&db).await;
    assert_eq!(check, GuardCheck::InStep { store: at(1, 1) });
    assert_eq!(ready_ids(&store).await, ["p2", "p3"]);
    store.close().await;

    // The commit without the file's update: a store handle that has no guard.
    let unguarded = db.open().await;
    sign_with(&unguarded, "p2").await.unwrap();
    unguarded.close().await;
    assert_eq!(
        witnessed_position(&guard_file(&db)).unwrap(),
        Some(at(1, 1))
    );
    let (store, check) = open_guarded(&db).await;
    assert_eq!(check, GuardCheck::InStep { store: at(1, 2) });
    assert_eq!(ready_ids(&store).await, ["p3"]);
    assert_eq!(
        witnessed_position(&guard_file(&db)).unwrap(),
        Some(at(1, 2)),
        "the start brings the file up to the store"
    );
    store.close().await;
}

/// A lost, new or damaged guard file tells nothing about what the node did: the ready
/// presignatures are retired.
async fn without_a_guard_file_ready_presignatures_are_retired(db: Db) {
    let store = db.open().await;
    store.insert_wallet(&wallet(), b"share").await.unwrap();
    add_presignatures(&store, &["p1", "p2"]).await;
    sign_with(&store, "p1").await.unwrap();
    store.close().await;

    let (store, check) = open_guarded(&db).await;
    assert_eq!(
        check,
        GuardCheck::Unwitnessed {
            reason: "missing".into(),
            store: at(1, 1),
            epoch: 2,
            discarded: 1,
        }
    );
    assert_eq!(state(&store, "p2").await, PresignatureState::Expired);
    add_presignatures(&store, &["p3"]).await;
    store.close().await;

    // Damaged (both slots fail their checksums): the same.
    let mut bytes = std::fs::read(guard_file(&db)).unwrap();
    bytes[10] ^= 1;
    bytes[42] ^= 1;
    std::fs::write(guard_file(&db), &bytes).unwrap();
    let (store, check) = open_guarded(&db).await;
    assert!(
        matches!(
            check,
            GuardCheck::Unwitnessed {
                epoch: 3,
                discarded: 1,
                ..
            }
        ),
        "{check:?}"
    );
    assert_eq!(state(&store, "p3").await, PresignatureState::Expired);
    store.close().await;
}

/// Each concurrent signing's commit counts its own consumption (on PostgreSQL the count's row
/// is locked until the commit; without that, two would write the same count), and the file
/// ends at the last one.
async fn concurrent_consumptions_are_each_counted_and_witnessed(db: Db) {
    const SIGNINGS: usize = 24;
    let (store, _) = open_guarded(&db).await;
    store.insert_wallet(&wallet(), b"share").await.unwrap();
    let ids: Vec<String> = (0..SIGNINGS).map(|i| format!("p{i:02}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    add_presignatures(&store, &id_refs).await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(SIGNINGS));
    let mut running = Vec::new();
    for id in ids {
        let (store, barrier) = (store.clone(), barrier.clone());
        running.push(tokio::spawn(async move {
            barrier.wait().await;
            sign_with(&store, &id).await.unwrap()
        }));
    }
    for signing in running {
        signing.await.unwrap();
    }
    let all = at(1, SIGNINGS as u64);
    assert_eq!(store.position().await.unwrap(), all);
    assert_eq!(witnessed_position(&guard_file(&db)).unwrap(), Some(all));
    store.close().await;
}

/// A legitimate restore is behind what the node did too; started above the file's epoch it is
/// not taken for a rollback (and without that, it would be: one needless alarm).
async fn a_restore_starts_above_the_witnessed_epoch(db: Db) {
    let empty = db.snapshot().await;
    let (store, _) = open_guarded(&db).await;
    store.insert_wallet(&wallet(), b"share").await.unwrap();
    let backup = create_backup(&db.url, &db.key(), NodeId::must(1), "cluster")
        .await
        .unwrap();
    assert_eq!(backup.header.epoch, 1);
    // The node goes on: two epochs later (say, restores), it signs.
    store.bump_epoch().await.unwrap();
    store.bump_epoch().await.unwrap();
    add_presignatures(&store, &["p1"]).await;
    sign_with(&store, "p1").await.unwrap();
    store.close().await;
    let witnessed = witnessed_position(&guard_file(&db)).unwrap().unwrap();
    assert_eq!(witnessed, at(3, 1));

    // The machine's database is lost; the backup goes into a new one.
    let (db, backup, empty) = (&db, &backup, &empty);
    let restore = |epoch_above| async move {
        db.roll_back_to(empty).await;
        let options = RestoreOptions {
            force: false,
            epoch_above,
        };
        let bytes = &backup.bytes;
        let summary = restore_backup(
            &db.url,
            &db.key(),
            NodeId::must(1),
            "cluster",
            bytes,
            options,
        )
        .await
        .unwrap();
        let (store, check) = open_guarded(db).await;
        store.close().await;
        (summary.epoch, check)
    };
    let (epoch, check) = restore(witnessed.epoch).await;
    assert_eq!(epoch, 4);
    assert!(matches!(check, GuardCheck::InStep { .. }), "{check:?}");

    // The file is at epoch 4 now; a restore not told so would look rolled back.
    let (epoch, check) = restore(0).await;
    assert_eq!(epoch, 2);
    assert!(
        matches!(check, GuardCheck::RolledBack { epoch: 5, .. }),
        "{check:?}"
    );
}
