//! The SQLite store: embedded and durable, the default for single-machine users.
//!
//! It does in SQL exactly what the reference [`MemoryStore`](super::memory::MemoryStore)
//! does under its mutex; the rules are those of the [`Store`] trait.
//!
//! # Concurrency
//!
//! `rusqlite` is blocking, so the store keeps one [`Connection`] behind a mutex and runs
//! every call on tokio's blocking pool ([`tokio::task::spawn_blocking`]): the async runtime
//! is never blocked. Each trait call is one transaction, batched: a claim of N tasks, a
//! finish of N outcomes and an enqueue of N tasks are each one commit, with cached
//! prepared statements.
//!
//! Several processes may open the same file (a worker that was killed and its
//! replacement, a management process next to a worker): the database is in WAL mode, every write
//! transaction starts with `BEGIN IMMEDIATE` (so two writers queue on the write lock
//! instead of failing on a lock upgrade), and `busy_timeout` makes a writer wait for the
//! other one instead of failing at once: at most 10 s per call, counted from the call
//! (time queued behind this store's other calls included), then the call fails with a
//! [`StoreError::Backend`] that says the database is locked by another connection or
//! process. A full disk (or a file size limit) fails the call the same way, naming it;
//! in both cases the call's transaction is rolled back, so nothing of it is stored. Everything that must be unique across processes
//! (task ids, lease tokens, token buckets, `max_concurrent`) is decided inside those
//! write transactions. [`Store::wait_for_work`] wakes early when this store instance
//! stored or revived work; work stored by another process is found by polling.
//!
//! # Durability
//!
//! The journal is WAL. A commit that acknowledges new work to a person or a program —
//! [`Store::enqueue`], and the management calls (retry, run now, delete, purge, pause,
//! settings, cancel) — runs with `synchronous = FULL`: the WAL is fsynced before the call
//! returns, so a task that `start()` acknowledged survives a kill -9 of the process *and*
//! a power loss. The worker's hot path (claim, heartbeat, finish, checkpoint) runs with
//! `synchronous = NORMAL`: in WAL mode that never loses a commit on a process crash (the
//! write is in the OS page cache), only possibly the last few on power loss or an OS
//! crash. Losing one of those only makes a task (or an iterative batch) run again once
//! its lease lapses, which at-least-once delivery already allows. This keeps claim and
//! finish free of an fsync per batch. A prune ([`Store::prune`]) also runs with `NORMAL`:
//! a prune lost to a power cut is simply done again.
//!
//! The WAL is bounded: SQLite checkpoints it every 1,000 pages by itself, and
//! `journal_size_limit` ([`WAL_SIZE_LIMIT`]) cuts the file back after a checkpoint, so a
//! big transaction does not leave it large. The database file stops growing once
//! retention keeps up: deleted rows' pages are reused (see `retention.rs` for why taskq
//! leaves `auto_vacuum` off).
//!
//! # Tables
//!
//! Schema version 6 (versions are rows of `taskq_schema(version INTEGER)`; a database
//! whose highest version is newer than this build knows is refused with
//! [`StoreError::SchemaTooNew`]). Every time is an integer of milliseconds since the Unix
//! epoch ([`Timestamp`]); every JSON value (payload, filter, cursor) is stored as the exact
//! text taskq wrote and decoded by taskq row by row (see the [store module docs](super#values)).
//!
//! - `taskq_tasks`: one row per task (or per step of an iterative run).
//!   `id INTEGER PRIMARY KEY AUTOINCREMENT` (ids are never reused), `task`, `queue`,
//!   `state` (`pending`, `running`, `done`, `failed`, `dead`, `cancelled`), `payload`
//!   (JSON), `priority`, `attempts`, `unique_name`, `tombstone_ms` (how long a finished
//!   task keeps its unique name), `created_at`, `enqueued_at`, `run_at`, `finished_at`,
//!   `last_error`, `run_id` (the iterative run it is a step of), `token` (the fencing
//!   token of the current lease), `worker`, `lease_until`, `started_at` (of the current
//!   attempt). Indexes: `(state, queue, priority DESC, run_at, id)` for claims (one seek
//!   per priority, `run_at <= now`, so rows due later are never read) and
//!   [`Store::next_due`], `(state, id)`, and `(state, queue, id)` and `(state, task, id)`
//!   of finished rows (version 4, partial, so a claim writes neither) for listings by
//!   key, `(unique_name)` and `(run_id)` (partial, where set), `(state, finished_at)` of
//!   finished tasks for pruning (version 3). Version 4 drops `(state, run_at)`, which
//!   nothing reads any more. Version 5 adds `(queue, lease_until)` of running tasks
//!   (partial): the lapsed leases a claim takes back, the live ones `max_concurrent`
//!   counts and the earliest lease end of [`Store::next_due`], each one seek; and
//!   writes the two finished-listing indexes' condition as `state NOT IN ('pending',
//!   'running')` (the same rows; a list of four values cost SQLite an ephemeral table at
//!   every write of a row).
//! - `taskq_attempts`: one row per ended attempt, `seq` (order), `task_id` (deleted with
//!   its task), `attempt`, `worker`, `started_at`, `finished_at`, `outcome`, `error`.
//! - `taskq_queues`: queues with settings: `name`, `paused`, `rate`, `burst`,
//!   `max_concurrent`, the token bucket `bucket_tokens`, `bucket_refilled_at` (NULL
//!   until the first claim after the settings were saved), and (version 3) the retention
//!   `keep_done_ms`, `keep_failed_ms` (both NULL: the defaults; `-1`: for ever; see
//!   [`crate::retention::to_columns`]).
//! - `taskq_iterations`: one row per iterative run: `run` (its first step's id), `task`,
//!   `queue`, `filter` (JSON), `cursor` (JSON), `processed`, `batches`, `steps`, `total`,
//!   `state`, `started_at`, `updated_at`, `finished_at`, `error`. Index (version 3):
//!   `(state, finished_at)` of ended runs, for pruning.
//! - `taskq_counters`: named counters; `lease_token` hands out fencing tokens.
//! - `taskq_queue_counts` (version 4): `queue`, `state`, `n`, the number of tasks of each
//!   queue in each state, written by every call that inserts, deletes or moves tasks in
//!   its own transaction, one upsert per queue and state it changed (`counts.rs`);
//!   [`Store::queues`] reads it instead of counting the history. One writer at a time,
//!   so no contention.
//! - `taskq_tombstones` (version 2): the holds deleted named tasks leave on their names
//!   (see [`tombstone`]): `name` (primary key), `taken_until`, `run_id`
//!   (the run whose life and window also hold it), `tombstone_ms`. Written by delete,
//!   purge and prune in their transaction; read by enqueue's name check. Indexes
//!   (version 3): `(taken_until)` and `(run_id)`, for pruning.
//!
//! # Layout
//!
//! Each subject's statements are in one file: `schema.rs` (migrations), `enqueue.rs`
//! (the name check and inserts), `claim.rs` (claim order, admission, lapsed leases,
//! `next_due`), `lease.rs` (heartbeat, finish, checkpoint), `manage.rs` (queues, listing,
//! run now, delete, retry, purge, iteration runs, tombstones), `retention.rs` (prune's
//! deletes) and `rows.rs` (columns and row decoding). This file opens the database and runs each call on the blocking pool,
//! in a write transaction (durable or not, see above) or a read one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::Notify;

