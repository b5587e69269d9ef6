//! SQLite-specific behaviour of the changelog: what the conformance suite
//! cannot say generically (files, schema, several connections opening at once).
#![cfg(feature = "sqlite")]

use std::time::Duration;

use leasehold::changelog::{ChangeLog, ChangeLogError, OwnerId, SqliteChangeLog};

#[tokio::test]
async fn entries_survive_closing_and_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let fence = {
        let log = SqliteChangeLog::builder(&path).open().await.unwrap();
        log.record(&OwnerId::new("w"), b"intent".to_vec())
            .await
            .unwrap()
    };
    let log = SqliteChangeLog::builder(&path).open().await.unwrap();
    let info = log.get(fence.id()).await.unwrap().expect("durable entry");
    assert_eq!(info.fence, fence);
    assert_eq!(info.payload, b"intent");
}

#[tokio::test]
async fn a_schema_newer_than_this_crate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    drop(SqliteChangeLog::builder(&path).open().await.unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE leasehold_schema SET version = 99 WHERE component = 'changelog'",
            [],
        )
        .unwrap();
    }
    match SqliteChangeLog::builder(&path).open().await {
        Err(ChangeLogError::SchemaTooNew {
            found: 99,
            supported: 1,
        }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn many_connections_can_create_a_fresh_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                SqliteChangeLog::builder(&path)
                    .busy_timeout(Duration::from_secs(10))
                    .open_blocking()
                    .expect("concurrent open")
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

#[tokio::test]
async fn the_log_shares_a_database_with_the_callers_own_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE objects (name TEXT PRIMARY KEY, blob TEXT);")
            .unwrap();
    }
    let log = SqliteChangeLog::builder(&path).open().await.unwrap();
    log.record(&OwnerId::new("w"), vec![]).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'objects'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
}
