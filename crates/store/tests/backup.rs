//! Backup and restore of a store: round trip, presignatures never restored and a new epoch,
//! another node's backup refused, tampered files refused. Runs on SQLite and, when
//! `MPC_TEST_POSTGRES_URL` is set, on a fresh PostgreSQL database (as `store.rs`).

use mpc_store::{
    create_backup, generate_key_file, read_backup_header, restore_backup, BackupError,
    CeremonyRecord, IncidentKind, IncidentRecord, KeySource, NewUtxo, PendingAuxInfoFor,
    PresignatureRecord, PresignatureState, RestoreOptions, Store, StoreError, WalletState,
};
use mpc_types::NodeId;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

#[macro_use]
mod common;
use common::*;

on_both_backends!(
    round_trip_restores_everything_but_presignatures,
    forced_restore_replaces_a_store_and_its_presignatures,
    another_nodes_or_clusters_backup_is_refused,
    tampered_or_foreign_key_backups_are_refused,
    backups_leave_fencing_tokens_out_and_a_restore_empties_them,
    an_older_backup_with_poisoned_fencing_tokens_restores_without_them,
    a_backup_from_before_a_key_refresh_is_refused_over_the_refreshed_store,
);

/// The node every backup here is of.
const NODE: NodeId = NodeId::must(1);
const CLUSTER: &str = "sha256:cluster-a";
const SHARE: &[u8] = b"key share secret of wallet w1";
const AUX: &[u8] = b"aux info secret";
const PRIMES: &[u8] = b"safe primes secret";
const PRESIG: &[u8] = b"presignature secret";
const FORCED: RestoreOptions = RestoreOptions {
    force: true,
    epoch_above: 0,
};
const UNFORCED: RestoreOptions = RestoreOptions {
    force: false,
    epoch_above: 0,
};

fn presig(id: &str, epoch: u64) -> PresignatureRecord {
    PresignatureRecord {
        id: id.into(),
        wallet_id: wallet_id("w1"),
        path: "m/0/0".parse().unwrap(),
        signers: NodeId::must_list(&[1, 2, 3]),
        epoch,
        key_epoch: 0,
        state: PresignatureState::Ready,
        public: b"public".to_vec(),
        created_at: NOW,
        expires_at: i64::MAX,
        consumed_at: None,
    }
}

/// An incident with every column set, evidence included.
fn incident() -> IncidentRecord {
    IncidentRecord {
        id: Uuid::from_u128(7),
        accused: NodeId::must(3),
        reporter: NodeId::must(2),
        kind: IncidentKind::Misbehaved,
        session: Uuid::from_u128(8),
        wallet_id: Some(wallet_id("w1")),
        at: NOW,
        detail: "a message from node 3 did not decode".into(),
        evidence: Some(vec![0, 1, 2, 0xff]),
        released_at: None,
    }
}

/// A store with a row in every table, and one ready presignature.
async fn populate(store: &Store) {
    store.add_primes(PRIMES).await.unwrap();
    store
        .put_aux_info(
            &NodeId::must_list(&[1, 2, 3]),
            AUX,
            "digest",
            Uuid::new_v4(),
        )
        .await
        .unwrap();
    store.insert_wallet(&wallet("w1"), SHARE).await.unwrap();
    store
        .set_wallet_state(&wallet_id("w1"), WalletState::Active)
        .await
        .unwrap();
    store
        .put_ceremony(&CeremonyRecord {
            id: "c1".into(),
            kind: "keygen".into(),
            state: "succeeded".into(),
            coordinator: NODE,
            request: serde_json::json!({"wallet": "w1"}),
            result: Some(serde_json::json!({"id": "w1"})),
            error: None,
            started_at: NOW,
            finished_at: Some(NOW + 5),
        })
        .await
        .unwrap();
    assert!(store
        .mark_session_seen(Uuid::new_v4(), "keygen")
        .await
        .unwrap());
    store
        .record_spend(Uuid::new_v4(), &wallet_id("w1"), 1234, NOW)
        .await
        .unwrap();
    let funding = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn::default()],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(50_000),
            script_pubkey: bitcoin::ScriptBuf::from_hex(&("0014".to_string() + &"11".repeat(20)))
                .unwrap(),
        }],
    };
    store
        .insert_utxos(
            &wallet_id("w1"),
            &[NewUtxo {
                outpoint: bitcoin::OutPoint::new(funding.compute_txid(), 0),
                amount: bitcoin::Amount::from_sat(50_000),
                path: "m/0/0".parse().unwrap(),
                script_pubkey: funding.output[0].script_pubkey.clone(),
                funding_transaction: Some(funding.clone()),
            }],
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(store.next_change_index(&wallet_id("w1")).await.unwrap(), 0);
    store.record_incident(&incident()).await.unwrap();
    store
        .insert_presignature(&presig("p1", 1), PRESIG)
        .await
        .unwrap();
}

