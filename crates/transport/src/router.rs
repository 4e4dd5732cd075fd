//! The session router: every incoming envelope goes to the protocol session it belongs to.
//!
//! * Sessions are registered with their participants; a message from anyone else is refused.
//! * A message for a session this node has not registered yet is held briefly (bounded in
//!   count, bytes and time), since peers may start a run a moment before we do.
//! * An identical copy of a message already delivered is dropped; a *different* message for
//!   the same (session, round, sender, recipient) is equivocation and aborts the session.
//! * Messages for a session that already finished are refused (replays).
//! * Control messages bypass sessions and go to the node's [`ControlInbox`], once: an
//!   identical copy of a recent one (a frame the sender resent after losing its connection) is
//!   dropped.
//! * Every peer has its own share of what the router keeps for peers: held messages, queued
//!   control messages, remembered control messages. A peer over its share is refused and the
//!   others' shares are untouched, so one authenticated peer cannot starve another.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{Envelope, NodeId, SessionId};

/// Bounds on what the router keeps. Every bound but `finished_memory` is per peer: a peer that
/// fills its share is refused without touching another peer's.
#[derive(Debug, Clone)]
pub struct RouterLimits {
    /// How long a message for a session this node has not registered yet is held.
    pub hold_time: Duration,
    /// Messages one peer may have held at once, and their payload bytes.
    pub max_held_messages_per_peer: usize,
    pub max_held_bytes_per_peer: usize,
    /// How many finished session ids are remembered in memory for replay refusal (the
    /// node's store remembers every session id durably).
    pub finished_memory: usize,
    /// How many recent control messages of each peer are remembered to drop resent copies.
    pub control_memory_per_peer: usize,
    /// Control messages one peer may have waiting in the [`ControlInbox`] (received, not yet
    /// taken by the node), and their payload bytes.
    pub max_control_queue_per_peer: usize,
    pub max_control_queue_bytes_per_peer: usize,
}

impl Default for RouterLimits {
    fn default() -> Self {
        Self {
            hold_time: Duration::from_secs(10),
            max_held_messages_per_peer: 1024,
            max_held_bytes_per_peer: 16 << 20,
            finished_memory: 100_000,
            control_memory_per_peer: 4096,
            max_control_queue_per_peer: 256,
            max_control_queue_bytes_per_peer: 16 << 20,
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
    #[error("node {from} has its share of the holding area full; message for unknown session {session} dropped")]
    HoldQuotaExceeded { session: SessionId, from: NodeId },
    #[error("node {from} has its share of the control queue full; control message for session {session} dropped")]
    ControlQuotaExceeded { session: SessionId, from: NodeId },
}

impl Refusal {
    /// A short name of the reason (for logs that group refusals).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Impersonation { .. } => "impersonation",
            Self::WrongRecipient(_) => "wrong recipient",
            Self::FinishedSession(_) => "replay",
            Self::NotParticipant { .. } => "not a participant",
            Self::Equivocation { .. } => "equivocation",
            Self::HoldQuotaExceeded { .. } => "hold quota",
            Self::ControlQuotaExceeded { .. } => "control quota",
        }
    }

    /// Whether the sender was over one of its quotas (rather than the message being wrong).
    pub fn is_over_quota(&self) -> bool {
        matches!(
            self,
            Self::HoldQuotaExceeded { .. } | Self::ControlQuotaExceeded { .. }
        )
    }
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
    /// The session cannot continue (equivocation); the protocol must abort. `envelopes`
    /// shows it: the sender's first message for the slot and the different second one, both
    /// as received (signed), for evidence.
    Fault {
        refusal: Refusal,
        envelopes: Vec<Envelope>,
    },
}

/// Errors registering a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("session {0} is already running")]
    AlreadyActive(SessionId),
    #[error("session {0} already ran on this node")]
    AlreadyFinished(SessionId),
}

/// One message's place in a session: sender, protocol, round, recipient.
type Slot = (NodeId, u8, u16, Option<NodeId>);

