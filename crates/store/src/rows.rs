//! Decoding rows: reading a column with the table and column named in its error, checked
//! conversions of integers and ids, and each record type from the columns its `select_*!` macro
//! lists.

use bitcoin::bip32::ChainCode;
use bitcoin::secp256k1::PublicKey;
use mpc_types::{NodeId, WalletId};
use sqlx::any::AnyRow;
use sqlx::{Any, Decode, Row, Type};
use uuid::Uuid;

use crate::error::{Context, Result, StoreError};
use crate::records::{
    parse_id_list, CeremonyRecord, PresignatureRecord, PresignatureState, WalletRecord, WalletState,
};

/// Reads one column, naming the table and column if it does not decode.
pub(crate) fn get<'r, T>(row: &'r AnyRow, column: &str, table: &str) -> Result<T>
where
    T: Decode<'r, Any> + Type<Any>,
{
    row.try_get(column)
        .context(|| format!("reading {table}.{column}"))
}

fn to_u16(value: i64, table: &'static str, id: &str) -> Result<u16> {
    u16::try_from(value).map_err(|_| StoreError::Corrupt {
        table,
        id: id.to_owned(),
        reason: format!("{value} is out of range"),
    })
}

pub(crate) fn to_node_id(value: i64, table: &'static str, id: &str) -> Result<NodeId> {
    u16::try_from(value)
        .ok()
        .and_then(NodeId::new)
        .ok_or_else(|| StoreError::Corrupt {
            table,
            id: id.to_owned(),
            reason: format!("{value} is not a node id"),
        })
}

pub(crate) fn to_u64(value: i64, table: &'static str, id: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        table,
        id: id.to_owned(),
        reason: format!("negative count or epoch {value}"),
    })
}

pub(crate) fn epoch_i64(epoch: u64) -> Result<i64> {
    i64::try_from(epoch).map_err(|_| StoreError::Invalid(format!("epoch {epoch} out of range")))
}

fn corrupt(table: &'static str, id: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        table,
        id: id.to_owned(),
        reason,
    }
}

pub(crate) fn parse_uuid(text: &str, table: &'static str, id: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|_| StoreError::Corrupt {
        table,
        id: id.to_owned(),
        reason: format!("bad session id {text:?}"),
    })
}

/// A stored wallet id; an empty one makes its row corrupt.
pub(crate) fn to_wallet_id(text: String, table: &'static str, id: &str) -> Result<WalletId> {
    WalletId::new(text).map_err(|e| corrupt(table, id, e.to_string()))
}

/// Reads column `wallet_id` of a row of `table`, decoded.
pub(crate) fn get_wallet_id(row: &AnyRow, table: &'static str, id: &str) -> Result<WalletId> {
    to_wallet_id(get(row, "wallet_id", table)?, table, id)
}

/// Column lists, so every reader decodes the same columns.
macro_rules! select_wallet {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, scheme, threshold, participants, network, public_key, chain_code, ",
            "state, session, created_at, activated_at, key_epoch, coordinator FROM wallets ",
            $rest
        )
    };
}
macro_rules! select_ceremony {
    ($rest:literal) => {
        concat!(
            "SELECT id, kind, state, coordinator, request, result, error, started_at, ",
            "finished_at FROM ceremonies ",
            $rest
        )
    };
}
macro_rules! select_presignature {
    ($rest:literal) => {
        concat!(
            "SELECT id, wallet_id, path, signers, epoch, key_epoch, state, public, created_at, ",
            "expires_at, consumed_at FROM presignatures ",
            $rest
        )
    };
}

pub(crate) use select_ceremony;
pub(crate) use select_presignature;
pub(crate) use select_wallet;

pub(crate) fn wallet_from_row(row: &AnyRow) -> Result<WalletRecord> {
    const T: &str = "wallets";
    let id: String = get(row, "id", T)?;
    let public_key: String = get(row, "public_key", T)?;
    let chain_code: String = get(row, "chain_code", T)?;
    Ok(WalletRecord {
        name: get(row, "name", T)?,
        scheme: get::<String>(row, "scheme", T)?
            .parse()
            .map_err(|e: mpc_types::ParseError| corrupt(T, &id, e.to_string()))?,
        threshold: to_u16(get(row, "threshold", T)?, T, &id)?,
        participants: parse_id_list(&get::<String>(row, "participants", T)?, T, &id)?,
        network: get::<String>(row, "network", T)?
            .parse()
            .map_err(|e: mpc_types::ParseError| corrupt(T, &id, e.to_string()))?,
        public_key: public_key
            .parse::<PublicKey>()
            .map_err(|e| corrupt(T, &id, format!("public key {public_key:?}: {e}")))?,
        chain_code: hex::decode(&chain_code)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(ChainCode::from)
            .ok_or_else(|| {
                corrupt(
                    T,
                    &id,
                    format!("chain code {chain_code:?} is not 32 bytes of hex"),
                )
            })?,
        state: WalletState::parse(&get::<String>(row, "state", T)?, T, &id)?,
        session: parse_uuid(&get::<String>(row, "session", T)?, T, &id)?,
        created_at: get(row, "created_at", T)?,
        activated_at: get(row, "activated_at", T)?,
        key_epoch: to_u64(get(row, "key_epoch", T)?, T, &id)?,
        coordinator: get::<Option<i64>>(row, "coordinator", T)?
            .map(|c| to_node_id(c, T, &id))
            .transpose()?,
        id: to_wallet_id(id, T, "")?,
    })
}

pub(crate) fn ceremony_from_row(row: &AnyRow) -> Result<CeremonyRecord> {
    const T: &str = "ceremonies";
    let id: String = get(row, "id", T)?;
    let json = |text: String| {
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            table: T,
            id: id.clone(),
            reason: format!("bad JSON: {e}"),
        })
    };
    Ok(CeremonyRecord {
        kind: get(row, "kind", T)?,
        state: get(row, "state", T)?,
        coordinator: to_node_id(get(row, "coordinator", T)?, T, &id)?,
        request: json(get(row, "request", T)?)?,
        result: get::<Option<String>>(row, "result", T)?
            .map(json)
            .transpose()?,
        error: get(row, "error", T)?,
        started_at: get(row, "started_at", T)?,
        finished_at: get(row, "finished_at", T)?,
        id,
    })
}

/// A stored derivation path, decoded; one that does not parse makes its row corrupt.
pub(crate) fn parse_path(
    text: &str,
    table: &'static str,
    id: &str,
) -> Result<mpc_types::DerivationPath> {
    text.parse().map_err(|e| StoreError::Corrupt {
        table,
        id: id.to_owned(),
        reason: format!("path {text:?}: {e}"),
    })
}

pub(crate) fn presignature_from_row(row: &AnyRow) -> Result<PresignatureRecord> {
    const T: &str = "presignatures";
    let id: String = get(row, "id", T)?;
    Ok(PresignatureRecord {
        wallet_id: get_wallet_id(row, T, &id)?,
        path: parse_path(&get::<String>(row, "path", T)?, T, &id)?,
        signers: parse_id_list(&get::<String>(row, "signers", T)?, T, &id)?,
        epoch: to_u64(get(row, "epoch", T)?, T, &id)?,
        key_epoch: to_u64(get(row, "key_epoch", T)?, T, &id)?,
        state: PresignatureState::parse(&get::<String>(row, "state", T)?, T, &id)?,
        public: get(row, "public", T)?,
        created_at: get(row, "created_at", T)?,
        expires_at: get(row, "expires_at", T)?,
        consumed_at: get(row, "consumed_at", T)?,
        id,
    })
}
