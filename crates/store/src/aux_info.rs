//! This node's aux info (sealed) per node set, with its public digest; and the pending one a
//! ceremony made, until its coordinator commits it (then it is the node set's aux info) or
//! aborts it (then it is deleted and its primes go back to the pool). An ECDSA key refresh
//! makes a pending aux info too, over the node set's current one; it is committed and dropped
//! with the refreshed share (`key_epochs`).

use mpc_types::{NodeId, Scheme, WalletId};
use sqlx::{Any, Transaction};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{Context, Result, StoreError};
use crate::records::{id_list, parse_id_list, PendingAuxInfo};
use crate::rows::{get, parse_uuid, to_node_id};
use crate::store::{now_ms, Store};

/// Stores or replaces a node set's aux info: `$1` node set, `$2` sealed, `$3` public digest,
/// `$4` session, `$5` time.
const UPSERT_AUX_INFO: &str = "INSERT INTO aux_info (node_set, sealed, public_digest, session, \
     created_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (node_set) DO UPDATE SET sealed = excluded.sealed, \
     public_digest = excluded.public_digest, session = excluded.session, \
     created_at = excluded.created_at";

/// What a pending aux info will be: the node set's first, or the new one of an ECDSA key
/// refresh, which replaces the current one when the refresh commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingAuxInfoFor {
    FirstOfNodeSet,
    Refresh,
}

/// What committing a refresh's pending aux info changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct AuxInfoReplaced {
    /// The other ECDSA wallets of the node set, moved to their next key epoch.
    pub other_wallets: Vec<WalletId>,
    /// Their ready presignatures (made under the old Paillier keys), retired.
    pub presignatures_retired: u64,
}

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
        sqlx::query(UPSERT_AUX_INFO)
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
    /// ceremony `session`, until its coordinator decides. Refused while the node set has
    /// another pending one (its ceremony is undecided: it is settled first), and, unless it is
    /// for a refresh, while the node set has aux info.
    pub async fn put_pending_aux_info(
        &self,
        node_set: &[NodeId],
        (session, coordinator): (Uuid, NodeId),
        aux: (&[u8], &str),
        primes: &[u8],
        purpose: PendingAuxInfoFor,
    ) -> Result<()> {
        let set = id_list(node_set);
        let ctx = || format!("storing {PENDING}/{set}");
        let sealed = self.seal(PENDING, &pending_ad(&set, session, "aux"), aux.0)?;
        let primes = self.seal(PENDING, &pending_ad(&set, session, "primes"), primes)?;
        let mut tx = self.begin_write().await?;
        let held: Option<String> = match purpose {
            PendingAuxInfoFor::FirstOfNodeSet => sqlx::query_scalar(
                "SELECT 'active' FROM aux_info WHERE node_set = $1 \
                 UNION ALL SELECT session FROM pending_aux_info WHERE node_set = $1",
            ),
            PendingAuxInfoFor::Refresh => {
                sqlx::query_scalar("SELECT session FROM pending_aux_info WHERE node_set = $1")
            }
        }
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
        // A plain insert: over the node set's aux info only a refresh's commit writes.
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
        match self.drop_pending_aux_info_in(&mut tx, session).await? {
            Some(dropped) if dropped == set => {
                tx.commit().await.context(ctx)?;
                Ok(true)
            }
            // Another node set's (not this call's to drop: rolled back) or none.
            _ => Ok(false),
        }
    }

    /// In `tx`: deletes the pending aux info of `session`, if any, and puts its primes back in
    /// the pool. The node set it was for.
    pub(crate) async fn drop_pending_aux_info_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        session: Uuid,
    ) -> Result<Option<String>> {
        let ctx = || format!("dropping the {PENDING} of session {session}");
        let row: Option<(String, Vec<u8>)> = sqlx::query_as(
            "DELETE FROM pending_aux_info WHERE session = $1 RETURNING node_set, primes",
        )
        .bind(session.to_string())
        .fetch_optional(&mut **tx)
        .await
        .context(ctx)?;
        let Some((set, primes)) = row else {
            return Ok(None);
        };
        let primes = self.unseal(PENDING, &pending_ad(&set, session, "primes"), &primes)?;
        self.insert_primes(&mut **tx, &primes).await?;
        Ok(Some(set))
    }

    /// In `tx`, for the commit of ECDSA wallet `refreshed`'s refresh `session`: its pending aux
    /// info, if any, replaces the node set's aux info; every other ECDSA wallet of the node
    /// set moves to its next key epoch (its share is unchanged, its signing material is not:
    /// presignatures, signings and cached shares of the old epoch all used the old Paillier
    /// keys) and its ready presignatures are retired. `None` if the refresh made no aux info.
    pub(crate) async fn commit_refresh_aux_info_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        refreshed: &str,
        session: Uuid,
    ) -> Result<Option<AuxInfoReplaced>> {
        let ctx = || format!("committing the {PENDING} of refresh {session}");
        let pending: Option<(String, Vec<u8>, String)> = sqlx::query_as(
            "DELETE FROM pending_aux_info WHERE session = $1 \
             RETURNING node_set, sealed, public_digest",
        )
        .bind(session.to_string())
        .fetch_optional(&mut **tx)
        .await
        .context(ctx)?;
        let Some((set, sealed, digest)) = pending else {
            return Ok(None);
        };
        let wallets: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM wallets WHERE scheme = $1 AND participants = $2 \
             AND state = 'active' ORDER BY id",
        )
        .bind(Scheme::Ecdsa.as_str())
        .bind(&set)
        .fetch_all(&mut **tx)
        .await
        .context(ctx)?;
        if !wallets.iter().any(|w| w == refreshed) {
            return Err(StoreError::Invalid(format!(
                "the aux info of refresh {session} is for node set {set}, which active ECDSA \
                 wallet {refreshed} is not on"
            )));
        }
        let aux = self.unseal(PENDING, &pending_ad(&set, session, "aux"), &sealed)?;
        sqlx::query(UPSERT_AUX_INFO)
            .bind(&set)
            .bind(self.seal("aux_info", &set, &aux)?)
            .bind(digest)
            .bind(session.to_string())
            .bind(now_ms())
            .execute(&mut **tx)
            .await
            .context(ctx)?;
        // Both statements select the node set's other active ECDSA wallets, as listed above.
        sqlx::query(
            "UPDATE wallets SET key_epoch = key_epoch + 1 WHERE scheme = $1 \
             AND participants = $2 AND state = 'active' AND id <> $3",
        )
        .bind(Scheme::Ecdsa.as_str())
        .bind(&set)
        .bind(refreshed)
        .execute(&mut **tx)
        .await
        .context(ctx)?;
        let presignatures_retired = sqlx::query(
            "UPDATE presignatures SET state = 'expired', sealed = NULL \
             WHERE state = 'ready' AND wallet_id IN (SELECT id FROM wallets WHERE scheme = $1 \
             AND participants = $2 AND state = 'active' AND id <> $3)",
        )
        .bind(Scheme::Ecdsa.as_str())
        .bind(&set)
        .bind(refreshed)
        .execute(&mut **tx)
        .await
        .context(ctx)?
        .rows_affected();
        let replaced = AuxInfoReplaced {
            other_wallets: wallets
                .into_iter()
                .filter(|w| w != refreshed)
                .map(|id| crate::rows::to_wallet_id(id, "wallets", ""))
                .collect::<Result<_>>()?,
            presignatures_retired,
        };
        Ok(Some(replaced))
    }
}
