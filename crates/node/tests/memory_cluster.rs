//! Three nodes over the in-memory mesh with real SQLite stores: DKG for both schemes,
//! presignatures, signing a mixed transaction, and what signers refuse.

use std::time::Duration;

use mpc_bitcoin::policy::Policy;
use mpc_bitcoin::{
    bitcoin::Amount,
    build::{build_psbt, synthetic_funding, Payment},
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Chain, Scheme,
};
use mpc_node::{
    ceremony::{CreateWallet, PresignReport},
    config::{ClusterConfig, NodeConfig, PeerEntry, StoreConfig, TlsConfig},
    control::ProposalBody,
    Node, NodeError,
};
use mpc_transport::memory::MemoryNetwork;
use uuid::Uuid;

mod common;
use common::start_node;

struct Cluster {
    nodes: Vec<Node>,
    _dir: tempdir::TempDirGuard,
}

mod tempdir {
    pub struct TempDirGuard(pub std::path::PathBuf);
    impl Drop for TempDirGuard {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    pub fn new() -> TempDirGuard {
        let p = std::env::temp_dir().join(format!("mpc-node-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        TempDirGuard(p)
    }
}

fn config(id: u16, n: u16, t: u16, dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        id,
        data_dir: dir.join(format!("node-{id}")),
        tls: TlsConfig {
            ca: "unused".into(),
            certificate: "unused".into(),
            private_key: "unused".into(),
        },
        store: StoreConfig {
            url: None,
            key_file: None,
            rollback_guard_file: None,
        },
        cluster: ClusterConfig {
            threshold: t,
            network: "regtest".into(),
            nodes: (1..=n)
                .map(|i| PeerEntry {
                    id: i,
                    address: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                    api: None,
                })
                .collect(),
        },
        api: Default::default(),
        limits: Default::default(),
        primes: mpc_node::config::PrimesConfig {
            pool_target: 0,
            ..Default::default()
        },
        policy: Default::default(),
        pool: mpc_node::config::PoolConfig {
            enabled: false,
            ..Default::default()
        },
        coordination: Default::default(),
    }
}

async fn cluster(n: u16, t: u16) -> (Cluster, MemoryNetwork) {
    cluster_with(n, t, |_| Policy::default()).await
}

async fn cluster_with(n: u16, t: u16, policy: impl Fn(u16) -> Policy) -> (Cluster, MemoryNetwork) {
    let dir = tempdir::new();
    let network = MemoryNetwork::new();
    let aux = mpc_testkit::aux_info(usize::from(n));
    let mut nodes = Vec::new();
    for id in 1..=n {
        let mut cfg = config(id, n, t, &dir.0);
        cfg.policy = policy(id);
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        let node = start_node(cfg, &network).await;
        // Fixture aux info instead of the 40 s ceremony (the process test runs it for real).
        let ids: Vec<u16> = (1..=n).collect();
        let a = &aux[usize::from(id - 1)];
        node.store()
            .put_aux_info(
                &ids,
                &a.to_bytes().unwrap(),
                &hex::encode(a.public_digest().unwrap()),
                Uuid::new_v4(),
            )
            .await
            .unwrap();
        nodes.push(node);
    }
    wait_all_live(&nodes).await;
    (Cluster { nodes, _dir: dir }, network)
}

/// Waits for heartbeats to make everyone live.
async fn wait_all_live(nodes: &[Node]) {
    for _ in 0..100 {
        if nodes.iter().all(|n| {
            n.health().live_nodes().len() == usize::from(n.config().cluster.nodes.len() as u16)
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wallet_request(name: &str, scheme: Scheme) -> CreateWallet {
    CreateWallet {
        name: name.into(),
        scheme,
        threshold: None,
        participants: None,
        network: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkg_presign_and_sign_a_mixed_transaction() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
    let (c, _net) = cluster(3, 2).await;
    let n1 = &c.nodes[0];
    let ecdsa = n1
        .create_wallet(Uuid::new_v4(), wallet_request("e", Scheme::Ecdsa))
        .await
        .unwrap();
    let taproot = n1
        .create_wallet(Uuid::new_v4(), wallet_request("t", Scheme::Schnorr))
        .await
        .unwrap();
    // Every node holds the same active wallet.
    for node in &c.nodes {
        let w = node.wallet(&ecdsa.id).await.unwrap();
        assert_eq!(
            (w.public_key.as_str(), w.state.as_str()),
            (ecdsa.public_key.as_str(), "active")
        );
        let w = node.wallet(&taproot.id).await.unwrap();
        assert_eq!(w.public_key, taproot.public_key);
    }
    let p00 = Chain::Receive.path(0).unwrap();
    let presigned = n1
        .generate_presignatures(Uuid::new_v4(), &ecdsa.id, &p00, 2, None, None)
        .await
        .unwrap();
    assert_eq!(presigned.ids.len(), 2);
    assert!(presigned.signers.contains(&1));

    let ekey =
        mpc_node::keys::wallet_key(&n1.store().wallet(&ecdsa.id).await.unwrap().unwrap()).unwrap();
    let tkey = mpc_node::keys::wallet_key(&n1.store().wallet(&taproot.id).await.unwrap().unwrap())
        .unwrap();
    let inputs = vec![
        synthetic_funding(&ekey, &p00, Amount::from_sat(50_000), "a").unwrap(),
        synthetic_funding(
            &ekey,
            &Chain::Receive.path(1).unwrap(),
            Amount::from_sat(60_000),
            "b",
        )
        .unwrap(),
        synthetic_funding(&tkey, &p00, Amount::from_sat(70_000), "c").unwrap(),
    ];
    let payments = vec![Payment {
        script_pubkey: tkey
            .chain_address(Chain::Receive, 5)
            .unwrap()
            .script_pubkey(),
        amount: Amount::from_sat(170_000),
        owner: None,
    }];
    let psbt = build_psbt(&inputs, &payments).unwrap().to_string();
    let wallets = vec![ecdsa.id.clone(), taproot.id.clone()];
    let report = n1.sign_psbt(Uuid::new_v4(), &wallets, &psbt).await.unwrap();
    let methods: Vec<&str> = report.inputs.iter().map(|i| i.method).collect();
    assert_eq!(methods, ["presignature", "interactive", "frost"]);
    assert_eq!(
        report.inputs[0].presignature.as_deref(),
        Some(presigned.ids[0].as_str())
    );
    // Independent re-check of what the node returned.
    let signed = parse_psbt(&report.psbt).unwrap();
    let spent = spent_outputs(&signed).unwrap();
    let tx: mpc_bitcoin::bitcoin::Transaction =
        mpc_bitcoin::bitcoin::consensus::encode::deserialize_hex(&report.raw_transaction).unwrap();
    verify_transaction(&tx, &spent).unwrap();

    // The used presignature is consumed at every signer; the other is still ready.
    for node in c.nodes.iter().filter(|n| report.signers.contains(&n.id())) {
        let used = node
            .store()
            .presignature(&presigned.ids[0])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(used.state, mpc_store::PresignatureState::Consumed);
        let spare = node
            .store()
            .presignature(&presigned.ids[1])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(spare.state, mpc_store::PresignatureState::Ready);
    }

    // A compromised coordinator reusing the consumed presignature (with another PSBT) is
    // refused by every signer.
    let one_input = build_psbt(
        &inputs[..1],
        &[Payment {
            script_pubkey: tkey
                .chain_address(Chain::Receive, 6)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(40_000),
            owner: None,
        }],
    )
    .unwrap()
    .to_string();
    let err = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                wallet_ids: vec![ecdsa.id.clone()],
                psbt: one_input.clone(),
                signers: report.signers.clone(),
                presignatures: vec![Some(presigned.ids[0].clone())],
            },
            &report.signers,
            Duration::from_secs(10),
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");

    // The spare presignature offered for another path (m/0/1) is refused.
    let other_path = build_psbt(
        &inputs[1..2],
        &[Payment {
            script_pubkey: tkey
                .chain_address(Chain::Receive, 6)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(50_000),
            owner: None,
        }],
    )
    .unwrap()
    .to_string();
    let err = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                wallet_ids: vec![ecdsa.id.clone()],
                psbt: other_path,
                signers: report.signers.clone(),
                presignatures: vec![Some(presigned.ids[1].clone())],
            },
            &report.signers,
            Duration::from_secs(10),
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bound to"), "{err}");

    // An input that is not the wallet's (claims m/0/0 of the ECDSA wallet, spends another
    // script) is refused before any protocol runs.
    let mut foreign = parse_psbt(&one_input).unwrap();
    foreign.inputs[0]
        .witness_utxo
        .as_mut()
        .unwrap()
        .script_pubkey = ekey
        .script_pubkey(&Chain::Receive.path(9).unwrap())
        .unwrap();
    let err = n1
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&ecdsa.id),
            &foreign.to_string(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, NodeError::Wallet(_)), "{err}");
    let err = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                wallet_ids: vec![ecdsa.id.clone()],
                psbt: foreign.to_string(),
                signers: report.signers.clone(),
                presignatures: vec![None],
            },
            &report.signers,
            Duration::from_secs(10),
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not this wallet's"), "{err}");
}

/// An ECDSA wallet made by `node`, whose PSBTs spend a made-up output at m/0/0.
struct EcdsaWallet {
    id: String,
    key: mpc_bitcoin::WalletKey,
}

impl EcdsaWallet {
    fn path() -> mpc_protocols::DerivationPath {
        Chain::Receive.path(0).unwrap()
    }

