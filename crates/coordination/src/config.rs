use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{CoordinationError, Result};

/// Which backend coordinates the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// One machine: in-process locks and a fixed pool-refill leader from the config file.
    #[default]
    Static,
    /// Several machines: locks, leases and elections in etcd.
    Etcd,
}

/// The `[coordination]` section of a node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinationConfig {
    pub backend: BackendKind,
    /// etcd client URLs (`http://host:2379`); the `ETCD_ENDPOINTS` environment variable
    /// (comma-separated) overrides them.
    pub endpoints: Vec<String>,
    /// Every key this cluster writes lives under this prefix, so several clusters can share
    /// one etcd.
    pub prefix: String,
    /// Lease time-to-live of locks and leadership. etcd counts in whole seconds (rounded up)
    /// and enforces its own minimum (about 2 s with default timing).
    pub lease_ttl_ms: u64,
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Static,
            endpoints: Vec::new(),
            prefix: "/mpc-wallet".into(),
            lease_ttl_ms: 10_000,
        }
    }
}

impl CoordinationConfig {
    /// The name of the environment variable that overrides `endpoints`.
    pub const ENDPOINTS_ENV: &'static str = "ETCD_ENDPOINTS";

    /// Replaces `endpoints` with `ETCD_ENDPOINTS` when that is set and not empty.
    pub fn apply_env(&mut self) {
        if let Ok(value) = std::env::var(Self::ENDPOINTS_ENV) {
            let endpoints = split_endpoints(&value);
            if !endpoints.is_empty() {
                self.endpoints = endpoints;
            }
        }
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// Checks what can be checked without connecting.
    pub fn validate(&self) -> Result<()> {
        if self.lease_ttl_ms == 0 {
            return Err(CoordinationError::Config(
                "lease_ttl_ms must be positive".into(),
            ));
        }
        validate_prefix(&self.prefix)?;
        if self.backend == BackendKind::Etcd && self.endpoints.is_empty() {
            return Err(CoordinationError::Config(format!(
                "the etcd backend needs endpoints (or {})",
                Self::ENDPOINTS_ENV
            )));
        }
        Ok(())
    }
}

/// Splits a comma-separated endpoint list, dropping blanks.
pub fn split_endpoints(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.ends_with('/') {
        return Err(CoordinationError::Config(format!(
            "prefix {prefix:?} must be non-empty and not end with '/'"
        )));
    }
    Ok(())
}

/// A lock or election name becomes one path segment under the prefix.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') {
        return Err(CoordinationError::Config(format!(
            "name {name:?} must be non-empty and contain no '/'"
        )));
    }
    Ok(())
}
