//! Ceremony records (public), and the session ids seen, which refuse a replayed run.

use uuid::Uuid;

use crate::error::{Context, Result};
use crate::records::CeremonyRecord;
use crate::rows::{ceremony_from_row, select_ceremony};
use crate::store::{now_ms, Store};

impl Store {
    /// Inserts or replaces a ceremony record.
    pub async fn put_ceremony(&self, c: &CeremonyRecord) -> Result<()> {
        let result = c.result.as_ref().map(|r| r.to_string());
        sqlx::query(
            "INSERT INTO ceremonies (id, kind, state, coordinator, request, result, error, \
             started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, state = excluded.state, \
             coordinator = excluded.coordinator, request = excluded.request, \
             result = excluded.result, error = excluded.error, \
             started_at = excluded.started_at, finished_at = excluded.finished_at",
        )
        .bind(&c.id)
        .bind(&c.kind)
        .bind(&c.state)
        .bind(i64::from(c.coordinator.get()))
        .bind(c.request.to_string())
        .bind(result)
        .bind(&c.error)
        .bind(c.started_at)
        .bind(c.finished_at)
        .execute(self.pool())
        .await
        .context(|| format!("storing ceremonies/{}", c.id))?;
        Ok(())
    }

    pub async fn ceremony(&self, id: &str) -> Result<Option<CeremonyRecord>> {
        sqlx::query(select_ceremony!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .context(|| format!("reading ceremonies/{id}"))?
            .as_ref()
            .map(ceremony_from_row)
            .transpose()
    }

    /// The `limit` most recently started ceremonies, newest first.
    pub async fn ceremonies(&self, limit: u32) -> Result<Vec<CeremonyRecord>> {
        sqlx::query(select_ceremony!(
            "ORDER BY started_at DESC, id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .context(|| "listing ceremonies".into())?
        .iter()
        .map(ceremony_from_row)
        .collect()
    }

    /// Every ceremony recorded as still running, oldest first.
    pub async fn running_ceremonies(&self) -> Result<Vec<CeremonyRecord>> {
        sqlx::query(select_ceremony!(
            "WHERE state = 'running' ORDER BY started_at, id"
        ))
        .fetch_all(self.pool())
        .await
        .context(|| "listing running ceremonies".into())?
        .iter()
        .map(ceremony_from_row)
        .collect()
    }

    /// Records a session id; `false` if it was seen before (the caller must refuse the run).
    pub async fn mark_session_seen(&self, session: Uuid, protocol: &str) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO sessions_seen (session, protocol, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (session) DO NOTHING",
        )
        .bind(session.to_string())
        .bind(protocol)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .context(|| format!("marking sessions_seen/{session}"))?
        .rows_affected();
        Ok(inserted == 1)
    }
}
