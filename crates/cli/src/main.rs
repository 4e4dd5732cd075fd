//! `mpc-wallet`: the command-line entry point.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use mpc_wallet::{
    audit, backup,
    commands::{self, Conn},
    demo, devnet, fixtures, node_cmd, report,
};

#[derive(Parser)]
#[command(
    name = "mpc-wallet",
    version,
    about = "Threshold-signature custody for Bitcoin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Both schemes in one process: an ECDSA and a Taproot wallet sign a regtest transaction
    /// spending synthetic outputs of both; verified with bitcoinconsensus.
    Demo {
        /// Signatures needed (t).
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Key holders (n).
        #[arg(long, default_value_t = 5)]
        parties: u16,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A local cluster of node processes (QUIC + mTLS, one SQLite store each): aux info, an
    /// ECDSA and a Taproot wallet, and a transaction signed through the cluster.
    Devnet {
        /// The nodes that hold the wallets' shares (ids 1 to NODES).
        #[arg(long, default_value_t = 5)]
        nodes: u16,
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Further nodes that join the cluster without a share (ids after NODES), to reshare
        /// onto: `mpc-wallet wallet reshare` (with --keep-running). Fixture primes hold 9
        /// sets, so NODES + SPARE is at most 9.
        #[arg(long, default_value_t = 0, conflicts_with = "generate_primes")]
        spare: u16,
        /// Directory for certificates, configs, stores and logs (cleared first).
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        /// Leave the nodes running (for the API and CLI) until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
        /// A fresh cluster: every node generates its safe primes (minutes) instead of
        /// importing the fixture's, and aux info starts by itself once all have them; the
        /// report gives the time from the first start to the first ECDSA wallet.
        #[arg(long)]
        generate_primes: bool,
        /// With --generate-primes: threads per node for its primes (default: its cores).
        #[arg(long, requires = "generate_primes", value_parser = clap::value_parser!(u16).range(1..))]
        prime_threads: Option<u16>,
        #[arg(long)]
        json: bool,
    },
    /// Run one node: `mpc-wallet node --config node.toml`.
    Node {
        #[arg(long)]
        config: PathBuf,
    },
    /// Back up this node's store to a file: secrets stay sealed under the node's
    /// key-encryption key (not in the file); presignatures are never included.
    Backup {
        #[arg(long)]
        config: PathBuf,
        /// The backup file to create (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore this node's store from its own backup (stop the node first). Starts a new
    /// presignature epoch: the presignature pool is empty afterwards.
    Restore {
        #[arg(long)]
        config: PathBuf,
        /// A file made by `mpc-wallet backup` for this node.
        #[arg(long)]
        from: PathBuf,
        /// Replace a store that already holds data.
        #[arg(long)]
        force: bool,
    },
    /// Cluster certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Safe primes for aux info (Paillier moduli).
    #[command(subcommand)]
    Primes(PrimesCommand),
    /// Aux info for a node set, run in one process (test fixtures).
    #[command(subcommand, name = "aux-info")]
    AuxInfo(AuxInfoCommand),
    /// Wallets through a node's API: create (keygen), list, show, address, descriptor.
    Wallet {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: commands::WalletCommand,
    },
    /// The UTXO registry: register a wallet's funding outputs, list them.
    Utxo {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: commands::UtxoCommand,
    },
    /// Sign a PSBT through the cluster.
    Sign {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        args: commands::SignArgs,
    },
    /// Pay from a wallet's registered outputs (coin selection, change, signing).
    Send {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        args: commands::SendArgs,
    },
    /// The presignature pool.
    Pool {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: commands::PoolCommand,
    },
    /// The cluster as a node sees it.
    Cluster {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: commands::ClusterCommand,
    },
    /// Requests that wait for human approvals.
    Requests {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: commands::RequestsCommand,
    },
    /// Approve a pending request with an approver's key (signs the request's transaction,
    /// wallets, id and expiry, built here from its PSBT).
    Approve {
        #[command(flatten)]
        conn: Conn,
        request: uuid::Uuid,
        /// The approver's secret key file (`mpc-wallet approver keygen`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Reject a pending request with an approver's key: one rejection ends it.
    Reject {
        #[command(flatten)]
        conn: Conn,
        request: uuid::Uuid,
        #[arg(long)]
        key: PathBuf,
    },
    /// Approvers' Ed25519 keys (offline).
    #[command(subcommand)]
    Approver(commands::ApproverCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(commands::TokenCommand),
    /// This node's audit log: check its hash chain, or print it as JSON lines.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the chain from its first entry; exits non-zero naming the first entry edited,
    /// missing or out of order. A cut tail or a consistent rewrite shows only against a head
    /// kept elsewhere (`--head`).
    Verify {
        #[arg(long)]
        config: PathBuf,
        /// A head recorded earlier (`SEQ:HASH`, from `verify` or an export's last line): the
        /// log must still contain it.
        #[arg(long)]
        head: Option<String>,
    },
    /// Print the entries as JSON lines, in chain order.
    Export {
        #[arg(long)]
        config: PathBuf,
        /// Only entries at or after this time: RFC 3339 or milliseconds since the Unix epoch.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create a cluster CA and one certificate per node (`node-<id>`) in `--out`.
    Init {
        #[arg(long, default_value_t = 5)]
        nodes: u16,
        #[arg(long)]
        out: PathBuf,
        /// IP address of each node, in node order (default: 127.0.0.1 for all).
        #[arg(long, value_delimiter = ',')]
        ips: Vec<std::net::IpAddr>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

#[derive(Subcommand)]
enum AuxInfoCommand {
    /// Run aux-info generation for `--parties` parties in this process, from a primes file,
    /// and write every party's aux info (secret: test fixtures only).
    Generate {
        /// Primes file from `mpc-wallet primes generate`.
        #[arg(long)]
        primes: PathBuf,
        /// Number of parties (uses the first N prime sets).
        #[arg(long)]
        parties: usize,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum PrimesCommand {
    /// Generate sets of four 1536-bit safe primes (one set per node) into a JSON file.
    Generate {
        /// How many sets (nodes) to generate.
        #[arg(long, default_value_t = 5)]
        count: usize,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
}

fn init_logs() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("MPC_WALLET_LOG_FORMAT").as_deref() == Ok("json") {
        fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        fmt()
            .with_ansi(ansi)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
}

fn print(report: &report::Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        report::print_human(report);
    }
    Ok(())
}

pub(crate) fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            threshold,
            parties,
            json,
        } => print(&demo::run(threshold, parties)?, json),
        Command::Devnet {
            nodes,
            threshold,
            spare,
            dir,
            keep_running,
            generate_primes,
            prime_threads,
            json,
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let mut options = devnet::DevnetOptions::new(
                    nodes,
                    threshold,
                    dir,
                    std::env::current_exe().context("locating the mpc-wallet binary")?,
                );
                options.spare = spare;
                options.generate_primes = generate_primes;
                options.prime_threads = prime_threads.map(usize::from);
                let (report, mut devnet) = devnet::run(options).await?;
                print(&report, json)?;
                if keep_running {
                    eprintln!(
                        "devnet running; `source {}/env.sh` for the CLI and curl; Ctrl-C to stop",
                        devnet.options.dir.display()
                    );
                    devnet
                        .watch_pool(async {
                            let _ = tokio::signal::ctrl_c().await;
                        })
                        .await;
                }
                devnet.stop_all()
            })
        }
        Command::Node { config } => {
            init_logs();
            let runtime = tokio::runtime::Runtime::new()?;
            let result = runtime.block_on(node_cmd::run(&config));
            // The node has stopped; a set of safe primes may still be generating on blocking
            // threads (minutes), and dropping the runtime would wait for it. An unfinished set
            // is lost anyway.
            runtime.shutdown_background();
            result
        }
        Command::Backup { config, out } => {
            init_logs();
            tokio::runtime::Runtime::new()?.block_on(backup::backup(&config, &out))
        }
        Command::Restore {
            config,
            from,
            force,
        } => {
            init_logs();
            tokio::runtime::Runtime::new()?.block_on(backup::restore(&config, &from, force))
        }
        Command::Audit(AuditCommand::Verify { config, head }) => {
            tokio::runtime::Runtime::new()?.block_on(audit::verify(&config, head.as_deref()))
        }
        Command::Audit(AuditCommand::Export { config, since }) => {
            tokio::runtime::Runtime::new()?.block_on(audit::export(&config, since.as_deref()))
        }
        Command::Certs(CertsCommand::Init {
            nodes,
            out,
            ips,
            days,
        }) => {
            let ip_of = |id: mpc_types::NodeId| {
                vec![ips
                    .get(usize::from(id.get()) - 1)
                    .copied()
                    .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))]
            };
            mpc_transport::certs::init_cluster(&out, nodes, ip_of, days)?;
            eprintln!(
                "wrote a cluster CA and {nodes} node certificates to {} (keep ca-key.pem offline)",
                out.display()
            );
            Ok(())
        }
        Command::Primes(PrimesCommand::Generate {
            count,
            out,
            threads,
        }) => fixtures::generate_primes(count, &out, threads),
        Command::AuxInfo(AuxInfoCommand::Generate {
            primes,
            parties,
            out,
        }) => fixtures::generate_aux_info(&primes, parties, &out),
        Command::Wallet { conn, command } => {
            commands::run_api(conn.json, commands::wallet(&conn, &command))
        }
        Command::Utxo { conn, command } => {
            commands::run_api(conn.json, commands::utxo(&conn, &command))
        }
        Command::Sign { conn, args } => commands::run_api(conn.json, commands::sign(&conn, &args)),
        Command::Send { conn, args } => commands::run_api(conn.json, commands::send(&conn, &args)),
        Command::Pool { conn, command } => {
            commands::run_api(conn.json, commands::pool(&conn, &command))
        }
        Command::Cluster { conn, command } => {
            commands::run_api(conn.json, commands::cluster(&conn, &command))
        }
        Command::Token(command) => commands::token(&command),
        Command::Requests { conn, command } => {
            commands::run_api(conn.json, commands::requests(&conn, &command))
        }
        Command::Approve { conn, request, key } => commands::run_api(
            conn.json,
            commands::decide(
                &conn,
                request,
                &key,
                mpc_bitcoin::approval::Decision::Approve,
            ),
        ),
        Command::Reject { conn, request, key } => commands::run_api(
            conn.json,
            commands::decide(
                &conn,
                request,
                &key,
                mpc_bitcoin::approval::Decision::Reject,
            ),
        ),
        Command::Approver(command) => commands::approver(&command),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "mpc-wallet",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}
