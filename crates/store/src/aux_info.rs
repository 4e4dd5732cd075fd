//! This node's aux info (sealed) per node set, with its public digest.

use mpc_types::NodeId;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::error::{Context, Result};
use crate::records::id_list;
use crate::rows::get;
use crate::store::{now_ms, Store};

impl Store {
    /// Stores (or replaces) this node's aux info for a node set.
    pub async fn put_aux_info(
        &self,
        node_set: &[NodeId],
        aux: &[u8],
        public_digest: &str,
        session: Uuid,
    ) -> Result<()> {
        let set = id_list(node_set);
        let sealed = self.seal("aux_info", &set, aux)?;
        sqlx::query(
            "INSERT INTO aux_info (node_set, sealed, public_digest, session, created_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_set) DO UPDATE SET sealed = excluded.sealed, \
             public_digest = excluded.public_digest, session = excluded.session, \
             created_at = excluded.created_at",
        )
        .bind(&set)
        .bind(sealed)
        .bind(public_digest)
        .bind(session.to_string())
        .bind(now_ms())
        .execute(self.pool())
        .await
        .context(|| format!("storing aux_info/{set}"))?;
        Ok(())
    }

    /// The aux info and its public digest for a node set (in any order).
    pub async fn aux_info(
        &self,
        node_set: &[NodeId],
    ) -> Result<Option<(Zeroizing<Vec<u8>>, String)>> {
        let set = id_list(node_set);
        let row = sqlx::query("SELECT sealed, public_digest FROM aux_info WHERE node_set = $1")
            .bind(&set)
            .fetch_optional(self.pool())
            .await
            .context(|| format!("reading aux_info/{set}"))?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Vec<u8> = get(&row, "sealed", "aux_info")?;
        let digest: String = get(&row, "public_digest", "aux_info")?;
        Ok(Some((self.unseal("aux_info", &set, &sealed)?, digest)))
    }
}
