//! Rollback detection: a store brought back to an older state (a VM snapshot, point-in-time
//! recovery, failover to an asynchronous replica, a database file copied back) also brings back
//! presignatures this node has already used, and with them a way to sign twice with one.
//!
//! The store counts consumed presignatures (`meta.presignatures_consumed`, in the consuming
//! transaction), so its [`Position`] (epoch, count) only ever grows. A small file outside the
//! database, the *guard file*, holds the highest position this node has acted on; it is
//! advanced after the consuming commit and before the secret is handed back to be used, so
//! every partial signature that left the node is covered by it. A store whose position is
//! below the file's has lost consumptions that were acted on: rolled back. Then every
//! presignature in it is retired by moving to an epoch above both (see [`GuardCheck`]).
//!
//! The file is two 32-byte slots, each `magic | epoch | count | checksum` (little-endian,
//! checksum: the first 8 bytes of SHA-256 over the rest); a write overwrites the older slot
//! in place and `fdatasync`s, so a torn write leaves the other, previous slot readable. The
//! reader takes the highest valid slot. Writes are serialized and each writes the highest
//! position asked for so far, so one write covers every commit that waited for it.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::store::Store;

const MAGIC: &[u8; 8] = b"mpc-rbg1";
const SLOT: usize = 32;
const FILE_LEN: usize = 2 * SLOT;

/// How far a store has come: its presignature epoch, then how many presignatures it has
/// consumed. Ordered by epoch first: every presignature of an older epoch is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub epoch: u64,
    pub consumed: u64,
}

/// What the start-up check ([`Store::guard_against_rollback`]) found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardCheck {
    /// The store is at the file's position or ahead of it (a crash between a consuming commit
    /// and the file's update leaves it ahead, harmlessly: that presignature never left).
    InStep { store: Position },
    /// No readable guard file (first start, a new machine, a lost or damaged file): nothing
    /// tells what this node already did, so every ready presignature was retired by a new
    /// epoch (`discarded` of them; none and no new epoch if the store held none).
    Unwitnessed {
        reason: String,
        store: Position,
        epoch: u64,
        discarded: u64,
    },
    /// The store is behind the file: it was rolled back. It moved to `epoch`, above both, and
    /// its `discarded` ready presignatures (some of them possibly used) are retired.
    RolledBack {
        store: Position,
        witnessed: Position,
        epoch: u64,
        discarded: u64,
    },
}

fn guard_error(path: &Path, reason: impl std::fmt::Display) -> StoreError {
    StoreError::RollbackGuard {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn checksum(body: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(body);
    let mut sum = [0; 8];
    sum.copy_from_slice(&digest[..8]);
    sum
}

fn encode(at: Position) -> [u8; SLOT] {
    let mut slot = [0; SLOT];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&at.epoch.to_le_bytes());
    slot[16..24].copy_from_slice(&at.consumed.to_le_bytes());
    let sum = checksum(&slot[..24]);
    slot[24..].copy_from_slice(&sum);
    slot
}

fn decode(slot: &[u8]) -> Option<Position> {
    let word = |at: usize| {
        slot.get(at..at + 8)?
            .try_into()
            .ok()
            .map(u64::from_le_bytes)
    };
    (slot.len() == SLOT && &slot[..8] == MAGIC && slot[24..] == checksum(&slot[..24])).then_some(
        Position {
            epoch: word(8)?,
            consumed: word(16)?,
        },
    )
}

/// What a guard file holds.
enum Witness {
    Missing,
    Unreadable(String),
    /// The highest valid slot's position, and which slot that is.
    At(Position, usize),
}

fn read_witness(path: &Path) -> Result<Witness> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Witness::Missing),
        Err(e) => return Err(guard_error(path, e)),
    };
    if bytes.len() != FILE_LEN {
        return Ok(Witness::Unreadable(format!(
            "{} bytes, expected {FILE_LEN}",
            bytes.len()
        )));
    }
    let best = bytes
        .chunks(SLOT)
        .enumerate()
        .filter_map(|(slot, bytes)| decode(bytes).map(|at| (at, slot)))
        .max();
    Ok(match best {
        Some((at, slot)) => Witness::At(at, slot),
        None => Witness::Unreadable("no slot passes its checksum".into()),
    })
}

