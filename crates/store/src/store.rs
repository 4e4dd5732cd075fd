use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Decode, Row, Transaction, Type};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::crypto::{self, Key, KeySource, Sealer};
use crate::error::{Context, Result, StoreError};
use crate::records::{
    id_list, parse_id_list, Backend, CeremonyRecord, PoolLevel, PresignatureRecord,
    PresignatureState, WalletRecord, WalletState,
};
use crate::rollback::{Position, RollbackGuard};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long an SQLite writer waits for the write lock before failing with SQLITE_BUSY.
const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 20000";
/// SQLite takes one writer at a time, so a few connections (for concurrent readers) suffice.
const SQLITE_CONNECTIONS: u32 = 4;
/// The connection for commits that need not be fsync'd: one, so those writers queue in the
/// pool instead of polling for SQLite's write lock.
const SQLITE_UNSYNCED_CONNECTIONS: u32 = 1;
/// How often the write-ahead log is folded into the database file in the background.
const SQLITE_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
const POSTGRES_CONNECTIONS: u32 = 8;

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
    node_id: u16,
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

/// Reads one column, naming the table and column if it does not decode.
pub(crate) fn get<'r, T>(row: &'r AnyRow, column: &str, table: &str) -> Result<T>
where
    T: Decode<'r, Any> + Type<Any>,
{
    row.try_get(column)
        .context(|| format!("reading {table}.{column}"))
}

fn to_u16(value: i64, table: &'static str, id: &str) -> Result<u16> {
    u16::try_from(value).map_err(|_| StoreError::Corrupt {
        table,
        id: id.to_owned(),
        reason: format!("{value} is not a node id"),
    })
}

fn to_u64(value: i64, table: &'static str, id: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        table,
        id: id.to_owned(),
        reason: format!("negative count or epoch {value}"),
    })
}

fn epoch_i64(epoch: u64) -> Result<i64> {
    i64::try_from(epoch).map_err(|_| StoreError::Invalid(format!("epoch {epoch} out of range")))
}

fn parse_uuid(text: &str, table: &'static str, id: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| StoreError::Corrupt {
        table,
        id: id.to_owned(),
        reason: format!("bad session id {text:?}"),
    })
}

fn meta_text(meta: &HashMap<String, Vec<u8>>, key: &str) -> Result<String> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        table: "meta",
        id: key.to_owned(),
        reason: reason.to_owned(),
    };
    let bytes = meta.get(key).ok_or_else(|| corrupt("missing"))?;
    String::from_utf8(bytes.clone()).map_err(|_| corrupt("not UTF-8"))
}

fn meta_parse<T: std::str::FromStr>(meta: &HashMap<String, Vec<u8>>, key: &str) -> Result<T> {
    meta_text(meta, key)?
        .parse()
        .map_err(|_| StoreError::Corrupt {
            table: "meta",
            id: key.to_owned(),
            reason: "does not parse".into(),
        })
}

/// Splits the URL into backend and the URL sqlx should open (SQLite: create the file if absent).
fn connection_url(url: &str) -> Result<(Backend, String)> {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme {
        "sqlite" if url.contains("mode=") => Ok((Backend::Sqlite, url.to_owned())),
        "sqlite" if url.contains('?') => Ok((Backend::Sqlite, format!("{url}&mode=rwc"))),
        "sqlite" => Ok((Backend::Sqlite, format!("{url}?mode=rwc"))),
        "postgres" | "postgresql" => Ok((Backend::Postgres, url.to_owned())),
        other => Err(StoreError::UnsupportedUrl(other.to_owned())),
    }
}

/// What a committed transaction must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// A power cut: the commit returns once the log is on the disk (SQLite `synchronous =
    /// FULL`, PostgreSQL's default). Every write but one kind.
    PowerCut,
    /// A crash of this process: the commit returns once the operating system has the log
    /// (SQLite WAL with `synchronous = NORMAL`, PostgreSQL `synchronous_commit = off`); a
    /// power cut or a crash of the machine or database server just after may undo it. Only
    /// for records whose loss reveals nothing: see [`Store::begin_signing`].
    ProcessCrash,
}

/// Starts a transaction that will write. On SQLite it takes the write lock at once (`BEGIN
/// IMMEDIATE`), so the busy timeout applies; a deferred transaction that read first would
/// fail with SQLITE_BUSY when it later tried to write.
pub(crate) async fn begin_write(
    pool: &AnyPool,
    backend: Backend,
) -> Result<Transaction<'static, Any>> {
    match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => pool.begin().await,
    }
    .context(|| "starting a transaction".into())
}

/// What claiming a presignature inside a transaction found.
enum Claim {
    /// Marked consumed with its secret deleted (commit to make it so); the sealed secret.
    Claimed(Vec<u8>),
    /// Not ready, of another epoch, expired, unknown, or claimed by someone else first.
    Unavailable,
    /// Ready, but bound to another (wallet, path, signers): described.
    BoundElsewhere(String),
}

/// Claims ready presignature `id` of `epoch` inside `tx` if it is bound to `binding` (wallet,
/// path, signers) when one is given. The conditional UPDATE is the claim: on PostgreSQL a
/// concurrent claimer waits on the row lock and then sees state = 'consumed'; on SQLite
/// writers are serialized.
async fn claim_presignature(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    epoch: i64,
    now_ms: i64,
    binding: Option<(&str, &str, &[u16])>,
) -> Result<Claim> {
    let ctx = || format!("consuming presignatures/{id}");
    let row: Option<(String, String, String, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT wallet_id, path, signers, sealed FROM presignatures \
         WHERE id = $1 AND state = 'ready' AND epoch = $2 AND expires_at > $3",
    )
    .bind(id)
    .bind(epoch)
    .bind(now_ms)
    .fetch_optional(&mut **tx)
    .await
    .context(ctx)?;
    let Some((wallet_id, path, signers, sealed)) = row else {
        return Ok(Claim::Unavailable);
    };
    if let Some((want_wallet, want_path, want_signers)) = binding {
        if wallet_id != want_wallet || path != want_path || signers != id_list(want_signers) {
            return Ok(Claim::BoundElsewhere(format!(
                "wallet {wallet_id} path {path} signers [{signers}]"
            )));
        }
    }
    let claimed = sqlx::query(
        "UPDATE presignatures SET state = 'consumed', consumed_at = $2, sealed = NULL \
         WHERE id = $1 AND state = 'ready' AND epoch = $3 AND expires_at > $2",
    )
    .bind(id)
    .bind(now_ms)
    .bind(epoch)
    .execute(&mut **tx)
    .await
    .context(ctx)?
    .rows_affected();
    if claimed != 1 {
        return Ok(Claim::Unavailable);
    }
    sealed
        .map(Claim::Claimed)
        .ok_or_else(|| StoreError::Corrupt {
            table: "presignatures",
            id: id.to_owned(),
            reason: "ready presignature without a secret".into(),
        })
}

