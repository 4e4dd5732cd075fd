//! Where change may go: each wallet's next unused change index (`m/1/i`), as this node knows
//! it.
//!
//! The change rule ([`mpc_bitcoin::policy::ChangeRule`]) counts an output as change only up to
//! `policy.change_gap` past this index, so the index must come from what this node trusts:
//! change indices it allocated itself (as the coordinator of a payment), and those of
//! transactions it signed (it checked them). It is kept in the store (`change_indices`, only
//! ever raised) and remembered in memory, since every signing reads it.

use crate::{Node, NodeError};

impl Node {
    /// The next change index of `wallet_id` this node knows to be unused.
    pub(crate) async fn next_change_index(&self, wallet_id: &str) -> Result<u32, NodeError> {
        if let Some(next) = self.change_next()?.get(wallet_id) {
            return Ok(*next);
        }
        let next = self.inner.store.next_change_index(wallet_id).await?;
        self.remember_change_next(wallet_id, next);
        Ok(next)
    }

    /// Records that a signed transaction paid change to `index` of `wallet_id`.
    pub(crate) async fn note_change_index_used(
        &self,
        wallet_id: &str,
        index: u32,
    ) -> Result<(), NodeError> {
        let next = self
            .inner
            .store
            .note_change_index_used(wallet_id, index)
            .await?;
        self.remember_change_next(wallet_id, next);
        Ok(())
    }

    /// Raises the remembered next change index of `wallet_id` to `next` (never lowers it).
    pub(crate) fn remember_change_next(&self, wallet_id: &str, next: u32) {
        if let Ok(mut known) = self.change_next() {
            let entry = known.entry(wallet_id.to_owned()).or_insert(next);
            *entry = (*entry).max(next);
        }
    }

    fn change_next(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, std::collections::HashMap<String, u32>>, NodeError> {
        self.inner
            .change_next
            .lock()
            .map_err(|_| NodeError::Internal("change-index lock".into()))
    }
}
