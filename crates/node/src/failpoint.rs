//! Crash points for the kill tests: `MPC_WALLET_CRASH_AT=<point>[:<n>]` makes the node kill
//! itself with SIGKILL the `n`-th time (default first) it reaches `<point>`, exactly as an
//! operator's `kill -9` or a power cut would. Pause points for the fencing tests:
//! `MPC_WALLET_PAUSE_AT=<point>:<ms>` makes the node wait `ms` every time it reaches `<point>`
//! (long enough for a test to SIGSTOP it there).
//!
//! Only a build with the `failpoints` feature honours them (the tests that need them turn it
//! on: `cargo test --features mpc-wallet/failpoints`). Without it, which is every ordinary
//! and release build, both functions are empty and the variables are ignored, so no
//! environment variable can make a production node kill or stall itself.

/// The durable steps of presignature generation and consumption.
pub const POINTS: &[&str] = &[
    "presign:generated",
    "presign:stored",
    "consume:before",
    "consume:committed",
    "sign:reported",
];

const VARIABLES: [&str; 2] = ["MPC_WALLET_CRASH_AT", "MPC_WALLET_PAUSE_AT"];

/// Logs each failpoint variable that is set, and whether this build honours it, so a node's
/// log tells which kind of binary it is.
pub fn log_requested() {
    for variable in VARIABLES {
        if let Ok(value) = std::env::var(variable) {
            if cfg!(feature = "failpoints") {
                tracing::warn!(variable, value, "failpoint armed (a test build)");
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

#[cfg(feature = "failpoints")]
pub use armed::{crash_point, pause_point};

/// Does nothing: this build has no failpoints.
#[cfg(not(feature = "failpoints"))]
pub fn crash_point(_point: &str) {}

/// Does nothing: this build has no failpoints.
#[cfg(not(feature = "failpoints"))]
pub async fn pause_point(_point: &str) {}

#[cfg(feature = "failpoints")]
mod armed {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    };

    struct Armed {
        point: String,
        nth: u32,
        seen: AtomicU32,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = std::env::var("MPC_WALLET_CRASH_AT").ok()?;
                // Points contain ':' themselves; a trailing number is the count.
                let (point, nth) = match spec.rsplit_once(':') {
                    Some((p, n)) if n.parse::<u32>().is_ok() => {
                        (p.to_string(), n.parse().unwrap_or(1))
                    }
                    _ => (spec, 1),
                };
                Some(Armed {
                    point,
                    nth,
                    seen: AtomicU32::new(0),
                })
            })
            .as_ref()
    }

    /// Dies here if this crash point is armed and due.
    pub fn crash_point(point: &str) {
        if let Some(a) = armed() {
            if a.point == point && a.seen.fetch_add(1, Ordering::SeqCst) + 1 == a.nth {
                tracing::error!(point, "crash point reached: SIGKILL");
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    fn pause() -> Option<&'static (String, u64)> {
        static PAUSE: OnceLock<Option<(String, u64)>> = OnceLock::new();
        PAUSE
            .get_or_init(|| {
                let spec = std::env::var("MPC_WALLET_PAUSE_AT").ok()?;
                let (point, ms) = spec.rsplit_once(':')?;
                Some((point.to_string(), ms.parse().ok()?))
            })
            .as_ref()
    }

    /// Waits here if this pause point is armed.
    pub async fn pause_point(point: &str) {
        if let Some((armed, ms)) = pause() {
            if armed == point {
                tracing::warn!(point, ms, "pause point reached: waiting");
                tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::process::ExitStatusExt, process::Command};

    use super::*;

    const NAME: &str =
        "failpoint::tests::a_crash_point_kills_the_process_only_in_a_failpoints_build";
    /// POSIX fixes SIGKILL's number.
    const SIGKILL: i32 = 9;

    /// Runs itself again as a child with a crash point armed: the child dies there in a
    /// failpoints build, and passes the point in any other.
    #[test]
    fn a_crash_point_kills_the_process_only_in_a_failpoints_build() {
        if std::env::var_os("MPC_WALLET_CRASH_AT").is_some() {
            crash_point("presign:stored");
            return;
        }
        let exe = std::env::current_exe().expect("the test binary's path");
        let child = Command::new(exe)
            .args([NAME, "--exact", "--test-threads=1"])
            .env("MPC_WALLET_CRASH_AT", "presign:stored")
            .output()
            .expect("the child test runs");
        let killed = child.status.signal() == Some(SIGKILL);
        assert_eq!(killed, cfg!(feature = "failpoints"), "{child:?}");
        if !killed {
            // It ran this test (not an empty filter) and got past the point.
            assert!(child.status.success(), "{child:?}");
            assert!(
                String::from_utf8_lossy(&child.stdout).contains("1 passed"),
                "{child:?}"
            );
        }
    }
}
