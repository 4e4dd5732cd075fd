//! The store against real databases: every test in `on_both_backends!` runs on a fresh SQLite
//! file and, when `MPC_TEST_POSTGRES_URL` names an admin connection, on a fresh PostgreSQL
//! database created for that test and dropped afterwards (`scripts/with-postgres` sets it up).

use mpc_types::{DerivationPath, NodeId};
use std::collections::HashSet;
use std::path::Path;

use mpc_store::{
    generate_key_file, Backend, CeremonyRecord, IncidentKind, IncidentRecord, KeySource, PoolLevel,
    PresignatureRecord, PresignatureState, PresignatureUse, SigningRefusal, SpendLimit, Store,
    StoreError, WalletRecord, WalletState, Zeroizing,
};
use sqlx::{AnyPool, AssertSqlSafe};
use uuid::Uuid;

#[macro_use]
mod common;
use common::*;

const N1: NodeId = NodeId::must(1);
const N2: NodeId = NodeId::must(2);
const N3: NodeId = NodeId::must(3);

const ONE_TWO_THREE: [NodeId; 3] = [N1, N2, N3];

on_both_backends!(
    sealing_round_trips_every_secret_kind,
    wrong_key_file_is_refused,
    wrong_passphrase_is_refused,
    wrong_node_is_refused,
    tampered_and_swapped_values_are_refused,
    wallet_lifecycle,
    sessions_are_seen_once,
    begin_signing_is_one_all_or_nothing_commit,
    spend_limit_holds_under_concurrent_signings,
    fsynced_and_unfsynced_signings_share_the_database,
    ceremonies_upsert_and_list,
    incidents_are_listed_counted_and_released,
    presignature_is_consumed_at_most_once_under_concurrency,
    expired_and_other_epoch_presignatures_are_unusable,
    a_corrupt_epoch_makes_presignatures_unusable,
    a_wallet_row_with_an_unknown_scheme_or_network_is_corrupt,
    bump_epoch_invalidates_every_presignature,
    presignature_counts_per_path_and_signers,
    primes_are_taken_once_under_concurrency,
    concurrent_writers_do_not_fail,
    reopening_gives_back_everything,
);

