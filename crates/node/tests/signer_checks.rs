//! Every signer checks what it signs, even when the coordinator does not: node 1 plays a
//! compromised coordinator (`Node::coordinate` sends a proposal without the coordinator's own
//! checks) and node 2, an honest signer, must refuse with the reason named, consuming no
//! presignature and recording no spend.

use mpc_types::NodeId;
use mpc_types::WalletId;
use std::time::Duration;

use mpc_bitcoin::{
    bitcoin::{
        bip32::{DerivationPath as Bip32Path, Fingerprint},
        psbt::{Psbt, PsbtSighashType},
        Amount, ScriptBuf,
    },
    build::{build_psbt, synthetic_funding, Payment, SpendableOutput},
    policy::Policy,
    InputProblem, Scheme, TxProblem, WalletError, WalletKey,
};
use mpc_node::testing::{start, wallet, Cluster};
use mpc_node::{
    control::ProposalBody,
    refusal::{Refusal, RefusalKind},
    Node, NodeError,
};
use mpc_protocols::DerivationPath;
use uuid::Uuid;

fn path(s: &str) -> DerivationPath {
    s.parse().unwrap()
}

fn funding(key: &WalletKey, p: &str, sats: u64) -> SpendableOutput {
    synthetic_funding(
        key,
        &path(p),
        Amount::from_sat(sats),
        &Uuid::new_v4().to_string(),
    )
    .unwrap()
}

/// Spends `inputs`: `pay` sats to a stranger, the rest but a 1,000-sat fee to `change_path`.
fn spend(inputs: &[SpendableOutput], pay: u64, change_path: &str) -> Psbt {
    let owner = inputs[0].wallet.clone();
    let (_, stranger) = mpc_testkit::schnorr_wallet(2, 3, mpc_bitcoin::bitcoin::Network::Regtest);
    let total: u64 = inputs.iter().map(|i| i.txout.value.to_sat()).sum();
    build_psbt(
        inputs,
        &[
            Payment {
                script_pubkey: stranger.script_pubkey(&path("m/0/0")).unwrap(),
                amount: Amount::from_sat(pay),
                owner: None,
            },
            Payment {
                script_pubkey: owner.script_pubkey(&path(change_path)).unwrap(),
                amount: Amount::from_sat(total - pay - 1_000),
                owner: Some((owner, path(change_path))),
            },
        ],
    )
    .unwrap()
}

/// `coordinator` proposes `psbt` for `signers` without checking it itself, to `to`.
async fn propose(
    coordinator: &Node,
    wallet_id: &WalletId,
    psbt: &Psbt,
    signers: &[NodeId],
    to: &[NodeId],
    presignatures: Vec<Option<String>>,
) -> Result<(), NodeError> {
    coordinator
        .coordinate(
            Uuid::new_v4(),
            ProposalBody::Sign {
                key_epochs: Vec::new(),
                wallet_ids: vec![wallet_id.clone()],
                psbt: psbt.to_string(),
                signers: signers.to_vec(),
                presignatures,
                approvals: None,
            },
            to,
            Duration::from_secs(30),
            None,
        )
        .await
        .map(|_| ())
}

/// Node 1 proposes `psbt` for signers {1, 2} without checking it, and sends it to node 2 only,
/// so the answer is node 2's own; returns node 2's refusal, as it came over the control channel.
async fn refused_by_node_2(
    n1: &Node,
    wallet_id: &WalletId,
    psbt: &Psbt,
    presignatures: Vec<Option<String>>,
) -> Refusal {
    match propose(
        n1,
        wallet_id,
        psbt,
        &NodeId::must_list(&[1, 2]),
        &NodeId::must_list(&[2]),
        presignatures,
    )
    .await
    {
        Err(NodeError::Refused { node, refusal }) if node == NodeId::must(2) => refusal,
        other => panic!("not refused by node 2: {other:?}"),
    }
}

