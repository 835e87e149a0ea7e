//! The store conformance suite: the same cases, run against every [`Store`].
//!
//! Each case gets a fresh, empty store and drives it with explicit timestamps, so the
//! cases are exact about time without sleeping. `conformance_tests!` turns every case into
//! a `#[tokio::test]` for one backend.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskq_runtime::store::{
    Checkpoint, ClaimRequest, ClaimedTask, Finish, FinishedMinute, NewIteration, NewTask, Outcome,
    QueueConfig, RunState, Store, StoreError, TaskQuery, TaskState,
};
use taskq_runtime::{Retention, TaskId, Timestamp};

mod cancel;
mod cancel_edges;
mod operations;
mod scale;
mod schedules;
mod unique;
pub use cancel::*;
pub use cancel_edges::*;
pub use operations::*;
pub use scale::*;
pub use schedules::*;
pub use unique::*;

/// A fixed starting time for every case.
pub const T0: Timestamp = Timestamp(1_800_000_000_000);

fn at(ms: i64) -> Timestamp {
    Timestamp(T0.0 + ms)
}

/// A plain task on `queue`, due at T0.
pub fn new_task(queue: &str, n: i64) -> NewTask {
    NewTask {
        task: "conformance::noop".into(),
        queue: queue.into(),
        payload: json!({ "n": n }),
        priority: 0,
        run_at: T0,
        unique_name: None,
        tombstone: Duration::from_secs(60),
        iteration: None,
        trace: None,
    }
}

fn req(queues: &[&str], limit: usize, lease_ms: u64, now: Timestamp) -> ClaimRequest {
    ClaimRequest {
        queues: queues.iter().map(|s| s.to_string()).collect(),
        worker: "w1".into(),
        limit,
        lease: Duration::from_millis(lease_ms),
        now,
    }
}

async fn finish_one(
    s: &dyn Store,
    c: &ClaimedTask,
    outcome: Outcome,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut r = s
        .finish(
            vec![Finish {
                lease: c.lease,
                outcome,
                started_at: now,
            }],
            "w1",
            now,
        )
        .await?;
    r.pop().unwrap_or(Ok(()))
}

/// How many tasks one claim of up to 10 (any queue, 30 s lease) at `now` gets.
async fn claimed(s: &dyn Store, now: Timestamp) -> usize {
    s.claim(&req(&[], 10, 30_000, now))
        .await
        .expect("claim")
        .len()
}

async fn state_of(s: &dyn Store, id: TaskId) -> TaskState {
    s.task(id)
        .await
        .expect("task() works")
        .expect("task exists")
        .info
        .state
}

/// Enqueue, claim in id order with attempt 1, finish done with one attempt recorded.
pub async fn claim_and_finish(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(
            vec![new_task("q", 1), new_task("q", 2), new_task("q", 3)],
            T0,
        )
        .await
        .expect("enqueue");
    assert_eq!(ids.len(), 3);
    let c = s.claim(&req(&["q"], 2, 30_000, T0)).await.expect("claim");
    assert_eq!(
        c.iter().map(|c| c.lease.id).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    assert_eq!(c[0].attempt, 1);
    assert_eq!(c[0].payload, json!({ "n": 1 }));
    assert_eq!(c[0].task, "conformance::noop");
    assert_eq!(c[0].enqueued_at, T0);
    assert_eq!(state_of(&*s, ids[0]).await, TaskState::Running);
    finish_one(&*s, &c[0], Outcome::Done, at(5))
        .await
        .expect("finish");
    let d = s.task(ids[0]).await.expect("task").expect("exists");
    assert_eq!(d.info.state, TaskState::Done);
    assert_eq!(d.info.finished_at, Some(at(5)));
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].outcome, "done");
    assert_eq!(d.attempts[0].worker, "w1");
    // The third is still there; the two running are not claimed again.
    let c2 = s
        .claim(&req(&["q"], 10, 30_000, at(10)))
        .await
        .expect("claim");
    assert_eq!(
        c2.iter().map(|c| c.lease.id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
}

/// Higher priority first, then earlier run_at, then lower id; future tasks wait.
pub async fn claim_order_and_delay(s: Arc<dyn Store>) {
    let mut a = new_task("q", 1);
    a.run_at = at(10);
    let mut b = new_task("q", 2);
    b.priority = 5;
    b.run_at = at(20);
    let mut c = new_task("q", 3);
    c.run_at = at(5);
    let mut later = new_task("q", 4);
    later.run_at = at(60_000);
    let ids = s.enqueue(vec![a, b, c, later], T0).await.expect("enqueue");
    let got = s
        .claim(&req(&[], 10, 600_000, at(100)))
        .await
        .expect("claim");
    assert_eq!(
        got.iter().map(|c| c.lease.id).collect::<Vec<_>>(),
        vec![ids[1], ids[2], ids[0]],
        "priority desc, then run_at, then id; the delayed one is not due"
    );
    // The earliest of: the delayed task's run_at, and the claimed tasks' lease expiry.
    assert_eq!(s.next_due(&[]).await.expect("next_due"), Some(at(60_000)));
    assert!(s
        .claim(&req(&[], 10, 600_000, at(59_999)))
        .await
        .expect("claim")
        .is_empty());
    let got = s
        .claim(&req(&[], 10, 600_000, at(60_000)))
        .await
        .expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lease.id, ids[3]);
}

/// Claims only from the queues asked for.
pub async fn claim_filters_queues(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(
            vec![new_task("a", 1), new_task("b", 2), new_task("c", 3)],
            T0,
        )
        .await
        .expect("enqueue");
    let got = s
        .claim(&req(&["b", "c"], 10, 30_000, T0))
        .await
        .expect("claim");
    let got: HashSet<_> = got.iter().map(|c| c.lease.id).collect();
    assert_eq!(got, HashSet::from([ids[1], ids[2]]));
}

/// A lapsed lease is claimed again with a new token; the old holder is fenced off.
pub async fn lapsed_lease_is_reclaimed_and_fenced(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(vec![new_task("q", 1)], T0)
        .await
        .expect("enqueue");
    let first = s.claim(&req(&[], 1, 1_000, T0)).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert!(s
        .claim(&req(&[], 1, 1_000, at(999)))
        .await
        .expect("claim")
        .is_empty());
    let second = s
        .claim(&req(&[], 1, 1_000, at(1_001)))
        .await
        .expect("claim");
    assert_eq!(second.len(), 1, "a lapsed lease is claimable again");
    assert_eq!(second[0].lease.id, ids[0]);
    assert_eq!(second[0].attempt, 2);
    assert_ne!(second[0].lease.token, first[0].lease.token);
    // The old holder can neither heartbeat nor finish nor checkpoint.
    let lost = s
        .heartbeat(&[first[0].lease], "w0", at(5_000))
        .await
        .expect("heartbeat");
    assert_eq!(lost, vec![ids[0]]);
    let r = finish_one(&*s, &first[0], Outcome::Done, at(1_002)).await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");
    assert_eq!(state_of(&*s, ids[0]).await, TaskState::Running);
    finish_one(&*s, &second[0], Outcome::Done, at(1_003))
        .await
        .expect("new holder finishes");
    let d = s.task(ids[0]).await.expect("task").expect("exists");
    assert_eq!(d.info.state, TaskState::Done);
    let outcomes: Vec<_> = d.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["lease lapsed", "done"]);
    assert_eq!(d.attempts[0].attempt, 1);
    assert_eq!(d.attempts[1].attempt, 2);
}

/// A lease has lapsed once `lease_until <= now`: the task is claimable at that very
/// instant, and `next_due` names that instant (the harness moves its clock exactly there).
pub async fn lease_lapses_at_its_expiry(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(vec![new_task("q", 1)], T0)
        .await
        .expect("enqueue");
    let first = s.claim(&req(&[], 1, 1_000, T0)).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(s.next_due(&[]).await.expect("next_due"), Some(at(1_000)));
    let second = s
        .claim(&req(&[], 1, 1_000, at(1_000)))
        .await
        .expect("claim");
    assert_eq!(
        second.iter().map(|c| c.lease.id).collect::<Vec<_>>(),
        vec![ids[0]],
        "claimable when lease_until == now"
    );
    assert_eq!(second[0].attempt, 2);
}

/// A heartbeat extends the lease so the task is not claimed again.
pub async fn heartbeat_extends_lease(s: Arc<dyn Store>) {
    s.enqueue(vec![new_task("q", 1)], T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&[], 1, 1_000, T0)).await.expect("claim");
    let lost = s
        .heartbeat(&[c[0].lease], "w1", at(10_000))
        .await
        .expect("heartbeat");
    assert!(lost.is_empty());
    assert!(s
        .claim(&req(&[], 1, 1_000, at(5_000)))
        .await
        .expect("claim")
        .is_empty());
    let info = s
        .task(c[0].lease.id)
        .await
        .expect("task")
        .expect("exists")
        .info;
    assert_eq!(info.lease_until, Some(at(10_000)));
    assert_eq!(info.worker.as_deref(), Some("w1"));
}

/// Retry puts the task back at its backoff time with the error kept.
pub async fn retry_waits_for_backoff(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(vec![new_task("q", 1)], T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    finish_one(
        &*s,
        &c[0],
        Outcome::Retry {
            error: "smtp 451".into(),
            run_at: at(60_000),
        },
        at(10),
    )
    .await
    .expect("finish");
    let info = s.task(ids[0]).await.expect("task").expect("exists").info;
    assert_eq!(info.state, TaskState::Pending);
    assert_eq!(info.run_at, at(60_000));
    assert_eq!(info.last_error.as_deref(), Some("smtp 451"));
    assert_eq!(info.attempts, 1);
    assert!(s
        .claim(&req(&[], 1, 30_000, at(59_999)))
        .await
        .expect("claim")
        .is_empty());
    let c = s
        .claim(&req(&[], 1, 30_000, at(60_000)))
        .await
        .expect("claim");
    assert_eq!(c[0].attempt, 2);
}

/// Failed and dead are final until a person retries; retry resets attempts and age.
pub async fn failed_dead_and_retry_from_dead(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(vec![new_task("q", 1), new_task("q", 2)], T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&[], 2, 30_000, T0)).await.expect("claim");
    finish_one(
        &*s,
        &c[0],
        Outcome::Failed {
            error: "bad address".into(),
        },
        at(1),
    )
    .await
    .expect("finish");
    finish_one(
        &*s,
        &c[1],
        Outcome::Dead {
            error: "gave up".into(),
        },
        at(1),
    )
    .await
    .expect("finish");
    assert_eq!(state_of(&*s, ids[0]).await, TaskState::Failed);
    assert_eq!(state_of(&*s, ids[1]).await, TaskState::Dead);
    assert!(s
        .claim(&req(&[], 10, 30_000, at(1_000_000)))
        .await
        .expect("claim")
        .is_empty());
    assert!(matches!(
        s.retry(TaskId(i64::MAX - 1), at(2)).await,
        Err(StoreError::NotFound(_))
    ));
    s.retry(ids[1], at(100)).await.expect("retry dead");
    let info = s.task(ids[1]).await.expect("task").expect("exists").info;
    assert_eq!(info.state, TaskState::Pending);
    assert_eq!(info.attempts, 0);
    assert_eq!(info.enqueued_at, at(100));
    assert_eq!(info.finished_at, None);
    let c = s
        .claim(&req(&[], 10, 30_000, at(100)))
        .await
        .expect("claim");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].attempt, 1);
    assert_eq!(c[0].enqueued_at, at(100));
    // Its history is kept.
    let d = s.task(ids[1]).await.expect("task").expect("exists");
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].error.as_deref(), Some("gave up"));
    // A pending task cannot be "retried".
    let r = s.retry(ids[1], at(101)).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
}

/// Released at shutdown: due at once, the attempt does not count.
pub async fn release_does_not_count(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(vec![new_task("q", 1)], T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    finish_one(&*s, &c[0], Outcome::Release, at(50))
        .await
        .expect("finish");
    let info = s.task(ids[0]).await.expect("task").expect("exists").info;
    assert_eq!(info.state, TaskState::Pending);
    assert_eq!(info.attempts, 0);
    assert!(info.run_at <= at(50));
    let c = s.claim(&req(&[], 1, 30_000, at(50))).await.expect("claim");
    assert_eq!(c[0].attempt, 1);
}

/// Unique names: refused while live or inside the tombstone; bulk is all-or-nothing.
pub async fn unique_names_and_tombstones(s: Arc<dyn Store>) {
    let mut a = new_task("q", 1);
    a.unique_name = Some("welcome-ada".into());
    let ids = s.enqueue(vec![a.clone()], T0).await.expect("enqueue");
    let r = s.enqueue(vec![a.clone()], at(1)).await;
    assert!(
        matches!(&r, Err(StoreError::AlreadyExists(n)) if n == "welcome-ada"),
        "{r:?}"
    );
    // All-or-nothing: a good task beside a conflicting one is not stored either.
    let before = s
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list")
        .len();
    let r = s.enqueue(vec![new_task("q", 9), a.clone()], at(2)).await;
    assert!(matches!(r, Err(StoreError::AlreadyExists(_))));
    assert_eq!(
        s.list_tasks(&TaskQuery::default())
            .await
            .expect("list")
            .len(),
        before
    );
    // The same name twice in one call.
    let mut b = new_task("q", 2);
    b.unique_name = Some("twice".into());
    let r = s.enqueue(vec![b.clone(), b.clone()], at(3)).await;
    assert!(matches!(r, Err(StoreError::AlreadyExists(_))), "{r:?}");
    // Finished: still taken inside the 60 s tombstone, free after it.
    let c = s.claim(&req(&[], 1, 30_000, at(10))).await.expect("claim");
    assert_eq!(c[0].lease.id, ids[0]);
    finish_one(&*s, &c[0], Outcome::Done, at(20))
        .await
        .expect("finish");
    assert!(matches!(
        s.enqueue(vec![a.clone()], at(59_000)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let again = s
        .enqueue(vec![a.clone()], at(80_021))
        .await
        .expect("free after the tombstone");
    assert_ne!(again[0], ids[0]);
}

/// A dead task cannot be retried while another live task has its unique name.
pub async fn retry_refused_while_its_name_is_taken(s: Arc<dyn Store>) {
    let mut a = new_task("q", 1);
    a.unique_name = Some("report-2026".into());
    let old = s.enqueue(vec![a.clone()], T0).await.expect("enqueue")[0];
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    finish_one(&*s, &c[0], Outcome::Dead { error: "x".into() }, at(1))
        .await
        .expect("dead");
    // After the 60 s tombstone, a new task takes the name.
    s.enqueue(vec![a.clone()], at(120_000))
        .await
        .expect("name free again");
    let r = s.retry(old, at(120_001)).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(state_of(&*s, old).await, TaskState::Dead);
}

/// A paused queue is not claimed (and next_due ignores it) until resumed.
pub async fn pause_and_resume(s: Arc<dyn Store>) {
    s.enqueue(vec![new_task("email", 1), new_task("other", 2)], T0)
        .await
        .expect("enqueue");
    s.set_paused("email", true).await.expect("pause");
    let c = s.claim(&req(&[], 10, 30_000, T0)).await.expect("claim");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].queue, "other");
    finish_one(&*s, &c[0], Outcome::Done, T0)
        .await
        .expect("finish");
    assert_eq!(s.next_due(&[]).await.expect("next_due"), None);
    let q = s.queues().await.expect("queues");
    let email = q
        .iter()
        .find(|q| q.name == "email")
        .expect("email queue listed");
    assert!(email.paused);
    assert_eq!(email.count(TaskState::Pending), 1);
    s.set_paused("email", false).await.expect("resume");
    let c = s.claim(&req(&[], 10, 30_000, T0)).await.expect("claim");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].queue, "email");
}