/// A presignature a signer means to use, with what it must be bound to.
#[derive(Debug, Clone, Copy)]
pub struct PresignatureUse<'a> {
    pub id: &'a str,
    pub wallet_id: &'a str,
    pub path: &'a str,
    pub signers: &'a [u16],
}

/// Why [`Store::begin_signing`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningRefusal {
    /// The session id was used before (a replayed proposal).
    SessionUsed,
    /// This presignature was already used, has expired, is of an old epoch, or is unknown.
    PresignatureUnavailable(String),
    /// This presignature is bound to another wallet, path or signer set (described).
    PresignatureBoundElsewhere { id: String, bound_to: String },
    /// The wallet already sent `spent_sats` within the limit's window; `amount_sats` more
    /// would exceed `max_sats`.
    SpendLimit {
        wallet_id: String,
        spent_sats: u64,
        amount_sats: u64,
        max_sats: u64,
    },
}

/// A rolling spending limit that [`Store::begin_signing`] enforces in its own transaction, so
/// that concurrent signings cannot each pass it on their own: what a wallet sent since
/// `since_ms` plus this signing must stay within `max_sats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendLimit {
    pub max_sats: u64,
    pub since_ms: i64,
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

/// What a signer's commit must survive (reasons at [`Store::begin_signing`]).
fn signing_durability(consumes_presignatures: bool, limit: Option<SpendLimit>) -> Durability {
    if consumes_presignatures || limit.is_some() {
        Durability::PowerCut
    } else {
        Durability::ProcessCrash
    }
}

/// What `wallet_id` sent since `since_ms`, as recorded here.
async fn sum_spends<'e, E>(executor: E, wallet_id: &str, since_ms: i64) -> Result<u64>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    // Summed by the database, over the (wallet_id, at) index: one row back however many
    // signings the window holds. SUM over BIGINT is NUMERIC on PostgreSQL, which the Any
    // driver cannot read, hence the cast (all bitcoin ever issued is 2.1e15 sats, far inside
    // BIGINT).
    let spent: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount_sats), 0) AS BIGINT) FROM spends \
         WHERE wallet_id = $1 AND at >= $2",
    )
    .bind(wallet_id)
    .bind(since_ms)
    .fetch_one(executor)
    .await
    .context(|| format!("summing spends of {wallet_id}"))?;
    u64::try_from(spent).map_err(|_| StoreError::Corrupt {
        table: "spends",
        id: wallet_id.to_owned(),
        reason: format!("negative total {spent}"),
    })
}

/// The `meta` key counting consumed presignatures (see `rollback.rs`).
const CONSUMED: &str = "presignatures_consumed";
const READ_META: &str = "SELECT value FROM meta WHERE key = $1";

/// A `meta` value that is a decimal number (the epoch, the consumption count), read with
/// `select` (which takes the key as `$1`).
async fn read_meta_number<'e, E>(
    executor: E,
    select: &'static str,
    key: &'static str,
) -> Result<u64>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let value: Vec<u8> = sqlx::query_scalar(select)
        .bind(key)
        .fetch_one(executor)
        .await
        .context(|| format!("reading meta/{key}"))?;
    String::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            table: "meta",
            id: key.into(),
            reason: "not a number".into(),
        })
}

pub(crate) async fn read_epoch<'e, E>(executor: E) -> Result<u64>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    read_meta_number(executor, READ_META, "epoch").await
}

/// Adds `count` consumed presignatures to the store's count inside `tx` and returns the
/// store's position after it. Called last before the commit: on PostgreSQL the row stays
/// locked until then, so concurrent consumers take turns and each commit's count is exact.
async fn count_consumed(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    epoch: u64,
    count: usize,
) -> Result<Position> {
    let select = match backend {
        Backend::Sqlite => READ_META, // writers are serialized already
        Backend::Postgres => "SELECT value FROM meta WHERE key = $1 FOR UPDATE",
    };
    let consumed = read_meta_number(&mut **tx, select, CONSUMED).await? + count as u64;
    sqlx::query("UPDATE meta SET value = $1 WHERE key = $2")
        .bind(consumed.to_string().into_bytes())
        .bind(CONSUMED)
        .execute(&mut **tx)
        .await
        .context(|| format!("counting meta/{CONSUMED}"))?;
    Ok(Position { epoch, consumed })
}

pub(crate) async fn load_meta(pool: &AnyPool) -> Result<HashMap<String, Vec<u8>>> {
    let rows = sqlx::query("SELECT key, value FROM meta")
        .fetch_all(pool)
        .await
        .context(|| "reading meta".into())?;
    rows.iter()
        .map(|row| Ok((get(row, "key", "meta")?, get(row, "value", "meta")?)))
        .collect()
}

pub(crate) async fn kek_from(key: &KeySource, salt: &[u8], params: &str) -> Result<Key> {
    match key {
        KeySource::KeyFile(path) => crypto::read_key_file(path),
        KeySource::Passphrase(passphrase) => {
            let passphrase = passphrase.clone();
            let salt = salt.to_vec();
            let params = params.to_owned();
            tokio::task::spawn_blocking(move || crypto::passphrase_kek(&passphrase, &salt, &params))
                .await
                .map_err(|e| StoreError::Crypto(format!("key derivation task failed: {e}")))?
        }
    }
}