/// The one input node 2 refused, and its code.
fn refused_input(refusal: &Refusal) -> (usize, &str) {
    match &refusal.kind {
        RefusalKind::Inputs { inputs } if inputs.len() == 1 => {
            (inputs[0].input, inputs[0].code.as_str())
        }
        other => panic!("not one refused input: {other:?}"),
    }
}

/// The transaction rule node 2 refused by.
fn refused_rule(refusal: &Refusal) -> &str {
    match &refusal.kind {
        RefusalKind::InvalidTransaction { rule, .. } => rule,
        other => panic!("not an invalid transaction: {other:?}"),
    }
}

/// Three nodes; `node` alone limits each transaction to `max_sats` leaving the wallet.
async fn with_tx_limit_on(node: u16, max_sats: u64) -> Cluster {
    start(3, 2, |cfg| {
        if cfg.id.get() == node {
            cfg.policy = Policy {
                max_amount_per_tx_sats: Some(max_sats),
                ..Policy::default()
            };
        }
    })
    .await
}

/// What node 2 holds for `wallet_id`: ready presignatures at `p` for {1, 2}, and sats spent.
async fn node_2_state(c: &Cluster, wallet_id: &WalletId, p: &str) -> (usize, u64) {
    let store = c.nodes[1].store();
    let ready = store
        .ready_presignatures(wallet_id, p, &NodeId::must_list(&[1, 2]), 0, 100)
        .await
        .unwrap()
        .len();
    (ready, store.spent_since(wallet_id, 0).await.unwrap())
}

/// SIGHASH_NONE, SINGLE or ANYONECANPAY signatures could be reused in a transaction no policy
/// saw: refused by the honest signer (both schemes) and by the coordinator's own check, with
/// the presignature offered for it left unused and no spend counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_sighash_types_get_no_signature_and_consume_nothing() {
    let c = start(3, 2, |_| {}).await;
    let n1 = &c.nodes[0];
    let (ecdsa_id, ekey) = wallet(&c, Scheme::Ecdsa).await;
    let (taproot_id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let presigned = n1
        .generate_presignatures(
            Uuid::new_v4(),
            &ecdsa_id,
            &path("m/0/0"),
            1,
            Some(NodeId::must_list(&[1, 2])),
            None,
        )
        .await
        .unwrap();
    let before = node_2_state(&c, &ecdsa_id, "m/0/0").await;
    assert_eq!(before, (1, 0));

    for (raw, name) in [(0x02, "0x2"), (0x03, "0x3"), (0x81, "0x81")] {
        let mut psbt = spend(&[funding(&ekey, "m/0/0", 100_000)], 10_000, "m/1/0");
        psbt.inputs[0].sighash_type = Some(PsbtSighashType::from_u32(raw));
        let refusal =
            refused_by_node_2(n1, &ecdsa_id, &psbt, vec![Some(presigned.ids[0].clone())]).await;
        assert_eq!(refused_input(&refusal), (0, "sighash_type_refused"));
        assert!(
            refusal
                .message
                .contains(&format!("sighash type {name} refused")),
            "{refusal:?}"
        );
        // Through the coordinator's own check: refused before any session.
        let err = n1
            .sign_psbt(
                Uuid::new_v4(),
                std::slice::from_ref(&ecdsa_id),
                &psbt.to_string(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NodeError::Wallet(WalletError::Inputs(e))
                if e[0].input == 0 && e[0].problem == InputProblem::SighashTypeRefused(raw)),
            "{err}"
        );

        let mut psbt = spend(&[funding(&tkey, "m/0/0", 100_000)], 10_000, "m/1/0");
        psbt.inputs[0].sighash_type = Some(PsbtSighashType::from_u32(raw));
        let refusal = refused_by_node_2(n1, &taproot_id, &psbt, vec![None]).await;
        assert_eq!(refused_input(&refusal), (0, "sighash_type_refused"));
        assert!(
            refusal
                .message
                .contains(&format!("sighash type {name} refused")),
            "{refusal:?}"
        );
    }
    assert_eq!(node_2_state(&c, &ecdsa_id, "m/0/0").await, before);
    assert_eq!(
        c.nodes[1]
            .store()
            .spent_since(&taproot_id, 0)
            .await
            .unwrap(),
        0
    );
}

