//! The UTXO registry and payments: `/api/v1/wallets/{id}/utxos` and `/api/v1/transactions`.

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use mpc_node::utxos::{RegisterUtxo, SendOutcome, SendRequest, UtxoInfo};
use mpc_types::WalletId;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Caller, READ, SIGN},
    error::{ApiError, ErrorBody},
    routes::ApiJson,
    AppState,
};

/// One funding output of the wallet.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UtxoEntry {
    /// `txid:vout`.
    #[schema(example = "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b:0")]
    pub outpoint: String,
    /// The amount; taken from `funding_transaction` when that is given (and then checked
    /// against it if given too). Required without it.
    pub amount_sats: Option<u64>,
    /// The wallet's path that receives it, e.g. `m/0/3`; its script is derived by the node.
    #[schema(example = "m/0/0")]
    pub path: String,
    /// The transaction that created the output (consensus encoding, hex), whose txid must be
    /// the outpoint's. Required for P2WPKH (cggmp24) wallets: every signer checks each spent
    /// amount against it, since BIP-143 signatures commit only to their own input's amount.
    pub funding_transaction: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterUtxosRequest {
    /// 1 to 1000 outputs, registered all or none.
    pub utxos: Vec<UtxoEntry>,
}

/// A registered output.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Utxo {
    pub outpoint: String,
    pub amount_sats: u64,
    pub path: String,
    pub address: String,
    pub script_pubkey: String,
    /// `registered` or `change`.
    pub origin: String,
    /// `available`, `reserved` or `spent`.
    pub state: String,
    pub spent_by: Option<String>,
    pub spent_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

impl From<UtxoInfo> for Utxo {
    fn from(u: UtxoInfo) -> Self {
        Self {
            outpoint: u.outpoint,
            amount_sats: u.amount_sats,
            path: u.path,
            address: u.address,
            script_pubkey: u.script_pubkey,
            origin: u.origin.into(),
            state: u.state.into(),
            spent_by: u.spent_by,
            spent_at_ms: u.spent_at_ms,
            created_at_ms: u.created_at_ms,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UtxoList {
    #[schema(value_type = String)]
    pub wallet_id: WalletId,
    pub utxos: Vec<Utxo>,
    /// Sum of the available outputs.
    pub available_sats: u64,
    /// The change index the next payment with change will use (m/1/i).
    pub next_change_index: u32,
    pub next_change_address: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UtxoQuery {
    /// Also list spent outputs; default false.
    include_spent: Option<bool>,
}

/// Registers funding outputs of a wallet (outpoint, path, and the funding transaction, which
/// P2WPKH outputs require). The node derives the path's script with the wallet's key, checks
/// the funding transaction's txid and output against it, and stores both; registering an output again with the
/// same data is a no-op. The registry is this node's: spend them through this node.
#[utoipa::path(post, path = "/api/v1/wallets/{id}/utxos", tag = "wallets", request_body = RegisterUtxosRequest,
    params(("id" = String, Path, description = "wallet id")),
    responses((status = 201, body = Vec<Utxo>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn register_utxos(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<WalletId>,
    ApiJson(req): ApiJson<RegisterUtxosRequest>,
) -> Result<(StatusCode, Json<Vec<Utxo>>), ApiError> {
    caller.require(SIGN)?;
    let utxos: Vec<RegisterUtxo> = req
        .utxos
        .into_iter()
        .map(|u| RegisterUtxo {
            outpoint: u.outpoint,
            amount_sats: u.amount_sats,
            path: u.path,
            funding_transaction: u.funding_transaction,
        })
        .collect();
    let registered = s.node.register_utxos(&id, &utxos).await?;
    Ok((
        StatusCode::CREATED,
        Json(registered.into_iter().map(Utxo::from).collect()),
    ))
}

/// A wallet's registered outputs (unspent, or all with `include_spent=true`) and its next
/// change address.
#[utoipa::path(get, path = "/api/v1/wallets/{id}/utxos", tag = "wallets",
    params(("id" = String, Path, description = "wallet id"), UtxoQuery),
    responses((status = 200, body = UtxoList), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_utxos(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<WalletId>,
    Query(q): Query<UtxoQuery>,
) -> Result<Json<UtxoList>, ApiError> {
    caller.require(READ)?;
    let utxos = s.node.utxos(&id, q.include_spent.unwrap_or(false)).await?;
    let (next_change_index, address) = s.node.next_change(&id).await?;
    Ok(Json(UtxoList {
        wallet_id: id,
        available_sats: utxos
            .iter()
            .filter(|u| u.state == "available")
            .map(|u| u.amount_sats)
            .sum(),
        utxos: utxos.into_iter().map(Utxo::from).collect(),
        next_change_index,
        next_change_address: address.to_string(),
    }))
}

/// A payment from a wallet's registered outputs.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionRequest {
    #[schema(value_type = String)]
    pub wallet_id: WalletId,
    /// An address of the wallet's network.
    pub recipient: String,
    pub amount_sats: u64,
    /// 0.1 to 10000.
    #[schema(example = 2.0)]
    pub fee_rate_sat_vb: f64,
}

/// Pays `amount_sats` to `recipient` from the wallet's registered outputs: BDK's coin
/// selection (branch and bound, then single random draw), change to the wallet's next change
/// address (m/1/i), then signing as `psbt/sign` does (every signer checks the PSBT). Returns
/// the same as `psbt/sign`, plus `spend` (inputs, fee, change). A payment the node's approval
/// rule covers answers 202 with the pending request, as `psbt/sign` does; its outputs stay
/// reserved meanwhile.
#[utoipa::path(post, path = "/api/v1/transactions", tag = "signing", request_body = TransactionRequest,
    responses((status = 200, body = Object), (status = 202, body = Object, description = "waits for approvals"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 504, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn transactions(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<TransactionRequest>,
) -> Result<Response, ApiError> {
    caller.require(SIGN)?;
    let request = SendRequest::new(
        req.wallet_id,
        req.recipient,
        req.amount_sats,
        req.fee_rate_sat_vb,
    )?;
    let outcome =
        mpc_node::audit::with_caller(caller.actor(), s.node.send(Uuid::new_v4(), &request)).await?;
    match outcome {
        SendOutcome::Sent(report) => {
            s.metrics.signed(&report.signed);
            Ok(Json(report).into_response())
        }
        SendOutcome::Pending(request) => Ok(crate::approvals::pending(request)),
    }
}
