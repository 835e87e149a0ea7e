//! Issue 13, cancelling a task: [`Store::cancel`] on pending and running tasks, what the
//! attempt of a cancelled running task records whatever it returns, a cancel racing the
//! attempt's finish, a cancelled task whose worker died, and the errors.

use std::sync::Arc;
use std::time::Duration;

use taskq_runtime::policy::{CANCELLED, CANCELLED_PENDING, CANCEL_LAPSED};
use taskq_runtime::store::{Outcome, Store, StoreError, TaskState};
use taskq_runtime::{CancelOutcome, TaskId, Timestamp};

use super::{at, finish_one, iteration_task, new_task, race_rounds, req, state_of};

/// The counts `queues()` keeps for `queue`, against a count of the listed tasks.
pub(super) async fn counts_agree(s: &dyn Store, queue: &str) {
    let q = s.queues().await.expect("queues");
    let info = q.iter().find(|i| i.name == queue).expect("the queue");
    for state in TaskState::ALL {
        let listed = s
            .list_tasks(&taskq_runtime::store::TaskQuery {
                queue: Some(queue.into()),
                state: Some(state),
                limit: 10_000,
                ..Default::default()
            })
            .await
            .expect("list")
            .len() as u64;
        assert_eq!(info.count(state), listed, "{state} tasks of `{queue}`");
    }
}

