//! What each wallet sent, for spending limits.

use mpc_types::WalletId;
use sqlx::Any;
use uuid::Uuid;

use crate::error::{Context, Result, StoreError};
use crate::store::Store;

/// A rolling spending limit that [`Store::begin_signing`] enforces in its own transaction, so
/// that concurrent signings cannot each pass it on their own: what a wallet sent since
/// `since_ms` plus this signing must stay within `max_sats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendLimit {
    pub max_sats: u64,
    pub since_ms: i64,
}

/// What `wallet_id` sent since `since_ms`, as recorded here.
pub(crate) async fn sum_spends<'e, E>(
    executor: E,
    wallet_id: &WalletId,
    since_ms: i64,
) -> Result<u64>
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
    .bind(wallet_id.as_str())
    .bind(since_ms)
    .fetch_one(executor)
    .await
    .context(|| format!("summing spends of {wallet_id}"))?;
    u64::try_from(spent).map_err(|_| StoreError::Corrupt {
        table: "spends",
        id: wallet_id.to_string(),
        reason: format!("negative total {spent}"),
    })
}

impl Store {
    /// Records that `wallet_id` sent `amount_sats` in signing session `session` (idempotent).
    pub async fn record_spend(
        &self,
        session: Uuid,
        wallet_id: &WalletId,
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
        .bind(wallet_id.as_str())
        .bind(amount)
        .bind(at_ms)
        .execute(self.pool())
        .await
        .context(|| format!("recording spends/{session}/{wallet_id}"))?;
        Ok(())
    }

    /// Total `wallet_id` sent since `since_ms`.
    pub async fn spent_since(&self, wallet_id: &WalletId, since_ms: i64) -> Result<u64> {
        sum_spends(self.pool(), wallet_id, since_ms).await
    }
}
