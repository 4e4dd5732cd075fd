//! The store itself: its two pools (on SQLite the second commits without fsync), the
//! background checkpointer of SQLite's write-ahead log, opening and closing, the schema's
//! migrations, and sealing values under the data-encryption key. Connecting and durability are
//! in `connection.rs`; each table is read and written by an `impl Store` block of its own in
//! the modules beside this one.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mpc_types::NodeId;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, AssertSqlSafe, SqlStr, Transaction};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::connection::{begin_write, connect, connect_unsynced, Durability};
use crate::crypto::{KeySource, Sealer};
use crate::error::{Context, Result, StoreError};
use crate::meta::{create_meta, load_meta, open_meta, CONSUMED};
use crate::records::Backend;
use crate::rollback::{Position, RollbackGuard};

/// The schema's migrations, embedded in the binary. Built here rather than by sqlx's
/// `migrate!` macro: that macro is sqlx's only one we used, and its `macros` feature compiled a
/// second copy of sqlx with both database drivers (and SQLite's C source) for the build host,
/// minutes of CPU on every cold build. The checksums are sqlx's (SHA-384 of each file), the
/// same the macro recorded, so databases migrated before keep validating (a test pins them).
pub(crate) static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                )
            })
            .collect(),
    )
});

/// Version, description (sqlx's: the file name after the number, `_` as space) and SQL of
/// each file in `migrations/`. A released migration is never edited: add a new one.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "spends", include_str!("../migrations/0002_spends.sql")),
    (3, "utxos", include_str!("../migrations/0003_utxos.sql")),
    (
        4,
        "restores",
        include_str!("../migrations/0004_restores.sql"),
    ),
    (5, "fencing", include_str!("../migrations/0005_fencing.sql")),
    (
        6,
        "funding transactions",
        include_str!("../migrations/0006_funding_transactions.sql"),
    ),
    (
        7,
        "incidents",
        include_str!("../migrations/0007_incidents.sql"),
    ),
    (
        8,
        "audit log",
        include_str!("../migrations/0008_audit_log.sql"),
    ),
    (
        9,
        "key epoch",
        include_str!("../migrations/0009_key_epoch.sql"),
    ),
    (
        10,
        "approvals",
        include_str!("../migrations/0010_approvals.sql"),
    ),
    (
        11,
        "pending aux info",
        include_str!("../migrations/0011_pending_aux_info.sql"),
    ),
    (
        12,
        "key epoch at",
        include_str!("../migrations/0012_key_epoch_at.sql"),
    ),
    (
        13,
        "wallet coordinator",
        include_str!("../migrations/0013_wallet_coordinator.sql"),
    ),
    (
        14,
        "reshare",
        include_str!("../migrations/0014_reshare.sql"),
    ),
];

/// How often the write-ahead log is folded into the database file in the background.
const SQLITE_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// One node's encrypted store. Cheap to clone: clones share the connection pool and keys.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    /// SQLite only: the same file through a connection that commits without fsync, for
    /// [`Durability::ProcessCrash`] transactions (PostgreSQL sets that per transaction).
    unsynced: Option<AnyPool>,
    /// Unsynced transactions committed so far ([`Store::commit_for`]): the checkpointer works
    /// only when this moved.
    unsynced_commits: AtomicU64,
    backend: Backend,
    store_id: Uuid,
    node_id: NodeId,
    /// Seals and opens every secret row under the data-encryption key.
    dek: Sealer,
    /// Set once the store was checked against its rollback guard file
    /// ([`Store::guard_against_rollback`]); every consumption is witnessed there after.
    guard: OnceLock<RollbackGuard>,
}

// Hand-written: the key material inside must never be printed.
impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .field("store_id", &self.inner.store_id)
            .field("node_id", &self.inner.node_id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The associated data a value of row `id` of `table` is sealed with: a value moved to another
/// row or store does not open.
pub(crate) fn sealed_ad(table: &str, id: &str, store_id: Uuid) -> String {
    format!("{table}/{id}/{store_id}")
}

/// Checkpoints the SQLite store's write-ahead log every [`SQLITE_CHECKPOINT_INTERVAL`]
/// (passive: it never blocks a writer) after unsynced commits, so those rarely have to (see
/// `connect_unsynced`). Without them it stays idle: the fsync'd commits checkpoint
/// themselves as before, and a checkpoint's fsync beside theirs would only slow them. Ends
/// when the store is closed or dropped.
fn spawn_checkpointer(inner: Weak<Inner>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SQLITE_CHECKPOINT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checkpointed = 0;
        loop {
            tick.tick().await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if inner.pool.is_closed() {
                return;
            }
            let commits = inner.unsynced_commits.load(Ordering::Relaxed);
            if commits == checkpointed {
                continue;
            }
            checkpointed = commits;
            if let Err(e) = checkpoint(&inner).await {
                tracing::warn!(error = %e, "checkpointing the write-ahead log failed");
            }
        }
    });
}

