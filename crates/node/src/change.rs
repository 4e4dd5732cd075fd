//! Where change may go: each wallet's next unused change index (`m/1/i`), as this node knows
//! it.
//!
//! The change rule ([`mpc_bitcoin::policy::ChangeRule`]) counts an output as change only up to
//! `policy.change_gap` past this index, so the index must come from what this node trusts:
//! change indices it allocated itself (as the coordinator of a payment), and those of
//! transactions it signed (it checked them). It is kept in the store (`change_indices`, only
//! ever raised) and remembered in memory, since every signing reads it.

use mpc_transport::NodeId;
use mpc_types::WalletId;
use tracing::{debug, info, warn, Instrument};

use crate::{Node, NodeError};

/// Signed-transaction notices checked at once; more are dropped (they are advisory, and a
/// peer must not be able to queue unbounded verification work here).
pub(crate) const NOTICE_CHECKS: usize = 2;

impl Node {
    /// The next change index of `wallet_id` this node knows to be unused.
    pub(crate) async fn next_change_index(&self, wallet_id: &WalletId) -> Result<u32, NodeError> {
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
        wallet_id: &WalletId,
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
    pub(crate) fn remember_change_next(&self, wallet_id: &WalletId, next: u32) {
        if let Ok(mut known) = self.change_next() {
            let entry = known.entry(wallet_id.to_owned()).or_insert(next);
            *entry = (*entry).max(next);
        }
    }

    /// A peer's notice of a transaction the cluster signed: checked and learned from in the
    /// background, if a check slot is free.
    pub(crate) fn signed_arrived(
        &self,
        from: NodeId,
        wallet_ids: Vec<WalletId>,
        psbt: String,
        raw_transaction: String,
    ) {
        let Ok(permit) = self.inner.notice_checks.clone().try_acquire_owned() else {
            debug!(
                node = self.id().get(),
                from = from.get(),
                "busy: a signed-transaction notice dropped"
            );
            return;
        };
        let node = self.clone();
        let span = tracing::info_span!("signed-notice", node = self.id().get(), from = from.get());
        tokio::spawn(
            async move {
                match node
                    .learn_from_signed(&wallet_ids, &psbt, &raw_transaction)
                    .await
                {
                    Ok(learned) => info!(learned, "learned from a signed transaction"),
                    Err(e) => warn!(error = %e, "signed-transaction notice refused"),
                }
                drop(permit);
            }
            .instrument(span),
        );
    }

    fn change_next(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, std::collections::HashMap<WalletId, u32>>, NodeError>
    {
        self.inner
            .change_next
            .lock()
            .map_err(|_| NodeError::Internal("change-index lock".into()))
    }
}
