//! Shared by the PostgreSQL tests: where the server is, and a private
//! schema per test so that tests running in parallel never see each other.
//!
//! `LEASEHOLD_PG_URL` names the server (`scripts/with-postgres.sh` starts a
//! throwaway one and sets it). Without it the PostgreSQL tests are skipped,
//! loudly — unless `LEASEHOLD_REQUIRE_PG=1` (CI), which makes them fail.
#![allow(dead_code)] // each test binary uses the part it needs

use std::sync::atomic::{AtomicU64, Ordering};

pub const URL_ENV: &str = "LEASEHOLD_PG_URL";
pub const REQUIRE_ENV: &str = "LEASEHOLD_REQUIRE_PG";

/// The server URL, or `None` after a loud skip notice (naming `test`).
///
/// # Panics
///
/// If the URL is missing and `LEASEHOLD_REQUIRE_PG=1`.
pub fn url(test: &str) -> Option<String> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{test}: {REQUIRE_ENV}=1 but {URL_ENV} is not set: the PostgreSQL tests must run \
                 (use `bash scripts/with-postgres.sh cargo test --all-features`)"
            );
            eprintln!(
                "\n!!! SKIPPED {test}: {URL_ENV} is not set, so this PostgreSQL test did NOT run. \
                 Run `bash scripts/with-postgres.sh cargo test --all-features` (or set \
                 {REQUIRE_ENV}=1 to make this a failure) !!!\n"
            );
            None
        }
    }
}

/// A schema name no other test (in this or another process) uses.
pub fn fresh_schema(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops `schema` and everything in it. Blocking (usable from `Drop`): runs
/// on its own thread and runtime.
pub fn drop_schema(url: &str, schema: &str) {
    let (url, schema) = (url.to_owned(), schema.to_owned());
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) =
                leasehold::tokio_postgres::connect(&url, leasehold::tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client
                // Never hang a test's teardown on a lock a leaked session holds.
                .batch_execute(&format!(
                    "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                ))
                .await
        })
    })
    .join();
    if let Ok(Err(error)) = outcome {
        eprintln!("warning: could not drop test schema: {error}");
    }
}
