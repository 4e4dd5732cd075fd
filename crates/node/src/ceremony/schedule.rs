//! Scheduled key refresh: FROST wallets get new shares when theirs are older than
//! `[refresh] every_secs`, ECDSA wallets when older than `[refresh] ecdsa_every_secs`, so a
//! share stolen from one node is worth nothing once the next refresh commits, even if nobody
//! noticed the theft.
//!
//! One node drives it, the pool's refill leader (the configured node under the static backend,
//! the holder of the `pool-refill` lease under etcd), so two nodes do not start refreshes of
//! the same wallet at once; a second one would only be refused (one ceremony at a time), never
//! harmful. The age is read from the store (`Store::key_epoch_began`), so a restart neither
//! resets nor repeats the schedule. ECDSA has its own period, off by default: each ECDSA
//! refresh makes new aux info for the node set (tens of seconds of CPU on every node and a set
//! of safe primes from each node's pool).

use std::time::Duration;

use mpc_bitcoin::Scheme;
use mpc_store::WalletState;
use tracing::{info, warn};
use uuid::Uuid;

use crate::{now_ms, Node};

impl Node {
    /// The schedule's loop; returns at once when it is off.
    pub(crate) async fn refresh_schedule(self) {
        let periods = [Scheme::Schnorr, Scheme::Ecdsa].map(|s| self.refresh_period_ms(s));
        let Some(shortest) = periods.into_iter().flatten().min() else {
            return;
        };
        // Checked ten times per (shortest) period, between once a second and once a minute: a
        // refresh is late by at most that, and a failed one is tried again after it.
        let shortest = u64::try_from(shortest).unwrap_or(u64::MAX);
        let check = Duration::from_millis((shortest / 10).clamp(1_000, 60_000));
        loop {
            tokio::time::sleep(check).await;
            if self.is_pool_leader() {
                self.refresh_due().await;
            }
        }
    }

    /// How old a `scheme` wallet's key epoch may grow before its scheduled refresh (`None`:
    /// never).
    fn refresh_period_ms(&self, scheme: Scheme) -> Option<i64> {
        let cfg = &self.inner.config.refresh;
        let secs = match scheme {
            Scheme::Schnorr => cfg.every_secs,
            Scheme::Ecdsa => cfg.ecdsa_every_secs,
        };
        (secs > 0).then(|| i64::try_from(secs.saturating_mul(1_000)).unwrap_or(i64::MAX))
    }

    /// Refreshes, one after another, the wallets of this node whose key epoch began at least
    /// their scheme's period ago.
    async fn refresh_due(&self) {
        let wallets = match self.inner.store.wallets().await {
            Ok(wallets) => wallets,
            Err(e) => {
                warn!(node = self.id().get(), error = %e, "scheduled refresh: cannot list wallets");
                return;
            }
        };
        for wallet in wallets
            .into_iter()
            .filter(|w| w.state == WalletState::Active && w.participants.contains(&self.id()))
        {
            let Some(every_ms) = self.refresh_period_ms(wallet.scheme) else {
                continue;
            };
            let began = match self.inner.store.key_epoch_began(&wallet.id).await {
                Ok(Some(began)) => began,
                Ok(None) => continue,
                Err(e) => {
                    warn!(wallet = %wallet.id, error = %e, "scheduled refresh: cannot read the key epoch");
                    continue;
                }
            };
            if now_ms().saturating_sub(began) < every_ms {
                continue;
            }
            match self.refresh_wallet(Uuid::new_v4(), &wallet.id).await {
                Ok(report) => info!(
                    node = self.id().get(),
                    wallet = %wallet.id,
                    key_epoch = report.key_epoch,
                    "scheduled refresh committed"
                ),
                Err(e) => warn!(
                    node = self.id().get(),
                    wallet = %wallet.id,
                    error = %e,
                    "scheduled refresh failed; tried again at the next check"
                ),
            }
        }
    }
}
