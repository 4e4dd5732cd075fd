//! The fencing check of the node that is asked to act (design invariant 10): a token is good
//! only if the lock service shows it, now, as the current holder's. A peer's number alone
//! proves nothing, however large: that is how one node used to make every later holder look
//! stale to everyone.

use std::fmt;

use crate::FencingToken;

/// Whose token an action must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource<'a> {
    /// The holder of lock `name`. etcd's Lock API records no owner, so only the token is
    /// compared (any node may take the lock, so naming one would prove little more).
    Lock(&'a str),
    /// The leader of `election`, which must be `candidate`: the node asking for the action.
    Leader {
        election: &'a str,
        candidate: &'a str,
    },
}

impl TokenSource<'_> {
    /// The lock or election name, which is also the resource a node records tokens under.
    pub fn name(&self) -> &str {
        match self {
            TokenSource::Lock(name) => name,
            TokenSource::Leader { election, .. } => election,
        }
    }
}

/// Who holds a lock (or leads an election), as one linearizable read saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Held under `token`; `candidate` is the leader's id (elections only).
    Held {
        token: FencingToken,
        candidate: Option<String>,
    },
    /// Nobody holds it. `revision` is etcd's at the read: no token above it exists yet.
    Free { revision: u64 },
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Held {
                token,
                candidate: Some(candidate),
            } => write!(f, "candidate {candidate} leads with token {token}"),
            Holder::Held {
                token,
                candidate: None,
            } => write!(f, "the current holder's token is {token}"),
            Holder::Free { revision } => {
                write!(f, "nobody holds it (etcd is at revision {revision})")
            }
        }
    }
}

/// Why a fencing token was refused. The node stores nothing for a refused token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// An earlier holder's token: the proposer's lock or leadership was lost (or released).
    #[error(
        "stale fencing token {token} for {resource}: {current}; the proposer's lock or \
         leadership was lost"
    )]
    Stale {
        resource: String,
        token: FencingToken,
        current: Holder,
    },
    /// Above the current holder's token (or above etcd's revision): no holder has acted
    /// under it, so it is only a number a peer sent.
    #[error("fencing token {token} for {resource} is ahead of every holder's: {current}")]
    Ahead {
        resource: String,
        token: FencingToken,
        current: Holder,
    },
    /// The leader's token, sent by another node.
    #[error(
        "fencing token {token} for {resource} is the leadership of candidate {leader}, but \
         candidate {proposer} proposed under it"
    )]
    OtherCandidate {
        resource: String,
        token: FencingToken,
        leader: String,
        proposer: String,
    },
    /// The static backend's tokens are one process's counter, which no other process can
    /// check; its proposals carry none.
    #[error(
        "fencing token {token} for {resource} cannot be checked: the static backend has no \
         lock service shared between nodes"
    )]
    Unverifiable {
        resource: String,
        token: FencingToken,
    },
}

impl Holder {
    /// Whether an action under `source` carrying `token` may go ahead: only if `token` is this
    /// holder's (and, for an election, the leader is the proposer).
    pub fn admits(&self, source: TokenSource<'_>, token: FencingToken) -> Result<(), TokenRefusal> {
        let resource = source.name().to_owned();
        let current = self.clone();
        match self {
            Holder::Held {
                token: held,
                candidate,
            } if *held == token => match source {
                TokenSource::Leader {
                    candidate: proposer,
                    ..
                } if candidate.as_deref() != Some(proposer) => Err(TokenRefusal::OtherCandidate {
                    resource,
                    token,
                    leader: candidate.clone().unwrap_or_default(),
                    proposer: proposer.to_owned(),
                }),
                _ => Ok(()),
            },
            Holder::Held { token: held, .. } if token < *held => Err(TokenRefusal::Stale {
                resource,
                token,
                current,
            }),
            Holder::Free { revision } if token.0 <= *revision => Err(TokenRefusal::Stale {
                resource,
                token,
                current,
            }),
            _ => Err(TokenRefusal::Ahead {
                resource,
                token,
                current,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: TokenSource<'static> = TokenSource::Lock("ceremony");

    fn held(token: u64, candidate: Option<&str>) -> Holder {
        Holder::Held {
            token: FencingToken(token),
            candidate: candidate.map(str::to_owned),
        }
    }

    #[test]
    fn only_the_current_holders_token_is_admitted() {
        let holder = held(42, None);
        assert_eq!(holder.admits(LOCK, FencingToken(42)), Ok(()));
        let stale = holder.admits(LOCK, FencingToken(41)).unwrap_err();
        assert!(matches!(stale, TokenRefusal::Stale { .. }), "{stale}");
        let message = stale.to_string();
        assert!(
            message.contains("stale fencing token 41 for ceremony")
                && message.contains("the current holder's token is 42"),
            "{message}"
        );
        let ahead = holder.admits(LOCK, FencingToken(1 << 60)).unwrap_err();
        assert!(matches!(ahead, TokenRefusal::Ahead { .. }), "{ahead}");
        assert!(ahead.to_string().contains("token is 42"), "{ahead}");
    }

    #[test]
    fn with_nobody_holding_old_tokens_are_stale_and_unissued_ones_ahead() {
        let free = Holder::Free { revision: 100 };
        assert!(matches!(
            free.admits(LOCK, FencingToken(100)),
            Err(TokenRefusal::Stale { .. })
        ));
        let ahead = free.admits(LOCK, FencingToken(101)).unwrap_err();
        assert!(matches!(ahead, TokenRefusal::Ahead { .. }), "{ahead}");
        assert!(ahead.to_string().contains("revision 100"), "{ahead}");
    }

    #[test]
    fn a_leaders_token_is_admitted_from_the_leader_only() {
        let leader = held(7, Some("2"));
        let from = |candidate| TokenSource::Leader {
            election: "pool-refill",
            candidate,
        };
        assert_eq!(leader.admits(from("2"), FencingToken(7)), Ok(()));
        let other = leader.admits(from("3"), FencingToken(7)).unwrap_err();
        assert!(
            matches!(&other, TokenRefusal::OtherCandidate { leader, proposer, .. }
                if leader == "2" && proposer == "3"),
            "{other}"
        );
        assert!(matches!(
            leader.admits(from("2"), FencingToken(6)),
            Err(TokenRefusal::Stale { .. })
        ));
        assert!(matches!(
            leader.admits(from("3"), FencingToken(8)),
            Err(TokenRefusal::Ahead { .. })
        ));
    }
}