pub(crate) fn dek_ad(store_id: Uuid) -> String {
    format!("meta/dek/{store_id}")
}

/// Writes `meta` for a new store. Returns `None` if another process initialized it first.
async fn create_meta(
    pool: &AnyPool,
    backend: Backend,
    key: &KeySource,
    node_id: u16,
) -> Result<Option<(Uuid, Key)>> {
    let store_id = crypto::random_uuid()?;
    let dek: Key = Zeroizing::new(crypto::random_bytes()?);
    let salt: [u8; 16] = crypto::random_bytes()?;
    let params = crypto::argon2_params_text();
    let kek = kek_from(key, &salt, &params).await?;
    let sealed_dek = Sealer::new(&kek)?.seal(&dek_ad(store_id), &dek[..])?;

    let ctx = || "initializing meta".to_owned();
    let mut tx = begin_write(pool, backend).await?;
    let claimed = sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('store_id', $1) ON CONFLICT (key) DO NOTHING",
    )
    .bind(store_id.to_string().into_bytes())
    .execute(&mut *tx)
    .await
    .context(ctx)?
    .rows_affected();
    if claimed == 0 {
        return Ok(None);
    }
    let mut rows: Vec<(&str, Vec<u8>)> = vec![
        ("node_id", node_id.to_string().into_bytes()),
        ("epoch", b"1".to_vec()),
        ("kek", key.kind().as_bytes().to_vec()),
        ("dek", sealed_dek),
    ];
    if let KeySource::Passphrase(_) = key {
        rows.push(("argon2_salt", salt.to_vec()));
        rows.push(("argon2_params", params.into_bytes()));
    }
    for (name, value) in rows {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await
            .context(ctx)?;
    }
    tx.commit().await.context(ctx)?;
    tracing::info!(%store_id, node_id, kek = key.kind(), "initialized a new store");
    Ok(Some((store_id, dek)))
}

/// Checks the node id and opens the DEK of an existing store.
async fn open_meta(
    meta: &HashMap<String, Vec<u8>>,
    key: &KeySource,
    node_id: u16,
) -> Result<(Uuid, Key)> {
    let store_id: Uuid = meta_parse(meta, "store_id")?;
    let found: u16 = meta_parse(meta, "node_id")?;
    if found != node_id {
        return Err(StoreError::WrongNode {
            expected: node_id,
            found,
        });
    }
    if meta_text(meta, "kek")? != key.kind() {
        return Err(StoreError::WrongKey);
    }
    let kek = match key {
        KeySource::KeyFile(_) => kek_from(key, &[], "").await?,
        KeySource::Passphrase(_) => {
            let salt = meta.get("argon2_salt").map(Vec::as_slice).unwrap_or(&[]);
            kek_from(key, salt, &meta_text(meta, "argon2_params")?).await?
        }
    };
    let sealed = meta.get("dek").ok_or_else(|| StoreError::Corrupt {
        table: "meta",
        id: "dek".into(),
        reason: "missing".into(),
    })?;
    let dek = Sealer::new(&kek)?
        .open(&dek_ad(store_id), sealed)
        .ok_or(StoreError::WrongKey)?;
    let dek: [u8; 32] = dek[..].try_into().map_err(|_| StoreError::WrongKey)?;
    Ok((store_id, Zeroizing::new(dek)))
}

/// Connects to the database at `url` and brings its schema up to date (no `meta` yet).
pub(crate) async fn connect(url: &str) -> Result<(AnyPool, Backend)> {
    sqlx::any::install_default_drivers();
    let (backend, url) = connection_url(url)?;
    let options = match backend {
        // FULL makes every commit durable, which at-most-once presignatures rely on.
        Backend::Sqlite => sqlite_pool_options(SQLITE_CONNECTIONS, &["PRAGMA synchronous = FULL"]),
        Backend::Postgres => AnyPoolOptions::new().max_connections(POSTGRES_CONNECTIONS),
    };
    let pool = open_pool(options, &url, backend).await?;
    MIGRATOR.run(&pool).await?;
    Ok((pool, backend))
}

/// SQLite: a second pool on the (already migrated) file at `url`, whose commits are not
/// fsync'd. `None` for PostgreSQL.
async fn connect_unsynced(url: &str) -> Result<Option<AnyPool>> {
    let (backend, url) = connection_url(url)?;
    if backend != Backend::Sqlite {
        return Ok(None);
    }
    // In WAL mode NORMAL syncs only at checkpoints: a commit survives this process
    // crashing, not a power cut. A checkpoint first fsyncs all the log written since the
    // last one (for the 1000 pages of SQLite's automatic one, milliseconds inside one signing:
    // BENCHMARKS.md), so `spawn_checkpointer` does that every 100 ms beside the writers. Its
    // passive checkpoints cannot restart the log while writes keep arriving, so this
    // connection still checkpoints itself, with the writers of its pool waiting, once the
    // log reaches 4000 pages: by then all but the last 100 ms of it is already done.
    let options = sqlite_pool_options(
        SQLITE_UNSYNCED_CONNECTIONS,
        &[
            "PRAGMA synchronous = NORMAL",
            "PRAGMA wal_autocheckpoint = 4000",
        ],
    );
    Ok(Some(open_pool(options, &url, backend).await?))
}

fn sqlite_pool_options(connections: u32, pragmas: &'static [&'static str]) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(connections)
        // A connection to a local file does not go stale; the default ping before every
        // checkout is one more round trip to the connection's worker thread on every
        // signing's commit.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // WAL lets readers run beside the writer.
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&mut *conn)
                    .await?;
                for pragma in pragmas {
                    sqlx::query(*pragma).execute(&mut *conn).await?;
                }
                sqlx::query(SQLITE_BUSY_TIMEOUT).execute(&mut *conn).await?;
                sqlx::query("PRAGMA foreign_keys = ON")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
}

async fn open_pool(options: AnyPoolOptions, url: &str, backend: Backend) -> Result<AnyPool> {
    options
        .acquire_timeout(Duration::from_secs(60))
        .connect(url)
        .await
        .context(|| format!("connecting to the {backend:?} database"))
}

