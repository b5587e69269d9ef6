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
            supported: 2,
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

/// A file written by the previous schema (wall-clock staleness, no heartbeat
/// counter) is upgraded in place when opened: its entries keep their
/// fences, and are judged by the new rule from then on.
#[tokio::test]
async fn a_version_1_file_is_upgraded_in_place_keeping_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE leasehold_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
             INSERT INTO leasehold_schema VALUES ('changelog', 1);
             CREATE TABLE leasehold_changelog (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 owner TEXT NOT NULL,
                 generation INTEGER NOT NULL,
                 refreshed_ms INTEGER NOT NULL,
                 recorded_ms INTEGER NOT NULL,
                 claims INTEGER NOT NULL DEFAULT 0,
                 quarantined TEXT,
                 payload BLOB NOT NULL
             );
             CREATE INDEX leasehold_changelog_claimable
                 ON leasehold_changelog (refreshed_ms, id) WHERE quarantined IS NULL;
             INSERT INTO leasehold_changelog (owner, generation, refreshed_ms, recorded_ms, payload)
                 VALUES ('old-writer', 3, 0, 0, x'01');",
        )
        .unwrap();
    }
    let clock = leasehold::clock::ManualClock::new();
    let log = SqliteChangeLog::builder(&path)
        .staleness(Duration::from_secs(10))
        .clock(std::sync::Arc::new(clock.clone()))
        .open()
        .await
        .unwrap();
    let entries = log.list().await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].fence.generation(), 3);
    assert!(!entries[0].committed);
    // A refresh time of 0 (1970) no longer makes it stale at once.
    assert!(
        log.claim_stale(&OwnerId::new("r"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    clock.advance(Duration::from_secs(10));
    let claimed = log.claim_stale(&OwnerId::new("r"), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].fence.generation(), 4);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row(
            "SELECT version FROM leasehold_schema WHERE component = 'changelog'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, 2);
}

/// Staleness does not read the wall clock: an entry whose stored refresh
/// time lies an hour in the past or the future (a stepped clock) is judged
/// only by how long this handle has seen its heartbeat counter unchanged.
#[tokio::test]
async fn stored_wall_clock_times_do_not_decide_staleness() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let clock = leasehold::clock::ManualClock::new();
    let log = SqliteChangeLog::builder(&path)
        .staleness(Duration::from_secs(10))
        .clock(std::sync::Arc::new(clock.clone()))
        .open()
        .await
        .unwrap();
    let past = log.record(&OwnerId::new("w"), vec![1]).await.unwrap();
    let future = log.record(&OwnerId::new("w"), vec![2]).await.unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE leasehold_changelog SET refreshed_ms = refreshed_ms - 3600000 WHERE id = ?1",
            [past.id().get() as i64],
        )
        .unwrap();
        conn.execute(
            "UPDATE leasehold_changelog SET refreshed_ms = refreshed_ms + 3600000 WHERE id = ?1",
            [future.id().get() as i64],
        )
        .unwrap();
    }
    let recoverer = OwnerId::new("r");
    assert!(
        log.claim_stale(&recoverer, 10).await.unwrap().is_empty(),
        "not stale yet"
    );
    clock.advance(Duration::from_secs(9));
    assert!(
        log.claim_stale(&recoverer, 10).await.unwrap().is_empty(),
        "still not stale"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        log.claim_stale(&recoverer, 10).await.unwrap().len(),
        2,
        "both stale on time"
    );
}
