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

use std::collections::{BTreeMap, HashMap};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, AssertSqlSafe, Transaction};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::crypto::{self, Key, KeySource, Sealer};
use crate::error::{Context, StoreError};
use crate::meta::{kek_for, load_meta, read_epoch};
use crate::records::Backend;
use crate::rows::{self, get};
use crate::store::{self, begin_write, now_ms, sealed_ad};

type HmacSha256 = Hmac<Sha256>;

/// `format` in every backup header.
pub const BACKUP_FORMAT: &str = "mpc-wallet-store-backup";
/// Version of the file layout; a reader refuses others.
pub const BACKUP_FORMAT_VERSION: u32 = 1;
/// The newest migration whose tables this module knows. A new migration must update
/// [`TABLES`] and this number (a unit test below fails until it does), so a backup never
/// silently leaves out a table or a column.
pub const BACKUP_SCHEMA_VERSION: i64 = 6;
/// The oldest schema a backup is made of (the first with the `restores` table).
const OLDEST_SCHEMA_VERSION: i64 = 4;

const TRAILER: &[u8] = b"hmac-sha256 ";
const MAC_CONTEXT: &[u8] = b"mpc-wallet/store-backup/v1/hmac-key\0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Bytes,
}
use Kind::{Bytes, Int, Text};

struct TableSpec {
    name: &'static str,
    /// The migration that created the table.
    since: i64,
    /// Primary key columns, for a stable row order.
    order: &'static str,
    columns: &'static [(&'static str, Kind)],
}

/// Every table a backup holds, parents before children (the insert order).
const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "primes",
        since: 1,
        order: "id",
        columns: &[("id", Text), ("sealed", Bytes), ("created_at", Int)],
    },
    TableSpec {
        name: "aux_info",
        since: 1,
        order: "node_set",
        columns: &[
            ("node_set", Text),
            ("sealed", Bytes),
            ("public_digest", Text),
            ("session", Text),
            ("created_at", Int),
        ],
    },
    TableSpec {
        name: "wallets",
        since: 1,
        order: "id",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("scheme", Text),
            ("threshold", Int),
            ("participants", Text),
            ("network", Text),
            ("public_key", Text),
            ("chain_code", Text),
            ("state", Text),
            ("session", Text),
            ("created_at", Int),
            ("activated_at", Int),
        ],
    },
    TableSpec {
        name: "key_shares",
        since: 1,
        order: "wallet_id",
        columns: &[("wallet_id", Text), ("sealed", Bytes)],
    },
    TableSpec {
        name: "ceremonies",
        since: 1,
        order: "id",
        columns: &[
            ("id", Text),
            ("kind", Text),
            ("state", Text),
            ("coordinator", Int),
            ("request", Text),
            ("result", Text),
            ("error", Text),
            ("started_at", Int),
            ("finished_at", Int),
        ],
    },
    TableSpec {
        name: "sessions_seen",
        since: 1,
        order: "session",
        columns: &[("session", Text), ("protocol", Text), ("seen_at", Int)],
    },
    TableSpec {
        name: "spends",
        since: 2,
        order: "session, wallet_id",
        columns: &[
            ("session", Text),
            ("wallet_id", Text),
            ("amount_sats", Int),
            ("at", Int),
        ],
    },
    TableSpec {
        name: "utxos",
        since: 3,
        order: "outpoint",
        columns: &[
            ("outpoint", Text),
            ("wallet_id", Text),
            ("amount_sats", Int),
            ("path", Text),
            ("script_pubkey", Text),
            ("origin", Text),
            ("state", Text),
            ("reserved_by", Text),
            ("reserved_at", Int),
            ("spent_by", Text),
            ("spent_at", Int),
            ("created_at", Int),
        ],
    },
    TableSpec {
        name: "change_indices",
        since: 3,
        order: "wallet_id",
        columns: &[("wallet_id", Text), ("next_index", Int)],
    },
    TableSpec {
        name: "restores",
        since: 4,
        order: "id",
        columns: &[
            ("id", Text),
            ("backup_sha256", Text),
            ("backup_created_at", Int),
            ("backup_epoch", Int),
            ("epoch", Int),
            ("presignatures_deleted", Int),
            ("restored_at", Int),
        ],
    },
    TableSpec {
        name: "funding_transactions",
        since: 6,
        order: "txid",
        columns: &[
            ("txid", Text),
            ("raw_transaction", Text),
            ("created_at", Int),
        ],
    },
];