/// Column lists, so every reader decodes the same columns.
macro_rules! select_wallet {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, scheme, threshold, participants, network, public_key, chain_code, ",
            "state, session, created_at, activated_at FROM wallets ",
            $rest
        )
    };
}
macro_rules! select_ceremony {
    ($rest:literal) => {
        concat!(
            "SELECT id, kind, state, coordinator, request, result, error, started_at, ",
            "finished_at FROM ceremonies ",
            $rest
        )
    };
}
macro_rules! select_presignature {
    ($rest:literal) => {
        concat!(
            "SELECT id, wallet_id, path, signers, epoch, state, public, created_at, expires_at, ",
            "consumed_at FROM presignatures ",
            $rest
        )
    };
}

fn wallet_from_row(row: &AnyRow) -> Result<WalletRecord> {
    const T: &str = "wallets";
    let id: String = get(row, "id", T)?;
    Ok(WalletRecord {
        name: get(row, "name", T)?,
        scheme: get(row, "scheme", T)?,
        threshold: to_u16(get(row, "threshold", T)?, T, &id)?,
        participants: parse_id_list(&get::<String>(row, "participants", T)?, T, &id)?,
        network: get(row, "network", T)?,
        public_key: get(row, "public_key", T)?,
        chain_code: get(row, "chain_code", T)?,
        state: WalletState::parse(&get::<String>(row, "state", T)?, T, &id)?,
        session: parse_uuid(&get::<String>(row, "session", T)?, T, &id)?,
        created_at: get(row, "created_at", T)?,
        activated_at: get(row, "activated_at", T)?,
        id,
    })
}

fn ceremony_from_row(row: &AnyRow) -> Result<CeremonyRecord> {
    const T: &str = "ceremonies";
    let id: String = get(row, "id", T)?;
    let json = |text: String| {
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            table: T,
            id: id.clone(),
            reason: format!("bad JSON: {e}"),
        })
    };
    Ok(CeremonyRecord {
        kind: get(row, "kind", T)?,
        state: get(row, "state", T)?,
        coordinator: to_u16(get(row, "coordinator", T)?, T, &id)?,
        request: json(get(row, "request", T)?)?,
        result: get::<Option<String>>(row, "result", T)?
            .map(json)
            .transpose()?,
        error: get(row, "error", T)?,
        started_at: get(row, "started_at", T)?,
        finished_at: get(row, "finished_at", T)?,
        id,
    })
}

fn presignature_from_row(row: &AnyRow) -> Result<PresignatureRecord> {
    const T: &str = "presignatures";
    let id: String = get(row, "id", T)?;
    Ok(PresignatureRecord {
        wallet_id: get(row, "wallet_id", T)?,
        path: get(row, "path", T)?,
        signers: parse_id_list(&get::<String>(row, "signers", T)?, T, &id)?,
        epoch: to_u64(get(row, "epoch", T)?, T, &id)?,
        state: PresignatureState::parse(&get::<String>(row, "state", T)?, T, &id)?,
        public: get(row, "public", T)?,
        created_at: get(row, "created_at", T)?,
        expires_at: get(row, "expires_at", T)?,
        consumed_at: get(row, "consumed_at", T)?,
        id,
    })
}

