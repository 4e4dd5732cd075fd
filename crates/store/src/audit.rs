//! The audit log: every security-relevant event of this node, append-only, each entry
//! hash-chained to the one before it.
//!
//! `hash = SHA-256(AUDIT_DOMAIN || seq (u64 BE) || at_ms (i64 BE) || kind || actor || details
//! || prev_hash)`, each text field preceded by its length (u32 BE), `prev_hash` the previous
//! entry's hash (32 zero bytes for seq 1). The details are hashed as the JSON text stored, so
//! a row is checked from its own columns. What the chain proves and what it does not (a writer
//! of the database can rewrite it whole; a cut tail leaves a valid chain): ARCHITECTURE.md.

use std::fmt;

use mpc_types::WalletId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::error::{Context, Result, StoreError};
use crate::records::Backend;
use crate::rows::get;
use crate::store::{now_ms, Store};

const T: &str = "audit_log";
/// Separates this hash from any other SHA-256 of the same bytes.
const AUDIT_DOMAIN: &[u8] = b"mpc-wallet/audit-log/v1\0";
/// Rows read at once while verifying or exporting.
const PAGE: i64 = 1000;

/// A SHA-256 of the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuditHash(pub [u8; 32]);

impl AuditHash {
    /// The `prev_hash` of the first entry.
    pub const ZERO: AuditHash = AuditHash([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<AuditHash> {
        let bytes = hex::decode(text).ok()?;
        Some(AuditHash(bytes.try_into().ok()?))
    }
}

impl fmt::Display for AuditHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for AuditHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditHash({})", self.to_hex())
    }
}

impl Serialize for AuditHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for AuditHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        AuditHash::from_hex(&text).ok_or_else(|| serde::de::Error::custom("not a 32-byte hex hash"))
    }
}

/// The last entry of a chain: what a node shows elsewhere (exports, peers) so that a chain
/// rewritten or cut afterwards can be caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: AuditHash,
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The node itself (start-up, its own verdicts).
    Node,
    /// An API caller, by its token's role and subject.
    Caller { role: String, subject: String },
    /// Another node, as the coordinator of a proposal this node took part in.
    Peer(u16),
    /// An operator on this machine, through the CLI (backup, restore).
    Operator,
}

impl Actor {
    fn encode(&self) -> String {
        match self {
            Actor::Node => "node".into(),
            Actor::Caller { role, subject } => format!("caller:{role}:{subject}"),
            Actor::Peer(id) => format!("peer:{id}"),
            Actor::Operator => "operator".into(),
        }
    }

