//! Group commit on the PostgreSQL changelog: concurrent `record`s (and
//! concurrent `remove`s) of one handle go to the server as one statement.
//! What each caller gets must be what it would have got alone.
//!
//! Each test forms a batch the same way: a first call is polled once (it
//! finds nothing in flight and runs alone), then the others are polled once
//! each, which queues them; they become the next batch, run together when
//! the first call's statement is done.
#![cfg(feature = "postgres")]

#[path = "support/postgres.rs"]
mod pg_support;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use leasehold::changelog::{
    ChangeLog, ChangeLogError, EntryId, Fence, OwnerId, PostgresChangeLog, Removal,
};
use leasehold::clock::ManualClock;

const STALENESS: Duration = Duration::from_secs(30);

/// No test here needs more than a few seconds; a batch left unanswered
/// fails the test at this limit instead of hanging it.
const LIMIT: Duration = Duration::from_secs(60);

type Call<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A log in a schema of its own, dropped at the end.
struct Store {
    url: String,
    schema: String,
    clock: ManualClock,
    log: PostgresChangeLog,
}

impl Store {
    async fn open(test: &str) -> Option<Self> {
        let url = pg_support::url(test)?;
        let schema = pg_support::fresh_schema("lh_group");
        let clock = ManualClock::new();
        let log = PostgresChangeLog::builder(&url)
            .schema(&schema)
            .staleness(STALENESS)
            .clock(Arc::new(clock.clone()))
            .open()
            .await
            .unwrap();
        Some(Store {
            url,
            schema,
            clock,
            log,
        })
    }

    /// Every entry's payload, by id.
    async fn payloads(&self) -> HashMap<EntryId, Vec<u8>> {
        self.log
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|entry| (entry.fence.id(), entry.payload))
            .collect()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        pg_support::drop_schema(&self.url, &self.schema);
    }
}

/// Runs `test` within [`LIMIT`].
async fn within_limit(test: impl Future<Output = ()>) {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("the test did not finish in time: a caller was never answered");
}

/// Polls `first` once (it runs alone), then each of `rest` once (they
/// queue, and form the next batch).
///
/// The tests run on a current-thread runtime, so the connections' tasks
/// cannot run while a test polls: `first`'s statement cannot be answered
/// within its first poll. (On a multi-thread runtime it could be, when the
/// test's thread is preempted between sending the statement and polling
/// for the answer: a test that then fails at random.)
async fn form_batch<T>(first: &mut Call<T>, rest: &mut [Call<T>]) {
    assert!(futures::poll!(first.as_mut()).is_pending());
    for call in rest.iter_mut() {
        assert!(
            futures::poll!(call.as_mut()).is_pending(),
            "a queued call finished before the call in flight"
        );
    }
}

fn record(
    log: &PostgresChangeLog,
    owner: &str,
    payload: Vec<u8>,
) -> Call<Result<Fence, ChangeLogError>> {
    let (log, owner) = (log.clone(), OwnerId::new(owner));
    Box::pin(async move { log.record(&owner, payload).await })
}

fn remove(log: &PostgresChangeLog, fence: &Fence) -> Call<Result<Removal, ChangeLogError>> {
    let (log, fence) = (log.clone(), fence.clone());
    Box::pin(async move { log.remove(&fence).await })
}

fn payload(i: usize) -> Vec<u8> {
    format!("intent {i}").into_bytes()
}

/// A batch of records with distinct payloads: each caller's fence names the
/// entry holding its own payload; and likewise for many writers at once.
#[tokio::test(flavor = "current_thread")]
async fn each_batched_record_gets_the_id_of_its_own_entry() {
    let Some(store) = Store::open("each_batched_record_gets_the_id_of_its_own_entry").await else {
        return;
    };
    within_limit(async {
        let log = &store.log;
        let mut first = record(log, "writer-0", payload(0));
        let mut rest: Vec<_> = (1..100)
            .map(|i| record(log, &format!("writer-{}", i % 7), payload(i)))
            .collect();
        form_batch(&mut first, &mut rest).await;
        let mut fences = vec![first.await.unwrap()];
        fences.extend(join_all(rest).await.into_iter().map(Result::unwrap));

        // And 16 writers recording at once, batched however they meet.
        let writers = (0..16).map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut fences = Vec::new();
                for k in 0..25 {
                    let i = 100 + w * 25 + k;
                    let owner = OwnerId::new(format!("writer-{}", i % 7));
                    fences.push((i, log.record(&owner, payload(i)).await.unwrap()));
                }
                fences
            })
        });
        let mut spawned: Vec<(usize, Fence)> = Vec::new();
        for writer in join_all(writers).await {
            spawned.extend(writer.unwrap());
        }

        let payloads = store.payloads().await;
        assert_eq!(payloads.len(), 500, "one entry per record");
        let all = fences
            .iter()
            .enumerate()
            .chain(spawned.iter().map(|(i, f)| (*i, f)));
        for (i, fence) in all {
            assert_eq!(
                payloads[&fence.id()],
                payload(i),
                "record {i} got the id of another caller's entry"
            );
            assert_eq!(fence.owner().as_str(), format!("writer-{}", i % 7));
            assert_eq!(fence.generation(), 1);
        }
    })
    .await;
}

