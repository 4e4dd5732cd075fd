//! The REST API and the CLI against five real node processes (QUIC + mutual TLS, one SQLite
//! store each), through real HTTP only: every route of the OpenAPI document, every role,
//! forged and broken tokens, DKG for both schemes, the UTXO registry and payments verified
//! with bitcoinconsensus, PSBT signing and its malformed inputs, the rate limiter (which must
//! start nothing when it refuses), health and Prometheus metrics, and the `mpc-wallet` CLI.
//!
//! One devnet serves the whole file. It starts from the checked-in aux info
//! (`fixtures/aux-info-5.json`): the aux-info route is checked up to a running ceremony, and the
//! devnet (the test script's main-job step) runs that ceremony over the network to the end.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Mutex,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use mpc_api::Role;
use mpc_bitcoin::{
    bitcoin::{consensus, psbt::PsbtSighashType, Address, Amount, OutPoint, Transaction, TxOut},
    build::{build_psbt, synthetic_funding, Payment, SpendableOutput},
    psbt::{parse_psbt, spent_outputs},
    verify::verify_transaction,
    Chain, WalletKey,
};
use mpc_wallet::{
    client::ApiClient,
    devnet::{synthetic_payment, verify_answer, wallet_key_from_api, Devnet, DevnetOptions},
};
use serde_json::{json, Value};
use uuid::Uuid;

/// Every route the router serves, as (method, path template). The OpenAPI document must list
/// exactly these, and the test must get a 2xx from each.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/cluster/health"),
    ("GET", "/api/v1/cluster/incidents"),
    ("POST", "/api/v1/cluster/incidents/{node}/release"),
    ("POST", "/api/v1/cluster/evidence/verify"),
    ("POST", "/api/v1/aux-info"),
    ("POST", "/api/v1/dkg/initiate"),
    ("GET", "/api/v1/ceremonies/{id}"),
    ("GET", "/api/v1/wallets"),
    ("GET", "/api/v1/wallets/{id}"),
    ("GET", "/api/v1/wallets/{id}/addresses"),
    ("GET", "/api/v1/wallets/{id}/descriptor"),
    ("POST", "/api/v1/wallets/{id}/utxos"),
    ("GET", "/api/v1/wallets/{id}/utxos"),
    ("POST", "/api/v1/wallets/{id}/presignatures"),
    ("GET", "/api/v1/presignatures/stats"),
    ("POST", "/api/v1/wallets/{id}/psbt/sign"),
    ("POST", "/api/v1/transactions"),
];

/// Routes served without a token.
const PUBLIC: &[&str] = &["/healthz", "/api/v1/openapi.json"];

/// Node 2 limits each token to this sustained rate and burst.
const TOKEN_RATE: u32 = 1;
const TOKEN_BURST: u32 = 3;
/// Node 3 limits each client address to this sustained rate and burst.
const IP_RATE: u32 = 1;
const IP_BURST: u32 = 3;

// ---- HTTP with a record of the routes exercised ------------------------------------------

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a 2xx status and returns the JSON body.
    fn ok(&self, what: &str) -> Value {
        assert!(
            (200..300).contains(&self.status),
            "{what}: {} {}",
            self.status,
            self.text
        );
        self.json()
    }
}

enum Body {
    Empty,
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

struct Api {
    http: reqwest::Client,
    bases: HashMap<u16, String>,
    /// (method, route template) of every request that got a 2xx, per node.
    exercised: Mutex<BTreeMap<u16, BTreeSet<(String, String)>>>,
}

/// Whether `path` (without its query) is an instance of `route` (`{id}` matches one segment).
fn matches(route: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let (r, p): (Vec<&str>, Vec<&str>) = (route.split('/').collect(), path.split('/').collect());
    r.len() == p.len()
        && r.iter()
            .zip(&p)
            .all(|(r, p)| r == p || (r.starts_with('{') && r.ends_with('}') && !p.is_empty()))
}

impl Api {
    async fn call(
        &self,
        node: u16,
        method: &str,
        route: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
    ) -> Resp {
        assert!(matches(route, path), "{path} is not an instance of {route}");
        let url = format!("{}{path}", self.bases[&node]);
        let mut req = self.http.request(method.parse().unwrap(), &url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::Empty => req,
            Body::Json(v) => req.json(&v),
            Body::Raw(content_type, bytes) => req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes),
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            self.exercised
                .lock()
                .unwrap()
                .entry(node)
                .or_default()
                .insert((method.to_string(), route.to_string()));
        }
        Resp {
            status,
            headers,
            text,
        }
    }

    async fn get(&self, node: u16, route: &str, path: &str, token: Option<&str>) -> Resp {
        self.call(node, "GET", route, path, token, Body::Empty)
            .await
    }

    async fn post(
        &self,
        node: u16,
        route: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> Resp {
        self.call(node, "POST", route, path, token, Body::Json(body))
            .await
    }

    /// Polls a ceremony until it finishes; returns its record (which must have succeeded).
    async fn wait_ceremony(&self, node: u16, token: &str, id: &str) -> Value {
        let c = self.wait_ceremony_outcome(node, token, id).await;
        assert_eq!(c["state"], "succeeded", "ceremony {id}: {c}");
        assert!(c["duration_ms"].as_i64().is_some(), "{c}");
        assert!(c["error"].is_null(), "{c}");
        c
    }

    /// Polls a ceremony until it finishes, succeeded or failed; returns its record.
    async fn wait_ceremony_outcome(&self, node: u16, token: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            let c = self
                .get(
                    node,
                    "/api/v1/ceremonies/{id}",
                    &format!("/api/v1/ceremonies/{id}"),
                    Some(token),
                )
                .await
                .ok("ceremony");
            assert_eq!(c["id"], id);
            match c["state"].as_str() {
                Some("succeeded" | "failed") => {
                    assert!(c["finished_at_ms"].as_i64().is_some(), "{c}");
                    return c;
                }
                Some("running") => assert!(c["result"].is_null(), "{c}"),
                other => panic!("ceremony {id} in an unknown state {other:?}: {c}"),
            }
            assert!(Instant::now() < deadline, "ceremony {id} did not finish");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A node's metrics, waiting out its rate limit if need be.
    async fn metrics(&self, devnet: &Devnet, node: u16) -> Metrics {
        for _ in 0..10 {
            let token = devnet.token(Role::Viewer).unwrap();
            let r = self.get(node, "/metrics", "/metrics", Some(&token)).await;
            if r.status == 429 {
                let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            assert_eq!(r.status, 200, "{}", r.text);
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
                "{:?}",
                r.headers
            );
            return Metrics::parse(&r.text);
        }
        panic!("node {node}'s metrics stayed rate limited");
    }
}

/// Asserts the API's error shape `{"error": {code, message, details}}` with `status` and
/// `code`.
fn assert_error(r: &Resp, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content type {:?}",
        r.header("content-type")
    );
    let v = r.json();
    let error = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not the error shape: {}", r.text));
    assert_eq!(error["code"], code, "{what}: {}", r.text);
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        r.text
    );
    assert!(error.contains_key("details"), "{what}: {}", r.text);
    assert_eq!(v.as_object().unwrap().len(), 1, "{what}: {}", r.text);
}

// ---- Prometheus text --------------------------------------------------------------------

struct Metrics {
    text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => panic!("bad metrics line {line:?}"),
            };
            let mut labels = BTreeMap::new();
            let value_text = if let Some(rest) = rest.strip_prefix('{') {
                // key="value" pairs; values may contain commas and escaped quotes.
                let mut chars = rest.char_indices();
                let mut end = None;
                loop {
                    let mut key = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '=')) => break,
                            Some((i, '}')) if key.is_empty() => {
                                end = Some(i);
                                break;
                            }
                            Some((_, ',')) if key.is_empty() => {}
                            Some((_, c)) => key.push(c),
                            None => panic!("bad labels in {line:?}"),
                        }
                    }
                    if key.is_empty() {
                        break;
                    }
                    assert_eq!(chars.next().map(|c| c.1), Some('"'), "{line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, c)) => value.push(c),
                                None => panic!("{line:?}"),
                            },
                            Some((_, '"')) => break,
                            Some((_, c)) => value.push(c),
                            None => panic!("unterminated label in {line:?}"),
                        }
                    }
                    labels.insert(key, value);
                }
                let end = end.unwrap_or_else(|| panic!("unterminated labels in {line:?}"));
                &rest[end + 1..]
            } else {
                rest
            };
            let value: f64 = value_text
                .split_whitespace()
                .next()
                .unwrap_or_else(|| panic!("no value in {line:?}"))
                .parse()
                .unwrap_or_else(|e| panic!("{line:?}: {e}"));
            samples.push((name.to_string(), labels, value));
        }
        Self {
            text: text.to_string(),
            samples,
        }
    }

    /// The samples of `name` whose labels include `labels`.
    fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| (l, *v))
    }

    /// The sum of the samples of `name` whose labels include `labels` (0 if none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).map(|(_, v)| v).sum()
    }

    fn has_type(&self, name: &str, kind: &str) -> bool {
        self.text
            .lines()
            .any(|l| l == format!("# TYPE {name} {kind}"))
    }
}

// ---- tokens by hand ---------------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as the API expects them, valid for ten minutes.
fn claims(role: &str) -> Value {
    let now = now_s();
    json!({
        "sub": "api-test", "role": role, "iss": "mpc-wallet", "aud": "mpc-wallet-api",
        "iat": now, "exp": now + 600, "jti": Uuid::new_v4().to_string(),
    })
}