/// max_concurrent holds across claims until running tasks finish.
pub async fn max_concurrent_limits_claims(s: Arc<dyn Store>) {
    s.configure_queue(
        "q",
        QueueConfig {
            max_concurrent: Some(2),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("configure");
    s.enqueue((0..5).map(|n| new_task("q", n)).collect(), T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&[], 10, 30_000, T0)).await.expect("claim");
    assert_eq!(c.len(), 2);
    assert!(s
        .claim(&req(&[], 10, 30_000, T0))
        .await
        .expect("claim")
        .is_empty());
    finish_one(&*s, &c[0], Outcome::Done, at(1))
        .await
        .expect("finish");
    assert_eq!(claimed(&*s, at(1)).await, 1);
    let q = s.queues().await.expect("queues");
    assert_eq!(q[0].config.max_concurrent, Some(2));
}

/// Token bucket: `burst` at once, then `rate` per second.
pub async fn rate_limit_token_bucket(s: Arc<dyn Store>) {
    s.configure_queue(
        "q",
        QueueConfig {
            rate: Some(2.0),
            burst: Some(3),
            max_concurrent: None,
            retention: None,
        },
    )
    .await
    .expect("configure");
    s.enqueue((0..20).map(|n| new_task("q", n)).collect(), T0)
        .await
        .expect("enqueue");
    assert_eq!(claimed(&*s, T0).await, 3);
    assert_eq!(claimed(&*s, T0).await, 0);
    assert_eq!(claimed(&*s, at(500)).await, 1);
    assert_eq!(claimed(&*s, at(1_500)).await, 2);
    // Idle for long: refills only up to the burst.
    assert_eq!(claimed(&*s, at(60_000)).await, 3);
}

/// Purge deletes pending tasks of one queue only.
pub async fn purge_pending_only(s: Arc<dyn Store>) {
    s.enqueue((0..4).map(|n| new_task("q", n)).collect(), T0)
        .await
        .expect("enqueue");
    s.enqueue(vec![new_task("keep", 9)], T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&["q"], 1, 30_000, T0)).await.expect("claim");
    assert_eq!(s.purge("q", at(1)).await.expect("purge"), 3);
    assert_eq!(state_of(&*s, c[0].lease.id).await, TaskState::Running);
    let q = s.queues().await.expect("queues");
    let keep = q.iter().find(|q| q.name == "keep").expect("keep");
    assert_eq!(keep.count(TaskState::Pending), 1);
}

