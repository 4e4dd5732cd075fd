//! One JSON error shape for every failure: `{"error": {"code", "message", "details"}}`, with
//! stable codes clients can match on: [`ErrorCode`], one enum, documented in the OpenAPI spec.

use axum::{
    extract::Request,
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use mpc_bitcoin::spend::SpendError;
use mpc_node::{
    refusal::{Refusal, RefusalKind},
    utxos::UtxoError,
    NodeError,
};
use mpc_types::NodeId;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// Declares [`ErrorCode`] and its string form together, so the two cannot drift.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal,)*) => {
        /// Every error code the API answers with (`error.code`). Stable: clients match on them.
        // The names come from `rename_all`, which utoipa reads too (it does not see a
        // per-variant rename made by a macro); a test checks they are the literals below.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    /// A request the API cannot take as it is (a bad parameter, an unknown id format).
    InvalidRequest = "invalid_request",
    /// A JSON body that does not parse or has unknown fields.
    InvalidBody = "invalid_body",
    BodyTooLarge = "body_too_large",
    UnsupportedMediaType = "unsupported_media_type",
    MethodNotAllowed = "method_not_allowed",
    /// Any other 4xx that did not come from a handler.
    HttpError = "http_error",
    /// No token, or one that does not verify.
    Unauthorized = "unauthorized",
    /// The token's role does not allow this.
    Forbidden = "forbidden",
    NotFound = "not_found",
    /// Too many requests; `Retry-After` says when to come back.
    RateLimited = "rate_limited",
    /// Over one of the node's `[limits]` (`details.limit`).
    LimitExceeded = "limit_exceeded",
    /// A PSBT that does not parse.
    MalformedPsbt = "malformed_psbt",
    /// Inputs a signer does not sign (`details.inputs[]`: `input`, `code`, `reason`).
    PsbtRefused = "psbt_refused",
    /// A transaction no Bitcoin node would accept (`details.rule`, `input`, `output`).
    InvalidTransaction = "invalid_transaction",
    /// A rule of a signer's policy (`details.rule`).
    PolicyRefused = "policy_refused",
    /// A signer's approval rule: the request lacks enough valid approvals by its approvers
    /// (`details.rule`, `details.node`).
    ApprovalsMissing = "approvals_missing",
    /// An approval whose signature does not verify for this transaction and request, or by a
    /// key that is no approver's (`details.rule`, `details.node`).
    ApprovalInvalid = "approval_invalid",
    /// The request's expiry passed (`details.rule`, `details.node`).
    ApprovalExpired = "approval_expired",
    /// A request that waited for approvals is no longer pending (`details.state`).
    RequestClosed = "request_closed",
    /// A presignature named for signing is used, expired or bound elsewhere.
    PresignatureUnavailable = "presignature_unavailable",
    /// A session id used before: a replay.
    SessionReplayed = "session_replayed",
    /// A signer failed (its store, protocol run or transport) and said why (`details.node`).
    RefusedBySigner = "refused_by_signer",
    /// A signer answered with something the protocol does not allow (`details.node`).
    SignerMisbehaved = "signer_misbehaved",
    /// A proposal's fencing token is not the current holder's.
    FencingTokenRefused = "fencing_token_refused",
    /// Any other wallet-layer error.
    WalletError = "wallet_error",
    InvalidAddress = "invalid_address",
    WrongNetwork = "wrong_network",
    DustOutput = "dust_output",
    InvalidAmount = "invalid_amount",
    InvalidFeeRate = "invalid_fee_rate",
    InsufficientFunds = "insufficient_funds",
    /// The same outpoint registered with other data.
    UtxoConflict = "utxo_conflict",
    /// The output is reserved by a payment in flight.
    UtxoBusy = "utxo_busy",
    /// Not enough live nodes.
    Unavailable = "unavailable",
    /// Nodes did not answer in time (`details.nodes`).
    Timeout = "timeout",
    /// Nodes returned different results.
    Disagreement = "disagreement",
    /// The cluster backend (etcd) cannot be reached.
    CoordinationUnavailable = "coordination_unavailable",
    Internal = "internal",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
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
    pub code: ErrorCode,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: String) -> Self {
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
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }
    pub fn unauthorized(message: String) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }
    pub fn forbidden(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    pub fn internal(message: String) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        )
    }
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            format!("too many requests; retry after {retry_after} s"),
        );
        e.retry_after = Some(retry_after);
        e
    }
}

