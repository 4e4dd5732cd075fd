//! Fuzz target bodies: one function per decoder of bytes that come from outside the process,
//! each calling the very function the node or the API calls on those bytes, then the checks
//! that follow it, and asserting what must hold of whatever it accepts.
//!
//! `fuzz/` (a cargo-fuzz project, its own workspace) wraps each body in a `fuzz_target!`;
//! `tests/corpus.rs` replays every seed of `fuzz/corpus/<target>/` through its body under
//! stable `cargo test`, so the bodies keep building and the seeds keep passing in CI.
//! `tests/generate.rs` (ignored) writes the valid seeds with the real encoders.
//!
//! A body may only panic on a bug: malformed input must come back as an error.

use std::{collections::HashMap, sync::OnceLock};

use axum::{
    extract::FromRequest,
    http::{header, HeaderValue, Request},
};
use base64::Engine;
use mpc_api::{
    auth::{self, Jwt},
    payments::{RegisterUtxosRequest, TransactionRequest},
    routes::{ApiJson, KeygenRequest, PresignRequest, SignRequest},
};
use mpc_bitcoin::{
    bitcoin::Network,
    policy::{self, ChangeRule, Policy},
    psbt::{analyze, parse_psbt},
    validity::DEFAULT_MAX_INPUTS,
    Scheme, WalletKey,
};
use mpc_node::{control::Control, NodeConfig};
use mpc_protocols::{ecdsa, encoding, refresh, reshare, schnorr, signature::PublicKey};
use mpc_store::KeySource;
use mpc_transport::{
    evidence::Evidence, quic::decode_frame, Envelope, NodeId, Router, RouterLimits, SessionId,
    CONTROL,
};
use round_based::ProtocolMessage;
use serde::{de::DeserializeOwned, Serialize};

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target: its name (the `fuzz_target!` binary and corpus folder) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("envelope", envelope),
    ("evidence", evidence),
    ("frame", frame),
    ("control", control),
    ("aux_info_msg", aux_info_msg),
    ("ecdsa_keygen_msg", ecdsa_keygen_msg),
    ("ecdsa_signing_msg", ecdsa_signing_msg),
    ("frost_keygen_msg", frost_keygen_msg),
    ("frost_signing_msg", frost_signing_msg),
    ("refresh_msg", refresh_msg),
    ("reshare_msg", reshare_msg),
    ("psbt", psbt),
    ("api_keygen", api_keygen),
    ("api_presign", api_presign),
    ("api_sign", api_sign),
    ("api_utxos", api_utxos),
    ("api_transaction", api_transaction),
    ("backup", backup),
    ("config", config),
    ("jwt", jwt),
];

// ---- transport ----------------------------------------------------------------------------

/// An envelope, as `Envelope::decode` reads a frame's body.
pub fn envelope(data: &[u8]) {
    if let Ok(e) = Envelope::decode(data) {
        // The format has one encoding per envelope: what decodes re-encodes to itself.
        assert_eq!(e.encode(), data, "envelope does not re-encode to its bytes");
        let _ = e.content_digest();
    }
}

/// Evidence, as `POST /api/v1/cluster/evidence/verify` reads it (once hex-decoded), then
/// checked as the node checks it, against a cluster CA (this process's own, made once: the
/// seeds decode but do not chain to it, which no fuzzed input could either).
pub fn evidence(data: &[u8]) {
    if let Ok(e) = Evidence::decode(data) {
        // One encoding per piece of evidence: what decodes re-encodes to itself.
        assert_eq!(e.encode(), data, "evidence does not re-encode to its bytes");
    }
    static CA: OnceLock<Option<String>> = OnceLock::new();
    let ca = CA.get_or_init(|| {
        mpc_transport::certs::ClusterCa::generate("fuzz", 1)
            .ok()
            .map(|ca| ca.cert_pem().to_owned())
    });
    let Some(Ok(mut ca)) = ca.as_deref().map(mpc_transport::certs::parse_certs) else {
        return;
    };
    if mpc_node::evidence::verify_evidence(data, &ca.remove(0)).is_ok() {
        panic!("evidence verified under a CA made in this process");
    }
}

/// This node, the peer every frame comes from (as its certificate authenticates it), and a
/// session registered before the frames arrive.
pub const FRAME_ME: NodeId = NodeId::must(1);
pub const FRAME_PEER: NodeId = NodeId::must(2);
pub const FRAME_SESSION: SessionId = SessionId([7; 16]);

