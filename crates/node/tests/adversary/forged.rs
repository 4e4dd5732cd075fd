//! Forged answers: a partial signature or FROST share one bit off, named where the math
//! allows it and avoided on retry where it does not.

use super::*;

/// Node 2 answers a signing with its partial signature (from a presignature) or its FROST
/// share one bit off, the commitments they were made with left as they were.
struct ForgedPartial {
    forged: AtomicUsize,
}

/// Flips the lowest bit of the last number found in `value` (a scalar's encoding, as hex or
/// as bytes).
fn flip_last_bit(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit()) => {
            let last = s.pop().and_then(|c| c.to_digit(16)).unwrap_or(0);
            s.push(char::from_digit(last ^ 1, 16).unwrap_or('0'));
            true
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            let last = items.len() - 1;
            items[last] = Value::from(items[last].as_u64().unwrap_or(0) ^ 1);
            true
        }
        Value::Array(items) => items.iter_mut().rev().any(flip_last_bit),
        Value::Object(fields) => fields.values_mut().rev().any(flip_last_bit),
        _ => false,
    }
}

impl Interceptor for ForgedPartial {
    fn outgoing(&self, _: NodeId, envelope: Envelope) -> Vec<(Duration, Envelope)> {
        use mpc_node::control::{Control, InputOutcome, Outcome};
        let Ok(Control::Outcome {
            session,
            result: Ok(Outcome::Sign { mut inputs }),
        }) = Control::from_envelope(&envelope)
        else {
            return vec![(Duration::ZERO, envelope)];
        };
        for input in &mut inputs {
            match input {
                InputOutcome::Partial { partial, .. } => {
                    let mut json = serde_json::to_value(&*partial).unwrap();
                    assert!(flip_last_bit(&mut json["sigma"]), "no sigma in {json}");
                    *partial = serde_json::from_value(json).unwrap();
                }
                InputOutcome::FrostShare(share) => {
                    let mut json = serde_json::to_value(&*share).unwrap();
                    assert!(flip_last_bit(&mut json["share"]), "no share in {json}");
                    *share = serde_json::from_value(json).unwrap();
                }
                InputOutcome::Ecdsa(_) => continue,
            }
            self.forged.fetch_add(1, Ordering::SeqCst);
        }
        let forged = Control::Outcome {
            session,
            result: Ok(Outcome::Sign { inputs }),
        };
        let to = envelope.to.unwrap_or(NodeId::must(1));
        vec![(
            Duration::ZERO,
            forged.envelope(session, envelope.from, to).unwrap(),
        )]
    }
}

/// Node 2 forges its answer to a signing of `psbt` with wallet `id` on cluster `c` (three
/// nodes, 2-of-3): the request still succeeds on {1, 3} within its deadline, its first
/// attempt names node 2 for `what` (its answer), and node 1 records one incident against node
/// 2 with node 2's outcome as node 2 signed it, checked on node 3: an exhibit (whether the
/// answer fits needs the presignature's binding or the key and sighash, which the message does
/// not carry), so the fault is not re-checked, only its authorship.
async fn a_forged_answer_names_its_signer(c: &Cluster, id: &WalletId, psbt: &str, what: &str) {
    let n1 = &c.nodes[0];
    let (one, two, three) = (NodeId::must(1), ADVERSARY, NodeId::must(3));
    let hostile = std::sync::Arc::new(ForgedPartial {
        forged: AtomicUsize::new(0),
    });
    c.network.intercept(ADVERSARY, hostile.clone());
    let session = Uuid::new_v4();
    let started = Instant::now();
    let result = n1.sign_psbt(session, std::slice::from_ref(id), psbt).await;
    let took = started.elapsed();
    c.network.release(ADVERSARY);
    let report = result.unwrap();
    assert_eq!(
        hostile.forged.load(Ordering::SeqCst),
        1,
        "one {what} forged"
    );
    let deadline = Duration::from_millis(n1.config().limits.max_sign_request_ms);
    eprintln!("[adversary] forged {what}: signed on a retry in {took:?} (deadline {deadline:?})");
    assert!(took < deadline, "{took:?}");
    assert_eq!(report.attempts.len(), 2, "{:?}", report.attempts);
    assert_eq!(report.attempts[0].signers, [one, two]);
    let error = report.attempts[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("node 2 misbehaved") && error.contains(what),
        "{error}"
    );
    assert_eq!(report.signers, [one, three]);
    let spent = spent_outputs(&parse_psbt(&report.psbt).unwrap()).unwrap();
    verify_transaction(&report.raw_transaction, &spent).unwrap();
    let incidents = n1.store().incidents(None, 10).await.unwrap();
    assert_eq!(
        incidents
            .iter()
            .map(|i| (i.accused, i.reporter, i.kind, i.session))
            .collect::<Vec<_>>(),
        [(two, one, IncidentKind::InvalidOutcome, session)]
    );
    assert!(incidents[0].detail.contains(what), "{incidents:?}");
    let evidence = incidents[0]
        .evidence
        .as_ref()
        .expect("node 2's outcome kept");
    let verified = c.nodes[2].verify_evidence(evidence).unwrap();
    assert_eq!(
        (verified.accused, verified.fault, verified.fault_rechecked),
        (two, Fault::Exhibit, false)
    );
}