/// A P2WPKH amount stated only in `witness_utxo` could be misstated per request; the honest
/// signer wants the previous transaction, and nothing is consumed on the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2wpkh_amount_must_be_proven_to_every_signer() {
    let c = start(3, 2, |_| {}).await;
    let n1 = &c.nodes[0];
    let (ecdsa_id, ekey) = wallet(&c, Scheme::Ecdsa).await;
    let presigned = n1
        .generate_presignatures(
            Uuid::new_v4(),
            &ecdsa_id,
            &path("m/0/1"),
            1,
            Some(NodeId::must_list(&[1, 2])),
            None,
        )
        .await
        .unwrap();
    let inputs = [
        funding(&ekey, "m/0/1", 100_000),
        funding(&ekey, "m/0/2", 100_000),
    ];
    let mut psbt = spend(&inputs, 10_000, "m/1/0");
    // Input 1's amount overstated, its previous transaction left out.
    psbt.inputs[1].non_witness_utxo = None;
    psbt.inputs[1].witness_utxo.as_mut().unwrap().value = Amount::from_sat(900_000);
    let refusal = refused_by_node_2(
        n1,
        &ecdsa_id,
        &psbt,
        vec![Some(presigned.ids[0].clone()), None],
    )
    .await;
    assert_eq!(refused_input(&refusal), (1, "amount_unproven"));
    assert!(
        refusal
            .message
            .contains("input 1: P2WPKH input without non_witness_utxo"),
        "{refusal:?}"
    );
    assert_eq!(node_2_state(&c, &ecdsa_id, "m/0/1").await, (1, 0));
}

/// The same outpoint twice, dust, a non-standard script: refused by the honest signer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signers_refuse_transactions_no_node_would_accept() {
    let c = start(3, 2, |_| {}).await;
    let n1 = &c.nodes[0];
    let (taproot_id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let base = spend(&[funding(&tkey, "m/0/0", 100_000)], 10_000, "m/1/0");

    let mut twice = base.clone();
    twice
        .unsigned_tx
        .input
        .push(twice.unsigned_tx.input[0].clone());
    twice.inputs.push(twice.inputs[0].clone());
    // The doubled input's value paid out as change, so the fee looks normal.
    twice.unsigned_tx.output[1].value += Amount::from_sat(100_000);
    let refusal = refused_by_node_2(n1, &taproot_id, &twice, vec![None, None]).await;
    assert_eq!(
        refusal.kind,
        RefusalKind::InvalidTransaction {
            rule: "duplicate_input".into(),
            input: Some(1),
            output: None
        }
    );
    assert!(
        refusal
            .message
            .contains("input 1 spends the same output as input 0"),
        "{refusal:?}"
    );

    let mut dust = base.clone();
    dust.unsigned_tx.output[0].value = Amount::from_sat(100);
    let refusal = refused_by_node_2(n1, &taproot_id, &dust, vec![None]).await;
    assert_eq!(refused_rule(&refusal), "dust_output");
    assert!(
        refusal.message.contains("below the dust limit"),
        "{refusal:?}"
    );

    let mut odd = base.clone();
    odd.unsigned_tx.output[0].script_pubkey = ScriptBuf::from_bytes(vec![0x51]);
    let refusal = refused_by_node_2(n1, &taproot_id, &odd, vec![None]).await;
    assert_eq!(refused_rule(&refusal), "nonstandard_output");
    assert!(
        refusal.message.contains("non-standard script"),
        "{refusal:?}"
    );
    let err = n1
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&taproot_id),
            &odd.to_string(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, NodeError::Wallet(WalletError::InvalidTransaction(p)) if p.code() == "nonstandard_output"),
        "{err}"
    );
}

