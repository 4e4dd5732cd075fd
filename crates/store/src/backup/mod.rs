//! Backup and restore of one node's store.
//!
//! A backup holds every row of the store except presignatures and fencing tokens, exactly as
//! at rest: secrets stay sealed under the store's data-encryption key (DEK), and the DEK stays
//! sealed under the key-encryption key (KEK), which is never in the file. The file is
//!
//! ```text
//! {header JSON}\n{body JSON}\nhmac-sha256 <64 hex>\n
//! ```
//!
//! The header names the format, its version, the node id, the cluster (an opaque string the
//! caller chooses, e.g. the CA certificate's fingerprint), the store id, the schema version and
//! the presignature epoch. The body is `meta` (hex values) plus each table as column names and
//! rows (text, integers, hex bytes). The last line is HMAC-SHA256 over everything before it,
//! under a key derived from the KEK and the store id, so any change to the file, or a file made
//! under another KEK, is refused before anything is written.
//!
//! Restore writes the rows into an empty store (or replaces a non-empty one when forced) in one
//! transaction and starts a new presignature epoch. Why that is safe, in short: a presignature
//! may be used at most once (design invariant 1), and a backup is a copy from the past, so any
//! presignature in it may have been used since. Therefore (1) backups never contain
//! presignature rows; (2) the restoring transaction deletes every presignature row already in
//! the target; (3) it sets the epoch above the backup's, the target's and the one in the node's
//! rollback guard file (`rollback.rs`, given by the caller), and every presignature path in
//! `presignatures.rs` (insert, listing, consume, expire) accepts only rows of the current epoch,
//! so a presignature record made before the restore (a run still in flight in a process that
//! was not stopped) is refused too. After a restore the node holds no presignature secret at
//! all; its pool starts empty and refills with new ones.
//!
//! Backups leave out fencing tokens too, and a restore empties that table: they are cluster
//! state that etcd owns, checked there before every use, and rows from the past could only be
//! out of date (or a poisoned value an older version stored from a peer unchecked).

mod dump;
mod format;
mod restore;

use std::collections::HashMap;

use sqlx::AnyPool;
use uuid::Uuid;

use crate::crypto::Key;
use crate::error::{Context, StoreError};
use crate::records::Backend;

pub use dump::{create_backup, Backup};
use format::{never_backed_up, tables_at, OLDEST_SCHEMA_VERSION};
pub use format::{
    read_backup_header, BackupHeader, BACKUP_FORMAT, BACKUP_FORMAT_VERSION, BACKUP_SCHEMA_VERSION,
};
pub use restore::{check_backup, restore_backup, RestoreOptions, RestoreSummary};

/// What a backup or restore can fail with. Messages never contain a secret or a database URL.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "this backup is of node {file}, but the configuration is of node {config}: \
         restore each node only from its own backup"
    )]
    WrongNode { file: u16, config: u16 },
    #[error("this backup is of cluster {file}, but the configuration's cluster is {config}")]
    WrongCluster { file: String, config: String },
    #[error("the backup does not authenticate: it was altered or truncated")]
    Tampered,
    #[error(
        "the backup does not authenticate under this node's key-encryption key: it was \
         altered, or made under another key"
    )]
    TamperedOrWrongKey,
    #[error("not a store backup: {0}")]
    Malformed(String),
    #[error("unsupported backup: {0}")]
    Unsupported(String),
    #[error(
        "the target store is not empty ({rows} rows: {tables}); refusing to replace it \
         without --force"
    )]
    NotEmpty { rows: u64, tables: String },
    #[error(
        "the backup holds wallet {wallet} at key epoch {backup}, but the store has it at key \
         epoch {store}: its share was refreshed since, and the old share no longer signs"
    )]
    OlderKeyEpoch {
        wallet: String,
        backup: i64,
        store: i64,
    },
    #[error("the store has never been initialized: there is nothing to back up")]
    NotInitialized,
}

// ---- meta and keys ----

fn meta_text(meta: &HashMap<String, Vec<u8>>, key: &str) -> Result<String, BackupError> {
    let bytes = meta
        .get(key)
        .ok_or_else(|| BackupError::Malformed(format!("meta {key} missing")))?;
    String::from_utf8(bytes.clone())
        .map_err(|_| BackupError::Malformed(format!("meta {key} is not UTF-8")))
}

fn meta_parse<T: std::str::FromStr>(
    meta: &HashMap<String, Vec<u8>>,
    key: &str,
) -> Result<T, BackupError> {
    meta_text(meta, key)?
        .parse()
        .map_err(|_| BackupError::Malformed(format!("meta {key} does not parse")))
}

/// The backup's DEK, opened under `kek` (a backup without one is not of this key).
fn open_dek(meta: &HashMap<String, Vec<u8>>, kek: &Key, store_id: Uuid) -> Result<Key, StoreError> {
    let sealed = meta.get("dek").ok_or(StoreError::WrongKey)?;
    crate::meta::open_dek(sealed, kek, store_id)
}

// ---- the schema ----

async fn schema_version(pool: &AnyPool) -> Result<i64, BackupError> {
    let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .context(|| "reading the schema version".into())?;
    Ok(version.unwrap_or(0))
}

/// Refuses a schema this module does not know completely: a table it would silently skip.
async fn check_schema(pool: &AnyPool, backend: Backend) -> Result<i64, BackupError> {
    let version = schema_version(pool).await?;
    if !(OLDEST_SCHEMA_VERSION..=BACKUP_SCHEMA_VERSION).contains(&version) {
        return Err(BackupError::Unsupported(format!(
            "the store is at schema version {version}; this program backs up and restores \
             versions {OLDEST_SCHEMA_VERSION} to {BACKUP_SCHEMA_VERSION}"
        )));
    }
    let sql = match backend {
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        }
    };
    let names: Vec<String> = sqlx::query_scalar(sql)
        .fetch_all(pool)
        .await
        .context(|| "listing tables".into())?;
    let unknown: Vec<&String> = names
        .iter()
        .filter(|n| {
            n.as_str() != "_sqlx_migrations"
                && n.as_str() != "meta"
                && !never_backed_up(n)
                && !tables_at(version).any(|t| t.name == n.as_str())
        })
        .collect();
    if !unknown.is_empty() {
        return Err(BackupError::Unsupported(format!(
            "the store has tables this program does not know: {unknown:?}"
        )));
    }
    Ok(version)
}