/// A batch of removes mixing owned, fenced-out, absent and repeated ones:
/// each gets the outcome it would get alone, and exactly the owned entries
/// are gone.
#[tokio::test(flavor = "current_thread")]
async fn each_batched_remove_gets_its_own_outcome() {
    let Some(store) = Store::open("each_batched_remove_gets_its_own_outcome").await else {
        return;
    };
    within_limit(async {
        let log = &store.log;
        let writer = OwnerId::new("writer");
        let mut fences = Vec::new();
        for i in 0..40 {
            fences.push(log.record(&writer, payload(i)).await.unwrap());
        }
        // A recoverer claims 10 entries: their writer's fences are fenced
        // out.
        log.list().await.unwrap();
        store.clock.advance(STALENESS);
        let claimed: Vec<Fence> = log
            .claim_stale(&OwnerId::new("recoverer"), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|entry| entry.fence)
            .collect();
        assert_eq!(claimed.len(), 10);
        let (fenced, owned): (Vec<Fence>, Vec<Fence>) = fences
            .into_iter()
            .partition(|f| claimed.iter().any(|c| c.id() == f.id()));
        // Five of the writer's own entries are already removed.
        for fence in &owned[..5] {
            assert_eq!(log.remove(fence).await.unwrap(), Removal::Removed);
        }

        // (call, the outcomes it may have)
        let mut calls: Vec<(Call<_>, &[Removal])> = Vec::new();
        for fence in &fenced {
            // The entry of `claimed[0]` is removed by its new owner in the
            // same batch: its old fence finds it fenced or gone.
            let outcomes: &[Removal] = if fence.id() == claimed[0].id() {
                &[Removal::Fenced, Removal::Absent]
            } else {
                &[Removal::Fenced]
            };
            calls.push((remove(log, fence), outcomes));
        }
        for fence in &owned[..5] {
            calls.push((remove(log, fence), &[Removal::Absent]));
        }
        for fence in &owned[5..20] {
            calls.push((remove(log, fence), &[Removal::Removed]));
        }
        // The same fence twice: one removes, the other finds it gone.
        let twice = calls.len();
        calls.push((
            remove(log, &owned[20]),
            &[Removal::Removed, Removal::Absent],
        ));
        calls.push((
            remove(log, &owned[20]),
            &[Removal::Removed, Removal::Absent],
        ));
        // A claimed entry removed by its new owner.
        calls.push((remove(log, &claimed[0]), &[Removal::Removed]));
        // A fence at a generation the entry never had.
        let bogus = Fence::new(owned[21].id(), writer.clone(), 7);
        calls.push((remove(log, &bogus), &[Removal::Fenced]));

        let mut first = remove(log, &owned[22]);
        let (mut rest, expected): (Vec<_>, Vec<_>) = calls.into_iter().unzip();
        form_batch(&mut first, &mut rest).await;
        assert_eq!(first.await.unwrap(), Removal::Removed);
        let outcomes: Vec<Removal> = join_all(rest)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        for (i, (outcome, expected)) in outcomes.iter().zip(&expected).enumerate() {
            assert!(
                expected.contains(outcome),
                "remove {i}: {outcome:?}, expected one of {expected:?}"
            );
        }
        let repeated = &outcomes[twice..twice + 2];
        assert!(
            repeated.contains(&Removal::Removed) && repeated.contains(&Removal::Absent),
            "the same fence twice: {repeated:?}"
        );

        // Exactly the removed entries are gone.
        let left = store.payloads().await;
        let mut gone: Vec<&Fence> = owned[..23]
            .iter()
            .filter(|f| f.id() != owned[21].id())
            .collect();
        gone.push(&claimed[0]);
        for fence in &gone {
            assert!(
                !left.contains_key(&fence.id()),
                "{} was not removed",
                fence.id()
            );
        }
        assert_eq!(left.len(), 40 - gone.len());
    })
    .await;
}

