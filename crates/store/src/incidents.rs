//! Incidents: blame this node recorded against another node, and their release by an operator.

use std::fmt;

use mpc_types::{NodeId, WalletId};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::error::{Context, Result, StoreError};
use crate::rows::{get, parse_uuid, to_node_id, to_u64, to_wallet_id};
use crate::store::Store;

const T: &str = "incidents";

/// What a node was blamed for: only what the code can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// It sent nothing in time: the coordinator waited for its answer in vain, or a
    /// participant's protocol run ended without its message of a round.
    Silent,
    /// A participant received a protocol message from it that did not decode, or two different
    /// messages for the same round (equivocation; the transport tells the two apart only in
    /// the reason's text).
    Misbehaved,
    /// The coordinator's own check of its answer failed: a malformed signing outcome, or a
    /// FROST share claiming another signer's index.
    InvalidOutcome,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 3] = [Self::Silent, Self::Misbehaved, Self::InvalidOutcome];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Silent => "silent",
            Self::Misbehaved => "misbehaved",
            Self::InvalidOutcome => "invalid_outcome",
        }
    }

    fn parse(text: &str, id: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt {
                table: T,
                id: id.to_owned(),
                reason: format!("unknown incident kind {text:?}"),
            })
    }
}

impl fmt::Display for IncidentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One incident: `reporter` blamed `accused` in `session`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRecord {
    pub id: Uuid,
    pub accused: NodeId,
    /// This node (its own verdict) or the participant whose typed report named `accused`.
    pub reporter: NodeId,
    pub kind: IncidentKind,
    pub session: Uuid,
    pub wallet_id: Option<WalletId>,
    pub at: i64,
    /// The error as the reporter worded it.
    pub detail: String,
    /// Evidence another node can check, when there is any.
    pub evidence: Option<Vec<u8>>,
    /// When an operator released the accused node; `None` while the incident counts.
    pub released_at: Option<i64>,
}

/// The column list every reader decodes (a literal: sqlx takes only static SQL).
macro_rules! select_incident {
    ($rest:literal) => {
        concat!(
            "SELECT id, accused, reporter, kind, session, wallet_id, at, detail, evidence, ",
            "released_at FROM incidents ",
            $rest
        )
    };
}

fn incident_from_row(row: &AnyRow) -> Result<IncidentRecord> {
    let id: String = get(row, "id", T)?;
    Ok(IncidentRecord {
        accused: to_node_id(get(row, "accused", T)?, T, &id)?,
        reporter: to_node_id(get(row, "reporter", T)?, T, &id)?,
        kind: IncidentKind::parse(&get::<String>(row, "kind", T)?, &id)?,
        session: parse_uuid(&get::<String>(row, "session", T)?, T, &id)?,
        wallet_id: get::<Option<String>>(row, "wallet_id", T)?
            .map(|w| to_wallet_id(w, T, &id))
            .transpose()?,
        at: get(row, "at", T)?,
        detail: get(row, "detail", T)?,
        evidence: get(row, "evidence", T)?,
        released_at: get(row, "released_at", T)?,
        id: parse_uuid(&id, T, &id)?,
    })
}

/// `(accused, count)` rows as node ids and counts.
fn per_node(rows: Vec<(i64, i64)>) -> Result<Vec<(NodeId, u64)>> {
    rows.into_iter()
        .map(|(node, count)| {
            let id = node.to_string();
            Ok((to_node_id(node, T, &id)?, to_u64(count, T, &id)?))
        })
        .collect()
}