/// Drops every table: an empty database, as after wiping a node's store.
async fn wipe(db: &Db) {
    let raw = db.raw().await;
    for table in [
        "presignatures",
        "pending_key_shares",
        "pending_aux_info",
        "key_shares",
        "spends",
        "utxos",
        "change_indices",
        "restores",
        "wallets",
        "primes",
        "aux_info",
        "ceremonies",
        "sessions_seen",
        "fencing_tokens",
        "funding_transactions",
        "incidents",
        "audit_log",
        "approval_decisions",
        "approval_requests",
        "meta",
        "_sqlx_migrations",
    ] {
        sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&raw)
            .await
            .unwrap();
    }
    raw.close().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn round_trip_restores_everything_but_presignatures(db: Db) {
    let store = db.open().await;
    populate(&store).await;
    let before_wallet = store.wallet(&wallet_id("w1")).await.unwrap().unwrap();
    let before_store_id = store.store_id();
    store.close().await;

    let backup = create_backup(&db.url, &db.key(), NODE, CLUSTER)
        .await
        .unwrap();
    let header = read_backup_header(&backup.bytes).unwrap();
    assert_eq!(header, backup.header);
    assert_eq!(
        (header.node_id, header.cluster.as_str(), header.epoch),
        (1, CLUSTER, 1)
    );
    assert_eq!(header.rows["key_shares"], 1);
    assert!(!header.rows.contains_key("presignatures"));
    // Secrets stay sealed: no plaintext, in raw or hex form, and no presignature at all.
    for secret in [SHARE, AUX, PRIMES, PRESIG] {
        assert!(!contains(&backup.bytes, secret));
        assert!(!contains(&backup.bytes, hex::encode(secret).as_bytes()));
    }
    assert!(!contains(&backup.bytes, b"p1"));

    // Into the populated store: refused without force.
    let err = restore_backup(&db.url, &db.key(), NODE, CLUSTER, &backup.bytes, UNFORCED)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::NotEmpty { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");

    wipe(&db).await;
    let summary = restore_backup(&db.url, &db.key(), NODE, CLUSTER, &backup.bytes, UNFORCED)
        .await
        .unwrap();
    assert_eq!(
        (
            summary.epoch,
            summary.presignatures_deleted,
            summary.replaced_rows
        ),
        (2, 0, 0)
    );

    let store = db.open().await;
    assert_eq!(store.store_id(), before_store_id);
    assert_eq!(store.epoch().await.unwrap(), 2);
    assert_eq!(
        store.wallet(&wallet_id("w1")).await.unwrap().unwrap(),
        before_wallet
    );
    assert_eq!(
        &store.key_share(&wallet_id("w1")).await.unwrap().unwrap()[..],
        SHARE
    );
    assert_eq!(
        &store
            .aux_info(&NodeId::must_list(&[1, 2, 3]))
            .await
            .unwrap()
            .unwrap()
            .0[..],
        AUX
    );
    assert_eq!(&store.take_primes().await.unwrap().unwrap()[..], PRIMES);
    let c = store.ceremony("c1").await.unwrap().unwrap();
    assert_eq!(c.result, Some(serde_json::json!({"id": "w1"})));
    assert_eq!(store.spent_since(&wallet_id("w1"), 0).await.unwrap(), 1234);
    assert_eq!(store.utxos(&wallet_id("w1"), true).await.unwrap().len(), 1);
    assert_eq!(store.incidents(None, 10).await.unwrap(), vec![incident()]);
    // The pool is empty, and a presignature made under the old epoch cannot come back.
    assert!(store.presignature("p1").await.unwrap().is_none());
    assert!(store
        .ready_presignatures(
            &wallet_id("w1"),
            "m/0/0",
            &NodeId::must_list(&[1, 2, 3]),
            NOW,
            10
        )
        .await
        .unwrap()
        .is_empty());
    let err = store
        .insert_presignature(&presig("p-old", 1), PRESIG)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongEpoch {
                record: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    store
        .insert_presignature(&presig("p-new", 2), PRESIG)
        .await
        .unwrap();
    assert_eq!(
        &store
            .consume_presignature("p-new", NOW)
            .await
            .unwrap()
            .unwrap()[..],
        PRESIG
    );
    store.close().await;

    // A backup of the restored store restores too (and records its restore history).
    let again = create_backup(&db.url, &db.key(), NODE, CLUSTER)
        .await
        .unwrap();
    assert_eq!(again.header.rows["restores"], 1);
    assert_eq!(again.header.epoch, 2);
}

async fn forced_restore_replaces_a_store_and_its_presignatures(db: Db) {
    let store = db.open().await;
    populate(&store).await;
    store.close().await;
    let backup = create_backup(&db.url, &db.key(), NODE, CLUSTER)
        .await
        .unwrap();

    // Later: the epoch moved on, more presignatures were made and one was used.
    let store = db.open().await;
    assert_eq!(store.bump_epoch().await.unwrap(), 2);
    assert_eq!(store.bump_epoch().await.unwrap(), 3);
    store
        .insert_presignature(&presig("p2", 3), PRESIG)
        .await
        .unwrap();
    store
        .insert_presignature(&presig("p3", 3), PRESIG)
        .await
        .unwrap();
    store
        .consume_presignature("p3", NOW)
        .await
        .unwrap()
        .unwrap();
    store
        .insert_wallet(&wallet("w2"), b"later share")
        .await
        .unwrap();
    store.close().await;

    let summary = restore_backup(&db.url, &db.key(), NODE, CLUSTER, &backup.bytes, FORCED)
        .await
        .unwrap();
    // Above both the backup's epoch (1) and the replaced store's (3).
    assert_eq!(summary.epoch, 4);
    assert_eq!(summary.presignatures_deleted, 3);
    assert!(summary.replaced_rows > 0);

    let store = db.open().await;
    assert_eq!(store.epoch().await.unwrap(), 4);
    for id in ["p1", "p2", "p3"] {
        assert!(store.presignature(id).await.unwrap().is_none(), "{id}");
        assert!(store.consume_presignature(id, NOW).await.unwrap().is_none());
    }
    assert!(
        store.wallet(&wallet_id("w2")).await.unwrap().is_none(),
        "replaced, not merged"
    );
    assert_eq!(
        &store.key_share(&wallet_id("w1")).await.unwrap().unwrap()[..],
        SHARE
    );
    let err = store
        .insert_presignature(&presig("p4", 3), PRESIG)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongEpoch { .. }), "{err}");
    store.close().await;
}

