//! Five real node processes on loopback (QUIC + mutual TLS, one SQLite store each), driven
//! only through the network: keygen for both schemes, a mixed P2WPKH + P2TR
//! transaction (one input from a presignature), attacks on one node's mesh endpoint, a signer
//! killed mid-signing, and a restart of every node from its store.

use mpc_types::NodeId;
use std::{
    collections::HashSet,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use mpc_api::Role;
use mpc_bitcoin::{psbt::parse_psbt, Chain, WalletKey};
use mpc_node::{
    control::{Control, Proposal, ProposalBody},
    refusal::RefusalKind,
};
use mpc_transport::{
    certs::{self, ClusterCa, TlsIdentity},
    quic::{MeshConfig, PeerConfig, QuicMesh},
    ControlInbox, Envelope, Router, RouterLimits, SessionId, Transport,
};
use mpc_wallet::{
    client::{ApiClient, ClientError},
    devnet::{synthetic_payment, verify_answer, wallet_key_from_api, Devnet, DevnetOptions},
};
use nix::sys::signal::Signal;
use serde_json::Value;
use uuid::Uuid;

const N1: NodeId = NodeId::must(1);
const N2: NodeId = NodeId::must(2);
const N3: NodeId = NodeId::must(3);

fn options(dir: &Path) -> DevnetOptions {
    let mut options = DevnetOptions::for_signing_tests(
        dir.to_path_buf(),
        env!("CARGO_BIN_EXE_mpc-wallet").into(),
    );
    // Aux info over the network is the devnet's (the README's first command, which the test
    // script runs and checks): run here too it cost two minutes of CPU. The nodes start from
    // the checked-in aux info (the API test calls the route and sees it refuse a second run).
    options.aux_info_fixture = true;
    options
}

async fn sign(
    client: &ApiClient,
    wallet: &mpc_types::WalletId,
    also: &[&mpc_types::WalletId],
    psbt: &str,
) -> Result<Value, ClientError> {
    let request = mpc_api::routes::SignRequest {
        psbt: psbt.to_owned(),
        additional_wallets: also.iter().map(|w| (*w).clone()).collect(),
    };
    client.sign_psbt(wallet, &request).await
}

fn spend(inputs: &[(&WalletKey, &str, u64)], to: &WalletKey) -> String {
    synthetic_payment(inputs, to, 9, 2_000).unwrap()
}

async fn refused(client: &ApiClient) -> (u64, u64) {
    let h: Value = client.cluster_health().await.unwrap();
    (
        h["refused"]["connections"].as_u64().unwrap(),
        h["refused"]["frames"].as_u64().unwrap(),
    )
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A rogue endpoint that dials node `target` of the devnet as node `me`.
async fn rogue(
    devnet: &Devnet,
    me: NodeId,
    target: NodeId,
    identity: TlsIdentity,
    max_frame: usize,
) -> (QuicMesh, ControlInbox) {
    let target_addr = devnet.nodes.iter().find(|n| n.id == target).unwrap().quic;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = MeshConfig::new(
        me,
        SocketAddr::from(([127, 0, 0, 1], port)),
        vec![PeerConfig {
            id: target,
            address: target_addr,
        }],
        identity,
    );
    config.max_frame_bytes = max_frame;
    let (router, control) = Router::new(me, RouterLimits::default());
    (QuicMesh::start(config, router).await.unwrap(), control)
}

fn identity(
    dir: &Path,
    ca: &ClusterCa,
    id: NodeId,
    not_before: time::OffsetDateTime,
    days: i64,
) -> TlsIdentity {
    let cert = ca
        .issue_node(id, &["127.0.0.1".parse().unwrap()], not_before, days)
        .unwrap();
    TlsIdentity {
        ca_pem: std::fs::read_to_string(certs::ca_cert_path(dir)).unwrap(),
        cert_pem: cert.cert_pem,
        key_pem: cert.key_pem,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_node_processes_generate_sign_survive_attacks_a_killed_signer_and_a_restart() {
    let dir = std::env::temp_dir().join(format!("mpc-cluster-test-{}", Uuid::new_v4()));
    let mut devnet = Devnet::launch(options(&dir)).await.unwrap();
    let all: Vec<u16> = (1..=5).collect();
    let admin = devnet.client(1, Role::Admin).unwrap();
    let signer = devnet.client(1, Role::Signer).unwrap();
    let mut r_values: Vec<Vec<u8>> = Vec::new();

    // ---- ceremonies through the network ------------------------------------------------
    let ecdsa = admin
        .keygen(
            &mpc_api::routes::KeygenRequest::new(mpc_bitcoin::Scheme::Ecdsa, "e"),
            None,
        )
        .await
        .unwrap();
    let taproot = admin
        .keygen(
            &mpc_api::routes::KeygenRequest::new(mpc_bitcoin::Scheme::Schnorr, "t"),
            None,
        )
        .await
        .unwrap();
    let (eid, tid) = (
        mpc_wallet::commands::wallet_id_of(&ecdsa).unwrap(),
        mpc_wallet::commands::wallet_id_of(&taproot).unwrap(),
    );
    // Every node reports the same wallet.
    for id in 1..=5 {
        let w: Value = devnet
            .client(id, Role::Viewer)
            .unwrap()
            .wallet(&eid)
            .await
            .unwrap();
        assert_eq!(w["public_key"], ecdsa["public_key"]);
        assert_eq!(w["state"], "active");
    }
    let ekey = wallet_key_from_api(&ecdsa).unwrap();
    let tkey = wallet_key_from_api(&taproot).unwrap();
    admin
        .presignatures(
            &eid,
            &mpc_api::routes::PresignRequest::new("m/0/0", 2),
            None,
        )
        .await
        .unwrap();

    // ---- a mixed transaction, one input from a presignature ------------------------------
    let psbt = spend(&[(&ekey, "m/0/0", 50_000), (&tkey, "m/0/0", 60_000)], &tkey);
    let first = sign(&signer, &eid, &[&tid], &psbt).await.unwrap();
    let methods: Vec<&str> = first["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["presignature", "frost"]);
    r_values.extend(verify_answer(&first).unwrap());
    let first_signers: Vec<NodeId> = serde_json::from_value(first["signers"].clone()).unwrap();

    // ---- attacks on node 3's mesh endpoint; node 3 keeps serving ------------------------
    let node3 = devnet.client(3, Role::Viewer).unwrap();
    let cert_dir = dir.join("certs");
    let ca = ClusterCa::from_pem(
        &std::fs::read_to_string(certs::ca_cert_path(&cert_dir)).unwrap(),
        &std::fs::read_to_string(certs::ca_key_path(&cert_dir)).unwrap(),
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let (conns0, frames0) = refused(&node3).await;

    // A certificate from another CA.
    let stranger = ClusterCa::generate("stranger", 1).unwrap();
    let (mesh, _) = rogue(
        &devnet,
        N2,
        N3,
        identity(&cert_dir, &stranger, N2, now - time::Duration::hours(1), 1),
        4 << 20,
    )
    .await;
    let _ = mesh
        .send(
            N3,
            Envelope {
                protocol: 0,
                session: SessionId([1; 16]),
                round: 0,
                from: N2,
                to: Some(N3),
                payload: vec![],
                signature: None,
            },
        )
        .await;
    wait_for("the foreign certificate to be refused", async || {
        refused(&node3).await.0 > conns0
    })
    .await;
    drop(mesh);
    // An expired certificate from the right CA.
    let (conns1, _) = refused(&node3).await;
    let (mesh, _) = rogue(
        &devnet,
        N2,
        N3,
        identity(&cert_dir, &ca, N2, now - time::Duration::days(3), 1),
        4 << 20,
    )
    .await;
    let _ = mesh
        .send(
            N3,
            Envelope {
                protocol: 0,
                session: SessionId([1; 16]),
                round: 0,
                from: N2,
                to: Some(N3),
                payload: vec![],
                signature: None,
            },
        )
        .await;
    wait_for("the expired certificate to be refused", async || {
        refused(&node3).await.0 > conns1
    })
    .await;
    drop(mesh);

    // Node 2's real certificate (stolen; node 2 itself is stopped meanwhile, or the two would
    // keep replacing each other's connection), used to claim to be node 1, to send garbage,
    // an oversize frame, a replayed protocol message and a replayed proposal.
    devnet.stop(2, Signal::SIGTERM).unwrap();
    let node2 = TlsIdentity::load(
        &certs::ca_cert_path(&cert_dir),
        &certs::node_cert_path(&cert_dir, N2),
        &certs::node_key_path(&cert_dir, N2),
    )
    .unwrap();
    let (mesh, mut control) = rogue(&devnet, N2, N3, node2, 16 << 20).await;
    let envelope = |from: NodeId, session: SessionId, protocol: u8, payload: Vec<u8>| Envelope {
        protocol,
        session,
        round: 1,
        from,
        to: None,
        payload,
        signature: None,
    };
    // A message for a session nobody runs: held for session_hold_ms, then dropped.
    mesh.send(N3, envelope(N2, SessionId([9; 16]), 6, b"unknown".to_vec()))
        .await
        .unwrap();
    mesh.send(
        N3,
        envelope(N1, SessionId([7; 16]), 6, b"I am node 1".to_vec()),
    )
    .await
    .unwrap();
    mesh.send_raw_frame(N3, b"\x00\x00\x00\x10not an envelope at all")
        .await
        .unwrap();
    // Node 3 stops reading at its limit, so the sender sees its stream stopped.
    let _ = mesh
        .send(N3, envelope(N2, SessionId([8; 16]), 6, vec![0; 5 << 20]))
        .await;
    let old_sub_session =
        SessionId::from_uuid(first["session"].as_str().unwrap().parse().unwrap()).derive("input/1");
    mesh.send(N3, envelope(N2, old_sub_session, 6, b"replayed".to_vec()))
        .await
        .unwrap();
    wait_for("four refused frames", async || {
        refused(&node3).await.1 >= frames0 + 4
    })
    .await;
    // A replayed signing proposal (same session id as the first signing).
    if first_signers.contains(&N3) {
        let session: Uuid = first["session"].as_str().unwrap().parse().unwrap();
        let proposal = Control::Propose(Proposal {
            session,
            body: ProposalBody::Sign {
                key_epochs: Vec::new(),
                wallet_ids: vec![eid.clone(), tid.clone()],
                psbt: psbt.clone(),
                signers: first_signers.clone(),
                presignatures: vec![None, None],
                approvals: None,
            },
            fencing_token: None,
        });
        mesh.send(N3, proposal.envelope(session, N2, N3).unwrap())
            .await
            .unwrap();
        // Node 3 takes the rogue for node 2: skip its heartbeats, wait for the answer.
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let envelope = control.recv().await.unwrap();
                match Control::from_envelope(&envelope).unwrap() {
                    Control::Heartbeat { .. } => continue,
                    other => return other,
                }
            }
        })
        .await
        .unwrap();
        match outcome {
            Control::Outcome {
                result: Err(refusal),
                ..
            } => assert_eq!(
                refusal.kind,
                RefusalKind::SessionReplayed { session },
                "{refusal:?}"
            ),
            other => panic!("replayed proposal answered with {other:?}"),
        }
    }
    drop(mesh);
    devnet.start(2).unwrap();
    let log3 = std::fs::read_to_string(devnet.node_dir(3).join("node.log")).unwrap();
    for needle in [
        "TLS handshake refused",
        "sender field says node 1",
        "frame exceeds",
        "has finished (replayed message)",
    ] {
        assert!(log3.contains(needle), "node 3's log lacks {needle:?}");
    }
    // Still serving: every node live, and node 3 coordinates a signing.
    devnet
        .wait_live(&all, 5, Duration::from_secs(20))
        .await
        .unwrap();
    let again = sign(
        &devnet.client(3, Role::Signer).unwrap(),
        &tid,
        &[],
        &spend(&[(&tkey, "m/0/2", 30_000)], &tkey),
    )
    .await
    .unwrap();
    verify_answer(&again).unwrap();
    // Held messages expire at the node's next sweep after session_hold_ms (1 s here); the
    // sweep runs with the heartbeat, so under load it may come after the signing above.
    let log = devnet.node_dir(3).join("node.log");
    wait_for("node 3 to drop the unknown-session message", async || {
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("never registered")
    })
    .await;

    // ---- foreign inputs are refused, with the input named --------------------------------
    let mut foreign = parse_psbt(&spend(&[(&ekey, "m/0/3", 10_000)], &tkey)).unwrap();
    foreign.inputs[0]
        .witness_utxo
        .as_mut()
        .unwrap()
        .script_pubkey = tkey
        .chain_address(Chain::Receive, 3)
        .unwrap()
        .script_pubkey();
    match sign(&signer, &eid, &[], &foreign.to_string()).await {
        Err(ClientError::Api {
            status: 422,
            code,
            message,
            ..
        }) => {
            assert_eq!(code, "psbt_refused");
            assert!(message.contains("input 0"), "{message}");
        }
        other => panic!("foreign input accepted: {other:?}"),
    }

    // ---- a signer killed mid-signing -------------------------------------------------------
    // Interactive ECDSA (no presignature for m/0/5) takes seconds; kill a non-coordinator
    // signer during it. The attempt fails naming it; the retry with another set succeeds.
    let psbt = spend(&[(&ekey, "m/0/5", 40_000)], &tkey);
    let signing = tokio::spawn({
        let signer = signer.clone();
        let eid = eid.clone();
        async move { sign(&signer, &eid, &[], &psbt).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let victim = 2;
    devnet.stop(victim, Signal::SIGKILL).unwrap();
    let answer = signing.await.unwrap().unwrap();
    let attempts = answer["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let failure = attempts[0]["error"].as_str().unwrap();
    assert!(
        failure.contains(&format!("[{victim}]")),
        "the failure names node {victim}: {failure}"
    );
    let final_signers: Vec<u16> = serde_json::from_value(answer["signers"].clone()).unwrap();
    assert!(!final_signers.contains(&victim));
    r_values.extend(verify_answer(&answer).unwrap());

    // The spare presignature still signs with the victim down if its set is live; otherwise
    // the coordinator falls back to interactive signing. Either way, no r repeats.
    devnet.start(victim).unwrap();
    devnet
        .wait_live(&all, 5, Duration::from_secs(30))
        .await
        .unwrap();
    let answer = sign(
        &signer,
        &eid,
        &[],
        &spend(&[(&ekey, "m/0/0", 20_000)], &tkey),
    )
    .await
    .unwrap();
    r_values.extend(verify_answer(&answer).unwrap());

    // ---- restart every node from its store: the same wallets sign again -----------------
    devnet.stop_all().unwrap();
    devnet.start_all().unwrap();
    devnet
        .wait_live(&all, 5, Duration::from_secs(60))
        .await
        .unwrap();
    let after = sign(
        &signer,
        &eid,
        &[&tid],
        &spend(&[(&ekey, "m/1/0", 30_000), (&tkey, "m/1/0", 30_000)], &tkey),
    )
    .await
    .unwrap();
    r_values.extend(verify_answer(&after).unwrap());
    let w: Value = signer.wallet(&eid).await.unwrap();
    assert_eq!(w["public_key"], ecdsa["public_key"]);

    // No two ECDSA signatures in this test share a nonce.
    let distinct: HashSet<&Vec<u8>> = r_values.iter().collect();
    assert_eq!(distinct.len(), r_values.len(), "an ECDSA nonce was reused");
    assert!(r_values.len() >= 4);

    drop(devnet);
    let _ = std::fs::remove_dir_all(&dir);
}
