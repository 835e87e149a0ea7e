//! Behaviour of tasks, the harness and the retry policy, on virtual time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use taskq_runtime::store::{NewTask, QueueConfig, StoreError, TaskQuery};
use taskq_runtime::testing::Harness;
use taskq_runtime::{task, Context, StartError, TaskError, TaskState};

#[task]
async fn greet(name: String) -> Result<(), TaskError> {
    if name.is_empty() {
        return Err(TaskError::fatal("no name"));
    }
    Ok(())
}

#[task(max_attempts = 3, min_backoff = "10s", max_backoff = "1m")]
async fn always_fails(ctx: Context, label: String) -> Result<(), TaskError> {
    Err(TaskError::retry(format!(
        "{label} failed on attempt {}",
        ctx.attempt()
    )))
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

#[task(max_attempts = 5, min_backoff = "1s")]
async fn flaky(ctx: Context) -> Result<(), TaskError> {
    FLAKY_CALLS.fetch_add(1, Ordering::SeqCst);
    if ctx.attempt() < 3 {
        // Any std error converts with `?` and is retried.
        let e: Result<(), std::io::Error> = Err(std::io::Error::other("connection reset"));
        e?;
    }
    Ok(())
}

#[task(max_attempts = 2, min_backoff = "1s")]
async fn panics(n: u32) -> Result<(), TaskError> {
    if n > 0 {
        panic!("boom {n}");
    }
    Ok(())
}

#[task(
    max_attempts = 2,
    age_limit = "1h",
    min_backoff = "10m",
    max_backoff = "10m"
)]
async fn aged(_x: u8) -> Result<(), TaskError> {
    Err(TaskError::retry("still down"))
}

#[task(queue = "mail", priority = 3)]
async fn mail(to: String, tags: Vec<String>, extra: HashMap<String, u32>) -> Result<(), TaskError> {
    let _ = (to, tags, extra);
    Ok(())
}

#[task]
async fn bad_args(map: HashMap<(u8, u8), u8>) -> Result<(), TaskError> {
    let _ = map;
    Ok(())
}

#[task(queue = "rated")]
async fn rated(n: u32) -> Result<(), TaskError> {
    let _ = n;
    Ok(())
}

#[tokio::test]
async fn ok_is_done_and_fn_stays_callable() {
    assert_eq!(greet("ada".into()).await, Ok(()));
    let h = Harness::new();
    let id = greet::start(&h.queue(), "ada".into()).await.expect("start");
    let report = h.drain().await.expect("drain");
    assert_eq!(report.count("done"), 1);
    let t = h.queue().task(id).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Done);
    assert_eq!(t.info.payload, json!({ "name": "ada" }));
    assert_eq!(t.info.task, greet::NAME);
    assert_eq!(greet::NAME, concat!(module_path!(), "::greet"));
}

#[tokio::test]
async fn fatal_error_fails_without_retry() {
    let h = Harness::new();
    let id = greet::start(&h.queue(), String::new())
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");
    assert_eq!(report.of(id).len(), 1);
    let t = h.queue().task(id).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Failed);
    assert_eq!(t.attempts.len(), 1);
    assert_eq!(t.attempts[0].error.as_deref(), Some("no name"));
}

#[tokio::test]
async fn retries_with_backoff_then_dead_keeping_every_error() {
    let h = Harness::new();
    let t0 = h.clock().now();
    let id = always_fails::start(&h.queue(), "smtp".into())
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");
    let runs = report.of(id);
    assert_eq!(
        runs.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        vec!["retry", "retry", "dead"]
    );
    // Backoff with jitter: 10 s then 20 s, each in [b/2, b].
    let gap1 = runs[1].at.since(runs[0].at);
    let gap2 = runs[2].at.since(runs[1].at);
    assert!(
        gap1 >= Duration::from_secs(5) && gap1 <= Duration::from_secs(10),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_secs(10) && gap2 <= Duration::from_secs(20),
        "{gap2:?}"
    );
    assert!(runs[0].at.since(t0) < Duration::from_secs(1));
    let t = h.queue().task(id).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Dead);
    let errors: Vec<_> = t
        .attempts
        .iter()
        .map(|a| a.error.clone().unwrap_or_default())
        .collect();
    assert_eq!(errors[0], "smtp failed on attempt 1");
    assert_eq!(errors[1], "smtp failed on attempt 2");
    assert!(
        errors[2].contains("gave up after 3 attempts") && errors[2].contains("attempt 3"),
        "{}",
        errors[2]
    );
}

