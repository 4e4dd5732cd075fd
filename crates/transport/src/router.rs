//! The session router: every incoming envelope goes to the protocol session it belongs to.
//!
//! * Sessions are registered with their participants; a message from anyone else is refused.
//! * A message for a session this node has not registered yet is held briefly (bounded in
//!   count, bytes and time), since peers may start a run a moment before we do.
//! * An identical copy of a message already delivered is dropped; a *different* message for
//!   the same (session, round, sender, recipient) is equivocation and aborts the session.
//! * Messages for a session that already finished are refused (replays).
//! * Control messages bypass sessions and go to the node's control channel, once: an identical
//!   copy of a recent one (a frame the sender resent after losing its connection) is dropped.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{Envelope, NodeId, SessionId};

/// Bounds on what the router holds for sessions it does not know yet.
#[derive(Debug, Clone)]
pub struct RouterLimits {
    pub hold_time: Duration,
    pub max_held_messages: usize,
    pub max_held_bytes: usize,
    /// How many finished session ids are remembered in memory for replay refusal (the
    /// node's store remembers every session id durably).
    pub finished_memory: usize,
    /// How many recent control messages are remembered to drop resent copies.
    pub control_memory: usize,
}

impl Default for RouterLimits {
    fn default() -> Self {
        Self {
            hold_time: Duration::from_secs(10),
            max_held_messages: 4096,
            max_held_bytes: 64 << 20,
            finished_memory: 100_000,
            control_memory: 10_000,
        }
    }
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "sender field says node {claimed} but the connection is authenticated as node {actual}"
    )]
    Impersonation { claimed: NodeId, actual: NodeId },
    #[error("addressed to node {0}, not to this node")]
    WrongRecipient(NodeId),
    #[error("session {0} has finished (replayed message)")]
    FinishedSession(SessionId),
    #[error("node {from} is not a participant of session {session}")]
    NotParticipant { session: SessionId, from: NodeId },
    #[error("node {from} sent two different messages for round {round} of session {session}")]
    Equivocation {
        session: SessionId,
        from: NodeId,
        round: u16,
    },
    #[error("holding area full; message for unknown session {0} dropped")]
    HoldFull(SessionId),
}

/// What happened to an accepted envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    Delivered,
    Control,
    Held,
    Duplicate,
}

/// What a session's inbox yields.
#[derive(Debug)]
pub enum SessionEvent {
    Message(Envelope),
    /// The session cannot continue (equivocation); the protocol must abort.
    Fault(Refusal),
}

/// Errors registering a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("session {0} is already running")]
    AlreadyActive(SessionId),
    #[error("session {0} already ran on this node")]
    AlreadyFinished(SessionId),
}

struct Session {
    participants: Vec<NodeId>,
    tx: mpsc::UnboundedSender<SessionEvent>,
    seen: HashMap<(NodeId, u8, u16, Option<NodeId>), [u8; 32]>,
}

struct Held {
    at: Instant,
    from: NodeId,
    envelope: Envelope,
}

#[derive(Default)]
struct State {
    sessions: HashMap<SessionId, Session>,
    held: VecDeque<Held>,
    held_bytes: usize,
    finished: Recent<SessionId>,
    control_seen: Recent<ControlKey>,
}

/// The last `limit` distinct keys inserted (older ones forgotten first).
pub struct Recent<K> {
    keys: HashSet<K>,
    order: VecDeque<K>,
}

