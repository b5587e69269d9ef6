//! The `ChangeLog` contract, as tests, run against every backend.
//!
//! Each property is one generic `async fn` in [`suite`], written against a
//! [`Fixture`]: a fresh store, handles on it (separate connections where the
//! backend has them), and a way to age every entry on the store's clock
//! without sleeping. A backend joins the suite with one `conformance!` line.

mod fixtures;
#[cfg(feature = "postgres")]
#[path = "../support/postgres.rs"]
mod pg_support;
mod suite;

pub use fixtures::Fixture;

/// Instantiates every property of the suite for one backend fixture.
macro_rules! conformance {
    ($backend:ident: $fixture:ty) => {
        mod $backend {
            conformance!(@tests $fixture;
                record_is_durable_readable_and_owned_at_generation_one,
                entry_ids_are_never_reused,
                fresh_entries_are_not_claimed,
                stale_entries_are_claimed_oldest_first_up_to_max,
                claim_of_zero_claims_nothing,
                refresh_keeps_an_entry_from_going_stale,
                claim_fences_out_the_previous_owner,
                fenced_out_refresh_does_not_keep_the_entry_alive,
                refresh_never_recreates_a_removed_entry,
                remove_is_idempotent,
                fenced_out_remove_changes_nothing,
                quarantined_entries_are_never_claimed_but_stay_listable,
                fenced_out_quarantine_changes_nothing,
                each_reclaim_moves_to_the_next_generation_and_counts_claims,
                concurrent_claimers_win_each_entry_exactly_once,
                entry_age_is_measured_on_the_claimers_clock,
                a_fenced_commit_by_the_owner_lands_and_marks_the_entry_committed,
                a_fenced_commit_after_a_claim_is_refused_and_changes_nothing,
                a_fenced_commit_after_remove_or_quarantine_is_refused,
                a_claim_reports_whether_the_fenced_commit_landed,
                advance_moves_the_entry_on_and_refuses_the_old_fence,
                fenced_commits_racing_claims_exactly_one_side_wins_each_entry,
                attempts_are_counted_per_entry_across_claims_not_per_claim,
                starting_an_attempt_counts_as_a_refresh,
                recent_failure_reasons_are_kept_bounded_for_the_owner_only
            );
        }
    };
    (@tests $fixture:ty; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if !<$fixture as crate::Fixture>::available(stringify!($name)) {
                    return; // skipped, loudly, by the fixture
                }
                crate::suite::$name::<$fixture>().await;
            }
        )*
    };
}

conformance!(memory: crate::fixtures::MemoryFixture);
#[cfg(feature = "sqlite")]
conformance!(sqlite: crate::fixtures::SqliteFixture);
#[cfg(feature = "postgres")]
conformance!(postgres: crate::fixtures::PostgresFixture);
