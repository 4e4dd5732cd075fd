//! A node's durable, encrypted store: key shares, aux info, safe primes, presignatures (all
//! sealed at rest), plus public records of wallets, ceremonies and seen session ids.
//!
//! One query layer (`sqlx::AnyPool`) and one set of migrations serve SQLite (the zero-setup
//! default) and PostgreSQL. The store is bytes-based: callers serialize their secrets, and the
//! store knows nothing of protocol types.
//!
//! Sealing: a random data-encryption key per store, itself sealed under a key-encryption key
//! from a passphrase (Argon2id) or a key file. Every value is XChaCha20-Poly1305 with associated
//! data `"{table}/{row id}/{store id}"`, so a value moved to another row or store fails to open
//! ([`StoreError::Tampered`]) instead of being used.

mod admin;
mod approvals;
mod audit;
mod aux_info;
pub mod backup;
mod ceremonies;
mod connection;
mod crypto;
mod error;
mod fencing;
mod incidents;
mod key_epochs;
mod meta;
mod presignatures;
mod primes;
mod records;
mod rollback;
mod rows;
mod signing;
mod spends;
mod store;
mod utxos;
mod wallets;

pub use admin::create_postgres_database;
pub use approvals::{ApprovalRequestRecord, DecisionRecord, RequestState};
pub use audit::{
    audit_hash, Actor, AuditEntry, AuditError, AuditEvent, AuditHash, AuditHead, AuditOutput,
    AuditVerified,
};
pub use aux_info::PendingAuxInfoFor;
pub use backup::{
    check_backup, create_backup, read_backup_header, restore_backup, Backup, BackupError,
    BackupHeader, RestoreOptions, RestoreSummary,
};
pub use crypto::{generate_key_file, KeySource};
pub use error::{Result, StoreError};
pub use incidents::{IncidentKind, IncidentRecord};
pub use key_epochs::{Committee, KeyEpochCommit};
pub use records::{
    Backend, CeremonyRecord, PendingAuxInfo, PendingShare, PoolLevel, PresignatureRecord,
    PresignatureState, WalletRecord, WalletState,
};
pub use rollback::{witnessed_position, GuardCheck, Position};
pub use signing::{PresignatureUse, SigningRefusal};
pub use spends::SpendLimit;
pub use store::Store;
pub use utxos::{NewUtxo, PathUtxoCounts, Reservation, UtxoOrigin, UtxoRecord, UtxoState};
pub use zeroize::Zeroizing;
