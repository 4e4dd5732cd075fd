use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::validate_name;
use crate::{
    FencingToken, GuardInner, LeaderInfo, Leadership, LeadershipInner, Liveness, LockGuard, Result,
};

/// One machine: locks are `tokio` mutexes in this process, the leader of every election is
/// the configured candidate, and nothing is ever lost.
///
/// Fencing tokens come from one counter per backend, seeded with the wall clock in
/// microseconds, so they also keep increasing across restarts of the process (as long as the
/// clock does not step back by more than the restart took). They order this process's holders
/// only: no other process can check them, so proposals carry none under this backend and
/// [`crate::ClusterBackend::check_token`] refuses any.
#[derive(Debug, Clone)]
pub struct StaticBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    leader: Option<String>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    counter: AtomicU64,
    /// The leader's token, taken from the counter once.
    leader_token: FencingToken,
    /// Presence and published records, by key (this process only).
    records: Arc<Mutex<std::collections::BTreeMap<String, Vec<u8>>>>,
}

fn clock_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0)
}

impl StaticBackend {
    /// `leader`: the candidate id that leads every election (`None`: nobody leads).
    pub fn new(leader: Option<String>) -> Self {
        let seed = clock_micros();
        StaticBackend {
            inner: Arc::new(Inner {
                leader,
                locks: Mutex::new(HashMap::new()),
                counter: AtomicU64::new(seed + 1),
                leader_token: FencingToken(seed),
                records: Default::default(),
            }),
        }
    }

    pub(crate) fn records(&self) -> Arc<Mutex<std::collections::BTreeMap<String, Vec<u8>>>> {
        self.inner.records.clone()
    }

    fn next_token(&self) -> FencingToken {
        FencingToken(self.inner.counter.fetch_add(1, Ordering::SeqCst))
    }

    pub async fn lock(&self, name: &str) -> Result<LockGuard> {
        validate_name(name)?;
        let mutex = {
            let mut locks = match self.inner.locks.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            locks.entry(name.to_owned()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        // Taken after acquiring, so later holders get larger tokens.
        let token = self.next_token();
        tracing::debug!(lock = name, %token, "static lock acquired");
        let (liveness, never_lost) = Liveness::forever();
        Ok(LockGuard {
            name: name.to_owned(),
            token,
            liveness,
            inner: GuardInner::Static {
                _guard: guard,
                _never_lost: never_lost,
            },
        })
    }

    /// Returns at once for the configured leader; never returns for anyone else.
    pub async fn campaign(&self, election: &str, candidate: &str) -> Result<Leadership> {
        validate_name(election)?;
        if self.inner.leader.as_deref() != Some(candidate) {
            std::future::pending::<()>().await;
        }
        let (liveness, never_lost) = Liveness::forever();
        Ok(Leadership {
            election: election.to_owned(),
            token: self.inner.leader_token,
            liveness,
            inner: LeadershipInner::Static {
                _never_lost: never_lost,
            },
        })
    }

    pub fn leader(&self, election: &str) -> Result<Option<LeaderInfo>> {
        validate_name(election)?;
        Ok(self.inner.leader.as_ref().map(|candidate| LeaderInfo {
            candidate: candidate.clone(),
            token: self.inner.leader_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;
    use crate::{ClusterBackend, TokenRefusal, TokenSource};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn locks_exclude_and_tokens_increase() {
        let backend = ClusterBackend::Static(StaticBackend::new(None));
        let held = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(FencingToken(0)));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (backend, held, last) = (backend.clone(), held.clone(), last.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    let guard = backend
                        .lock("keygen", Duration::from_secs(5))
                        .await
                        .unwrap();
                    assert!(!held.swap(true, Ordering::SeqCst), "two holders at once");
                    {
                        let mut last = last.lock().unwrap();
                        assert!(guard.token() > *last, "token did not increase");
                        *last = guard.token();
                    }
                    assert!(!guard.is_lost());
                    tokio::task::yield_now().await;
                    held.store(false, Ordering::SeqCst);
                    guard.unlock().await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[tokio::test]
    async fn different_names_do_not_contend() {
        let backend = StaticBackend::new(None);
        let a = backend.lock("a").await.unwrap();
        let b = tokio::time::timeout(Duration::from_secs(1), backend.lock("b"))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(a.token(), b.token());
        // The same name waits while held.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), backend.lock("a"))
                .await
                .is_err()
        );
        drop(a);
        backend.lock("a").await.unwrap();
        assert!(backend.lock("").await.is_err());
        assert!(backend.lock("a/b").await.is_err());
    }

    #[tokio::test]
    async fn tokens_increase_across_backend_restarts() {
        let first = StaticBackend::new(None).lock("x").await.unwrap().token();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let second = StaticBackend::new(None).lock("x").await.unwrap().token();
        assert!(second > first);
    }

    #[tokio::test]
    async fn only_the_configured_leader_leads() {
        let backend = ClusterBackend::Static(StaticBackend::new(Some("1".into())));
        let leadership = backend
            .campaign("pool", "1", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(!leadership.is_lost());
        let info = backend.leader("pool").await.unwrap().unwrap();
        assert_eq!(info.candidate, "1");
        assert_eq!(info.token, leadership.token());
        assert!(tokio::time::timeout(
            Duration::from_millis(100),
            backend.campaign("pool", "2", Duration::from_secs(5))
        )
        .await
        .is_err());

        let leader = backend.spawn_election("pool", "1", Duration::from_secs(5));
        let follower = backend.spawn_election("pool", "2", Duration::from_secs(5));
        let mut leader = leader;
        let token = match leader.current() {
            Some(token) => token,
            None => leader.changed().await.unwrap(),
        };
        assert_eq!(token, leadership.token());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!follower.is_leader());

        let nobody = ClusterBackend::Static(StaticBackend::new(None));
        assert!(nobody.leader("pool").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn no_token_can_be_checked() {
        let backend = ClusterBackend::Static(StaticBackend::new(Some("1".into())));
        let guard = backend
            .lock("ceremony", Duration::from_secs(5))
            .await
            .unwrap();
        // Not even this process's own holder's: another process could not check it.
        let refusal = backend
            .check_token(TokenSource::Lock("ceremony"), guard.token())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(refusal, TokenRefusal::Unverifiable { .. }),
            "{refusal}"
        );
    }
}
