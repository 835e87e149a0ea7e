//! The benchmark binary: one JSON line per workload. Not a test: run it in
//! release and compare ratios from one run, not absolute times.
//!
//! ```text
//! cargo run --release -p taskq-examples --bin taskq-bench -- [--workloads iteration,throughput,claim,memory,soak]
//!     [--stores memory,sqlite,postgres] [--rows N] [--tasks N] [--data DIR] [--postgres URL]
//!     [--soak-tasks N] [--soak-finished N] [--soak-samples N] [--soak-scheduled-priority P] [--soak-keep]
//! ```
//!
//! Without `--workloads`, every workload but `soak` runs (it takes minutes per store at
//! its default sizes; name it to run it).
//!
//! - `iteration`: a no-op `#[iterative_task]` over the rows of a SQLite table (1,000,000 by
//!   default, created once in the data dir), entities/s, beside a plain keyset scan of the
//!   same table in the same process (same batch size, same query, same blocking-pool hop),
//!   and their ratio. After a warm-up scan, the scan runs before and after the task; their
//!   mean is the baseline. With `--postgres URL`, the same again over a PostgreSQL table
//!   (`taskq_bench.rows`, created once; the task store in the fresh schema
//!   `taskq_bench_iter` of the same database): the scan and the task read through the same
//!   prepared statement on the same connection.
//! - `claim`: per store (memory, SQLite, and PostgreSQL with `--postgres`), straight
//!   through the `Store` trait, no worker: 50,000 tasks enqueued in bulk (1,000 per call),
//!   claimed 100 per call until none is left, finished 100 per call, then 500 enqueued one
//!   per call; rows/s of each. Then 10,000 more claimed 100 per call by a request that also
//!   names a queue with limits (`claim_beside_limited_rows_per_s`): the claim path that
//!   orders limited and unlimited queues together.
//! - `throughput`: per store, N no-op tasks started one by one and in bulk (tasks/s), then
//!   processed by a worker (tasks/s: a task counts once its done outcome is committed, as
//!   the worker's own counter says; the store's count is checked once at the end), and
//!   start-to-run latency p50/p99 of tasks started one at a time while a worker runs.
//! - `--stores` picks the stores of `claim` and `throughput` (default all; PostgreSQL
//!   needs `--postgres`).
//! - `memory`: resident memory per queued task in the memory store.
//! - `soak`: per store, a store that ran for a long time against the same store empty
//!   (`examples/src/bench/soak.rs` says how): claim latency with 1,000,000 finished tasks
//!   (`--soak-finished`), 100,000 scheduled an hour ahead and as many due in a paused
//!   queue and in a queue not served, `queues()` latency,
//!   heartbeats while `queues()` is called every 100 ms, and the footprint (memory RSS,
//!   SQLite file and WAL, PostgreSQL relations) over 1,000,000 tasks (`--soak-tasks`) run
//!   in 20 rounds with retention on (virtual time). `--soak-samples` (default 1,000): timed
//!   claim and heartbeat calls per measurement; `--soak-scheduled-priority` (default 1,
//!   above the stream's 0), `--stores` (as for `claim` and `throughput`) and
//!   `--soak-keep` (leave the full SQLite file and PostgreSQL schema for inspection).
//!   PostgreSQL uses the URL's `schema=` or `taskq_bench_soak` (and the same with
//!   `_empty` for the empty twin), dropped at the start of each part and at the end.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use serde_json::json;
use taskq_runtime::store::postgres::PostgresStore;
use taskq_runtime::store::{
    ClaimRequest, Finish, NewTask, Outcome, QueueConfig, RunState, TaskState,
};
use taskq_runtime::tokio_postgres::{self, NoTls};
use taskq_runtime::{
    iterative_task, task, Context, Model, Queue, Store, TaskError, TaskId, Timestamp, Worker,
};