/// Change counts as change only on m/1/i within the gap of the change indices the node has
/// seen used; anywhere else it is spending, which node 2's limit refuses. After signing a
/// transaction with change at m/1/0, node 2 accepts change one index further.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_off_the_change_chain_or_beyond_the_gap_counts_as_spending() {
    let c = with_tx_limit_on(2, 50_000).await;
    let n1 = &c.nodes[0];
    let (taproot_id, tkey) = wallet(&c, Scheme::Schnorr).await;
    for far in ["m/1/20", "m/1/500", "m/0/1", "m/2/0", "m/1/0/0"] {
        let psbt = spend(&[funding(&tkey, "m/0/0", 400_000)], 10_000, far);
        let refusal = refused_by_node_2(n1, &taproot_id, &psbt, vec![None]).await;
        assert_eq!(
            refusal.kind,
            RefusalKind::Policy {
                rule: "max_amount_per_tx_sats".into()
            },
            "{far}"
        );
    }
    let near = spend(&[funding(&tkey, "m/0/0", 400_000)], 10_000, "m/1/0");
    n1.sign_psbt(
        Uuid::new_v4(),
        std::slice::from_ref(&taproot_id),
        &near.to_string(),
    )
    .await
    .unwrap();
    let now_near = spend(&[funding(&tkey, "m/0/0", 400_000)], 10_000, "m/1/20");
    let report = propose(
        n1,
        &taproot_id,
        &now_near,
        &NodeId::must_list(&[1, 2]),
        &NodeId::must_list(&[1, 2]),
        vec![None],
    )
    .await;
    assert!(report.is_ok(), "{report:?}");
}

/// Derivation records on outputs that are not change (a stranger's script under our
/// fingerprint, or our own receive address) do not make the pool bank presignatures there;
/// accepted change does, and a spent input's path no longer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_records_that_are_not_change_do_not_steer_the_pool() {
    let c = start(3, 2, |_| {}).await;
    let n1 = &c.nodes[0];
    let (ecdsa_id, ekey) = wallet(&c, Scheme::Ecdsa).await;
    let mut psbt = spend(&[funding(&ekey, "m/0/0", 400_000)], 10_000, "m/1/0");
    let fingerprint: Fingerprint = ekey.fingerprint().unwrap();
    let pubkey = ekey.derive(&path("m/0/77")).unwrap();
    let claim: Bip32Path = "m/0/77".parse().unwrap();
    // The stranger's payment output claims to be m/0/77 of the wallet.
    psbt.outputs[0]
        .bip32_derivation
        .insert(pubkey, (fingerprint, claim));
    n1.sign_psbt(
        Uuid::new_v4(),
        std::slice::from_ref(&ecdsa_id),
        &psbt.to_string(),
    )
    .await
    .unwrap();
    for node in &c.nodes[..2] {
        let funded = node.funded_paths(&ecdsa_id);
        // The input's path held what was just spent: no presignatures for it either.
        assert!(
            !funded.contains(&path("m/0/0")),
            "node {}: {funded:?}",
            node.id()
        );
        assert!(
            funded.contains(&path("m/1/0")),
            "node {}: {funded:?}",
            node.id()
        );
        assert!(
            !funded.contains(&path("m/0/77")),
            "node {}: {funded:?}",
            node.id()
        );
    }
}

