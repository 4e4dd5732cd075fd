//! `mpc-wallet cluster status`: every node's liveness, heartbeat and version.

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use super::{output, s, table, Conn};

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every node's liveness, last heartbeat and version, as this node sees them.
    Status,
}

/// `cluster status`
pub async fn cluster(conn: &Conn, command: &ClusterCommand) -> Result<()> {
    let api = conn.client()?;
    match command {
        ClusterCommand::Status => {
            let health: Value = api.get("/api/v1/cluster/health").await?;
            output(conn, &health, |h| {
                println!(
                    "node {} ({} {}), threshold {}, {} live",
                    s(&h["node"]),
                    s(&h["network"]),
                    s(&h["version"]),
                    s(&h["threshold"]),
                    s(&h["live"])
                );
                let now = mpc_node::now_ms();
                let rows: Vec<Vec<String>> = h["nodes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|n| {
                                vec![
                                    s(&n["node"]),
                                    if n["live"] == true { "live" } else { "DOWN" }.into(),
                                    n["last_heartbeat_ms"]
                                        .as_i64()
                                        .map(|t| format!("{} ms ago", (now - t).max(0)))
                                        .unwrap_or_else(|| "never".into()),
                                    s(&n["version"]),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{}",
                    table(&["node", "state", "last heartbeat", "version"], &rows)
                );
            })
        }
    }
}
