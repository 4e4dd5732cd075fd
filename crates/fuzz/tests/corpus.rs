//! Replays every seed of every fuzz target through its body under stable `cargo test`: CI
//! keeps the bodies building and the corpora (valid encodings and past crashes) passing
//! without a nightly build. libFuzzer itself runs with `scripts/fuzz SECONDS`.

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_target_has_a_seed_corpus_that_passes() {
    for (name, body) in mpc_fuzz::TARGETS {
        let dir = corpus_dir().join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (target {name} needs seeds)", dir.display()));
        let mut seeds = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // A panic names the seed, so a regression points at its input.
            eprintln!("{name}: {}", path.display());
            body(&data);
            seeds += 1;
        }
        assert!(seeds > 0, "target {name} has an empty corpus");
    }
}

#[test]
fn every_corpus_folder_is_a_target() {
    for entry in std::fs::read_dir(corpus_dir()).expect("fuzz/corpus") {
        let name = entry.expect("corpus folder").file_name();
        let name = name.to_string_lossy();
        assert!(
            mpc_fuzz::TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name} has no target"
        );
    }
}

#[test]
fn every_target_has_a_fuzz_target_binary() {
    let manifest =
        std::fs::read_to_string(corpus_dir().join("../Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in mpc_fuzz::TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        let wrapper = corpus_dir().join(format!("../fuzz_targets/{name}.rs"));
        assert!(wrapper.exists(), "{} is missing", wrapper.display());
    }
}

/// The valid seeds (`seed-*`) of the message targets still decode: a dependency upgrade that
/// changed a wire format would otherwise leave the fuzzer starting from garbage.
#[test]
fn valid_message_seeds_decode() {
    use mpc_protocols::{ecdsa, encoding, refresh, schnorr};
    fn check(target: &str, decodes: fn(&[u8]) -> bool) {
        for entry in std::fs::read_dir(corpus_dir().join(target)).expect("corpus") {
            let path = entry.expect("entry").path();
            if path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .starts_with("seed-")
            {
                let data = std::fs::read(&path).expect("seed");
                assert!(decodes(&data), "{} no longer decodes", path.display());
            }
        }
    }
    check("aux_info_msg", |d| {
        encoding::decode::<ecdsa::AuxInfoMsg>(d).is_ok()
    });
    check("ecdsa_keygen_msg", |d| {
        encoding::decode::<ecdsa::KeygenMsg>(d).is_ok()
    });
    check("ecdsa_signing_msg", |d| {
        encoding::decode::<ecdsa::SigningMsg>(d).is_ok()
    });
    check("frost_keygen_msg", |d| {
        encoding::decode::<schnorr::KeygenMsg>(d).is_ok()
    });
    check("frost_signing_msg", |d| {
        encoding::decode::<schnorr::SigningMsg>(d).is_ok()
    });
    check("refresh_msg", |d| {
        encoding::decode::<refresh::RefreshMsg>(d).is_ok()
    });
    check("control", |d| {
        encoding::decode::<mpc_node::control::Control>(d).is_ok()
    });
    check("envelope", |d| mpc_transport::Envelope::decode(d).is_ok());
    check("config", |d| {
        std::str::from_utf8(d).is_ok_and(|t| mpc_node::NodeConfig::from_toml(t).is_ok())
    });
}
