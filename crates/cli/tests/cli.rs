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

/// `approver keygen`: the secret key file is the owner's alone (0600) and never overwritten;
/// the public key printed is the one the secret key makes.
#[test]
fn approver_keygen_writes_a_private_key_file_once() {
    let dir = std::env::temp_dir().join(format!("mpc-approver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("alice.key");
    let _ = std::fs::remove_file(&file);
    let out = mpc_wallet(&["approver", "keygen", "--out", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(public.len(), 64, "{public}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let written = std::fs::read_to_string(&file).unwrap();
    let secret: [u8; 32] = hex::decode(written.trim()).unwrap().try_into().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    assert_eq!(hex::encode(key.verifying_key().as_bytes()), public);
    assert!(!public.contains(&hex::encode(secret)));
    let again = mpc_wallet(&["approver", "keygen", "--out", file.to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "an existing key file was overwritten"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    std::fs::remove_dir_all(&dir).unwrap();
}
