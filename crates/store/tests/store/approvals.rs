//! Requests waiting for approvals: recorded, decided once per approver, moved between states by
//! one caller only, expired, and still there after the store is reopened (a node's restart).

use super::*;
use mpc_store::{ApprovalRequestRecord, DecisionRecord, RequestState};
use mpc_types::{Decision, WalletId};

on_both_backends!(
    approval_requests_survive_reopening_and_move_once,
    an_approval_request_with_an_unknown_state_is_corrupt,
);

fn request(expires_at: i64) -> ApprovalRequestRecord {
    ApprovalRequestRecord {
        id: Uuid::new_v4(),
        wallet_ids: vec![WalletId::must("w1"), WalletId::must("w2")],
        psbt: "cHNidP8B".into(),
        txid: "ab".repeat(32),
        state: RequestState::Pending,
        required: 2,
        created_at: NOW,
        expires_at,
        result: None,
        error: None,
        finished_at: None,
        decisions: Vec::new(),
    }
}

fn decision(key: &str, approver: &str, decision: Decision, at: i64) -> DecisionRecord {
    DecisionRecord {
        public_key: key.into(),
        approver: approver.into(),
        decision,
        signature: "cd".repeat(64),
        at,
    }
}

async fn approval_requests_survive_reopening_and_move_once(db: Db) {
    let store = db.open().await;
    let live = request(NOW + 3_600_000);
    let due = request(NOW + 10);
    store.insert_approval_request(&live).await.unwrap();
    store.insert_approval_request(&due).await.unwrap();
    let alice = decision("aa", "alice", Decision::Approve, NOW + 1);
    assert!(store
        .record_approval_decision(live.id, &alice)
        .await
        .unwrap());
    // One decision per approver: a second is refused and the first kept.
    let again = decision("aa", "alice", Decision::Reject, NOW + 2);
    assert!(!store
        .record_approval_decision(live.id, &again)
        .await
        .unwrap());
    let bob = decision("bb", "bob", Decision::Approve, NOW + 3);
    assert!(store.record_approval_decision(live.id, &bob).await.unwrap());
    store.close().await;

    // A restart: everything is back, typed.
    let store = db.open().await;
    let back = store.approval_request(live.id).await.unwrap().unwrap();
    assert_eq!(
        back,
        ApprovalRequestRecord {
            decisions: vec![alice, bob],
            ..live.clone()
        }
    );
    assert_eq!(store.approval_request(Uuid::new_v4()).await.unwrap(), None);
    let pending = store
        .approval_requests(Some(RequestState::Pending), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);

    // Expiry takes only the due one, once.
    assert_eq!(
        store.expire_approval_requests(NOW + 10).await.unwrap(),
        vec![due.id]
    );
    assert!(store
        .expire_approval_requests(NOW + 10)
        .await
        .unwrap()
        .is_empty());
    let expired = store
        .approval_requests(Some(RequestState::Expired), 10)
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, due.id);

    // Of two callers moving it out of pending, one wins.
    let moves = race(&db, &store, 4, move |s, _| async move {
        s.transition_approval_request(
            live.id,
            RequestState::Pending,
            RequestState::Signing,
            None,
            None,
            NOW + 20,
        )
        .await
        .unwrap()
    })
    .await;
    assert_eq!(moves.iter().filter(|m| **m).count(), 1, "{moves:?}");
    assert!(store
        .transition_approval_request(
            live.id,
            RequestState::Signing,
            RequestState::Signed,
            Some("{\"txid\":\"x\"}"),
            None,
            NOW + 30,
        )
        .await
        .unwrap());
    let signed = store.approval_request(live.id).await.unwrap().unwrap();
    assert_eq!(
        (signed.state, signed.result.as_deref(), signed.finished_at),
        (
            RequestState::Signed,
            Some("{\"txid\":\"x\"}"),
            Some(NOW + 30)
        )
    );
    // An expired request is not expired again, nor moved to signing.
    assert!(!store
        .transition_approval_request(
            due.id,
            RequestState::Pending,
            RequestState::Signing,
            None,
            None,
            NOW + 40,
        )
        .await
        .unwrap());
}

async fn an_approval_request_with_an_unknown_state_is_corrupt(db: Db) {
    let store = db.open().await;
    let r = request(NOW + 1000);
    store.insert_approval_request(&r).await.unwrap();
    let raw = db.raw().await;
    sqlx::query("UPDATE approval_requests SET state = 'approved-by-me' WHERE id = $1")
        .bind(r.id.to_string())
        .execute(&raw)
        .await
        .unwrap();
    let error = store.approval_request(r.id).await.unwrap_err();
    assert!(
        matches!(
            &error,
            StoreError::Corrupt {
                table: "approval_requests",
                ..
            }
        ),
        "{error}"
    );
}
