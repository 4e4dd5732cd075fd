//! The coordinator's side of one round of the proposal protocol (propose → collect outcomes →
//! commit or abort → collect acknowledgements), as a state machine without I/O, in the manner
//! of `quinn-proto`: the caller feeds it the answers that arrive and the time that passed, and
//! it says when the round is decided and how. `Node::coordinate` and `Node::finish_ceremony`
//! drive it over the control channel.

use std::{collections::BTreeMap, time::Duration};

use mpc_transport::NodeId;
use tokio::time::Instant;

use crate::refusal::Refusal;

/// How often a waiting coordinator looks at its participants' liveness, so a participant that
/// died is noticed without waiting for the whole deadline.
pub const LIVENESS_POLL: Duration = Duration::from_millis(250);

/// One round: who must answer, what they answered, and until when.
#[derive(Debug)]
pub struct Round<T> {
    participants: Vec<NodeId>,
    answers: BTreeMap<NodeId, T>,
    started: Instant,
    deadline: Instant,
    decided: bool,
}

/// How a round ended.
#[derive(Debug, PartialEq)]
pub enum Verdict<T> {
    /// Every participant answered, in the order the participants were given.
    Complete(Vec<(NodeId, T)>),
    /// A participant refused: the round ends at once, without waiting for the others.
    Refused { node: NodeId, refusal: Refusal },
    /// Participants without an answer that stopped sending heartbeats.
    Dead {
        nodes: Vec<NodeId>,
        waited: Duration,
    },
    /// The deadline passed before these participants answered.
    TimedOut {
        nodes: Vec<NodeId>,
        waited: Duration,
    },
}

impl<T> Round<T> {
    pub fn new(participants: &[NodeId], now: Instant, timeout: Duration) -> Self {
        let mut unique: Vec<NodeId> = Vec::with_capacity(participants.len());
        for p in participants {
            if !unique.contains(p) {
                unique.push(*p);
            }
        }
        Self {
            participants: unique,
            answers: BTreeMap::new(),
            started: now,
            deadline: now + timeout,
            decided: false,
        }
    }

    /// When to look again if nothing arrives: the next liveness poll, or the deadline.
    pub fn wake_at(&self, now: Instant) -> Instant {
        (now + LIVENESS_POLL).min(self.deadline)
    }

    /// Participants that have not answered yet.
    pub fn silent(&self) -> Vec<NodeId> {
        self.participants
            .iter()
            .copied()
            .filter(|p| !self.answers.contains_key(p))
            .collect()
    }

    /// An answer from `from`. Ignored (`None`, nothing changes) when `from` is not a
    /// participant, has answered already (its first answer stands), or the round is decided.
    pub fn answer(&mut self, from: NodeId, result: Result<T, Refusal>) -> Option<Verdict<T>> {
        if self.decided || !self.participants.contains(&from) || self.answers.contains_key(&from) {
            return None;
        }
        match result {
            Err(refusal) => self.decide(Verdict::Refused {
                node: from,
                refusal,
            }),
            Ok(outcome) => {
                self.answers.insert(from, outcome);
                if self.answers.len() < self.participants.len() {
                    return None;
                }
                let mut answers = std::mem::take(&mut self.answers);
                let complete = self
                    .participants
                    .iter()
                    .filter_map(|p| answers.remove(p).map(|o| (*p, o)))
                    .collect();
                self.decide(Verdict::Complete(complete))
            }
        }
    }

    /// Time passed without an answer. `is_live` tells whether a node still sends heartbeats.
    pub fn tick(&mut self, now: Instant, is_live: impl Fn(NodeId) -> bool) -> Option<Verdict<T>> {
        if self.decided {
            return None;
        }
        let waited = now.saturating_duration_since(self.started);
        if now >= self.deadline {
            let nodes = self.silent();
            return self.decide(Verdict::TimedOut { nodes, waited });
        }
        let dead: Vec<NodeId> = self.silent().into_iter().filter(|p| !is_live(*p)).collect();
        if dead.is_empty() {
            return None;
        }
        self.decide(Verdict::Dead {
            nodes: dead,
            waited,
        })
    }

    /// No answer can arrive any more (every sender is gone): the silent participants time out.
    pub fn closed(&mut self, now: Instant) -> Option<Verdict<T>> {
        if self.decided {
            return None;
        }
        let nodes = self.silent();
        let waited = now.saturating_duration_since(self.started);
        self.decide(Verdict::TimedOut { nodes, waited })
    }

