//! Seeds of what arrives as bytes outside the protocols: frames and envelopes, API bodies, JWTs,
//! config, PSBTs, backups and evidence.

use super::*;

pub(super) fn transport_and_api_seeds() {
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
            "api_keygen",
            "frost",
            r#"{"protocol":"frost","name":"treasury"}"#,
        ),
        (
            "api_keygen",
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
        include_bytes!("../../../api/tests/keys/ed25519-private.pem"),
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

pub(super) fn psbt_seeds() {
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

pub(super) fn backup_seed() {
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
pub(super) fn evidence_seeds(p2p: &Envelope) {
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
