//! The backup file's format: the header, the body's tables and columns, the framing and its
//! authentication tag.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::BackupError;
use crate::crypto::Key;
use crate::error::StoreError;

type HmacSha256 = Hmac<Sha256>;

/// `format` in every backup header.
pub const BACKUP_FORMAT: &str = "mpc-wallet-store-backup";
/// Version of the file layout; a reader refuses others.
pub const BACKUP_FORMAT_VERSION: u32 = 1;
/// The newest migration whose tables this module knows. A new migration must update
/// `TABLES` and this number (a unit test below fails until it does), so a backup never
/// silently leaves out a table or a column.
pub const BACKUP_SCHEMA_VERSION: i64 = 14;
/// The oldest schema a backup is made of (the first with the `restores` table).
pub(super) const OLDEST_SCHEMA_VERSION: i64 = 4;

pub(super) const TRAILER: &[u8] = b"hmac-sha256 ";
const MAC_CONTEXT: &[u8] = b"mpc-wallet/store-backup/v1/hmac-key\0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Int,
    Bytes,
}
use Kind::{Bytes, Int, Text};

pub(super) struct TableSpec {
    pub(super) name: &'static str,
    /// The migration that created the table.
    since: i64,
    /// Primary key columns, for a stable row order.
    pub(super) order: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// Columns a later migration added, with that migration (a backup made before it lacks
    /// them, and a restore leaves them at their default).
    added: &'static [(&'static str, Kind, i64)],
}

impl TableSpec {
    /// The table's columns at schema `version`.
    pub(super) fn columns_at(&self, version: i64) -> Vec<(&'static str, Kind)> {
        let added = self
            .added
            .iter()
            .filter(|(_, _, since)| *since <= version)
            .map(|&(c, k, _)| (c, k));
        self.columns.iter().copied().chain(added).collect()
    }
}