/// One operation of a batch that the server refuses (an owner with a NUL
/// byte, which PostgreSQL's TEXT cannot hold) fails alone, with the error
/// it would get alone; the others of its batch land.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_operation_fails_alone_in_its_batch() {
    let Some(store) = Store::open("a_refused_operation_fails_alone_in_its_batch").await else {
        return;
    };
    within_limit(async {
        let log = &store.log;
        // Alone, it is refused permanently.
        let alone = log.record(&OwnerId::new("bad\0owner"), payload(0)).await;
        assert!(
            matches!(alone, Err(ChangeLogError::Rejected { .. })),
            "{alone:?}"
        );

        let mut first = record(log, "writer", payload(0));
        let mut rest: Vec<_> = (1..20)
            .map(|i| {
                let owner = if i == 7 { "bad\0owner" } else { "writer" };
                record(log, owner, payload(i))
            })
            .collect();
        form_batch(&mut first, &mut rest).await;
        let first = first.await.unwrap();
        let outcomes = join_all(rest).await;
        let mut fences = vec![first];
        for (i, outcome) in (1..20).zip(outcomes) {
            if i == 7 {
                assert!(
                    matches!(&outcome, Err(e @ ChangeLogError::Rejected { .. }) if !e.is_transient()),
                    "{outcome:?}"
                );
            } else {
                fences.push(outcome.unwrap());
            }
        }
        let payloads = store.payloads().await;
        assert_eq!(payloads.len(), 19, "exactly the accepted records exist");
        for fence in &fences {
            let i: usize = String::from_utf8(payloads[&fence.id()].clone()).unwrap()
                ["intent ".len()..]
                .parse()
                .unwrap();
            assert_ne!(i, 7);
        }

        // The same for removes: a fence whose owner the server refuses.
        let bad = Fence::new(fences[3].id(), OwnerId::new("bad\0owner"), 1);
        let mut first = remove(log, &fences[0]);
        let mut rest: Vec<_> = fences[1..].iter().map(|f| remove(log, f)).collect();
        rest.insert(5, remove(log, &bad));
        form_batch(&mut first, &mut rest).await;
        assert_eq!(first.await.unwrap(), Removal::Removed);
        let outcomes = join_all(rest).await;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            if i == 5 {
                assert!(
                    matches!(outcome, Err(ChangeLogError::Rejected { .. })),
                    "{outcome:?}"
                );
            } else {
                assert_eq!(outcome.unwrap(), Removal::Removed);
            }
        }
        assert!(store.payloads().await.is_empty());
    })
    .await;
}

