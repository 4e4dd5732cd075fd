//! Fencing tokens a node acted under: per resource, the last token the node checked against
//! the lock service and admitted (`mpc_node::locks`). The check is what guards: a token is
//! admitted only if etcd shows it as the current holder's, so nothing here can refuse a
//! token, and nothing a peer sends unchecked is written here (design invariant 10). The
//! record is for operators, and lets the node warn when etcd's holder is below what it
//! recorded (etcd recreated, or a value that older versions stored from a peer unchecked).
//!
//! Tokens are cluster state that etcd owns: backups do not carry this table (`backup/`).

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
    /// Records `token` as the token this node last acted under for `resource`, replacing
    /// whatever was recorded, higher or lower. Call it only with a token checked against the
    /// lock service.
    pub async fn record_fencing_token(&self, resource: &str, token: u64) -> Result<()> {
        if resource.is_empty() {
            return Err(StoreError::Invalid("empty fencing resource".into()));
        }
        sqlx::query(
            "INSERT INTO fencing_tokens (resource, token, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (resource) DO UPDATE SET token = excluded.token, \
             updated_at = excluded.updated_at",
        )
        .bind(resource)
        .bind(token_i64(token)?)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .context(|| format!("recording fencing_tokens/{resource}"))?;
        Ok(())
    }

    /// The token this node last acted under for `resource`.
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