/// The tables a store at schema `version` has.
fn tables_at(version: i64) -> impl DoubleEndedIterator<Item = &'static TableSpec> {
    TABLES.iter().filter(move |t| t.since <= version)
}

/// Tables a backup leaves out on purpose, with the migration that created each; a restore
/// empties them. Presignatures: design invariant 1, never restore one. Fencing tokens: cluster
/// state that etcd owns; the node checks every token against etcd and records it anew, and a
/// row brought back could only be out of date (or a value older versions stored from a peer
/// unchecked). Backups made before they were left out carry them; a restore ignores them.
const NEVER_BACKED_UP: &[(&str, i64)] = &[("presignatures", 1), ("fencing_tokens", 5)];

fn never_backed_up(name: &str) -> bool {
    NEVER_BACKED_UP.iter().any(|(n, _)| *n == name)
}

/// The tables of [`NEVER_BACKED_UP`] a store at schema `version` has.
fn never_backed_up_at(version: i64) -> impl Iterator<Item = &'static str> {
    NEVER_BACKED_UP
        .iter()
        .filter(move |(_, since)| *since <= version)
        .map(|(name, _)| *name)
}

/// Tables whose `sealed` column is checked to open before a restore writes anything, with the
/// column that names the row (the sealing's associated data).
const SEALED: &[(&str, &str)] = &[
    ("primes", "id"),
    ("aux_info", "node_set"),
    ("key_shares", "wallet_id"),
];

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
    #[error("the store has never been initialized: there is nothing to back up")]
    NotInitialized,
}

/// The first line of a backup. Readable without the key (to refuse the wrong node's file with
/// a clear message), but trusted only once the whole file authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    pub format: String,
    pub version: u32,
    pub node_id: u16,
    /// The cluster's identity as the caller names it (the CLI: the CA certificate's SHA-256).
    pub cluster: String,
    pub store_id: Uuid,
    /// The newest migration applied to the store.
    pub schema_version: i64,
    /// The presignature epoch at backup time.
    pub epoch: u64,
    pub created_at_ms: i64,
    /// Rows per table in the body.
    pub rows: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    /// `meta` rows, values in hex (the sealed DEK, the store id, node id, epoch, KEK kind...).
    meta: BTreeMap<String, String>,
    tables: BTreeMap<String, TableDump>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableDump {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// A finished backup: write `bytes` to a file.
pub struct Backup {
    pub header: BackupHeader,
    pub bytes: Vec<u8>,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub header: BackupHeader,
    /// The presignature epoch the store starts at now.
    pub epoch: u64,
    /// Presignature rows the restore deleted from the target.
    pub presignatures_deleted: u64,
    /// Rows of the target that were replaced (0 unless forced).
    pub replaced_rows: u64,
}

/// Backs up the store at `url` of node `node_id`. The key must open the store (so a backup is
/// never made of the wrong store, or under a key that could not restore it). Reads one
/// consistent snapshot, so a running node may keep running.
pub async fn create_backup(
    url: &str,
    key: &KeySource,
    node_id: u16,
    cluster: &str,
) -> Result<Backup, BackupError> {
    let (pool, backend) = store::connect(url).await?;
    let result = dump(&pool, backend, key, node_id, cluster).await;
    pool.close().await;
    result
}

/// How a restore treats its target.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Replace a store that holds rows.
    pub force: bool,
    /// The restored store's epoch is above this too: the epoch in the node's rollback guard
    /// file ([`crate::witnessed_position`]), so the restored store, behind what the node did,
    /// is not then taken for a rolled-back one.
    pub epoch_above: u64,
}