    fn decide(&mut self, verdict: Verdict<T>) -> Option<Verdict<T>> {
        self.decided = true;
        Some(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N1: NodeId = NodeId::must(1);
    const N2: NodeId = NodeId::must(2);
    const N3: NodeId = NodeId::must(3);
    const N9: NodeId = NodeId::must(9);

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn live(_: NodeId) -> bool {
        true
    }

    #[test]
    fn every_answer_completes_the_round_in_participant_order() {
        let t0 = Instant::now();
        let mut round = Round::new(&NodeId::must_list(&[3, 1, 2]), t0, TIMEOUT);
        assert_eq!(round.answer(N2, Ok("b")), None);
        assert_eq!(round.answer(N3, Ok("c")), None);
        assert_eq!(round.tick(t0 + ms(250), live), None);
        assert_eq!(round.silent(), NodeId::must_list(&[1]));
        assert_eq!(
            round.answer(N1, Ok("a")),
            Some(Verdict::Complete(vec![(N3, "c"), (N1, "a"), (N2, "b")]))
        );
    }

    #[test]
    fn a_refusal_ends_the_round_at_once() {
        let t0 = Instant::now();
        let mut round = Round::<&str>::new(&NodeId::must_list(&[1, 2, 3]), t0, TIMEOUT);
        assert_eq!(round.answer(N1, Ok("a")), None);
        let refusal = Refusal::failed("policy says no");
        assert_eq!(
            round.answer(N2, Err(refusal.clone())),
            Some(Verdict::Refused { node: N2, refusal })
        );
        // Node 3 is still silent, but nothing waits for it.
        assert_eq!(round.tick(t0 + TIMEOUT, live), None);
    }

    #[test]
    fn a_silent_participant_that_died_is_named_before_the_deadline() {
        let t0 = Instant::now();
        let mut round = Round::<&str>::new(&NodeId::must_list(&[1, 2, 3]), t0, TIMEOUT);
        assert_eq!(round.answer(N1, Ok("a")), None);
        // Node 1 dies after answering: that does not matter. Node 3 is silent and dead.
        let is_live = |n: NodeId| n == N2;
        assert_eq!(
            round.tick(t0 + ms(750), is_live),
            Some(Verdict::Dead {
                nodes: NodeId::must_list(&[3]),
                waited: ms(750)
            })
        );
    }

    #[test]
    fn the_deadline_names_the_silent_participants() {
        let t0 = Instant::now();
        let mut round = Round::<&str>::new(&NodeId::must_list(&[1, 2, 3]), t0, ms(1_000));
        assert_eq!(round.wake_at(t0), t0 + LIVENESS_POLL);
        assert_eq!(round.wake_at(t0 + ms(900)), t0 + ms(1_000));
        assert_eq!(round.answer(N2, Ok("b")), None);
        assert_eq!(round.tick(t0 + ms(999), live), None);
        assert_eq!(
            round.tick(t0 + ms(1_000), live),
            Some(Verdict::TimedOut {
                nodes: NodeId::must_list(&[1, 3]),
                waited: ms(1_000)
            })
        );
    }

    #[test]
    fn late_duplicate_and_stranger_answers_change_nothing() {
        let t0 = Instant::now();
        let mut round = Round::new(&NodeId::must_list(&[1, 2]), t0, TIMEOUT);
        // A stranger's answer and a second answer from node 1 (its first stands).
        assert_eq!(round.answer(N9, Ok("x")), None);
        assert_eq!(round.answer(N1, Ok("a")), None);
        assert_eq!(
            round.answer(N1, Err(Refusal::failed("changed my mind"))),
            None
        );
        assert_eq!(round.silent(), NodeId::must_list(&[2]));
        assert_eq!(
            round.answer(N2, Ok("b")),
            Some(Verdict::Complete(vec![(N1, "a"), (N2, "b")]))
        );
        // After the verdict: late answers, ticks and closing are ignored.
        assert_eq!(round.answer(N2, Err(Refusal::failed("late"))), None);
        assert_eq!(round.tick(t0 + TIMEOUT, |_| false), None);
        assert_eq!(round.closed(t0 + TIMEOUT), None);
    }

    #[test]
    fn a_closed_channel_times_out_whoever_is_silent() {
        let t0 = Instant::now();
        let mut round = Round::new(&NodeId::must_list(&[1, 2]), t0, TIMEOUT);
        assert_eq!(round.answer(N1, Ok(())), None);
        assert_eq!(
            round.closed(t0 + ms(5)),
            Some(Verdict::TimedOut {
                nodes: NodeId::must_list(&[2]),
                waited: ms(5)
            })
        );
    }
}