impl<K> Default for Recent<K> {
    fn default() -> Self {
        Self {
            keys: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Recent<K> {
    pub fn contains(&self, key: &K) -> bool {
        self.keys.contains(key)
    }

    /// Remembers `key`; false if it was already remembered.
    pub fn insert(&mut self, key: K, limit: usize) -> bool {
        if !self.keys.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > limit {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        true
    }

    /// Forgets `key` (linear in the number remembered: for rare corrections).
    pub fn remove(&mut self, key: &K) {
        if self.keys.remove(key) {
            self.order.retain(|k| k != key);
        }
    }
}

/// A control message's identity: sender, session and content.
type ControlKey = (NodeId, SessionId, [u8; 32]);

/// Routes envelopes for one node. Cheap to share (`Arc`).
pub struct Router {
    me: NodeId,
    limits: RouterLimits,
    state: Mutex<State>,
    control: mpsc::UnboundedSender<Envelope>,
}

/// A registered session's incoming messages. Dropping it finishes the session: later
/// messages for it are refused as replays.
pub struct SessionInbox {
    pub session: SessionId,
    rx: mpsc::UnboundedReceiver<SessionEvent>,
    router: Arc<Router>,
}

impl SessionInbox {
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        self.rx.recv().await
    }

    /// Splits off the receiver (for adapters that need to own it); the session still
    /// finishes when this handle is dropped.
    pub fn receiver(&mut self) -> &mut mpsc::UnboundedReceiver<SessionEvent> {
        &mut self.rx
    }
}

impl Drop for SessionInbox {
    fn drop(&mut self) {
        self.router.finish(self.session);
    }
}

impl Router {
    /// A router for node `me`; control envelopes go to the returned receiver.
    pub fn new(me: NodeId, limits: RouterLimits) -> (Arc<Self>, mpsc::UnboundedReceiver<Envelope>) {
        let (control, control_rx) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                me,
                limits,
                state: Mutex::new(State::default()),
                control,
            }),
            control_rx,
        )
    }

    pub fn local_id(&self) -> NodeId {
        self.me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session with its participants (this node among them) and delivers any
    /// messages held for it.
    pub fn register(
        self: &Arc<Self>,
        session: SessionId,
        participants: &[NodeId],
    ) -> Result<SessionInbox, RegisterError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.lock();
        if state.finished.contains(&session) {
            return Err(RegisterError::AlreadyFinished(session));
        }
        if state.sessions.contains_key(&session) {
            return Err(RegisterError::AlreadyActive(session));
        }
        state.sessions.insert(
            session,
            Session {
                participants: participants.to_vec(),
                tx,
                seen: HashMap::new(),
            },
        );
        let held: Vec<Held> = {
            let (mine, rest): (Vec<_>, Vec<_>) = state
                .held
                .drain(..)
                .partition(|h| h.envelope.session == session);
            state.held = rest.into();
            mine
        };
        for h in held {
            state.held_bytes -= h.envelope.payload.len();
            if let Err(refusal) = deliver_to_session(&mut state, h.from, h.envelope) {
                warn!(%session, %refusal, "held message refused");
            }
        }
        drop(state);
        Ok(SessionInbox {
            session,
            rx,
            router: self.clone(),
        })
    }

    fn finish(&self, session: SessionId) {
        let mut state = self.lock();
        state.sessions.remove(&session);
        state.finished.insert(session, self.limits.finished_memory);
    }

    /// Marks a session id as used without running it here (e.g. one this node refused), so
    /// later messages for it are refused as replays.
    pub fn forget_session(&self, session: SessionId) {
        self.finish(session)
    }

    /// Routes an envelope received on a connection authenticated as `from`.
    pub fn deliver(&self, from: NodeId, envelope: Envelope) -> Result<Routed, Refusal> {
        if envelope.from != from {
            return Err(Refusal::Impersonation {
                claimed: envelope.from,
                actual: from,
            });
        }
        if let Some(to) = envelope.to {
            if to != self.me {
                return Err(Refusal::WrongRecipient(to));
            }
        }
        let mut state = self.lock();
        if envelope.is_control() {
            let key = (from, envelope.session, envelope.content_digest());
            if !state.control_seen.insert(key, self.limits.control_memory) {
                debug!(session = %envelope.session, from, "duplicate control message dropped");
                return Ok(Routed::Duplicate);
            }
            drop(state);
            // The node may be shutting down; a dropped control message is then harmless.
            let _ = self.control.send(envelope);
            return Ok(Routed::Control);
        }
        let session = envelope.session;
        if state.finished.contains(&session) {
            return Err(Refusal::FinishedSession(session));
        }
        if state.sessions.contains_key(&session) {
            return deliver_to_session(&mut state, from, envelope);
        }
        self.expire_held(&mut state);
        let size = envelope.payload.len();
        if state.held.len() >= self.limits.max_held_messages
            || state.held_bytes + size > self.limits.max_held_bytes
        {
            return Err(Refusal::HoldFull(session));
        }
        state.held_bytes += size;
        state.held.push_back(Held {
            at: Instant::now(),
            from,
            envelope,
        });
        Ok(Routed::Held)
    }

