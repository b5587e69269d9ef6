//! Rows the changelog cannot decode (written by a bug, a manual edit, a
//! newer tool) never stop recovery: `claim_stale` and `list` go on with
//! the other rows, and the broken ones are quarantined with the decoding
//! error.
#![cfg(feature = "sqlite")]

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg_support;

use std::sync::Arc;
use std::time::Duration;

use leasehold::changelog::{ChangeLog, EntryState, OwnerId, SqliteChangeLog};
use leasehold::clock::ManualClock;

const STALENESS: Duration = Duration::from_secs(10);

/// Claims until nothing is left to claim; returns how many entries were
/// claimed for cleanup, and the reasons of those the claim quarantined.
async fn claim_everything(log: &impl ChangeLog, clock: &ManualClock) -> (usize, Vec<String>) {
    let recoverer = OwnerId::new("recovery");
    let (mut claimed, mut reasons) = (0, Vec::new());
    for _ in 0..3 {
        // A first look, then the threshold on this handle's clock.
        log.list()
            .await
            .expect("list must not fail on a broken row");
        clock.advance(STALENESS);
        for entry in log
            .claim_stale(&recoverer, 100)
            .await
            .expect("claim_stale must not fail on a broken row")
        {
            match entry.quarantined {
                Some(reason) => reasons.push(reason),
                None => {
                    claimed += 1;
                    log.remove(&entry.fence).await.unwrap(); // cleaned
                }
            }
        }
    }
    (claimed, reasons)
}

fn quarantined(entries: &[leasehold::changelog::EntryInfo]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| match &e.state {
            EntryState::Quarantined { reason } => Some(reason.clone()),
            EntryState::Active => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_that_do_not_decode_are_quarantined_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changelog.db");
    let clock = ManualClock::new();
    let log = SqliteChangeLog::builder(&path)
        .staleness(STALENESS)
        .clock(Arc::new(clock.clone()))
        .open()
        .await
        .unwrap();
    for i in 0..8 {
        log.record(&OwnerId::new("w"), format!("good-{i}").into_bytes())
            .await
            .unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "INSERT INTO leasehold_changelog (owner, generation, refreshed_ms, recorded_ms, payload)
             VALUES ('w', 1, 0, 0, 'a text payload');
         INSERT INTO leasehold_changelog (owner, generation, refreshed_ms, recorded_ms, payload)
             VALUES ('w', 9223372036854775807, 0, 0, x'00');
         INSERT INTO leasehold_changelog (owner, generation, refreshed_ms, recorded_ms, payload, committed)
             VALUES ('w', 1, 0, 0, x'00', 'maybe');
         INSERT INTO leasehold_changelog (owner, generation, refreshed_ms, recorded_ms, payload, claims)
             VALUES ('w', 1, 0, 0, x'00', 'many');",
    )
    .unwrap();
    drop(conn);

    let (claimed, reported) = claim_everything(&log, &clock).await;
    // The good rows, and the one whose claim count heals when claimed.
    assert_eq!(claimed, 9);
    assert_eq!(reported.len(), 3, "{reported:?}");
    let entries = log.list().await.unwrap();
    let mut stored = quarantined(&entries);
    stored.sort();
    let mut reported = reported;
    reported.sort();
    assert_eq!(stored, reported);
    assert!(
        reported.iter().any(|r| r.contains("payload is Text")),
        "{reported:?}"
    );
    assert!(
        reported
            .iter()
            .any(|r| r.contains("generation 9223372036854775807")),
        "{reported:?}"
    );
    assert!(
        reported
            .iter()
            .any(|r| r.contains("committed is not an integer")),
        "{reported:?}"
    );
    // The quarantined rows can be removed with the fence the claim gave.
    for entry in entries.iter().filter(|e| e.state != EntryState::Active) {
        assert_eq!(
            log.remove(&entry.fence).await.unwrap(),
            leasehold::changelog::Removal::Removed
        );
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_at_the_top_of_their_range_are_quarantined_not_fatal() {
    use leasehold::changelog::PostgresChangeLog;
    let Some(url) = pg_support::url("malformed rows (postgres)") else {
        return;
    };
    let schema = pg_support::fresh_schema("lh_malformed");
    let clock = ManualClock::new();
    let log = PostgresChangeLog::builder(url.clone())
        .schema(schema.clone())
        .staleness(STALENESS)
        .clock(Arc::new(clock.clone()))
        .open()
        .await
        .unwrap();
    for i in 0..8 {
        log.record(&OwnerId::new("w"), format!("good-{i}").into_bytes())
            .await
            .unwrap();
    }
    let client = log.client().await.unwrap();
    client
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".leasehold_changelog
                 (owner, generation, refreshed_at, recorded_at, payload)
                 VALUES ('w', 9223372036854775807, now(), now(), '\\x00');
             INSERT INTO \"{schema}\".leasehold_changelog
                 (owner, generation, refreshed_at, recorded_at, payload, claims)
                 VALUES ('w', 1, now(), now(), '\\x00', 2147483647);
             INSERT INTO \"{schema}\".leasehold_changelog
                 (owner, generation, refreshed_at, recorded_at, payload, beat)
                 VALUES ('w', 1, now(), now(), '\\x00', 9223372036854775807);"
        ))
        .await
        .unwrap();
    drop(client);

    let (claimed, reported) = claim_everything(&log, &clock).await;
    assert_eq!(claimed, 8);
    assert_eq!(reported.len(), 3, "{reported:?}");
    let entries = log.list().await.unwrap();
    assert_eq!(quarantined(&entries).len(), 3, "{entries:#?}");
    for entry in entries.iter().filter(|e| e.state != EntryState::Active) {
        assert_eq!(
            log.remove(&entry.fence).await.unwrap(),
            leasehold::changelog::Removal::Removed
        );
    }
    pg_support::drop_schema(&url, &schema);
}
