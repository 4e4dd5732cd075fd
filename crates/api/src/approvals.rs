//! Requests waiting for human approvals: `/api/v1/requests`. Any role may read them and post a
//! decision: a decision counts only by its Ed25519 signature, made with an approver's key
//! this node (and every signer) lists, never by the token that carries it.

use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use mpc_bitcoin::approval::{Decision, SignedDecision};
use mpc_node::approvals::RequestView;
use mpc_store::RequestState;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Caller, READ},
    error::{ApiError, ErrorBody},
    routes::ApiJson,
    AppState,
};

const MAX_LIMIT: u32 = 1000;

/// The answer to a request that must wait for approvals: 202, with where to follow it.
pub(crate) fn pending(request: RequestView) -> Response {
    let location = format!("/api/v1/requests/{}", request.request_id);
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(request),
    )
        .into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestsQuery {
    /// `pending`, `signing`, `signed`, `rejected`, `expired` or `failed`; default: all.
    state: Option<String>,
    /// How many, newest first (1 to 1000); default 100.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RequestList {
    /// Each: `request_id`, `state`, `wallet_ids`, `psbt`, `txid`, `fee_sats`, `outputs`,
    /// `required`, `decisions`, `created_at_ms`, `expires_at_ms`, `approval_message`
    /// (hex), `signed` (the signing's report, once signed), `error`.
    #[schema(value_type = Vec<Object>)]
    pub requests: Vec<RequestView>,
}

/// An approver's signed decision.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// The approver's Ed25519 public key, hex (32 bytes).
    pub public_key: String,
    /// Ed25519 signature (hex, 64 bytes) of the request's message for this decision, as
    /// ARCHITECTURE.md defines it (`mpc-wallet approve` / `reject` make it).
    pub signature: String,
}

/// Requests this node holds that wait or waited for approvals, newest first (any role).
#[utoipa::path(get, path = "/api/v1/requests", tag = "approvals", params(RequestsQuery),
    responses((status = 200, body = RequestList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<RequestsQuery>,
) -> Result<Json<RequestList>, ApiError> {
    caller.require(READ)?;
    let state = match q.state.as_deref() {
        None => None,
        Some(text) => Some(
            RequestState::parse(text)
                .ok_or_else(|| ApiError::bad_request(format!("unknown state {text:?}")))?,
        ),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    Ok(Json(RequestList {
        requests: s.node.approval_requests(state, limit).await?,
    }))
}

/// One request, with what an approver is asked to sign (any role).
#[utoipa::path(get, path = "/api/v1/requests/{id}", tag = "approvals",
    params(("id" = Uuid, Path, description = "request id")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<RequestView>, ApiError> {
    caller.require(READ)?;
    Ok(Json(s.node.approval_request(id).await?))
}

async fn decide(
    s: AppState,
    caller: Caller,
    id: Uuid,
    decision: Decision,
    body: DecisionBody,
) -> Result<Json<RequestView>, ApiError> {
    caller.require(READ)?;
    let signed = SignedDecision {
        public_key: body.public_key,
        signature: body.signature,
    };
    let request =
        mpc_node::audit::with_caller(caller.actor(), s.node.decide(id, decision, &signed)).await?;
    Ok(Json(request))
}

/// Records an approval. The approval that completes the count signs the request before this
/// answers (`state` then `signed`, the report in `signed`). Counted only if the signature
/// verifies with an approver's key of this node's config; every signer checks it again.
#[utoipa::path(post, path = "/api/v1/requests/{id}/approvals", tag = "approvals",
    request_body = DecisionBody, params(("id" = Uuid, Path, description = "request id")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn approve(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    decide(s, caller, id, Decision::Approve, body).await
}

/// Records a rejection: one rejection by an approver ends the request.
#[utoipa::path(post, path = "/api/v1/requests/{id}/rejections", tag = "approvals",
    request_body = DecisionBody, params(("id" = Uuid, Path, description = "request id")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reject(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Json<RequestView>, ApiError> {
    decide(s, caller, id, Decision::Reject, body).await
}
