//! A signer's one durable step before it signs ([`Store::begin_signing`]): the session, the
//! spends against a limit, and the presignatures consumed, in one transaction.

use mpc_types::{DerivationPath, NodeId, WalletId};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::connection::Durability;
use crate::error::{Context, Result, StoreError};
use crate::meta::{count_consumed, read_epoch};
use crate::presignatures::{claim_presignature, Claim};
use crate::records::Backend;
use crate::rows::epoch_i64;
use crate::spends::{sum_spends, SpendLimit};
use crate::store::Store;

/// A presignature a signer means to use, with what it must be bound to.
#[derive(Debug, Clone, Copy)]
pub struct PresignatureUse<'a> {
    pub id: &'a str,
    pub wallet_id: &'a WalletId,
    pub path: &'a DerivationPath,
    pub signers: &'a [NodeId],
}

/// Why [`Store::begin_signing`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningRefusal {
    /// The session id was used before (a replayed proposal).
    SessionUsed,
    /// This presignature was already used, has expired, is of an old epoch, or is unknown.
    PresignatureUnavailable(String),
    /// This presignature is bound to another wallet, path or signer set (described).
    PresignatureBoundElsewhere { id: String, bound_to: String },
    /// The wallet already sent `spent_sats` within the limit's window; `amount_sats` more
    /// would exceed `max_sats`.
    SpendLimit {
        wallet_id: WalletId,
        spent_sats: u64,
        amount_sats: u64,
        max_sats: u64,
    },
}

/// What a signer's commit must survive (reasons at [`Store::begin_signing`]).
fn signing_durability(consumes_presignatures: bool, limit: Option<SpendLimit>) -> Durability {
    if consumes_presignatures || limit.is_some() {
        Durability::PowerCut
    } else {
        Durability::ProcessCrash
    }
}

impl Store {
    /// A signer's one durable step before anything it signs leaves the node, in one committed
    /// transaction (one commit, not three, on the signing path): the session is marked seen
    /// (a replay is refused), the amounts the transaction sends are checked against `limit`
    /// (when given) and recorded, and every presignature named is consumed (all or none). On
    /// success it returns the presignature secrets, in order.
    ///
    /// Consumed presignatures are counted in the same transaction, and when the store has a
    /// rollback guard file, the secrets are returned only once that file holds the count
    /// (see `rollback.rs`): a store copied back to before this commit is then recognized.
    ///
    /// The commit is fsync'd (`Durability::PowerCut`) when it consumes a presignature
    /// (invariant 1: reused, it would reveal the key) or counts a spend against a limit.
    /// Otherwise (FROST, or ECDSA signing without a presignature, and no limit) it need only
    /// survive a crash of this process: both protocols draw fresh nonces on every run, so a
    /// session forgotten in a power cut and replayed afterwards would sign the same sighashes
    /// again and reveal nothing; it saves an fsync on every such signing.
    pub async fn begin_signing(
        &self,
        session: Uuid,
        presignatures: &[PresignatureUse<'_>],
        spends: &[(&WalletId, u64)],
        limit: Option<SpendLimit>,
        now_ms: i64,
    ) -> Result<std::result::Result<Vec<Zeroizing<Vec<u8>>>, SigningRefusal>> {
        let ctx = || format!("starting signing session {session}");
        let durability = signing_durability(!presignatures.is_empty(), limit);
        let mut tx = self.begin_write_for(durability).await?;
        let seen = sqlx::query(
            "INSERT INTO sessions_seen (session, protocol, seen_at) VALUES ($1, 'sign', $2) \
             ON CONFLICT (session) DO NOTHING",
        )
        .bind(session.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        if seen != 1 {
            tx.rollback().await.context(ctx)?;
            return Ok(Err(SigningRefusal::SessionUsed));
        }
        if let Some(limit) = limit {
            let mut by_wallet: Vec<&(&WalletId, u64)> = spends.iter().collect();
            by_wallet.sort(); // one lock order for every signing
            for &&(wallet_id, amount_sats) in &by_wallet {
                if self.backend() == Backend::Postgres {
                    // Signings of one wallet take turns here, so the sum below sees every
                    // spend committed before; SQLite's BEGIN IMMEDIATE already serializes.
                    sqlx::query("SELECT id FROM wallets WHERE id = $1 FOR UPDATE")
                        .bind(wallet_id.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .context(ctx)?;
                }
                let spent_sats = sum_spends(&mut *tx, wallet_id, limit.since_ms).await?;
                if spent_sats.saturating_add(amount_sats) > limit.max_sats {
                    tx.rollback().await.context(ctx)?;
                    return Ok(Err(SigningRefusal::SpendLimit {
                        wallet_id: wallet_id.clone(),
                        spent_sats,
                        amount_sats,
                        max_sats: limit.max_sats,
                    }));
                }
            }
        }
        let mut sealed = Vec::with_capacity(presignatures.len());
        let mut epoch = 0;
        if !presignatures.is_empty() {
            epoch = read_epoch(&mut *tx).await?;
            for p in presignatures {
                let binding = Some((p.wallet_id, p.path, p.signers));
                let claim = claim_presignature(&mut tx, p.id, epoch_i64(epoch)?, now_ms, binding);
                let refusal = match claim.await? {
                    Claim::Claimed(secret) => {
                        sealed.push(secret);
                        continue;
                    }
                    Claim::Unavailable => SigningRefusal::PresignatureUnavailable(p.id.to_owned()),
                    Claim::BoundElsewhere(bound_to) => SigningRefusal::PresignatureBoundElsewhere {
                        id: p.id.to_owned(),
                        bound_to,
                    },
                };
                tx.rollback().await.context(ctx)?;
                return Ok(Err(refusal));
            }
        }
        for (wallet_id, amount_sats) in spends {
            let amount = i64::try_from(*amount_sats)
                .map_err(|_| StoreError::Invalid(format!("amount {amount_sats} out of range")))?;
            sqlx::query(
                "INSERT INTO spends (session, wallet_id, amount_sats, at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (session, wallet_id) DO NOTHING",
            )
            .bind(session.to_string())
            .bind(wallet_id.as_str())
            .bind(amount)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .context(ctx)?;
        }
        let position = match presignatures.len() {
            0 => None,
            n => Some(count_consumed(&mut tx, self.backend(), epoch, n).await?),
        };
        self.commit_for(tx, durability).await.context(ctx)?;
        if let Some(position) = position {
            self.witness(position).await?;
        }
        presignatures
            .iter()
            .zip(&sealed)
            .map(|(p, sealed)| self.unseal("presignatures", p.id, sealed))
            .collect::<Result<Vec<_>>>()
            .map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signings_that_consume_or_count_against_a_limit_are_fsynced() {
        let limit = Some(SpendLimit {
            max_sats: 1,
            since_ms: 0,
        });
        assert_eq!(signing_durability(false, None), Durability::ProcessCrash);
        assert_eq!(signing_durability(true, None), Durability::PowerCut);
        assert_eq!(signing_durability(false, limit), Durability::PowerCut);
        assert_eq!(signing_durability(true, limit), Durability::PowerCut);
    }
}