/// Listing: newest first, filters, paging; queue counts by state.
pub async fn list_filter_page_and_counts(s: Arc<dyn Store>) {
    let mut tasks: Vec<NewTask> = (0..6)
        .map(|n| new_task(if n % 2 == 0 { "a" } else { "b" }, n))
        .collect();
    tasks[5].task = "conformance::other".into();
    let ids = s.enqueue(tasks, T0).await.expect("enqueue");
    let all = s.list_tasks(&TaskQuery::default()).await.expect("list");
    assert_eq!(
        all.iter().map(|t| t.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    let a = s
        .list_tasks(&TaskQuery {
            queue: Some("a".into()),
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(a.len(), 3);
    let page = s
        .list_tasks(&TaskQuery {
            limit: 2,
            before: Some(ids[4]),
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(
        page.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[3], ids[2]]
    );
    let other = s
        .list_tasks(&TaskQuery {
            task: Some("conformance::other".into()),
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(other.len(), 1);
    let c = s.claim(&req(&["b"], 1, 30_000, T0)).await.expect("claim");
    finish_one(&*s, &c[0], Outcome::Done, T0)
        .await
        .expect("finish");
    let done = s
        .list_tasks(&TaskQuery {
            state: Some(TaskState::Done),
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(done.len(), 1);
    let q = s.queues().await.expect("queues");
    let b = q.iter().find(|q| q.name == "b").expect("b");
    assert_eq!(b.count(TaskState::Pending), 2);
    assert_eq!(b.count(TaskState::Done), 1);
    assert_eq!(b.count(TaskState::Dead), 0);
}

/// run_now makes a delayed task due; it refuses others clearly.
pub async fn run_now_and_delete(s: Arc<dyn Store>) {
    let mut later = new_task("q", 1);
    later.run_at = at(3_600_000);
    let ids = s
        .enqueue(vec![later, new_task("q", 2)], T0)
        .await
        .expect("enqueue");
    s.run_now(ids[0], at(10)).await.expect("run now");
    let c = s.claim(&req(&[], 10, 30_000, at(10))).await.expect("claim");
    assert_eq!(c.len(), 2);
    let r = s.run_now(ids[0], at(11)).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert!(matches!(
        s.run_now(TaskId(i64::MAX - 1), at(11)).await,
        Err(StoreError::NotFound(_))
    ));
    // Deleting a running task fences its worker off.
    s.delete(ids[1], at(12)).await.expect("delete");
    assert!(s.task(ids[1]).await.expect("task").is_none());
    let held = c
        .iter()
        .find(|c| c.lease.id == ids[1])
        .expect("ids[1] was claimed");
    let r = finish_one(&*s, held, Outcome::Done, at(12)).await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");
    assert!(matches!(
        s.delete(ids[1], at(12)).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Payloads round-trip exactly, unicode and nesting included.
pub async fn payload_round_trip(s: Arc<dyn Store>) {
    let mut t = new_task("q", 0);
    t.payload = json!({ "to": "zoë@example.org", "tags": ["a", "b"], "n": {"deep": [1, 2.5, null, true]}, "quote": "it's \"fine\"" });
    let ids = s.enqueue(vec![t.clone()], T0).await.expect("enqueue");
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    assert_eq!(c[0].payload, t.payload);
    let d = s.task(ids[0]).await.expect("task").expect("exists");
    assert_eq!(d.info.payload, t.payload);
}

/// A checkpoint without a total.
fn cp(cursor: serde_json::Value, processed: u64) -> Checkpoint {
    Checkpoint {
        cursor,
        processed,
        total: None,
    }
}

fn iteration_task() -> NewTask {
    let mut t = new_task("iter", 0);
    t.task = "conformance::walk".into();
    t.payload = json!({ "filter": { "program": "gsoc" }, "args": {} });
    t.iteration = Some(NewIteration {
        filter: json!({ "program": "gsoc" }),
    });
    t
}

/// The unique name of an iterative run is taken while the run is live, though its first
/// step (the one carrying the name) ended when it handed over to a continuation; the
/// tombstone window counts from the end of the run.
pub async fn unique_name_of_a_running_iteration(s: Arc<dyn Store>) {
    let mut t = iteration_task();
    t.unique_name = Some("walk-gsoc".into());
    t.tombstone = Duration::from_secs(60);
    s.enqueue(vec![t.clone()], T0).await.expect("enqueue");
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    finish_one(&*s, &c[0], Outcome::Continue { run_at: at(10) }, at(10))
        .await
        .expect("continue");
    // Past the first step's tombstone window, the run still goes on.
    let r = s.enqueue(vec![t.clone()], at(120_000)).await;
    assert!(
        matches!(&r, Err(StoreError::AlreadyExists(n)) if n == "walk-gsoc"),
        "the name of a live run is taken: {r:?}"
    );
    let c = s
        .claim(&req(&[], 1, 30_000, at(120_000)))
        .await
        .expect("claim");
    finish_one(&*s, &c[0], Outcome::Done, at(200_000))
        .await
        .expect("done");
    let r = s.enqueue(vec![t.clone()], at(230_000)).await;
    assert!(
        matches!(&r, Err(StoreError::AlreadyExists(_))),
        "inside the tombstone window after the run ended: {r:?}"
    );
    s.enqueue(vec![t], at(261_000))
        .await
        .expect("free once the window after the run passed");
}

/// An iterative run: checkpoints, continuation steps that see the cursor, done.
pub async fn iteration_checkpoint_continue_done(s: Arc<dyn Store>) {
    let run = s
        .enqueue(vec![iteration_task()], T0)
        .await
        .expect("enqueue")[0];
    let it = s.iteration(run).await.expect("iteration").expect("exists");
    assert_eq!(it.state, RunState::Running);
    assert_eq!(it.processed, 0);
    assert_eq!(it.cursor, None);
    assert_eq!(it.filter, json!({ "program": "gsoc" }));
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    let cur = c[0].iteration.clone().expect("a step carries its run");
    assert_eq!(cur.run, run);
    assert_eq!(cur.cursor, None);
    for (i, key) in [100, 200].into_iter().enumerate() {
        s.checkpoint(
            c[0].lease,
            Checkpoint {
                cursor: json!(key),
                processed: 100,
                total: if i == 0 { Some(250) } else { None },
            },
            at(10 + i as i64),
        )
        .await
        .expect("checkpoint");
    }
    let it = s.iteration(run).await.expect("iteration").expect("exists");
    assert_eq!((it.processed, it.batches, it.total), (200, 2, Some(250)));
    assert_eq!(it.cursor, Some(json!(200)));
    assert_eq!(it.updated_at, at(11));
    finish_one(&*s, &c[0], Outcome::Continue { run_at: at(20) }, at(20))
        .await
        .expect("continue");
    assert_eq!(state_of(&*s, c[0].lease.id).await, TaskState::Done);
    let c2 = s.claim(&req(&[], 1, 30_000, at(20))).await.expect("claim");
    assert_eq!(
        c2.len(),
        1,
        "the continuation step is stored with the step's outcome"
    );
    assert_ne!(c2[0].lease.id, c[0].lease.id);
    assert_eq!(c2[0].attempt, 1);
    assert_eq!(c2[0].payload, c[0].payload);
    assert_eq!(c2[0].task, "conformance::walk");
    let cur = c2[0].iteration.clone().expect("run");
    assert_eq!(
        (cur.run, cur.cursor.clone(), cur.processed, cur.batches),
        (run, Some(json!(200)), 200, 2)
    );
    assert_eq!(cur.total, Some(250));
    s.checkpoint(c2[0].lease, cp(json!(250), 50), at(30))
        .await
        .expect("checkpoint");
    finish_one(&*s, &c2[0], Outcome::Done, at(31))
        .await
        .expect("done");
    let it = s.iteration(run).await.expect("iteration").expect("exists");
    assert_eq!(it.state, RunState::Done);
    assert_eq!(it.processed, 250);
    assert_eq!(it.steps, 2);
    assert_eq!(it.finished_at, Some(at(31)));
    assert_eq!(it.percent(), Some(100.0));
    let list = s.iterations(10).await.expect("iterations");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].run, run);
}

/// A step's failure ends the run; a retry from dead revives it at its cursor.
pub async fn iteration_failure_and_revival(s: Arc<dyn Store>) {
    let run = s
        .enqueue(vec![iteration_task()], T0)
        .await
        .expect("enqueue")[0];
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    s.checkpoint(c[0].lease, cp(json!(7), 7), at(1))
        .await
        .expect("checkpoint");
    finish_one(
        &*s,
        &c[0],
        Outcome::Dead {
            error: "db down".into(),
        },
        at(2),
    )
    .await
    .expect("dead");
    let it = s.iteration(run).await.expect("iteration").expect("exists");
    assert_eq!(it.state, RunState::Dead);
    assert_eq!(it.error.as_deref(), Some("db down"));
    s.retry(c[0].lease.id, at(3)).await.expect("retry");
    assert_eq!(
        s.iteration(run).await.expect("it").expect("exists").state,
        RunState::Running
    );
    let c = s.claim(&req(&[], 1, 30_000, at(3))).await.expect("claim");
    assert_eq!(
        c[0].iteration.as_ref().and_then(|i| i.cursor.clone()),
        Some(json!(7))
    );
    // A plain task cannot checkpoint.
    s.enqueue(vec![new_task("plain", 1)], at(4))
        .await
        .expect("enqueue");
    let p = s
        .claim(&req(&["plain"], 1, 30_000, at(4)))
        .await
        .expect("claim");
    let r = s.checkpoint(p[0].lease, cp(json!(1), 1), at(5)).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
}

/// Progress resets a step's attempt count: attempts count tries at the current cursor.
pub async fn checkpoint_resets_attempts(s: Arc<dyn Store>) {
    let run = s
        .enqueue(vec![iteration_task()], T0)
        .await
        .expect("enqueue")[0];
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    finish_one(
        &*s,
        &c[0],
        Outcome::Retry {
            error: "flaky".into(),
            run_at: at(1),
        },
        at(1),
    )
    .await
    .expect("retry");
    let c = s.claim(&req(&[], 1, 30_000, at(1))).await.expect("claim");
    assert_eq!(c[0].attempt, 2);
    s.checkpoint(c[0].lease, cp(json!(10), 10), at(2))
        .await
        .expect("checkpoint");
    let info = s
        .task(c[0].lease.id)
        .await
        .expect("task")
        .expect("exists")
        .info;
    assert_eq!(info.attempts, 1);
    assert_eq!(info.run, Some(run));
    finish_one(
        &*s,
        &c[0],
        Outcome::Retry {
            error: "flaky again".into(),
            run_at: at(3),
        },
        at(3),
    )
    .await
    .expect("retry");
    let c = s.claim(&req(&[], 1, 30_000, at(3))).await.expect("claim");
    assert_eq!(c[0].attempt, 2, "the second try at cursor 10");
    assert_eq!(
        c[0].iteration.as_ref().and_then(|i| i.cursor.clone()),
        Some(json!(10))
    );
}

/// Cancelling a run cancels its pending step and fences off a running one.
pub async fn iteration_cancel(s: Arc<dyn Store>) {
    let run = s
        .enqueue(vec![iteration_task()], T0)
        .await
        .expect("enqueue")[0];
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    s.cancel_iteration(run, at(1)).await.expect("cancel");
    let r = s.checkpoint(c[0].lease, cp(json!(1), 1), at(2)).await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");
    let it = s.iteration(run).await.expect("iteration").expect("exists");
    assert_eq!(it.state, RunState::Cancelled);
    assert_eq!(state_of(&*s, c[0].lease.id).await, TaskState::Cancelled);
    assert!(s
        .claim(&req(&[], 1, 30_000, at(100_000)))
        .await
        .expect("claim")
        .is_empty());
    assert!(matches!(
        s.cancel_iteration(run, at(3)).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(s.iteration(TaskId(i64::MAX - 1)).await, Ok(None)));
}

/// Deleting or purging the live step of a run ends the run as cancelled, saying why;
/// deleting a finished step does not touch its run.
pub async fn deleting_a_step_cancels_its_run(s: Arc<dyn Store>) {
    let run = s
        .enqueue(vec![iteration_task()], T0)
        .await
        .expect("enqueue")[0];
    s.delete(run, at(5)).await.expect("delete the pending step");
    let it = s.iteration(run).await.expect("iteration").expect("exists");
    assert_eq!(it.state, RunState::Cancelled);
    assert_eq!(it.finished_at, Some(at(5)));
    let why = it.error.unwrap_or_default();
    assert!(why.contains(&format!("step {run} was deleted")), "{why}");

    let run2 = s
        .enqueue(vec![iteration_task()], T0)
        .await
        .expect("enqueue")[0];
    assert_eq!(s.purge("iter", at(6)).await.expect("purge"), 1);
    let it = s.iteration(run2).await.expect("iteration").expect("exists");
    assert_eq!(it.state, RunState::Cancelled);
    let why = it.error.unwrap_or_default();
    assert!(why.contains("purged from queue `iter`"), "{why}");

    // A finished step of a live run: deleting it leaves the run alone.
    let run3 = s
        .enqueue(vec![iteration_task()], at(7))
        .await
        .expect("enqueue")[0];
    let c = s
        .claim(&req(&["iter"], 1, 30_000, at(7)))
        .await
        .expect("claim");
    finish_one(&*s, &c[0], Outcome::Continue { run_at: at(8) }, at(8))
        .await
        .expect("continue");
    s.delete(run3, at(9))
        .await
        .expect("delete the finished first step");
    let it = s.iteration(run3).await.expect("iteration").expect("exists");
    assert_eq!(it.state, RunState::Running);
}

/// Two claimers racing over 400 tasks never get the same task.
pub async fn concurrent_claims_never_overlap(s: Arc<dyn Store>) {
    s.enqueue((0..400).map(|n| new_task("q", n)).collect(), T0)
        .await
        .expect("enqueue");
    let mut joins = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        joins.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let mut r = req(&[], 7, 600_000, at(1));
                r.worker = format!("w{w}");
                let c = s.claim(&r).await.expect("claim");
                if c.is_empty() {
                    break;
                }
                got.extend(c.into_iter().map(|c| c.lease.id));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for j in joins {
        all.extend(j.await.expect("join"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 400);
    assert_eq!(unique.len(), 400);
}

/// Batched finish: one call, many outcomes, a lost lease reported for its entry only.
pub async fn batched_finish_reports_each(s: Arc<dyn Store>) {
    s.enqueue((0..3).map(|n| new_task("q", n)).collect(), T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&[], 3, 30_000, T0)).await.expect("claim");
    s.delete(c[1].lease.id, at(1)).await.expect("delete");
    let r = s
        .finish(
            c.iter()
                .map(|c| Finish {
                    lease: c.lease,
                    outcome: Outcome::Done,
                    started_at: T0,
                })
                .collect(),
            "w1",
            at(1),
        )
        .await
        .expect("finish");
    assert!(r[0].is_ok());
    assert!(matches!(r[1], Err(StoreError::LeaseLost(_))));
    assert!(r[2].is_ok());
    assert_eq!(state_of(&*s, c[2].lease.id).await, TaskState::Done);
}

// ---- values (issue 7) -------------------------------------------------------------------

/// Every sample value of [`crate::values`] crosses the store bit-identical: in a payload
/// (claim, `task()`, `list_tasks`), in a filter (`iteration()`, `iterations()`) and in a
/// cursor (`iteration()`, and the claim of the next step).
pub async fn values_cross_the_store_bit_identical(s: Arc<dyn Store>) {
    use crate::values::{assert_bit_identical, sample_value};
    let v = sample_value();
    let mut plain = new_task("values", 0);
    plain.payload = json!({ "v": v.clone() });
    let mut iter = iteration_task();
    iter.queue = "values".into();
    iter.payload = json!({ "filter": v.clone(), "args": { "v": v.clone() } });
    iter.iteration = Some(NewIteration { filter: v.clone() });
    let ids = s
        .enqueue(vec![plain.clone(), iter.clone()], T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&[], 2, 30_000, T0)).await.expect("claim");
    assert_eq!(c.len(), 2);
    assert_bit_identical(&c[0].payload, &plain.payload, "a payload (claim)");
    assert_bit_identical(&c[1].payload, &iter.payload, "an iterative payload (claim)");
    let d = s.task(ids[0]).await.expect("task").expect("exists");
    assert_bit_identical(&d.info.payload, &plain.payload, "a payload (task())");
    let listed = s
        .list_tasks(&TaskQuery {
            limit: 10,
            with_payload: true,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    let l = listed.iter().find(|t| t.id == ids[1]).expect("listed");
    assert_bit_identical(&l.payload, &iter.payload, "a payload (list_tasks)");
    let it = s.iteration(ids[1]).await.expect("iteration").expect("run");
    assert_bit_identical(&it.filter, &v, "a filter (iteration())");
    let its = s.iterations(10).await.expect("iterations");
    assert_bit_identical(&its[0].filter, &v, "a filter (iterations())");

    s.checkpoint(c[1].lease, cp(v.clone(), 1), at(1))
        .await
        .expect("checkpoint");
    let it = s.iteration(ids[1]).await.expect("iteration").expect("run");
    assert_bit_identical(
        &it.cursor.clone().unwrap_or_default(),
        &v,
        "a cursor (iteration())",
    );
    finish_one(&*s, &c[1], Outcome::Continue { run_at: at(2) }, at(2))
        .await
        .expect("continue");
    let c2 = s.claim(&req(&[], 1, 30_000, at(2))).await.expect("claim");
    let cur = c2[0].iteration.clone().expect("a step carries its run");
    assert_bit_identical(
        &cur.cursor.unwrap_or_default(),
        &v,
        "a cursor (claim of the next step)",
    );
    assert_bit_identical(&c2[0].payload, &iter.payload, "a continuation's payload");
}

/// A cursor that is a bare number or string (the common `Key = i64`, `f64` or `String`)
/// crosses the store bit-identical, each sample in turn.
pub async fn bare_cursors_cross_the_store_bit_identical(s: Arc<dyn Store>) {
    use crate::values::{assert_bit_identical, float, sample_floats, sample_ints, sample_strings};
    let run = s
        .enqueue(vec![iteration_task()], T0)
        .await
        .expect("enqueue")[0];
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    let mut cursors: Vec<serde_json::Value> = sample_floats().into_iter().map(float).collect();
    cursors.extend(sample_ints().as_object().expect("ints").values().cloned());
    cursors.extend(sample_strings().into_iter().map(serde_json::Value::String));
    for (i, want) in cursors.iter().enumerate() {
        s.checkpoint(c[0].lease, cp(want.clone(), 1), at(i as i64))
            .await
            .expect("checkpoint");
        let it = s.iteration(run).await.expect("iteration").expect("run");
        assert_bit_identical(
            &it.cursor.unwrap_or_default(),
            want,
            &format!("cursor #{i}"),
        );
    }
}

/// The one store-level check of every `enqueue` and `checkpoint`: a document nested
/// deeper than `MAX_DEPTH` and a name with a NUL byte are refused with the same
/// `InvalidValue` error on every store, and nothing is stored; the deepest accepted
/// documents come back bit-identical.
pub async fn store_refuses_too_deep_values_and_nul_names(s: Arc<dyn Store>) {
    use crate::values::{assert_bit_identical, nested};
    use taskq_runtime::value::MAX_DEPTH;
    let refused = |r: Result<Vec<TaskId>, StoreError>| match r {
        Err(StoreError::InvalidValue(m)) => m,
        other => panic!("expected InvalidValue, got {other:?}"),
    };
    // The deepest accepted: the payload `{"v": [[..]]}` and a filter, MAX_DEPTH levels.
    let mut deepest = new_task("q", 0);
    deepest.payload = json!({ "v": nested(MAX_DEPTH - 1) });
    let mut iter = iteration_task();
    iter.iteration = Some(NewIteration {
        filter: nested(MAX_DEPTH),
    });
    let ids = s
        .enqueue(vec![deepest.clone(), iter], T0)
        .await
        .expect("the deepest accepted documents are stored");

    let mut deep = new_task("q", 1);
    deep.payload = json!({ "v": nested(MAX_DEPTH) });
    assert_eq!(
        refused(s.enqueue(vec![new_task("q", 2), deep], T0).await),
        "the payload of task #1 (`conformance::noop`) nests arrays and objects 101 levels deep; \
         a store keeps values nested at most 100 levels (taskq_runtime::value::MAX_DEPTH), \
         so that it can read back what it accepted"
    );
    let mut deep_filter = iteration_task();
    deep_filter.iteration = Some(NewIteration {
        filter: nested(200),
    });
    assert!(refused(s.enqueue(vec![deep_filter], T0).await).starts_with(
        "the filter of task #0 (`conformance::walk`) nests arrays and objects 200 levels deep"
    ));
    let mut bad_task = new_task("q", 3);
    bad_task.task = "app::bin\0ary".into();
    assert_eq!(
        refused(s.enqueue(vec![bad_task], T0).await),
        "the task name \"app::bin\\0ary\" contains a NUL byte, which PostgreSQL cannot store in text; \
         taskq refuses it on every store"
    );
    let bad_queue = new_task("q\0", 4);
    assert!(refused(s.enqueue(vec![bad_queue], T0).await)
        .starts_with("the queue name \"q\\0\" contains a NUL byte"));
    let mut bad_name = new_task("q", 5);
    bad_name.unique_name = Some("\0".into());
    assert!(refused(s.enqueue(vec![bad_name], T0).await)
        .starts_with("the unique name \"\\0\" contains a NUL byte"));
    let all = s
        .list_tasks(&TaskQuery {
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 2, "nothing refused was stored");

    let c = s.claim(&req(&[], 2, 30_000, T0)).await.expect("claim");
    assert_bit_identical(&c[0].payload, &deepest.payload, "the deepest payload");
    let it = s.iteration(ids[1]).await.expect("iteration").expect("run");
    assert_bit_identical(&it.filter, &nested(MAX_DEPTH), "the deepest filter");
    let too_deep = s
        .checkpoint(c[1].lease, cp(nested(MAX_DEPTH + 1), 1), at(1))
        .await;
    match too_deep {
        Err(StoreError::InvalidValue(m)) => assert!(
            m.starts_with(&format!(
                "the cursor of step {} nests arrays and objects 101 levels deep",
                ids[1]
            )),
            "{m}"
        ),
        other => panic!("expected InvalidValue, got {other:?}"),
    }
    s.checkpoint(c[1].lease, cp(nested(MAX_DEPTH), 1), at(2))
        .await
        .expect("the deepest cursor is stored");
    let it = s.iteration(ids[1]).await.expect("iteration").expect("run");
    assert_eq!(it.batches, 1, "the refused checkpoint changed nothing");
    assert_bit_identical(
        &it.cursor.unwrap_or_default(),
        &nested(MAX_DEPTH),
        "the deepest cursor",
    );
}

// ---- issue 7: one claim order; names kept after delete and purge ---------------------

/// A limited queue is one rate, and `max_concurrent` of 2.
fn limited(rate: Option<f64>, max_concurrent: Option<u32>) -> QueueConfig {
    QueueConfig {
        rate,
        burst: None,
        max_concurrent,
        retention: None,
    }
}

/// 60 due tasks in the unlimited `default` queue, due from T0 on, one ms apart.
async fn sixty_defaults(s: &dyn Store) -> Vec<TaskId> {
    s.enqueue(
        (0..60)
            .map(|n| {
                let mut t = new_task("default", n);
                t.run_at = at(n);
                t
            })
            .collect(),
        T0,
    )
    .await
    .expect("enqueue defaults")
}

fn ids_of(c: &[ClaimedTask]) -> Vec<TaskId> {
    c.iter().map(|c| c.lease.id).collect()
}

/// Issue 7, item 5: a rate-limited queue's priority-10 task is claimed before the 60 due
/// tasks of an unlimited queue, whichever way the claim names its queues: one order on
/// every store (priority, then run_at, then id) across limited and unlimited queues.
pub async fn limited_queue_takes_its_turn_in_claim_order(s: Arc<dyn Store>) {
    s.configure_queue("email", limited(Some(1.0), None))
        .await
        .expect("configure");
    let defaults = sixty_defaults(&*s).await;
    let mut mails = Vec::new();
    for n in 0..2 {
        let mut t = new_task("email", 100 + n);
        t.priority = 10;
        t.run_at = at(30);
        mails.push(s.enqueue(vec![t], T0).await.expect("enqueue email")[0]);
    }
    let now = at(100);
    let c = s.claim(&req(&[], 1, 30_000, now)).await.expect("claim");
    assert_eq!(ids_of(&c), vec![mails[0]], "every queue: the email first");
    // One token per second: a second later the next email, now naming both queues.
    let later = at(1_100);
    let c = s
        .claim(&req(&["default", "email"], 1, 30_000, later))
        .await
        .expect("claim");
    assert_eq!(ids_of(&c), vec![mails[1]], "named queues: the email first");
    // Then the defaults, in run_at order.
    let c = s
        .claim(&req(&["email", "default"], 3, 30_000, later))
        .await
        .expect("claim");
    assert_eq!(ids_of(&c), defaults[..3].to_vec());

    // Priority, run_at and id interleave limited and unlimited queues alike.
    let mut hi = new_task("reports", 1);
    hi.priority = 5;
    hi.run_at = at(50);
    let mut lo = new_task("reports", 2);
    lo.priority = -1;
    let mut mid = new_task("default", 99);
    mid.priority = 5;
    mid.run_at = at(40);
    s.configure_queue("reports", limited(None, Some(2)))
        .await
        .expect("configure");
    let ids = s.enqueue(vec![hi, lo, mid], T0).await.expect("enqueue");
    let c = s.claim(&req(&[], 60, 30_000, later)).await.expect("claim");
    let got = ids_of(&c);
    assert_eq!(got.len(), 60, "58 defaults and the 2 reports: {got:?}");
    assert_eq!(got[..2], [ids[2], ids[0]], "priority 5: run_at 40, then 50");
    assert_eq!(got[2..59], defaults[3..]);
    assert_eq!(got[59], ids[1], "priority -1 last");
}

/// A limited queue whose cap is spent (no token, or `max_concurrent` running) does not
/// hold back the unlimited queues of the same claim.
pub async fn spent_limited_queue_lets_unlimited_flow(s: Arc<dyn Store>) {
    s.configure_queue("email", limited(Some(1.0), None))
        .await
        .expect("configure");
    s.configure_queue("reports", limited(None, Some(1)))
        .await
        .expect("configure");
    let defaults = sixty_defaults(&*s).await;
    let mut urgent = Vec::new();
    for (queue, n) in [("email", 1), ("email", 2), ("reports", 3), ("reports", 4)] {
        let mut t = new_task(queue, n);
        t.priority = 10;
        urgent.push(s.enqueue(vec![t], T0).await.expect("enqueue")[0]);
    }
    let now = at(100);
    let c = s.claim(&req(&[], 4, 30_000, now)).await.expect("claim");
    assert_eq!(
        ids_of(&c),
        vec![urgent[0], urgent[2], defaults[0], defaults[1]],
        "one email (one token), one report (max_concurrent 1), then the defaults"
    );
    for queues in [&[][..], &["email", "reports", "default"][..]] {
        let c = s.claim(&req(queues, 4, 30_000, now)).await.expect("claim");
        assert_eq!(c.len(), 4, "{queues:?}");
        assert!(
            c.iter().all(|c| c.queue == "default"),
            "limited queues spent, the unlimited one flows: {c:?}"
        );
    }
    // A claim of only spent queues gets nothing, and changes nothing.
    let c = s
        .claim(&req(&["email", "reports"], 4, 30_000, now))
        .await
        .expect("claim");
    assert!(c.is_empty(), "{c:?}");
    let c = s
        .claim(&req(&["email"], 4, 30_000, at(1_100)))
        .await
        .expect("claim");
    assert_eq!(ids_of(&c), vec![urgent[1]], "a token a second later");
}

/// Claimers racing over limited queues and an unlimited one: the limits hold across them
/// (5 running at most; 3 tokens), no task is handed out twice, the unlimited queue drains.
pub async fn concurrent_claims_hold_queue_limits(s: Arc<dyn Store>) {
    s.configure_queue("capped", limited(None, Some(5)))
        .await
        .expect("configure");
    let mut slow = limited(Some(1.0), None);
    slow.burst = Some(3);
    s.configure_queue("slow", slow).await.expect("configure");
    for (queue, n, priority) in [("capped", 100, 1), ("slow", 20, 1), ("q", 200, 0)] {
        let tasks = (0..n)
            .map(|i| {
                let mut t = new_task(queue, i);
                t.priority = priority;
                t
            })
            .collect();
        s.enqueue(tasks, T0).await.expect("enqueue");
    }
    let mut joins = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        joins.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let mut r = req(&[], 7, 600_000, at(1));
                r.worker = format!("w{w}");
                let c = s.claim(&r).await.expect("claim");
                if c.is_empty() {
                    break;
                }
                got.extend(c.into_iter().map(|c| (c.lease.id, c.queue)));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for j in joins {
        all.extend(j.await.expect("join"));
    }
    let of = |q: &str| all.iter().filter(|(_, queue)| queue == q).count();
    assert_eq!(
        (of("capped"), of("slow"), of("q")),
        (5, 3, 200),
        "max_concurrent 5, 3 tokens, all of the unlimited queue"
    );
    let unique: HashSet<_> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(unique.len(), all.len(), "no task handed out twice");
}

/// Limits set, changed and cleared between claims of the same queues apply from the next
/// claim on (a store may remember which claims met limits; it must not trust that).
pub async fn limits_changed_between_claims_apply_at_once(s: Arc<dyn Store>) {
    s.enqueue((0..20).map(|n| new_task("email", n)).collect(), T0)
        .await
        .expect("enqueue");
    for queues in [&["email"][..], &["email", "other"][..], &[][..]] {
        let r = |limit| req(queues, limit, 600_000, at(1));
        s.configure_queue("email", QueueConfig::default())
            .await
            .expect("no limits");
        let before = s.claim(&r(2)).await.expect("claim").len();
        assert_eq!(before, 2, "{queues:?}");
        s.configure_queue("email", limited(None, Some(3)))
            .await
            .expect("limit");
        assert_eq!(s.claim(&r(5)).await.expect("claim").len(), 1, "{queues:?}");
        assert_eq!(s.claim(&r(5)).await.expect("claim").len(), 0, "{queues:?}");
        s.configure_queue("email", QueueConfig::default())
            .await
            .expect("cleared");
        assert_eq!(s.claim(&r(2)).await.expect("claim").len(), 2, "{queues:?}");
        // Finish what runs, for the next round.
        let running = s
            .list_tasks(&TaskQuery {
                state: Some(TaskState::Running),
                ..TaskQuery::default()
            })
            .await
            .expect("list");
        for t in running {
            s.delete(t.id, at(1)).await.expect("delete");
        }
    }
}

/// A named task delayed 60 s, with a 60 s tombstone window.
fn named_delayed(queue: &str, name: &str) -> NewTask {
    let mut t = new_task(queue, 0);
    t.unique_name = Some(name.into());
    t.run_at = at(60_000);
    t.tombstone = Duration::from_secs(60);
    t
}

/// Asserts that `name` is taken at `until - 1 ms` and free at `until`.
async fn taken_until(s: &dyn Store, t: &NewTask, until: Timestamp) {
    let r = s.enqueue(vec![t.clone()], Timestamp(until.0 - 1)).await;
    assert!(
        matches!(&r, Err(StoreError::AlreadyExists(n)) if Some(n) == t.unique_name.as_ref()),
        "taken 1 ms before {until}: {r:?}"
    );
    s.enqueue(vec![t.clone()], until)
        .await
        .unwrap_or_else(|e| panic!("free at {until}: {e}"));
}

/// Issue 7, item 7: deleting a named task keeps its name taken for its tombstone window
/// from the delete, exactly (App Engine, Cloud Tasks); so does deleting it while running.
pub async fn deleting_a_named_task_keeps_its_name(s: Arc<dyn Store>) {
    let t = named_delayed("q", "invoice-42");
    let id = s.enqueue(vec![t.clone()], T0).await.expect("enqueue")[0];
    s.delete(id, at(1_000)).await.expect("delete");
    let r = s.enqueue(vec![t.clone()], at(2_000)).await;
    assert!(
        matches!(&r, Err(StoreError::AlreadyExists(n)) if n == "invoice-42"),
        "{r:?}"
    );
    // All or nothing still: an unnamed task beside it is not stored either.
    let before = s.list_tasks(&TaskQuery::default()).await.expect("list");
    let r = s
        .enqueue(vec![new_task("q", 7), t.clone()], at(2_000))
        .await;
    assert!(matches!(r, Err(StoreError::AlreadyExists(_))), "{r:?}");
    assert_eq!(
        s.list_tasks(&TaskQuery::default()).await.expect("list"),
        before
    );
    taken_until(&*s, &t, at(61_000)).await;

    // Deleted while running: the same, from the delete.
    let mut r = named_delayed("q", "running-7");
    r.run_at = T0;
    let id = s.enqueue(vec![r.clone()], T0).await.expect("enqueue")[0];
    let c = s.claim(&req(&["q"], 1, 30_000, T0)).await.expect("claim");
    assert_eq!(ids_of(&c), vec![id]);
    s.delete(id, at(5_000)).await.expect("delete running");
    taken_until(&*s, &r, at(65_000)).await;
}

/// Purging a queue keeps the names of its purged tasks taken for their windows.
pub async fn purging_keeps_names(s: Arc<dyn Store>) {
    let a = named_delayed("q", "a");
    let mut b = named_delayed("q", "b");
    b.tombstone = Duration::from_secs(10);
    s.enqueue(vec![a.clone(), b.clone(), new_task("q", 3)], T0)
        .await
        .expect("enqueue");
    assert_eq!(s.purge("q", at(1_000)).await.expect("purge"), 3);
    taken_until(&*s, &b, at(11_000)).await;
    taken_until(&*s, &a, at(61_000)).await;
}

/// A deleted task that had finished keeps its name only for what was left of its window
/// (counted from its end, as if it had stayed); one whose window passed takes nothing, and
/// its delete does not shorten the hold another delete of that name left.
pub async fn deleting_a_finished_task_keeps_its_window(s: Arc<dyn Store>) {
    let finished = |queue: &str, name: &str| {
        let mut t = named_delayed(queue, name);
        t.run_at = T0;
        t
    };
    for (queue, name) in [("q1", "done-1"), ("q2", "done-2")] {
        s.enqueue(vec![finished(queue, name)], T0)
            .await
            .expect("enqueue");
        let c = s.claim(&req(&[queue], 1, 30_000, T0)).await.expect("claim");
        finish_one(&*s, &c[0], Outcome::Done, at(20))
            .await
            .expect("done");
    }
    let named = |name: &'static str| {
        let s = s.clone();
        async move {
            s.list_tasks(&TaskQuery::default())
                .await
                .expect("list")
                .into_iter()
                .filter(|i| i.unique_name.as_deref() == Some(name))
                .map(|i| i.id)
                .collect::<Vec<_>>()
        }
    };
    let done1 = named("done-1").await;
    s.delete(done1[0], at(30_000)).await.expect("delete done");
    taken_until(&*s, &finished("q1", "done-1"), at(60_020)).await;

    // `done-2`'s window passed; a new holder with a 1 s window is deleted, then the old
    // finished one: the 1 s hold stands, neither shortened nor lengthened.
    let done2 = named("done-2").await;
    let mut short = named_delayed("q2", "done-2");
    short.tombstone = Duration::from_secs(1);
    let new = s.enqueue(vec![short.clone()], at(100_000)).await;
    let new = new.expect("free after the window")[0];
    s.delete(new, at(100_000))
        .await
        .expect("delete the new one");
    s.delete(done2[0], at(100_500))
        .await
        .expect("delete the old one");
    taken_until(&*s, &short, at(101_000)).await;
}

/// Deleting an unnamed task takes no name: not even the empty one.
pub async fn unnamed_delete_takes_no_name(s: Arc<dyn Store>) {
    let mut later = new_task("q", 1);
    later.run_at = at(60_000);
    let ids = s
        .enqueue(vec![later, new_task("q", 2), new_task("p", 3)], T0)
        .await
        .expect("enqueue");
    s.delete(ids[0], at(1)).await.expect("delete");
    assert_eq!(s.purge("p", at(2)).await.expect("purge"), 1);
    let mut empty = new_task("q", 4);
    empty.unique_name = Some(String::new());
    s.enqueue(vec![empty], at(3))
        .await
        .expect("no name was taken");
}

/// Deleting the named first step of a live iterative run keeps the name taken while the
/// run is live, and for the window after the run ends.
pub async fn deleting_a_runs_named_step_keeps_its_name(s: Arc<dyn Store>) {
    let mut t = iteration_task();
    t.unique_name = Some("walk-gsoc".into());
    t.tombstone = Duration::from_secs(60);
    let run = s.enqueue(vec![t.clone()], T0).await.expect("enqueue")[0];
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    finish_one(&*s, &c[0], Outcome::Continue { run_at: at(10) }, at(10))
        .await
        .expect("continue");
    s.delete(run, at(11))
        .await
        .expect("delete the named first step");
    let r = s.enqueue(vec![t.clone()], at(120_000)).await;
    assert!(
        matches!(&r, Err(StoreError::AlreadyExists(n)) if n == "walk-gsoc"),
        "the live run keeps its name: {r:?}"
    );
    let c = s
        .claim(&req(&[], 1, 30_000, at(120_000)))
        .await
        .expect("claim");
    finish_one(&*s, &c[0], Outcome::Done, at(200_000))
        .await
        .expect("done");
    taken_until(&*s, &t, at(260_000)).await;

    // The live named step of a run, deleted: the run is cancelled, its name kept from then.
    let mut u = iteration_task();
    u.unique_name = Some("walk-2".into());
    u.tombstone = Duration::from_secs(60);
    let run = s
        .enqueue(vec![u.clone()], at(300_000))
        .await
        .expect("enqueue")[0];
    s.delete(run, at(300_500)).await.expect("delete");
    taken_until(&*s, &u, at(360_500)).await;
}

// ---- review of the policy and worker work (issues 7 and 9) ----------------------------

/// A batch holding a stale lease of a task (an execution whose lease lapsed) beside its
/// current lease: the stale outcome is refused, the current one recorded, on every store.
/// (A worker can hand over both in one batch when its outcome writer fell a lease behind
/// and it re-claimed the task.)
pub async fn finish_of_a_stale_and_the_current_lease_in_one_batch(s: Arc<dyn Store>) {
    let id = s
        .enqueue(vec![new_task("q", 1)], T0)
        .await
        .expect("enqueue")[0];
    let old = s.claim(&req(&[], 1, 1_000, T0)).await.expect("claim");
    let new = s
        .claim(&req(&[], 1, 30_000, at(2_000)))
        .await
        .expect("claim");
    assert_eq!(
        (old.len(), new.len()),
        (1, 1),
        "the lapsed lease is claimed again"
    );
    let r = s
        .finish(
            vec![
                Finish {
                    lease: old[0].lease,
                    outcome: Outcome::Failed {
                        error: "stale".into(),
                    },
                    started_at: T0,
                },
                Finish {
                    lease: new[0].lease,
                    outcome: Outcome::Done,
                    started_at: at(2_000),
                },
            ],
            "w1",
            at(2_500),
        )
        .await
        .expect("finish");
    assert!(
        matches!(r[0], Err(StoreError::LeaseLost(_))),
        "the stale lease: {:?}",
        r[0]
    );
    assert!(r[1].is_ok(), "the current lease: {:?}", r[1]);
    let d = s.task(id).await.expect("task").expect("exists");
    assert_eq!(d.info.state, TaskState::Done);
    let outcomes: Vec<&str> = d.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["lease lapsed", "done"]);
}

/// A queue name holding a NUL byte is refused by the management calls the same way on
/// every store (as `enqueue` refuses it), instead of being stored by some and failing
/// with a transient-looking backend error on PostgreSQL.
pub async fn management_calls_refuse_nul_queue_names(s: Arc<dyn Store>) {
    let invalid = |what: &str, r: Result<(), StoreError>| match r {
        Err(StoreError::InvalidValue(m)) => assert!(m.contains("NUL"), "{what}: {m}"),
        other => panic!("{what}: expected InvalidValue, got {other:?}"),
    };
    invalid(
        "configure_queue",
        s.configure_queue("q\0", limited(Some(1.0), None)).await,
    );
    invalid("set_paused", s.set_paused("q\0", true).await);
    invalid("purge", s.purge("q\0", T0).await.map(|_| ()));
    let queues = s.queues().await.expect("queues");
    assert!(
        queues.iter().all(|q| !q.name.contains('\0')),
        "nothing was stored"
    );
}

/// A pseudo-random (incompressible) string of `n` ASCII letters.
fn noise(n: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// A very long de-duplication or queue name is treated the same on every store: one of
/// [`MAX_NAME_BYTES`](taskq_runtime::value::MAX_NAME_BYTES) is stored (and a stored unique
/// name is taken), a longer one is refused up front with `InvalidValue`, never a backend
/// error from one store's index (PostgreSQL's B-tree entries hold at most about 2.7 KB).
pub async fn long_names_are_the_same_on_every_store(s: Arc<dyn Store>) {
    use taskq_runtime::value::MAX_NAME_BYTES;
    for (what, n) in [
        ("unique name", MAX_NAME_BYTES),
        ("queue name", MAX_NAME_BYTES),
        ("unique name", 100_000),
        ("queue name", 100_000),
        ("unique name", MAX_NAME_BYTES + 1),
    ] {
        let mut t = new_task("q", 1);
        if what == "unique name" {
            t.unique_name = Some(noise(n, n as u64));
        } else {
            t.queue = noise(n, n as u64 + 1);
        }
        match s.enqueue(vec![t.clone()], T0).await {
            Ok(ids) if n <= MAX_NAME_BYTES => {
                assert_eq!(ids.len(), 1);
                if what == "unique name" {
                    assert!(
                        matches!(
                            s.enqueue(vec![t], T0).await,
                            Err(StoreError::AlreadyExists(_))
                        ),
                        "a stored {what} is taken"
                    );
                }
            }
            Err(StoreError::InvalidValue(m)) if n > MAX_NAME_BYTES => {
                assert!(m.contains(&format!("is {n} bytes long")), "{m}");
            }
            other => panic!("a {n}-byte {what}: {other:?}"),
        }
    }
    let long = noise(MAX_NAME_BYTES + 1, 3);
    assert!(matches!(
        s.set_paused(&long, true).await,
        Err(StoreError::InvalidValue(_))
    ));
}

// ---- cases that were SQLite's own tests (issue 7: one suite for every store) -----------

/// The attempt history and `last_error` each outcome leaves: its label, its error (or
/// none), the worker and the times; a lapsed lease is recorded with the text of
/// [`LEASE_LAPSED`](taskq_runtime::policy::LEASE_LAPSED), which also becomes the task's
/// `last_error` while the new holder runs it.
pub async fn every_outcome_leaves_its_attempt_and_error(s: Arc<dyn Store>) {
    let (lapsed_label, lapsed_error) = taskq_runtime::policy::LEASE_LAPSED;
    let ids = s
        .enqueue((0..6).map(|n| new_task("q", n)).collect(), T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&[], 6, 30_000, T0)).await.expect("claim");
    assert_eq!(c.len(), 6);
    let outcomes = [
        Outcome::Done,
        Outcome::Failed {
            error: "bad address".into(),
        },
        Outcome::Retry {
            error: "smtp 451".into(),
            run_at: at(60_000),
        },
        Outcome::Dead {
            error: "gave up".into(),
        },
        Outcome::Release,
    ];
    let r = s
        .finish(
            c.iter()
                .zip(outcomes)
                .map(|(c, outcome)| Finish {
                    lease: c.lease,
                    outcome,
                    started_at: at(1),
                })
                .collect(),
            "w1",
            at(7),
        )
        .await
        .expect("finish");
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    let want: [(&str, Option<&str>, TaskState); 5] = [
        ("done", None, TaskState::Done),
        ("failed", Some("bad address"), TaskState::Failed),
        ("retry", Some("smtp 451"), TaskState::Pending),
        ("dead", Some("gave up"), TaskState::Dead),
        ("released", None, TaskState::Pending),
    ];
    for (id, (label, error, state)) in ids.iter().zip(want) {
        let d = s.task(*id).await.expect("task").expect("exists");
        assert_eq!(d.info.state, state, "task {id} ({label})");
        assert_eq!(d.info.last_error.as_deref(), error, "task {id} ({label})");
        assert_eq!(d.attempts.len(), 1, "task {id} ({label})");
        let a = &d.attempts[0];
        assert_eq!(
            (a.outcome.as_str(), a.error.as_deref(), a.attempt),
            (label, error, 1),
            "task {id}"
        );
        assert_eq!(
            (a.worker.as_str(), a.started_at, a.finished_at),
            ("w1", at(1), at(7))
        );
    }
    // The sixth lapses (its lease ends at 30 s) and is taken again.
    let again = s
        .claim(&req(&[], 10, 30_000, at(30_000)))
        .await
        .expect("claim");
    assert_eq!(
        again.iter().map(|c| c.lease.id).collect::<Vec<_>>(),
        vec![ids[5], ids[4]],
        "by run_at: the lapsed task's (T0) before the released one's (its release)"
    );
    let d = s.task(ids[5]).await.expect("task").expect("exists");
    assert_eq!(d.info.state, TaskState::Running);
    assert_eq!(d.info.last_error.as_deref(), Some(lapsed_error));
    assert_eq!(d.attempts.len(), 1);
    let a = &d.attempts[0];
    assert_eq!(
        (a.outcome.as_str(), a.error.as_deref(), a.attempt),
        (lapsed_label, Some(lapsed_error), 1)
    );
    assert_eq!((a.started_at, a.finished_at), (T0, at(30_000)));
}

/// `next_due` looks only at the queues it is given (all when none), counts pending run
/// times and running leases' ends alike, and leaves out paused queues even when named.
pub async fn next_due_covers_the_queues_asked_for(s: Arc<dyn Store>) {
    let mut a = new_task("a", 1);
    a.run_at = at(500);
    let mut b = new_task("b", 2);
    b.run_at = at(100);
    let mut c = new_task("c", 3);
    c.run_at = at(50);
    s.enqueue(vec![a, b, c], T0).await.expect("enqueue");
    s.set_paused("c", true).await.expect("pause");
    let due = |qs: &[&str]| {
        let qs: Vec<String> = qs.iter().map(|q| q.to_string()).collect();
        let s = s.clone();
        async move { s.next_due(&qs).await.expect("next_due") }
    };
    assert_eq!(due(&[]).await, Some(at(100)));
    assert_eq!(due(&["a"]).await, Some(at(500)));
    assert_eq!(due(&["a", "b"]).await, Some(at(100)));
    assert_eq!(due(&["c"]).await, None, "paused");
    assert_eq!(due(&["nowhere"]).await, None);
    let got = s
        .claim(&req(&["a"], 10, 1_000, at(500)))
        .await
        .expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(due(&["a"]).await, Some(at(1_500)), "the lease's end");
    s.set_paused("c", false).await.expect("resume");
    assert_eq!(due(&[]).await, Some(at(50)));
}

/// A finished named task's name is free again exactly when its window ends, counted from
/// its finish (`finished_at + window > now` holds it).
pub async fn finished_name_is_free_exactly_when_its_window_ends(s: Arc<dyn Store>) {
    let mut t = new_task("q", 1);
    t.unique_name = Some("nightly".into());
    t.tombstone = Duration::from_millis(2_500);
    s.enqueue(vec![t.clone()], T0).await.expect("enqueue");
    let c = s.claim(&req(&[], 1, 30_000, at(3))).await.expect("claim");
    finish_one(&*s, &c[0], Outcome::Done, at(20))
        .await
        .expect("finish");
    taken_until(&*s, &t, at(2_520)).await;
}

/// `wait_for_work` returns early when work is stored through the same store (memory: its
/// notify; SQLite: its notify; PostgreSQL: `LISTEN/NOTIFY`), long before its timeout.
pub async fn wait_for_work_wakes_on_new_work(s: Arc<dyn Store>) {
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            s.wait_for_work(&["q".to_string()], Duration::from_secs(60))
                .await;
            started.elapsed()
        })
    };
    // Enqueue until the waiter returns: one enqueue could come before it waits.
    let started = std::time::Instant::now();
    let mut n = 0;
    while !waiter.is_finished() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.enqueue(vec![new_task("q", n)], T0)
            .await
            .expect("enqueue");
        n += 1;
    }
    let waited = waiter.await.expect("the waiter");
    assert!(
        waited < Duration::from_secs(20),
        "wait_for_work slept {waited:?} though work was stored"
    );
}

/// A tombstone window too long for milliseconds in an `i64` (`Duration::MAX`, "keep the
/// name for ever") saturates: the name stays taken after the task finishes, after it is
/// deleted live or finished, and after a purge, on every store; no store wraps it to a
/// negative window (which frees the name at once) or fails on the sum.
pub async fn a_huge_tombstone_window_keeps_the_name(s: Arc<dyn Store>) {
    let ten_years = 10 * 365 * 24 * 3_600_000;
    for (w, window) in [Duration::MAX, Duration::from_millis(u64::MAX)]
        .into_iter()
        .enumerate()
    {
        for (i, end) in ["done", "deleted live", "deleted done", "purged"]
            .into_iter()
            .enumerate()
        {
            let mut t = new_task("huge", i as i64);
            t.unique_name = Some(format!("for ever {w}, {end}"));
            t.tombstone = window;
            let id = s.enqueue(vec![t.clone()], T0).await.expect("enqueue")[0];
            if end == "purged" {
                assert_eq!(s.purge("huge", at(1)).await.expect("purge"), 1);
            } else if end == "deleted live" {
                s.delete(id, at(1)).await.expect("delete");
            } else {
                let c = s
                    .claim(&req(&["huge"], 1, 30_000, T0))
                    .await
                    .expect("claim");
                assert_eq!(c.len(), 1);
                finish_one(&*s, &c[0], Outcome::Done, at(1))
                    .await
                    .expect("finish");
                if end == "deleted done" {
                    s.delete(id, at(2)).await.expect("delete");
                }
            }
            let r = s.enqueue(vec![t], at(ten_years)).await;
            assert!(
                matches!(&r, Err(StoreError::AlreadyExists(_))),
                "{window:?} window, {end}: the name is still taken ten years on: {r:?}"
            );
        }
        s.purge("huge", at(3)).await.expect("purge");
    }
}

/// An iteration run's counts are kept up to [`MAX_COUNT`](taskq_runtime::store::MAX_COUNT)
/// (`i64::MAX`, what a database integer holds) on every store: a larger total is kept as
/// that, and `processed` saturates there instead of overflowing (a panic, a float, or an
/// error on a database store).
pub async fn iteration_counts_saturate_alike(s: Arc<dyn Store>) {
    let max = taskq_runtime::store::MAX_COUNT;
    let run = s
        .enqueue(vec![iteration_task()], T0)
        .await
        .expect("enqueue")[0];
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    for (i, (processed, total)) in [(max - 1, Some(u64::MAX)), (u64::MAX, None), (5, None)]
        .into_iter()
        .enumerate()
    {
        s.checkpoint(
            c[0].lease,
            Checkpoint {
                cursor: json!(i),
                processed,
                total,
            },
            at(1 + i as i64),
        )
        .await
        .expect("checkpoint");
    }
    let it = s.iteration(run).await.expect("iteration").expect("exists");
    assert_eq!((it.processed, it.batches, it.total), (max, 3, Some(max)));
    finish_one(&*s, &c[0], Outcome::Continue { run_at: at(5) }, at(5))
        .await
        .expect("continue");
    let c = s.claim(&req(&[], 1, 30_000, at(5))).await.expect("claim");
    let cur = c[0].iteration.clone().expect("a step carries its run");
    assert_eq!((cur.processed, cur.total), (max, Some(max)));
}

/// When several tasks of one `enqueue` conflict, `AlreadyExists` names the first of them
/// in the call's order, whether its name is taken in the store or repeats an earlier
/// task's in the same call; nothing is stored either way.
pub async fn already_exists_names_the_first_conflict(s: Arc<dyn Store>) {
    let named = |n: &str| {
        let mut t = new_task("q", 0);
        t.unique_name = Some(n.into());
        t
    };
    s.enqueue(vec![named("taken-1"), named("taken-2")], T0)
        .await
        .expect("enqueue");
    let calls: [(&[&str], &str); 5] = [
        (&["free-1", "taken-2", "taken-1"], "taken-2"),
        (&["taken-1", "taken-2"], "taken-1"),
        (&["twice", "twice", "taken-1"], "twice"),
        (&["free-1", "taken-2", "free-1"], "taken-2"),
        (&["free-1", "free-2", "free-2", "free-1"], "free-2"),
    ];
    for (names, first) in calls {
        let r = s
            .enqueue(names.iter().map(|n| named(n)).collect(), at(1))
            .await;
        assert!(
            matches!(&r, Err(StoreError::AlreadyExists(n)) if n == first),
            "{names:?}: {r:?}"
        );
    }
    assert_eq!(
        s.list_tasks(&TaskQuery::default())
            .await
            .expect("list")
            .len(),
        2,
        "nothing stored by the refused calls"
    );
}

/// One finish batch holding a task twice, under its lapsed lease and its current one (a
/// worker that got a task back after its own lease lapsed, both outcomes queued
/// together): the entry of the current lease applies wherever it stands in the batch, the
/// stale one is lost; the same lease twice applies once.
pub async fn finish_batch_with_a_stale_and_a_held_lease_of_one_task(s: Arc<dyn Store>) {
    let ids = s
        .enqueue((0..3).map(|n| new_task("q", n)).collect(), T0)
        .await
        .expect("enqueue");
    let stale = s.claim(&req(&[], 3, 1_000, T0)).await.expect("claim");
    let held = s
        .claim(&req(&[], 3, 30_000, at(1_000)))
        .await
        .expect("claim");
    assert_eq!(held.len(), 3, "every lease lapsed and was claimed again");
    let entry = |c: &ClaimedTask| Finish {
        lease: c.lease,
        outcome: Outcome::Done,
        started_at: T0,
    };
    let r = s
        .finish(
            vec![
                entry(&stale[0]),
                entry(&held[0]),
                entry(&held[1]),
                entry(&stale[1]),
                entry(&held[2]),
                entry(&held[2]),
            ],
            "w1",
            at(2_000),
        )
        .await
        .expect("finish");
    let ok: Vec<bool> = r.iter().map(Result::is_ok).collect();
    assert_eq!(ok, vec![false, true, true, false, true, false], "{r:?}");
    for id in ids {
        let d = s.task(id).await.expect("task").expect("exists");
        assert_eq!(d.info.state, TaskState::Done, "task {id}");
        let outcomes: Vec<&str> = d.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, vec!["lease lapsed", "done"], "task {id}");
    }
}

/// A heartbeat of one task under its lapsed lease and its current one: the current lease
/// is extended, and the task's id is reported lost once, for the stale lease.
pub async fn heartbeat_reports_a_stale_lease_beside_the_held_one(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(vec![new_task("q", 1)], T0)
        .await
        .expect("enqueue");
    let stale = s.claim(&req(&[], 1, 1_000, T0)).await.expect("claim");
    let held = s
        .claim(&req(&[], 1, 1_000, at(1_000)))
        .await
        .expect("claim");
    assert_eq!(held.len(), 1);
    let lost = s
        .heartbeat(
            &[stale[0].lease, held[0].lease, held[0].lease],
            "w1",
            at(60_000),
        )
        .await
        .expect("heartbeat");
    assert_eq!(lost, vec![ids[0]]);
    let lost = s
        .heartbeat(&[held[0].lease, stale[0].lease], "w1", at(60_000))
        .await
        .expect("heartbeat");
    assert_eq!(lost, vec![ids[0]]);
    let info = s.task(ids[0]).await.expect("task").expect("exists").info;
    assert_eq!(info.lease_until, Some(at(60_000)));
}

/// The continuation steps one `finish` stores are created in the batch's order, so that
/// their ids (the claim order's last key) follow it on every store.
pub async fn continuation_steps_follow_the_batch_order(s: Arc<dyn Store>) {
    let runs = s
        .enqueue(vec![iteration_task(), iteration_task()], T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&[], 2, 30_000, T0)).await.expect("claim");
    assert_eq!(c.len(), 2);
    let (first, second) = (&c[0], &c[1]);
    assert_eq!(first.lease.id, runs[0]);
    let r = s
        .finish(
            [second, first]
                .iter()
                .map(|c| Finish {
                    lease: c.lease,
                    outcome: Outcome::Continue { run_at: at(10) },
                    started_at: T0,
                })
                .collect(),
            "w1",
            at(5),
        )
        .await
        .expect("finish");
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    let next = s.claim(&req(&[], 2, 30_000, at(10))).await.expect("claim");
    let order: Vec<TaskId> = next
        .iter()
        .map(|c| c.iteration.as_ref().expect("a step").run)
        .collect();
    assert_eq!(
        order,
        vec![runs[1], runs[0]],
        "the step finished first in the batch was stored first"
    );
    assert!(next[0].lease.id < next[1].lease.id);
}

/// Issue 9 (audit): the tombstone window's boundary, exactly, for every way a named task
/// ends: done, failed, dead, and an iterative run that ends done. The contract
/// ([`Store::enqueue`]): a name is taken while `end + window > now` and free again at the
/// window's end exactly. So with an end at `E` and a window `W`, an enqueue of the name at
/// `E + W - 1 ms` is refused, and at `E + W` and at `E + W + 1 ms` it is accepted (each
/// probe on a name of its own, since an accepted probe takes its name again). Probes run
/// in time order across the cases.
pub async fn tombstone_window_boundary_for_every_end(s: Arc<dyn Store>) {
    const END: i64 = 20;
    const WINDOW_MS: i64 = 60_000;
    let ends: [(&str, Option<Outcome>); 4] = [
        ("done", Some(Outcome::Done)),
        (
            "failed",
            Some(Outcome::Failed {
                error: "fatal".into(),
            }),
        ),
        (
            "dead",
            Some(Outcome::Dead {
                error: "gave up".into(),
            }),
        ),
        ("run", None),
    ];
    let probe_offsets = [-1, 0, 1];
    let named = |end: &str, probe: usize| -> NewTask {
        let mut t = match end {
            "run" => iteration_task(),
            _ => new_task(&format!("q-{end}"), probe as i64),
        };
        t.queue = format!("q-{end}-{probe}");
        t.unique_name = Some(format!("{end}-{probe}"));
        t.tombstone = Duration::from_millis(WINDOW_MS as u64);
        t
    };
    for (end, outcome) in &ends {
        for probe in 0..probe_offsets.len() {
            let t = named(end, probe);
            s.enqueue(vec![t.clone()], T0).await.expect("enqueue");
            let c = s
                .claim(&req(&[t.queue.as_str()], 1, 30_000, at(1)))
                .await
                .expect("claim");
            assert_eq!(c.len(), 1, "{end}-{probe}");
            // A run ends when its (last) step is done.
            let outcome = outcome.clone().unwrap_or(Outcome::Done);
            finish_one(&*s, &c[0], outcome, at(END))
                .await
                .expect("finish");
            let r = s.enqueue(vec![t.clone()], at(END + WINDOW_MS / 2)).await;
            assert!(
                matches!(&r, Err(StoreError::AlreadyExists(_))),
                "{end}-{probe} inside its window: {r:?}"
            );
        }
    }
    let runs = s.iterations(10).await.expect("iterations");
    assert_eq!(runs.len(), probe_offsets.len());
    assert!(runs.iter().all(|r| r.state == RunState::Done), "{runs:?}");
    for (probe, offset) in probe_offsets.iter().enumerate() {
        let now = at(END + WINDOW_MS + offset);
        for (end, _) in &ends {
            let t = named(end, probe);
            let r = s.enqueue(vec![t.clone()], now).await;
            if *offset < 0 {
                assert!(
                    matches!(&r, Err(StoreError::AlreadyExists(n)) if n == &format!("{end}-{probe}")),
                    "{end}: taken at window - 1 ms: {r:?}"
                );
            } else {
                assert!(
                    r.is_ok(),
                    "{end}: free at window {offset:+} ms (free at the window's end exactly): {r:?}"
                );
            }
        }
    }
}

// ---- retention (issue 10) --------------------------------------------------------------

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Stores `t`, claims it alone from its queue at `end` and records `outcome` at `end`.
async fn ended_as(s: &dyn Store, t: NewTask, outcome: Outcome, end: Timestamp) -> TaskId {
    let queue = t.queue.clone();
    let id = s.enqueue(vec![t], T0).await.expect("enqueue")[0];
    let c = s
        .claim(&req(&[&queue], 1, 30_000, end))
        .await
        .expect("claim");
    assert_eq!(ids_of(&c), vec![id], "the only due task of `{queue}`");
    finish_one(s, &c[0], outcome, end).await.expect("finish");
    id
}

fn dead(why: &str) -> Outcome {
    Outcome::Dead { error: why.into() }
}

fn failed(why: &str) -> Outcome {
    Outcome::Failed { error: why.into() }
}

async fn exists(s: &dyn Store, id: TaskId) -> bool {
    s.task(id).await.expect("task() works").is_some()
}

/// Issue 10: a done task is kept for 24 hours after it finished and is gone, with its
/// attempts, from then on; failed and dead ones are kept 7 days. The report counts what
/// went, by state.
pub async fn retention_keeps_done_a_day_and_failed_a_week(s: Arc<dyn Store>) {
    let end = at(1_000);
    let done = ended_as(&*s, new_task("q", 1), Outcome::Done, end).await;
    let dead = ended_as(&*s, new_task("q", 2), dead("spent"), end).await;
    let failed = ended_as(&*s, new_task("q", 3), failed("fatal"), end).await;

    let r = s.prune(Timestamp(end.0 + DAY - 1), 0).await.expect("prune");
    assert!(r.is_empty(), "nothing is due a millisecond before: {r:?}");
    for id in [done, dead, failed] {
        assert!(exists(&*s, id).await, "task {id} kept");
    }

    let r = s.prune(Timestamp(end.0 + DAY), 0).await.expect("prune");
    assert_eq!(r.tasks, vec![(TaskState::Done, 1)], "{r:?}");
    assert!(!r.busy);
    assert!(
        !exists(&*s, done).await,
        "the done task is gone at its end + 24 h"
    );
    let listed: Vec<TaskId> = s
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list")
        .iter()
        .map(|t| t.id)
        .collect();
    assert!(!listed.contains(&done), "{listed:?}");
    assert!(exists(&*s, dead).await && exists(&*s, failed).await);

    let r = s
        .prune(Timestamp(end.0 + 7 * DAY - 1), 0)
        .await
        .expect("prune");
    assert!(r.is_empty(), "{r:?}");
    assert!(exists(&*s, dead).await && exists(&*s, failed).await);
    let r = s.prune(Timestamp(end.0 + 7 * DAY), 0).await.expect("prune");
    assert_eq!(
        r.tasks,
        vec![(TaskState::Failed, 1), (TaskState::Dead, 1)],
        "{r:?}"
    );
    assert_eq!((r.count(TaskState::Dead), r.total_tasks()), (1, 2));
    assert!(!exists(&*s, dead).await && !exists(&*s, failed).await);
    let counts = s.queues().await.expect("queues");
    assert!(
        counts.iter().all(|q| q.counts.iter().all(|(_, n)| *n == 0)),
        "{counts:?}"
    );
}

/// Pruning never touches a pending, scheduled or running task, however old (a running
/// task whose lease lapsed included), nor a dead task put back with retry.
pub async fn retention_never_touches_live_tasks(s: Arc<dyn Store>) {
    let pending = s
        .enqueue(vec![new_task("q", 1)], T0)
        .await
        .expect("enqueue")[0];
    let mut later = new_task("q", 2);
    later.run_at = at(400 * DAY);
    let scheduled = s.enqueue(vec![later], T0).await.expect("enqueue")[0];
    let mut r = new_task("run", 3);
    r.priority = 5;
    let running = s.enqueue(vec![r], T0).await.expect("enqueue")[0];
    let c = s.claim(&req(&["run"], 1, 1_000, T0)).await.expect("claim");
    assert_eq!(ids_of(&c), vec![running]);
    let revived = ended_as(&*s, new_task("revive", 4), dead("spent"), at(10)).await;
    s.retry(revived, at(20)).await.expect("retry from dead");

    let far = at(300 * DAY);
    let report = s.prune(far, 0).await.expect("prune");
    assert!(report.is_empty(), "{report:?}");
    assert_eq!(state_of(&*s, pending).await, TaskState::Pending);
    assert_eq!(state_of(&*s, scheduled).await, TaskState::Pending);
    assert_eq!(state_of(&*s, running).await, TaskState::Running);
    assert_eq!(state_of(&*s, revived).await, TaskState::Pending);
    let d = s.task(revived).await.expect("task").expect("kept");
    assert_eq!(d.attempts.len(), 1, "its history is kept with it");
}

/// A queue's retention, saved with its settings, overrides the defaults for its tasks
/// only; `Retention::OFF` keeps them for ever; going back to `None` restores the defaults.
pub async fn retention_per_queue_override_and_off(s: Arc<dyn Store>) {
    let short = Retention {
        done: Some(Duration::from_secs(3600)),
        failed: Some(Duration::from_secs(2 * 3600)),
    };
    for (queue, retention) in [("short", short), ("off", Retention::OFF)] {
        s.configure_queue(
            queue,
            QueueConfig {
                retention: Some(retention),
                ..QueueConfig::default()
            },
        )
        .await
        .expect("configure");
    }
    let saved = s.queues().await.expect("queues");
    let of = |name: &str| {
        saved
            .iter()
            .find(|q| q.name == name)
            .and_then(|q| q.config.retention)
    };
    assert_eq!(of("short"), Some(short));
    assert_eq!(of("off"), Some(Retention::OFF));

    let end = at(1_000);
    let short_done = ended_as(&*s, new_task("short", 1), Outcome::Done, end).await;
    let short_dead = ended_as(&*s, new_task("short", 2), dead("x"), end).await;
    let off_done = ended_as(&*s, new_task("off", 3), Outcome::Done, end).await;
    let off_dead = ended_as(&*s, new_task("off", 4), dead("x"), end).await;
    let default_done = ended_as(&*s, new_task("default", 5), Outcome::Done, end).await;

    let r = s
        .prune(Timestamp(end.0 + HOUR - 1), 0)
        .await
        .expect("prune");
    assert!(r.is_empty(), "{r:?}");
    let r = s.prune(Timestamp(end.0 + HOUR), 0).await.expect("prune");
    assert_eq!(r.tasks, vec![(TaskState::Done, 1)], "{r:?}");
    assert!(!exists(&*s, short_done).await);
    let r = s
        .prune(Timestamp(end.0 + 2 * HOUR), 0)
        .await
        .expect("prune");
    assert_eq!(r.tasks, vec![(TaskState::Dead, 1)], "{r:?}");
    assert!(!exists(&*s, short_dead).await);
    let r = s.prune(Timestamp(end.0 + DAY), 0).await.expect("prune");
    assert_eq!(r.tasks, vec![(TaskState::Done, 1)], "{r:?}");
    assert!(!exists(&*s, default_done).await);

    let r = s.prune(at(1_000 * DAY), 0).await.expect("prune");
    assert!(
        r.is_empty(),
        "a queue with retention off keeps everything: {r:?}"
    );
    assert!(exists(&*s, off_done).await && exists(&*s, off_dead).await);

    s.configure_queue("off", QueueConfig::default())
        .await
        .expect("back to the defaults");
    let r = s.prune(at(1_000 * DAY), 0).await.expect("prune");
    assert_eq!(r.total_tasks(), 2, "{r:?}");
    assert!(!exists(&*s, off_done).await && !exists(&*s, off_dead).await);
}

/// A named task pruned inside its tombstone window keeps its name taken until the window
/// ends, whatever the retention; the tombstone itself is pruned once it holds nothing. A
/// name whose window ended before its row was pruned leaves nothing behind.
pub async fn a_pruned_named_task_keeps_its_name_for_its_window(s: Arc<dyn Store>) {
    let mut t = new_task("q", 1);
    t.unique_name = Some("report-2030".into());
    t.tombstone = Duration::from_secs(2 * 24 * 3600);
    let end = at(1_000);
    let id = ended_as(&*s, t.clone(), Outcome::Done, end).await;
    let r = s.prune(Timestamp(end.0 + DAY), 0).await.expect("prune");
    assert_eq!(r.tasks, vec![(TaskState::Done, 1)], "{r:?}");
    assert!(!exists(&*s, id).await, "its row is gone");
    let again = s.enqueue(vec![t.clone()], Timestamp(end.0 + DAY + 1)).await;
    assert!(
        matches!(&again, Err(StoreError::AlreadyExists(n)) if n == "report-2030"),
        "the name is still taken after its row was pruned: {again:?}"
    );
    let r = s
        .prune(Timestamp(end.0 + 2 * DAY - 1), 0)
        .await
        .expect("prune");
    assert_eq!(r.tombstones, 0, "the tombstone still holds: {r:?}");
    let r = s.prune(Timestamp(end.0 + 2 * DAY), 0).await.expect("prune");
    assert_eq!(r.tombstones, 1, "its hold passed: {r:?}");
    let mut fresh = t.clone();
    fresh.run_at = Timestamp(end.0 + 2 * DAY);
    s.enqueue(vec![fresh], Timestamp(end.0 + 2 * DAY))
        .await
        .expect("free at the window's end");

    // A one-hour window ended long before the row went: nothing is left to hold.
    let mut u = new_task("p", 2);
    u.unique_name = Some("hourly".into());
    u.tombstone = Duration::from_secs(3600);
    ended_as(&*s, u.clone(), Outcome::Done, end).await;
    let r = s.prune(Timestamp(end.0 + 3 * DAY), 0).await.expect("prune");
    assert_eq!((r.count(TaskState::Done), r.tombstones), (1, 0), "{r:?}");
    s.enqueue(vec![u], Timestamp(end.0 + 3 * DAY))
        .await
        .expect("the name was free");
    let r = s.prune(Timestamp(end.0 + 3 * DAY), 0).await.expect("prune");
    assert_eq!(r.tombstones, 0, "no tombstone was written: {r:?}");
}

/// An iterative run's progress record goes with the step that ended the run: kept for
/// the retention of the run's final state from the run's end, gone (with that step) from
/// then on. Earlier steps go by their own ends. A named run's name stays taken for its
/// window after the run's end, though its record and steps were pruned. A cancelled run
/// is kept as long as a done one.
pub async fn retention_takes_a_run_with_its_last_step(s: Arc<dyn Store>) {
    let mut t = iteration_task();
    t.unique_name = Some("walk-all".into());
    t.tombstone = Duration::from_secs(2 * 24 * 3600);
    let run = s.enqueue(vec![t.clone()], T0).await.expect("enqueue")[0];
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    s.checkpoint(c[0].lease, cp(json!(10), 10), at(5))
        .await
        .expect("checkpoint");
    finish_one(&*s, &c[0], Outcome::Continue { run_at: at(10) }, at(10))
        .await
        .expect("continue");
    let c2 = s.claim(&req(&[], 1, 30_000, at(10))).await.expect("claim");
    let last = c2[0].lease.id;
    let end = at(HOUR);
    finish_one(&*s, &c2[0], Outcome::Done, end)
        .await
        .expect("done");

    let r = s.prune(Timestamp(end.0 + DAY - 1), 0).await.expect("prune");
    assert_eq!(
        (r.count(TaskState::Done), r.runs),
        (1, 0),
        "the first step went a day after it handed over: {r:?}"
    );
    assert!(!exists(&*s, run).await);
    assert!(exists(&*s, last).await);
    let it = s.iteration(run).await.expect("iteration");
    assert_eq!(
        it.map(|i| (i.state, i.processed)),
        Some((RunState::Done, 10)),
        "the record stays while the step that ended the run does"
    );

    let r = s.prune(Timestamp(end.0 + DAY), 0).await.expect("prune");
    assert_eq!((r.count(TaskState::Done), r.runs), (1, 1), "{r:?}");
    assert!(!exists(&*s, last).await);
    assert_eq!(s.iteration(run).await.expect("iteration"), None);
    assert!(s.iterations(10).await.expect("iterations").is_empty());
    // The name is held for its window after the run's end.
    taken_until(&*s, &t, Timestamp(end.0 + 2 * DAY)).await;

    // A cancelled run: its step is cancelled; both are kept a day from the cancel.
    let run2 = s
        .enqueue(vec![iteration_task()], T0)
        .await
        .expect("enqueue")[0];
    let cancel = at(3 * DAY);
    s.cancel_iteration(run2, cancel).await.expect("cancel");
    let r = s
        .prune(Timestamp(cancel.0 + DAY - 1), 0)
        .await
        .expect("prune");
    assert_eq!((r.total_tasks(), r.runs), (0, 0), "{r:?}");
    let r = s.prune(Timestamp(cancel.0 + DAY), 0).await.expect("prune");
    assert_eq!((r.count(TaskState::Cancelled), r.runs), (1, 1), "{r:?}");
    assert_eq!(s.iteration(run2).await.expect("iteration"), None);
}

/// A prune deletes in batches of the size asked for and goes on until nothing prunable
/// is left.
pub async fn prune_goes_on_batch_after_batch(s: Arc<dyn Store>) {
    let ids = s
        .enqueue((0..25).map(|n| new_task("q", n)).collect(), T0)
        .await
        .expect("enqueue");
    let c = s.claim(&req(&["q"], 25, 30_000, T0)).await.expect("claim");
    let r = s
        .finish(
            c.iter()
                .map(|c| Finish {
                    lease: c.lease,
                    outcome: Outcome::Done,
                    started_at: T0,
                })
                .collect(),
            "w1",
            at(1),
        )
        .await
        .expect("finish");
    assert!(r.iter().all(Result::is_ok));
    let r = s.prune(at(1 + DAY), 4).await.expect("prune");
    assert_eq!(r.tasks, vec![(TaskState::Done, 25)], "{r:?}");
    for id in ids {
        assert!(!exists(&*s, id).await);
    }
    assert!(s
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list")
        .is_empty());
}

/// Issue 10: a worker prunes by itself, at its clock's time (here a manual one): the done
/// task goes once its day has passed on that clock, the dead one once its week has.
pub async fn a_worker_prunes_on_its_clock(s: Arc<dyn Store>) {
    // A worker needs a registered task to start; this one never runs.
    #[taskq_runtime::task(queue = "retention-unused")]
    async fn never_runs() -> Result<(), taskq_runtime::TaskError> {
        Ok(())
    }
    let end = at(1_000);
    let done = ended_as(&*s, new_task("q", 1), Outcome::Done, end).await;
    let dead = ended_as(&*s, new_task("q", 2), dead("spent"), end).await;
    let clock = taskq_runtime::Clock::manual(Timestamp(end.0 + DAY));
    let worker = taskq_runtime::Worker::builder(s.clone())
        .queues(["retention-unused"])
        .clock(clock.clone())
        .prune_interval(Duration::from_millis(20))
        .build()
        .expect("build")
        .spawn();
    let gone = |id: TaskId| {
        let s = s.clone();
        move || {
            let s = s.clone();
            async move { !exists(&*s, id).await }
        }
    };
    crate::wait_until(
        "the worker pruned the done task",
        Duration::from_secs(30),
        gone(done),
    )
    .await;
    assert!(exists(&*s, dead).await, "the dead task is kept its week");
    clock.advance_to(Timestamp(end.0 + 7 * DAY));
    crate::wait_until(
        "the worker pruned the dead task",
        Duration::from_secs(30),
        gone(dead),
    )
    .await;
    worker.shutdown().await.expect("shutdown");
}

/// The steps of `run` (every row whose run it is), oldest first.
async fn steps_of(s: &dyn Store, run: TaskId) -> Vec<taskq_runtime::TaskInfo> {
    let mut steps: Vec<_> = s
        .list_tasks(&TaskQuery {
            limit: 10_000,
            ..TaskQuery::default()
        })
        .await
        .expect("list")
        .into_iter()
        .filter(|t| t.run == Some(run))
        .collect();
    steps.sort_by_key(|t| t.id);
    steps
}

/// A run cancelled between the claim of its step and the step's hand-over: the step's
/// checkpoint and its continuation are refused, no new step exists, the run stays
/// cancelled with the progress it had, and the step does not go back to pending for a
/// retry (nor does any later claim hand it out).
pub async fn cancel_between_claim_and_hand_over_stores_no_step(s: Arc<dyn Store>) {
    let run = s
        .enqueue(vec![iteration_task()], T0)
        .await
        .expect("enqueue")[0];
    let c = s.claim(&req(&[], 1, 30_000, T0)).await.expect("claim");
    let lease = c[0].lease;
    s.checkpoint(lease, cp(json!(1), 1), at(1))
        .await
        .expect("progress before the cancel");
    s.cancel_iteration(run, at(2)).await.expect("cancel");

    let r = s.checkpoint(lease, cp(json!(2), 1), at(3)).await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");
    let r = finish_one(&*s, &c[0], Outcome::Continue { run_at: at(4) }, at(4)).await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");
    let r = finish_one(
        &*s,
        &c[0],
        Outcome::Retry {
            error: "lease lost".into(),
            run_at: at(5),
        },
        at(5),
    )
    .await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");
    let r = s.confirm(lease).await;
    assert!(matches!(r, Err(StoreError::LeaseLost(_))), "{r:?}");

    let steps = steps_of(&*s, run).await;
    assert_eq!(steps.len(), 1, "no continuation was stored: {steps:?}");
    assert_eq!(steps[0].state, TaskState::Cancelled);
    let it = s.iteration(run).await.expect("iteration").expect("exists");
    assert_eq!(
        (it.state, it.processed, it.batches, it.steps),
        (RunState::Cancelled, 1, 1, 1),
        "{it:?}"
    );
    assert_eq!(it.finished_at, Some(at(2)));
    assert!(s
        .claim(&req(&[], 10, 30_000, at(100_000)))
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(s.next_due(&["iter".into()]).await.expect("next_due"), None);
}

/// How many times [`cancel_racing_the_hand_over_leaves_no_live_step`] races: 24, or
/// `TASKQ_RACE_ROUNDS`.
fn race_rounds() -> usize {
    std::env::var("TASKQ_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// Cancel racing a step's hand-over (its `Continue`), its checkpoint, the deletion of the
/// step, or a purge of its queue, each call in flight at once: every call answers (no
/// deadlock, no backend error), the run ends cancelled and no step of it is left live,
/// whichever came first.
pub async fn cancel_racing_the_hand_over_leaves_no_live_step(s: Arc<dyn Store>) {
    let bound = Duration::from_secs(60);
    for round in 0..race_rounds() {
        let t = |k: i64| at(round as i64 * 100 + k);
        let run = s
            .enqueue(vec![iteration_task()], t(0))
            .await
            .expect("enqueue")[0];
        let c = s
            .claim(&req(&["iter"], 1, 600_000, t(1)))
            .await
            .expect("claim");
        assert_eq!(c.len(), 1, "round {round}: the new run's step is claimed");
        assert_eq!(c[0].lease.id, run);
        let cont = Outcome::Continue { run_at: t(2) };
        let (cancelled, continued, other) = match round % 4 {
            0 => {
                let (a, b) = tokio::time::timeout(bound, async {
                    tokio::join!(
                        s.cancel_iteration(run, t(2)),
                        finish_one(&*s, &c[0], cont, t(2)),
                    )
                })
                .await
                .unwrap_or_else(|_| panic!("round {round}: cancel and Continue hang"));
                (a, b, Ok(()))
            }
            1 => {
                let (a, b) = tokio::time::timeout(bound, async {
                    tokio::join!(
                        s.cancel_iteration(run, t(2)),
                        s.checkpoint(c[0].lease, cp(json!(round), 1), t(2)),
                    )
                })
                .await
                .unwrap_or_else(|_| panic!("round {round}: cancel and checkpoint hang"));
                let after = finish_one(&*s, &c[0], cont, t(3)).await;
                assert!(
                    matches!(after, Err(StoreError::LeaseLost(_))),
                    "round {round}: a Continue after the cancel is refused: {after:?}"
                );
                (a, Err(StoreError::LeaseLost(run)), b)
            }
            2 => tokio::time::timeout(bound, async {
                tokio::join!(
                    s.cancel_iteration(run, t(2)),
                    finish_one(&*s, &c[0], cont, t(2)),
                    s.delete(run, t(2)),
                )
            })
            .await
            .unwrap_or_else(|_| panic!("round {round}: cancel, Continue and delete hang")),
            _ => {
                let (a, b, p) = tokio::time::timeout(bound, async {
                    tokio::join!(
                        s.cancel_iteration(run, t(2)),
                        finish_one(&*s, &c[0], cont, t(2)),
                        s.purge("iter", t(2)),
                    )
                })
                .await
                .unwrap_or_else(|_| panic!("round {round}: cancel, Continue and purge hang"));
                (a, b, p.map(|_| ()))
            }
        };
        for r in [&cancelled, &continued, &other] {
            assert!(
                !matches!(r, Err(StoreError::Backend(_))),
                "round {round}: a call failed (a deadlock?): {r:?}"
            );
        }
        // Only a deletion or purge of the live step that came first ends the run before the
        // cancel.
        if round % 4 < 2 {
            assert!(cancelled.is_ok(), "round {round}: {cancelled:?}");
        }
        assert!(
            continued.is_ok() || matches!(continued, Err(StoreError::LeaseLost(_))),
            "round {round}: {continued:?}"
        );
        let it = s.iteration(run).await.expect("iteration").expect("exists");
        assert_eq!(it.state, RunState::Cancelled, "round {round}: {it:?}");
        let steps = steps_of(&*s, run).await;
        assert!(
            steps.iter().all(|t| !t.state.is_live()),
            "round {round}: a step is live under the cancelled run: {steps:?}"
        );
        let stored = if continued.is_ok() { 2 } else { 1 };
        assert_eq!(it.steps, stored, "round {round}: {it:?}");
    }
    assert!(s
        .claim(&req(&[], 10, 30_000, at(100_000_000)))
        .await
        .expect("claim")
        .is_empty());
}

/// Issue 12 (the console's throughput chart): tasks that ended done, failed or dead are
/// counted by the minute of their finish time, in `[since, until)`, oldest minute first,
/// minutes with none left out; live and cancelled tasks are not counted, and a task
/// retried from dead counts where it ends again, not where it died.
pub async fn finished_per_minute_counts_ends_by_minute(s: Arc<dyn Store>) {
    const MIN: i64 = 60_000;
    assert_eq!(T0.0 % MIN, 0, "T0 starts a minute");
    ended_as(&*s, new_task("a", 1), Outcome::Done, T0).await;
    ended_as(&*s, new_task("b", 2), Outcome::Done, at(MIN - 1)).await;
    ended_as(&*s, new_task("c", 3), failed("fatal"), at(MIN)).await;
    ended_as(&*s, new_task("d", 4), dead("spent"), at(2 * MIN + 5_000)).await;
    let retried = ended_as(&*s, new_task("e", 5), dead("spent"), at(2 * MIN + 6_000)).await;
    s.retry(retried, at(2 * MIN + 7_000)).await.expect("retry");
    s.enqueue(vec![new_task("f", 6)], T0)
        .await
        .expect("a live task");
    let run = s
        .enqueue(
            vec![NewTask {
                iteration: Some(NewIteration { filter: json!({}) }),
                ..new_task("g", 7)
            }],
            T0,
        )
        .await
        .expect("a run")[0];
    s.cancel_iteration(run, at(MIN + 10)).await.expect("cancel");

    let minute = |m: i64, done: u64, failed: u64, dead: u64| FinishedMinute {
        minute: at(m * MIN),
        done,
        failed,
        dead,
    };
    let all = s
        .finished_per_minute(T0, at(10 * MIN))
        .await
        .expect("per minute");
    assert_eq!(
        all,
        vec![minute(0, 2, 0, 0), minute(1, 0, 1, 0), minute(2, 0, 0, 1)]
    );
    // `since` is inclusive and `until` exclusive, to the millisecond.
    let window = s
        .finished_per_minute(at(1), at(MIN))
        .await
        .expect("per minute");
    assert_eq!(window, vec![minute(0, 1, 0, 0)]);
    let window = s
        .finished_per_minute(at(MIN - 1), at(MIN + 1))
        .await
        .expect("per minute");
    assert_eq!(window, vec![minute(0, 1, 0, 0), minute(1, 0, 1, 0)]);
    assert!(s
        .finished_per_minute(at(3 * MIN), at(10 * MIN))
        .await
        .expect("per minute")
        .is_empty());

    // The retried task counts again in the minute it ends.
    let c = s
        .claim(&req(&["e"], 1, 30_000, at(7 * MIN)))
        .await
        .expect("claim");
    assert_eq!(ids_of(&c), vec![retried]);
    finish_one(&*s, &c[0], Outcome::Done, at(7 * MIN + 1))
        .await
        .expect("finish");
    let all = s
        .finished_per_minute(T0, at(10 * MIN))
        .await
        .expect("per minute");
    assert_eq!(
        all,
        vec![
            minute(0, 2, 0, 0),
            minute(1, 0, 1, 0),
            minute(2, 0, 0, 1),
            minute(7, 1, 0, 0)
        ]
    );
}

/// The trace context given at the start comes back with every claim of the task (its
/// first, after a retry, after a lapsed lease) and with its run's continuation steps; a
/// task started without one has none. Each claim also hands back the task's due time
/// (`run_at`), from which the worker measures the start-to-run latency.
pub async fn trace_context_and_due_time_round_trip(s: Arc<dyn Store>) {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = NewTask {
        trace: Some(TP.into()),
        ..new_task("traced", 1)
    };
    let plain = NewTask {
        run_at: at(5),
        ..new_task("traced", 2)
    };
    let ids = s.enqueue(vec![traced, plain], T0).await.expect("enqueue");
    let c = s
        .claim(&req(&["traced"], 2, 1_000, at(10)))
        .await
        .expect("claim");
    assert_eq!(c.len(), 2);
    let by_id = |c: &[ClaimedTask], id: TaskId| {
        c.iter()
            .find(|t| t.lease.id == id)
            .cloned()
            .expect("claimed")
    };
    let (a, b) = (by_id(&c, ids[0]), by_id(&c, ids[1]));
    assert_eq!((a.trace.as_deref(), a.run_at), (Some(TP), T0));
    assert_eq!((b.trace.as_deref(), b.run_at), (None, at(5)));
    finish_one(&*s, &b, Outcome::Done, at(15))
        .await
        .expect("done");
    // A retry keeps the context; the due time is the retry's.
    finish_one(
        &*s,
        &a,
        Outcome::Retry {
            error: "again".into(),
            run_at: at(500),
        },
        at(20),
    )
    .await
    .expect("retry");
    let c = s
        .claim(&req(&["traced"], 1, 1_000, at(500)))
        .await
        .expect("claim");
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].lease.id, c[0].trace.as_deref(), c[0].run_at),
        (ids[0], Some(TP), at(500))
    );
    // A lapsed lease hands it back with the context, and the due time of the earlier claim.
    let c = s
        .claim(&req(&["traced"], 1, 1_000, at(1_600)))
        .await
        .expect("claim");
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].lease.id, c[0].trace.as_deref(), c[0].run_at),
        (ids[0], Some(TP), at(500))
    );
    // A run's continuation step keeps its first step's context.
    let run = s
        .enqueue(
            vec![NewTask {
                trace: Some(TP.into()),
                ..iteration_task()
            }],
            at(2_000),
        )
        .await
        .expect("enqueue")[0];
    let step = s
        .claim(&req(&[], 1, 30_000, at(2_000)))
        .await
        .expect("claim");
    assert_eq!(step.len(), 1);
    assert_eq!(
        (step[0].lease.id, step[0].trace.as_deref()),
        (run, Some(TP))
    );
    finish_one(
        &*s,
        &step[0],
        Outcome::Continue { run_at: at(2_100) },
        at(2_050),
    )
    .await
    .expect("continue");
    let next = s
        .claim(&req(&[], 1, 30_000, at(2_100)))
        .await
        .expect("claim");
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].lease.id, run);
    assert_eq!(
        (next[0].trace.as_deref(), next[0].run_at),
        (Some(TP), at(2_100))
    );
    // The context is checked like a name: no NUL byte.
    let bad = NewTask {
        trace: Some("00-\0".into()),
        ..new_task("traced", 3)
    };
    assert!(matches!(
        s.enqueue(vec![bad], at(3_000)).await,
        Err(StoreError::InvalidValue(_))
    ));
}

/// Generates one `#[tokio::test]` per conformance case for a backend.
///
/// `$factory` is an async expression (evaluated once per test) giving a fresh
/// `Arc<dyn Store>`.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@cases $factory;
            claim_and_finish, claim_order_and_delay, claim_filters_queues,
            lapsed_lease_is_reclaimed_and_fenced, lease_lapses_at_its_expiry, heartbeat_extends_lease,
            retry_waits_for_backoff, failed_dead_and_retry_from_dead, release_does_not_count,
            unique_names_and_tombstones, retry_refused_while_its_name_is_taken, pause_and_resume, max_concurrent_limits_claims,
            rate_limit_token_bucket, purge_pending_only, list_filter_page_and_counts,
            run_now_and_delete, payload_round_trip, iteration_checkpoint_continue_done,
            iteration_failure_and_revival, unique_name_of_a_running_iteration, checkpoint_resets_attempts, iteration_cancel, deleting_a_step_cancels_its_run, concurrent_claims_never_overlap,
            batched_finish_reports_each,
            values_cross_the_store_bit_identical, bare_cursors_cross_the_store_bit_identical,
            store_refuses_too_deep_values_and_nul_names,
            limited_queue_takes_its_turn_in_claim_order, spent_limited_queue_lets_unlimited_flow,
            deleting_a_named_task_keeps_its_name, purging_keeps_names,
            deleting_a_finished_task_keeps_its_window, unnamed_delete_takes_no_name,
            deleting_a_runs_named_step_keeps_its_name, concurrent_claims_hold_queue_limits,
            limits_changed_between_claims_apply_at_once,
            finish_of_a_stale_and_the_current_lease_in_one_batch,
            management_calls_refuse_nul_queue_names, long_names_are_the_same_on_every_store,
            every_outcome_leaves_its_attempt_and_error, next_due_covers_the_queues_asked_for,
            finished_name_is_free_exactly_when_its_window_ends, wait_for_work_wakes_on_new_work,
            a_huge_tombstone_window_keeps_the_name, iteration_counts_saturate_alike,
            already_exists_names_the_first_conflict,
            finish_batch_with_a_stale_and_a_held_lease_of_one_task,
            heartbeat_reports_a_stale_lease_beside_the_held_one,
            continuation_steps_follow_the_batch_order,
            tombstone_window_boundary_for_every_end,
            retention_keeps_done_a_day_and_failed_a_week, retention_never_touches_live_tasks,
            retention_per_queue_override_and_off, a_pruned_named_task_keeps_its_name_for_its_window,
            retention_takes_a_run_with_its_last_step, prune_goes_on_batch_after_batch,
            a_worker_prunes_on_its_clock,
            cancel_between_claim_and_hand_over_stores_no_step,
            cancel_racing_the_hand_over_leaves_no_live_step,
            queue_counts_equal_a_full_count, listing_leaves_payloads_out_unless_asked,
            claims_reach_due_rows_past_rows_they_must_not_take,
            payload_size_limit_is_the_same_on_every_store,
            tasks_filter_by_a_substring_of_their_arguments,
            retry_matching_retries_every_dead_or_failed_match,
            retry_many_retries_those_it_can, concurrent_retry_many_retry_each_task_once,
            finished_per_minute_counts_ends_by_minute,
            trace_context_and_due_time_round_trip,
            cancelling_a_pending_task_ends_it_cancelled,
            cancelling_a_running_task_cancels_its_attempt_whatever_it_returns,
            a_cancelled_task_whose_worker_died_ends_cancelled,
            cancel_racing_a_finish_is_one_or_the_other,
            wait_for_cancel_wakes_on_a_cancel,
            a_second_cancel_of_a_running_task_says_it_was_already_requested,
            a_cancelled_task_whose_worker_died_ends_even_in_a_paused_queue,
            a_cancelled_task_is_final_until_deleted_or_pruned,
            unique_args_refuse_a_live_duplicate, unique_key_is_free_again_after_its_period,
            replace_updates_a_pending_tasks_arguments_and_due_time, start_many_keeps_keys_unique,
            concurrent_starts_of_one_key_insert_one, start_many_skip_duplicates_starts_the_rest,
            schedules_are_kept_updated_paused_and_removed, racing_fires_of_one_tick_fire_it_once,
            schedule_arguments_too_deep_or_too_large_are_refused_at_registration,
            an_empty_schedule_name_is_refused,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $factory.await;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}