    /// A PSBT spending 50 000 sats from a made-up output `funding` names.
    fn spend(&self, funding: &str) -> String {
        let input =
            synthetic_funding(&self.key, &Self::path(), Amount::from_sat(50_000), funding).unwrap();
        let payment = Payment {
            script_pubkey: self
                .key
                .chain_address(Chain::Receive, 9)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(40_000),
            owner: None,
        };
        build_psbt(&[input], &[payment]).unwrap().to_string()
    }
}

/// A new ECDSA wallet and two presignatures at its path, for signers {1, 2} (the set node 1
/// picks).
async fn presigned_wallet(node: &Node) -> (EcdsaWallet, PresignReport) {
    let record = node
        .create_wallet(Uuid::new_v4(), wallet_request("e", Scheme::Ecdsa))
        .await
        .unwrap();
    let stored = node.store().wallet(&record.id).await.unwrap().unwrap();
    let key = mpc_node::keys::wallet_key(&stored).unwrap();
    let presigned = node
        .generate_presignatures(
            Uuid::new_v4(),
            &record.id,
            &EcdsaWallet::path(),
            2,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(presigned.signers, [1, 2]);
    (EcdsaWallet { id: record.id, key }, presigned)
}

/// A coordinator remembers the ready presignatures it read; one consumed meanwhile in a signing
/// that another node coordinated (this node signing) is never offered from that memory: the
/// next request signs in one attempt, interactively, instead of failing on a used presignature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presignature_used_under_another_coordinator_is_not_offered_again() {
    let (c, _net) = cluster(3, 2).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    // Node 1 and node 2 both pick signers {1, 2}: the presignatures' set.
    let (ecdsa, presigned) = presigned_wallet(n1).await;
    let wallets = std::slice::from_ref(&ecdsa.id);
    let sign = |node: &Node, funding: &'static str| {
        let (node, psbt) = (node.clone(), ecdsa.spend(funding));
        async move {
            node.sign_psbt(Uuid::new_v4(), wallets, &psbt)
                .await
                .unwrap()
        }
    };

