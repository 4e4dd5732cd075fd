//! One JSON error shape for every failure: `{"error": {"code", "message", "details"}}`, with
//! stable codes clients can match on.

use axum::{
    extract::Request,
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use mpc_bitcoin::spend::SpendError;
use mpc_node::{utxos::UtxoError, NodeError};
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
    /// Stable machine-readable code, e.g. `not_found`, `forbidden`, `psbt_refused`,
    /// `insufficient_funds`, `rate_limited`.
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
            NodeError::LimitExceeded { limit, .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", message)
                .with_details(json!({"limit": limit})),
            NodeError::Wallet(w) => match w {
                mpc_bitcoin::WalletError::Inputs(inputs) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "psbt_refused", message)
                    .with_details(json!({
                        "inputs": inputs.iter().map(|i| json!({"input": i.input, "code": i.problem.code(), "reason": i.problem.to_string()})).collect::<Vec<_>>()
                    })),
                mpc_bitcoin::WalletError::InvalidTransaction(problem) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_transaction", message)
                    .with_details(json!({"rule": problem.code(), "input": problem.input(), "output": problem.output()})),
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
            NodeError::FencingTokenRefused(_) => Self::new(StatusCode::CONFLICT, "fencing_token_refused", message),
            NodeError::Coordination(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "coordination_unavailable", message),
            NodeError::Config(_)
            | NodeError::Store(_)
            | NodeError::Transport(_)
            | NodeError::Protocol(_)
            | NodeError::Internal(_) => Self::internal(message),
        }
    }
}

impl From<UtxoError> for ApiError {
    fn from(e: UtxoError) -> Self {
        let message = e.to_string();
        match e {
            UtxoError::Node(e) => e.into(),
            UtxoError::Spend(spend) => {
                let status = match spend {
                    SpendError::BadAddress { .. } => StatusCode::BAD_REQUEST,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                let details = match &spend {
                    SpendError::InsufficientFunds {
                        needed,
                        available,
                        utxos,
                    } => {
                        json!({"needed_sats": needed, "available_sats": available, "utxos": utxos})
                    }
                    SpendError::Dust { amount, minimum } => {
                        json!({"amount_sats": amount, "minimum_sats": minimum})
                    }
                    SpendError::WrongNetwork {
                        expected, found, ..
                    } => json!({"expected": expected, "found": found}),
                    _ => Value::Null,
                };
                Self::new(status, spend.code(), message).with_details(details)
            }
            UtxoError::Invalid(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
            }
            UtxoError::Duplicate { outpoint } => {
                Self::new(StatusCode::CONFLICT, "utxo_conflict", message)
                    .with_details(json!({"outpoint": outpoint}))
            }
            UtxoError::Busy { outpoint } => Self::new(StatusCode::CONFLICT, "utxo_busy", message)
                .with_details(json!({"outpoint": outpoint})),
        }
    }
}

/// A stable code for an error response that did not come from a handler (axum's own 405,
/// path and query rejections, a panic turned into 500, ...).
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal",
        _ => "http_error",
    }
}

/// The code of a JSON body rejection, by its status.
pub(crate) fn body_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid_body",
    }
}

/// Middleware: every error response leaves in the one JSON shape. Responses the handlers
/// made are JSON already; anything else (axum's 405, path and query rejections) is
/// rewrapped, keeping its status, its text as the message and its headers (`Allow`).
pub async fn normalize(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, code_for(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
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
