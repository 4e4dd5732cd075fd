//! The harness the store's test files share: every test in `on_both_backends!` runs on a
//! fresh SQLite file and, when `MPC_TEST_POSTGRES_URL` names an admin connection, on a fresh
//! PostgreSQL database created for that test and dropped afterwards.

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use mpc_types::NodeId;
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
    /// PostgreSQL: the admin connection and this test's database name.
    postgres: Option<(String, String)>,
}

/// The test's database as it was at one moment ([`Db::snapshot`]).
pub enum Snapshot {
    /// SQLite: a directory with copies of the files that existed.
    Files(PathBuf),
    /// PostgreSQL: a database made from the test's database as a template.
    Database(String),
}

/// SQLite's files for the test's store.
const SQLITE_FILES: [&str; 3] = ["store.db", "store.db-wal", "store.db-shm"];

/// Runs `sql` on the admin connection, retrying while the database it copies still counts a
/// closing connection of the store (PostgreSQL takes a moment to notice one ended).
async fn admin_sql(admin: &str, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    for attempt in 0.. {
        match sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
        {
            Ok(_) => break,
            Err(e) if attempt < 50 && e.to_string().contains("being accessed by other users") => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
    conn.close().await.unwrap();
}

impl Db {
    pub fn key(&self) -> KeySource {
        KeySource::KeyFile(self.dir.join("store.key"))
    }

    pub async fn open(&self) -> Store {
        Store::open(&self.url, &self.key(), NodeId::must(1))
            .await
            .unwrap()
    }

    /// Copies the database as it is now; every store on it must be closed (a VM snapshot, a
    /// backup of the database files, a point in time to recover to).
    pub async fn snapshot(&self) -> Snapshot {
        match &self.postgres {
            None => {
                let copy = self
                    .dir
                    .join(format!("snapshot-{}", Uuid::new_v4().simple()));
                std::fs::create_dir_all(&copy).unwrap();
                for file in SQLITE_FILES {
                    if self.dir.join(file).exists() {
                        std::fs::copy(self.dir.join(file), copy.join(file)).unwrap();
                    }
                }
                Snapshot::Files(copy)
            }
            Some((admin, name)) => {
                let copy = format!("{name}_{}", Uuid::new_v4().simple());
                admin_sql(admin, &format!("CREATE DATABASE {copy} TEMPLATE {name}")).await;
                Snapshot::Database(copy)
            }
        }
    }

    /// Puts the database back as it was at `snapshot`; every store on it must be closed.
    pub async fn roll_back_to(&self, snapshot: &Snapshot) {
        match (snapshot, &self.postgres) {
            (Snapshot::Files(copy), None) => {
                for file in SQLITE_FILES {
                    let _ = std::fs::remove_file(self.dir.join(file));
                    if copy.join(file).exists() {
                        std::fs::copy(copy.join(file), self.dir.join(file)).unwrap();
                    }
                }
            }
            (Snapshot::Database(copy), Some((admin, name))) => {
                admin_sql(admin, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
                admin_sql(admin, &format!("CREATE DATABASE {name} TEMPLATE {copy}")).await;
            }
            _ => panic!("a snapshot of another backend"),
        }
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
        postgres: admin.clone().map(|admin| (admin, name.clone())),
    }))
    .await;
    if let Some(admin) = &admin {
        // The test's database and any snapshots of it (named after it).
        let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
        let databases: Vec<String> =
            sqlx::query_scalar("SELECT datname::TEXT FROM pg_database WHERE datname LIKE $1")
                .bind(format!("{name}%"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
        for database in databases {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
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

mod wallet;
#[allow(unused_imports)] // not every test file uses both
pub use wallet::{wallet, wallet_id};
