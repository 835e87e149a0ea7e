//! The `soak` workload: a store that has run for a long time, beside the same store empty.
//!
//! Per store (memory; a SQLite file; PostgreSQL with `--postgres URL`), straight through
//! the `Store` trait, each part on a fresh store (a new file, a dropped and recreated
//! schema):
//!
//! 1. **Retention** (`--soak-tasks N`, default 1,000,000): N tasks run in [`ROUNDS`]
//!    rounds on virtual time (enqueued 1,000 per call, claimed and finished 100 per call;
//!    one in [`DEAD_EVERY`] ends dead, the rest done). After each round the clock moves
//!    [`ROUND_STEP`] (past the 24-hour default retention of done tasks) and the store is
//!    pruned, as a worker would; then the footprint is read: resident memory (`VmRSS`)
//!    for the memory store, file plus WAL bytes for SQLite, the schema's relation bytes for
//!    PostgreSQL (after `VACUUM (ANALYZE)` of its tables, which autovacuum would have run
//!    in the day a round stands for). Goal: flat, not growing with the count
//!    ([`GOAL_GROWTH`] compares the last round with the middle one). It runs first, so the
//!    memory store's figures are not hidden in memory another part freed.
//! 2. **Two stores**: the one to fill and an empty twin (`soak-empty.db`, the schema with
//!    `_empty` added), each warmed up with a stream of due tasks.
//! 3. **Fill** (`--soak-finished N`, default 1,000,000): N finished tasks (enqueued
//!    10,000 per call, claimed and finished 1,000 per call: done, one attempt each, as a
//!    worker leaves them) and N/10 scheduled an hour ahead at priority 1, above the
//!    stream's 0 (the case the issue names: a claim must not step over future tasks of
//!    higher priority; `--soak-scheduled-priority 0` leaves that out), and as many due
//!    now in a paused queue and in a queue the claims do not serve. On PostgreSQL
//!    then `VACUUM (ANALYZE)` of both stores' tables, as autovacuum would have done on a
//!    store that ran that long.
//! 4. **Measure** both stores in turns, a slice of one and then the same slice of the
//!    other (order swapped each turn), so that the load of a shared machine falls on both
//!    alike and the ratios compare like with like.
//!
//! The measurements (`--soak-samples N`, default 1,000, on each store):
//! - claim latency: a stream of due tasks, 100 enqueued per call, claimed
//!   [`CLAIM_BATCH`] per call (each call timed; N calls), finished per claim;
//! - `queues()` latency: N/20 calls (at least 5) back to back;
//! - heartbeat latency: [`HEARTBEAT_LEASES`] held leases renewed every 10 ms (N calls)
//!   while another task calls `queues()` every 100 ms (the next call at once when one takes
//!   longer), with the worker's default lease ([`LEASE`]), in windows of 100 heartbeats.
//!   Goal: p99 under a tenth of the lease.
//!
//! One JSON line per store. Progress goes to stderr. `--soak-keep` leaves the full store
//! (the SQLite file, the PostgreSQL schema) in place for `EXPLAIN` and the like.

use std::sync::atomic::{AtomicBool, Ordering};

use taskq_runtime::store::Lease;

use super::*;

