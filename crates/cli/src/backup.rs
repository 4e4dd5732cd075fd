//! `mpc-wallet backup` and `mpc-wallet restore`: one node's store to a file and back.
//!
//! The file holds the store's rows with every secret still sealed (see `mpc_store::backup`);
//! the key-encryption key is never in it, so keep the two apart. Presignatures are never
//! backed up, and a restore starts a new presignature epoch: the restored node's pool is empty.

use std::{io::Write, path::Path};

use anyhow::{bail, Context, Result};
use mpc_node::{node::key_source, NodeConfig};
use mpc_store::AuditEvent;
use sha2::{Digest, Sha256};

/// The cluster's identity recorded in a backup: the SHA-256 of the cluster CA certificate
/// (DER), the same for every node of a cluster and different for any other cluster.
pub fn cluster_identity(config: &NodeConfig) -> Result<String> {
    let pem = std::fs::read_to_string(&config.tls.ca)
        .with_context(|| format!("reading the CA certificate {}", config.tls.ca.display()))?;
    let certs = mpc_transport::certs::parse_certs(&pem)
        .with_context(|| format!("parsing {}", config.tls.ca.display()))?;
    let ca = certs.first().context("no certificate in the CA file")?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(ca.as_ref()))
    ))
}

/// The default SQLite file, if the config uses it (for a clear error when it is absent).
pub(crate) fn default_sqlite_file(config: &NodeConfig) -> Option<std::path::PathBuf> {
    config
        .store
        .url
        .is_none()
        .then(|| config.data_dir.join("store.db"))
}

/// `mpc-wallet backup --config node.toml --out FILE`.
pub async fn backup(config_path: &Path, out: &Path) -> Result<()> {
    let config = NodeConfig::load(config_path)?;
    if let Some(file) = default_sqlite_file(&config) {
        if !file.exists() {
            bail!("node {} has no store at {}", config.id, file.display());
        }
    }
    let key = key_source(&config)?;
    let cluster = cluster_identity(&config)?;
    let backup = mpc_store::create_backup(&config.store_url(), &key, config.id, &cluster)
        .await
        .with_context(|| format!("backing up node {}'s store", config.id))?;
    // Never overwrite: an existing file may be the only good backup.
    let mut file = create_private_file(out)?;
    file.write_all(&backup.bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))?;
    crate::audit::record(
        &config,
        AuditEvent::BackupCreated {
            bytes: backup.bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&backup.bytes)),
        },
    )
    .await?;
    let h = &backup.header;
    println!(
        "backed up node {} (store {}, cluster {}, presignature epoch {}) to {}: {} bytes, rows {}",
        h.node_id,
        h.store_id,
        h.cluster,
        h.epoch,
        out.display(),
        backup.bytes.len(),
        rows(&h.rows)
    );
    println!(
        "secrets are sealed under the node's key-encryption key, which is NOT in the file: \
         keep a copy of the key, stored apart from the backup"
    );
    Ok(())
}

/// `mpc-wallet restore --config node.toml --from FILE [--force]`. The node must be stopped.
pub async fn restore(config_path: &Path, from: &Path, force: bool) -> Result<()> {
    let config = NodeConfig::load(config_path)?;
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let key = key_source(&config)?;
    let cluster = cluster_identity(&config)?;
    if default_sqlite_file(&config).is_some() {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
    }
    // Above the epoch the node's rollback guard file saw: the restored store is behind what
    // the node did, and must not look rolled back at the next start.
    let guard_file = config.rollback_guard_file();
    let witnessed = mpc_store::witnessed_position(&guard_file)
        .with_context(|| format!("reading {}", guard_file.display()))?;
    let options = mpc_store::RestoreOptions {
        force,
        epoch_above: witnessed.map_or(0, |at| at.epoch),
    };
    let summary = mpc_store::restore_backup(
        &config.store_url(),
        &key,
        config.id,
        &cluster,
        &bytes,
        options,
    )
    .await
    .with_context(|| format!("restoring {} into node {}", from.display(), config.id))?;
    let h = &summary.header;
    crate::audit::record(
        &config,
        AuditEvent::Restored {
            backup_sha256: hex::encode(Sha256::digest(&bytes)),
            backup_store_id: h.store_id,
            epoch: summary.epoch,
        },
    )
    .await?;
    println!(
        "restored node {} (store {}) from {}: rows {}; replaced {} rows; presignature epoch {} \
         (backup's {}), {} presignatures deleted: the pool starts empty",
        h.node_id,
        h.store_id,
        from.display(),
        rows(&h.rows),
        summary.replaced_rows,
        summary.epoch,
        h.epoch,
        summary.presignatures_deleted
    );
    Ok(())
}

fn rows(rows: &std::collections::BTreeMap<String, u64>) -> String {
    rows.iter()
        .map(|(t, n)| format!("{t}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Creates `path` for this user alone (mode 0600), refusing to overwrite an existing file.
pub(crate) fn create_private_file(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
}
