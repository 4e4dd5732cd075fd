//! The `mpc-wallet` binary against node 1: its API commands agree with the API, its errors
//! are the API's, the tokens it issues offline work, and what `sign` and `send` return
//! verifies independently of the node.

use std::collections::BTreeSet;

use mpc_api::Role;
use mpc_bitcoin::Chain;
use mpc_testkit::fund;
use mpc_wallet::devnet::{synthetic_payment, verify_answer};
use serde_json::{json, Value};

use crate::{
    common::{cli, cli_json, decode_claims, registration},
    Cluster, Wallets,
};

pub async fn commands_against_a_live_node(c: &Cluster, w: &Wallets) {
    let url = c.url(1);
    let viewer = c.devnet.token(Role::Viewer).unwrap();
    let env = [
        ("MPC_WALLET_URL", url.as_str()),
        ("MPC_WALLET_TOKEN", viewer.as_str()),
    ];
    let listed = cli_json(
        "wallet list",
        &cli(&["wallet", "list", "--json"], &env).await,
    );
    assert_eq!(listed, c.viewer.wallets().await.unwrap());
    let pool = cli_json("pool stats", &cli(&["pool", "stats", "--json"], &env).await);
    assert_eq!(pool["node"], 1);
    assert!(pool["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["wallet_id"] == w.eid.as_str()));
    let status = cli_json(
        "cluster status",
        &cli(&["cluster", "status", "--json"], &env).await,
    );
    assert_eq!(
        (&status["node"], &status["live"], &status["threshold"]),
        (&json!(1), &json!(5), &json!(3))
    );
    // Incidents: none recorded by node 1 (every signer behaved), through the API and the CLI;
    // releasing a node needs an admin token.
    let incidents = c.viewer.incidents(None, 100).await.unwrap();
    assert_eq!(incidents.recorded_by, 1);
    let by_cli = cli_json(
        "cluster incidents",
        &cli(&["cluster", "incidents", "--json"], &env).await,
    );
    assert_eq!(by_cli, serde_json::to_value(&incidents).unwrap());
    let released = c.admin.release_incidents(2).await.unwrap();
    assert_eq!((released.node, released.released), (2, 0));
    let (code, stdout, _) = cli(&["cluster", "release", "2", "--json"], &env).await;
    assert_eq!(code, 1, "a viewer releases a node: {stdout}");
    let err: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(err["error"]["code"], "forbidden");
    // Evidence is checked by whichever node is asked, against its own CA: bytes that are no
    // evidence are answered as not valid, and the CLI exits non-zero.
    let checked = c.viewer.verify_evidence("00").await.unwrap();
    assert!(!checked.valid, "{checked:?}");
    assert_eq!(checked.checked_by, 1);
    let (code, stdout, _) = cli(&["cluster", "verify", "00", "--json"], &env).await;
    assert_eq!(code, 1, "evidence that does not verify: {stdout}");
    // Flags instead of the environment; the human table names both wallets.
    let (code, table, stderr) =
        cli(&["wallet", "list", "--url", &url, "--token", &viewer], &[]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        table.contains(w.eid.as_str()) && table.contains(w.tid.as_str()),
        "{table}"
    );
    // API errors in --json mode: the error object on stdout, exit status 1.
    let create = [
        "wallet",
        "create",
        "--protocol",
        "frost",
        "--name",
        "nope",
        "--json",
    ];
    let (code, stdout, _) = cli(&create, &env).await;
    assert_eq!(code, 1);
    let err: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&err["error"]["code"], &err["error"]["status"]),
        (&json!("forbidden"), &json!(403))
    );
    // Missing URL: a clear message.
    let (code, _, stderr) = cli(&["wallet", "list"], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("MPC_WALLET_URL"), "{stderr}");

    tokens_issued_offline(c, w, &url).await;
    sign_and_send(c, w, &url).await;
    refresh_then_sign(c, w, &url).await;
    reshare_and_repair_then_sign(c, w, &url).await;
}

