//! Incidents: the blame a coordinator records when a signing attempt fails on named nodes, and
//! what it does with them (signer sets leave out a node with too many unreleased ones).

use mpc_store::{IncidentKind, IncidentRecord};
use mpc_transport::NodeId;
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

/// The evidence `error` carries for blame `b` of `me`'s own verdict: the accused's signed
/// message(s) and certificate, from this node's own run (a message that did not decode,
/// equivocation) or its own check of an outcome. A participant's report is its word and
/// carries none here.
fn evidence_for(me: NodeId, error: &NodeError, b: &Blame) -> Option<Vec<u8>> {
    if b.reporter != me {
        return None;
    }
    match error {
        NodeError::Misbehaved { node, evidence, .. } if *node == b.accused => evidence.clone(),
        NodeError::Refused { node, refusal } if *node == me => match refusal.kind {
            RefusalKind::PeerMisbehaved { node: accused } if accused == b.accused => {
                refusal.evidence.clone()
            }
            _ => None,
        },
        _ => None,
    }
}

impl Node {
    /// Records an incident for each node `error` blames (see [`blame`]), with the evidence of
    /// this node's own verdicts of misbehaviour (see [`evidence_for`]). A store error is
    /// logged, not returned: the request's own outcome matters more than its record.
    pub(crate) async fn record_incidents(
        &self,
        session: Uuid,
        wallet_id: &str,
        signers: &[NodeId],
        error: &NodeError,
    ) -> Vec<Blame> {
        let blamed = blame(self.id(), signers, error);
        for b in &blamed {
            let evidence = evidence_for(self.id(), error, b);
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
                Ok(()) => info!(
                    %session,
                    incident = %record.id,
                    accused = b.accused.get(),
                    reporter = b.reporter.get(),
                    kind = %b.kind,
                    evidence = record.evidence.is_some(),
                    "incident recorded"
                ),
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
    /// each (0 disables), with their counts. Only this node's own verdicts count: a
    /// participant's report is recorded under its name for operators to weigh, but one hostile
    /// participant reporting an honest peer in every run must not get that peer excluded
    /// (and itself picked in its place). Signed messages would make reports evidence.
    pub(crate) async fn excluded_for_incidents(&self) -> Result<Vec<(NodeId, u64)>, NodeError> {
        let threshold = self.inner.config.limits.exclude_after_incidents;
        if threshold == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .inner
            .store
            .unreleased_incident_counts(Some(self.id()))
            .await?
            .into_iter()
            .filter(|(_, count)| *count >= u64::from(threshold))
            .collect())
    }

    /// Releases `node`: its incidents stop counting toward its exclusion (they stay listed).
    /// Returns how many were released.
    pub async fn release_incidents(&self, node: NodeId) -> Result<u64, NodeError> {
        let released = self.inner.store.release_incidents(node, now_ms()).await?;
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
}
