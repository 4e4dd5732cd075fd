//! What this node appends to its audit log (`mpc_store::audit`), and who it names as the actor.
//!
//! Failure policy: an append that fails fails the operation it records, before anything leaves
//! the node where it can (a signer's share, the coordinator's signed transaction). A custody
//! node that cannot record what it signs does not sign. Events recorded after the fact
//! (a ceremony's outcome, an incident) are logged loudly when their append fails, since the
//! thing itself already happened.

use mpc_types::WalletId;
use std::future::Future;

use mpc_bitcoin::psbt::parse_psbt;
use mpc_store::{Actor, AuditEntry, AuditEvent, AuditHead, AuditOutput};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use mpc_transport::NodeId;
use tracing::error;

use crate::{
    audit_heads::AuditProblem,
    refusal::{Refusal, RefusalKind},
    Node, NodeConfig, NodeError,
};

tokio::task_local! {
    /// The API caller on whose request the current task runs.
    static CALLER: Actor;
}

/// Runs `work` with `caller` as the actor of the audit entries it appends (in this task).
pub async fn with_caller<F: Future>(caller: Actor, work: F) -> F::Output {
    CALLER.scope(caller, work).await
}

/// The actor of an entry appended now: the API caller if there is one, else the node.
fn current_actor() -> Actor {
    CALLER.try_with(Clone::clone).unwrap_or(Actor::Node)
}

/// SHA-256 of the config as the node runs it (policy, limits, cluster), without the store URL,
/// which may hold a database password. A config that does not serialize is an error, never
/// the digest of nothing.
pub fn config_digest(config: &NodeConfig) -> Result<String, NodeError> {
    let mut config = config.clone();
    config.store.url = None;
    let json = serde_json::to_vec(&config)
        .map_err(|e| NodeError::Internal(format!("the config does not serialize: {e}")))?;
    Ok(hex::encode(Sha256::digest(json)))
}

/// A time as the audit export and route take it: milliseconds since the Unix epoch, or an
/// RFC 3339 time (`2026-12-07T05:00:00Z`).
pub fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is neither milliseconds nor an RFC 3339 time: {e}"))?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is out of range"))
}

/// The txid and outputs of a base64 PSBT, if it parses (a request that does not is refused,
/// and still recorded).
pub(crate) fn psbt_summary(psbt_base64: &str) -> (Option<String>, Vec<AuditOutput>) {
    match parse_psbt(psbt_base64) {
        Ok(psbt) => (
            Some(psbt.unsigned_tx.compute_txid().to_string()),
            psbt.unsigned_tx
                .output
                .iter()
                .map(|o| AuditOutput {
                    script_pubkey: hex::encode(o.script_pubkey.as_bytes()),
                    amount_sats: o.value.to_sat(),
                })
                .collect(),
        ),
        Err(_) => (None, Vec::new()),
    }
}

