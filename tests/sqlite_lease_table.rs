//! `SqliteLeaseTable`: a shard's readers in an SQLite file. Heartbeats join
//! sinces and raise holds; the owner's horizon is the least live hold (from
//! the index), its since the meet of live readers; stale readers are expired
//! by observation of their heartbeat counter on the owner's clock, fenced:
//! an expired reader is refused everywhere and re-registers as a new one.
#![cfg(feature = "sqlite")]

#[path = "support/lattice.rs"]
mod lattice;

use std::sync::Arc;
use std::time::Duration;

use lattice::{Antichain, chain};
use leasehold::clock::{Clock, ManualClock};
use leasehold::heartbeat::InvalidReason;
use leasehold::lease::{
    BackendError, FencedReadError, Lease, LeaseBackend, LeaseConfig, LeaseError, SqliteLeaseTable,
};

const STALENESS: Duration = Duration::from_secs(60);

fn manual() -> (ManualClock, Arc<dyn Clock>) {
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    (clock, shared)
}

async fn table_on<S: leasehold::lease::TableSince>(
    dir: &tempfile::TempDir,
    clock: &Arc<dyn Clock>,
    since: S,
    seqno: u64,
) -> SqliteLeaseTable<S> {
    SqliteLeaseTable::builder(dir.path().join("leases.db"), "shard")
        .staleness(STALENESS)
        .clock(clock.clone())
        .open(since, seqno)
        .await
        .unwrap()
}

#[tokio::test]
async fn heartbeats_join_sinces_raise_holds_and_report_the_latest_seqno() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, shared) = manual();
    let table = table_on(&dir, &shared, chain(&[(0, 0)]), 3).await;
    let (reader, since, seqno) = table.register().await.unwrap();
    assert_eq!((since, seqno), (chain(&[(0, 0)]), 3));
    table.advance_seqno(9).await.unwrap();

    let reply = reader.heartbeat(chain(&[(2, 0)]), 5).await.unwrap();
    assert_eq!((reply.since, reply.seqno), (chain(&[(2, 0)]), 9));
    // Incomparable since: the table records the join. A lower hold: ignored.
    let reply = reader.heartbeat(chain(&[(0, 4)]), 4).await.unwrap();
    assert_eq!(reply.since, chain(&[(2, 4)]));
    let row = table
        .reader(reader.fence().reader())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.since, row.seqno_hold, row.beats),
        (chain(&[(2, 4)]), 5, 2)
    );
}

#[tokio::test]
async fn horizon_is_the_least_live_hold_else_the_latest_seqno_and_never_moves_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, shared) = manual();
    let table = table_on(&dir, &shared, 0_u64, 10).await;
    assert_eq!(table.gc_horizon().await.unwrap(), 10);
    let (a, ..) = table.register().await.unwrap();
    table.advance_seqno(20).await.unwrap();
    let (b, ..) = table.register().await.unwrap();
    assert_eq!(table.gc_horizon().await.unwrap(), 10); // a holds 10, b 20
    a.heartbeat(0, 15).await.unwrap();
    assert_eq!(table.gc_horizon().await.unwrap(), 15);
    a.expire().await.unwrap();
    assert_eq!(table.gc_horizon().await.unwrap(), 20);
    b.expire().await.unwrap();
    table.advance_seqno(25).await.unwrap();
    assert_eq!(table.gc_horizon().await.unwrap(), 25);
    assert_eq!(table.readers().await.unwrap(), 0);
}