/// Rounds of the retention part.
pub const ROUNDS: u64 = 20;
/// One task in this many of the retention part ends dead (kept 7 days), the rest done.
pub const DEAD_EVERY: u64 = 100;
/// Virtual time between two rounds: past the default 24-hour retention of done tasks.
pub const ROUND_STEP: Duration = Duration::from_secs(25 * 3600);
/// Tasks per claim call of the measured stream.
pub const CLAIM_BATCH: usize = 10;
/// Due tasks enqueued per call of the measured stream.
const STREAM_CHUNK: usize = 100;
/// The lease of every claim here: the worker's default.
pub const LEASE: Duration = Duration::from_secs(30);
/// Leases renewed by each timed heartbeat call.
pub const HEARTBEAT_LEASES: usize = 10;
/// Pause between two timed heartbeat calls.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(10);
/// How often the concurrent caller asks for `queues()` during the heartbeats.
const QUEUES_EVERY: Duration = Duration::from_millis(100);
/// Tasks enqueued per call when filling.
const FILL_ENQUEUE: usize = 10_000;
/// Tasks claimed and finished per call when filling and in the retention rounds.
const FILL_CLAIM: usize = 1_000;
/// Claim calls per call when running the retention rounds.
const ROUND_CLAIM: usize = 100;
/// Priority of the scheduled tasks by default (the stream's is 0).
pub const SCHEDULED_PRIORITY: i32 = 1;
/// The queue of every task the claims serve.
const QUEUE: &str = "soak";
/// A paused queue the fill leaves due tasks in (as many as it schedules).
const PAUSED_QUEUE: &str = "soak-paused";
/// A queue the claims do not serve, where the fill leaves due tasks too.
const OTHER_QUEUE: &str = "soak-other";
/// Goal: full-store claim latency at most this times the empty store's.
pub const GOAL_CLAIM_RATIO: f64 = 1.5;
/// Goal: heartbeat p99 at most this share of the lease.
pub const GOAL_HEARTBEAT_SHARE: f64 = 0.1;
/// Goal: the footprint after the last round at most this times the one after the middle
/// round ("flat").
pub const GOAL_GROWTH: f64 = 1.1;

/// Sizes of the workload, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct SoakArgs {
    /// Tasks run through the retention rounds.
    pub tasks: u64,
    /// Finished tasks of the fill (scheduled ones: a tenth of it).
    pub finished: u64,
    /// Timed claim and heartbeat calls per measurement.
    pub samples: u64,
    /// Priority of the scheduled tasks (default [`SCHEDULED_PRIORITY`]; 0, the stream's,
    /// leaves out the cost of stepping over future tasks of higher priority).
    pub scheduled_priority: i32,
    /// Leave the full store (SQLite file, PostgreSQL schema) in place for inspection.
    pub keep: bool,
}

/// Where each part's fresh store lives.
pub enum Backend {
    /// A new `memory://` store each time.
    Memory,
    /// A SQLite file, removed (with its WAL) before each part.
    Sqlite(PathBuf),
    /// A PostgreSQL schema, dropped before each part and at the end.
    Postgres {
        /// The store URL as given.
        url: String,
        /// The schema (the URL's `schema=`, or `taskq_bench_soak`).
        schema: String,
    },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// Where the empty store measured beside this one lives: `soak-empty.db` beside the
    /// file, or the schema with `_empty` added.
    fn twin(&self) -> Backend {
        match self {
            Backend::Memory => Backend::Memory,
            Backend::Sqlite(path) => Backend::Sqlite(path.with_file_name("soak-empty.db")),
            Backend::Postgres { url, schema } => Backend::Postgres {
                url: url.clone(),
                schema: format!("{schema}_empty"),
            },
        }
    }

    /// A fresh, empty store.
    async fn open(&self) -> Result<Arc<dyn Store>, BoxError> {
        Ok(match self {
            Backend::Memory => taskq_runtime::store::open("memory://").await?,
            Backend::Sqlite(path) => {
                remove_db(path);
                taskq_runtime::store::open(&format!("sqlite://{}", path.display())).await?
            }
            Backend::Postgres { url, schema } => {
                drop_pg_schema(url, schema).await?;
                Arc::new(PostgresStore::open_in_schema(url, schema).await?)
            }
        })
    }

