//! The pool of pregenerated safe primes (sealed), taken one set per key generation.

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::crypto;
use crate::error::{Context, Result};
use crate::rows::to_u64;
use crate::store::{now_ms, Store};

impl Store {
    /// Adds one set of pregenerated primes (serialized) to the pool.
    pub async fn add_primes(&self, primes: &[u8]) -> Result<Uuid> {
        self.insert_primes(self.pool(), primes).await
    }

    /// [`Self::add_primes`] through `executor` (a transaction that returns them with another
    /// change).
    pub(crate) async fn insert_primes<'e, E>(&self, executor: E, primes: &[u8]) -> Result<Uuid>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let id = crypto::random_uuid()?;
        let sealed = self.seal("primes", &id.to_string(), primes)?;
        sqlx::query("INSERT INTO primes (id, sealed, created_at) VALUES ($1, $2, $3)")
            .bind(id.to_string())
            .bind(sealed)
            .bind(now_ms())
            .execute(executor)
            .await
            .context(|| format!("inserting primes/{id}"))?;
        Ok(id)
    }

    pub async fn primes_count(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM primes")
            .fetch_one(self.pool())
            .await
            .context(|| "counting primes".into())?;
        to_u64(count, "primes", "*")
    }

    /// Removes and returns the oldest set. A set is deleted before it is returned, so no two
    /// callers (or processes) ever get the same one.
    pub async fn take_primes(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        loop {
            let oldest: Option<String> =
                sqlx::query_scalar("SELECT id FROM primes ORDER BY created_at, id LIMIT 1")
                    .fetch_optional(self.pool())
                    .await
                    .context(|| "choosing primes".into())?;
            let Some(id) = oldest else {
                return Ok(None);
            };
            // Whoever deletes the row owns it; a caller that lost the race tries the next one.
            let sealed: Option<Vec<u8>> =
                sqlx::query_scalar("DELETE FROM primes WHERE id = $1 RETURNING sealed")
                    .bind(&id)
                    .fetch_optional(self.pool())
                    .await
                    .context(|| format!("taking primes/{id}"))?;
            if let Some(sealed) = sealed {
                return self.unseal("primes", &id, &sealed).map(Some);
            }
        }
    }
}
