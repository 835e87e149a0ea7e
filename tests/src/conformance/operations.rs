//! Conformance cases of the management API the operations tools use (issue 12, the CLI
//! and the console): tasks filtered by a substring of their arguments, and retrying
//! every dead or failed task that matches a filter.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskq_runtime::store::{NewTask, Outcome, Store, StoreError, TaskQuery, TaskState};
use taskq_runtime::{Clock, Queue, TaskId};

use super::{at, finish_one, new_task, req, T0};

/// The ids `query` with `args_contains = text` lists, newest first.
async fn matching(s: &dyn Store, text: &str, query: TaskQuery) -> Vec<TaskId> {
    s.list_tasks(&TaskQuery {
        args_contains: Some(text.to_string()),
        ..query
    })
    .await
    .unwrap_or_else(|e| panic!("list with args_contains {text:?}: {e}"))
    .into_iter()
    .map(|t| t.id)
    .collect()
}

fn with_payload(queue: &str, payload: serde_json::Value) -> NewTask {
    let mut t = new_task(queue, 0);
    t.payload = payload;
    t
}

/// `TaskQuery::args_contains` matches a substring of the payload's compact JSON text,
/// case-sensitive and literal (`%`, `_` and `\` are no wildcards), alone or with every
/// other filter and with paging, and leaves the rest of the listing as it is.
pub async fn tasks_filter_by_a_substring_of_their_arguments(s: Arc<dyn Store>) {
    let mut tasks = vec![
        with_payload("a", json!({ "to": "ada@example.org" })),
        with_payload("a", json!({ "to": "bob@example.org" })),
        with_payload("b", json!({ "note": "100%_off" })),
        with_payload("b", json!({ "note": "100 percent off" })),
        with_payload("a", json!({ "x": "A_B" })),
        with_payload("a", json!({ "x": "AxB" })),
        with_payload("b", json!({ "q": "say \"hi\" to Zoë", "path": "C:\\tmp" })),
        with_payload("a", json!({ "to": "ada@example.org", "cc": "x" })),
    ];
    tasks[6].task = "conformance::other".into();
    let ids = s.enqueue(tasks, T0).await.expect("enqueue");
    let id = |i: usize| ids[i];
    // The first one (the oldest of queue `a`) is done.
    let c = s.claim(&req(&["a"], 1, 30_000, T0)).await.expect("claim");
    assert_eq!(c[0].lease.id, id(0));
    finish_one(&*s, &c[0], Outcome::Done, at(1))
        .await
        .expect("finish");
    let all = TaskQuery::default;

    assert_eq!(matching(&*s, "ada@", all()).await, vec![id(7), id(0)]);
    assert_eq!(
        matching(&*s, "example.org", all()).await,
        vec![id(7), id(1), id(0)]
    );
    // The compact JSON text: no space after the colon; keys sorted.
    assert_eq!(
        matching(&*s, r#""to":"ada"#, all()).await,
        vec![id(7), id(0)]
    );
    assert_eq!(matching(&*s, r#""to": "ada"#, all()).await, vec![]);
    assert_eq!(
        matching(&*s, r#"{"cc":"x","to":"#, all()).await,
        vec![id(7)]
    );
    // Case-sensitive.
    assert_eq!(matching(&*s, "ADA@", all()).await, vec![]);
    // LIKE's wildcards are plain characters.
    assert_eq!(matching(&*s, "100%", all()).await, vec![id(2)]);
    assert_eq!(matching(&*s, "%", all()).await, vec![id(2)]);
    assert_eq!(matching(&*s, "_", all()).await, vec![id(4), id(2)]);
    assert_eq!(matching(&*s, "A_B", all()).await, vec![id(4)]);
    assert_eq!(matching(&*s, "A%B", all()).await, vec![]);
    // JSON's escapes are part of the text; other characters are as they are.
    assert_eq!(matching(&*s, r#"\"hi\""#, all()).await, vec![id(6)]);
    assert_eq!(matching(&*s, r#""hi""#, all()).await, vec![]);
    assert_eq!(matching(&*s, r"C:\\tmp", all()).await, vec![id(6)]);
    assert_eq!(matching(&*s, r"C:\tmp", all()).await, vec![]);
    assert_eq!(matching(&*s, "Zoë", all()).await, vec![id(6)]);
    // An empty text matches every task; a NUL none.
    assert_eq!(matching(&*s, "", all()).await.len(), 8);
    assert_eq!(matching(&*s, "a\0", all()).await, vec![]);

    // With the other filters.
    let queue = |q: &str| TaskQuery {
        queue: Some(q.into()),
        ..TaskQuery::default()
    };
    let state = |st: TaskState| TaskQuery {
        state: Some(st),
        ..TaskQuery::default()
    };
    let task = |t: &str| TaskQuery {
        task: Some(t.into()),
        ..TaskQuery::default()
    };
    assert_eq!(matching(&*s, "ada@", queue("a")).await, vec![id(7), id(0)]);
    assert_eq!(matching(&*s, "ada@", queue("b")).await, vec![]);
    assert_eq!(matching(&*s, "100", queue("b")).await, vec![id(3), id(2)]);
    assert_eq!(
        matching(&*s, "ada@", state(TaskState::Done)).await,
        vec![id(0)]
    );
    assert_eq!(
        matching(&*s, "ada@", state(TaskState::Pending)).await,
        vec![id(7)]
    );
    assert_eq!(
        matching(
            &*s,
            "ada@",
            TaskQuery {
                queue: Some("a".into()),
                state: Some(TaskState::Done),
                ..TaskQuery::default()
            }
        )
        .await,
        vec![id(0)]
    );
    assert_eq!(
        matching(&*s, "hi", task("conformance::other")).await,
        vec![id(6)]
    );
    assert_eq!(matching(&*s, "hi", task("conformance::noop")).await, vec![]);

    // Paged by key.
    let page = |before: Option<TaskId>| TaskQuery {
        limit: 1,
        before,
        ..TaskQuery::default()
    };
    assert_eq!(matching(&*s, "example.org", page(None)).await, vec![id(7)]);
    assert_eq!(
        matching(&*s, "example.org", page(Some(id(7)))).await,
        vec![id(1)]
    );
    assert_eq!(
        matching(&*s, "example.org", page(Some(id(1)))).await,
        vec![id(0)]
    );
    assert_eq!(
        matching(&*s, "example.org", page(Some(id(0)))).await,
        vec![]
    );

    // Payloads come back only when asked, whatever the filter read.
    let listed = s
        .list_tasks(&TaskQuery {
            args_contains: Some("Zoë".into()),
            with_payload: true,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(
        listed[0].payload,
        json!({ "q": "say \"hi\" to Zoë", "path": "C:\\tmp" })
    );
    let listed = s
        .list_tasks(&TaskQuery {
            args_contains: Some("Zoë".into()),
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(listed[0].payload, serde_json::Value::Null);
}

/// Makes the tasks `ids` of `queue` (claimable at `now`) end with `outcome`.
async fn end_as(s: &dyn Store, queue: &str, ids: &[TaskId], outcome: Outcome, now: i64) {
    let claimed = s
        .claim(&req(&[queue], 1000, 30_000, at(now)))
        .await
        .expect("claim");
    for c in claimed {
        let o = if ids.contains(&c.lease.id) {
            outcome.clone()
        } else {
            Outcome::Release
        };
        finish_one(s, &c, o, at(now)).await.expect("finish");
    }
}

/// `Queue::retry_matching` retries every dead or failed task a filter selects (queue,
/// state, task name, arguments), in batches, whatever the query's `limit`; leaves other
/// states and other queues alone; refuses a state that cannot be retried; and skips a
/// task whose unique name a live task holds, still retrying the others.
pub async fn retry_matching_retries_every_dead_or_failed_match(s: Arc<dyn Store>) {
    let clock = Clock::manual(at(200_000));
    let queue = Queue::with_clock(s.clone(), clock);
    let a: Vec<NewTask> = (1..=7).map(|n| new_task("a", n)).collect();
    let a = s.enqueue(a, T0).await.expect("enqueue a");
    let dead = || Outcome::Dead {
        error: "gave up".into(),
    };
    let failed = || Outcome::Failed {
        error: "fatal".into(),
    };
    end_as(&*s, "a", &a[..3], dead(), 1).await;
    end_as(&*s, "a", &a[3..5], failed(), 2).await;
    end_as(&*s, "a", &a[5..6], Outcome::Done, 3).await;
    let b = s.enqueue(vec![new_task("b", 1)], T0).await.expect("b");
    end_as(&*s, "b", &b, dead(), 4).await;
    let bulk: Vec<NewTask> = (0..130).map(|n| new_task("bulk", n)).collect();
    let bulk = s.enqueue(bulk, T0).await.expect("bulk");
    end_as(&*s, "bulk", &bulk, dead(), 5).await;
    // Queue `n`: a dead named task whose name a live task took after its window, and a
    // dead unnamed one.
    let mut named = new_task("n", 1);
    named.unique_name = Some("nightly".into());
    named.tombstone = Duration::from_secs(60);
    let n = s
        .enqueue(vec![named.clone(), new_task("n", 2)], T0)
        .await
        .expect("n");
    end_as(&*s, "n", &n, dead(), 6).await;
    named.run_at = at(100_000);
    s.enqueue(vec![named], at(100_000))
        .await
        .expect("the name is free after its window");

    let state_of = |id: TaskId| {
        let s = s.clone();
        async move { s.task(id).await.expect("task").expect("exists").info.state }
    };
    let count = |q: &str, st: TaskState| {
        let s = s.clone();
        let q = q.to_string();
        async move {
            s.queues()
                .await
                .expect("queues")
                .into_iter()
                .find(|x| x.name == q)
                .map(|x| x.count(st))
                .unwrap_or(0)
        }
    };

    // A state that cannot be retried is refused, and nothing changes.
    let r = queue
        .retry_matching(&TaskQuery {
            state: Some(TaskState::Pending),
            ..TaskQuery::default()
        })
        .await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(count("a", TaskState::Dead).await, 3);

    // Failed only.
    let r = queue
        .retry_matching(&TaskQuery {
            queue: Some("a".into()),
            state: Some(TaskState::Failed),
            ..TaskQuery::default()
        })
        .await
        .expect("retry failed");
    assert_eq!(r, 2);
    assert_eq!(count("a", TaskState::Failed).await, 0);
    assert_eq!(count("a", TaskState::Dead).await, 3);
    // By arguments.
    let r = queue
        .retry_matching(&TaskQuery {
            queue: Some("a".into()),
            args_contains: Some(r#""n":2"#.into()),
            ..TaskQuery::default()
        })
        .await
        .expect("retry by arguments");
    assert_eq!(r, 1);
    assert_eq!(state_of(a[1]).await, TaskState::Pending);
    assert_eq!(state_of(a[0]).await, TaskState::Dead);
    // The rest of `a`; the done task and queue `b` are left alone.
    let r = queue
        .retry_matching(&TaskQuery {
            queue: Some("a".into()),
            ..TaskQuery::default()
        })
        .await
        .expect("retry a");
    assert_eq!(r, 2);
    assert_eq!(count("a", TaskState::Dead).await, 0);
    assert_eq!(count("a", TaskState::Done).await, 1);
    assert_eq!(count("a", TaskState::Pending).await, 6);
    assert_eq!(count("b", TaskState::Dead).await, 1);
    let retried = s.task(a[0]).await.expect("task").expect("exists").info;
    assert_eq!(retried.attempts, 0);
    assert_eq!(retried.run_at, at(200_000));
    assert_eq!(retried.enqueued_at, at(200_000));

    // More than a batch, whatever the query's limit.
    let r = queue
        .retry_matching(&TaskQuery {
            queue: Some("bulk".into()),
            state: Some(TaskState::Dead),
            limit: 5,
            ..TaskQuery::default()
        })
        .await
        .expect("retry bulk");
    assert_eq!(r, 130);
    assert_eq!(count("bulk", TaskState::Pending).await, 130);
    assert_eq!(count("bulk", TaskState::Dead).await, 0);

    // Everything left: `b`'s task and the unnamed one of `n`; the named one is skipped.
    let r = queue
        .retry_matching(&TaskQuery::default())
        .await
        .expect("retry all");
    assert_eq!(r, 2);
    assert_eq!(state_of(b[0]).await, TaskState::Pending);
    assert_eq!(state_of(n[1]).await, TaskState::Pending);
    assert_eq!(state_of(n[0]).await, TaskState::Dead);
    // Nothing is left to retry.
    assert_eq!(
        queue
            .retry_matching(&TaskQuery {
                state: Some(TaskState::Failed),
                ..TaskQuery::default()
            })
            .await
            .expect("again"),
        0
    );
}

/// `Store::retry_many` retries, in one call, those of its ids that are dead or failed, as
/// `retry` does for one (attempts reset, due now, a step's run running again), and leaves
/// the others (pending, done, absent, listed twice, or whose unique name a live task
/// holds) as they are; it returns how many it retried.
pub async fn retry_many_retries_those_it_can(s: Arc<dyn Store>) {
    let dead = || Outcome::Dead {
        error: "gave up".into(),
    };
    let mut named = new_task("m", 5);
    named.unique_name = Some("weekly".into());
    let ids = s
        .enqueue(
            vec![
                new_task("m", 1),
                new_task("m", 2),
                new_task("m", 3),
                new_task("m", 4),
                named.clone(),
            ],
            T0,
        )
        .await
        .expect("enqueue");
    let (d, f, done, pending, named_dead) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    let claimed = s
        .claim(&req(&["m"], 10, 30_000, at(1)))
        .await
        .expect("claim");
    for c in &claimed {
        let o = match c.lease.id {
            x if x == d || x == named_dead => dead(),
            x if x == f => Outcome::Failed {
                error: "fatal".into(),
            },
            x if x == done => Outcome::Done,
            _ => Outcome::Release,
        };
        finish_one(&*s, c, o, at(1)).await.expect("finish");
    }
    // The name is free after its 60 s window, and a live task takes it.
    named.run_at = at(100_000);
    s.enqueue(vec![named], at(100_000))
        .await
        .expect("the name is free after its window");
    // A run whose step died.
    let mut walk = new_task("iter", 0);
    walk.task = "conformance::walk".into();
    walk.payload = json!({ "filter": {}, "args": {} });
    walk.iteration = Some(taskq_runtime::store::NewIteration { filter: json!({}) });
    let run = s.enqueue(vec![walk], at(1)).await.expect("run")[0];
    let step = s
        .claim(&req(&["iter"], 1, 30_000, at(2)))
        .await
        .expect("claim step");
    finish_one(&*s, &step[0], dead(), at(2))
        .await
        .expect("finish step");
    assert_eq!(
        s.iteration(run).await.expect("run").expect("exists").state,
        taskq_runtime::RunState::Dead
    );

    let now = at(200_000);
    let n = s
        .retry_many(
            &[d, f, done, pending, named_dead, TaskId(999_999), d, run],
            now,
        )
        .await
        .expect("retry_many");
    assert_eq!(n, 3, "the dead, the failed and the run's step");
    for id in [d, f, run] {
        let t = s.task(id).await.expect("task").expect("exists").info;
        assert_eq!(t.state, TaskState::Pending, "{t:?}");
        assert_eq!(t.attempts, 0);
        assert_eq!(t.run_at, now);
        assert_eq!(t.enqueued_at, now);
    }
    let state = |id| {
        let s = s.clone();
        async move { s.task(id).await.expect("task").expect("exists").info.state }
    };
    assert_eq!(state(done).await, TaskState::Done);
    assert_eq!(state(pending).await, TaskState::Pending);
    assert_eq!(state(named_dead).await, TaskState::Dead);
    assert_eq!(
        s.iteration(run).await.expect("run").expect("exists").state,
        taskq_runtime::RunState::Running
    );
    let m = s
        .queues()
        .await
        .expect("queues")
        .into_iter()
        .find(|q| q.name == "m")
        .expect("m");
    assert_eq!(m.count(TaskState::Dead), 1);
    assert_eq!(m.count(TaskState::Failed), 0);
    assert_eq!(m.count(TaskState::Pending), 4);
    assert_eq!(s.retry_many(&[], now).await.expect("nothing"), 0);
    // They are claimable at once.
    let c = s
        .claim(&req(&["m", "iter"], 10, 30_000, now))
        .await
        .expect("claim");
    assert_eq!(c.len(), 5, "{c:?}");
}

/// Two `retry_many` calls over the same dead tasks at once, in opposite orders: each task
/// is retried once (the two counts add up to the number of tasks), neither call fails or
/// hangs, and the counts by state stay exact.
pub async fn concurrent_retry_many_retry_each_task_once(s: Arc<dyn Store>) {
    let tasks: Vec<NewTask> = (0..60).map(|n| new_task("r", n)).collect();
    let mut ids = s.enqueue(tasks, T0).await.expect("enqueue");
    end_as(
        &*s,
        "r",
        &ids,
        Outcome::Dead {
            error: "gave up".into(),
        },
        1,
    )
    .await;
    let forward = ids.clone();
    ids.reverse();
    let (a, b) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(s.retry_many(&forward, at(10)), s.retry_many(&ids, at(10)))
    })
    .await
    .expect("two retries at once hang");
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a + b, 60, "{a} + {b}");
    let r = s
        .queues()
        .await
        .expect("queues")
        .into_iter()
        .find(|q| q.name == "r")
        .expect("r");
    assert_eq!(r.count(TaskState::Pending), 60);
    assert_eq!(r.count(TaskState::Dead), 0);
}
