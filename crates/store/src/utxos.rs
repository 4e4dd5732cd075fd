//! The UTXO registry: a wallet's funding outputs as registered through this node, their
//! reservation while a transaction that spends them is being signed, and the wallet's next
//! unused change index. Public data only: outpoints, amounts, paths and scripts.

use std::fmt;
use std::str::FromStr;

use bitcoin::{consensus, Amount, OutPoint, ScriptBuf, Transaction, Txid};
use mpc_types::{DerivationPath, WalletId};

use sqlx::{any::AnyRow, Row};

use crate::error::{Context, Result, StoreError};
use crate::rows::{get, parse_path, to_u64, to_wallet_id};
use crate::store::Store;

const T: &str = "utxos";

/// Where a registered output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UtxoOrigin {
    /// Registered by a client (`POST /wallets/{id}/utxos`).
    Registered,
    /// The change output of a transaction this node built and signed.
    Change,
}

/// Whether an output can be spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UtxoState {
    Available,
    /// A transaction being signed spends it; no other request may select it meanwhile.
    Reserved,
    Spent,
}

impl UtxoOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            UtxoOrigin::Registered => "registered",
            UtxoOrigin::Change => "change",
        }
    }
}

impl UtxoState {
    pub fn as_str(self) -> &'static str {
        match self {
            UtxoState::Available => "available",
            UtxoState::Reserved => "reserved",
            UtxoState::Spent => "spent",
        }
    }
}

impl fmt::Display for UtxoState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An output to register. The caller has checked that `script_pubkey` is the wallet's script
/// at `path`, and that `funding_transaction`, if given, has the outpoint's txid and pays this
/// amount to this script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUtxo {
    pub outpoint: OutPoint,
    pub amount: Amount,
    pub path: DerivationPath,
    pub script_pubkey: ScriptBuf,
    /// The transaction that created the output.
    pub funding_transaction: Option<Transaction>,
}

/// A registered output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtxoRecord {
    pub outpoint: OutPoint,
    pub wallet_id: WalletId,
    pub amount: Amount,
    pub path: DerivationPath,
    pub script_pubkey: ScriptBuf,
    pub origin: UtxoOrigin,
    pub state: UtxoState,
    pub reserved_by: Option<String>,
    pub spent_by: Option<String>,
    pub spent_at: Option<i64>,
    pub created_at: i64,
}

/// Registered outputs at one derivation path of a wallet, counted (`Store::utxo_counts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathUtxoCounts {
    pub path: DerivationPath,
    pub spendable: u64,
    pub unspent: u64,
}

/// The result of trying to reserve outputs for a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// All reserved; `change_index` is allocated if change was asked for.
    Reserved { change_index: Option<u32> },
    /// This output is no longer available (another request took it); nothing was reserved.
    Conflict { outpoint: OutPoint },
}

fn corrupt(id: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        table: T,
        id: id.to_owned(),
        reason,
    }
}

fn column<'r, V>(row: &'r AnyRow, name: &str) -> Result<V>
where
    V: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name).context(|| format!("reading {T}.{name}"))
}

fn sats(amount: u64) -> Result<i64> {
    i64::try_from(amount).map_err(|_| StoreError::Invalid(format!("amount {amount} out of range")))
}

fn utxo_from_row(row: &AnyRow) -> Result<UtxoRecord> {
    let outpoint_text: String = column(row, "outpoint")?;
    let outpoint = OutPoint::from_str(&outpoint_text)
        .map_err(|e| corrupt(&outpoint_text, format!("outpoint: {e}")))?;
    let amount: i64 = column(row, "amount_sats")?;
    let origin = match column::<String>(row, "origin")?.as_str() {
        "registered" => UtxoOrigin::Registered,
        "change" => UtxoOrigin::Change,
        other => return Err(corrupt(&outpoint_text, format!("unknown origin {other:?}"))),
    };
    let state = match column::<String>(row, "state")?.as_str() {
        "available" => UtxoState::Available,
        "reserved" => UtxoState::Reserved,
        "spent" => UtxoState::Spent,
        other => return Err(corrupt(&outpoint_text, format!("unknown state {other:?}"))),
    };
    Ok(UtxoRecord {
        wallet_id: to_wallet_id(column(row, "wallet_id")?, T, &outpoint_text)?,
        amount: u64::try_from(amount)
            .map(Amount::from_sat)
            .map_err(|_| corrupt(&outpoint_text, format!("negative amount {amount}")))?,
        path: column::<String>(row, "path")?
            .parse()
            .map_err(|e: mpc_types::ParseError| corrupt(&outpoint_text, e.to_string()))?,
        script_pubkey: hex::decode(column::<String>(row, "script_pubkey")?)
            .map(ScriptBuf::from_bytes)
            .map_err(|e| corrupt(&outpoint_text, format!("script_pubkey: {e}")))?,
        origin,
        state,
        reserved_by: column(row, "reserved_by")?,
        spent_by: column(row, "spent_by")?,
        spent_at: column(row, "spent_at")?,
        created_at: column(row, "created_at")?,
        outpoint,
    })
}