/// The position a guard file holds, if it holds a readable one (a restore starts its new
/// epoch above it, so the restored store is not taken for a rolled-back one).
pub fn witnessed_position(path: &Path) -> Result<Option<Position>> {
    Ok(match read_witness(path)? {
        Witness::At(at, _) => Some(at),
        Witness::Missing | Witness::Unreadable(_) => None,
    })
}

/// A new guard file at `at`: written beside it, synced, renamed over it, the directory synced.
fn create_file(path: &Path, at: Position) -> Result<File> {
    let error = |e: std::io::Error| guard_error(path, e);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut name = path
        .file_name()
        .ok_or_else(|| guard_error(path, "not a file name"))?
        .to_owned();
    name.push(".tmp");
    let temp = dir.join(name);
    let mut file = File::create(&temp).map_err(error)?;
    let slot = encode(at);
    file.write_all(&slot)
        .and_then(|()| file.write_all(&slot))
        .and_then(|()| file.sync_all())
        .map_err(error)?;
    std::fs::rename(&temp, path).map_err(error)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(error)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(error)
}

/// What is on the disk, and where the next write goes.
struct Written {
    at: Position,
    /// The slot holding `at`; the next write overwrites the other one.
    slot: usize,
}

/// The open guard file of a store.
pub(crate) struct RollbackGuard {
    path: PathBuf,
    file: Arc<File>,
    /// The highest position a committed consumption asked to be witnessed.
    wanted: Mutex<Position>,
    /// Held while writing, so writes do not overlap.
    written: tokio::sync::Mutex<Written>,
}

impl RollbackGuard {
    /// Returns once the file holds `at` or more, on the disk. Concurrent callers share
    /// writes: whoever writes next writes the highest position asked for so far.
    pub(crate) async fn witness(&self, at: Position) -> Result<()> {
        let lock_error = || guard_error(&self.path, "lock poisoned");
        {
            let mut wanted = self.wanted.lock().map_err(|_| lock_error())?;
            *wanted = (*wanted).max(at);
        }
        let mut written = self.written.lock().await;
        if written.at >= at {
            return Ok(());
        }
        let target = *self.wanted.lock().map_err(|_| lock_error())?;
        let slot = 1 - written.slot;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            file.write_all_at(&encode(target), (slot * SLOT) as u64)
                .and_then(|()| file.sync_data())
        })
        .await
        .map_err(|e| guard_error(&self.path, format!("writing task failed: {e}")))?
        .map_err(|e| guard_error(&self.path, e))?;
        *written = Written { at: target, slot };
        Ok(())
    }
}

