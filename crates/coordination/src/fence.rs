use std::collections::HashMap;
use std::sync::Mutex;

use crate::FencingToken;

/// The fencing rule, in memory: per resource, remember the highest token admitted and refuse
/// any lower one.
///
/// `admit(resource, token)`:
/// * `true` if `token` is at least the highest token admitted for `resource` (equal tokens are
///   admitted again: one holder acts several times under one lock), which then becomes `token`;
/// * `false` if a higher token was admitted before: a newer holder has acted, so this caller's
///   lock was lost and it must abort the action.
///
/// A node must keep this state durably and check it in the same place that performs the
/// action (`mpc_store::Store::admit_fencing_token` does exactly this rule in one atomic
/// statement); this type is for tests and single-process use.
#[derive(Debug, Default)]
pub struct Fence {
    highest: Mutex<HashMap<String, FencingToken>>,
}

impl Fence {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn admit(&self, resource: &str, token: FencingToken) -> bool {
        let mut highest = match self.highest.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match highest.get(resource) {
            Some(seen) if *seen > token => {
                tracing::warn!(resource, %token, highest = %seen, "stale fencing token refused");
                false
            }
            _ => {
                highest.insert(resource.to_owned(), token);
                true
            }
        }
    }

    /// The highest token admitted for `resource`.
    pub fn highest(&self, resource: &str) -> Option<FencingToken> {
        let highest = match self.highest.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        highest.get(resource).copied()
    }
}
