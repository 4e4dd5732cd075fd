//! Writes the valid seeds of `fuzz/corpus/` with the real encoders (and a truncated copy of
//! each, as a malformed seed). Ignored: the seeds are checked in. To regenerate (aux info
//! takes a minute or two on 2 cores):
//!
//! ```sh
//! cargo test -p mpc-fuzz --test generate -- --ignored --nocapture
//! ```
//!
//! Files are named `seed-*` and `trunc-*`; crash regressions (`crash-*`) are never rewritten.

use std::{
    convert::Infallible,
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    channel::mpsc::{unbounded, UnboundedSender},
    Sink, StreamExt,
};
use mpc_bitcoin::{
    bitcoin::{Amount, ScriptBuf},
    build::{build_psbt, synthetic_funding, Payment},
    Chain,
};
use mpc_node::{
    control::{Control, InputOutcome, Outcome, Proposal, ProposalBody, WalletSpec},
    refusal::{InputRefusal, Refusal, RefusalKind},
};
use mpc_protocols::{
    ecdsa::{self, SighashPreimage},
    encoding,
    execution::{ExecutionId, ProtocolKind},
    refresh, schnorr, DerivationPath, PartyIndex,
};
use mpc_transport::{Envelope, NodeId, SessionId, CONTROL};
use rand_core::OsRng;
use round_based::{Incoming, MessageDestination, MessageType, MpcParty, Outgoing, ProtocolMessage};
use serde::Serialize;
use uuid::Uuid;

fn corpus(target: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    dir
}

/// Writes `seed-<name>` and, for inputs long enough to cut and small enough to be worth a
/// second copy, `trunc-<name>` (its first half).
fn seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus(target);
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
    if (8..=16 << 10).contains(&bytes.len()) {
        std::fs::write(dir.join(format!("trunc-{name}")), &bytes[..bytes.len() / 2])
            .expect("write seed");
    }
}

/// Removes the generated seeds of `target` (not crash regressions).
fn clear(target: &str) {
    for entry in std::fs::read_dir(corpus(target)).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("seed-") || name.starts_with("trunc-") {
            std::fs::remove_file(&path).expect("remove seed");
        }
    }
}

// ---- a simulated network that records every message, CBOR-encoded, by round ----

type Log = Arc<Mutex<Vec<(u16, Vec<u8>)>>>;

struct Recording<M> {
    me: PartyIndex,
    peers: Arc<Vec<UnboundedSender<Incoming<M>>>>,
    log: Log,
}

