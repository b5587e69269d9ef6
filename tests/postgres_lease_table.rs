//! `PostgresLeaseTable`: the same model as the SQLite table, on a server.
//! Heartbeats join sinces and raise holds; the horizon is the least live
//! hold, served by the index; the since is the meet of live readers; stale
//! readers are expired by observation of their heartbeat counter, fenced;
//! fenced reads see the check and the read in one snapshot.
//!
//! Runs when `LEASEHOLD_PG_URL` names a server (`scripts/with-postgres.sh`);
//! skipped loudly otherwise, and failed under `LEASEHOLD_REQUIRE_PG=1`.
#![cfg(feature = "postgres")]

#[path = "support/lattice.rs"]
mod lattice;
#[path = "support/postgres.rs"]
mod pg_support;

use std::sync::Arc;
use std::time::Duration;

use lattice::chain;
use leasehold::clock::{Clock, ManualClock};
use leasehold::heartbeat::InvalidReason;
use leasehold::lease::{
    BackendError, FencedReadError, Lease, LeaseBackend, LeaseConfig, LeaseError,
    PostgresLeaseTable, TableSince,
};

const STALENESS: Duration = Duration::from_secs(60);

/// A fresh schema on the test server, dropped at the end.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(test: &str) -> Option<Self> {
        Some(Schema {
            url: pg_support::url(test)?,
            name: pg_support::fresh_schema("lh_lease"),
        })
    }

    async fn table<S: TableSince>(
        &self,
        clock: &Arc<dyn Clock>,
        since: S,
        seqno: u64,
    ) -> PostgresLeaseTable<S> {
        PostgresLeaseTable::builder(self.url.clone(), "shard")
            .schema(self.name.clone())
            .staleness(STALENESS)
            .clock(clock.clone())
            .open(since, seqno)
            .await
            .unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        pg_support::drop_schema(&self.url, &self.name);
    }
}

fn manual() -> (ManualClock, Arc<dyn Clock>) {
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    (clock, shared)
}

#[tokio::test]
async fn heartbeats_join_sinces_and_the_since_is_the_meet_of_live_readers() {
    let Some(schema) = Schema::new("postgres lease table: joins and meets") else {
        return;
    };
    let (clock, shared) = manual();
    let table = schema.table(&shared, chain(&[(0, 0)]), 3).await;
    let (a, since, seqno) = table.register().await.unwrap();
    assert_eq!((since, seqno), (chain(&[(0, 0)]), 3));
    let (b, ..) = table.register().await.unwrap();
    table.advance_seqno(9).await.unwrap();

    let reply = a.heartbeat(chain(&[(4, 0)]), 5).await.unwrap();
    assert_eq!((reply.since, reply.seqno), (chain(&[(4, 0)]), 9));
    let reply = a.heartbeat(chain(&[(0, 1)]), 4).await.unwrap(); // incomparable; lower hold
    assert_eq!(reply.since, chain(&[(4, 1)]));
    b.heartbeat(chain(&[(1, 4)]), 3).await.unwrap();
    let row = table.reader(a.fence().reader()).await.unwrap().unwrap();
    assert_eq!(
        (row.since, row.seqno_hold, row.beats),
        (chain(&[(4, 1)]), 5, 2)
    );
    assert_eq!(table.since().await.unwrap(), chain(&[(1, 4), (4, 1)]));
    assert_eq!(table.gc_horizon().await.unwrap(), 3);

    // b goes quiet and is expired; the horizon and the since move up.
    assert!(table.expire_stale().await.unwrap().is_empty());
    clock.advance(STALENESS / 2);
    a.heartbeat(chain(&[(5, 5)]), 6).await.unwrap();
    clock.advance(STALENESS / 2);
    assert_eq!(table.expire_stale().await.unwrap(), [b.fence().reader()]);
    assert_eq!(table.gc_horizon().await.unwrap(), 6);
    assert_eq!(table.since().await.unwrap(), chain(&[(5, 5)]));
    let (_c, since, seqno) = table.register().await.unwrap();
    assert_eq!((since, seqno), (chain(&[(5, 5)]), 9));
}

