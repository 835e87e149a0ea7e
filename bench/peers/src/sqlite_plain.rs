//! The SQLite primitives: plain rusqlite loops over a minimal jobs table, with the
//! settings of taskq's SQLite store (WAL; `synchronous = FULL` for inserts, `NORMAL` for
//! claims and finishes; `BEGIN IMMEDIATE` write transactions).

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use serde_json::json;

use crate::{emit, rate, remove_db, BoxError, CHUNK, PAYLOAD, PER_CALL};

/// Rows of the claim workload (as `taskq-bench`'s `claim`).
const CLAIM_ROWS: usize = 50_000;

/// A fresh database holding the minimal queue table: state 0 ready, 1 running, 2 done.
/// The partial index serves the claim's lookup and order, as taskq's ready index does.
fn open(path: &Path) -> Result<Connection, BoxError> {
    remove_db(path);
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(10))?;
    let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("{}: journal mode is {mode}, not WAL", path.display()).into());
    }
    c.execute_batch(
        "CREATE TABLE jobs (
             id INTEGER PRIMARY KEY,
             queue TEXT NOT NULL,
             payload TEXT NOT NULL,
             state INTEGER NOT NULL DEFAULT 0,
             run_at INTEGER NOT NULL,
             lease_until INTEGER,
             worker TEXT);
         CREATE INDEX jobs_ready ON jobs (queue, run_at, id) WHERE state = 0;",
    )?;
    Ok(c)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Inserts `n` ready rows, 1,000 per transaction, fsynced (`synchronous = FULL`, as
/// taskq's enqueue); rows/s.
fn insert(c: &mut Connection, queue: &str, n: usize) -> Result<f64, BoxError> {
    c.pragma_update(None, "synchronous", "FULL")?;
    let t = Instant::now();
    let now = now_ms();
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK);
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut st =
                tx.prepare_cached("INSERT INTO jobs (queue, payload, run_at) VALUES (?1, ?2, ?3)")?;
            for _ in 0..k {
                st.execute(params![queue, PAYLOAD, now])?;
            }
        }
        tx.commit()?;
        left -= k;
    }
    Ok(rate(n as u64, t.elapsed().as_secs_f64()))
}

/// Claims up to `limit` ready rows in one transaction: their ids.
fn claim_batch(c: &mut Connection, queue: &str, limit: usize) -> Result<Vec<i64>, BoxError> {
    let now = now_ms();
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids = {
        let mut st = tx.prepare_cached(
            "UPDATE jobs SET state = 1, lease_until = ?3 + 60000, worker = 'peers'
             WHERE id IN (SELECT id FROM jobs
                          WHERE queue = ?1 AND state = 0 AND run_at <= ?3
                          ORDER BY run_at, id LIMIT ?2)
             RETURNING id, payload",
        )?;
        let rows = st.query_map(params![queue, limit as i64, now], |r| {
            let payload: String = r.get(1)?;
            std::hint::black_box(payload);
            r.get::<_, i64>(0)
        })?;
        rows.collect::<rusqlite::Result<Vec<i64>>>()?
    };
    tx.commit()?;
    Ok(ids)
}

/// Marks claimed rows done in one transaction (the worker check stands in for a fence).
fn finish_batch(c: &mut Connection, ids: &[i64]) -> Result<(), BoxError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut st =
            tx.prepare_cached("UPDATE jobs SET state = 2 WHERE id = ?1 AND worker = 'peers'")?;
        for id in ids {
            if st.execute(params![id])? != 1 {
                return Err(format!("rusqlite: row {id} was not running").into());
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// 2N rows inserted (plain batched INSERT: `started_bulk_per_s`), then one loop claims
/// `per_txn` rows per transaction and marks them done in the next transaction until none
/// is left (`processed_per_s`: every outcome committed).
pub async fn throughput(dir: &Path, n: u64, per_txn: usize) -> Result<(), BoxError> {
    let path = dir.join(format!("peers-rusqlite-claim{per_txn}.db"));
    tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
        let total = (2 * n) as usize;
        let mut c = open(&path)?;
        let started = insert(&mut c, "bench", total)?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        let t = Instant::now();
        let mut done = 0usize;
        loop {
            let ids = claim_batch(&mut c, "bench", per_txn)?;
            if ids.is_empty() {
                break;
            }
            finish_batch(&mut c, &ids)?;
            done += ids.len();
        }
        let secs = t.elapsed().as_secs_f64();
        let left: i64 = c.query_row("SELECT count(*) FROM jobs WHERE state <> 2", [], |r| {
            r.get(0)
        })?;
        if done != total || left != 0 {
            return Err(format!("rusqlite: processed {done} of {total}, {left} not done").into());
        }
        emit(json!({
            "workload": "throughput",
            "system": format!("rusqlite-claim{per_txn}"),
            "store": "sqlite",
            "tasks": n,
            "processed_tasks": total,
            "started_bulk_per_s": started,
            "processed_per_s": rate(total as u64, secs),
            "claim_per_txn": per_txn,
            "insert_per_txn": CHUNK,
        }));
        drop(c);
        remove_db(&path);
        Ok(())
    })
    .await?
}

/// Beside `taskq-bench`'s `claim` on SQLite: 50,000 rows inserted 1,000 per transaction,
/// claimed 100 per transaction until none is left, then finished 100 per transaction.
pub async fn claim(dir: &Path) -> Result<(), BoxError> {
    let path = dir.join("peers-rusqlite-claim.db");
    tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
        let mut c = open(&path)?;
        let enqueue = insert(&mut c, "claim-bench", CLAIM_ROWS)?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        let t = Instant::now();
        let mut ids = Vec::with_capacity(CLAIM_ROWS);
        let mut calls = 0u64;
        loop {
            let got = claim_batch(&mut c, "claim-bench", PER_CALL)?;
            calls += 1;
            if got.is_empty() {
                break;
            }
            ids.extend(got);
        }
        let claim = rate(CLAIM_ROWS as u64, t.elapsed().as_secs_f64());
        if ids.len() != CLAIM_ROWS {
            return Err(format!("rusqlite: claimed {} of {CLAIM_ROWS}", ids.len()).into());
        }
        let t = Instant::now();
        for chunk in ids.chunks(PER_CALL) {
            finish_batch(&mut c, chunk)?;
        }
        let finish = rate(CLAIM_ROWS as u64, t.elapsed().as_secs_f64());
        emit(json!({
            "workload": "claim",
            "system": "rusqlite",
            "store": "sqlite",
            "tasks": CLAIM_ROWS,
            "enqueue_bulk_per_call": CHUNK,
            "enqueue_bulk_rows_per_s": enqueue,
            "claim_per_call": PER_CALL,
            "claim_calls": calls,
            "claim_rows_per_s": claim,
            "finish_per_call": PER_CALL,
            "finish_rows_per_s": finish,
        }));
        drop(c);
        remove_db(&path);
        Ok(())
    })
    .await?
}
