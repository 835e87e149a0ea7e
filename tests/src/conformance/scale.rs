//! Conformance cases of a store that holds a long history (issue 10, scale): counts by
//! state equal a full count, listings page by key and leave payloads out unless asked,
//! claims reach due rows past future, paused, finished and other queues' rows in the one
//! claim order, and the largest payload is the same on every store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::json;
use taskq_runtime::store::{
    Checkpoint, Finish, Lease, NewIteration, Outcome, QueueConfig, Store, StoreError, TaskInfo,
    TaskQuery, TaskState,
};
use taskq_runtime::value::MAX_PAYLOAD_BYTES;
use taskq_runtime::{Retention, TaskId};

use super::{at, finish_one, new_task, req, T0};

/// A small deterministic generator (xorshift64*), so a failing sequence replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> Option<&'a T> {
        match xs.len() {
            0 => None,
            n => xs.get(self.below(n as u64) as usize),
        }
    }
}

/// Every task, newest first, read through keyset pages of `page` (payloads left out).
async fn every_task(s: &dyn Store, page: usize) -> Vec<TaskInfo> {
    let mut out: Vec<TaskInfo> = Vec::new();
    loop {
        let got = s
            .list_tasks(&TaskQuery {
                before: out.last().map(|t| t.id),
                limit: page,
                ..TaskQuery::default()
            })
            .await
            .expect("list_tasks");
        let n = got.len();
        out.extend(got);
        if n < page {
            return out;
        }
    }
}

/// `queues()` against a count of every task: each queue's count of each state is exact,
/// and a queue is listed when it has tasks or settings (those in `configured`).
async fn assert_counts_exact(s: &dyn Store, configured: &BTreeSet<String>, step: &str) {
    let mut full: BTreeMap<String, BTreeMap<TaskState, u64>> = BTreeMap::new();
    for t in every_task(s, 7).await {
        *full.entry(t.queue).or_default().entry(t.state).or_default() += 1;
    }
    let listed = s.queues().await.expect("queues");
    let names: Vec<&str> = listed.iter().map(|q| q.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        names, sorted,
        "{step}: queues() lists each queue once, by name"
    );
    for q in &listed {
        let want = full.get(&q.name).cloned().unwrap_or_default();
        for state in TaskState::ALL {
            assert_eq!(
                q.count(state),
                want.get(&state).copied().unwrap_or(0),
                "{step}: queue `{}`, state {state}: queues() {:?}, full count {want:?}",
                q.name,
                q.counts
            );
        }
        assert!(
            q.counts.iter().all(|(_, n)| *n > 0) || q.counts.is_empty(),
            "{step}: queue `{}` lists a zero count: {:?}",
            q.name,
            q.counts
        );
        assert!(
            !want.is_empty() || configured.contains(&q.name),
            "{step}: queue `{}` has no task and no settings but is listed",
            q.name
        );
    }
    for (name, counts) in &full {
        assert!(
            names.contains(&name.as_str()),
            "{step}: queue `{name}` has tasks {counts:?} but queues() leaves it out"
        );
    }
}

