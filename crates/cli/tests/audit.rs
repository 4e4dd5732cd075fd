//! `mpc-wallet audit verify` and `audit export` on a node's store, through the binary: a
//! clean log verifies and exports, `backup` is recorded, an edited entry fails `verify` naming
//! it, and a cut tail fails only against a head recorded before (`--head`).

use std::process::{Command, Output};

use mpc_store::{Actor, AuditEvent, KeySource, Store};
use mpc_types::NodeId;
use mpc_wallet::devnet::{Devnet, DevnetOptions};
use serde_json::Value;
use sqlx::{AnyPool, AssertSqlSafe};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_mpc-wallet");

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run mpc-wallet")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn exec(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_fails_on_a_tampered_store_naming_the_entry() {
    let dir = std::env::temp_dir().join(format!("mpc-audit-test-{}", Uuid::new_v4()));
    let devnet = Devnet::create(DevnetOptions::new(3, 2, dir.clone(), BIN.into())).unwrap();
    let node = devnet.node_dir(1);
    let config = node.join("node.toml");
    let config = config.to_str().unwrap();
    let url = format!("sqlite://{}", node.join("store.db").display());

    // No store yet: refused, and none is created.
    let out = cli(&["audit", "verify", "--config", config]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has no store"),
        "{}",
        text(&out.stderr)
    );

    let store = Store::open(
        &url,
        &KeySource::KeyFile(node.join("kek.key")),
        NodeId::must(1),
    )
    .await
    .unwrap();
    for released in 1..=4 {
        store
            .append_audit(
                &Actor::Operator,
                &AuditEvent::IncidentsReleased { node: 2, released },
            )
            .await
            .unwrap();
    }
    store.close().await;
    let backup = dir.join("node-1.backup");
    let out = cli(&[
        "backup",
        "--config",
        config,
        "--out",
        backup.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = cli(&["audit", "verify", "--config", config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("5 entries"), "{stdout}");
    let head = stdout
        .split("head ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert!(head.starts_with("5:"), "{stdout}");

    let export = |since: &str| cli(&["audit", "export", "--config", config, "--since", since]);
    let out = export("2020-01-01T00:00:00Z");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["kind"], "backup_created");
    assert_eq!(lines[4]["actor"], "operator");
    assert_eq!(
        format!("{}:{}", lines[4]["seq"], lines[4]["hash"].as_str().unwrap()),
        head
    );
    let out = export("4000000000000");
    assert!(out.status.success() && out.stdout.is_empty());

    // An entry's details edited in the database: verify fails naming it.
    let original = lines[2]["details"].to_string();
    exec(
        &url,
        "UPDATE audit_log SET details = '{\"node\":3,\"released\":3}' WHERE seq = 3",
    )
    .await;
    let out = cli(&["audit", "verify", "--config", config]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("audit entry 3 does not match its hash"),
        "{stderr}"
    );
    exec(
        &url,
        &format!("UPDATE audit_log SET details = '{original}' WHERE seq = 3"),
    )
    .await;
    assert!(cli(&["audit", "verify", "--config", config])
        .status
        .success());

    // The tail cut: the chain alone still verifies; the head kept from before does not.
    exec(&url, "DELETE FROM audit_log WHERE seq = 5").await;
    let out = cli(&["audit", "verify", "--config", config]);
    assert!(
        out.status.success(),
        "a cut tail is not visible in the chain alone"
    );
    let out = cli(&["audit", "verify", "--config", config, "--head", head]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("ends at entry 4") && stderr.contains("entry 5"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
