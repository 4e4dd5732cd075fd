//! Rate-limited warnings about refused traffic: at most one line per interval for each peer and
//! kind of refusal, saying how many went unlogged since the last one, so a peer that floods
//! refused frames can neither flood the log nor hide another kind of refusal in it. Every
//! refusal is still counted in the mesh's stats.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::NodeId;

/// A peer and a kind of refusal (a short static name).
pub(crate) type RefusalKey = (NodeId, &'static str);

pub(crate) struct RefusalLog {
    interval: Duration,
    windows: Mutex<HashMap<RefusalKey, Window>>,
}

struct Window {
    logged_at: Instant,
    unlogged: u64,
}

impl RefusalLog {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a refusal of this key at `now` is logged: `Some(n)` if so, `n` being the
    /// refusals of that key left unlogged since its last line.
    pub(crate) fn admit(&self, key: RefusalKey, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        match windows.get_mut(&key) {
            Some(window) if now.duration_since(window.logged_at) < self.interval => {
                window.unlogged = window.unlogged.saturating_add(1);
                None
            }
            Some(window) => {
                window.logged_at = now;
                Some(std::mem::take(&mut window.unlogged))
            }
            None => {
                windows.insert(
                    key,
                    Window {
                        logged_at: now,
                        unlogged: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_peer_and_kind_per_interval_with_the_unlogged_count() {
        let log = RefusalLog::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let half = t0 + Duration::from_millis(500);
        assert_eq!(log.admit((NodeId::must(2), "late"), t0), Some(0));
        for _ in 0..5 {
            assert_eq!(log.admit((NodeId::must(2), "late"), half), None);
        }
        // Another peer, or another kind, has its own window.
        assert_eq!(log.admit((NodeId::must(3), "late"), half), Some(0));
        assert_eq!(log.admit((NodeId::must(2), "replay"), half), Some(0));
        assert_eq!(
            log.admit((NodeId::must(2), "late"), t0 + Duration::from_secs(1)),
            Some(5)
        );
        assert_eq!(
            log.admit((NodeId::must(2), "late"), t0 + Duration::from_millis(1500)),
            None
        );
    }
}
