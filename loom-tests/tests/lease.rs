//! Loom models of the lease's handle/task protocol, driven directly on its
//! shared state (no tokio runtime, no backend): a downgrade request racing
//! the task's acknowledgement is never acknowledged by an older heartbeat
//! and always wakes its waiter; seqno-hold releases racing the task's read
//! of the hold are never lost; a handle's drop racing the task's idle wait
//! always wakes it, and a plain downgrade never does.
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