impl Store {
    /// Checks this store against its guard file at `path` and keeps the file up to date from
    /// now on: every later consumption of a presignature is witnessed in it before the secret
    /// is returned. Run once, at start, before anything can consume a presignature; a node
    /// never consumes from a store that was not checked. A store behind the file, or one
    /// without a readable file, has its ready presignatures retired (a new epoch); the
    /// [`GuardCheck`] says which, and an error (rollback) or warning is logged.
    pub async fn guard_against_rollback(&self, path: &Path) -> Result<GuardCheck> {
        if self.rollback_guard().is_some() {
            return Err(StoreError::Invalid("the store is already guarded".into()));
        }
        let store = self.position().await?;
        let (check, file) = match read_witness(path)? {
            Witness::At(witnessed, slot) if store >= witnessed => {
                (GuardCheck::InStep { store }, Some((witnessed, slot)))
            }
            Witness::At(witnessed, slot) => {
                let (epoch, discarded) = self.start_epoch_after(witnessed.epoch).await?;
                tracing::error!(
                    node = self.node_id().get(),
                    path = %path.display(),
                    store_epoch = store.epoch,
                    store_consumed = store.consumed,
                    witnessed_epoch = witnessed.epoch,
                    witnessed_consumed = witnessed.consumed,
                    epoch,
                    discarded,
                    "ROLLBACK DETECTED: the store is older than what this node has done \
                     (restored snapshot, point-in-time recovery or replica failover); every \
                     presignature in it is retired by a new epoch"
                );
                let check = GuardCheck::RolledBack {
                    store,
                    witnessed,
                    epoch,
                    discarded,
                };
                (check, Some((witnessed, slot)))
            }
            Witness::Missing => (self.unwitnessed(path, store, "missing".into()).await?, None),
            Witness::Unreadable(reason) => (self.unwitnessed(path, store, reason).await?, None),
        };
        let now = self.position().await?;
        let (file, written) = match file {
            Some((witnessed, slot)) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| guard_error(path, e))?;
                (
                    file,
                    Written {
                        at: witnessed,
                        slot,
                    },
                )
            }
            None => (create_file(path, now)?, Written { at: now, slot: 0 }),
        };
        let guard = RollbackGuard {
            path: path.to_owned(),
            file: Arc::new(file),
            wanted: Mutex::new(now),
            written: tokio::sync::Mutex::new(written),
        };
        guard.witness(now).await?;
        self.set_rollback_guard(guard)?;
        Ok(check)
    }

    /// No witness: ready presignatures are retired, since nothing shows they were not used.
    async fn unwitnessed(
        &self,
        path: &Path,
        store: Position,
        reason: String,
    ) -> Result<GuardCheck> {
        let ready = self.ready_presignature_count().await?;
        let (epoch, discarded) = if ready > 0 {
            self.start_epoch_after(store.epoch).await?
        } else {
            (store.epoch, 0)
        };
        if discarded > 0 {
            tracing::warn!(
                node = self.node_id().get(),
                path = %path.display(),
                reason = %reason,
                epoch,
                discarded,
                "no readable rollback guard file: ready presignatures, which nothing shows \
                 unused, are retired by a new epoch; a new file is written"
            );
        } else {
            tracing::info!(
                node = self.node_id().get(),
                path = %path.display(),
                reason = %reason,
                "no readable rollback guard file and no ready presignature: a new file is written"
            );
        }
        Ok(GuardCheck::Unwitnessed {
            reason,
            store,
            epoch,
            discarded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path() -> PathBuf {
        std::env::temp_dir().join(format!("mpc-rbg-unit-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn positions_order_by_epoch_first() {
        let at = |epoch, consumed| Position { epoch, consumed };
        assert!(at(1, 5) < at(1, 6));
        assert!(at(1, 99) < at(2, 0));
        assert!(at(3, 0) > at(2, 1_000));
    }

    #[test]
    fn a_slot_round_trips_and_a_damaged_one_is_refused() {
        let at = Position {
            epoch: 7,
            consumed: 1234,
        };
        let slot = encode(at);
        assert_eq!(decode(&slot), Some(at));
        for byte in 0..SLOT {
            let mut torn = slot;
            torn[byte] ^= 0x40;
            assert_eq!(decode(&torn), None, "byte {byte} changed");
        }
        assert_eq!(decode(&[0; SLOT]), None);
    }

    /// A write torn in the middle of a slot leaves the other slot, the previous position.
    #[tokio::test]
    async fn the_highest_valid_slot_wins_and_a_torn_write_falls_back_to_the_other() {
        let path = temp_path();
        let first = Position {
            epoch: 1,
            consumed: 3,
        };
        let file = create_file(&path, first).unwrap();
        let guard = RollbackGuard {
            path: path.clone(),
            file: Arc::new(file),
            wanted: Mutex::new(first),
            written: tokio::sync::Mutex::new(Written { at: first, slot: 0 }),
        };
        let second = Position {
            epoch: 1,
            consumed: 4,
        };
        guard.witness(second).await.unwrap();
        assert_eq!(witnessed_position(&path).unwrap(), Some(second));
        // A lower position asked later is already covered: no write.
        guard.witness(first).await.unwrap();
        assert_eq!(guard.written.lock().await.slot, 1);
        // Tear slot 1 (the newest): the file falls back to slot 0.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT + 12] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read_witness(&path).unwrap(), Witness::At(at, 0) if at == first));
        bytes[12] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_witness(&path).unwrap(),
            Witness::Unreadable(_)
        ));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            read_witness(&path).unwrap(),
            Witness::Unreadable(_)
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(read_witness(&path).unwrap(), Witness::Missing));
    }
}