macro_rules! select_utxo {
    ($rest:literal) => {
        concat!(
            "SELECT outpoint, wallet_id, amount_sats, path, script_pubkey, origin, state, ",
            "reserved_by, spent_by, spent_at, created_at FROM utxos ",
            $rest
        )
    };
}

/// Inserts one output in `tx`; an outpoint already registered with the same wallet, amount
/// and path is accepted again (idempotent), anything else is refused.
async fn insert_utxo(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    wallet_id: &WalletId,
    utxo: &NewUtxo,
    origin: UtxoOrigin,
    now_ms: i64,
) -> Result<()> {
    let ctx = || format!("registering {T}/{}", utxo.outpoint);
    let inserted = sqlx::query(
        "INSERT INTO utxos (outpoint, wallet_id, amount_sats, path, script_pubkey, origin, \
         state, reserved_by, reserved_at, spent_by, spent_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'available', NULL, NULL, NULL, NULL, $7) \
         ON CONFLICT (outpoint) DO NOTHING",
    )
    .bind(utxo.outpoint.to_string())
    .bind(wallet_id.as_str())
    .bind(sats(utxo.amount.to_sat())?)
    .bind(utxo.path.to_string())
    .bind(hex::encode(utxo.script_pubkey.as_bytes()))
    .bind(origin.as_str())
    .bind(now_ms)
    .execute(&mut **tx)
    .await
    .context(ctx)?
    .rows_affected();
    if let Some(funding) = &utxo.funding_transaction {
        if funding.compute_txid() != utxo.outpoint.txid {
            return Err(StoreError::Invalid(format!(
                "the funding transaction of {} is {}",
                utxo.outpoint,
                funding.compute_txid()
            )));
        }
        insert_funding_transaction(tx, utxo.outpoint.txid, funding, now_ms).await?;
    }
    if inserted == 1 {
        return Ok(());
    }
    let existing = sqlx::query(select_utxo!("WHERE outpoint = $1"))
        .bind(utxo.outpoint.to_string())
        .fetch_one(&mut **tx)
        .await
        .context(ctx)?;
    let existing = utxo_from_row(&existing)?;
    if existing.wallet_id == *wallet_id
        && existing.amount == utxo.amount
        && existing.path == utxo.path
    {
        Ok(())
    } else {
        Err(StoreError::AlreadyExists {
            table: T,
            id: utxo.outpoint.to_string(),
        })
    }
}

/// Stores the funding transaction `txid` (once for all its outputs).
async fn insert_funding_transaction(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    txid: Txid,
    funding: &Transaction,
    now_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO funding_transactions (txid, raw_transaction, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (txid) DO NOTHING",
    )
    .bind(txid.to_string())
    .bind(consensus::encode::serialize_hex(funding))
    .bind(now_ms)
    .execute(&mut **tx)
    .await
    .context(|| format!("storing funding transaction {txid}"))?;
    Ok(())
}

impl Store {
    /// The stored funding transaction of each of `txids` that has one. A stored transaction
    /// that does not decode, or whose txid is not the one it is stored under, is corrupt.
    pub async fn funding_transactions(
        &self,
        txids: &[Txid],
    ) -> Result<std::collections::HashMap<Txid, Transaction>> {
        let mut found = std::collections::HashMap::new();
        for &txid in txids {
            if found.contains_key(&txid) {
                continue;
            }
            let raw: Option<String> = sqlx::query_scalar(
                "SELECT raw_transaction FROM funding_transactions WHERE txid = $1",
            )
            .bind(txid.to_string())
            .fetch_optional(self.pool())
            .await
            .context(|| format!("reading funding transaction {txid}"))?;
            let Some(raw) = raw else { continue };
            let corrupt = |reason: String| StoreError::Corrupt {
                table: "funding_transactions",
                id: txid.to_string(),
                reason,
            };
            let funding: Transaction = consensus::encode::deserialize_hex(&raw)
                .map_err(|e| corrupt(format!("does not decode: {e}")))?;
            if funding.compute_txid() != txid {
                return Err(corrupt(format!(
                    "holds transaction {}",
                    funding.compute_txid()
                )));
            }
            found.insert(txid, funding);
        }
        Ok(found)
    }

