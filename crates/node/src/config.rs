//! Node configuration: one TOML file per node (`mpc-wallet node --config node.toml`), with
//! environment overrides for secrets and deployment-specific values.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    providers::{Env, Format, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

use crate::NodeError;
use mpc_transport::{NodeId, RouterLimits};
use mpc_types::{Network, WalletId};

/// Everything one node needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id in `cluster.nodes`.
    pub id: NodeId,
    /// Where the node keeps its files (the SQLite store by default).
    pub data_dir: PathBuf,
    pub tls: TlsConfig,
    pub store: StoreConfig,
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub primes: PrimesConfig,
    #[serde(default)]
    pub aux_info: AuxInfoConfig,
    /// This node's own spending policy, checked before it signs anything.
    #[serde(default)]
    pub policy: mpc_bitcoin::policy::Policy,
    #[serde(default)]
    pub pool: PoolConfig,
    /// The cluster backend (`[coordination]`): `backend = "static"` (the default, one
    /// machine: in-process ceremony lock, `pool.leader` drives refill) or `"etcd"` (the
    /// ceremony lock and the refill leader's lease live in etcd, and ceremony proposals carry
    /// the lock's fencing token; `endpoints`, `prefix`, `lease_ttl_ms`; the `ETCD_ENDPOINTS`
    /// environment variable overrides `endpoints`).
    #[serde(default)]
    pub coordination: mpc_coordination::CoordinationConfig,
    /// Webhooks (`[[webhooks]]`): URLs POSTed to on pending, signed, refused and incident
    /// events, signed with HMAC (`webhooks`).
    #[serde(default)]
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// Scheduled key refresh (`[refresh] every_secs`); off by default.
    #[serde(default)]
    pub refresh: RefreshConfig,
}

/// Pool sizes for one wallet. Presignatures are kept only for paths that hold spendable
/// outputs: `per_output` for each of them, per signer set, up to `target` per (path, signer
/// set) and `max_per_wallet` in all.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolLimits {
    /// Ready presignatures per spendable output at a path, per signer set.
    pub per_output: u32,
    /// At most this many ready per (path, signer set), whatever the outputs there.
    pub target: u32,
    /// Refill of a (path, signer set) starts below this level (or below what its outputs
    /// want, if fewer) and runs until they have what they want.
    pub low_water: u32,
    /// Never more than this many ready per (path, signer set).
    pub max: u32,
    /// Never more than this many ready for the whole wallet.
    pub max_per_wallet: u32,
    /// Presignatures per generation run.
    pub batch: u32,
    /// Presignatures are destroyed unused after this long.
    pub ttl_ms: u64,
}

impl PoolLimits {
    /// Ready presignatures wanted per (path, signer set) for `outputs` outputs there.
    pub fn wanted(&self, outputs: u64) -> u64 {
        outputs
            .saturating_mul(u64::from(self.per_output))
            .min(u64::from(self.target))
            .min(u64::from(self.max))
    }
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            per_output: 1,
            target: 100,
            low_water: 20,
            max: 150,
            max_per_wallet: 1_000,
            batch: 20,
            ttl_ms: 3_600_000,
        }
    }
}

/// Scheduled key refresh (`[refresh]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    /// Refresh every FROST wallet whose shares are older than this many seconds (0: never;
    /// on demand only). Driven by the pool's refill leader, so one node starts each refresh.
    pub every_secs: u64,
    /// The same for ECDSA wallets, apart and off by default: each ECDSA refresh also makes new
    /// aux info for the node set (tens of seconds of CPU on every node, and one set of safe
    /// primes from each node's pool, which takes minutes to replace).
    pub ecdsa_every_secs: u64,
}

/// The presignature pool service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub enabled: bool,
    /// The node that drives refill (static cluster backend); default: the lowest node id.
    pub leader: Option<NodeId>,
    /// Limits for every wallet without an override (`[pool.defaults]`).
    pub defaults: PoolLimits,
    /// Per-wallet overrides of the limits, by wallet id (`[pool.wallets.<id>]`).
    pub wallets: std::collections::HashMap<WalletId, PoolLimits>,
    /// Generation runs the leader drives at once (each uses every core for seconds).
    pub concurrency: usize,
    /// How often the leader looks at pool levels.
    pub interval_ms: u64,
    /// Signer sets kept per path (sets that include the leader first).
    pub signer_sets_per_path: usize,
    /// Change paths of transactions signed through `psbt/sign` remembered per wallet (their
    /// outputs are not in the registry, but hold funds).
    pub max_paths_per_wallet: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            leader: None,
            defaults: PoolLimits::default(),
            wallets: Default::default(),
            concurrency: 1,
            interval_ms: 2_000,
            signer_sets_per_path: 1,
            max_paths_per_wallet: 20,
        }
    }
}

