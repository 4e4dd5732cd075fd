//! The multi-host test (issue 6): five node processes, each in its own network namespace
//! (veth pairs on one bridge), each with its own SQLite store, coordinating through a private
//! etcd on the bridge. Aux info, keygen for both schemes and a mixed P2WPKH + P2TR transaction
//! checked with libbitcoinconsensus (`devnet::run`, the devnet's own main job); then node 5's
//! link is cut and node 1 signs for both schemes with three of the four nodes left.
//!
//! Needs root (namespaces, veth, bridge) and etcd; skipped with a printed reason otherwise, or
//! failed instead if `MPC_REQUIRE_NETNS` is set (`scripts/netns-test` sets it).
//! `MPC_NETNS_DELAY_MS=20` adds that delay (tc netem) to every node's link, each way; a kernel
//! without netem gets the reason printed and the run goes on without delay (never simulated).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mpc_api::routes::SignRequest;
use mpc_api::Role;
use mpc_coordination::{BackendKind, CoordinationConfig};
use mpc_wallet::devnet::{
    self, synthetic_payment, verify_signed, wallet_key_from_api, DevnetOptions,
};
use serde_json::{json, Value};
use uuid::Uuid;

const NODES: u16 = 5;
const THRESHOLD: u16 = 3;
/// The node whose namespace is cut off.
const CUT: u16 = 5;
const REQUIRE_ENV: &str = "MPC_REQUIRE_NETNS";
const DELAY_ENV: &str = "MPC_NETNS_DELAY_MS";