    /// What the store takes up now, in bytes: (total, WAL part for SQLite).
    async fn footprint(&self) -> Result<(u64, Option<u64>), BoxError> {
        Ok(match self {
            Backend::Memory => (vm_rss_bytes().ok_or("cannot read VmRSS")?, None),
            Backend::Sqlite(path) => {
                let size = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                let db = size(path.display().to_string());
                let wal = size(format!("{}-wal", path.display()));
                (db + wal, Some(wal))
            }
            Backend::Postgres { url, schema } => {
                let c = pg_connect(url).await?;
                let n: i64 = c
                    .query_one(
                        "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::int8
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = $1 AND c.relkind = 'r'",
                        &[&schema],
                    )
                    .await?
                    .get(0);
                (n.max(0) as u64, None)
            }
        })
    }

    /// After the fill and after each retention round: what autovacuum would have done in
    /// the hours these stand for (PostgreSQL only: `VACUUM (ANALYZE)` of the task and
    /// attempt tables).
    async fn settle(&self) -> Result<(), BoxError> {
        if let Backend::Postgres { url, schema } = self {
            let c = pg_connect(url).await?;
            c.batch_execute(&format!(
                "VACUUM (ANALYZE) \"{schema}\".taskq_tasks, \"{schema}\".taskq_attempts"
            ))
            .await?;
        }
        Ok(())
    }

    /// Removes what the workload left (the SQLite file, the PostgreSQL schema).
    async fn clean(&self) -> Result<(), BoxError> {
        match self {
            Backend::Memory => {}
            Backend::Sqlite(path) => remove_db(path),
            Backend::Postgres { url, schema } => drop_pg_schema(url, schema).await?,
        }
        Ok(())
    }
}

/// The schema a PostgreSQL URL names (`schema=` or `taskq_schema=`), if any.
pub fn url_schema(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|p| match p.split_once('=') {
        Some(("schema" | "taskq_schema", v)) if !v.is_empty() => Some(v.to_string()),
        _ => None,
    })
}

/// Resident memory of this process (`VmRSS` of `/proc/self/status`), in bytes.
fn vm_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn new_task(n: u64, priority: i32, run_at: Timestamp) -> NewTask {
    new_task_in(QUEUE, n, priority, run_at)
}

fn new_task_in(queue: &str, n: u64, priority: i32, run_at: Timestamp) -> NewTask {
    NewTask {
        task: "bench::soak".into(),
        queue: queue.into(),
        // About 100 bytes, like a small real payload.
        payload: json!({ "order": n, "customer": format!("customer-{}", n % 1000), "note": "one task of the soak workload" }),
        priority,
        run_at,
        unique_name: None,
        tombstone: Duration::ZERO,
        iteration: None,
        trace: None,
    }
}

fn claim_request(limit: usize, now: Timestamp) -> ClaimRequest {
    ClaimRequest {
        queues: vec![QUEUE.into()],
        worker: "soak".into(),
        limit,
        lease: LEASE,
        now,
    }
}

/// Finishes claimed tasks: every one done, or dead when `dead` says so.
async fn finish(
    store: &dyn Store,
    leases: &[Lease],
    now: Timestamp,
    dead: impl Fn(Lease) -> bool,
) -> Result<(), BoxError> {
    let fin = leases
        .iter()
        .map(|l| Finish {
            lease: *l,
            outcome: if dead(*l) {
                Outcome::Dead {
                    error: "soak: out of attempts".into(),
                }
            } else {
                Outcome::Done
            },
            started_at: now,
        })
        .collect();
    let r = store.finish(fin, "soak", now).await?;
    if let Some(Err(e)) = r.into_iter().find(|x| x.is_err()) {
        return Err(format!("finish: {e}").into());
    }
    Ok(())
}

