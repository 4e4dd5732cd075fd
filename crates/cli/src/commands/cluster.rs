//! `mpc-wallet cluster status`: every node's liveness, heartbeat and version; `cluster
//! incidents` and `cluster release`: blame this node recorded, and an operator's release;
//! `cluster verify`: evidence any node recorded, checked against this node's cluster CA;
//! `cluster aux-info`: the aux-info ceremony for a node set.

use anyhow::Result;
use clap::Subcommand;

use super::{output, s, table, Conn};
use crate::progress::spinner;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every node's liveness, last heartbeat and version, as this node sees them.
    Status,
    /// Incidents this node recorded as coordinator, newest first, and the nodes it keeps out
    /// of signer sets for them.
    Incidents {
        /// Only incidents against this node.
        #[arg(long)]
        node: Option<u16>,
        /// How many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Releases a node kept out of signer sets: its incidents stop counting (admin token).
    Release {
        /// The node to release.
        node: u16,
    },
    /// Runs aux info (Paillier keys for ECDSA, minutes) for a node set: the whole cluster, or
    /// the nodes an ECDSA wallet will be created on or reshared to (admin token); waits for
    /// the ceremony. Each node of the set spends a set of its safe primes.
    #[command(name = "aux-info")]
    AuxInfo {
        /// Node ids, comma-separated (default: every node).
        #[arg(long, value_delimiter = ',')]
        node_set: Vec<mpc_types::NodeId>,
    },
    /// Checks evidence any node recorded (hex, an incident's `evidence` in `cluster incidents
    /// --json`) against this node's cluster CA, trusting nothing else. Exits non-zero if it
    /// does not verify.
    Verify {
        /// The evidence (hex).
        evidence: String,
    },
}

/// `cluster status`
pub async fn cluster(conn: &Conn, command: &ClusterCommand) -> Result<()> {
    let api = conn.client()?;
    match command {
        ClusterCommand::Status => {
            let health = api.cluster_health().await?;
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
        ClusterCommand::Incidents { node, limit } => {
            let list = serde_json::to_value(api.incidents(*node, *limit).await?)?;
            output(conn, &list, |l| {
                for u in l["unreleased"].as_array().into_iter().flatten() {
                    println!(
                        "node {}: {} unreleased{}",
                        s(&u["node"]),
                        s(&u["count"]),
                        if u["excluded"] == true {
                            ", kept out of signer sets"
                        } else {
                            ""
                        }
                    );
                }
                let rows: Vec<Vec<String>> = l["incidents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| {
                        vec![
                            s(&i["at_ms"]),
                            s(&i["accused"]),
                            s(&i["reporter"]),
                            s(&i["kind"]),
                            s(&i["session"]),
                            if i["released_at_ms"].is_null() {
                                "no"
                            } else {
                                "yes"
                            }
                            .into(),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    table(
                        &["at (ms)", "accused", "reporter", "kind", "session", "released"],
                        &rows
                    )
                );
            })
        }
        ClusterCommand::AuxInfo { node_set } => {
            let bar = (!conn.json).then(|| spinner("aux info (minutes)"));
            let node_set = (!node_set.is_empty()).then_some(node_set.as_slice());
            let result = api.aux_info(node_set, bar.as_ref()).await;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            output(conn, &result?, |r| {
                println!(
                    "aux info for nodes {} (public digest {}) in {} ms",
                    r["node_set"],
                    s(&r["public_digest"]),
                    s(&r["duration_ms"])
                )
            })
        }
        ClusterCommand::Verify { evidence } => {
            let checked = serde_json::to_value(api.verify_evidence(evidence).await?)?;
            output(conn, &checked, |c| {
                if c["valid"] == true {
                    println!(
                        "verified by node {}: node {} sent {} signed message(s); fault {} ({}); \
                         certificate {}",
                        s(&c["checked_by"]),
                        s(&c["accused"]),
                        c["messages"].as_array().map_or(0, Vec::len),
                        s(&c["fault"]),
                        if c["fault_rechecked"] == true {
                            "re-checked from the messages"
                        } else {
                            "not re-checkable from the messages: inspect them"
                        },
                        s(&c["certificate_fingerprint"])
                    )
                } else {
                    println!(
                        "NOT verified by node {}: {}",
                        s(&c["checked_by"]),
                        s(&c["reason"])
                    )
                }
            })?;
            if checked["valid"] != true {
                anyhow::bail!("the evidence does not verify");
            }
            Ok(())
        }
        ClusterCommand::Release { node } => {
            let released = serde_json::to_value(api.release_incidents(*node).await?)?;
            output(conn, &released, |r| {
                println!(
                    "node {}: {} incident(s) released",
                    s(&r["node"]),
                    s(&r["released"])
                )
            })
        }
    }
}
