//! Queue limits hold across claimers (issue 9, audit): `max_concurrent`, `rate` and `burst`
//! are enforced by the store inside `claim`, so they must hold when several workers in
//! several processes claim from one store at once. Two processes of
//! `taskq-limits-worker`, each with two workers on store connections of their own, serve
//! three limited queues of one SQLite file, or of one PostgreSQL schema.
//!
//! What is asserted, from the instants every execution logs:
//! - **Concurrency, exactly**: an execution runs from the start to the end of its task's
//!   function, which lies inside its claim and the record of its outcome; at no instant do
//!   more than `max_concurrent` executions of a queue run (and the peak reaches it, so the
//!   limit was under pressure).
//! - **Rate and burst, exactly**: the bucket admits at most `burst + rate × (b − a)` claims
//!   whose effective time lies in any window `[a, b]`. A claim's effective time (the
//!   bucket's refill time after it, the latest `now` of the claims before it) is not seen
//!   directly, but it lies between the claim's own `now` (read back from its lease) and the
//!   start of the task's function (after the claim committed). So every window `[a, b]`
//!   over those instants must hold at most that many claims whose whole interval lies
//!   inside it. The instants are milliseconds, as the store's.
//! - Every task ran once (one attempt, one log line), and each queue's tasks were claimed
//!   by both processes.
//!
//! Sizes are small by default (about 2 s of work per store); `TASKQ_LIMITS_SCALE=N`
//! multiplies the number of tasks for a longer local run.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use taskq_runtime::store::{NewTask, QueueConfig, TaskState};
use taskq_runtime::{Queue, TaskId, Timestamp};
use tokio::io::{AsyncBufReadExt, BufReader};

/// One limited queue of the run.
struct Case {
    queue: &'static str,
    /// The probe task registered for that queue in the worker binary.
    task: &'static str,
    config: QueueConfig,
    tasks: usize,
    /// How long each execution runs.
    ms: u64,
}

fn cases(scale: usize) -> Vec<Case> {
    vec![
        Case {
            queue: "limits-capped",
            task: "taskq_limits_worker::capped",
            config: QueueConfig {
                rate: None,
                burst: None,
                max_concurrent: Some(3),
                retention: None,
            },
            tasks: 40 * scale,
            ms: 40,
        },
        Case {
            queue: "limits-rated",
            task: "taskq_limits_worker::rated",
            config: QueueConfig {
                rate: Some(20.0),
                burst: Some(4),
                max_concurrent: None,
                retention: None,
            },
            tasks: 30 * scale,
            ms: 0,
        },
        Case {
            queue: "limits-both",
            task: "taskq_limits_worker::both",
            config: QueueConfig {
                rate: Some(10.0),
                burst: Some(3),
                max_concurrent: Some(2),
                retention: None,
            },
            tasks: 16 * scale,
            ms: 150,
        },
    ]
}

/// One execution, as a worker process logged it.
#[derive(Clone, Debug)]
struct Exec {
    id: TaskId,
    queue: String,
    /// The `now` of the claim that took it (ms).
    claim_ms: i64,
    /// When the task's function began and ended (ns since the epoch).
    start_ns: u128,
    end_ns: u128,
}

impl Exec {
    fn parse(line: &str) -> Exec {
        fn field<T: std::str::FromStr>(line: &str, f: Option<&str>) -> T {
            f.and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("a torn or foreign log line: {line:?}"))
        }
        let mut f = line.split(' ');
        let e = Exec {
            id: TaskId(field(line, f.next())),
            queue: field(line, f.next()),
            claim_ms: field(line, f.next()),
            start_ns: field(line, f.next()),
            end_ns: field(line, f.next()),
        };
        assert!(f.next().is_none(), "a foreign log line: {line:?}");
        e
    }

    /// The start of the task's function in ms (floored, like the store's timestamps).
    fn start_ms(&self) -> i64 {
        (self.start_ns / 1_000_000) as i64
    }
}

