//! The PostgreSQL store: many worker processes on many hosts share one database.
//!
//! Open it with [`PostgresStore::open`] (or [`crate::store::open`]) from a URL such as
//! `postgres://user:password@host:5432/db`. Options taskq reads from the URL's query string
//! (others are passed to the driver):
//! - `schema=NAME`: keep every table in this schema (created if missing); default `public`.
//!   [`PostgresStore::open_in_schema`] does the same.
//! - `pool_size=N`: at most N pooled connections (default 10), plus one listening
//!   connection. A call waits at most 10 s for a pooled connection, then fails.
//!
//! Connections detect a dead peer in seconds: unless the URL sets them, taskq sets
//! `connect_timeout=5s`, TCP keepalives after 10 s idle every 2 s (3 probes:
//! `keepalives_idle`, `keepalives_interval`, `keepalives_retries`) and
//! `tcp_user_timeout=10s` (unacknowledged writes give up).
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
//! - **Lock order: a run's row before its steps' rows.** Every call that changes both an
//!   iteration run (`taskq_iterations`) and task rows (cancel, finish, checkpoint, delete,
//!   purge, retry) first locks the runs' rows (`FOR UPDATE`, in `run_id` order, in a
//!   statement of its own), then runs its statement in the same transaction
//!   (`PostgresStore::after_locks`): two such calls never wait on each other in a cycle,
//!   and the second statement's snapshot sees every step a call holding the run's row
//!   stored before it let go (so a cancel also cancels a continuation stored by a step
//!   handing over at that moment, and a step's checkpoint or hand-over sees a cancel that
//!   came first). Claim and heartbeat lock task rows only; a claim of limited queues locks
//!   their `taskq_queues` rows before task rows.
//! - **Connection loss**: operations fail with [`StoreError::Backend`] while PostgreSQL is
//!   unreachable; broken connections are dropped and new ones are made with back-off
//!   (50 ms doubling to 5 s), and the listening connection reconnects by itself (and wakes
//!   every waiter, since notifications may have been missed meanwhile).
//! - **Time**: the database's clock decides. Every time is an `int8` of milliseconds since
//!   the Unix epoch, given by the caller (`now`) as on every store, and the store gives
//!   callers its clock ([`Store::clock`]): the database server's `clock_timestamp()`, read
//!   at open, on every (re)connection of the listening connection and every minute (three
//!   readings, the one with the shortest round trip kept, taken at its midpoint), and
//!   carried forward in between by this process's monotonic clock
//!   ([`RemoteClock`](crate::time::RemoteClock)). A worker or [`Queue`](crate::Queue) on
//!   real time reads it, so due times, lease ends, backoff, token-bucket refills and
//!   tombstone windows are in the database's time and the token-bucket arithmetic stays in
//!   one place in Rust ([`admission`]); hosts' wall clocks may be off by any amount (the
//!   budget is in [`Clock`]). A host whose wall clock is more than a second off is logged.
//!   Virtual time ([`Clock::manual`]) is passed through unchanged.
//! - **Retention** (`retention.rs`): a prune deletes what [`crate::retention`] no longer
//!   keeps, one statement per batch; one process prunes a store at a time (a
//!   transaction-level advisory lock, `pg_try_advisory_xact_lock`), the others skip.
//!
//! # Table layout (schema version 6)
//! Migrations are versioned in `taskq_schema(version, applied_at)` and applied under an
//! advisory lock when a store is opened. A database whose schema is newer than this build
//! knows is refused with [`StoreError::SchemaTooNew`].
//!
//! | table | columns | notes |
//! |---|---|---|
//! | `taskq_tasks` | `id bigserial`, `task`, `queue`, `state` (`pending` `running` `done` `failed` `dead` `cancelled`), `payload json`, `priority`, `attempts`, `unique_name`, `tombstone_ms`, `created_at`, `enqueued_at`, `run_at`, `finished_at`, `last_error`, `run_id`, `worker`, `lease_until`, `lease_token`, `started_at`, `trace` (version 6: the W3C traceparent the task was started in, or NULL) | claim indexes `(priority DESC, run_at, id)` and `(queue, priority DESC, run_at, id)` of pending tasks (a claim seeks each priority's due rows, `run_at <= now`, so rows due later are never read) and `(lease_until)` of running ones (lapsed leases); a unique partial index on `unique_name` of live tasks; `run_id` index; `(state, finished_at)` of finished tasks, for pruning (version 4); `(state, id)`, `(state, queue, id)`, `(state, task, id)` of finished rows (version 5, partial, so a claim writes none of them) for listings by key |
//! | `taskq_attempts` | `id`, `task_id`, `attempt`, `worker`, `started_at`, `finished_at`, `outcome`, `error` | one row per finished or lapsed attempt; deleted with its task |
//! | `taskq_queues` | `name`, `paused`, `rate`, `burst`, `max_concurrent`, `tokens`, `refilled_at`, `keep_done_ms`, `keep_failed_ms` | settings and the token bucket's state; the retention (version 4; both NULL: the defaults, `-1`: for ever, see [`crate::retention::to_columns`]) |
//! | `taskq_iterations` | `run_id` (the first step's id), `task`, `queue`, `filter json`, `cursor json`, `processed`, `batches`, `steps`, `total`, `state`, `started_at`, `updated_at`, `finished_at`, `error` | one row per iterative run; `(state, finished_at)` of ended runs, for pruning (version 4) |
//! | `taskq_queue_counts` | `queue`, `state`, `slot`, `n` | version 5: finished tasks per queue and state, written by the statements that move rows into or out of a finished state (finish, cancel, retry) and by a statement-level trigger on deletes (delete, purge, prune), one write per queue and state per statement (`counts.rs`), in 16 slots by backend pid so that concurrent finishes of one queue rarely wait on one row; [`Store::queues`] sums them and counts pending and running tasks through their partial indexes |
//! | `taskq_tombstones` | `name`, `taken_until`, `run_id`, `tombstone_ms` | version 3: the holds deleted named tasks leave on their names (see [`tombstone`]); written by delete, purge and prune in their statement, read by enqueue's name check; indexes `(taken_until)` and `(run_id)` for pruning (version 4) |
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
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let url = "postgres://app@127.0.0.1/app";
//! let store = PostgresStore::open(url).await?;
//! let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
//! tokio::spawn(connection);
//!
//! let tx = client.transaction().await?;
//! tx.execute("UPDATE accounts SET welcomed = true WHERE id = $1", &[&42i64]).await?;
//! let now = store.now(); // the database's time, not this host's
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
//!             trace: None,
//!         }],
//!         now,
//!     )
//!     .await?;
//! tx.commit().await?; // the task exists (and workers are woken) only from here on
//! # let _ = ids;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! One subject per file: `schema.rs` (migrations), `pool.rs` (connections), `enqueue.rs`
//! (the name check and the insert), `claim.rs` (claim statements, admission, `next_due`),
//! `lease.rs` (heartbeat, finish, checkpoint), `manage.rs` (management calls, tombstones),
//! `retention.rs` (prune's statements), `rows.rs` (row decoding), `clock.rs` (reading the
//! database clock). This file holds the store, opening, `LISTEN/NOTIFY` (whose connection
//! also refreshes the clock) and the `Store` impl that delegates to them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Config, Row};

