//! Aux info's two phases on the in-memory cluster, through the real node code, without a real
//! ceremony: a node that restarts with a pending aux info settles it at its start as the
//! coordinator decided, which is an abort for anything the coordinator did not record as
//! committed. The real ceremonies are in the adversary test (`aux_info_with_a_hostile_participant`):
//! one the coordinator aborts after runs ended (`round 0: dropped`) leaves nothing pending
//! anywhere, and the retry after it, whose commit never reaches node 3, ends with node 3
//! asking for the decision and activating its aux info. A real ceremony is about 40 s of CPU
//! at full load, and beside this binary's short-deadline tests it starved them.

use std::time::Duration;

use mpc_node::testing::{start_fresh, start_without_aux_info, Cluster};
use mpc_store::{CeremonyRecord, PendingAuxInfoFor};
use mpc_types::NodeId;
use uuid::Uuid;

/// Waits (at most 15 s) until node `k` holds no pending aux info; then its aux info's digest.
async fn settled(c: &Cluster, k: usize) -> Option<String> {
    let store = c.nodes[k].store();
    for _ in 0..150 {
        if store.pending_aux_infos().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        store.pending_aux_infos().await.unwrap().is_empty(),
        "node {} still holds a pending aux info",
        k + 1
    );
    let ids = c.nodes[k].config().node_ids();
    store.aux_info(&ids).await.unwrap().map(|(_, d)| d)
}

/// Node 3 holds a pending aux info (the fixture's) of a ceremony node 1 coordinated, and
/// restarts without having heard the decision. At its start it asks node 1, who answers from
/// its record: an abort when node 1 restarted before deciding (its record still running, no
/// ceremony running), an abort when the session is another kind's, even one that succeeded
/// (a participant cannot get a one-phase ceremony's success taken as a commit), a commit when
/// node 1 recorded the decision to commit. An abort drops the aux info and gives its primes
/// back; a commit makes it the node set's. No real ceremony: seconds of CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_aux_info_is_settled_at_start_as_its_coordinator_decided() {
    let mut c = start_without_aux_info(3, 2, |_| {}).await;
    let ids = c.nodes[0].config().node_ids();
    let one = NodeId::must(1);
    let aux = &mpc_testkit::aux_info(3)[2];
    let aux_bytes = aux.to_bytes().unwrap();
    let digest = hex::encode(aux.public_digest().unwrap());
    let primes = mpc_testkit::primes()[3].to_bytes().unwrap();
    let record =
        |session: Uuid, kind: &str, state: &str, result: serde_json::Value| CeremonyRecord {
            id: session.to_string(),
            kind: kind.into(),
            state: state.into(),
            coordinator: one,
            request: serde_json::json!(ids),
            result: Some(result),
            error: None,
            started_at: 0,
            finished_at: None,
        };
    let cases = [
        ("aux-info", "running", serde_json::json!({}), None),
        ("presign", "succeeded", serde_json::json!({}), None),
        (
            "aux-info",
            "running",
            serde_json::json!({ "public_digest": digest, "commit_decided": true }),
            Some(digest.clone()),
        ),
    ];
    for (kind, state, result, expected) in cases {
        let session = Uuid::new_v4();
        c.nodes[0]
            .store()
            .put_ceremony(&record(session, kind, state, result))
            .await
            .unwrap();
        c.nodes[2]
            .store()
            .put_pending_aux_info(
                &ids,
                (session, one),
                (&aux_bytes, &digest),
                &primes,
                PendingAuxInfoFor::FirstOfNodeSet,
            )
            .await
            .unwrap();
        let pool = c.nodes[2].store().primes_count().await.unwrap();
        c.restart(2, |_| {}).await;
        let held = settled(&c, 2).await;
        assert_eq!(held, expected, "a {state} {kind}");
        let back = u64::from(expected.is_none());
        assert_eq!(
            c.nodes[2].store().primes_count().await.unwrap(),
            pool + back,
            "a {state} {kind}"
        );
    }
}

/// `[aux_info] auto`: a fresh 2-node cluster, nobody asking. While only node 1 holds safe
/// primes no ceremony starts (node 1 still holds its set, no ceremony is recorded); once node 2
/// holds a set too (fixture primes given to the stores after the start), node 1, the refill
/// leader, runs the ceremony by itself and both nodes hold the same aux info, their primes
/// used. A real aux-info run (about 30 s of CPU for two parties).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a real aux-info run (about 30 s of CPU): scripts/test runs it in the job \
            node.aux_info_runs, one test at a time"]
async fn aux_info_is_made_by_itself_once_every_node_holds_primes() {
    let c = start_fresh(2, 2, |cfg| cfg.aux_info.auto = true).await;
    let ids = c.nodes[0].config().node_ids();
    let primes = mpc_testkit::primes();
    let (one, two) = (c.nodes[0].store(), c.nodes[1].store());
    one.add_primes(&primes[0].to_bytes().unwrap())
        .await
        .unwrap();
    // Several heartbeats and checks: node 2's say it has no primes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(one.primes_count().await.unwrap(), 1);
    assert!(one.ceremonies(10).await.unwrap().is_empty());
    two.add_primes(&primes[1].to_bytes().unwrap())
        .await
        .unwrap();
    let mut digests = Vec::new();
    for _ in 0..1_800 {
        digests = Vec::new();
        for node in &c.nodes {
            if let Some((_, digest)) = node.store().aux_info(&ids).await.unwrap() {
                digests.push(digest);
            }
        }
        if digests.len() == c.nodes.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(digests.len(), 2, "aux info on every node within 180 s");
    assert_eq!(digests[0], digests[1]);
    for node in &c.nodes {
        assert_eq!(node.store().primes_count().await.unwrap(), 0);
    }
    let ceremonies = one.ceremonies(10).await.unwrap();
    assert_eq!(ceremonies.len(), 1, "one ceremony: {ceremonies:?}");
    assert_eq!(ceremonies[0].kind, "aux-info");
}
