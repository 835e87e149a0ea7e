//! apalis 1.0 on its SQLite (`apalis-sqlite`) and PostgreSQL (`apalis-postgres`)
//! storages, set up as their READMEs show (`setup` runs the crate's migrations and, on
//! SQLite, its pragmas), with a batch size of 100, 64 tasks in flight (the `concurrency`
//! layer) and a 5 ms poll interval. apalis acknowledges a task by setting its row's
//! `status` to `Done`; a task counts as processed once another connection sees that.
//!
//! apalis-sqlite's acknowledgement (`queries/task/ack.sql`: `WITH j AS (SELECT ... FROM
//! json_each(?1)) UPDATE Jobs ... FROM j WHERE Jobs.id = j.task_id`) spends its time in
//! SQLite's JSON functions (`jsonTranslateTextToBlob` and `jsonTranslateBlobToText` under
//! `jsonEachFilter` and `jsonEachColumn`: 40% of the samples in `perf`): the batch's array
//! is evaluated again for rows of the table, so each batch costs more as the table grows
//! and a run slows down faster than its size grows (2,000 tasks: 1,300/s; 10,000:
//! 165/s). Its run is therefore capped (`--apalis-sqlite-tasks`) and its line says how
//! many tasks it had.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use serde_json::json;

use crate::{
    emit, pg_connect, rate, remove_db, wait_until, BoxError, CHUNK, CONCURRENCY, PER_CALL, POLL,
};

/// The apalis queue (its `job_type` column).
const QUEUE: &str = "bench";

/// The no-op task: the argument is `taskq-bench`'s `started_ms`, unused.
async fn noop(started_ms: i64) -> Result<(), BoxDynError> {
    std::hint::black_box(started_ms);
    Ok(())
}

/// Starts M tasks one by one and the rest of 2N in bulk calls of 1,000 through `storage`
/// (a `TaskSink`): (one-by-one rate, bulk rate), tasks/s.
async fn start<S, K>(storage: &mut S, total: u64, one_by_one: u64) -> Result<(f64, f64), BoxError>
where
    S: TaskSink<i64, K> + Send,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let t = Instant::now();
    for _ in 0..one_by_one {
        storage.push(0i64).await?;
    }
    let one = rate(one_by_one, t.elapsed().as_secs_f64());
    let bulk_n = total - one_by_one;
    let t = Instant::now();
    let mut left = bulk_n;
    while left > 0 {
        let k = left.min(CHUNK as u64);
        storage.push_bulk(vec![0i64; k as usize]).await?;
        left -= k;
    }
    Ok((one, rate(bulk_n, t.elapsed().as_secs_f64())))
}

/// Runs `worker` (a future that runs until its stop signal resolves) until `done()` reports
/// `total`: seconds from the worker's start to the last outcome seen.
async fn process<W, F, Fut>(
    what: &str,
    total: u64,
    worker: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> W,
    done: F,
) -> Result<f64, BoxError>
where
    W: Future<Output = Result<(), WorkerError>> + Send + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, BoxError>>,
{
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let t = Instant::now();
    let handle = tokio::spawn(worker(stopped));
    wait_until(what, total, done).await?;
    let secs = t.elapsed().as_secs_f64();
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(30), handle).await {
        Ok(joined) => joined?.map_err(|e| format!("{what}: worker: {e}"))?,
        Err(_) => eprintln!("{what}: the worker did not stop within 30 s after its work"),
    }
    Ok(secs)
}

/// The stop signal as apalis's `run_until` takes it.
async fn signal(stopped: tokio::sync::oneshot::Receiver<()>) -> Result<(), WorkerError> {
    let _ = stopped.await;
    Ok(())
}

