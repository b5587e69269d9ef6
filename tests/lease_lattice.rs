//! Partially ordered frontiers: a lease whose since is a two-dimensional
//! product timestamp, or an antichain of them. A stale or incomparable
//! downgrade never moves a frontier back (the lease records the join), and a
//! shard's since is the meet of its live readers' sinces.

#[path = "support/lattice.rs"]
mod lattice;

use std::sync::Arc;
use std::time::Duration;

use lattice::{Antichain, Product, chain};
use leasehold::clock::{Clock, ManualClock};
use leasehold::lease::{Lease, LeaseBackend, LeaseConfig, MemoryShard, Since};

const TTL: Duration = Duration::from_secs(60);

fn manual() -> (ManualClock, Arc<dyn Clock>) {
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    (clock, shared)
}

fn config_on(clock: &Arc<dyn Clock>) -> LeaseConfig {
    LeaseConfig::builder(TTL)
        .jitter(Duration::ZERO)
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[test]
fn antichain_lattice_laws_hold_on_samples() {
    let samples = [
        chain(&[(0, 0)]),
        chain(&[(2, 0), (0, 3)]),
        chain(&[(1, 1)]),
        chain(&[(3, 1), (1, 4)]),
        chain(&[(5, 5)]),
        chain(&[]),
    ];
    for a in &samples {
        assert!(a.less_equal(a));
        for b in &samples {
            let (join, meet) = (a.join(b), a.meet(b));
            assert!(a.less_equal(&join) && b.less_equal(&join), "{a:?} v {b:?}");
            assert!(meet.less_equal(a) && meet.less_equal(b), "{a:?} ^ {b:?}");
            assert_eq!(join, b.join(a));
            assert_eq!(meet, b.meet(a));
            if a.less_equal(b) {
                assert_eq!(&join, b);
                assert_eq!(&meet, a);
            }
        }
    }
}

#[tokio::test]
async fn incomparable_downgrades_record_the_join_of_product_timestamps() {
    let (_clock, shared) = manual();
    let config = config_on(&shared);
    let shard = MemoryShard::new(shared, TTL, Product(0, 0), 0_u64);
    let (backend, since, seqno) = shard.register();
    let lease = Lease::spawn(backend, &config, since, seqno);

    assert!(lease.maybe_downgrade_since(Product(2, 0)));
    // Incomparable: ahead in rounds, behind in epochs. Recorded as the join.
    assert!(lease.maybe_downgrade_since(Product(1, 5)));
    assert_eq!(lease.since(), Product(2, 5));
    // Stale: at or before the recorded since. Ignored.
    assert!(!lease.maybe_downgrade_since(Product(2, 3)));
    assert_eq!(lease.since(), Product(2, 5));

    assert_eq!(
        lease.downgrade_since(Product(3, 1)).await,
        Ok(Product(3, 5))
    );
    assert_eq!(shard.since(), Product(3, 5));
    // Already held: resolves at once with the held since, never moves back.
    assert_eq!(
        lease.downgrade_since(Product(0, 9)).await,
        Ok(Product(3, 9))
    );
    assert_eq!(
        lease.downgrade_since(Product(1, 1)).await,
        Ok(Product(3, 9))
    );
    assert_eq!(lease.applied_since(), Product(3, 9));
}

#[tokio::test]
async fn antichain_downgrades_never_move_the_frontier_back() {
    let (_clock, shared) = manual();
    let config = config_on(&shared);
    let shard = MemoryShard::new(shared, TTL, chain(&[(0, 0)]), 0_u64);
    let (backend, since, seqno) = shard.register();
    let lease = Lease::spawn(backend, &config, since, seqno);

    assert!(lease.maybe_downgrade_since(chain(&[(2, 0), (0, 3)])));
    // Incomparable with the recorded frontier: the join of both.
    assert!(lease.maybe_downgrade_since(chain(&[(1, 1)])));
    assert_eq!(lease.since(), chain(&[(2, 1), (1, 3)]));
    // Behind (a superset of the recorded frontier's set): ignored.
    assert!(!lease.maybe_downgrade_since(chain(&[(0, 1)])));
    // Ahead of the recorded frontier: (2, 2) is after (2, 1).
    assert_eq!(
        lease.downgrade_since(chain(&[(2, 2)])).await,
        Ok(chain(&[(2, 2)]))
    );
    assert_eq!(shard.since(), chain(&[(2, 2)]));
    // Incomparable with it: the join (the minimal pairwise joins).
    assert_eq!(
        lease.downgrade_since(chain(&[(3, 0), (0, 4)])).await,
        Ok(chain(&[(3, 2), (2, 4)]))
    );
}

#[tokio::test]
async fn shard_since_is_the_meet_of_live_readers_and_never_moves_back() {
    let (clock, shared) = manual();
    let shard = MemoryShard::new(shared, TTL, chain(&[(0, 0)]), 0_u64);
    let (a, ..) = shard.register();
    let (b, ..) = shard.register();
    a.heartbeat(chain(&[(4, 1)]), 0).await.unwrap();
    b.heartbeat(chain(&[(1, 4)]), 0).await.unwrap();
    // Neither reader needs what is before both: the meet keeps both corners.
    assert_eq!(shard.since(), chain(&[(1, 4), (4, 1)]));

    // b goes quiet and is expired; a keeps heartbeating.
    clock.advance(TTL / 2);
    a.heartbeat(chain(&[(5, 5)]), 0).await.unwrap();
    clock.advance(TTL / 2);
    assert_eq!(shard.readers(), 1);
    assert_eq!(shard.since(), chain(&[(5, 5)]));

    // A new reader joins at the shard's since, not before it.
    let (c, since, _) = shard.register();
    assert_eq!(since, chain(&[(5, 5)]));
    c.heartbeat(chain(&[(9, 0)]), 0).await.unwrap(); // incomparable: joined
    assert_eq!(shard.reader(c.id()).unwrap().since, chain(&[(9, 5)]));
    assert_eq!(shard.since(), chain(&[(5, 5)]));
}

#[test]
fn total_orders_keep_max_and_min() {
    assert_eq!(3_u64.join(&9), 9);
    assert_eq!(3_u64.meet(&9), 3);
    assert!(3_u64.less_equal(&3));
    assert_eq!(("a", 2).join(&("b", 1)), ("b", 1));
    let _ = Antichain::new([Product(1, 1)]).elements().len();
}