/// Enqueues `n` due tasks at `now`, then claims (`per_claim` per call) and finishes them
/// all. Returns the duration of each claim call and how many ended dead.
async fn run_due(
    store: &dyn Store,
    n: u64,
    per_enqueue: usize,
    per_claim: usize,
    now: impl Fn() -> Timestamp,
    dead: impl Fn(Lease) -> bool + Copy,
) -> Result<(Vec<Duration>, u64), BoxError> {
    let mut times = Vec::new();
    let mut dead_n = 0u64;
    let mut left = n;
    let mut seq = 0u64;
    while left > 0 {
        let k = left.min(per_enqueue as u64);
        let at = now();
        let batch = (0..k).map(|i| new_task(seq + i, 0, at)).collect();
        store.enqueue(batch, at).await?;
        seq += k;
        let mut claimed = 0u64;
        while claimed < k {
            let t = Instant::now();
            let got = store.claim(&claim_request(per_claim, now())).await?;
            times.push(t.elapsed());
            if got.is_empty() {
                return Err(format!("claimed {claimed} of {k} due tasks, then none").into());
            }
            claimed += got.len() as u64;
            let leases: Vec<Lease> = got.iter().map(|c| c.lease).collect();
            dead_n += leases.iter().filter(|l| dead(**l)).count() as u64;
            finish(store, &leases, now(), dead).await?;
        }
        left -= k;
    }
    Ok((times, dead_n))
}

/// A percentile (nearest rank) of durations, in milliseconds.
fn pct_ms(times: &[Duration], p: f64) -> f64 {
    let mut v: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    let Some(last) = v.len().checked_sub(1) else {
        return 0.0;
    };
    v[((last as f64) * p).round() as usize]
}

/// [`pct_ms`] rounded to microseconds, for the report.
fn pct(times: &[Duration], p: f64) -> f64 {
    round(pct_ms(times, p), 3)
}

/// The latencies measured on one store: claim, `queues()` and heartbeat.
#[derive(Default)]
struct Measured {
    claim: Vec<Duration>,
    queues: Vec<Duration>,
    heartbeat: Vec<Duration>,
    queues_during_heartbeats: Vec<Duration>,
}

impl Measured {
    fn json(&self) -> serde_json::Value {
        json!({
            "claim_ms_p50": pct(&self.claim, 0.5),
            "claim_ms_p99": pct(&self.claim, 0.99),
            "queues_ms_p50": pct(&self.queues, 0.5),
            "queues_ms_p99": pct(&self.queues, 0.99),
            "heartbeat_ms_p50": pct(&self.heartbeat, 0.5),
            "heartbeat_ms_p99": pct(&self.heartbeat, 0.99),
            "heartbeat_ms_max": pct(&self.heartbeat, 1.0),
            "queues_calls_during_heartbeats": self.queues_during_heartbeats.len(),
            "queues_ms_p50_during_heartbeats": pct(&self.queues_during_heartbeats, 0.5),
            "queues_ms_p99_during_heartbeats": pct(&self.queues_during_heartbeats, 0.99),
        })
    }
}

/// Claims [`HEARTBEAT_LEASES`] fresh tasks and keeps their leases.
async fn hold_leases(store: &dyn Store) -> Result<Vec<Lease>, BoxError> {
    let now = Timestamp::now();
    let batch = (0..HEARTBEAT_LEASES as u64)
        .map(|i| new_task(i, 0, now))
        .collect();
    store.enqueue(batch, now).await?;
    let held: Vec<Lease> = store
        .claim(&claim_request(HEARTBEAT_LEASES, Timestamp::now()))
        .await?
        .iter()
        .map(|c| c.lease)
        .collect();
    if held.len() != HEARTBEAT_LEASES {
        return Err(format!("claimed {} of {HEARTBEAT_LEASES} tasks", held.len()).into());
    }
    Ok(held)
}

