//! Signing requests waiting for human approvals, and the approvers' signed decisions. The
//! signatures are kept as they came; the node checks them before recording, and every signer
//! checks them again before it signs.

use std::fmt;

use mpc_types::{Decision, WalletId};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::error::{Context, Result, StoreError};
use crate::rows::{get, parse_uuid};
use crate::store::Store;

const T: &str = "approval_requests";
const D: &str = "approval_decisions";

/// Where a request is: `pending` until approved (then `signing`, then `signed` or
/// `failed`), rejected or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestState {
    Pending,
    /// Approved; the signing runs (the one caller that moved it here runs it).
    Signing,
    Signed,
    Rejected,
    Expired,
    /// Approved, but the signing failed (`error` says why).
    Failed,
}

impl RequestState {
    pub const ALL: [RequestState; 6] = [
        Self::Pending,
        Self::Signing,
        Self::Signed,
        Self::Rejected,
        Self::Expired,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Signing => "signing",
            Self::Signed => "signed",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One approver's signed decision on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    /// The approver's Ed25519 public key, hex.
    pub public_key: String,
    /// The approver's name in this node's config when it was recorded.
    pub approver: String,
    pub decision: Decision,
    /// The Ed25519 signature of the request's message for `decision`, hex.
    pub signature: String,
    pub at: i64,
}

/// A signing request that needs approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequestRecord {
    pub id: Uuid,
    pub wallet_ids: Vec<WalletId>,
    /// The unsigned PSBT, base64: what approvers and signers build the message from.
    pub psbt: String,
    pub txid: String,
    pub state: RequestState,
    /// Approvals needed, by the policy of the node that holds the request.
    pub required: u16,
    pub created_at: i64,
    pub expires_at: i64,
    /// The signing's report (JSON text) once signed.
    pub result: Option<String>,
    pub error: Option<String>,
    pub finished_at: Option<i64>,
    /// In the order they were recorded.
    pub decisions: Vec<DecisionRecord>,
}

macro_rules! select_request {
    ($rest:literal) => {
        concat!(
            "SELECT id, wallet_ids, psbt, txid, state, required, created_at, expires_at, ",
            "result, error, finished_at FROM approval_requests ",
            $rest
        )
    };
}

fn corrupt(table: &'static str, id: &str, reason: String) -> StoreError {
    StoreError::Corrupt {
        table,
        id: id.to_owned(),
        reason,
    }
}

fn request_from_row(row: &AnyRow) -> Result<ApprovalRequestRecord> {
    let id: String = get(row, "id", T)?;
    let wallet_ids: String = get(row, "wallet_ids", T)?;
    let state: String = get(row, "state", T)?;
    let required: i64 = get(row, "required", T)?;
    Ok(ApprovalRequestRecord {
        wallet_ids: serde_json::from_str(&wallet_ids)
            .map_err(|e| corrupt(T, &id, format!("wallet_ids: {e}")))?,
        psbt: get(row, "psbt", T)?,
        txid: get(row, "txid", T)?,
        state: RequestState::parse(&state)
            .ok_or_else(|| corrupt(T, &id, format!("unknown state {state:?}")))?,
        required: u16::try_from(required)
            .map_err(|_| corrupt(T, &id, format!("required {required} out of range")))?,
        created_at: get(row, "created_at", T)?,
        expires_at: get(row, "expires_at", T)?,
        result: get(row, "result", T)?,
        error: get(row, "error", T)?,
        finished_at: get(row, "finished_at", T)?,
        decisions: Vec::new(),
        id: parse_uuid(&id, T, &id)?,
    })
}

fn decision_from_row(row: &AnyRow) -> Result<DecisionRecord> {
    let key: String = get(row, "public_key", D)?;
    let decision: String = get(row, "decision", D)?;
    Ok(DecisionRecord {
        decision: Decision::parse(&decision)
            .ok_or_else(|| corrupt(D, &key, format!("unknown decision {decision:?}")))?,
        approver: get(row, "approver", D)?,
        signature: get(row, "signature", D)?,
        at: get(row, "at", D)?,
        public_key: key,
    })
}

