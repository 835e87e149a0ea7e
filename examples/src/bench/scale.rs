//! The `scale` workload of `taskq-bench`: what a store costs once it holds a long history.
//!
//! Per store, straight through the `Store` trait: a stream of due tasks (enqueue one, claim
//! up to 10 from its queue, finish it) timed claim by claim on the empty store; then the
//! store is loaded with `finished` done tasks and, each `scheduled` strong, pending tasks an
//! hour ahead at a higher priority in the served queue (the rows a claim used to step
//! over), due tasks in a paused queue, and due tasks in a queue the claims do not serve;
//! then the same stream again. Reported: claim latency p50/p99 on each and their ratios
//! (goal: at most 1.5), `queues()` latency on the loaded store, and heartbeat latency p99
//! while another task calls `queues()` every 100 ms (goal: under a tenth of the lease).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use taskq_runtime::store::{ClaimRequest, Finish, Lease, NewTask, Outcome, TaskState};
use taskq_runtime::{Store, Timestamp};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The queue the measured claims serve.
const SERVED: &str = "scale-due";
/// Claims in each measured stream.
const STREAM: usize = 2_000;
/// The lease of the measured claims and heartbeats.
const LEASE: Duration = Duration::from_secs(30);

fn task(queue: &str, priority: i32, run_at: Timestamp, n: u64) -> NewTask {
    NewTask {
        task: "bench::noop".into(),
        queue: queue.into(),
        payload: json!({ "n": n }),
        priority,
        run_at,
        unique_name: None,
        tombstone: Duration::ZERO,
        iteration: None,
    }
}

fn claim_req(queues: &[&str], limit: usize, now: Timestamp) -> ClaimRequest {
    ClaimRequest {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        worker: "bench".into(),
        limit,
        lease: LEASE,
        now,
    }
}

/// Percentile `p` (0..=1) of sorted latencies, in microseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len().max(1) as f64 - 1.0) * p).round() as usize;
    sorted
        .get(i)
        .map(|d| d.as_secs_f64() * 1e6)
        .unwrap_or(0.0)
        .round()
}

/// Enqueue one due task, claim (up to 10) from the served queue, finish it; `STREAM`
/// times. Returns the sorted claim latencies.
async fn stream(store: &dyn Store) -> Result<Vec<Duration>, BoxError> {
    let mut lat = Vec::with_capacity(STREAM);
    for i in 0..STREAM {
        let now = Timestamp::now();
        store
            .enqueue(vec![task(SERVED, 0, now, i as u64)], now)
            .await?;
        let t = Instant::now();
        let got = store.claim(&claim_req(&[SERVED], 10, now)).await?;
        lat.push(t.elapsed());
        if got.len() != 1 {
            return Err(format!("a stream claim got {} tasks, not 1", got.len()).into());
        }
        let fin = got
            .iter()
            .map(|c| Finish {
                lease: c.lease,
                outcome: Outcome::Done,
                started_at: now,
            })
            .collect();
        store.finish(fin, "bench", now).await?;
    }
    lat.sort_unstable();
    Ok(lat)
}

/// Stores `n` tasks of `queue` in chunks of 1,000.
async fn fill(
    store: &dyn Store,
    queue: &str,
    priority: i32,
    run_at: Timestamp,
    n: u64,
) -> Result<(), BoxError> {
    let now = Timestamp::now();
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1000);
        let batch = (done..done + k)
            .map(|i| task(queue, priority, run_at, i))
            .collect();
        store.enqueue(batch, now).await?;
        done += k;
    }
    Ok(())
}

/// Stores `n` tasks and runs them to done, 1,000 per call.
async fn finished(store: &dyn Store, n: u64) -> Result<(), BoxError> {
    let queue = "scale-history";
    let mut done = 0;
    while done < n {
        let k = (n - done).min(1000);
        let now = Timestamp::now();
        fill(store, queue, 0, now, k).await?;
        let got = store.claim(&claim_req(&[queue], k as usize, now)).await?;
        if got.len() as u64 != k {
            return Err(format!("history: claimed {} of {k}", got.len()).into());
        }
        let fin = got
            .iter()
            .map(|c| Finish {
                lease: c.lease,
                outcome: Outcome::Done,
                started_at: now,
            })
            .collect();
        store.finish(fin, "bench", now).await?;
        done += k;
    }
    Ok(())
}

