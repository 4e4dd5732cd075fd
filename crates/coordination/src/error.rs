/// Everything coordination can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    /// The configuration cannot be used (no endpoints, a zero lease, a bad prefix).
    #[error("invalid coordination configuration: {0}")]
    Config(String),
    /// An etcd request failed (unreachable, timed out, refused).
    #[error("etcd ({context}): {source}")]
    Etcd {
        context: String,
        #[source]
        source: etcd_client::Error,
    },
    /// etcd answered, but not with what the protocol promises (a missing key or header).
    #[error("unexpected etcd response ({0})")]
    Protocol(String),
    /// The lease behind a lock or a leadership expired or was revoked: whoever holds the
    /// guard no longer holds the lock, and its fencing token will be refused once a newer
    /// holder has used its own.
    #[error("lease for {0} was lost")]
    LeaseLost(String),
}

pub type Result<T, E = CoordinationError> = std::result::Result<T, E>;

/// Attaches what was being done to an etcd error.
pub(crate) trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, etcd_client::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| CoordinationError::Etcd {
            context: what(),
            source,
        })
    }
}