#[tokio::test]
async fn question_mark_errors_are_retried_until_success() {
    let h = Harness::new();
    let id = flaky::start(&h.queue()).await.expect("start");
    let report = h.drain().await.expect("drain");
    let runs = report.of(id);
    assert_eq!(
        runs.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        vec!["retry", "retry", "done"]
    );
    assert_eq!(runs[0].error.as_deref(), Some("connection reset"));
}

#[tokio::test]
async fn panics_are_caught_and_retried() {
    let h = Harness::new();
    let id = panics::start(&h.queue(), 7).await.expect("start");
    let report = h.drain().await.expect("drain");
    let runs = report.of(id);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].outcome, "retry");
    assert_eq!(runs[0].error.as_deref(), Some("panicked: boom 7"));
    assert_eq!(runs[1].outcome, "dead");
}

#[tokio::test]
async fn dead_only_when_attempts_and_age_are_both_spent() {
    let h = Harness::new();
    let id = aged::start(&h.queue(), 1).await.expect("start");
    let report = h.drain().await.expect("drain");
    let runs = report.of(id);
    // 10-minute backoff (jitter: 5..10 min), age limit 1 h: well over 2 attempts.
    assert!(
        runs.len() >= 7 && runs.len() <= 14,
        "{} attempts",
        runs.len()
    );
    assert_eq!(runs.last().map(|r| r.outcome), Some("dead"));
    let first = runs[0].at;
    let last = runs[runs.len() - 1].at;
    assert!(last.since(first) >= Duration::from_secs(3600));
    assert!(runs[runs.len() - 2].at.since(first) < Duration::from_secs(3600));
}

#[tokio::test]
async fn retry_from_dead_runs_again_with_fresh_attempts() {
    let h = Harness::new();
    let id = always_fails::start(&h.queue(), "x".into())
        .await
        .expect("start");
    h.drain().await.expect("drain");
    h.queue().retry(id).await.expect("retry");
    let report = h.drain().await.expect("drain");
    assert_eq!(report.of(id).len(), 3);
    let t = h.queue().task(id).await.expect("task").expect("exists");
    assert_eq!(t.attempts.len(), 6, "history of both rounds is kept");
}

#[tokio::test]
async fn delay_eta_priority_and_queue_override() {
    let h = Harness::new();
    let q = h.queue();
    let t0 = h.clock().now();
    let late = greet::builder("late".into())
        .delay(Duration::from_secs(3600))
        .start(&q)
        .await
        .expect("start");
    let eta = greet::builder("eta".into())
        .at(t0.add(Duration::from_secs(60)))
        .start(&q)
        .await
        .expect("start");
    let low = greet::start(&q, "low".into()).await.expect("start");
    let high = greet::builder("high".into())
        .priority(10)
        .start(&q)
        .await
        .expect("start");
    let other = greet::builder("other".into())
        .queue("elsewhere")
        .start(&q)
        .await
        .expect("start");
    assert_eq!(
        q.task(other).await.expect("t").expect("e").info.queue,
        "elsewhere"
    );
    assert_eq!(q.task(high).await.expect("t").expect("e").info.priority, 10);
    let report = h.drain().await.expect("drain");
    let order: Vec<_> = report.runs.iter().map(|r| r.id).collect();
    assert_eq!(order[0], high, "priority first");
    assert!(order.iter().position(|i| *i == low) < order.iter().position(|i| *i == eta));
    assert_eq!(order.last(), Some(&late));
    // On virtual time a delayed task runs at its due time exactly: never early, never late.
    let at = |id| report.of(id)[0].at;
    assert_eq!(at(eta), t0.add(Duration::from_secs(60)), "the ETA exactly");
    assert_eq!(
        at(late),
        t0.add(Duration::from_secs(3600)),
        "the delay exactly"
    );
}