/// `n` heartbeats of `held`, one every 10 ms, while another task asks for `queues()`
/// every 100 ms (at once again when a call took longer).
async fn heartbeats_beside_queues(
    store: &Arc<dyn Store>,
    held: &[Lease],
    n: u64,
    m: &mut Measured,
) -> Result<(), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let lister = {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut times = Vec::new();
            let mut tick = tokio::time::interval(QUEUES_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = Instant::now();
                store.queues().await?;
                times.push(t.elapsed());
            }
            Ok::<_, taskq_runtime::StoreError>(times)
        })
    };
    for _ in 0..n {
        let t = Instant::now();
        let lost = store
            .heartbeat(held, "soak", Timestamp::now().add(LEASE))
            .await?;
        m.heartbeat.push(t.elapsed());
        if !lost.is_empty() {
            return Err(format!("heartbeat: {} leases lost", lost.len()).into());
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
    stop.store(true, Ordering::Relaxed);
    m.queues_during_heartbeats.extend(lister.await??);
    Ok(())
}

/// Measures the empty store and the full one in turns (a slice of one, then the same
/// slice of the other, the order swapped each turn), so that the load of a shared machine
/// falls on both alike: `samples` claim calls of [`CLAIM_BATCH`] over a stream of due
/// tasks, `samples / 20` (at least 5) `queues()` calls, and `samples` heartbeats beside
/// `queues()` in windows of 100.
async fn measure(
    empty: &Arc<dyn Store>,
    full: &Arc<dyn Store>,
    samples: u64,
) -> Result<(Measured, Measured), BoxError> {
    let mut m = [Measured::default(), Measured::default()];
    let stores = [empty, full];
    let per_turn = STREAM_CHUNK as u64 / CLAIM_BATCH as u64;
    for turn in 0..samples.div_ceil(per_turn) {
        for i in [0, 1] {
            let i = (i + turn as usize) % 2;
            let (t, _) = run_due(
                stores[i].as_ref(),
                STREAM_CHUNK as u64,
                STREAM_CHUNK,
                CLAIM_BATCH,
                Timestamp::now,
                |_| false,
            )
            .await?;
            m[i].claim.extend(t);
        }
    }
    for turn in 0..(samples / 20).max(5) {
        for i in [0, 1] {
            let i = (i + turn as usize) % 2;
            let t = Instant::now();
            std::hint::black_box(stores[i].queues().await?);
            m[i].queues.push(t.elapsed());
        }
    }
    let held = [
        hold_leases(empty.as_ref()).await?,
        hold_leases(full.as_ref()).await?,
    ];
    let mut left = samples;
    let mut turn = 0;
    while left > 0 {
        let n = left.min(100);
        for i in [0, 1] {
            let i = (i + turn) % 2;
            heartbeats_beside_queues(stores[i], &held[i], n, &mut m[i]).await?;
        }
        left -= n;
        turn += 1;
    }
    for i in [0, 1] {
        finish(stores[i].as_ref(), &held[i], Timestamp::now(), |_| false).await?;
    }
    let [e, f] = m;
    Ok((e, f))
}

/// Fills a store with `finished` done tasks, `finished / 10` scheduled an hour ahead at
/// `priority`, and as many due now in a paused queue and in a queue the claims do not
/// serve: none of them may cost a claim anything.
async fn fill(store: &dyn Store, finished: u64, priority: i32) -> Result<(), BoxError> {
    let mut left = finished;
    let mut seq = 0u64;
    while left > 0 {
        let k = left.min(FILL_ENQUEUE as u64);
        let now = Timestamp::now();
        let batch = (0..k).map(|i| new_task(seq + i, 0, now)).collect();
        store.enqueue(batch, now).await?;
        seq += k;
        left -= k;
        let mut claimed = 0;
        while claimed < k {
            let got = store
                .claim(&claim_request(FILL_CLAIM, Timestamp::now()))
                .await?;
            if got.is_empty() {
                return Err(format!("fill: claimed {claimed} of {k} tasks, then none").into());
            }
            claimed += got.len() as u64;
            let leases: Vec<Lease> = got.iter().map(|c| c.lease).collect();
            finish(store, &leases, Timestamp::now(), |_| false).await?;
        }
        if seq.is_multiple_of(100_000) {
            eprintln!("  filled {seq} of {finished} finished tasks");
        }
    }
    store.set_paused(PAUSED_QUEUE, true).await?;
    let later = Timestamp::now().add(Duration::from_secs(3600));
    for (queue, priority, at) in [
        (QUEUE, priority, later),
        (PAUSED_QUEUE, priority, Timestamp::now()),
        (OTHER_QUEUE, priority, Timestamp::now()),
    ] {
        let mut left = finished / 10;
        while left > 0 {
            let k = left.min(FILL_ENQUEUE as u64);
            let batch = (0..k)
                .map(|i| new_task_in(queue, seq + i, priority, at))
                .collect();
            store.enqueue(batch, Timestamp::now()).await?;
            seq += k;
            left -= k;
        }
    }
    Ok(())
}

/// The retention part on a fresh store: the footprint after each round, what was kept.
async fn retention_rounds(b: &Backend, tasks: u64) -> Result<serde_json::Value, BoxError> {
    let store = b.open().await?;
    let per_round = tasks.div_ceil(ROUNDS);
    let (before, _) = b.footprint().await?;
    let mut now = Timestamp::now();
    let mut footprint = Vec::new();
    let mut wal = Vec::new();
    let mut kept = Vec::new();
    let mut pruned_done = 0u64;
    let mut pruned_dead = 0u64;
    let mut prune_ms = Vec::new();
    let mut run = 0u64;
    let mut dead_run = 0u64;
    let t = Instant::now();
    for round in 0..ROUNDS {
        let n = per_round.min(tasks - run);
        let at = now;
        let (_, dead) = run_due(
            store.as_ref(),
            n,
            FILL_CLAIM,
            ROUND_CLAIM,
            || at,
            |l| (l.id.0 as u64).is_multiple_of(DEAD_EVERY),
        )
        .await?;
        run += n;
        dead_run += dead;
        now = now.add(ROUND_STEP);
        let p = Instant::now();
        let report = store.prune(now, 0).await?;
        prune_ms.push(p.elapsed().as_millis() as u64);
        pruned_done += report.count(TaskState::Done);
        pruned_dead += report.count(TaskState::Dead);
        // A round stands for a day: autovacuum would have run by now.
        b.settle().await?;
        let (bytes, w) = b.footprint().await?;
        footprint.push(bytes);
        wal.extend(w);
        let left: u64 = store
            .queues()
            .await?
            .iter()
            .map(|q| q.counts.iter().map(|(_, n)| n).sum::<u64>())
            .sum();
        kept.push(left);
        eprintln!(
            "  {} retention round {}: {run} tasks run, {left} kept, footprint {bytes} bytes",
            b.name(),
            round + 1
        );
    }
    // Every done task goes at the next prune; dead ones are kept their 7 days.
    if pruned_done != run - dead_run {
        return Err(format!(
            "retention: pruned {pruned_done} done tasks of {} run",
            run - dead_run
        )
        .into());
    }
    let mid = footprint[footprint.len() / 2 - 1] as f64;
    let last = footprint[footprint.len() - 1] as f64;
    let growth = round(last / mid.max(1.0), 3);
    let what = match b {
        Backend::Memory => "rss_bytes",
        Backend::Sqlite(_) => "file_and_wal_bytes",
        Backend::Postgres { .. } => "relation_bytes",
    };
    let mut out = json!({
        "retention_tasks": run,
        "retention_rounds": ROUNDS,
        "retention_round_tasks": per_round,
        "retention_seconds": round(t.elapsed().as_secs_f64(), 1),
        "retention_footprint": what,
        "retention_footprint_before": before,
        "retention_footprint_after_round": footprint,
        "retention_kept_after_round": kept,
        "retention_dead": dead_run,
        "retention_pruned_done": pruned_done,
        "retention_pruned_dead": pruned_dead,
        "retention_prune_ms_after_round": prune_ms,
        "retention_growth_last_over_middle": growth,
        "goal_retention_growth": GOAL_GROWTH,
        "retention_goal_met": growth <= GOAL_GROWTH,
    });
    match b {
        Backend::Sqlite(_) => out["retention_wal_bytes_after_round"] = json!(wal),
        Backend::Postgres { .. } => out["retention_vacuum_after_round"] = json!(true),
        Backend::Memory => {}
    }
    drop(store);
    Ok(out)
}

/// The whole workload on one backend: one JSON line.
pub async fn soak(b: Backend, args: SoakArgs) -> Result<(), BoxError> {
    let name = b.name();
    eprintln!(
        "soak {name}: retention part, {} tasks in {ROUNDS} rounds",
        args.tasks
    );
    let retention = retention_rounds(&b, args.tasks).await?;

    let twin = b.twin();
    let empty_store = twin.open().await?;
    let store = b.open().await?;
    // Warm-up (caches, prepared statements, the pool), not counted.
    for s in [&empty_store, &store] {
        run_due(
            s.as_ref(),
            (args.samples * CLAIM_BATCH as u64 / 4).max(100),
            STREAM_CHUNK,
            CLAIM_BATCH,
            Timestamp::now,
            |_| false,
        )
        .await?;
    }

    eprintln!(
        "soak {name}: filling {} finished tasks, {} scheduled, as many paused and in another queue",
        args.finished,
        args.finished / 10
    );
    let t = Instant::now();
    fill(store.as_ref(), args.finished, args.scheduled_priority).await?;
    let fill_s = t.elapsed().as_secs_f64();
    b.settle().await?;
    twin.settle().await?;
    let (after_fill, _) = b.footprint().await?;
    eprintln!("soak {name}: measuring the empty and the full store (filled in {fill_s:.1} s)");
    let (empty, full) = measure(&empty_store, &store, args.samples).await?;
    let counts: serde_json::Value = store
        .queues()
        .await?
        .iter()
        .filter(|q| q.name == QUEUE)
        .flat_map(|q| q.counts.iter())
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    drop(store);
    drop(empty_store);
    twin.clean().await?;
    if args.keep {
        match &b {
            Backend::Sqlite(path) => eprintln!("soak: kept {}", path.display()),
            Backend::Postgres { schema, .. } => eprintln!("soak: kept schema {schema}"),
            Backend::Memory => {}
        }
    } else {
        b.clean().await?;
    }

    let ratio = |f: &Measured, e: &Measured, p: f64| {
        round(pct_ms(&f.claim, p) / pct_ms(&e.claim, p).max(1e-6), 2)
    };
    let (r50, r99) = (ratio(&full, &empty, 0.5), ratio(&full, &empty, 0.99));
    let hb_share = round(pct_ms(&full.heartbeat, 0.99) / LEASE.as_secs_f64() / 1e3, 6);
    let mut line = json!({
        "workload": "soak",
        "store": name,
        "finished_tasks": args.finished,
        "scheduled_tasks": args.finished / 10,
        "scheduled_priority": args.scheduled_priority,
        "paused_due_tasks": args.finished / 10,
        "other_queue_due_tasks": args.finished / 10,
        "fill_seconds": round(fill_s, 1),
        "footprint_after_fill": after_fill,
        "counts_full": counts,
        "claim_per_call": CLAIM_BATCH,
        "claim_calls": full.claim.len(),
        "empty": empty.json(),
        "full": full.json(),
        "claim_ratio_p50": r50,
        "claim_ratio_p99": r99,
        "goal_claim_ratio": GOAL_CLAIM_RATIO,
        "claim_goal_met": r50 <= GOAL_CLAIM_RATIO && r99 <= GOAL_CLAIM_RATIO,
        "lease_ms": LEASE.as_millis() as u64,
        "heartbeat_leases": HEARTBEAT_LEASES,
        "heartbeat_p99_share_of_lease": hb_share,
        "goal_heartbeat_share_of_lease": GOAL_HEARTBEAT_SHARE,
        "heartbeat_goal_met": hb_share < GOAL_HEARTBEAT_SHARE,
    });
    if let (Some(l), Some(r)) = (line.as_object_mut(), retention.as_object()) {
        l.extend(r.clone());
    }
    println!("{line}");
    Ok(())
}
