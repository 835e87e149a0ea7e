//! The PostgreSQL primitives: plain tokio-postgres loops over a minimal jobs table in the
//! schema `peers_raw` (server defaults: `synchronous_commit = on`, as taskq's store).

use std::time::Instant;

use serde_json::json;

use crate::{emit, pg_connect, rate, BoxError, CHUNK, PAYLOAD, PER_CALL};

/// Rows of the claim workload (as `taskq-bench`'s `claim`).
const CLAIM_ROWS: usize = 50_000;

/// A fresh schema holding the minimal queue table: state 0 ready, 1 running, 2 done. The
/// partial index serves the claim's lookup and order, as taskq's ready index does.
async fn fresh(c: &tokio_postgres::Client) -> Result<(), BoxError> {
    c.batch_execute(
        "DROP SCHEMA IF EXISTS peers_raw CASCADE;
         CREATE SCHEMA peers_raw;
         CREATE TABLE peers_raw.jobs (
             id bigserial PRIMARY KEY,
             queue text NOT NULL,
             payload jsonb NOT NULL,
             state smallint NOT NULL DEFAULT 0,
             run_at timestamptz NOT NULL DEFAULT now(),
             lease_until timestamptz,
             worker text);
         CREATE INDEX jobs_ready ON peers_raw.jobs (queue, run_at, id) WHERE state = 0;",
    )
    .await?;
    Ok(())
}

/// Inserts `n` ready rows, 1,000 per statement (one transaction each) through `unnest`;
/// rows/s.
async fn insert(c: &tokio_postgres::Client, queue: &str, n: usize) -> Result<f64, BoxError> {
    let st = c
        .prepare(
            "INSERT INTO peers_raw.jobs (queue, payload)
             SELECT $1, p::jsonb FROM unnest($2::text[]) AS p",
        )
        .await?;
    let t = Instant::now();
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK);
        let payloads = vec![PAYLOAD; k];
        let got = c.execute(&st, &[&queue, &payloads]).await?;
        if got as usize != k {
            return Err(format!("tokio-postgres: inserted {got} of {k} rows").into());
        }
        left -= k;
    }
    Ok(rate(n as u64, t.elapsed().as_secs_f64()))
}

/// The claim: up to `$2` ready rows, `FOR UPDATE SKIP LOCKED`, leased in one statement.
const CLAIM: &str = "UPDATE peers_raw.jobs j
     SET state = 1, lease_until = now() + interval '1 minute', worker = 'peers'
     FROM (SELECT id FROM peers_raw.jobs
           WHERE queue = $1 AND state = 0 AND run_at <= now()
           ORDER BY run_at, id LIMIT $2
           FOR UPDATE SKIP LOCKED) c
     WHERE j.id = c.id
     RETURNING j.id, j.payload::text";

/// Marks claimed rows done in one statement (the worker check stands in for a fence).
const FINISH: &str =
    "UPDATE peers_raw.jobs SET state = 2 WHERE id = ANY($1) AND worker = 'peers' AND state = 1";

/// 2N rows inserted (plain batched INSERT: `started_bulk_per_s`), then one loop claims 100
/// with `FOR UPDATE SKIP LOCKED` and marks them done in the next statement until none is
/// left (`processed_per_s`: every outcome committed).
pub async fn throughput(url: &str, n: u64) -> Result<(), BoxError> {
    let total = (2 * n) as usize;
    let c = pg_connect(url).await?;
    fresh(&c).await?;
    let started = insert(&c, "bench", total).await?;
    let claim = c.prepare(CLAIM).await?;
    let finish = c.prepare(FINISH).await?;
    let t = Instant::now();
    let mut done = 0usize;
    loop {
        let rows = c.query(&claim, &[&"bench", &(PER_CALL as i64)]).await?;
        if rows.is_empty() {
            break;
        }
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| {
                std::hint::black_box(r.get::<_, &str>(1));
                r.get(0)
            })
            .collect();
        let got = c.execute(&finish, &[&ids]).await?;
        if got as usize != ids.len() {
            return Err(format!("tokio-postgres: finished {got} of {}", ids.len()).into());
        }
        done += ids.len();
    }
    let secs = t.elapsed().as_secs_f64();
    if done != total {
        return Err(format!("tokio-postgres: processed {done} of {total}").into());
    }
    emit(json!({
        "workload": "throughput",
        "system": "tokio-postgres",
        "store": "postgres",
        "tasks": n,
        "processed_tasks": total,
        "started_bulk_per_s": started,
        "processed_per_s": rate(total as u64, secs),
        "claim_per_txn": PER_CALL,
        "insert_per_txn": CHUNK,
    }));
    c.batch_execute("DROP SCHEMA peers_raw CASCADE").await?;
    Ok(())
}

/// Beside `taskq-bench`'s `claim` on PostgreSQL: 50,000 rows inserted 1,000 per
/// transaction, claimed 100 per transaction until none is left, then finished 100 per
/// transaction.
pub async fn claim(url: &str) -> Result<(), BoxError> {
    let c = pg_connect(url).await?;
    fresh(&c).await?;
    let enqueue = insert(&c, "claim-bench", CLAIM_ROWS).await?;
    let claim = c.prepare(CLAIM).await?;
    let finish = c.prepare(FINISH).await?;
    let t = Instant::now();
    let mut ids: Vec<i64> = Vec::with_capacity(CLAIM_ROWS);
    let mut calls = 0u64;
    loop {
        let rows = c
            .query(&claim, &[&"claim-bench", &(PER_CALL as i64)])
            .await?;
        calls += 1;
        if rows.is_empty() {
            break;
        }
        ids.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    let claim_rate = rate(CLAIM_ROWS as u64, t.elapsed().as_secs_f64());
    if ids.len() != CLAIM_ROWS {
        return Err(format!("tokio-postgres: claimed {} of {CLAIM_ROWS}", ids.len()).into());
    }
    let t = Instant::now();
    for chunk in ids.chunks(PER_CALL) {
        c.execute(&finish, &[&chunk]).await?;
    }
    let finish_rate = rate(CLAIM_ROWS as u64, t.elapsed().as_secs_f64());
    emit(json!({
        "workload": "claim",
        "system": "tokio-postgres",
        "store": "postgres",
        "tasks": CLAIM_ROWS,
        "enqueue_bulk_per_call": CHUNK,
        "enqueue_bulk_rows_per_s": enqueue,
        "claim_per_call": PER_CALL,
        "claim_calls": calls,
        "claim_rows_per_s": claim_rate,
        "finish_per_call": PER_CALL,
        "finish_rows_per_s": finish_rate,
    }));
    c.batch_execute("DROP SCHEMA peers_raw CASCADE").await?;
    Ok(())
}
