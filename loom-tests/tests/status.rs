//! Loom models of the sync-status channel and `SyncRegistry`'s atomic
//! publish-and-free step.
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test -p leasehold-loom-tests --release --test status`.
#![cfg(loom)]

use std::sync::Arc;

use leasehold::status::{self, Claim, SyncOutcome, SyncRegistry, SyncStatus};
use loom::future::block_on;
use loom::thread;

/// A receiver subscribed while the outcome is being published, and one
/// already waiting, both end with that outcome: neither misses the
/// publication nor sees anything but `Pending` or `Done`.
#[test]
fn publish_racing_subscribe_and_wait() {
    loom::model(|| {
        let (publisher, receiver) = status::channel::<SyncOutcome>();
        let early = receiver.clone();
        let waiter = thread::spawn(move || early.blocking_done());
        let publishing = thread::spawn(move || publisher.publish(SyncOutcome::Skipped));
        let late = receiver.subscribe();
        assert_eq!(block_on(late.done()), SyncOutcome::Skipped);
        assert_eq!(waiter.join().unwrap(), SyncOutcome::Skipped);
        publishing.join().unwrap();
        assert_eq!(receiver.status(), SyncStatus::Done(SyncOutcome::Skipped));
    });
}

/// `claim` racing the owner's publish: the claimer either attaches to the
/// first job and receives its outcome, or finds the key free, and then the
/// first job's outcome is already published. Never a free key with a
/// pending job (a duplicate), never an attachment to a finished job that
/// then hangs.
#[test]
fn publish_and_free_racing_claim() {
    loom::model(|| {
        let registry = Arc::new(SyncRegistry::<u8>::new());
        let Claim::Owner(owner) = registry.claim(0) else {
            panic!("the key was free");
        };
        let first = owner.subscribe();
        let publishing = thread::spawn(move || owner.publish(SyncOutcome::Success));
        match registry.claim(0) {
            Claim::Attached(attached) => {
                assert!(attached.same_channel(&first));
                assert_eq!(attached.blocking_done(), SyncOutcome::Success);
            }
            Claim::Owner(second) => {
                assert_eq!(first.status(), SyncStatus::Done(SyncOutcome::Success));
                let fresh = second.subscribe();
                assert!(!fresh.same_channel(&first));
                assert!(fresh.status().is_pending());
                second.publish(SyncOutcome::Skipped);
                assert_eq!(fresh.blocking_done(), SyncOutcome::Skipped);
            }
        }
        publishing.join().unwrap();
        assert_eq!(registry.in_flight(), 0);
    });
}

/// A caller that has seen a job's outcome and then claims its key never
/// attaches to that finished job, and a caller that finds the key free never
/// sees the first job still pending: publication of `Done` and removal of the
/// key are one step.
#[test]
fn a_caller_never_attaches_to_a_finished_job() {
    loom::model(|| {
        let registry = Arc::new(SyncRegistry::<u8>::new());
        let Claim::Owner(owner) = registry.claim(0) else {
            panic!("the key was free");
        };
        let first = owner.subscribe();
        let publishing = thread::spawn(move || owner.publish(SyncOutcome::Success));
        let saw_done = first.is_done();
        match registry.claim(0) {
            Claim::Attached(attached) => {
                assert!(
                    !saw_done,
                    "attached to a job whose outcome was already published"
                );
                assert!(attached.same_channel(&first));
                assert_eq!(attached.blocking_done(), SyncOutcome::Success);
            }
            Claim::Owner(second) => {
                assert!(
                    first.is_done(),
                    "a duplicate job while the first is pending"
                );
                second.publish(SyncOutcome::Skipped);
            }
        }
        publishing.join().unwrap();
        assert_eq!(registry.in_flight(), 0);
    });
}

/// `cancel` racing the owner's publish: it either reaches the job in flight,
/// whose receiver then resolves, or finds the key free after publication.
#[test]
fn cancel_racing_publish_never_returns_a_hanging_receiver() {
    loom::model(|| {
        let registry = Arc::new(SyncRegistry::<u8>::new());
        let Claim::Owner(owner) = registry.claim(0) else {
            panic!("the key was free");
        };
        let first = owner.subscribe();
        let publishing = thread::spawn(move || {
            let outcome = if owner.cancellation_token().is_cancelled() {
                SyncOutcome::Cancelled
            } else {
                SyncOutcome::Success
            };
            owner.publish(outcome);
        });
        match registry.cancel(&0) {
            Some(cancelled) => {
                let outcome = block_on(cancelled.done());
                assert!(matches!(
                    outcome,
                    SyncOutcome::Success | SyncOutcome::Cancelled
                ));
                assert_eq!(first.blocking_done(), outcome);
            }
            None => assert!(first.is_done()),
        }
        publishing.join().unwrap();
        assert_eq!(registry.in_flight(), 0);
    });
}

/// A publisher dropped without publishing, racing an async and a blocking
/// wait: both end with `Cancelled`, none hangs.
#[test]
fn dropped_publisher_racing_waits() {
    loom::model(|| {
        let (publisher, receiver) = status::channel::<SyncOutcome>();
        let blocking = receiver.clone();
        let waiter = thread::spawn(move || blocking.blocking_done());
        let dropping = thread::spawn(move || drop(publisher));
        assert_eq!(block_on(receiver.done()), SyncOutcome::Cancelled);
        assert_eq!(waiter.join().unwrap(), SyncOutcome::Cancelled);
        dropping.join().unwrap();
    });
}

/// A keyed publisher dropped unpublished frees its key in the same step,
/// racing a `claim`: the claimer attaches and gets `Cancelled`, or claims a
/// free key after the abandonment was published.
#[test]
fn dropped_keyed_publisher_racing_claim() {
    loom::model(|| {
        let registry = Arc::new(SyncRegistry::<u8>::new());
        let Claim::Owner(owner) = registry.claim(0) else {
            panic!("the key was free");
        };
        let first = owner.subscribe();
        let dropping = thread::spawn(move || drop(owner));
        match registry.claim(0) {
            Claim::Attached(attached) => {
                assert_eq!(block_on(attached.done()), SyncOutcome::Cancelled);
            }
            Claim::Owner(_second) => {
                assert_eq!(first.status(), SyncStatus::Done(SyncOutcome::Cancelled));
            }
        }
        dropping.join().unwrap();
        assert_eq!(registry.in_flight(), 0);
    });
}

/// A receiver reads the outcome without the lock while it is published:
/// it sees `Pending`, or the whole outcome (loom checks that the read never
/// overlaps the write), and once it has seen `Done`, every later read and
/// wait returns that outcome.
#[test]
fn lock_free_status_read_racing_publish_sees_pending_or_the_whole_outcome() {
    loom::model(|| {
        let (publisher, receiver) = status::channel::<SyncOutcome>();
        let reader = receiver.clone();
        let reading = thread::spawn(move || {
            let status = reader.status();
            match &status {
                SyncStatus::Pending => {}
                SyncStatus::Done(outcome) => {
                    assert_eq!(*outcome, SyncOutcome::Failed("disk full".to_owned()));
                    assert!(reader.is_done());
                    assert_eq!(reader.blocking_done(), *outcome);
                }
            }
            status
        });
        publisher.publish(SyncOutcome::Failed("disk full".to_owned()));
        let seen = reading.join().unwrap();
        assert!(seen.is_pending() || seen == receiver.status());
        assert_eq!(
            block_on(receiver.done()),
            SyncOutcome::Failed("disk full".to_owned())
        );
    });
}
