//! The PostgreSQL store: many worker processes on many hosts share one database.
//!
//! Open it with [`PostgresStore::open`] (or [`crate::store::open`]) from a URL such as
//! `postgres://user:password@host:5432/db`. Options taskq reads from the URL's query string
//! (others are passed to the driver):
//! - `schema=NAME`: keep every table in this schema (created if missing); default `public`.
//!   [`PostgresStore::open_in_schema`] does the same.
//! - `pool_size=N`: at most N pooled connections (default 10), plus one listening
//!   connection.
//!
//! TLS is not supported by this build: connect over a trusted network or a local socket.
//!
//! # How it works
//! - **Claim**: one order on every store and across every queue a claim covers: priority
//!   (high first), then `run_at`, then id, due pending tasks and lapsed leases alike. When
//!   no queue the claim covers has a rate or a `max_concurrent`, one statement claims up
//!   to N tasks with `FOR UPDATE SKIP LOCKED`, so any number of workers claim
//!   concurrently and never get the same task. When some do, one transaction locks their
//!   `taskq_queues` rows (`FOR UPDATE`, in name order), counts their running tasks,
//!   computes each one's allowance ([`admission`]: `max_concurrent`
//!   minus running, whole tokens in its bucket), claims with one ordered statement over
//!   the limited and unlimited queues together, each limited queue capped at its
//!   allowance (`row_number() OVER (PARTITION BY queue ...)` against caps passed as
//!   arrays), and stores the buckets: limits hold across every worker and host. The store
//!   remembers which queue lists met limits, so their next claim starts there (two round
//!   trips, three when a bucket is stored), and goes back to the plain statement once
//!   the limits are gone.
//! - **Complete**: one statement per batch of finished attempts (arrays passed with
//!   `unnest`) applies each outcome, records the attempt, updates iteration runs and
//!   inserts continuation steps.
//! - **Wake-up**: starting, retrying, running-now, resuming and continuing issue
//!   `NOTIFY taskq_new, '<queue>'` inside their transaction; every store keeps one
//!   connection that `LISTEN`s and wakes [`Store::wait_for_work`] at once. The worker's
//!   poll interval stays as the fallback.
//! - **Fencing**: each claim increments the task's `lease_token`; heartbeat, finish and
//!   checkpoint only touch a row where `id = $1 AND lease_token = $2 AND state = 'running'`.
//! - **Connection loss**: operations fail with [`StoreError::Backend`] while PostgreSQL is
//!   unreachable; broken connections are dropped and new ones are made with back-off
//!   (50 ms doubling to 5 s), and the listening connection reconnects by itself (and wakes
//!   every waiter, since notifications may have been missed meanwhile).
//! - **Time**: every time is an `int8` of milliseconds since the Unix epoch given by the
//!   caller (`now`), never the database clock, as in every store.
//!
//! # Table layout (schema version 3)
//! Migrations are versioned in `taskq_schema(version, applied_at)` and applied under an
//! advisory lock when a store is opened. A database whose schema is newer than this build
//! knows is refused with [`StoreError::SchemaTooNew`].
//!
//! | table | columns | notes |
//! |---|---|---|
//! | `taskq_tasks` | `id bigserial`, `task`, `queue`, `state` (`pending` `running` `done` `failed` `dead` `cancelled`), `payload json`, `priority`, `attempts`, `unique_name`, `tombstone_ms`, `created_at`, `enqueued_at`, `run_at`, `finished_at`, `last_error`, `run_id`, `worker`, `lease_until`, `lease_token`, `started_at` | claim indexes `(priority DESC, run_at, id)` and `(queue, priority DESC, run_at, id)` of pending tasks and `(lease_until)` of running ones (lapsed leases); a unique partial index on `unique_name` of live tasks; `run_id` index |
//! | `taskq_attempts` | `id`, `task_id`, `attempt`, `worker`, `started_at`, `finished_at`, `outcome`, `error` | one row per finished or lapsed attempt; deleted with its task |
//! | `taskq_queues` | `name`, `paused`, `rate`, `burst`, `max_concurrent`, `tokens`, `refilled_at` | settings and the token bucket's state |
//! | `taskq_iterations` | `run_id` (the first step's id), `task`, `queue`, `filter json`, `cursor json`, `processed`, `batches`, `steps`, `total`, `state`, `started_at`, `updated_at`, `finished_at`, `error` | one row per iterative run |
//! | `taskq_tombstones` | `name`, `taken_until`, `run_id`, `tombstone_ms` | version 3: the holds deleted named tasks leave on their names (see [`tombstone`]); written by delete and purge in their statement, read by enqueue's name check |
//!
//! Payloads, filters and cursors are `json`, not `jsonb`: the exact text taskq wrote, so
//! values come back bit-identical and strings may hold `\u0000` (version 2 changed them
//! from `jsonb`). taskq decodes them itself, row by row: a row that does not decode never
//! fails a claim or a listing (see the [store module docs](super#values)).
//!
//! # Starting a task inside your own transaction
//! [`PostgresStore::enqueue_in`] stores tasks with the application's own
//! `tokio_postgres::Transaction`: they exist if and only if that transaction commits.
//!
//! ```no_run
//! use taskq_runtime::store::postgres::PostgresStore;
//! use taskq_runtime::store::NewTask;
//! use taskq_runtime::time::Timestamp;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let url = "postgres://app@127.0.0.1/app";
//! let store = PostgresStore::open(url).await?;
//! let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//!
//! let tx = client.transaction().await?;
//! tx.execute("UPDATE accounts SET welcomed = true WHERE id = $1", &[&42i64]).await?;
//! let now = Timestamp::now();
//! let ids = store
//!     .enqueue_in(
//!         &tx,
//!         vec![NewTask {
//!             task: "app::send_welcome".into(),
//!             queue: "email".into(),
//!             payload: serde_json::json!({ "account": 42 }),
//!             priority: 0,
//!             run_at: now,
//!             unique_name: None,
//!             tombstone: std::time::Duration::ZERO,
//!             iteration: None,
//!         }],
//!         now,
//!     )
//!     .await?;
//! tx.commit().await?; // the task exists (and workers are woken) only from here on
//! # let _ = ids;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Config, Row};

use super::admission::{self, Bucket};
use super::*;

mod pool;
mod schema;
#[cfg(test)]
mod tests;

use pool::{Pool, PooledConn};

/// The notification channel every store listens on.
pub const CHANNEL: &str = "taskq_new";

/// The error a lapsed lease records (see [`crate::policy::LEASE_LAPSED`]).
const LAPSED: &str = crate::policy::LEASE_LAPSED.1;

type Param<'a> = &'a (dyn ToSql + Sync);

/// Maps a driver error to [`StoreError::Backend`] with the server's message and code.
fn pg_err(e: &tokio_postgres::Error) -> StoreError {
    use std::error::Error as _;
    if let Some(db) = e.as_db_error() {
        let mut msg = format!("PostgreSQL error {}: {}", db.code().code(), db.message());
        if let Some(d) = db.detail() {
            msg.push_str(&format!(" ({d})"));
        }
        StoreError::Backend(msg)
    } else {
        match e.source() {
            Some(src) => StoreError::Backend(format!("PostgreSQL connection error: {e}: {src}")),
            None => StoreError::Backend(format!("PostgreSQL connection error: {e}")),
        }
    }
}

/// Whether `e` is a unique violation.
fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

/// The name inside a unique-violation detail `Key (unique_name)=(NAME) already exists.`
fn violated_name(e: &tokio_postgres::Error) -> Option<String> {
    let detail = e.as_db_error()?.detail()?;
    let start = detail.find(")=(")? + 3;
    let end = detail.rfind(") already exists")?;
    (end >= start).then(|| detail[start..end].to_string())
}

/// The columns a deleting CTE `d` returns for [`BURY`].
const DELETED: &str = "id, run_id, state, unique_name, tombstone_ms, finished_at";

/// Leaves the tombstones of the named rows a CTE `d` deleted (columns [`DELETED`]), at
/// the time `$2`, in the same statement: the rule of [`tombstone`] in
/// SQL. A live row holds its name for its window from now, a finished one for what is
/// left of its window, a step of a run that holds the name keeps the run; one record per
/// name, keeping the later hold. Sums are `numeric`, so a huge window saturates instead
/// of failing the delete.
const BURY: &str = "\
INSERT INTO {S}.taskq_tombstones AS o (name, taken_until, run_id, tombstone_ms)
SELECT DISTINCT ON (y.name) y.name, y.taken_until, y.run_id, y.tombstone_ms FROM (
    SELECT x.name, LEAST(x.ended::numeric + GREATEST(x.tombstone_ms, 0),
                         9223372036854775807)::int8 AS taken_until,
           x.run_id, x.tombstone_ms
    FROM (
        SELECT d.unique_name AS name, d.tombstone_ms,
               CASE WHEN d.state IN ('pending', 'running') THEN $2::int8
                    ELSE COALESCE(d.finished_at, $2::int8) END AS ended,
               CASE WHEN i.state = 'running'
                         OR i.finished_at::numeric + d.tombstone_ms > $2::int8
                    THEN d.run_id END AS run_id
        FROM d LEFT JOIN {S}.taskq_iterations i ON i.run_id = d.run_id
        WHERE d.unique_name IS NOT NULL
    ) x
) y
WHERE y.taken_until > $2::int8 OR y.run_id IS NOT NULL
ORDER BY y.name, y.taken_until DESC
ON CONFLICT (name) DO UPDATE SET
    taken_until = GREATEST(o.taken_until, EXCLUDED.taken_until,
        CASE WHEN EXCLUDED.run_id IS NOT NULL AND EXCLUDED.run_id IS DISTINCT FROM o.run_id
             THEN (SELECT LEAST(p.finished_at::numeric + o.tombstone_ms,
                                9223372036854775807)::int8
                   FROM {S}.taskq_iterations p WHERE p.run_id = o.run_id) END),
    run_id = COALESCE(EXCLUDED.run_id, o.run_id),
    tombstone_ms = CASE WHEN EXCLUDED.run_id IS NOT NULL THEN EXCLUDED.tombstone_ms
                        ELSE o.tombstone_ms END";