    fn decode(text: &str) -> Option<Actor> {
        match text.split_once(':') {
            None if text == "node" => Some(Actor::Node),
            None if text == "operator" => Some(Actor::Operator),
            Some(("peer", id)) => id.parse().ok().map(Actor::Peer),
            Some(("caller", rest)) => {
                let (role, subject) = rest.split_once(':')?;
                Some(Actor::Caller {
                    role: role.into(),
                    subject: subject.into(),
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl Serialize for Actor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

/// One output of a transaction asked to be signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditOutput {
    /// The output script, hex.
    pub script_pubkey: String,
    pub amount_sats: u64,
}

/// What happened. The variant is the entry's `kind`, its fields the `details`. Never a
/// secret: no share, key, presignature or token, only ids, digests and public values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "details", rename_all = "snake_case")]
pub enum AuditEvent {
    /// The node started; `config_sha256` digests its config (policy and limits included).
    NodeStarted {
        version: String,
        config_sha256: String,
    },
    /// A ceremony (`keygen`, `aux_info`) this node coordinated or took part in ended.
    Ceremony {
        ceremony: String,
        session: Uuid,
        wallet_id: Option<WalletId>,
        coordinator: bool,
        ok: bool,
        error: Option<String>,
    },
    /// This node, as coordinator, was asked to sign a transaction (after the request parsed).
    SigningRequested {
        session: Uuid,
        wallet_ids: Vec<WalletId>,
        txid: Option<String>,
        outputs: Vec<AuditOutput>,
    },
    /// The coordinated signing ended: signed by `signers`, or refused or failed (`rule` when a
    /// rule refused it).
    SigningFinished {
        session: Uuid,
        txid: Option<String>,
        ok: bool,
        signers: Vec<u16>,
        rule: Option<String>,
        error: Option<String>,
    },
    /// This node, as a signer, released its part of a signature for `coordinator` (for an
    /// interactive ECDSA input: recorded before the run that releases it).
    SignerSigned {
        session: Uuid,
        coordinator: u16,
        wallet_ids: Vec<WalletId>,
        txid: Option<String>,
    },
    /// This node, as a signer, refused: `rule` names the check.
    SignerRefused {
        session: Uuid,
        coordinator: u16,
        wallet_ids: Vec<WalletId>,
        rule: String,
        error: String,
    },
    /// A signing request needs human approvals: it waits as `request` until `expires_at_ms`.
    ApprovalPending {
        request: Uuid,
        wallet_ids: Vec<WalletId>,
        txid: String,
        outputs: Vec<AuditOutput>,
        fee_sats: u64,
        required: u16,
        expires_at_ms: i64,
    },
    /// An approver's signed decision (`approve` or `reject`) on `request` was verified and
    /// recorded; `public_key` is the approver's (public) Ed25519 key.
    ApprovalDecided {
        request: Uuid,
        approver: String,
        public_key: String,
        decision: String,
    },
    /// A request that waited for approvals ended: `signed`, `failed`, `rejected` or
    /// `expired`.
    ApprovalRequestClosed {
        request: Uuid,
        state: String,
        txid: String,
        error: Option<String>,
    },
    /// This node recorded blame against `accused`.
    Incident {
        id: Uuid,
        accused: u16,
        reporter: u16,
        incident_kind: String,
        session: Uuid,
    },
    /// An operator released `node`'s incidents.
    IncidentsReleased { node: u16, released: u64 },
    /// A peer's audit log changed under this node's eyes (its heartbeats, see
    /// `mpc_node::audit_heads`): entry `seq`, shown before with `shown`, now has `now`
    /// (rewritten), or is gone (`now` empty: cut, the peer's head now `head`).
    PeerAuditLogChanged {
        node: u16,
        seq: u64,
        shown: AuditHash,
        now: Option<AuditHash>,
        head: Option<u64>,
    },
    /// A backup of this store was written (its SHA-256, not its content).
    BackupCreated { bytes: u64, sha256: String },
    /// This store was restored from a backup; the entries before this one are the backup's.
    Restored {
        backup_sha256: String,
        backup_store_id: Uuid,
        epoch: u64,
    },
    /// A key refresh of `wallet_id` for `key_epoch`: `stage` is `started` (this node, as
    /// coordinator, proposed it), `committed` (this node's share of the new epoch is active)
    /// or `aborted` (this node's new share, if any, was dropped; the old one stays).
    KeyRefresh {
        stage: String,
        session: Uuid,
        wallet_id: WalletId,
        key_epoch: u64,
        coordinator: bool,
        error: Option<String>,
    },
}

impl AuditEvent {
    /// The `kind` column and the `details` JSON text.
    fn encode(&self) -> Result<(String, String)> {
        let value = serde_json::to_value(self)
            .map_err(|e| StoreError::Invalid(format!("audit event: {e}")))?;
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| StoreError::Invalid("audit event without a kind".into()))?
            .to_owned();
        let details = value.get("details").cloned().unwrap_or_default();
        Ok((kind, details.to_string()))
    }

    fn decode(kind: &str, details: &str, seq: u64) -> Result<AuditEvent> {
        let corrupt = |reason: String| StoreError::Corrupt {
            table: T,
            id: seq.to_string(),
            reason,
        };
        let details: serde_json::Value =
            serde_json::from_str(details).map_err(|e| corrupt(format!("details: {e}")))?;
        serde_json::from_value(serde_json::json!({ "kind": kind, "details": details }))
            .map_err(|e| corrupt(format!("{kind} event: {e}")))
    }
}

/// One entry of the log, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at_ms: i64,
    pub actor: Actor,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: AuditHash,
    pub hash: AuditHash,
}

/// Why [`Store::verify_audit_log`] rejected the chain: the first bad entry, by its seq.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "audit entry {seq} is missing (the next one is {found}): entries were deleted or reordered"
    )]
    Gap { seq: u64, found: u64 },
    #[error("audit entry {seq} does not follow entry {}: its prev_hash is not that entry's hash (entries were reordered, removed or inserted)", seq - 1)]
    Unlinked { seq: u64 },
    #[error("audit entry {seq} does not match its hash: it was edited")]
    Edited { seq: u64 },
    #[error("audit entry {seq} does not decode: {reason}")]
    Malformed { seq: u64, reason: String },
    #[error("the audit log ends at entry {last}, but a head recorded elsewhere is entry {expected}: the tail was cut")]
    Truncated { expected: u64, last: u64 },
    #[error("audit entry {seq} differs from the head recorded elsewhere: the log was rewritten")]
    Rewritten { seq: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuditError {
    /// The seq of the first bad entry (for a cut tail: the first missing one).
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::Gap { seq, .. }
            | Self::Unlinked { seq }
            | Self::Edited { seq }
            | Self::Malformed { seq, .. }
            | Self::Rewritten { seq } => Some(*seq),
            Self::Truncated { last, .. } => Some(last + 1),
            Self::Store(_) => None,
        }
    }
}

