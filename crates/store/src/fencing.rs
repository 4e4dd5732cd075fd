//! Fencing tokens: the durable half of the cluster locks' safety (design invariant 7). Each
//! action a node accepts under a cluster lock or leadership carries that lock's fencing token;
//! the node remembers the highest token per resource and refuses lower ones, so a coordinator
//! whose lock expired (a paused process) cannot act after its successor has.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Context, Result, StoreError};
use crate::store::Store;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn token_i64(token: u64) -> Result<i64> {
    i64::try_from(token)
        .map_err(|_| StoreError::Invalid(format!("fencing token {token} out of range")))
}

impl Store {
    /// Admits `token` for `resource`: `true` if it is at least the highest token admitted for
    /// that resource so far (which it then becomes), `false` if a higher one was admitted
    /// before (the caller must refuse the action). One atomic statement: concurrent callers
    /// (other connections, other processes on the same database) cannot both pass with
    /// tokens out of order.
    pub async fn admit_fencing_token(&self, resource: &str, token: u64) -> Result<bool> {
        if resource.is_empty() {
            return Err(StoreError::Invalid("empty fencing resource".into()));
        }
        let value = token_i64(token)?;
        let affected = sqlx::query(
            "INSERT INTO fencing_tokens (resource, token, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (resource) DO UPDATE SET token = excluded.token, \
             updated_at = excluded.updated_at \
             WHERE fencing_tokens.token <= excluded.token",
        )
        .bind(resource)
        .bind(value)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .context(|| format!("admitting fencing_tokens/{resource}"))?
        .rows_affected();
        let admitted = affected == 1;
        if admitted {
            tracing::debug!(resource, token, "fencing token admitted");
        } else {
            tracing::warn!(resource, token, "stale fencing token refused");
        }
        Ok(admitted)
    }

    /// The highest fencing token admitted for `resource`.
    pub async fn fencing_token(&self, resource: &str) -> Result<Option<u64>> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT token FROM fencing_tokens WHERE resource = $1")
                .bind(resource)
                .fetch_optional(self.pool())
                .await
                .context(|| format!("reading fencing_tokens/{resource}"))?;
        row.map(|(token,)| {
            u64::try_from(token).map_err(|_| StoreError::Corrupt {
                table: "fencing_tokens",
                id: resource.to_owned(),
                reason: format!("negative token {token}"),
            })
        })
        .transpose()
    }
}
