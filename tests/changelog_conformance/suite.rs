//! The properties every `ChangeLog` backend must have.

use std::collections::HashSet;
use std::time::Duration;

use leasehold::changelog::{
    Advanced, Attempt, ChangeLog, EntryId, EntryState, Fence, FencedCommitError, MAX_FAILURE_LEN,
    OwnerId, Ownership, RECENT_FAILURES, Removal,
};

use crate::Fixture;

const STALENESS: Duration = Duration::from_secs(60);

fn owner(name: &str) -> OwnerId {
    OwnerId::new(name)
}

async fn claim_all<L: ChangeLog>(log: &L, who: &OwnerId) -> Vec<Fence> {
    log.claim_stale(who, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.fence)
        .collect()
}

pub async fn record_is_durable_readable_and_owned_at_generation_one<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), b"payload".to_vec()).await.unwrap();
    assert_eq!(fence.owner(), &owner("w"));
    assert_eq!(fence.generation(), 1);

    // Visible through another handle (another connection, where there is one).
    let other = fx.handle().await;
    let info = other
        .get(fence.id())
        .await
        .unwrap()
        .expect("recorded entry");
    assert_eq!(info.fence, fence);
    assert_eq!(info.payload, b"payload");
    assert_eq!(info.claims, 0);
    assert_eq!(info.state, EntryState::Active);
    let listed = other.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fence, fence);
}

pub async fn entry_ids_are_never_reused<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let first = log.record(&owner("w"), vec![1]).await.unwrap();
    assert_eq!(log.remove(&first).await.unwrap(), Removal::Removed);
    let second = log.record(&owner("w"), vec![2]).await.unwrap();
    assert_ne!(first.id(), second.id());
    // The old fence (same owner, same generation) must not touch the new entry.
    assert_eq!(log.refresh(&first).await.unwrap(), Ownership::Lost);
    assert_eq!(log.remove(&first).await.unwrap(), Removal::Absent);
    assert!(log.get(second.id()).await.unwrap().is_some());
}

pub async fn fresh_entries_are_not_claimed<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    log.record(&owner("w"), vec![]).await.unwrap();
    assert!(log.claim_stale(&owner("r"), 10).await.unwrap().is_empty());
    fx.advance(STALENESS / 2).await;
    assert!(log.claim_stale(&owner("r"), 10).await.unwrap().is_empty());
    fx.advance(STALENESS / 2).await;
    assert_eq!(log.claim_stale(&owner("r"), 10).await.unwrap().len(), 1);
}

pub async fn stale_entries_are_claimed_oldest_first_up_to_max<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let mut fences = Vec::new();
    for i in 0..5_u8 {
        fences.push(log.record(&owner("w"), vec![i]).await.unwrap());
        fx.advance(Duration::from_secs(1)).await;
    }
    fx.advance(STALENESS).await;
    let first = log.claim_stale(&owner("r"), 3).await.unwrap();
    let ids: Vec<EntryId> = first.iter().map(|c| c.fence.id()).collect();
    assert_eq!(ids, fences[..3].iter().map(Fence::id).collect::<Vec<_>>());
    for (claimed, i) in first.iter().zip(0_u8..) {
        assert_eq!(claimed.payload, vec![i]);
        assert_eq!(claimed.claims, 1);
        assert_eq!(claimed.fence.owner(), &owner("r"));
        assert_eq!(claimed.fence.generation(), 2);
    }
    let rest = log.claim_stale(&owner("r"), 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|c| c.fence.id()).collect::<Vec<_>>(),
        fences[3..].iter().map(Fence::id).collect::<Vec<_>>()
    );
    // A claim resets the age: nothing is stale right after.
    assert!(log.claim_stale(&owner("r2"), 10).await.unwrap().is_empty());
}

pub async fn claim_of_zero_claims_nothing<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    log.record(&owner("w"), vec![]).await.unwrap();
    fx.advance(STALENESS * 2).await;
    assert!(log.claim_stale(&owner("r"), 0).await.unwrap().is_empty());
    assert_eq!(log.claim_stale(&owner("r"), 1).await.unwrap().len(), 1);
}

pub async fn refresh_keeps_an_entry_from_going_stale<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    for _ in 0..3 {
        fx.advance(STALENESS * 2 / 3).await;
        assert_eq!(log.refresh(&fence).await.unwrap(), Ownership::Held);
        assert!(log.claim_stale(&owner("r"), 10).await.unwrap().is_empty());
    }
    // Without refreshes it goes stale.
    fx.advance(STALENESS).await;
    assert_eq!(claim_all(&log, &owner("r")).await.len(), 1);
}