/// One passive checkpoint; when it moved the whole log into the database file, also the
/// write that restarts the log. SQLite restarts a fully checkpointed log on the first write
/// after it and fsyncs the new log header then, even with `synchronous = NORMAL` (a frame
/// must not reach the disk before the header that makes it valid). Left to the next signing,
/// that fsync lands in its commit, several times slower than one without (BENCHMARKS.md,
/// "The tail, and the checkpointer").
async fn checkpoint(inner: &Inner) -> std::result::Result<(), sqlx::Error> {
    // (busy, frames in the log, frames checkpointed)
    let (busy, logged, done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&inner.pool)
        .await?;
    let moved_whole_log = busy == 0 && logged > 0 && done == logged;
    let Some(unsynced) = inner.unsynced.as_ref().filter(|_| moved_whole_log) else {
        return Ok(());
    };
    // Through the unsynced connection: only the header's fsync, none for the commit, and a
    // signing arriving meanwhile queues for the connection instead of polling for the lock.
    // Rewriting the user version (unused) with its own value writes a page, changes nothing.
    let mut conn = unsynced.acquire().await?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(AssertSqlSafe(format!("PRAGMA user_version = {version}")))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store at `url` ("sqlite://path" or "postgres://...") for
    /// node `node_id`, runs the migrations, and unlocks it with `key`.
    pub async fn open(url: &str, key: &KeySource, node_id: NodeId) -> Result<Store> {
        let (pool, backend) = connect(url).await?;

        let meta = load_meta(&pool).await?;
        let created = if meta.contains_key("store_id") {
            None
        } else {
            create_meta(&pool, backend, key, node_id.get()).await?
        };
        let (store_id, dek) = match created {
            Some(created) => created,
            None => open_meta(&load_meta(&pool).await?, key, node_id.get()).await?,
        };
        // Stores made before the count existed start it at zero.
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(CONSUMED)
            .bind(b"0".to_vec())
            .execute(&pool)
            .await
            .context(|| format!("initializing meta/{CONSUMED}"))?;
        let unsynced = connect_unsynced(url).await?;
        tracing::debug!(%store_id, node_id = node_id.get(), ?backend, "store opened");
        let store = Store {
            inner: Arc::new(Inner {
                pool,
                unsynced,
                unsynced_commits: AtomicU64::new(0),
                backend,
                store_id,
                node_id,
                dek: Sealer::new(&dek)?,
                guard: OnceLock::new(),
            }),
        };
        if store.inner.unsynced.is_some() {
            spawn_checkpointer(Arc::downgrade(&store.inner));
        }
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Random id of this store, bound into every sealed value.
    pub fn store_id(&self) -> Uuid {
        self.inner.store_id
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// Closes the pool (for all clones), waiting for connections in use to come back.
    pub async fn close(&self) {
        if let Some(unsynced) = &self.inner.unsynced {
            unsynced.close().await;
        }
        self.inner.pool.close().await;
    }

    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        begin_write(&self.inner.pool, self.inner.backend).await
    }

    /// Commits `tx` from [`Store::begin_write_for`] with the same `durability`.
    pub(crate) async fn commit_for(
        &self,
        tx: Transaction<'static, Any>,
        durability: Durability,
    ) -> std::result::Result<(), sqlx::Error> {
        tx.commit().await?;
        if durability == Durability::ProcessCrash {
            // Counted once committed: counted at the start, a checkpoint running during the
            // transaction would take the count without its frames, and none would follow.
            self.inner.unsynced_commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// [`Store::begin_write`] for a transaction whose commit must survive `durability`.
    pub(crate) async fn begin_write_for(
        &self,
        durability: Durability,
    ) -> Result<Transaction<'static, Any>> {
        match (durability, &self.inner.unsynced) {
            (Durability::PowerCut, _) => self.begin_write().await,
            (Durability::ProcessCrash, Some(unsynced)) => {
                begin_write(unsynced, self.inner.backend).await
            }
            (Durability::ProcessCrash, None) => {
                let mut tx = self.begin_write().await?;
                sqlx::query("SET LOCAL synchronous_commit = off")
                    .execute(&mut *tx)
                    .await
                    .context(|| "relaxing the commit's durability".into())?;
                Ok(tx)
            }
        }
    }

    /// The connection pool, for the other `impl Store` blocks of this crate (one per table).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    pub(crate) fn rollback_guard(&self) -> Option<&RollbackGuard> {
        self.inner.guard.get()
    }

    pub(crate) fn set_rollback_guard(&self, guard: RollbackGuard) -> Result<()> {
        self.inner
            .guard
            .set(guard)
            .map_err(|_| StoreError::Invalid("the store is already guarded".into()))
    }

    /// Waits until the guard file (if the store has one) holds `at`: after a consuming
    /// commit, before the secret goes back to be used.
    pub(crate) async fn witness(&self, at: Position) -> Result<()> {
        match self.rollback_guard() {
            Some(guard) => guard.witness(at).await,
            None => Ok(()),
        }
    }

    fn ad(&self, table: &str, id: &str) -> String {
        sealed_ad(table, id, self.inner.store_id)
    }

    pub(crate) fn seal(&self, table: &str, id: &str, secret: &[u8]) -> Result<Vec<u8>> {
        self.inner.dek.seal(&self.ad(table, id), secret)
    }

    pub(crate) fn unseal(
        &self,
        table: &'static str,
        id: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.inner
            .dek
            .open(&self.ad(table, id), sealed)
            .ok_or_else(|| StoreError::Tampered {
                table,
                id: id.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto;
    use sqlx::AssertSqlSafe;

    /// A pragma's value on the connection of a `durability` transaction.
    async fn pragma(store: &Store, durability: Durability, name: &str) -> i64 {
        let mut tx = store.begin_write_for(durability).await.unwrap();
        let value: i64 = sqlx::query_scalar(AssertSqlSafe(format!("PRAGMA {name}")))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        value
    }

    async fn sqlite_store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("mpc-store-unit-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        crypto::generate_key_file(&dir.join("key")).unwrap();
        let url = format!("sqlite://{}", dir.join("store.db").display());
        let store = Store::open(&url, &KeySource::KeyFile(dir.join("key")), NodeId::must(1))
            .await
            .unwrap();
        (store, dir)
    }

    /// Every file in `migrations/` is embedded, in order, under sqlx's version and description,
    /// and no released migration has changed: a database migrated by an earlier build records
    /// these checksums and refuses to open if one differs.
    #[test]
    fn the_embedded_migrations_are_the_files_and_keep_their_checksums() {
        const RELEASED: [&str; 14] = [
            "482f11594afaee7a04a7392ed707c3a1429207678b2321483b511d1db1555192c2f8af72e218427e6d7417ecbbb21501",
            "f718e3c5a6f188b4ced916ed7407afde2ec192d439c1d38bed76ecad23ef71b74f88d1485c88dfce0199e01de92416f6",
            "b752633d571d70791ed32940ffd763b1697f6aaf5ffb4077c633eb649393149fd2fbfab63034c83948c4f4b882890d69",
            "ab70031af5d60dbd0a989f6e14308f1dd604e7848286eda12202df90ec3ec98e6529a36a6233e5c602a09120719df09c",
            "fd7cfb4ce154103ce8fb665a638034527eab697cb68f157e81ce8838a43d5b794d3cabe64fa0007b38c5dc1fa5b39978",
            "11ee9f00f9f2eb997bcdadbc268b570379be6c763219baf6210a60fe530f707ce887ded510e2efe73b24bc92bd59efcf",
            "edf15804a93cfda3b71d0f5da685e84a5110f21d4fe5461d7e210a69a7b1f45e4c182a5278ffa5b28bd65bd9a9e683f9",
            "bf1262ce2d13b98964d3eda9d1d2c7d5f2387705023c93a281b9f8aa1fbd82b46a1fd74c689ba52994aa8c291baa7f52",
            "777ea35f942a0b7e71898c08ce6d580e9e95bae30193259ce771bc86ca72e97205862bd0f06a85a44f6d5234f08aaeea",
            "91c2833cccedc0c87eff3f297a7e620c2be8f99b3a72d1f082c1ac381691082d4db5402bd4d50a39b792fd924de8c57f",
            "0ec04ecccdda9bfcb17984eb98bd064095c5eb668493d712f6f5b3f488fd059b0f21acffd6c711fbd903966c220fdc87",
            "6b339910f0ea964a74018ce32842a5160850914e521c64047f52e419c00a53f24762772e4ae2c3a9a54a7e2616f582d5",
            "63bd759c1c717250a9c73f5d7a66bff73240ec64c0762b3466122d3e0c581655a011d643222b943f7e689dff6bfc3266",
            "de662826f02508083fbadaef89bebff1cf63a0aba31ba1ecc78bc6a3307714901045696fb66a71bba7abb5d309d87113",
        ];
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let embedded: Vec<&Migration> = MIGRATOR.iter().collect();
        assert_eq!(
            files.len(),
            embedded.len(),
            "{files:?}: embed each in MIGRATIONS"
        );
        for (file, m) in files.iter().zip(&embedded) {
            let (version, rest) = file.split_once('_').unwrap();
            assert_eq!(m.version, version.parse::<i64>().unwrap(), "{file}");
            assert_eq!(
                m.description,
                rest.trim_end_matches(".sql").replace('_', " ")
            );
            assert_eq!(
                m.sql.as_str(),
                std::fs::read_to_string(dir.join(file)).unwrap()
            );
        }
        for (m, released) in embedded.iter().zip(RELEASED) {
            assert_eq!(
                hex::encode(&m.checksum),
                released,
                "migration {} changed",
                m.version
            );
        }
        assert_eq!(
            embedded.len(),
            RELEASED.len(),
            "pin the new migration's checksum here"
        );
    }

    #[tokio::test]
    async fn sqlite_commits_are_fsynced_unless_asked_otherwise() {
        let (store, dir) = sqlite_store().await;
        // SQLite reports `synchronous` as 1 for NORMAL and 2 for FULL.
        assert_eq!(pragma(&store, Durability::PowerCut, "synchronous").await, 2);
        assert_eq!(
            pragma(&store, Durability::ProcessCrash, "synchronous").await,
            1
        );
        // The unsynced connection leaves most checkpoints to the background task.
        assert_eq!(
            pragma(&store, Durability::PowerCut, "wal_autocheckpoint").await,
            1000
        );
        assert_eq!(
            pragma(&store, Durability::ProcessCrash, "wal_autocheckpoint").await,
            4000
        );
        // Everything else goes through the default pool.
        let mut conn = store.pool().acquire().await.unwrap();
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(level, 2);
        drop(conn);
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The checkpointer stays idle after fsync'd commits only (50 of them are far below the
    /// 1000 pages at which those checkpoint themselves); after unsynced ones (400, below
    /// their own 4000) it checkpoints within a few intervals. In WAL mode only a checkpoint
    /// writes the database file, so its modification time tells.
    #[tokio::test]
    async fn the_log_is_checkpointed_in_the_background() {
        let (store, dir) = sqlite_store().await;
        let db_file = dir.join("store.db");
        let written = || std::fs::metadata(&db_file).unwrap().modified().unwrap();
        // Everything so far (the schema) into the file first.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(store.pool())
            .await
            .unwrap();
        let before = written();
        for _ in 0..50 {
            assert!(store
                .mark_session_seen(Uuid::new_v4(), "sign")
                .await
                .unwrap());
        }
        tokio::time::sleep(5 * SQLITE_CHECKPOINT_INTERVAL).await;
        assert_eq!(written(), before, "checkpointed with no unsynced commit");
        for _ in 0..400 {
            unsynced_signing(&store).await;
        }
        wait_for_change(
            written,
            before,
            "no checkpoint moved the signings into the database file",
        )
        .await;
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A signing whose commit is not fsync'd (no presignature, no limit).
    async fn unsynced_signing(store: &Store) {
        store
            .begin_signing(Uuid::new_v4(), &[], &[], None, 0)
            .await
            .unwrap()
            .unwrap();
    }

    /// Polls `read` until it differs from `from` (the background task's work shows in files);
    /// the new value. Generous: one interval is 100 ms, but a loaded machine may delay the task.
    async fn wait_for_change<T: PartialEq>(read: impl Fn() -> T, from: T, failure: &str) -> T {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = read();
            if now != from {
                return now;
            }
            assert!(std::time::Instant::now() < deadline, "{failure}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After a signing, the checkpointer moves the log into the database file and restarts
    /// the log itself, so the next signing's commit appends to the log instead of restarting
    /// it (and paying that restart's fsync). A restart draws new salts into the log header.
    #[tokio::test]
    async fn the_checkpointer_restarts_the_log_before_the_next_signing() {
        let (store, dir) = sqlite_store().await;
        let wal = dir.join("store.db-wal");
        // Bytes 12..24 of the log header: checkpoint sequence number and the two salts.
        let header = || std::fs::read(&wal).unwrap()[12..24].to_vec();
        unsynced_signing(&store).await;
        let restarted =
            wait_for_change(header, header(), "the checkpointer did not restart the log").await;
        // The checkpointer's next look is up to 100 ms away; this commit takes far less.
        unsynced_signing(&store).await;
        assert_eq!(header(), restarted, "the signing restarted the log itself");
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
