//! Restoring a backup: authenticate the file, check every row and sealed value, then replace
//! the store's rows in one transaction under a new presignature epoch.

use std::collections::HashMap;

use mpc_types::NodeId;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{Any, AnyPool, AssertSqlSafe, Transaction};
use uuid::Uuid;

use super::format::Kind::{self, Bytes, Int, Text};
use super::format::{
    mac_key, never_backed_up, never_backed_up_at, tables_at, verify_tag, Body, Parsed, TableSpec,
    BACKUP_FORMAT, BACKUP_FORMAT_VERSION, BACKUP_SCHEMA_VERSION, OLDEST_SCHEMA_VERSION,
};
use super::{check_schema, meta_parse, meta_text, open_dek, BackupError, BackupHeader};
use crate::connection::{self, begin_write};
use crate::crypto::{self, KeySource, Sealer};
use crate::error::{Context, StoreError};
use crate::meta::{kek_for, read_epoch};
use crate::records::Backend;
use crate::rows;
use crate::store::{now_ms, sealed_ad};

/// Tables whose `sealed` column is checked to open before a restore writes anything, with the
/// column that names the row (the sealing's associated data).
const SEALED: &[(&str, &str)] = &[
    ("primes", "id"),
    ("aux_info", "node_set"),
    ("key_shares", "wallet_id"),
];

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
    node_id: NodeId,
    cluster: &str,
    file: &[u8],
    options: RestoreOptions,
) -> Result<RestoreSummary, BackupError> {
    let Checked { header, body, meta } = check(key, node_id, cluster, file).await?;
    let (pool, backend) = connection::connect(url).await?;
    let result = write(&pool, backend, &header, &body, &meta, file, options).await;
    pool.close().await;
    let summary = result?;
    tracing::info!(
        node = node_id.get(),
        store_id = %header.store_id,
        epoch = summary.epoch,
        presignatures_deleted = summary.presignatures_deleted,
        replaced_rows = summary.replaced_rows,
        "store restored from a backup; presignature pool starts empty"
    );
    Ok(summary)
}

/// Checks `file` exactly as [`restore_backup`] does before it writes anything (format, node,
/// cluster, authentication under `key`, every table and sealed value) and returns its header.
/// The decoding boundary of backup files, public so the fuzz targets (`crates/fuzz`) call it.
pub async fn check_backup(
    key: &KeySource,
    node_id: NodeId,
    cluster: &str,
    file: &[u8],
) -> Result<BackupHeader, BackupError> {
    Ok(check(key, node_id, cluster, file).await?.header)
}

/// A backup that authenticated under the node's key and passed every check.
struct Checked {
    header: BackupHeader,
    body: Body,
    meta: HashMap<String, Vec<u8>>,
}

async fn check(
    key: &KeySource,
    node_id: NodeId,
    cluster: &str,
    file: &[u8],
) -> Result<Checked, BackupError> {
    let parsed = Parsed::new(file)?;
    let header = parsed.header.clone();
    if header.format != BACKUP_FORMAT || header.version != BACKUP_FORMAT_VERSION {
        return Err(BackupError::Unsupported(format!(
            "{} version {} (this program reads {BACKUP_FORMAT} version {BACKUP_FORMAT_VERSION})",
            header.format, header.version
        )));
    }
    // Checked on the unauthenticated header only to refuse, never to accept.
    // The file keeps the bare number.
    let node_id = node_id.get();
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
    Ok(Checked { header, body, meta })
}

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
        let columns = spec.columns_at(version);
        let expected: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
        if dump.columns != expected {
            return Err(BackupError::Malformed(format!(
                "table {}: columns {:?}, expected {expected:?}",
                spec.name, dump.columns
            )));
        }
        for row in &dump.rows {
            let fits = row.len() == columns.len()
                && row
                    .iter()
                    .zip(&columns)
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

/// A wallet's share from before a key refresh does not combine with the other nodes' shares
/// of the refreshed key: refuses a backup holding any wallet at an older key epoch than the
/// target store has it (a backup made before migration 9 holds key epoch 0).
async fn refuse_older_key_epochs(
    tx: &mut Transaction<'static, Any>,
    body: &Body,
) -> Result<(), BackupError> {
    let target: Vec<(String, i64)> = sqlx::query_as("SELECT id, key_epoch FROM wallets")
        .fetch_all(&mut **tx)
        .await
        .context(|| "reading the target's key epochs".into())?;
    let Some(dump) = body.tables.get("wallets") else {
        return Ok(());
    };
    let column = |name: &str| dump.columns.iter().position(|c| c == name);
    let id_at = column("id");
    let epoch_at = column("key_epoch");
    for row in &dump.rows {
        let id = id_at
            .and_then(|i| row.get(i))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let backup = epoch_at
            .and_then(|i| row.get(i))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if let Some((_, current)) = target.iter().find(|(t, e)| t == id && *e > backup) {
            return Err(BackupError::OlderKeyEpoch {
                wallet: id.to_owned(),
                backup,
                store: *current,
            });
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

fn insert_sql(spec: &TableSpec, columns: &[(&str, Kind)]) -> String {
    let columns: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
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
    if version >= 9 {
        refuse_older_key_epochs(&mut tx, body).await?;
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
        // The backup's columns: a column added since is left at its default.
        let columns = spec.columns_at(header.schema_version);
        let sql = insert_sql(spec, &columns);
        for row in &dump.rows {
            let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
            for (value, (_, kind)) in row.iter().zip(&columns) {
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