/// `wallet refresh` (issue 19): the Taproot wallet's shares change on all five node
/// processes, its key, first address and descriptors stay, and `sign` then signs with the new
/// shares (checked independently by `verify_answer`). A viewer may not refresh.
async fn refresh_then_sign(c: &Cluster, w: &Wallets, url: &str) {
    let viewer = c.devnet.token(Role::Viewer).unwrap();
    let refresh = ["wallet", "refresh", w.tid.as_str(), "--json"];
    let (code, stdout, _) = cli(
        &refresh,
        &[("MPC_WALLET_URL", url), ("MPC_WALLET_TOKEN", &viewer)],
    )
    .await;
    assert_eq!(code, 1, "a viewer refreshes: {stdout}");
    let admin = c.devnet.token(Role::Admin).unwrap();
    let refreshed = cli_json(
        "wallet refresh",
        &cli(
            &refresh,
            &[("MPC_WALLET_URL", url), ("MPC_WALLET_TOKEN", &admin)],
        )
        .await,
    );
    assert_eq!(refreshed["key_epoch"], 1, "{refreshed}");
    assert_eq!(
        refreshed["public_key"], w.taproot["public_key"],
        "{refreshed}"
    );
    assert_eq!(refreshed["unacknowledged"], json!([]), "{refreshed}");
    let shown = c.viewer.wallet(&w.tid).await.unwrap();
    for field in [
        "public_key",
        "xpub",
        "first_address",
        "receive_descriptor",
        "change_descriptor",
    ] {
        assert_eq!(shown[field], w.taproot[field], "{field}");
    }
    signs_with_the_new_shares(c, w, url, "refresh", 40).await;
}

/// `sign` of a Taproot spend from m/0/`index` (after a key change `what`), checked
/// independently by `verify_answer`.
async fn signs_with_the_new_shares(c: &Cluster, w: &Wallets, url: &str, what: &str, index: u32) {
    let signer = c.devnet.token(Role::Signer).unwrap();
    let path = format!("m/0/{index}");
    let psbt = synthetic_payment(
        &[(&w.tkey, path.as_str(), 50_000)],
        &w.tkey,
        index + 1,
        2_000,
    )
    .unwrap();
    let psbt_file = c.dir.join(format!("cli-sign-after-{what}.psbt"));
    std::fs::write(&psbt_file, &psbt).unwrap();
    let sign = ["sign", "--psbt", psbt_file.to_str().unwrap(), "--json"];
    let signed = cli_json(
        &format!("sign after {what}"),
        &cli(
            &sign,
            &[("MPC_WALLET_URL", url), ("MPC_WALLET_TOKEN", &signer)],
        )
        .await,
    );
    verify_answer(&signed).unwrap_or_else(|e| panic!("the PSBT signed after {what}: {e}"));
}

/// `wallet reshare` and `wallet repair` (issue 19) on the Taproot wallet, after its refresh:
/// a resharing to the same five nodes and threshold, then node 5's share repaired (it does not
/// deal); the key stays and `sign` signs after each.
async fn reshare_and_repair_then_sign(c: &Cluster, w: &Wallets, url: &str) {
    let admin = c.devnet.token(Role::Admin).unwrap();
    let env = [
        ("MPC_WALLET_URL", url),
        ("MPC_WALLET_TOKEN", admin.as_str()),
    ];
    let tid = w.tid.as_str();
    let reshare = [
        "wallet",
        "reshare",
        tid,
        "--participants",
        "1,2,3,4,5",
        "--threshold",
        "3",
        "--json",
    ];
    let reshared = cli_json("wallet reshare", &cli(&reshare, &env).await);
    assert_eq!(
        (&reshared["key_epoch"], &reshared["threshold"]),
        (&json!(2), &json!(3)),
        "{reshared}"
    );
    assert_eq!(
        reshared["public_key"], w.taproot["public_key"],
        "{reshared}"
    );
    signs_with_the_new_shares(c, w, url, "reshare", 42).await;
    let repair = ["wallet", "repair", tid, "--node", "5", "--json"];
    let repaired = cli_json("wallet repair", &cli(&repair, &env).await);
    assert_eq!(repaired["key_epoch"], 3, "{repaired}");
    assert!(
        !repaired["dealers"].as_array().unwrap().contains(&json!(5)),
        "{repaired}"
    );
    signs_with_the_new_shares(c, w, url, "repair", 44).await;
}