/// The benchmark table, behind one mutex-guarded connection.
#[derive(Clone)]
struct BenchDb(Arc<Mutex<Connection>>);

/// One row of `rows`.
struct Row {
    id: i64,
    #[allow(dead_code)]
    payload: String,
}

/// Every row.
#[derive(Serialize, Deserialize)]
struct AllRows;

/// Rows per batch, for the task and for the plain scan.
const BATCH: usize = 1000;

impl Model for Row {
    type Key = i64;
    type Filter = AllRows;
    type Source = BenchDb;

    fn key(&self) -> i64 {
        self.id
    }

    async fn batch(
        db: &BenchDb,
        _f: &AllRows,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<Row>, TaskError> {
        let conn = db.0.clone();
        let after = after.copied().unwrap_or(i64::MIN);
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            let mut st = c.prepare_cached(
                "SELECT id, payload FROM rows WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = st.query_map(params![after, limit as i64], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    payload: r.get(1)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<Row>>>()
        })
        .await?
        .map_err(TaskError::from)
    }

    async fn count(db: &BenchDb, _f: &AllRows) -> Result<Option<u64>, TaskError> {
        let conn = db.0.clone();
        let n = tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            c.query_row("SELECT COUNT(*) FROM rows", [], |r| r.get::<_, i64>(0))
        })
        .await??;
        Ok(Some(n as u64))
    }
}

/// The no-op iterative task (default 10-minute timeout: one step unless it is slow).
#[iterative_task(model = Row, batch_size = 1000, queue = "bench-iter")]
async fn noop_iteration(rows: Vec<Row>) -> Result<(), TaskError> {
    std::hint::black_box(&rows);
    Ok(())
}

/// The PostgreSQL benchmark table `taskq_bench.rows`, behind one connection with the
/// keyset page prepared once.
#[derive(Clone)]
struct PgBenchDb {
    client: Arc<tokio_postgres::Client>,
    page: tokio_postgres::Statement,
}

/// One row of `taskq_bench.rows`.
struct PgRow {
    id: i64,
    #[allow(dead_code)]
    payload: String,
}

impl Model for PgRow {
    type Key = i64;
    type Filter = AllRows;
    type Source = PgBenchDb;

    fn key(&self) -> i64 {
        self.id
    }

