//! Making a backup: one consistent snapshot of the store, encoded and tagged.

use std::collections::BTreeMap;

use mpc_types::NodeId;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, AssertSqlSafe, Transaction};
use uuid::Uuid;

use super::format::Kind::{self, Bytes, Int, Text};
use super::format::{
    mac_key, tables_at, tag, Body, TableDump, TableSpec, BACKUP_FORMAT, BACKUP_FORMAT_VERSION,
    TRAILER,
};
use super::{check_schema, meta_parse, meta_text, open_dek, BackupError, BackupHeader};
use crate::connection;
use crate::crypto::KeySource;
use crate::error::{Context, StoreError};
use crate::meta::{kek_for, load_meta, read_epoch};
use crate::records::Backend;
use crate::rows::get;
use crate::store::now_ms;

/// A finished backup: write `bytes` to a file.
pub struct Backup {
    pub header: BackupHeader,
    pub bytes: Vec<u8>,
}

/// Backs up the store at `url` of node `node_id`. The key must open the store (so a backup is
/// never made of the wrong store, or under a key that could not restore it). Reads one
/// consistent snapshot, so a running node may keep running.
pub async fn create_backup(
    url: &str,
    key: &KeySource,
    node_id: NodeId,
    cluster: &str,
) -> Result<Backup, BackupError> {
    let (pool, backend) = connection::connect(url).await?;
    // The file and the store's meta keep the bare number.
    let result = dump(&pool, backend, key, node_id.get(), cluster).await;
    pool.close().await;
    result
}

fn select_sql(spec: &TableSpec, columns: &[(&str, Kind)]) -> String {
    let columns: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        columns.join(", "),
        spec.name,
        spec.order
    )
}

fn row_values(
    row: &AnyRow,
    spec: &TableSpec,
    columns: &[(&str, Kind)],
) -> Result<Vec<Value>, BackupError> {
    columns
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
        let columns = spec.columns_at(version);
        let found = sqlx::query(AssertSqlSafe(select_sql(spec, &columns)))
            .fetch_all(&mut *tx)
            .await
            .context(|| format!("reading {}", spec.name))?;
        let values = found
            .iter()
            .map(|row| row_values(row, spec, &columns))
            .collect::<Result<Vec<_>, _>>()?;
        rows.insert(spec.name.to_owned(), values.len() as u64);
        tables.insert(
            spec.name.to_owned(),
            TableDump {
                columns: columns.iter().map(|(c, _)| (*c).to_owned()).collect(),
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