impl Store {
    /// Records a new pending request (its decisions are recorded one by one after).
    pub async fn insert_approval_request(&self, request: &ApprovalRequestRecord) -> Result<()> {
        let wallet_ids = serde_json::to_string(&request.wallet_ids)
            .map_err(|e| StoreError::Invalid(format!("wallet ids: {e}")))?;
        sqlx::query(
            "INSERT INTO approval_requests (id, wallet_ids, psbt, txid, state, required, \
             created_at, expires_at, result, error, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(request.id.to_string())
        .bind(wallet_ids)
        .bind(&request.psbt)
        .bind(&request.txid)
        .bind(request.state.as_str())
        .bind(i64::from(request.required))
        .bind(request.created_at)
        .bind(request.expires_at)
        .bind(&request.result)
        .bind(&request.error)
        .bind(request.finished_at)
        .execute(self.pool())
        .await
        .context(|| format!("recording approval_requests/{}", request.id))?;
        Ok(())
    }

    async fn with_decisions(
        &self,
        mut request: ApprovalRequestRecord,
    ) -> Result<ApprovalRequestRecord> {
        let rows = sqlx::query(
            "SELECT public_key, approver, decision, signature, at FROM approval_decisions \
             WHERE request_id = $1 ORDER BY at, public_key",
        )
        .bind(request.id.to_string())
        .fetch_all(self.pool())
        .await
        .context(|| format!("reading the decisions of approval_requests/{}", request.id))?;
        request.decisions = rows.iter().map(decision_from_row).collect::<Result<_>>()?;
        Ok(request)
    }

    /// The request `id` with its decisions, if this node holds it.
    pub async fn approval_request(&self, id: Uuid) -> Result<Option<ApprovalRequestRecord>> {
        let row = sqlx::query(select_request!("WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await
            .context(|| format!("reading approval_requests/{id}"))?;
        match row.as_ref().map(request_from_row).transpose()? {
            Some(request) => Ok(Some(self.with_decisions(request).await?)),
            None => Ok(None),
        }
    }

    /// The `limit` most recent requests (in `state` if given), newest first, with decisions.
    pub async fn approval_requests(
        &self,
        state: Option<RequestState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRequestRecord>> {
        let rows = sqlx::query(select_request!(
            "WHERE ($1 IS NULL OR state = $1) ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(state.map(RequestState::as_str))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .context(|| "listing approval_requests".into())?;
        let mut requests = Vec::with_capacity(rows.len());
        for row in &rows {
            requests.push(self.with_decisions(request_from_row(row)?).await?);
        }
        Ok(requests)
    }

    /// Records an approver's decision; `false` if that approver (key) already decided on
    /// this request, which is left as it was.
    pub async fn record_approval_decision(
        &self,
        request: Uuid,
        decision: &DecisionRecord,
    ) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO approval_decisions (request_id, public_key, approver, decision, \
             signature, at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (request_id, public_key) DO NOTHING",
        )
        .bind(request.to_string())
        .bind(&decision.public_key)
        .bind(&decision.approver)
        .bind(decision.decision.as_str())
        .bind(&decision.signature)
        .bind(decision.at)
        .execute(self.pool())
        .await
        .context(|| format!("recording a decision on approval_requests/{request}"))?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Moves request `id` from `from` to `to` (with the signing's result or error, and when
    /// it ended): `false` if it was not in `from`, so of two callers one wins.
    pub async fn transition_approval_request(
        &self,
        id: Uuid,
        from: RequestState,
        to: RequestState,
        result: Option<&str>,
        error: Option<&str>,
        at: i64,
    ) -> Result<bool> {
        let moved = sqlx::query(
            "UPDATE approval_requests SET state = $1, result = $2, error = $3, finished_at = $4 \
             WHERE id = $5 AND state = $6",
        )
        .bind(to.as_str())
        .bind(result)
        .bind(error)
        .bind(at)
        .bind(id.to_string())
        .bind(from.as_str())
        .execute(self.pool())
        .await
        .context(|| format!("moving approval_requests/{id} from {from} to {to}"))?
        .rows_affected();
        Ok(moved == 1)
    }

    /// Marks every pending request whose expiry is at or before `now_ms` expired; their ids.
    pub async fn expire_approval_requests(&self, now_ms: i64) -> Result<Vec<Uuid>> {
        let due: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM approval_requests WHERE state = $1 AND expires_at <= $2",
        )
        .bind(RequestState::Pending.as_str())
        .bind(now_ms)
        .fetch_all(self.pool())
        .await
        .context(|| "listing expired approval_requests".into())?;
        let mut expired = Vec::new();
        for (id,) in due {
            let id = parse_uuid(&id, T, &id)?;
            if self
                .transition_approval_request(
                    id,
                    RequestState::Pending,
                    RequestState::Expired,
                    None,
                    None,
                    now_ms,
                )
                .await?
            {
                expired.push(id);
            }
        }
        Ok(expired)
    }
}
