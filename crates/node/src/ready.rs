//! The coordinator's memory of ready presignatures, so that picking one for a signing usually
//! costs no database read (a measurable part of an isolated ECDSA signing: BENCHMARKS.md).
//!
//! A hint, never an authority: each signer claims the presignature in its own transaction,
//! which refuses one that is used, expired, of another epoch or bound elsewhere. A stale entry
//! can cost a failed attempt, never a second use. Entries go stale only through this node's
//! own consumptions and retirements, because a presignature this node can offer is one it
//! holds a share of: every signing that consumes it runs here too, as coordinator or as
//! signer, and every retirement deletes this node's share here (`pool`); both report it
//! with [`ReadyPresignatures::used`]. Presignatures stored since the last read are newer than
//! every remembered one, so they wait until the remembered ones are gone, as the store's
//! oldest-first order would have them wait anyway.

use mpc_types::WalletId;
use std::collections::{HashMap, VecDeque};

use mpc_store::PresignatureRecord;
use mpc_transport::{NodeId, Recent};

/// How many ready presignatures one store read fetches for a (wallet, path, signers).
pub(crate) const READ_AHEAD: u32 = 16;

/// How many used presignature ids are remembered: far more than can be used while one store
/// read is in flight (the only time a used id can come back from the store).
const USED_MEMORY: usize = 10_000;

/// Which presignatures can serve an input: the wallet, the derivation path, the signer set
/// (sorted, as the coordinator picks it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ReadyKey {
    pub wallet_id: WalletId,
    pub path: String,
    pub signers: Vec<NodeId>,
}

#[derive(Debug)]
struct Ready {
    id: String,
    expires_at: i64,
}

#[derive(Default)]
pub(crate) struct ReadyPresignatures {
    /// Oldest first, as the store lists them.
    lists: HashMap<ReadyKey, VecDeque<Ready>>,
    /// Offered by this node as coordinator, or consumed by it as a signer: never offered again.
    used: Recent<String>,
}

impl ReadyPresignatures {
    /// Takes the oldest remembered presignature for `key` still unexpired at `now_ms` and
    /// marks it used. `None` when none is remembered: read the store, then
    /// [`ReadyPresignatures::remember`] what it lists.
    pub fn take(&mut self, key: &ReadyKey, now_ms: i64) -> Option<String> {
        let list = self.lists.get_mut(key)?;
        let mut taken = None;
        while let Some(ready) = list.pop_front() {
            if ready.expires_at > now_ms && !self.used.contains(&ready.id) {
                taken = Some(ready.id);
                break;
            }
        }
        if list.is_empty() {
            self.lists.remove(key);
        }
        let id = taken?;
        self.used.insert(id.clone(), USED_MEMORY);
        Some(id)
    }

    /// Remembers what a store read listed for `key` (oldest first), except what was used
    /// while the read was in flight.
    pub fn remember(&mut self, key: ReadyKey, listed: Vec<PresignatureRecord>) {
        let list: VecDeque<Ready> = listed
            .into_iter()
            .filter(|p| !self.used.contains(&p.id))
            .map(|p| Ready {
                id: p.id,
                expires_at: p.expires_at,
            })
            .collect();
        if list.is_empty() {
            self.lists.remove(&key);
        } else {
            self.lists.insert(key, list);
        }
    }

    /// Presignatures taken for a request that was then refused before it was proposed:
    /// nobody consumed them, so they may be offered again (after a store read lists them).
    pub fn put_back<'a>(&mut self, ids: impl IntoIterator<Item = &'a Option<String>>) {
        for id in ids.into_iter().flatten() {
            self.used.remove(id);
        }
    }

    /// Forgets every presignature remembered for `wallet_id` (a refresh retired them); the
    /// next request reads the store.
    pub fn forget_wallet(&mut self, wallet_id: &WalletId) {
        self.lists.retain(|key, _| &key.wallet_id != wallet_id);
    }

    /// Presignatures this node consumed as a signer: forgotten, and kept out of any store read
    /// that began before the consumption committed.
    pub fn used<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            self.used.insert(id.to_owned(), USED_MEMORY);
            for list in self.lists.values_mut() {
                list.retain(|ready| ready.id != id);
            }
        }
        self.lists.retain(|_, list| !list.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mpc_store::PresignatureState;

    const NOW: i64 = 1_000_000;

    fn key(path: &str) -> ReadyKey {
        ReadyKey {
            wallet_id: WalletId::must("w"),
            path: path.into(),
            signers: NodeId::must_list(&[1, 2, 3]),
        }
    }

    fn listed(ids: &[&str], expires_at: i64) -> Vec<PresignatureRecord> {
        ids.iter()
            .map(|id| PresignatureRecord {
                id: (*id).into(),
                wallet_id: WalletId::must("w"),
                path: "m/0/0".parse().unwrap(),
                signers: NodeId::must_list(&[1, 2, 3]),
                epoch: 1,
                key_epoch: 0,
                state: PresignatureState::Ready,
                public: Vec::new(),
                created_at: 0,
                expires_at,
                consumed_at: None,
            })
            .collect()
    }

    /// Everything `take` gives for `key` until it asks for a store read.
    fn drain(ready: &mut ReadyPresignatures, key: &ReadyKey) -> Vec<String> {
        std::iter::from_fn(|| ready.take(key, NOW)).collect()
    }

    #[test]
    fn takes_oldest_first_each_once_then_asks_for_a_read() {
        let mut ready = ReadyPresignatures::default();
        let k = key("m/0/0");
        assert_eq!(ready.take(&k, NOW), None, "nothing remembered yet");
        ready.remember(k.clone(), listed(&["a", "b"], NOW + 1));
        assert_eq!(ready.take(&key("m/0/1"), NOW), None, "another path");
        assert_eq!(drain(&mut ready, &k), ["a", "b"]);
        // A read in flight while "a" and "b" were offered still lists them: not taken again.
        ready.remember(k.clone(), listed(&["a", "b", "c"], NOW + 1));
        assert_eq!(drain(&mut ready, &k), ["c"]);
    }

    #[test]
    fn expired_presignatures_are_skipped() {
        let mut ready = ReadyPresignatures::default();
        let k = key("m/0/0");
        let mut found = listed(&["old"], NOW);
        found.extend(listed(&["fresh"], NOW + 1));
        ready.remember(k.clone(), found);
        assert_eq!(drain(&mut ready, &k), ["fresh"]);
    }

    #[test]
    fn consumed_as_a_signer_is_never_offered() {
        let mut ready = ReadyPresignatures::default();
        let k = key("m/0/0");
        ready.remember(k.clone(), listed(&["a", "b", "c"], NOW + 1));
        ready.used(["a", "c"]);
        assert_eq!(drain(&mut ready, &k), ["b"]);
        // Consumed while a store read was in flight: that read's list does not bring it back.
        ready.used(["d"]);
        ready.remember(k.clone(), listed(&["d", "e"], NOW + 1));
        assert_eq!(drain(&mut ready, &k), ["e"]);
    }

    #[test]
    fn a_forgotten_wallet_is_read_again() {
        let mut ready = ReadyPresignatures::default();
        let (k, mut other) = (key("m/0/0"), key("m/0/0"));
        other.wallet_id = WalletId::must("v");
        ready.remember(k.clone(), listed(&["a", "b"], NOW + 1));
        ready.remember(other.clone(), listed(&["c"], NOW + 1));
        ready.forget_wallet(&k.wallet_id);
        assert_eq!(
            ready.take(&k, NOW),
            None,
            "retired by a refresh: the store decides"
        );
        assert_eq!(drain(&mut ready, &other), ["c"]);
    }
}