async fn another_nodes_or_clusters_backup_is_refused(db: Db) {
    let store = db.open().await;
    populate(&store).await;
    store.close().await;
    let backup = create_backup(&db.url, &db.key(), NODE, CLUSTER)
        .await
        .unwrap();
    // Backing up as another node is refused by the store itself.
    let err = create_backup(&db.url, &db.key(), NodeId::must(2), CLUSTER)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, BackupError::Store(StoreError::WrongNode { .. })),
        "{err}"
    );

    wipe(&db).await;
    let err = restore_backup(
        &db.url,
        &db.key(),
        NodeId::must(3),
        CLUSTER,
        &backup.bytes,
        FORCED,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, BackupError::WrongNode { file: 1, config: 3 }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("node 1") && message.contains("node 3"),
        "{message}"
    );
    let err = restore_backup(
        &db.url,
        &db.key(),
        NODE,
        "sha256:other",
        &backup.bytes,
        FORCED,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BackupError::WrongCluster { .. }), "{err}");
    // Nothing was written by the refused attempts.
    let raw = db.raw().await;
    let tables: i64 = sqlx::query_scalar(if db.url.starts_with("sqlite") {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'wallets'"
    } else {
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'wallets'"
    })
    .fetch_one(&raw)
    .await
    .unwrap();
    assert_eq!(tables, 0);
    raw.close().await;
}

