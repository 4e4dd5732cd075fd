//! The harness the store's test files share: every test in `on_both_backends!` runs on a
//! fresh SQLite file and, when `MPC_TEST_POSTGRES_URL` names an admin connection, on a fresh
//! PostgreSQL database created for that test and dropped afterwards.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;

use mpc_store::{generate_key_file, KeySource, Store};
use sqlx::{AnyPool, AssertSqlSafe, Connection};
use uuid::Uuid;

pub const PG_ENV: &str = "MPC_TEST_POSTGRES_URL";
pub const NOW: i64 = 1_700_000_000_000;

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// One test's database and scratch directory (key files, extra SQLite files).
#[derive(Clone)]
pub struct Db {
    pub url: String,
    pub dir: PathBuf,
}

impl Db {
    pub fn key(&self) -> KeySource {
        KeySource::KeyFile(self.dir.join("store.key"))
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url, &self.key(), 1).await.unwrap()
    }

    /// A plain connection pool around the store, to inspect and tamper with rows.
    pub async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.url).await.unwrap()
    }
}

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mpc-store-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The admin URL with its database name replaced.
pub fn database_url(admin: &str, name: &str) -> String {
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

/// Runs `test` on a fresh database of `kind`, then drops the database and the directory,
/// even if the test panicked.
pub async fn run<F, Fut>(kind: Kind, test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin = match kind {
        Kind::Sqlite => None,
        Kind::Postgres => match std::env::var(PG_ENV) {
            Ok(url) => Some(url),
            Err(_) => {
                // The test script sets MPC_REQUIRE_POSTGRES so a missing server fails there.
                assert!(
                    std::env::var_os("MPC_REQUIRE_POSTGRES").is_none(),
                    "MPC_REQUIRE_POSTGRES is set but {PG_ENV} is not"
                );
                eprintln!("skipped: {PG_ENV} is not set");
                return;
            }
        },
    };
    let dir = temp_dir();
    generate_key_file(&dir.join("store.key")).unwrap();
    let name = format!("mpc_store_test_{}", Uuid::new_v4().simple());
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
                    crate::common::run(crate::common::Kind::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::common::run(crate::common::Kind::Postgres, super::$name).await;
                }
            )*
        }
    };
}
