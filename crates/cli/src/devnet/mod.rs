//! `mpc-wallet devnet`: a local cluster of node processes on loopback, each with its own
//! certificate, key-encryption key and SQLite store; then aux info, one ECDSA and one Taproot
//! wallet, and a transaction spending synthetic outputs of both, all through the nodes' APIs.
//! The tests also run it with one node per network namespace (`DevnetOptions::hosts` and
//! `launcher`).
//!
//! This module is the process supervisor (options, start, stop, signals, tokens, clients);
//! `scenario` is the main job it runs.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use mpc_node::config::{
    ApiConfig, AuxInfoConfig, ClusterConfig, Limits, NodeConfig, PeerEntry, PoolConfig, PoolLimits,
    PrimesConfig, StoreConfig, TlsConfig,
};
use mpc_transport::certs;
use mpc_types::{NodeId, PartyIndex};
use serde_json::Value;

use crate::client::ApiClient;

mod scenario;

pub use scenario::{
    run, synthetic_payment, verify_answer, verify_signed, wallet_key_from_api, Verified,
};

/// The fixture primes, embedded so the devnet works from any directory. Public test
/// material: the devnet is for development, never for real funds.
pub const FIXTURE_PRIMES: &[u8] = include_bytes!("../../../../fixtures/primes.json");

#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// The nodes that hold the wallets' shares: ids `1..=nodes`.
    pub nodes: u16,
    pub threshold: u16,
    /// Further nodes, ids after `nodes`: members of the cluster (certificates, configs,
    /// processes) that hold no share yet, for a resharing onto them (`mpc-wallet devnet
    /// --spare`).
    pub spare: u16,
    pub dir: PathBuf,
    /// The `mpc-wallet` binary to run nodes with.
    pub binary: PathBuf,
    pub limits: Limits,
    /// Every node's spending policy.
    pub policy: mpc_bitcoin::policy::Policy,
    /// The presignature pool (node 1 leads refill).
    pub pool: PoolConfig,
    /// PostgreSQL admin URL: each node gets its own new database there instead of SQLite.
    pub postgres_admin_url: Option<String>,
    /// Every node's cluster backend (static by default; etcd for the multi-machine tests).
    pub coordination: mpc_coordination::CoordinationConfig,
    /// Load the checked-in aux info into the stores instead of running the ceremony (for
    /// tests whose subject is not aux info; see `fixtures::import_aux_info`).
    pub aux_info_fixture: bool,
    /// A fresh cluster: no fixture primes; each node generates its own set in the background
    /// and the refill leader starts aux info by itself once every node has one (`[aux_info]
    /// auto`). Off: the fixture primes, and aux info started through the API.
    pub generate_primes: bool,
    /// With `generate_primes`: the threads each node generates its primes on (`[primes]
    /// threads`; `None`: its cores).
    pub prime_threads: Option<usize>,
    /// Each node's address (entry `id - 1`), used for its QUIC and API listen addresses and
    /// as its certificate's IP SAN, on fixed ports ([`FIXED_QUIC_PORT_BASE`] + id and
    /// [`FIXED_API_PORT_BASE`] + id): the nodes then live in other network namespaces or
    /// hosts, whose free ports cannot be probed from here. `None`: loopback, free ports.
    pub hosts: Option<Vec<IpAddr>>,
    /// A command prefix per node (entry `id - 1`) that the node binary is run under, e.g.
    /// `["ip", "netns", "exec", "ns1"]`. The prefix must exec the binary rather than fork it,
    /// so that the process id (and so `signal`, `stop`, `Drop`) is the node's. `None`: the
    /// binary is run directly.
    pub launcher: Option<Vec<Vec<String>>>,
    /// Every node's API settings (rate limits, say); `listen` and `jwt_secret_file` are set
    /// per node.
    pub api: ApiConfig,
}

