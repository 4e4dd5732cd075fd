//! The binary's argument handling: bad parameters get a clear error and a non-zero exit.

use std::process::Command;

fn mpc_wallet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mpc-wallet"))
        .args(args)
        .output()
        .expect("run mpc-wallet")
}

#[test]
fn demo_refuses_impossible_thresholds() {
    for (t, n, needle) in [
        ("6", "5", "t = 6"),
        ("1", "5", "t = 1"),
        ("3", "16", "n = 16"),
    ] {
        let out = mpc_wallet(&["demo", "--threshold", t, "--parties", n]);
        assert!(!out.status.success(), "{t}-of-{n} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{t}-of-{n}: {stderr}");
    }
}

#[test]
fn unknown_subcommands_and_flags_are_refused() {
    assert!(!mpc_wallet(&["no-such-command"]).status.success());
    assert!(!mpc_wallet(&["demo", "--no-such-flag"]).status.success());
    let help = mpc_wallet(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("demo"));
}