/// The largest number of executions running at one instant. At equal instants an end
/// counts before a start (a slot freed, then taken).
fn peak_concurrency(execs: &[&Exec]) -> usize {
    let mut events: Vec<(u128, i32)> = Vec::new();
    for e in execs {
        assert!(e.start_ns <= e.end_ns, "{e:?}");
        events.push((e.start_ns, 1));
        events.push((e.end_ns, -1));
    }
    events.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

/// The worst window for the token bucket: the largest `count - allowance` over every
/// window `[a, b]` (ms), where `count` is the number of claims whose interval
/// `[claim_ms, start_ms]` lies inside it and `allowance = burst + rate × (b − a)`.
/// Returns `(excess, a, b, count)`.
fn worst_window(execs: &[&Exec], rate: f64, burst: f64) -> (f64, i64, i64, usize) {
    let spans: Vec<(i64, i64)> = execs
        .iter()
        .map(|e| {
            assert!(
                e.claim_ms <= e.start_ms(),
                "a claim's now after its task began: {e:?}"
            );
            (e.claim_ms, e.start_ms())
        })
        .collect();
    let starts: BTreeSet<i64> = spans.iter().map(|s| s.0).collect();
    let mut worst = (f64::NEG_INFINITY, 0, 0, 0);
    for &a in &starts {
        let mut ends: Vec<i64> = spans.iter().filter(|s| s.0 >= a).map(|s| s.1).collect();
        ends.sort_unstable();
        for (i, &b) in ends.iter().enumerate() {
            // Count every claim ending at or before `b`: the last of equal ends.
            if ends.get(i + 1) == Some(&b) {
                continue;
            }
            let count = i + 1;
            let allowance = burst + rate * (b - a) as f64 / 1000.0;
            let excess = count as f64 - allowance;
            if excess > worst.0 {
                worst = (excess, a, b, count);
            }
        }
    }
    worst
}

/// Runs the probe queues on the store at `url` with `processes` worker processes of
/// `workers` workers each, then checks every limit.
async fn limits_hold_across_processes(url: &str, processes: usize, workers: usize) {
    let scale: usize = std::env::var("TASKQ_LIMITS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let cases = cases(scale);
    let queue = Queue::open(url).await.expect("open the store");
    for c in &cases {
        queue
            .configure(c.queue, c.config.clone())
            .await
            .expect("configure");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut children = Vec::new();
    for p in 0..processes {
        let stderr =
            std::fs::File::create(dir.path().join(format!("worker-{p}.err"))).expect("stderr file");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskq-limits-worker"))
            .args([
                url,
                &dir.path().join(format!("log-{p}")).display().to_string(),
                &workers.to_string(),
                "4",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn taskq-limits-worker");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("worker process {p} not ready in 60 s"));
        assert_eq!(
            ready.ok().flatten().as_deref(),
            Some("ready"),
            "worker process {p}: {}",
            std::fs::read_to_string(dir.path().join(format!("worker-{p}.err"))).unwrap_or_default()
        );
        children.push(child);
    }

    // Every process serves the queues before any task exists: they all race from the start.
    let now = Timestamp::now();
    let mut tasks = Vec::new();
    for c in &cases {
        for _ in 0..c.tasks {
            tasks.push(NewTask {
                task: c.task.into(),
                queue: c.queue.into(),
                payload: json!({ "ms": c.ms }),
                priority: 0,
                run_at: now,
                unique_name: None,
                tombstone: Duration::from_secs(60),
                iteration: None,
                trace: None,
            });
        }
    }
    let total = tasks.len() as u64;
    queue
        .store()
        .enqueue(tasks, now)
        .await
        .expect("enqueue the probes");
    let started = Instant::now();
    loop {
        let qs = queue.queues().await.expect("queues");
        let count = |s| qs.iter().map(|q| q.count(s)).sum::<u64>();
        let (done, ended) = (
            count(TaskState::Done),
            count(TaskState::Failed) + count(TaskState::Dead),
        );
        assert_eq!(ended, 0, "a probe failed: see the attempts");
        if done == total {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{done} of {total} probes done after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (p, mut child) in children.into_iter().enumerate() {
        drop(child.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .unwrap_or_else(|_| panic!("worker process {p} did not stop in 60 s"))
            .expect("wait");
        assert!(
            status.success(),
            "worker process {p}: {status}\n{}",
            std::fs::read_to_string(dir.path().join(format!("worker-{p}.err"))).unwrap_or_default()
        );
    }

    let mut execs = Vec::new();
    for p in 0..processes {
        let log = std::fs::read_to_string(dir.path().join(format!("log-{p}"))).unwrap_or_default();
        execs.extend(log.lines().map(Exec::parse));
    }
    assert_eq!(execs.len() as u64, total, "one log line per probe");
    let ids: BTreeSet<TaskId> = execs.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), execs.len(), "no probe ran twice");

    // Who claimed each probe: its one attempt's worker, `p<pid>-w<i>`.
    let mut process_of: BTreeMap<TaskId, String> = BTreeMap::new();
    for e in &execs {
        let t = queue.task(e.id).await.expect("task").expect("exists");
        assert_eq!(t.attempts.len(), 1, "{t:?}");
        assert_eq!(t.info.queue, e.queue);
        let worker = &t.attempts[0].worker;
        let process = worker.split('-').next().unwrap_or_default().to_string();
        process_of.insert(e.id, process);
    }

    // Every breach of every queue is listed before the test fails.
    let mut breaches = Vec::new();
    for c in &cases {
        let of: Vec<&Exec> = execs.iter().filter(|e| e.queue == c.queue).collect();
        assert_eq!(of.len(), c.tasks, "{}", c.queue);
        let by: BTreeSet<&String> = of.iter().filter_map(|e| process_of.get(&e.id)).collect();
        let mut figures = format!("{} ({} tasks, {} processes)", c.queue, of.len(), by.len());
        if by.len() < 2 {
            breaches.push(format!(
                "{}: every probe was claimed by one process ({by:?}): the claimers did not race",
                c.queue
            ));
        }
        if let Some(cap) = c.config.max_concurrent {
            let peak = peak_concurrency(&of);
            figures += &format!(": peak {peak} of max_concurrent {cap}");
            if peak > cap as usize {
                breaches.push(format!(
                    "{}: {peak} executions at once, max_concurrent is {cap}",
                    c.queue
                ));
            } else if peak < cap as usize {
                breaches.push(format!(
                    "{}: the limit of {cap} was never reached (peak {peak}), so never tested",
                    c.queue
                ));
            }
        }
        if let Some(rate) = c.config.rate {
            let burst = taskq_runtime::store::admission::burst(&c.config).expect("a rate");
            let (excess, a, b, count) = worst_window(&of, rate, burst);
            figures += &format!(
                ": tightest window {count} claims in {} ms (allowance {:.3})",
                b - a,
                count as f64 - excess
            );
            // The float arithmetic of the bucket is exact to far better than 1e-6 token.
            if excess > 1e-6 {
                breaches.push(format!(
                    "{}: {count} claims in the {} ms window from {a} to {b}; the bucket allows {burst} + {rate}/s",
                    c.queue,
                    b - a
                ));
            }
        }
        eprintln!("{figures}");
    }
    assert!(
        breaches.is_empty(),
        "queue limits broken across claimers:\n{}",
        breaches.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_processes_on_one_sqlite_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("limits.db").display());
    limits_hold_across_processes(&url, 2, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_processes_on_postgres() {
    let url = taskq_tests::postgres_store_url();
    limits_hold_across_processes(&url, 2, 2).await;
}

#[test]
fn the_window_check_counts_claims_inside_each_window() {
    let e = |claim_ms: i64, start_ms: u128| Exec {
        id: TaskId(0),
        queue: String::new(),
        claim_ms,
        start_ns: start_ms * 1_000_000,
        end_ns: start_ms * 1_000_000,
    };
    // A burst of 2 at 0, then one per second: exactly the allowance.
    let ok = [e(0, 0), e(0, 1), e(1_000, 1_000), e(2_000, 2_001)];
    let ok: Vec<&Exec> = ok.iter().collect();
    assert!(worst_window(&ok, 1.0, 2.0).0 <= 1e-6);
    // A third claim at 500 ms: 3 claims in [0, 500] where 2.5 are allowed.
    let over = [e(0, 0), e(0, 1), e(500, 500)];
    let over: Vec<&Exec> = over.iter().collect();
    let (excess, a, b, count) = worst_window(&over, 1.0, 2.0);
    assert_eq!((a, b, count), (0, 500, 3));
    assert!((excess - 0.5).abs() < 1e-9, "{excess}");
    // Peaks: touching intervals do not overlap.
    let touching = [
        Exec {
            start_ns: 0,
            end_ns: 10,
            ..e(0, 0)
        },
        Exec {
            start_ns: 10,
            end_ns: 20,
            ..e(0, 0)
        },
    ];
    let touching: Vec<&Exec> = touching.iter().collect();
    assert_eq!(peak_concurrency(&touching), 1);
}
