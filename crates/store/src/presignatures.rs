//! Presignatures: stored ready with their secret sealed, of the current epoch only, and
//! consumed at most once (the secret is deleted in the committing transaction).

use mpc_types::{DerivationPath, NodeId, WalletId};
use sqlx::{Any, Transaction};
use zeroize::Zeroizing;

use crate::error::{Context, Result, StoreError};
use crate::meta::{count_consumed, read_epoch};
use crate::records::{id_list, parse_id_list, PoolLevel, PresignatureRecord, PresignatureState};
use crate::rows::{epoch_i64, get, parse_path, presignature_from_row, select_presignature, to_u64};
use crate::store::Store;

/// What claiming a presignature inside a transaction found.
pub(crate) enum Claim {
    /// Marked consumed with its secret deleted (commit to make it so); the sealed secret.
    Claimed(Vec<u8>),
    /// Not ready, of another epoch, expired, unknown, or claimed by someone else first.
    Unavailable,
    /// Ready, but bound to another (wallet, path, signers): described.
    BoundElsewhere(String),
}

/// Claims ready presignature `id` of `epoch`, made under its wallet's current key epoch, inside
/// `tx` if it is bound to `binding` (wallet,
/// path, signers) when one is given. The conditional UPDATE is the claim: on PostgreSQL a
/// concurrent claimer waits on the row lock and then sees state = 'consumed'; on SQLite
/// writers are serialized.
pub(crate) async fn claim_presignature(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    epoch: i64,
    now_ms: i64,
    binding: Option<(&WalletId, &DerivationPath, &[NodeId])>,
) -> Result<Claim> {
    let ctx = || format!("consuming presignatures/{id}");
    let row: Option<(String, String, String, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT wallet_id, path, signers, sealed FROM presignatures \
         WHERE id = $1 AND state = 'ready' AND epoch = $2 AND expires_at > $3 AND \
         key_epoch = (SELECT w.key_epoch FROM wallets w WHERE w.id = presignatures.wallet_id)",
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
        // Compared decoded, not as text: one path has one meaning whatever its spelling.
        if *want_wallet != *wallet_id
            || parse_path(&path, "presignatures", id)? != *want_path
            || parse_id_list(&signers, "presignatures", id)? != want_signers
        {
            return Ok(Claim::BoundElsewhere(format!(
                "wallet {wallet_id} path {path} signers [{signers}]"
            )));
        }
    }
    let claimed = sqlx::query(
        "UPDATE presignatures SET state = 'consumed', consumed_at = $2, sealed = NULL \
         WHERE id = $1 AND state = 'ready' AND epoch = $3 AND expires_at > $2 AND \
         key_epoch = (SELECT w.key_epoch FROM wallets w WHERE w.id = presignatures.wallet_id)",
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

impl Store {
    /// Stores a new, ready presignature with its sealed secret. `p.epoch` must be the current
    /// epoch and `p.key_epoch` its wallet's: a presignature made before an epoch bump or a key
    /// refresh is never stored.
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
        let key_epoch: Option<i64> =
            sqlx::query_scalar("SELECT key_epoch FROM wallets WHERE id = $1")
                .bind(p.wallet_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .context(ctx)?;
        let key_epoch = key_epoch.ok_or_else(|| StoreError::NotFound {
            table: "wallets",
            id: p.wallet_id.to_string(),
        })?;
        let key_epoch = to_u64(key_epoch, "wallets", p.wallet_id.as_str())?;
        if p.key_epoch != key_epoch {
            return Err(StoreError::WrongKeyEpoch {
                id: id.clone(),
                record: p.key_epoch,
                wallet: key_epoch,
            });
        }
        let inserted = sqlx::query(
            "INSERT INTO presignatures (id, wallet_id, path, signers, epoch, key_epoch, state, \
             sealed, public, created_at, expires_at, consumed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'ready', $7, $8, $9, $10, NULL) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(p.wallet_id.as_str())
        .bind(p.path.to_string())
        .bind(id_list(&p.signers))
        .bind(epoch_i64(p.epoch)?)
        .bind(epoch_i64(p.key_epoch)?)
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

    /// Usable presignatures for (wallet, path, signer set): ready, current epoch and the
    /// wallet's key epoch, unexpired at `now_ms`; oldest first.
    pub async fn ready_presignatures(
        &self,
        wallet_id: &WalletId,
        path: &str,
        signers: &[NodeId],
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<PresignatureRecord>> {
        let epoch = epoch_i64(self.epoch().await?)?;
        sqlx::query(select_presignature!(
            "WHERE wallet_id = $1 AND path = $2 AND signers = $3 AND state = 'ready' \
             AND epoch = $4 AND expires_at > $5 AND key_epoch = \
             (SELECT w.key_epoch FROM wallets w WHERE w.id = presignatures.wallet_id) \
             ORDER BY created_at, id LIMIT $6"
        ))
        .bind(wallet_id.as_str())
        .bind(path)
        .bind(id_list(signers))
        .bind(epoch)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
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
        let position = count_consumed(&mut tx, self.backend(), epoch, 1).await?;
        tx.commit().await.context(ctx)?;
        self.witness(position).await?;
        self.unseal("presignatures", id, &sealed).map(Some)
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
        .execute(self.pool())
        .await
        .context(|| format!("discarding presignatures/{id}"))?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Retires ready presignatures among `ids` of `wallet_id` without using them: the pool
    /// made them for outputs that are spent now. They end as if their time had run out
    /// (`expired`, secret deleted), so the pool's statistics do not count them as used.
    /// Returns how many were retired (ids not ready, or of another wallet, are left alone).
    pub async fn retire_presignatures(&self, wallet_id: &WalletId, ids: &[String]) -> Result<u64> {
        let ctx = || format!("retiring presignatures of wallet {wallet_id}");
        let mut tx = self.begin_write().await?;
        let mut retired = 0;
        for id in ids {
            retired += sqlx::query(
                "UPDATE presignatures SET state = 'expired', sealed = NULL \
                 WHERE id = $1 AND wallet_id = $2 AND state = 'ready'",
            )
            .bind(id)
            .bind(wallet_id.as_str())
            .execute(&mut *tx)
            .await
            .context(ctx)?
            .rows_affected();
        }
        tx.commit().await.context(ctx)?;
        Ok(retired)
    }

    /// Marks ready presignatures that expired by `now_ms`, belong to another epoch, or to
    /// another key epoch than their wallet's, as expired and deletes their secrets. Returns how
    /// many.
    pub async fn expire_presignatures(&self, now_ms: i64) -> Result<u64> {
        let ctx = || "expiring presignatures".to_owned();
        let mut tx = self.begin_write().await?;
        let epoch = epoch_i64(read_epoch(&mut *tx).await?)?;
        let changed = sqlx::query(
            "UPDATE presignatures SET state = 'expired', sealed = NULL \
             WHERE state = 'ready' AND (expires_at <= $1 OR epoch <> $2 OR key_epoch <> \
             (SELECT w.key_epoch FROM wallets w WHERE w.id = presignatures.wallet_id))",
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
            .fetch_optional(self.pool())
            .await
            .context(|| format!("reading presignatures/{id}"))?
            .as_ref()
            .map(presignature_from_row)
            .transpose()
    }

    /// Pool levels of a wallet per (path, signer set): usable now, and consumed so far.
    pub async fn presignature_counts(
        &self,
        wallet_id: &WalletId,
        now_ms: i64,
    ) -> Result<Vec<PoolLevel>> {
        const T: &str = "presignatures";
        let epoch = epoch_i64(self.epoch().await?)?;
        let rows = sqlx::query(
            "SELECT path, signers, \
             COUNT(CASE WHEN state = 'ready' AND epoch = $2 AND expires_at > $3 AND key_epoch = \
             (SELECT w.key_epoch FROM wallets w WHERE w.id = presignatures.wallet_id) \
             THEN 1 END) AS ready, \
             COUNT(CASE WHEN state = 'consumed' THEN 1 END) AS consumed, \
             COUNT(*) AS generated \
             FROM presignatures WHERE wallet_id = $1 GROUP BY path, signers \
             ORDER BY path, signers",
        )
        .bind(wallet_id.as_str())
        .bind(epoch)
        .bind(now_ms)
        .fetch_all(self.pool())
        .await
        .context(|| format!("counting presignatures of wallet {wallet_id}"))?;
        rows.iter()
            .map(|row| {
                let text: String = get(row, "path", T)?;
                Ok(PoolLevel {
                    signers: parse_id_list(&get::<String>(row, "signers", T)?, T, &text)?,
                    ready: to_u64(get(row, "ready", T)?, T, &text)?,
                    consumed: to_u64(get(row, "consumed", T)?, T, &text)?,
                    generated: to_u64(get(row, "generated", T)?, T, &text)?,
                    path: parse_path(&text, T, &text)?,
                })
            })
            .collect()
    }

    /// Presignatures of `wallet_id` consumed at or after `since_ms` (pool usage statistics).
    pub async fn presignatures_consumed_since(
        &self,
        wallet_id: &WalletId,
        since_ms: i64,
    ) -> Result<u64> {
        const T: &str = "presignatures";
        let row = sqlx::query(
            "SELECT COUNT(*) AS used FROM presignatures \
             WHERE wallet_id = $1 AND state = 'consumed' AND consumed_at >= $2",
        )
        .bind(wallet_id.as_str())
        .bind(since_ms)
        .fetch_one(self.pool())
        .await
        .context(|| format!("counting used presignatures of wallet {wallet_id}"))?;
        to_u64(get(&row, "used", T)?, T, wallet_id.as_str())
    }

    /// Ready presignatures, of any epoch or age.
    pub(crate) async fn ready_presignature_count(&self) -> Result<u64> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM presignatures WHERE state = 'ready'")
                .fetch_one(self.pool())
                .await
                .context(|| "counting ready presignatures".into())?;
        to_u64(count, "presignatures", "*")
    }
}
