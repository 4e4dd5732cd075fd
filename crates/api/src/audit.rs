//! `GET /api/v1/audit`: this node's audit log, in chain order, for readers.

use axum::{
    extract::{Query, State},
    Json,
};
use mpc_node::NodeError;
use mpc_store::{AuditEntry, AuditHead};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::{Caller, READ},
    error::{ApiError, ErrorBody},
    AppState,
};

const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries at or after this time: milliseconds since the Unix epoch or RFC 3339.
    since: Option<String>,
    /// Entries after this seq (to page on from the last one received); default 0.
    after: Option<u64>,
    /// How many (1 to 1000); default 1000.
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    /// The node whose log this is.
    pub node: u16,
    /// The log's last entry as stored: keep it elsewhere to catch a later rewrite or a cut
    /// tail (`mpc-wallet audit verify --head SEQ:HASH`).
    #[schema(value_type = Option<Object>)]
    pub head: Option<AuditHead>,
    /// Each: `seq`, `at_ms`, `actor` (`node`, `caller:ROLE:SUBJECT`, `peer:ID`, `operator`),
    /// `kind`, `details`, `prev_hash`, `hash`.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<AuditEntry>,
}

/// This node's audit log, in chain order (any role).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = AuditLog), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn audit_log(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditLog>, ApiError> {
    caller.require(READ)?;
    let since = match &q.since {
        Some(text) => mpc_node::audit::parse_since(text).map_err(ApiError::bad_request)?,
        None => 0,
    };
    let limit = q.limit.unwrap_or(MAX_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let head = s.node.store().audit_head().await.map_err(NodeError::from)?;
    let entries = s
        .node
        .audit_entries(since, q.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(AuditLog {
        node: s.node.id().get(),
        head,
        entries,
    }))
}