/// Which queues a statement is about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum QueueFilter {
    All,
    One,
    Many,
}

impl QueueFilter {
    fn of(queues: &[String]) -> QueueFilter {
        match queues.len() {
            0 => QueueFilter::All,
            1 => QueueFilter::One,
            _ => QueueFilter::Many,
        }
    }

    /// The condition on `t.queue` with the parameter `$n`, leaving out queues whose
    /// `taskq_queues` row `q` matches `excluded`. Written so that the planner keeps its row
    /// estimate (and so walks the claim index in order) whatever the queue statistics.
    fn sql_excluding(self, n: usize, excluded: &str) -> String {
        match self {
            QueueFilter::All => format!(
                "AND NOT COALESCE((SELECT {excluded} FROM {{S}}.taskq_queues q \
                 WHERE q.name = t.queue), false)"
            ),
            QueueFilter::One => format!(
                "AND t.queue = ${n}::text AND NOT EXISTS (SELECT 1 FROM {{S}}.taskq_queues q \
                 WHERE q.name = ${n}::text AND ({excluded}))"
            ),
            QueueFilter::Many => format!(
                "AND t.queue = ANY(ARRAY(SELECT x FROM unnest(${n}::text[]) AS x \
                 WHERE NOT EXISTS (SELECT 1 FROM {{S}}.taskq_queues q \
                 WHERE q.name = x AND ({excluded}))))"
            ),
        }
    }

    /// The condition on `t.queue` with the parameter `$n`.
    fn sql(self, n: usize) -> String {
        match self {
            QueueFilter::All => String::new(),
            QueueFilter::One => format!("AND t.queue = ${n}::text"),
            QueueFilter::Many => format!("AND t.queue = ANY(${n}::text[])"),
        }
    }
}

/// Which queues a claim statement covers (see `PostgresStore::claim_sql`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClaimShape {
    /// Queues without limits; nothing at all when a wanted queue has limits.
    Plain,
    /// Queues without limits, and the limited queues of `$5`, each up to its cap in `$6`.
    Capped,
}

/// The PostgreSQL store. Cheap to share behind an `Arc`; see the [module docs](self).
pub struct PostgresStore {
    pool: Pool,
    schema_name: String,
    /// The quoted schema, ready to prefix table names.
    s: String,
    wake: broadcast::Sender<Arc<str>>,
    listener: tokio::task::JoinHandle<()>,
    /// The queue lists (as claims name them; empty for every queue) whose last claim met a
    /// queue with limits: their next claim skips the plain statement. Only a hint.
    limited_hint: std::sync::Mutex<HashSet<Vec<String>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema_name)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// taskq's own URL options, taken out of the query string.
struct UrlOptions {
    schema: Option<String>,
    pool_size: usize,
}

fn parse_url(url: &str) -> Result<(Config, UrlOptions), StoreError> {
    let bad = |reason: String| StoreError::BadUrl {
        url: url.to_string(),
        reason,
    };
    let mut opts = UrlOptions {
        schema: None,
        pool_size: 10,
    };
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut rest = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "schema" | "taskq_schema" => opts.schema = Some(v.to_string()),
            "pool_size" => {
                opts.pool_size = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(format!("`pool_size={v}` is not a positive number")))?
            }
            _ => rest.push(pair),
        }
    }
    let driver_url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: Config = driver_url
        .parse()
        .map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("taskq");
    }
    Ok((config, opts))
}

fn check_schema_name(url: &str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .map(|c| c.is_ascii_alphabetic() || c == '_')
            .unwrap_or(false)
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadUrl {
            url: url.to_string(),
            reason: format!(
                "schema name `{name}` must be 1 to 63 ASCII letters, digits or `_`, not starting with a digit"
            ),
        })
    }
}

/// Keeps a `LISTEN taskq_new` connection open, reconnecting with back-off, and forwards
/// every notification's payload (a queue name) to `wake`. An empty payload wakes everyone
/// (sent after each (re)connection, since notifications may have been missed).
async fn listen_forever(
    config: Config,
    wake: broadcast::Sender<Arc<str>>,
    ready: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let fwd = wake.clone();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => {
                                let _ = fwd.send(Arc::from(n.payload()));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::debug!(error = %e, "taskq: listening connection lost");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(50);
                        let _ = ready.send(true);
                        let _ = wake.send(Arc::from(""));
                        let _ = driver.await;
                        tracing::warn!("taskq: PostgreSQL listening connection lost; reconnecting");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "taskq: LISTEN failed");
                        driver.abort();
                    }
                }
                drop(client);
            }
            Err(e) => {
                tracing::debug!(error = %e, retry_in = ?backoff, "taskq: cannot open the listening connection");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One claimed row, decoded. The payload and cursor are decoded here, per row: one that
/// does not decode sets [`ClaimedTask::decode_error`] (the worker sends that task dead)
/// instead of failing the claim, which has already committed the whole batch.
fn claimed_from_row(r: &Row) -> Result<ClaimedTask, StoreError> {
    let id: i64 = r.try_get("id").map_err(|e| pg_err(&e))?;
    let payload: String = r.try_get("payload").map_err(|e| pg_err(&e))?;
    let run: Option<i64> = r.try_get("run_id").map_err(|e| pg_err(&e))?;
    let cursor: Option<String> = r.try_get("cursor").map_err(|e| pg_err(&e))?;
    let mut decode_error = None;
    let payload = match decode_stored(&payload) {
        Ok(v) => v,
        Err(e) => {
            decode_error = Some(decode_failure("payload", id, &e));
            serde_json::Value::String(payload)
        }
    };
    let iteration = match run {
        Some(run) => {
            let processed: Option<i64> = r.try_get("processed").map_err(|e| pg_err(&e))?;
            let batches: Option<i64> = r.try_get("batches").map_err(|e| pg_err(&e))?;
            let total: Option<i64> = r.try_get("total").map_err(|e| pg_err(&e))?;
            processed.map(|processed| IterationCursor {
                run: TaskId(run),
                cursor: cursor.and_then(|c| match decode_stored(&c) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        decode_error.get_or_insert_with(|| decode_failure("cursor", id, &e));
                        None
                    }
                }),
                processed: processed.max(0) as u64,
                batches: batches.unwrap_or(0).max(0) as u64,
                total: total.map(|t| t.max(0) as u64),
            })
        }
        None => None,
    };
    Ok(ClaimedTask {
        lease: Lease {
            id: TaskId(id),
            token: r.try_get("lease_token").map_err(|e| pg_err(&e))?,
        },
        task: r.try_get("task").map_err(|e| pg_err(&e))?,
        queue: r.try_get("queue").map_err(|e| pg_err(&e))?,
        payload,
        attempt: r
            .try_get::<_, i32>("attempts")
            .map_err(|e| pg_err(&e))?
            .max(0) as u32,
        enqueued_at: Timestamp(r.try_get("enqueued_at").map_err(|e| pg_err(&e))?),
        iteration,
        decode_error,
    })
}

fn to_json_text(v: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(v)
        .map_err(|e| StoreError::Backend(format!("JSON does not serialize: {e}")))
}

const TASK_COLUMNS: &str = "id, task, queue, state, payload::text AS payload, priority, attempts, \
     unique_name, created_at, enqueued_at, run_at, finished_at, last_error, run_id, worker, lease_until";

fn task_from_row(r: &Row) -> Result<TaskInfo, StoreError> {
    let e = |e: tokio_postgres::Error| pg_err(&e);
    let state: String = r.try_get("state").map_err(e)?;
    let payload: String = r.try_get("payload").map_err(e)?;
    Ok(TaskInfo {
        id: TaskId(r.try_get("id").map_err(e)?),
        task: r.try_get("task").map_err(e)?,
        queue: r.try_get("queue").map_err(e)?,
        state: state.parse().map_err(StoreError::Backend)?,
        payload: stored_or_raw(&payload),
        priority: r.try_get("priority").map_err(e)?,
        attempts: r.try_get::<_, i32>("attempts").map_err(e)?.max(0) as u32,
        unique_name: r.try_get("unique_name").map_err(e)?,
        created_at: Timestamp(r.try_get("created_at").map_err(e)?),
        enqueued_at: Timestamp(r.try_get("enqueued_at").map_err(e)?),
        run_at: Timestamp(r.try_get("run_at").map_err(e)?),
        finished_at: r
            .try_get::<_, Option<i64>>("finished_at")
            .map_err(e)?
            .map(Timestamp),
        last_error: r.try_get("last_error").map_err(e)?,
        run: r
            .try_get::<_, Option<i64>>("run_id")
            .map_err(e)?
            .map(TaskId),
        worker: r.try_get("worker").map_err(e)?,
        lease_until: r
            .try_get::<_, Option<i64>>("lease_until")
            .map_err(e)?
            .map(Timestamp),
    })
}