impl Store {
    /// Opens (creating if needed) the store at `url` ("sqlite://path" or "postgres://...") for
    /// node `node_id`, runs the migrations, and unlocks it with `key`.
    pub async fn open(url: &str, key: &KeySource, node_id: u16) -> Result<Store> {
        let (pool, backend) = connect(url).await?;

        let meta = load_meta(&pool).await?;
        let created = if meta.contains_key("store_id") {
            None
        } else {
            create_meta(&pool, backend, key, node_id).await?
        };
        let (store_id, dek) = match created {
            Some(created) => created,
            None => open_meta(&load_meta(&pool).await?, key, node_id).await?,
        };
        // Stores made before the count existed start it at zero.
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(CONSUMED)
            .bind(b"0".to_vec())
            .execute(&pool)
            .await
            .context(|| format!("initializing meta/{CONSUMED}"))?;
        let unsynced = connect_unsynced(url).await?;
        tracing::debug!(%store_id, node_id, ?backend, "store opened");
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

    pub fn node_id(&self) -> u16 {
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

    /// The connection pool, for the other `impl Store` blocks of this crate (`utxos.rs`).
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
    async fn witness(&self, at: Position) -> Result<()> {
        match self.rollback_guard() {
            Some(guard) => guard.witness(at).await,
            None => Ok(()),
        }
    }

    /// The store's epoch and count of consumed presignatures.
    pub async fn position(&self) -> Result<Position> {
        Ok(Position {
            epoch: read_epoch(&self.inner.pool).await?,
            consumed: read_meta_number(&self.inner.pool, READ_META, CONSUMED).await?,
        })
    }

    fn ad(&self, table: &str, id: &str) -> String {
        format!("{table}/{id}/{}", self.inner.store_id)
    }

    fn seal(&self, table: &str, id: &str, secret: &[u8]) -> Result<Vec<u8>> {
        self.inner.dek.seal(&self.ad(table, id), secret)
    }

    fn unseal(&self, table: &'static str, id: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.inner
            .dek
            .open(&self.ad(table, id), sealed)
            .ok_or_else(|| StoreError::Tampered {
                table,
                id: id.to_owned(),
            })
    }

    // ---- safe primes pool ----

    /// Adds one set of pregenerated primes (serialized) to the pool.
    pub async fn add_primes(&self, primes: &[u8]) -> Result<Uuid> {
        let id = crypto::random_uuid()?;
        let sealed = self.seal("primes", &id.to_string(), primes)?;
        sqlx::query("INSERT INTO primes (id, sealed, created_at) VALUES ($1, $2, $3)")
            .bind(id.to_string())
            .bind(sealed)
            .bind(now_ms())
            .execute(&self.inner.pool)
            .await
            .context(|| format!("inserting primes/{id}"))?;
        Ok(id)
    }

    pub async fn primes_count(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM primes")
            .fetch_one(&self.inner.pool)
            .await
            .context(|| "counting primes".into())?;
        to_u64(count, "primes", "*")
    }

    /// Removes and returns the oldest set. A set is deleted before it is returned, so no two
    /// callers (or processes) ever get the same one.
    pub async fn take_primes(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        loop {
            let oldest: Option<String> =
                sqlx::query_scalar("SELECT id FROM primes ORDER BY created_at, id LIMIT 1")
                    .fetch_optional(&self.inner.pool)
                    .await
                    .context(|| "choosing primes".into())?;
            let Some(id) = oldest else {
                return Ok(None);
            };
            // Whoever deletes the row owns it; a caller that lost the race tries the next one.
            let sealed: Option<Vec<u8>> =
                sqlx::query_scalar("DELETE FROM primes WHERE id = $1 RETURNING sealed")
                    .bind(&id)
                    .fetch_optional(&self.inner.pool)
                    .await
                    .context(|| format!("taking primes/{id}"))?;
            if let Some(sealed) = sealed {
                return self.unseal("primes", &id, &sealed).map(Some);
            }
        }
    }

    // ---- aux info ----

    /// Stores (or replaces) this node's aux info for a node set.
    pub async fn put_aux_info(
        &self,
        node_set: &[u16],
        aux: &[u8],
        public_digest: &str,
        session: Uuid,
    ) -> Result<()> {
        let set = id_list(node_set);
        let sealed = self.seal("aux_info", &set, aux)?;
        sqlx::query(
            "INSERT INTO aux_info (node_set, sealed, public_digest, session, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_set) DO UPDATE SET sealed = excluded.sealed, \
             public_digest = excluded.public_digest, session = excluded.session, \
             created_at = excluded.created_at",
        )
        .bind(&set)
        .bind(sealed)
        .bind(public_digest)
        .bind(session.to_string())
        .bind(now_ms())
        .execute(&self.inner.pool)
        .await
        .context(|| format!("storing aux_info/{set}"))?;
        Ok(())
    }

    /// The aux info and its public digest for a node set (in any order).
    pub async fn aux_info(&self, node_set: &[u16]) -> Result<Option<(Zeroizing<Vec<u8>>, String)>> {
        let set = id_list(node_set);
        let row = sqlx::query("SELECT sealed, public_digest FROM aux_info WHERE node_set = $1")
            .bind(&set)
            .fetch_optional(&self.inner.pool)
            .await
            .context(|| format!("reading aux_info/{set}"))?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = get(&row, "sealed", "aux_info")?;
        let digest: String = get(&row, "public_digest", "aux_info")?;
        Ok(Some((self.unseal("aux_info", &set, &sealed)?, digest)))
    }

    // ---- wallets ----

    /// Inserts a wallet and this node's key share in one transaction.
    pub async fn insert_wallet(&self, wallet: &WalletRecord, share: &[u8]) -> Result<()> {
        let id = &wallet.id;
        let ctx = || format!("inserting wallets/{id}");
        let sealed = self.seal("key_shares", id, share)?;
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO wallets (id, name, scheme, threshold, participants, network, public_key, \
             chain_code, state, session, created_at, activated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(&wallet.name)
        .bind(&wallet.scheme)
        .bind(i64::from(wallet.threshold))
        .bind(id_list(&wallet.participants))
        .bind(&wallet.network)
        .bind(&wallet.public_key)
        .bind(&wallet.chain_code)
        .bind(wallet.state.as_str())
        .bind(wallet.session.to_string())
        .bind(wallet.created_at)
        .bind(wallet.activated_at)
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                table: "wallets",
                id: id.clone(),
            });
        }
        sqlx::query("INSERT INTO key_shares (wallet_id, sealed) VALUES ($1, $2)")
            .bind(id)
            .bind(sealed)
            .execute(&mut *tx)
            .await
            .context(ctx)?;
        tx.commit().await.context(ctx)
    }

