//! Loom models of `Validity` and its `ValidityController`, driven directly
//! (no tokio runtime): invalidations are seen by concurrent checks and wake
//! waiters, an extension racing an expiry check never lets a token that was
//! seen expired turn valid again, and an accepted extension is never undone
//! by a check that time overtook between its steps.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test -p leasehold-loom-tests --release --test heartbeat`
#![cfg(loom)]

use std::sync::Arc;
use std::time::Duration;

use leasehold::clock::{Clock, ManualClock};
use leasehold::heartbeat::{InvalidReason, ValidityController};
use loom::future::block_on;
use loom::thread;

const SEC: Duration = Duration::from_secs(1);

fn controller(ttl: Duration) -> (ManualClock, Arc<ValidityController>) {
    let clock = ManualClock::new();
    let controller = ValidityController::valid_for(Arc::new(clock.clone()), ttl);
    (clock, Arc::new(controller))
}

/// `reason` recorded by `invalidate` on one thread is seen by a concurrent
/// `check` (either still valid, or invalid with that reason) and wakes an
/// async waiter parked in `invalidated()`.
fn invalidation_is_observed_and_wakes_the_waiter(reason: InvalidReason) {
    loom::model(move || {
        let (_clock, controller) = controller(30 * SEC);
        let validity = controller.validity();

        let waiter = thread::spawn({
            let validity = validity.clone();
            move || block_on(validity.invalidated())
        });
        let checker = thread::spawn({
            let validity = validity.clone();
            move || {
                let first = validity.check();
                let second = validity.check();
                (first, second)
            }
        });

        controller.invalidate(reason);

        assert_eq!(waiter.join().unwrap(), reason);
        let (first, second) = checker.join().unwrap();
        for seen in [first, second] {
            if let Err(invalid) = seen {
                assert_eq!(invalid.reason, reason);
            }
        }
        // Once invalid, never valid again on the same thread.
        assert!(!(first.is_err() && second.is_ok()));
        assert_eq!(validity.check().unwrap_err().reason, reason);
    });
}

#[test]
fn stop_is_observed_by_a_concurrent_check_and_wakes_invalidated() {
    invalidation_is_observed_and_wakes_the_waiter(InvalidReason::Stopped);
}

#[test]
fn beat_failure_is_observed_by_a_concurrent_check_and_wakes_invalidated() {
    invalidation_is_observed_and_wakes_the_waiter(InvalidReason::BeatFailed);
}

#[test]
fn dropping_the_controller_wakes_invalidated_with_stopped() {
    loom::model(|| {
        let clock = ManualClock::new();
        let controller = ValidityController::valid_for(Arc::new(clock.clone()), 30 * SEC);
        let validity = controller.validity();
        let waiter = thread::spawn({
            let validity = validity.clone();
            move || block_on(validity.invalidated())
        });
        let dropper = thread::spawn(move || drop(controller));
        dropper.join().unwrap();
        assert_eq!(waiter.join().unwrap(), InvalidReason::Stopped);
    });
}

#[test]
fn an_extension_racing_an_expiry_check_never_revives_a_token_seen_expired() {
    loom::model(|| {
        let (clock, controller) = controller(30 * SEC);
        let validity = controller.validity();
        let t0 = clock.now();

        // A renewal that started while valid extends to t0 + 50 s...
        let extender = thread::spawn({
            let controller = controller.clone();
            move || controller.extend_to(t0 + 50 * SEC)
        });
        // ...while time reaches the old deadline and a reader checks.
        let reader = thread::spawn({
            let validity = validity.clone();
            let clock = clock.clone();
            move || {
                clock.advance(30 * SEC);
                let first = validity.check();
                let second = validity.check();
                (first, second)
            }
        });

        let extended = extender.join().unwrap();
        let (first, second) = reader.join().unwrap();
        let last = validity.check();

        // Monotonic: an observed expiry is final.
        assert!(!(first.is_err() && second.is_ok()));
        // Exactly one story: either somebody saw the old deadline pass
        // (and the token is expired for good), or the extension won and the
        // token is valid until t0 + 50 s at t0 + 30 s.
        let someone_saw_expiry = first.is_err() || second.is_err() || extended.is_err();
        assert_eq!(last.is_err(), someone_saw_expiry);
        for seen in [first, second, extended, last] {
            match seen {
                Ok(remaining) => assert!(remaining == 20 * SEC || remaining == 50 * SEC),
                Err(invalid) => assert_eq!(invalid.reason, InvalidReason::Expired),
            }
        }
    });
}

/// A renewal accepted at 29 s (deadline 30 s → 60 s) races a check while
/// time moves to 31 s, possibly between the check's own steps: an accepted
/// renewal is never undone by a check that compared a deadline from before
/// it with a time from after it, and a refused one leaves the token expired.
#[test]
fn a_renewal_accepted_before_the_deadline_survives_a_check_with_time_advancing_inside_it() {
    loom::model(|| {
        let (clock, controller) = controller(30 * SEC);
        let t0 = clock.now();
        clock.advance(29 * SEC);
        let validity = controller.validity();

        let renewer = thread::spawn({
            let controller = controller.clone();
            move || controller.extend_to(t0 + 60 * SEC)
        });
        let ticker = thread::spawn({
            let clock = clock.clone();
            move || clock.advance(2 * SEC)
        });
        let reader = thread::spawn({
            let validity = validity.clone();
            move || validity.check()
        });

        let renewed = renewer.join().unwrap();
        ticker.join().unwrap();
        let seen = reader.join().unwrap();
        let last = validity.check(); // at 31 s

        match renewed {
            // Accepted: valid until 60 s, whatever the reader saw meanwhile.
            Ok(_) => {
                assert_eq!(last, Ok(29 * SEC), "renewal accepted, then expired");
                assert!(
                    seen.is_ok(),
                    "a check saw expiry, yet the renewal was accepted"
                );
            }
            // Refused: only because the old deadline had passed (at 31 s).
            Err(invalid) => {
                assert_eq!(invalid.reason, InvalidReason::Expired);
                assert_eq!(last.unwrap_err().reason, InvalidReason::Expired);
            }
        }
        if let Err(invalid) = seen {
            assert_eq!(invalid.reason, InvalidReason::Expired);
            assert!(last.is_err(), "a token seen expired turned valid again");
        }
    });
}

#[test]
fn recorded_expiry_wakes_invalidated_with_expired() {
    loom::model(|| {
        let (clock, controller) = controller(30 * SEC);
        let validity = controller.validity();
        let waiter = thread::spawn({
            let validity = validity.clone();
            move || block_on(validity.invalidated())
        });
        let advancer = thread::spawn(move || clock.advance(30 * SEC));
        advancer.join().unwrap();
        // Recording the expiry (as a Heartbeat task does) is one way to wake
        // the waiter; its sleep on the manual clock is the other.
        controller.expire_if_due();
        assert_eq!(waiter.join().unwrap(), InvalidReason::Expired);
    });
}