impl PoolConfig {
    pub fn limits_for(&self, wallet_id: &WalletId) -> PoolLimits {
        self.wallets
            .get(wallet_id)
            .copied()
            .unwrap_or(self.defaults)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM), issued by the cluster CA for `node-<id>`.
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://...` or `postgres://...`; `DATABASE_URL` overrides. Default: SQLite file in
    /// the data directory.
    #[serde(default)]
    pub url: Option<String>,
    /// A 32-byte key file for the key-encryption key. Without it, the passphrase comes from
    /// `MPC_WALLET_PASSPHRASE` (stretched with Argon2id).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The rollback guard file: the highest count of consumed presignatures this node has
    /// acted on, kept outside the database so that a store brought back to an older state
    /// is recognized (its presignatures are then retired). Default: `rollback-guard` in the
    /// data directory. It is worth most on another disk than the database's, which is
    /// already so with PostgreSQL.
    #[serde(default)]
    pub rollback_guard_file: Option<PathBuf>,
}

/// The cluster as every node sees it. All nodes must carry the same list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Default signing threshold for new wallets.
    pub threshold: u16,
    /// `mainnet`, `testnet`, `signet` or `regtest`: the network this node signs for.
    pub network: Network,
    pub nodes: Vec<PeerEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub id: NodeId,
    /// QUIC address (UDP).
    pub address: SocketAddr,
    /// REST API address, for clients and operators.
    #[serde(default)]
    pub api: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where this node's REST API listens; empty for no API.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// File with the HS256 secret (at least 32 bytes); `JWT_SECRET` overrides.
    #[serde(default)]
    pub jwt_secret_file: Option<PathBuf>,
    #[serde(default = "default_issuer")]
    pub jwt_issuer: String,
    #[serde(default = "default_audience")]
    pub jwt_audience: String,
    /// A PEM public key whose tokens are accepted besides HS256 ones (tokens issued by an
    /// external identity provider). Only `jwt_public_key_algorithm` is accepted with it.
    #[serde(default)]
    pub jwt_public_key_file: Option<PathBuf>,
    /// `RS256` or `EdDSA`: the one algorithm of `jwt_public_key_file`.
    #[serde(default)]
    pub jwt_public_key_algorithm: Option<String>,
    /// Sustained requests per second per token (0: no per-token limit).
    #[serde(default = "default_rate_token")]
    pub rate_limit_per_second: u32,
    /// Requests a token may make at once before the sustained rate applies.
    #[serde(default = "default_burst_token")]
    pub rate_limit_burst: u32,
    /// Sustained requests per second per client IP address (0: no per-address limit).
    #[serde(default = "default_rate_ip")]
    pub rate_limit_ip_per_second: u32,
    #[serde(default = "default_burst_ip")]
    pub rate_limit_ip_burst: u32,
    /// Serve `/metrics` without a token (for a scraper on a private network). Default: any
    /// role's token is needed.
    #[serde(default)]
    pub metrics_public: bool,
}

fn default_rate_token() -> u32 {
    50
}
fn default_burst_token() -> u32 {
    100
}
fn default_rate_ip() -> u32 {
    100
}
fn default_burst_ip() -> u32 {
    200
}

fn default_issuer() -> String {
    "mpc-wallet".into()
}
fn default_audience() -> String {
    "mpc-wallet-api".into()
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: None,
            jwt_secret_file: None,
            jwt_issuer: default_issuer(),
            jwt_audience: default_audience(),
            jwt_public_key_file: None,
            jwt_public_key_algorithm: None,
            rate_limit_per_second: default_rate_token(),
            rate_limit_burst: default_burst_token(),
            rate_limit_ip_per_second: default_rate_ip(),
            rate_limit_ip_burst: default_burst_ip(),
            metrics_public: false,
        }
    }
}