/// `queues()` counts equal a full count of the tasks (read through `list_tasks`) after
/// every step of random operations: starts (named, delayed, iterative), claims, every
/// outcome, lapsed leases, heartbeats, checkpoints, delete, purge, retry, run now, cancel
/// (of a task and of a run), pause and resume, retention settings and prunes (on virtual time, days apart). Three
/// fixed seeds, so a failure replays.
pub async fn queue_counts_equal_a_full_count(s: Arc<dyn Store>) {
    const QUEUES: [&str; 3] = ["a", "b", "c"];
    // Queues with settings stay listed across seeds (one store for all three).
    let mut configured: BTreeSet<String> = BTreeSet::new();
    // Finished tasks the prunes took, so the case is known to have counted some.
    let mut pruned = 0;
    for seed in [0x9e37_79b9_7f4a_7c15_u64, 42, 7_777_777] {
        let mut rng = Rng(seed);
        let mut now = at(seed as i64 % 1000);
        let mut held: Vec<(Lease, bool)> = Vec::new();
        let mut ids: Vec<TaskId> = Vec::new();
        // Tasks finished failed or dead, which a retry takes back to pending.
        let mut failed: Vec<TaskId> = Vec::new();
        for step in 0..120 {
            let queue = *rng.pick(&QUEUES).unwrap_or(&"a");
            let op = rng.below(15);
            let what = format!("seed {seed} step {step} op {op}");
            let r: Result<(), StoreError> = match op {
                0..=2 => {
                    let n = 1 + rng.below(3) as usize;
                    let tasks = (0..n)
                        .map(|i| {
                            let mut t = new_task(queue, (step * 10 + i) as i64);
                            t.priority = rng.below(3) as i32 - 1;
                            t.run_at =
                                now.add(std::time::Duration::from_millis(rng.below(3) * 500));
                            if rng.below(4) == 0 {
                                t.unique_name = Some(format!("name-{}", rng.below(4)));
                            }
                            if rng.below(4) == 0 {
                                t.task = "conformance::walk".into();
                                t.payload = json!({ "filter": {}, "args": {} });
                                t.iteration = Some(NewIteration { filter: json!({}) });
                            }
                            t
                        })
                        .collect();
                    s.enqueue(tasks, now).await.map(|new| ids.extend(new))
                }
                3 | 4 => {
                    let qs: Vec<&str> = QUEUES
                        .iter()
                        .copied()
                        .filter(|_| rng.below(2) == 0)
                        .collect();
                    let lease = 200 + rng.below(2000);
                    s.claim(&req(&qs, 1 + rng.below(3) as usize, lease, now))
                        .await
                        .map(|got| {
                            held.extend(got.iter().map(|c| (c.lease, c.iteration.is_some())))
                        })
                }
                5 | 6 if !held.is_empty() => {
                    let i = rng.below(held.len() as u64) as usize;
                    let (lease, iterative) = held.swap_remove(i);
                    let later = now.add(std::time::Duration::from_millis(300));
                    let outcome = match rng.below(if iterative { 6 } else { 5 }) {
                        0 => Outcome::Done,
                        1 => Outcome::Failed { error: "no".into() },
                        2 => Outcome::Retry {
                            error: "again".into(),
                            run_at: later,
                        },
                        3 => Outcome::Dead {
                            error: "gone".into(),
                        },
                        4 => Outcome::Release,
                        _ => Outcome::Continue { run_at: later },
                    };
                    if matches!(outcome, Outcome::Failed { .. } | Outcome::Dead { .. }) {
                        failed.push(lease.id);
                    }
                    let fin = Finish {
                        lease,
                        outcome,
                        started_at: now,
                    };
                    match s.finish(vec![fin], "w1", now).await {
                        Ok(mut r) => r.pop().unwrap_or(Ok(())),
                        Err(e) => Err(e),
                    }
                }
                7 if !held.is_empty() => {
                    let (lease, iterative) = held[rng.below(held.len() as u64) as usize];
                    if iterative {
                        let cp = Checkpoint {
                            cursor: json!(step),
                            processed: 1,
                            total: None,
                        };
                        s.checkpoint(lease, cp, now).await
                    } else {
                        let until = now.add(std::time::Duration::from_millis(1000));
                        s.heartbeat(&[lease], "w1", until).await.map(|_| ())
                    }
                }
                8 => match rng.pick(&ids).copied() {
                    Some(id) => s.delete(id, now).await,
                    None => Ok(()),
                },
                9 => match (rng.below(3), rng.pick(&failed).copied()) {
                    (0, Some(id)) => s.retry(id, now).await,
                    _ => match rng.pick(&ids).copied() {
                        Some(id) if rng.below(2) == 0 => s.retry(id, now).await,
                        Some(id) => s.run_now(id, now).await,
                        None => Ok(()),
                    },
                },
                10 => match rng.below(4) {
                    0 => s.purge(queue, now).await.map(|_| ()),
                    // Cancel a task (pending: cancelled now; running: marked, ended by
                    // its finish or by the claim that finds its lease lapsed).
                    1 => match rng.pick(&ids).copied() {
                        Some(id) => s.cancel(id, now).await.map(|_| ()),
                        None => Ok(()),
                    },
                    _ => match rng.pick(&ids).copied() {
                        Some(id) => s.cancel_iteration(id, now).await,
                        None => Ok(()),
                    },
                },
                11 => {
                    configured.insert(queue.to_string());
                    s.set_paused(queue, rng.below(2) == 0).await
                }
                12 => {
                    // A short retention on some queues, so that prunes take rows of the
                    // queues beside others kept by the defaults.
                    configured.insert(queue.to_string());
                    let keep = std::time::Duration::from_millis(500 + rng.below(2000));
                    let retention = match rng.below(3) {
                        0 => Retention::OFF,
                        1 => Retention {
                            done: Some(keep),
                            failed: None,
                        },
                        _ => Retention {
                            done: Some(keep),
                            failed: Some(keep * 2),
                        },
                    };
                    let config = QueueConfig {
                        retention: Some(retention),
                        ..QueueConfig::default()
                    };
                    s.configure_queue(queue, config).await
                }
                13 => {
                    // Prunes in small batches, now and then a day or a week on, so the
                    // defaults take finished rows too.
                    let day = std::time::Duration::from_secs(24 * 3600);
                    match rng.below(4) {
                        0 => now = now.add(day),
                        1 => now = now.add(day * 8),
                        _ => {}
                    }
                    s.prune(now, 1 + rng.below(4) as usize)
                        .await
                        .map(|r| pruned += r.total_tasks())
                }
                _ => {
                    now = now.add(std::time::Duration::from_millis(rng.below(1500)));
                    Ok(())
                }
            };
            if let Err(e @ StoreError::Backend(_)) = r {
                panic!("{what}: the store failed: {e}");
            }
            assert_counts_exact(&*s, &configured, &what).await;
        }
    }
    assert!(
        pruned > 0,
        "no prune took a finished task: the case did not test them"
    );
}