const ITERATION_COLUMNS: &str =
    "run_id, task, queue, filter::text AS filter, cursor::text AS cursor, \
     processed, batches, steps, total, state, started_at, updated_at, finished_at, error";

fn iteration_from_row(r: &Row) -> Result<IterationInfo, StoreError> {
    let e = |e: tokio_postgres::Error| pg_err(&e);
    let filter: String = r.try_get("filter").map_err(e)?;
    let cursor: Option<String> = r.try_get("cursor").map_err(e)?;
    let state: String = r.try_get("state").map_err(e)?;
    Ok(IterationInfo {
        run: TaskId(r.try_get("run_id").map_err(e)?),
        task: r.try_get("task").map_err(e)?,
        queue: r.try_get("queue").map_err(e)?,
        filter: stored_or_raw(&filter),
        cursor: cursor.as_deref().map(stored_or_raw),
        processed: r.try_get::<_, i64>("processed").map_err(e)?.max(0) as u64,
        batches: r.try_get::<_, i64>("batches").map_err(e)?.max(0) as u64,
        steps: r.try_get::<_, i64>("steps").map_err(e)?.max(0) as u64,
        total: r
            .try_get::<_, Option<i64>>("total")
            .map_err(e)?
            .map(|t| t.max(0) as u64),
        state: state.parse().map_err(StoreError::Backend)?,
        started_at: Timestamp(r.try_get("started_at").map_err(e)?),
        updated_at: Timestamp(r.try_get("updated_at").map_err(e)?),
        finished_at: r
            .try_get::<_, Option<i64>>("finished_at")
            .map_err(e)?
            .map(Timestamp),
        error: r.try_get("error").map_err(e)?,
    })
}

/// The arrays of an enqueue statement.
struct EnqueueArgs {
    task: Vec<String>,
    queue: Vec<String>,
    payload: Vec<String>,
    priority: Vec<i32>,
    unique_name: Vec<Option<String>>,
    tombstone_ms: Vec<i64>,
    run_at: Vec<i64>,
    filter: Vec<Option<String>>,
    queues: Vec<String>,
}

impl EnqueueArgs {
    /// The arrays of `tasks`, after the shared check of every store's enqueue
    /// ([`check_new_tasks`]); used by [`Store::enqueue`] and [`PostgresStore::enqueue_in`].
    fn new(tasks: Vec<NewTask>) -> Result<EnqueueArgs, StoreError> {
        check_new_tasks(&tasks)?;
        // A name repeated in the call is found by the statement's conflict check, in call
        // order with the names taken in the store (the error names the first).
        let mut a = EnqueueArgs {
            task: Vec::with_capacity(tasks.len()),
            queue: Vec::with_capacity(tasks.len()),
            payload: Vec::with_capacity(tasks.len()),
            priority: Vec::with_capacity(tasks.len()),
            unique_name: Vec::with_capacity(tasks.len()),
            tombstone_ms: Vec::with_capacity(tasks.len()),
            run_at: Vec::with_capacity(tasks.len()),
            filter: Vec::with_capacity(tasks.len()),
            queues: Vec::new(),
        };
        let mut queues = HashSet::new();
        for t in tasks {
            if queues.insert(t.queue.clone()) {
                a.queues.push(t.queue.clone());
            }
            a.payload.push(to_json_text(&t.payload)?);
            a.filter.push(
                t.iteration
                    .as_ref()
                    .map(|it| to_json_text(&it.filter))
                    .transpose()?,
            );
            a.task.push(t.task);
            a.queue.push(t.queue);
            a.priority.push(t.priority);
            a.unique_name.push(t.unique_name);
            a.tombstone_ms
                .push(t.tombstone.as_millis().min(i64::MAX as u128) as i64);
            a.run_at.push(t.run_at.0);
        }
        Ok(a)
    }

    fn params<'a>(&'a self, now: &'a i64) -> [Param<'a>; 9] {
        [
            now,
            &self.task,
            &self.queue,
            &self.payload,
            &self.priority,
            &self.unique_name,
            &self.tombstone_ms,
            &self.run_at,
            &self.filter,
        ]
    }

    fn has_names(&self) -> bool {
        self.unique_name.iter().any(Option::is_some)
    }

    fn first_name(&self) -> String {
        self.unique_name
            .iter()
            .flatten()
            .next()
            .cloned()
            .unwrap_or_default()
    }
}

