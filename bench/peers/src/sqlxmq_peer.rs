//! sqlxmq 0.6 on PostgreSQL. Its migrations (copied from the crate into
//! `sqlxmq-migrations/`, as its docs ask of users) create the `mq_` tables and functions in
//! the database's `public` schema. A job completes with `CurrentJob::complete`, which
//! deletes its message; a task counts as processed once its message is gone.

use std::error::Error;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlxmq::{job, CurrentJob, JobRegistry};

use crate::{emit, pg_connect, rate, wait_until, BoxError, CHUNK, CONCURRENCY, PER_CALL};

/// The crate's `*.up.sql` migrations, in order.
const MIGRATIONS: [&str; 5] = [
    include_str!("../sqlxmq-migrations/20210316025847_setup.up.sql"),
    include_str!("../sqlxmq-migrations/20210921115907_clear.up.sql"),
    include_str!("../sqlxmq-migrations/20211013151757_fix_mq_latest_message.up.sql"),
    include_str!("../sqlxmq-migrations/20220208120856_fix_concurrent_poll.up.sql"),
    include_str!("../sqlxmq-migrations/20220713122907_fix-clear_all-keep-nil-message.up.sql"),
];

/// Everything the migrations create, dropped before and after a run.
const DROP: &str = "DROP TABLE IF EXISTS mq_payloads, mq_msgs CASCADE;
     DROP TYPE IF EXISTS mq_new_t CASCADE;
     DROP FUNCTION IF EXISTS mq_uuid_exists, mq_latest_message, mq_insert, mq_commit,
         mq_poll, mq_checkpoint, mq_keep_alive, mq_delete, mq_clear, mq_clear_all,
         mq_active_channels CASCADE;";

/// The no-op job: reads its payload and completes (deletes its message).
#[job(channel_name = "bench", retries = 0)]
async fn noop(mut current: CurrentJob) -> Result<(), Box<dyn Error + Send + Sync + 'static>> {
    let started_ms: Option<serde_json::Value> = current.json()?;
    std::hint::black_box(started_ms);
    current.complete().await?;
    Ok(())
}

/// M jobs spawned one by one, the rest of 2N spawned 1,000 per transaction (sqlxmq has
/// no bulk spawn: one `mq_insert` per job inside the transaction), then a runner with
/// `set_concurrency(64, 164)` (it polls for up to 100 jobs when fewer than 64 run).
pub async fn throughput(url: &str, n: u64, one_by_one: u64) -> Result<(), BoxError> {
    let total = 2 * n;
    let counter = pg_connect(url).await?;
    counter.batch_execute(DROP).await?;
    for m in MIGRATIONS {
        counter.batch_execute(m).await?;
    }
    let pool = sqlx08::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(url)
        .await?;

    let payload = json!({ "started_ms": 0 });
    let t = Instant::now();
    for _ in 0..one_by_one {
        noop.builder().set_json(&payload)?.spawn(&pool).await?;
    }
    let one = rate(one_by_one, t.elapsed().as_secs_f64());
    let bulk_n = total - one_by_one;
    let t = Instant::now();
    let mut left = bulk_n;
    while left > 0 {
        let k = left.min(CHUNK as u64);
        let mut tx = pool.begin().await?;
        for _ in 0..k {
            noop.builder().set_json(&payload)?.spawn(&mut *tx).await?;
        }
        tx.commit().await?;
        left -= k;
    }
    let bulk = rate(bulk_n, t.elapsed().as_secs_f64());

    // mq_msgs keeps one sentinel row (the nil UUID).
    let count = counter
        .prepare("SELECT count(*) FROM mq_msgs WHERE id <> '00000000-0000-0000-0000-000000000000'")
        .await?;
    let t = Instant::now();
    let mut runner = JobRegistry::new(&[noop])
        .runner(&pool)
        .set_concurrency(CONCURRENCY, CONCURRENCY + PER_CALL)
        .set_channel_names(&["bench"])
        .run()
        .await?;
    wait_until("sqlxmq", total, || async {
        let left: i64 = counter.query_one(&count, &[]).await?.get(0);
        Ok(total.saturating_sub(left.max(0) as u64))
    })
    .await?;
    let secs = t.elapsed().as_secs_f64();
    runner.stop().await;
    runner.wait_jobs_finish(Duration::from_secs(10)).await;
    emit(json!({
        "workload": "throughput",
        "system": "sqlxmq",
        "store": "postgres",
        "version": "sqlxmq 0.6.0",
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
    counter.batch_execute(DROP).await?;
    Ok(())
}