/// A listing leaves payloads out unless asked (`payload` is null), pages by key with
/// every filter combination, and with `with_payload` returns them unchanged.
pub async fn listing_leaves_payloads_out_unless_asked(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for n in 0..24i64 {
        let mut t = new_task(["a", "b", "c"][(n % 3) as usize], n);
        t.payload = json!({ "n": n, "blob": "x".repeat(1000 + n as usize) });
        if n % 4 == 0 {
            t.task = "conformance::other".into();
        }
        tasks.push(t);
    }
    let ids = s.enqueue(tasks.clone(), T0).await.expect("enqueue");
    // Some of each state: done, failed, running, pending.
    let c = s
        .claim(&req(&["a", "b"], 9, 30_000, T0))
        .await
        .expect("claim");
    for (i, t) in c.iter().enumerate().take(6) {
        let outcome = match i % 2 {
            0 => Outcome::Done,
            _ => Outcome::Failed { error: "no".into() },
        };
        finish_one(&*s, t, outcome, at(1)).await.expect("finish");
    }
    let full = {
        let mut all = s
            .list_tasks(&TaskQuery {
                with_payload: true,
                limit: 1000,
                ..TaskQuery::default()
            })
            .await
            .expect("list with payloads");
        all.sort_by_key(|t| std::cmp::Reverse(t.id));
        all
    };
    assert_eq!(full.len(), ids.len());
    for t in &full {
        let i = ids
            .iter()
            .position(|id| *id == t.id)
            .expect("an id of ours");
        assert_eq!(
            t.payload, tasks[i].payload,
            "with_payload returns the payload"
        );
    }
    let queues = [None, Some("a"), Some("c")];
    let states = [
        None,
        Some(TaskState::Pending),
        Some(TaskState::Done),
        Some(TaskState::Running),
    ];
    let names = [None, Some("conformance::other"), Some("conformance::noop")];
    for queue in queues {
        for state in states {
            for task in names {
                let want: Vec<TaskId> = full
                    .iter()
                    .filter(|t| queue.is_none_or(|q| t.queue == q))
                    .filter(|t| state.is_none_or(|st| t.state == st))
                    .filter(|t| task.is_none_or(|n| t.task == n))
                    .map(|t| t.id)
                    .collect();
                let mut got: Vec<TaskInfo> = Vec::new();
                loop {
                    let page = s
                        .list_tasks(&TaskQuery {
                            queue: queue.map(str::to_string),
                            state,
                            task: task.map(str::to_string),
                            before: got.last().map(|t| t.id),
                            limit: 2,
                            with_payload: false,
                            args_contains: None,
                        })
                        .await
                        .expect("list");
                    let n = page.len();
                    got.extend(page);
                    if n < 2 {
                        break;
                    }
                }
                let where_ = format!("queue {queue:?}, state {state:?}, task {task:?}");
                assert_eq!(
                    got.iter().map(|t| t.id).collect::<Vec<_>>(),
                    want,
                    "{where_}"
                );
                for t in &got {
                    assert_eq!(
                        t.payload,
                        serde_json::Value::Null,
                        "{where_}: payload left out"
                    );
                    let f = full.iter().find(|f| f.id == t.id).expect("listed in full");
                    let mut f = f.clone();
                    f.payload = serde_json::Value::Null;
                    assert_eq!(*t, f, "{where_}: every other field as with the payload");
                }
            }
        }
    }
}