/// Reads the enqueue statement's rows: ids in input order, or the conflicting name.
fn enqueue_result(rows: &[Row], n: usize) -> Result<Vec<TaskId>, StoreError> {
    let mut ids = vec![TaskId(0); n];
    for r in rows {
        let conflict: Option<String> = r.try_get(2).map_err(|e| pg_err(&e))?;
        if let Some(name) = conflict {
            return Err(StoreError::AlreadyExists(name));
        }
        let id: Option<i64> = r.try_get(0).map_err(|e| pg_err(&e))?;
        let ord: Option<i64> = r.try_get(1).map_err(|e| pg_err(&e))?;
        if let (Some(id), Some(ord)) = (id, ord) {
            if let Some(slot) = ids.get_mut((ord - 1).max(0) as usize) {
                *slot = TaskId(id);
            }
        }
    }
    if rows.len() != n {
        return Err(StoreError::Backend(format!(
            "enqueue stored {} of {n} tasks",
            rows.len()
        )));
    }
    Ok(ids)
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db?schema=NAME&pool_size=N`),
    /// creates or migrates the schema, and starts listening for new work.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let (config, opts) = parse_url(url)?;
        let schema = opts.schema.clone().unwrap_or_else(|| "public".into());
        check_schema_name(url, &schema)?;
        PostgresStore::connect(config, schema, opts.pool_size).await
    }

    /// Like [`PostgresStore::open`], with every table in `schema` (created if missing).
    /// Several stores in different schemas of one database are fully separate (tests use
    /// one schema each).
    pub async fn open_in_schema(url: &str, schema: &str) -> Result<PostgresStore, StoreError> {
        let (config, opts) = parse_url(url)?;
        check_schema_name(url, schema)?;
        PostgresStore::connect(config, schema.to_string(), opts.pool_size).await
    }

    async fn connect(
        config: Config,
        schema_name: String,
        pool_size: usize,
    ) -> Result<PostgresStore, StoreError> {
        let s = format!("\"{schema_name}\"");
        let pool = Pool::new(config.clone(), pool_size);
        {
            let mut c = pool.get().await?;
            schema::migrate(&mut c, &schema_name, &s).await?;
        }
        let (wake, _) = broadcast::channel(1024);
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let listener = tokio::spawn(listen_forever(config, wake.clone(), ready_tx));
        // Wait (briefly) for LISTEN so that work started right after `open` wakes us.
        let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx.wait_for(|r| *r)).await;
        Ok(PostgresStore {
            pool,
            schema_name,
            s,
            wake,
            listener,
            limited_hint: std::sync::Mutex::new(HashSet::new()),
        })
    }

    /// Whether the last claim of `queues` met a queue with limits.
    fn covers_limited(&self, queues: &[String]) -> bool {
        let hint = self.limited_hint.lock().unwrap_or_else(|p| p.into_inner());
        hint.contains(queues)
    }

    /// Remembers whether a claim of `queues` met a queue with limits.
    fn note_limited(&self, queues: &[String], limited: bool) {
        let mut hint = self.limited_hint.lock().unwrap_or_else(|p| p.into_inner());
        if !limited {
            hint.remove(queues);
            return;
        }
        // Workers claim with one list each; many lists mean callers that vary them, whose
        // hints are cheap to lose.
        if hint.len() >= 64 {
            hint.clear();
        }
        hint.insert(queues.to_vec());
    }

    /// The schema holding this store's tables.
    pub fn schema(&self) -> &str {
        &self.schema_name
    }

    /// The schema version this build creates and understands.
    pub fn schema_version() -> i64 {
        schema::SCHEMA_VERSION
    }

    fn sql(&self, template: &str) -> String {
        template
            .replace("{DELETED}", DELETED)
            .replace("{BURY}", BURY)
            .replace("{S}", &self.s)
    }

    fn enqueue_sql(&self, with_names: bool) -> String {
        let conflict = if with_names {
            // The named first step of an iterative run ends when it hands over: the name
            // stays taken while the run is live, and the tombstone window counts from the
            // end of the run.
            //
            // Sums are `numeric`: a window of `Duration::MAX` (saturated to `i64::MAX` ms)
            // holds the name instead of failing the check with an int8 overflow.
            //
            // A deleted task's hold is its tombstone: the delete commits the row's removal
            // and the tombstone together, and this check shares the insert's snapshot, so
            // an enqueue racing a delete sees the task or its tombstone, never neither.
            //
            // The error names the first task of the call (by `ord`) whose name is taken or
            // repeats an earlier one's in the call, as on every store.
            "SELECT c.unique_name FROM (
        SELECT i.ord, t.unique_name FROM input i JOIN {S}.taskq_tasks t ON t.unique_name = i.unique_name
        LEFT JOIN {S}.taskq_iterations r ON r.run_id = t.run_id
        WHERE i.unique_name IS NOT NULL
          AND (t.state IN ('pending', 'running') OR r.state = 'running'
               OR t.finished_at::numeric + t.tombstone_ms > $1::int8
               OR r.finished_at::numeric + t.tombstone_ms > $1::int8)
        UNION ALL
        SELECT i.ord, n.name FROM input i JOIN {S}.taskq_tombstones n ON n.name = i.unique_name
        LEFT JOIN {S}.taskq_iterations r ON r.run_id = n.run_id
        WHERE n.taken_until > $1::int8 OR r.state = 'running'
              OR r.finished_at::numeric + n.tombstone_ms > $1::int8
        UNION ALL
        SELECT i.ord, i.unique_name FROM input i
        WHERE EXISTS (SELECT 1 FROM input e WHERE e.unique_name = i.unique_name AND e.ord < i.ord)
    ) c
    ORDER BY c.ord
    LIMIT 1"
        } else {
            "SELECT NULL::text AS unique_name WHERE false"
        };
        self.sql(&format!(
            r#"
WITH input AS MATERIALIZED (
    SELECT nextval('{{S}}.taskq_tasks_id_seq'::regclass) AS id, u.*
    FROM unnest($2::text[], $3::text[], $4::text[], $5::int4[], $6::text[], $7::int8[],
                $8::int8[], $9::text[])
         WITH ORDINALITY AS u(task, queue, payload, priority, unique_name, tombstone_ms,
                              run_at, filter, ord)
),
conflict AS (
    {conflict}
),
ins AS (
    INSERT INTO {{S}}.taskq_tasks (id, task, queue, state, payload, priority, unique_name,
                                 tombstone_ms, created_at, enqueued_at, run_at, run_id)
    SELECT i.id, i.task, i.queue, 'pending', i.payload::json, i.priority, i.unique_name,
           i.tombstone_ms, $1::int8, $1::int8, i.run_at,
           CASE WHEN i.filter IS NOT NULL THEN i.id END
    FROM input i WHERE NOT EXISTS (SELECT 1 FROM conflict)
    ORDER BY i.ord
),
its AS (
    INSERT INTO {{S}}.taskq_iterations (run_id, task, queue, filter, state, started_at, updated_at)
    SELECT i.id, i.task, i.queue, i.filter::json, 'running', $1::int8, $1::int8
    FROM input i WHERE i.filter IS NOT NULL AND NOT EXISTS (SELECT 1 FROM conflict)
)
SELECT i.id, i.ord, NULL::text AS conflict FROM input i WHERE NOT EXISTS (SELECT 1 FROM conflict)
UNION ALL
SELECT NULL, NULL, c.unique_name FROM conflict c
"#
        ))
    }

    const NOTIFY_SQL: &'static str =
        "SELECT 1 FROM (SELECT pg_notify('taskq_new', q) FROM unnest($1::text[]) AS q) n";

    /// Stores tasks inside the application's own transaction: they exist if and only if
    /// `tx` commits, and workers are woken (by `NOTIFY`) at that commit. Same rules as
    /// [`Store::enqueue`]: all or nothing; a unique name that is taken returns
    /// [`StoreError::AlreadyExists`] and stores nothing (the transaction stays usable).
    /// Two transactions starting one unique name at the same moment: the second waits
    /// for the first and then fails with a unique violation that aborts its transaction,
    /// reported as [`StoreError::AlreadyExists`]. The name check reads tombstones and
    /// finished tasks with the statement's snapshot: under `READ COMMITTED` (PostgreSQL's
    /// default) it sees every delete committed before it; under `REPEATABLE READ` it sees
    /// the names as of your transaction's first statement.
    ///
    /// See the [module docs](self) for an example.
    pub async fn enqueue_in(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        tasks: Vec<NewTask>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let n = tasks.len();
        let args = EnqueueArgs::new(tasks)?;
        let now_ms = now.0;
        let rows = match tx
            .query(&self.enqueue_sql(args.has_names()), &args.params(&now_ms))
            .await
        {
            Ok(rows) => rows,
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::AlreadyExists(
                    violated_name(&e).unwrap_or_else(|| args.first_name()),
                ))
            }
            Err(e) => return Err(pg_err(&e)),
        };
        let ids = enqueue_result(&rows, n)?;
        tx.query(Self::NOTIFY_SQL, &[&args.queues])
            .await
            .map_err(|e| pg_err(&e))?;
        Ok(ids)
    }

    /// Runs `BEGIN; <statements>; COMMIT` in one round trip (pipelined). `COMMIT` of a
    /// transaction where a statement failed rolls it back, so nothing is half-applied.
    async fn pipelined_tx(
        c: &mut PooledConn<'_>,
        a: (&tokio_postgres::Statement, &[Param<'_>]),
        b: Option<(&tokio_postgres::Statement, &[Param<'_>])>,
    ) -> Result<Result<Vec<Row>, tokio_postgres::Error>, StoreError> {
        let client = c.client()?;
        let (begin, ra, rb, commit) = futures::join!(
            client.batch_execute("BEGIN"),
            client.query(a.0, a.1),
            async {
                match b {
                    Some((st, p)) => client.query(st, p).await.map(|_| ()),
                    None => Ok(()),
                }
            },
            client.batch_execute("COMMIT"),
        );
        c.check(begin)?;
        match ra {
            Ok(rows) => {
                c.check(rb)?;
                c.check(commit)?;
                Ok(Ok(rows))
            }
            Err(e) => {
                if e.as_db_error().is_none() || commit.is_err() {
                    c.discard();
                }
                Ok(Err(e))
            }
        }
    }

    /// The claim statement. Parameters: `$1` now, `$2` lease end, `$3` worker, `$4` limit;
    /// then for [`ClaimShape::Plain`] the queue filter (`$5`, unless every queue), and for
    /// [`ClaimShape::Capped`] `$5` queue names and `$6` their caps.
    ///
    /// Every shape picks in the one claim order (priority, `run_at`, id) over every queue
    /// it covers, due pending tasks and lapsed leases alike; its rows come back in that
    /// order.
    fn claim_sql(&self, filter: QueueFilter, shape: ClaimShape) -> String {
        const LIMITED: &str = "q.rate IS NOT NULL OR q.max_concurrent IS NOT NULL";
        const COLUMNS: &str = "t.id, t.queue, t.priority, t.run_at, t.state AS old_state, \
             t.worker AS old_worker, t.started_at AS old_started, t.attempts AS old_attempts";
        // The best due pending tasks and lapsed leases of queues without limits (all, or
        // those of the filter), each walking its index in claim order.
        let unlimited = |guard: &str| {
            format!(
                r#"
due AS (
    SELECT {COLUMNS}
    FROM {{S}}.taskq_tasks t
    WHERE t.state = 'pending' AND t.run_at <= $1::int8
      {qf} {guard}
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT $4::int8
    FOR UPDATE OF t SKIP LOCKED
),
expired AS (
    SELECT {COLUMNS}
    FROM {{S}}.taskq_tasks t
    WHERE t.state = 'running' AND t.lease_until <= $1::int8
      {qf} {guard}
    ORDER BY t.priority DESC, t.run_at, t.id
    LIMIT $4::int8
    FOR UPDATE OF t SKIP LOCKED
),"#,
                // Queues with limits are never claimed here: only through their caps,
                // under their row locks.
                qf = filter.sql_excluding(5, &format!("q.paused OR {LIMITED}")),
            )
        };
        let (ctes, candidates) = match shape {
            ClaimShape::Plain => (
                // A claim that covers a queue with limits must order it among the others:
                // this statement then claims nothing and the capped path runs instead.
                unlimited(&format!(
                    "AND NOT EXISTS (SELECT 1 FROM {{S}}.taskq_queues q \
                     WHERE NOT q.paused AND ({LIMITED}) {})",
                    filter.sql(5).replace("t.queue", "q.name")
                )),
                "SELECT * FROM due UNION ALL SELECT * FROM expired",
            ),
            ClaimShape::Capped => {
                // `$5`/`$6`: the locked limited queues with their allowances, and (unless
                // the claim covers every queue) the other wanted queues with cap -1: up to
                // the limit, if they are neither paused nor limited by now. Each queue's
                // best due and lapsed tasks are read through its index (at most its cap of
                // each), then at most its cap of both are kept.
                let capped = format!(
                    r#"
caps AS (
    SELECT c.name, CASE WHEN c.cap < 0 THEN $4::int8 ELSE c.cap END AS cap
    FROM unnest($5::text[], $6::int8[]) AS c(name, cap)
    WHERE c.cap > 0 OR (c.cap < 0 AND NOT EXISTS (SELECT 1 FROM {{S}}.taskq_queues q
                                                 WHERE q.name = c.name
                                                   AND (q.paused OR {LIMITED})))
),
capped_due AS (
    SELECT x.* FROM caps c CROSS JOIN LATERAL (
        SELECT {COLUMNS} FROM {{S}}.taskq_tasks t
        WHERE t.state = 'pending' AND t.queue = c.name AND t.run_at <= $1::int8
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT LEAST(c.cap, $4::int8)
        FOR UPDATE OF t SKIP LOCKED) x
),
capped_expired AS (
    SELECT x.* FROM caps c CROSS JOIN LATERAL (
        SELECT {COLUMNS} FROM {{S}}.taskq_tasks t
        WHERE t.state = 'running' AND t.queue = c.name AND t.lease_until <= $1::int8
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT LEAST(c.cap, $4::int8)
        FOR UPDATE OF t SKIP LOCKED) x
),
capped AS (
    SELECT y.id, y.queue, y.priority, y.run_at, y.old_state, y.old_worker, y.old_started,
           y.old_attempts
    FROM (
        SELECT z.*, row_number() OVER (PARTITION BY z.queue
                                       ORDER BY z.priority DESC, z.run_at, z.id) AS rn
        FROM (SELECT * FROM capped_due UNION ALL SELECT * FROM capped_expired) z
    ) y JOIN caps c ON c.name = y.queue
    WHERE y.rn <= c.cap
),"#
                );
                if filter == QueueFilter::All {
                    (
                        capped + &unlimited(""),
                        "SELECT * FROM due UNION ALL SELECT * FROM expired \
                         UNION ALL SELECT * FROM capped",
                    )
                } else {
                    (capped, "SELECT * FROM capped")
                }
            }
        };
        self.sql(&format!(
            r#"
WITH {ctes}
picked AS (
    SELECT * FROM ({candidates}) x
    ORDER BY x.priority DESC, x.run_at, x.id
    LIMIT $4::int8
),
lapsed AS (
    INSERT INTO {{S}}.taskq_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
    SELECT p.id, p.old_attempts, COALESCE(p.old_worker, ''), COALESCE(p.old_started, $1::int8),
           $1::int8, 'lease lapsed', '{lapsed}'
    FROM picked p WHERE p.old_state = 'running'
),
claimed AS (
    UPDATE {{S}}.taskq_tasks t
    SET state = 'running', attempts = t.attempts + 1, worker = $3::text,
        lease_until = $2::int8, lease_token = t.lease_token + 1, started_at = $1::int8,
        last_error = CASE WHEN p.old_state = 'running' THEN '{lapsed}' ELSE t.last_error END
    FROM picked p WHERE t.id = p.id
    RETURNING t.id, t.lease_token, t.task, t.queue, t.payload, t.attempts, t.enqueued_at,
              t.run_id, t.priority, t.run_at
)
SELECT c.id, c.lease_token, c.task, c.queue, c.payload::text AS payload, c.attempts,
       c.enqueued_at, c.run_id, i.cursor::text AS cursor, i.processed, i.batches, i.total
FROM claimed c LEFT JOIN {{S}}.taskq_iterations i ON i.run_id = c.run_id
ORDER BY c.priority DESC, c.run_at, c.id
"#,
            lapsed = LAPSED.replace('\'', "''"),
        ))
    }

    fn limited_sql(&self, filter: QueueFilter) -> String {
        self.sql(&format!(
            "SELECT t.name FROM {{S}}.taskq_queues t \
             WHERE NOT t.paused AND (t.rate IS NOT NULL OR t.max_concurrent IS NOT NULL) {}",
            filter.sql(1).replace("t.queue", "t.name")
        ))
    }

    /// A claim that covers queues with a rate or a concurrency limit: one transaction
    /// locks their `taskq_queues` rows (so limits hold across every worker), reads how
    /// many of their tasks run, computes each one's allowance ([`admission`]), claims
    /// with one statement in the one claim order over the limited and unlimited queues
    /// alike (each limited queue up to its allowance), and stores the buckets. It locks
    /// every queue the claim covers that is limited when it runs, so it is right whatever
    /// changed since the caller looked. Two round trips (lock and count; claim and
    /// commit), three when a bucket is to be stored. Also says whether it met a limited
    /// queue.
    async fn claim_capped(
        &self,
        c: &mut PooledConn<'_>,
        req: &ClaimRequest,
    ) -> Result<(Vec<ClaimedTask>, bool), StoreError> {
        let now = req.now.0;
        let filter = QueueFilter::of(&req.queues);
        // `$1`: the wanted queues, NULL for every queue.
        let lock_sql = self.sql(
            "SELECT name, rate, burst, max_concurrent, tokens, refilled_at FROM {S}.taskq_queues \
             WHERE ($1::text[] IS NULL OR name = ANY($1::text[])) AND NOT paused \
               AND (rate IS NOT NULL OR max_concurrent IS NOT NULL) \
             ORDER BY name FOR UPDATE",
        );
        // A statement of its own, after the lock: its snapshot sees the tasks that the
        // previous holder of the lock claimed.
        // Only queues with a `max_concurrent` need the count. It walks the lease index, so
        // it costs as many running tasks as the store holds (few, while workers finish
        // what they claim).
        let running_sql = self.sql(
            "SELECT t.queue, count(*) FROM {S}.taskq_tasks t \
             WHERE t.state = 'running' AND t.lease_until > $2::int8 \
               AND t.queue IN (SELECT q.name FROM {S}.taskq_queues q \
                               WHERE ($1::text[] IS NULL OR q.name = ANY($1::text[])) \
                                 AND NOT q.paused AND q.max_concurrent IS NOT NULL) \
             GROUP BY t.queue",
        );
        let claim_sql = self.claim_sql(filter, ClaimShape::Capped);
        let bucket_sql = self.sql(
            "UPDATE {S}.taskq_queues q SET tokens = b.tokens, refilled_at = b.refilled_at \
             FROM unnest($1::text[], $2::float8[], $3::int8[]) AS b(name, tokens, refilled_at) \
             WHERE q.name = b.name",
        );
        let st_lock = c.prep(&lock_sql).await?;
        let st_running = c.prep(&running_sql).await?;
        let st_claim = c.prep(&claim_sql).await?;
        let st_bucket = c.prep(&bucket_sql).await?;
        let lease_until = req.now.add(req.lease).0;
        let limit = req.limit.min(i64::MAX as usize) as i64;

        // Lock every limited queue the claim covers, as of now, so that none is claimed
        // from without its lock.
        let wanted: Option<&Vec<String>> = match filter {
            QueueFilter::All => None,
            _ => Some(&req.queues),
        };
        let client = c.client()?;
        let limited_p: [Param<'_>; 1] = [&wanted];
        let running_p: [Param<'_>; 2] = [&wanted, &now];
        let result: Result<(Vec<Row>, bool), tokio_postgres::Error> = async {
            // One round trip: the lock, then the count under it.
            let (begin, locked, running) = futures::join!(
                client.batch_execute("BEGIN"),
                client.query(&st_lock, &limited_p),
                client.query(&st_running, &running_p),
            );
            begin?;
            let (locked, running) = (locked?, running?);
            let running: HashMap<String, i64> = running
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect();
            let mut names = Vec::with_capacity(locked.len());
            let mut caps = Vec::with_capacity(locked.len());
            let mut admissions = Vec::with_capacity(locked.len());
            for q in &locked {
                let name: String = q.get(0);
                let config = QueueConfig {
                    rate: q.get(1),
                    burst: q
                        .get::<_, Option<i64>>(2)
                        .map(|b| b.clamp(0, i64::from(u32::MAX)) as u32),
                    max_concurrent: q
                        .get::<_, Option<i64>>(3)
                        .map(|m| m.clamp(0, i64::from(u32::MAX)) as u32),
                };
                let bucket = match (q.get::<_, Option<f64>>(4), q.get::<_, Option<i64>>(5)) {
                    (Some(tokens), Some(at)) => Some(Bucket {
                        tokens,
                        refilled_at: Timestamp(at),
                    }),
                    _ => None,
                };
                let n = running.get(&name).copied().unwrap_or(0).max(0) as u64;
                let adm = admission::admit(&config, n, bucket, req.now);
                caps.push(adm.allowance.min(i64::MAX as u64) as i64);
                names.push(name);
                admissions.push(adm);
            }
            // The other wanted queues, up to the limit (-1), unless paused or limited by
            // the time the claim runs.
            let mut seen: HashSet<&str> = names.iter().map(String::as_str).collect();
            let mut all_names: Vec<&str> = names.iter().map(String::as_str).collect();
            if filter != QueueFilter::All {
                for q in &req.queues {
                    if seen.insert(q.as_str()) {
                        all_names.push(q.as_str());
                        caps.push(-1);
                    }
                }
            }
            let params: [Param<'_>; 6] =
                [&now, &lease_until, &req.worker, &limit, &all_names, &caps];
            let any_limited = !locked.is_empty();
            if admissions.iter().all(|a| a.bucket.is_none()) {
                // No bucket to store: the claim and the commit in one round trip (a failed
                // claim aborts the transaction, and the COMMIT then rolls it back).
                let (rows, committed) = futures::join!(
                    client.query(&st_claim, &params),
                    client.batch_execute("COMMIT"),
                );
                let rows = rows?;
                committed?;
                return Ok((rows, any_limited));
            }
            let rows = client.query(&st_claim, &params).await?;
            // The buckets of rate-limited queues taken from, then the commit: one trip.
            let mut taken: HashMap<&str, u64> = HashMap::new();
            for r in &rows {
                if let Ok(queue) = r.try_get::<_, &str>("queue") {
                    *taken.entry(queue).or_default() += 1;
                }
            }
            let (mut b_names, mut b_tokens, mut b_at) = (Vec::new(), Vec::new(), Vec::new());
            for (name, adm) in names.iter().zip(&admissions) {
                let n = taken.get(name.as_str()).copied().unwrap_or(0);
                if let (true, Some(b)) = (n > 0, adm.after(n)) {
                    b_names.push(name.as_str());
                    b_tokens.push(b.tokens);
                    b_at.push(b.refilled_at.0);
                }
            }
            let bucket_p: [Param<'_>; 3] = [&b_names, &b_tokens, &b_at];
            let (updated, committed) = futures::join!(
                async {
                    match b_names.is_empty() {
                        true => Ok(0),
                        false => client.execute(&st_bucket, &bucket_p).await,
                    }
                },
                client.batch_execute("COMMIT"),
            );
            // A failed update aborts the transaction: the COMMIT then rolls it back.
            updated?;
            committed?;
            Ok((rows, any_limited))
        }
        .await;
        if result.is_err() {
            // Leave no transaction open on a connection that goes back to the pool.
            let client = c.client()?;
            if client.batch_execute("ROLLBACK").await.is_err() {
                c.discard();
            }
        }
        let (rows, any_limited) = c.check(result)?;
        let claimed = rows
            .iter()
            .map(claimed_from_row)
            .collect::<Result<_, _>>()?;
        Ok((claimed, any_limited))
    }

    async fn notify_sql_exec(
        &self,
        c: &mut PooledConn<'_>,
        queues: &[String],
    ) -> Result<(), StoreError> {
        let st = c.prep(Self::NOTIFY_SQL).await?;
        let client = c.client()?;
        let r = client.query(&st, &[&queues]).await;
        c.check(r)?;
        Ok(())
    }
}

/// The columns of a batch of finished attempts, one array each, for the `unnest` of the
/// finish statement: each attempt's [`Transition`](crate::policy::Transition) as data.
#[derive(Default)]
struct FinishColumns {
    ids: Vec<i64>,
    tokens: Vec<i64>,
    states: Vec<String>,
    labels: Vec<String>,
    errors: Vec<Option<String>>,
    run_ats: Vec<Option<i64>>,
    counts: Vec<bool>,
    finished: Vec<bool>,
    run_ends: Vec<Option<String>>,
    continue_ats: Vec<Option<i64>>,
    started: Vec<i64>,
}

impl FinishColumns {
    fn push(&mut self, f: &Finish, now: Timestamp) {
        let tr = f.outcome.transition(now);
        self.ids.push(f.lease.id.0);
        self.tokens.push(f.lease.token);
        self.states.push(tr.state.as_str().to_string());
        self.labels.push(tr.label.to_string());
        self.errors.push(tr.error);
        self.run_ats.push(tr.run_at.map(|t| t.0));
        self.counts.push(tr.counts);
        self.finished.push(tr.finished);
        self.run_ends
            .push(tr.run_ends.map(|s| s.as_str().to_string()));
        self.continue_ats.push(tr.continue_at.map(|t| t.0));
        self.started.push(f.started_at.0);
    }

    /// `$1` is the time of the call, `$2` the worker, `$3..$13` the columns.
    fn params<'a>(&'a self, now: &'a i64, worker: &'a &'a str) -> [Param<'a>; 13] {
        [
            now,
            worker,
            &self.ids,
            &self.tokens,
            &self.states,
            &self.labels,
            &self.errors,
            &self.run_ats,
            &self.counts,
            &self.finished,
            &self.run_ends,
            &self.continue_ats,
            &self.started,
        ]
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn enqueue(
        &self,
        tasks: Vec<NewTask>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let n = tasks.len();
        let args = EnqueueArgs::new(tasks)?;
        let now_ms = now.0;
        let mut c = self.pool.get().await?;
        let st = c.prep(&self.enqueue_sql(args.has_names())).await?;
        let st_notify = c.prep(Self::NOTIFY_SQL).await?;
        let params = args.params(&now_ms);
        let notify_params: [Param<'_>; 1] = [&args.queues];
        match Self::pipelined_tx(&mut c, (&st, &params), Some((&st_notify, &notify_params))).await?
        {
            Ok(rows) => enqueue_result(&rows, n),
            Err(e) if is_unique_violation(&e) => Err(StoreError::AlreadyExists(
                violated_name(&e).unwrap_or_else(|| args.first_name()),
            )),
            Err(e) => Err(pg_err(&e)),
        }
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedTask>, StoreError> {
        if req.limit == 0 {
            return Ok(Vec::new());
        }
        let filter = QueueFilter::of(&req.queues);
        let mut c = self.pool.get().await?;
        if self.covers_limited(&req.queues) {
            // The last claim of these queues met limits: straight to the capped path (it is
            // right whatever the settings are now), and plain again once it finds none.
            let (claimed, any_limited) = self.claim_capped(&mut c, req).await?;
            if !any_limited {
                self.note_limited(&req.queues, false);
            }
            return Ok(claimed);
        }
        let st_claim = c.prep(&self.claim_sql(filter, ClaimShape::Plain)).await?;
        let st_limited = c.prep(&self.limited_sql(filter)).await?;
        let now = req.now.0;
        let lease_until = req.now.add(req.lease).0;
        let limit = req.limit.min(i64::MAX as usize) as i64;
        let one = req.queues.first().cloned().unwrap_or_default();
        let queue_param: Param<'_> = match filter {
            QueueFilter::One => &one,
            _ => &req.queues,
        };
        let mut claim_params: Vec<Param<'_>> = vec![&now, &lease_until, &req.worker, &limit];
        let mut limited_params: Vec<Param<'_>> = Vec::new();
        if filter != QueueFilter::All {
            claim_params.push(queue_param);
            limited_params.push(queue_param);
        }
        // One round trip: the plain claim (one statement, which claims nothing when a
        // wanted queue has limits) and which of the wanted queues have limits.
        let client = c.client()?;
        let (claimed, limited) = futures::join!(
            client.query(&st_claim, &claim_params),
            client.query(&st_limited, &limited_params),
        );
        let claimed = c.check(claimed)?;
        let limited = match c.check(limited) {
            Ok(rows) => rows,
            // Tasks are claimed (committed): an error must not lose them.
            Err(e) if !claimed.is_empty() => {
                tracing::warn!(error = %e, "listing rate- or concurrency-limited queues failed after a claim");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        // A queue whose limits were set between the two statements: what the plain claim
        // took is handed over, and the next claim orders every queue together.
        if limited.is_empty() || !claimed.is_empty() {
            return claimed.iter().map(claimed_from_row).collect();
        }
        self.note_limited(&req.queues, true);
        Ok(self.claim_capped(&mut c, req).await?.0)
    }

    async fn heartbeat(
        &self,
        leases: &[Lease],
        _worker: &str,
        until: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = leases.iter().map(|l| l.id.0).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
        let sql = self.sql(
            "UPDATE {S}.taskq_tasks t SET lease_until = $1::int8 \
             FROM unnest($2::int8[], $3::int8[]) AS l(id, token) \
             WHERE t.id = l.id AND t.lease_token = l.token AND t.state = 'running' \
             RETURNING t.id, t.lease_token",
        );
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query(&st, &[&until.0, &ids, &tokens]).await;
        // Told apart by lease, not by task: a stale lease of a task listed beside its
        // current one is lost though the task's row was extended.
        let kept: HashSet<(i64, i64)> = c.check(r)?.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(leases
            .iter()
            .filter(|l| !kept.contains(&(l.id.0, l.token)))
            .map(|l| l.id)
            .collect())
    }

    async fn finish(
        &self,
        finished: Vec<Finish>,
        worker: &str,
        now: Timestamp,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if finished.is_empty() {
            return Ok(Vec::new());
        }
        // A lease listed twice applies once (its first entry). A task listed under two
        // leases (a stale one and the current one) keeps both: only the current token
        // matches its row, wherever that entry stands.
        let mut seen = HashSet::new();
        let mut first = Vec::with_capacity(finished.len());
        let mut cols = FinishColumns::default();
        for f in &finished {
            let fresh = seen.insert((f.lease.id.0, f.lease.token));
            first.push(fresh);
            if fresh {
                cols.push(f, now);
            }
        }
        let sql = self.sql(
            r#"
WITH f AS (
    SELECT * FROM unnest($3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[], $8::int8[],
                         $9::bool[], $10::bool[], $11::text[], $12::int8[], $13::int8[])
        WITH ORDINALITY
        AS f(id, token, state, label, error, run_at, counts, finished, run_ends, continue_at,
             started_at, ord)
),
upd AS (
    UPDATE {S}.taskq_tasks t SET
        state = f.state,
        worker = NULL,
        lease_until = NULL,
        last_error = COALESCE(f.error, t.last_error),
        run_at = COALESCE(f.run_at, t.run_at),
        attempts = CASE WHEN f.counts THEN t.attempts ELSE GREATEST(t.attempts - 1, 0) END,
        finished_at = CASE WHEN f.finished THEN $1::int8 ELSE t.finished_at END
    FROM f
    WHERE t.id = f.id AND t.lease_token = f.token AND t.state = 'running'
    RETURNING t.id, f.token, t.queue, t.run_id, f.label, f.error, f.started_at, f.run_ends,
              f.continue_at, f.state, f.ord,
              CASE WHEN f.counts THEN t.attempts ELSE t.attempts + 1 END AS attempt
),
att AS (
    INSERT INTO {S}.taskq_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
    SELECT u.id, u.attempt, $2::text, u.started_at, $1::int8, u.label, u.error FROM upd u
),
runs AS (
    UPDATE {S}.taskq_iterations i SET
        state = CASE WHEN i.state = 'running' AND u.run_ends IS NOT NULL
                     THEN u.run_ends ELSE i.state END,
        error = CASE WHEN i.state = 'running' AND u.run_ends IS NOT NULL
                     THEN u.error ELSE i.error END,
        finished_at = CASE WHEN i.state = 'running' AND u.run_ends IS NOT NULL
                           THEN $1::int8 ELSE i.finished_at END,
        updated_at = CASE WHEN (i.state = 'running' AND u.run_ends IS NOT NULL)
                               OR u.continue_at IS NOT NULL THEN $1::int8 ELSE i.updated_at END,
        steps = i.steps + CASE WHEN u.continue_at IS NOT NULL THEN 1 ELSE 0 END
    FROM upd u
    WHERE i.run_id = u.run_id AND (u.run_ends IS NOT NULL OR u.continue_at IS NOT NULL)
),
cont AS (
    INSERT INTO {S}.taskq_tasks (task, queue, state, payload, priority, attempts, unique_name,
                                 tombstone_ms, created_at, enqueued_at, run_at, run_id)
    SELECT t.task, t.queue, 'pending', t.payload, t.priority, 0, NULL, t.tombstone_ms,
           $1::int8, $1::int8, u.continue_at, t.run_id
    FROM upd u JOIN {S}.taskq_tasks t ON t.id = u.id
    WHERE u.continue_at IS NOT NULL
    ORDER BY u.ord -- continuation ids follow the batch's order, as on every store
)
SELECT u.id, u.token FROM upd u
LEFT JOIN LATERAL (
    SELECT pg_notify('taskq_new', u.queue) AS n
    WHERE u.state = 'pending' OR u.continue_at IS NOT NULL
) n ON true
"#,
        );
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query(&st, &cols.params(&now.0, &worker)).await;
        let applied: HashSet<(i64, i64)> =
            c.check(r)?.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(finished
            .iter()
            .zip(first)
            .map(|(f, fresh)| {
                if fresh && applied.contains(&(f.lease.id.0, f.lease.token)) {
                    Ok(())
                } else {
                    Err(StoreError::LeaseLost(f.lease.id))
                }
            })
            .collect())
    }

    async fn checkpoint(
        &self,
        lease: Lease,
        cp: Checkpoint,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        check_checkpoint(lease, &cp)?;
        // Attempts count tries at the current cursor: progress starts a new count.
        let sql = self.sql(
            "WITH t AS ( \
                 SELECT run_id FROM {S}.taskq_tasks \
                 WHERE id = $1::int8 AND lease_token = $2::int8 AND state = 'running' \
                 FOR UPDATE), \
             it AS ( \
                 UPDATE {S}.taskq_iterations i SET cursor = $3::text::json, \
                     processed = LEAST(i.processed::numeric + $4::int8, \
                         9223372036854775807)::int8, batches = i.batches + 1, \
                     total = COALESCE($5::int8, i.total), updated_at = $6::int8 \
                 FROM t WHERE i.run_id = t.run_id AND i.state = 'running' \
                 RETURNING i.run_id), \
             a AS ( \
                 UPDATE {S}.taskq_tasks SET attempts = 1 \
                 WHERE id = $1::int8 AND EXISTS (SELECT 1 FROM it) RETURNING 1) \
             SELECT it.run_id FROM it",
        );
        let cursor = to_json_text(&cp.cursor)?;
        // Counts saturate at `MAX_COUNT` (`i64::MAX`) on every store.
        let processed = cp.processed.min(MAX_COUNT) as i64;
        let total = cp.total.map(|t| t.min(MAX_COUNT) as i64);
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client
            .query(
                &st,
                &[
                    &lease.id.0,
                    &lease.token,
                    &cursor,
                    &processed,
                    &total,
                    &now.0,
                ],
            )
            .await;
        if !c.check(r)?.is_empty() {
            return Ok(());
        }
        // Nothing written: say why.
        let why = self.sql(
            "SELECT (t.lease_token = $2::int8 AND t.state = 'running') AS held, t.run_id, \
                    i.state AS run_state \
             FROM {S}.taskq_tasks t LEFT JOIN {S}.taskq_iterations i ON i.run_id = t.run_id \
             WHERE t.id = $1::int8",
        );
        let st = c.prep(&why).await?;
        let client = c.client()?;
        let r = client.query_opt(&st, &[&lease.id.0, &lease.token]).await;
        let Some(row) = c.check(r)? else {
            return Err(StoreError::LeaseLost(lease.id));
        };
        let held: bool = row.get(0);
        let run: Option<i64> = row.get(1);
        let run_state: Option<String> = row.get(2);
        if !held {
            return Err(StoreError::LeaseLost(lease.id));
        }
        let Some(run) = run else {
            return Err(StoreError::Conflict(format!(
                "task {} is not a step of an iterative run",
                lease.id
            )));
        };
        if run_state.is_none() {
            return Err(StoreError::NotFound(format!("iteration run {run}")));
        }
        Err(StoreError::LeaseLost(lease.id))
    }

    async fn next_due(&self, queues: &[String]) -> Result<Option<Timestamp>, StoreError> {
        let filter = QueueFilter::of(queues);
        let sql = self.sql(&format!(
            "SELECT min(CASE WHEN t.state = 'pending' THEN t.run_at ELSE t.lease_until END) \
             FROM {{S}}.taskq_tasks t \
             WHERE t.state IN ('pending', 'running') {}",
            filter.sql_excluding(1, "q.paused")
        ));
        let one = queues.first().cloned().unwrap_or_default();
        let mut params: Vec<Param<'_>> = Vec::new();
        match filter {
            QueueFilter::All => {}
            QueueFilter::One => params.push(&one),
            QueueFilter::Many => params.push(&queues),
        }
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query_one(&st, &params).await;
        let v: Option<i64> = c.check(r)?.get(0);
        Ok(v.map(Timestamp))
    }

    async fn wait_for_work(&self, queues: &[String], timeout: Duration) {
        let mut rx = self.wake.subscribe();
        let wanted = async {
            loop {
                match rx.recv().await {
                    Ok(q)
                        if q.is_empty()
                            || queues.is_empty()
                            || queues.iter().any(|x| **x == *q) =>
                    {
                        return
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        futures::future::pending::<()>().await
                    }
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wanted).await;
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let cfg_sql =
            self.sql("SELECT name, paused, rate, burst, max_concurrent FROM {S}.taskq_queues");
        let count_sql =
            self.sql("SELECT queue, state, count(*) FROM {S}.taskq_tasks GROUP BY queue, state");
        let mut c = self.pool.get().await?;
        let st_cfg = c.prep(&cfg_sql).await?;
        let st_count = c.prep(&count_sql).await?;
        let client = c.client()?;
        let (cfg, counts) =
            futures::join!(client.query(&st_cfg, &[]), client.query(&st_count, &[]));
        let cfg = c.check(cfg)?;
        let counts = c.check(counts)?;
        let mut map: BTreeMap<String, QueueInfo> = BTreeMap::new();
        for r in &cfg {
            let name: String = r.get(0);
            let burst: Option<i64> = r.get(3);
            let max: Option<i64> = r.get(4);
            map.insert(
                name.clone(),
                QueueInfo {
                    name,
                    counts: Vec::new(),
                    paused: r.get(1),
                    config: QueueConfig {
                        rate: r.get(2),
                        burst: burst.map(|b| b.clamp(0, u32::MAX as i64) as u32),
                        max_concurrent: max.map(|m| m.clamp(0, u32::MAX as i64) as u32),
                    },
                },
            );
        }
        for r in &counts {
            let queue: String = r.get(0);
            let state: String = r.get(1);
            let n: i64 = r.get(2);
            let state: TaskState = state.parse().map_err(StoreError::Backend)?;
            let q = map.entry(queue.clone()).or_insert_with(|| QueueInfo {
                name: queue,
                ..QueueInfo::default()
            });
            q.counts.push((state, n.max(0) as u64));
        }
        Ok(map
            .into_values()
            .map(|mut q| {
                q.counts.sort();
                q
            })
            .collect())
    }

    async fn configure_queue(&self, queue: &str, config: QueueConfig) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO {S}.taskq_queues (name, rate, burst, max_concurrent) \
             VALUES ($1::text, $2::float8, $3::int8, $4::int8) \
             ON CONFLICT (name) DO UPDATE SET rate = EXCLUDED.rate, burst = EXCLUDED.burst, \
                 max_concurrent = EXCLUDED.max_concurrent, tokens = NULL, refilled_at = NULL",
        );
        let burst = config.burst.map(i64::from);
        let max = config.max_concurrent.map(i64::from);
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client
            .execute(&st, &[&queue, &config.rate, &burst, &max])
            .await;
        c.check(r)?;
        Ok(())
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        let sql = self.sql(
            "WITH u AS ( \
                 INSERT INTO {S}.taskq_queues (name, paused) VALUES ($1::text, $2::bool) \
                 ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused RETURNING name) \
             SELECT 1 FROM (SELECT pg_notify('taskq_new', u.name) FROM u WHERE NOT $2::bool) n",
        );
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query(&st, &[&queue, &paused]).await;
        c.check(r)?;
        Ok(())
    }

    async fn purge(&self, queue: &str, now: Timestamp) -> Result<u64, StoreError> {
        let sql = self.sql(
            "WITH d AS (DELETE FROM {S}.taskq_tasks WHERE queue = $1::text AND state = 'pending' \
                        RETURNING {DELETED}), \
                  a AS (DELETE FROM {S}.taskq_attempts WHERE task_id IN (SELECT id FROM d)), \
                  n AS ({BURY}), \
                  r AS (UPDATE {S}.taskq_iterations i SET state = 'cancelled', \
                            finished_at = $2::int8, updated_at = $2::int8, \
                            error = 'its pending step ' || d.id || ' was purged from queue `' \
                                    || $1::text || '`' \
                        FROM d WHERE i.run_id = d.run_id AND i.state = 'running') \
             SELECT count(*) FROM d",
        );
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query_one(&st, &[&queue, &now.0]).await;
        let n: i64 = c.check(r)?.get(0);
        Ok(n.max(0) as u64)
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<TaskInfo>, StoreError> {
        let sql = self.sql(&format!(
            "SELECT {TASK_COLUMNS} FROM {{S}}.taskq_tasks \
             WHERE ($1::int8 IS NULL OR id < $1::int8) \
               AND ($2::text IS NULL OR queue = $2::text) \
               AND ($3::text IS NULL OR state = $3::text) \
               AND ($4::text IS NULL OR task = $4::text) \
             ORDER BY id DESC LIMIT $5::int8"
        ));
        let limit = if q.limit == 0 { 100 } else { q.limit };
        let limit = limit.min(i64::MAX as usize) as i64;
        let before = q.before.map(|b| b.0);
        let state = q.state.map(|s| s.as_str());
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client
            .query(&st, &[&before, &q.queue, &state, &q.task, &limit])
            .await;
        c.check(r)?.iter().map(task_from_row).collect()
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskDetail>, StoreError> {
        let task_sql = self.sql(&format!(
            "SELECT {TASK_COLUMNS} FROM {{S}}.taskq_tasks WHERE id = $1::int8"
        ));
        let att_sql = self.sql(
            "SELECT attempt, worker, started_at, finished_at, outcome, error \
             FROM {S}.taskq_attempts WHERE task_id = $1::int8 ORDER BY id",
        );
        let mut c = self.pool.get().await?;
        let st_task = c.prep(&task_sql).await?;
        let st_att = c.prep(&att_sql).await?;
        let client = c.client()?;
        let idp: [Param<'_>; 1] = [&id.0];
        let (task, atts) = futures::join!(
            client.query_opt(&st_task, &idp),
            client.query(&st_att, &idp)
        );
        let Some(task) = c.check(task)? else {
            return Ok(None);
        };
        let atts = c.check(atts)?;
        Ok(Some(TaskDetail {
            info: task_from_row(&task)?,
            attempts: atts
                .iter()
                .map(|r| AttemptInfo {
                    attempt: r.get::<_, i32>(0).max(0) as u32,
                    worker: r.get(1),
                    started_at: Timestamp(r.get(2)),
                    finished_at: Timestamp(r.get(3)),
                    outcome: r.get(4),
                    error: r.get(5),
                })
                .collect(),
        }))
    }

    async fn run_now(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        let sql = self.sql(
            "WITH t AS (UPDATE {S}.taskq_tasks SET run_at = $2::int8 \
                        WHERE id = $1::int8 AND state = 'pending' RETURNING queue) \
             SELECT 1 FROM (SELECT pg_notify('taskq_new', t.queue) FROM t) n",
        );
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query(&st, &[&id.0, &now.0]).await;
        if !c.check(r)?.is_empty() {
            return Ok(());
        }
        match self.state_of(&mut c, id).await? {
            None => Err(StoreError::NotFound(format!("task {id}"))),
            Some(state) => Err(StoreError::Conflict(format!(
                "task {id} is {state}, only a pending task can be run now"
            ))),
        }
    }

    async fn delete(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        let sql = self.sql(
            "WITH d AS (DELETE FROM {S}.taskq_tasks WHERE id = $1::int8 RETURNING {DELETED}), \
                  a AS (DELETE FROM {S}.taskq_attempts WHERE task_id IN (SELECT id FROM d)), \
                  n AS ({BURY}), \
                  r AS (UPDATE {S}.taskq_iterations i SET state = 'cancelled', \
                            finished_at = $2::int8, updated_at = $2::int8, \
                            error = 'its step ' || d.id || ' was deleted' \
                        FROM d WHERE i.run_id = d.run_id AND i.state = 'running' \
                          AND d.state IN ('pending', 'running')) \
             SELECT count(*) FROM d",
        );
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query_one(&st, &[&id.0, &now.0]).await;
        let n: i64 = c.check(r)?.get(0);
        if n == 0 {
            return Err(StoreError::NotFound(format!("task {id}")));
        }
        Ok(())
    }

    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        let sql = self.sql(
            "WITH t AS (UPDATE {S}.taskq_tasks SET state = 'pending', attempts = 0, \
                            enqueued_at = $2::int8, run_at = $2::int8, finished_at = NULL \
                        WHERE id = $1::int8 AND state IN ('dead', 'failed') \
                        RETURNING run_id, queue), \
                  r AS (UPDATE {S}.taskq_iterations i SET state = 'running', finished_at = NULL, \
                            error = NULL, updated_at = $2::int8 \
                        FROM t WHERE i.run_id = t.run_id) \
             SELECT 1 FROM (SELECT pg_notify('taskq_new', t.queue) FROM t) n",
        );
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        match client.query(&st, &[&id.0, &now.0]).await {
            Ok(rows) if !rows.is_empty() => return Ok(()),
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "task {id} cannot be retried: another live task has its unique name"
                )))
            }
            Err(e) => {
                c.check::<()>(Err(e))?;
            }
        }
        match self.state_of(&mut c, id).await? {
            None => Err(StoreError::NotFound(format!("task {id}"))),
            Some(state) => Err(StoreError::Conflict(format!(
                "task {id} is {state}, only a dead or failed task can be retried"
            ))),
        }
    }

    async fn iteration(&self, run: TaskId) -> Result<Option<IterationInfo>, StoreError> {
        let sql = self.sql(&format!(
            "SELECT {ITERATION_COLUMNS} FROM {{S}}.taskq_iterations WHERE run_id = $1::int8"
        ));
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query_opt(&st, &[&run.0]).await;
        c.check(r)?.as_ref().map(iteration_from_row).transpose()
    }

    async fn iterations(&self, limit: usize) -> Result<Vec<IterationInfo>, StoreError> {
        let sql = self.sql(&format!(
            "SELECT {ITERATION_COLUMNS} FROM {{S}}.taskq_iterations ORDER BY run_id DESC LIMIT $1::int8"
        ));
        let limit = limit.min(i64::MAX as usize) as i64;
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query(&st, &[&limit]).await;
        c.check(r)?.iter().map(iteration_from_row).collect()
    }

    async fn cancel_iteration(&self, run: TaskId, now: Timestamp) -> Result<(), StoreError> {
        let sql = self.sql(
            "WITH it AS (UPDATE {S}.taskq_iterations SET state = 'cancelled', \
                             finished_at = $2::int8, updated_at = $2::int8 \
                         WHERE run_id = $1::int8 AND state = 'running' RETURNING run_id), \
                  t AS (UPDATE {S}.taskq_tasks SET state = 'cancelled', finished_at = $2::int8, \
                             worker = NULL, lease_until = NULL \
                        WHERE run_id IN (SELECT run_id FROM it) \
                          AND state IN ('pending', 'running')) \
             SELECT count(*) FROM it",
        );
        let mut c = self.pool.get().await?;
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query_one(&st, &[&run.0, &now.0]).await;
        let n: i64 = c.check(r)?.get(0);
        if n > 0 {
            return Ok(());
        }
        let state_sql = self.sql("SELECT state FROM {S}.taskq_iterations WHERE run_id = $1::int8");
        let st = c.prep(&state_sql).await?;
        let client = c.client()?;
        let r = client.query_opt(&st, &[&run.0]).await;
        match c.check(r)? {
            None => Err(StoreError::NotFound(format!("iteration run {run}"))),
            Some(row) => {
                let state: String = row.get(0);
                Err(StoreError::Conflict(format!(
                    "run {run} is {state}, only a running run can be cancelled"
                )))
            }
        }
    }
}

impl PostgresStore {
    async fn state_of(
        &self,
        c: &mut PooledConn<'_>,
        id: TaskId,
    ) -> Result<Option<String>, StoreError> {
        let sql = self.sql("SELECT state FROM {S}.taskq_tasks WHERE id = $1::int8");
        let st = c.prep(&sql).await?;
        let client = c.client()?;
        let r = client.query_opt(&st, &[&id.0]).await;
        Ok(c.check(r)?.map(|row| row.get(0)))
    }

    /// Sends a wake-up for `queues` to every listening store (workers of those queues poll
    /// at once). Starting tasks does this by itself; this is for work made due by other
    /// means.
    pub async fn notify(&self, queues: &[String]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        self.notify_sql_exec(&mut c, queues).await
    }
}