/// What a verified chain holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditVerified {
    pub entries: u64,
    pub head: Option<AuditHead>,
}

/// The chain's hash of one entry.
pub fn audit_hash(
    seq: u64,
    at_ms: i64,
    kind: &str,
    actor: &str,
    details: &str,
    prev: &AuditHash,
) -> AuditHash {
    let mut h = Sha256::new();
    h.update(AUDIT_DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    for field in [kind, actor, details] {
        // Lengths fit: a field is a few KB at most; saturating keeps it total anyway.
        h.update(u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.update(prev.0);
    AuditHash(h.finalize().into())
}

/// A row as stored, before any decoding.
struct RawEntry {
    seq: u64,
    at_ms: i64,
    kind: String,
    actor: String,
    details: String,
    prev_hash: String,
    hash: String,
}

fn raw_from_row(row: &AnyRow) -> Result<RawEntry> {
    let seq: i64 = get(row, "seq", T)?;
    let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        table: T,
        id: seq.to_string(),
        reason: "negative seq".into(),
    })?;
    Ok(RawEntry {
        seq,
        at_ms: get(row, "at_ms", T)?,
        kind: get(row, "kind", T)?,
        actor: get(row, "actor", T)?,
        details: get(row, "details", T)?,
        prev_hash: get(row, "prev_hash", T)?,
        hash: get(row, "hash", T)?,
    })
}

impl RawEntry {
    fn hashes(&self) -> std::result::Result<(AuditHash, AuditHash), AuditError> {
        let malformed = |what: &str| AuditError::Malformed {
            seq: self.seq,
            reason: format!("{what} is not a 32-byte hex hash"),
        };
        Ok((
            AuditHash::from_hex(&self.prev_hash).ok_or_else(|| malformed("prev_hash"))?,
            AuditHash::from_hex(&self.hash).ok_or_else(|| malformed("hash"))?,
        ))
    }

    fn decode(self) -> Result<AuditEntry> {
        let (prev_hash, hash) = self.hashes().map_err(|e| StoreError::Corrupt {
            table: T,
            id: self.seq.to_string(),
            reason: e.to_string(),
        })?;
        let actor = Actor::decode(&self.actor).ok_or_else(|| StoreError::Corrupt {
            table: T,
            id: self.seq.to_string(),
            reason: format!("unknown actor {:?}", self.actor),
        })?;
        Ok(AuditEntry {
            event: AuditEvent::decode(&self.kind, &self.details, self.seq)?,
            seq: self.seq,
            at_ms: self.at_ms,
            actor,
            prev_hash,
            hash,
        })
    }
}

const SELECT: &str = "SELECT seq, at_ms, kind, actor, details, prev_hash, hash FROM audit_log ";

fn seq_i64(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Invalid(format!("audit seq {seq} out of range")))
}