#[tokio::test]
async fn named_tasks_deduplicate_with_a_tombstone() {
    let h = Harness::new();
    let q = h.queue();
    greet::builder("ada".into())
        .name("welcome-ada")
        .start(&q)
        .await
        .expect("start");
    let again = greet::builder("ada".into())
        .name("welcome-ada")
        .start(&q)
        .await;
    assert!(
        matches!(&again, Err(StartError::Store(StoreError::AlreadyExists(n))) if n == "welcome-ada"),
        "{again:?}"
    );
    let msg = again.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("already exists"), "{msg}");
    let report = h.drain().await.expect("drain");
    // It ran (and finished) at once: the virtual clock did not move.
    let end = report.runs[0].at;
    assert_eq!(end, h.clock().now());
    let again = || greet::builder("ada".into()).name("welcome-ada").start(&q);
    // Done, and taken for the default one-hour tombstone window from its end: still at
    // 1 ms before the window's end, free at its end exactly.
    h.advance(Duration::from_secs(3600) - Duration::from_millis(1));
    let r = again().await;
    assert!(
        matches!(&r, Err(StartError::Store(StoreError::AlreadyExists(_)))),
        "taken 1 ms before the window's end: {r:?}"
    );
    h.advance(Duration::from_millis(1));
    assert_eq!(h.clock().now(), end.add(Duration::from_secs(3600)));
    again().await.expect("free at the window's end exactly");
}

#[tokio::test]
async fn bulk_start_is_all_or_nothing() {
    let h = Harness::new();
    let q = h.queue();
    let ids = q
        .start_many((0..50).map(|i| greet::builder(format!("user{i}"))))
        .await
        .expect("bulk");
    assert_eq!(ids.len(), 50);
    greet::builder("x".into())
        .name("taken")
        .start(&q)
        .await
        .expect("start");
    let r = q
        .start_many(vec![
            greet::builder("a".into()),
            greet::builder("b".into()).name("taken"),
        ])
        .await;
    assert!(r.is_err());
    assert_eq!(
        q.list(&TaskQuery {
            limit: 1000,
            ..TaskQuery::default()
        })
        .await
        .expect("list")
        .len(),
        51
    );
    assert_eq!(h.drain().await.expect("drain").count("done"), 51);
}

#[tokio::test]
async fn arguments_that_cannot_serialize_store_nothing() {
    let h = Harness::new();
    let mut m = HashMap::new();
    m.insert((1u8, 2u8), 3u8);
    let r = bad_args::start(&h.queue(), m).await;
    let err = r.expect_err("a map with tuple keys is not JSON");
    assert!(
        matches!(&err, StartError::Serialize { arg, .. } if arg == "map"),
        "{err}"
    );
    assert!(err.to_string().contains("argument `map`"), "{err}");
    assert!(h
        .queue()
        .list(&TaskQuery::default())
        .await
        .expect("list")
        .is_empty());
}

#[tokio::test]
async fn undecodable_payload_goes_dead_at_once_unknown_task_after_its_retries_and_the_rest_runs() {
    let h = Harness::new();
    let q = h.queue();
    let now = h.clock().now();
    let raw = |task: &str, payload| NewTask {
        task: task.into(),
        queue: "default".into(),
        payload,
        priority: 0,
        run_at: now,
        unique_name: None,
        tombstone: Duration::ZERO,
        iteration: None,
        trace: None,
    };
    let ids = q
        .store()
        .enqueue(
            vec![
                raw(greet::NAME, json!({ "name": 42 })),
                raw(greet::NAME, json!("not an object")),
                raw("old::renamed_task", json!({})),
            ],
            now,
        )
        .await
        .expect("enqueue");
    let good = greet::start(&q, "ok".into()).await.expect("start");
    let report = h.drain().await.expect("drain");
    for (id, runs) in ids.iter().zip([1, 1, 25]) {
        let t = q.task(*id).await.expect("task").expect("exists");
        assert_eq!(t.info.state, TaskState::Dead, "{id}");
        // Stored bytes do not change: dead at once. An unknown name may be known to the
        // next deploy: retried under the default policy (25 attempts), then dead.
        assert_eq!(report.of(*id).len(), runs, "{id}");
    }
    let e0 = q
        .task(ids[0])
        .await
        .expect("t")
        .expect("e")
        .info
        .last_error
        .unwrap_or_default();
    assert!(
        e0.contains("argument `name`") && e0.contains("does not decode"),
        "{e0}"
    );
    let e2 = q
        .task(ids[2])
        .await
        .expect("t")
        .expect("e")
        .info
        .last_error
        .unwrap_or_default();
    assert!(
        e2.starts_with("gave up after 25 attempts: no task named `old::renamed_task` is registered in worker `harness`"),
        "{e2}"
    );
    assert_eq!(
        q.task(good).await.expect("t").expect("e").info.state,
        TaskState::Done
    );
}

