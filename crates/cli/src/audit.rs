//! `mpc-wallet audit verify` and `mpc-wallet audit export`: one node's audit log, read from
//! its store as `backup` opens it (the node may keep running: both only read).

use std::{io::Write, path::Path};

use anyhow::{bail, Context, Result};
use mpc_node::{node::key_source, NodeConfig};
use mpc_store::{Actor, AuditEvent, AuditHash, AuditHead, Store};

use crate::backup::default_sqlite_file;

/// Entries read at once by `export`.
const PAGE: u32 = 1000;

/// Opens the node's existing store (never creates one: an absent store is an error here).
pub async fn open_store(config: &NodeConfig) -> Result<Store> {
    if let Some(file) = default_sqlite_file(config) {
        if !file.exists() {
            bail!("node {} has no store at {}", config.id, file.display());
        }
    }
    let key = key_source(config)?;
    Store::open(&config.store_url(), &key, config.id)
        .await
        .with_context(|| format!("opening node {}'s store", config.id))
}

/// Appends what an operator did here (backup, restore) to the node's audit log.
pub async fn record(config: &NodeConfig, event: AuditEvent) -> Result<()> {
    let store = open_store(config).await?;
    let appended = store.append_audit(&Actor::Operator, &event).await;
    store.close().await;
    appended.with_context(|| format!("appending to node {}'s audit log", config.id))?;
    Ok(())
}

/// `SEQ:HASH`, a head printed by `verify` or taken from the last line of an export.
pub fn parse_head(text: &str) -> Result<AuditHead> {
    let (seq, hash) = text
        .split_once(':')
        .context("a head is SEQ:HASH (64 hex digits)")?;
    Ok(AuditHead {
        seq: seq.parse().with_context(|| format!("seq {seq:?}"))?,
        hash: AuditHash::from_hex(hash).context("the hash is 64 hex digits")?,
    })
}

/// `mpc-wallet audit verify --config node.toml [--head SEQ:HASH]`.
pub async fn verify(config_path: &Path, head: Option<&str>) -> Result<()> {
    let config = NodeConfig::load(config_path)?;
    let expected = head.map(parse_head).transpose()?;
    let store = open_store(&config).await?;
    let started = std::time::Instant::now();
    let verified = store.verify_audit_log(expected).await;
    store.close().await;
    let verified =
        verified.with_context(|| format!("node {}'s audit log does NOT verify", config.id))?;
    let head = verified.head.map_or("none (empty log)".to_string(), |h| {
        format!("{}:{}", h.seq, h.hash)
    });
    println!(
        "node {}: audit log verified, {} entries in {:.0} ms; head {head}{}",
        config.id,
        verified.entries,
        started.elapsed().as_secs_f64() * 1e3,
        if expected.is_some() {
            " (contains the given head)"
        } else {
            "; a cut tail or a consistent rewrite shows only against a head kept elsewhere \
             (--head)"
        }
    );
    Ok(())
}

/// `mpc-wallet audit export --config node.toml [--since T]`: JSON lines, in chain order.
pub async fn export(config_path: &Path, since: Option<&str>) -> Result<()> {
    let config = NodeConfig::load(config_path)?;
    let since = since
        .map(mpc_node::audit::parse_since)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .unwrap_or(0);
    let store = open_store(&config).await?;
    let mut out = std::io::stdout().lock();
    let mut after = 0;
    let result = async {
        loop {
            let entries = store.audit_entries(since, after, PAGE).await?;
            let Some(last) = entries.last() else {
                return Ok(());
            };
            after = last.seq;
            for entry in &entries {
                serde_json::to_writer(&mut out, entry)?;
                out.write_all(b"\n")?;
            }
        }
    }
    .await;
    store.close().await;
    result
}
