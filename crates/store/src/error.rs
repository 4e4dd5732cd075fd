use std::path::PathBuf;

/// Everything the store can fail with. Messages name the table and row, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the key-encryption key (passphrase or key file) does not open this store")]
    WrongKey,
    #[error("sealed value {table}/{id} does not authenticate: it was altered or moved from another row or store")]
    Tampered { table: &'static str, id: String },
    #[error("this store belongs to node {found}, but was opened as node {expected}")]
    WrongNode { expected: u16, found: u16 },
    #[error("key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error("unsupported database URL scheme {0:?} (expected sqlite: or postgres:)")]
    UnsupportedUrl(String),
    #[error("database error ({context}): {source}")]
    Database {
        context: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the store's schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{table}/{id} already exists")]
    AlreadyExists { table: &'static str, id: String },
    #[error("{table}/{id} not found")]
    NotFound { table: &'static str, id: String },
    #[error("wallet {id}: cannot go from {from} to {to}")]
    InvalidTransition {
        id: String,
        from: String,
        to: String,
    },
    #[error("presignature {id} is for epoch {record}, but the store is at epoch {current}")]
    WrongEpoch {
        id: String,
        record: u64,
        current: u64,
    },
    #[error(
        "presignature {id} is for key epoch {record}, but its wallet is at key epoch {wallet}"
    )]
    WrongKeyEpoch {
        id: String,
        record: u64,
        wallet: u64,
    },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("corrupt value in {table}/{id}: {reason}")]
    Corrupt {
        table: &'static str,
        id: String,
        reason: String,
    },
    #[error("{0}")]
    Crypto(String),
    #[error("rollback guard file {}: {reason}", path.display())]
    RollbackGuard { path: PathBuf, reason: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches a short description of what was being done to a database error.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, sqlx::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| StoreError::Database {
            context: what(),
            source,
        })
    }
}