impl ApiError {
    /// The answer to a refusal: the same for the node's own error and for a participant's
    /// refusal of the same kind (which adds `details.node`).
    fn refusal(refusal: &Refusal, message: String) -> Self {
        let unprocessable =
            |code| Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message.clone());
        match &refusal.kind {
            RefusalKind::Policy { rule } => {
                unprocessable(ErrorCode::PolicyRefused).with_details(json!({"rule": rule}))
            }
            RefusalKind::Approval { rule } => {
                let code = match rule.as_str() {
                    mpc_bitcoin::approval::APPROVAL_EXPIRED => ErrorCode::ApprovalExpired,
                    mpc_bitcoin::approval::APPROVAL_INVALID => ErrorCode::ApprovalInvalid,
                    _ => ErrorCode::ApprovalsMissing,
                };
                unprocessable(code).with_details(json!({"rule": rule}))
            }
            RefusalKind::Inputs { inputs } => {
                unprocessable(ErrorCode::PsbtRefused).with_details(json!({"inputs": inputs}))
            }
            RefusalKind::InvalidTransaction {
                rule,
                input,
                output,
            } => unprocessable(ErrorCode::InvalidTransaction)
                .with_details(json!({"rule": rule, "input": input, "output": output})),
            RefusalKind::MalformedPsbt => {
                Self::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedPsbt, message)
            }
            RefusalKind::LimitExceeded { limit } => {
                unprocessable(ErrorCode::LimitExceeded).with_details(json!({"limit": limit}))
            }
            RefusalKind::FencingTokenRefused => Self::new(
                StatusCode::CONFLICT,
                ErrorCode::FencingTokenRefused,
                message,
            ),
            RefusalKind::SessionReplayed { session } => {
                Self::new(StatusCode::CONFLICT, ErrorCode::SessionReplayed, message)
                    .with_details(json!({"session": session}))
            }
            RefusalKind::PresignatureUnavailable { presignature } => Self::new(
                StatusCode::CONFLICT,
                ErrorCode::PresignatureUnavailable,
                message,
            )
            .with_details(json!({"presignature": presignature})),
            RefusalKind::CoordinationUnavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::CoordinationUnavailable,
                message,
            ),
            RefusalKind::NotFound => Self::not_found(message),
            RefusalKind::InvalidRequest => unprocessable(ErrorCode::InvalidRequest),
            RefusalKind::PeersSilent { nodes } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, ErrorCode::Timeout, message)
                    .with_details(json!({"nodes": nodes}))
            }
            RefusalKind::PeerMisbehaved { node } => Self::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::SignerMisbehaved,
                message,
            )
            .with_details(json!({"culprit": node})),
            // As the node's own protocol error answers: nobody to name, nothing the client did.
            RefusalKind::ProtocolAborted => Self::internal(message),
            RefusalKind::Failed => unprocessable(ErrorCode::RefusedBySigner),
        }
    }

    /// Adds `details.node`: which participant this came from.
    fn naming_node(mut self, node: NodeId) -> Self {
        match &mut self.details {
            Value::Object(map) => {
                map.insert("node".into(), json!(node));
            }
            details => *details = json!({"node": node}),
        }
        self
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let message = e.to_string();
        match &e {
            NodeError::Refused { node, refusal } => {
                Self::refusal(refusal, message).naming_node(*node)
            }
            NodeError::Misbehaved { node, .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::SignerMisbehaved,
                message,
            )
            .with_details(json!({"culprit": node}))
            .naming_node(*node),
            NodeError::Wallet(mpc_bitcoin::WalletError::Inputs(_))
            | NodeError::Wallet(mpc_bitcoin::WalletError::InvalidTransaction(_))
            | NodeError::Wallet(mpc_bitcoin::WalletError::MalformedPsbt(_))
            | NodeError::Policy(_)
            | NodeError::Approval(_)
            | NodeError::LimitExceeded { .. }
            | NodeError::FencingTokenRefused(_)
            | NodeError::SessionReplayed(_)
            | NodeError::PresignatureUnavailable { .. }
            | NodeError::Coordination(_)
            | NodeError::NotFound(_)
            | NodeError::InvalidRequest(_) => Self::refusal(&Refusal::from(&e), message),
            NodeError::Wallet(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::WalletError,
                message,
            ),
            NodeError::RequestClosed { state, .. } => {
                Self::new(StatusCode::CONFLICT, ErrorCode::RequestClosed, message)
                    .with_details(json!({"state": state}))
            }
            NodeError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                message,
            ),
            NodeError::Timeout { nodes, .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, ErrorCode::Timeout, message)
                    .with_details(json!({"nodes": nodes}))
            }
            NodeError::Disagreement(_) => {
                Self::new(StatusCode::BAD_GATEWAY, ErrorCode::Disagreement, message)
            }
            NodeError::Config(_)
            | NodeError::Store(_)
            | NodeError::Transport(_)
            | NodeError::Protocol(_)
            | NodeError::Internal(_) => Self::internal(message),
        }
    }
}

