//! `mpc-wallet node --config node.toml`: one cluster node with its REST API, until SIGTERM or
//! Ctrl-C (graceful shutdown).

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result};
use mpc_node::{Node, NodeConfig};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

/// The HS256 secret: `JWT_SECRET`, else the configured file.
fn jwt_secret(config: &NodeConfig) -> Result<Vec<u8>> {
    if let Ok(s) = std::env::var("JWT_SECRET") {
        return Ok(s.into_bytes());
    }
    let path = config
        .api
        .jwt_secret_file
        .as_ref()
        .context("the API needs JWT_SECRET or api.jwt_secret_file")?;
    let secret = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(secret.trim_ascii().to_vec())
}

pub async fn run(config_path: &Path) -> Result<()> {
    let config = NodeConfig::load(config_path)?;
    let api = config.api.listen;
    let jwt = match api {
        Some(_) => Some(Arc::new(mpc_api::jwt_from_config(
            &jwt_secret(&config)?,
            &config.api,
        )?)),
        None => None,
    };
    let api_config = config.api.clone();
    let node = Node::start(config).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = match (api, jwt) {
        (Some(addr), Some(jwt)) => {
            let state = mpc_api::AppState::new(node.clone(), jwt, &api_config)?;
            let mut rx = stop_rx.clone();
            info!(node = node.id().get(), %addr, "API listening");
            Some(tokio::spawn(mpc_api::serve(addr, state, async move {
                let _ = rx.changed().await;
            })))
        }
        _ => None,
    };
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("interrupted: shutting down"),
    }
    let _ = stop_tx.send(true);
    if let Some(server) = server {
        let _ = server.await;
    }
    node.shutdown().await;
    Ok(())
}