use super::*;

mod claim;
mod clock;
mod counts;
mod enqueue;
mod lease;
mod manage;
mod pool;
mod retention;
mod rows;
mod schedules;
mod schema;
#[cfg(test)]
mod tests;
mod unique;
mod url;

use clock::DbClock;
use manage::{BURY, DELETED};
use pool::{Pool, PooledConn};
pub(crate) use url::check_url;
use url::{check_schema_name, parse_url};

/// The notification channel every store listens on.
pub const CHANNEL: &str = "taskq_new";

/// The channel [`Store::cancel`] notifies when it marks a running task (the payload is its
/// id): every store listens on it too and wakes [`Store::wait_for_cancel`], so workers
/// renew their leases at once and learn of the cancel.
pub const CANCEL_CHANNEL: &str = "taskq_cancel";

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

/// The PostgreSQL store. Cheap to share behind an `Arc`; see the [module docs](self).
pub struct PostgresStore {
    pool: Pool,
    schema_name: String,
    /// The quoted schema, ready to prefix table names.
    s: String,
    wake: broadcast::Sender<Arc<str>>,
    /// Woken by every notification on [`CANCEL_CHANNEL`] (and after a reconnection).
    cancels: Arc<tokio::sync::Notify>,
    listener: tokio::task::JoinHandle<()>,
    /// The database clock, as this process estimates it: what decides every time.
    clock: Arc<DbClock>,
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

/// Keeps a `LISTEN taskq_new` connection open, reconnecting with back-off, and forwards
/// every notification's payload (a queue name) to `wake`. An empty payload wakes everyone
/// (sent after each (re)connection, since notifications may have been missed).
///
/// It also reads the database clock on each (re)connection (after a failover the server
/// may be another machine) and every [`clock::REFRESH`] while connected.
async fn listen_forever(
    config: Config,
    wake: broadcast::Sender<Arc<str>>,
    cancels: Arc<tokio::sync::Notify>,
    ready: watch::Sender<bool>,
    db_clock: Arc<DbClock>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let fwd = wake.clone();
                let fwd_cancels = cancels.clone();
                let mut driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) if n.channel() == CANCEL_CHANNEL => {
                                fwd_cancels.notify_waiters();
                            }
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
                match client
                    .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {CANCEL_CHANNEL}"))
                    .await
                {
                    Ok(()) => {
                        backoff = Duration::from_millis(50);
                        let _ = ready.send(true);
                        let _ = wake.send(Arc::from(""));
                        cancels.notify_waiters();
                        loop {
                            if let Err(e) = db_clock.read(&client).await {
                                tracing::warn!(error = %e, "taskq: cannot read the PostgreSQL clock; the last estimate stays in use");
                            }
                            tokio::select! {
                                _ = &mut driver => break,
                                _ = tokio::time::sleep(clock::REFRESH) => {}
                            }
                        }
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
        let db_clock = Arc::new(DbClock::default());
        {
            let mut c = pool.get().await?;
            schema::migrate(&mut c, &schema_name, &s).await?;
            // Every time this store is given must be in the database's clock from the
            // first call on.
            let read = db_clock.read(c.client()?).await;
            if read.is_err() {
                c.discard();
            }
            read?;
        }
        let (wake, _) = broadcast::channel(1024);
        let cancels = Arc::new(tokio::sync::Notify::new());
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let listener = tokio::spawn(listen_forever(
            config,
            wake.clone(),
            cancels.clone(),
            ready_tx,
            db_clock.clone(),
        ));
        // Wait (briefly) for LISTEN so that work started right after `open` wakes us.
        let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx.wait_for(|r| *r)).await;
        Ok(PostgresStore {
            pool,
            schema_name,
            s,
            wake,
            cancels,
            listener,
            clock: db_clock,
            limited_hint: std::sync::Mutex::new(HashSet::new()),
        })
    }

