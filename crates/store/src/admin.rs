//! Creating a node's PostgreSQL database (devnets, tests and first deployments).

use sqlx::{AssertSqlSafe, Connection};

use crate::{error::Result, StoreError};

/// Creates database `name` through `admin_url` (a PostgreSQL URL with rights to create
/// databases) and returns the URL of the new database.
pub async fn create_postgres_database(admin_url: &str, name: &str) -> Result<String> {
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || name.is_empty()
    {
        return Err(StoreError::Invalid(format!(
            "database name {name:?}: use [a-z0-9_]"
        )));
    }
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .map_err(|e| StoreError::Invalid(format!("connecting to {admin_url}: {e}")))?;
    // The name was checked above, so formatting it into the statement is safe.
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(|e| StoreError::Invalid(format!("creating database {name}: {e}")))?;
    let _ = conn.close().await;
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[host_start..].find('/') {
        Some(slash) => &base[..host_start + slash],
        None => base,
    };
    Ok(format!("{base}/{name}{query}"))
}
