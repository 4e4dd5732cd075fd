//! The generated matrices: every envelope attack and field change against key generation
//! and signing, for both schemes.

use super::*;

async fn keygen_against_a_hostile_participant(name: &str, scheme: Scheme, protocol: ProtocolKind) {
    let clusters = futures::future::join_all((0..SHARDS).map(|_| cluster())).await;
    let n1 = &clusters[0].nodes[0];
    let honest = n1.create_wallet(Uuid::new_v4(), wallet_request("honest", scheme));
    let all = generate(&clusters[0], protocol, honest).await;
    let mut tally = sharded(&clusters, &all, |c, cases| keygen_cases(c, scheme, cases)).await;
    tally.generated = all.len();
    tally.finish(name);
}

async fn keygen_cases(c: &Cluster, scheme: Scheme, cases: Vec<&Case>) -> Tally {
    let n1 = &c.nodes[0];
    let keygen = |name: &str| n1.create_wallet(Uuid::new_v4(), wallet_request(name, scheme));
    let mut tally = Tally::default();
    for case in cases {
        let before = [
            active_wallets(&c.nodes[0]).await,
            active_wallets(&c.nodes[2]).await,
        ];
        let result = attacked(c, case, DEADLINE * 4, keygen("attacked"), &mut tally).await;
        match result {
            Ok(created) => {
                tally.succeeded += 1;
                tally.outcome("succeeded");
                if !honest_nodes_agree(c, &created.id).await {
                    tally.bad_shares.push(case.name.clone());
                }
            }
            Err(e) => {
                tally.failed += 1;
                tally.outcome(kind(&e));
                check_blame(case, &e, &mut tally);
                let after = [
                    active_wallets(&c.nodes[0]).await,
                    active_wallets(&c.nodes[2]).await,
                ];
                if before != after {
                    // A failed keygen left a wallet.
                    tally.bad_shares.push(case.name.clone());
                }
                // Node 2 behaves again: the same ceremony succeeds.
                let retry = keygen("retry")
                    .await
                    .unwrap_or_else(|e| panic!("{}: the keygen after it failed: {e}", case.name));
                assert!(
                    honest_nodes_agree(c, &retry.id).await,
                    "{}: the keygen after it",
                    case.name
                );
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frost_keygen_with_a_hostile_participant() {
    keygen_against_a_hostile_participant(
        "frost-keygen",
        Scheme::Schnorr,
        ProtocolKind::SchnorrKeygen,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_keygen_with_a_hostile_participant() {
    keygen_against_a_hostile_participant("ecdsa-keygen", Scheme::Ecdsa, ProtocolKind::EcdsaKeygen)
        .await;
}

async fn signing_against_a_hostile_signer(name: &str, scheme: Scheme, protocol: ProtocolKind) {
    let clusters = futures::future::join_all((0..SHARDS).map(|_| cluster())).await;
    let (id, key) = wallet(&clusters[0], scheme).await;
    let psbt = spend_to_self(&key, "honest");
    let honest = clusters[0].nodes[0].sign_psbt(Uuid::new_v4(), std::slice::from_ref(&id), &psbt);
    let all = generate(&clusters[0], protocol, honest).await;
    let mut tally = sharded(&clusters, &all, |c, cases| signing_cases(c, scheme, cases)).await;
    tally.generated = all.len();
    tally.finish(name);
}

async fn signing_cases(c: &Cluster, scheme: Scheme, cases: Vec<&Case>) -> Tally {
    let n1 = &c.nodes[0];
    let (id, key) = wallet(c, scheme).await;
    let wallets = vec![id];
    let mut label = 0u32;
    let mut sign = || {
        label += 1;
        let psbt = spend_to_self(&key, &format!("funding {label}"));
        let wallets = wallets.clone();
        async move { n1.sign_psbt(Uuid::new_v4(), &wallets, &psbt).await }
    };
    let mut tally = Tally::default();
    // Signing with node 2 first ({1, 2} is the first set), then the coordinator's retry.
    let bound = DEADLINE * 12;
    for case in cases {
        let result = attacked(c, case, bound, sign(), &mut tally).await;
        let failed = result.is_err();
        match result {
            Ok(report) => {
                tally.succeeded += 1;
                if !verifies(&report) {
                    tally.bad_signatures.push(case.name.clone());
                }
                // The first attempt's error names node 2 (its refusal, its misbehaviour, its
                // silence) when the coordinator could.
                let named = report
                    .attempts
                    .iter()
                    .filter_map(|a| a.error.as_deref())
                    .any(|e| {
                        e.contains(&format!("node {ADVERSARY}"))
                            || e.contains(&format!("node(s) [{ADVERSARY}]"))
                    });
                if named {
                    tally.culprit_named += 1;
                }
                let outcome = if report.attempts.len() > 1 {
                    assert!(
                        !report.signers.contains(&ADVERSARY),
                        "{}: {:?}",
                        case.name,
                        report.attempts
                    );
                    tally.retried_without_culprit += 1;
                    "signed on a retry without node 2"
                } else {
                    "signed at once"
                };
                tally.outcome(outcome);
            }
            Err(e) => {
                tally.failed += 1;
                tally.outcome(kind(&e));
                check_blame(case, &e, &mut tally);
            }
        }
        if failed {
            // Node 2 behaves again: the same signing succeeds.
            sign()
                .await
                .unwrap_or_else(|e| panic!("{}: the signing after it failed: {e}", case.name));
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frost_signing_with_a_hostile_signer() {
    signing_against_a_hostile_signer("frost-sign", Scheme::Schnorr, ProtocolKind::SchnorrSign)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_interactive_signing_with_a_hostile_signer() {
    if std::env::var_os("MPC_ADVERSARY_ECDSA_SIGNING").is_none() {
        eprintln!("[adversary] interactive ECDSA signing: set MPC_ADVERSARY_ECDSA_SIGNING=1 (seconds of CPU per case)");
        return;
    }
    signing_against_a_hostile_signer("ecdsa-sign", Scheme::Ecdsa, ProtocolKind::EcdsaSign).await;
}