/// Restores `file` into the store at `url` for node `node_id` of `cluster`. Refuses another
/// node's or cluster's backup, a file that does not authenticate under `key`, and a target
/// that holds any row unless `options.force`. Stop the node first: a running node keeps the
/// old data-encryption key in memory.
pub async fn restore_backup(
    url: &str,
    key: &KeySource,
    node_id: u16,
    cluster: &str,
    file: &[u8],
    options: RestoreOptions,
) -> Result<RestoreSummary, BackupError> {
    let parsed = Parsed::new(file)?;
    let header = parsed.header.clone();
    if header.format != BACKUP_FORMAT || header.version != BACKUP_FORMAT_VERSION {
        return Err(BackupError::Unsupported(format!(
            "{} version {} (this program reads {BACKUP_FORMAT} version {BACKUP_FORMAT_VERSION})",
            header.format, header.version
        )));
    }
    // Checked on the unauthenticated header only to refuse, never to accept.
    if header.node_id != node_id {
        return Err(BackupError::WrongNode {
            file: header.node_id,
            config: node_id,
        });
    }
    if header.cluster != cluster {
        return Err(BackupError::WrongCluster {
            file: header.cluster,
            config: cluster.to_owned(),
        });
    }
    let body: Body = serde_json::from_slice(parsed.body)
        .map_err(|e| BackupError::Malformed(format!("body: {e}")))?;
    let meta = body
        .meta
        .iter()
        .map(|(k, v)| {
            hex::decode(v)
                .map(|v| (k.clone(), v))
                .map_err(|_| BackupError::Malformed(format!("meta {k} is not hex")))
        })
        .collect::<Result<HashMap<_, _>, _>>()?;
    if meta_text(&meta, "kek")? != key.kind() {
        return Err(StoreError::WrongKey.into());
    }
    let kek = kek_for(&meta, key, meta_text).await?;
    let mac_ok =
        mac_key(&kek, header.store_id).and_then(|k| verify_tag(&k, parsed.content, &parsed.tag))?;
    let dek = open_dek(&meta, &kek, header.store_id);
    if !mac_ok {
        return Err(match dek {
            Ok(_) => BackupError::Tampered,
            Err(_) => BackupError::TamperedOrWrongKey,
        });
    }
    // The file is authentic from here on.
    let dek = dek?;
    let meta_store: Uuid = meta_parse(&meta, "store_id")?;
    let meta_node: u16 = meta_parse(&meta, "node_id")?;
    if meta_store != header.store_id || meta_node != header.node_id {
        return Err(BackupError::Malformed(
            "the header and meta disagree on the store or node".into(),
        ));
    }
    if !(OLDEST_SCHEMA_VERSION..=BACKUP_SCHEMA_VERSION).contains(&header.schema_version) {
        return Err(BackupError::Unsupported(format!(
            "made at schema version {}, this program restores versions \
             {OLDEST_SCHEMA_VERSION} to {BACKUP_SCHEMA_VERSION}",
            header.schema_version
        )));
    }
    check_body(&body, header.schema_version)?;
    let left_out: Vec<&String> = body.tables.keys().filter(|t| never_backed_up(t)).collect();
    if !left_out.is_empty() {
        tracing::info!(tables = ?left_out, "the backup's rows of these tables are not restored");
    }
    check_sealed(&body, &Sealer::new(&dek)?, header.store_id)?;

    let (pool, backend) = store::connect(url).await?;
    let result = write(&pool, backend, &header, &body, &meta, file, options).await;
    pool.close().await;
    let summary = result?;
    tracing::info!(
        node = node_id,
        store_id = %header.store_id,
        epoch = summary.epoch,
        presignatures_deleted = summary.presignatures_deleted,
        replaced_rows = summary.replaced_rows,
        "store restored from a backup; presignature pool starts empty"
    );
    Ok(summary)
}