#[tokio::test]
async fn payload_is_json_keyed_by_argument_names() {
    let h = Harness::new();
    let mut extra = HashMap::new();
    extra.insert("k".to_string(), 1);
    let id = mail::start(
        &h.queue(),
        "ada@example.org".into(),
        vec!["a".into()],
        extra,
    )
    .await
    .expect("start");
    let t = h
        .queue()
        .task(id)
        .await
        .expect("task")
        .expect("exists")
        .info;
    assert_eq!(
        t.payload,
        json!({ "to": "ada@example.org", "tags": ["a"], "extra": { "k": 1 } })
    );
    assert_eq!(t.queue, "mail");
    assert_eq!(t.priority, 3);
}

#[tokio::test]
async fn pause_resume_purge() {
    let h = Harness::new();
    let q = h.queue();
    for i in 0..3 {
        mail::start(&q, format!("{i}"), vec![], HashMap::new())
            .await
            .expect("start");
    }
    greet::start(&q, "g".into()).await.expect("start");
    q.pause("mail").await.expect("pause");
    let r = h.drain().await.expect("drain");
    assert_eq!(r.count("done"), 1, "only the default queue ran");
    let qs = q.queues().await.expect("queues");
    let m = qs.iter().find(|x| x.name == "mail").expect("mail");
    assert!(m.paused);
    assert_eq!(m.count(TaskState::Pending), 3);
    q.resume("mail").await.expect("resume");
    mail::start(&q, "x".into(), vec![], HashMap::new())
        .await
        .expect("start");
    q.pause("mail").await.expect("pause");
    assert_eq!(q.purge("mail").await.expect("purge"), 4);
    q.resume("mail").await.expect("resume");
    assert_eq!(h.drain().await.expect("drain").runs.len(), 0);
}

#[tokio::test]
async fn run_now_and_delete_through_the_queue() {
    let h = Harness::new();
    let q = h.queue();
    let id = greet::builder("later".into())
        .delay(Duration::from_secs(86_400))
        .start(&q)
        .await
        .expect("start");
    assert!(h.run_due().await.expect("run").runs.is_empty());
    q.run_now(id).await.expect("run now");
    assert_eq!(h.run_due().await.expect("run").count("done"), 1);
    let gone = greet::builder("gone".into())
        .delay(Duration::from_secs(10))
        .start(&q)
        .await
        .expect("start");
    q.delete(gone).await.expect("delete");
    assert!(q.task(gone).await.expect("task").is_none());
    assert!(h.drain().await.expect("drain").runs.is_empty());
}

#[tokio::test]
async fn queue_rate_limit_spaces_runs_on_virtual_time() {
    let h = Harness::new();
    let q = h.queue();
    q.configure(
        "rated",
        QueueConfig {
            rate: Some(2.0),
            burst: Some(1),
            max_concurrent: None,
            retention: None,
        },
    )
    .await
    .expect("configure");
    for i in 0..6 {
        rated::start(&q, i).await.expect("start");
    }
    let r = h.drain().await.expect("drain");
    assert_eq!(r.count("done"), 6);
    // At 2/s with a burst of 1: one at once, then one every 500 ms exactly (the harness
    // steps the virtual clock by 10 ms while the bucket refills).
    let gaps: Vec<Duration> = r.runs.windows(2).map(|w| w[1].at.since(w[0].at)).collect();
    assert_eq!(gaps, vec![Duration::from_millis(500); 5]);
    let bad = q
        .configure(
            "rated",
            QueueConfig {
                rate: Some(-1.0),
                ..QueueConfig::default()
            },
        )
        .await;
    assert!(bad
        .expect_err("negative rate")
        .to_string()
        .contains("rate must be a positive number"));
}