/// Claims take due rows in the one order (priority, then `run_at`, then id) however many
/// rows there are that they must not take: pending rows due later at a higher priority,
/// rows of a paused queue, rows of queues not asked for, finished rows. Also when the
/// caller's time goes back, when a future row is run now, and when a retry waits.
pub async fn claims_reach_due_rows_past_rows_they_must_not_take(s: Arc<dyn Store>) {
    let hour = 3_600_000;
    // History: finished rows of the served queue, at the highest priority.
    let mut old = Vec::new();
    for n in 0..20 {
        let mut t = new_task("served", n);
        t.priority = 100;
        old.push(t);
    }
    s.enqueue(old, T0).await.expect("enqueue history");
    let c = s
        .claim(&req(&["served"], 20, 30_000, T0))
        .await
        .expect("claim history");
    assert_eq!(c.len(), 20);
    for t in &c {
        finish_one(&*s, t, Outcome::Done, T0).await.expect("finish");
    }
    // Future rows at higher priorities, due rows of a paused queue and of another queue.
    let mut noise = Vec::new();
    for n in 0..30 {
        let mut t = new_task("served", 100 + n);
        t.priority = 5 + (n as i32 % 3);
        t.run_at = at(hour + n);
        noise.push(t);
        let mut p = new_task("paused", 200 + n);
        p.priority = 50;
        noise.push(p);
        let mut o = new_task("other", 300 + n);
        o.priority = 50;
        noise.push(o);
    }
    let noise_ids = s.enqueue(noise, T0).await.expect("enqueue noise");
    s.set_paused("paused", true).await.expect("pause");
    // The due rows: two priorities, run_at out of id order.
    let mut due = Vec::new();
    for (n, (prio, run_at)) in [(0, 30), (1, 20), (0, 10), (1, 20), (-1, 0), (0, 10)]
        .into_iter()
        .enumerate()
    {
        let mut t = new_task("served", 400 + n as i64);
        t.priority = prio;
        t.run_at = at(run_at);
        due.push(t);
    }
    let d = s.enqueue(due, T0).await.expect("enqueue due");
    let ids =
        |c: &[taskq_runtime::store::ClaimedTask]| c.iter().map(|c| c.lease.id).collect::<Vec<_>>();

    // Two queues at 1 s: `other`'s priority 50 first (the future rows are an hour ahead).
    let first = s
        .claim(&req(&["served", "other"], 6, 30_000, at(1_000)))
        .await
        .expect("claim");
    assert_eq!(first.len(), 6);
    assert!(
        first.iter().all(|c| c.queue == "other"),
        "priority 50 of `other` first"
    );
    // The caller's clock goes back to 15 ms: only the rows due by then, in order.
    let early = s
        .claim(&req(&["served"], 10, 30_000, at(15)))
        .await
        .expect("claim");
    assert_eq!(ids(&early), vec![d[2], d[5], d[4]]);
    let none = s
        .claim(&req(&["served"], 10, 30_000, at(12)))
        .await
        .expect("claim");
    assert_eq!(ids(&none), vec![], "nothing else is due at 12 ms");
    let got = s
        .claim(&req(&["served"], 10, 30_000, at(1_000)))
        .await
        .expect("claim");
    assert_eq!(ids(&got), vec![d[1], d[3], d[0]]);

    // A retry waits its backoff behind the noise; run now makes a future row due.
    let retry = Outcome::Retry {
        error: "x".into(),
        run_at: at(5_000),
    };
    finish_one(&*s, &got[0], retry, at(1_000))
        .await
        .expect("retry");
    let future = noise_ids[0];
    s.run_now(future, at(2_000)).await.expect("run now");
    // Every queue: `other`'s 24 left (priority 50) come first, the paused queue's never.
    let all = s
        .claim(&req(&[], 10, 30_000, at(2_000)))
        .await
        .expect("claim");
    assert_eq!(all.len(), 10);
    assert!(all.iter().all(|c| c.queue == "other"), "{:?}", ids(&all));
    let served = s
        .claim(&req(&["served"], 10, 30_000, at(2_000)))
        .await
        .expect("claim");
    assert_eq!(ids(&served), vec![future], "the row run now, not the retry");
    let retried = s
        .claim(&req(&["served"], 10, 30_000, at(5_000)))
        .await
        .expect("claim");
    assert_eq!(ids(&retried), vec![got[0].lease.id]);
    // The paused queue's rows stay; resumed, they are claimed.
    s.set_paused("paused", false).await.expect("resume");
    let p = s
        .claim(&req(&["paused"], 100, 30_000, at(5_000)))
        .await
        .expect("claim");
    assert_eq!(p.len(), 30);
    // next_due of the served queue: the first lease to lapse (claimed at 15 ms), not the
    // due rows of `other` nor the future rows.
    assert_eq!(
        s.next_due(&["served".to_string()]).await.expect("next_due"),
        Some(at(30_015))
    );
}