/// `token issue` with the cluster's secret from the environment and from a file: the node
/// takes the tokens, with the role they name.
async fn tokens_issued_offline(c: &Cluster, w: &Wallets, url: &str) {
    let secret_file = c.dir.join("jwt-secret");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let issue = ["token", "issue", "--role", "viewer", "--ttl", "10m"];
    let (code, stdout, stderr) = cli(&issue, &[("JWT_SECRET", secret.trim())]).await;
    assert_eq!(code, 0, "{stderr}");
    let issued = stdout.trim().to_string();
    let claims = decode_claims(&issued);
    assert_eq!(claims["role"], "viewer");
    assert_eq!(claims["iss"], "mpc-wallet");
    assert_eq!(claims["aud"], "mpc-wallet-api");
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 600);
    let client = mpc_wallet::client::ApiClient::new(url, Some(issued));
    client
        .wallets()
        .await
        .expect("CLI-issued viewer token reads");
    let refused = client.start_aux_info(None).await;
    assert!(
        matches!(
            &refused,
            Err(mpc_wallet::client::ClientError::Api { status: 403, .. })
        ),
        "a CLI-issued viewer token starts aux info: {refused:?}"
    );
    let secret_file = secret_file.display().to_string();
    let issue = [
        "token",
        "issue",
        "--role",
        "signer",
        "--ttl",
        "1h",
        "--secret-file",
        secret_file.as_str(),
        "--json",
    ];
    let issued = cli_json("token issue --json", &cli(&issue, &[]).await);
    assert_eq!(issued["role"], "signer");
    assert_eq!(issued["algorithm"], "HS256");
    let lifetime = issued["expires_at"].as_u64().unwrap() - issued["issued_at"].as_u64().unwrap();
    assert_eq!(lifetime, 3600);
    let env = [
        ("MPC_WALLET_URL", url),
        ("MPC_WALLET_TOKEN", issued["token"].as_str().unwrap()),
    ];
    let listed = cli_json(
        "utxo list with the CLI-issued signer token",
        &cli(&["utxo", "list", w.eid.as_str(), "--json"], &env).await,
    );
    assert_eq!(listed["wallet_id"], w.eid.as_str());
    // Without a secret the CLI refuses rather than issuing something unusable.
    let (code, _, stderr) = cli(&["token", "issue", "--role", "viewer"], &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("JWT_SECRET"), "{stderr}");
}

/// `mpc-wallet sign` (a PSBT file; the wallets found from its inputs) and `mpc-wallet send`
/// (from registered outputs), each answer verified from its signed PSBT by libsecp256k1 and
/// bitcoinconsensus, independently of the node.
async fn sign_and_send(c: &Cluster, w: &Wallets, url: &str) {
    let signer = c.devnet.token(Role::Signer).unwrap();
    let env = [
        ("MPC_WALLET_URL", url),
        ("MPC_WALLET_TOKEN", signer.as_str()),
    ];
    let psbt = synthetic_payment(
        &[(&w.ekey, "m/0/30", 50_000), (&w.tkey, "m/0/30", 50_000)],
        &w.tkey,
        31,
        2_000,
    )
    .unwrap();
    let psbt_file = c.dir.join("cli-sign.psbt");
    std::fs::write(&psbt_file, &psbt).unwrap();
    let sign = ["sign", "--psbt", psbt_file.to_str().unwrap(), "--json"];
    let signed = cli_json("sign", &cli(&sign, &env).await);
    verify_answer(&signed).expect("the PSBT `mpc-wallet sign` signed verifies");
    let schemes: BTreeSet<&str> = signed["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["scheme"].as_str())
        .collect();
    assert_eq!(schemes, BTreeSet::from(["cggmp24", "frost"]), "{signed}");
    // `send` only posts the payment, whatever the scheme: Taproot here (FROST, cheap); the
    // ECDSA payment through the same route is the payments step's.
    {
        let id = &w.tid;
        let to = w.ekey.chain_address(Chain::Receive, 5).unwrap().to_string();
        let funded = fund(&w.tkey, &[("m/0/31", 70_000)]);
        c.signer
            .register_utxos(id, &registration(&funded))
            .await
            .expect("outputs for `mpc-wallet send`");
        let send = [
            "send",
            "--wallet",
            id.as_str(),
            "--to",
            to.as_str(),
            "--amount",
            "20000",
            "--json",
        ];
        let sent = cli_json("send", &cli(&send, &env).await);
        verify_answer(&sent).expect("the payment `mpc-wallet send` made verifies");
        assert_eq!(sent["spend"]["amount_sats"], 20_000, "{sent}");
        assert_eq!(sent["spend"]["recipient"], to.as_str(), "{sent}");
    }
}
