//! The second phase that key refresh, aux info and key generation share. Participants keep what the protocol
//! produced as pending; the coordinator commits only when every participant reported the same
//! public result, **records its decision before announcing it**, and answers a participant that
//! asks ([`Control::Decision`]) from that record. A participant applies the decision it hears,
//! or asks when its wait ends (or at its next start); undecided, it keeps the pending result
//! and never guesses: dropping it after the others committed would leave it behind, committing
//! it after an abort would put it ahead.

use std::{future::Future, time::Duration};

use mpc_store::{CeremonyRecord, Store};
use mpc_transport::NodeId;
use tokio::sync::oneshot;
use tracing::{info, warn};
use uuid::Uuid;

use crate::{control::Control, now_ms, Node, NodeError};

/// In a running record's result: the coordinator decided to commit (it announces it next).
const COMMIT: &str = "commit_decided";
/// Why a ceremony its coordinator never decided failed.
const INTERRUPTED: &str = "the coordinator restarted before deciding the ceremony";
/// The ceremony kinds (as recorded) decided in two phases: the only ones a participant asks
/// about. (Key generation's pending wallets are not settled at a start: the wallet row does not
/// record the coordinator.)
const TWO_PHASE: &[&str] = &["refresh", "aux-info", "keygen", "reshare", "repair"];
/// How often, and how many times, an undecided participant asks the coordinator.
const ASK_EVERY: Duration = Duration::from_millis(500);
const ASK_TIMES: u32 = 240;

/// A decision as a participant hears it: commit, or abort with the reason.
pub(crate) type Decision = Result<(), String>;

impl Node {
    /// The coordinator's second phase: on `agreed` (every participant reported the same public
    /// result; `Ok` holds what the running record keeps with the commit), records the commit in
    /// the still-running record, then announces it; otherwise records the failure and announces
    /// the abort. A commit this node could not record is not announced: the ceremony aborts.
    /// Returns the participants that did not acknowledge the commit (they learn it by asking).
    pub(super) async fn commit_or_abort(
        &self,
        session: Uuid,
        kind: &str,
        (request, started_at): (&serde_json::Value, i64),
        participants: &[NodeId],
        agreed: Result<serde_json::Value, NodeError>,
    ) -> Result<Vec<NodeId>, NodeError> {
        let agreed = match agreed {
            Ok(mut kept) => {
                kept[COMMIT] = true.into();
                let decision = CeremonyRecord {
                    id: session.to_string(),
                    kind: kind.into(),
                    state: "running".into(),
                    coordinator: self.id(),
                    request: request.clone(),
                    result: Some(kept),
                    error: None,
                    started_at,
                    finished_at: None,
                };
                self.inner
                    .store
                    .put_ceremony(&decision)
                    .await
                    .map_err(NodeError::from)
            }
            Err(e) => Err(e),
        };
        match agreed {
            Ok(()) => {
                crate::failpoint::crash_point("ceremony:decided");
                let missing = self.finish_ceremony(session, participants, Ok(())).await;
                if !missing.is_empty() {
                    warn!(?missing, %session, kind, "nodes did not acknowledge the commit");
                }
                Ok(missing)
            }
            Err(e) => {
                let reason = e.to_string();
                self.record_ceremony(
                    session,
                    kind,
                    request.clone(),
                    started_at,
                    &Err(reason.clone()),
                )
                .await;
                self.finish_ceremony(session, participants, Err(reason))
                    .await;
                Err(e)
            }
        }
    }

    /// A participant's second phase for what it holds pending from ceremony `session`: waits
    /// up to `wait` for the decision registered in `heard` (`None`: not registered, as at a
    /// start), asks `coordinator` if none came, then `apply`s it and acknowledges. Undecided
    /// after every attempt, nothing is applied: the next start asks again.
    pub(super) async fn settle<F, Fut>(
        &self,
        (coordinator, session): (NodeId, Uuid),
        heard: Option<(oneshot::Receiver<Decision>, Duration)>,
        apply: F,
    ) where
        F: FnOnce(Decision) -> Fut,
        Fut: Future<Output = Decision>,
    {
        let heard = match heard {
            Some((rx, wait)) => match tokio::time::timeout(wait, rx).await {
                Ok(Ok(d)) => Some(d),
                _ => None,
            },
            None => None,
        };
        let decision = match heard {
            Some(d) => Some(d),
            None => self.ask_decision(coordinator, session).await,
        };
        let Some(decision) = decision else {
            warn!(node = self.id().get(), %session, "still undecided: the pending result is kept until the coordinator answers");
            return;
        };
        let applied = apply(decision.clone()).await;
        crate::failpoint::crash_point("ceremony:applied");
        self.acknowledge(coordinator, session, applied.and(decision))
            .await;
    }

    /// Asks `coordinator` for its decision on `session` until it answers (`None` if it never
    /// does within the attempts).
    async fn ask_decision(&self, coordinator: NodeId, session: Uuid) -> Option<Decision> {
        if coordinator == self.id() {
            for _ in 0..ASK_TIMES {
                if let Some(d) = self.ceremony_decision(session).await {
                    return Some(d);
                }
                tokio::time::sleep(ASK_EVERY).await;
            }
            return None;
        }
        // One registration for every attempt, so an answer to an earlier one still counts.
        let mut answer = self.await_commit(coordinator, session);
        for attempt in 0..ASK_TIMES {
            // Numbered: the router drops a control message identical to one it already took.
            let asked = Control::Decision { session, attempt };
            if let Err(e) = self.send_control(coordinator, session, &asked).await {
                warn!(node = self.id().get(), %session, error = %e, "could not ask for the decision");
            }
            match tokio::time::timeout(ASK_EVERY, &mut answer).await {
                Ok(Ok(d)) => return Some(d),
                Ok(Err(_)) => return None,
                Err(_) => {}
            }
        }
        None
    }