    /// Moves a pending wallet to active (stamping `activated_at`) or aborted (deleting its key
    /// share in the same transaction). Setting the state it already has is a no-op; anything
    /// else is refused, so an active wallet's share can never be deleted here.
    pub async fn set_wallet_state(&self, id: &str, state: WalletState) -> Result<()> {
        let ctx = || format!("setting wallets/{id} to {state}");
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE wallets SET state = $2, \
             activated_at = CASE WHEN $2 = 'active' THEN $3 ELSE activated_at END \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id)
        .bind(state.as_str())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        if changed == 1 && state == WalletState::Aborted {
            sqlx::query("DELETE FROM key_shares WHERE wallet_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .context(ctx)?;
        }
        if changed == 1 && state != WalletState::Pending {
            return tx.commit().await.context(ctx);
        }
        let current: Option<String> = sqlx::query_scalar("SELECT state FROM wallets WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .context(ctx)?;
        tx.rollback().await.context(ctx)?;
        match current {
            None => Err(StoreError::NotFound {
                table: "wallets",
                id: id.to_owned(),
            }),
            Some(current) if current == state.as_str() => Ok(()),
            Some(current) => Err(StoreError::InvalidTransition {
                id: id.to_owned(),
                from: current,
                to: state.to_string(),
            }),
        }
    }

    pub async fn wallet(&self, id: &str) -> Result<Option<WalletRecord>> {
        sqlx::query(select_wallet!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await
            .context(|| format!("reading wallets/{id}"))?
            .as_ref()
            .map(wallet_from_row)
            .transpose()
    }

    /// Every wallet, oldest first.
    pub async fn wallets(&self) -> Result<Vec<WalletRecord>> {
        sqlx::query(select_wallet!("ORDER BY created_at, id"))
            .fetch_all(&self.inner.pool)
            .await
            .context(|| "listing wallets".into())?
            .iter()
            .map(wallet_from_row)
            .collect()
    }

    pub async fn key_share(&self, wallet_id: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT sealed FROM key_shares WHERE wallet_id = $1")
                .bind(wallet_id)
                .fetch_optional(&self.inner.pool)
                .await
                .context(|| format!("reading key_shares/{wallet_id}"))?;
        sealed
            .map(|sealed| self.unseal("key_shares", wallet_id, &sealed))
            .transpose()
    }

    // ---- replay protection ----

    /// Records a session id; `false` if it was seen before (the caller must refuse the run).
    pub async fn mark_session_seen(&self, session: Uuid, protocol: &str) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO sessions_seen (session, protocol, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (session) DO NOTHING",
        )
        .bind(session.to_string())
        .bind(protocol)
        .bind(now_ms())
        .execute(&self.inner.pool)
        .await
        .context(|| format!("marking sessions_seen/{session}"))?
        .rows_affected();
        Ok(inserted == 1)
    }

    // ---- spending (policy) ----

    /// Records that `wallet_id` sent `amount_sats` in signing session `session` (idempotent).
    pub async fn record_spend(
        &self,
        session: Uuid,
        wallet_id: &str,
        amount_sats: u64,
        at_ms: i64,
    ) -> Result<()> {
        let amount = i64::try_from(amount_sats)
            .map_err(|_| StoreError::Invalid(format!("amount {amount_sats} out of range")))?;
        sqlx::query(
            "INSERT INTO spends (session, wallet_id, amount_sats, at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (session, wallet_id) DO NOTHING",
        )
        .bind(session.to_string())
        .bind(wallet_id)
        .bind(amount)
        .bind(at_ms)
        .execute(&self.inner.pool)
        .await
        .context(|| format!("recording spends/{session}/{wallet_id}"))?;
        Ok(())
    }

    /// Total `wallet_id` sent since `since_ms`.
    pub async fn spent_since(&self, wallet_id: &str, since_ms: i64) -> Result<u64> {
        sum_spends(&self.inner.pool, wallet_id, since_ms).await
    }

    // ---- ceremonies ----

    /// Inserts or replaces a ceremony record.
    pub async fn put_ceremony(&self, c: &CeremonyRecord) -> Result<()> {
        let result = c.result.as_ref().map(|r| r.to_string());
        sqlx::query(
            "INSERT INTO ceremonies (id, kind, state, coordinator, request, result, error, \
             started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, state = excluded.state, \
             coordinator = excluded.coordinator, request = excluded.request, \
             result = excluded.result, error = excluded.error, \
             started_at = excluded.started_at, finished_at = excluded.finished_at",
        )
        .bind(&c.id)
        .bind(&c.kind)
        .bind(&c.state)
        .bind(i64::from(c.coordinator))
        .bind(c.request.to_string())
        .bind(result)
        .bind(&c.error)
        .bind(c.started_at)
        .bind(c.finished_at)
        .execute(&self.inner.pool)
        .await
        .context(|| format!("storing ceremonies/{}", c.id))?;
        Ok(())
    }

    pub async fn ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>> {
        sqlx::query(select_ceremony!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await
            .context(|| format!("reading ceremonies/{id}"))?
            .as_ref()
            .map(ceremony_from_row)
            .transpose()
    }

    /// The `limit` most recently started ceremonies, newest first.
    pub async fn ceremonies(&self, limit: u32) -> Result<Vec<CeremonyRecord>> {
        sqlx::query(select_ceremony!(
            "ORDER BY started_at DESC, id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.inner.pool)
        .await
        .context(|| "listing ceremonies".into())?
        .iter()
        .map(ceremony_from_row)
        .collect()
    }

    // ---- presignatures ----

    /// Stores a new, ready presignature with its sealed secret. `p.epoch` must be the current
    /// epoch: a presignature made before an epoch bump is never stored.
    pub async fn insert_presignature(&self, p: &PresignatureRecord, secret: &[u8]) -> Result<()> {
        let id = &p.id;
        let ctx = || format!("inserting presignatures/{id}");
        if p.state != PresignatureState::Ready || p.consumed_at.is_some() {
            return Err(StoreError::Invalid(format!(
                "new presignature {id} must be ready and unconsumed"
            )));
        }
        let sealed = self.seal("presignatures", id, secret)?;
        let mut tx = self.begin_write().await?;
        let current = read_epoch(&mut *tx).await?;
        if p.epoch != current {
            return Err(StoreError::WrongEpoch {
                id: id.clone(),
                record: p.epoch,
                current,
            });
        }
        let inserted = sqlx::query(
            "INSERT INTO presignatures (id, wallet_id, path, signers, epoch, state, sealed, \
             public, created_at, expires_at, consumed_at) \
             VALUES ($1, $2, $3, $4, $5, 'ready', $6, $7, $8, $9, NULL) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(&p.wallet_id)
        .bind(&p.path)
        .bind(id_list(&p.signers))
        .bind(epoch_i64(p.epoch)?)
        .bind(sealed)
        .bind(&p.public)
        .bind(p.created_at)
        .bind(p.expires_at)
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                table: "presignatures",
                id: id.clone(),
            });
        }
        tx.commit().await.context(ctx)
    }

    /// Usable presignatures for (wallet, path, signer set): ready, current epoch, unexpired at
    /// `now_ms`; oldest first.
    pub async fn ready_presignatures(
        &self,
        wallet_id: &str,
        path: &str,
        signers: &[u16],
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<PresignatureRecord>> {
        let epoch = epoch_i64(self.epoch().await?)?;
        sqlx::query(select_presignature!(
            "WHERE wallet_id = $1 AND path = $2 AND signers = $3 AND state = 'ready' \
             AND epoch = $4 AND expires_at > $5 ORDER BY created_at, id LIMIT $6"
        ))
        .bind(wallet_id)
        .bind(path)
        .bind(id_list(signers))
        .bind(epoch)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.inner.pool)
        .await
        .context(|| format!("listing presignatures of wallet {wallet_id}"))?
        .iter()
        .map(presignature_from_row)
        .collect()
    }

    /// Consumes a presignature at most once: marks it consumed and deletes its secret in one
    /// committed transaction (counted, and witnessed in the rollback guard file if the store
    /// has one), and only then returns the secret. `None` if it is not ready, not of the
    /// current epoch, expired, unknown, or someone else consumed it first.
    pub async fn consume_presignature(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let ctx = || format!("consuming presignatures/{id}");
        let mut tx = self.begin_write().await?;
        let epoch = read_epoch(&mut *tx).await?;
        let Claim::Claimed(sealed) =
            claim_presignature(&mut tx, id, epoch_i64(epoch)?, now_ms, None).await?
        else {
            tx.rollback().await.context(ctx)?;
            return Ok(None);
        };
        let position = count_consumed(&mut tx, self.inner.backend, epoch, 1).await?;
        tx.commit().await.context(ctx)?;
        self.witness(position).await?;
        self.unseal("presignatures", id, &sealed).map(Some)
    }

    /// A signer's one durable step before anything it signs leaves the node, in one committed
    /// transaction (one commit, not three, on the signing path): the session is marked seen
    /// (a replay is refused), the amounts the transaction sends are checked against `limit`
    /// (when given) and recorded, and every presignature named is consumed (all or none). On
    /// success it returns the presignature secrets, in order.
    ///
    /// Consumed presignatures are counted in the same transaction, and when the store has a
    /// rollback guard file, the secrets are returned only once that file holds the count
    /// (see `rollback.rs`): a store copied back to before this commit is then recognized.
    ///
    /// The commit is fsync'd ([`Durability::PowerCut`]) when it consumes a presignature
    /// (invariant 1: reused, it would reveal the key) or counts a spend against a limit.
    /// Otherwise (FROST, or ECDSA signing without a presignature, and no limit) it need only
    /// survive a crash of this process: both protocols draw fresh nonces on every run, so a
    /// session forgotten in a power cut and replayed afterwards would sign the same sighashes
    /// again and reveal nothing; it saves an fsync on every such signing.
    pub async fn begin_signing(
        &self,
        session: Uuid,
        presignatures: &[PresignatureUse<'_>],
        spends: &[(&str, u64)],
        limit: Option<SpendLimit>,
        now_ms: i64,
    ) -> Result<std::result::Result<Vec<Zeroizing<Vec<u8>>>, SigningRefusal>> {
        let ctx = || format!("starting signing session {session}");
        let durability = signing_durability(!presignatures.is_empty(), limit);
        let mut tx = self.begin_write_for(durability).await?;
        let seen = sqlx::query(
            "INSERT INTO sessions_seen (session, protocol, seen_at) VALUES ($1, 'sign', $2) \
             ON CONFLICT (session) DO NOTHING",
        )
        .bind(session.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        if seen != 1 {
            tx.rollback().await.context(ctx)?;
            return Ok(Err(SigningRefusal::SessionUsed));
        }
        if let Some(limit) = limit {
            let mut by_wallet: Vec<&(&str, u64)> = spends.iter().collect();
            by_wallet.sort(); // one lock order for every signing
            for &&(wallet_id, amount_sats) in &by_wallet {
                if self.inner.backend == Backend::Postgres {
                    // Signings of one wallet take turns here, so the sum below sees every
                    // spend committed before; SQLite's BEGIN IMMEDIATE already serializes.
                    sqlx::query("SELECT id FROM wallets WHERE id = $1 FOR UPDATE")
                        .bind(wallet_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .context(ctx)?;
                }
                let spent_sats = sum_spends(&mut *tx, wallet_id, limit.since_ms).await?;
                if spent_sats.saturating_add(amount_sats) > limit.max_sats {
                    tx.rollback().await.context(ctx)?;
                    return Ok(Err(SigningRefusal::SpendLimit {
                        wallet_id: wallet_id.to_owned(),
                        spent_sats,
                        amount_sats,
                        max_sats: limit.max_sats,
                    }));
                }
            }
        }
        let mut sealed = Vec::with_capacity(presignatures.len());
        let mut epoch = 0;
        if !presignatures.is_empty() {
            epoch = read_epoch(&mut *tx).await?;
            for p in presignatures {
                let binding = Some((p.wallet_id, p.path, p.signers));
                let claim = claim_presignature(&mut tx, p.id, epoch_i64(epoch)?, now_ms, binding);
                let refusal = match claim.await? {
                    Claim::Claimed(secret) => {
                        sealed.push(secret);
                        continue;
                    }
                    Claim::Unavailable => SigningRefusal::PresignatureUnavailable(p.id.to_owned()),
                    Claim::BoundElsewhere(bound_to) => SigningRefusal::PresignatureBoundElsewhere {
                        id: p.id.to_owned(),
                        bound_to,
                    },
                };
                tx.rollback().await.context(ctx)?;
                return Ok(Err(refusal));
            }
        }
        for (wallet_id, amount_sats) in spends {
            let amount = i64::try_from(*amount_sats)
                .map_err(|_| StoreError::Invalid(format!("amount {amount_sats} out of range")))?;
            sqlx::query(
                "INSERT INTO spends (session, wallet_id, amount_sats, at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (session, wallet_id) DO NOTHING",
            )
            .bind(session.to_string())
            .bind(*wallet_id)
            .bind(amount)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .context(ctx)?;
        }
        let position = match presignatures.len() {
            0 => None,
            n => Some(count_consumed(&mut tx, self.inner.backend, epoch, n).await?),
        };
        self.commit_for(tx, durability).await.context(ctx)?;
        if let Some(position) = position {
            self.witness(position).await?;
        }
        presignatures
            .iter()
            .zip(&sealed)
            .map(|(p, sealed)| self.unseal("presignatures", p.id, sealed))
            .collect::<Result<Vec<_>>>()
            .map(Ok)
    }

    /// Retires a ready presignature without using it (its secret is deleted). `false` if it
    /// was not ready.
    pub async fn discard_presignature(&self, id: &str, now_ms: i64) -> Result<bool> {
        let changed = sqlx::query(
            "UPDATE presignatures SET state = 'consumed', consumed_at = $2, sealed = NULL \
             WHERE id = $1 AND state = 'ready'",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&self.inner.pool)
        .await
        .context(|| format!("discarding presignatures/{id}"))?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Marks ready presignatures that expired by `now_ms`, or belong to another epoch, as
    /// expired and deletes their secrets. Returns how many.
    pub async fn expire_presignatures(&self, now_ms: i64) -> Result<u64> {
        let ctx = || "expiring presignatures".to_owned();
        let mut tx = self.begin_write().await?;
        let epoch = epoch_i64(read_epoch(&mut *tx).await?)?;
        let changed = sqlx::query(
            "UPDATE presignatures SET state = 'expired', sealed = NULL \
             WHERE state = 'ready' AND (expires_at <= $1 OR epoch <> $2)",
        )
        .bind(now_ms)
        .bind(epoch)
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        tx.commit().await.context(ctx)?;
        Ok(changed)
    }

    pub async fn presignature(&self, id: &str) -> Result<Option<PresignatureRecord>> {
        sqlx::query(select_presignature!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.inner.pool)
            .await
            .context(|| format!("reading presignatures/{id}"))?
            .as_ref()
            .map(presignature_from_row)
            .transpose()
    }

    /// Pool levels of a wallet per (path, signer set): usable now, and consumed so far.
    pub async fn presignature_counts(
        &self,
        wallet_id: &str,
        now_ms: i64,
    ) -> Result<Vec<PoolLevel>> {
        const T: &str = "presignatures";
        let epoch = epoch_i64(self.epoch().await?)?;
        let rows = sqlx::query(
            "SELECT path, signers, \
             COUNT(CASE WHEN state = 'ready' AND epoch = $2 AND expires_at > $3 THEN 1 END) \
             AS ready, \
             COUNT(CASE WHEN state = 'consumed' THEN 1 END) AS consumed \
             FROM presignatures WHERE wallet_id = $1 GROUP BY path, signers \
             ORDER BY path, signers",
        )
        .bind(wallet_id)
        .bind(epoch)
        .bind(now_ms)
        .fetch_all(&self.inner.pool)
        .await
        .context(|| format!("counting presignatures of wallet {wallet_id}"))?;
        rows.iter()
            .map(|row| {
                let path: String = get(row, "path", T)?;
                Ok(PoolLevel {
                    signers: parse_id_list(&get::<String>(row, "signers", T)?, T, &path)?,
                    ready: to_u64(get(row, "ready", T)?, T, &path)?,
                    consumed: to_u64(get(row, "consumed", T)?, T, &path)?,
                    path,
                })
            })
            .collect()
    }

    /// Presignatures of `wallet_id` consumed at or after `since_ms` (pool usage statistics).
    pub async fn presignatures_consumed_since(
        &self,
        wallet_id: &str,
        since_ms: i64,
    ) -> Result<u64> {
        const T: &str = "presignatures";
        let row = sqlx::query(
            "SELECT COUNT(*) AS used FROM presignatures \
             WHERE wallet_id = $1 AND state = 'consumed' AND consumed_at >= $2",
        )
        .bind(wallet_id)
        .bind(since_ms)
        .fetch_one(&self.inner.pool)
        .await
        .context(|| format!("counting used presignatures of wallet {wallet_id}"))?;
        to_u64(get(&row, "used", T)?, T, wallet_id)
    }

    // ---- epoch ----

    /// The current presignature epoch (starts at 1).
    pub async fn epoch(&self) -> Result<u64> {
        read_epoch(&self.inner.pool).await
    }

    /// Starts a new epoch: every existing presignature becomes unusable and its secret is
    /// deleted. Run after restoring a backup, whose presignatures may have been used since.
    pub async fn bump_epoch(&self) -> Result<u64> {
        Ok(self.start_epoch_after(0).await?.0)
    }

    /// Ready presignatures, of any epoch or age.
    pub(crate) async fn ready_presignature_count(&self) -> Result<u64> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM presignatures WHERE state = 'ready'")
                .fetch_one(&self.inner.pool)
                .await
                .context(|| "counting ready presignatures".into())?;
        to_u64(count, "presignatures", "*")
    }

    /// [`Store::bump_epoch`] to an epoch above both the current one and `floor`; the new
    /// epoch and how many ready presignatures it retired.
    pub(crate) async fn start_epoch_after(&self, floor: u64) -> Result<(u64, u64)> {
        let ctx = || "bumping the epoch".to_owned();
        loop {
            let mut tx = self.begin_write().await?;
            let current = read_epoch(&mut *tx).await?;
            let next = current.max(floor) + 1;
            // Compare-and-set, so two concurrent bumps on PostgreSQL cannot both write the
            // same value; the loser retries.
            let swapped =
                sqlx::query("UPDATE meta SET value = $1 WHERE key = 'epoch' AND value = $2")
                    .bind(next.to_string().into_bytes())
                    .bind(current.to_string().into_bytes())
                    .execute(&mut *tx)
                    .await
                    .context(ctx)?
                    .rows_affected();
            if swapped != 1 {
                tx.rollback().await.context(ctx)?;
                continue;
            }
            let retired =
                sqlx::query("UPDATE presignatures SET state = 'expired' WHERE state = 'ready'")
                    .execute(&mut *tx)
                    .await
                    .context(ctx)?
                    .rows_affected();
            sqlx::query("UPDATE presignatures SET sealed = NULL WHERE sealed IS NOT NULL")
                .execute(&mut *tx)
                .await
                .context(ctx)?;
            tx.commit().await.context(ctx)?;
            tracing::info!(epoch = next, retired, "presignature epoch bumped");
            return Ok((next, retired));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::AssertSqlSafe;

    #[test]
    fn only_signings_that_consume_or_count_against_a_limit_are_fsynced() {
        let limit = Some(SpendLimit {
            max_sats: 1,
            since_ms: 0,
        });
        assert_eq!(signing_durability(false, None), Durability::ProcessCrash);
        assert_eq!(signing_durability(true, None), Durability::PowerCut);
        assert_eq!(signing_durability(false, limit), Durability::PowerCut);
        assert_eq!(signing_durability(true, limit), Durability::PowerCut);
    }

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
        let store = Store::open(&url, &KeySource::KeyFile(dir.join("key")), 1)
            .await
            .unwrap();
        (store, dir)
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