/// Sizes and timeouts. Every message and session has a deadline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub heartbeat_interval_ms: u64,
    /// A peer is live if heard from within this time.
    pub liveness_ms: u64,
    pub aux_info_timeout_ms: u64,
    pub keygen_timeout_ms: u64,
    pub presign_timeout_ms: u64,
    /// Signing with presignatures (and FROST): the whole attempt.
    pub sign_timeout_ms: u64,
    /// Full interactive ECDSA signing, per input.
    pub full_sign_timeout_ms: u64,
    /// How long a message for a session this node has not registered yet is held.
    pub session_hold_ms: u64,
    /// Messages one peer may have held for sessions this node has not registered yet, and
    /// their bytes. Each peer has its own share: one over it is refused, the others are not.
    pub max_held_messages_per_peer: usize,
    pub max_held_bytes_per_peer: usize,
    /// Control messages one peer may have waiting for this node, and their bytes.
    pub max_control_queue_per_peer: usize,
    pub max_control_queue_bytes_per_peer: usize,
    /// Frames one peer may have in flight to this node at once (QUIC streams); more wait.
    pub max_streams_per_peer: u32,
    /// How long one frame may take to arrive once its stream opened; a stalled stream is reset.
    pub frame_read_timeout_ms: u64,
    /// How long a coordinator waits for the cluster's ceremony lock before giving up (one keygen
    /// or aux-info ceremony runs at a time).
    pub ceremony_lock_wait_ms: u64,
    /// Most inputs in one PSBT, checked by the coordinator and by every signer before any
    /// session starts.
    pub max_inputs_per_psbt: usize,
    /// Most ECDSA inputs of one PSBT signed interactively (no presignature ready): each costs
    /// every signer seconds of CPU, one after another.
    pub max_interactive_inputs: usize,
    /// The longest a signing request may take, whatever its inputs: the bound on the
    /// coordinator's wait.
    pub max_sign_request_ms: u64,
    /// A node with at least this many unreleased incidents (blame this node recorded) is
    /// left out of signer sets until an operator releases it; 0 disables. When leaving it out
    /// would leave fewer than `t` signers, it signs anyway: availability over punishment.
    pub exclude_after_incidents: u32,
}

impl Default for Limits {
    fn default() -> Self {
        let router = RouterLimits::default();
        Self {
            max_frame_bytes: 4 << 20,
            heartbeat_interval_ms: 500,
            liveness_ms: 2_000,
            aux_info_timeout_ms: 600_000,
            keygen_timeout_ms: 30_000,
            presign_timeout_ms: 120_000,
            sign_timeout_ms: 10_000,
            full_sign_timeout_ms: 120_000,
            session_hold_ms: 10_000,
            max_held_messages_per_peer: router.max_held_messages_per_peer,
            max_held_bytes_per_peer: router.max_held_bytes_per_peer,
            max_control_queue_per_peer: router.max_control_queue_per_peer,
            max_control_queue_bytes_per_peer: router.max_control_queue_bytes_per_peer,
            max_streams_per_peer: 32,
            frame_read_timeout_ms: 10_000,
            ceremony_lock_wait_ms: 300_000,
            max_inputs_per_psbt: mpc_bitcoin::validity::DEFAULT_MAX_INPUTS,
            max_interactive_inputs: 4,
            max_sign_request_ms: 600_000,
            exclude_after_incidents: 3,
        }
    }
}

