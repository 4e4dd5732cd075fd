//! The web console (`/console`) in a real headless Chromium (Debian's `chromium`, driven through
//! `chromedriver` over the W3C WebDriver protocol) against three real node processes: sign-in
//! (a forged token refused with a message), the cluster, the wallets (one named with markup,
//! shown as text and never run), a wallet with its addresses, QR code, descriptors and
//! registered outputs, a wallet created from the page, the presignature pool, a payment
//! pending approvals with the exact CLI command to approve it (run as shown, twice, and the
//! request is signed), recent signings and refusals, the audit log, and a viewer refused
//! creating a wallet with a visible message. A screenshot of each page goes to
//! `target/test-logs/console/`. Skipped without Chromium unless `MPC_REQUIRE_CHROMIUM` is set
//! (scripts/test sets it and installs the packages).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use mpc_api::{
    routes::{KeygenRequest, SignRequest},
    Role,
};
use mpc_bitcoin::{
    approval::{ApprovalPolicy, Approver},
    Scheme,
};
use mpc_wallet::{
    commands::wallet_id_of,
    devnet::{synthetic_payment, wallet_key_from_api, Devnet, DevnetOptions},
};
use serde_json::{json, Value};

mod common;
use common::{cli, free_port, registration, which};

/// A wallet name an attacker chose: shown as text, it must never become markup or run.
const HOSTILE_NAME: &str = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>";

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    http: reqwest::Client,
    session: String,
    base: String,
    shots: PathBuf,
}