/// apalis on SQLite: a fresh file in the bench directory.
pub async fn sqlite(dir: &Path, n: u64, one_by_one: u64) -> Result<(), BoxError> {
    use apalis_sqlite::{Config, SqliteConnectOptions, SqlitePool, SqliteStorage};
    let total = 2 * n;
    let path = dir.join("peers-apalis.db");
    remove_db(&path);
    let opts = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await?;
    SqliteStorage::setup(&pool).await?;
    let config = Config::default().queue(QUEUE).batch_size(PER_CALL);
    let mut storage: SqliteStorage<i64> = SqliteStorage::new(&pool).with_config(config);
    let (one, bulk) = start(&mut storage, total, one_by_one).await?;

    // Counted through a connection of its own, as another process would see it.
    let counter = rusqlite::Connection::open(&path)?;
    let backend = storage.clone().poll_with_interval(POLL);
    let secs = process(
        "apalis-sqlite",
        total,
        move |stopped| {
            WorkerBuilder::new("peers-apalis-sqlite")
                .backend(backend)
                .concurrency(CONCURRENCY)
                .build(noop)
                .run_until(signal(stopped))
        },
        || {
            let r = counter
                .query_row(
                    "SELECT count(*) FROM Jobs WHERE job_type = ?1 AND status = 'Done'",
                    [QUEUE],
                    |r| r.get::<_, i64>(0),
                )
                .map(|d| d as u64)
                .map_err(BoxError::from);
            async move { r }
        },
    )
    .await?;
    emit(json!({
        "workload": "throughput",
        "system": "apalis",
        "store": "sqlite",
        "version": "apalis 1.0.0, apalis-sqlite 1.0.0",
        "tasks": n,
        "processed_tasks": total,
        "started_one_by_one": one_by_one,
        "started_one_by_one_per_s": one,
        "started_bulk_per_s": bulk,
        "processed_per_s": rate(total, secs),
        "worker_concurrency": CONCURRENCY,
        "batch_size": PER_CALL,
    }));
    pool.close().await;
    remove_db(&path);
    Ok(())
}

/// apalis on PostgreSQL: its fixed schema `apalis`, dropped first.
pub async fn postgres(url: &str, n: u64, one_by_one: u64) -> Result<(), BoxError> {
    use apalis_postgres::{Config, PgPool, PostgresStorage};
    let total = 2 * n;
    let counter = pg_connect(url).await?;
    counter
        .batch_execute("DROP SCHEMA IF EXISTS apalis CASCADE")
        .await?;
    let pool = PgPool::connect(url).await?;
    PostgresStorage::setup(&pool).await?;
    let config = Config::default().queue(QUEUE).batch_size(PER_CALL);
    let mut storage: PostgresStorage<i64> = PostgresStorage::new(&pool).with_config(config);
    let (one, bulk) = start(&mut storage, total, one_by_one).await?;

    let count = counter
        .prepare("SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'")
        .await?;
    let backend = storage.clone().poll_with_interval(POLL);
    let secs = process(
        "apalis-postgres",
        total,
        move |stopped| {
            WorkerBuilder::new("peers-apalis-postgres")
                .backend(backend)
                .concurrency(CONCURRENCY)
                .build(noop)
                .run_until(signal(stopped))
        },
        || async {
            let row = counter.query_one(&count, &[&QUEUE]).await?;
            Ok(row.get::<_, i64>(0) as u64)
        },
    )
    .await?;
    emit(json!({
        "workload": "throughput",
        "system": "apalis",
        "store": "postgres",
        "version": "apalis 1.0.0, apalis-postgres 1.0.0",
        "tasks": n,
        "processed_tasks": total,
        "started_one_by_one": one_by_one,
        "started_one_by_one_per_s": one,
        "started_bulk_per_s": bulk,
        "processed_per_s": rate(total, secs),
        "worker_concurrency": CONCURRENCY,
        "batch_size": PER_CALL,
    }));
    pool.close().await;
    counter
        .batch_execute("DROP SCHEMA IF EXISTS apalis CASCADE")
        .await?;
    Ok(())
}