    /// Raises the wallet's next unused change index past `index`, a change index a signed
    /// transaction used (signed here, or by signers whose signatures this node checked).
    pub async fn note_change_index_used(&self, wallet_id: &WalletId, index: u32) -> Result<u32> {
        let next = i64::from(index) + 1;
        let stored: i64 = sqlx::query_scalar(
            "INSERT INTO change_indices (wallet_id, next_index) VALUES ($1, $2) \
             ON CONFLICT (wallet_id) DO UPDATE SET next_index = CASE \
             WHEN change_indices.next_index < excluded.next_index THEN excluded.next_index \
             ELSE change_indices.next_index END RETURNING next_index",
        )
        .bind(wallet_id.as_str())
        .bind(next)
        .fetch_one(self.pool())
        .await
        .context(|| format!("recording change index {index} of wallet {wallet_id}"))?;
        u32::try_from(stored).map_err(|_| StoreError::Corrupt {
            table: "change_indices",
            id: wallet_id.to_string(),
            reason: format!("index {stored} out of range"),
        })
    }

    /// Registers funding outputs of `wallet_id`, all or none. Registering an output again
    /// with the same wallet, amount and path is a no-op; with different ones it is refused
    /// ([`StoreError::AlreadyExists`]).
    pub async fn insert_utxos(
        &self,
        wallet_id: &WalletId,
        utxos: &[NewUtxo],
        now_ms: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for utxo in utxos {
            insert_utxo(&mut tx, wallet_id, utxo, UtxoOrigin::Registered, now_ms).await?;
        }
        tx.commit()
            .await
            .context(|| format!("registering outputs of wallet {wallet_id}"))
    }

    /// The registered outputs of `wallet_id`, oldest first; spent ones only if asked.
    pub async fn utxos(
        &self,
        wallet_id: &WalletId,
        include_spent: bool,
    ) -> Result<Vec<UtxoRecord>> {
        let query = if include_spent {
            select_utxo!("WHERE wallet_id = $1 ORDER BY created_at, outpoint")
        } else {
            select_utxo!("WHERE wallet_id = $1 AND state <> 'spent' ORDER BY created_at, outpoint")
        };
        sqlx::query(query)
            .bind(wallet_id.as_str())
            .fetch_all(self.pool())
            .await
            .context(|| format!("listing outputs of wallet {wallet_id}"))?
            .iter()
            .map(utxo_from_row)
            .collect()
    }

    /// Outputs of `wallet_id` that may be selected now: available, or reserved by a request
    /// that started before `stale_before_ms` (its process died before it finished).
    pub async fn spendable_utxos(
        &self,
        wallet_id: &WalletId,
        stale_before_ms: i64,
    ) -> Result<Vec<UtxoRecord>> {
        sqlx::query(select_utxo!(
            "WHERE wallet_id = $1 AND (state = 'available' \
             OR (state = 'reserved' AND reserved_at < $2)) ORDER BY created_at, outpoint"
        ))
        .bind(wallet_id.as_str())
        .bind(stale_before_ms)
        .fetch_all(self.pool())
        .await
        .context(|| format!("listing spendable outputs of wallet {wallet_id}"))?
        .iter()
        .map(utxo_from_row)
        .collect()
    }

