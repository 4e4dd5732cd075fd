//! The audit log: appends chain, concurrent appends do not fork, and `verify_audit_log` names
//! the first entry edited, deleted or reordered in SQL; a cut tail only against a head kept
//! elsewhere.

use super::*;
use mpc_store::{Actor, AuditError, AuditEvent, AuditHead};
use std::time::Instant;

on_both_backends!(
    tampering_is_named_by_its_seq,
    concurrent_appends_do_not_fork_the_chain,
);

fn event(i: u64) -> AuditEvent {
    AuditEvent::IncidentsReleased {
        node: 2,
        released: i,
    }
}

async fn exec(raw: &AnyPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(raw)
        .await
        .unwrap();
}

/// Swaps the seqs of entries 10 and 11 (through negative seqs: PostgreSQL checks the key row
/// by row).
async fn swap_10_and_11(raw: &AnyPool) {
    exec(raw, "UPDATE audit_log SET seq = -seq WHERE seq IN (10, 11)").await;
    exec(
        raw,
        "UPDATE audit_log SET seq = CASE seq WHEN -10 THEN 11 ELSE 10 END WHERE seq < 0",
    )
    .await;
}

async fn tampering_is_named_by_its_seq(db: Db) {
    const N: u64 = 100;
    let store = db.open().await;
    assert_eq!(store.verify_audit_log(None).await.unwrap().entries, 0);
    let caller = Actor::Caller {
        role: "admin".into(),
        subject: "alice".into(),
    };
    let started = Instant::now();
    let mut head = None;
    for i in 1..=N {
        head = Some(store.append_audit(&caller, &event(i)).await.unwrap());
    }
    let append_ms = started.elapsed().as_secs_f64() * 1e3 / N as f64;
    let head: AuditHead = head.unwrap();
    assert_eq!(head.seq, N);
    assert_eq!(store.audit_head().await.unwrap(), Some(head));
    let started = Instant::now();
    let verified = store.verify_audit_log(Some(head)).await.unwrap();
    eprintln!(
        "{:?}: append {append_ms:.2} ms each; verify {N} entries in {:.1} ms",
        store.backend(),
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!((verified.entries, verified.head), (N, Some(head)));
    let entries = store.audit_entries(0, 0, 1000).await.unwrap();
    assert_eq!(entries.len() as u64, N);
    assert_eq!(entries[4].seq, 5);
    assert_eq!(entries[4].actor, caller);
    assert_eq!(entries[4].event, event(5));
    assert_eq!(entries[0].prev_hash, mpc_store::AuditHash::ZERO);
    assert_eq!(entries[1].prev_hash, entries[0].hash);

    let raw = db.raw().await;
    let seq_of = |e: AuditError| e.seq();

    // Edited details.
    exec(
        &raw,
        "UPDATE audit_log SET details = '{\"node\":2,\"released\":0}' WHERE seq = 40",
    )
    .await;
    let error = store.verify_audit_log(None).await.unwrap_err();
    assert!(matches!(error, AuditError::Edited { seq: 40 }), "{error}");
    exec(
        &raw,
        "UPDATE audit_log SET details = '{\"node\":2,\"released\":40}' WHERE seq = 40",
    )
    .await;
    store.verify_audit_log(Some(head)).await.unwrap();

    // Deleted: a seq gap.
    exec(
        &raw,
        "CREATE TABLE kept AS SELECT * FROM audit_log WHERE seq = 30",
    )
    .await;
    exec(&raw, "DELETE FROM audit_log WHERE seq = 30").await;
    let error = store.verify_audit_log(None).await.unwrap_err();
    assert!(
        matches!(error, AuditError::Gap { seq: 30, found: 31 }),
        "{error}"
    );
    // Deleted and the later seqs renumbered: the chain no longer links.
    // (Through negative seqs: PostgreSQL checks the key row by row.)
    exec(&raw, "UPDATE audit_log SET seq = 1 - seq WHERE seq > 30").await;
    exec(&raw, "UPDATE audit_log SET seq = -seq WHERE seq < 0").await;
    let error = store.verify_audit_log(None).await.unwrap_err();
    assert!(matches!(error, AuditError::Unlinked { seq: 30 }), "{error}");
    exec(&raw, "UPDATE audit_log SET seq = -1 - seq WHERE seq >= 30").await;
    exec(&raw, "UPDATE audit_log SET seq = -seq WHERE seq < 0").await;
    exec(&raw, "INSERT INTO audit_log SELECT * FROM kept").await;
    store.verify_audit_log(Some(head)).await.unwrap();

    // Reordered: two entries swap seqs.
    swap_10_and_11(&raw).await;
    let error = store.verify_audit_log(None).await.unwrap_err();
    assert_eq!(seq_of(error), Some(10));
    swap_10_and_11(&raw).await;
    store.verify_audit_log(Some(head)).await.unwrap();

    // A cut tail leaves a valid chain: verify alone passes (it cannot tell), only the head
    // recorded before the cut shows it.
    exec(
        &raw,
        &format!("DELETE FROM audit_log WHERE seq > {}", N - 3),
    )
    .await;
    assert_eq!(store.verify_audit_log(None).await.unwrap().entries, N - 3);
    let error = store.verify_audit_log(Some(head)).await.unwrap_err();
    assert!(
        matches!(error, AuditError::Truncated { expected: N, last } if last == N - 3),
        "{error}"
    );
    assert_eq!(error.seq(), Some(N - 2));
    // Cut and appended anew: the same seq with another hash is a rewrite.
    for i in 0..3 {
        store.append_audit(&Actor::Node, &event(i)).await.unwrap();
    }
    let error = store.verify_audit_log(Some(head)).await.unwrap_err();
    assert!(matches!(error, AuditError::Rewritten { seq: N }), "{error}");
    raw.close().await;
    store.close().await;
}

async fn concurrent_appends_do_not_fork_the_chain(db: Db) {
    let store = db.open().await;
    let heads = race(&db, &store, 12, |s, t| async move {
        s.append_audit(&Actor::Peer(3), &event(t as u64))
            .await
            .unwrap()
    })
    .await;
    let seqs: HashSet<u64> = heads.iter().map(|h| h.seq).collect();
    assert_eq!(seqs.len(), 12);
    let verified = store.verify_audit_log(None).await.unwrap();
    assert_eq!(verified.entries, 12);
    store.close().await;
}