/// Runs `tasks` calls of `work(handle, t)` at once (released together by a barrier), spread
/// over `store` and three more handles with their own pools, so the race is between
/// connections and not inside one pool; their results, in order of `t`.
async fn race<T, F, Fut>(db: &Db, store: &Store, tasks: usize, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Store, usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let mut handles = vec![store.clone()];
    for _ in 0..3 {
        handles.push(db.open().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(tasks));
    let mut running = Vec::new();
    for t in 0..tasks {
        let work = work(handles[t % handles.len()].clone(), t);
        let barrier = barrier.clone();
        running.push(tokio::spawn(async move {
            barrier.wait().await;
            work.await
        }));
    }
    let mut results = Vec::new();
    for task in running {
        results.push(task.await.unwrap());
    }
    results
}

fn wallet(id: &str) -> WalletRecord {
    WalletRecord {
        id: id.into(),
        name: format!("wallet {id}"),
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

fn presig(
    id: &str,
    wallet_id: &str,
    path: &str,
    epoch: u64,
    expires_at: i64,
) -> PresignatureRecord {
    PresignatureRecord {
        id: id.into(),
        wallet_id: wallet_id.into(),
        path: path.parse().unwrap(),
        signers: NodeId::must_list(&[1, 2, 3]),
        epoch,
        state: PresignatureState::Ready,
        public: format!("public {id}").into_bytes(),
        created_at: NOW,
        expires_at,
        consumed_at: None,
    }
}

fn ceremony(id: &str, started_at: i64) -> CeremonyRecord {
    CeremonyRecord {
        id: id.into(),
        kind: "dkg".into(),
        state: "running".into(),
        coordinator: N1,
        request: serde_json::json!({ "wallet": id, "threshold": 2 }),
        result: None,
        error: None,
        started_at,
        finished_at: None,
    }
}

fn bytes(secret: Option<Zeroizing<Vec<u8>>>) -> Option<Vec<u8>> {
    secret.map(|s| s.to_vec())
}

async fn sealed_of(raw: &AnyPool, sql: &'static str, id: &str) -> Option<Vec<u8>> {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(raw)
        .await
        .unwrap()
}

async fn set_sealed(raw: &AnyPool, sql: &'static str, id: &str, sealed: Vec<u8>) {
    let changed = sqlx::query(sql)
        .bind(sealed)
        .bind(id)
        .execute(raw)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 1);
}

/// The stored form is `0x01 || nonce || ciphertext+tag` and does not contain the plaintext.
fn assert_sealed(sealed: &[u8], plaintext: &[u8]) {
    assert_eq!(sealed[0], 1, "version byte");
    assert_eq!(sealed.len(), 1 + 24 + plaintext.len() + 16);
    assert!(!sealed.windows(plaintext.len()).any(|w| w == plaintext));
}

async fn sealing_round_trips_every_secret_kind(db: Db) {
    let store = db.open().await;
    let expected = if db.url.starts_with("sqlite") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    assert_eq!(store.backend(), expected);
    let raw = db.raw().await;

    let primes_id = store.add_primes(b"primes secret one").await.unwrap();
    assert_eq!(store.primes_count().await.unwrap(), 1);
    let sealed = sealed_of(
        &raw,
        "SELECT sealed FROM primes WHERE id = $1",
        &primes_id.to_string(),
    )
    .await;
    assert_sealed(&sealed.unwrap(), b"primes secret one");
    assert_eq!(
        bytes(store.take_primes().await.unwrap()),
        Some(b"primes secret one".to_vec())
    );
    assert_eq!(store.primes_count().await.unwrap(), 0);
    assert!(store.take_primes().await.unwrap().is_none());

    let session = Uuid::new_v4();
    store
        .put_aux_info(
            &NodeId::must_list(&[3, 1, 2]),
            b"aux secret",
            "digest-1",
            session,
        )
        .await
        .unwrap();
    let (aux, digest) = store
        .aux_info(&NodeId::must_list(&[1, 2, 3]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (aux.to_vec(), digest.as_str()),
        (b"aux secret".to_vec(), "digest-1")
    );
    let sealed = sealed_of(
        &raw,
        "SELECT sealed FROM aux_info WHERE node_set = $1",
        "1,2,3",
    )
    .await;
    assert_sealed(&sealed.unwrap(), b"aux secret");
    assert!(store
        .aux_info(&NodeId::must_list(&[1, 2]))
        .await
        .unwrap()
        .is_none());
    store
        .put_aux_info(
            &NodeId::must_list(&[1, 2, 3]),
            b"aux secret two",
            "digest-2",
            session,
        )
        .await
        .unwrap();
    let (aux, digest) = store
        .aux_info(&NodeId::must_list(&[2, 3, 1]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (aux.to_vec(), digest.as_str()),
        (b"aux secret two".to_vec(), "digest-2")
    );

    store
        .insert_wallet(&wallet("w1"), b"key share secret")
        .await
        .unwrap();
    assert_eq!(
        bytes(store.key_share("w1").await.unwrap()),
        Some(b"key share secret".to_vec())
    );
    let sealed = sealed_of(
        &raw,
        "SELECT sealed FROM key_shares WHERE wallet_id = $1",
        "w1",
    )
    .await;
    assert_sealed(&sealed.unwrap(), b"key share secret");
    assert!(store.key_share("nope").await.unwrap().is_none());

    let p = presig("p1", "w1", "m/0/1", 1, NOW + 60_000);
    store
        .insert_presignature(&p, b"presignature secret")
        .await
        .unwrap();
    assert_eq!(store.presignature("p1").await.unwrap(), Some(p.clone()));
    let sealed = sealed_of(&raw, "SELECT sealed FROM presignatures WHERE id = $1", "p1").await;
    assert_sealed(&sealed.unwrap(), b"presignature secret");
    assert_eq!(
        bytes(store.consume_presignature("p1", NOW).await.unwrap()),
        Some(b"presignature secret".to_vec())
    );
    // Consumed means the secret is gone from the database, not only flagged.
    assert!(
        sealed_of(&raw, "SELECT sealed FROM presignatures WHERE id = $1", "p1")
            .await
            .is_none()
    );
    let consumed = store.presignature("p1").await.unwrap().unwrap();
    assert_eq!(consumed.state, PresignatureState::Consumed);
    assert_eq!(consumed.consumed_at, Some(NOW));
}

async fn wrong_key_file_is_refused(db: Db) {
    db.open().await.close().await;
    let other = db.dir.join("other.key");
    generate_key_file(&other).unwrap();
    let error = Store::open(&db.url, &KeySource::KeyFile(other), N1)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::WrongKey), "{error}");
    assert!(error.to_string().contains("does not open this store"));
    let passphrase = KeySource::Passphrase(Zeroizing::new("a passphrase".into()));
    let error = Store::open(&db.url, &passphrase, N1).await.unwrap_err();
    assert!(matches!(error, StoreError::WrongKey), "{error}");
    // The right key still opens it.
    db.open().await;
}

async fn wrong_passphrase_is_refused(db: Db) {
    let right = KeySource::Passphrase(Zeroizing::new("correct horse battery staple".into()));
    let wrong = KeySource::Passphrase(Zeroizing::new("correct horse battery stapler".into()));
    let store = Store::open(&db.url, &right, N1).await.unwrap();
    store.insert_wallet(&wallet("w1"), b"share").await.unwrap();
    store.close().await;
    let error = Store::open(&db.url, &wrong, N1).await.unwrap_err();
    assert!(matches!(error, StoreError::WrongKey), "{error}");
    let error = Store::open(&db.url, &db.key(), N1).await.unwrap_err();
    assert!(matches!(error, StoreError::WrongKey), "{error}");
    let store = Store::open(&db.url, &right, N1).await.unwrap();
    assert_eq!(
        bytes(store.key_share("w1").await.unwrap()),
        Some(b"share".to_vec())
    );
}

async fn wrong_node_is_refused(db: Db) {
    db.open().await.close().await;
    let error = Store::open(&db.url, &db.key(), N2).await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::WrongNode {
                expected: 2,
                found: 1
            }
        ),
        "{error}"
    );
    assert_eq!(db.open().await.node_id(), N1);
}