/// What refused, as the refusal's kind names it: `policy:RULE`, `inputs:CODE,...`,
/// `invalid_transaction:RULE`, or the kind alone.
pub(crate) fn refusal_rule(error: &NodeError) -> String {
    match Refusal::from(error).kind {
        RefusalKind::Policy { rule } => format!("policy:{rule}"),
        RefusalKind::Approval { rule } => format!("approval:{rule}"),
        RefusalKind::Inputs { inputs } => format!(
            "inputs:{}",
            inputs
                .iter()
                .map(|i| i.code.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        RefusalKind::InvalidTransaction { rule, .. } => format!("invalid_transaction:{rule}"),
        RefusalKind::MalformedPsbt => "malformed_psbt".into(),
        RefusalKind::LimitExceeded { limit } => format!("limit:{limit}"),
        RefusalKind::FencingTokenRefused => "fencing_token_refused".into(),
        RefusalKind::CoordinationUnavailable => "coordination_unavailable".into(),
        RefusalKind::SessionReplayed { .. } => "session_replayed".into(),
        RefusalKind::PresignatureUnavailable { .. } => "presignature_unavailable".into(),
        RefusalKind::NotFound => "not_found".into(),
        RefusalKind::InvalidRequest => "invalid_request".into(),
        RefusalKind::PeersSilent { .. } => "peers_silent".into(),
        RefusalKind::PeerMisbehaved { .. } => "peer_misbehaved".into(),
        RefusalKind::ProtocolAborted => "protocol_aborted".into(),
        RefusalKind::Failed => "failed".into(),
    }
}

impl Node {
    /// Appends `event` with the current actor ([`with_caller`]); its failure is the caller's
    /// to decide on (see the module's failure policy).
    pub(crate) async fn audit(&self, event: AuditEvent) -> Result<AuditHead, NodeError> {
        self.audit_as(&current_actor(), event).await
    }

    pub(crate) async fn audit_as(
        &self,
        actor: &Actor,
        event: AuditEvent,
    ) -> Result<AuditHead, NodeError> {
        let head = self.inner.store.append_audit(actor, &event).await?;
        self.inner.webhooks.notify(self.id(), &head, actor, &event);
        let refused = match &event {
            AuditEvent::SigningFinished { ok: false, .. } => Some(0),
            AuditEvent::SignerRefused { .. } => Some(1),
            _ => None,
        };
        if let Some(role) = refused {
            self.inner.refusals[role].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(head)
    }

    /// Signings refused or failed since this node started, as recorded in its audit log:
    /// `(coordinator, signer)`, the requests it coordinated and the proposals it refused.
    pub fn refusals(&self) -> (u64, u64) {
        let [coordinator, signer] = &self.inner.refusals;
        (
            coordinator.load(std::sync::atomic::Ordering::Relaxed),
            signer.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// `result`, unless it is a success whose record (`recorded`) failed: then that failure,
    /// so nothing unrecorded is handed out. A failure whose record failed stays what it was,
    /// and the lost record is logged loudly.
    pub(crate) fn fail_closed<T>(
        &self,
        result: Result<T, NodeError>,
        recorded: Result<AuditHead, NodeError>,
    ) -> Result<T, NodeError> {
        match (result, recorded) {
            (Ok(_), Err(e)) => Err(e),
            (Err(failure), Err(e)) => {
                tracing::error!(node = self.id().get(), error = %e, "AUDIT LOG APPEND FAILED");
                Err(failure)
            }
            (result, Ok(_)) => result,
        }
    }

    /// A peer's audit log changed under this node's eyes (`audit_heads`): said at error, and
    /// kept in this node's own log (the status stays in cluster health and the metrics).
    pub(crate) fn peer_audit_log_changed(&self, peer: NodeId, problem: AuditProblem) {
        error!(
            node = self.id().get(),
            peer = peer.get(),
            ?problem,
            "a peer's audit log was rewritten or cut"
        );
        let (seq, shown, now, head) = match problem {
            AuditProblem::Rewritten { seq, shown, now } => (seq, shown, Some(now), None),
            AuditProblem::Truncated { seq, shown, head } => (seq, shown, None, head),
        };
        let node = self.clone();
        tokio::spawn(async move {
            node.audit_after(AuditEvent::PeerAuditLogChanged {
                node: peer.get(),
                seq,
                shown,
                now,
                head,
            })
            .await
        });
    }

    /// Appends an event about something that already happened: a failure is logged loudly.
    pub(crate) async fn audit_after(&self, event: AuditEvent) {
        if let Err(e) = self.audit(event).await {
            tracing::error!(node = self.id().get(), error = %e, "AUDIT LOG APPEND FAILED");
        }
    }

    /// Entries with `at_ms >= since_ms` after seq `after`, at most `limit`, in chain order.
    pub async fn audit_entries(
        &self,
        since_ms: i64,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, NodeError> {
        Ok(self
            .inner
            .store
            .audit_entries(since_ms, after, limit)
            .await?)
    }

    /// Records a ceremony's end as seen here.
    pub(crate) async fn audit_ceremony<T>(
        &self,
        ceremony: &str,
        session: Uuid,
        wallet_id: Option<WalletId>,
        coordinator: bool,
        result: &Result<T, NodeError>,
    ) {
        self.audit_after(AuditEvent::Ceremony {
            ceremony: ceremony.into(),
            session,
            wallet_id,
            coordinator,
            ok: result.is_ok(),
            error: result.as_ref().err().map(ToString::to_string),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn since_takes_milliseconds_or_rfc3339() {
        assert_eq!(super::parse_since("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(
            super::parse_since("2023-11-14T22:13:20.5Z"),
            Ok(1_700_000_000_500)
        );
        assert!(super::parse_since("yesterday").is_err());
    }
}
