//! Key refresh, the store's half of the two-phase switch: a refreshed share waits as pending
//! (at most one per wallet, for the wallet's next key epoch) until its refresh commits. The
//! commit moves it over the active share, bumps the wallet's key epoch and retires every
//! presignature of an older key epoch, in one transaction; an abort deletes it. An ECDSA
//! refresh also holds a pending aux info of the same session (`aux_info`): it is committed and
//! dropped in the same transaction as the share.
//!
//! A resharing uses the same rows with the wallet's new [`Committee`]: its commit also moves
//! the wallet to the new participants and threshold, and on a node that leaves the committee
//! (a dealer that receives nothing) deletes the share and marks the wallet `retired`.

use mpc_types::{NodeId, WalletId};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{Context, Result, StoreError};
use crate::records::PendingShare;
use crate::records::{id_list, parse_id_list};
use crate::rows::{epoch_i64, get, parse_uuid, to_node_id, to_u64, to_wallet_id};
use crate::store::{now_ms, Store};

const PENDING: &str = "pending_key_shares";

/// What a committed refresh changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEpochCommit {
    /// The wallet's key epoch now.
    pub key_epoch: u64,
    /// Ready presignatures of older key epochs, retired with their secrets deleted (with an
    /// ECDSA refresh's new aux info, those of the node set's other ECDSA wallets too).
    pub presignatures_retired: u64,
    /// An ECDSA refresh: its new aux info replaced the node set's.
    pub aux_info_replaced: bool,
    /// With the aux info: the node set's other ECDSA wallets, moved to their next key epoch
    /// (same shares, new aux info).
    pub other_wallets: Vec<WalletId>,
    /// A resharing this node left: its share is deleted and the wallet is `retired` here.
    pub retired: bool,
}

/// The participants and threshold a resharing moves a wallet to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committee {
    /// Node ids, sorted.
    pub participants: Vec<NodeId>,
    pub threshold: u16,
}

/// The sealing's row name: bound to the epoch, so a pending share cannot be replayed as
/// another epoch's.
fn pending_ad(wallet_id: &str, key_epoch: u64) -> String {
    format!("{wallet_id}/{key_epoch}")
}

impl Store {
    /// Stores `share` as the pending share of active wallet `wallet_id` for `key_epoch`, which
    /// must be the wallet's key epoch plus one. Replaces a pending share left by an earlier,
    /// undecided refresh (only one refresh runs at a time: the ceremony lock).
    pub async fn put_pending_share(
        &self,
        wallet_id: &WalletId,
        key_epoch: u64,
        session: Uuid,
        coordinator: NodeId,
        share: &[u8],
    ) -> Result<()> {
        self.put_pending(wallet_id, key_epoch, (session, coordinator), share, None)
            .await
    }

    /// A resharing's [`Self::put_pending_share`]: `share` is this node's new share, `None` for
    /// a dealer that leaves the committee (then `committee` must not include this node).
    pub async fn put_pending_reshare(
        &self,
        wallet_id: &WalletId,
        key_epoch: u64,
        (session, coordinator): (Uuid, NodeId),
        share: Option<&[u8]>,
        committee: &Committee,
    ) -> Result<()> {
        let member = committee.participants.contains(&self.node_id());
        if member != share.is_some() {
            return Err(StoreError::Invalid(format!(
                "a pending resharing of wallet {wallet_id} on node {}: a share if and only if \
                 the node is in the new committee {:?}",
                self.node_id(),
                committee.participants
            )));
        }
        let share = share.unwrap_or_default();
        let committee = Some(committee);
        self.put_pending(
            wallet_id,
            key_epoch,
            (session, coordinator),
            share,
            committee,
        )
        .await
    }