#[tokio::test]
async fn horizon_query_is_served_by_the_hold_index() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, shared) = manual();
    let _table = table_on(&dir, &shared, 0_u64, 0).await;
    let conn = rusqlite::Connection::open(dir.path().join("leases.db")).unwrap();
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT min(seqno_hold) FROM leasehold_lease_readers WHERE shard = 'shard'",
        )
        .unwrap()
        .query_map([], |row| row.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter()
            .any(|step| step.contains("COVERING INDEX leasehold_lease_readers_hold")),
        "{plan:?}"
    );
    assert!(
        !plan.iter().any(|step| step.starts_with("SCAN")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn shard_since_is_the_meet_of_live_readers_and_new_readers_start_there() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, shared) = manual();
    let table = table_on(&dir, &shared, chain(&[(0, 0)]), 0).await;
    let (a, ..) = table.register().await.unwrap();
    let (b, ..) = table.register().await.unwrap();
    a.heartbeat(chain(&[(4, 1)]), 0).await.unwrap();
    b.heartbeat(chain(&[(1, 4)]), 0).await.unwrap();
    assert_eq!(table.since().await.unwrap(), chain(&[(1, 4), (4, 1)]));

    // b goes quiet: the owner sees its counter unchanged for the staleness.
    assert!(table.expire_stale().await.unwrap().is_empty());
    clock.advance(STALENESS / 2);
    a.heartbeat(chain(&[(5, 5)]), 0).await.unwrap();
    clock.advance(STALENESS / 2);
    assert_eq!(table.expire_stale().await.unwrap(), [b.fence().reader()]);
    assert_eq!(table.since().await.unwrap(), chain(&[(5, 5)]));
    let (_c, since, _) = table.register().await.unwrap();
    assert_eq!(since, chain(&[(5, 5)]));
}

#[tokio::test]
async fn an_expired_reader_is_refused_everywhere_and_registers_again_as_a_new_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, shared) = manual();
    let table = table_on(&dir, &shared, 0_u64, 0).await;
    let (reader, ..) = table.register().await.unwrap();
    let fence = reader.fence();
    table.expire_stale().await.unwrap(); // first look
    clock.advance(STALENESS);
    assert_eq!(table.expire_stale().await.unwrap(), [fence.reader()]);

    assert!(matches!(
        reader.heartbeat(7, 7).await,
        Err(BackendError::Lost)
    ));
    assert!(table.reader(fence.reader()).await.unwrap().is_none()); // not recreated
    let read = table
        .read_fenced(fence, |_| Ok::<_, rusqlite::Error>(()))
        .await;
    assert!(matches!(read, Err(FencedReadError::Lost)));
    assert_eq!(table.gc_horizon().await.unwrap(), 0);

    let (again, ..) = table.register().await.unwrap();
    assert_ne!(again.fence().reader(), fence.reader());
    assert!(again.fence().generation() > fence.generation());
}

#[tokio::test]
async fn a_heartbeat_between_observation_and_expiry_keeps_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, shared) = manual();
    let table = table_on(&dir, &shared, 0_u64, 0).await;
    let (reader, ..) = table.register().await.unwrap();
    table.expire_stale().await.unwrap();
    clock.advance(STALENESS - Duration::from_millis(1));
    reader.heartbeat(1, 0).await.unwrap(); // the counter moved: observation restarts
    clock.advance(Duration::from_millis(1));
    assert!(table.expire_stale().await.unwrap().is_empty());
    clock.advance(STALENESS);
    assert_eq!(table.expire_stale().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_lease_expired_by_the_owner_ends_lost_and_its_validity_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, shared) = manual();
    let table = table_on(&dir, &shared, 0_u64, 0).await;
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

    // The owner, another process with its own clock, saw the counter
    // unchanged for the staleness (the reader was paused, say): it expires
    // the reader although the lease's own clock has not moved.
    let (owner_clock, owner_shared) = manual();
    let owner = table_on(&dir, &owner_shared, 0_u64, 0).await;
    owner.expire_stale().await.unwrap();
    owner_clock.advance(STALENESS);
    assert_eq!(owner.expire_stale().await.unwrap().len(), 1);
    assert_eq!(lease.downgrade_since(4).await, Err(LeaseError::Lost));
    assert_eq!(lease.ended(), Some(LeaseError::Lost));
    assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Lost);
    assert_eq!(owner.readers().await.unwrap(), 0);
}

#[tokio::test]
async fn undecodable_sinces_are_reported_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, shared) = manual();
    let table = table_on(&dir, &shared, 0_u64, 0).await;
    let (reader, ..) = table.register().await.unwrap();
    let as_antichain: SqliteLeaseTable<Antichain> =
        table_on(&dir, &shared, chain(&[(0, 0)]), 0).await;
    assert!(matches!(
        as_antichain.since().await,
        Err(leasehold::lease::LeaseTableError::Undecodable { .. })
    ));
    reader.expire().await.unwrap();
}