impl Limits {
    pub fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// The router's bounds from these limits.
    pub fn router(&self) -> RouterLimits {
        RouterLimits {
            hold_time: Self::ms(self.session_hold_ms),
            max_held_messages_per_peer: self.max_held_messages_per_peer,
            max_held_bytes_per_peer: self.max_held_bytes_per_peer,
            max_control_queue_per_peer: self.max_control_queue_per_peer,
            max_control_queue_bytes_per_peer: self.max_control_queue_bytes_per_peer,
            ..RouterLimits::default()
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_held_messages_per_peer == 0
            || self.max_control_queue_per_peer == 0
            || self.max_streams_per_peer == 0
            || self.frame_read_timeout_ms == 0
        {
            return Err("the per-peer quotas and frame_read_timeout_ms must be positive".into());
        }
        // Else a peer's largest message could never be held or queued.
        if self
            .max_held_bytes_per_peer
            .min(self.max_control_queue_bytes_per_peer)
            < self.max_frame_bytes
        {
            return Err("max_held_bytes_per_peer and max_control_queue_bytes_per_peer must be at least max_frame_bytes".into());
        }
        Ok(())
    }
}

/// The pool of safe primes for aux info.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrimesConfig {
    /// Sets to keep ready; generated in the background when below (minutes each).
    pub pool_target: u64,
    /// A primes file (`mpc-wallet primes generate`) to import set `import_index` from when
    /// the pool is empty and no aux info exists yet (devnet, tests).
    pub import_file: Option<PathBuf>,
    pub import_index: Option<usize>,
    /// Threads that generate one set's four primes at once, at idle priority (at most four
    /// are used); default: the machine's cores.
    pub threads: Option<usize>,
}

impl Default for PrimesConfig {
    fn default() -> Self {
        Self {
            pool_target: 1,
            import_file: None,
            import_index: None,
            threads: None,
        }
    }
}

impl PrimesConfig {
    /// The threads one set of primes is generated on.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

/// The aux-info ceremony (`[aux_info]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuxInfoConfig {
    /// The refill leader starts the ceremony by itself once the node set has no aux info and
    /// every node holds a set of safe primes (default on; off: an operator starts it through
    /// the API).
    pub auto: bool,
}

impl Default for AuxInfoConfig {
    fn default() -> Self {
        Self { auto: true }
    }
}

impl NodeConfig {
    /// Loads the TOML file; `DATABASE_URL` overrides the store URL.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let mut config: NodeConfig = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed("MPC_WALLET_NODE__").split("__"))
            .extract()
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        if let Ok(url) = std::env::var("DATABASE_URL") {
            config.store.url = Some(url);
        }
        config.coordination.apply_env();
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates a config from TOML text as [`load`](Self::load) does its file,
    /// without the environment overrides. The decoding boundary of the config file, public so
    /// the fuzz targets (`crates/fuzz`) call it.
    pub fn from_toml(text: &str) -> Result<Self, NodeError> {
        let config: NodeConfig = Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |m: String| Err(NodeError::Config(m));
        for webhook in &self.webhooks {
            webhook
                .validate()
                .map_err(|e| NodeError::Config(format!("webhooks: {e}")))?;
        }
        let n = self.cluster.nodes.len();
        if !self.cluster.nodes.iter().any(|p| p.id == self.id) {
            return bad(format!("node id {} is not in cluster.nodes", self.id));
        }
        let mut ids: Vec<NodeId> = self.cluster.nodes.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids.dedup();
        // Zero is refused when the config is parsed: no NodeId is 0.
        if ids.len() != n {
            return bad("cluster.nodes ids must be unique and non-zero".into());
        }
        let t = self.cluster.threshold;
        if t < 2 || usize::from(t) > n {
            return bad(format!(
                "threshold {t} must be between 2 and the node count {n}"
            ));
        }
        if self.primes.threads == Some(0) {
            return bad("primes.threads must be at least 1".into());
        }
        let limits = &self.limits;
        if limits.max_inputs_per_psbt == 0 || limits.max_sign_request_ms < limits.sign_timeout_ms {
            return bad(
                "limits: max_inputs_per_psbt must be at least 1 and max_sign_request_ms at \
                 least sign_timeout_ms"
                    .into(),
            );
        }
        // TOML has `nan` and `inf`: a NaN limit compares false with every rate, which would
        // turn the limit off without a word.
        if let Some(rate) = self.policy.max_fee_rate_sat_vb {
            if !(rate.is_finite() && rate >= 0.0) {
                return bad(format!(
                    "policy.max_fee_rate_sat_vb must be a finite number >= 0 (got {rate})"
                ));
            }
        }
        self.policy
            .approvals
            .validate()
            .map_err(|e| NodeError::Config(format!("policy.approvals: {e}")))?;
        // Else the condition could never hold, and nothing would ever need approvals.
        let approvals = &self.policy.approvals;
        if approvals.enabled()
            && approvals.outside_allow_list
            && self.policy.allowed_destinations.is_none()
        {
            return bad(
                "policy.approvals.outside_allow_list needs policy.allowed_destinations".into(),
            );
        }
        self.coordination
            .validate()
            .map_err(|e| NodeError::Config(format!("coordination: {e}")))?;
        self.limits
            .validate()
            .map_err(|e| NodeError::Config(format!("limits: {e}")))?;
        for (name, l) in std::iter::once(("pool.defaults", &self.pool.defaults))
            .chain(self.pool.wallets.iter().map(|(k, v)| (k.as_str(), v)))
        {
            if !(l.low_water <= l.target && l.target <= l.max && l.batch >= 1 && l.batch <= 100) {
                return bad(format!(
                    "{name}: need low_water <= target <= max and 1 <= batch <= 100"
                ));
            }
        }
        Ok(())
    }