    async fn put_pending(
        &self,
        wallet_id: &WalletId,
        key_epoch: u64,
        (session, coordinator): (Uuid, NodeId),
        share: &[u8],
        committee: Option<&Committee>,
    ) -> Result<()> {
        let wallet_id = wallet_id.as_str();
        let ctx = || format!("storing {PENDING}/{wallet_id}");
        let sealed = self.seal(PENDING, &pending_ad(wallet_id, key_epoch), share)?;
        let mut tx = self.begin_write().await?;
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT state, key_epoch FROM wallets WHERE id = $1")
                .bind(wallet_id)
                .fetch_optional(&mut *tx)
                .await
                .context(ctx)?;
        let Some((state, current)) = row else {
            return Err(StoreError::NotFound {
                table: "wallets",
                id: wallet_id.to_owned(),
            });
        };
        let current = to_u64(current, "wallets", wallet_id)?;
        if state != "active" || current.checked_add(1) != Some(key_epoch) {
            return Err(StoreError::Invalid(format!(
                "a pending share of wallet {wallet_id} for key epoch {key_epoch}, but the \
                 wallet is {state} at key epoch {current}"
            )));
        }
        sqlx::query(
            "INSERT INTO pending_key_shares (wallet_id, key_epoch, session, coordinator, \
             sealed, created_at, participants, threshold) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (wallet_id) DO UPDATE SET key_epoch = excluded.key_epoch, \
             session = excluded.session, coordinator = excluded.coordinator, \
             sealed = excluded.sealed, created_at = excluded.created_at, \
             participants = excluded.participants, threshold = excluded.threshold",
        )
        .bind(wallet_id)
        .bind(epoch_i64(key_epoch)?)
        .bind(session.to_string())
        .bind(i64::from(coordinator.get()))
        .bind(sealed)
        .bind(now_ms())
        .bind(committee.map(|c| id_list(&c.participants)))
        .bind(committee.map(|c| i64::from(c.threshold)))
        .execute(&mut *tx)
        .await
        .context(ctx)?;
        tx.commit().await.context(ctx)
    }

    /// Every pending share's public part (a restarted node asks each one's coordinator for
    /// the decision).
    pub async fn pending_shares(&self) -> Result<Vec<PendingShare>> {
        let rows = sqlx::query(
            "SELECT wallet_id, key_epoch, session, coordinator, created_at \
             FROM pending_key_shares ORDER BY created_at, wallet_id",
        )
        .fetch_all(self.pool())
        .await
        .context(|| format!("listing {PENDING}"))?;
        rows.iter()
            .map(|row| {
                let id: String = get(row, "wallet_id", PENDING)?;
                Ok(PendingShare {
                    key_epoch: to_u64(get(row, "key_epoch", PENDING)?, PENDING, &id)?,
                    session: parse_uuid(&get::<String>(row, "session", PENDING)?, PENDING, &id)?,
                    coordinator: to_node_id(get(row, "coordinator", PENDING)?, PENDING, &id)?,
                    created_at: get(row, "created_at", PENDING)?,
                    wallet_id: to_wallet_id(id, PENDING, "")?,
                })
            })
            .collect()
    }

    /// Commits the pending share of `session`: it replaces the active share, the wallet's key
    /// epoch becomes the share's, and the wallet's ready presignatures of other key epochs are
    /// retired; the session's pending aux info, if any (an ECDSA refresh), replaces the node
    /// set's (`commit_refresh_aux_info_in`); all in one transaction. A session with no pending
    /// share (aborted, never stored, or already committed) is an error.
    pub async fn commit_pending_share(
        &self,
        wallet_id: &WalletId,
        session: Uuid,
        now_ms: i64,
    ) -> Result<KeyEpochCommit> {
        let wallet_id = wallet_id.as_str();
        let ctx = || format!("committing {PENDING}/{wallet_id}");
        let mut tx = self.begin_write().await?;
        #[allow(clippy::type_complexity)]
        let pending: Option<(i64, Vec<u8>, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT key_epoch, sealed, participants, threshold FROM pending_key_shares \
             WHERE wallet_id = $1 AND session = $2",
        )
        .bind(wallet_id)
        .bind(session.to_string())
        .fetch_optional(&mut *tx)
        .await
        .context(ctx)?;
        let Some((key_epoch, sealed, participants, threshold)) = pending else {
            return Err(StoreError::NotFound {
                table: PENDING,
                id: format!("{wallet_id} of session {session}"),
            });
        };
        let new_epoch = to_u64(key_epoch, PENDING, wallet_id)?;
        let share = self.unseal(PENDING, &pending_ad(wallet_id, new_epoch), &sealed)?;
        let active = self.seal("key_shares", wallet_id, &share)?;
        // A resharing's committee (none for a refresh), and whether this node leaves it.
        let committee = match (participants, threshold) {
            (Some(p), Some(t)) => Some((
                parse_id_list(&p, PENDING, wallet_id)?,
                u16::try_from(t).map_err(|_| StoreError::Corrupt {
                    table: PENDING,
                    id: wallet_id.to_owned(),
                    reason: format!("threshold {t}"),
                })?,
            )),
            _ => None,
        };
        let retired = committee
            .as_ref()
            .is_some_and(|(p, _)| !p.contains(&self.node_id()));
        let bumped = sqlx::query(
            "UPDATE wallets SET key_epoch = $2, key_epoch_at = $4, \
             participants = COALESCE($5, participants), threshold = COALESCE($6, threshold), \
             state = $7 WHERE id = $1 AND state = 'active' AND key_epoch = $3",
        )
        .bind(wallet_id)
        .bind(key_epoch)
        .bind(key_epoch - 1)
        .bind(now_ms)
        .bind(committee.as_ref().map(|(p, _)| id_list(p)))
        .bind(committee.as_ref().map(|(_, t)| i64::from(*t)))
        .bind(if retired { "retired" } else { "active" })
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        if bumped != 1 {
            return Err(StoreError::Invalid(format!(
                "wallet {wallet_id} is not active at key epoch {}",
                key_epoch - 1
            )));
        }
        if retired {
            sqlx::query("DELETE FROM key_shares WHERE wallet_id = $1")
                .bind(wallet_id)
                .execute(&mut *tx)
                .await
                .context(ctx)?;
        } else {
            // An upsert: a node being repaired may have lost its share row.
            sqlx::query(
                "INSERT INTO key_shares (wallet_id, sealed) VALUES ($1, $2) \
                 ON CONFLICT (wallet_id) DO UPDATE SET sealed = excluded.sealed",
            )
            .bind(wallet_id)
            .bind(active)
            .execute(&mut *tx)
            .await
            .context(ctx)?;
        }
        let presignatures_retired = sqlx::query(
            "UPDATE presignatures SET state = 'expired', sealed = NULL \
             WHERE wallet_id = $1 AND state = 'ready' AND key_epoch <> $2",
        )
        .bind(wallet_id)
        .bind(key_epoch)
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        let aux = self
            .commit_refresh_aux_info_in(&mut tx, wallet_id, session)
            .await?;
        sqlx::query("DELETE FROM pending_key_shares WHERE wallet_id = $1")
            .bind(wallet_id)
            .execute(&mut *tx)
            .await
            .context(ctx)?;
        tx.commit().await.context(ctx)?;
        Ok(KeyEpochCommit {
            key_epoch: new_epoch,
            presignatures_retired: presignatures_retired
                + aux.as_ref().map_or(0, |a| a.presignatures_retired),
            aux_info_replaced: aux.is_some(),
            other_wallets: aux.map(|a| a.other_wallets).unwrap_or_default(),
            retired,
        })
    }

