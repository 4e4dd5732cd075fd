//! `mpc-wallet-failpoints`: the `mpc-wallet` command line with failpoints armed from the
//! environment, for the kill and fencing tests only (built with the `failpoints` feature,
//! never shipped). `MPC_WALLET_CRASH_AT=<point>[:<n>]` makes a node kill itself with SIGKILL
//! the `n`-th time (default first) it reaches `<point>`; `MPC_WALLET_PAUSE_AT=<point>:<ms>`
//! makes it wait `ms` every time it reaches `<point>` (`mpc_node::failpoint`).

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use mpc_node::failpoint::{self, Failpoints};

#[path = "../main.rs"]
mod cli;

/// The failpoints the environment asks for.
#[derive(Debug, Default)]
struct FromEnvironment {
    /// The crash point and on which visit it fires.
    crash: Option<(String, u32)>,
    crash_visits: AtomicU32,
    pause: Option<(String, Duration)>,
}

impl FromEnvironment {
    fn parse(crash_at: Option<&str>, pause_at: Option<&str>) -> Result<Self, String> {
        // Points contain ':' themselves; a trailing number is the count.
        let crash = crash_at.map(|spec| match spec.rsplit_once(':') {
            Some((point, n)) if n.parse::<u32>().is_ok_and(|n| n > 0) => {
                (point.to_string(), n.parse().unwrap_or(1))
            }
            _ => (spec.to_string(), 1),
        });
        let pause = pause_at
            .map(|spec| {
                let (point, ms) = spec
                    .rsplit_once(':')
                    .ok_or_else(|| format!("MPC_WALLET_PAUSE_AT={spec}: expected <point>:<ms>"))?;
                let ms = ms
                    .parse()
                    .map_err(|_| format!("MPC_WALLET_PAUSE_AT={spec}: {ms} is not milliseconds"))?;
                Ok::<_, String>((point.to_string(), Duration::from_millis(ms)))
            })
            .transpose()?;
        Ok(Self {
            crash,
            pause,
            ..Self::default()
        })
    }
}

impl Failpoints for FromEnvironment {
    fn crash(&self, point: &str) {
        if let Some((armed, nth)) = &self.crash {
            if armed == point && self.crash_visits.fetch_add(1, Ordering::SeqCst) + 1 == *nth {
                tracing::error!(point, "crash point reached: SIGKILL");
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    fn pause(&self, point: &str) -> Option<Duration> {
        self.pause
            .as_ref()
            .filter(|(armed, _)| armed == point)
            .map(|(_, wait)| *wait)
    }
}

fn main() -> anyhow::Result<()> {
    let crash_at = std::env::var("MPC_WALLET_CRASH_AT").ok();
    let pause_at = std::env::var("MPC_WALLET_PAUSE_AT").ok();
    let hook = FromEnvironment::parse(crash_at.as_deref(), pause_at.as_deref())
        .map_err(anyhow::Error::msg)?;
    failpoint::install(Box::new(hook));
    cli::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_names_a_point_and_which_visit() {
        let env = FromEnvironment::parse(Some("consume:committed:3"), Some("propose:fenced:250"))
            .unwrap();
        assert_eq!(env.crash, Some(("consume:committed".into(), 3)));
        assert_eq!(
            env.pause.as_ref().map(|(p, d)| (p.as_str(), d.as_millis())),
            Some(("propose:fenced", 250))
        );
        assert_eq!(
            env.pause("propose:fenced"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(env.pause("presign:stored"), None);

        let first = FromEnvironment::parse(Some("presign:stored"), None).unwrap();
        assert_eq!(first.crash, Some(("presign:stored".into(), 1)));
        // A visit count of 0 would never fire: read as part of the point's name, which
        // then matches nothing.
        let zero = FromEnvironment::parse(Some("presign:stored:0"), None).unwrap();
        assert_eq!(zero.crash, Some(("presign:stored:0".into(), 1)));

        assert!(FromEnvironment::parse(None, Some("propose:fenced")).is_err());
        assert!(FromEnvironment::parse(None, Some("propose:fenced:soon")).is_err());
    }
}
