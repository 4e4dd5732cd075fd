//! Peers' audit-log heads, checked over heartbeats, so that a log rewritten or cut while its
//! peers watched is noticed by them (a hash chain alone shows neither a consistent rewrite
//! nor a cut tail).
//!
//! Each heartbeat carries the sender's head (seq and hash), the seq of the receiver's head it
//! last checked (a question: "your hash at that seq now?"), and its answer to the receiver's
//! last question. A node keeps, per peer, the last head that checked out. It moves on to the
//! peer's new head only when the peer answered for the old one with the same hash. Another
//! hash there means the entry was rewritten; no entry there, or a head below it, means the
//! log was cut. The problem stays in the peer's status from then on.
//!
//! What this does not catch: the first head seen from a peer, and the first after this node
//! restarts, is taken as it comes; and a node whose own software lies (answers from a copy of
//! its old log) passes. It catches a database changed underneath a running peer, or while it
//! was stopped if this node kept running.

use std::{collections::HashMap, sync::Mutex};

use mpc_store::{AuditHash, AuditHead};
use mpc_transport::NodeId;
use serde::{Deserialize, Serialize};

/// A node's answer to "your hash at `seq`?": `hash` is `None` when it has no entry there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnswer {
    pub seq: u64,
    pub hash: Option<AuditHash>,
}

/// What a peer's heartbeats showed about its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum AuditProblem {
    /// Entry `seq`, shown as the peer's head with hash `shown`, now has hash `now`.
    Rewritten {
        seq: u64,
        shown: AuditHash,
        now: AuditHash,
    },
    /// Entry `seq`, shown as the peer's head with hash `shown`, is gone: the peer has no entry
    /// there, or reports a lower head (`head`, when it said).
    Truncated {
        seq: u64,
        shown: AuditHash,
        head: Option<u64>,
    },
}

/// A peer's audit log as this node has checked it, for cluster health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PeerAuditStatus {
    /// The peer's last head that checked out.
    pub checked_head: Option<AuditHead>,
    pub problem: Option<AuditProblem>,
}

#[derive(Debug, Default)]
struct Peer {
    checked: Option<AuditHead>,
    problem: Option<AuditProblem>,
    /// The seq the peer last asked this node about.
    asked: Option<u64>,
}

/// The audit heads of one node's peers.
#[derive(Debug, Default)]
pub struct AuditHeads {
    peers: Mutex<HashMap<NodeId, Peer>>,
}

impl AuditHeads {
    /// The seq to ask `peer` about in the next heartbeat to it.
    pub fn question_for(&self, peer: NodeId) -> Option<u64> {
        let peers = self.peers.lock().ok()?;
        peers.get(&peer)?.checked.map(|head| head.seq)
    }

    /// The seq `peer` last asked this node about (answered in the next heartbeat to it).
    pub fn asked_by(&self, peer: NodeId) -> Option<u64> {
        self.peers.lock().ok()?.get(&peer)?.asked
    }

    /// A heartbeat from `peer`. Returns a problem the first time one shows.
    pub fn heard(
        &self,
        peer: NodeId,
        head: Option<AuditHead>,
        asked: Option<u64>,
        answer: Option<AuditAnswer>,
    ) -> Option<AuditProblem> {
        let mut peers = self.peers.lock().ok()?;
        let p = peers.entry(peer).or_default();
        p.asked = asked;
        if p.problem.is_some() {
            return None;
        }
        let Some(checked) = p.checked else {
            p.checked = head;
            return None;
        };
        let problem = match (head, answer) {
            (Some(head), _) if head.seq < checked.seq => Some(AuditProblem::Truncated {
                seq: checked.seq,
                shown: checked.hash,
                head: Some(head.seq),
            }),
            (head, Some(answer)) if answer.seq == checked.seq => match answer.hash {
                None => Some(AuditProblem::Truncated {
                    seq: checked.seq,
                    shown: checked.hash,
                    head: head.map(|h| h.seq),
                }),
                Some(now) if now != checked.hash => Some(AuditProblem::Rewritten {
                    seq: checked.seq,
                    shown: checked.hash,
                    now,
                }),
                Some(_) => {
                    // The entry it showed is still there: move on to its new head.
                    if head.is_some() {
                        p.checked = head;
                    }
                    None
                }
            },
            // No answer yet for the head this node holds (answers trail by a heartbeat).
            _ => None,
        };
        p.problem = problem;
        problem
    }