    /// Per derivation path of `wallet_id` that holds or held a registered output: how many
    /// are spendable (available, or reserved before `stale_before_ms`) and how many are not
    /// spent yet. What the presignature pool makes and keeps presignatures for.
    pub async fn utxo_counts(
        &self,
        wallet_id: &WalletId,
        stale_before_ms: i64,
    ) -> Result<Vec<PathUtxoCounts>> {
        let rows = sqlx::query(
            "SELECT path, \
             COUNT(CASE WHEN state = 'available' OR (state = 'reserved' AND reserved_at < $2) \
             THEN 1 END) AS spendable, \
             COUNT(CASE WHEN state <> 'spent' THEN 1 END) AS unspent \
             FROM utxos WHERE wallet_id = $1 GROUP BY path ORDER BY MIN(created_at), path",
        )
        .bind(wallet_id.as_str())
        .bind(stale_before_ms)
        .fetch_all(self.pool())
        .await
        .context(|| format!("counting registered outputs of wallet {wallet_id}"))?;
        rows.iter()
            .map(|row| {
                let text: String = get(row, "path", T)?;
                Ok(PathUtxoCounts {
                    path: parse_path(&text, T, &text)?,
                    spendable: to_u64(get(row, "spendable", T)?, T, &text)?,
                    unspent: to_u64(get(row, "unspent", T)?, T, &text)?,
                })
            })
            .collect()
    }