/// The largest payload is the same on every store: a payload of exactly
/// [`MAX_PAYLOAD_BYTES`] of JSON is stored and comes back whole; one byte more is refused
/// with `InvalidValue` naming the task, the argument, the size and the limit, and nothing
/// is stored. A cursor over the limit is refused the same way.
pub async fn payload_size_limit_is_the_same_on_every_store(s: Arc<dyn Store>) {
    let wrap = r#"{"blob":""}"#.len();
    let mut fits = new_task("big", 1);
    fits.payload = json!({ "blob": "x".repeat(MAX_PAYLOAD_BYTES - wrap) });
    assert_eq!(fits.payload.to_string().len(), MAX_PAYLOAD_BYTES);
    let mut over = new_task("big", 2);
    over.payload = json!({ "blob": "x".repeat(MAX_PAYLOAD_BYTES - wrap + 1) });

    let r = s.enqueue(vec![new_task("big", 0), over], T0).await;
    let Err(StoreError::InvalidValue(msg)) = r else {
        panic!("a payload one byte over the limit: {r:?}");
    };
    for part in [
        "`blob`",
        &(MAX_PAYLOAD_BYTES + 1).to_string(),
        &MAX_PAYLOAD_BYTES.to_string(),
        "task #1",
        "MAX_PAYLOAD_BYTES",
    ] {
        assert!(msg.contains(part), "the error names {part}: {msg}");
    }
    assert!(s
        .list_tasks(&TaskQuery::default())
        .await
        .expect("list")
        .is_empty());

    let ids = s
        .enqueue(vec![fits], T0)
        .await
        .expect("a payload at the limit");
    let c = s.claim(&req(&["big"], 1, 30_000, T0)).await.expect("claim");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].lease.id, ids[0]);
    let blob = c[0]
        .payload
        .get("blob")
        .and_then(|b| b.as_str())
        .map(str::len);
    assert_eq!(
        blob,
        Some(MAX_PAYLOAD_BYTES - wrap),
        "the payload comes back whole"
    );

    let mut it = new_task("big-iter", 3);
    it.payload = json!({ "filter": {}, "args": {} });
    it.iteration = Some(NewIteration { filter: json!({}) });
    s.enqueue(vec![it], T0).await.expect("enqueue");
    let c = s
        .claim(&req(&["big-iter"], 1, 30_000, T0))
        .await
        .expect("claim");
    let huge = json!("y".repeat(MAX_PAYLOAD_BYTES));
    let r = s
        .checkpoint(
            c[0].lease,
            Checkpoint {
                cursor: huge,
                processed: 1,
                total: None,
            },
            at(1),
        )
        .await;
    assert!(
        matches!(&r, Err(StoreError::InvalidValue(m)) if m.contains(&MAX_PAYLOAD_BYTES.to_string())),
        "a cursor over the limit: {r:?}"
    );
}