    async fn batch(
        db: &PgBenchDb,
        _f: &AllRows,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<PgRow>, TaskError> {
        let after = after.copied().unwrap_or(i64::MIN);
        let rows = db
            .client
            .query(&db.page, &[&after, &(limit as i64)])
            .await?;
        Ok(rows
            .iter()
            .map(|r| PgRow {
                id: r.get(0),
                payload: r.get(1),
            })
            .collect())
    }

    async fn count(db: &PgBenchDb, _f: &AllRows) -> Result<Option<u64>, TaskError> {
        let n: i64 = db
            .client
            .query_one("SELECT count(*) FROM taskq_bench.rows", &[])
            .await?
            .get(0);
        Ok(Some(n as u64))
    }
}

/// The no-op iterative task over the PostgreSQL table.
#[iterative_task(model = PgRow, batch_size = 1000, queue = "bench-pg-iter")]
async fn noop_pg_iteration(rows: Vec<PgRow>) -> Result<(), TaskError> {
    std::hint::black_box(&rows);
    Ok(())
}

#[path = "../bench/soak.rs"]
mod soak;

/// Start-to-run latencies (ms) recorded by [`noop`].
#[derive(Default)]
struct Latencies(Mutex<Vec<i64>>);

/// The no-op task of the throughput workload; records when it ran against `started_ms`.
#[task(queue = "bench")]
async fn noop(ctx: Context, started_ms: i64) -> Result<(), TaskError> {
    if started_ms > 0 {
        let l = ctx.state::<Arc<Latencies>>()?;
        let now = Timestamp::now().0;
        l.0.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(now - started_ms);
    }
    Ok(())
}

struct Args {
    workloads: Vec<String>,
    rows: u64,
    tasks: u64,
    data: PathBuf,
    postgres: Option<String>,
    soak: soak::SoakArgs,
    /// The stores the `throughput`, `claim` and `soak` workloads run on (PostgreSQL only
    /// with `--postgres`).
    stores: Vec<String>,
    /// Whether `--stores` was given (then naming `postgres` without `--postgres` is an
    /// error, not a silent skip).
    stores_given: bool,
}

const USAGE: &str = "usage: taskq-bench [--workloads iteration,throughput,claim,memory,soak] [--stores memory,sqlite,postgres] [--rows N] [--tasks N] [--data DIR] [--postgres URL] [--soak-tasks N] [--soak-finished N] [--soak-samples N] [--soak-scheduled-priority P] [--soak-keep]";

/// The stores of the `throughput`, `claim` and `soak` workloads, all by default.
const STORES: [&str; 3] = ["memory", "sqlite", "postgres"];

/// The workloads, in the order they run by default.
const WORKLOADS: [&str; 4] = ["iteration", "throughput", "claim", "memory"];

/// Workloads that run only when named.
const ON_REQUEST: [&str; 1] = ["soak"];

impl Args {
    /// Whether the `throughput`, `claim` and `soak` workloads run on `store`.
    fn on(&self, store: &str) -> bool {
        self.stores.iter().any(|s| s == store)
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        workloads: WORKLOADS.iter().map(|w| w.to_string()).collect(),
        rows: 1_000_000,
        tasks: 20_000,
        data: std::env::temp_dir().join("taskq-bench"),
        postgres: None,
        soak: soak::SoakArgs {
            tasks: 1_000_000,
            finished: 1_000_000,
            samples: 1_000,
            scheduled_priority: soak::SCHEDULED_PRIORITY,
            keep: false,
        },
        stores: STORES.iter().map(|s| s.to_string()).collect(),
        stores_given: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--soak-keep" {
            a.soak.keep = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        let num = |v: &str| {
            v.replace('_', "")
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag}: `{v}` is not a positive whole number"))
        };
        match flag.as_str() {
            "--workloads" => {
                a.workloads = v.split(',').map(|s| s.trim().to_string()).collect();
                for w in &a.workloads {
                    if !WORKLOADS.contains(&w.as_str()) && !ON_REQUEST.contains(&w.as_str()) {
                        return Err(format!("unknown workload `{w}`"));
                    }
                }
            }
            "--stores" => {
                a.stores = v.split(',').map(|s| s.trim().to_string()).collect();
                a.stores_given = true;
                for s in &a.stores {
                    if !STORES.contains(&s.as_str()) {
                        return Err(format!("unknown store `{s}`"));
                    }
                }
            }
            "--rows" => a.rows = num(&v)?,
            "--tasks" => a.tasks = num(&v)?,
            "--data" => a.data = v.into(),
            "--postgres" => a.postgres = Some(v),
            "--soak-tasks" => a.soak.tasks = num(&v)?,
            "--soak-finished" => a.soak.finished = num(&v)?,
            "--soak-samples" => a.soak.samples = num(&v)?,
            "--soak-scheduled-priority" => {
                a.soak.scheduled_priority = v
                    .parse()
                    .map_err(|_| format!("{flag}: `{v}` is not a whole number"))?
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(a)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("taskq-bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("taskq-bench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    std::fs::create_dir_all(&args.data)?;
    for w in &args.workloads {
        match w.as_str() {
            "iteration" => {
                iteration(&args).await?;
                if let Some(url) = &args.postgres {
                    iteration_pg(url, args.rows).await?;
                }
            }
            "claim" => {
                if args.on("memory") {
                    claim("memory", taskq_runtime::store::open("memory://").await?).await?;
                }
                if args.on("sqlite") {
                    let path = args.data.join("claim.db");
                    remove_db(&path);
                    let store =
                        taskq_runtime::store::open(&format!("sqlite://{}", path.display())).await?;
                    claim("sqlite", store).await?;
                }
                if let Some(url) = args.postgres.as_ref().filter(|_| args.on("postgres")) {
                    let schema = "taskq_bench_claim";
                    drop_pg_schema(url, schema).await?;
                    let store = PostgresStore::open_in_schema(url, schema).await?;
                    claim("postgres", Arc::new(store)).await?;
                    drop_pg_schema(url, schema).await?;
                }
            }
            "throughput" => {
                if args.on("memory") {
                    throughput("memory", "memory://".into(), args.tasks).await?;
                }
                if args.on("sqlite") {
                    let path = args.data.join("throughput.db");
                    remove_db(&path);
                    throughput("sqlite", format!("sqlite://{}", path.display()), args.tasks)
                        .await?;
                }
                if let Some(url) = args.postgres.as_ref().filter(|_| args.on("postgres")) {
                    // A fresh schema: done tasks of an earlier run must not count.
                    let schema = "taskq_bench_throughput";
                    drop_pg_schema(url, schema).await?;
                    let sep = if url.contains('?') { '&' } else { '?' };
                    throughput("postgres", format!("{url}{sep}schema={schema}"), args.tasks)
                        .await?;
                    drop_pg_schema(url, schema).await?;
                }
            }
            "memory" => memory(args.tasks.max(100_000)).await?,
            "soak" => {
                let wants = |s: &str| args.on(s);
                if wants("memory") {
                    soak::soak(soak::Backend::Memory, args.soak).await?;
                }
                if wants("sqlite") {
                    let path = args.data.join("soak.db");
                    soak::soak(soak::Backend::Sqlite(path), args.soak).await?;
                }
                match &args.postgres {
                    Some(url) if wants("postgres") => {
                        let schema =
                            soak::url_schema(url).unwrap_or_else(|| "taskq_bench_soak".into());
                        let b = soak::Backend::Postgres {
                            url: url.clone(),
                            schema,
                        };
                        soak::soak(b, args.soak).await?;
                    }
                    None if args.stores_given && wants("postgres") => {
                        return Err("--stores postgres needs --postgres URL".into());
                    }
                    _ => {}
                }
            }
            _ => unreachable!("checked by parse_args"),
        }
    }
    Ok(())
}

fn remove_db(path: &std::path::Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}

/// Opens the table, creating it with `n` rows unless it already has them.
fn bench_table(path: &std::path::Path, n: u64) -> Result<BenchDb, BoxError> {
    let c = Connection::open(path)?;
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)",
    )?;
    let have: i64 = c.query_row("SELECT COUNT(*) FROM rows", [], |r| r.get(0))?;
    if have as u64 != n {
        eprintln!("creating {n} rows in {}", path.display());
        let mut c = c;
        let tx = c.transaction()?;
        tx.execute("DELETE FROM rows", [])?;
        {
            let mut st = tx.prepare("INSERT INTO rows (id, payload) VALUES (?1, ?2)")?;
            for id in 1..=n as i64 {
                st.execute(params![
                    id,
                    format!("row {id}: some payload of a realistic size")
                ])?;
            }
        }
        tx.commit()?;
        return Ok(BenchDb(Arc::new(Mutex::new(c))));
    }
    Ok(BenchDb(Arc::new(Mutex::new(c))))
}

/// A plain keyset scan through the model's own query: entities per second.
async fn scan(db: &BenchDb) -> Result<(u64, f64), BoxError> {
    let t = Instant::now();
    let mut after: Option<i64> = None;
    let mut n = 0u64;
    loop {
        let rows = Row::batch(db, &AllRows, after.as_ref(), BATCH)
            .await
            .map_err(|e| e.to_string())?;
        n += rows.len() as u64;
        std::hint::black_box(&rows);
        if let Some(last) = rows.last() {
            after = Some(last.id);
        }
        if rows.len() < BATCH {
            break;
        }
    }
    Ok((n, n as f64 / t.elapsed().as_secs_f64()))
}

async fn iteration(args: &Args) -> Result<(), BoxError> {
    let db = bench_table(&args.data.join("rows.db"), args.rows)?;
    // A warm-up scan (page cache, prepared statement), not counted.
    scan(&db).await?;
    let (n1, scan1) = scan(&db).await?;

    let store_path = args.data.join("iteration-store.db");
    remove_db(&store_path);
    let queue = Queue::open(&format!("sqlite://{}", store_path.display())).await?;
    let worker = Worker::builder(queue.store().clone())
        .state(db.clone())
        .queues(["bench-iter"])
        .poll_interval(Duration::from_millis(5))
        .build()?
        .spawn();
    let t = Instant::now();
    let run = noop_iteration::start(&queue, AllRows).await?;
    let info = wait_run(&queue, run).await?;
    let secs = t.elapsed().as_secs_f64();
    worker.shutdown().await?;
    if info.state != RunState::Done || info.processed != n1 {
        return Err(format!(
            "the iteration ended {:?} after {} of {n1} rows",
            info.state, info.processed
        )
        .into());
    }
    let (_, scan2) = scan(&db).await?;
    let scan = (scan1 + scan2) / 2.0;
    let ips = info.processed as f64 / secs;
    println!(
        "{}",
        json!({
            "workload": "iteration",
            "table": "sqlite",
            "store": "sqlite",
            "rows": info.processed,
            "batch_size": BATCH,
            "batches": info.batches,
            "steps": info.steps,
            "seconds": round(secs, 3),
            "entities_per_s": ips.round(),
            "scan_entities_per_s": scan.round(),
            "scan_runs_per_s": [scan1.round(), scan2.round()],
            "ratio": round(ips / scan, 3),
            "goal_ratio": 0.5,
        })
    );
    Ok(())
}

/// Splits a store URL into the driver's URL (without taskq's `schema` and `pool_size`).
fn driver_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| {
            !p.is_empty()
                && !matches!(
                    p.split_once('=').map(|(k, _)| k),
                    Some("schema" | "taskq_schema" | "pool_size")
                )
        })
        .collect();
    if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    }
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, BoxError> {
    let (client, conn) = tokio_postgres::connect(&driver_url(url), NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn drop_pg_schema(url: &str, schema: &str) -> Result<(), BoxError> {
    let c = pg_connect(url).await?;
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    Ok(())
}

/// Opens `taskq_bench.rows`, creating it with `n` rows unless it already has them.
async fn pg_bench_table(url: &str, n: u64) -> Result<PgBenchDb, BoxError> {
    let c = pg_connect(url).await?;
    c.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS taskq_bench;
         CREATE TABLE IF NOT EXISTS taskq_bench.rows (id bigint PRIMARY KEY, payload text NOT NULL)",
    )
    .await?;
    let have: i64 = c
        .query_one("SELECT count(*) FROM taskq_bench.rows", &[])
        .await?
        .get(0);
    if have as u64 != n {
        eprintln!("creating {n} rows in PostgreSQL table taskq_bench.rows");
        c.batch_execute("TRUNCATE taskq_bench.rows").await?;
        c.execute(
            "INSERT INTO taskq_bench.rows (id, payload)
             SELECT g, 'row ' || g || ': some payload of a realistic size'
             FROM generate_series(1, $1::int8) AS g",
            &[&(n as i64)],
        )
        .await?;
        c.batch_execute("VACUUM ANALYZE taskq_bench.rows").await?;
    }
    let page = c
        .prepare("SELECT id, payload FROM taskq_bench.rows WHERE id > $1 ORDER BY id LIMIT $2")
        .await?;
    Ok(PgBenchDb {
        client: Arc::new(c),
        page,
    })
}

/// A plain keyset scan of the PostgreSQL table through the model's own query.
async fn pg_scan(db: &PgBenchDb) -> Result<(u64, f64), BoxError> {
    let t = Instant::now();
    let mut after: Option<i64> = None;
    let mut n = 0u64;
    loop {
        let rows = PgRow::batch(db, &AllRows, after.as_ref(), BATCH)
            .await
            .map_err(|e| e.to_string())?;
        n += rows.len() as u64;
        std::hint::black_box(&rows);
        if let Some(last) = rows.last() {
            after = Some(last.id);
        }
        if rows.len() < BATCH {
            break;
        }
    }
    Ok((n, n as f64 / t.elapsed().as_secs_f64()))
}

/// Waits for an iterative run to end.
async fn wait_run(
    queue: &Queue,
    run: TaskId,
) -> Result<taskq_runtime::store::IterationInfo, BoxError> {
    loop {
        let it = queue.iteration(run).await?;
        if it.state != RunState::Running {
            return Ok(it);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn iteration_pg(url: &str, rows: u64) -> Result<(), BoxError> {
    let db = pg_bench_table(url, rows).await?;
    pg_scan(&db).await?; // warm-up: shared buffers, page cache
    let (n1, scan1) = pg_scan(&db).await?;

    let schema = "taskq_bench_iter";
    drop_pg_schema(url, schema).await?;
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open_in_schema(url, schema).await?);
    let queue = Queue::new(store.clone());
    let worker = Worker::builder(store)
        .state(db.clone())
        .queues(["bench-pg-iter"])
        .poll_interval(Duration::from_millis(5))
        .build()?
        .spawn();
    let t = Instant::now();
    let run = noop_pg_iteration::start(&queue, AllRows).await?;
    let info = wait_run(&queue, run).await?;
    let secs = t.elapsed().as_secs_f64();
    worker.shutdown().await?;
    if info.state != RunState::Done || info.processed != n1 {
        return Err(format!(
            "the PostgreSQL iteration ended {:?} after {} of {n1} rows",
            info.state, info.processed
        )
        .into());
    }
    let (_, scan2) = pg_scan(&db).await?;
    let scan = (scan1 + scan2) / 2.0;
    let ips = info.processed as f64 / secs;
    println!(
        "{}",
        json!({
            "workload": "iteration",
            "table": "postgres",
            "store": "postgres",
            "rows": info.processed,
            "batch_size": BATCH,
            "batches": info.batches,
            "steps": info.steps,
            "seconds": round(secs, 3),
            "entities_per_s": ips.round(),
            "scan_entities_per_s": scan.round(),
            "scan_runs_per_s": [scan1.round(), scan2.round()],
            "ratio": round(ips / scan, 3),
            "goal_ratio": 0.5,
        })
    );
    drop(queue);
    drop_pg_schema(url, schema).await?;
    Ok(())
}

/// Store-level rates, no worker: bulk enqueue, claim 100 per call, finish 100 per call,
/// single enqueues.
async fn claim(name: &str, store: Arc<dyn Store>) -> Result<(), BoxError> {
    const N: usize = 50_000;
    const CHUNK: usize = 1_000;
    const PER_CALL: usize = 100;
    const SINGLE: usize = 500;
    const LIMITED: usize = 10_000;
    let now = Timestamp::now();
    let task = |queue: &str, n: usize| NewTask {
        task: "bench::noop".into(),
        queue: queue.into(),
        payload: json!({ "n": n }),
        priority: 0,
        run_at: now,
        unique_name: None,
        tombstone: Duration::ZERO,
        iteration: None,
        trace: None,
    };

    let t = Instant::now();
    for c in 0..N / CHUNK {
        let batch = (0..CHUNK)
            .map(|i| task("claim-bench", c * CHUNK + i))
            .collect();
        store.enqueue(batch, now).await?;
    }
    let enqueue_bulk = N as f64 / t.elapsed().as_secs_f64();

    let req = ClaimRequest {
        queues: vec!["claim-bench".into()],
        worker: "bench".into(),
        limit: PER_CALL,
        lease: Duration::from_secs(3600),
        now,
    };
    let t = Instant::now();
    let mut leases = Vec::with_capacity(N);
    let mut claim_calls = 0u64;
    loop {
        let got = store.claim(&req).await?;
        claim_calls += 1;
        if got.is_empty() {
            break;
        }
        leases.extend(got.into_iter().map(|c| c.lease));
    }
    let claim = N as f64 / t.elapsed().as_secs_f64();
    if leases.len() != N {
        return Err(format!("{name}: claimed {} of {N} tasks", leases.len()).into());
    }

    let t = Instant::now();
    for chunk in leases.chunks(PER_CALL) {
        let fin = chunk
            .iter()
            .map(|l| Finish {
                lease: *l,
                outcome: Outcome::Done,
                started_at: now,
            })
            .collect();
        let r = store.finish(fin, "bench", now).await?;
        if let Some(Err(e)) = r.into_iter().find(|x| x.is_err()) {
            return Err(format!("{name}: finish: {e}").into());
        }
    }
    let finish = N as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for i in 0..SINGLE {
        store.enqueue(vec![task("claim-bench-one", i)], now).await?;
    }
    let enqueue_one = SINGLE as f64 / t.elapsed().as_secs_f64();

    // The same claims from a request that also covers a queue with limits (it has no
    // tasks; its caps never bind): every claim orders the limited queue among the others,
    // under its row lock on PostgreSQL.
    store
        .configure_queue(
            "claim-bench-limited",
            QueueConfig {
                rate: Some(1e9),
                burst: Some(u32::MAX),
                max_concurrent: Some(u32::MAX),
                retention: None,
            },
        )
        .await?;
    for c in 0..LIMITED / CHUNK {
        let batch = (0..CHUNK)
            .map(|i| task("claim-bench", c * CHUNK + i))
            .collect();
        store.enqueue(batch, now).await?;
    }
    let limited_req = ClaimRequest {
        queues: vec!["claim-bench".into(), "claim-bench-limited".into()],
        ..req.clone()
    };
    let t = Instant::now();
    let mut limited_claimed = 0;
    loop {
        let got = store.claim(&limited_req).await?;
        if got.is_empty() {
            break;
        }
        limited_claimed += got.len();
    }
    let claim_limited = limited_claimed as f64 / t.elapsed().as_secs_f64();
    if limited_claimed != LIMITED {
        return Err(format!(
            "{name}: claimed {limited_claimed} of {LIMITED} tasks beside a limited queue"
        )
        .into());
    }
    println!(
        "{}",
        json!({
            "workload": "claim",
            "store": name,
            "tasks": N,
            "enqueue_bulk_per_call": CHUNK,
            "enqueue_bulk_rows_per_s": enqueue_bulk.round(),
            "claim_per_call": PER_CALL,
            "claim_calls": claim_calls,
            "claim_rows_per_s": claim.round(),
            "finish_per_call": PER_CALL,
            "finish_rows_per_s": finish.round(),
            "enqueue_one_calls": SINGLE,
            "enqueue_one_rows_per_s": enqueue_one.round(),
            "claim_beside_limited_tasks": LIMITED,
            "claim_beside_limited_rows_per_s": claim_limited.round(),
        })
    );
    Ok(())
}

/// Waits until the worker has recorded `n` done outcomes (a task counts as processed once
/// its outcome is committed: the worker counts it after the store's `finish` returned).
/// It reads the worker's counter, not the store: counting the store every few
/// milliseconds would load (and on the memory store, lock) the store being measured.
async fn wait_done(
    stats: &taskq_runtime::worker::WorkerStats,
    n: u64,
    timeout: Duration,
) -> Result<(), BoxError> {
    let t = Instant::now();
    loop {
        let done = stats.done.load(std::sync::atomic::Ordering::Relaxed);
        if done >= n {
            return Ok(());
        }
        if t.elapsed() > timeout {
            return Err(format!("only {done} of {n} tasks done after {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The done tasks of the `bench` queue, as the store counts them.
async fn store_done(queue: &Queue) -> Result<u64, BoxError> {
    Ok(queue
        .queues()
        .await?
        .iter()
        .filter(|q| q.name == "bench")
        .map(|q| q.count(TaskState::Done))
        .sum())
}

async fn throughput(store: &str, url: String, n: u64) -> Result<(), BoxError> {
    let queue = Queue::open(&url).await?;
    // Started one by one (each awaited), then in bulk (chunks of 1,000 per call).
    let t = Instant::now();
    for _ in 0..n {
        noop::start(&queue, 0).await?;
    }
    let one_by_one = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ids: Vec<u64> = (0..n).collect();
    for chunk in ids.chunks(1000) {
        queue
            .start_many(chunk.iter().map(|_| noop::builder(0)))
            .await?;
    }
    let bulk = n as f64 / t.elapsed().as_secs_f64();

    let lat = Arc::new(Latencies::default());
    let worker = Worker::builder(queue.store().clone())
        .state(lat.clone())
        .queues(["bench"])
        .concurrency(64)
        .poll_interval(Duration::from_millis(5))
        .build()?
        .spawn();
    let t = Instant::now();
    let cpu = cpu_seconds();
    wait_done(worker.stats(), 2 * n, Duration::from_secs(600)).await?;
    let processed = (2 * n) as f64 / t.elapsed().as_secs_f64();
    let cpu_us_per_task = cpu
        .zip(cpu_seconds())
        .map(|(a, b)| round((b - a) * 1e6 / (2 * n) as f64, 2));
    let stored = store_done(&queue).await?;
    if stored != 2 * n {
        return Err(format!(
            "{store}: the worker recorded {} done, the store counts {stored}",
            2 * n
        )
        .into());
    }

    // Latency: tasks started one at a time, about 500/s, with the worker idle otherwise.
    let m = 1000.min(n);
    for _ in 0..m {
        noop::start(&queue, Timestamp::now().0).await?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_done(worker.stats(), 2 * n + m, Duration::from_secs(120)).await?;
    worker.shutdown().await?;
    let mut l = lat.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{}",
        json!({
            "workload": "throughput",
            "store": store,
            "tasks": n,
            "started_one_by_one_per_s": one_by_one.round(),
            "started_bulk_per_s": bulk.round(),
            "processed_per_s": processed.round(),
            "processed_cpu_us_per_task": cpu_us_per_task,
            "worker_concurrency": 64,
            "latency_samples": l.len(),
            "start_to_run_ms_p50": pct(0.5),
            "start_to_run_ms_p99": pct(0.99),
        })
    );
    Ok(())
}

/// CPU time this process has used (user and system, every thread), in seconds, from
/// `/proc/self/stat` (clock ticks of 10 ms): a figure the other loads of a shared machine
/// move less than wall time.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

async fn memory(n: u64) -> Result<(), BoxError> {
    let queue = Queue::open("memory://").await?;
    let before = rss_bytes().ok_or("cannot read /proc/self/statm")?;
    let ids: Vec<u64> = (0..n).collect();
    for chunk in ids.chunks(1000) {
        queue
            .start_many(chunk.iter().map(|_| noop::builder(0)))
            .await?;
    }
    let after = rss_bytes().ok_or("cannot read /proc/self/statm")?;
    println!(
        "{}",
        json!({
            "workload": "memory",
            "store": "memory",
            "queued_tasks": n,
            "payload": "{\"started_ms\":0}",
            "rss_bytes_per_task": (after.saturating_sub(before) as f64 / n as f64).round(),
        })
    );
    drop(queue);
    Ok(())
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}