    /// Reserves `outpoints` of `wallet_id` for request `reservation`, all or none, and
    /// allocates the wallet's next change index if `with_change`, in one transaction: two
    /// concurrent requests can never select the same output or get the same change index.
    pub async fn reserve_utxos(
        &self,
        wallet_id: &WalletId,
        outpoints: &[OutPoint],
        reservation: &str,
        now_ms: i64,
        stale_before_ms: i64,
        with_change: bool,
    ) -> Result<Reservation> {
        let ctx = || format!("reserving outputs of wallet {wallet_id} for {reservation}");
        let mut tx = self.begin_write().await?;
        for outpoint in outpoints {
            let claimed = sqlx::query(
                "UPDATE utxos SET state = 'reserved', reserved_by = $3, reserved_at = $4 \
                 WHERE outpoint = $1 AND wallet_id = $2 AND (state = 'available' \
                 OR (state = 'reserved' AND reserved_at < $5))",
            )
            .bind(outpoint.to_string())
            .bind(wallet_id.as_str())
            .bind(reservation)
            .bind(now_ms)
            .bind(stale_before_ms)
            .execute(&mut *tx)
            .await
            .context(ctx)?
            .rows_affected();
            if claimed != 1 {
                tx.rollback().await.context(ctx)?;
                return Ok(Reservation::Conflict {
                    outpoint: *outpoint,
                });
            }
        }
        let change_index = if with_change {
            let next: i64 = sqlx::query_scalar(
                "INSERT INTO change_indices (wallet_id, next_index) VALUES ($1, 1) \
                 ON CONFLICT (wallet_id) DO UPDATE SET next_index = change_indices.next_index + 1 \
                 RETURNING next_index",
            )
            .bind(wallet_id.as_str())
            .fetch_one(&mut *tx)
            .await
            .context(ctx)?;
            let index = next - 1;
            // Non-hardened indices only: a threshold key cannot derive hardened children.
            Some(
                u32::try_from(index)
                    .ok()
                    .filter(|i| *i < 0x8000_0000)
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "wallet {wallet_id} has used every change index"
                        ))
                    })?,
            )
        } else {
            None
        };
        tx.commit().await.context(ctx)?;
        Ok(Reservation::Reserved { change_index })
    }

    /// Holds for `reservation` the available outputs among `outpoints` (a transaction that
    /// spends them is being signed through `psbt/sign`), so the presignature pool does not
    /// count them as spendable meanwhile. Outputs in another state are left as they are: this
    /// is bookkeeping, not a lock (`psbt/sign` may sign a replacement of a spent output).
    /// Returns how many were held.
    pub async fn hold_utxos(
        &self,
        outpoints: &[OutPoint],
        reservation: &str,
        now_ms: i64,
    ) -> Result<u64> {
        let ctx = || format!("holding outputs for {reservation}");
        // Read first, without the write lock: most signed PSBTs spend no registered output of
        // this node, and every signing request passes here, so those take no write
        // transaction (which would serialize them on SQLite).
        let mut available = Vec::new();
        for outpoint in outpoints {
            let count: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM utxos WHERE outpoint = $1 AND state = 'available'",
            )
            .bind(outpoint.to_string())
            .fetch_one(self.pool())
            .await
            .context(ctx)?;
            if count > 0 {
                available.push(outpoint);
            }
        }
        if available.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let mut held = 0;
        for outpoint in available {
            held += sqlx::query(
                "UPDATE utxos SET state = 'reserved', reserved_by = $2, reserved_at = $3 \
                 WHERE outpoint = $1 AND state = 'available'",
            )
            .bind(outpoint.to_string())
            .bind(reservation)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .context(ctx)?
            .rows_affected();
        }
        tx.commit().await.context(ctx)?;
        Ok(held)
    }

    /// Returns the outputs reserved by `reservation` to the available set (its transaction
    /// was not signed). The change index it allocated stays used: indices are never reused.
    pub async fn release_utxos(&self, reservation: &str) -> Result<u64> {
        sqlx::query(
            "UPDATE utxos SET state = 'available', reserved_by = NULL, reserved_at = NULL \
             WHERE reserved_by = $1 AND state = 'reserved'",
        )
        .bind(reservation)
        .execute(self.pool())
        .await
        .context(|| format!("releasing outputs reserved by {reservation}"))
        .map(|r| r.rows_affected())
    }

    /// Marks the outputs reserved by `reservation` spent by `txid` and registers the
    /// transaction's change output, in one transaction.
    pub async fn complete_spend(
        &self,
        wallet_id: &WalletId,
        reservation: &str,
        txid: Txid,
        change: Option<&NewUtxo>,
        now_ms: i64,
    ) -> Result<u64> {
        let ctx = || format!("recording transaction {txid} of wallet {wallet_id}");
        let mut tx = self.begin_write().await?;
        let spent = sqlx::query(
            "UPDATE utxos SET state = 'spent', spent_by = $2, spent_at = $3 \
             WHERE reserved_by = $1 AND state = 'reserved'",
        )
        .bind(reservation)
        .bind(txid.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .context(ctx)?
        .rows_affected();
        if let Some(change) = change {
            insert_utxo(&mut tx, wallet_id, change, UtxoOrigin::Change, now_ms).await?;
        }
        tx.commit().await.context(ctx)?;
        Ok(spent)
    }

    /// Marks registered outputs among `outpoints` spent by `txid` (a PSBT signed through
    /// `psbt/sign` spent them). Unregistered outpoints are ignored. Returns how many changed.
    pub async fn mark_utxos_spent(
        &self,
        outpoints: &[OutPoint],
        txid: Txid,
        now_ms: i64,
    ) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let mut changed = 0;
        for outpoint in outpoints {
            changed += sqlx::query(
                "UPDATE utxos SET state = 'spent', spent_by = $2, spent_at = $3 \
                 WHERE outpoint = $1 AND state <> 'spent'",
            )
            .bind(outpoint.to_string())
            .bind(txid.to_string())
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .context(|| format!("marking {T}/{outpoint} spent"))?
            .rows_affected();
        }
        tx.commit()
            .await
            .context(|| format!("marking outputs spent by {txid}"))?;
        Ok(changed)
    }

    /// The wallet's next unused change index (m/1/i); 0 before any change was made.
    pub async fn next_change_index(&self, wallet_id: &WalletId) -> Result<u32> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT next_index FROM change_indices WHERE wallet_id = $1")
                .bind(wallet_id.as_str())
                .fetch_optional(self.pool())
                .await
                .context(|| format!("reading the change index of wallet {wallet_id}"))?;
        let next = next.unwrap_or(0);
        u32::try_from(next).map_err(|_| StoreError::Corrupt {
            table: "change_indices",
            id: wallet_id.to_string(),
            reason: format!("index {next} out of range"),
        })
    }

    /// Ceremonies this node coordinated, counted by (kind, state): metrics, and the proof
    /// that a refused request started none.
    pub async fn ceremony_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT kind, state, COUNT(*) FROM ceremonies GROUP BY kind, state ORDER BY kind, state",
        )
        .fetch_all(self.pool())
        .await
        .context(|| "counting ceremonies".into())?;
        Ok(rows
            .into_iter()
            .map(|(k, s, n)| (k, s, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Protocol sessions this node has taken part in, by protocol (every session id is
    /// recorded once, before the node runs its part).
    pub async fn session_counts(&self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT protocol, COUNT(*) FROM sessions_seen GROUP BY protocol ORDER BY protocol",
        )
        .fetch_all(self.pool())
        .await
        .context(|| "counting sessions".into())?;
        Ok(rows
            .into_iter()
            .map(|(p, n)| (p, u64::try_from(n).unwrap_or(0)))
            .collect())
    }
}