/// Each signer bounds what one request costs it: inputs per PSBT, and ECDSA inputs signed
/// interactively. Refused by the honest signer, and by a coordinator with the same limits
/// before any session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_signer_bounds_inputs_and_interactive_signings() {
    let c = start(3, 2, |cfg| {
        if cfg.id == NodeId::must(2) {
            cfg.limits.max_inputs_per_psbt = 2;
            cfg.limits.max_interactive_inputs = 1;
        }
    })
    .await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let (taproot_id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let (ecdsa_id, ekey) = wallet(&c, Scheme::Ecdsa).await;
    let three: Vec<SpendableOutput> = (0..3)
        .map(|i| funding(&tkey, &format!("m/0/{i}"), 50_000))
        .collect();
    let psbt = spend(&three, 10_000, "m/1/0");
    let refusal = refused_by_node_2(n1, &taproot_id, &psbt, vec![None; 3]).await;
    assert_eq!(refused_rule(&refusal), "too_many_inputs");
    assert!(
        refusal
            .message
            .contains("3 inputs; this node signs at most 2"),
        "{refusal:?}"
    );
    let err = n2
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&taproot_id),
            &psbt.to_string(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            NodeError::Wallet(WalletError::InvalidTransaction(TxProblem::TooManyInputs {
                count: 3,
                max: 2
            }))
        ),
        "{err}"
    );

    let two: Vec<SpendableOutput> = (0..2)
        .map(|i| funding(&ekey, &format!("m/0/{i}"), 50_000))
        .collect();
    let psbt = spend(&two, 10_000, "m/1/0");
    let refusal = refused_by_node_2(n1, &ecdsa_id, &psbt, vec![None, None]).await;
    assert_eq!(
        refusal.kind,
        RefusalKind::LimitExceeded {
            limit: "max_interactive_inputs".into()
        }
    );
    let err = n2
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&ecdsa_id),
            &psbt.to_string(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            NodeError::LimitExceeded {
                limit: "max_interactive_inputs",
                ..
            }
        ),
        "{err}"
    );
}

/// A node that did not sign learns the change indices of what the others signed, from their
/// notice, once it has verified the signatures itself; so its view of the change chain keeps
/// up, and change further along is still change there. A notice whose signatures do not verify
/// teaches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_did_not_sign_learns_the_change_indices_from_verified_notices() {
    let c = with_tx_limit_on(3, 50_000).await;
    let (n1, n3) = (&c.nodes[0], &c.nodes[2]);
    let (taproot_id, tkey) = wallet(&c, Scheme::Schnorr).await;
    let signed = spend(&[funding(&tkey, "m/0/0", 400_000)], 10_000, "m/1/15");
    let report = n1
        .sign_psbt(
            Uuid::new_v4(),
            std::slice::from_ref(&taproot_id),
            &signed.to_string(),
        )
        .await
        .unwrap();
    assert!(
        !report.signers.contains(&NodeId::must(3)),
        "{:?}",
        report.signers
    );

    // A forged notice: the same PSBT with a transaction whose signature is not the wallet's.
    let mut forged = report.raw_transaction.clone();
    let mut witness: Vec<Vec<u8>> = forged.input[0].witness.iter().map(<[u8]>::to_vec).collect();
    witness[0][5] ^= 1;
    forged.input[0].witness = mpc_bitcoin::bitcoin::Witness::from_slice(&witness);
    let err = n3
        .learn_from_signed(
            std::slice::from_ref(&taproot_id),
            &signed.to_string(),
            &mpc_bitcoin::bitcoin::consensus::encode::serialize_hex(&forged),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("verification"), "{err}");

    // The real notice reaches node 3 in the background.
    let mut learned = 0;
    for _ in 0..100 {
        learned = n3.store().next_change_index(&taproot_id).await.unwrap();
        if learned == 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(learned, 16, "node 3 learned m/1/15 from the notice");
    // Change at m/1/30 is within node 3's gap now (16 + 20), so not counted as spending.
    let further = spend(&[funding(&tkey, "m/0/0", 400_000)], 10_000, "m/1/30");
    let result = propose(
        n1,
        &taproot_id,
        &further,
        &NodeId::must_list(&[1, 3]),
        &NodeId::must_list(&[1, 3]),
        vec![None],
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
}
