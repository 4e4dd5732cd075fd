//! One JSON error shape for every failure: `{"error": {"code", "message", "details"}}`, with
//! stable codes clients can match on.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use mpc_node::NodeError;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds, for 429 responses.
    pub retry_after: Option<u64>,
}

/// The error body (documented in the OpenAPI spec).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `forbidden`, `psbt_refused`.
    pub code: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        Self {
            status,
            code,
            message,
            details: Value::Null,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub fn unauthorized(message: String) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn internal(message: String) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry after {retry_after} s"),
        );
        e.retry_after = Some(retry_after);
        e
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let message = e.to_string();
        match &e {
            NodeError::NotFound(_) => Self::not_found(message),
            NodeError::InvalidRequest(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message),
            NodeError::Wallet(w) => match w {
                mpc_bitcoin::WalletError::Inputs(inputs) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "psbt_refused", message)
                    .with_details(json!({
                        "inputs": inputs.iter().map(|i| json!({"input": i.input, "reason": i.problem.to_string()})).collect::<Vec<_>>()
                    })),
                mpc_bitcoin::WalletError::MalformedPsbt(_) => Self::new(StatusCode::BAD_REQUEST, "malformed_psbt", message),
                _ => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "wallet_error", message),
            },
            NodeError::Policy(v) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "policy_refused", message)
                .with_details(json!({"rule": v.rule})),
            NodeError::Refused { node, .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "refused_by_signer", message).with_details(json!({"node": node}))
            }
            NodeError::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
            NodeError::Timeout { nodes, .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message).with_details(json!({"nodes": nodes}))
            }
            NodeError::Disagreement(_) => Self::new(StatusCode::BAD_GATEWAY, "disagreement", message),
            NodeError::Config(_)
            | NodeError::Store(_)
            | NodeError::Transport(_)
            | NodeError::Protocol(_)
            | NodeError::Internal(_) => Self::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({
            "error": {"code": self.code, "message": self.message, "details": self.details}
        }));
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = secs.to_string().parse() {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}