/// Reads a backup's header without checking anything but its shape (for display; the header
/// is trusted only after [`restore_backup`] authenticated the whole file).
pub fn read_backup_header(file: &[u8]) -> Result<BackupHeader, BackupError> {
    Ok(Parsed::new(file)?.header)
}

// ---- file layout ----

struct Parsed<'a> {
    header: BackupHeader,
    /// Everything the tag covers.
    content: &'a [u8],
    body: &'a [u8],
    tag: Vec<u8>,
}

impl<'a> Parsed<'a> {
    fn new(file: &'a [u8]) -> Result<Self, BackupError> {
        let bad = |what: &str| BackupError::Malformed(what.to_owned());
        let without_newline = file
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("truncated (no final newline)"))?;
        let trailer_start = without_newline
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .ok_or_else(|| bad("no authentication line"))?;
        let (content, trailer) = file.split_at(trailer_start);
        let tag_hex = trailer
            .strip_prefix(TRAILER)
            .and_then(|t| t.strip_suffix(b"\n"))
            .ok_or_else(|| bad("no authentication line"))?;
        let tag = hex::decode(tag_hex).map_err(|_| bad("authentication line is not hex"))?;
        let header_end = content
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header line"))?;
        let header: BackupHeader = serde_json::from_slice(&content[..header_end])
            .map_err(|e| BackupError::Malformed(format!("header: {e}")))?;
        let body = content[header_end + 1..]
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("no body line"))?;
        Ok(Parsed {
            header,
            content,
            body,
            tag,
        })
    }
}

fn mac_key(kek: &Key, store_id: Uuid) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    let mut mac =
        HmacSha256::new_from_slice(&kek[..]).map_err(|_| StoreError::Crypto("HMAC key".into()))?;
    mac.update(MAC_CONTEXT);
    mac.update(store_id.as_bytes());
    Ok(Zeroizing::new(mac.finalize().into_bytes().to_vec()))
}