use super::*;

mod claim;
mod counts;
mod enqueue;
mod lease;
mod manage;
mod retention;
mod rows;
mod schedules;
mod schema;
#[cfg(test)]
mod tests;
mod unique;

pub use schema::SCHEMA_VERSION;

/// How long a call waits for another connection's write lock before failing, counted from
/// the call (time queued behind this store's other calls included).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The size, in bytes, the WAL file is cut back to after a checkpoint empties it
/// (`PRAGMA journal_size_limit`): 16 MiB. SQLite checkpoints every 1,000 pages (about
/// 4 MiB) by itself, but never shrinks the file on its own, so one big transaction (a bulk
/// start, a long prune) would otherwise leave the WAL at its largest size for ever.
pub const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

/// An error inside a store call: an SQL failure (reported with the call's name and the
/// file) or a store-level answer such as `NotFound`.
enum Fail {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

type R<T> = Result<T, Fail>;

/// The connection and the `synchronous` level it is set to.
struct Db {
    conn: Connection,
    full_sync: bool,
}

impl Db {
    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, with `synchronous = FULL` when
    /// `durable` (see the module docs), and commits when it returns `Ok`.
    fn write<T>(
        &mut self,
        durable: bool,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> R<T>,
    ) -> R<T> {
        if durable != self.full_sync {
            let level = if durable { "FULL" } else { "NORMAL" };
            self.conn.pragma_update(None, "synchronous", level)?;
            self.full_sync = durable;
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in one read transaction (a consistent snapshot).
    fn read<T>(&mut self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> R<T>) -> R<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

/// The SQLite store: a file on disk, shared safely by several processes.
///
/// Cheap to share behind an `Arc`; every call runs on tokio's blocking pool.
pub struct SqliteStore {
    path: Arc<str>,
    db: Arc<Mutex<Db>>,
    notify: Notify,
    /// Wakes [`Store::wait_for_cancel`] when this store value cancels a running task.
    cancels: Notify,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path`, sets it up (WAL, busy timeout,
    /// foreign keys) and brings its schema up to date.
    ///
    /// Fails with [`StoreError::SchemaTooNew`] when the file was written by a newer taskq,
    /// and with [`StoreError::Backend`] naming the file when it cannot be opened.
    pub async fn open(path: &str) -> Result<SqliteStore, StoreError> {
        let owned = path.to_string();
        let db = tokio::task::spawn_blocking(move || open_blocking(&owned))
            .await
            .map_err(|e| {
                StoreError::Backend(format!("opening sqlite store `{path}`: task failed: {e}"))
            })??;
        Ok(SqliteStore {
            path: Arc::from(path),
            db: Arc::new(Mutex::new(db)),
            notify: Notify::new(),
            cancels: Notify::new(),
        })
    }

    /// The file this store was opened on.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Runs `f` with the connection on the blocking pool. `what` names the call in errors.
    async fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Db) -> R<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        let path = self.path.clone();
        let called = std::time::Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            // A panic inside a call drops its transaction, which rolls back: the
            // connection is still consistent, so a poisoned lock is still usable.
            let mut g = db.lock().unwrap_or_else(|p| p.into_inner());
            // Calls queue on this mutex, and each would wait the whole busy timeout for
            // another process's lock: bound the call as a whole instead.
            g.conn
                .busy_timeout(BUSY_TIMEOUT.saturating_sub(called.elapsed()))?;
            f(&mut g)
        })
        .await;
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Fail::Store(e))) => Err(e),
            Ok(Err(Fail::Sql(e))) => Err(StoreError::Backend(format!(
                "sqlite store `{path}`: {what} failed: {}",
                explain(&e, &path)
            ))),
            Err(e) => Err(StoreError::Backend(format!(
                "sqlite store `{path}`: {what} failed: the blocking task did not complete: {e}"
            ))),
        }
    }
}

/// An SQLite error in words a person can act on: the conditions a deployment meets (a
/// lock another process holds, a full disk, a failing write) are named, with SQLite's own
/// message kept at the end.
fn explain(e: &rusqlite::Error, path: &str) -> String {
    use rusqlite::ffi;
    let Some(err) = e.sqlite_error() else {
        return e.to_string();
    };
    match err.code {
        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => format!(
            "the database is locked: another connection or process holds its write lock and did not release it within {BUSY_TIMEOUT:?} (the busy timeout); nothing of this call was stored, try again later (SQLite: {e})"
        ),
        rusqlite::ErrorCode::DiskFull => format!(
            "the disk is full: SQLite could not grow `{path}` or its write-ahead log (`-wal`); nothing of this call was stored; free space and try again (SQLite: {e})"
        ),
        rusqlite::ErrorCode::SystemIoFailure
            if matches!(
                err.extended_code,
                ffi::SQLITE_IOERR_WRITE | ffi::SQLITE_IOERR_TRUNCATE | ffi::SQLITE_IOERR_SHMSIZE
            ) =>
        {
            format!(
                "writing `{path}` or its write-ahead log failed: the disk may be full, the process's file size limit (`ulimit -f`) reached, or the device failing; nothing of this call was stored (SQLite: {e}, extended code {})",
                err.extended_code
            )
        }
        rusqlite::ErrorCode::SystemIoFailure => format!(
            "an I/O error on `{path}` or its write-ahead log: the disk may be full or failing; this call may not have been stored (SQLite: {e}, extended code {})",
            err.extended_code
        ),
        _ => e.to_string(),
    }
}

fn open_blocking(path: &str) -> Result<Db, StoreError> {
    let ctx = |what: &str, e: rusqlite::Error| {
        StoreError::Backend(format!(
            "opening sqlite store `{path}`: {what}: {}",
            explain(&e, path)
        ))
    };
    let parent = std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent {
        if !dir.is_dir() {
            return Err(StoreError::Backend(format!(
                "opening sqlite store `{path}`: the directory `{}` does not exist; create it first (`mkdir -p {}`), or point the URL at an existing directory",
                dir.display(),
                dir.display()
            )));
        }
    }
    let conn = Connection::open(path).map_err(|e| ctx("cannot open the database file", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| ctx("setting busy_timeout", e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| ctx("switching to WAL mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "opening sqlite store `{path}`: the database refused WAL mode (journal mode is `{mode}`)"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| ctx("setting synchronous = FULL", e))?;
    let _limit: i64 = conn
        .query_row(
            &format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}"),
            [],
            |r| r.get(0),
        )
        .map_err(|e| ctx("setting journal_size_limit", e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| ctx("enabling foreign keys", e))?;
    // The query planner stability guarantee: a plan never depends on the values bound.
    // Without it, SQLite (3.4x and later) re-prepares a statement at every execution that
    // binds a new value to a `LIMIT ?` parameter (it reads the value while planning), and
    // each claim binds its own limit: the parse and plan showed in every claim's profile.
    // taskq's statements do not rely on bound values for their plans (no LIKE, no STAT4
    // statistics).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|e| ctx("enabling the query planner stability guarantee", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    let mut db = Db {
        conn,
        full_sync: true,
    };
    db.write(true, schema::migrate).map_err(|f| match f {
        Fail::Store(e) => e,
        Fail::Sql(e) => ctx("migrating the schema", e),
    })?;
    Ok(db)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn enqueue(
        &self,
        tasks: Vec<NewTask>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        check_new_tasks(&tasks)?;
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self
            .call("enqueue", move |db| {
                db.write(true, |tx| enqueue::enqueue(tx, &tasks, now))
            })
            .await?;
        self.notify.notify_waiters();
        Ok(ids)
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedTask>, StoreError> {
        let req = req.clone();
        self.call("claim", move |db| {
            db.write(false, |tx| claim::claim(tx, &req))
        })
        .await
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
        let leases = leases.to_vec();
        self.call("heartbeat", move |db| {
            db.write(false, |tx| lease::heartbeat(tx, &leases, until))
        })
        .await
    }

    async fn renew(
        &self,
        leases: &[Lease],
        _worker: &str,
        until: Timestamp,
    ) -> Result<Renewal, StoreError> {
        if leases.is_empty() {
            return Ok(Renewal::default());
        }
        let leases = leases.to_vec();
        self.call("heartbeat", move |db| {
            db.write(false, |tx| lease::renew(tx, &leases, until))
        })
        .await
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
        let worker = worker.to_string();
        let (results, woke) = self
            .call("finish", move |db| {
                db.write(false, |tx| lease::finish(tx, &finished, &worker, now))
            })
            .await?;
        if woke {
            self.notify.notify_waiters();
        }
        Ok(results)
    }

    async fn checkpoint(
        &self,
        lease: Lease,
        cp: Checkpoint,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        check_checkpoint(lease, &cp)?;
        self.call("checkpoint", move |db| {
            db.write(false, |tx| lease::checkpoint(tx, lease, &cp, now))
        })
        .await
    }

    async fn confirm(&self, lease: Lease) -> Result<(), StoreError> {
        self.call("confirming a lease", move |db| {
            db.read(|tx| lease::confirm(tx, lease))
        })
        .await
    }

    async fn next_due(&self, queues: &[String]) -> Result<Option<Timestamp>, StoreError> {
        let queues = queues.to_vec();
        self.call("next_due", move |db| {
            db.read(|tx| claim::next_due(tx, &queues))
        })
        .await
    }

    async fn wait_for_work(&self, _queues: &[String], timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.call("listing queues", |db| db.read(manage::queues))
            .await
    }

    async fn configure_queue(&self, queue: &str, config: QueueConfig) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        let queue = queue.to_string();
        self.call("configuring a queue", move |db| {
            db.write(true, |tx| manage::configure_queue(tx, &queue, &config))
        })
        .await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        let queue = queue.to_string();
        self.call("pausing or resuming a queue", move |db| {
            db.write(true, |tx| manage::set_paused(tx, &queue, paused))
        })
        .await?;
        if !paused {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    async fn purge(&self, queue: &str, now: Timestamp) -> Result<u64, StoreError> {
        check_queue_name(queue)?;
        let queue = queue.to_string();
        self.call("purging a queue", move |db| {
            db.write(true, |tx| manage::purge(tx, &queue, now))
        })
        .await
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<TaskInfo>, StoreError> {
        let q = q.clone();
        self.call("listing tasks", move |db| {
            db.read(|tx| manage::list_tasks(tx, &q))
        })
        .await
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskDetail>, StoreError> {
        self.call("reading a task", move |db| {
            db.read(|tx| manage::task(tx, id))
        })
        .await
    }

    async fn run_now(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.call("running a task now", move |db| {
            db.write(true, |tx| manage::run_now(tx, id, now))
        })
        .await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn delete(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.call("deleting a task", move |db| {
            db.write(true, |tx| manage::delete(tx, id, now))
        })
        .await
    }

    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.call("retrying a task", move |db| {
            db.write(true, |tx| manage::retry(tx, id, now))
        })
        .await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn iteration(&self, run: TaskId) -> Result<Option<IterationInfo>, StoreError> {
        self.call("reading an iteration run", move |db| {
            db.read(|tx| manage::iteration(tx, run.0))
        })
        .await
    }

    async fn iterations(&self, limit: usize) -> Result<Vec<IterationInfo>, StoreError> {
        self.call("listing iteration runs", move |db| {
            db.read(|tx| manage::iterations(tx, limit))
        })
        .await
    }

    async fn cancel_iteration(&self, run: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.call("cancelling an iteration run", move |db| {
            db.write(true, |tx| manage::cancel_iteration(tx, run, now))
        })
        .await
    }

    async fn cancel(&self, id: TaskId, now: Timestamp) -> Result<CancelOutcome, StoreError> {
        let outcome = self
            .call("cancelling a task", move |db| {
                db.write(true, |tx| manage::cancel(tx, id, now))
            })
            .await?;
        if outcome == CancelOutcome::Requested {
            self.cancels.notify_waiters();
        }
        Ok(outcome)
    }

    async fn wait_for_cancel(&self) {
        self.cancels.notified().await
    }

    async fn prune(&self, now: Timestamp, batch: usize) -> Result<PruneReport, StoreError> {
        self.prune_all(now, batch).await
    }

    async fn retry_many(&self, ids: &[TaskId], now: Timestamp) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = ids.to_vec();
        let n = self
            .call("retrying tasks", move |db| {
                db.write(true, |tx| manage::retry_many(tx, &ids, now))
            })
            .await?;
        if n > 0 {
            self.notify.notify_waiters();
        }
        Ok(n)
    }

    async fn finished_per_minute(
        &self,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<FinishedMinute>, StoreError> {
        self.call("counting finished tasks by minute", move |db| {
            db.read(|tx| manage::finished_per_minute(tx, since, until))
        })
        .await
    }

    async fn unique_holder(
        &self,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<(TaskId, TaskState)>, StoreError> {
        let name = name.to_string();
        self.call("reading a unique key's holder", move |db| {
            db.read(|tx| unique::holder(tx, &name, now))
        })
        .await
    }

    async fn upsert_schedules(
        &self,
        schedules: Vec<NewSchedule>,
        known_tasks: Option<Vec<String>>,
    ) -> Result<(), StoreError> {
        for s in &schedules {
            schedule::check_new_schedule(s)?;
        }
        self.call("registering schedules", move |db| {
            db.write(true, |tx| {
                schedules::upsert(tx, &schedules, known_tasks.as_deref())
            })
        })
        .await
    }

    async fn replace_pending(
        &self,
        name: &str,
        payload: &serde_json::Value,
        run_at: Timestamp,
    ) -> Result<Option<TaskId>, StoreError> {
        crate::store::check_replacement(name, payload)?;
        let (name, payload) = (name.to_string(), payload.clone());
        let id = self
            .call("replacing a pending task", move |db| {
                db.write(true, |tx| {
                    unique::replace_pending(tx, &name, &payload, run_at)
                })
            })
            .await?;
        if id.is_some() {
            self.notify.notify_waiters();
        }
        Ok(id)
    }

    async fn schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        self.call("listing schedules", |db| db.read(schedules::list))
            .await
    }

    async fn fire_schedule(
        &self,
        fire: Fire,
        now: Timestamp,
    ) -> Result<Option<Vec<TaskId>>, StoreError> {
        check_new_tasks(&fire.tasks)?;
        let fired = self
            .call("firing a schedule", move |db| {
                db.write(true, |tx| schedules::fire(tx, &fire, now))
            })
            .await?;
        if fired.as_ref().is_some_and(|ids| !ids.is_empty()) {
            self.notify.notify_waiters();
        }
        Ok(fired)
    }

    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_tick: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let name = name.to_string();
        self.call("pausing or resuming a schedule", move |db| {
            db.write(true, |tx| {
                schedules::set_paused(tx, &name, paused, next_tick)
            })
        })
        .await
    }

    async fn remove_schedule(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        self.call("removing a schedule", move |db| {
            db.write(true, |tx| schedules::remove(tx, &name))
        })
        .await
    }
}
