//! The `meta` table and the keys: the store id, node id, presignature epoch, count of consumed
//! presignatures and the data-encryption key sealed under the key-encryption key. Shared with
//! `backup/`, which reads the same rows to back a store up and writes them back to restore it.

use std::collections::HashMap;

use sqlx::{Any, AnyPool, Transaction};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::connection::begin_write;
use crate::crypto::{self, Key, KeySource, Sealer};
use crate::error::{Context, Result, StoreError};
use crate::records::Backend;
use crate::rollback::Position;
use crate::rows::get;
use crate::store::Store;

/// The `meta` rows, by key.
pub(crate) type Meta = HashMap<String, Vec<u8>>;

fn meta_text(meta: &Meta, key: &str) -> Result<String> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        table: "meta",
        id: key.to_owned(),
        reason: reason.to_owned(),
    };
    let bytes = meta.get(key).ok_or_else(|| corrupt("missing"))?;
    String::from_utf8(bytes.clone()).map_err(|_| corrupt("not UTF-8"))
}

fn meta_parse<T: std::str::FromStr>(meta: &Meta, key: &str) -> Result<T> {
    meta_text(meta, key)?
        .parse()
        .map_err(|_| StoreError::Corrupt {
            table: "meta",
            id: key.to_owned(),
            reason: "does not parse".into(),
        })
}

/// The `meta` key counting consumed presignatures (see `rollback.rs`).
pub(crate) const CONSUMED: &str = "presignatures_consumed";
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
pub(crate) async fn count_consumed(
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

/// Every `meta` row, by key (the store's, and a backup's: `backup/` reads them in its snapshot).
pub(crate) async fn load_meta<'e, E>(executor: E) -> Result<Meta>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let rows = sqlx::query("SELECT key, value FROM meta")
        .fetch_all(executor)
        .await
        .context(|| "reading meta".into())?;
    rows.iter()
        .map(|row| Ok((get(row, "key", "meta")?, get(row, "value", "meta")?)))
        .collect()
}

async fn kek_from(key: &KeySource, salt: &[u8], params: &str) -> Result<Key> {
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

fn dek_ad(store_id: Uuid) -> String {
    format!("meta/dek/{store_id}")
}

/// The KEK for the store described by `meta` (the Argon2 salt and cost come from `meta`).
/// `text` reads a `meta` value as text, failing as its caller needs: a corrupt store here, a
/// malformed file in `backup/`.
pub(crate) async fn kek_for<E: From<StoreError>>(
    meta: &Meta,
    key: &KeySource,
    text: fn(&Meta, &str) -> Result<String, E>,
) -> Result<Key, E> {
    Ok(match key {
        KeySource::KeyFile(_) => kek_from(key, &[], "").await?,
        KeySource::Passphrase(_) => {
            let salt = meta.get("argon2_salt").map(Vec::as_slice).unwrap_or(&[]);
            kek_from(key, salt, &text(meta, "argon2_params")?).await?
        }
    })
}

/// Opens the data-encryption key of store `store_id`, `sealed` under `kek`.
pub(crate) fn open_dek(sealed: &[u8], kek: &Key, store_id: Uuid) -> Result<Key> {
    let dek = Sealer::new(kek)?
        .open(&dek_ad(store_id), sealed)
        .ok_or(StoreError::WrongKey)?;
    let dek: [u8; 32] = dek[..].try_into().map_err(|_| StoreError::WrongKey)?;
    Ok(Zeroizing::new(dek))
}

/// Writes `meta` for a new store. Returns `None` if another process initialized it first.
pub(crate) async fn create_meta(
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
pub(crate) async fn open_meta(meta: &Meta, key: &KeySource, node_id: u16) -> Result<(Uuid, Key)> {
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
    let kek = kek_for(meta, key, meta_text).await?;
    let sealed = meta.get("dek").ok_or_else(|| StoreError::Corrupt {
        table: "meta",
        id: "dek".into(),
        reason: "missing".into(),
    })?;
    Ok((store_id, open_dek(sealed, &kek, store_id)?))
}

impl Store {
    /// The store's epoch and count of consumed presignatures.
    pub async fn position(&self) -> Result<Position> {
        Ok(Position {
            epoch: read_epoch(self.pool()).await?,
            consumed: read_meta_number(self.pool(), READ_META, CONSUMED).await?,
        })
    }

    /// The current presignature epoch (starts at 1).
    pub async fn epoch(&self) -> Result<u64> {
        read_epoch(self.pool()).await
    }

    /// Starts a new epoch: every existing presignature becomes unusable and its secret is
    /// deleted. Run after restoring a backup, whose presignatures may have been used since.
    pub async fn bump_epoch(&self) -> Result<u64> {
        Ok(self.start_epoch_after(0).await?.0)
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