pub async fn claim_fences_out_the_previous_owner<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let writer = fx.handle().await;
    let recoverer = fx.handle().await;
    let fence = writer.record(&owner("w"), vec![7]).await.unwrap();
    fx.advance(STALENESS).await;
    let claimed = claim_all(&recoverer, &owner("r")).await;
    assert_eq!(claimed.len(), 1);
    let new_fence = &claimed[0];
    assert_eq!(new_fence.id(), fence.id());
    assert_eq!(new_fence.generation(), fence.generation() + 1);

    assert_eq!(writer.refresh(&fence).await.unwrap(), Ownership::Lost);
    assert_eq!(writer.remove(&fence).await.unwrap(), Removal::Fenced);
    let info = writer.get(fence.id()).await.unwrap().expect("still there");
    assert_eq!(&info.fence, new_fence, "the late writer changed nothing");
    assert_eq!(info.payload, vec![7]);

    // The new owner holds it.
    assert_eq!(recoverer.refresh(new_fence).await.unwrap(), Ownership::Held);
    assert_eq!(recoverer.remove(new_fence).await.unwrap(), Removal::Removed);
}

pub async fn fenced_out_refresh_does_not_keep_the_entry_alive<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    fx.advance(STALENESS).await;
    let claimed = claim_all(&log, &owner("r1")).await;
    assert_eq!(claimed.len(), 1);
    // The recoverer dies too; the old writer keeps heartbeating in vain.
    for _ in 0..2 {
        fx.advance(STALENESS / 2).await;
        assert_eq!(log.refresh(&fence).await.unwrap(), Ownership::Lost);
    }
    let reclaimed = claim_all(&log, &owner("r2")).await;
    assert_eq!(
        reclaimed.len(),
        1,
        "the entry went stale despite the late heartbeats"
    );
    assert_eq!(reclaimed[0].generation(), 3);
}

pub async fn refresh_never_recreates_a_removed_entry<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    assert_eq!(log.remove(&fence).await.unwrap(), Removal::Removed);
    assert_eq!(log.refresh(&fence).await.unwrap(), Ownership::Lost);
    assert!(log.get(fence.id()).await.unwrap().is_none());
    assert!(log.list().await.unwrap().is_empty());
}

pub async fn remove_is_idempotent<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    let keep = log.record(&owner("w"), vec![]).await.unwrap();
    assert_eq!(log.remove(&fence).await.unwrap(), Removal::Removed);
    assert_eq!(log.remove(&fence).await.unwrap(), Removal::Absent);
    assert_eq!(log.remove(&fence).await.unwrap(), Removal::Absent);
    let left: Vec<_> = log
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.fence)
        .collect();
    assert_eq!(left, vec![keep]);
}

pub async fn fenced_out_remove_changes_nothing<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    fx.advance(STALENESS).await;
    let claimed = claim_all(&log, &owner("r")).await;
    let before = log.get(fence.id()).await.unwrap().unwrap();
    assert_eq!(log.remove(&fence).await.unwrap(), Removal::Fenced);
    // A forged fence naming the right generation but another owner is fenced too.
    let forged = Fence::new(fence.id(), owner("w"), claimed[0].generation());
    assert_eq!(log.remove(&forged).await.unwrap(), Removal::Fenced);
    let after = log.get(fence.id()).await.unwrap().unwrap();
    assert_eq!(after.fence, before.fence);
    assert_eq!(after.claims, before.claims);
    assert_eq!(after.state, EntryState::Active);
}

pub async fn quarantined_entries_are_never_claimed_but_stay_listable<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let poison = log.record(&owner("w"), b"\xff".to_vec()).await.unwrap();
    let healthy = log.record(&owner("w"), vec![]).await.unwrap();
    fx.advance(STALENESS).await;
    let claimed = claim_all(&log, &owner("r")).await;
    assert_eq!(claimed.len(), 2);
    let poison_fence = claimed.iter().find(|f| f.id() == poison.id()).unwrap();
    assert_eq!(
        log.quarantine(poison_fence, "cannot decode").await.unwrap(),
        Ownership::Held
    );
    // Idempotent, keeping the first reason.
    assert_eq!(
        log.quarantine(poison_fence, "second reason").await.unwrap(),
        Ownership::Held
    );
    // A quarantined entry is not alive: its owner's heartbeat reports the loss.
    assert_eq!(log.refresh(poison_fence).await.unwrap(), Ownership::Lost);

    fx.advance(STALENESS * 10).await;
    let reclaimed = claim_all(&log, &owner("r2")).await;
    assert_eq!(
        reclaimed.iter().map(Fence::id).collect::<Vec<_>>(),
        vec![healthy.id()],
        "only the healthy entry is claimable"
    );
    let info = log.get(poison.id()).await.unwrap().expect("still listed");
    assert_eq!(
        info.state,
        EntryState::Quarantined {
            reason: "cannot decode".into()
        }
    );
    assert_eq!(info.payload, b"\xff");
    assert_eq!(log.list().await.unwrap().len(), 2);
    // An operator removes it with the quarantining fence.
    assert_eq!(log.remove(poison_fence).await.unwrap(), Removal::Removed);
}