struct Session {
    participants: Vec<NodeId>,
    tx: mpsc::UnboundedSender<SessionEvent>,
    /// Each slot's first message and its content digest: a second, different one is
    /// equivocation, and both are kept as its evidence. (Held until the session finishes;
    /// sessions are short and their messages were delivered anyway.)
    seen: HashMap<Slot, ([u8; 32], Envelope)>,
}

/// Messages and payload bytes one peer has in one bounded area.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    messages: usize,
    bytes: usize,
}

impl Usage {
    /// Counts one more message of `size` bytes, unless that would exceed either bound.
    fn try_add(&mut self, size: usize, max_messages: usize, max_bytes: usize) -> bool {
        if self.messages >= max_messages || self.bytes + size > max_bytes {
            return false;
        }
        self.messages += 1;
        self.bytes += size;
        true
    }

    fn remove(&mut self, size: usize) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size);
    }
}

struct Held {
    at: Instant,
    envelope: Envelope,
}

/// One peer's held messages, oldest first.
#[derive(Default)]
struct HeldFrom {
    messages: VecDeque<Held>,
    usage: Usage,
}

/// A control message's identity within its sender's memory: session and content.
type ControlKey = (SessionId, [u8; 32]);

#[derive(Default)]
struct State {
    sessions: HashMap<SessionId, Session>,
    held: HashMap<NodeId, HeldFrom>,
    finished: Recent<SessionId>,
    control_seen: HashMap<NodeId, Recent<ControlKey>>,
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

/// Each peer's control messages waiting in the [`ControlInbox`]: the router adds, the inbox
/// takes away.
type ControlQueued = Arc<Mutex<HashMap<NodeId, Usage>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Routes envelopes for one node. Cheap to share (`Arc`).
pub struct Router {
    me: NodeId,
    limits: RouterLimits,
    state: Mutex<State>,
    control: mpsc::UnboundedSender<Envelope>,
    control_queued: ControlQueued,
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

/// The node's control messages, in arrival order. The queue holds at most each peer's
/// share ([`RouterLimits::max_control_queue_per_peer`]); taking a message frees its place.
pub struct ControlInbox {
    rx: mpsc::UnboundedReceiver<Envelope>,
    queued: ControlQueued,
}

impl ControlInbox {
    /// The next control message; `None` once the router is gone.
    pub async fn recv(&mut self) -> Option<Envelope> {
        let envelope = self.rx.recv().await?;
        if let Some(usage) = lock(&self.queued).get_mut(&envelope.from) {
            usage.remove(envelope.payload.len());
        }
        Some(envelope)
    }
}

impl Router {
    /// A router for node `me`; control envelopes go to the returned inbox.
    pub fn new(me: NodeId, limits: RouterLimits) -> (Arc<Self>, ControlInbox) {
        let (control, rx) = mpsc::unbounded_channel();
        let control_queued = ControlQueued::default();
        let inbox = ControlInbox {
            rx,
            queued: control_queued.clone(),
        };
        (
            Arc::new(Self {
                me,
                limits,
                state: Mutex::new(State::default()),
                control,
                control_queued,
            }),
            inbox,
        )
    }

    pub fn local_id(&self) -> NodeId {
        self.me
    }