async fn tampered_and_swapped_values_are_refused(db: Db) {
    const SHARE: &str = "SELECT sealed FROM key_shares WHERE wallet_id = $1";
    const SET_SHARE: &str = "UPDATE key_shares SET sealed = $1 WHERE wallet_id = $2";
    let store = db.open().await;
    let raw = db.raw().await;
    for id in ["a", "b", "c"] {
        store
            .insert_wallet(&wallet(id), format!("share {id}").as_bytes())
            .await
            .unwrap();
    }

    // One flipped bit.
    let mut sealed_a = sealed_of(&raw, SHARE, "a").await.unwrap();
    let original_a = sealed_a.clone();
    let last = sealed_a.len() - 1;
    sealed_a[last] ^= 0x01;
    set_sealed(&raw, SET_SHARE, "a", sealed_a).await;
    let error = store.key_share("a").await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Tampered { table: "key_shares", id } if id == "a"),
        "{error}"
    );

    // A valid sealed value moved to another row.
    set_sealed(&raw, SET_SHARE, "b", original_a.clone()).await;
    let error = store.key_share("b").await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Tampered { table: "key_shares", id } if id == "b"),
        "{error}"
    );
    assert_eq!(
        bytes(store.key_share("c").await.unwrap()),
        Some(b"share c".to_vec())
    );

    // The same row of another store (same key file, so only the DEK and store id differ).
    let other_url = format!("sqlite://{}", db.dir.join("other.db").display());
    let other = Store::open(&other_url, &db.key(), N1).await.unwrap();
    other.insert_wallet(&wallet("c"), b"share c").await.unwrap();
    let other_raw = AnyPool::connect(&other_url).await.unwrap();
    let foreign = sealed_of(&other_raw, SHARE, "c").await.unwrap();
    set_sealed(&raw, SET_SHARE, "c", foreign).await;
    let error = store.key_share("c").await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Tampered { id, .. } if id == "c"),
        "{error}"
    );

    // Aux info moved between node sets.
    store
        .put_aux_info(
            &NodeId::must_list(&[1, 2, 3]),
            b"aux 123",
            "d",
            Uuid::new_v4(),
        )
        .await
        .unwrap();
    store
        .put_aux_info(&NodeId::must_list(&[1, 2]), b"aux 12", "d", Uuid::new_v4())
        .await
        .unwrap();
    let sealed = sealed_of(
        &raw,
        "SELECT sealed FROM aux_info WHERE node_set = $1",
        "1,2,3",
    )
    .await;
    set_sealed(
        &raw,
        "UPDATE aux_info SET sealed = $1 WHERE node_set = $2",
        "1,2",
        sealed.unwrap(),
    )
    .await;
    let error = store
        .aux_info(&NodeId::must_list(&[1, 2]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Tampered { table: "aux_info", id } if id == "1,2"),
        "{error}"
    );

    // Presignature secrets swapped: consuming refuses the secret, and the presignature stays
    // consumed (fail closed).
    store
        .insert_presignature(&presig("p1", "c", "m", 1, NOW + 1000), b"s1")
        .await
        .unwrap();
    store
        .insert_presignature(&presig("p2", "c", "m", 1, NOW + 1000), b"s2")
        .await
        .unwrap();
    let sealed = sealed_of(&raw, "SELECT sealed FROM presignatures WHERE id = $1", "p1").await;
    set_sealed(
        &raw,
        "UPDATE presignatures SET sealed = $1 WHERE id = $2",
        "p2",
        sealed.unwrap(),
    )
    .await;
    let error = store.consume_presignature("p2", NOW).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Tampered { table: "presignatures", id } if id == "p2"),
        "{error}"
    );
    let p2 = store.presignature("p2").await.unwrap().unwrap();
    assert_eq!(p2.state, PresignatureState::Consumed);
    assert_eq!(
        bytes(store.consume_presignature("p1", NOW).await.unwrap()),
        Some(b"s1".to_vec())
    );

    // Primes: tampered primes are refused (and gone).
    let id = store.add_primes(b"primes").await.unwrap();
    let mut sealed = sealed_of(
        &raw,
        "SELECT sealed FROM primes WHERE id = $1",
        &id.to_string(),
    )
    .await
    .unwrap();
    sealed[5] ^= 0x80;
    set_sealed(
        &raw,
        "UPDATE primes SET sealed = $1 WHERE id = $2",
        &id.to_string(),
        sealed,
    )
    .await;
    let error = store.take_primes().await.unwrap_err();
    assert!(
        matches!(
            &error,
            StoreError::Tampered {
                table: "primes",
                ..
            }
        ),
        "{error}"
    );
}