/// A compact JWT with `header` and `claims`, HMAC-SHA256 signed with `key` (or unsigned).
fn forge(header: &Value, claims: &Value, key: Option<&[u8]>) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = key
        .map(|k| hmac_sha256(k, input.as_bytes()))
        .unwrap_or_default();
    format!("{input}.{}", b64(&signature))
}

fn hs256() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

fn decode_claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

// ---- bitcoin helpers --------------------------------------------------------------------

/// Synthetic funding outputs of `wallet` (outputs of made-up transactions, regtest only).
fn fund(wallet: &WalletKey, outputs: &[(&str, u64)]) -> Vec<SpendableOutput> {
    outputs
        .iter()
        .map(|(path, sats)| {
            synthetic_funding(
                wallet,
                &path.parse().unwrap(),
                Amount::from_sat(*sats),
                &format!("api-test {path} {}", Uuid::new_v4()),
            )
            .unwrap()
        })
        .collect()
}

fn registration(outputs: &[SpendableOutput]) -> Value {
    json!({"utxos": outputs.iter().map(|o| json!({
        "outpoint": o.outpoint.to_string(),
        "amount_sats": o.txout.value.to_sat(),
        "path": o.path.to_string(),
        "funding_transaction": o.funding_transaction.as_ref().map(consensus::encode::serialize_hex),
    })).collect::<Vec<_>>()})
}