impl Store {
    /// Appends `event` by `actor` at the end of the chain; returns the new head. Appends are
    /// serialized: SQLite's write lock (`BEGIN IMMEDIATE`), PostgreSQL's table lock, so two
    /// never read the same head (and `seq`, the primary key, would refuse a second row).
    pub async fn append_audit(&self, actor: &Actor, event: &AuditEvent) -> Result<AuditHead> {
        let (kind, details) = event.encode()?;
        let actor = actor.encode();
        let at_ms = now_ms();
        let mut tx = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            // EXCLUSIVE: readers go on, other appenders wait for this commit.
            sqlx::query("LOCK TABLE audit_log IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .context(|| "locking audit_log".into())?;
        }
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await
                .context(|| "reading the audit head".into())?;
        let (seq, prev) = match head {
            None => (1, AuditHash::ZERO),
            Some((seq, hash)) => {
                let prev = AuditHash::from_hex(&hash).ok_or_else(|| StoreError::Corrupt {
                    table: T,
                    id: seq.to_string(),
                    reason: "hash is not a 32-byte hex hash".into(),
                })?;
                let next = u64::try_from(seq).ok().and_then(|s| s.checked_add(1));
                (
                    next.ok_or_else(|| StoreError::Corrupt {
                        table: T,
                        id: seq.to_string(),
                        reason: "seq out of range".into(),
                    })?,
                    prev,
                )
            }
        };
        let hash = audit_hash(seq, at_ms, &kind, &actor, &details, &prev);
        sqlx::query(
            "INSERT INTO audit_log (seq, at_ms, kind, actor, details, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(seq_i64(seq)?)
        .bind(at_ms)
        .bind(&kind)
        .bind(&actor)
        .bind(&details)
        .bind(prev.to_hex())
        .bind(hash.to_hex())
        .execute(&mut *tx)
        .await
        .context(|| format!("appending audit_log/{seq}"))?;
        tx.commit()
            .await
            .context(|| format!("committing audit_log/{seq}"))?;
        Ok(AuditHead { seq, hash })
    }

    /// The last entry's seq and hash, if any (as stored: [`Store::verify_audit_log`] checks).
    pub async fn audit_head(&self) -> Result<Option<AuditHead>> {
        let row = sqlx::query(AssertSqlSafe(format!("{SELECT}ORDER BY seq DESC LIMIT 1")))
            .fetch_optional(self.pool())
            .await
            .context(|| "reading the audit head".into())?;
        let Some(raw) = row.as_ref().map(raw_from_row).transpose()? else {
            return Ok(None);
        };
        let entry = raw.decode()?;
        Ok(Some(AuditHead {
            seq: entry.seq,
            hash: entry.hash,
        }))
    }

    /// The hash stored with entry `seq`, if there is one: what this node answers a peer that
    /// saw that entry as its head (the peer compares it with what it was shown).
    pub async fn audit_hash_at(&self, seq: u64) -> Result<Option<AuditHash>> {
        let hash: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(seq_i64(seq)?)
            .fetch_optional(self.pool())
            .await
            .context(|| format!("reading audit_log/{seq}"))?;
        hash.map(|text| {
            AuditHash::from_hex(&text).ok_or_else(|| StoreError::Corrupt {
                table: T,
                id: seq.to_string(),
                reason: format!("hash {text:?}"),
            })
        })
        .transpose()
    }

    /// Up to `limit` entries after seq `after` with `at_ms >= since_ms`, in chain order.
    pub async fn audit_entries(
        &self,
        since_ms: i64,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SELECT}WHERE seq > $1 AND at_ms >= $2 ORDER BY seq LIMIT $3"
        )))
        .bind(seq_i64(after)?)
        .bind(since_ms)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .context(|| "listing audit_log".into())?;
        rows.iter().map(|row| raw_from_row(row)?.decode()).collect()
    }

    /// Walks the whole chain from seq 1 and names the first entry that is missing, edited,
    /// out of order or undecodable. With `expected`, a head recorded elsewhere (a peer, an
    /// earlier export), also catches a cut tail or a chain rewritten up to that head, which
    /// the chain alone cannot show.
    pub async fn verify_audit_log(
        &self,
        expected: Option<AuditHead>,
    ) -> std::result::Result<AuditVerified, AuditError> {
        let mut prev = AuditHash::ZERO;
        let mut last = 0u64;
        loop {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "{SELECT}WHERE seq > $1 ORDER BY seq LIMIT {PAGE}"
            )))
            .bind(seq_i64(last)?)
            .fetch_all(self.pool())
            .await
            .context(|| "reading audit_log".into())?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let raw = raw_from_row(row)?;
                let seq = last + 1;
                if raw.seq != seq {
                    return Err(AuditError::Gap {
                        seq,
                        found: raw.seq,
                    });
                }
                let (stored_prev, stored_hash) = raw.hashes()?;
                if stored_prev != prev {
                    return Err(AuditError::Unlinked { seq });
                }
                let hash = audit_hash(seq, raw.at_ms, &raw.kind, &raw.actor, &raw.details, &prev);
                if hash != stored_hash {
                    return Err(AuditError::Edited { seq });
                }
                if let Some(head) = expected {
                    if head.seq == seq && head.hash != hash {
                        return Err(AuditError::Rewritten { seq });
                    }
                }
                // A valid chain must also decode: an entry no reader understands is no record.
                raw.decode().map_err(|e| AuditError::Malformed {
                    seq,
                    reason: e.to_string(),
                })?;
                prev = hash;
                last = seq;
            }
        }
        if let Some(head) = expected {
            if head.seq > last {
                return Err(AuditError::Truncated {
                    expected: head.seq,
                    last,
                });
            }
        }
        Ok(AuditVerified {
            entries: last,
            head: (last > 0).then_some(AuditHead {
                seq: last,
                hash: prev,
            }),
        })
    }
}