/// ECDSA from a presignature (issue 18): a signer whose partial signature does not match its
/// commitment is named by the coordinator, which checks each partial against the public
/// commitments every signer reported (cggmp24's own `combine` only says that one failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_partial_signature_names_its_signer() {
    count_panics();
    // The default deadlines: nothing here is withheld, and a presignature on a loaded machine
    // can take longer than the harness's short ones. Liveness a minute: the three nodes'
    // protocol threads share this process with other tests', and under that load a heartbeat
    // was once late enough that the presignature failed as "node 2 dead" after 15 s.
    let c = start(3, 2, |cfg| cfg.limits.liveness_ms = 60_000).await;
    let (id, key) = wallet(&c, Scheme::Ecdsa).await;
    let path = mpc_bitcoin::Chain::Receive.path(0).unwrap();
    let first_set = Some(vec![NodeId::must(1), ADVERSARY]);
    c.nodes[0]
        .generate_presignatures(Uuid::new_v4(), &id, &path, 1, first_set, None)
        .await
        .unwrap();
    let psbt = spend_to_self(&key, "forged partial");
    a_forged_answer_names_its_signer(&c, &id, &psbt, "partial signature").await;
}

/// FROST (issue 18): a signer whose share does not verify is named by the coordinator, which
/// checks each share against the nonce commitments its signer listed with it once givre's
/// aggregation has failed (givre itself only says that the sum failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_frost_share_names_its_signer() {
    count_panics();
    let c = start(3, 2, |_| {}).await;
    let (id, key) = wallet(&c, Scheme::Schnorr).await;
    let psbt = spend_to_self(&key, "forged frost share");
    a_forged_answer_names_its_signer(&c, &id, &psbt, "FROST signature share").await;
}

/// Node 2 sends node 3 other nonce commitments (its two swapped: valid points, the wrong ones)
/// than it sends node 1. Node 3's share then fits only node 3's list, and whether node 2 sent
/// two lists or node 3 lies about what it received is one's word against the other's.
struct EquivocateToThree {
    altered: AtomicUsize,
}

impl Interceptor for EquivocateToThree {
    fn outgoing(&self, to: NodeId, mut envelope: Envelope) -> Vec<(Duration, Envelope)> {
        use mpc_protocols::{encoding, schnorr::SigningMsg};
        if to == NodeId::must(3) && envelope.protocol == ProtocolKind::SchnorrSign.code() {
            if let Ok(SigningMsg::Commitments(mut c)) = encoding::decode(&envelope.payload) {
                std::mem::swap(&mut c.hiding_comm, &mut c.binding_comm);
                envelope.payload = encoding::encode(&SigningMsg::Commitments(c)).unwrap();
                self.altered.fetch_add(1, Ordering::SeqCst);
            }
        }
        vec![(Duration::ZERO, envelope)]
    }
}

/// Robust signing (issue 18): node 2 of a 3-of-5 cluster equivocates its FROST nonce
/// commitments to node 3, a fault aggregation sees but cannot pin on anyone (node 1 is told
/// the truth, every share fits its own signer's list). The retry goes to the untried set that
/// shares no member with the failed one ({1, 4, 5}), not the next in id order ({1, 2, 4},
/// which has node 2 again and would fail the request too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_fault_is_retried_on_a_set_without_the_failed_members() {
    count_panics();
    let c = start(5, 3, |_| {}).await;
    let n1 = &c.nodes[0];
    let (id, key) = wallet(&c, Scheme::Schnorr).await;
    let hostile = std::sync::Arc::new(EquivocateToThree {
        altered: AtomicUsize::new(0),
    });
    c.network.intercept(ADVERSARY, hostile.clone());
    let psbt = spend_to_self(&key, "equivocated commitments");
    let result = n1
        .sign_psbt(Uuid::new_v4(), std::slice::from_ref(&id), &psbt)
        .await;
    c.network.release(ADVERSARY);
    let report = result.unwrap();
    assert_eq!(
        hostile.altered.load(Ordering::SeqCst),
        1,
        "one message altered"
    );
    let sets: Vec<&[NodeId]> = report.attempts.iter().map(|a| &a.signers[..]).collect();
    assert_eq!(
        sets,
        [
            &NodeId::must_list(&[1, 2, 3])[..],
            &NodeId::must_list(&[1, 4, 5])[..]
        ],
        "{:?}",
        report.attempts
    );
    let error = report.attempts[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("combine"), "{error}");
    let spent = spent_outputs(&parse_psbt(&report.psbt).unwrap()).unwrap();
    verify_transaction(&report.raw_transaction, &spent).unwrap();
    // Nobody was named, so nobody is blamed.
    assert!(n1.store().incidents(None, 10).await.unwrap().is_empty());
}