/// A pending task ends cancelled at once and is never claimed; a second cancel, a cancel of
/// a finished task and of a step are refused with `Conflict`, an unknown id with `NotFound`.
pub async fn cancelling_a_pending_task_ends_it_cancelled(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(vec![new_task("c", 1), new_task("c", 2)], at(0))
        .await
        .expect("enqueue");
    assert_eq!(
        s.cancel(ids[0], at(5)).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    let d = s.task(ids[0]).await.expect("task").expect("exists");
    assert_eq!(d.info.state, TaskState::Cancelled);
    assert_eq!(d.info.finished_at, Some(at(5)));
    assert_eq!(d.info.last_error.as_deref(), Some(CANCELLED_PENDING));
    assert!(d.attempts.is_empty(), "{:?}", d.attempts);
    assert!(!d.info.cancel_requested);
    let c = s
        .claim(&req(&["c"], 10, 30_000, at(10)))
        .await
        .expect("claim");
    assert_eq!(c.iter().map(|c| c.lease.id).collect::<Vec<_>>(), [ids[1]]);
    counts_agree(&*s, "c").await;

    assert!(matches!(
        s.cancel(ids[0], at(11)).await,
        Err(StoreError::Conflict(_))
    ));
    finish_one(&*s, &c[0], Outcome::Done, at(12))
        .await
        .expect("finish");
    assert!(matches!(
        s.cancel(ids[1], at(13)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(state_of(&*s, ids[1]).await, TaskState::Done);
    assert!(matches!(
        s.cancel(TaskId(ids[1].0 + 1_000), at(13)).await,
        Err(StoreError::NotFound(_))
    ));
    let run = s
        .enqueue(vec![iteration_task()], at(14))
        .await
        .expect("enqueue")[0];
    assert!(matches!(
        s.cancel(run, at(15)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(state_of(&*s, run).await, TaskState::Pending);
}

/// A running task is marked; the renewal reports the mark; whatever its attempt then
/// returns (`Ok`, a retryable error, a fatal one, dead, a release at shutdown), the attempt
/// is recorded as cancelled with what it returned, the task ends cancelled and nothing is
/// claimed again.
pub async fn cancelling_a_running_task_cancels_its_attempt_whatever_it_returns(s: Arc<dyn Store>) {
    let outcomes = [
        Outcome::Retry {
            error: "flaky".into(),
            run_at: at(20),
        },
        Outcome::Done,
        Outcome::Failed { error: "f".into() },
        Outcome::Dead { error: "d".into() },
        Outcome::Release,
    ];
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let id = s
            .enqueue(vec![new_task("c", i as i64)], at(0))
            .await
            .expect("enqueue")[0];
        let c = s
            .claim(&req(&["c"], 1, 30_000, at(1)))
            .await
            .expect("claim");
        assert_eq!(c.len(), 1);
        let other = s
            .enqueue(vec![new_task("c", 100)], at(1))
            .await
            .expect("enqueue")[0];
        let c2 = s
            .claim(&req(&["c"], 1, 30_000, at(1)))
            .await
            .expect("claim");
        assert_eq!(c2[0].lease.id, other);
        assert_eq!(
            s.cancel(id, at(2)).await.expect("cancel"),
            CancelOutcome::Requested
        );
        assert_eq!(
            s.cancel(id, at(3)).await.expect("a second cancel"),
            CancelOutcome::AlreadyRequested
        );
        let d = s.task(id).await.expect("task").expect("exists");
        assert_eq!(d.info.state, TaskState::Running);
        assert!(d.info.cancel_requested);
        let r = s
            .renew(&[c[0].lease, c2[0].lease], "w1", at(30_000))
            .await
            .expect("renew");
        assert!(r.lost.is_empty(), "{r:?}");
        assert_eq!(r.cancel_requested, [id]);
        finish_one(&*s, &c[0], outcome.clone(), at(4))
            .await
            .expect("finish");
        finish_one(&*s, &c2[0], Outcome::Done, at(4))
            .await
            .expect("finish");
        let d = s.task(id).await.expect("task").expect("exists");
        assert_eq!(d.info.state, TaskState::Cancelled, "{outcome:?}");
        assert_eq!(d.info.finished_at, Some(at(4)));
        assert_eq!(d.info.attempts, 1);
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].outcome, CANCELLED.0);
        let error = d.attempts[0].error.clone().unwrap_or_default();
        assert!(error.starts_with(CANCELLED.1), "{error}");
        if let Some(e) = outcome.error() {
            assert!(error.contains(e), "{error}");
        }
        assert_eq!(d.info.last_error.as_deref(), Some(error.as_str()));
        assert_eq!(state_of(&*s, other).await, TaskState::Done);
        assert!(s
            .claim(&req(&["c"], 10, 30_000, at(1_000_000)))
            .await
            .expect("claim")
            .is_empty());
        assert!(matches!(
            s.cancel(id, at(5)).await,
            Err(StoreError::Conflict(_))
        ));
    }
    counts_agree(&*s, "c").await;
}

/// A running task whose worker dies after the cancel: the claim that finds its lease
/// lapsed ends it cancelled (the lapse recorded), never hands it out, and the dead
/// worker's late finish is refused.
pub async fn a_cancelled_task_whose_worker_died_ends_cancelled(s: Arc<dyn Store>) {
    let id = s
        .enqueue(vec![new_task("c", 1)], at(0))
        .await
        .expect("enqueue")[0];
    let c = s.claim(&req(&["c"], 1, 1_000, at(0))).await.expect("claim");
    assert_eq!(c.len(), 1);
    assert_eq!(
        s.cancel(id, at(10)).await.expect("cancel"),
        CancelOutcome::Requested
    );
    // Before the lease lapses, nothing changes.
    assert!(s
        .claim(&req(&["c"], 10, 1_000, at(500)))
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(state_of(&*s, id).await, TaskState::Running);
    assert!(s
        .claim(&req(&["c"], 10, 1_000, at(2_000)))
        .await
        .expect("claim")
        .is_empty());
    let d = s.task(id).await.expect("task").expect("exists");
    assert_eq!(d.info.state, TaskState::Cancelled);
    assert_eq!(d.info.finished_at, Some(at(2_000)));
    assert_eq!(d.info.last_error.as_deref(), Some(CANCEL_LAPSED.1));
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(
        (
            d.attempts[0].outcome.as_str(),
            d.attempts[0].error.as_deref()
        ),
        (CANCEL_LAPSED.0, Some(CANCEL_LAPSED.1))
    );
    assert!(d.info.worker.is_none() && d.info.lease_until.is_none());
    assert!(matches!(
        finish_one(&*s, &c[0], Outcome::Done, at(2_001)).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(s
        .claim(&req(&[], 10, 1_000, at(1_000_000)))
        .await
        .expect("claim")
        .is_empty());
    assert_eq!(s.next_due(&[]).await.expect("next_due"), None);
    counts_agree(&*s, "c").await;
}

/// A cancel racing the attempt's finish (a retry, or done), both in flight at once: either
/// the finish came first (done: the cancel is refused; a retry: the task is pending and
/// the cancel ends it as such) or the cancel did (the attempt is recorded cancelled). The
/// task is never retried, never both.
pub async fn cancel_racing_a_finish_is_one_or_the_other(s: Arc<dyn Store>) {
    let bound = Duration::from_secs(60);
    for round in 0..race_rounds() {
        let t = |k: i64| Timestamp(at(0).0 + round as i64 * 100 + k);
        let id = s
            .enqueue(vec![new_task("race", round as i64)], t(0))
            .await
            .expect("enqueue")[0];
        let c = s
            .claim(&req(&["race"], 1, 600_000, t(1)))
            .await
            .expect("claim");
        assert_eq!(c.len(), 1, "round {round}");
        let retry = round % 2 == 0;
        let outcome = match retry {
            true => Outcome::Retry {
                error: "flaky".into(),
                run_at: t(2),
            },
            false => Outcome::Done,
        };
        let (cancelled, finished) = tokio::time::timeout(bound, async {
            tokio::join!(s.cancel(id, t(2)), finish_one(&*s, &c[0], outcome, t(2)))
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: cancel and finish hang"));
        finished.unwrap_or_else(|e| panic!("round {round}: the finish is recorded: {e}"));
        let d = s.task(id).await.expect("task").expect("exists");
        let labels: Vec<&str> = d.attempts.iter().map(|a| a.outcome.as_str()).collect();
        match cancelled {
            // The cancel came first: the attempt is recorded cancelled.
            Ok(CancelOutcome::Requested) => {
                assert_eq!(d.info.state, TaskState::Cancelled, "round {round}");
                assert_eq!(labels, [CANCELLED.0], "round {round}");
            }
            // The retry came first: pending again, then cancelled as pending.
            Ok(CancelOutcome::Cancelled) => {
                assert!(retry, "round {round}: a done task cannot be cancelled");
                assert_eq!(d.info.state, TaskState::Cancelled, "round {round}");
                assert_eq!(labels, ["retry"], "round {round}");
            }
            // Done came first.
            Err(StoreError::Conflict(_)) => {
                assert!(
                    !retry,
                    "round {round}: a retried task is pending, cancellable"
                );
                assert_eq!(d.info.state, TaskState::Done, "round {round}");
                assert_eq!(labels, ["done"], "round {round}");
            }
            Ok(CancelOutcome::AlreadyRequested) => {
                panic!("round {round}: a first cancel cannot find the task marked")
            }
            Err(e) => panic!("round {round}: the cancel failed: {e}"),
        }
    }
    assert!(s
        .claim(&req(&[], 10, 30_000, at(100_000_000)))
        .await
        .expect("claim")
        .is_empty());
    counts_agree(&*s, "race").await;
}

/// A waiter of [`Store::wait_for_cancel`] wakes when a running task is cancelled.
pub async fn wait_for_cancel_wakes_on_a_cancel(s: Arc<dyn Store>) {
    let n = 40;
    let ids = s
        .enqueue((0..n).map(|i| new_task("w", i)).collect(), at(0))
        .await
        .expect("enqueue");
    let c = s
        .claim(&req(&["w"], n as usize, 600_000, at(1)))
        .await
        .expect("claim");
    assert_eq!(c.len(), n as usize);
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let _ = tokio::time::timeout(Duration::from_secs(60), s.wait_for_cancel()).await;
            started.elapsed()
        })
    };
    // Cancel one task after another until the waiter returns: one cancel could come
    // before it waits.
    let started = std::time::Instant::now();
    let mut next = ids.iter();
    while !waiter.is_finished() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(id) = next.next() {
            s.cancel(*id, at(2)).await.expect("cancel");
        }
    }
    let waited = waiter.await.expect("the waiter");
    assert!(
        waited < Duration::from_secs(20),
        "wait_for_cancel slept {waited:?} though running tasks were cancelled"
    );
}