#[tokio::test]
async fn an_expired_reader_is_refused_everywhere_and_registers_again_as_a_new_reader() {
    let Some(schema) = Schema::new("postgres lease table: fenced expiry") else {
        return;
    };
    let (clock, shared) = manual();
    let table = schema.table(&shared, 0_u64, 0).await;
    let (reader, ..) = table.register().await.unwrap();
    let fence = reader.fence();
    let read = table
        .read_fenced(fence, |tx| {
            Box::pin(async move { tx.query_one("SELECT 1::bigint", &[]).await })
        })
        .await;
    assert_eq!(read.unwrap().get::<_, i64>(0), 1);

    table.expire_stale().await.unwrap();
    clock.advance(STALENESS - Duration::from_millis(1));
    reader.heartbeat(1, 0).await.unwrap(); // a beat restarts the observation
    clock.advance(Duration::from_millis(1));
    assert!(table.expire_stale().await.unwrap().is_empty());
    clock.advance(STALENESS);
    assert_eq!(table.expire_stale().await.unwrap(), [fence.reader()]);

    assert!(matches!(
        reader.heartbeat(7, 7).await,
        Err(BackendError::Lost)
    ));
    assert!(table.reader(fence.reader()).await.unwrap().is_none());
    let read = table
        .read_fenced(fence, |tx| {
            Box::pin(async move { tx.query_one("SELECT 1", &[]).await })
        })
        .await;
    assert!(matches!(read, Err(FencedReadError::Lost)));
    let (again, ..) = table.register().await.unwrap();
    assert_ne!(again.fence().reader(), fence.reader());
    assert!(again.fence().generation() > fence.generation());
    assert_eq!(table.readers().await.unwrap(), 1);
}

#[tokio::test]
async fn a_lease_expired_by_the_owner_ends_lost_and_its_validity_ends() {
    let Some(schema) = Schema::new("postgres lease table: lease lost") else {
        return;
    };
    let (_clock, shared) = manual();
    let table = schema.table(&shared, 0_u64, 0).await;
    let (reader, since, seqno) = table.register().await.unwrap();
    let config = LeaseConfig::builder(STALENESS)
        .jitter(Duration::ZERO)
        .clock(shared.clone())
        .build()
        .unwrap();
    let lease = Lease::spawn(reader, &config, since, seqno);
    let validity = lease.validity();
    assert_eq!(lease.downgrade_since(3).await, Ok(3));
    assert_eq!(table.since().await.unwrap(), 3);

    let (owner_clock, owner_shared) = manual();
    let owner = schema.table(&owner_shared, 0_u64, 0).await;
    owner.expire_stale().await.unwrap();
    owner_clock.advance(STALENESS);
    assert_eq!(owner.expire_stale().await.unwrap().len(), 1);
    assert_eq!(lease.downgrade_since(4).await, Err(LeaseError::Lost));
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Lost);
    assert_eq!(owner.readers().await.unwrap(), 0);
    assert_eq!(owner.since().await.unwrap(), 3); // never moves back
}

#[tokio::test]
async fn horizon_query_is_served_by_the_hold_index_at_ten_thousand_readers() {
    let Some(schema) = Schema::new("postgres lease table: horizon index") else {
        return;
    };
    let (_clock, shared) = manual();
    let table = schema.table(&shared, 0_u64, 0).await;
    let client = table.client().await.unwrap();
    let readers = format!("\"{}\".leasehold_lease_readers", schema.name);
    client
        .batch_execute(&format!(
            "INSERT INTO {readers} (shard, generation, since, seqno_hold)
             SELECT 'shard', g, '\\x0000000000000000'::bytea, 1000 + g FROM generate_series(1, 10000) g;
             ANALYZE {readers};"
        ))
        .await
        .unwrap();
    assert_eq!(table.gc_horizon().await.unwrap(), 1001);
    let plan: Vec<String> = client
        .query(
            &format!("EXPLAIN SELECT min(seqno_hold) FROM {readers} WHERE shard = 'shard'"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("leasehold_lease_readers_hold"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}