/// Callers dropped at every stage of a batch — the driver of a lone
/// statement, the driver of a batch mid-statement, a member of a batch in
/// flight, a queued caller — lose no one else's operation, and leave no
/// caller unanswered. A queued caller dropped before its batch started is
/// not run; a dropped member of a batch that ran has its entry recorded.
#[tokio::test(flavor = "current_thread")]
async fn dropped_callers_lose_nothing_of_the_others() {
    let Some(store) = Store::open("dropped_callers_lose_nothing_of_the_others").await else {
        return;
    };
    within_limit(async {
        let log = &store.log;
        // Another session locks the table: the log's inserts wait for it
        // in the server, so batches stay in flight until it is released.
        let (blocker, connection) =
            leasehold::tokio_postgres::connect(&store.url, leasehold::tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        blocker
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE \"{}\".leasehold_changelog IN EXCLUSIVE MODE",
                store.schema
            ))
            .await
            .unwrap();

        let mut calls: Vec<Option<Call<_>>> = (0..16)
            .map(|i| Some(record(log, "writer", payload(i))))
            .collect();
        let (first, rest) = calls.split_first_mut().unwrap();
        let first = first.as_mut().unwrap();
        assert!(futures::poll!(first.as_mut()).is_pending());
        for call in rest[..10].iter_mut().flatten() {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        // The lone statement's driver leaves: 1..11 become a batch, driven
        // by 1, which starts it.
        calls[0] = None;
        for call in calls[1..11].iter_mut().flatten() {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        // Callers 11..16 queue behind that batch.
        for call in calls[11..16].iter_mut().flatten() {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        // The batch's driver leaves mid-statement, so does one of its
        // members, and a queued caller leaves before its batch starts.
        calls[1] = None;
        calls[5] = None;
        calls[12] = None;

        blocker.batch_execute("COMMIT").await.unwrap();
        let answered: Vec<(usize, Call<_>)> = calls
            .into_iter()
            .enumerate()
            .filter_map(|(i, call)| Some((i, call?)))
            .collect();
        let (numbers, calls): (Vec<usize>, Vec<_>) = answered.into_iter().unzip();
        let fences = join_all(calls).await;

        let payloads = store.payloads().await;
        for (i, fence) in numbers.into_iter().zip(fences) {
            assert_eq!(payloads[&fence.unwrap().id()], payload(i), "caller {i}");
        }
        let recorded = |i: usize| payloads.values().any(|p| *p == payload(i));
        assert!(
            recorded(1) && recorded(5),
            "a batch that ran records all of it"
        );
        assert!(
            !recorded(12),
            "a caller that left before its batch started is not run"
        );
        // 1..16 but 12; perhaps 0 (its statement may have reached the
        // server before it was dropped).
        assert!(matches!(payloads.len(), 14 | 15), "{}", payloads.len());
    })
    .await;
}

/// The connection of a batch in flight is lost (its server process is
/// terminated): every caller of the batch gets the transient storage error
/// a lone call gets, none is retried behind its back, and nothing of the
/// batch is recorded.
#[tokio::test(flavor = "current_thread")]
async fn a_lost_connection_fails_every_call_of_its_batch_as_it_fails_one() {
    let Some(store) =
        Store::open("a_lost_connection_fails_every_call_of_its_batch_as_it_fails_one").await
    else {
        return;
    };
    within_limit(async {
        let log = &store.log;
        let connect = || async {
            let (client, connection) =
                leasehold::tokio_postgres::connect(&store.url, leasehold::tokio_postgres::NoTls)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            client
        };
        let (admin, blocker) = (connect().await, connect().await);
        // Another transaction inserts, and holds uncommitted, the entries
        // with the ids after the next one: the next record (taking the next
        // id) goes through, a batch after it (taking the following ids)
        // waits for that transaction in the server.
        let table = format!("\"{}\".leasehold_changelog", store.schema);
        blocker
            .batch_execute(&format!(
                "BEGIN;
                 INSERT INTO {table} (id, owner, generation, refreshed_at, recorded_at, payload)
                 OVERRIDING SYSTEM VALUE
                 SELECT coalesce(last_value, 0) + n, 'blocker', 1, now(), now(), ''
                 FROM pg_sequences, generate_series(2, 40) AS n
                 WHERE schemaname = '{schema}' AND sequencename = 'leasehold_changelog_id_seq'",
                schema = store.schema
            ))
            .await
            .unwrap();

        let mut first = record(log, "writer", payload(0));
        let mut rest: Vec<_> = (1..7).map(|i| record(log, "writer", payload(i))).collect();
        form_batch(&mut first, &mut rest).await;
        let batch: Vec<_> = rest.into_iter().map(tokio::spawn).collect();
        first.await.unwrap();
        // Lose the batch's connection while it waits.
        loop {
            let terminated: i64 = admin
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0
                       AND strpos(query, 'unnest') > 0 AND pid <> pg_backend_pid()",
                    &[&store.schema],
                )
                .await
                .unwrap()
                .get(0);
            if terminated > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        for call in batch {
            let error = call.await.unwrap().unwrap_err();
            assert!(
                matches!(error, ChangeLogError::Storage { .. }) && error.is_transient(),
                "{error}"
            );
        }
        blocker.batch_execute("ROLLBACK").await.unwrap();
        // (Read on a connection of our own: the log's pool may still hold
        // the lost one, which fails the next call that takes it.)
        let payloads: Vec<Vec<u8>> = admin
            .query(&format!("SELECT payload FROM {table}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(payloads, [payload(0)], "only the lone record");
    })
    .await;
}