/// Issue 9 (audit): the harness counts only outcomes the store recorded. A store that
/// answers `LeaseLost` for an outcome stops the drain with an error naming the attempt
/// (before, the drain reported it `done` while the task stayed running).
#[tokio::test]
async fn a_drain_fails_when_the_store_refuses_an_outcome() {
    use taskq_runtime::testing::HarnessError;
    let store = std::sync::Arc::new(taskq_tests::faulty::Faulty::default());
    let h = Harness::with_store(store.clone());
    let id = greet::start(&h.queue(), "ada".into()).await.expect("start");
    store.faults.lose_lease_of.lock().expect("lock").insert(id);
    let r = h.drain().await;
    match &r {
        Err(HarnessError::OutcomeRefused { ran, reason }) => {
            assert_eq!((ran.id, ran.attempt, ran.outcome), (id, 1, "done"));
            assert!(
                matches!(reason, StoreError::LeaseLost(i) if *i == id),
                "{reason:?}"
            );
        }
        other => panic!("a refused outcome must stop the drain: {other:?}"),
    }
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("refused the outcome `done` of attempt 1") && msg.contains("lost"),
        "{msg}"
    );
    // The store never recorded it: the task is still running.
    let t = h.queue().task(id).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Running);
}

/// Issue 9 (audit): a store whose `next_due` keeps naming a time while `claim` finds
/// nothing stops the drain with a clear error after `max_idle_rounds` rounds, instead of
/// moving the virtual clock for ever. Both lies: a due time in the past (the harness steps
/// 10 ms at a time) and one that always moves away.
#[tokio::test]
async fn a_drain_fails_when_next_due_and_claim_disagree() {
    use taskq_runtime::testing::{HarnessError, DEFAULT_MAX_IDLE_ROUNDS};
    use taskq_tests::faulty::{Faulty, NextDueLie};
    let past = NextDueLie::Fixed(taskq_runtime::Timestamp(0));
    let ahead = NextDueLie::RunsAhead {
        from: taskq_runtime::Timestamp::now(),
        step: Duration::from_secs(3600),
    };
    for (lie, rounds) in [(past, 500), (ahead, 500), (past, DEFAULT_MAX_IDLE_ROUNDS)] {
        // On a thread of its own: a drain that never yields cannot be timed out from its
        // own runtime, and without the guard it never ends.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let r = rt.block_on(async {
                let store = std::sync::Arc::new(Faulty::default());
                *store.faults.next_due_lie.lock().expect("lock") = Some(lie);
                let mut h = Harness::with_store(store);
                if rounds != DEFAULT_MAX_IDLE_ROUNDS {
                    h = h.max_idle_rounds(rounds);
                }
                h.drain().await
            });
            let _ = tx.send(r);
        });
        // Generous: the rounds cost microseconds each.
        let r = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("{lie:?}: the drain loops instead of failing"));
        match &r {
            Err(HarnessError::Stalled { rounds: n, .. }) => assert_eq!(*n, rounds, "{lie:?}"),
            other => panic!("{lie:?}: a stalled drain must fail: {other:?}"),
        }
        let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("next_due and claim disagree"), "{msg}");
    }
}

/// The stall guard counts rounds in a row without a claim: a queue allowed one task per
/// 100 s (10,000 rounds of 10 ms between claims) still drains, each run exactly 100 s after
/// the previous one on virtual time.
#[tokio::test]
async fn a_slow_rate_limit_is_not_a_stall() {
    let h = Harness::new().max_idle_rounds(20_000);
    let q = h.queue();
    q.configure(
        "rated",
        QueueConfig {
            rate: Some(0.01),
            burst: Some(1),
            max_concurrent: None,
            retention: None,
        },
    )
    .await
    .expect("configure");
    for i in 0..3 {
        rated::start(&q, i).await.expect("start");
    }
    let r = h.drain().await.expect("drain");
    assert_eq!(r.count("done"), 3);
    let gaps: Vec<Duration> = r.runs.windows(2).map(|w| w[1].at.since(w[0].at)).collect();
    assert_eq!(gaps, vec![Duration::from_secs(100); 2]);
}