/// Every table a backup holds, parents before children (the insert order).
const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "primes",
        since: 1,
        order: "id",
        columns: &[("id", Text), ("sealed", Bytes), ("created_at", Int)],
        added: &[],
    },
    TableSpec {
        name: "aux_info",
        since: 1,
        order: "node_set",
        columns: &[
            ("node_set", Text),
            ("sealed", Bytes),
            ("public_digest", Text),
            ("session", Text),
            ("created_at", Int),
        ],
        added: &[],
    },
    TableSpec {
        name: "wallets",
        since: 1,
        order: "id",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("scheme", Text),
            ("threshold", Int),
            ("participants", Text),
            ("network", Text),
            ("public_key", Text),
            ("chain_code", Text),
            ("state", Text),
            ("session", Text),
            ("created_at", Int),
            ("activated_at", Int),
        ],
        added: &[
            ("key_epoch", Int, 9),
            ("key_epoch_at", Int, 12),
            ("coordinator", Int, 13),
        ],
    },
    TableSpec {
        name: "key_shares",
        since: 1,
        order: "wallet_id",
        columns: &[("wallet_id", Text), ("sealed", Bytes)],
        added: &[],
    },
    TableSpec {
        name: "ceremonies",
        since: 1,
        order: "id",
        columns: &[
            ("id", Text),
            ("kind", Text),
            ("state", Text),
            ("coordinator", Int),
            ("request", Text),
            ("result", Text),
            ("error", Text),
            ("started_at", Int),
            ("finished_at", Int),
        ],
        added: &[],
    },
    TableSpec {
        name: "sessions_seen",
        since: 1,
        order: "session",
        columns: &[("session", Text), ("protocol", Text), ("seen_at", Int)],
        added: &[],
    },
    TableSpec {
        name: "spends",
        since: 2,
        order: "session, wallet_id",
        columns: &[
            ("session", Text),
            ("wallet_id", Text),
            ("amount_sats", Int),
            ("at", Int),
        ],
        added: &[],
    },
    TableSpec {
        name: "utxos",
        since: 3,
        order: "outpoint",
        columns: &[
            ("outpoint", Text),
            ("wallet_id", Text),
            ("amount_sats", Int),
            ("path", Text),
            ("script_pubkey", Text),
            ("origin", Text),
            ("state", Text),
            ("reserved_by", Text),
            ("reserved_at", Int),
            ("spent_by", Text),
            ("spent_at", Int),
            ("created_at", Int),
        ],
        added: &[],
    },
    TableSpec {
        name: "change_indices",
        since: 3,
        order: "wallet_id",
        columns: &[("wallet_id", Text), ("next_index", Int)],
        added: &[],
    },
    TableSpec {
        name: "restores",
        since: 4,
        order: "id",
        columns: &[
            ("id", Text),
            ("backup_sha256", Text),
            ("backup_created_at", Int),
            ("backup_epoch", Int),
            ("epoch", Int),
            ("presignatures_deleted", Int),
            ("restored_at", Int),
        ],
        added: &[],
    },
    TableSpec {
        name: "funding_transactions",
        since: 6,
        order: "txid",
        columns: &[
            ("txid", Text),
            ("raw_transaction", Text),
            ("created_at", Int),
        ],
        added: &[],
    },
    TableSpec {
        name: "incidents",
        since: 7,
        order: "id",
        columns: &[
            ("id", Text),
            ("accused", Int),
            ("reporter", Int),
            ("kind", Text),
            ("session", Text),
            ("wallet_id", Text),
            ("at", Int),
            ("detail", Text),
            ("evidence", Bytes),
            ("released_at", Int),
        ],
        added: &[],
    },
    // The audit log is backed up: a restore brings back the chain as it was at the backup,
    // and the restore itself is appended to it.
    TableSpec {
        name: "audit_log",
        since: 8,
        order: "seq",
        columns: &[
            ("seq", Int),
            ("at_ms", Int),
            ("kind", Text),
            ("actor", Text),
            ("details", Text),
            ("prev_hash", Text),
            ("hash", Text),
        ],
        added: &[],
    },
    // Requests waiting for approvals: a restored request still needs every signer's check of
    // its approvals, and its expiry still holds.
    TableSpec {
        name: "approval_requests",
        since: 10,
        order: "id",
        columns: &[
            ("id", Text),
            ("wallet_ids", Text),
            ("psbt", Text),
            ("txid", Text),
            ("state", Text),
            ("required", Int),
            ("created_at", Int),
            ("expires_at", Int),
            ("result", Text),
            ("error", Text),
            ("finished_at", Int),
        ],
        added: &[],
    },
    TableSpec {
        name: "approval_decisions",
        since: 10,
        order: "request_id, public_key",
        columns: &[
            ("request_id", Text),
            ("public_key", Text),
            ("approver", Text),
            ("decision", Text),
            ("signature", Text),
            ("at", Int),
        ],
        added: &[],
    },
];

/// The tables a store at schema `version` has.
pub(super) fn tables_at(version: i64) -> impl DoubleEndedIterator<Item = &'static TableSpec> {
    TABLES.iter().filter(move |t| t.since <= version)
}

/// Tables a backup leaves out on purpose, with the migration that created each; a restore
/// empties them. Presignatures: design invariant 1, never restore one. Fencing tokens: cluster
/// state that etcd owns; the node checks every token against etcd and records it anew, and a
/// row brought back could only be out of date (or a value older versions stored from a peer
/// unchecked). Backups made before they were left out carry them; a restore ignores them.
///
/// Pending key shares: a refresh undecided at backup time is decided (and its pending share
/// committed or dropped) long before any restore, so a pending share brought back could only
/// be stale. Pending aux info likewise (its primes are lost with it: the pool makes more).
const NEVER_BACKED_UP: &[(&str, i64)] = &[
    ("presignatures", 1),
    ("fencing_tokens", 5),
    ("pending_key_shares", 9),
    ("pending_aux_info", 11),
];

pub(super) fn never_backed_up(name: &str) -> bool {
    NEVER_BACKED_UP.iter().any(|(n, _)| *n == name)
}

/// The tables of [`NEVER_BACKED_UP`] a store at schema `version` has.
pub(super) fn never_backed_up_at(version: i64) -> impl Iterator<Item = &'static str> {
    NEVER_BACKED_UP
        .iter()
        .filter(move |(_, since)| *since <= version)
        .map(|(name, _)| *name)
}

