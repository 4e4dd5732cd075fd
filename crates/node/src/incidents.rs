//! Incidents: the blame a coordinator records when a signing attempt fails on named nodes, and
//! what it does with them (signer sets leave out a node with too many unreleased ones).

use mpc_store::{AuditEvent, IncidentKind, IncidentRecord};
use mpc_transport::{NodeId, SessionId};
use mpc_types::WalletId;
use rustls_pki_types::CertificateDer;
use tracing::{info, warn};
use uuid::Uuid;

use crate::{now_ms, refusal::RefusalKind, Node, NodeError};

/// One incident a failed attempt supports: `reporter` blamed `accused` for `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blame {
    pub accused: NodeId,
    pub reporter: NodeId,
    pub kind: IncidentKind,
}

/// The blame `me`, the coordinator, can stand behind for `error`: its own verdict (a timeout,
/// an answer that failed its check) or a participant's typed report of its run (silent or
/// misbehaving peers). A signer's refusal of the request (its policy, its presignatures) is
/// no misbehaviour, and an abort that names nobody blames nobody. Never `me` itself: its own
/// failures are in its own logs, and another's word alone must not make it exclude itself.
/// Never a node outside the attempt's `signers` either: nobody there could have seen it fail.
pub fn blame(me: NodeId, signers: &[NodeId], error: &NodeError) -> Vec<Blame> {
    let all = match error {
        NodeError::Timeout { nodes, .. } => nodes
            .iter()
            .map(|&accused| Blame {
                accused,
                reporter: me,
                kind: IncidentKind::Silent,
            })
            .collect(),
        NodeError::Misbehaved { node, .. } => vec![Blame {
            accused: *node,
            reporter: me,
            kind: IncidentKind::InvalidOutcome,
        }],
        NodeError::Refused { node, refusal } => match &refusal.kind {
            RefusalKind::PeersSilent { nodes } => nodes
                .iter()
                .map(|&accused| Blame {
                    accused,
                    reporter: *node,
                    kind: IncidentKind::Silent,
                })
                .collect(),
            RefusalKind::PeerMisbehaved { node: accused } => vec![Blame {
                accused: *accused,
                reporter: *node,
                kind: IncidentKind::Misbehaved,
            }],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let mut blamed: Vec<Blame> = Vec::new();
    for b in all {
        // A reporter accusing itself says nothing about the others.
        if b.accused != me
            && b.accused != b.reporter
            && signers.contains(&b.accused)
            && !blamed.contains(&b)
        {
            blamed.push(b);
        }
    }
    blamed
}

/// The evidence `error` carries for blame `b`: the accused's signed message(s) and
/// certificate, from `me`'s own run (a message that did not decode, equivocation) or its own
/// check of an outcome, or attached to a participant's report of misbehaviour (checked by
/// [`proven_report`] before it is kept).
fn evidence_for(me: NodeId, error: &NodeError, b: &Blame) -> Option<Vec<u8>> {
    match error {
        NodeError::Misbehaved { node, evidence, .. } if *node == b.accused && b.reporter == me => {
            evidence.clone()
        }
        NodeError::Refused { node, refusal } if *node == b.reporter => match refusal.kind {
            RefusalKind::PeerMisbehaved { node: accused } if accused == b.accused => {
                refusal.evidence.clone()
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether `evidence` attached to a participant's report against `accused` proves it: it
/// verifies against this node's cluster CA `ca`, accuses that node, shows a fault the
/// messages alone settle (a payload that does not decode, equivocation; an exhibit does
/// not), and every message belongs to this very attempt (`session` or one of its per-input
/// sub-sessions), so evidence from another run cannot be replayed to have a node excluded
/// again. Anything less and the report stays the participant's word.
pub(crate) fn proven_report(
    ca: &CertificateDer<'_>,
    session: Uuid,
    max_inputs: usize,
    accused: NodeId,
    evidence: &[u8],
) -> Result<(), String> {
    let verified = crate::evidence::verify_evidence(evidence, ca).map_err(|e| e.to_string())?;
    if verified.accused != accused {
        return Err(format!("the evidence accuses node {}", verified.accused));
    }
    if !verified.fault_rechecked {
        return Err(format!(
            "{} evidence shows no fault by itself",
            verified.fault.as_str()
        ));
    }
    let attempt = SessionId::from_uuid(session);
    let ours = |s: SessionId| {
        s == attempt || (0..max_inputs).any(|k| attempt.derive(&format!("input/{k}")) == s)
    };
    if let Some(other) = verified.envelopes.iter().find(|e| !ours(e.session)) {
        return Err(format!(
            "a message of session {}, not of this attempt",
            other.session
        ));
    }
    Ok(())
}

impl Node {
    /// Records an incident for each node `error` blames (see [`blame`]), with the evidence of
    /// this node's own verdicts of misbehaviour (see [`evidence_for`]). A store error is
    /// logged, not returned: the request's own outcome matters more than its record.
    pub(crate) async fn record_incidents(
        &self,
        session: Uuid,
        wallet_id: &WalletId,
        signers: &[NodeId],
        error: &NodeError,
    ) -> Vec<Blame> {
        let blamed = blame(self.id(), signers, error);
        for b in &blamed {
            let mut evidence = evidence_for(self.id(), error, b);
            // A participant's evidence is kept only once it proves the report: a kept one
            // counts toward exclusion like this node's own verdicts.
            if let (true, Some(bytes)) = (b.reporter != self.id(), &evidence) {
                let max_inputs = self.inner.config.limits.max_inputs_per_psbt;
                let proven = self
                    .cluster_ca()
                    .map_err(|e| e.to_string())
                    .and_then(|ca| proven_report(&ca, session, max_inputs, b.accused, bytes));
                if let Err(reason) = proven {
                    warn!(
                        %session,
                        accused = b.accused.get(),
                        reporter = b.reporter.get(),
                        %reason,
                        "a participant's evidence does not prove its report: recorded as its word"
                    );
                    evidence = None;
                }
            }
            let record = IncidentRecord {
                id: Uuid::new_v4(),
                accused: b.accused,
                reporter: b.reporter,
                kind: b.kind,
                session,
                wallet_id: Some(wallet_id.to_owned()),
                at: now_ms(),
                detail: error.to_string(),
                evidence,
                released_at: None,
            };
            match self.inner.store.record_incident(&record).await {
                Ok(()) => {
                    info!(
                        %session,
                        incident = %record.id,
                        accused = b.accused.get(),
                        reporter = b.reporter.get(),
                        kind = %b.kind,
                        evidence = record.evidence.is_some(),
                        "incident recorded"
                    );
                    self.audit_after(AuditEvent::Incident {
                        id: record.id,
                        accused: b.accused.get(),
                        reporter: b.reporter.get(),
                        incident_kind: b.kind.to_string(),
                        session,
                    })
                    .await;
                }
                Err(e) => warn!(
                    %session,
                    accused = b.accused.get(),
                    error = %e,
                    "could not record an incident"
                ),
            }
        }
        blamed
    }

    /// Nodes kept out of signer sets: at least `exclude_after_incidents` unreleased incidents
    /// each (0 disables), with their counts. This node's own verdicts count, and participants'
    /// reports that came with evidence this node verified (the accused's signed message that
    /// shows the fault, from the same attempt). A report without is recorded under its
    /// reporter's name for operators to weigh, but one hostile participant reporting an honest
    /// peer in every run must not get that peer excluded (and itself picked in its place).
    pub(crate) async fn excluded_for_incidents(&self) -> Result<Vec<(NodeId, u64)>, NodeError> {
        let threshold = self.inner.config.limits.exclude_after_incidents;
        if threshold == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .inner
            .store
            .excluding_incident_counts(self.id())
            .await?
            .into_iter()
            .filter(|(_, count)| *count >= u64::from(threshold))
            .collect())
    }

    /// Releases `node`: its incidents stop counting toward its exclusion (they stay listed).
    /// Returns how many were released.
    pub async fn release_incidents(&self, node: NodeId) -> Result<u64, NodeError> {
        let released = self.inner.store.release_incidents(node, now_ms()).await?;
        self.audit_after(AuditEvent::IncidentsReleased {
            node: node.get(),
            released,
        })
        .await;
        info!(
            node = self.id().get(),
            released_node = node.get(),
            released,
            "incidents released by an operator"
        );
        Ok(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::Refusal;

    const ME: NodeId = NodeId::must(1);
    const N2: NodeId = NodeId::must(2);
    const N3: NodeId = NodeId::must(3);
    const N4: NodeId = NodeId::must(4);
    const SET: [NodeId; 3] = [ME, N2, N3];

    fn refused(node: NodeId, kind: RefusalKind) -> NodeError {
        NodeError::Refused {
            node,
            refusal: Refusal {
                kind,
                message: "x".into(),
                evidence: None,
            },
        }
    }

    #[test]
    fn blame_rests_on_own_verdicts_and_typed_reports_only() {
        let timeout = NodeError::Timeout {
            nodes: vec![ME, N3],
            seconds: 1.0,
        };
        assert_eq!(
            blame(ME, &SET, &timeout),
            [Blame {
                accused: N3,
                reporter: ME,
                kind: IncidentKind::Silent
            }],
            "never against itself"
        );
        let misbehaved = NodeError::Misbehaved {
            node: N2,
            reason: "bad share".into(),
            evidence: None,
        };
        assert_eq!(
            blame(ME, &SET, &misbehaved)[0].kind,
            IncidentKind::InvalidOutcome
        );
        let report = refused(N2, RefusalKind::PeerMisbehaved { node: N3 });
        assert_eq!(
            blame(ME, &SET, &report),
            [Blame {
                accused: N3,
                reporter: N2,
                kind: IncidentKind::Misbehaved
            }]
        );
        // Another's word against this node: not recorded.
        assert!(blame(
            ME,
            &SET,
            &refused(N2, RefusalKind::PeerMisbehaved { node: ME })
        )
        .is_empty());
        assert_eq!(
            blame(
                ME,
                &SET,
                &refused(
                    N2,
                    RefusalKind::PeersSilent {
                        nodes: vec![ME, N3, N2]
                    }
                )
            )
            .len(),
            1
        );
        // Nobody outside the attempt's signer set.
        assert!(blame(
            ME,
            &SET,
            &refused(N2, RefusalKind::PeerMisbehaved { node: N4 })
        )
        .is_empty());
        // Refusals that are no misbehaviour, and aborts naming nobody.
        for kind in [
            RefusalKind::Policy { rule: "r".into() },
            RefusalKind::ProtocolAborted,
            RefusalKind::Failed,
        ] {
            assert!(blame(ME, &SET, &refused(N2, kind)).is_empty());
        }
        assert!(blame(
            ME,
            &SET,
            &NodeError::Protocol(mpc_protocols::ProtocolError::Presign("x".into()))
        )
        .is_empty());
    }

    /// A participant's evidence proves its report only if it verifies, accuses the node the
    /// report names, shows a fault by itself, and comes from this very attempt.
    #[test]
    fn a_report_is_proven_only_by_evidence_of_this_attempt() {
        use mpc_protocols::ProtocolKind;
        use mpc_transport::{
            certs::{self, parse_certs},
            evidence::{Evidence, Fault},
            Envelope, NodeKey,
        };
        let dir = std::env::temp_dir().join(format!("mpc-proven-{}", Uuid::new_v4().simple()));
        certs::init_cluster(&dir, 3, |_| Vec::new(), 1).unwrap();
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap();
        let ca = parse_certs(&read(certs::ca_cert_path(&dir)))
            .unwrap()
            .remove(0);
        let cert2 = parse_certs(&read(certs::node_cert_path(&dir, N2)))
            .unwrap()
            .remove(0);
        let key2 = NodeKey::from_pem(&read(certs::node_key_path(&dir, N2))).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let attempt = Uuid::new_v4();
        let evidence = |session: SessionId, fault: Fault| {
            let envelope = Envelope {
                protocol: ProtocolKind::SchnorrSign.code(),
                session,
                round: 0,
                from: N2,
                to: None,
                // A CBOR map header with nothing after it: no message decodes from it.
                payload: vec![0xa1],
                signature: None,
            }
            .signed(&key2)
            .unwrap();
            Evidence {
                accused: N2,
                fault,
                certificate: cert2.clone(),
                envelopes: vec![envelope],
            }
            .encode()
        };
        let input1 = SessionId::from_uuid(attempt).derive("input/1");
        let good = evidence(input1, Fault::Undecodable);
        assert_eq!(proven_report(&ca, attempt, 4, N2, &good), Ok(()));
        assert!(
            proven_report(&ca, attempt, 4, N3, &good).is_err(),
            "another accused"
        );
        assert!(
            proven_report(&ca, Uuid::new_v4(), 4, N2, &good).is_err(),
            "replayed from another attempt"
        );
        assert!(
            proven_report(&ca, attempt, 1, N2, &good).is_err(),
            "an input the attempt does not have"
        );
        let exhibit = evidence(input1, Fault::Exhibit);
        assert!(
            proven_report(&ca, attempt, 4, N2, &exhibit).is_err(),
            "an exhibit shows no fault by itself"
        );
        let mut changed = good.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert!(proven_report(&ca, attempt, 4, N2, &changed).is_err());
    }
}