    // Node 1 reads both, uses one and remembers the other; node 2 then uses that other one.
    let first = sign(n1, "a").await;
    let second = sign(n2, "b").await;
    let mut used: Vec<String> = [&first, &second]
        .iter()
        .map(|r| r.inputs[0].presignature.clone().unwrap())
        .collect();
    used.sort();
    let mut made = presigned.ids.clone();
    made.sort();
    assert_eq!(used, made, "each signing used one of the two presignatures");

    let third = sign(n1, "c").await;
    assert_eq!(third.attempts.len(), 1, "{:?}", third.attempts);
    assert_eq!(third.inputs[0].method, "interactive");
    assert_eq!(third.inputs[0].presignature, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_signer_is_named_and_the_retry_succeeds() {
    let (c, net) = cluster(3, 2).await;
    let n1 = &c.nodes[0];
    let taproot = n1
        .create_wallet(Uuid::new_v4(), wallet_request("t", Scheme::Schnorr))
        .await
        .unwrap();
    let tkey = mpc_node::keys::wallet_key(&n1.store().wallet(&taproot.id).await.unwrap().unwrap())
        .unwrap();
    let inputs = vec![synthetic_funding(
        &tkey,
        &Chain::Receive.path(0).unwrap(),
        Amount::from_sat(10_000),
        "x",
    )
    .unwrap()];
    let psbt = build_psbt(
        &inputs,
        &[Payment {
            script_pubkey: tkey
                .chain_address(Chain::Receive, 1)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(9_000),
            owner: None,
        }],
    )
    .unwrap()
    .to_string();
    // Node 2 is still considered live (heartbeats are recent) when it dies.
    net.disconnect(2);
    let report = n1
        .sign_psbt(Uuid::new_v4(), std::slice::from_ref(&taproot.id), &psbt)
        .await
        .unwrap();
    assert_eq!(report.attempts.len(), 2, "{:?}", report.attempts);
    let first = report.attempts[0].error.as_deref().unwrap();
    assert!(first.contains('2'), "the failure names node 2: {first}");
    assert_eq!(report.signers, [1, 3]);
}

/// Policy on nodes 2 and 3 only; node 1 coordinates with none, so each refusal comes from a
/// signer's own check, with the rule named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_signer_enforces_its_own_policy() {
    let allowed = mpc_testkit::schnorr_wallet(2, 3, mpc_bitcoin::bitcoin::Network::Regtest).1;
    let allowed_address = allowed.chain_address(Chain::Receive, 0).unwrap();
    let strict = Policy {
        max_amount_per_tx_sats: Some(100_000),
        max_amount_per_24h_sats: Some(150_000),
        allowed_destinations: Some(vec![allowed_address.to_string()]),
        max_fee_sats: Some(5_000),
        max_fee_rate_sat_vb: Some(20.0),
        networks: vec![],
    };
    let (c, _net) = cluster_with(3, 2, |id| {
        if id == 1 {
            Policy::default()
        } else {
            strict.clone()
        }
    })
    .await;
    let n1 = &c.nodes[0];
    let taproot = n1
        .create_wallet(Uuid::new_v4(), wallet_request("t", Scheme::Schnorr))
        .await
        .unwrap();
    let key = mpc_node::keys::wallet_key(&n1.store().wallet(&taproot.id).await.unwrap().unwrap())
        .unwrap();
    let psbt = |amount: u64, fee: u64, to: &mpc_bitcoin::bitcoin::Address| {
        let input = synthetic_funding(
            &key,
            &Chain::Receive.path(0).unwrap(),
            Amount::from_sat(amount + fee),
            &Uuid::new_v4().to_string(),
        )
        .unwrap();
        build_psbt(
            &[input],
            &[Payment {
                script_pubkey: to.script_pubkey(),
                amount: Amount::from_sat(amount),
                owner: None,
            }],
        )
        .unwrap()
        .to_string()
    };
    let stranger = key.chain_address(Chain::Receive, 7).unwrap();
    // Each signer (2 and 3, in turn, with coordinator 1) refuses, naming the rule.
    let refused_by_both = async |psbt: String, rule: &str| {
        for signers in [vec![1u16, 2], vec![1, 3]] {
            let err = n1
                .coordinate(
                    Uuid::new_v4(),
                    ProposalBody::Sign {
                        wallet_ids: vec![taproot.id.clone()],
                        psbt: psbt.clone(),
                        signers: signers.clone(),
                        presignatures: vec![None],
                    },
                    &signers,
                    Duration::from_secs(10),
                    None,
                )
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(rule) && text.contains(&format!("node {}", signers[1])),
                "{signers:?}: {text}"
            );
        }
    };
    refused_by_both(
        psbt(120_000, 1_000, &allowed_address),
        "max_amount_per_tx_sats",
    )
    .await;
    refused_by_both(psbt(10_000, 1_000, &stranger), "allowed_destinations").await;
    refused_by_both(psbt(10_000, 50_000, &allowed_address), "max_fee_sats").await;
    refused_by_both(psbt(10_000, 4_900, &allowed_address), "max_fee_rate_sat_vb").await;
    // Within limits: signs (with both strict signers, through the normal coordinator path).
    let ok = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                wallet_ids: vec![taproot.id.clone()],
                psbt: psbt(90_000, 1_000, &allowed_address),
                signers: vec![2, 3],
                presignatures: vec![None],
            },
            &[2, 3],
            Duration::from_secs(10),
            None,
        )
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    // The rolling 24 h limit now refuses another 70 000 (91 000 already sent by 2 and 3).
    refused_by_both(
        psbt(60_000, 1_000, &allowed_address),
        "max_amount_per_24h_sats",
    )
    .await;
    // A strict coordinator refuses before starting any session.
    let err = c.nodes[1]
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&taproot.id),
            &psbt(120_000, 1_000, &allowed_address),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NodeError::Policy(v) if v.rule == "max_amount_per_tx_sats"),
        "{err}"
    );
}