/// The first line of a backup. Readable without the key (to refuse the wrong node's file with
/// a clear message), but trusted only once the whole file authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    pub format: String,
    pub version: u32,
    pub node_id: u16,
    /// The cluster's identity as the caller names it (the CLI: the CA certificate's SHA-256).
    pub cluster: String,
    pub store_id: Uuid,
    /// The newest migration applied to the store.
    pub schema_version: i64,
    /// The presignature epoch at backup time.
    pub epoch: u64,
    pub created_at_ms: i64,
    /// Rows per table in the body.
    pub rows: BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Body {
    /// `meta` rows, values in hex (the sealed DEK, the store id, node id, epoch, KEK kind...).
    pub(super) meta: BTreeMap<String, String>,
    pub(super) tables: BTreeMap<String, TableDump>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TableDump {
    pub(super) columns: Vec<String>,
    pub(super) rows: Vec<Vec<Value>>,
}

/// Reads a backup's header without checking anything but its shape (for display; the header
/// is trusted only after [`restore_backup`](super::restore_backup) authenticated the whole
/// file).
pub fn read_backup_header(file: &[u8]) -> Result<BackupHeader, BackupError> {
    Ok(Parsed::new(file)?.header)
}

pub(super) struct Parsed<'a> {
    pub(super) header: BackupHeader,
    /// Everything the tag covers.
    pub(super) content: &'a [u8],
    pub(super) body: &'a [u8],
    pub(super) tag: Vec<u8>,
}

impl<'a> Parsed<'a> {
    pub(super) fn new(file: &'a [u8]) -> Result<Self, BackupError> {
        let bad = |what: &str| BackupError::Malformed(what.to_owned());
        let without_newline = file
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("truncated (no final newline)"))?;
        let trailer_start = without_newline
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .ok_or_else(|| bad("no authentication line"))?;
        let (content, trailer) = file.split_at(trailer_start);
        let tag_hex = trailer
            .strip_prefix(TRAILER)
            .and_then(|t| t.strip_suffix(b"\n"))
            .ok_or_else(|| bad("no authentication line"))?;
        let tag = hex::decode(tag_hex).map_err(|_| bad("authentication line is not hex"))?;
        let header_end = content
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no header line"))?;
        let header: BackupHeader = serde_json::from_slice(&content[..header_end])
            .map_err(|e| BackupError::Malformed(format!("header: {e}")))?;
        let body = content[header_end + 1..]
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("no body line"))?;
        Ok(Parsed {
            header,
            content,
            body,
            tag,
        })
    }
}

pub(super) fn mac_key(kek: &Key, store_id: Uuid) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    let mut mac =
        HmacSha256::new_from_slice(&kek[..]).map_err(|_| StoreError::Crypto("HMAC key".into()))?;
    mac.update(MAC_CONTEXT);
    mac.update(store_id.as_bytes());
    Ok(Zeroizing::new(mac.finalize().into_bytes().to_vec()))
}

pub(super) fn tag(key: &[u8], content: &[u8]) -> Result<Vec<u8>, BackupError> {
    let mut mac =
        HmacSha256::new_from_slice(key).map_err(|_| StoreError::Crypto("HMAC key".into()))?;
    mac.update(content);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// Constant-time comparison (hmac's `verify_slice`).
pub(super) fn verify_tag(key: &[u8], content: &[u8], tag: &[u8]) -> Result<bool, BackupError> {
    let mut mac =
        HmacSha256::new_from_slice(key).map_err(|_| StoreError::Crypto("HMAC key".into()))?;
    mac.update(content);
    Ok(mac.verify_slice(tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;

    #[test]
    fn backup_knows_the_newest_migration() {
        let newest = store::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        assert!(
            (OLDEST_SCHEMA_VERSION..=BACKUP_SCHEMA_VERSION).contains(&newest),
            "migration {newest} is newer than backup/format.rs knows: update TABLES and \
             BACKUP_SCHEMA_VERSION there"
        );
    }

    #[test]
    fn every_table_of_the_migrations_is_known() {
        for m in store::MIGRATOR.iter() {
            let sql = m.sql.as_str().to_ascii_lowercase();
            for part in sql.split("create table ").skip(1) {
                let name = part
                    .split(|c: char| c.is_whitespace() || c == '(')
                    .next()
                    .unwrap_or_default();
                assert!(
                    name == "meta"
                        || never_backed_up(name)
                        || TABLES.iter().any(|t| t.name == name),
                    "table {name} of migration {} is not in backup/format.rs",
                    m.version
                );
            }
        }
    }
}