/// A stream of frames from one peer, each as the QUIC mesh reads it (`decode_frame`), then
/// routed as the mesh routes it: holding, duplicates, equivocation, control queue. Each
/// frame's length prefix says where the next one starts. The mesh checks each envelope's
/// signature between the two (a fixed-size ECDSA verify in `ring`); no fuzzed input could
/// pass it, so the body skips it to reach the router.
pub fn frame(data: &[u8]) {
    let (router, _control) = Router::new(FRAME_ME, RouterLimits::default());
    let Ok(_inbox) = router.register(FRAME_SESSION, &[FRAME_ME, FRAME_PEER, NodeId::must(3)])
    else {
        panic!("a fresh router refused a session");
    };
    let mut rest = data;
    while !rest.is_empty() {
        let len = match rest.first_chunk::<4>() {
            Some(prefix) => (u32::from_be_bytes(*prefix) as usize).saturating_add(4),
            None => rest.len(),
        };
        let (one, next) = rest.split_at(len.min(rest.len()));
        rest = next;
        if let Ok(envelope) = decode_frame(one) {
            assert_eq!(envelope.encode(), one[4..], "frame body does not re-encode");
            let _ = router.deliver(FRAME_PEER, envelope);
        }
    }
    router.sweep();
}

/// A control message's payload (CBOR), as a node reads every control envelope.
pub fn control(data: &[u8]) {
    let session = uuid::Uuid::from_bytes([3; 16]);
    let envelope = Envelope {
        protocol: CONTROL,
        session: SessionId::from_uuid(session),
        round: 0,
        from: FRAME_PEER,
        to: Some(FRAME_ME),
        payload: data.to_vec(),
        signature: None,
    };
    if let Ok(message) = Control::from_envelope(&envelope) {
        // Whatever decodes re-encodes, and that encoding is stable.
        let again = message
            .envelope(session, FRAME_PEER, FRAME_ME)
            .unwrap_or_else(|e| panic!("a decoded control message does not encode: {e}"));
        let decoded = Control::from_envelope(&again)
            .unwrap_or_else(|e| panic!("a re-encoded control message does not decode: {e}"));
        let third = decoded
            .envelope(session, FRAME_PEER, FRAME_ME)
            .unwrap_or_else(|e| panic!("control message does not encode: {e}"));
        assert_eq!(
            again.payload, third.payload,
            "control encoding is not stable"
        );
    }
}

// ---- protocol messages --------------------------------------------------------------------

/// A protocol message as `delivery.rs` decodes each incoming envelope's payload.
fn protocol_message<M: Serialize + DeserializeOwned + ProtocolMessage>(data: &[u8]) {
    if let Ok(msg) = encoding::decode::<M>(data) {
        let _ = msg.round();
        let bytes = encoding::encode(&msg)
            .unwrap_or_else(|e| panic!("a decoded message does not encode: {e}"));
        let again = encoding::decode::<M>(&bytes)
            .unwrap_or_else(|e| panic!("a re-encoded message does not decode: {e}"));
        assert_eq!(again.round(), msg.round());
        let third = encoding::encode(&again)
            .unwrap_or_else(|e| panic!("a decoded message does not encode: {e}"));
        assert_eq!(bytes, third, "message encoding is not stable");
    }
}

/// Every round of CGGMP24 aux info.
pub fn aux_info_msg(data: &[u8]) {
    protocol_message::<ecdsa::AuxInfoMsg>(data)
}

/// Every round of CGGMP24 threshold key generation.
pub fn ecdsa_keygen_msg(data: &[u8]) {
    protocol_message::<ecdsa::KeygenMsg>(data)
}

/// Every round of CGGMP24 presignature generation and of interactive signing (one type).
pub fn ecdsa_signing_msg(data: &[u8]) {
    protocol_message::<ecdsa::SigningMsg>(data)
}

/// Every round of FROST key generation.
pub fn frost_keygen_msg(data: &[u8]) {
    protocol_message::<schnorr::KeygenMsg>(data)
}

/// FROST signing's one round (nonce commitments).
pub fn frost_signing_msg(data: &[u8]) {
    protocol_message::<schnorr::SigningMsg>(data)
}

/// Key refresh (both schemes), every round.
pub fn refresh_msg(data: &[u8]) {
    protocol_message::<refresh::RefreshMsg>(data)
}