pub async fn fenced_out_quarantine_changes_nothing<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    fx.advance(STALENESS).await;
    claim_all(&log, &owner("r")).await;
    assert_eq!(
        log.quarantine(&fence, "late").await.unwrap(),
        Ownership::Lost
    );
    let info = log.get(fence.id()).await.unwrap().unwrap();
    assert_eq!(info.state, EntryState::Active);
}

pub async fn each_reclaim_moves_to_the_next_generation_and_counts_claims<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    for round in 1..=4_u32 {
        fx.advance(STALENESS).await;
        let claimed = log
            .claim_stale(&owner(&format!("r{round}")), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].fence.id(), fence.id());
        assert_eq!(claimed[0].fence.generation(), u64::from(round) + 1);
        assert_eq!(claimed[0].claims, round);
    }
}

pub async fn concurrent_claimers_win_each_entry_exactly_once<F: Fixture>() {
    const ENTRIES: usize = 300;
    const CLAIMERS: usize = 4;
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let mut recorded = HashSet::new();
    for i in 0..ENTRIES {
        let fence = log
            .record(&owner("w"), i.to_le_bytes().to_vec())
            .await
            .unwrap();
        recorded.insert(fence.id());
    }
    let mut handles = Vec::new();
    for _ in 0..CLAIMERS {
        handles.push(fx.handle().await);
    }
    fx.advance(STALENESS).await;
    let tasks: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(n, handle)| {
            tokio::spawn(async move {
                let me = OwnerId::new(format!("claimer-{n}"));
                let mut won = Vec::new();
                loop {
                    let batch = handle.claim_stale(&me, 7).await.unwrap();
                    if batch.is_empty() {
                        break won;
                    }
                    won.extend(batch.into_iter().map(|c| c.fence));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut winners = 0;
    for task in tasks {
        let won = task.await.unwrap();
        if !won.is_empty() {
            winners += 1;
        }
        for fence in won {
            assert_eq!(fence.generation(), 2, "claimed once, so generation 2");
            assert!(seen.insert(fence.id()), "{} claimed twice", fence.id());
        }
    }
    assert_eq!(seen, recorded, "every entry claimed exactly once");
    assert!(winners >= 1);
    // Every entry is owned by whoever won it.
    for info in log.list().await.unwrap() {
        assert!(info.fence.owner().as_str().starts_with("claimer-"));
        assert_eq!(info.claims, 1);
    }
}

pub async fn entry_age_is_measured_on_the_claimers_clock<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    fx.advance(Duration::from_secs(5)).await;
    let age = log.get(fence.id()).await.unwrap().unwrap().age;
    assert!(
        age >= Duration::from_secs(5) && age < Duration::from_secs(7),
        "age {age:?} should be the store time elapsed since the record (5 s)"
    );
    assert_eq!(log.refresh(&fence).await.unwrap(), Ownership::Held);
    let age = log.get(fence.id()).await.unwrap().unwrap().age;
    assert!(
        age < Duration::from_secs(2),
        "a refresh resets the age, got {age:?}"
    );
}

pub async fn a_fenced_commit_by_the_owner_lands_and_marks_the_entry_committed<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    assert!(!log.get(fence.id()).await.unwrap().unwrap().committed);
    fx.commit_marker(&log, &fence, "a").await.unwrap();
    assert_eq!(fx.markers().await, ["a"]);
    assert!(log.get(fence.id()).await.unwrap().unwrap().committed);
    // Committing is not a change of owner: the fence still works.
    assert_eq!(log.refresh(&fence).await.unwrap(), Ownership::Held);
    assert_eq!(log.remove(&fence).await.unwrap(), Removal::Removed);
}

pub async fn a_fenced_commit_after_a_claim_is_refused_and_changes_nothing<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let recoverer = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    fx.advance(STALENESS).await;
    let claimed = recoverer.claim_stale(&owner("r"), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(!claimed[0].committed);
    let late = fx.commit_marker(&log, &fence, "late").await;
    assert!(matches!(late, Err(FencedCommitError::Fenced)), "{late:?}");
    assert!(fx.markers().await.is_empty(), "nothing committed");
    let info = log.get(fence.id()).await.unwrap().unwrap();
    assert!(!info.committed);
    assert_eq!(info.fence, claimed[0].fence, "the claimer still owns it");
}

pub async fn a_fenced_commit_after_remove_or_quarantine_is_refused<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let removed = log.record(&owner("w"), vec![]).await.unwrap();
    log.remove(&removed).await.unwrap();
    let parked = log.record(&owner("w"), vec![]).await.unwrap();
    log.quarantine(&parked, "poison").await.unwrap();
    for fence in [&removed, &parked] {
        let refused = fx.commit_marker(&log, fence, "x").await;
        assert!(
            matches!(refused, Err(FencedCommitError::Fenced)),
            "{refused:?}"
        );
    }
    assert!(fx.markers().await.is_empty());
}

pub async fn a_claim_reports_whether_the_fenced_commit_landed<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let committed = log.record(&owner("w"), b"c".to_vec()).await.unwrap();
    let _uncommitted = log.record(&owner("w"), b"u".to_vec()).await.unwrap();
    fx.commit_marker(&log, &committed, "c").await.unwrap();
    fx.advance(STALENESS).await;
    let mut claimed = log.claim_stale(&owner("r"), 10).await.unwrap();
    claimed.sort_by_key(|c| c.fence.id());
    let flags: Vec<_> = claimed
        .iter()
        .map(|c| (c.payload.clone(), c.committed))
        .collect();
    assert_eq!(flags, [(b"c".to_vec(), true), (b"u".to_vec(), false)]);
}