    /// The database's time, as this process estimates it ([`Store::clock`]): the `now` to
    /// give [`PostgresStore::enqueue_in`] and the base of an ETA. Never this host's wall
    /// clock, which may be off.
    pub fn now(&self) -> Timestamp {
        self.clock.remote.now().unwrap_or_else(Timestamp::now)
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

    const NOTIFY_SQL: &'static str =
        "SELECT 1 FROM (SELECT pg_notify('taskq_new', q) FROM unnest($1::text[]) AS q) n";

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

    /// Runs `BEGIN; <lock>; <main>; COMMIT` in one round trip (pipelined) and returns what
    /// `main` returned (`Err` inside for its SQL error, the transaction then rolled back):
    /// how a call takes its runs' row locks before any task row (the lock order in the
    /// module docs). `main` starts after `lock` has its locks, so its snapshot sees what
    /// the previous holders committed.
    async fn after_locks(
        c: &mut PooledConn<'_>,
        lock: (&tokio_postgres::Statement, &[Param<'_>]),
        main: (&tokio_postgres::Statement, &[Param<'_>]),
    ) -> Result<Result<Vec<Row>, tokio_postgres::Error>, StoreError> {
        let client = c.client()?;
        let (begin, locked, rows, commit) = futures::join!(
            client.batch_execute("BEGIN"),
            client.query(lock.0, lock.1),
            client.query(main.0, main.1),
            client.batch_execute("COMMIT"),
        );
        c.check(begin)?;
        c.check(locked)?;
        match rows {
            Ok(rows) => {
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

    /// Locks the rows of the runs of the tasks `$1` (an `int8[]`), in `run_id` order: the
    /// first statement of [`PostgresStore::after_locks`] for calls given task ids.
    fn lock_runs_of_tasks_sql(&self) -> String {
        self.sql(
            "SELECT i.run_id FROM {S}.taskq_iterations i \
             WHERE i.run_id IN (SELECT t.run_id FROM {S}.taskq_tasks t \
                                WHERE t.id = ANY($1::int8[])) \
             ORDER BY i.run_id FOR UPDATE OF i",
        )
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

    /// Sends a wake-up for `queues` to every listening store (workers of those queues poll
    /// at once). Starting tasks does this by itself; this is for work made due by other
    /// means.
    pub async fn notify(&self, queues: &[String]) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        self.notify_sql_exec(&mut c, queues).await
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn clock(&self) -> Option<Clock> {
        Some(Clock::remote(self.clock.remote.clone()))
    }

    async fn enqueue(
        &self,
        tasks: Vec<NewTask>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        enqueue::enqueue(self, tasks, now).await
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedTask>, StoreError> {
        claim::claim(self, req).await
    }

    async fn heartbeat(
        &self,
        leases: &[Lease],
        _worker: &str,
        until: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        Ok(lease::renew(self, leases, until).await?.lost)
    }

    async fn renew(
        &self,
        leases: &[Lease],
        _worker: &str,
        until: Timestamp,
    ) -> Result<Renewal, StoreError> {
        lease::renew(self, leases, until).await
    }

    async fn finish(
        &self,
        finished: Vec<Finish>,
        worker: &str,
        now: Timestamp,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        lease::finish(self, finished, worker, now).await
    }

    async fn checkpoint(
        &self,
        lease: Lease,
        cp: Checkpoint,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        lease::checkpoint(self, lease, cp, now).await
    }

    async fn confirm(&self, lease: Lease) -> Result<(), StoreError> {
        lease::confirm(self, lease).await
    }

    async fn next_due(&self, queues: &[String]) -> Result<Option<Timestamp>, StoreError> {
        claim::next_due(self, queues).await
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
        manage::queues(self).await
    }

    async fn configure_queue(&self, queue: &str, config: QueueConfig) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        manage::configure_queue(self, queue, config).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        manage::set_paused(self, queue, paused).await
    }

    async fn purge(&self, queue: &str, now: Timestamp) -> Result<u64, StoreError> {
        check_queue_name(queue)?;
        manage::purge(self, queue, now).await
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<TaskInfo>, StoreError> {
        manage::list_tasks(self, q).await
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskDetail>, StoreError> {
        manage::task(self, id).await
    }

    async fn run_now(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        manage::run_now(self, id, now).await
    }

    async fn delete(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        manage::delete(self, id, now).await
    }

    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        manage::retry(self, id, now).await
    }

    async fn iteration(&self, run: TaskId) -> Result<Option<IterationInfo>, StoreError> {
        manage::iteration(self, run).await
    }

    async fn iterations(&self, limit: usize) -> Result<Vec<IterationInfo>, StoreError> {
        manage::iterations(self, limit).await
    }

    async fn cancel_iteration(&self, run: TaskId, now: Timestamp) -> Result<(), StoreError> {
        manage::cancel_iteration(self, run, now).await
    }

    async fn cancel(&self, id: TaskId, now: Timestamp) -> Result<CancelOutcome, StoreError> {
        manage::cancel(self, id, now).await
    }

    async fn wait_for_cancel(&self) {
        self.cancels.notified().await
    }

    async fn prune(&self, now: Timestamp, batch: usize) -> Result<PruneReport, StoreError> {
        self.prune_all(now, batch).await
    }

    async fn retry_many(&self, ids: &[TaskId], now: Timestamp) -> Result<u64, StoreError> {
        manage::retry_many(self, ids, now).await
    }

    async fn finished_per_minute(
        &self,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<FinishedMinute>, StoreError> {
        manage::finished_per_minute(self, since, until).await
    }

    async fn unique_holder(
        &self,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<(TaskId, TaskState)>, StoreError> {
        unique::holder(self, name, now).await
    }

    async fn replace_pending(
        &self,
        name: &str,
        payload: &serde_json::Value,
        run_at: Timestamp,
    ) -> Result<Option<TaskId>, StoreError> {
        unique::replace_pending(self, name, payload, run_at).await
    }

    async fn upsert_schedules(
        &self,
        schedules: Vec<NewSchedule>,
        known_tasks: Option<Vec<String>>,
    ) -> Result<(), StoreError> {
        schedules::upsert(self, schedules, known_tasks).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        schedules::list(self).await
    }

    async fn fire_schedule(
        &self,
        fire: Fire,
        now: Timestamp,
    ) -> Result<Option<Vec<TaskId>>, StoreError> {
        schedules::fire(self, fire, now).await
    }

    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_tick: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        schedules::set_paused(self, name, paused, next_tick).await
    }

    async fn remove_schedule(&self, name: &str) -> Result<(), StoreError> {
        schedules::remove(self, name).await
    }
}