/// Checks a `/transactions` answer independently of the node: the raw transaction against
/// the outputs this test funded (bitcoinconsensus), the payment, the fee and the change,
/// which must pay the wallet's own change address as the API lists it.
#[allow(clippy::too_many_arguments)]
async fn check_payment(
    api: &Api,
    viewer: &str,
    wallet_id: &str,
    key: &WalletKey,
    funded: &[SpendableOutput],
    recipient: &Address,
    amount: u64,
    expected_change_index: u64,
    answer: &Value,
) -> Transaction {
    let tx: Transaction =
        consensus::encode::deserialize_hex(answer["raw_transaction"].as_str().unwrap()).unwrap();
    assert_eq!(answer["txid"], tx.compute_txid().to_string());
    let by_outpoint: HashMap<OutPoint, &TxOut> =
        funded.iter().map(|o| (o.outpoint, &o.txout)).collect();
    let spent: Vec<TxOut> = tx
        .input
        .iter()
        .map(|i| {
            (*by_outpoint
                .get(&i.previous_output)
                .unwrap_or_else(|| panic!("{} was not funded by the test", i.previous_output)))
            .clone()
        })
        .collect();
    verify_transaction(&tx, &spent).expect("bitcoinconsensus rejects the payment");
    let spend = &answer["spend"];
    let inputs: BTreeSet<String> = tx
        .input
        .iter()
        .map(|i| i.previous_output.to_string())
        .collect();
    let listed: BTreeSet<String> = spend["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert_eq!(inputs, listed);
    let in_sats: u64 = spent.iter().map(|o| o.value.to_sat()).sum();
    let out_sats: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    assert_eq!(spend["inputs_sats"], in_sats);
    assert_eq!(spend["fee_sats"], in_sats - out_sats);
    assert_eq!(spend["amount_sats"], amount);
    let pay: Vec<&TxOut> = tx
        .output
        .iter()
        .filter(|o| o.script_pubkey == recipient.script_pubkey())
        .collect();
    assert_eq!(pay.len(), 1, "one output pays the recipient");
    assert_eq!(pay[0].value.to_sat(), amount);

    let change = &spend["change"];
    assert!(change.is_object(), "a payment with change: {spend}");
    let index = change["index"].as_u64().unwrap();
    assert_eq!(index, expected_change_index);
    assert_eq!(change["path"], format!("m/1/{index}"));
    let listed = api
        .get(
            1,
            "/api/v1/wallets/{id}/addresses",
            &format!("/api/v1/wallets/{wallet_id}/addresses?chain=change&from={index}&count=1"),
            Some(viewer),
        )
        .await
        .ok("change address");
    assert_eq!(listed[0]["address"], change["address"]);
    assert_eq!(listed[0]["path"], change["path"]);
    let own = key.chain_address(Chain::Change, index as u32).unwrap();
    assert_eq!(change["address"], own.to_string());
    let vout = change["vout"].as_u64().unwrap() as usize;
    assert_eq!(tx.output[vout].script_pubkey, own.script_pubkey());
    assert_eq!(change["amount_sats"], tx.output[vout].value.to_sat());
    assert_eq!(tx.output.len(), 2);
    // The fee pays the requested 2 sat/vB on the signed transaction's real size.
    let rate = (in_sats - out_sats) as f64 / tx.vsize() as f64;
    assert!((1.95..=2.6).contains(&rate), "fee rate {rate} sat/vB");
    tx
}

// ---- the CLI ----------------------------------------------------------------------------

async fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mpc-wallet"))
        .args(args)
        .env_remove("MPC_WALLET_URL")
        .env_remove("MPC_WALLET_TOKEN")
        .env_remove("JWT_SECRET")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli_json(what: &str, (code, stdout, stderr): &(i32, String, String)) -> Value {
    assert_eq!(*code, 0, "{what}: {stderr}");
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"))
}

// ---- the test ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_and_cli_against_five_node_processes() {
    let started = Instant::now();
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let mut phase_start = Instant::now();
    let mut phase = |name: &'static str| {
        phases.push((name, phase_start.elapsed().as_secs_f64()));
        eprintln!(
            "[api test] {name}: {:.1} s",
            phase_start.elapsed().as_secs_f64()
        );
        phase_start = Instant::now();
    };

    let dir = std::env::temp_dir().join(format!("mpc-api-test-{}", Uuid::new_v4()));
    let mut options =
        DevnetOptions::for_signing_tests(dir.clone(), env!("CARGO_BIN_EXE_mpc-wallet").into());
    options.aux_info_fixture = true;
    let mut devnet = Devnet::create_with_databases(options).await.unwrap();
    // The nodes' own configuration knobs, through the environment `NodeConfig::load` reads:
    // node 2 limits each token, node 3 each client address; node 1 keeps the defaults.
    devnet.start(1).unwrap();
    let (rate, burst) = (TOKEN_RATE.to_string(), TOKEN_BURST.to_string());
    devnet
        .start_with_env(
            2,
            &[
                ("MPC_WALLET_NODE__API__RATE_LIMIT_PER_SECOND", &rate),
                ("MPC_WALLET_NODE__API__RATE_LIMIT_BURST", &burst),
            ],
        )
        .unwrap();
    let (ip_rate, ip_burst) = (IP_RATE.to_string(), IP_BURST.to_string());
    devnet
        .start_with_env(
            3,
            &[
                ("MPC_WALLET_NODE__API__RATE_LIMIT_IP_PER_SECOND", &ip_rate),
                ("MPC_WALLET_NODE__API__RATE_LIMIT_IP_BURST", &ip_burst),
            ],
        )
        .unwrap();
    devnet.start(4).unwrap();
    devnet.start(5).unwrap();
    let all: Vec<u16> = (1..=5).collect();
    devnet
        .wait_live(&all, 5, Duration::from_secs(90))
        .await
        .unwrap();
    phase("start 5 node processes");

    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap(),
        bases: devnet
            .nodes
            .iter()
            .map(|n| (n.id.get(), format!("http://{}", n.api)))
            .collect(),
        exercised: Mutex::new(BTreeMap::new()),
    };
    let admin = devnet.token(Role::Admin).unwrap();
    let signer = devnet.token(Role::Signer).unwrap();
    let viewer = devnet.token(Role::Viewer).unwrap();
    let (admin, signer, viewer) = (admin.as_str(), signer.as_str(), viewer.as_str());
    let secret = std::fs::read(dir.join("jwt-secret")).unwrap();

    // ---- 1. the OpenAPI document ---------------------------------------------------------
    let doc = api
        .get(1, "/api/v1/openapi.json", "/api/v1/openapi.json", None)
        .await;
    assert!(
        doc.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        doc.headers
    );
    let doc_json = doc.ok("openapi.json");
    assert!(doc_json.is_object(), "{}", doc.text);
    let spec = oas3::from_json(&doc.text).expect("the document parses as OpenAPI 3");
    assert!(spec.openapi.starts_with("3.1"), "version {}", spec.openapi);
    assert_eq!(spec.info.title, "mpc-wallet");
    let documented: BTreeSet<(String, String)> = spec
        .operations()
        .map(|(path, method, _)| (method.as_str().to_uppercase(), path))
        .collect();
    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, expected,
        "the document lists exactly the routes"
    );
    assert!(spec
        .components
        .as_ref()
        .is_some_and(|c| c.security_schemes.contains_key("bearer")));
    // Each operation's security matches how the node answers without a token: the public
    // ones answer, every other one refuses with 401 before doing anything.
    for (path, method, op) in spec.operations() {
        let public = PUBLIC.contains(&path.as_str());
        assert_eq!(op.security.is_empty(), public, "{method} {path} security");
        let concrete = path.replace("{id}", &Uuid::new_v4().to_string());
        let body = if method.as_str() == "POST" {
            Body::Json(json!({}))
        } else {
            Body::Empty
        };
        let r = api
            .call(1, method.as_str(), &path, &concrete, None, body)
            .await;
        if public {
            assert_eq!(r.status, 200, "{method} {path} without a token: {}", r.text);
        } else {
            assert_error(
                &r,
                401,
                "unauthorized",
                &format!("{method} {path} without a token"),
            );
        }
    }
    // Outside the routes: 404 and 405 in the same error shape.
    let r = api
        .call(
            1,
            "GET",
            "/api/v1/nope",
            "/api/v1/nope",
            Some(viewer),
            Body::Empty,
        )
        .await;
    assert_error(&r, 404, "not_found", "unknown route");
    let r = api
        .call(
            1,
            "DELETE",
            "/api/v1/wallets",
            "/api/v1/wallets",
            Some(admin),
            Body::Empty,
        )
        .await;
    assert_error(&r, 405, "method_not_allowed", "DELETE /wallets");
    phase("OpenAPI document");

    // ---- 7 (part). health without a token; cluster health -------------------------------
    for id in 1..=5 {
        let h = api
            .get(id, "/healthz", "/healthz", None)
            .await
            .ok("healthz");
        assert_eq!(h, json!({"status": "ok", "node": id}));
    }
    let health = api
        .get(
            1,
            "/api/v1/cluster/health",
            "/api/v1/cluster/health",
            Some(viewer),
        )
        .await
        .ok("cluster health");
    assert_eq!(health["node"], 1);
    assert_eq!(health["threshold"], 3);
    assert_eq!(health["network"], "regtest");
    assert_eq!(health["live"], 5);
    assert_eq!(health["version"], mpc_node::VERSION);
    let nodes: BTreeSet<u64> = health["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert_eq!(n["live"], true, "{n}");
            n["node"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(nodes, (1..=5).collect());
    assert!(health["refused"]["connections"].is_u64(), "{health}");

    // ---- 2. tokens -------------------------------------------------------------------------
    let wallets_route = "/api/v1/wallets";
    // The hand-built token is right: the same construction with the real secret passes.
    let good = forge(&hs256(), &claims("viewer"), Some(&secret));
    api.get(1, wallets_route, wallets_route, Some(&good))
        .await
        .ok("hand-signed viewer token");
    let expired = {
        let mut c = claims("admin");
        c["iat"] = json!(now_s() - 3600);
        c["exp"] = json!(now_s() - 60);
        forge(&hs256(), &c, Some(&secret))
    };
    let wrong_audience = {
        let mut c = claims("admin");
        c["aud"] = json!("another-api");
        forge(&hs256(), &c, Some(&secret))
    };
    let wrong_issuer = {
        let mut c = claims("admin");
        c["iss"] = json!("evil");
        forge(&hs256(), &c, Some(&secret))
    };
    let alg_none = forge(
        &json!({"alg": "none", "typ": "JWT"}),
        &claims("admin"),
        None,
    );
    let alg_none_upper = forge(
        &json!({"alg": "None", "typ": "JWT"}),
        &claims("admin"),
        None,
    );
    // A real viewer token whose claims were changed to admin after signing.
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(String::from).collect();
        let mut c = decode_claims(&good);
        c["role"] = json!("admin");
        parts[1] = b64(c.to_string().as_bytes());
        parts.join(".")
    };
    // The signature itself altered.
    let bad_signature = {
        let (head, sig) = good.rsplit_once('.').unwrap();
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        raw[0] ^= 1;
        format!("{head}.{}", b64(&raw))
    };
    let other_secret = forge(
        &hs256(),
        &claims("admin"),
        Some(b"another secret of at least 32 bytes, not the cluster's"),
    );
    let missing_claim = {
        let mut c = claims("admin");
        c.as_object_mut().unwrap().remove("exp");
        forge(&hs256(), &c, Some(&secret))
    };
    let unknown_role = forge(&hs256(), &claims("root"), Some(&secret));
    // Not valid before an hour from now (RFC 7519 `nbf`), though signed and unexpired.
    let not_yet_valid = {
        let mut c = claims("admin");
        c["nbf"] = json!(now_s() + 3600);
        c["exp"] = json!(now_s() + 7200);
        forge(&hs256(), &c, Some(&secret))
    };
    for (what, token) in [
        ("expired", expired.as_str()),
        ("wrong audience", wrong_audience.as_str()),
        ("wrong issuer", wrong_issuer.as_str()),
        ("alg none", alg_none.as_str()),
        ("alg None", alg_none_upper.as_str()),
        ("tampered claims", tampered.as_str()),
        ("tampered signature", bad_signature.as_str()),
        ("HS256 with another secret", other_secret.as_str()),
        ("no exp", missing_claim.as_str()),
        ("unknown role", unknown_role.as_str()),
        ("not yet valid", not_yet_valid.as_str()),
        ("garbage", "not.a.jwt"),
        ("empty", ""),
    ] {
        for (method, route) in [("GET", wallets_route), ("POST", "/api/v1/dkg/initiate")] {
            let body = if method == "POST" {
                Body::Json(json!({"protocol": "frost", "name": "forged"}))
            } else {
                Body::Empty
            };
            let r = api.call(1, method, route, route, Some(token), body).await;
            assert_error(
                &r,
                401,
                "unauthorized",
                &format!("{what} token on {method} {route}"),
            );
        }
    }
    // Without "Bearer ", the token is not a bearer token.
    let r = api
        .http
        .get(format!("{}{wallets_route}", api.bases[&1]))
        .header("authorization", format!("Token {viewer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The forgeries on DKG started nothing: this node coordinated no ceremony yet.
    let m = api.metrics(&devnet, 1).await;
    assert_eq!(m.sum("mpc_ceremonies", &[]), 0.0);
    phase("tokens");

    // ---- 2 (roles) and 3. aux info and DKG ---------------------------------------------
    let dkg_route = "/api/v1/dkg/initiate";
    for (who, token) in [("viewer", viewer), ("signer", signer)] {
        let r = api
            .post(
                1,
                "/api/v1/aux-info",
                "/api/v1/aux-info",
                Some(token),
                json!({}),
            )
            .await;
        assert_error(&r, 403, "forbidden", &format!("{who} runs aux info"));
        let r = api
            .post(
                1,
                dkg_route,
                dkg_route,
                Some(token),
                json!({"protocol": "frost", "name": "x"}),
            )
            .await;
        assert_error(&r, 403, "forbidden", &format!("{who} runs DKG"));
    }
    let m = api.metrics(&devnet, 1).await;
    assert_eq!(
        m.sum("mpc_ceremonies", &[]),
        0.0,
        "a refused role started a ceremony"
    );

    phase("roles on ceremonies");

    // Request validation before anything starts.
    let r = api
        .post(
            1,
            dkg_route,
            dkg_route,
            Some(admin),
            json!({"protocol": "rsa", "name": "x"}),
        )
        .await;
    assert_error(&r, 422, "invalid_body", "unknown protocol");
    let r = api
        .post(
            1,
            dkg_route,
            dkg_route,
            Some(admin),
            json!({"protocol": "frost", "name": "x", "colour": "red"}),
        )
        .await;
    assert_error(&r, 422, "invalid_body", "unknown field on DKG");
    let missing = Uuid::new_v4();
    let r = api
        .get(
            1,
            "/api/v1/ceremonies/{id}",
            &format!("/api/v1/ceremonies/{missing}"),
            Some(viewer),
        )
        .await;
    assert_error(&r, 404, "not_found", "unknown ceremony");
    let r = api
        .get(
            1,
            "/api/v1/ceremonies/{id}",
            "/api/v1/ceremonies/not-a-uuid",
            Some(viewer),
        )
        .await;
    assert_error(&r, 400, "invalid_request", "ceremony id that is no UUID");

    let mut wallets: Vec<Value> = Vec::new();
    for (protocol, name) in [("cggmp24", "api ecdsa"), ("frost", "api taproot")] {
        let r = api
            .post(
                1,
                dkg_route,
                dkg_route,
                Some(admin),
                json!({"protocol": protocol, "name": name}),
            )
            .await;
        let accepted = r.ok("DKG");
        assert_eq!(r.status, 202);
        let id = accepted["ceremony_id"].as_str().unwrap().to_string();
        let c = api.wait_ceremony(1, signer, &id).await;
        assert_eq!(c["kind"], "keygen");
        assert_eq!(c["request"]["name"], name);
        let w = c["result"].clone();
        assert_eq!(w["name"], name);
        assert_eq!(w["state"], "active");
        assert_eq!(w["threshold"], 3);
        assert_eq!(w["network"], "regtest");
        assert_eq!(w["participants"], json!([1, 2, 3, 4, 5]));
        wallets.push(w);
    }
    let (ecdsa, taproot) = (wallets[0].clone(), wallets[1].clone());
    assert_eq!(ecdsa["script_type"], "p2wpkh");
    assert_eq!(taproot["script_type"], "p2tr");
    let eid = ecdsa["id"].as_str().unwrap().to_string();
    let tid = taproot["id"].as_str().unwrap().to_string();
    let ekey = wallet_key_from_api(&ecdsa).unwrap();
    let tkey = wallet_key_from_api(&taproot).unwrap();
    phase("DKG: CGGMP24 and FROST");

    // Every role reads; every node knows both wallets.
    for token in [viewer, signer, admin] {
        let list = api
            .get(1, wallets_route, wallets_route, Some(token))
            .await
            .ok("wallets");
        let ids: BTreeSet<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, BTreeSet::from([eid.as_str(), tid.as_str()]));
    }
    for id in 2..=5 {
        let w = api
            .get(
                id,
                "/api/v1/wallets/{id}",
                &format!("/api/v1/wallets/{tid}"),
                Some(viewer),
            )
            .await
            .ok("wallet on another node");
        assert_eq!(w["public_key"], taproot["public_key"]);
    }
    for (w, key) in [(&ecdsa, &ekey), (&taproot, &tkey)] {
        let id = w["id"].as_str().unwrap();
        let one = api
            .get(
                1,
                "/api/v1/wallets/{id}",
                &format!("/api/v1/wallets/{id}"),
                Some(viewer),
            )
            .await
            .ok("wallet");
        assert_eq!(&one, w);
        for chain in ["receive", "change"] {
            let list = api
                .get(
                    1,
                    "/api/v1/wallets/{id}/addresses",
                    &format!("/api/v1/wallets/{id}/addresses?chain={chain}&from=0&count=3"),
                    Some(viewer),
                )
                .await
                .ok("addresses");
            let list = list.as_array().unwrap();
            assert_eq!(list.len(), 3);
            let (c, n) = if chain == "receive" {
                (Chain::Receive, 0)
            } else {
                (Chain::Change, 1)
            };
            for (i, a) in list.iter().enumerate() {
                assert_eq!(a["index"], i);
                assert_eq!(a["path"], format!("m/{n}/{i}"));
                // Derived independently from the xpub.
                assert_eq!(
                    a["address"],
                    key.chain_address(c, i as u32).unwrap().to_string()
                );
            }
            if chain == "receive" {
                assert_eq!(list[0]["address"], w["first_address"]);
            }
        }
        let d = api
            .get(
                1,
                "/api/v1/wallets/{id}/descriptor",
                &format!("/api/v1/wallets/{id}/descriptor"),
                Some(viewer),
            )
            .await
            .ok("descriptor");
        assert_eq!(d["receive"], w["receive_descriptor"]);
        assert_eq!(d["change"], w["change_descriptor"]);
        let prefix = if w["scheme"] == "cggmp24" {
            "wpkh("
        } else {
            "tr("
        };
        for part in ["receive", "change"] {
            let text = d[part].as_str().unwrap();
            assert!(text.starts_with(prefix), "{text}");
            assert!(text.contains(w["xpub"].as_str().unwrap()), "{text}");
            assert_eq!(
                text.rsplit_once('#').map(|(_, c)| c.len()),
                Some(8),
                "{text}"
            );
        }
    }
    for (query, what) in [
        ("chain=sideways", "unknown chain"),
        ("count=0", "count 0"),
        ("count=1001", "count 1001"),
        ("from=2147483647&count=2", "hardened index"),
        ("from=-1", "negative index"),
    ] {
        let r = api
            .get(
                1,
                "/api/v1/wallets/{id}/addresses",
                &format!("/api/v1/wallets/{eid}/addresses?{query}"),
                Some(viewer),
            )
            .await;
        assert_error(&r, 400, "invalid_request", what);
    }
    let r = api
        .get(
            1,
            "/api/v1/wallets/{id}",
            "/api/v1/wallets/no-such-wallet",
            Some(viewer),
        )
        .await;
    assert_error(&r, 404, "not_found", "unknown wallet");
    phase("wallets, addresses, descriptors");

    // ---- 4. the UTXO registry and payments ------------------------------------------------
    let utxos_route = "/api/v1/wallets/{id}/utxos";
    let e_funded = fund(&ekey, &[("m/0/0", 60_000), ("m/0/1", 40_000)]);
    let t_funded = fund(&tkey, &[("m/0/0", 80_000)]);
    for (who, token) in [("viewer", viewer), ("admin", admin)] {
        let r = api
            .post(
                1,
                utxos_route,
                &format!("/api/v1/wallets/{eid}/utxos"),
                Some(token),
                registration(&e_funded),
            )
            .await;
        assert_error(&r, 403, "forbidden", &format!("{who} registers outputs"));
    }
    for (id, funded) in [(&eid, &e_funded), (&tid, &t_funded)] {
        let r = api
            .post(
                1,
                utxos_route,
                &format!("/api/v1/wallets/{id}/utxos"),
                Some(signer),
                registration(funded),
            )
            .await;
        let registered = r.ok("register outputs");
        assert_eq!(r.status, 201);
        assert_eq!(registered.as_array().unwrap().len(), funded.len());
        // Registering the same data again is a no-op.
        api.post(
            1,
            utxos_route,
            &format!("/api/v1/wallets/{id}/utxos"),
            Some(signer),
            registration(funded),
        )
        .await
        .ok("register again");
        let list = api
            .get(
                1,
                utxos_route,
                &format!("/api/v1/wallets/{id}/utxos"),
                Some(viewer),
            )
            .await
            .ok("list outputs");
        assert_eq!(list["wallet_id"], id.as_str());
        let total: u64 = funded.iter().map(|o| o.txout.value.to_sat()).sum();
        assert_eq!(list["available_sats"], total);
        assert_eq!(list["next_change_index"], 0);
        let utxos = list["utxos"].as_array().unwrap();
        assert_eq!(utxos.len(), funded.len());
        for o in funded {
            let u = utxos
                .iter()
                .find(|u| u["outpoint"] == o.outpoint.to_string())
                .expect("registered output listed");
            assert_eq!(u["amount_sats"], o.txout.value.to_sat());
            assert_eq!(u["path"], o.path.to_string());
            assert_eq!(u["script_pubkey"], o.txout.script_pubkey.to_hex_string());
            assert_eq!(u["state"], "available");
            assert_eq!(u["origin"], "registered");
        }
    }
    // The same outpoint with other data conflicts; bad entries are refused whole.
    // (A Taproot output may be registered by amount alone; an ECDSA one needs its funding
    // transaction, which fixes the amount.)
    let mut conflicting = registration(&t_funded[..1]);
    conflicting["utxos"][0]["amount_sats"] = json!(1);
    conflicting["utxos"][0]["funding_transaction"] = Value::Null;
    let r = api
        .post(
            1,
            utxos_route,
            &format!("/api/v1/wallets/{tid}/utxos"),
            Some(signer),
            conflicting,
        )
        .await;
    assert_error(&r, 409, "utxo_conflict", "conflicting registration");
    let funding_hex = |o: &SpendableOutput| {
        consensus::encode::serialize_hex(o.funding_transaction.as_ref().unwrap())
    };
    let other = fund(&ekey, &[("m/0/5", 1_000)]).remove(0);
    for (entry, what) in [
        (
            json!({"outpoint": e_funded[0].outpoint.to_string(), "path": "m/0/0"}),
            "P2WPKH output without its funding transaction",
        ),
        (
            json!({"outpoint": e_funded[0].outpoint.to_string(), "path": "m/0/0",
                   "funding_transaction": funding_hex(&other)}),
            "funding transaction of another txid",
        ),
        (
            json!({"outpoint": e_funded[0].outpoint.to_string(), "path": "m/0/0",
                   "amount_sats": 1, "funding_transaction": funding_hex(&e_funded[0])}),
            "amount other than the funding transaction's",
        ),
        (
            json!({"outpoint": e_funded[0].outpoint.to_string(), "path": "m/0/1",
                   "funding_transaction": funding_hex(&e_funded[0])}),
            "funding output paying another path's script",
        ),
        (
            json!({"outpoint": e_funded[0].outpoint.to_string(), "path": "m/0/0",
                   "funding_transaction": "00zz"}),
            "funding transaction that does not decode",
        ),
        (
            json!({"outpoint": "nope", "amount_sats": 1000, "path": "m/0/0"}),
            "bad outpoint",
        ),
        (
            json!({"outpoint": format!("{}:1", e_funded[0].outpoint.txid), "amount_sats": 0, "path": "m/0/0"}),
            "zero amount",
        ),
        (
            json!({"outpoint": format!("{}:2", e_funded[0].outpoint.txid), "amount_sats": 1000, "path": "m/0'/0"}),
            "hardened path",
        ),
    ] {
        let r = api
            .post(
                1,
                utxos_route,
                &format!("/api/v1/wallets/{eid}/utxos"),
                Some(signer),
                json!({"utxos": [entry]}),
            )
            .await;
        assert_error(&r, 422, "invalid_request", what);
    }
    let r = api
        .post(
            1,
            utxos_route,
            &format!("/api/v1/wallets/{eid}/utxos"),
            Some(signer),
            json!({"utxos": []}),
        )
        .await;
    assert_error(&r, 422, "invalid_request", "no outputs");

    let tx_route = "/api/v1/transactions";
    let e_recipient = tkey.chain_address(Chain::Receive, 5).unwrap();
    let t_recipient = ekey.chain_address(Chain::Receive, 5).unwrap();
    let payment = |wallet: &str, to: &str, amount: u64| json!({"wallet_id": wallet, "recipient": to, "amount_sats": amount, "fee_rate_sat_vb": 2.0});
    for (who, token) in [("viewer", viewer), ("admin", admin)] {
        let r = api
            .post(
                1,
                tx_route,
                tx_route,
                Some(token),
                payment(&eid, &e_recipient.to_string(), 10_000),
            )
            .await;
        assert_error(&r, 403, "forbidden", &format!("{who} pays"));
    }
    // Client mistakes: clear codes, nothing reserved or signed.
    for (body, status, code, what) in [
        (
            payment(&eid, &e_recipient.to_string(), 5_000_000),
            422,
            "insufficient_funds",
            "insufficient funds",
        ),
        (
            payment(&eid, &e_recipient.to_string(), 100),
            422,
            "dust_output",
            "dust",
        ),
        (
            payment(&eid, "not-an-address", 10_000),
            400,
            "invalid_address",
            "bad address",
        ),
        (
            payment(&eid, "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", 10_000),
            422,
            "wrong_network",
            "mainnet address",
        ),
        (
            json!({"wallet_id": eid, "recipient": e_recipient.to_string(), "amount_sats": 10_000, "fee_rate_sat_vb": 0.0}),
            422,
            "invalid_fee_rate",
            "zero fee rate",
        ),
        (
            payment("no-such-wallet", &e_recipient.to_string(), 10_000),
            404,
            "not_found",
            "unknown wallet",
        ),
    ] {
        let r = api.post(1, tx_route, tx_route, Some(signer), body).await;
        assert_error(&r, status, code, what);
        if code == "insufficient_funds" {
            let d = &r.json()["error"]["details"];
            assert_eq!(d["available_sats"], 100_000);
            assert_eq!(d["utxos"], 2);
            assert!(d["needed_sats"].as_u64().unwrap() > 5_000_000);
        }
        if code == "dust_output" {
            assert_eq!(r.json()["error"]["details"]["amount_sats"], 100);
        }
        if code == "wrong_network" {
            assert_eq!(r.json()["error"]["details"]["expected"], "regtest");
        }
    }
    let list = api
        .get(
            1,
            utxos_route,
            &format!("/api/v1/wallets/{eid}/utxos"),
            Some(viewer),
        )
        .await
        .ok("outputs after refused payments");
    assert_eq!(
        list["available_sats"], 100_000,
        "a refused payment reserved outputs"
    );
    phase("UTXO registry and refused payments");

    // ECDSA (P2WPKH): 70 000 sats needs both outputs.
    let r = api
        .post(
            1,
            tx_route,
            tx_route,
            Some(signer),
            payment(&eid, &e_recipient.to_string(), 70_000),
        )
        .await;
    let e_paid = r.ok("ECDSA payment");
    report_signing("ECDSA payment (/transactions)", &e_paid);
    let e_tx = check_payment(
        &api,
        viewer,
        &eid,
        &ekey,
        &e_funded,
        &e_recipient,
        70_000,
        0,
        &e_paid,
    )
    .await;
    assert_eq!(e_tx.input.len(), 2);
    assert!(e_paid["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["method"] == "interactive" && i["scheme"] == "cggmp24"));
    phase("ECDSA payment through /transactions");

    // Taproot (P2TR): 30 000 sats from the one 80 000 sats output.
    let r = api
        .post(
            1,
            tx_route,
            tx_route,
            Some(signer),
            payment(&tid, &t_recipient.to_string(), 30_000),
        )
        .await;
    let t_paid = r.ok("Taproot payment");
    report_signing("Taproot payment (/transactions)", &t_paid);
    let t_tx = check_payment(
        &api,
        viewer,
        &tid,
        &tkey,
        &t_funded,
        &t_recipient,
        30_000,
        0,
        &t_paid,
    )
    .await;
    assert_eq!(t_tx.input.len(), 1);
    assert!(t_paid["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["method"] == "frost" && i["scheme"] == "frost"));
    phase("Taproot payment through /transactions");

    // The registry followed: the funding outputs are spent by the payment, the change is
    // registered and available, and the next change index moved on.
    for (id, funded, paid) in [(&eid, &e_funded, &e_paid), (&tid, &t_funded, &t_paid)] {
        let list = api
            .get(
                1,
                utxos_route,
                &format!("/api/v1/wallets/{id}/utxos?include_spent=true"),
                Some(viewer),
            )
            .await
            .ok("outputs after payment");
        let utxos = list["utxos"].as_array().unwrap();
        for o in funded {
            let u = utxos
                .iter()
                .find(|u| u["outpoint"] == o.outpoint.to_string())
                .unwrap();
            assert_eq!(u["state"], "spent", "{u}");
            assert_eq!(u["spent_by"], paid["txid"], "{u}");
        }
        let change = &paid["spend"]["change"];
        let change_outpoint = format!("{}:{}", paid["txid"].as_str().unwrap(), change["vout"]);
        let u = utxos
            .iter()
            .find(|u| u["outpoint"] == change_outpoint)
            .unwrap_or_else(|| panic!("change {change_outpoint} not registered: {list}"));
        assert_eq!(u["origin"], "change");
        assert_eq!(u["state"], "available");
        assert_eq!(u["address"], change["address"]);
        assert_eq!(list["available_sats"], change["amount_sats"]);
        assert_eq!(list["next_change_index"], 1);
        assert_eq!(list["next_change_address"], {
            let key = if id == &eid { &ekey } else { &tkey };
            key.chain_address(Chain::Change, 1).unwrap().to_string()
        });
        let unspent = api
            .get(
                1,
                utxos_route,
                &format!("/api/v1/wallets/{id}/utxos"),
                Some(viewer),
            )
            .await
            .ok("unspent outputs");
        assert_eq!(unspent["utxos"].as_array().unwrap().len(), 1);
    }

    // The change is spendable, and an output is spent once: two payments at once from the
    // Taproot wallet's one output, its change, get one signature and one refusal.
    let t_change_vout = t_paid["spend"]["change"]["vout"].as_u64().unwrap() as u32;
    let t_change = SpendableOutput {
        outpoint: OutPoint {
            txid: t_tx.compute_txid(),
            vout: t_change_vout,
        },
        txout: t_tx.output[t_change_vout as usize].clone(),
        funding_transaction: Some(t_tx.clone()),
        wallet: tkey.clone(),
        path: "m/1/0".parse().unwrap(),
    };
    let t_recipient_text = t_recipient.to_string();
    let racing = futures_join(vec![
        api.post(
            1,
            tx_route,
            tx_route,
            Some(signer),
            payment(&tid, &t_recipient_text, 20_000),
        ),
        api.post(
            1,
            tx_route,
            tx_route,
            Some(signer),
            payment(&tid, &t_recipient_text, 20_000),
        ),
    ])
    .await;
    let (won, lost): (Vec<&Resp>, Vec<&Resp>) = racing.iter().partition(|r| r.status == 200);
    assert_eq!(
        (won.len(), lost.len()),
        (1, 1),
        "statuses {:?}",
        racing
            .iter()
            .map(|r| (r.status, &r.text))
            .collect::<Vec<_>>()
    );
    let code = lost[0].json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        matches!(code.as_str(), "insufficient_funds" | "utxo_busy"),
        "{}",
        lost[0].text
    );
    assert!(matches!(lost[0].status, 409 | 422), "{}", lost[0].text);
    let second = won[0].json();
    eprintln!(
        "[api test] fact: concurrent payments from one output: {} and {} ({code})",
        won[0].status, lost[0].status
    );
    check_payment(
        &api,
        viewer,
        &tid,
        &tkey,
        std::slice::from_ref(&t_change),
        &t_recipient,
        20_000,
        1,
        &second,
    )
    .await;
    let r = api
        .get(
            1,
            utxos_route,
            "/api/v1/wallets/no-such-wallet/utxos",
            Some(viewer),
        )
        .await;
    assert_error(&r, 404, "not_found", "outputs of an unknown wallet");
    let r = api
        .get(
            1,
            utxos_route,
            &format!("/api/v1/wallets/{tid}/utxos?include_spent=maybe"),
            Some(viewer),
        )
        .await;
    assert_error(&r, 400, "invalid_request", "include_spent=maybe");
    phase("change spent; concurrent payments");

    // ---- 5. PSBT signing, with a presignature for the ECDSA input -------------------------
    let presign_route = "/api/v1/wallets/{id}/presignatures";
    for (who, token) in [("viewer", viewer), ("signer", signer)] {
        let r = api
            .post(
                1,
                presign_route,
                &format!("/api/v1/wallets/{eid}/presignatures"),
                Some(token),
                json!({"path": "m/0/7", "count": 1}),
            )
            .await;
        assert_error(&r, 403, "forbidden", &format!("{who} makes presignatures"));
    }
    let r = api
        .post(
            1,
            presign_route,
            &format!("/api/v1/wallets/{eid}/presignatures"),
            Some(admin),
            json!({"path": "m/0/7", "count": 101}),
        )
        .await;
    assert_error(&r, 400, "invalid_request", "101 presignatures");
    let r = api
        .post(
            1,
            presign_route,
            &format!("/api/v1/wallets/{eid}/presignatures"),
            Some(admin),
            json!({"path": "m/0/7", "count": 1}),
        )
        .await;
    let accepted = r.ok("presignatures");
    assert_eq!(r.status, 202);
    let c = api
        .wait_ceremony(1, admin, accepted["ceremony_id"].as_str().unwrap())
        .await;
    assert_eq!(c["kind"], "presign");
    let stats = api
        .get(
            1,
            "/api/v1/presignatures/stats",
            "/api/v1/presignatures/stats",
            Some(viewer),
        )
        .await
        .ok("pool stats");
    assert_eq!(stats["node"], 1);
    let e_stats = stats["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["wallet_id"] == eid.as_str())
        .unwrap_or_else(|| panic!("no pool stats for the ECDSA wallet: {stats}"));
    assert!(
        stats["wallets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["wallet_id"] != tid.as_str()),
        "pool stats are for ECDSA wallets only: {stats}"
    );
    let level = e_stats["levels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["path"] == "m/0/7")
        .unwrap_or_else(|| panic!("no m/0/7 level: {e_stats}"));
    assert_eq!(level["ready"], 1);
    let presign_signers: Vec<String> = level["signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let presign_signers = presign_signers.join(",");
    let m = api.metrics(&devnet, 1).await;
    assert_eq!(
        m.sum(
            "mpc_presignatures_ready",
            &[
                ("wallet", &eid),
                ("path", "m/0/7"),
                ("signers", &presign_signers)
            ]
        ),
        1.0,
        "pool level in the metrics"
    );
    phase("presignature ceremony and pool levels");

    let sign_route = "/api/v1/wallets/{id}/psbt/sign";
    let e_sign_path = format!("/api/v1/wallets/{eid}/psbt/sign");
    let mixed_inputs: Vec<SpendableOutput> = fund(&ekey, &[("m/0/7", 50_000)])
        .into_iter()
        .chain(fund(&tkey, &[("m/0/3", 60_000)]))
        .collect();
    let psbt = build_psbt(
        &mixed_inputs,
        &[Payment {
            script_pubkey: tkey
                .chain_address(Chain::Receive, 9)
                .unwrap()
                .script_pubkey(),
            amount: Amount::from_sat(108_000),
            owner: None,
        }],
    )
    .unwrap()
    .to_string();
    let sign_body = json!({"psbt": psbt, "additional_wallets": [tid]});
    for (who, token) in [("viewer", viewer), ("admin", admin)] {
        let r = api
            .post(1, sign_route, &e_sign_path, Some(token), sign_body.clone())
            .await;
        assert_error(&r, 403, "forbidden", &format!("{who} signs"));
    }
    let garbage_psbt = base64::engine::general_purpose::STANDARD.encode(b"certainly not a PSBT");
    for (body, status, code, what) in [
        (
            json!({"psbt": "%%% not base64 %%%"}),
            400,
            "malformed_psbt",
            "bad base64",
        ),
        (
            json!({"psbt": garbage_psbt}),
            400,
            "malformed_psbt",
            "garbage PSBT",
        ),
        (
            json!({"psbt": psbt, "fee": 1}),
            422,
            "invalid_body",
            "unknown field",
        ),
        (
            json!({"additional_wallets": []}),
            422,
            "invalid_body",
            "missing psbt",
        ),
        (
            json!({"psbt": 7}),
            422,
            "invalid_body",
            "psbt of the wrong type",
        ),
    ] {
        let r = api
            .post(1, sign_route, &e_sign_path, Some(signer), body)
            .await;
        assert_error(&r, status, code, what);
    }
    let r = api
        .call(
            1,
            "POST",
            sign_route,
            &e_sign_path,
            Some(signer),
            Body::Raw("application/json", b"{\"psbt\": ".to_vec()),
        )
        .await;
    assert_error(&r, 400, "invalid_body", "truncated JSON");
    let r = api
        .call(
            1,
            "POST",
            sign_route,
            &e_sign_path,
            Some(signer),
            Body::Raw("text/plain", sign_body.to_string().into_bytes()),
        )
        .await;
    assert_error(&r, 415, "unsupported_media_type", "text/plain body");
    let oversized = json!({"psbt": "A".repeat(mpc_api::MAX_BODY_BYTES + 1024)});
    let r = api
        .post(1, sign_route, &e_sign_path, Some(signer), oversized)
        .await;
    assert_error(&r, 413, "body_too_large", "oversized body");
    // A PSBT of the ECDSA wallet alone with a Taproot input it does not own.
    let r = api
        .post(
            1,
            sign_route,
            &e_sign_path,
            Some(signer),
            json!({"psbt": psbt}),
        )
        .await;
    assert_error(&r, 422, "psbt_refused", "foreign input");
    assert_eq!(r.json()["error"]["details"]["inputs"][0]["input"], 1);
    // What a signer token cannot get signed, each refused with its code before any session
    // (the presignature for m/0/7 stays ready: the signing below uses it).
    let mixed = parse_psbt(&psbt).unwrap();
    let mut weak = mixed.clone();
    weak.inputs[0].sighash_type = Some(PsbtSighashType::from_u32(0x82));
    let mut unproven = mixed.clone();
    unproven.inputs[0].non_witness_utxo = None;
    let mut dust = mixed.clone();
    dust.unsigned_tx.output[0].value = Amount::from_sat(1);
    for (bad, code, detail, what) in [
        (
            weak,
            "psbt_refused",
            json!({"inputs": [{"input": 0, "code": "sighash_type_refused"}]}),
            "SIGHASH_NONE|ANYONECANPAY",
        ),
        (
            unproven,
            "psbt_refused",
            json!({"inputs": [{"input": 0, "code": "amount_unproven"}]}),
            "amount without its previous transaction",
        ),
        (
            dust,
            "invalid_transaction",
            json!({"rule": "dust_output", "output": 0}),
            "dust output",
        ),
    ] {
        let r = api
            .post(
                1,
                sign_route,
                &e_sign_path,
                Some(signer),
                json!({"psbt": bad.to_string(), "additional_wallets": [tid]}),
            )
            .await;
        assert_error(&r, 422, code, what);
        let details = &r.json()["error"]["details"];
        match code {
            "psbt_refused" => {
                let refused = &details["inputs"][0];
                assert_eq!(
                    refused["input"], detail["inputs"][0]["input"],
                    "{what}: {details}"
                );
                assert_eq!(
                    refused["code"], detail["inputs"][0]["code"],
                    "{what}: {details}"
                );
            }
            _ => {
                assert_eq!(details["rule"], detail["rule"], "{what}: {details}");
                assert_eq!(details["output"], detail["output"], "{what}: {details}");
            }
        }
    }

    let r = api
        .post(1, sign_route, &e_sign_path, Some(signer), sign_body)
        .await;
    let signed = r.ok("sign PSBT");
    report_signing("PSBT sign (presignature + FROST)", &signed);
    let methods: Vec<&str> = signed["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["presignature", "frost"]);
    let signed_psbt = parse_psbt(signed["psbt"].as_str().unwrap()).unwrap();
    let tx: Transaction =
        consensus::encode::deserialize_hex(signed["raw_transaction"].as_str().unwrap()).unwrap();
    let funded: Vec<TxOut> = mixed_inputs.iter().map(|o| o.txout.clone()).collect();
    assert_eq!(spent_outputs(&signed_psbt).unwrap(), funded);
    verify_transaction(&tx, &funded).expect("bitcoinconsensus rejects the signed PSBT");
    assert_eq!(signed["txid"], tx.compute_txid().to_string());
    assert_eq!(signed["signers"].as_array().unwrap().len(), 3);
    phase("PSBT signing (presignature + FROST)");

    // ---- 7. metrics -------------------------------------------------------------------------
    let m = api.metrics(&devnet, 1).await;
    for (name, kind) in [
        ("mpc_api_requests_total", "counter"),
        ("mpc_api_request_duration_seconds", "histogram"),
        ("mpc_signing_duration_seconds", "histogram"),
        ("mpc_ceremony_duration_seconds", "histogram"),
        ("mpc_peer_live", "gauge"),
        ("mpc_peer_last_heartbeat_timestamp_ms", "gauge"),
        ("mpc_peers_live", "gauge"),
        ("mpc_presignatures_ready", "gauge"),
        ("mpc_presignatures_consumed", "gauge"),
        ("mpc_ceremonies", "gauge"),
        ("mpc_sessions_seen", "gauge"),
    ] {
        assert!(m.has_type(name, kind), "no {kind} {name} in:\n{}", m.text);
    }
    // Request counters by route template, never by concrete path.
    assert!(
        m.sum(
            "mpc_api_requests_total",
            &[
                ("method", "GET"),
                ("route", "/api/v1/wallets"),
                ("status", "200")
            ]
        ) >= 4.0
    );
    assert!(
        m.sum(
            "mpc_api_requests_total",
            &[("route", "/api/v1/dkg/initiate"), ("status", "403")]
        ) >= 2.0
    );
    assert!(
        m.sum(
            "mpc_api_requests_total",
            &[
                ("route", "/api/v1/wallets/{id}/psbt/sign"),
                ("status", "413")
            ]
        ) >= 1.0
    );
    assert!(m
        .find("mpc_api_requests_total", &[])
        .all(|(l, _)| !l["route"].contains(&eid)));
    assert!(
        m.sum(
            "mpc_api_request_duration_seconds_count",
            &[("route", "/api/v1/transactions")]
        ) >= 2.0
    );
    // Four signings went through node 1: three payments and the PSBT.
    assert_eq!(m.sum("mpc_signing_duration_seconds_count", &[]), 4.0);
    assert_eq!(
        m.sum(
            "mpc_signing_duration_seconds_count",
            &[("method", "interactive")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("mpc_signing_duration_seconds_count", &[("method", "frost")]),
        2.0
    );
    assert_eq!(
        m.sum("mpc_signing_duration_seconds_count", &[("method", "mixed")]),
        1.0
    );
    assert!(m.sum("mpc_signing_duration_seconds_sum", &[]) > 0.0);
    for (kind, n) in [("keygen", 2.0), ("presign", 1.0)] {
        assert_eq!(
            m.sum(
                "mpc_ceremony_duration_seconds_count",
                &[("kind", kind), ("outcome", "succeeded")]
            ),
            n,
            "{kind}"
        );
        assert_eq!(
            m.sum("mpc_ceremonies", &[("kind", kind), ("state", "succeeded")]),
            n,
            "{kind}"
        );
    }
    assert_eq!(m.sum("mpc_ceremonies", &[]), 3.0);
    assert_eq!(m.sum("mpc_peers_live", &[]), 5.0);
    for id in 1..=5 {
        let id = id.to_string();
        assert_eq!(m.sum("mpc_peer_live", &[("node", &id)]), 1.0, "peer {id}");
    }
    assert!(m.find("mpc_peer_last_heartbeat_timestamp_ms", &[]).count() >= 4);
    // The presignature was used for the PSBT.
    assert_eq!(
        m.sum(
            "mpc_presignatures_ready",
            &[("wallet", &eid), ("path", "m/0/7")]
        ),
        0.0
    );
    assert_eq!(
        m.sum(
            "mpc_presignatures_consumed",
            &[("wallet", &eid), ("path", "m/0/7")]
        ),
        1.0
    );
    assert!(m.sum("mpc_sessions_seen", &[]) >= 1.0);
    phase("metrics");

    // ---- 6. rate limits: refused requests start nothing ------------------------------------
    // Sessions every node took part in, and node 2's ceremonies, before.
    async fn sessions(api: &Api, devnet: &Devnet) -> f64 {
        let mut total = 0.0;
        for id in 1..=5 {
            total += api.metrics(devnet, id).await.sum("mpc_sessions_seen", &[]);
        }
        total
    }
    let sessions_before = sessions(&api, &devnet).await;
    eprintln!("[api test] fact: protocol sessions seen by the 5 nodes before the burst: {sessions_before}");
    let m2_before = api.metrics(&devnet, 2).await;
    let limited_admin = devnet.token(Role::Admin).unwrap();
    let limited_signer = devnet.token(Role::Signer).unwrap();
    // Spend each token's burst on reads.
    for token in [&limited_admin, &limited_signer] {
        let mut ok = 0;
        loop {
            let r = api.get(2, wallets_route, wallets_route, Some(token)).await;
            match r.status {
                200 => ok += 1,
                429 => break,
                s => panic!("GET /wallets on node 2: {s} {}", r.text),
            }
            assert!(ok <= TOKEN_BURST + 1, "node 2 did not limit the token");
        }
        assert!(ok >= TOKEN_BURST - 1, "only {ok} requests before the limit");
    }
    // Then a burst of requests that would each start a session or a ceremony.
    let e_recipient_text = e_recipient.to_string();
    let bursts: Vec<_> = (0..4)
        .map(|_| {
            api.post(
                2,
                dkg_route,
                dkg_route,
                Some(&limited_admin),
                json!({"protocol": "frost", "name": "should not exist"}),
            )
        })
        .collect();
    let dkg_refusals = futures_join(bursts).await;
    let mut refused = 0;
    for r in &dkg_refusals {
        assert_error(r, 429, "rate_limited", "DKG beyond the limit");
        refused += 1;
    }
    let e_presign_path = format!("/api/v1/wallets/{eid}/presignatures");
    let more = vec![
        api.post(
            2,
            "/api/v1/aux-info",
            "/api/v1/aux-info",
            Some(&limited_admin),
            json!({}),
        ),
        api.post(
            2,
            presign_route,
            &e_presign_path,
            Some(&limited_admin),
            json!({"path": "m/0/8", "count": 1}),
        ),
        api.post(
            2,
            tx_route,
            tx_route,
            Some(&limited_signer),
            payment(&eid, &e_recipient_text, 10_000),
        ),
        api.post(
            2,
            sign_route,
            &e_sign_path,
            Some(&limited_signer),
            json!({"psbt": psbt, "additional_wallets": [tid]}),
        ),
    ];
    let mut retry_after = 0;
    for r in futures_join(more).await.iter().chain(&dkg_refusals) {
        assert_error(r, 429, "rate_limited", "beyond the limit");
        assert_eq!(r.json()["error"]["details"]["limit"], "token");
        let secs: u64 = r
            .header("retry-after")
            .expect("429 without Retry-After")
            .parse()
            .expect("Retry-After in whole seconds");
        assert!(
            (1..=u64::from(TOKEN_BURST / TOKEN_RATE) + 1).contains(&secs),
            "{secs}"
        );
        retry_after = retry_after.max(secs);
        eprintln!("[api test] fact: node 2 refused with 429, Retry-After {secs}");
    }
    refused += 4;
    // Another token is not affected by these limits.
    let fresh = devnet.token(Role::Viewer).unwrap();
    api.get(2, wallets_route, wallets_route, Some(&fresh))
        .await
        .ok("a fresh token on node 2");
    // Let any session that had been started show up, then compare.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m2_after = api.metrics(&devnet, 2).await;
    assert_eq!(
        m2_after.sum("mpc_ceremonies", &[]),
        m2_before.sum("mpc_ceremonies", &[]),
        "a refused request started a ceremony on node 2"
    );
    assert_eq!(m2_after.sum("mpc_ceremonies", &[]), 0.0);
    assert_eq!(
        sessions(&api, &devnet).await,
        sessions_before,
        "a refused request started a protocol session"
    );
    assert_eq!(
        m2_after.sum("mpc_api_rate_limited_total", &[("limit", "token")])
            - m2_before.sum("mpc_api_rate_limited_total", &[("limit", "token")]),
        f64::from(refused + 2),
        "every refusal counted (and the two that ended the read bursts)"
    );
    assert_eq!(
        m2_after.sum(
            "mpc_api_requests_total",
            &[("route", "/api/v1/dkg/initiate"), ("status", "429")]
        ),
        4.0
    );
    assert_eq!(
        m2_after.sum("mpc_ceremony_duration_seconds_count", &[]),
        0.0,
        "no ceremony ran through node 2"
    );
    let list = api
        .get(
            1,
            utxos_route,
            &format!("/api/v1/wallets/{eid}/utxos"),
            Some(viewer),
        )
        .await
        .ok("outputs after refused payment");
    assert_eq!(list["utxos"][0]["state"], "available");
    // After Retry-After the token works again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    api.get(2, wallets_route, wallets_route, Some(&limited_admin))
        .await
        .ok("the limited token after Retry-After");
    // The CLI's client waits out a 429 while polling a ceremony instead of reporting a failure
    // for a ceremony that runs on: a presignature (seconds of CPU) through node 2, polled every
    // 50 ms by a token allowed one request a second after a burst of 3.
    let throttled_before = api
        .metrics(&devnet, 2)
        .await
        .sum("mpc_api_rate_limited_total", &[("limit", "token")]);
    let client = ApiClient::new(api.bases[&2].clone(), devnet.token(Role::Admin).ok());
    let presigned = client
        .ceremony(&e_presign_path, &json!({"path": "m/0/9", "count": 1}), None)
        .await
        .expect("a ceremony polled through the rate limit");
    assert_eq!(
        presigned["ids"].as_array().map(Vec::len),
        Some(1),
        "{presigned}"
    );
    let throttled = api
        .metrics(&devnet, 2)
        .await
        .sum("mpc_api_rate_limited_total", &[("limit", "token")])
        - throttled_before;
    eprintln!(
        "[api test] fact: the client's ceremony polls were refused {throttled} times and waited"
    );
    assert!(
        throttled >= 1.0,
        "no poll met the limit: the check proves nothing"
    );
    phase("per-token rate limit (node 2)");

    // Node 3 limits each address: fresh tokens do not help, /healthz is exempt.
    tokio::time::sleep(Duration::from_secs(u64::from(IP_BURST / IP_RATE) + 1)).await;
    let tokens: Vec<String> = (0..8)
        .map(|_| devnet.token(Role::Viewer).unwrap())
        .collect();
    let burst: Vec<_> = tokens
        .iter()
        .map(|t| api.get(3, wallets_route, wallets_route, Some(t)))
        .collect();
    let answers = futures_join(burst).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    eprintln!("[api test] fact: node 3 passed {ok} of 8 concurrent requests from one address");
    let limited: Vec<&Resp> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok + limited.len(), answers.len());
    assert!(
        (1..=IP_BURST as usize + 1).contains(&ok),
        "{ok} of 8 requests passed a burst of {IP_BURST}"
    );
    for r in &limited {
        assert_error(r, 429, "rate_limited", "beyond the address limit");
        assert_eq!(r.json()["error"]["details"]["limit"], "ip");
        assert!(r.header("retry-after").is_some());
    }
    api.get(3, "/healthz", "/healthz", None)
        .await
        .ok("healthz is not limited");
    phase("per-address rate limit (node 3)");

    // ---- 8. the CLI on the same devnet --------------------------------------------------
    let url = api.bases[&1].clone();
    let env = [
        ("MPC_WALLET_URL", url.as_str()),
        ("MPC_WALLET_TOKEN", viewer),
    ];
    let listed = cli_json(
        "wallet list",
        &cli(&["wallet", "list", "--json"], &env).await,
    );
    let api_list = api
        .get(1, wallets_route, wallets_route, Some(viewer))
        .await
        .ok("wallets");
    assert_eq!(listed, api_list);
    let pool = cli_json("pool stats", &cli(&["pool", "stats", "--json"], &env).await);
    assert_eq!(pool["node"], 1);
    assert!(pool["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["wallet_id"] == eid.as_str()));
    let status = cli_json(
        "cluster status",
        &cli(&["cluster", "status", "--json"], &env).await,
    );
    assert_eq!(status["node"], 1);
    assert_eq!(status["live"], 5);
    assert_eq!(status["threshold"], 3);
    // Incidents: none recorded by node 1 (every signer behaved), through the API and the CLI;
    // releasing a node needs an admin token.
    let incidents_route = "/api/v1/cluster/incidents";
    let listed = api
        .get(1, incidents_route, incidents_route, Some(viewer))
        .await
        .ok("incidents");
    assert_eq!(listed["recorded_by"], 1);
    let by_cli = cli_json(
        "cluster incidents",
        &cli(&["cluster", "incidents", "--json"], &env).await,
    );
    assert_eq!(by_cli, listed);
    let released = api
        .post(
            1,
            "/api/v1/cluster/incidents/{node}/release",
            "/api/v1/cluster/incidents/2/release",
            Some(admin),
            json!({}),
        )
        .await
        .ok("release");
    assert_eq!(released, json!({"node": 2, "released": 0}));
    let (code, stdout, _) = cli(&["cluster", "release", "2", "--json"], &env).await;
    assert_eq!(code, 1, "a viewer releases a node: {stdout}");
    let err: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(err["error"]["code"], "forbidden");
    // Evidence is checked by whichever node is asked, against its own CA: bytes that are no
    // evidence are answered as not valid (200), and the CLI exits non-zero.
    let verify_route = "/api/v1/cluster/evidence/verify";
    let checked = api
        .post(
            1,
            verify_route,
            verify_route,
            Some(viewer),
            json!({"evidence": "00"}),
        )
        .await
        .ok("evidence verify");
    assert_eq!(checked["valid"], false, "{checked}");
    assert_eq!(checked["checked_by"], 1);
    let (code, stdout, _) = cli(&["cluster", "verify", "00", "--json"], &env).await;
    assert_eq!(code, 1, "evidence that does not verify: {stdout}");
    // Flags instead of the environment; the human table names both wallets.
    let (code, table, stderr) =
        cli(&["wallet", "list", "--url", &url, "--token", viewer], &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(table.contains(&eid) && table.contains(&tid), "{table}");
    // API errors in --json mode: the error object on stdout, exit status 1.
    let (code, stdout, _) = cli(
        &[
            "wallet",
            "create",
            "--protocol",
            "frost",
            "--name",
            "nope",
            "--json",
        ],
        &env,
    )
    .await;
    assert_eq!(code, 1);
    let err: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(err["error"]["code"], "forbidden");
    assert_eq!(err["error"]["status"], 403);
    // Missing URL: a clear message.
    let (code, _, stderr) = cli(&["wallet", "list"], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("MPC_WALLET_URL"), "{stderr}");

    // Offline token issue, with the cluster's secret from the environment and from a file.
    let secret_text = String::from_utf8(secret.clone()).unwrap();
    let (code, stdout, stderr) = cli(
        &["token", "issue", "--role", "viewer", "--ttl", "10m"],
        &[("JWT_SECRET", secret_text.trim())],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let issued = stdout.trim().to_string();
    let c = decode_claims(&issued);
    assert_eq!(c["role"], "viewer");
    assert_eq!(c["iss"], "mpc-wallet");
    assert_eq!(c["aud"], "mpc-wallet-api");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 600);
    api.get(1, wallets_route, wallets_route, Some(&issued))
        .await
        .ok("CLI-issued viewer token reads");
    let r = api
        .post(
            1,
            dkg_route,
            dkg_route,
            Some(&issued),
            json!({"protocol": "frost", "name": "x"}),
        )
        .await;
    assert_error(&r, 403, "forbidden", "CLI-issued viewer token runs DKG");
    let secret_file = dir.join("jwt-secret").display().to_string();
    let issued = cli_json(
        "token issue --json",
        &cli(
            &[
                "token",
                "issue",
                "--role",
                "signer",
                "--ttl",
                "1h",
                "--secret-file",
                &secret_file,
                "--json",
            ],
            &[],
        )
        .await,
    );
    assert_eq!(issued["role"], "signer");
    assert_eq!(issued["algorithm"], "HS256");
    assert_eq!(
        issued["expires_at"].as_u64().unwrap() - issued["issued_at"].as_u64().unwrap(),
        3600
    );
    let listed = cli_json(
        "utxo list with the CLI-issued signer token",
        &cli(
            &["utxo", "list", &eid, "--json"],
            &[
                ("MPC_WALLET_URL", url.as_str()),
                ("MPC_WALLET_TOKEN", issued["token"].as_str().unwrap()),
            ],
        )
        .await,
    );
    assert_eq!(listed["wallet_id"], eid.as_str());
    // Without a secret the CLI refuses rather than issuing something unusable.
    let (code, _, stderr) = cli(&["token", "issue", "--role", "viewer"], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");

    // `mpc-wallet sign` (a PSBT file; the wallets found from its inputs) and `mpc-wallet send`
    // (from registered outputs), each answer verified from its signed PSBT by libsecp256k1
    // and bitcoinconsensus, independently of the node.
    let signer_env = [
        ("MPC_WALLET_URL", url.as_str()),
        ("MPC_WALLET_TOKEN", signer),
    ];
    let psbt = synthetic_payment(
        &[(&ekey, "m/0/30", 50_000), (&tkey, "m/0/30", 50_000)],
        &tkey,
        31,
        2_000,
    )
    .unwrap();
    let psbt_file = dir.join("cli-sign.psbt");
    std::fs::write(&psbt_file, &psbt).unwrap();
    let signed = cli_json(
        "sign",
        &cli(
            &["sign", "--psbt", psbt_file.to_str().unwrap(), "--json"],
            &signer_env,
        )
        .await,
    );
    verify_answer(&signed).expect("the PSBT `mpc-wallet sign` signed verifies");
    let schemes: BTreeSet<&str> = signed["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["scheme"].as_str())
        .collect();
    assert_eq!(schemes, BTreeSet::from(["cggmp24", "frost"]), "{signed}");
    for (id, key, to) in [(&eid, &ekey, &e_recipient), (&tid, &tkey, &t_recipient)] {
        let funded = fund(key, &[("m/0/31", 70_000)]);
        api.post(
            1,
            utxos_route,
            &format!("/api/v1/wallets/{id}/utxos"),
            Some(signer),
            registration(&funded),
        )
        .await
        .ok("outputs for `mpc-wallet send`");
        let sent = cli_json(
            "send",
            &cli(
                &[
                    "send",
                    "--wallet",
                    id,
                    "--to",
                    &to.to_string(),
                    "--amount",
                    "20000",
                    "--json",
                ],
                &signer_env,
            )
            .await,
        );
        verify_answer(&sent).expect("the payment `mpc-wallet send` made verifies");
        assert_eq!(sent["spend"]["amount_sats"], 20_000, "{sent}");
        assert_eq!(sent["spend"]["recipient"], to.to_string(), "{sent}");
    }
    phase("CLI");

    // ---- 3 (end). aux info ---------------------------------------------------------------
    // The nodes began with the checked-in aux info (`aux_info_fixture`): the ceremony costs a
    // minute or two of CPU here, and the devnet (the test script's main-job step) runs it over
    // the network to the end.
    // Here the route accepts, and the ceremony then fails with the participants' reason: aux
    // info exists for this node set, and it is never replaced silently.
    let r = api
        .post(
            1,
            "/api/v1/aux-info",
            "/api/v1/aux-info",
            Some(admin),
            json!({}),
        )
        .await;
    let accepted = r.ok("aux info");
    assert_eq!(r.status, 202);
    let aux_id = accepted["ceremony_id"].as_str().unwrap().to_string();
    assert_eq!(accepted["location"], format!("/api/v1/ceremonies/{aux_id}"));
    assert_eq!(r.header("location"), accepted["location"].as_str());
    let aux = api.wait_ceremony_outcome(1, viewer, &aux_id).await;
    assert_eq!(aux["kind"], "aux-info");
    assert_eq!(aux["coordinator"], 1);
    assert_eq!(aux["state"], "failed", "{aux}");
    let error = aux["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("refused by node ")
            && error.contains("aux info for [1, 2, 3, 4, 5] already exists"),
        "{aux}"
    );

    // ---- 1 (end). every route was exercised --------------------------------------------
    let exercised = api.exercised.lock().unwrap().clone();
    let on_node_1 = exercised.get(&1).cloned().unwrap_or_default();
    assert_eq!(on_node_1, expected, "routes that answered 2xx on node 1");
    // And the node agrees: its request counters show a 2xx for every documented route.
    let m = api.metrics(&devnet, 1).await;
    for (method, route) in &expected {
        let ok: f64 = m
            .find(
                "mpc_api_requests_total",
                &[("method", method), ("route", route)],
            )
            .filter(|(l, _)| l["status"].starts_with('2'))
            .map(|(_, v)| v)
            .sum();
        assert!(ok >= 1.0, "node 1 counted no 2xx for {method} {route}");
    }

    drop(devnet);
    let _ = std::fs::remove_dir_all(&dir);
    phase("route coverage");
    eprintln!("[api test] total {:.1} s", started.elapsed().as_secs_f64());
    for (name, secs) in &phases {
        eprintln!("[api test]   {name:<45} {secs:>7.1} s");
    }
}

fn report_signing(what: &str, answer: &Value) {
    let tx: Transaction =
        consensus::encode::deserialize_hex(answer["raw_transaction"].as_str().unwrap()).unwrap();
    eprintln!(
        "[api test] fact: {what}: {} inputs, {} vB, fee {} sats, signers {}, {:.0} ms inside the cluster",
        tx.input.len(),
        tx.vsize(),
        answer["spend"]["fee_sats"],
        answer["signers"],
        answer["duration_ms"].as_f64().unwrap_or(-1.0)
    );
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future finished"))
        .collect()
}
