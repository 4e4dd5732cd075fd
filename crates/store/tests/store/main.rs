//! The store against real databases: every test in `on_both_backends!` runs on a fresh SQLite
//! file and, when `MPC_TEST_POSTGRES_URL` names an admin connection, on a fresh PostgreSQL
//! database created for that test and dropped afterwards (`scripts/with-postgres` sets it up).

use mpc_types::{DerivationPath, NodeId};
use std::collections::HashSet;
use std::path::Path;

use mpc_store::{
    generate_key_file, Backend, CeremonyRecord, Committee, IncidentKind, IncidentRecord,
    KeyEpochCommit, KeySource, PendingAuxInfoFor, PoolLevel, PresignatureRecord, PresignatureState,
    PresignatureUse, SigningRefusal, SpendLimit, Store, StoreError, WalletRecord, WalletState,
    Zeroizing,
};
use sqlx::{AnyPool, AssertSqlSafe};
use uuid::Uuid;

#[macro_use]
#[path = "../common/mod.rs"]
mod common;
use common::*;

mod approvals;
mod audit;
mod aux_info;
mod key_epochs;
mod presignatures;
mod records;
mod secrets;
mod signing;

const N1: NodeId = NodeId::must(1);
const N2: NodeId = NodeId::must(2);
const N3: NodeId = NodeId::must(3);

const ONE_TWO_THREE: [NodeId; 3] = [N1, N2, N3];

/// Runs `tasks` calls of `work(handle, t)` at once (released together by a barrier), spread
/// over `store` and three more handles with their own pools, so the race is between
/// connections and not inside one pool; their results, in order of `t`.
async fn race<T, F, Fut>(db: &Db, store: &Store, tasks: usize, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Store, usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let mut handles = vec![store.clone()];
    for _ in 0..3 {
        handles.push(db.open().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(tasks));
    let mut running = Vec::new();
    for t in 0..tasks {
        let work = work(handles[t % handles.len()].clone(), t);
        let barrier = barrier.clone();
        running.push(tokio::spawn(async move {
            barrier.wait().await;
            work.await
        }));
    }
    let mut results = Vec::new();
    for task in running {
        results.push(task.await.unwrap());
    }
    results
}

fn presig(id: &str, wallet: &str, path: &str, epoch: u64, expires_at: i64) -> PresignatureRecord {
    PresignatureRecord {
        id: id.into(),
        wallet_id: wallet_id(wallet),
        path: path.parse().unwrap(),
        signers: NodeId::must_list(&[1, 2, 3]),
        epoch,
        key_epoch: 0,
        state: PresignatureState::Ready,
        public: format!("public {id}").into_bytes(),
        created_at: NOW,
        expires_at,
        consumed_at: None,
    }
}

fn ceremony(id: &str, started_at: i64) -> CeremonyRecord {
    CeremonyRecord {
        id: id.into(),
        kind: "keygen".into(),
        state: "running".into(),
        coordinator: N1,
        request: serde_json::json!({ "wallet": id, "threshold": 2 }),
        result: None,
        error: None,
        started_at,
        finished_at: None,
    }
}

fn bytes(secret: Option<Zeroizing<Vec<u8>>>) -> Option<Vec<u8>> {
    secret.map(|s| s.to_vec())
}

async fn sealed_of(raw: &AnyPool, sql: &'static str, id: &str) -> Option<Vec<u8>> {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(raw)
        .await
        .unwrap()
}