    /// Registers a session with its participants (this node among them) and delivers any
    /// messages held for it.
    pub fn register(
        self: &Arc<Self>,
        session: SessionId,
        participants: &[NodeId],
    ) -> Result<SessionInbox, RegisterError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = lock(&self.state);
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
        self.expire_held(&mut state);
        let mut mine = Vec::new();
        for (&from, held) in state.held.iter_mut() {
            let (for_session, rest): (VecDeque<_>, VecDeque<_>) = held
                .messages
                .drain(..)
                .partition(|h| h.envelope.session == session);
            held.messages = rest;
            for h in for_session {
                held.usage.remove(h.envelope.payload.len());
                mine.push((from, h.envelope));
            }
        }
        state.held.retain(|_, held| !held.messages.is_empty());
        for (from, envelope) in mine {
            if let Err(refusal) = deliver_to_session(&mut state, from, envelope) {
                warn!(%session, from = from.get(), %refusal, "held message refused");
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
        let mut state = lock(&self.state);
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
        let mut state = lock(&self.state);
        let session = envelope.session;
        if envelope.is_control() {
            let key = (session, envelope.content_digest());
            let seen = state.control_seen.entry(from).or_default();
            if seen.contains(&key) {
                debug!(%session, from = from.get(), "duplicate control message dropped");
                return Ok(Routed::Duplicate);
            }
            let queued = lock(&self.control_queued).entry(from).or_default().try_add(
                envelope.payload.len(),
                self.limits.max_control_queue_per_peer,
                self.limits.max_control_queue_bytes_per_peer,
            );
            if !queued {
                return Err(Refusal::ControlQuotaExceeded { session, from });
            }
            // Remembered only once queued: a refused message resent later is not a copy.
            seen.insert(key, self.limits.control_memory_per_peer);
            drop(state);
            // The node may be shutting down; a dropped control message is then harmless.
            let _ = self.control.send(envelope);
            return Ok(Routed::Control);
        }
        if state.finished.contains(&session) {
            return Err(Refusal::FinishedSession(session));
        }
        if state.sessions.contains_key(&session) {
            return deliver_to_session(&mut state, from, envelope);
        }
        self.expire_held(&mut state);
        let held = state.held.entry(from).or_default();
        if !held.usage.try_add(
            envelope.payload.len(),
            self.limits.max_held_messages_per_peer,
            self.limits.max_held_bytes_per_peer,
        ) {
            return Err(Refusal::HoldQuotaExceeded { session, from });
        }
        held.messages.push_back(Held {
            at: Instant::now(),
            envelope,
        });
        Ok(Routed::Held)
    }

    fn expire_held(&self, state: &mut State) {
        let hold_time = self.limits.hold_time;
        state.held.retain(|&from, held| {
            let mut dropped = 0usize;
            let mut oldest = None;
            while held
                .messages
                .front()
                .is_some_and(|h| h.at.elapsed() >= hold_time)
            {
                if let Some(h) = held.messages.pop_front() {
                    held.usage.remove(h.envelope.payload.len());
                    oldest.get_or_insert(h.envelope.session);
                    dropped += 1;
                }
            }
            // One line per peer and sweep, not per message: a peer may hold many.
            if let Some(session) = oldest {
                warn!(
                    %session,
                    from = from.get(),
                    dropped,
                    "dropped messages for sessions this node never registered"
                );
            }
            !held.messages.is_empty()
        });
    }

    /// Drops held messages older than the hold time (call periodically).
    pub fn sweep(&self) {
        let mut state = lock(&self.state);
        self.expire_held(&mut state);
    }

    /// Number of messages held for unknown sessions (for health and tests).
    pub fn held_count(&self) -> usize {
        let mut state = lock(&self.state);
        self.expire_held(&mut state);
        state.held.values().map(|h| h.messages.len()).sum()
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
        Some((d, _)) if *d == digest => {
            debug!(session = %session_id, from = from.get(), round = envelope.round, "duplicate dropped");
            return Ok(Routed::Duplicate);
        }
        Some((_, first)) => {
            let refusal = Refusal::Equivocation {
                session: session_id,
                from,
                round: envelope.round,
            };
            let _ = session.tx.send(SessionEvent::Fault {
                refusal: refusal.clone(),
                envelopes: vec![first.clone(), envelope],
            });
            return Err(refusal);
        }
        None => {
            session.seen.insert(key, (digest, envelope.clone()));
        }
    }
    // The inbox may already be closed if the protocol ended; the message is then moot.
    let _ = session.tx.send(SessionEvent::Message(envelope));
    Ok(Routed::Delivered)
}

#[cfg(test)]
mod tests;
