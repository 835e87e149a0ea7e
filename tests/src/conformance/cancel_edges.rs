//! Issue 13, cancelling a task, at its edges: a second cancel of a running task, a
//! cancelled task whose worker died in a queue that is paused or that the claim does not
//! cover, and what a cancelled task allows afterwards (retry, run now, delete, retention).

use std::sync::Arc;

use taskq_runtime::policy::CANCEL_LAPSED;
use taskq_runtime::store::{Outcome, Store, StoreError, TaskState};
use taskq_runtime::{CancelOutcome, Timestamp};

use super::cancel::counts_agree;
use super::{at, finish_one, new_task, req, state_of};

/// A second cancel of a running task changes nothing and says so
/// ([`CancelOutcome::AlreadyRequested`]), so that the cancel is counted once; the attempt
/// still ends cancelled.
pub async fn a_second_cancel_of_a_running_task_says_it_was_already_requested(s: Arc<dyn Store>) {
    let id = s
        .enqueue(vec![new_task("c2", 1)], at(0))
        .await
        .expect("enqueue")[0];
    let c = s
        .claim(&req(&["c2"], 1, 30_000, at(1)))
        .await
        .expect("claim");
    assert_eq!(c.len(), 1);
    assert_eq!(
        s.cancel(id, at(2)).await.expect("cancel"),
        CancelOutcome::Requested
    );
    for k in 3..5 {
        assert_eq!(
            s.cancel(id, at(k)).await.expect("a second cancel"),
            CancelOutcome::AlreadyRequested
        );
    }
    finish_one(&*s, &c[0], Outcome::Done, at(5))
        .await
        .expect("finish");
    assert_eq!(state_of(&*s, id).await, TaskState::Cancelled);
    assert!(matches!(
        s.cancel(id, at(6)).await,
        Err(StoreError::Conflict(_))
    ));
    counts_agree(&*s, "c2").await;
}

/// A task cancelled while it ran, whose worker then died, in a queue that is paused (or
/// that no claim covers): the cancel has decided its end and nothing needs to run, so any
/// claim after its lease lapsed ends it cancelled, as for an unpaused queue; it does not
/// stay `running` until the queue is resumed. And a cancel of a running task whose lease
/// has lapsed already (its worker is gone) ends it at once.
pub async fn a_cancelled_task_whose_worker_died_ends_even_in_a_paused_queue(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(vec![new_task("cp", 1), new_task("cx", 2)], at(0))
        .await
        .expect("enqueue");
    let c = s
        .claim(&req(&["cp", "cx"], 2, 1_000, at(0)))
        .await
        .expect("claim");
    assert_eq!(c.len(), 2);
    for id in &ids {
        assert_eq!(
            s.cancel(*id, at(10)).await.expect("cancel"),
            CancelOutcome::Requested
        );
    }
    s.set_paused("cp", true).await.expect("pause");
    // Both workers die. A claim of another queue, after the leases lapsed: nothing to
    // hand out, but both cancelled tasks end.
    s.enqueue(vec![new_task("other", 3)], at(0))
        .await
        .expect("enqueue");
    let got = s
        .claim(&req(&["other"], 10, 1_000, at(2_000)))
        .await
        .expect("claim");
    assert_eq!(got.len(), 1);
    for id in &ids {
        let d = s.task(*id).await.expect("task").expect("exists");
        assert_eq!(d.info.state, TaskState::Cancelled, "{id}: {d:?}");
        assert_eq!(d.info.last_error.as_deref(), Some(CANCEL_LAPSED.1));
        assert_eq!(d.attempts.len(), 1, "{:?}", d.attempts);
    }
    counts_agree(&*s, "cp").await;
    counts_agree(&*s, "cx").await;

    // A cancel that comes after the lease lapsed (no claim ran since): ended at once.
    let id = s
        .enqueue(vec![new_task("cp2", 4)], at(3_000))
        .await
        .expect("enqueue")[0];
    let c = s
        .claim(&req(&["cp2"], 1, 1_000, Timestamp(at(3_000).0)))
        .await
        .expect("claim");
    assert_eq!(c.len(), 1);
    s.set_paused("cp2", true).await.expect("pause");
    assert_eq!(
        s.cancel(id, at(5_000)).await.expect("cancel"),
        CancelOutcome::Cancelled
    );
    let d = s.task(id).await.expect("task").expect("exists");
    assert_eq!(d.info.state, TaskState::Cancelled, "{d:?}");
    assert_eq!(d.info.finished_at, Some(at(5_000)));
    assert_eq!(d.info.last_error.as_deref(), Some(CANCEL_LAPSED.1));
    assert_eq!(
        d.attempts
            .iter()
            .map(|a| a.outcome.as_str())
            .collect::<Vec<_>>(),
        [CANCEL_LAPSED.0]
    );
    assert!(d.info.worker.is_none() && d.info.lease_until.is_none());
    assert!(matches!(
        finish_one(&*s, &c[0], Outcome::Done, at(5_001)).await,
        Err(StoreError::LeaseLost(_))
    ));
    counts_agree(&*s, "cp2").await;
}

/// What a cancelled task allows afterwards: it is not retried, run now or cancelled again
/// (`Conflict`), it is deleted like any finished task, and retention prunes it with done
/// tasks.
pub async fn a_cancelled_task_is_final_until_deleted_or_pruned(s: Arc<dyn Store>) {
    let ids = s
        .enqueue(vec![new_task("cf", 1), new_task("cf", 2)], at(0))
        .await
        .expect("enqueue");
    let c = s
        .claim(&req(&["cf"], 1, 30_000, at(1)))
        .await
        .expect("claim");
    let running = c[0].lease.id;
    let pending = if running == ids[0] { ids[1] } else { ids[0] };
    s.cancel(running, at(2)).await.expect("cancel");
    s.cancel(pending, at(2)).await.expect("cancel");
    finish_one(
        &*s,
        &c[0],
        Outcome::Retry {
            error: "flaky".into(),
            run_at: at(3),
        },
        at(3),
    )
    .await
    .expect("finish");
    for id in [running, pending] {
        assert_eq!(state_of(&*s, id).await, TaskState::Cancelled);
        assert!(matches!(
            s.retry(id, at(4)).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.run_now(id, at(4)).await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert!(s
        .claim(&req(&[], 10, 30_000, at(1_000_000)))
        .await
        .expect("claim")
        .is_empty());
    s.delete(pending, at(5)).await.expect("delete");
    assert!(s.task(pending).await.expect("task").is_none());
    counts_agree(&*s, "cf").await;
    // Kept a day (done tasks' retention) from its end, then pruned.
    const DAY: i64 = 24 * 3_600_000;
    s.prune(Timestamp(at(3).0 + DAY - 1), 0)
        .await
        .expect("prune");
    assert!(s.task(running).await.expect("task").is_some());
    s.prune(Timestamp(at(3).0 + DAY), 0).await.expect("prune");
    assert!(s.task(running).await.expect("task").is_none());
}
