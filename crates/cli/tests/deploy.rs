//! `deploy/docker-compose.yml` checked without Docker, which does not run on our CI machine:
//! it parses; every file it names on the host exists, once the operator has made what its
//! header says to make (certificates by `mpc-wallet certs init`, key-encryption keys); and
//! every file a node's config names inside its container is mounted there.
//! `scripts/check-deploy` runs this with its checks of the Dockerfile and the systemd unit.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use mpc_node::NodeConfig;
use uuid::Uuid;
use yaml_rust2::{Yaml, YamlLoader};

const CONFIG_IN_CONTAINER: &str = "/etc/mpc-wallet/node.toml";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// A key of a service, or of the mapping it merges in with `<<` (compose honours YAML's
/// merge key; the parser leaves it as an ordinary key).
fn field<'a>(service: &'a Yaml, key: &str) -> &'a Yaml {
    match &service[key] {
        Yaml::BadValue => &service["<<"][key],
        value => value,
    }
}

fn strings(list: &Yaml) -> Vec<&str> {
    list.as_vec()
        .map(|items| items.iter().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

fn names(mapping: &Yaml) -> BTreeSet<&str> {
    mapping
        .as_hash()
        .map(|h| h.keys().filter_map(Yaml::as_str).collect())
        .unwrap_or_default()
}

/// What the compose file's header tells the operator to make, in a folder of its own:
/// `certs/` by `mpc-wallet certs init` and `secrets/node-<id>.kek`.
fn operator_files(nodes: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpc-deploy-test-{}", Uuid::new_v4()));
    let ips: Vec<String> = (1..=nodes)
        .map(|id| format!("172.28.0.{}", 10 + id))
        .collect();
    let status = Command::new(env!("CARGO_BIN_EXE_mpc-wallet"))
        .args(["certs", "init", "--nodes", &nodes.to_string(), "--out"])
        .arg(dir.join("certs"))
        .args(["--ips", &ips.join(",")])
        .status()
        .expect("mpc-wallet certs init runs");
    assert!(status.success(), "mpc-wallet certs init: {status}");
    std::fs::create_dir_all(dir.join("secrets")).expect("secrets folder");
    for id in 1..=nodes {
        std::fs::write(dir.join(format!("secrets/node-{id}.kek")), [7u8; 32]).expect("kek");
    }
    dir
}

#[test]
fn the_compose_file_names_files_that_exist_and_mounts_every_file_a_node_reads() {
    let deploy = deploy_dir();
    let text = std::fs::read_to_string(deploy.join("docker-compose.yml")).expect("compose file");
    let docs = YamlLoader::load_from_str(&text).expect("the compose file is YAML");
    let compose = &docs[0];
    let services = compose["services"].as_hash().expect("services");
    let nodes = services
        .values()
        .filter(|s| field(s, "build").as_hash().is_some())
        .count();
    assert!(nodes > 0, "no service builds the node image");
    let made = operator_files(u16::try_from(nodes).expect("node count"));
    // Host paths are relative to the compose file's folder.
    let exists = |path: &str| deploy.join(path).exists() || made.join(path).exists();
    let volumes = names(&compose["volumes"]);
    let networks = names(&compose["networks"]);
    let secrets = &compose["secrets"];

    let mut node_configs = 0;
    for (name, service) in services {
        let name = name.as_str().expect("service name");
        let build = field(service, "build");
        if let Some(context) = build["context"].as_str() {
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            let path = deploy.join(context).join(dockerfile);
            assert!(
                path.is_file(),
                "{name}: no Dockerfile at {}",
                path.display()
            );
        } else {
            assert!(
                field(service, "image").as_str().is_some(),
                "{name}: no image"
            );
        }
        // What the container sees: mount targets, and secrets under /run/secrets.
        let mut in_container: Vec<(PathBuf, PathBuf)> = Vec::new();
        for volume in strings(field(service, "volumes")) {
            let mut parts = volume.split(':');
            let (source, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if source.starts_with('.') || source.starts_with('/') {
                assert!(exists(source), "{name}: {source} does not exist");
            } else {
                assert!(
                    volumes.contains(source),
                    "{name}: volume {source} is not declared"
                );
            }
            in_container.push((target.into(), deploy.join(source)));
        }
        for secret in field(service, "secrets").as_vec().into_iter().flatten() {
            let source = secret
                .as_str()
                .or(secret["source"].as_str())
                .expect("secret");
            let target = secret["target"].as_str().unwrap_or(source);
            let file = secrets[source]["file"].as_str();
            let file = file.unwrap_or_else(|| panic!("{name}: secret {source} is not declared"));
            assert!(exists(file), "{name}: secret file {file} does not exist");
            in_container.push((Path::new("/run/secrets").join(target), deploy.join(file)));
        }
        for network in names(&service["networks"]) {
            assert!(
                networks.contains(network),
                "{name}: network {network} not declared"
            );
        }

        let Some((_, config_file)) = in_container
            .iter()
            .find(|(target, _)| target == Path::new(CONFIG_IN_CONTAINER))
        else {
            continue;
        };
        node_configs += 1;
        let config = NodeConfig::load(config_file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mounted = |path: &Path| {
            in_container
                .iter()
                .any(|(target, _)| path.starts_with(target))
        };
        let tls = &config.tls;
        for path in [
            &tls.ca,
            &tls.certificate,
            &tls.private_key,
            &config.data_dir,
        ]
        .into_iter()
        .chain(config.store.key_file.as_ref())
        {
            assert!(
                mounted(path),
                "{name}: its config names {}, which is not mounted",
                path.display()
            );
        }
    }
    assert_eq!(
        node_configs, nodes,
        "a node service without {CONFIG_IN_CONTAINER}"
    );
    let _ = std::fs::remove_dir_all(&made);
}