/// Resharing (both schemes), every round.
pub fn reshare_msg(data: &[u8]) {
    protocol_message::<reshare::ReshareMsg>(data)
}

// ---- PSBT analysis and policy ------------------------------------------------------------

/// The two wallets the PSBT target signs for (fixed public keys: G and 2G).
pub fn psbt_wallets() -> &'static [WalletKey; 2] {
    static KEYS: OnceLock<[WalletKey; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = |hex: &str, scheme, chain| {
            let bytes: [u8; 33] = base16(hex);
            WalletKey::new(scheme, PublicKey(bytes), [chain; 32], Network::Regtest)
                .unwrap_or_else(|e| panic!("fixed wallet key: {e}"))
        };
        [
            key(
                "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
                Scheme::Ecdsa,
                1,
            ),
            key(
                "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
                Scheme::Schnorr,
                2,
            ),
        ]
    })
}

fn base16<const N: usize>(hex: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_else(|e| panic!("{e}"));
    }
    out
}

/// A PSBT (raw BIP-174 bytes, sent base64 as the API and the proposals carry it) through what
/// a signer runs before it signs: parse, analysis of every input against its wallets (the
/// sighashes), the transaction rules, the spend summary and the node's policy.
pub fn psbt(data: &[u8]) {
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    let Ok(psbt) = parse_psbt(&text) else { return };
    let wallets = psbt_wallets();
    let keys: Vec<&WalletKey> = wallets.iter().collect();
    let rules = Policy::default().tx_rules(DEFAULT_MAX_INPUTS);
    let Ok(jobs) = analyze(&psbt, &keys, &rules) else {
        return;
    };
    let mut input_wallet = vec![0usize; psbt.inputs.len()];
    for job in &jobs {
        let _ = job.message.sighash();
        input_wallet[job.input] = job.wallet;
    }
    let change_rule = ChangeRule {
        next_unused: vec![0, 3],
        gap: policy::DEFAULT_CHANGE_GAP,
    };
    let Ok(summary) = policy::summarize(&psbt, &keys, &input_wallet, &change_rule) else {
        return;
    };
    assert_eq!(
        summary.payments_sats + summary.change_sats + summary.fee_sats,
        summary.inputs_sats,
        "the summary does not add up"
    );
    let strict = Policy {
        max_amount_per_tx_sats: Some(1_000_000),
        max_amount_per_24h_sats: Some(2_000_000),
        max_fee_sats: Some(100_000),
        max_fee_rate_sat_vb: Some(500.0),
        allowed_destinations: Some(vec![wallets[0]
            .chain_address(mpc_bitcoin::Chain::Receive, 0)
            .map(|a| a.to_string())
            .unwrap_or_default()]),
        ..Policy::default()
    };
    let spent = HashMap::from([(0usize, 1_500_000u64)]);
    for policy in [Policy::default(), strict] {
        let _ = policy.check(
            &psbt,
            &summary,
            &keys,
            &spent,
            mpc_bitcoin::Network::Regtest,
        );
    }
}

// ---- API bodies ---------------------------------------------------------------------------

/// A JSON request body through the API's own extractor (`ApiJson`), as a route receives it.
fn api_body<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    let request = Request::builder()
        .method("POST")
        .uri("/")
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(data.to_vec()))
        .unwrap_or_else(|e| panic!("a fixed request: {e}"));
    futures::executor::block_on(ApiJson::<T>::from_request(request, &()))
        .ok()
        .map(|ApiJson(v)| v)
}

/// A body that decodes serializes back to one that decodes to the same JSON.
fn api_round_trip<T: DeserializeOwned + Serialize>(data: &[u8]) {
    if let Some(v) = api_body::<T>(data) {
        let json = serde_json::to_vec(&v).unwrap_or_else(|e| panic!("{e}"));
        let again = api_body::<T>(&json).unwrap_or_else(|| panic!("re-serialized body refused"));
        let second = serde_json::to_vec(&again).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json, second, "body does not round-trip");
    }
}

/// `POST /api/v1/keygen`.
pub fn api_keygen(data: &[u8]) {
    api_round_trip::<KeygenRequest>(data)
}

/// `POST /api/v1/wallets/{id}/presignatures`.
pub fn api_presign(data: &[u8]) {
    api_round_trip::<PresignRequest>(data)
}

