//! Secrets at rest: sealing, the key-encryption key, tampered and swapped values, store URLs.

use super::*;

on_both_backends!(
    sealing_round_trips_every_secret_kind,
    wrong_key_file_is_refused,
    wrong_passphrase_is_refused,
    wrong_node_is_refused,
    tampered_and_swapped_values_are_refused,
);

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
        bytes(store.key_share(&wallet_id("w1")).await.unwrap()),
        Some(b"key share secret".to_vec())
    );
    let sealed = sealed_of(
        &raw,
        "SELECT sealed FROM key_shares WHERE wallet_id = $1",
        "w1",
    )
    .await;
    assert_sealed(&sealed.unwrap(), b"key share secret");
    assert!(store.key_share(&wallet_id("nope")).await.unwrap().is_none());

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
        bytes(store.key_share(&wallet_id("w1")).await.unwrap()),
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
    let error = store.key_share(&wallet_id("a")).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Tampered { table: "key_shares", id } if id == "a"),
        "{error}"
    );

    // A valid sealed value moved to another row.
    set_sealed(&raw, SET_SHARE, "b", original_a.clone()).await;
    let error = store.key_share(&wallet_id("b")).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Tampered { table: "key_shares", id } if id == "b"),
        "{error}"
    );
    assert_eq!(
        bytes(store.key_share(&wallet_id("c")).await.unwrap()),
        Some(b"share c".to_vec())
    );

    // The same row of another store (same key file, so only the DEK and store id differ).
    let other_url = format!("sqlite://{}", db.dir.join("other.db").display());
    let other = Store::open(&other_url, &db.key(), N1).await.unwrap();
    other.insert_wallet(&wallet("c"), b"share c").await.unwrap();
    let other_raw = AnyPool::connect(&other_url).await.unwrap();
    let foreign = sealed_of(&other_raw, SHARE, "c").await.unwrap();
    set_sealed(&raw, SET_SHARE, "c", foreign).await;
    let error = store.key_share(&wallet_id("c")).await.unwrap_err();
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
        bytes(store.key_share(&wallet_id("w")).await.unwrap()),
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
