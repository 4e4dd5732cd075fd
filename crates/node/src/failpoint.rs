//! Failpoints: named places in the durable steps of presignature generation and use, and in
//! the proposal round, where a test can make a node die (`crash_point`, as an operator's
//! `kill -9` or a power cut would) or wait (`pause_point`, long enough for a test to SIGSTOP
//! it there).
//!
//! This library only marks the points. What happens at one is decided by a [`Failpoints`]
//! hook, and the only code that installs one is the test binary `mpc-wallet-failpoints`
//! (built only with the `failpoints` feature of the `mpc-wallet` package; it reads
//! `MPC_WALLET_CRASH_AT` and `MPC_WALLET_PAUSE_AT`). The `mpc-wallet` binary installs none, so
//! in it every point is a no-op and no environment variable can make a production node kill
//! or stall itself. A hook rather than a feature of this crate: the tests' binary and the
//! shipped one come out of one build of this library, not two.

use std::{sync::OnceLock, time::Duration};

/// The durable steps of presignature generation and consumption, and of the two-phase
/// ceremonies (keygen, key refresh, aux info): a participant that reported its pending result
/// and has not heard the decision, a coordinator that recorded its decision and has not
/// announced it, a participant that applied the decision and has not acknowledged it.
pub const POINTS: &[&str] = &[
    "presign:generated",
    "presign:stored",
    "consume:before",
    "consume:committed",
    "sign:reported",
    "ceremony:reported",
    "ceremony:decided",
    "ceremony:applied",
];

/// The environment variables a failpoints binary reads.
pub const VARIABLES: [&str; 2] = ["MPC_WALLET_CRASH_AT", "MPC_WALLET_PAUSE_AT"];

/// What a test binary does at a failpoint.
pub trait Failpoints: Send + Sync {
    /// Called at a crash point; may end the process.
    fn crash(&self, point: &str);
    /// Called at a pause point: how long to wait there, if at all.
    fn pause(&self, point: &str) -> Option<Duration>;
}

static HOOK: OnceLock<Box<dyn Failpoints>> = OnceLock::new();

/// Installs the process's failpoints. Only a test binary calls this, before it starts a
/// node; a second call is refused (returns `false`) so the points cannot change under a
/// running node.
pub fn install(hook: Box<dyn Failpoints>) -> bool {
    HOOK.set(hook).is_ok()
}

/// Logs each failpoint variable that is set, and whether this binary honours it, so a node's
/// log tells which kind of binary it is.
pub fn log_requested() {
    for variable in VARIABLES {
        if let Ok(value) = std::env::var(variable) {
            if HOOK.get().is_some() {
                tracing::warn!(variable, value, "failpoint armed (a test binary)");
            } else {
                tracing::warn!(
                    variable,
                    value,
                    "failpoint requested, but this binary is built without failpoints: ignored"
                );
            }
        }
    }
}

/// A crash point: the installed hook may end the process here; without one, nothing.
pub fn crash_point(point: &str) {
    if let Some(hook) = HOOK.get() {
        hook.crash(point);
    }
}

/// A pause point: waits as long as the installed hook says; without one, not at all.
pub async fn pause_point(point: &str) {
    if let Some(wait) = HOOK.get().and_then(|hook| hook.pause(point)) {
        tracing::warn!(point, ms = wait.as_millis(), "pause point reached: waiting");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records the points it is called at, and asks for a pause at one of them.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Failpoints for Recorder {
        fn crash(&self, point: &str) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push(point.to_string());
            }
        }
        fn pause(&self, point: &str) -> Option<Duration> {
            (point == "propose:fenced").then_some(Duration::from_millis(1))
        }
    }

    /// The hook sees every point, and only the first hook counts. One test, because the hook
    /// is per process.
    #[tokio::test]
    async fn points_reach_the_installed_hook_and_only_the_first_hook() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        assert!(install(Box::new(Recorder(seen.clone()))));
        assert!(
            !install(Box::new(Recorder(Arc::default()))),
            "installed twice"
        );
        crash_point("presign:stored");
        crash_point("consume:before");
        pause_point("propose:fenced").await;
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen, ["presign:stored", "consume:before"]);
    }
}