/// With [`DevnetOptions::hosts`], node `id` listens for QUIC on this port + `id`.
pub const FIXED_QUIC_PORT_BASE: u16 = 7400;
/// With [`DevnetOptions::hosts`], node `id` serves its API on this port + `id`.
pub const FIXED_API_PORT_BASE: u16 = 8400;

impl DevnetOptions {
    /// The devnet's defaults: up to 50 presignatures per (path, signer set) of registered
    /// outputs, so a burst of that many ECDSA signatures can be served once it has filled
    /// (minutes, in the background).
    pub fn new(nodes: u16, threshold: u16, dir: PathBuf, binary: PathBuf) -> Self {
        Self {
            nodes,
            threshold,
            spare: 0,
            dir,
            binary,
            limits: Limits::default(),
            policy: Default::default(),
            pool: PoolConfig {
                defaults: PoolLimits {
                    target: 50,
                    low_water: 10,
                    max: 60,
                    batch: 10,
                    ..PoolLimits::default()
                },
                ..PoolConfig::default()
            },
            postgres_admin_url: None,
            coordination: Default::default(),
            aux_info_fixture: false,
            generate_primes: false,
            prime_threads: None,
            hosts: None,
            launcher: None,
            api: ApiConfig::default(),
        }
    }

    /// The 5-process signing tests' cluster (3-of-5): signing timeouts short enough that a
    /// killed signer fails an attempt quickly, a short hold for early messages, and no
    /// background pool, so each test knows which inputs use a presignature.
    pub fn for_signing_tests(dir: PathBuf, binary: PathBuf) -> Self {
        let mut options = Self::new(5, 3, dir, binary);
        options.limits = Limits {
            full_sign_timeout_ms: 40_000,
            sign_timeout_ms: 10_000,
            session_hold_ms: 1_000,
            ..Limits::default()
        };
        options.pool.enabled = false;
        options
    }
}

/// One node process.
pub struct NodeProcess {
    pub id: NodeId,
    pub api: SocketAddr,
    pub quic: SocketAddr,
    pub config: PathBuf,
    child: Option<Child>,
}

/// A running local cluster. Dropping it stops every node (SIGKILL).
pub struct Devnet {
    pub options: DevnetOptions,
    pub nodes: Vec<NodeProcess>,
    jwt: mpc_api::Jwt,
}

fn free_port(udp: bool) -> Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    })
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

impl Devnet {
    /// Writes certificates, keys, the JWT secret and every node's config into `dir` (and
    /// creates the nodes' PostgreSQL databases if asked to).
    pub async fn create_with_databases(options: DevnetOptions) -> Result<Self> {
        let devnet = Self::create(options)?;
        if let Some(admin) = devnet.options.postgres_admin_url.clone() {
            let tag = uuid::Uuid::new_v4().simple().to_string();
            for node in &devnet.nodes {
                let url = mpc_store::create_postgres_database(
                    &admin,
                    &format!("mpc_devnet_{tag}_node{}", node.id),
                )
                .await?;
                let mut config = NodeConfig::load(&node.config)?;
                config.store.url = Some(url);
                std::fs::write(&node.config, toml::to_string(&config)?)?;
            }
        }
        if devnet.options.aux_info_fixture {
            crate::fixtures::import_aux_info(&devnet).await?;
        }
        Ok(devnet)
    }