impl<M: Clone + Serialize + ProtocolMessage> Sink<Outgoing<M>> for Recording<M> {
    type Error = Infallible;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, out: Outgoing<M>) -> Result<(), Infallible> {
        let bytes = encoding::encode(&out.msg).expect("encode message");
        self.log.lock().expect("log").push((out.msg.round(), bytes));
        let send = |to: usize, msg_type, msg| {
            let _ = self.peers[to].unbounded_send(Incoming {
                id: 0,
                sender: self.me.get(),
                msg_type,
                msg,
            });
        };
        match out.recipient {
            MessageDestination::AllParties => {
                for to in (0..self.peers.len()).filter(|j| *j != self.me.as_usize()) {
                    send(to, MessageType::Broadcast, out.msg.clone());
                }
            }
            MessageDestination::OneParty(to) => send(usize::from(to), MessageType::P2P, out.msg),
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs `n` parties as `mpc_protocols::sim::run` does; returns the outputs and the first
/// message of each round (party 0's where it sent one).
fn record<M, T, F, Fut>(n: u16, protocol: F) -> (Vec<T>, Vec<(u16, Vec<u8>)>)
where
    M: Clone + Send + Serialize + ProtocolMessage + 'static,
    T: Send,
    F: Fn(PartyIndex, RecParty<M>) -> Fut + Sync,
    Fut: Future<Output = T>,
{
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| unbounded()).unzip();
    let peers = Arc::new(senders);
    let logs: Vec<Log> = (0..n).map(|_| Log::default()).collect();
    let protocol = &protocol;
    let outputs = std::thread::scope(|scope| {
        let handles: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| {
                let outgoing = Recording {
                    me: PartyIndex::new(i as u16),
                    peers: peers.clone(),
                    log: logs[i].clone(),
                };
                let incoming = rx.map(Ok::<_, Infallible> as fn(_) -> _);
                scope.spawn(move || {
                    let party = MpcParty::connected((incoming, outgoing));
                    futures::executor::block_on(protocol(PartyIndex::new(i as u16), party))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("party"))
            .collect()
    });
    let mut picked: Vec<(u16, Vec<u8>)> = Vec::new();
    for log in &logs {
        for (round, bytes) in log.lock().expect("log").iter() {
            if !picked.iter().any(|(r, _)| r == round) {
                picked.push((*round, bytes.clone()));
            }
        }
    }
    picked.sort_by_key(|(r, _)| *r);
    (outputs, picked)
}

type RecParty<M> = MpcParty<
    M,
    (
        futures::stream::Map<
            futures::channel::mpsc::UnboundedReceiver<Incoming<M>>,
            fn(Incoming<M>) -> Result<Incoming<M>, Infallible>,
        >,
        Recording<M>,
    ),
>;

/// The first party's output of a run.
fn first<T, E: std::fmt::Debug>(outputs: Vec<Result<T, E>>, what: &str) -> T {
    match outputs.into_iter().next() {
        Some(Ok(v)) => v,
        other => panic!("{what}: {other:?}", other = other.map(|r| r.err())),
    }
}

fn write_rounds(target: &str, prefix: &str, messages: &[(u16, Vec<u8>)]) {
    for (round, bytes) in messages {
        seed(target, &format!("{prefix}-round{round}"), bytes);
    }
}

fn eid(kind: ProtocolKind, parties: &[PartyIndex], params: &[u8]) -> ExecutionId {
    ExecutionId::derive(kind, "fuzz", Uuid::from_bytes([5; 16]), parties, params)
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand (see the file's doc)"]
fn generate_corpus() {
    for (name, _) in mpc_fuzz::TARGETS {
        clear(name);
    }
    let started = std::time::Instant::now();
    transport_and_api_seeds();
    psbt_seeds();
    protocol_and_control_seeds();
    backup_seed();
    eprintln!("corpus written in {:?}", started.elapsed());
}

fn transport_and_api_seeds() {
    let env = |protocol, round, from, to: Option<NodeId>, payload: &[u8]| Envelope {
        protocol,
        session: mpc_fuzz::FRAME_SESSION,
        round,
        from,
        to,
        payload: payload.to_vec(),
        signature: None,
    };
    let p2p = env(
        3,
        2,
        mpc_fuzz::FRAME_PEER,
        Some(mpc_fuzz::FRAME_ME),
        b"\xa1\x61a\x01",
    );
    let broadcast = env(3, 1, mpc_fuzz::FRAME_PEER, None, b"\x80");
    let control = Envelope {
        session: SessionId([9; 16]),
        ..env(
            CONTROL,
            0,
            mpc_fuzz::FRAME_PEER,
            Some(mpc_fuzz::FRAME_ME),
            b"\xa1\x66Commit",
        )
    };
    let held = Envelope {
        session: SessionId([8; 16]),
        ..broadcast.clone()
    };
    for (name, e) in [
        ("p2p", &p2p),
        ("broadcast", &broadcast),
        ("control", &control),
    ] {
        seed("envelope", name, &e.encode());
    }
    let framed = |e: &Envelope| {
        let body = e.encode();
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    };
    seed("frame", "one", &framed(&p2p));
    evidence_seeds(&p2p);
    // A stream: a message, its duplicate, an equivocation, a held one, a control message.
    let equivocation = env(
        3,
        2,
        mpc_fuzz::FRAME_PEER,
        Some(mpc_fuzz::FRAME_ME),
        b"\x01",
    );
    let stream: Vec<u8> = [&p2p, &p2p, &equivocation, &held, &control, &broadcast]
        .into_iter()
        .flat_map(framed)
        .collect();
    seed("frame", "stream", &stream);
    let impostor = env(3, 2, NodeId::must(5), Some(mpc_fuzz::FRAME_ME), b"");
    seed("frame", "impostor", &framed(&impostor));

    let api = [
        (
            "api_dkg",
            "frost",
            r#"{"protocol":"frost","name":"treasury"}"#,
        ),
        (
            "api_dkg",
            "full",
            r#"{"protocol":"cggmp24","name":"hot","threshold":3,"participants":[1,2,3,4,5],"network":"regtest"}"#,
        ),
        ("api_presign", "count", r#"{"count":10}"#),
        (
            "api_presign",
            "full",
            r#"{"path":"m/0/7","count":100,"signers":[1,3,4]}"#,
        ),
        (
            "api_sign",
            "psbt",
            r#"{"psbt":"cHNidP8BAAoCAAAAAAAAAAAAAA=="}"#,
        ),
        (
            "api_sign",
            "additional",
            r#"{"psbt":"cHNidP8=","additional_wallets":["w2","w3"]}"#,
        ),
        (
            "api_utxos",
            "two",
            r#"{"utxos":[{"outpoint":"4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b:0","path":"m/0/0","amount_sats":50000},{"outpoint":"4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b:1","path":"m/0/1","funding_transaction":"0200000000"}]}"#,
        ),
        (
            "api_transaction",
            "pay",
            r#"{"wallet_id":"w1","recipient":"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080","amount_sats":50000,"fee_rate_sat_vb":2.5}"#,
        ),
        (
            "api_transaction",
            "unknown-field",
            r#"{"wallet_id":"w1","x":1}"#,
        ),
    ];
    for (target, name, json) in api {
        seed(target, name, json.as_bytes());
    }

    let config = r#"id = 1
data_dir = "/var/lib/mpc-wallet"

[tls]
ca = "certs/ca.pem"
certificate = "certs/node-1.pem"
private_key = "certs/node-1-key.pem"

[store]
key_file = "/etc/mpc-wallet/kek.key"

[cluster]
threshold = 2
network = "regtest"
nodes = [
  { id = 1, address = "127.0.0.1:7001", api = "127.0.0.1:8101" },
  { id = 2, address = "127.0.0.1:7002", api = "127.0.0.1:8102" },
  { id = 3, address = "127.0.0.1:7003", api = "127.0.0.1:8103" },
]
"#;
    seed("config", "minimal", config.as_bytes());
    let full = format!(
        r#"{config}
[api]
listen = "127.0.0.1:8101"
rate_limit_per_second = 50

[policy]
max_amount_per_tx_sats = 10_000_000
max_amount_per_24h_sats = 50_000_000
allowed_destinations = ["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"]
max_fee_sats = 100_000
max_fee_rate_sat_vb = 500.0
change_gap = 20

[pool]
leader = 1
defaults = {{ target = 100, low_water = 20, max = 150, batch = 20, ttl_ms = 3_600_000 }}

[coordination]
backend = "static"

[limits]
max_frame_bytes = 4_194_304
sign_timeout_ms = 10_000
max_inputs_per_psbt = 100
"#
    );
    seed("config", "full", full.as_bytes());
    mpc_node::NodeConfig::from_toml(config).expect("minimal config seed loads");
    mpc_node::NodeConfig::from_toml(&full).expect("full config seed loads");

    let jwt = mpc_fuzz::jwt_verifier();
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    for role in [mpc_api::Role::Admin, mpc_api::Role::Viewer] {
        let token = jwt.issue("fuzz", role, century).expect("token");
        seed("jwt", role.as_str(), format!("Bearer {token}").as_bytes());
    }
    let claims = mpc_api::auth::Claims::new(
        "fuzz",
        mpc_api::Role::Signer,
        "mpc-wallet",
        "mpc-wallet-api",
        century,
    );
    let ed = mpc_api::auth::issue_with_private_key(
        "EdDSA",
        include_bytes!("../../api/tests/keys/ed25519-private.pem"),
        &claims,
    )
    .expect("EdDSA token");
    seed("jwt", "eddsa", format!("Bearer {ed}").as_bytes());
    seed(
        "jwt",
        "alg-none",
        b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    );
}

fn psbt_seeds() {
    let [ecdsa_key, schnorr_key] = mpc_fuzz::psbt_wallets().clone();
    let path = |s: &str| s.parse::<DerivationPath>().expect("path");
    let a = synthetic_funding(&ecdsa_key, &path("m/0/0"), Amount::from_sat(200_000), "a")
        .expect("funding");
    let b = synthetic_funding(&schnorr_key, &path("m/0/1"), Amount::from_sat(300_000), "b")
        .expect("funding");
    let pay = Payment {
        script_pubkey: ecdsa_key
            .chain_address(Chain::Receive, 5)
            .expect("address")
            .script_pubkey(),
        amount: Amount::from_sat(150_000),
        owner: None,
    };
    let change = Payment {
        script_pubkey: schnorr_key.script_pubkey(&path("m/1/2")).expect("script"),
        amount: Amount::from_sat(340_000),
        owner: Some((schnorr_key.clone(), path("m/1/2"))),
    };
    let op_return = Payment {
        script_pubkey: ScriptBuf::new_op_return([0x6d; 20]),
        amount: Amount::ZERO,
        owner: None,
    };
    let cases = [
        ("p2wpkh", vec![a.clone()], vec![pay.clone()]),
        ("p2tr", vec![b.clone()], vec![pay.clone(), change.clone()]),
        ("mixed", vec![a, b], vec![pay, change, op_return]),
    ];
    for (name, inputs, payments) in cases {
        let psbt = build_psbt(&inputs, &payments).expect("psbt");
        let bytes = psbt.serialize();
        mpc_fuzz::psbt(&bytes);
        seed("psbt", name, &bytes);
    }
}

fn protocol_and_control_seeds() {
    let aux = mpc_testkit::aux_info(3);
    // ECDSA key generation, 2-of-3.
    let all = [PartyIndex::new(0), PartyIndex::new(1), PartyIndex::new(2)];
    let keygen_eid = eid(ProtocolKind::EcdsaKeygen, &all, &[2]);
    let (incomplete, msgs) = record(3, |i, party| {
        let eid = keygen_eid;
        async move { ecdsa::keygen(&eid, i, 3, 2, party, &mut OsRng).await }
    });
    write_rounds("ecdsa_keygen_msg", "keygen", &msgs);
    let shares: Vec<ecdsa::EcdsaKeyShare> = incomplete
        .into_iter()
        .zip(aux.iter().cloned())
        .map(|(s, a)| ecdsa::EcdsaKeyShare::from_parts(s.expect("keygen"), a).expect("share"))
        .collect();
    // Presignatures and interactive signing: the same message type.
    let signers = [PartyIndex::new(0), PartyIndex::new(2)];
    let path: DerivationPath = "m/0/3".parse().expect("path");
    let presign_eid = eid(ProtocolKind::EcdsaPresign, &signers, &path.to_bytes());
    let (presignatures, msgs) = record(2, |j, party| {
        let (eid, share, path) = (
            presign_eid,
            &shares[signers[j.as_usize()].as_usize()],
            &path,
        );
        async move { ecdsa::presign(&eid, share, &signers, path, party, &mut OsRng).await }
    });
    write_rounds("ecdsa_signing_msg", "presign", &msgs);
    let message = SighashPreimage::new(b"fuzz: a preimage".to_vec());
    let sign_eid = eid(ProtocolKind::EcdsaSign, &signers, &message.sighash());
    let (signatures, msgs) = record(2, |j, party| {
        let (eid, share, path, message) = (
            sign_eid,
            &shares[signers[j.as_usize()].as_usize()],
            &path,
            &message,
        );
        async move { ecdsa::sign(&eid, share, &signers, path, message, party, &mut OsRng).await }
    });
    // Only the rounds presigning has not already given.
    let presign_rounds: Vec<u16> = std::fs::read_dir(corpus("ecdsa_signing_msg"))
        .expect("corpus")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("seed-presign-round")?
                .split('-')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let msgs: Vec<_> = msgs
        .into_iter()
        .filter(|(r, _)| !presign_rounds.contains(r))
        .collect();
    write_rounds("ecdsa_signing_msg", "sign", &msgs);
    let signature = first(signatures, "signature");
    let presignature = first(presignatures, "presign");
    let public = presignature.public().clone();
    let partial = presignature
        .issue_partial_signature(&shares[0], &path, &signers, &message)
        .expect("partial");

    // FROST key generation 2-of-3 and one signing.
    let frost_eid = eid(ProtocolKind::SchnorrKeygen, &all, &[2]);
    let (frost, msgs) = record(3, |i, party| {
        let eid = frost_eid;
        async move { schnorr::keygen(&eid, i, 3, 2, party, &mut OsRng).await }
    });
    write_rounds("frost_keygen_msg", "keygen", &msgs);
    let frost: Vec<_> = frost
        .into_iter()
        .map(|s| s.expect("frost keygen"))
        .collect();
    let sighash = [0x42; 32];
    let (frost_shares, msgs) = record(2, |j, party| {
        let (share, path) = (&frost[signers[j.as_usize()].as_usize()], &path);
        async move { schnorr::sign_share(share, &signers, path, &sighash, party, &mut OsRng).await }
    });
    write_rounds("frost_signing_msg", "sign", &msgs);
    let frost_share = first(frost_shares, "share");
    // Key refresh of the FROST key (the message type is the same for ECDSA).
    let refresh_eid = eid(ProtocolKind::KeyRefresh, &all, &[2]);
    let (_, msgs) = record(3, |i, party| {
        let (eid, share) = (refresh_eid, &frost[i.as_usize()]);
        async move { refresh::refresh_schnorr(&eid, share, party, &mut OsRng).await }
    });
    write_rounds("refresh_msg", "refresh", &msgs);

    // Control messages, one of each kind.
    let session = Uuid::from_bytes([3; 16]);
    let wallet = WalletSpec {
        id: "w1".into(),
        name: "treasury".into(),
        scheme: mpc_bitcoin::Scheme::Schnorr,
        threshold: 2,
        participants: NodeId::must_list(&[1, 2, 3]),
        network: mpc_bitcoin::Network::Regtest,
    };
    let propose = |body| {
        Control::Propose(Proposal {
            session,
            body,
            fencing_token: Some(7),
        })
    };
    let psbt_b64 = {
        let bytes = std::fs::read(corpus("psbt").join("seed-mixed")).expect("psbt seed");
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
    };
    let controls = [
        (
            "heartbeat",
            Control::Heartbeat {
                version: "0.1.0".into(),
                sent_at_ms: 1_700_000_000_000,
            },
        ),
        (
            "aux-info",
            propose(ProposalBody::AuxInfo {
                node_set: NodeId::must_list(&[1, 2, 3]),
            }),
        ),
        ("keygen", propose(ProposalBody::Keygen { wallet })),
        (
            "presign",
            propose(ProposalBody::Presign {
                wallet_id: "w1".into(),
                path: path.clone(),
                signers: NodeId::must_list(&[1, 3]),
                count: 20,
            }),
        ),
        (
            "sign",
            propose(ProposalBody::Sign {
                wallet_ids: vec!["w1".into(), "w2".into()],
                psbt: psbt_b64.clone(),
                signers: NodeId::must_list(&[1, 3]),
                presignatures: vec![Some("p1".into()), None, None],
                approvals: None,
            }),
        ),
        (
            "outcome-sign",
            Control::Outcome {
                session,
                result: Ok(Outcome::Sign {
                    inputs: vec![
                        InputOutcome::Partial { partial, public },
                        InputOutcome::Ecdsa(signature),
                        InputOutcome::FrostShare(frost_share),
                    ],
                }),
            },
        ),
        (
            "outcome-keygen",
            Control::Outcome {
                session,
                result: Ok(Outcome::Keygen {
                    public_key: frost[0].public_key(),
                    chain_code: "00".repeat(32),
                }),
            },
        ),
        (
            "outcome-refused",
            Control::Outcome {
                session,
                result: Err(Refusal {
                    kind: RefusalKind::Inputs {
                        inputs: vec![InputRefusal {
                            input: 0,
                            code: "not_ours".into(),
                            reason: "no derivation".into(),
                        }],
                    },
                    message: "refused".into(),
                    evidence: None,
                }),
            },
        ),
        ("commit", Control::Commit { session }),
        (
            "abort",
            Control::Abort {
                session,
                reason: "timeout".into(),
            },
        ),
        (
            "signed",
            Control::Signed {
                wallet_ids: vec!["w1".into()],
                psbt: psbt_b64,
                raw_transaction: "0200000000".into(),
            },
        ),
    ];
    for (name, control) in controls {
        let envelope = control
            .envelope(session, NodeId::must(2), NodeId::must(1))
            .expect("control");
        seed("control", name, &envelope.payload);
    }

    // Aux info last: the slowest, and its messages are the largest.
    let primes = mpc_testkit::primes();
    let aux_eid = eid(ProtocolKind::AuxInfo, &PartyIndex::list(&[0, 1]), &[]);
    let primes = Mutex::new(primes.into_iter().map(Some).collect::<Vec<_>>());
    let (results, msgs) = record(2, |i, party| {
        let mine = primes.lock().expect("primes")[i.as_usize()]
            .take()
            .expect("primes");
        let eid = aux_eid;
        async move { ecdsa::generate_aux_info(&eid, i, 2, mine, party, &mut OsRng).await }
    });
    for r in results {
        r.expect("aux info");
    }
    // Two rounds' messages are about 200 kB each (the Paillier proofs): one of each round.
    write_rounds("aux_info_msg", "aux", &msgs);
}

fn backup_seed() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("mpc-fuzz-gen-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}", dir.join("store.db").display());
    let key = mpc_fuzz::backup_key();
    let bytes = rt.block_on(async {
        let store = mpc_store::Store::open(&url, key, mpc_fuzz::BACKUP_NODE)
            .await
            .expect("store");
        drop(store);
        mpc_store::create_backup(&url, key, mpc_fuzz::BACKUP_NODE, mpc_fuzz::BACKUP_CLUSTER)
            .await
            .expect("backup")
            .bytes
    });
    let _ = std::fs::remove_dir_all(&dir);
    rt.block_on(mpc_store::check_backup(
        key,
        mpc_fuzz::BACKUP_NODE,
        mpc_fuzz::BACKUP_CLUSTER,
        &bytes,
    ))
    .expect("the seed backup checks");
    seed("backup", "empty-store", &bytes);
    // The same file with one byte of its body changed: refused as tampered.
    let mut tampered = bytes.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    seed("backup", "tampered", &tampered);
}

/// Evidence: node 2's envelope under its certificate from a CA made here (the body checks
/// against its own CA, so these decode and then fail the chain check), as an exhibit and as
/// equivocation.
fn evidence_seeds(p2p: &Envelope) {
    use mpc_transport::{
        certs,
        evidence::{Evidence, Fault},
        NodeKey,
    };
    let dir = std::env::temp_dir().join(format!("mpc-fuzz-evidence-{}", Uuid::new_v4().simple()));
    certs::init_cluster(&dir, 2, |_| Vec::new(), 3650).expect("certificates");
    let read = |p: PathBuf| std::fs::read_to_string(p).expect("certificate file");
    let peer = mpc_fuzz::FRAME_PEER;
    let certificate = certs::parse_certs(&read(certs::node_cert_path(&dir, peer)))
        .expect("certificate")
        .remove(0);
    let key = NodeKey::from_pem(&read(certs::node_key_path(&dir, peer))).expect("key");
    std::fs::remove_dir_all(&dir).expect("remove");
    let signed = |payload: &[u8]| {
        Envelope {
            payload: payload.to_vec(),
            ..p2p.clone()
        }
        .signed(&key)
        .expect("sign")
    };
    let exhibit = Evidence {
        accused: peer,
        fault: Fault::Exhibit,
        certificate: certificate.clone(),
        envelopes: vec![signed(b"\xa1")],
    };
    seed("evidence", "exhibit", &exhibit.encode());
    let equivocation = Evidence {
        fault: Fault::Equivocation,
        envelopes: vec![signed(b"\x01"), signed(b"\x02")],
        ..exhibit
    };
    seed("evidence", "equivocation", &equivocation.encode());
}