async fn wallet_lifecycle(db: Db) {
    let store = db.open().await;
    let w1 = wallet("w1");
    store.insert_wallet(&w1, b"share 1").await.unwrap();
    assert_eq!(store.wallet("w1").await.unwrap(), Some(w1.clone()));
    let error = store.insert_wallet(&w1, b"other share").await.unwrap_err();
    assert!(
        matches!(&error, StoreError::AlreadyExists { table: "wallets", id } if id == "w1"),
        "{error}"
    );
    assert_eq!(
        bytes(store.key_share("w1").await.unwrap()),
        Some(b"share 1".to_vec())
    );

    store
        .set_wallet_state("w1", WalletState::Active)
        .await
        .unwrap();
    let active = store.wallet("w1").await.unwrap().unwrap();
    assert_eq!(active.state, WalletState::Active);
    assert!(active.activated_at.unwrap() > 0);
    assert_eq!(active.participants, NodeId::must_list(&[1, 2, 3]));
    // Idempotent, and an active wallet cannot be aborted (its share would be lost).
    store
        .set_wallet_state("w1", WalletState::Active)
        .await
        .unwrap();
    let error = store
        .set_wallet_state("w1", WalletState::Aborted)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidTransition { .. }),
        "{error}"
    );
    assert_eq!(
        bytes(store.key_share("w1").await.unwrap()),
        Some(b"share 1".to_vec())
    );

    let mut w2 = wallet("w2");
    w2.created_at = NOW + 1;
    w2.participants = NodeId::must_list(&[5, 1, 3]);
    store.insert_wallet(&w2, b"share 2").await.unwrap();
    store
        .set_wallet_state("w2", WalletState::Aborted)
        .await
        .unwrap();
    let aborted = store.wallet("w2").await.unwrap().unwrap();
    assert_eq!(aborted.state, WalletState::Aborted);
    assert_eq!(aborted.activated_at, None);
    assert_eq!(aborted.participants, NodeId::must_list(&[1, 3, 5]));
    assert!(store.key_share("w2").await.unwrap().is_none());
    let error = store
        .set_wallet_state("w2", WalletState::Active)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidTransition { .. }),
        "{error}"
    );

    let error = store
        .set_wallet_state("nope", WalletState::Active)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound { .. }), "{error}");
    let ids: Vec<String> = store
        .wallets()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, ["w1", "w2"]);
    assert!(store.wallet("nope").await.unwrap().is_none());
}