async fn tampered_or_foreign_key_backups_are_refused(db: Db) {
    let store = db.open().await;
    populate(&store).await;
    store.close().await;
    let backup = create_backup(&db.url, &db.key(), NODE, CLUSTER)
        .await
        .unwrap();
    let good = backup.bytes.clone();
    wipe(&db).await;

    let restore = |bytes: Vec<u8>, key: KeySource, node: NodeId| {
        let url = db.url.clone();
        async move { restore_backup(&url, &key, node, CLUSTER, &bytes, UNFORCED).await }
    };
    // One changed character in a public row (the wallet's name).
    let text = String::from_utf8(good.clone()).unwrap();
    let renamed = text.replacen("wallet w1", "wallet w9", 1).into_bytes();
    assert_ne!(renamed, good);
    let err = restore(renamed, db.key(), NODE).await.unwrap_err();
    assert!(matches!(err, BackupError::Tampered), "{err}");
    // The header claims another node (so it passes as node 2's file): the tag catches it.
    let relabeled = text
        .replacen("\"node_id\":1", "\"node_id\":2", 1)
        .into_bytes();
    let err = restore(relabeled, db.key(), NodeId::must(2))
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Tampered), "{err}");
    // Every single-byte flip at some spread positions.
    for at in (0..good.len()).step_by(good.len() / 17 + 1) {
        let mut flipped = good.clone();
        flipped[at] ^= 0x01;
        let err = restore(flipped, db.key(), NODE).await.unwrap_err();
        assert!(
            matches!(
                err,
                BackupError::Tampered
                    | BackupError::TamperedOrWrongKey
                    | BackupError::Store(StoreError::WrongKey)
                    | BackupError::Malformed(_)
                    | BackupError::WrongNode { .. }
                    | BackupError::WrongCluster { .. }
                    | BackupError::Unsupported(_)
            ),
            "byte {at}: {err}"
        );
    }
    // Truncated.
    let err = restore(good[..good.len() - 10].to_vec(), db.key(), NODE)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Malformed(_)), "{err}");
    // Another key-encryption key.
    let other = db.dir.join("other.key");
    generate_key_file(&other).unwrap();
    let err = restore(good.clone(), KeySource::KeyFile(other), NODE)
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::TamperedOrWrongKey), "{err}");

    // The untouched file still restores after all those refusals.
    restore(good, db.key(), NODE).await.unwrap();
    let store = db.open().await;
    assert_eq!(
        &store.key_share(&wallet_id("w1")).await.unwrap().unwrap()[..],
        SHARE
    );
    store.close().await;
}

/// A token far above any etcd revision, as a peer could make older versions store.
const POISONED: i64 = 1 << 60;

async fn backups_leave_fencing_tokens_out_and_a_restore_empties_them(db: Db) {
    let store = db.open().await;
    populate(&store).await;
    store.close().await;
    // A table poisoned under older versions, which stored any token a peer sent.
    let raw = db.raw().await;
    sqlx::query(
        "INSERT INTO fencing_tokens (resource, token, updated_at) VALUES ('ceremony', $1, $2)",
    )
    .bind(POISONED)
    .bind(NOW)
    .execute(&raw)
    .await
    .unwrap();
    raw.close().await;

    let backup = create_backup(&db.url, &db.key(), NODE, CLUSTER)
        .await
        .unwrap();
    assert!(
        !backup.header.rows.contains_key("fencing_tokens"),
        "{:?}",
        backup.header.rows
    );
    assert!(!contains(&backup.bytes, b"fencing_tokens"));
    assert!(!contains(&backup.bytes, POISONED.to_string().as_bytes()));

    // Restored over the poisoned store: the table comes back empty, everything else as was.
    restore_backup(&db.url, &db.key(), NODE, CLUSTER, &backup.bytes, FORCED)
        .await
        .unwrap();
    let store = db.open().await;
    assert_eq!(store.fencing_token("ceremony").await.unwrap(), None);
    assert_eq!(
        &store.key_share(&wallet_id("w1")).await.unwrap().unwrap()[..],
        SHARE
    );
    store.close().await;
}