impl From<&SpendError> for ErrorCode {
    fn from(e: &SpendError) -> Self {
        match e {
            SpendError::BadAddress { .. } => ErrorCode::InvalidAddress,
            SpendError::WrongNetwork { .. } => ErrorCode::WrongNetwork,
            SpendError::Dust { .. } => ErrorCode::DustOutput,
            SpendError::InvalidAmount(_) => ErrorCode::InvalidAmount,
            SpendError::InvalidFeeRate(_) => ErrorCode::InvalidFeeRate,
            SpendError::InsufficientFunds { .. } => ErrorCode::InsufficientFunds,
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
                Self::new(status, ErrorCode::from(&spend), message).with_details(details)
            }
            UtxoError::Invalid(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::InvalidRequest,
                message,
            ),
            UtxoError::Duplicate { outpoint } => {
                Self::new(StatusCode::CONFLICT, ErrorCode::UtxoConflict, message)
                    .with_details(json!({"outpoint": outpoint}))
            }
            UtxoError::Busy { outpoint } => {
                Self::new(StatusCode::CONFLICT, ErrorCode::UtxoBusy, message)
                    .with_details(json!({"outpoint": outpoint}))
            }
        }
    }
}

/// A stable code for an error response that did not come from a handler (axum's own 405,
/// path and query rejections, a panic turned into 500, ...).
fn code_for(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::BAD_REQUEST => ErrorCode::InvalidRequest,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::FORBIDDEN => ErrorCode::Forbidden,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidBody,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::HttpError,
    }
}