/// `POST /api/v1/wallets/{id}/psbt/sign`.
pub fn api_sign(data: &[u8]) {
    let _ = api_body::<SignRequest>(data);
}

/// `POST /api/v1/wallets/{id}/utxos`.
pub fn api_utxos(data: &[u8]) {
    let _ = api_body::<RegisterUtxosRequest>(data);
}

/// `POST /api/v1/transactions`.
pub fn api_transaction(data: &[u8]) {
    let _ = api_body::<TransactionRequest>(data);
}

// ---- files and tokens ---------------------------------------------------------------------

/// The key-encryption key of the backup target (and of the seed backups `generate` makes).
pub const BACKUP_KEK_HEX: &str = "6d70632d77616c6c65742066757a7a206b6579206f6e6c792c206e6f74207265";
/// The node and cluster the backup seeds are of.
pub const BACKUP_NODE: NodeId = NodeId::must(1);
pub const BACKUP_CLUSTER: &str = "fuzz-cluster";

/// The key file of [`BACKUP_KEK_HEX`], written once per process (to a temporary name, then
/// renamed: fuzzing processes running at once never read a half-written file).
pub fn backup_key() -> &'static KeySource {
    static KEY: OnceLock<KeySource> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = std::env::temp_dir();
        let path = dir.join("mpc-fuzz-kek.key");
        let partial = dir.join(format!("mpc-fuzz-kek.key.{}", std::process::id()));
        std::fs::write(&partial, BACKUP_KEK_HEX)
            .and_then(|()| std::fs::rename(&partial, &path))
            .unwrap_or_else(|e| panic!("key file: {e}"));
        KeySource::KeyFile(path)
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}

/// A backup file, through every check `mpc-wallet restore` makes before writing (the header
/// alone too, as `read_backup_header` shows it).
pub fn backup(data: &[u8]) {
    let header = mpc_store::read_backup_header(data);
    let checked = runtime().block_on(mpc_store::check_backup(
        backup_key(),
        BACKUP_NODE,
        BACKUP_CLUSTER,
        data,
    ));
    if let Ok(checked) = checked {
        assert_eq!(
            Some(&checked),
            header.as_ref().ok(),
            "two readings of one header"
        );
    }
}

/// A node's TOML configuration file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = NodeConfig::from_toml(text) {
        // A limit that compares false with everything (NaN) would be no limit at all.
        if let Some(rate) = config.policy.max_fee_rate_sat_vb {
            assert!(
                rate.is_finite() && rate >= 0.0,
                "fee-rate limit {rate} accepted"
            );
        }
        let again = toml::to_string(&config).unwrap_or_else(|e| panic!("config to TOML: {e}"));
        let parsed = NodeConfig::from_toml(&again)
            .unwrap_or_else(|e| panic!("a written config does not load: {e}\n{again}"));
        let third = toml::to_string(&parsed).unwrap_or_else(|e| panic!("config to TOML: {e}"));
        assert_eq!(again, third, "config does not round-trip");
    }
}

/// The cluster secret and the EdDSA public key the JWT target's verifier trusts.
pub const JWT_SECRET: &[u8] = b"mpc-wallet fuzz secret, 32 bytes or more";
pub const JWT_ED25519_PUBLIC: &[u8] = include_bytes!("../../api/tests/keys/ed25519-public.pem");

pub fn jwt_verifier() -> &'static Jwt {
    static JWT: OnceLock<Jwt> = OnceLock::new();
    JWT.get_or_init(|| {
        Jwt::hs256(JWT_SECRET, "mpc-wallet", "mpc-wallet-api")
            .and_then(|j| j.with_public_key("EdDSA", JWT_ED25519_PUBLIC))
            .unwrap_or_else(|e| panic!("JWT verifier: {e}"))
    })
}

/// An `Authorization` header, through `bearer` and token verification, as every request is
/// checked.
pub fn jwt(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let request = Request::builder()
        .header(header::AUTHORIZATION, value)
        .body(())
        .unwrap_or_else(|e| panic!("a request with a valid header: {e}"));
    let (parts, ()) = request.into_parts();
    let Some(token) = auth::bearer(&parts) else {
        return;
    };
    if let Ok(claims) = jwt_verifier().verify(token) {
        assert_eq!(claims.iss, "mpc-wallet");
        assert_eq!(claims.aud, "mpc-wallet-api");
    }
}
