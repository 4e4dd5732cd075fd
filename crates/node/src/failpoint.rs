//! Crash points for the kill tests: `MPC_WALLET_CRASH_AT=<point>[:<n>]` makes the node kill
//! itself with SIGKILL the `n`-th time (default first) it reaches `<point>`, exactly as an
//! operator's `kill -9` or a power cut would. Pause points for the fencing tests:
//! `MPC_WALLET_PAUSE_AT=<point>:<ms>` makes the node wait `ms` every time it reaches `<point>`
//! (long enough for a test to SIGSTOP it there). Unset (production), each costs one
//! environment lookup at start-up.

use std::sync::{
    atomic::{AtomicU32, Ordering},
    OnceLock,
};

/// The durable steps of presignature generation and consumption.
pub const POINTS: &[&str] = &[
    "presign:generated",
    "presign:stored",
    "consume:before",
    "consume:committed",
    "sign:reported",
];

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
                Some((p, n)) if n.parse::<u32>().is_ok() => (p.to_string(), n.parse().unwrap_or(1)),
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