    /// Writes certificates, keys, the JWT secret and every node's config into `dir`.
    pub fn create(options: DevnetOptions) -> Result<Self> {
        let dir = &options.dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        mpc_protocols::ecdsa::check_parameters(
            PartyIndex::new(0),
            options.nodes,
            options.threshold,
        )?;
        if options.spare > 0 && options.generate_primes {
            bail!(
                "spare nodes with generated primes: the automatic aux info would cover every \
                 node, spare ones too, and the wallets' node set would have none"
            );
        }
        // Every process of the cluster, spare nodes included.
        let n = options
            .nodes
            .checked_add(options.spare)
            .context("too many nodes")?;
        let primes: mpc_protocols::ecdsa::PrimesFile = serde_json::from_slice(FIXTURE_PRIMES)?;
        if primes.primes.len() < usize::from(n) {
            bail!(
                "the fixture has {} prime sets; a devnet of {n} nodes needs more \
                 (`mpc-wallet primes generate`)",
                primes.primes.len()
            );
        }
        let primes_file = dir.join("fixture-primes.json");
        std::fs::write(&primes_file, FIXTURE_PRIMES)?;
        for (what, len) in [
            ("hosts", options.hosts.as_ref().map(Vec::len)),
            ("launcher", options.launcher.as_ref().map(Vec::len)),
        ] {
            if len.is_some_and(|len| len != usize::from(n)) {
                bail!("{what} has {len:?} entries for {n} nodes");
            }
        }
        let host = |id: NodeId| match &options.hosts {
            Some(hosts) => hosts[usize::from(id.get() - 1)],
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let cert_dir = dir.join("certs");
        certs::init_cluster(&cert_dir, n, |id| vec![host(id)], 30)?;
        let jwt_secret = dir.join("jwt-secret");
        certs::write_private(&jwt_secret, hex::encode(random_bytes::<32>()).as_bytes())?;

        let mut peers = Vec::new();
        for id in (1..=n).filter_map(NodeId::new) {
            let (quic, api) = if options.hosts.is_some() {
                (
                    FIXED_QUIC_PORT_BASE + id.get(),
                    FIXED_API_PORT_BASE + id.get(),
                )
            } else {
                (free_port(true)?, free_port(false)?)
            };
            peers.push(PeerEntry {
                id,
                address: SocketAddr::new(host(id), quic),
                api: Some(SocketAddr::new(host(id), api)),
            });
        }
        let mut nodes = Vec::new();
        for peer in &peers {
            let id = peer.id;
            let node_dir = dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir)?;
            let key_file = node_dir.join("kek.key");
            mpc_store::generate_key_file(&key_file)?;
            let config = NodeConfig {
                id,
                data_dir: node_dir.clone(),
                tls: TlsConfig {
                    ca: certs::ca_cert_path(&cert_dir),
                    certificate: certs::node_cert_path(&cert_dir, id),
                    private_key: certs::node_key_path(&cert_dir, id),
                },
                store: StoreConfig {
                    url: None,
                    key_file: Some(key_file),
                    rollback_guard_file: None,
                },
                cluster: ClusterConfig {
                    threshold: options.threshold,
                    network: mpc_bitcoin::Network::Regtest,
                    nodes: peers.clone(),
                },
                api: ApiConfig {
                    listen: peer.api,
                    jwt_secret_file: Some(jwt_secret.clone()),
                    ..options.api.clone()
                },
                limits: options.limits.clone(),
                primes: if options.generate_primes {
                    PrimesConfig {
                        threads: options.prime_threads,
                        ..PrimesConfig::default()
                    }
                } else {
                    // Fixture primes; no background generation.
                    PrimesConfig {
                        pool_target: 0,
                        import_file: Some(primes_file.clone()),
                        import_index: Some(usize::from(id.get() - 1)),
                        threads: None,
                    }
                },
                aux_info: AuxInfoConfig {
                    auto: options.generate_primes,
                },
                policy: options.policy.clone(),
                pool: options.pool.clone(),
                coordination: options.coordination.clone(),
                webhooks: Vec::new(),
                refresh: Default::default(),
            };
            let path = node_dir.join("node.toml");
            std::fs::write(&path, toml::to_string(&config)?)?;
            nodes.push(NodeProcess {
                id,
                api: peer.api.context("api address")?,
                quic: peer.address,
                config: path,
                child: None,
            });
        }
        let jwt = mpc_api::Jwt::hs256(
            &std::fs::read(&jwt_secret)?,
            &ApiConfig::default().jwt_issuer,
            &ApiConfig::default().jwt_audience,
        )?;
        Ok(Self {
            options,
            nodes,
            jwt,
        })
    }