impl Store {
    /// Records an incident (idempotent on its id).
    pub async fn record_incident(&self, incident: &IncidentRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO incidents (id, accused, reporter, kind, session, wallet_id, at, detail, \
             evidence, released_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(incident.id.to_string())
        .bind(i64::from(incident.accused.get()))
        .bind(i64::from(incident.reporter.get()))
        .bind(incident.kind.as_str())
        .bind(incident.session.to_string())
        .bind(incident.wallet_id.as_ref().map(WalletId::as_str))
        .bind(incident.at)
        .bind(&incident.detail)
        .bind(&incident.evidence)
        .bind(incident.released_at)
        .execute(self.pool())
        .await
        .context(|| format!("recording incidents/{}", incident.id))?;
        Ok(())
    }

    /// The incident `id`, if this node recorded it.
    pub async fn incident(&self, id: Uuid) -> Result<Option<IncidentRecord>> {
        let row = sqlx::query(select_incident!("WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await
            .context(|| format!("reading incidents/{id}"))?;
        row.as_ref().map(incident_from_row).transpose()
    }

    /// The `limit` most recent incidents, newest first, against `accused` if given.
    pub async fn incidents(
        &self,
        accused: Option<NodeId>,
        limit: u32,
    ) -> Result<Vec<IncidentRecord>> {
        let rows = match accused {
            Some(node) => {
                sqlx::query(select_incident!(
                    "WHERE accused = $1 ORDER BY at DESC, id DESC LIMIT $2"
                ))
                .bind(i64::from(node.get()))
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await
            }
            None => {
                sqlx::query(select_incident!("ORDER BY at DESC, id DESC LIMIT $1"))
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
            }
        }
        .context(|| "listing incidents".into())?;
        rows.iter().map(incident_from_row).collect()
    }

    /// Incidents not released yet, counted per accused node; only those `reporter` reported,
    /// if given.
    pub async fn unreleased_incident_counts(
        &self,
        reporter: Option<NodeId>,
    ) -> Result<Vec<(NodeId, u64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT accused, COUNT(*) FROM incidents WHERE released_at IS NULL \
             AND ($1 IS NULL OR reporter = $1) GROUP BY accused ORDER BY accused",
        )
        .bind(reporter.map(|r| i64::from(r.get())))
        .fetch_all(self.pool())
        .await
        .context(|| "counting unreleased incidents".into())?;
        per_node(rows)
    }

    /// Incidents not released yet that count toward excluding their accused node, counted
    /// per accused node: `me`'s own verdicts, and reports by others that came with evidence
    /// (recorded only once `me` verified it; a report without is another node's word).
    pub async fn excluding_incident_counts(&self, me: NodeId) -> Result<Vec<(NodeId, u64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT accused, COUNT(*) FROM incidents WHERE released_at IS NULL \
             AND (reporter = $1 OR evidence IS NOT NULL) GROUP BY accused ORDER BY accused",
        )
        .bind(i64::from(me.get()))
        .fetch_all(self.pool())
        .await
        .context(|| "counting incidents that exclude".into())?;
        per_node(rows)
    }

    /// Every incident ever recorded (released or not), counted per accused node and kind.
    pub async fn incident_counts(&self) -> Result<Vec<(NodeId, IncidentKind, u64)>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT accused, kind, COUNT(*) FROM incidents GROUP BY accused, kind \
             ORDER BY accused, kind",
        )
        .fetch_all(self.pool())
        .await
        .context(|| "counting incidents".into())?;
        rows.into_iter()
            .map(|(node, kind, count)| {
                let id = node.to_string();
                Ok((
                    to_node_id(node, T, &id)?,
                    IncidentKind::parse(&kind, &id)?,
                    to_u64(count, T, &id)?,
                ))
            })
            .collect()
    }

    /// Releases every unreleased incident against `accused`; returns how many.
    pub async fn release_incidents(&self, accused: NodeId, at_ms: i64) -> Result<u64> {
        let released = sqlx::query(
            "UPDATE incidents SET released_at = $1 WHERE accused = $2 AND released_at IS NULL",
        )
        .bind(at_ms)
        .bind(i64::from(accused.get()))
        .execute(self.pool())
        .await
        .context(|| format!("releasing incidents against node {accused}"))?
        .rows_affected();
        Ok(released)
    }
}
