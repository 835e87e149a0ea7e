//! Rows a database store cannot decode (hand-edited, or written by an older taskq): each
//! goes dead alone with its reason, never fails a claim of other rows, and never fails a
//! management call. The SQLite and PostgreSQL tests corrupt rows with raw SQL between
//! [`setup`] and [`check`].

use std::time::Duration;

use taskq_runtime::store::{
    Checkpoint, ClaimRequest, Finish, NewIteration, NewTask, Outcome, RunState, TaskQuery,
};
use taskq_runtime::testing::Harness;
use taskq_runtime::{task, Queue, TaskError, TaskId, TaskState};

/// A plain task: does nothing.
#[task(queue = "corrupt")]
pub async fn plain(name: String) -> Result<(), TaskError> {
    let _ = name;
    Ok(())
}

/// The tasks of a corrupt-row case.
#[derive(Debug, Clone)]
pub struct Case {
    /// A plain task whose payload the test corrupts.
    pub bad: TaskId,
    /// Five plain tasks left alone.
    pub good: Vec<TaskId>,
    /// An iterative run whose cursor the test corrupts.
    pub run: TaskId,
    /// The run's pending continuation step (claimed with the corrupt cursor).
    pub step: TaskId,
}

/// JSON nested `depth` levels deep, as raw text: `[[..]]`.
pub fn deep_json(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Starts the bad task beside five plain ones, and an iterative run (through the store:
/// no model needed) that has checkpointed a cursor and handed over to a pending step.
pub async fn setup(q: &Queue) -> Case {
    let bad = plain::start(q, "bad".into()).await.expect("start");
    let mut good = Vec::new();
    for i in 0..5 {
        good.push(plain::start(q, format!("good {i}")).await.expect("start"));
    }
    let now = q.clock().now();
    let run = q
        .store()
        .enqueue(
            vec![NewTask {
                task: "corrupt::walk".into(),
                queue: "corrupt-iter".into(),
                payload: serde_json::json!({ "filter": {}, "args": {} }),
                priority: 0,
                run_at: now,
                unique_name: None,
                tombstone: Duration::ZERO,
                iteration: Some(NewIteration {
                    filter: serde_json::json!({}),
                }),
                trace: None,
            }],
            now,
        )
        .await
        .expect("enqueue the run")[0];
    let c = q
        .store()
        .claim(&ClaimRequest {
            queues: vec!["corrupt-iter".into()],
            worker: "setup".into(),
            limit: 1,
            lease: Duration::from_secs(60),
            now,
        })
        .await
        .expect("claim the first step");
    let lease = c[0].lease;
    q.store()
        .checkpoint(
            lease,
            Checkpoint {
                cursor: serde_json::json!(5),
                processed: 5,
                total: None,
            },
            now,
        )
        .await
        .expect("checkpoint");
    q.store()
        .finish(
            vec![Finish {
                lease,
                outcome: Outcome::Continue { run_at: now },
                started_at: now,
            }],
            "setup",
            now,
        )
        .await
        .expect("continue")
        .pop()
        .expect("one result")
        .expect("applied");
    let step = q
        .list(&TaskQuery {
            queue: Some("corrupt-iter".into()),
            state: Some(TaskState::Pending),
            ..TaskQuery::default()
        })
        .await
        .expect("list")[0]
        .id;
    Case {
        bad,
        good,
        run,
        step,
    }
}

/// After the test corrupted `case.bad`'s payload and `case.run`'s cursor: the management
/// calls work and show the raw text; one drain sends the two corrupt tasks dead alone,
/// with their reasons, and runs each good task exactly once.
pub async fn check(q: &Queue, case: &Case) {
    let bad = q
        .task(case.bad)
        .await
        .expect("task() of a corrupt row works");
    let bad = bad.expect("exists");
    assert!(
        bad.info.payload.is_string(),
        "an undecodable payload is shown as its raw text: {:?}",
        bad.info.payload
    );
    let listed = q
        .list(&TaskQuery {
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .expect("list() with a corrupt row works");
    assert_eq!(listed.len(), 8);
    let it = q
        .iteration(case.run)
        .await
        .expect("iteration() with a corrupt cursor works");
    assert!(
        it.cursor.as_ref().is_some_and(|c| c.is_string()),
        "{:?}",
        it.cursor
    );
    q.iterations(10)
        .await
        .expect("iterations() with a corrupt cursor works");

    let h = Harness::with_store(q.store().clone());
    let report = h
        .drain()
        .await
        .expect("no claim fails because of a corrupt row");
    for id in &case.good {
        let runs = report.of(*id);
        assert_eq!(runs.len(), 1, "ran exactly once: {runs:?}");
        let d = q.task(*id).await.expect("task").expect("exists");
        assert_eq!(d.info.state, TaskState::Done);
        assert_eq!(d.attempts.len(), 1);
    }
    for (id, what) in [(case.bad, "payload"), (case.step, "cursor")] {
        let runs = report.of(id);
        assert_eq!(runs.len(), 1, "dead at once: {runs:?}");
        let d = q.task(id).await.expect("task").expect("exists");
        assert_eq!(d.info.state, TaskState::Dead, "{what}");
        let err = d.info.last_error.unwrap_or_default();
        assert!(
            err.contains("does not decode") && err.contains(what),
            "the reason names the {what}: {err}"
        );
    }
    let it = q.iteration(case.run).await.expect("iteration");
    assert_eq!(it.state, RunState::Dead);
}