/// Made by the version before fencing tokens were left out of backups, of node 1 of
/// `sha256:cluster-a`, with `ceremony` = 2^60 and `pool-refill` = 2^59 stored unchecked.
const OLDER_BACKUP: &[u8] = include_bytes!("fixtures/poisoned-fencing.backup");

async fn an_older_backup_with_poisoned_fencing_tokens_restores_without_them(db: Db) {
    let header = read_backup_header(OLDER_BACKUP).unwrap();
    assert_eq!(header.rows["fencing_tokens"], 2);
    let key = KeySource::KeyFile(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/poisoned-fencing.key"),
    );
    let summary = restore_backup(&db.url, &key, NODE, CLUSTER, OLDER_BACKUP, UNFORCED)
        .await
        .unwrap();
    assert_eq!(summary.epoch, 2);
    let store = Store::open(&db.url, &key, NODE).await.unwrap();
    assert_eq!(store.store_id(), header.store_id);
    assert_eq!(store.fencing_token("ceremony").await.unwrap(), None);
    assert_eq!(store.fencing_token("pool-refill").await.unwrap(), None);
    store.close().await;
}

/// Wallet w1's key epoch and this node's share of it.
async fn epoch_and_share(store: &Store) -> (u64, Vec<u8>) {
    let (epoch, share) = store
        .key_share_with_epoch(&wallet_id("w1"))
        .await
        .unwrap()
        .unwrap();
    (epoch, share.to_vec())
}

/// The node set's aux info and its digest.
async fn aux_of(store: &Store) -> (Vec<u8>, String) {
    let (aux, digest) = store
        .aux_info(&NodeId::must_list(&[1, 2, 3]))
        .await
        .unwrap()
        .unwrap();
    (aux.to_vec(), digest)
}

/// A backup made before a key refresh holds the old share, which no longer combines with the
/// other nodes' shares (and, for an ECDSA wallet as w1 is, the old aux info): forcing it over
/// the refreshed store is refused and changes nothing. A backup made after the refresh
/// carries the key epoch and the new aux info and restores them.
async fn a_backup_from_before_a_key_refresh_is_refused_over_the_refreshed_store(db: Db) {
    const NEW: &[u8] = b"refreshed share of wallet w1";
    const NEW_AUX: &[u8] = b"aux info of the refresh";
    let store = db.open().await;
    populate(&store).await;
    store.close().await;
    let before = create_backup(&db.url, &db.key(), NODE, CLUSTER)
        .await
        .unwrap();
    let store = db.open().await;
    let session = Uuid::new_v4();
    store
        .put_pending_aux_info(
            &NodeId::must_list(&[1, 2, 3]),
            (session, NODE),
            (NEW_AUX, "new digest"),
            b"primes",
            PendingAuxInfoFor::Refresh,
        )
        .await
        .unwrap();
    store
        .put_pending_share(&wallet_id("w1"), 1, session, NODE, NEW)
        .await
        .unwrap();
    store
        .commit_pending_share(&wallet_id("w1"), session, NOW)
        .await
        .unwrap();
    let refreshed_aux = (NEW_AUX.to_vec(), "new digest".to_owned());
    assert_eq!(aux_of(&store).await, refreshed_aux);
    store.close().await;

    let err = restore_backup(&db.url, &db.key(), NODE, CLUSTER, &before.bytes, FORCED)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackupError::OlderKeyEpoch { wallet, backup: 0, store: 1 } if wallet == "w1"),
        "{err}"
    );
    let store = db.open().await;
    assert_eq!(epoch_and_share(&store).await, (1, NEW.to_vec()));
    assert_eq!(aux_of(&store).await, refreshed_aux);
    store.close().await;

    let after = create_backup(&db.url, &db.key(), NODE, CLUSTER)
        .await
        .unwrap();
    restore_backup(&db.url, &db.key(), NODE, CLUSTER, &after.bytes, FORCED)
        .await
        .unwrap();
    let store = db.open().await;
    assert_eq!(epoch_and_share(&store).await, (1, NEW.to_vec()));
    assert_eq!(aux_of(&store).await, refreshed_aux);
    store.close().await;
}