    fn expire_held(&self, state: &mut State) {
        while let Some(front) = state.held.front() {
            if front.at.elapsed() < self.limits.hold_time {
                break;
            }
            if let Some(h) = state.held.pop_front() {
                state.held_bytes -= h.envelope.payload.len();
                warn!(
                    session = %h.envelope.session,
                    from = h.from,
                    "dropped a message for a session this node never registered"
                );
            }
        }
    }

    /// Drops held messages older than the hold time (call periodically).
    pub fn sweep(&self) {
        let mut state = self.lock();
        self.expire_held(&mut state);
    }

    /// Number of messages held for unknown sessions (for health and tests).
    pub fn held_count(&self) -> usize {
        let mut state = self.lock();
        self.expire_held(&mut state);
        state.held.len()
    }
}

fn deliver_to_session(
    state: &mut State,
    from: NodeId,
    envelope: Envelope,
) -> Result<Routed, Refusal> {
    let session_id = envelope.session;
    let Some(session) = state.sessions.get_mut(&session_id) else {
        return Err(Refusal::FinishedSession(session_id));
    };
    if !session.participants.contains(&from) {
        return Err(Refusal::NotParticipant {
            session: session_id,
            from,
        });
    }
    let key = (from, envelope.protocol, envelope.round, envelope.to);
    let digest = envelope.content_digest();
    match session.seen.get(&key) {
        Some(d) if *d == digest => {
            debug!(session = %session_id, from, round = envelope.round, "duplicate dropped");
            return Ok(Routed::Duplicate);
        }
        Some(_) => {
            let refusal = Refusal::Equivocation {
                session: session_id,
                from,
                round: envelope.round,
            };
            let _ = session.tx.send(SessionEvent::Fault(refusal.clone()));
            return Err(refusal);
        }
        None => {
            session.seen.insert(key, digest);
        }
    }
    // The inbox may already be closed if the protocol ended; the message is then moot.
    let _ = session.tx.send(SessionEvent::Message(envelope));
    Ok(Routed::Delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(session: u8, from: NodeId, round: u16, payload: &[u8]) -> Envelope {
        Envelope {
            protocol: 1,
            session: SessionId([session; 16]),
            round,
            from,
            to: None,
            payload: payload.to_vec(),
        }
    }

    fn limits() -> RouterLimits {
        RouterLimits {
            hold_time: Duration::from_millis(200),
            max_held_messages: 3,
            max_held_bytes: 1 << 20,
            finished_memory: 2,
            control_memory: 2,
        }
    }

    #[tokio::test]
    async fn delivers_holds_dedups_and_refuses() {
        let (router, mut control) = Router::new(1, limits());
        // Early message: held, then delivered on registration.
        assert_eq!(router.deliver(2, env(7, 2, 1, b"a")), Ok(Routed::Held));
        let mut inbox = router.register(SessionId([7; 16]), &[1, 2, 3]).unwrap();
        assert!(matches!(inbox.recv().await, Some(SessionEvent::Message(e)) if e.payload == b"a"));
        // Duplicate of the held one: dropped.
        assert_eq!(router.deliver(2, env(7, 2, 1, b"a")), Ok(Routed::Duplicate));
        // Same round, different content: equivocation, and the session gets a fault.
        assert!(matches!(
            router.deliver(2, env(7, 2, 1, b"b")),
            Err(Refusal::Equivocation {
                from: 2,
                round: 1,
                ..
            })
        ));
        assert!(matches!(inbox.recv().await, Some(SessionEvent::Fault(_))));
        // Stranger: refused.
        assert!(matches!(
            router.deliver(4, env(7, 4, 1, b"x")),
            Err(Refusal::NotParticipant { from: 4, .. })
        ));
        // Wrong claimed sender.
        assert!(matches!(
            router.deliver(3, env(7, 2, 2, b"x")),
            Err(Refusal::Impersonation {
                claimed: 2,
                actual: 3
            })
        ));
        // Addressed to someone else.
        let mut other = env(7, 3, 2, b"x");
        other.to = Some(5);
        assert_eq!(router.deliver(3, other), Err(Refusal::WrongRecipient(5)));
        // Control bypasses sessions.
        let mut c = env(9, 3, 0, b"ctl");
        c.protocol = crate::CONTROL;
        assert_eq!(router.deliver(3, c), Ok(Routed::Control));
        assert_eq!(control.recv().await.unwrap().payload, b"ctl");
        // A resent copy of a control message is dropped; the same content from another
        // sender or in another session is not a copy.
        let mut copy = env(9, 3, 0, b"ctl");
        copy.protocol = crate::CONTROL;
        assert_eq!(router.deliver(3, copy.clone()), Ok(Routed::Duplicate));
        let mut other_session = copy.clone();
        other_session.session = SessionId([10; 16]);
        assert_eq!(router.deliver(3, other_session), Ok(Routed::Control));
        let mut other_sender = copy.clone();
        other_sender.from = 2;
        assert_eq!(router.deliver(2, other_sender), Ok(Routed::Control));
        assert!(control.try_recv().is_ok() && control.try_recv().is_ok());
        assert!(control.try_recv().is_err());
        // Memory is bounded (2 here): the oldest is forgotten.
        assert_eq!(router.deliver(3, copy), Ok(Routed::Control));
        // Finished: replays refused, re-registration refused.
        drop(inbox);
        assert!(matches!(
            router.deliver(3, env(7, 3, 3, b"late")),
            Err(Refusal::FinishedSession(_))
        ));
        assert_eq!(
            router.register(SessionId([7; 16]), &[1, 2]).err(),
            Some(RegisterError::AlreadyFinished(SessionId([7; 16])))
        );
    }

    #[tokio::test]
    async fn holding_is_bounded_in_count_and_time() {
        let (router, _control) = Router::new(1, limits());
        for s in 0..3 {
            assert_eq!(router.deliver(2, env(s, 2, 1, b"x")), Ok(Routed::Held));
        }
        assert_eq!(
            router.deliver(2, env(3, 2, 1, b"x")),
            Err(Refusal::HoldFull(SessionId([3; 16])))
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(router.held_count(), 0);
        // Expired held messages are not delivered on a late registration.
        let mut inbox = router.register(SessionId([0; 16]), &[1, 2]).unwrap();
        assert!(inbox.receiver().try_recv().is_err());
        // Non-participants held before registration are refused at registration.
        assert_eq!(router.deliver(5, env(4, 5, 1, b"x")), Ok(Routed::Held));
        let mut inbox = router.register(SessionId([4; 16]), &[1, 2]).unwrap();
        assert!(inbox.receiver().try_recv().is_err());
    }

    #[tokio::test]
    async fn finished_memory_is_bounded() {
        let (router, _control) = Router::new(1, limits());
        for s in 0..3u8 {
            drop(router.register(SessionId([s; 16]), &[1, 2]).unwrap());
        }
        // Memory holds the last 2: session 0 was forgotten (the store remembers it durably).
        assert!(router.register(SessionId([0; 16]), &[1, 2]).is_ok());
        assert!(router.register(SessionId([2; 16]), &[1, 2]).is_err());
    }
}
