//! Loom models of the lease's handle/task protocol, driven directly on its
//! shared state (no tokio runtime, no backend): a downgrade request racing
//! the task's acknowledgement is never acknowledged by an older heartbeat
//! and always wakes its waiter; seqno-hold releases racing the task's read
//! of the hold are never lost; a handle's drop racing the task's idle wait
//! always wakes it, and a plain downgrade never does; incomparable
//! downgrades of a product since racing each other and the ack are joined,
//! never lost, and never sent out of order.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test -p leasehold-loom-tests --release --test lease`
#![cfg(loom)]

use leasehold::__loom::LeaseProtocol;
use loom::future::block_on;
use loom::thread;

/// The task's loop without the tick: wait for a request, heartbeat the
/// snapshot (the backend applies what it is sent), until an expiry.
/// Returns the number of heartbeats.
fn task(lease: LeaseProtocol) -> usize {
    let mut heartbeats = 0;
    loop {
        block_on(lease.wait_for_work());
        if lease.expire_requested() {
            lease.end_expired();
            return heartbeats;
        }
        let snapshot = lease.snapshot();
        lease.ack(snapshot, 0);
        heartbeats += 1;
    }
}

#[test]
fn downgrade_requests_racing_the_ack_are_applied_and_wake_their_waiters() {
    loom::model(|| {
        let lease = LeaseProtocol::new(0, 0);
        let task = thread::spawn({
            let lease = lease.clone();
            move || task(lease)
        });
        // Two syncs requested concurrently: one may land between the task's
        // snapshot and its ack. That ack must not complete it.
        let second = thread::spawn({
            let lease = lease.clone();
            move || block_on(lease.downgrade(7))
        });
        let first = block_on(lease.downgrade(5));
        let second = second.join().unwrap();

        let first = first.expect("the task does not end before the expiry");
        let second = second.expect("the task does not end before the expiry");
        assert!(
            first >= 5,
            "downgrade(5) returned before 5 was applied: {first}"
        );
        assert!(
            second >= 7,
            "downgrade(7) returned before 7 was applied: {second}"
        );

        lease.drop_handle();
        let heartbeats = task.join().unwrap();
        assert!((1..=2).contains(&heartbeats));
        assert!(block_on(lease.wait_ended()));
    });
}

#[test]
fn seqno_releases_racing_the_tasks_read_of_the_hold_are_never_lost() {
    loom::model(|| {
        let lease = LeaseProtocol::new(0, 3);
        let a = lease.lease_seqno();
        let b = lease.lease_seqno(); // two holds on seqno 3
        lease.observe_seqno(8);

        let releases: Vec<_> = [a, b]
            .into_iter()
            .map(|hold| thread::spawn(move || drop(hold)))
            .collect();
        // The task reads the hold while the releases race.
        let seen = [lease.seqno_hold(), lease.seqno_hold()];
        for release in releases {
            release.join().unwrap();
        }

        for hold in seen {
            assert!(hold == 3 || hold == 8, "hold {hold} was never live");
        }
        assert!(seen[0] <= seen[1], "the hold moved back: {seen:?}");
        assert_eq!(lease.seqno_hold(), 8, "a release was lost");
    });
}

#[test]
fn handle_drop_racing_the_idle_wait_wakes_the_task_and_a_plain_downgrade_does_not() {
    loom::model(|| {
        let lease = LeaseProtocol::new(0, 0);
        let task = thread::spawn({
            let lease = lease.clone();
            move || {
                block_on(lease.wait_for_work());
                // Woken only for the expiry: never for the downgrade.
                assert!(lease.expire_requested(), "woken without a request");
                lease.end_expired();
            }
        });
        let handle = thread::spawn({
            let lease = lease.clone();
            move || {
                assert!(lease.maybe_downgrade(5));
                lease.drop_handle();
            }
        });
        handle.join().unwrap();
        assert!(block_on(lease.wait_ended()));
        task.join().unwrap();
    });
}

/// A two-dimensional product timestamp, ordered per coordinate (not `Ord`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Product(u64, u64);

impl leasehold::lease::Since for Product {
    fn less_equal(&self, other: &Self) -> bool {
        self.0 <= other.0 && self.1 <= other.1
    }
    fn join(&self, other: &Self) -> Self {
        Product(self.0.max(other.0), self.1.max(other.1))
    }
    fn meet(&self, other: &Self) -> Self {
        Product(self.0.min(other.0), self.1.min(other.1))
    }
}

/// The task loop of `task`, for a product since.
fn lattice_task(lease: LeaseProtocol<Product>) -> Vec<Product> {
    let mut sent = Vec::new();
    loop {
        block_on(lease.wait_for_work());
        if lease.expire_requested() {
            lease.end_expired();
            return sent;
        }
        let snapshot = lease.snapshot();
        sent.push(snapshot.0);
        lease.ack(snapshot, 0);
    }
}

#[test]
fn incomparable_downgrades_racing_each_other_and_the_ack_are_joined_never_lost() {
    use leasehold::lease::Since as _;
    loom::model(|| {
        let lease = LeaseProtocol::with_since(Product(0, 0), 0);
        let task = thread::spawn({
            let lease = lease.clone();
            move || lattice_task(lease)
        });
        // Two incomparable downgrades from two threads, one synced, one
        // plain: whatever the order, the recorded since is their join, and
        // the synced one returns a since at or after its own.
        let plain = thread::spawn({
            let lease = lease.clone();
            move || lease.maybe_downgrade(Product(0, 4))
        });
        let synced = block_on(lease.downgrade(Product(3, 0))).expect("not ended");
        assert!(Product(3, 0).less_equal(&synced), "returned {synced:?}");
        plain.join().unwrap();
        assert_eq!(lease.since(), Product(3, 4));

        lease.drop_handle();
        let sent = task.join().unwrap();
        // Every heartbeat sent a since at or after the previous one.
        for pair in sent.windows(2) {
            assert!(pair[0].less_equal(&pair[1]), "sent {sent:?}");
        }
        assert!(block_on(lease.wait_ended()));
    });
}