pub async fn advance_moves_the_entry_on_and_refuses_the_old_fence<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let old = log.record(&owner("w"), vec![]).await.unwrap();
    fx.commit_marker(&log, &old, "once").await.unwrap();
    let Advanced::Held {
        fence: new,
        committed,
    } = log.advance(&old).await.unwrap()
    else {
        panic!("the owner advances its own entry");
    };
    assert!(committed, "reports the landed commit");
    assert_eq!(
        (new.id(), new.owner(), new.generation()),
        (old.id(), old.owner(), 2)
    );
    let late = fx.commit_marker(&log, &old, "twice").await;
    assert!(matches!(late, Err(FencedCommitError::Fenced)));
    assert_eq!(log.refresh(&old).await.unwrap(), Ownership::Lost);
    assert_eq!(log.advance(&old).await.unwrap(), Advanced::Lost);
    assert_eq!(log.refresh(&new).await.unwrap(), Ownership::Held);
    assert_eq!(fx.markers().await, ["once"]);
}

/// Writers commit while claimers claim the same stale entries: for every
/// entry exactly one side wins, and the claimer learns from the store
/// whether the commit landed.
pub async fn fenced_commits_racing_claims_exactly_one_side_wins_each_entry<F: Fixture>() {
    const ENTRIES: usize = 60;
    let fx = F::new(STALENESS).await;
    let writer = fx.handle().await;
    let claimer = fx.handle().await;
    let mut fences = Vec::new();
    for i in 0..ENTRIES {
        fences.push(
            writer
                .record(&owner("w"), i.to_le_bytes().to_vec())
                .await
                .unwrap(),
        );
    }
    fx.advance(STALENESS).await;
    // Both sides run concurrently (their store calls overlap on the
    // backends' workers and connections).
    let commits = async {
        let mut landed = HashSet::new();
        for fence in fences {
            match fx
                .commit_marker(&writer, &fence, &format!("{:04}", fence.id().get()))
                .await
            {
                Ok(()) => {
                    landed.insert(fence.id());
                }
                Err(FencedCommitError::Fenced) => {}
                Err(other) => panic!("commit failed: {other}"),
            }
            tokio::task::yield_now().await;
        }
        landed
    };
    let claims = async {
        let mut claimed = Vec::new();
        loop {
            let batch = claimer.claim_stale(&owner("r"), 3).await.unwrap();
            if batch.is_empty() {
                break claimed;
            }
            claimed.extend(batch);
            tokio::task::yield_now().await;
        }
    };
    let (landed, claimed) = tokio::join!(commits, claims);
    let markers: HashSet<String> = fx.markers().await.into_iter().collect();
    for id in &landed {
        assert!(markers.contains(&format!("{:04}", id.get())));
    }
    assert_eq!(
        markers.len(),
        landed.len(),
        "a refused commit left nothing behind"
    );
    for entry in &claimed {
        // Claimed after its commit landed: the store says so.
        assert_eq!(
            entry.committed,
            landed.contains(&entry.fence.id()),
            "{entry:?}"
        );
    }
    let claimed_ids: HashSet<EntryId> = claimed.iter().map(|c| c.fence.id()).collect();
    for id in claimed_ids.iter().filter(|id| !landed.contains(id)) {
        // Claimed first: the writer's commit was refused.
        assert!(!markers.contains(&format!("{:04}", id.get())));
    }
    assert_eq!(claimed.len(), claimed_ids.len(), "each entry claimed once");
}