/// The code of a JSON body rejection, by its status.
pub(crate) fn body_code(status: StatusCode) -> ErrorCode {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        _ => ErrorCode::InvalidBody,
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

#[cfg(test)]
mod tests {
    use mpc_bitcoin::{policy::PolicyViolation, InputError, InputProblem, TxProblem, WalletError};
    use uuid::Uuid;

    use super::*;

    /// The node's own errors that are refusals: one of each kind.
    fn refusals() -> Vec<NodeError> {
        vec![
            NodeError::Policy(PolicyViolation {
                rule: "max_amount_per_tx_sats",
                detail: "too much".into(),
            }),
            NodeError::Wallet(WalletError::Inputs(vec![
                InputError {
                    input: 0,
                    problem: InputProblem::AmountUnproven,
                },
                InputError {
                    input: 2,
                    problem: InputProblem::SighashTypeRefused(0x82),
                },
            ])),
            NodeError::Wallet(WalletError::InvalidTransaction(TxProblem::Dust {
                output: 1,
                value: 100,
                minimum: 330,
            })),
            NodeError::Wallet(WalletError::MalformedPsbt("bad magic".into())),
            NodeError::LimitExceeded {
                limit: "max_inputs_per_psbt",
                detail: "101 inputs".into(),
            },
            NodeError::SessionReplayed(Uuid::new_v4()),
            NodeError::PresignatureUnavailable {
                presignature: "p-7".into(),
                detail: "was already used".into(),
            },
            NodeError::NotFound("wallet w".into()),
            NodeError::InvalidRequest("name 1 to 8 wallets".into()),
            NodeError::Coordination(mpc_coordination::CoordinationError::Config(
                "no endpoints".into(),
            )),
        ]
    }

    /// A signer's refusal, typed over the control channel, gets the answer the coordinator
    /// gives for the same error of its own, with the refusing node added.
    #[test]
    fn a_remote_refusal_is_answered_like_a_local_one_naming_the_node() {
        for error in refusals() {
            let refusal = Refusal::from(&error);
            let local = ApiError::from(error);
            let remote = ApiError::from(NodeError::Refused {
                node: NodeId::must(4),
                refusal,
            });
            assert_eq!(remote.status, local.status, "{local}");
            assert_eq!(remote.code, local.code, "{local}");
            let mut expected = match local.details.clone() {
                Value::Null => json!({}),
                details => details,
            };
            expected["node"] = json!(4);
            assert_eq!(remote.details, expected, "{local}");
            assert!(remote.message.contains("node 4"), "{}", remote.message);
        }
    }

    #[test]
    fn refusals_carry_their_codes_and_details() {
        let codes: Vec<(ErrorCode, Value)> = refusals()
            .into_iter()
            .map(|e| {
                let answer = ApiError::from(e);
                (answer.code, answer.details)
            })
            .collect();
        assert_eq!(
            codes[0],
            (
                ErrorCode::PolicyRefused,
                json!({"rule": "max_amount_per_tx_sats"})
            )
        );
        assert_eq!(codes[1].0, ErrorCode::PsbtRefused);
        assert_eq!(codes[1].1["inputs"][1]["input"], 2);
        assert_eq!(codes[1].1["inputs"][1]["code"], "sighash_type_refused");
        assert_eq!(codes[1].1["inputs"][0]["code"], "amount_unproven");
        assert_eq!(
            codes[2],
            (
                ErrorCode::InvalidTransaction,
                json!({"rule": "dust_output", "input": null, "output": 1})
            )
        );
        assert_eq!(codes[3].0, ErrorCode::MalformedPsbt);
        assert_eq!(
            codes[4],
            (
                ErrorCode::LimitExceeded,
                json!({"limit": "max_inputs_per_psbt"})
            )
        );
        assert_eq!(codes[5].0, ErrorCode::SessionReplayed);
        assert_eq!(
            codes[6],
            (
                ErrorCode::PresignatureUnavailable,
                json!({"presignature": "p-7"})
            )
        );
        assert_eq!(codes[7].0, ErrorCode::NotFound);
        assert_eq!(codes[8].0, ErrorCode::InvalidRequest);
        assert_eq!(codes[9].0, ErrorCode::CoordinationUnavailable);

        let failed = ApiError::from(NodeError::Refused {
            node: NodeId::must(3),
            refusal: Refusal::failed("disk full"),
        });
        assert_eq!(
            (failed.code, failed.details),
            (ErrorCode::RefusedBySigner, json!({"node": 3}))
        );
    }

    /// Each code's string is its serde name, so the body says what the OpenAPI enum lists.
    #[test]
    fn codes_serialize_as_their_names_and_spend_errors_keep_theirs() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
        let spend = SpendError::InvalidFeeRate("-1".into());
        assert_eq!(ErrorCode::from(&spend).as_str(), spend.code());
    }

    /// The OpenAPI document lists every code the API can answer with.
    #[test]
    fn the_openapi_document_lists_every_error_code() {
        let (_, openapi) = crate::routes().split_for_parts();
        let doc = serde_json::to_value(&openapi).unwrap();
        let listed = &doc["components"]["schemas"]["ErrorCode"]["enum"];
        let listed: Vec<&str> = listed
            .as_array()
            .unwrap_or_else(|| panic!("no ErrorCode enum in {}", doc["components"]))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, all);
        assert_eq!(
            doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
    }
}
