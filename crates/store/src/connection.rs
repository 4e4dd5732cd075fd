//! Connecting: the URL's backend, the pool options (SQLite's pragmas: WAL, fsync'd or not,
//! the busy timeout), the schema brought up to date, and the durability a transaction asks for.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Transaction};

use crate::error::{Context, Result, StoreError};
use crate::records::Backend;
use crate::store::MIGRATOR;

/// How long an SQLite writer waits for the write lock before failing with SQLITE_BUSY.
const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 20000";
/// SQLite takes one writer at a time, so a few connections (for concurrent readers) suffice.
const SQLITE_CONNECTIONS: u32 = 4;
/// The connection for commits that need not be fsync'd: one, so those writers queue in the
/// pool instead of polling for SQLite's write lock.
const SQLITE_UNSYNCED_CONNECTIONS: u32 = 1;
const POSTGRES_CONNECTIONS: u32 = 8;

/// Splits the URL into backend and the URL sqlx should open (SQLite: create the file if absent).
pub(crate) fn connection_url(url: &str) -> Result<(Backend, String)> {
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
pub(crate) async fn connect_unsynced(url: &str) -> Result<Option<AnyPool>> {
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