/// Runs a command; the error names it and carries its stderr.
fn command(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{program}`: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{program} {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

fn ip(args: &[&str]) -> Result<(), String> {
    command("ip", args)
}

fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
}

/// Why this machine cannot run the test, if it cannot.
fn unavailable(tag: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some(format!("not root (effective uid {})", euid.unwrap_or("?")));
    }
    let probe = format!("mpc{tag}probe");
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("no network namespaces here: {e}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    if etcd_binary().is_none() {
        return Some("etcd not found in PATH or /usr/bin (Debian: etcd-server)".into());
    }
    None
}

/// The namespaces, their veth pairs and the bridge joining them, deleted on drop (what has
/// been created so far, so a setup that fails halfway is undone too).
struct Net {
    tag: String,
    subnet: u8,
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl Net {
    fn bridge(&self) -> String {
        format!("mpcbr{}", self.tag)
    }

    fn namespace(&self, id: u16) -> String {
        format!("mpc{}n{id}", self.tag)
    }

    /// The root-namespace end of node `id`'s veth pair (a port of the bridge).
    fn veth(&self, id: u16) -> String {
        format!("mpc{}v{id}", self.tag)
    }

    fn addr(&self, id: u16) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, id as u8)
    }

    fn bridge_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 254)
    }

    /// `tag` (4 hex digits) keeps names unique between concurrent runs; interface names have
    /// at most 15 bytes.
    fn create(tag: &str) -> Result<Self, String> {
        let used = Command::new("ip")
            .args(["-4", "-o", "addr", "show"])
            .output()
            .map_err(|e| format!("`ip addr show`: {e}"))?;
        let used = String::from_utf8_lossy(&used.stdout);
        let start = u8::from_str_radix(&tag[..2], 16).map_err(|e| e.to_string())?;
        let subnet = (0..=255u8)
            .map(|k| start.wrapping_add(k))
            .find(|x| !used.contains(&format!("10.231.{x}.")))
            .ok_or("every 10.231.x.0/24 is in use")?;
        let mut net = Self {
            tag: tag.to_string(),
            subnet,
            namespaces: Vec::new(),
            links: Vec::new(),
        };
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        net.links.push(bridge.clone());
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.bridge_addr()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for id in 1..=NODES {
            let (ns, veth, inner) = (net.namespace(id), net.veth(id), format!("mpc{tag}p{id}"));
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &inner])?;
            net.links.push(veth.clone());
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
            let addr = format!("{}/24", net.addr(id));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["link", "set", &veth, "master", &bridge])?;
            ip(&["link", "set", &veth, "up"])?;
        }
        Ok(net)
    }

    /// Delays every packet leaving the root end of each node's veth, i.e. entering each
    /// namespace: `ms` per hop between nodes, `2 * ms` round trip. `Err` (the reason) when the
    /// kernel cannot (no sch_netem); a failure after the first link has its delay is a bug.
    fn add_delay(&self, ms: u64) -> Result<(), String> {
        let delay = format!("{ms}ms");
        for id in 1..=NODES {
            let veth = self.veth(id);
            let added = command(
                "tc",
                &[
                    "qdisc", "add", "dev", &veth, "root", "netem", "delay", &delay,
                ],
            );
            match added {
                Err(reason) if id == 1 => return Err(reason),
                other => other.expect("netem on one link but not on the next"),
            }
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting the root end of a veth pair deletes the pair; the bridge goes last.
        for link in self.links.iter().rev() {
            if let Err(e) = ip(&["link", "del", link]) {
                eprintln!("teardown: {e}");
            }
        }
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("teardown: {e}");
            }
        }
    }
}

/// A private single-member etcd whose clients listen on the bridge, where every namespace
/// reaches it; its peer port stays on loopback. Killed on drop.
struct Etcd {
    child: Child,
    url: String,
}

impl Etcd {
    async fn start(binary: &Path, host: Ipv4Addr, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("etcd directory");
        let port = |addr: SocketAddr| {
            TcpListener::bind(addr)
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let client = port(SocketAddr::from((host, 0)));
        let peer = port(SocketAddr::from(([127, 0, 0, 1], 0)));
        let url = format!("http://{host}:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_path = dir.join("etcd.log");
        let log = std::fs::File::create(&log_path).expect("etcd log");
        let mut cmd = Command::new(binary);
        // Exported ETCD_* variables would override the flags.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .args(["--name", "netns", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("netns={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = match reqwest::get(format!("{url}/health")).await {
                Ok(resp) => resp.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if health.is_some_and(|h| h["health"] == "true") {
                return Self { child, url };
            }
            let exited = child.try_wait().expect("etcd's status");
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "etcd at {url} not healthy ({exited:?}): {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// etcd's revision: 1 in a new etcd, raised by every write (through its JSON gateway).
    async fn revision(&self) -> u64 {
        // Any key will do ("AA==" is base64 for a NUL byte): only the header is read.
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/v3/kv/range", self.url))
            .json(&json!({"key": "AA=="}))
            .send()
            .await
            .expect("etcd range request")
            .json()
            .await
            .expect("etcd range answer");
        answer["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {answer}"))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The (device, inode) of a network namespace file: equal means the same namespace.
fn netns_id(path: &str) -> (u64, u64) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (meta.dev(), meta.ino())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_namespaces_generate_sign_and_sign_again_with_one_cut_off() {
    let started = Instant::now();
    let tag = Uuid::new_v4().simple().to_string()[..4].to_string();
    if let Some(reason) = unavailable(&tag) {
        let required = std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty());
        assert!(!required, "{REQUIRE_ENV} is set but {reason}");
        eprintln!("skipped: {reason}");
        return;
    }
    // Declared in this order so that, even on a panic, the nodes stop before etcd and etcd
    // before the network goes (locals drop in reverse).
    let net = Net::create(&tag).expect("namespaces, veth pairs and bridge");
    // The delay in effect (`Some` only if netem took it) and how to describe it.
    let (delay_ms, delay) = match std::env::var(DELAY_ENV) {
        Ok(v) if !v.is_empty() => {
            let ms: u64 = v.parse().expect("MPC_NETNS_DELAY_MS in milliseconds");
            match net.add_delay(ms) {
                Ok(()) => (
                    Some(ms),
                    format!("{ms} ms each way on every node's link (tc netem)"),
                ),
                Err(reason) => {
                    eprintln!("latency run skipped: cannot add {ms} ms with tc netem: {reason}");
                    (
                        None,
                        format!("none (asked for {ms} ms; no netem: {reason})"),
                    )
                }
            }
        }
        _ => (None, "none".to_string()),
    };
    let dir = std::env::temp_dir().join(format!("mpc-netns-test-{}", Uuid::new_v4()));
    let etcd_bin = etcd_binary().expect("etcd (checked above)");
    let etcd = Etcd::start(&etcd_bin, net.bridge_addr(), &dir.join("etcd")).await;

    let mut options = DevnetOptions::new(
        NODES,
        THRESHOLD,
        dir.join("devnet"),
        env!("CARGO_BIN_EXE_mpc-wallet").into(),
    );
    // No background presignatures competing with the timed ceremonies (2-core CI machines);
    // `devnet::run` makes the one it uses explicitly.
    options.pool.enabled = false;
    // The checked-in aux info instead of a minute of CPU: this test is about the network
    // between namespaces; the aux-info ceremony over QUIC runs in the cluster test
    // and in the main job.
    options.aux_info_fixture = true;
    options.coordination = CoordinationConfig {
        backend: BackendKind::Etcd,
        endpoints: vec![etcd.url.clone()],
        prefix: format!("/mpc-netns-test-{tag}"),
        ..CoordinationConfig::default()
    };
    options.hosts = Some((1..=NODES).map(|id| IpAddr::V4(net.addr(id))).collect());
    options.launcher = Some(
        (1..=NODES)
            .map(|id| {
                ["ip", "netns", "exec", &net.namespace(id)]
                    .map(String::from)
                    .to_vec()
            })
            .collect(),
    );

    // ---- both keygens, a presignature and a mixed transaction, all across namespaces
    let (report, mut devnet) = devnet::run(options)
        .await
        .unwrap_or_else(|e| panic!("{e:#} (node logs in {})", dir.display()));
    let psbt = verify_signed(
        &report.transaction.signed_psbt,
        &report.transaction.raw_transaction,
    )
    .expect("the mixed transaction passes bitcoinconsensus")
    .psbt;
    let spent: Vec<(bool, bool)> = psbt
        .inputs
        .iter()
        .map(|i| {
            let script = &i.witness_utxo.as_ref().expect("witness utxo").script_pubkey;
            (script.is_p2wpkh(), script.is_p2tr())
        })
        .collect();
    assert_eq!(
        spent,
        [(true, false), (false, true)],
        "one P2WPKH and one P2TR input"
    );
    let methods: Vec<&str> = report
        .transaction
        .inputs
        .iter()
        .map(|i| i.method.as_str())
        .collect();
    assert_eq!(methods, ["presignature", "frost"]);
    assert_eq!(report.signers.len(), usize::from(THRESHOLD));
    // The ceremonies took the cluster's lock in this private etcd (nothing else writes there).
    let revision = etcd.revision().await;
    assert!(revision > 1, "etcd untouched (revision {revision})");

    // ---- the nodes really run in their namespaces ---------------------------------------
    let root = netns_id("/proc/self/ns/net");
    for node in &devnet.nodes {
        let id = node.id.get();
        let pid = devnet.pid(id).expect("node running");
        let actual = netns_id(&format!("/proc/{pid}/ns/net"));
        let expected = netns_id(&format!("/run/netns/{}", net.namespace(id)));
        assert_eq!(
            actual,
            expected,
            "node {id} is not in {}",
            net.namespace(id)
        );
        assert_ne!(actual, root, "node {id} runs in the root namespace");
        assert_eq!(node.api.ip(), IpAddr::V4(net.addr(id)));
        let health: Value = devnet
            .client(id, Role::Viewer)
            .expect("client")
            .cluster_health()
            .await
            .expect("node answers on its namespace's address");
        assert_eq!(health["node"], id);
        let loopback = SocketAddr::from(([127, 0, 0, 1], node.api.port()));
        assert!(
            TcpStream::connect_timeout(&loopback, Duration::from_secs(1)).is_err(),
            "something answers for node {id} on {loopback} in the root namespace"
        );
    }
    if let Some(wanted) = delay_ms {
        // The delay is real: a TCP handshake with node 1 crosses one delayed hop.
        let api = devnet.nodes[0].api;
        let t0 = Instant::now();
        TcpStream::connect_timeout(&api, Duration::from_secs(5)).expect("connect to node 1");
        let rtt = ms(t0);
        eprintln!("TCP connect to node 1 with the delay: {rtt:.1} ms");
        assert!(
            rtt >= wanted as f64 - 1.0,
            "netem delay not in effect ({rtt:.1} ms)"
        );
    }

    // ---- cut node 5 off: its process runs on, its link is down ---------------------------
    let viewer = devnet.client(1, Role::Viewer).expect("client");
    ip(&["link", "set", &net.veth(CUT), "down"]).expect("cutting node 5's link");
    let t0 = Instant::now();
    loop {
        let health: Value = viewer.cluster_health().await.expect("node 1 health");
        let nodes = health["nodes"].as_array().expect("nodes");
        let cut = nodes
            .iter()
            .find(|n| n["node"] == CUT)
            .expect("node 5 listed");
        if cut["live"] == false {
            assert_eq!(health["live"], NODES - 1, "{health}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "node 1 still sees node 5: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let noticed = ms(t0);
    assert!(
        devnet.is_running(CUT).expect("node 5's status"),
        "node 5 exited"
    );
    let cut_api = devnet.nodes[usize::from(CUT - 1)].api;
    assert!(
        TcpStream::connect_timeout(&cut_api, Duration::from_secs(1)).is_err(),
        "node 5 still reachable at {cut_api}"
    );

    // ---- node 1 signs for both schemes with 3 of the remaining 4 -------------------------
    let wallet = |i: usize| report.wallets[i].id.clone().expect("wallet id");
    let signer = devnet.client(1, Role::Signer).expect("client");
    let mut keys = Vec::new();
    for id in [wallet(0), wallet(1)] {
        let w: Value = viewer.wallet(&id).await.expect("wallet");
        keys.push(wallet_key_from_api(&w).expect("wallet key"));
    }
    let mut after: Vec<(String, f64)> = vec![("node 1 notices node 5 cut off".into(), noticed)];
    for (index, label) in [
        (0, "ECDSA sign, node 5 cut off"),
        (1, "FROST sign, node 5 cut off"),
    ] {
        let psbt = synthetic_payment(&[(&keys[index], "m/0/1", 40_000)], &keys[1], 9, 2_000)
            .expect("synthetic payment");
        let t0 = Instant::now();
        let answer: Value = signer
            .sign_psbt(&wallet(index), &SignRequest::new(psbt))
            .await
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        after.push((label.into(), ms(t0)));
        verify_signed(
            answer["psbt"].as_str().expect("psbt"),
            answer["raw_transaction"].as_str().expect("raw transaction"),
        )
        .unwrap_or_else(|e| panic!("{label}: {e:#}"));
        let signers: Vec<u16> = serde_json::from_value(answer["signers"].clone()).expect("signers");
        assert_eq!(
            signers.len(),
            usize::from(THRESHOLD),
            "{label}: {signers:?}"
        );
        assert!(!signers.contains(&CUT), "{label}: signers {signers:?}");
        eprintln!(
            "{label}: signers {signers:?}, method {}, {} attempt(s)",
            answer["inputs"][0]["method"],
            answer["attempts"].as_array().map_or(1, Vec::len)
        );
    }

    eprintln!(
        "netns test: 5 namespaces on 10.231.{}.0/24, etcd {} (revision {revision} after the \
         ceremonies), delay: {delay}",
        net.subnet, etcd.url
    );
    for (name, value) in report.timings_ms.iter().chain(&after) {
        eprintln!("  {name:<52} {value:>9.0} ms");
    }
    eprintln!(
        "  {:<52} {:>9.0} ms",
        "whole test (setup to here)",
        ms(started)
    );

    drop(devnet);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
    drop(net);
}
