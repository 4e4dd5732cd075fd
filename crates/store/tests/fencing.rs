//! Fencing tokens in the store (`Store::admit_fencing_token`), on a fresh SQLite file and, when
//! `MPC_TEST_POSTGRES_URL` names an admin connection, on a fresh PostgreSQL database
//! (`scripts/with-postgres` sets it up).

use std::future::Future;
use std::path::PathBuf;

use mpc_store::{generate_key_file, KeySource, Store, StoreError};
use sqlx::{AssertSqlSafe, Connection};
use uuid::Uuid;

const PG_ENV: &str = "MPC_TEST_POSTGRES_URL";

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
struct Db {
    url: String,
    dir: PathBuf,
}

impl Db {
    async fn open(&self) -> Store {
        Store::open(
            &self.url,
            &KeySource::KeyFile(self.dir.join("store.key")),
            1,
        )
        .await
        .unwrap()
    }
}

/// The admin URL with its database name replaced.
fn database_url(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[host_start..].find('/') {
        Some(slash) => &base[..host_start + slash],
        None => base,
    };
    format!("{base}/{name}{query}")
}

async fn run<F, Fut>(kind: Kind, test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin = match kind {
        Kind::Sqlite => None,
        Kind::Postgres => match std::env::var(PG_ENV) {
            Ok(url) => Some(url),
            Err(_) => {
                assert!(
                    std::env::var_os("MPC_REQUIRE_POSTGRES").is_none(),
                    "MPC_REQUIRE_POSTGRES is set but {PG_ENV} is not"
                );
                eprintln!("skipped: {PG_ENV} is not set");
                return;
            }
        },
    };
    let dir = std::env::temp_dir().join(format!("mpc-fencing-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    generate_key_file(&dir.join("store.key")).unwrap();
    let name = format!("mpc_fencing_test_{}", Uuid::new_v4().simple());
    let url = match &admin {
        None => format!("sqlite://{}", dir.join("store.db").display()),
        Some(admin) => {
            let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            database_url(admin, &name)
        }
    };
    let outcome = tokio::spawn(test(Db {
        url,
        dir: dir.clone(),
    }))
    .await;
    if let Some(admin) = &admin {
        let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::run(crate::Kind::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::run(crate::Kind::Postgres, super::$name).await;
                }
            )*
        }
    };
}

on_both_backends!(
    lower_tokens_are_refused_equal_and_higher_admitted,
    admission_survives_reopening,
    concurrent_admissions_keep_the_highest,
    out_of_range_tokens_are_errors,
);

async fn lower_tokens_are_refused_equal_and_higher_admitted(db: Db) {
    let store = db.open().await;
    assert_eq!(store.fencing_token("ceremony/1,2,3").await.unwrap(), None);
    assert!(store
        .admit_fencing_token("ceremony/1,2,3", 10)
        .await
        .unwrap());
    assert!(store
        .admit_fencing_token("ceremony/1,2,3", 10)
        .await
        .unwrap());
    assert!(store
        .admit_fencing_token("ceremony/1,2,3", 12)
        .await
        .unwrap());
    assert!(!store
        .admit_fencing_token("ceremony/1,2,3", 11)
        .await
        .unwrap());
    assert!(!store
        .admit_fencing_token("ceremony/1,2,3", 0)
        .await
        .unwrap());
    assert_eq!(
        store.fencing_token("ceremony/1,2,3").await.unwrap(),
        Some(12)
    );
    // Resources are independent.
    assert!(store.admit_fencing_token("pool-refill", 3).await.unwrap());
    assert_eq!(store.fencing_token("pool-refill").await.unwrap(), Some(3));
    store.close().await;
}

async fn admission_survives_reopening(db: Db) {
    let store = db.open().await;
    assert!(store.admit_fencing_token("wallet/w1", 500).await.unwrap());
    store.close().await;
    let store = db.open().await;
    assert!(!store.admit_fencing_token("wallet/w1", 499).await.unwrap());
    assert!(store.admit_fencing_token("wallet/w1", 501).await.unwrap());
    store.close().await;
}

async fn concurrent_admissions_keep_the_highest(db: Db) {
    // Two stores on one database (two processes' worth of pools), racing tokens 1..=60 in
    // shuffled orders: the highest ends up stored, and it is always admitted.
    let a = db.open().await;
    let b = db.open().await;
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let token = (i * 37) % 60 + 1;
        tasks.push(tokio::spawn(async move {
            (
                token,
                store.admit_fencing_token("race", token).await.unwrap(),
            )
        }));
    }
    let mut admitted = Vec::new();
    for task in tasks {
        let (token, ok) = task.await.unwrap();
        if ok {
            admitted.push(token);
        }
    }
    assert!(
        admitted.contains(&60),
        "the highest token is always admitted"
    );
    assert_eq!(a.fencing_token("race").await.unwrap(), Some(60));
    assert!(!b.admit_fencing_token("race", 59).await.unwrap());
    a.close().await;
    b.close().await;
}

async fn out_of_range_tokens_are_errors(db: Db) {
    let store = db.open().await;
    assert!(matches!(
        store.admit_fencing_token("r", u64::MAX).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.admit_fencing_token("", 1).await,
        Err(StoreError::Invalid(_))
    ));
    store.close().await;
}
