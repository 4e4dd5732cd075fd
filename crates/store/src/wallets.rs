//! Wallets and this node's key share of each (sealed), written together.

use mpc_types::WalletId;
use zeroize::Zeroizing;

use crate::error::{Context, Result, StoreError};
use crate::records::{id_list, WalletRecord, WalletState};
use crate::rows::{select_wallet, wallet_from_row};
use crate::store::{now_ms, Store};

impl Store {
    /// Inserts a wallet and this node's key share in one transaction.
    pub async fn insert_wallet(&self, wallet: &WalletRecord, share: &[u8]) -> Result<()> {
        let id = &wallet.id;
        let ctx = || format!("inserting wallets/{id}");
        let sealed = self.seal("key_shares", id.as_str(), share)?;
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO wallets (id, name, scheme, threshold, participants, network, public_key, \
             chain_code, state, session, created_at, activated_at, key_epoch, coordinator) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(&wallet.name)
        .bind(wallet.scheme.as_str())
        .bind(i64::from(wallet.threshold))
        .bind(id_list(&wallet.participants))
        .bind(wallet.network.as_str())
        .bind(wallet.public_key.to_string())
        .bind(hex::encode(wallet.chain_code.to_bytes()))
        .bind(wallet.state.as_str())
        .bind(wallet.session.to_string())
        .bind(wallet.created_at)
        .bind(wallet.activated_at)
        .bind(crate::rows::epoch_i64(wallet.key_epoch)?)
        .bind(wallet.coordinator.map(|c| i64::from(c.get())))
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                table: "wallets",
                id: id.to_string(),
            });
        }
        sqlx::query("INSERT INTO key_shares (wallet_id, sealed) VALUES ($1, $2)")
            .bind(id.as_str())
            .bind(sealed)
            .execute(&mut *tx)
            .await
            .context(ctx)?;
        tx.commit().await.context(ctx)
    }

    /// A resharing brings a wallet back to a node that once held it and no longer does (it
    /// left the committee: `retired`; or its joining aborted: `aborted`): the record becomes
    /// `wallet` (which must be `pending`, with the same group key and chain code) and the share
    /// is stored, in one transaction. Its commit or abort is then [`Self::set_wallet_state`].
    pub async fn rejoin_wallet(&self, wallet: &WalletRecord, share: &[u8]) -> Result<()> {
        let id = &wallet.id;
        let ctx = || format!("rejoining wallets/{id}");
        if wallet.state != WalletState::Pending {
            return Err(StoreError::Invalid(format!(
                "wallet {id} rejoins as pending, not {}",
                wallet.state
            )));
        }
        let sealed = self.seal("key_shares", id.as_str(), share)?;
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE wallets SET name = $2, scheme = $3, threshold = $4, participants = $5, \
             network = $6, state = 'pending', session = $7, activated_at = NULL, \
             key_epoch = $8, coordinator = $9 \
             WHERE id = $1 AND state IN ('retired', 'aborted') AND public_key = $10 \
             AND chain_code = $11",
        )
        .bind(id.as_str())
        .bind(&wallet.name)
        .bind(wallet.scheme.as_str())
        .bind(i64::from(wallet.threshold))
        .bind(id_list(&wallet.participants))
        .bind(wallet.network.as_str())
        .bind(wallet.session.to_string())
        .bind(crate::rows::epoch_i64(wallet.key_epoch)?)
        .bind(wallet.coordinator.map(|c| i64::from(c.get())))
        .bind(wallet.public_key.to_string())
        .bind(hex::encode(wallet.chain_code.to_bytes()))
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        if changed != 1 {
            return Err(StoreError::Invalid(format!(
                "wallet {id} is not a retired or aborted wallet of the same key here"
            )));
        }
        sqlx::query(
            "INSERT INTO key_shares (wallet_id, sealed) VALUES ($1, $2) \
             ON CONFLICT (wallet_id) DO UPDATE SET sealed = excluded.sealed",
        )
        .bind(id.as_str())
        .bind(sealed)
        .execute(&mut *tx)
        .await
        .context(ctx)?;
        tx.commit().await.context(ctx)
    }

    /// Moves a pending wallet to active (stamping `activated_at`) or aborted (deleting its key
    /// share in the same transaction). Setting the state it already has is a no-op; anything
    /// else is refused, so an active wallet's share can never be deleted here.
    pub async fn set_wallet_state(&self, id: &WalletId, state: WalletState) -> Result<()> {
        let ctx = || format!("setting wallets/{id} to {state}");
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE wallets SET state = $2, \
             activated_at = CASE WHEN $2 = 'active' THEN $3 ELSE activated_at END \
             WHERE id = $1 AND state = 'pending'",
        )
        .bind(id.as_str())
        .bind(state.as_str())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        if changed == 1 && state == WalletState::Aborted {
            sqlx::query("DELETE FROM key_shares WHERE wallet_id = $1")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .context(ctx)?;
        }
        if changed == 1 && state != WalletState::Pending {
            return tx.commit().await.context(ctx);
        }
        let current: Option<String> = sqlx::query_scalar("SELECT state FROM wallets WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .context(ctx)?;
        tx.rollback().await.context(ctx)?;
        match current {
            None => Err(StoreError::NotFound {
                table: "wallets",
                id: id.to_string(),
            }),
            Some(current) if current == state.as_str() => Ok(()),
            Some(current) => Err(StoreError::InvalidTransition {
                id: id.to_string(),
                from: current,
                to: state.to_string(),
            }),
        }
    }

    pub async fn wallet(&self, id: &WalletId) -> Result<Option<WalletRecord>> {
        sqlx::query(select_wallet!("WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await
            .context(|| format!("reading wallets/{id}"))?
            .as_ref()
            .map(wallet_from_row)
            .transpose()
    }

    /// The wallets whose keygen this node has not heard decided, oldest first.
    pub async fn pending_wallets(&self) -> Result<Vec<WalletRecord>> {
        sqlx::query(select_wallet!(
            "WHERE state = 'pending' ORDER BY created_at, id"
        ))
        .fetch_all(self.pool())
        .await
        .context(|| "listing pending wallets".into())?
        .iter()
        .map(wallet_from_row)
        .collect()
    }

    /// Every wallet, oldest first.
    pub async fn wallets(&self) -> Result<Vec<WalletRecord>> {
        sqlx::query(select_wallet!("ORDER BY created_at, id"))
            .fetch_all(self.pool())
            .await
            .context(|| "listing wallets".into())?
            .iter()
            .map(wallet_from_row)
            .collect()
    }

    pub async fn key_share(&self, wallet_id: &WalletId) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT sealed FROM key_shares WHERE wallet_id = $1")
                .bind(wallet_id.as_str())
                .fetch_optional(self.pool())
                .await
                .context(|| format!("reading key_shares/{wallet_id}"))?;
        sealed
            .map(|sealed| self.unseal("key_shares", wallet_id.as_str(), &sealed))
            .transpose()
    }

    /// This node's share of `wallet_id` with the key epoch it is of, read together (a refresh
    /// commit changes both in one transaction).
    pub async fn key_share_with_epoch(
        &self,
        wallet_id: &WalletId,
    ) -> Result<Option<(u64, Zeroizing<Vec<u8>>)>> {
        let wallet_id = wallet_id.as_str();
        let row: Option<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT k.sealed, w.key_epoch FROM key_shares k JOIN wallets w ON w.id = k.wallet_id \
             WHERE k.wallet_id = $1",
        )
        .bind(wallet_id)
        .fetch_optional(self.pool())
        .await
        .context(|| format!("reading key_shares/{wallet_id}"))?;
        row.map(|(sealed, epoch)| {
            Ok((
                crate::rows::to_u64(epoch, "wallets", wallet_id)?,
                self.unseal("key_shares", wallet_id, &sealed)?,
            ))
        })
        .transpose()
    }
}