    /// This node's decision on two-phase ceremony `session` as its coordinator: commit or
    /// abort as recorded; abort for one it has no record of (never proposed here), or whose
    /// record is still running while no ceremony runs (this node restarted before deciding,
    /// and never will); `None` while it is still deciding.
    pub(crate) async fn ceremony_decision(&self, session: Uuid) -> Option<Decision> {
        let record = match self.inner.store.ceremony(&session.to_string()).await {
            Ok(r) => r,
            Err(e) => {
                warn!(node = self.id().get(), error = %e, "could not read the ceremony's record");
                return None;
            }
        };
        match record {
            Some(r) if !TWO_PHASE.contains(&r.kind.as_str()) => Some(Err(format!(
                "session {session} is a {}, decided in one phase",
                r.kind
            ))),
            Some(r) if r.state == "succeeded" => Some(Ok(())),
            Some(r) if r.state == "failed" => {
                Some(Err(r.error.unwrap_or_else(|| "the ceremony failed".into())))
            }
            Some(r) if r.result.as_ref().is_some_and(|v| v[COMMIT] == true) => Some(Ok(())),
            Some(_) if Deciding::is(self, session) => None,
            Some(_) => Some(Err(INTERRUPTED.into())),
            None => Some(Err(format!("no ceremony {session} was coordinated here"))),
        }
    }

    /// Answers a participant's [`Control::Decision`] for `session` (nothing while deciding).
    pub(crate) async fn decision_asked(&self, from: NodeId, session: Uuid) {
        let Some(decision) = self.ceremony_decision(session).await else {
            return;
        };
        let msg = match decision {
            Ok(()) => Control::Commit { session },
            Err(reason) => Control::Abort { session, reason },
        };
        if let Err(e) = self.send_control(from, session, &msg).await {
            warn!(node = self.id().get(), peer = from.get(), error = %e, "could not answer a decision request");
        }
    }

    /// At start: settle every pending wallet, share and aux info left by a ceremony this node
    /// never heard decided.
    pub(crate) async fn settle_pending_at_start(&self) {
        let store = &self.inner.store;
        match store.pending_wallets().await {
            Ok(pending) => {
                for w in pending {
                    let Some(coordinator) = w.coordinator else {
                        warn!(node = self.id().get(), wallet = %w.id, "pending wallet from before coordinators were recorded: left pending");
                        continue;
                    };
                    info!(node = self.id().get(), wallet = %w.id, session = %w.session, "pending wallet found at start: asking its coordinator");
                    let node = self.clone();
                    self.spawn(async move {
                        node.settle_keygen(&w.id, (coordinator, w.session), None)
                            .await
                    });
                }
            }
            Err(e) => warn!(node = self.id().get(), error = %e, "could not list pending wallets"),
        }
        let mut refreshes = Vec::new();
        match store.pending_shares().await {
            Ok(pending) => {
                for p in pending {
                    refreshes.push(p.session);
                    let node = self.clone();
                    self.spawn(async move { node.settle_refresh(p, None).await });
                }
            }
            Err(e) => warn!(node = self.id().get(), error = %e, "could not list pending shares"),
        }
        match store.pending_aux_infos().await {
            Ok(pending) => {
                // An ECDSA refresh's aux info is settled with its share.
                for p in pending
                    .into_iter()
                    .filter(|p| !refreshes.contains(&p.session))
                {
                    info!(node = self.id().get(), session = %p.session, "pending aux info found at start: asking its coordinator");
                    let node = self.clone();
                    self.spawn(async move { node.settle_aux_info(p, None).await });
                }
            }
            Err(e) => warn!(node = self.id().get(), error = %e, "could not list pending aux info"),
        }
    }
}

/// At start, before any service runs: a ceremony record still `running` was left by this
/// node's previous run, which ended before finishing it. One whose commit was recorded
/// succeeded (its participants learn the commit by asking); any other failed, as this node
/// answers participants that ask. Left running, a client polling it would wait for ever.
pub(crate) async fn finish_interrupted_ceremonies(store: &Store, node: NodeId) {
    let running = match store.running_ceremonies().await {
        Ok(r) => r,
        Err(e) => {
            warn!(node = node.get(), error = %e, "could not list running ceremonies");
            return;
        }
    };
    for mut record in running {
        let committed = record.result.as_ref().is_some_and(|v| v[COMMIT] == true);
        if committed {
            record.state = "succeeded".into();
        } else {
            record.state = "failed".into();
            record.error = Some(INTERRUPTED.into());
        }
        record.finished_at = Some(now_ms());
        match store.put_ceremony(&record).await {
            Ok(()) => {
                info!(node = node.get(), session = %record.id, kind = %record.kind, state = %record.state, "ceremony interrupted by a restart: finished")
            }
            Err(e) => {
                warn!(node = node.get(), session = %record.id, error = %e, "could not finish an interrupted ceremony")
            }
        }
    }
}

/// Marks a two-phase ceremony as being decided by this node while it lives.
pub(super) struct Deciding {
    node: Node,
    session: Uuid,
}

impl Deciding {
    pub(super) fn new(node: &Node, session: Uuid) -> Self {
        if let Ok(mut s) = node.inner.deciding.lock() {
            s.insert(session);
        }
        Deciding {
            node: node.clone(),
            session,
        }
    }

    fn is(node: &Node, session: Uuid) -> bool {
        node.inner
            .deciding
            .lock()
            .map(|s| s.contains(&session))
            .unwrap_or(false)
    }
}

impl Drop for Deciding {
    fn drop(&mut self) {
        if let Ok(mut s) = self.node.inner.deciding.lock() {
            s.remove(&self.session);
        }
    }
}