fn tag(key: &[u8], content: &[u8]) -> Result<Vec<u8>, BackupError> {
    let mut mac =
        HmacSha256::new_from_slice(key).map_err(|_| StoreError::Crypto("HMAC key".into()))?;
    mac.update(content);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Constant-time comparison (hmac's `verify_slice`).
fn verify_tag(key: &[u8], content: &[u8], tag: &[u8]) -> Result<bool, BackupError> {
    let mut mac =
        HmacSha256::new_from_slice(key).map_err(|_| StoreError::Crypto("HMAC key".into()))?;
    mac.update(content);
    Ok(mac.verify_slice(tag).is_ok())
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

// ---- reading ----

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

fn select_sql(spec: &TableSpec) -> String {
    let columns: Vec<&str> = spec.columns.iter().map(|(c, _)| *c).collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        columns.join(", "),
        spec.name,
        spec.order
    )
}

fn row_values(row: &AnyRow, spec: &TableSpec) -> Result<Vec<Value>, BackupError> {
    spec.columns
        .iter()
        .map(|&(column, kind)| {
            Ok(match kind {
                Text => get::<Option<String>>(row, column, spec.name)?
                    .map_or(Value::Null, Value::String),
                Int => get::<Option<i64>>(row, column, spec.name)?
                    .map_or(Value::Null, |v| Value::Number(v.into())),
                Bytes => get::<Option<Vec<u8>>>(row, column, spec.name)?
                    .map_or(Value::Null, |v| Value::String(hex::encode(v))),
            })
        })
        .collect()
}

async fn dump(
    pool: &AnyPool,
    backend: Backend,
    key: &KeySource,
    node_id: u16,
    cluster: &str,
) -> Result<Backup, BackupError> {
    let version = check_schema(pool, backend).await?;
    // One snapshot for every table (SQLite: a read transaction in WAL mode).
    let mut tx: Transaction<'static, Any> = match backend {
        Backend::Sqlite => pool.begin_with("BEGIN").await,
        Backend::Postgres => {
            pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
        }
    }
    .context(|| "starting the backup's read transaction".into())?;

    let meta = load_meta(&mut *tx).await?;
    if !meta.contains_key("store_id") {
        return Err(BackupError::NotInitialized);
    }
    let store_id: Uuid = meta_parse(&meta, "store_id")?;
    let found: u16 = meta_parse(&meta, "node_id")?;
    if found != node_id {
        return Err(StoreError::WrongNode {
            expected: node_id,
            found,
        }
        .into());
    }
    if meta_text(&meta, "kek")? != key.kind() {
        return Err(StoreError::WrongKey.into());
    }
    let kek = kek_for(&meta, key, meta_text).await?;
    open_dek(&meta, &kek, store_id)?;
    let epoch = read_epoch(&mut *tx).await?;

    let mut tables = BTreeMap::new();
    let mut rows = BTreeMap::new();
    for spec in tables_at(version) {
        let found = sqlx::query(AssertSqlSafe(select_sql(spec)))
            .fetch_all(&mut *tx)
            .await
            .context(|| format!("reading {}", spec.name))?;
        let values = found
            .iter()
            .map(|row| row_values(row, spec))
            .collect::<Result<Vec<_>, _>>()?;
        rows.insert(spec.name.to_owned(), values.len() as u64);
        tables.insert(
            spec.name.to_owned(),
            TableDump {
                columns: spec.columns.iter().map(|(c, _)| (*c).to_owned()).collect(),
                rows: values,
            },
        );
    }
    tx.rollback()
        .await
        .context(|| "ending the backup's read transaction".into())?;

    let header = BackupHeader {
        format: BACKUP_FORMAT.into(),
        version: BACKUP_FORMAT_VERSION,
        node_id,
        cluster: cluster.to_owned(),
        store_id,
        schema_version: version,
        epoch,
        created_at_ms: now_ms(),
        rows,
    };
    let body = Body {
        meta: meta
            .iter()
            .map(|(k, v)| (k.clone(), hex::encode(v)))
            .collect(),
        tables,
    };
    let json = |e: serde_json::Error| StoreError::Invalid(format!("encoding the backup: {e}"));
    let mut bytes = serde_json::to_vec(&header).map_err(json)?;
    bytes.push(b'\n');
    bytes.extend(serde_json::to_vec(&body).map_err(json)?);
    bytes.push(b'\n');
    let tag = tag(&mac_key(&kek, store_id)?, &bytes)?;
    bytes.extend_from_slice(TRAILER);
    bytes.extend_from_slice(hex::encode(tag).as_bytes());
    bytes.push(b'\n');
    tracing::info!(node = node_id, %store_id, epoch, rows = ?header.rows, "store backed up");
    Ok(Backup { header, bytes })
}

// ---- restoring ----

/// Every known table present with the expected columns, nothing else, values of the right
/// kinds.
fn check_body(body: &Body, version: i64) -> Result<(), BackupError> {
    let expected = tables_at(version).count();
    // An older backup's fencing tokens are left out, not refused.
    let restored = body.tables.keys().filter(|t| !never_backed_up(t)).count();
    if restored != expected {
        return Err(BackupError::Malformed(format!(
            "{restored} tables, expected {expected}"
        )));
    }
    for spec in tables_at(version) {
        let dump = body
            .tables
            .get(spec.name)
            .ok_or_else(|| BackupError::Malformed(format!("table {} missing", spec.name)))?;
        let expected: Vec<&str> = spec.columns.iter().map(|(c, _)| *c).collect();
        if dump.columns != expected {
            return Err(BackupError::Malformed(format!(
                "table {}: columns {:?}, expected {expected:?}",
                spec.name, dump.columns
            )));
        }
        for row in &dump.rows {
            let fits = row.len() == spec.columns.len()
                && row
                    .iter()
                    .zip(spec.columns)
                    .all(|(v, (_, kind))| match (kind, v) {
                        (_, Value::Null) => true,
                        (Text, Value::String(_)) => true,
                        (Int, Value::Number(n)) => n.is_i64(),
                        (Bytes, Value::String(s)) => hex::decode(s).is_ok(),
                        _ => false,
                    });
            if !fits {
                return Err(BackupError::Malformed(format!(
                    "table {}: a row does not fit its columns",
                    spec.name
                )));
            }
        }
    }
    Ok(())
}

/// Every sealed value opens under the backup's DEK at its row (checked in memory, before
/// anything is written; the plaintexts are dropped and zeroized at once).
fn check_sealed(body: &Body, dek: &Sealer, store_id: Uuid) -> Result<(), BackupError> {
    for &(table, id_column) in SEALED {
        let Some(dump) = body.tables.get(table) else {
            continue;
        };
        let id_at = dump.columns.iter().position(|c| c == id_column);
        let sealed_at = dump.columns.iter().position(|c| c == "sealed");
        let (Some(id_at), Some(sealed_at)) = (id_at, sealed_at) else {
            return Err(BackupError::Malformed(format!(
                "table {table}: no sealed column"
            )));
        };
        for row in &dump.rows {
            let id = row.get(id_at).and_then(Value::as_str).unwrap_or_default();
            let sealed = row
                .get(sealed_at)
                .and_then(Value::as_str)
                .and_then(|s| hex::decode(s).ok())
                .unwrap_or_default();
            if dek.open(&sealed_ad(table, id, store_id), &sealed).is_none() {
                return Err(StoreError::Tampered {
                    table,
                    id: id.to_owned(),
                }
                .into());
            }
        }
    }
    Ok(())
}

async fn count(tx: &mut Transaction<'static, Any>, table: &str) -> Result<u64, BackupError> {
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut **tx)
        .await
        .context(|| format!("counting {table}"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn insert_sql(spec: &TableSpec) -> String {
    let columns: Vec<&str> = spec.columns.iter().map(|(c, _)| *c).collect();
    let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        spec.name,
        columns.join(", "),
        params.join(", ")
    )
}

async fn write(
    pool: &AnyPool,
    backend: Backend,
    header: &BackupHeader,
    body: &Body,
    meta: &HashMap<String, Vec<u8>>,
    file: &[u8],
    options: RestoreOptions,
) -> Result<RestoreSummary, BackupError> {
    let version = check_schema(pool, backend).await?;
    // Migrations since the oldest readable schema only add tables, so a newer store takes an
    // older backup: the tables the backup predates stay empty.
    if version < header.schema_version {
        return Err(BackupError::Unsupported(format!(
            "the backup was made at schema version {}, the target store is at {version}: \
             restore with a program at least as new as the one that made the backup",
            header.schema_version
        )));
    }
    let mut tx = begin_write(pool, backend).await?;
    // Emptiness is decided inside the writing transaction, so nothing slips in between.
    let mut replaced_rows = 0;
    let mut occupied = Vec::new();
    for table in never_backed_up_at(version).chain(tables_at(version).map(|t| t.name)) {
        let n = count(&mut tx, table).await?;
        if n > 0 {
            occupied.push(format!("{table} {n}"));
        }
        replaced_rows += n;
    }
    if replaced_rows > 0 && !options.force {
        tx.rollback().await.context(|| "rolling back".into())?;
        return Err(BackupError::NotEmpty {
            rows: replaced_rows,
            tables: occupied.join(", "),
        });
    }
    let has_epoch: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM meta WHERE key = 'epoch'")
        .fetch_one(&mut *tx)
        .await
        .context(|| "reading the target's epoch".into())?;
    let target_epoch = if has_epoch > 0 {
        read_epoch(&mut *tx).await?
    } else {
        0
    };
    let epoch = header.epoch.max(target_epoch).max(options.epoch_above) + 1;
    let epoch_i64 = rows::epoch_i64(epoch)?;

    // Children before parents (foreign keys), presignatures first.
    let mut presignatures_deleted = 0;
    for table in never_backed_up_at(version) {
        let deleted = sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
            .execute(&mut *tx)
            .await
            .context(|| format!("clearing {table}"))?
            .rows_affected();
        if table == "presignatures" {
            presignatures_deleted = deleted;
        }
    }
    for spec in tables_at(version).rev() {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {}", spec.name)))
            .execute(&mut *tx)
            .await
            .context(|| format!("clearing {}", spec.name))?;
    }
    sqlx::query("DELETE FROM meta")
        .execute(&mut *tx)
        .await
        .context(|| "clearing meta".into())?;

    let mut meta_rows: Vec<(&String, Vec<u8>)> = meta
        .iter()
        .filter(|(k, _)| k.as_str() != "epoch")
        .map(|(k, v)| (k, v.clone()))
        .collect();
    let epoch_key = "epoch".to_owned();
    meta_rows.push((&epoch_key, epoch.to_string().into_bytes()));
    for (k, v) in meta_rows {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
            .bind(k.as_str())
            .bind(v)
            .execute(&mut *tx)
            .await
            .context(|| format!("restoring meta/{k}"))?;
    }
    for spec in tables_at(version) {
        let Some(dump) = body.tables.get(spec.name) else {
            continue;
        };
        let sql = insert_sql(spec);
        for row in &dump.rows {
            let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
            for (value, (_, kind)) in row.iter().zip(spec.columns) {
                query = match kind {
                    Text => query.bind(value.as_str().map(str::to_owned)),
                    Int => query.bind(value.as_i64()),
                    Bytes => query.bind(value.as_str().and_then(|s| hex::decode(s).ok())),
                };
            }
            query
                .execute(&mut *tx)
                .await
                .context(|| format!("restoring a row of {}", spec.name))?;
        }
    }
    let backup_epoch = rows::epoch_i64(header.epoch)?;
    sqlx::query(
        "INSERT INTO restores (id, backup_sha256, backup_created_at, backup_epoch, epoch, \
         presignatures_deleted, restored_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(crypto::random_uuid()?.to_string())
    .bind(hex::encode(Sha256::digest(file)))
    .bind(header.created_at_ms)
    .bind(backup_epoch)
    .bind(epoch_i64)
    .bind(i64::try_from(presignatures_deleted).unwrap_or(i64::MAX))
    .bind(now_ms())
    .execute(&mut *tx)
    .await
    .context(|| "recording the restore".into())?;
    tx.commit()
        .await
        .context(|| "committing the restore".into())?;
    Ok(RestoreSummary {
        header: header.clone(),
        epoch,
        presignatures_deleted,
        replaced_rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_knows_the_newest_migration() {
        let newest = store::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        assert!(
            (OLDEST_SCHEMA_VERSION..=BACKUP_SCHEMA_VERSION).contains(&newest),
            "migration {newest} is newer than backup.rs knows: update TABLES and \
             BACKUP_SCHEMA_VERSION there"
        );
    }

    #[test]
    fn every_table_of_the_migrations_is_known() {
        for m in store::MIGRATOR.iter() {
            let sql = m.sql.as_str().to_ascii_lowercase();
            for part in sql.split("create table ").skip(1) {
                let name = part
                    .split(|c: char| c.is_whitespace() || c == '(')
                    .next()
                    .unwrap_or_default();
                assert!(
                    name == "meta"
                        || never_backed_up(name)
                        || TABLES.iter().any(|t| t.name == name),
                    "table {name} of migration {} is not in backup.rs",
                    m.version
                );
            }
        }
    }
}