pub async fn attempts_are_counted_per_entry_across_claims_not_per_claim<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    let bystander = log.record(&owner("w"), vec![]).await.unwrap();
    assert_eq!(
        log.start_attempt(&fence).await.unwrap(),
        Attempt::Started { number: 1 }
    );
    // Claims alone charge nothing: recoverers that died before trying.
    for round in 0..3 {
        fx.advance(STALENESS).await;
        let claimed = log
            .claim_stale(&owner(&format!("r{round}")), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        let mine = claimed.iter().find(|c| c.fence.id() == fence.id()).unwrap();
        let other = claimed
            .iter()
            .find(|c| c.fence.id() == bystander.id())
            .unwrap();
        assert_eq!((mine.attempts, other.attempts), (1, 0));
    }
    fx.advance(STALENESS).await;
    let claimed = log.claim_stale(&owner("last"), 10).await.unwrap();
    let mine = claimed.iter().find(|c| c.fence.id() == fence.id()).unwrap();
    assert_eq!(
        log.start_attempt(&mine.fence).await.unwrap(),
        Attempt::Started { number: 2 }
    );
    // A fenced-out owner counts nothing.
    assert_eq!(log.start_attempt(&fence).await.unwrap(), Attempt::Lost);
    let other = fx.handle().await;
    let info = other.get(fence.id()).await.unwrap().unwrap();
    assert_eq!(info.attempts, 2);
    assert_eq!(
        other.get(bystander.id()).await.unwrap().unwrap().attempts,
        0
    );
}

pub async fn starting_an_attempt_counts_as_a_refresh<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    fx.advance(STALENESS / 2).await;
    log.start_attempt(&fence).await.unwrap();
    fx.advance(STALENESS / 2 + Duration::from_secs(1)).await;
    assert!(log.claim_stale(&owner("r"), 10).await.unwrap().is_empty());
}

pub async fn recent_failure_reasons_are_kept_bounded_for_the_owner_only<F: Fixture>() {
    let fx = F::new(STALENESS).await;
    let log = fx.handle().await;
    let fence = log.record(&owner("w"), vec![]).await.unwrap();
    for i in 0..RECENT_FAILURES + 2 {
        let reason = format!("failure {i}\nsecond line");
        assert_eq!(
            log.record_failure(&fence, &reason).await.unwrap(),
            Ownership::Held
        );
    }
    let long = "é".repeat(MAX_FAILURE_LEN);
    log.record_failure(&fence, &long).await.unwrap();
    let info = fx.handle().await.get(fence.id()).await.unwrap().unwrap();
    assert_eq!(info.failures.len(), RECENT_FAILURES);
    // The most recent, oldest first, each on one line and bounded.
    assert_eq!(info.failures[0], "failure 3 second line");
    assert_eq!(info.failures[RECENT_FAILURES - 2], "failure 6 second line");
    let last = &info.failures[RECENT_FAILURES - 1];
    assert!(last.len() <= MAX_FAILURE_LEN && long.starts_with(last.as_str()));
    // A claimer sees them; the previous owner can no longer add any.
    fx.advance(STALENESS).await;
    let claimed = log.claim_stale(&owner("r"), 10).await.unwrap();
    assert_eq!(claimed[0].failures, info.failures);
    assert_eq!(claimed[0].quarantined, None);
    assert_eq!(
        log.record_failure(&fence, "late").await.unwrap(),
        Ownership::Lost
    );
    // A quarantined entry takes neither attempts nor failures.
    log.quarantine(&claimed[0].fence, "parked").await.unwrap();
    assert_eq!(
        log.start_attempt(&claimed[0].fence).await.unwrap(),
        Attempt::Lost
    );
    assert_eq!(
        log.record_failure(&claimed[0].fence, "late").await.unwrap(),
        Ownership::Lost
    );
    let info = log.get(fence.id()).await.unwrap().unwrap();
    assert_eq!(info.failures, claimed[0].failures);
    assert_eq!(info.attempts, 0);
}