impl Drop for Driver {
    /// Ends the session (chromedriver then quits Chromium, which killing chromedriver alone
    /// would leave running), then stops chromedriver. Blocking: a test that panicked has no
    /// runtime to await in.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let address = self.base.trim_start_matches("http://");
            if let Ok(mut stream) = std::net::TcpStream::connect(address) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    stream,
                    "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n",
                    self.session
                );
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// chromedriver and a headless Chromium with a fresh profile in `dir`; `None` (test
    /// skipped) when they are not installed and `MPC_REQUIRE_CHROMIUM` is not set.
    async fn start(dir: &Path, shots: PathBuf) -> Option<Self> {
        let (Some(driver), Some(chromium)) = (which("chromedriver"), which("chromium")) else {
            if std::env::var_os("MPC_REQUIRE_CHROMIUM").is_some() {
                panic!("MPC_REQUIRE_CHROMIUM is set but chromium or chromedriver is not on PATH");
            }
            eprintln!("chromium or chromedriver not found (Debian's chromium and chromium-driver): test skipped");
            return None;
        };
        std::fs::create_dir_all(dir).unwrap();
        std::fs::create_dir_all(&shots).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if ready.is_some_and(|s| s["value"]["ready"] == true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = dir.join("profile");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1100",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let mut driver = Self {
            child,
            http,
            session: String::new(),
            base,
            shots,
        };
        let answer = driver
            .call(
                reqwest::Method::POST,
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": chromium, "args": args},
                }}}),
            )
            .await;
        driver.session = answer["sessionId"].as_str().unwrap().to_owned();
        Some(driver)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = if path == "/session" {
            format!("{}/session", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut request = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert!(status.is_success(), "webdriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            json!({}),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await;
    }

    /// The text of the first element matching `css` ("" if none).
    async fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits up to 60 s for `script` (a function body) to return true.
    async fn wait_for(&self, what: &str, script: &str, args: Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.js(script, args.clone()).await != Value::Bool(true) {
            let message = self.text("#message").await;
            assert!(
                Instant::now() < deadline,
                "{what}: not within 60 s; message on the page: {message:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Shows view `hash` and waits until view `view` has loaded and is shown (signed in).
    async fn view(&self, hash: &str, view: &str) {
        self.js("location.hash = arguments[0];", json!([hash]))
            .await;
        self.wait_for(
            view,
            "const v = document.getElementById('view'); return !v.hidden \
             && v.dataset.loaded === arguments[0] && location.hash === arguments[1];",
            json!([view, hash]),
        )
        .await;
    }

    /// Waits for the page's message line to show `text`.
    async fn wait_message(&self, text: &str) {
        self.wait_for(
            text,
            "const m = document.getElementById('message'); return !m.hidden \
             && m.textContent.includes(arguments[0]);",
            json!([text]),
        )
        .await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{name}: not a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).unwrap();
    }

    async fn sign_in(&self, token: &str) {
        self.wait_for(
            "the sign-in form",
            "return !document.getElementById('signin').hidden;",
            json!([]),
        )
        .await;
        self.type_into("#token", token).await;
        self.click("#signin-button").await;
    }

    async fn sign_out(&self) {
        self.click("#signout").await;
        self.wait_for(
            "signed out",
            "return !document.getElementById('signin').hidden;",
            json!([]),
        )
        .await;
    }
}

/// A new approver key in `dir`: (key file, public key).
async fn approver(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(format!("{name}.key"));
    let (code, stdout, stderr) = cli(
        &["approver", "keygen", "--out", file.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    (file, stdout.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_cluster_creates_wallets_and_shows_approvals_in_chromium() {
    let dir = std::env::temp_dir().join(format!("mpc-console-{}", uuid::Uuid::new_v4().simple()));
    // target/debug/mpc-wallet -> target/test-logs/console
    let shots = Path::new(env!("CARGO_BIN_EXE_mpc-wallet"))
        .ancestors()
        .nth(2)
        .unwrap()
        .join("test-logs/console");
    let Some(browser) = Driver::start(&dir.join("chromium"), shots).await else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let alice = approver(&dir, "alice").await;
    let bob = approver(&dir, "bob").await;
    let carol = approver(&dir, "carol").await;

    let mut options = DevnetOptions::new(
        3,
        2,
        dir.join("devnet"),
        env!("CARGO_BIN_EXE_mpc-wallet").into(),
    );
    options.aux_info_fixture = true;
    // Payments above 50,000 sats wait for 2 of 3 approvals; above 500,000 they are refused.
    options.policy.max_amount_per_tx_sats = Some(500_000);
    options.policy.approvals = ApprovalPolicy {
        required: 2,
        approvers: [("alice", &alice), ("bob", &bob), ("carol", &carol)]
            .into_iter()
            .map(|(name, (_, public_key))| Approver {
                name: name.into(),
                public_key: public_key.clone(),
            })
            .collect(),
        above_sats: Some(50_000),
        ..ApprovalPolicy::default()
    };
    let devnet = Devnet::launch(options).await.unwrap();
    let admin = devnet.client(1, Role::Admin).unwrap();
    let signer = devnet.client(1, Role::Signer).unwrap();
    let base = admin.base().to_owned();

    // A wallet whose name is markup, made through the API, with a registered output, a
    // payment signed, one refused and one pending approvals.
    let wallet = admin
        .keygen(&KeygenRequest::new(Scheme::Schnorr, HOSTILE_NAME), None)
        .await
        .unwrap();
    let (id, key) = (
        wallet_id_of(&wallet).unwrap(),
        wallet_key_from_api(&wallet).unwrap(),
    );
    let funded = mpc_testkit::fund(&key, &[("m/0/2", 120_000)]);
    signer
        .register_utxos(&id, &registration(&funded))
        .await
        .unwrap();
    let small = synthetic_payment(&[(&key, "m/0/0", 30_000)], &key, 7, 1_000).unwrap();
    let signed = signer.sign_psbt(&id, &SignRequest::new(small)).await;
    assert!(signed.unwrap()["txid"].is_string());
    let too_much = synthetic_payment(&[(&key, "m/0/1", 900_000)], &key, 8, 1_000).unwrap();
    assert!(signer
        .sign_psbt(&id, &SignRequest::new(too_much))
        .await
        .is_err());
    let large = synthetic_payment(&[(&key, "m/0/3", 90_000)], &key, 9, 1_000).unwrap();
    let pending = signer
        .sign_psbt(&id, &SignRequest::new(large))
        .await
        .unwrap();
    assert_eq!(pending["state"], "pending", "{pending}");
    let request_id = pending["request_id"].as_str().unwrap().to_owned();

    // Sign-in: a forged token is refused with a message; the admin's is taken.
    browser.open(&format!("{base}/console")).await;
    browser.sign_in("not-a-token").await;
    browser.wait_message("refused this token").await;
    browser.screenshot("signin-refused").await;
    let admin_token = devnet.token(Role::Admin).unwrap();
    browser.sign_in(&admin_token).await;
    browser.view("#health", "health").await;
    let summary = browser.text("#cluster-summary").await;
    assert!(summary.contains("3 of 3 nodes live"), "{summary}");
    assert_eq!(
        browser
            .js(
                "return document.querySelectorAll('#nodes .live').length;",
                json!([])
            )
            .await,
        3
    );
    browser.screenshot("cluster").await;

    // A wallet created from the page.
    browser.view("#create", "create").await;
    browser
        .type_into("#wallet-name", "made-in-the-console")
        .await;
    browser.click("#create-button").await;
    browser
        .wait_for(
            "the wallet made in the console",
            "return !!document.getElementById('created');",
            json!([]),
        )
        .await;
    browser.screenshot("create-wallet").await;

    // The wallets: the hostile name is text, not markup, and nothing of it ran.
    browser.view("#wallets", "wallets").await;
    let list = browser.text("#wallet-list").await;
    assert!(list.contains("made-in-the-console"), "{list}");
    assert!(list.contains(HOSTILE_NAME), "{list}");
    let ran = browser
        .js(
            "return [window.pwned === undefined, \
             document.querySelectorAll('#view img, #view script').length];",
            json!([]),
        )
        .await;
    assert_eq!(
        ran,
        json!([true, 0]),
        "markup from the API reached the page"
    );
    browser.screenshot("wallets").await;

    // One wallet: details, descriptors, addresses with a QR code, registered outputs.
    browser.view(&format!("#wallet/{id}"), "wallet").await;
    let first = key.chain_address(mpc_bitcoin::Chain::Receive, 0).unwrap();
    let caption = browser.text("#qr-address").await;
    assert_eq!(caption, format!("bitcoin:{first}"));
    browser
        .wait_for(
            "the QR code",
            "const q = document.getElementById('qr'); return q.complete && q.naturalWidth >= 200;",
            json!([]),
        )
        .await;
    assert!(browser.text("#descriptors").await.contains("tr("));
    let balance = browser.text("#balance").await;
    assert!(balance.contains("Available: 120,000 sat"), "{balance}");
    browser.screenshot("wallet").await;

    browser.view("#pool", "pool").await;
    browser.screenshot("presignatures").await;

    // The pending request, with what the approvers sign and the command to approve it; the
    // command, run as shown with two approvers' keys, signs the transaction.
    browser.view("#approvals", "approvals").await;
    let card = format!("[data-request='{request_id}']");
    let shown = browser.text(&card).await;
    assert!(shown.contains(": pending"), "{shown}");
    assert!(shown.contains("0 of 2 approvals"), "{shown}");
    assert!(shown.contains(pending["txid"].as_str().unwrap()), "{shown}");
    assert!(
        shown.contains("90,000 sat") || shown.contains("89,000 sat"),
        "{shown}"
    );
    let command = browser.text(&format!("{card} .approve-command")).await;
    assert_eq!(
        command,
        format!("mpc-wallet approve --url {base} {request_id} --key approver.key")
    );
    browser.screenshot("approvals").await;
    for (file, _) in [&alice, &bob] {
        let args: Vec<String> = command
            .split_whitespace()
            .skip(1)
            .map(|a| match a {
                "approver.key" => file.to_str().unwrap().to_owned(),
                other => other.to_owned(),
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let viewer = devnet.token(Role::Viewer).unwrap();
        let (code, stdout, stderr) = cli(&args, &[("MPC_WALLET_TOKEN", &viewer)]).await;
        assert_eq!(code, 0, "{command}: {stdout}{stderr}");
    }
    browser.view("#health", "health").await;
    browser.view("#approvals", "approvals").await;
    let shown = browser.text(&card).await;
    assert!(shown.contains(": signed"), "{shown}");

    // Signings and refusals, and the audit log.
    browser.view("#activity", "activity").await;
    let activity = browser.text("#signings").await;
    assert!(activity.contains("signed"), "{activity}");
    assert!(activity.contains("refused"), "{activity}");
    assert!(activity.contains("policy:"), "{activity}");
    browser.screenshot("signings").await;
    browser.view("#audit", "audit").await;
    let entries = browser.text("#audit-entries").await;
    assert!(entries.contains("approval_decided"), "{entries}");
    browser.screenshot("audit").await;

    // A viewer may look but not create a wallet: the page says so.
    browser.sign_out().await;
    browser.sign_in(&devnet.token(Role::Viewer).unwrap()).await;
    browser.view("#health", "health").await;
    browser.view("#create", "create").await;
    browser.type_into("#wallet-name", "not-allowed").await;
    browser.click("#create-button").await;
    browser.wait_message("forbidden").await;
    browser.screenshot("viewer-refused").await;
    let wallets = admin.wallets().await.unwrap();
    assert_eq!(wallets.as_array().unwrap().len(), 2, "{wallets}");

    drop(browser);
    drop(devnet);
    let _ = std::fs::remove_dir_all(&dir);
}
