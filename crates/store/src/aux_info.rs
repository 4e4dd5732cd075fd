//! This node's aux info (sealed) per node set, with its public digest; and the pending one a
//! ceremony made, until its coordinator commits it (then it is the node set's aux info) or
//! aborts it (then it is deleted and its primes go back to the pool).

use mpc_types::NodeId;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{Context, Result, StoreError};
use crate::records::{id_list, parse_id_list, PendingAuxInfo};
use crate::rows::{get, parse_uuid, to_node_id};
use crate::store::{now_ms, Store};

impl Store {
    /// Stores (or replaces) this node's aux info for a node set.
    pub async fn put_aux_info(
        &self,
        node_set: &[NodeId],
        aux: &[u8],
        public_digest: &str,
        session: Uuid,
    ) -> Result<()> {
        let set = id_list(node_set);
        let sealed = self.seal("aux_info", &set, aux)?;
        sqlx::query(
            "INSERT INTO aux_info (node_set, sealed, public_digest, session, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_set) DO UPDATE SET sealed = excluded.sealed, \
             public_digest = excluded.public_digest, session = excluded.session, \
             created_at = excluded.created_at",
        )
        .bind(&set)
        .bind(sealed)
        .bind(public_digest)
        .bind(session.to_string())
        .bind(now_ms())
        .execute(self.pool())
        .await
        .context(|| format!("storing aux_info/{set}"))?;
        Ok(())
    }

    /// The aux info and its public digest for a node set (in any order).
    pub async fn aux_info(
        &self,
        node_set: &[NodeId],
    ) -> Result<Option<(Zeroizing<Vec<u8>>, String)>> {
        let set = id_list(node_set);
        let row = sqlx::query("SELECT sealed, public_digest FROM aux_info WHERE node_set = $1")
            .bind(&set)
            .fetch_optional(self.pool())
            .await
            .context(|| format!("reading aux_info/{set}"))?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = get(&row, "sealed", "aux_info")?;
        let digest: String = get(&row, "public_digest", "aux_info")?;
        Ok(Some((self.unseal("aux_info", &set, &sealed)?, digest)))
    }
}

const PENDING: &str = "pending_aux_info";

/// The sealing's row names of a pending aux info and of its primes: bound to the session, so
/// neither can be replayed as another ceremony's, or as the other.
fn pending_ad(set: &str, session: Uuid, part: &str) -> String {
    format!("{set}/{session}/{part}")
}

impl Store {
    /// Stores `aux` (made from `primes`) as this node's pending aux info for `node_set` from
    /// ceremony `session`, until its coordinator decides. Refused while the node set has aux
    /// info, or another pending one (its ceremony is undecided: it is settled first).
    pub async fn put_pending_aux_info(
        &self,
        node_set: &[NodeId],
        session: Uuid,
        coordinator: NodeId,
        aux: (&[u8], &str),
        primes: &[u8],
    ) -> Result<()> {
        let set = id_list(node_set);
        let ctx = || format!("storing {PENDING}/{set}");
        let sealed = self.seal(PENDING, &pending_ad(&set, session, "aux"), aux.0)?;
        let primes = self.seal(PENDING, &pending_ad(&set, session, "primes"), primes)?;
        let mut tx = self.begin_write().await?;
        let held: Option<String> = sqlx::query_scalar(
            "SELECT 'active' FROM aux_info WHERE node_set = $1 \
             UNION ALL SELECT session FROM pending_aux_info WHERE node_set = $1",
        )
        .bind(&set)
        .fetch_optional(&mut *tx)
        .await
        .context(ctx)?;
        if let Some(held) = held {
            return Err(StoreError::Invalid(format!(
                "node set {set} already has aux info ({held})"
            )));
        }
        sqlx::query(
            "INSERT INTO pending_aux_info (node_set, session, coordinator, sealed, \
             public_digest, primes, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&set)
        .bind(session.to_string())
        .bind(i64::from(coordinator.get()))
        .bind(sealed)
        .bind(aux.1)
        .bind(primes)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .context(ctx)?;
        tx.commit().await.context(ctx)
    }

    /// Every pending aux info's public part (each is settled by asking its coordinator).
    pub async fn pending_aux_infos(&self) -> Result<Vec<PendingAuxInfo>> {
        let rows = sqlx::query(
            "SELECT node_set, session, coordinator, public_digest, created_at \
             FROM pending_aux_info ORDER BY created_at, node_set",
        )
        .fetch_all(self.pool())
        .await
        .context(|| format!("listing {PENDING}"))?;
        rows.iter()
            .map(|row| {
                let set: String = get(row, "node_set", PENDING)?;
                Ok(PendingAuxInfo {
                    node_set: parse_id_list(&set, PENDING, &set)?,
                    session: parse_uuid(&get::<String>(row, "session", PENDING)?, PENDING, &set)?,
                    coordinator: to_node_id(get(row, "coordinator", PENDING)?, PENDING, &set)?,
                    public_digest: get(row, "public_digest", PENDING)?,
                    created_at: get(row, "created_at", PENDING)?,
                })
            })
            .collect()
    }

    /// Commits the pending aux info of `session`: it becomes the node set's aux info, in one
    /// transaction (its primes are deleted with the pending row: they are in the aux info).
    /// An error if there is none (aborted, or never stored).
    pub async fn commit_pending_aux_info(&self, node_set: &[NodeId], session: Uuid) -> Result<()> {
        let set = id_list(node_set);
        let ctx = || format!("committing {PENDING}/{set}");
        let mut tx = self.begin_write().await?;
        let pending: Option<(Vec<u8>, String)> = sqlx::query_as(
            "DELETE FROM pending_aux_info WHERE node_set = $1 AND session = $2 \
             RETURNING sealed, public_digest",
        )
        .bind(&set)
        .bind(session.to_string())
        .fetch_optional(&mut *tx)
        .await
        .context(ctx)?;
        let Some((sealed, digest)) = pending else {
            return Err(StoreError::NotFound {
                table: PENDING,
                id: format!("{set} of session {session}"),
            });
        };
        let aux = self.unseal(PENDING, &pending_ad(&set, session, "aux"), &sealed)?;
        let active = self.seal("aux_info", &set, &aux)?;
        sqlx::query(
            "INSERT INTO aux_info (node_set, sealed, public_digest, session, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&set)
        .bind(active)
        .bind(digest)
        .bind(session.to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .context(ctx)?;
        tx.commit().await.context(ctx)
    }

    /// Deletes the pending aux info of `session` (its ceremony aborted) and puts the primes it
    /// was made from back in the pool, in one transaction. `false` if there was none.
    pub async fn drop_pending_aux_info(&self, node_set: &[NodeId], session: Uuid) -> Result<bool> {
        let set = id_list(node_set);
        let ctx = || format!("dropping {PENDING}/{set}");
        let mut tx = self.begin_write().await?;
        let primes: Option<Vec<u8>> = sqlx::query_scalar(
            "DELETE FROM pending_aux_info WHERE node_set = $1 AND session = $2 RETURNING primes",
        )
        .bind(&set)
        .bind(session.to_string())
        .fetch_optional(&mut *tx)
        .await
        .context(ctx)?;
        let Some(primes) = primes else {
            return Ok(false);
        };
        let primes = self.unseal(PENDING, &pending_ad(&set, session, "primes"), &primes)?;
        self.insert_primes(&mut *tx, &primes).await?;
        tx.commit().await.context(ctx)?;
        Ok(true)
    }
}