    pub fn node_dir(&self, id: u16) -> PathBuf {
        self.options.dir.join(format!("node-{id}"))
    }

    pub fn start(&mut self, id: u16) -> Result<()> {
        self.start_with_env(id, &[])
    }

    /// Starts node `id` with extra environment variables (e.g. a crash point).
    pub fn start_with_env(&mut self, id: u16, env: &[(&str, &str)]) -> Result<()> {
        let binary = self.options.binary.clone();
        let prefix = usize::from(id)
            .checked_sub(1)
            .and_then(|index| self.options.launcher.as_ref()?.get(index).cloned())
            .unwrap_or_default();
        let node = self.node_mut(id)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.config.with_file_name("node.log"))?;
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .arg("node")
            .arg("--config")
            .arg(&node.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting node {id}'s process"))?;
        node.child = Some(child);
        Ok(())
    }

    /// Starts every node, spare ones included.
    pub fn start_all(&mut self) -> Result<()> {
        for id in self.ids() {
            self.start(id)?;
        }
        Ok(())
    }

    /// Every node's id, spare ones included.
    fn ids(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.id.get()).collect()
    }

    /// The nodes that hold the wallets' shares (ids `1..=nodes`): the node set of the
    /// devnet's aux info and wallets. The others are spare.
    pub fn holders(&self) -> Vec<NodeId> {
        (1..=self.options.nodes).filter_map(NodeId::new).collect()
    }

    fn node_mut(&mut self, id: u16) -> Result<&mut NodeProcess> {
        self.nodes
            .iter_mut()
            .find(|n| n.id.get() == id)
            .with_context(|| format!("no node {id}"))
    }

    pub fn pid(&self, id: u16) -> Option<u32> {
        self.nodes
            .iter()
            .find(|n| n.id.get() == id)
            .and_then(|n| n.child.as_ref().map(Child::id))
    }

    /// Sends `signal` to node `id` (SIGKILL to crash it, SIGTERM to stop it gracefully).
    pub fn signal(&mut self, id: u16, signal: nix::sys::signal::Signal) -> Result<()> {
        let pid = self
            .pid(id)
            .with_context(|| format!("node {id} is not running"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// Stops node `id` with `signal` and waits for the process to exit.
    pub fn stop(&mut self, id: u16, signal: nix::sys::signal::Signal) -> Result<()> {
        self.signal(id, signal)?;
        if let Some(mut child) = self.node_mut(id)?.child.take() {
            child.wait()?;
        }
        Ok(())
    }

    /// Whether node `id`'s process is still running (reaps it if it exited).
    pub fn is_running(&mut self, id: u16) -> Result<bool> {
        let node = self.node_mut(id)?;
        let exited = match node.child.as_mut() {
            None => return Ok(false),
            Some(child) => child.try_wait()?.is_some(),
        };
        if exited {
            node.child = None;
        }
        Ok(!exited)
    }

    pub fn stop_all(&mut self) -> Result<()> {
        for id in self.ids() {
            if self.pid(id).is_some() {
                self.stop(id, nix::sys::signal::Signal::SIGTERM)?;
            }
        }
        Ok(())
    }

    pub fn token(&self, role: mpc_api::Role) -> Result<String> {
        Ok(self
            .jwt
            .issue("devnet", role, Duration::from_secs(24 * 3600))?)
    }

    pub fn jwt(&self) -> &mpc_api::Jwt {
        &self.jwt
    }

    pub fn client(&self, id: u16, role: mpc_api::Role) -> Result<ApiClient> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.id.get() == id)
            .context("no such node")?;
        Ok(ApiClient::new(
            format!("http://{}", node.api),
            Some(self.token(role)?),
        ))
    }

    /// Presignature pool levels as node 1 reports them (`GET /api/v1/presignatures/stats`).
    pub async fn pool_levels(&self) -> Result<Value> {
        let viewer = self.client(1, mpc_api::Role::Viewer)?;
        Ok(viewer.presignature_stats().await?)
    }

    /// One line per ECDSA wallet: ready presignatures against the target, and usage.
    pub fn pool_summary(stats: &Value) -> Vec<String> {
        let wallets = stats["wallets"].as_array().cloned().unwrap_or_default();
        wallets
            .iter()
            .map(|w| {
                format!(
                    "pool {}: {} ready (target {} per signer set, {} sets), {} generated, {} used",
                    w["wallet_id"].as_str().unwrap_or("?"),
                    w["ready_total"],
                    w["target"],
                    w["levels"].as_array().map_or(0, Vec::len),
                    w["generated_total"],
                    w["used_total"],
                )
            })
            .collect()
    }

    /// Prints the pool levels every few seconds until `stop` resolves (`--keep-running`).
    pub async fn watch_pool(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => match self.pool_levels().await {
                    Ok(stats) => Self::pool_summary(&stats).iter().for_each(|l| eprintln!("{l}")),
                    Err(e) => eprintln!("pool levels unavailable: {e:#}"),
                },
            }
        }
    }

    /// Writes `env.sh` beside the nodes: node 1's API URL and an admin token for the CLI
    /// and the README's curl examples (`source devnet/env.sh`).
    pub fn write_env_file(&self) -> Result<PathBuf> {
        let path = self.options.dir.join("env.sh");
        let first = self.nodes.first().context("the devnet has no node")?;
        let text = format!(
            "# mpc-wallet devnet: `source` this file (tokens expire; re-run `mpc-wallet token issue`).\n\
             # The web console: http://{api}/console (sign in with one of the tokens below).\n\
             export MPC_WALLET_URL=http://{api}\n\
             export MPC_WALLET_TOKEN={}\n\
             export MPC_WALLET_SIGNER_TOKEN={}\n\
             export MPC_WALLET_VIEWER_TOKEN={}\n\
             export JWT_SECRET_FILE={}\n",
            self.token(mpc_api::Role::Admin)?,
            self.token(mpc_api::Role::Signer)?,
            self.token(mpc_api::Role::Viewer)?,
            std::fs::canonicalize(self.options.dir.join("jwt-secret"))?.display(),
            api = first.api,
        );
        certs::write_private(&path, text.as_bytes())?;
        Ok(path)
    }

    /// Waits until every node holds the cluster's aux info (cluster health says so).
    pub async fn wait_aux_info(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut held = 0;
            for node in &self.nodes {
                let health = self
                    .client(node.id.get(), mpc_api::Role::Admin)?
                    .cluster_health()
                    .await?;
                held += usize::from(health["aux_info"].as_bool() == Some(true));
            }
            if held == self.nodes.len() {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "aux info on {held} of {} nodes after {timeout:?}",
                    self.nodes.len()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Creates the devnet, starts every node and waits until all of them see each other.
    pub async fn launch(options: DevnetOptions) -> Result<Self> {
        let mut devnet = Self::create_with_databases(options).await?;
        devnet.start_all()?;
        let ids = devnet.ids();
        devnet
            .wait_live(&ids, ids.len(), Duration::from_secs(60))
            .await?;
        Ok(devnet)
    }

    /// Waits until every running node answers and sees `live` nodes live.
    pub async fn wait_live(&self, ids: &[u16], live: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for &id in ids {
            let client = self.client(id, mpc_api::Role::Viewer)?;
            loop {
                let health = client.cluster_health().await;
                match health {
                    Ok(h) if h["live"].as_u64() >= Some(live as u64) => break,
                    _ if Instant::now() > deadline => {
                        bail!("node {id} did not see {live} live nodes within {timeout:?}")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        Ok(())
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