    pub fn status(&self, peer: NodeId) -> Option<PeerAuditStatus> {
        let peers = self.peers.lock().ok()?;
        let p = peers.get(&peer)?;
        Some(PeerAuditStatus {
            checked_head: p.checked,
            problem: p.problem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: NodeId = NodeId::must(2);

    fn head(seq: u64, byte: u8) -> AuditHead {
        AuditHead {
            seq,
            hash: AuditHash([byte; 32]),
        }
    }

    fn answer(seq: u64, byte: Option<u8>) -> Option<AuditAnswer> {
        Some(AuditAnswer {
            seq,
            hash: byte.map(|b| AuditHash([b; 32])),
        })
    }

    /// The first head is taken as it comes, then asked about until answered.
    fn watching() -> AuditHeads {
        let heads = AuditHeads::default();
        assert_eq!(heads.heard(PEER, Some(head(5, 5)), None, None), None);
        assert_eq!(heads.question_for(PEER), Some(5));
        heads
    }

    #[test]
    fn a_log_that_only_grows_moves_the_checked_head_on() {
        let heads = watching();
        // No answer yet, or an answer for another seq: the checked head stays.
        assert_eq!(heads.heard(PEER, Some(head(6, 6)), Some(3), None), None);
        assert_eq!(
            heads.heard(PEER, Some(head(6, 6)), None, answer(4, Some(4))),
            None
        );
        assert_eq!(heads.question_for(PEER), Some(5));
        assert_eq!(heads.asked_by(PEER), None);
        // Entry 5 unchanged: on to 7.
        assert_eq!(
            heads.heard(PEER, Some(head(7, 7)), Some(9), answer(5, Some(5))),
            None
        );
        assert_eq!(heads.question_for(PEER), Some(7));
        assert_eq!(heads.asked_by(PEER), Some(9));
        assert_eq!(heads.status(PEER).and_then(|s| s.problem), None);
    }

    #[test]
    fn a_rewritten_entry_is_named_once_and_stays() {
        let heads = watching();
        let problem = heads.heard(PEER, Some(head(8, 8)), None, answer(5, Some(0xee)));
        assert_eq!(
            problem,
            Some(AuditProblem::Rewritten {
                seq: 5,
                shown: AuditHash([5; 32]),
                now: AuditHash([0xee; 32]),
            })
        );
        // Reported once; the status keeps it, whatever the peer says next.
        assert_eq!(
            heads.heard(PEER, Some(head(9, 9)), None, answer(5, Some(5))),
            None
        );
        assert_eq!(heads.status(PEER).and_then(|s| s.problem), problem);
        assert_eq!(heads.question_for(PEER), Some(5));
    }

    #[test]
    fn a_cut_tail_is_named_by_the_answer_or_by_a_lower_head() {
        let heads = watching();
        let gone = heads.heard(PEER, Some(head(5, 0xaa)), None, answer(5, None));
        assert_eq!(
            gone,
            Some(AuditProblem::Truncated {
                seq: 5,
                shown: AuditHash([5; 32]),
                head: Some(5),
            })
        );
        let heads = watching();
        let lower = heads.heard(PEER, Some(head(3, 3)), None, None);
        assert_eq!(
            lower,
            Some(AuditProblem::Truncated {
                seq: 5,
                shown: AuditHash([5; 32]),
                head: Some(3),
            })
        );
    }
}