    /// When `wallet_id`'s current key epoch began: its last refresh's commit here, else the
    /// wallet's activation, else its creation (`None` for an unknown wallet).
    pub async fn key_epoch_began(&self, wallet_id: &WalletId) -> Result<Option<i64>> {
        let row: Option<(Option<i64>, Option<i64>, i64)> = sqlx::query_as(
            "SELECT key_epoch_at, activated_at, created_at FROM wallets WHERE id = $1",
        )
        .bind(wallet_id.as_str())
        .fetch_optional(self.pool())
        .await
        .context(|| format!("reading the key epoch of wallet {wallet_id}"))?;
        Ok(row.map(|(refreshed, activated, created)| refreshed.or(activated).unwrap_or(created)))
    }

    /// Deletes the pending share of `session` (the refresh aborted or was never decided) and
    /// the session's pending aux info, if any, with its primes back in the pool, in one
    /// transaction. `false` if there was no pending share.
    pub async fn drop_pending_share(&self, wallet_id: &WalletId, session: Uuid) -> Result<bool> {
        let wallet_id = wallet_id.as_str();
        let ctx = || format!("dropping {PENDING}/{wallet_id}");
        let mut tx = self.begin_write().await?;
        let deleted =
            sqlx::query("DELETE FROM pending_key_shares WHERE wallet_id = $1 AND session = $2")
                .bind(wallet_id)
                .bind(session.to_string())
                .execute(&mut *tx)
                .await
                .context(ctx)?
                .rows_affected();
        self.drop_pending_aux_info_in(&mut tx, session).await?;
        tx.commit().await.context(ctx)?;
        Ok(deleted == 1)
    }

    /// The pending share itself, unsealed (tests compare shares; the node never reads it
    /// before the commit moves it).
    pub async fn pending_share(
        &self,
        wallet_id: &WalletId,
    ) -> Result<Option<(u64, Zeroizing<Vec<u8>>)>> {
        let wallet_id = wallet_id.as_str();
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT key_epoch, sealed FROM pending_key_shares WHERE wallet_id = $1")
                .bind(wallet_id)
                .fetch_optional(self.pool())
                .await
                .context(|| format!("reading {PENDING}/{wallet_id}"))?;
        row.map(|(epoch, sealed)| {
            let epoch = to_u64(epoch, PENDING, wallet_id)?;
            let share = self.unseal(PENDING, &pending_ad(wallet_id, epoch), &sealed)?;
            Ok((epoch, share))
        })
        .transpose()
    }
}