    /// All node ids, sorted.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.cluster.nodes.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        ids
    }

    pub fn peer(&self, id: NodeId) -> Option<&PeerEntry> {
        self.cluster.nodes.iter().find(|p| p.id == id)
    }

    /// The node that drives presignature refill under the static cluster backend (ignored
    /// under etcd, where the nodes elect one).
    pub fn pool_leader(&self) -> NodeId {
        self.pool
            .leader
            .unwrap_or_else(|| self.node_ids().first().copied().unwrap_or(self.id))
    }

    pub fn rollback_guard_file(&self) -> PathBuf {
        self.store
            .rollback_guard_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("rollback-guard"))
    }

    pub fn store_url(&self) -> String {
        self.store
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("store.db").display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deployment's example configs stay loadable as the config evolves (Docker does not
    /// run here, so nothing else would notice).
    #[test]
    fn the_compose_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/compose");
        for id in 1..=5u16 {
            let path = dir.join(format!("node-{id}.toml"));
            let config = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.id.get(), id);
            assert_eq!(config.cluster.nodes.len(), 5);
            assert_eq!(
                config.coordination.backend,
                mpc_coordination::BackendKind::Etcd
            );
        }
    }

    /// `[policy.approvals]` is checked when the config loads: M <= N, keys that parse and
    /// differ, names unique, and an allow-list condition only with an allow-list.
    #[test]
    fn an_approval_rule_that_cannot_work_is_refused() {
        let key = |b: u8| {
            hex::encode(
                ed25519_dalek::SigningKey::from_bytes(&[b; 32])
                    .verifying_key()
                    .as_bytes(),
            )
        };
        let base = |rule: &str| {
            format!(
                r#"id = 1
data_dir = "/tmp/x"
[tls]
ca = "ca.pem"
certificate = "c.pem"
private_key = "k.pem"
[store]
[cluster]
threshold = 2
network = "regtest"
nodes = [{{ id = 1, address = "127.0.0.1:7001" }}, {{ id = 2, address = "127.0.0.1:7002" }}]
[policy.approvals]
{rule}"#
            )
        };
        let approvers = format!(
            r#"approvers = [{{ name = "a", public_key = "{}" }}, {{ name = "b", public_key = "{}" }}]"#,
            key(1),
            key(2)
        );
        let ok = NodeConfig::from_toml(&base(&format!("required = 2\n{approvers}"))).unwrap();
        assert_eq!(ok.policy.approvals.required, 2);
        assert_eq!(ok.policy.approvals.expiry_secs, 24 * 3600);
        for (rule, expected) in [
            (format!("required = 3\n{approvers}"), "only 2 approvers"),
            (
                format!(
                    "required = 1\n{}",
                    approvers.replace(r#"name = "b""#, r#"name = "a""#)
                ),
                "unique",
            ),
            (
                format!("required = 1\n{}", approvers.replace(&key(2), &key(1))),
                "another approver's key",
            ),
            (
                format!("required = 1\noutside_allow_list = true\n{approvers}"),
                "needs policy.allowed_destinations",
            ),
        ] {
            let e = NodeConfig::from_toml(&base(&rule)).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn per_peer_quotas_must_fit_one_frame() {
        assert!(Limits::default().validate().is_ok());
        let small = Limits {
            max_held_bytes_per_peer: (4 << 20) - 1,
            ..Limits::default()
        };
        assert!(small.validate().is_err());
        let none = Limits {
            max_streams_per_peer: 0,
            ..Limits::default()
        };
        assert!(none.validate().is_err());
    }
}