/// Heartbeat latencies of one held lease, every 10 ms for `span`, while another task calls
/// `queues()` every 100 ms. Returns the sorted heartbeat latencies and the `queues()`
/// calls made.
async fn heartbeat_beside_queues(
    store: Arc<dyn Store>,
    span: Duration,
) -> Result<(Vec<Duration>, usize), BoxError> {
    let now = Timestamp::now();
    store
        .enqueue(vec![task("scale-held", 0, now, 0)], now)
        .await?;
    let held: Vec<Lease> = store
        .claim(&claim_req(&["scale-held"], 1, now))
        .await?
        .iter()
        .map(|c| c.lease)
        .collect();
    if held.len() != 1 {
        return Err("could not claim the task whose lease the heartbeats renew".into());
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut calls = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if store.queues().await.is_err() {
                    break;
                }
                calls += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            calls
        })
    };
    let mut lat = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < span {
        let until = Timestamp::now().add(LEASE);
        let t = Instant::now();
        let lost = store.heartbeat(&held, "bench", until).await?;
        lat.push(t.elapsed());
        if !lost.is_empty() {
            return Err("the held lease was lost".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let calls = poller.await?;
    lat.sort_unstable();
    Ok((lat, calls))
}

/// The workload on one store (see the module docs).
pub async fn scale(
    name: &str,
    store: Arc<dyn Store>,
    finished_n: u64,
    scheduled: u64,
) -> Result<(), BoxError> {
    let empty = stream(&*store).await?;

    let t = Instant::now();
    finished(&*store, finished_n).await?;
    let load_finished_s = t.elapsed().as_secs_f64();
    let later = Timestamp::now().add(Duration::from_secs(3600));
    fill(&*store, SERVED, 10, later, scheduled).await?;
    store.set_paused("scale-paused", true).await?;
    fill(&*store, "scale-paused", 10, Timestamp::now(), scheduled).await?;
    fill(&*store, "scale-other", 10, Timestamp::now(), scheduled).await?;

    let loaded = stream(&*store).await?;

    let mut q_lat = Vec::new();
    let mut counts = json!(null);
    for _ in 0..20 {
        let t = Instant::now();
        let qs = store.queues().await?;
        q_lat.push(t.elapsed());
        counts = json!(qs
            .iter()
            .map(|q| (
                q.name.clone(),
                q.count(TaskState::Done) + q.count(TaskState::Pending)
            ))
            .collect::<std::collections::BTreeMap<_, _>>());
    }
    q_lat.sort_unstable();

    let (hb, queue_calls) = heartbeat_beside_queues(store.clone(), Duration::from_secs(3)).await?;

    let ratio = |p: f64| {
        let e = pct(&empty, p).max(1.0);
        ((pct(&loaded, p) / e) * 100.0).round() / 100.0
    };
    println!(
        "{}",
        json!({
            "workload": "scale",
            "store": name,
            "finished": finished_n,
            "scheduled_ahead_higher_priority": scheduled,
            "paused_due": scheduled,
            "other_queue_due": scheduled,
            "load_finished_s": (load_finished_s * 10.0).round() / 10.0,
            "claims_per_stream": STREAM,
            "claim_us_p50_empty": pct(&empty, 0.5),
            "claim_us_p99_empty": pct(&empty, 0.99),
            "claim_us_p50_loaded": pct(&loaded, 0.5),
            "claim_us_p99_loaded": pct(&loaded, 0.99),
            "claim_ratio_p50": ratio(0.5),
            "claim_ratio_p99": ratio(0.99),
            "goal_claim_ratio": 1.5,
            "queues_us_p50_loaded": pct(&q_lat, 0.5),
            "queues_us_max_loaded": pct(&q_lat, 1.0),
            "heartbeat_us_p99_beside_queues": pct(&hb, 0.99),
            "heartbeat_samples": hb.len(),
            "queues_calls_meanwhile": queue_calls,
            "goal_heartbeat_us_p99": LEASE.as_micros() as f64 / 10.0,
            "done_plus_pending_by_queue": counts,
        })
    );
    Ok(())
}