async fn sessions_are_seen_once(db: Db) {
    let store = db.open().await;
    let session = Uuid::new_v4();
    assert!(store.mark_session_seen(session, "keygen").await.unwrap());
    assert!(!store.mark_session_seen(session, "keygen").await.unwrap());
    assert!(!store.mark_session_seen(session, "signing").await.unwrap());
    assert!(store
        .mark_session_seen(Uuid::new_v4(), "keygen")
        .await
        .unwrap());
    // Seen sessions survive a restart.
    let again = db.open().await;
    assert!(!again.mark_session_seen(session, "keygen").await.unwrap());
}

async fn begin_signing_is_one_all_or_nothing_commit(db: Db) {
    let store = db.open().await;
    store.insert_wallet(&wallet("w1"), b"share").await.unwrap();
    for id in ["a", "b"] {
        store
            .insert_presignature(&presig(id, "w1", "m", 1, NOW + 60_000), id.as_bytes())
            .await
            .unwrap();
    }
    let epoch = store.epoch().await.unwrap();
    assert_eq!(epoch, 1, "the fixtures' presignatures are of epoch 1");
    let (m, m01) = (DerivationPath::root(), "m/0/1".parse().unwrap());
    let for_m = |id| PresignatureUse {
        id,
        wallet_id: "w1",
        path: &m,
        signers: &ONE_TWO_THREE,
    };
    // One unavailable presignature refuses the whole step and changes nothing.
    let session = Uuid::new_v4();
    let refused = store
        .begin_signing(
            session,
            &[for_m("a"), for_m("missing")],
            &[("w1", 500)],
            None,
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        Err(SigningRefusal::PresignatureUnavailable("missing".into()))
    );
    // So does one bound to another path (or wallet, or signer set).
    let elsewhere = PresignatureUse {
        path: &m01,
        ..for_m("b")
    };
    let refused = store
        .begin_signing(session, &[for_m("a"), elsewhere], &[("w1", 500)], None, NOW)
        .await
        .unwrap();
    assert_eq!(
        refused,
        Err(SigningRefusal::PresignatureBoundElsewhere {
            id: "b".into(),
            bound_to: "wallet w1 path m signers [1,2,3]".into()
        })
    );
    assert_eq!(
        store.presignature("a").await.unwrap().unwrap().state,
        PresignatureState::Ready
    );
    assert_eq!(store.spent_since("w1", 0).await.unwrap(), 0);
    // The same session then succeeds: nothing of the refused attempt was committed.
    let secrets = store
        .begin_signing(
            session,
            &[for_m("a"), for_m("b")],
            &[("w1", 500)],
            None,
            NOW,
        )
        .await
        .unwrap()
        .unwrap();
    let secrets: Vec<Vec<u8>> = secrets.iter().map(|s| s.to_vec()).collect();
    assert_eq!(secrets, [b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(store.spent_since("w1", 0).await.unwrap(), 500);
    for id in ["a", "b"] {
        assert_eq!(
            store.presignature(id).await.unwrap().unwrap().state,
            PresignatureState::Consumed
        );
    }
    // A replay of the session is refused before anything else, and counts nothing.
    let replay = store
        .begin_signing(session, &[], &[("w1", 500)], None, NOW)
        .await
        .unwrap();
    assert_eq!(replay, Err(SigningRefusal::SessionUsed));
    assert!(!store.mark_session_seen(session, "sign").await.unwrap());
    assert_eq!(store.spent_since("w1", 0).await.unwrap(), 500);
    // Without presignatures (FROST, interactive ECDSA) it marks and counts.
    let frost = store
        .begin_signing(Uuid::new_v4(), &[], &[("w1", 700)], None, NOW)
        .await
        .unwrap();
    assert_eq!(frost, Ok(Vec::new()));
    assert_eq!(store.spent_since("w1", 0).await.unwrap(), 1200);
}

/// Signings that consume a presignature (their commit fsync'd) and signings that do not (on
/// SQLite, committed through a second pool that skips the fsync) race on one wallet through
/// four handles: every one commits, the spends add up, every presignature is consumed once,
/// and after reopening the store every session is still refused as seen.
async fn fsynced_and_unfsynced_signings_share_the_database(db: Db) {
    const TASKS: usize = 24;
    let store = db.open().await;
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    for t in (1..TASKS).step_by(2) {
        let id = format!("p{t}");
        store
            .insert_presignature(&presig(&id, "w", "m", 1, NOW + 60_000), id.as_bytes())
            .await
            .unwrap();
    }
    let sessions: Vec<Uuid> = (0..TASKS).map(|_| Uuid::new_v4()).collect();
    let results = race(&db, &store, TASKS, |handle, t| {
        let session = sessions[t];
        async move {
            let id = format!("p{t}");
            let root = DerivationPath::root();
            let uses = match t % 2 {
                1 => vec![PresignatureUse {
                    id: &id,
                    wallet_id: "w",
                    path: &root,
                    signers: &ONE_TWO_THREE,
                }],
                _ => Vec::new(),
            };
            let secrets = handle
                .begin_signing(session, &uses, &[("w", 1_000)], None, NOW)
                .await
                .unwrap()
                .unwrap();
            secrets.iter().map(|s| s.to_vec()).collect::<Vec<_>>()
        }
    })
    .await;
    for (t, secrets) in results.iter().enumerate() {
        let expected: Vec<Vec<u8>> = match t % 2 {
            1 => vec![format!("p{t}").into_bytes()],
            _ => Vec::new(),
        };
        assert_eq!(secrets, &expected, "signing {t}");
    }
    assert_eq!(
        store.spent_since("w", 0).await.unwrap(),
        1_000 * TASKS as u64
    );
    store.close().await;
    let reopened = db.open().await;
    for t in (1..TASKS).step_by(2) {
        let record = reopened
            .presignature(&format!("p{t}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.state, PresignatureState::Consumed);
    }
    for session in sessions {
        let replay = reopened
            .begin_signing(session, &[], &[("w", 1)], None, NOW)
            .await
            .unwrap();
        assert_eq!(replay, Err(SigningRefusal::SessionUsed));
    }
    assert_eq!(
        reopened.spent_since("w", 0).await.unwrap(),
        1_000 * TASKS as u64
    );
}

/// The rolling limit is checked where the spend is recorded: of 12 concurrent signings of
/// 30 000 sats each (through four separate pools) under a limit of 100 000, with 20 000 sent
/// inside the window and 50 000 before it, exactly two pass; a refusal records nothing.
async fn spend_limit_holds_under_concurrent_signings(db: Db) {
    const TASKS: usize = 12;
    let store = db.open().await;
    for id in ["w", "other"] {
        store.insert_wallet(&wallet(id), b"share").await.unwrap();
    }
    let limit = SpendLimit {
        max_sats: 100_000,
        since_ms: NOW - 1_000,
    };
    for (at, amount) in [(NOW - 5_000, 50_000), (NOW - 500, 20_000)] {
        store
            .begin_signing(Uuid::new_v4(), &[], &[("w", amount)], None, at)
            .await
            .unwrap()
            .unwrap();
    }
    // Another wallet's spends do not count against this one.
    store
        .begin_signing(Uuid::new_v4(), &[], &[("other", 90_000)], Some(limit), NOW)
        .await
        .unwrap()
        .unwrap();
    let results = race(&db, &store, TASKS, |handle, _| async move {
        handle
            .begin_signing(Uuid::new_v4(), &[], &[("w", 30_000)], Some(limit), NOW)
            .await
            .unwrap()
    })
    .await;
    let mut passed = 0;
    for result in results {
        match result {
            Ok(_) => passed += 1,
            Err(refusal) => {
                let SigningRefusal::SpendLimit {
                    wallet_id,
                    spent_sats,
                    amount_sats,
                    max_sats,
                } = refusal
                else {
                    panic!("unexpected refusal {refusal:?}");
                };
                assert_eq!(
                    (wallet_id.as_str(), spent_sats, amount_sats, max_sats),
                    ("w", 80_000, 30_000, 100_000)
                );
            }
        }
    }
    assert_eq!(
        passed, 2,
        "20 000 + 2 x 30 000 fits in 100 000; a third does not"
    );
    assert_eq!(
        store.spent_since("w", limit.since_ms).await.unwrap(),
        80_000
    );
    assert_eq!(store.spent_since("w", 0).await.unwrap(), 130_000);
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
}

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
        .ready_presignatures("w", "m/0/1", &NodeId::must_list(&[3, 2, 1]), NOW, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = ready.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        ["older", "fresh"],
        "ready, current epoch, unexpired, oldest first"
    );
    let limited = store
        .ready_presignatures("w", "m/0/1", &NodeId::must_list(&[1, 2, 3]), NOW, 1)
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
    let listed = store
        .ready_presignatures("w", "m/0/1", &NodeId::must_list(&[1, 2, 3]), NOW, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "listed before the corruption");
    sqlx::query("UPDATE meta SET value = $1 WHERE key = 'epoch'")
        .bind(b"1x".to_vec())
        .execute(&raw)
        .await
        .unwrap();
    let listed = store
        .ready_presignatures("w", "m/0/1", &NodeId::must_list(&[1, 2, 3]), NOW, 10)
        .await;
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

/// Rows are decoded into typed values once, here: a wallet whose scheme or network is not one
/// we know is an error naming the row, never skipped and never a default.
async fn a_wallet_row_with_an_unknown_scheme_or_network_is_corrupt(db: Db) {
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
        store.wallet("w").await.unwrap().unwrap().scheme,
        mpc_types::Scheme::Ecdsa
    );
    for (column, bad, good) in [
        ("scheme", "rsa", "cggmp24"),
        ("network", "litecoin", "regtest"),
    ] {
        set(column, bad).await.unwrap();
        for error in [
            store.wallet("w").await.unwrap_err(),
            store.wallets().await.unwrap_err(),
        ] {
            assert!(
                matches!(&error, StoreError::Corrupt { table: "wallets", id, reason }
                    if id == "w" && reason.contains(bad)),
                "{error}"
            );
        }
        set(column, good).await.unwrap();
        assert!(store.wallet("w").await.unwrap().is_some());
    }
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
        .ready_presignatures("w", "m", &NodeId::must_list(&[1, 2, 3]), NOW, 10)
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
    let levels = store.presignature_counts("w", NOW).await.unwrap();
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
        .presignature_counts("none", NOW)
        .await
        .unwrap()
        .is_empty());
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
    let levels = store.presignature_counts("w", NOW).await.unwrap();
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
            .set_wallet_state("w", WalletState::Active)
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
    let reopened = store.wallet("w").await.unwrap().unwrap();
    assert_eq!(reopened.state, WalletState::Active);
    assert_eq!(
        WalletRecord {
            state: WalletState::Pending,
            activated_at: None,
            ..reopened
        },
        w
    );
    assert_eq!(
        bytes(store.key_share("w").await.unwrap()),
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

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("store.db").display())
}

#[tokio::test]
async fn key_files_raw_and_hex_open_the_same_store() {
    let dir = temp_dir();
    let raw_path = dir.join("raw.key");
    generate_key_file(&raw_path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&raw_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let key = std::fs::read(&raw_path).unwrap();
    assert_eq!(key.len(), 32);
    let error = generate_key_file(&raw_path).unwrap_err();
    assert!(matches!(error, StoreError::KeyFile { .. }), "{error}");
    assert_eq!(std::fs::read(&raw_path).unwrap(), key, "never overwritten");

    let url = sqlite_url(&dir);
    let store = Store::open(&url, &KeySource::KeyFile(raw_path), N1)
        .await
        .unwrap();
    store.insert_wallet(&wallet("w"), b"share").await.unwrap();
    store.close().await;

    let hex_path = dir.join("hex.key");
    std::fs::write(&hex_path, format!("{}\n", hex::encode(&key))).unwrap();
    let store = Store::open(&url, &KeySource::KeyFile(hex_path.clone()), N1)
        .await
        .unwrap();
    assert_eq!(
        bytes(store.key_share("w").await.unwrap()),
        Some(b"share".to_vec())
    );
    store.close().await;
    std::fs::write(&hex_path, hex::encode(&key)).unwrap();
    Store::open(&url, &KeySource::KeyFile(hex_path.clone()), N1)
        .await
        .unwrap();

    for bad in [&key[..31], b"zz".repeat(32).as_slice(), &[0u8; 33][..]] {
        std::fs::write(&hex_path, bad).unwrap();
        let error = Store::open(&url, &KeySource::KeyFile(hex_path.clone()), N1)
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::KeyFile { .. }), "{error}");
    }
    let error = Store::open(&url, &KeySource::KeyFile(dir.join("missing.key")), N1)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::KeyFile { .. }), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn unsupported_urls_and_debug_output() {
    let error = Store::open("mysql://x", &KeySource::KeyFile("k".into()), N1)
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::UnsupportedUrl(ref s) if s == "mysql"),
        "{error}"
    );
    let secret = KeySource::Passphrase(Zeroizing::new("hunter2".into()));
    assert!(!format!("{secret:?}").contains("hunter2"));
}

#[test]
fn postgres_database_url_replaces_the_database() {
    assert_eq!(
        database_url("postgres://postgres@127.0.0.1:5433/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5433/t1"
    );
    assert_eq!(
        database_url("postgres://u:p@h/admin?sslmode=disable", "t1"),
        "postgres://u:p@h/t1?sslmode=disable"
    );
    assert_eq!(database_url("postgres://h:1", "t1"), "postgres://h:1/t1");
}