/// Copies node's SQLite store files (with its log) from `from` to `to`, so that `to` holds the
/// store as it was, and no file it did not have.
fn copy_store_files(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["store.db", "store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(to.join(file));
        if from.join(file).exists() {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }
}

/// Stops node `id`, runs `while_stopped` on its data directory, and starts it again.
async fn restart(
    c: &mut Cluster,
    net: &MemoryNetwork,
    id: u16,
    while_stopped: impl FnOnce(&std::path::Path),
) {
    let index = usize::from(id - 1);
    let node = c.nodes[index].clone();
    node.shutdown().await;
    net.disconnect(id);
    while_stopped(&node.config().data_dir);
    c.nodes[index] = start_node(node.config().clone(), net).await;
    wait_all_live(&c.nodes).await;
}

/// The finding of issue 17 (class 9): node 2's store goes back to a copy made before a
/// signing (a VM snapshot, point-in-time recovery, replica failover), which holds the used
/// presignature as ready. At its restart node 2 sees its store is behind its guard file and
/// retires every presignature: a coordinator that offers the used one again (compromised, or
/// itself rolled back) is refused instead of getting a second partial signature with it, which
/// would give the key away. The cluster signs on, and node 2 signs with new presignatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_store_was_copied_back_never_signs_with_a_used_presignature_again() {
    let (mut c, net) = cluster(3, 2).await;
    let n1 = c.nodes[0].clone();
    let (ecdsa, presigned) = presigned_wallet(&n1).await;
    let spend = |funding: &str| ecdsa.spend(funding);
    let wallets = std::slice::from_ref(&ecdsa.id);

    // A normal restart of node 2 (its store copied meanwhile) keeps both presignatures.
    let copy = c._dir.0.join("node-2-copy");
    restart(&mut c, &net, 2, |data| copy_store_files(data, &copy)).await;
    let store2 = c.nodes[1].store().clone();
    assert_eq!(store2.epoch().await.unwrap(), 1);
    for id in &presigned.ids {
        let p = store2.presignature(id).await.unwrap().unwrap();
        assert_eq!(p.state, mpc_store::PresignatureState::Ready, "{id}");
    }

    // Signed with one of them: consumed at nodes 1 and 2.
    let report = n1
        .sign_psbt(Uuid::new_v4(), wallets, &spend("a"))
        .await
        .unwrap();
    assert_eq!(report.inputs[0].method, "presignature");
    let used = report.inputs[0].presignature.clone().unwrap();

    // Node 2's store goes back to the copy, where `used` is ready again.
    restart(&mut c, &net, 2, |data| copy_store_files(&copy, data)).await;
    let store2 = c.nodes[1].store().clone();
    assert_eq!(
        store2.epoch().await.unwrap(),
        2,
        "a new epoch at the restart"
    );
    for id in &presigned.ids {
        let p = store2.presignature(id).await.unwrap().unwrap();
        assert_eq!(p.state, mpc_store::PresignatureState::Expired, "{id}");
    }

    // A coordinator asks node 2 alone for a partial signature of another transaction with the
    // used presignature: refused.
    let err = n1
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                wallet_ids: vec![ecdsa.id.clone()],
                psbt: spend("b"),
                signers: vec![1, 2],
                presignatures: vec![Some(used.clone())],
            },
            &[2],
            Duration::from_secs(10),
            None,
        )
        .await
        .expect_err("node 2 gave a second partial signature with a used presignature");
    assert!(
        matches!(&err, NodeError::Refused { node: 2, reason } if reason.contains("already used")),
        "{err}"
    );

    // The cluster signs on: node 1's offer of the other presignature is refused by node 2 too,
    // and the retry without node 2 signs interactively.
    let report = n1
        .sign_psbt(Uuid::new_v4(), wallets, &spend("c"))
        .await
        .unwrap();
    assert_eq!(report.signers, [1, 3], "{:?}", report.attempts);

    // Node 2 signs again with presignatures of its new epoch.
    let fresh = n1
        .generate_presignatures(
            Uuid::new_v4(),
            &ecdsa.id,
            &EcdsaWallet::path(),
            1,
            Some(vec![1, 2]),
            None,
        )
        .await
        .unwrap();
    let report = n1
        .sign_psbt(Uuid::new_v4(), wallets, &spend("d"))
        .await
        .unwrap();
    assert_eq!(report.signers, [1, 2]);
    assert_eq!(report.inputs[0].presignature.as_ref(), fresh.ids.first());
}
