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
//! other one instead of failing at once. Everything that must be unique across processes
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
//! finish free of an fsync per batch.
//!
//! # Tables
//!
//! Schema version 2 (versions are rows of `taskq_schema(version INTEGER)`; a database
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
//!   attempt). Indexes: `(state, queue, priority DESC, run_at, id)` for claims,
//!   `(state, run_at)` for [`Store::next_due`], `(state, id)` for listing by state,
//!   `(unique_name)` and `(run_id)` (partial, where set).
//! - `taskq_attempts`: one row per ended attempt, `seq` (order), `task_id` (deleted with
//!   its task), `attempt`, `worker`, `started_at`, `finished_at`, `outcome`, `error`.
//! - `taskq_queues`: queues with settings: `name`, `paused`, `rate`, `burst`,
//!   `max_concurrent`, and the token bucket `bucket_tokens`, `bucket_refilled_at` (NULL
//!   until the first claim after the settings were saved).
//! - `taskq_iterations`: one row per iterative run: `run` (its first step's id), `task`,
//!   `queue`, `filter` (JSON), `cursor` (JSON), `processed`, `batches`, `steps`, `total`,
//!   `state`, `started_at`, `updated_at`, `finished_at`, `error`.
//! - `taskq_counters`: named counters; `lease_token` hands out fencing tokens.
//! - `taskq_tombstones` (version 2): the holds deleted named tasks leave on their names
//!   (see [`tombstone`]): `name` (primary key), `taken_until`, `run_id`
//!   (the run whose life and window also hold it), `tombstone_ms`. Written by delete and
//!   purge in their transaction; read by enqueue's name check.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::Notify;

use super::admission::{self, Admission, Bucket};
use super::tombstone::{self, Deleted, Tombstone};
use super::*;

/// The schema version this build knows (the number of migrations).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// How long a writer waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Migrations, in order; migration `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE taskq_iterations (
    run          INTEGER PRIMARY KEY,
    task         TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    filter       TEXT    NOT NULL,
    cursor       TEXT,
    processed    INTEGER NOT NULL DEFAULT 0,
    batches      INTEGER NOT NULL DEFAULT 0,
    steps        INTEGER NOT NULL DEFAULT 1,
    total        INTEGER,
    state        TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    error        TEXT
);
CREATE TABLE taskq_tasks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task         TEXT    NOT NULL,
    queue        TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    unique_name  TEXT,
    tombstone_ms INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    enqueued_at  INTEGER NOT NULL,
    run_at       INTEGER NOT NULL,
    finished_at  INTEGER,
    last_error   TEXT,
    run_id       INTEGER REFERENCES taskq_iterations(run) DEFERRABLE INITIALLY DEFERRED,
    token        INTEGER NOT NULL DEFAULT 0,
    worker       TEXT,
    lease_until  INTEGER,
    started_at   INTEGER
);
CREATE INDEX taskq_tasks_claim ON taskq_tasks (state, queue, priority DESC, run_at, id);
CREATE INDEX taskq_tasks_due ON taskq_tasks (state, run_at);
CREATE INDEX taskq_tasks_state ON taskq_tasks (state, id);
CREATE INDEX taskq_tasks_unique ON taskq_tasks (unique_name) WHERE unique_name IS NOT NULL;
CREATE INDEX taskq_tasks_run ON taskq_tasks (run_id) WHERE run_id IS NOT NULL;
CREATE TABLE taskq_attempts (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id      INTEGER NOT NULL REFERENCES taskq_tasks(id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    worker       TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    outcome      TEXT    NOT NULL,
    error        TEXT
);
CREATE INDEX taskq_attempts_task ON taskq_attempts (task_id, seq);
CREATE TABLE taskq_queues (
    name               TEXT PRIMARY KEY,
    paused             INTEGER NOT NULL DEFAULT 0,
    rate               REAL,
    burst              INTEGER,
    max_concurrent     INTEGER,
    bucket_tokens      REAL,
    bucket_refilled_at INTEGER
);
CREATE TABLE taskq_counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO taskq_counters (name, value) VALUES ('lease_token', 0);
"#,
    // 2: tombstones, the holds deleted named tasks leave on their names (issue 7, item 7).
    r#"
CREATE TABLE taskq_tombstones (
    name          TEXT    PRIMARY KEY,
    taken_until   INTEGER NOT NULL,
    run_id        INTEGER,
    tombstone_ms  INTEGER NOT NULL DEFAULT 0
);
"#,
];

/// The attempt label and error of a lapsed lease.
const LAPSED: (&str, &str) = crate::policy::LEASE_LAPSED;

const TASK_COLUMNS: &str = "id, task, queue, state, payload, priority, attempts, unique_name, \
     created_at, enqueued_at, run_at, finished_at, last_error, run_id, worker, lease_until";

const ITERATION_COLUMNS: &str = "run, task, queue, filter, cursor, processed, batches, steps, \
     total, state, started_at, updated_at, finished_at, error";

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
        let joined = tokio::task::spawn_blocking(move || {
            // A panic inside a call drops its transaction, which rolls back: the
            // connection is still consistent, so a poisoned lock is still usable.
            let mut g = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut g)
        })
        .await;
        match joined {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(Fail::Store(e))) => Err(e),
            Ok(Err(Fail::Sql(e))) => Err(StoreError::Backend(format!(
                "sqlite store `{path}`: {what} failed: {e}"
            ))),
            Err(e) => Err(StoreError::Backend(format!(
                "sqlite store `{path}`: {what} failed: the blocking task did not complete: {e}"
            ))),
        }
    }
}

fn open_blocking(path: &str) -> Result<Db, StoreError> {
    let ctx = |what: &str, e: rusqlite::Error| {
        StoreError::Backend(format!("opening sqlite store `{path}`: {what}: {e}"))
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
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| ctx("enabling foreign keys", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    let mut db = Db {
        conn,
        full_sync: true,
    };
    db.write(true, migrate).map_err(|f| match f {
        Fail::Store(e) => e,
        Fail::Sql(e) => ctx("migrating the schema", e),
    })?;
    Ok(db)
}

fn migrate(tx: &rusqlite::Transaction<'_>) -> R<()> {
    tx.execute_batch("CREATE TABLE IF NOT EXISTS taskq_schema (version INTEGER NOT NULL)")?;
    let found: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM taskq_schema",
        [],
        |r| r.get(0),
    )?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        }
        .into());
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > found {
            tx.execute_batch(sql)?;
            tx.execute("INSERT INTO taskq_schema (version) VALUES (?1)", [version])?;
        }
    }
    Ok(())
}

// ---- conversions ----------------------------------------------------------------------

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn to_json(v: &serde_json::Value) -> String {
    // Serialising a `Value` cannot fail: its map keys are strings.
    v.to_string()
}

fn task_state(s: &str) -> Result<TaskState, Fail> {
    s.parse::<TaskState>()
        .map_err(|e| Fail::Store(StoreError::Backend(format!("corrupt taskq_tasks row: {e}"))))
}

fn run_state(s: &str) -> Result<RunState, Fail> {
    s.parse::<RunState>().map_err(|e| {
        Fail::Store(StoreError::Backend(format!(
            "corrupt taskq_iterations row: {e}"
        )))
    })
}

fn u64_of(v: i64) -> u64 {
    v.max(0) as u64
}

fn u32_of(v: i64) -> u32 {
    v.clamp(0, u32::MAX as i64) as u32
}

/// A `taskq_tasks` row as read by [`TASK_COLUMNS`], before its text is decoded.
struct RawTask {
    id: i64,
    task: String,
    queue: String,
    state: String,
    payload: String,
    priority: i64,
    attempts: i64,
    unique_name: Option<String>,
    created_at: i64,
    enqueued_at: i64,
    run_at: i64,
    finished_at: Option<i64>,
    last_error: Option<String>,
    run_id: Option<i64>,
    worker: Option<String>,
    lease_until: Option<i64>,
}

impl RawTask {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawTask> {
        Ok(RawTask {
            id: r.get(0)?,
            task: r.get(1)?,
            queue: r.get(2)?,
            state: r.get(3)?,
            payload: r.get(4)?,
            priority: r.get(5)?,
            attempts: r.get(6)?,
            unique_name: r.get(7)?,
            created_at: r.get(8)?,
            enqueued_at: r.get(9)?,
            run_at: r.get(10)?,
            finished_at: r.get(11)?,
            last_error: r.get(12)?,
            run_id: r.get(13)?,
            worker: r.get(14)?,
            lease_until: r.get(15)?,
        })
    }

    fn decode(self) -> Result<TaskInfo, Fail> {
        Ok(TaskInfo {
            id: TaskId(self.id),
            payload: stored_or_raw(&self.payload),
            state: task_state(&self.state)?,
            task: self.task,
            queue: self.queue,
            priority: self.priority.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
            attempts: u32_of(self.attempts),
            unique_name: self.unique_name,
            created_at: Timestamp(self.created_at),
            enqueued_at: Timestamp(self.enqueued_at),
            run_at: Timestamp(self.run_at),
            finished_at: self.finished_at.map(Timestamp),
            last_error: self.last_error,
            run: self.run_id.map(TaskId),
            worker: self.worker,
            lease_until: self.lease_until.map(Timestamp),
        })
    }
}

/// A `taskq_iterations` row as read by [`ITERATION_COLUMNS`].
struct RawIteration {
    run: i64,
    task: String,
    queue: String,
    filter: String,
    cursor: Option<String>,
    processed: i64,
    batches: i64,
    steps: i64,
    total: Option<i64>,
    state: String,
    started_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    error: Option<String>,
}

impl RawIteration {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawIteration> {
        Ok(RawIteration {
            run: r.get(0)?,
            task: r.get(1)?,
            queue: r.get(2)?,
            filter: r.get(3)?,
            cursor: r.get(4)?,
            processed: r.get(5)?,
            batches: r.get(6)?,
            steps: r.get(7)?,
            total: r.get(8)?,
            state: r.get(9)?,
            started_at: r.get(10)?,
            updated_at: r.get(11)?,
            finished_at: r.get(12)?,
            error: r.get(13)?,
        })
    }

    fn decode(self) -> Result<IterationInfo, Fail> {
        Ok(IterationInfo {
            run: TaskId(self.run),
            filter: stored_or_raw(&self.filter),
            cursor: self.cursor.as_deref().map(stored_or_raw),
            state: run_state(&self.state)?,
            task: self.task,
            queue: self.queue,
            processed: u64_of(self.processed),
            batches: u64_of(self.batches),
            steps: u64_of(self.steps),
            total: self.total.map(u64_of),
            started_at: Timestamp(self.started_at),
            updated_at: Timestamp(self.updated_at),
            finished_at: self.finished_at.map(Timestamp),
            error: self.error,
        })
    }
}

/// Sets a finished run's state, if it is still running (as `MemoryStore::end_run`).
fn end_run(
    tx: &rusqlite::Transaction<'_>,
    run: Option<i64>,
    state: RunState,
    error: Option<&str>,
    now: Timestamp,
) -> R<()> {
    if let Some(run) = run {
        tx.prepare_cached(
            "UPDATE taskq_iterations SET state = ?2, error = ?3, finished_at = ?4, updated_at = ?4
             WHERE run = ?1 AND state = 'running'",
        )?
        .execute(params![run, state.as_str(), error, now.0])?;
    }
    Ok(())
}

/// Settings and bucket of one queue, as read inside a claim.
#[derive(Default)]
struct QueueRow {
    paused: bool,
    config: QueueConfig,
    tokens: Option<f64>,
    refilled_at: Option<i64>,
    /// Running tasks with a live lease (only counted when `max_concurrent` is set).
    running: u32,
}

/// One claim candidate.
struct Candidate {
    id: i64,
    queue: String,
    priority: i64,
    run_at: i64,
    running: bool,
}

fn load_queues(tx: &rusqlite::Transaction<'_>) -> R<HashMap<String, QueueRow>> {
    let mut st = tx.prepare_cached(
        "SELECT name, paused, rate, burst, max_concurrent, bucket_tokens, bucket_refilled_at
         FROM taskq_queues",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            QueueRow {
                paused: r.get::<_, i64>(1)? != 0,
                config: QueueConfig {
                    rate: r.get(2)?,
                    burst: r.get::<_, Option<i64>>(3)?.map(u32_of),
                    max_concurrent: r.get::<_, Option<i64>>(4)?.map(u32_of),
                },
                tokens: r.get(5)?,
                refilled_at: r.get(6)?,
                running: 0,
            },
        ))
    })?;
    let mut map = HashMap::new();
    for row in rows {
        let (name, q) = row?;
        map.insert(name, q);
    }
    Ok(map)
}

/// The queues to look at: those asked for, or every queue that has live tasks.
fn claim_queues(tx: &rusqlite::Transaction<'_>, asked: &[String]) -> R<Vec<String>> {
    if !asked.is_empty() {
        let mut seen = HashSet::new();
        return Ok(asked
            .iter()
            .filter(|q| seen.insert(q.as_str()))
            .cloned()
            .collect());
    }
    // Distinct queues of live tasks, walking the claim index one queue at a time.
    let mut out = Vec::new();
    for state in ["pending", "running"] {
        let mut st = tx.prepare_cached(
            "SELECT queue FROM taskq_tasks WHERE state = ?1 AND queue > ?2 ORDER BY queue LIMIT 1",
        )?;
        let mut last = String::new();
        let mut first = true;
        loop {
            let next: Option<String> = if first {
                tx.prepare_cached(
                    "SELECT queue FROM taskq_tasks WHERE state = ?1 ORDER BY queue LIMIT 1",
                )?
                .query_row([state], |r| r.get(0))
                .optional()?
            } else {
                st.query_row(params![state, last], |r| r.get(0))
                    .optional()?
            };
            first = false;
            match next {
                Some(q) => {
                    if !out.contains(&q) {
                        out.push(q.clone());
                    }
                    last = q;
                }
                None => break,
            }
        }
    }
    Ok(out)
}

fn claim_tx(tx: &rusqlite::Transaction<'_>, req: &ClaimRequest) -> R<Vec<ClaimedTask>> {
    let now = req.now.0;
    let limit = req.limit;
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut queues = load_queues(tx)?;
    let names = claim_queues(tx, &req.queues)?;

    // Candidates of every unpaused queue: its best `limit` due pending tasks and its best
    // `limit` lapsed running ones. A queue's rows are only ever skipped once the queue is
    // out of capacity for the rest of this claim, so `limit` per queue is enough.
    let mut cands: Vec<Candidate> = Vec::new();
    {
        let mut pending = tx.prepare_cached(
            "SELECT id, priority, run_at FROM taskq_tasks
             WHERE state = 'pending' AND queue = ?1 AND run_at <= ?2
             ORDER BY priority DESC, run_at, id LIMIT ?3",
        )?;
        let mut lapsed = tx.prepare_cached(
            "SELECT id, priority, run_at FROM taskq_tasks
             WHERE state = 'running' AND queue = ?1 AND (lease_until IS NULL OR lease_until <= ?2)
             ORDER BY priority DESC, run_at, id LIMIT ?3",
        )?;
        let mut running = tx.prepare_cached(
            "SELECT COUNT(*) FROM taskq_tasks
             WHERE state = 'running' AND queue = ?1 AND lease_until > ?2",
        )?;
        for name in &names {
            let q = queues.entry(name.clone()).or_default();
            if q.paused {
                continue;
            }
            if q.config.max_concurrent.is_some() {
                let n: i64 = running.query_row(params![name, now], |r| r.get(0))?;
                q.running = u32_of(n);
            }
            for (st, is_running) in [(&mut pending, false), (&mut lapsed, true)] {
                let rows = st.query_map(params![name, now, limit as i64], |r| {
                    Ok(Candidate {
                        id: r.get(0)?,
                        queue: name.clone(),
                        priority: r.get(1)?,
                        run_at: r.get(2)?,
                        running: is_running,
                    })
                })?;
                for c in rows {
                    cands.push(c?);
                }
            }
        }
    }
    cands.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_at.cmp(&b.run_at))
            .then(a.id.cmp(&b.id))
    });

    // Each queue's admission (concurrency and token bucket), then the candidates in the
    // one claim order, each queue up to its allowance.
    let mut admissions: HashMap<&str, (Admission, u64)> = HashMap::new();
    for name in &names {
        if let Some(q) = queues.get(name) {
            if !q.paused {
                let bucket = match (q.tokens, q.refilled_at) {
                    (Some(tokens), Some(at)) => Some(Bucket {
                        tokens,
                        refilled_at: Timestamp(at),
                    }),
                    _ => None,
                };
                let adm = admission::admit(&q.config, u64::from(q.running), bucket, req.now);
                admissions.insert(name.as_str(), (adm, 0));
            }
        }
    }
    let mut chosen: Vec<&Candidate> = Vec::new();
    for c in &cands {
        if chosen.len() >= limit {
            break;
        }
        let Some((adm, taken)) = admissions.get_mut(c.queue.as_str()) else {
            continue;
        };
        if *taken >= adm.allowance {
            continue;
        }
        *taken += 1;
        chosen.push(c);
    }

    // Refilling alone needs no write: a later claim computes the same refill from the
    // stored state.
    for (name, (adm, taken)) in admissions.iter().filter(|(_, (_, n))| *n > 0) {
        if let Some(b) = adm.after(*taken) {
            tx.prepare_cached(
                "UPDATE taskq_queues SET bucket_tokens = ?2, bucket_refilled_at = ?3 WHERE name = ?1",
            )?
            .execute(params![name, b.tokens, b.refilled_at.0])?;
        }
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }

    let first_token: i64 = tx
        .prepare_cached(
            "UPDATE taskq_counters SET value = value + ?1 WHERE name = 'lease_token' RETURNING value",
        )?
        .query_row([chosen.len() as i64], |r| r.get::<_, i64>(0))?
        - chosen.len() as i64
        + 1;

    let lease_until = Timestamp(now).add(req.lease).0;
    let mut lapse = tx.prepare_cached(
        "INSERT INTO taskq_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
         SELECT id, attempts, COALESCE(worker, ''), COALESCE(started_at, ?2), ?2, ?3, ?4
         FROM taskq_tasks WHERE id = ?1",
    )?;
    let mut take = tx.prepare_cached(
        "UPDATE taskq_tasks
         SET state = 'running', attempts = attempts + 1, worker = ?2, lease_until = ?3,
             token = ?4, started_at = ?5,
             last_error = CASE WHEN ?6 THEN ?7 ELSE last_error END
         WHERE id = ?1
         RETURNING task, queue, payload, attempts, enqueued_at, run_id",
    )?;
    let mut iteration = tx.prepare_cached(
        "SELECT cursor, processed, batches, total FROM taskq_iterations WHERE run = ?1",
    )?;
    let mut out = Vec::with_capacity(chosen.len());
    for (i, c) in chosen.into_iter().enumerate() {
        let token = first_token + i as i64;
        if c.running {
            lapse.execute(params![c.id, now, LAPSED.0, LAPSED.1])?;
        }
        let (task, queue, payload, attempts, enqueued_at, run_id): (
            String,
            String,
            String,
            i64,
            i64,
            Option<i64>,
        ) = take.query_row(
            params![
                c.id,
                req.worker,
                lease_until,
                token,
                now,
                c.running,
                LAPSED.1
            ],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )?;
        // Decoded row by row: a row that does not decode is handed out with the reason
        // (the worker sends it dead) instead of failing the claim of the others.
        let mut decode_error = None;
        let payload = match decode_stored(&payload) {
            Ok(v) => v,
            Err(e) => {
                decode_error = Some(decode_failure("payload", c.id, &e));
                serde_json::Value::String(payload)
            }
        };
        let iteration = match run_id {
            None => None,
            Some(run) => {
                let row: Option<(Option<String>, i64, i64, Option<i64>)> = iteration
                    .query_row([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .optional()?;
                row.map(|(cursor, processed, batches, total)| IterationCursor {
                    run: TaskId(run),
                    cursor: cursor.and_then(|text| match decode_stored(&text) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            decode_error.get_or_insert_with(|| decode_failure("cursor", c.id, &e));
                            None
                        }
                    }),
                    processed: u64_of(processed),
                    batches: u64_of(batches),
                    total: total.map(u64_of),
                })
            }
        };
        out.push(ClaimedTask {
            lease: Lease {
                id: TaskId(c.id),
                token,
            },
            payload,
            task,
            queue,
            attempt: u32_of(attempts),
            enqueued_at: Timestamp(enqueued_at),
            iteration,
            decode_error,
        });
    }
    Ok(out)
}

/// `Some((run_id, attempts))` when `(id, token)` holds a running task.
fn held(tx: &rusqlite::Transaction<'_>, lease: Lease) -> R<Option<(Option<i64>, i64)>> {
    Ok(tx
        .prepare_cached(
            "SELECT run_id, attempts FROM taskq_tasks WHERE id = ?1 AND token = ?2 AND state = 'running'",
        )?
        .query_row(params![lease.id.0, lease.token], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
}

/// Records one finished attempt as its [`Transition`](crate::policy::Transition) says;
/// `None` when the lease is no longer held (nothing changed), else whether it woke work.
fn finish_one(
    tx: &rusqlite::Transaction<'_>,
    f: &Finish,
    worker: &str,
    now: i64,
) -> R<Option<bool>> {
    let id = f.lease.id;
    let Some((run, attempt)) = held(tx, f.lease)? else {
        return Ok(None);
    };
    let tr = f.outcome.transition(Timestamp(now));
    if let Some(state) = tr.run_ends {
        end_run(tx, run, state, tr.error.as_deref(), Timestamp(now))?;
    }
    tx.prepare_cached(
        "INSERT INTO taskq_attempts (task_id, attempt, worker, started_at, finished_at, outcome, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![id.0, attempt, worker, f.started_at.0, now, tr.label, tr.error])?;
    tx.prepare_cached(
        "UPDATE taskq_tasks
         SET state = ?2, worker = NULL, lease_until = NULL,
             last_error = COALESCE(?3, last_error),
             run_at = COALESCE(?4, run_at),
             attempts = CASE WHEN ?5 THEN attempts ELSE MAX(attempts - 1, 0) END,
             finished_at = CASE WHEN ?6 THEN ?7 ELSE finished_at END
         WHERE id = ?1",
    )?
    .execute(params![
        id.0,
        tr.state.as_str(),
        tr.error,
        tr.run_at.map(|t| t.0),
        tr.counts,
        tr.finished,
        now
    ])?;
    if let Some(run_at) = tr.continue_at {
        tx.prepare_cached(
            "INSERT INTO taskq_tasks (task, queue, state, payload, priority, attempts, unique_name,
                 tombstone_ms, created_at, enqueued_at, run_at, run_id, token)
             SELECT task, queue, 'pending', payload, priority, 0, NULL,
                 tombstone_ms, ?2, ?2, ?3, run_id, 0
             FROM taskq_tasks WHERE id = ?1",
        )?
        .execute(params![id.0, now, run_at.0])?;
        if let Some(run) = run {
            tx.prepare_cached(
                "UPDATE taskq_iterations SET steps = steps + 1, updated_at = ?2 WHERE run = ?1",
            )?
            .execute(params![run, now])?;
        }
    }
    Ok(Some(tr.wakes()))
}

/// Leaves the tombstones of the named tasks matching `which` (a condition on `t`), which
/// the caller deletes next in the same transaction (see [`tombstone`]). Every deletion of
/// task rows goes through here first.
fn bury(
    tx: &rusqlite::Transaction<'_>,
    which: &str,
    p: impl rusqlite::Params,
    now: Timestamp,
) -> R<()> {
    type Named = (
        String,
        String,
        Option<i64>,
        i64,
        Option<i64>,
        Option<String>,
        Option<i64>,
    );
    let named: Vec<Named> = tx
        .prepare_cached(&format!(
            "SELECT t.unique_name, t.state, t.finished_at, t.tombstone_ms, t.run_id,
                    i.state, i.finished_at
             FROM taskq_tasks t LEFT JOIN taskq_iterations i ON i.run = t.run_id
             WHERE t.unique_name IS NOT NULL AND {which}"
        ))?
        .query_map(p, |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (name, state, finished_at, window_ms, run, run_st, run_end) in named {
        let run = match (run, run_st) {
            (Some(run), Some(st)) => Some((
                TaskId(run),
                tombstone::run_holds(run_state(&st)?, run_end.map(Timestamp), window_ms, now),
            )),
            _ => None,
        };
        let deleted = Deleted {
            name: Some(&name),
            state: task_state(&state)?,
            finished_at: finished_at.map(Timestamp),
            window_ms,
            run,
        };
        let Some((name, new)) = tombstone::of_deleted(deleted, now) else {
            continue;
        };
        let old: Option<(i64, Option<i64>, i64, Option<i64>)> = tx
            .prepare_cached(
                "SELECT n.taken_until, n.run_id, n.tombstone_ms, i.finished_at
                 FROM taskq_tombstones n LEFT JOIN taskq_iterations i ON i.run = n.run_id
                 WHERE n.name = ?1",
            )?
            .query_row([&name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let old_run_end = old.and_then(|o| o.3).map(Timestamp);
        let old = old.map(|(until, run, window_ms, _)| Tombstone {
            taken_until: Timestamp(until),
            run: run.map(TaskId),
            window_ms,
        });
        let t = tombstone::merge(old, old_run_end, new);
        tx.prepare_cached(
            "INSERT INTO taskq_tombstones (name, taken_until, run_id, tombstone_ms)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET taken_until = excluded.taken_until,
                 run_id = excluded.run_id, tombstone_ms = excluded.tombstone_ms",
        )?
        .execute(params![
            name,
            t.taken_until.0,
            t.run.map(|r| r.0),
            t.window_ms
        ])?;
    }
    Ok(())
}

fn read_iteration(tx: &rusqlite::Transaction<'_>, run: i64) -> R<Option<IterationInfo>> {
    let raw = tx
        .prepare_cached(&format!(
            "SELECT {ITERATION_COLUMNS} FROM taskq_iterations WHERE run = ?1"
        ))?
        .query_row([run], RawIteration::read)
        .optional()?;
    raw.map(RawIteration::decode).transpose()
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
                db.write(true, |tx| {
                    let mut seen = HashSet::new();
                    let mut live = tx.prepare_cached(
                        // The named first step of an iterative run ends when it hands
                        // over: the name stays taken while the run is live, and the
                        // tombstone window counts from the end of the run.
                        "SELECT EXISTS (SELECT 1 FROM taskq_tasks t
                           LEFT JOIN taskq_iterations i ON i.run = t.run_id
                           WHERE t.unique_name = ?1
                           AND (t.state IN ('pending', 'running') OR i.state = 'running'
                                OR (t.finished_at IS NOT NULL AND t.finished_at + t.tombstone_ms > ?2)
                                OR (i.finished_at IS NOT NULL AND i.finished_at + t.tombstone_ms > ?2)))
                         OR EXISTS (SELECT 1 FROM taskq_tombstones n
                           LEFT JOIN taskq_iterations i ON i.run = n.run_id
                           WHERE n.name = ?1
                           AND (n.taken_until > ?2 OR i.state = 'running'
                                OR (i.finished_at IS NOT NULL AND i.finished_at + n.tombstone_ms > ?2)))",
                    )?;
                    for t in &tasks {
                        if let Some(n) = &t.unique_name {
                            if !seen.insert(n.as_str())
                                || live.query_row(params![n, now.0], |r| r.get::<_, bool>(0))?
                            {
                                return Err(StoreError::AlreadyExists(n.clone()).into());
                            }
                        }
                    }
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO taskq_tasks (task, queue, state, payload, priority, attempts,
                             unique_name, tombstone_ms, created_at, enqueued_at, run_at, token)
                         VALUES (?1, ?2, 'pending', ?3, ?4, 0, ?5, ?6, ?7, ?7, ?8, 0)",
                    )?;
                    let mut ids = Vec::with_capacity(tasks.len());
                    for t in &tasks {
                        insert.execute(params![
                            t.task,
                            t.queue,
                            to_json(&t.payload),
                            t.priority,
                            t.unique_name,
                            ms(t.tombstone),
                            now.0,
                            t.run_at.0
                        ])?;
                        let id = tx.last_insert_rowid();
                        if let Some(it) = &t.iteration {
                            tx.prepare_cached(
                                "INSERT INTO taskq_iterations (run, task, queue, filter, cursor,
                                     processed, batches, steps, total, state, started_at,
                                     updated_at, finished_at, error)
                                 VALUES (?1, ?2, ?3, ?4, NULL, 0, 0, 1, NULL, 'running', ?5, ?5,
                                     NULL, NULL)",
                            )?
                            .execute(params![
                                id,
                                t.task,
                                t.queue,
                                to_json(&it.filter),
                                now.0
                            ])?;
                            tx.prepare_cached("UPDATE taskq_tasks SET run_id = ?1 WHERE id = ?1")?
                                .execute([id])?;
                        }
                        ids.push(TaskId(id));
                    }
                    Ok(ids)
                })
            })
            .await?;
        self.notify.notify_waiters();
        Ok(ids)
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedTask>, StoreError> {
        let req = req.clone();
        self.call("claim", move |db| db.write(false, |tx| claim_tx(tx, &req)))
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
            db.write(false, |tx| {
                let mut st = tx.prepare_cached(
                    "UPDATE taskq_tasks SET lease_until = ?3
                     WHERE id = ?1 AND token = ?2 AND state = 'running'",
                )?;
                let mut lost = Vec::new();
                for l in &leases {
                    if st.execute(params![l.id.0, l.token, until.0])? == 0 {
                        lost.push(l.id);
                    }
                }
                Ok(lost)
            })
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
                db.write(false, |tx| {
                    let mut results = Vec::with_capacity(finished.len());
                    let mut woke = false;
                    for f in &finished {
                        match finish_one(tx, f, &worker, now.0)? {
                            Some(wakes) => {
                                woke |= wakes;
                                results.push(Ok(()));
                            }
                            None => results.push(Err(StoreError::LeaseLost(f.lease.id))),
                        }
                    }
                    Ok((results, woke))
                })
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
            db.write(false, |tx| {
                let Some((run, _)) = held(tx, lease)? else {
                    return Err(StoreError::LeaseLost(lease.id).into());
                };
                let run = run.ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "task {} is not a step of an iterative run",
                        lease.id
                    ))
                })?;
                let state: Option<String> = tx
                    .prepare_cached("SELECT state FROM taskq_iterations WHERE run = ?1")?
                    .query_row([run], |r| r.get(0))
                    .optional()?;
                let state =
                    state.ok_or_else(|| StoreError::NotFound(format!("iteration run {run}")))?;
                if run_state(&state)? != RunState::Running {
                    return Err(StoreError::LeaseLost(lease.id).into());
                }
                tx.prepare_cached(
                    "UPDATE taskq_iterations
                     SET cursor = ?2, processed = processed + ?3, batches = batches + 1,
                         total = COALESCE(?4, total), updated_at = ?5
                     WHERE run = ?1",
                )?
                .execute(params![
                    run,
                    to_json(&cp.cursor),
                    cp.processed.min(i64::MAX as u64) as i64,
                    cp.total.map(|t| t.min(i64::MAX as u64) as i64),
                    now.0
                ])?;
                // Attempts count tries at the current cursor: progress starts a new count.
                tx.prepare_cached("UPDATE taskq_tasks SET attempts = ?2 WHERE id = ?1")?
                    .execute(params![
                        lease.id.0,
                        crate::policy::ATTEMPTS_AFTER_CHECKPOINT
                    ])?;
                Ok(())
            })
        })
        .await
    }

    async fn next_due(&self, queues: &[String]) -> Result<Option<Timestamp>, StoreError> {
        let all = queues.is_empty();
        let wanted = serde_json::Value::from(queues.to_vec()).to_string();
        self.call("next_due", move |db| {
            db.read(|tx| {
                let filter = "(?1 OR queue IN (SELECT value FROM json_each(?2)))
                     AND queue NOT IN (SELECT name FROM taskq_queues WHERE paused <> 0)";
                let pending: Option<i64> = tx
                    .prepare_cached(&format!(
                        "SELECT run_at FROM taskq_tasks WHERE state = 'pending' AND {filter}
                         ORDER BY run_at LIMIT 1"
                    ))?
                    .query_row(params![all, wanted], |r| r.get(0))
                    .optional()?;
                let lease: Option<i64> = tx
                    .prepare_cached(&format!(
                        "SELECT MIN(lease_until) FROM taskq_tasks
                         WHERE state = 'running' AND {filter}"
                    ))?
                    .query_row(params![all, wanted], |r| r.get(0))?;
                Ok(match (pending, lease) {
                    (Some(a), Some(b)) => Some(Timestamp(a.min(b))),
                    (a, b) => a.or(b).map(Timestamp),
                })
            })
        })
        .await
    }

    async fn wait_for_work(&self, _queues: &[String], timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.call("listing queues", |db| {
            db.read(|tx| {
                let mut map: BTreeMap<String, QueueInfo> = BTreeMap::new();
                let mut st = tx.prepare_cached(
                    "SELECT name, paused, rate, burst, max_concurrent FROM taskq_queues",
                )?;
                let rows = st.query_map([], |r| {
                    Ok(QueueInfo {
                        name: r.get(0)?,
                        counts: Vec::new(),
                        paused: r.get::<_, i64>(1)? != 0,
                        config: QueueConfig {
                            rate: r.get(2)?,
                            burst: r.get::<_, Option<i64>>(3)?.map(u32_of),
                            max_concurrent: r.get::<_, Option<i64>>(4)?.map(u32_of),
                        },
                    })
                })?;
                for q in rows {
                    let q = q?;
                    map.insert(q.name.clone(), q);
                }
                let mut st = tx.prepare_cached(
                    "SELECT queue, state, COUNT(*) FROM taskq_tasks GROUP BY queue, state",
                )?;
                let rows = st.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?;
                for row in rows {
                    let (queue, state, n) = row?;
                    let state = task_state(&state)?;
                    map.entry(queue.clone())
                        .or_insert_with(|| QueueInfo {
                            name: queue,
                            ..QueueInfo::default()
                        })
                        .counts
                        .push((state, u64_of(n)));
                }
                Ok(map
                    .into_values()
                    .map(|mut q| {
                        q.counts.sort();
                        q
                    })
                    .collect())
            })
        })
        .await
    }

    async fn configure_queue(&self, queue: &str, config: QueueConfig) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        let queue = queue.to_string();
        self.call("configuring a queue", move |db| {
            db.write(true, |tx| {
                tx.prepare_cached(
                    "INSERT INTO taskq_queues (name, rate, burst, max_concurrent)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET rate = ?2, burst = ?3,
                         max_concurrent = ?4, bucket_tokens = NULL, bucket_refilled_at = NULL",
                )?
                .execute(params![
                    queue,
                    config.rate,
                    config.burst,
                    config.max_concurrent
                ])?;
                Ok(())
            })
        })
        .await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        let queue = queue.to_string();
        self.call("pausing or resuming a queue", move |db| {
            db.write(true, |tx| {
                tx.prepare_cached(
                    "INSERT INTO taskq_queues (name, paused) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET paused = ?2",
                )?
                .execute(params![queue, paused])?;
                Ok(())
            })
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
            db.write(true, |tx| {
                tx.prepare_cached(
                    "UPDATE taskq_iterations
                     SET state = 'cancelled', finished_at = ?2, updated_at = ?2,
                         error = 'its pending step ' || (SELECT t.id FROM taskq_tasks t
                             WHERE t.run_id = taskq_iterations.run AND t.state = 'pending'
                             LIMIT 1) || ' was purged from queue `' || ?1 || '`'
                     WHERE state = 'running' AND run IN (
                         SELECT run_id FROM taskq_tasks
                         WHERE queue = ?1 AND state = 'pending' AND run_id IS NOT NULL)",
                )?
                .execute(params![queue, now.0])?;
                bury(
                    tx,
                    "t.queue = ?1 AND t.state = 'pending'",
                    params![queue],
                    now,
                )?;
                let n = tx
                    .prepare_cached(
                        "DELETE FROM taskq_tasks WHERE queue = ?1 AND state = 'pending'",
                    )?
                    .execute([queue])?;
                Ok(n as u64)
            })
        })
        .await
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<TaskInfo>, StoreError> {
        let q = q.clone();
        self.call("listing tasks", move |db| {
            db.read(|tx| {
                // Only the filters given are written into the SQL, so that SQLite can use
                // the `(state, id)` index or walk the primary key backwards.
                let mut sql = format!("SELECT {TASK_COLUMNS} FROM taskq_tasks WHERE 1");
                let mut args: Vec<rusqlite::types::Value> = Vec::new();
                if let Some(b) = q.before {
                    args.push(b.0.into());
                    sql.push_str(&format!(" AND id < ?{}", args.len()));
                }
                if let Some(queue) = &q.queue {
                    args.push(queue.clone().into());
                    sql.push_str(&format!(" AND queue = ?{}", args.len()));
                }
                if let Some(s) = q.state {
                    args.push(s.as_str().to_string().into());
                    sql.push_str(&format!(" AND state = ?{}", args.len()));
                }
                if let Some(t) = &q.task {
                    args.push(t.clone().into());
                    sql.push_str(&format!(" AND task = ?{}", args.len()));
                }
                let limit = if q.limit == 0 { 100 } else { q.limit };
                args.push((limit.min(i64::MAX as usize) as i64).into());
                sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
                let mut st = tx.prepare_cached(&sql)?;
                let rows = st.query_map(rusqlite::params_from_iter(args), RawTask::read)?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(r?.decode()?);
                }
                Ok(out)
            })
        })
        .await
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskDetail>, StoreError> {
        self.call("reading a task", move |db| {
            db.read(|tx| {
                let raw = tx
                    .prepare_cached(&format!(
                        "SELECT {TASK_COLUMNS} FROM taskq_tasks WHERE id = ?1"
                    ))?
                    .query_row([id.0], RawTask::read)
                    .optional()?;
                let Some(raw) = raw else {
                    return Ok(None);
                };
                let info = raw.decode()?;
                let mut st = tx.prepare_cached(
                    "SELECT attempt, worker, started_at, finished_at, outcome, error
                     FROM taskq_attempts WHERE task_id = ?1 ORDER BY seq",
                )?;
                let rows = st.query_map([id.0], |r| {
                    Ok(AttemptInfo {
                        attempt: u32_of(r.get(0)?),
                        worker: r.get(1)?,
                        started_at: Timestamp(r.get(2)?),
                        finished_at: Timestamp(r.get(3)?),
                        outcome: r.get(4)?,
                        error: r.get(5)?,
                    })
                })?;
                let mut attempts = Vec::new();
                for a in rows {
                    attempts.push(a?);
                }
                Ok(Some(TaskDetail { info, attempts }))
            })
        })
        .await
    }

    async fn run_now(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.call("running a task now", move |db| {
            db.write(true, |tx| {
                let state: Option<String> = tx
                    .prepare_cached("SELECT state FROM taskq_tasks WHERE id = ?1")?
                    .query_row([id.0], |r| r.get(0))
                    .optional()?;
                let state =
                    task_state(&state.ok_or_else(|| StoreError::NotFound(format!("task {id}")))?)?;
                if state != TaskState::Pending {
                    return Err(StoreError::Conflict(format!(
                        "task {id} is {state}, only a pending task can be run now"
                    ))
                    .into());
                }
                tx.prepare_cached("UPDATE taskq_tasks SET run_at = ?2 WHERE id = ?1")?
                    .execute(params![id.0, now.0])?;
                Ok(())
            })
        })
        .await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn delete(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.call("deleting a task", move |db| {
            db.write(true, |tx| {
                tx.prepare_cached(
                    "UPDATE taskq_iterations
                     SET state = 'cancelled', finished_at = ?2, updated_at = ?2,
                         error = 'its step ' || ?1 || ' was deleted'
                     WHERE state = 'running' AND run = (
                         SELECT run_id FROM taskq_tasks
                         WHERE id = ?1 AND state IN ('pending', 'running'))",
                )?
                .execute(params![id.0, now.0])?;
                bury(tx, "t.id = ?1", params![id.0], now)?;
                let n = tx
                    .prepare_cached("DELETE FROM taskq_tasks WHERE id = ?1")?
                    .execute([id.0])?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("task {id}")).into());
                }
                Ok(())
            })
        })
        .await
    }

    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.call("retrying a task", move |db| {
            db.write(true, |tx| {
                let row: Option<(String, Option<i64>, Option<String>)> = tx
                    .prepare_cached(
                        "SELECT state, run_id, unique_name FROM taskq_tasks WHERE id = ?1",
                    )?
                    .query_row([id.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                let (state, run, name) =
                    row.ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
                let state = task_state(&state)?;
                if !matches!(state, TaskState::Dead | TaskState::Failed) {
                    return Err(StoreError::Conflict(format!(
                        "task {id} is {state}, only a dead or failed task can be retried"
                    ))
                    .into());
                }
                if let Some(name) = name {
                    let taken: Option<i64> = tx
                        .prepare_cached(
                            "SELECT id FROM taskq_tasks WHERE unique_name = ?1 AND id != ?2
                               AND state IN ('pending', 'running') LIMIT 1",
                        )?
                        .query_row(params![name, id.0], |r| r.get(0))
                        .optional()?;
                    if taken.is_some() {
                        return Err(StoreError::Conflict(format!(
                            "task {id} cannot be retried: another live task has its unique name"
                        ))
                        .into());
                    }
                }
                tx.prepare_cached(
                    "UPDATE taskq_tasks SET state = 'pending', attempts = 0, enqueued_at = ?2,
                         run_at = ?2, finished_at = NULL
                     WHERE id = ?1",
                )?
                .execute(params![id.0, now.0])?;
                if let Some(run) = run {
                    tx.prepare_cached(
                        "UPDATE taskq_iterations SET state = 'running', finished_at = NULL,
                             error = NULL, updated_at = ?2
                         WHERE run = ?1",
                    )?
                    .execute(params![run, now.0])?;
                }
                Ok(())
            })
        })
        .await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn iteration(&self, run: TaskId) -> Result<Option<IterationInfo>, StoreError> {
        self.call("reading an iteration run", move |db| {
            db.read(|tx| read_iteration(tx, run.0))
        })
        .await
    }

    async fn iterations(&self, limit: usize) -> Result<Vec<IterationInfo>, StoreError> {
        self.call("listing iteration runs", move |db| {
            db.read(|tx| {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {ITERATION_COLUMNS} FROM taskq_iterations ORDER BY run DESC LIMIT ?1"
                ))?;
                let rows =
                    st.query_map([limit.min(i64::MAX as usize) as i64], RawIteration::read)?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(r?.decode()?);
                }
                Ok(out)
            })
        })
        .await
    }

    async fn cancel_iteration(&self, run: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.call("cancelling an iteration run", move |db| {
            db.write(true, |tx| {
                let state: Option<String> = tx
                    .prepare_cached("SELECT state FROM taskq_iterations WHERE run = ?1")?
                    .query_row([run.0], |r| r.get(0))
                    .optional()?;
                let state =
                    state.ok_or_else(|| StoreError::NotFound(format!("iteration run {run}")))?;
                let state = run_state(&state)?;
                if state != RunState::Running {
                    return Err(StoreError::Conflict(format!(
                        "run {run} is {}, only a running run can be cancelled",
                        state.as_str()
                    ))
                    .into());
                }
                tx.prepare_cached(
                    "UPDATE taskq_iterations SET state = 'cancelled', finished_at = ?2,
                         updated_at = ?2
                     WHERE run = ?1",
                )?
                .execute(params![run.0, now.0])?;
                tx.prepare_cached(
                    "UPDATE taskq_tasks SET state = 'cancelled', finished_at = ?2, worker = NULL,
                         lease_until = NULL
                     WHERE run_id = ?1 AND state IN ('pending', 'running')",
                )?
                .execute(params![run.0, now.0])?;
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryStore;
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static SEQ: AtomicU32 = AtomicU32::new(0);

    /// A fresh database path under the temp dir, removed (with its WAL files) on drop.
    struct TempDb(String);

    impl TempDb {
        fn new(name: &str) -> TempDb {
            let n = SEQ.fetch_add(1, Ordering::SeqCst);
            let path = std::env::temp_dir().join(format!(
                "taskq-sqlite-test-{}-{name}-{n}.db",
                std::process::id()
            ));
            let t = TempDb(path.to_string_lossy().into_owned());
            t.clean();
            t
        }
        fn clean(&self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0));
            }
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            self.clean();
        }
    }

    async fn open(t: &TempDb) -> SqliteStore {
        match SqliteStore::open(&t.0).await {
            Ok(s) => s,
            Err(e) => panic!("open {}: {e}", t.0),
        }
    }

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    fn at(ms: i64) -> Timestamp {
        Timestamp(T0.0 + ms)
    }

    fn new_task(queue: &str, priority: i32, run_at: Timestamp) -> NewTask {
        NewTask {
            task: "tests::job".into(),
            queue: queue.into(),
            payload: serde_json::json!({ "n": priority, "q": queue }),
            priority,
            run_at,
            unique_name: None,
            tombstone: Duration::from_secs(60),
            iteration: None,
        }
    }

    fn req(queues: &[&str], limit: usize, now: Timestamp) -> ClaimRequest {
        ClaimRequest {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            worker: "w1".into(),
            limit,
            lease: Duration::from_secs(30),
            now,
        }
    }

    fn finish(lease: Lease, outcome: Outcome, started_at: Timestamp) -> Finish {
        Finish {
            lease,
            outcome,
            started_at,
        }
    }

    #[tokio::test]
    async fn enqueue_claim_finish_in_priority_order() -> Result<(), StoreError> {
        let db = TempDb::new("basic");
        let s = open(&db).await;
        assert_eq!(s.backend(), "sqlite");
        let ids = s
            .enqueue(
                vec![
                    new_task("a", 0, at(0)),
                    new_task("a", 5, at(10)),
                    new_task("b", 5, at(5)),
                    new_task("a", 0, at(1_000)),
                ],
                at(0),
            )
            .await?;
        assert_eq!(ids, vec![TaskId(1), TaskId(2), TaskId(3), TaskId(4)]);
        let got = s.claim(&req(&[], 10, at(20))).await?;
        let order: Vec<i64> = got.iter().map(|c| c.lease.id.0).collect();
        assert_eq!(order, vec![3, 2, 1], "priority desc, then run_at, then id");
        assert!(got.iter().all(|c| c.attempt == 1));
        assert_eq!(got[0].payload, serde_json::json!({ "n": 5, "q": "b" }));
        assert!(s.claim(&req(&[], 10, at(20))).await?.is_empty());

        let res = s
            .finish(
                vec![
                    finish(got[0].lease, Outcome::Done, at(20)),
                    finish(
                        got[1].lease,
                        Outcome::Failed {
                            error: "bad".into(),
                        },
                        at(20),
                    ),
                    finish(
                        Lease {
                            id: got[2].lease.id,
                            token: got[2].lease.token + 100,
                        },
                        Outcome::Done,
                        at(20),
                    ),
                ],
                "w1",
                at(30),
            )
            .await?;
        assert!(res[0].is_ok() && res[1].is_ok());
        assert!(matches!(res[2], Err(StoreError::LeaseLost(TaskId(1)))));
        let d = s
            .task(TaskId(3))
            .await?
            .ok_or(StoreError::NotFound("3".into()))?;
        assert_eq!(d.info.state, TaskState::Done);
        assert_eq!(d.info.finished_at, Some(at(30)));
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].outcome, "done");
        let f = s
            .task(TaskId(2))
            .await?
            .ok_or(StoreError::NotFound("2".into()))?;
        assert_eq!(f.info.state, TaskState::Failed);
        assert_eq!(f.info.last_error.as_deref(), Some("bad"));
        // Heartbeat: a held lease is extended, a wrong token is reported lost.
        let lost = s
            .heartbeat(
                &[
                    got[2].lease,
                    Lease {
                        id: TaskId(3),
                        token: got[0].lease.token,
                    },
                ],
                "w1",
                at(90_000),
            )
            .await?;
        assert_eq!(lost, vec![TaskId(3)]);
        let one = s
            .task(TaskId(1))
            .await?
            .ok_or(StoreError::NotFound("1".into()))?;
        assert_eq!(one.info.lease_until, Some(at(90_000)));
        assert_eq!(s.next_due(&[]).await?, Some(at(1_000)));
        assert_eq!(s.next_due(&["b".into()]).await?, None);
        Ok(())
    }

    #[tokio::test]
    async fn lapsed_lease_is_reclaimed_and_recorded() -> Result<(), StoreError> {
        let db = TempDb::new("lapse");
        let s = open(&db).await;
        s.enqueue(vec![new_task("a", 0, at(0))], at(0)).await?;
        let first = s.claim(&req(&["a"], 1, at(0))).await?;
        assert_eq!(first.len(), 1);
        // Lease is 30 s: held until just before 30 s, lapsed at 30 s.
        assert!(s.claim(&req(&["a"], 1, at(29_999))).await?.is_empty());
        assert_eq!(s.next_due(&[]).await?, Some(at(30_000)));
        let second = s.claim(&req(&["a"], 1, at(30_000))).await?;
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].attempt, 2);
        assert_ne!(second[0].lease.token, first[0].lease.token);
        let d = s
            .task(TaskId(1))
            .await?
            .ok_or(StoreError::NotFound("1".into()))?;
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].outcome, "lease lapsed");
        assert_eq!(d.attempts[0].attempt, 1);
        assert_eq!(d.info.last_error.as_deref(), Some(LAPSED.1));
        // The first holder is fenced off everywhere.
        let r = s
            .finish(
                vec![finish(first[0].lease, Outcome::Done, at(0))],
                "w1",
                at(30_001),
            )
            .await?;
        assert!(matches!(r[0], Err(StoreError::LeaseLost(_))));
        assert_eq!(
            s.heartbeat(&[first[0].lease], "w1", at(60_000)).await?,
            vec![TaskId(1)]
        );
        Ok(())
    }

    #[tokio::test]
    async fn unique_names_all_or_nothing_and_tombstones() -> Result<(), StoreError> {
        let db = TempDb::new("unique");
        let s = open(&db).await;
        let named = |n: &str| NewTask {
            unique_name: Some(n.into()),
            ..new_task("a", 0, at(0))
        };
        s.enqueue(vec![named("x")], at(0)).await?;
        // Live name: the whole batch is refused and nothing is stored.
        let e = s.enqueue(vec![named("y"), named("x")], at(0)).await;
        assert!(matches!(e, Err(StoreError::AlreadyExists(ref n)) if n == "x"));
        let e = s.enqueue(vec![named("z"), named("z")], at(0)).await;
        assert!(matches!(e, Err(StoreError::AlreadyExists(ref n)) if n == "z"));
        assert_eq!(s.list_tasks(&TaskQuery::default()).await?.len(), 1);
        // Finished: the name stays taken for the tombstone window (60 s), then frees.
        let c = s.claim(&req(&[], 1, at(0))).await?;
        s.finish(
            vec![finish(c[0].lease, Outcome::Done, at(0))],
            "w1",
            at(1_000),
        )
        .await?;
        assert!(matches!(
            s.enqueue(vec![named("x")], at(60_999)).await,
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(
            s.enqueue(vec![named("x")], at(61_000)).await?,
            vec![TaskId(2)]
        );
        Ok(())
    }

    #[tokio::test]
    async fn iterative_checkpoint_continue_and_cancel() -> Result<(), StoreError> {
        let db = TempDb::new("iter");
        let s = open(&db).await;
        let ids = s
            .enqueue(
                vec![NewTask {
                    iteration: Some(NewIteration {
                        filter: serde_json::json!({ "program": "gsoc" }),
                    }),
                    ..new_task("it", 0, at(0))
                }],
                at(0),
            )
            .await?;
        let run = ids[0];
        let c = s.claim(&req(&["it"], 1, at(0))).await?;
        let cur = c[0]
            .iteration
            .clone()
            .ok_or(StoreError::NotFound("cursor".into()))?;
        assert_eq!((cur.run, cur.cursor, cur.processed), (run, None, 0));
        s.checkpoint(
            c[0].lease,
            Checkpoint {
                cursor: serde_json::json!(200),
                processed: 200,
                total: Some(500),
            },
            at(10),
        )
        .await?;
        let r = s
            .finish(
                vec![finish(
                    c[0].lease,
                    Outcome::Continue { run_at: at(20) },
                    at(0),
                )],
                "w1",
                at(15),
            )
            .await?;
        assert!(r[0].is_ok());
        let step2 = s.list_tasks(&TaskQuery::default()).await?;
        assert_eq!(step2[0].id, TaskId(2));
        assert_eq!(step2[0].run, Some(run));
        assert_eq!(step2[0].state, TaskState::Pending);
        assert_eq!(step2[1].state, TaskState::Done);
        let c2 = s.claim(&req(&["it"], 1, at(20))).await?;
        let cur = c2[0]
            .iteration
            .clone()
            .ok_or(StoreError::NotFound("cursor".into()))?;
        assert_eq!(cur.cursor, Some(serde_json::json!(200)));
        assert_eq!((cur.processed, cur.batches, cur.total), (200, 1, Some(500)));
        let it = s
            .iteration(run)
            .await?
            .ok_or(StoreError::NotFound("run".into()))?;
        assert_eq!(it.steps, 2);
        assert_eq!(it.percent(), Some(40.0));
        // Cancel while step 2 runs: its checkpoint and finish lose the lease.
        s.cancel_iteration(run, at(25)).await?;
        assert!(matches!(
            s.checkpoint(
                c2[0].lease,
                Checkpoint {
                    cursor: serde_json::json!(400),
                    processed: 200,
                    total: None
                },
                at(26)
            )
            .await,
            Err(StoreError::LeaseLost(_))
        ));
        let it = s
            .iteration(run)
            .await?
            .ok_or(StoreError::NotFound("run".into()))?;
        assert_eq!(it.state, RunState::Cancelled);
        assert!(matches!(
            s.cancel_iteration(run, at(27)).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.iterations(10).await?.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn retry_dead_and_release() -> Result<(), StoreError> {
        let db = TempDb::new("retry");
        let s = open(&db).await;
        s.enqueue(vec![new_task("a", 0, at(0))], at(0)).await?;
        let c = s.claim(&req(&[], 1, at(0))).await?;
        s.finish(
            vec![finish(
                c[0].lease,
                Outcome::Retry {
                    error: "try again".into(),
                    run_at: at(5_000),
                },
                at(0),
            )],
            "w1",
            at(1),
        )
        .await?;
        assert!(s.claim(&req(&[], 1, at(4_999))).await?.is_empty());
        let c = s.claim(&req(&[], 1, at(5_000))).await?;
        assert_eq!(c[0].attempt, 2);
        s.finish(
            vec![finish(c[0].lease, Outcome::Release, at(5_000))],
            "w1",
            at(5_001),
        )
        .await?;
        let c = s.claim(&req(&[], 1, at(5_001))).await?;
        assert_eq!(c[0].attempt, 2, "a released attempt does not count");
        s.finish(
            vec![finish(
                c[0].lease,
                Outcome::Dead {
                    error: "out of attempts".into(),
                },
                at(5_001),
            )],
            "w1",
            at(5_002),
        )
        .await?;
        assert!(matches!(
            s.run_now(TaskId(1), at(6_000)).await,
            Err(StoreError::Conflict(_))
        ));
        s.retry(TaskId(1), at(9_000)).await?;
        let d = s
            .task(TaskId(1))
            .await?
            .ok_or(StoreError::NotFound("1".into()))?;
        assert_eq!(d.info.state, TaskState::Pending);
        assert_eq!((d.info.attempts, d.info.enqueued_at), (0, at(9_000)));
        let outcomes: Vec<&str> = d.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, vec!["retry", "released", "dead"]);
        assert!(matches!(
            s.retry(TaskId(1), at(9_000)).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.retry(TaskId(7), at(9_000)).await,
            Err(StoreError::NotFound(_))
        ));
        s.delete(TaskId(1), at(0)).await?;
        assert!(s.task(TaskId(1)).await?.is_none());
        assert!(matches!(
            s.delete(TaskId(1), at(0)).await,
            Err(StoreError::NotFound(_))
        ));
        Ok(())
    }

    #[tokio::test]
    async fn rate_limit_concurrency_and_pause() -> Result<(), StoreError> {
        let db = TempDb::new("rate");
        let s = open(&db).await;
        s.configure_queue(
            "r",
            QueueConfig {
                rate: Some(1.0),
                burst: Some(2),
                max_concurrent: None,
            },
        )
        .await?;
        s.configure_queue(
            "m",
            QueueConfig {
                max_concurrent: Some(1),
                ..QueueConfig::default()
            },
        )
        .await?;
        let mut batch: Vec<NewTask> = (0..5).map(|_| new_task("r", 0, at(0))).collect();
        batch.extend((0..3).map(|_| new_task("m", 0, at(0))));
        s.enqueue(batch, at(0)).await?;
        assert_eq!(s.claim(&req(&["r"], 10, at(0))).await?.len(), 2, "burst");
        assert_eq!(s.claim(&req(&["r"], 10, at(500))).await?.len(), 0);
        assert_eq!(s.claim(&req(&["r"], 10, at(1_000))).await?.len(), 1, "rate");
        let m = s.claim(&req(&["m"], 10, at(0))).await?;
        assert_eq!(m.len(), 1, "max_concurrent");
        assert!(s.claim(&req(&["m"], 10, at(0))).await?.is_empty());
        s.finish(vec![finish(m[0].lease, Outcome::Done, at(0))], "w1", at(1))
            .await?;
        // Pause: nothing claimable, not due either; resume brings it back.
        s.set_paused("m", true).await?;
        assert!(s
            .claim(&req(&[], 10, at(2)))
            .await?
            .iter()
            .all(|c| c.queue != "m"));
        assert_eq!(s.next_due(&["m".into()]).await?, None);
        s.set_paused("m", false).await?;
        assert_eq!(s.claim(&req(&["m"], 10, at(3))).await?.len(), 1);
        let qs = s.queues().await?;
        let m = qs
            .iter()
            .find(|q| q.name == "m")
            .ok_or(StoreError::NotFound("m".into()))?;
        assert_eq!(
            (m.count(TaskState::Done), m.count(TaskState::Running)),
            (1, 1)
        );
        assert_eq!(m.config.max_concurrent, Some(1));
        assert_eq!(s.purge("m", at(0)).await?, 1);
        assert_eq!(s.purge("r", at(0)).await?, 2);
        Ok(())
    }

    /// Only named rows leave tombstones (one row per name), and a version 1 database is
    /// migrated to version 2 on open.
    #[tokio::test]
    async fn tombstones_only_for_names_and_migrated_from_v1() -> Result<(), StoreError> {
        let db = TempDb::new("tombstones");
        {
            let s = open(&db).await;
            drop(s);
            // Back to version 1, as a database written by the previous release.
            let conn = Connection::open(&db.0).map_err(StoreError::backend)?;
            conn.execute_batch(
                "DROP TABLE taskq_tombstones; DELETE FROM taskq_schema WHERE version > 1;",
            )
            .map_err(StoreError::backend)?;
        }
        let s = open(&db).await;
        let count = |db: &TempDb| -> Result<i64, StoreError> {
            let conn = Connection::open(&db.0).map_err(StoreError::backend)?;
            conn.query_row("SELECT COUNT(*) FROM taskq_tombstones", [], |r| r.get(0))
                .map_err(StoreError::backend)
        };
        let mut named = new_task("a", 0, at(60_000));
        named.unique_name = Some("n".into());
        let ids = s
            .enqueue(
                vec![
                    new_task("a", 0, at(60_000)),
                    new_task("p", 0, at(0)),
                    named.clone(),
                ],
                at(0),
            )
            .await?;
        s.delete(ids[0], at(1)).await?;
        assert_eq!(s.purge("p", at(1)).await?, 1);
        assert_eq!(count(&db)?, 0, "unnamed tasks leave nothing");
        s.delete(ids[2], at(1)).await?;
        assert_eq!(count(&db)?, 1);
        assert!(matches!(
            s.enqueue(vec![named.clone()], at(60_000)).await,
            Err(StoreError::AlreadyExists(_))
        ));
        s.enqueue(vec![named], at(60_001)).await?;
        Ok(())
    }

    #[tokio::test]
    async fn survives_reopen_and_refuses_newer_schema() -> Result<(), StoreError> {
        let db = TempDb::new("reopen");
        {
            let s = open(&db).await;
            s.enqueue(vec![new_task("a", 3, at(0))], at(0)).await?;
            s.set_paused("b", true).await?;
        }
        let s = open(&db).await;
        let all = s.list_tasks(&TaskQuery::default()).await?;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].priority, 3);
        assert!(s.queues().await?.iter().any(|q| q.name == "b" && q.paused));
        // A second store on the same file (another process, in effect) sees the same data
        // and shares lease tokens safely.
        let other = open(&db).await;
        let c = other.claim(&req(&[], 10, at(0))).await?;
        assert_eq!(c.len(), 1);
        assert!(s.claim(&req(&[], 10, at(0))).await?.is_empty());
        drop((s, other));
        {
            let conn = Connection::open(&db.0).map_err(StoreError::backend)?;
            conn.execute("INSERT INTO taskq_schema (version) VALUES (99)", [])
                .map_err(StoreError::backend)?;
        }
        assert!(matches!(
            SqliteStore::open(&db.0).await,
            Err(StoreError::SchemaTooNew {
                found: 99,
                known: SCHEMA_VERSION
            })
        ));
        let bad = SqliteStore::open("/nonexistent-dir/x/taskq.db").await;
        match bad {
            Err(StoreError::Backend(m)) => {
                assert!(m.contains("/nonexistent-dir/x/taskq.db"), "{m}")
            }
            other => panic!("expected a backend error, got {other:?}"),
        }
        Ok(())
    }

    #[tokio::test]
    async fn wait_for_work_wakes_on_enqueue() -> Result<(), StoreError> {
        let db = TempDb::new("wake");
        let s = Arc::new(open(&db).await);
        let s2 = s.clone();
        let waiter = tokio::spawn(async move {
            let t = std::time::Instant::now();
            s2.wait_for_work(&[], Duration::from_secs(30)).await;
            t.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.enqueue(vec![new_task("a", 0, at(0))], at(0)).await?;
        let waited = waiter.await.map_err(StoreError::backend)?;
        assert!(waited < Duration::from_secs(10), "woke after {waited:?}");
        Ok(())
    }

    /// The child side of [`kill_9_loses_no_acknowledged_task`]: when the variable is set,
    /// enqueues tasks one by one on that file and appends each acknowledged id to the
    /// `.acks` file beside it, until it is killed. A no-op in a normal test run.
    #[tokio::test]
    async fn child_enqueue_until_killed() -> Result<(), StoreError> {
        let Ok(path) = std::env::var("TASKQ_SQLITE_TEST_CHILD_DB") else {
            return Ok(());
        };
        use std::io::Write;
        let s = SqliteStore::open(&path).await?;
        let mut acks = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{path}.acks"))
            .map_err(StoreError::backend)?;
        for i in 0..100_000 {
            let ids = s
                .enqueue(vec![new_task("crash", i % 3, at(0))], at(0))
                .await?;
            writeln!(acks, "{}", ids[0].0).map_err(StoreError::backend)?;
        }
        Ok(())
    }

    /// Another process enqueues on the same file while this one claims from it; the other
    /// process is killed with SIGKILL; every id it was acknowledged is in the file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kill_9_loses_no_acknowledged_task() -> Result<(), StoreError> {
        let db = TempDb::new("kill9");
        let acks_path = format!("{}.acks", db.0);
        let _ = std::fs::remove_file(&acks_path);
        let s = open(&db).await;
        let exe = std::env::current_exe().map_err(StoreError::backend)?;
        let mut child = std::process::Command::new(exe)
            .args([
                "--exact",
                "store::sqlite::tests::child_enqueue_until_killed",
                "--test-threads=1",
            ])
            .env("TASKQ_SQLITE_TEST_CHILD_DB", &db.0)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(StoreError::backend)?;
        let read_acks = || -> Vec<i64> {
            std::fs::read_to_string(&acks_path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        };
        let started = std::time::Instant::now();
        let mut claimed = 0;
        while read_acks().len() < 200 {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("the child process acknowledged too few tasks in 60 s");
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the child process exited early: {status}");
            }
            // Claim and finish from this process meanwhile: two writers on one file.
            let c = s.claim(&req(&["crash"], 10, at(0))).await?;
            claimed += c.len();
            let fs = c
                .iter()
                .map(|c| finish(c.lease, Outcome::Done, at(0)))
                .collect();
            s.finish(fs, "w1", at(0)).await?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill().map_err(StoreError::backend)?;
        let _ = child.wait();
        let acked = read_acks();
        drop(s);
        let s = open(&db).await;
        let stored: HashSet<i64> = s
            .list_tasks(&TaskQuery {
                limit: 1_000_000,
                ..TaskQuery::default()
            })
            .await?
            .iter()
            .map(|t| t.id.0)
            .collect();
        let missing: Vec<&i64> = acked.iter().filter(|id| !stored.contains(id)).collect();
        assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
        assert!(
            claimed > 0,
            "the parent never claimed while the child wrote"
        );
        let _ = std::fs::remove_file(&acks_path);
        Ok(())
    }

    /// Runs one random sequence of operations against this store and the in-memory
    /// reference, comparing every answer.
    #[tokio::test]
    async fn matches_memory_store_on_random_operations() -> Result<(), StoreError> {
        for seed in 0..6u64 {
            let db = TempDb::new("diff");
            let sql = open(&db).await;
            let mem = MemoryStore::new();
            differential(seed, &sql, &mem).await?;
        }
        Ok(())
    }

    fn show<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> String {
        match r {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    async fn differential(seed: u64, a: &SqliteStore, b: &MemoryStore) -> Result<(), StoreError> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let queues = ["q1", "q2", "q3"];
        let mut now = 0i64;
        let mut held: Vec<(Lease, Timestamp)> = Vec::new();
        let mut claimed = 0usize;
        let mut finished = 0usize;
        for step in 0..400 {
            now += rng.i64(0..800);
            let t = at(now);
            let q = queues[rng.usize(0..queues.len())];
            let op = rng.u32(0..100);
            let (ra, rb, what) = match op {
                0..=24 => {
                    let n = rng.usize(1..4);
                    let tasks: Vec<NewTask> = (0..n)
                        .map(|_| NewTask {
                            priority: rng.i32(0..3),
                            unique_name: if rng.u8(0..4) == 0 {
                                Some(format!("u{}", rng.u8(0..4)))
                            } else {
                                None
                            },
                            tombstone: Duration::from_millis(rng.u64(0..3_000)),
                            iteration: if rng.u8(0..6) == 0 {
                                Some(NewIteration {
                                    filter: serde_json::json!({ "s": step }),
                                })
                            } else {
                                None
                            },
                            ..new_task(q, 0, at(now + rng.i64(-500..1_500)))
                        })
                        .collect();
                    (
                        show(&a.enqueue(tasks.clone(), t).await),
                        show(&b.enqueue(tasks, t).await),
                        "enqueue",
                    )
                }
                25..=44 => {
                    let qs: Vec<&str> = if rng.bool() { vec![] } else { vec![q] };
                    let mut r = req(&qs, rng.usize(1..5), t);
                    r.lease = Duration::from_millis(rng.u64(500..4_000));
                    let x = a.claim(&r).await;
                    let y = b.claim(&r).await;
                    if let Ok(c) = &x {
                        claimed += c.len();
                        held.extend(c.iter().map(|c| (c.lease, t)));
                    }
                    (show(&x), show(&y), "claim")
                }
                45..=64 if !held.is_empty() => {
                    let n = rng.usize(1..=held.len().min(3));
                    let fs: Vec<Finish> = (0..n)
                        .map(|_| {
                            let (lease, started) = held.swap_remove(rng.usize(0..held.len()));
                            let outcome = match rng.u8(0..6) {
                                0 => Outcome::Done,
                                1 => Outcome::Failed { error: "f".into() },
                                2 => Outcome::Retry {
                                    error: "r".into(),
                                    run_at: at(now + 700),
                                },
                                3 => Outcome::Dead { error: "d".into() },
                                4 => Outcome::Release,
                                _ => Outcome::Continue {
                                    run_at: at(now + 100),
                                },
                            };
                            finish(lease, outcome, started)
                        })
                        .collect();
                    (
                        show(&a.finish(fs.clone(), "w1", t).await),
                        show(&b.finish(fs, "w1", t).await),
                        "finish",
                    )
                }
                65..=69 if !held.is_empty() => {
                    let (lease, _) = held[rng.usize(0..held.len())];
                    let cp = Checkpoint {
                        cursor: serde_json::json!(step),
                        processed: rng.u64(1..50),
                        total: if rng.bool() { Some(1000) } else { None },
                    };
                    (
                        show(&a.checkpoint(lease, cp.clone(), t).await),
                        show(&b.checkpoint(lease, cp, t).await),
                        "checkpoint",
                    )
                }
                70..=73 if !held.is_empty() => {
                    let ls: Vec<Lease> = held.iter().map(|h| h.0).collect();
                    let until = at(now + 3_000);
                    (
                        show(&a.heartbeat(&ls, "w1", until).await),
                        show(&b.heartbeat(&ls, "w1", until).await),
                        "heartbeat",
                    )
                }
                74..=76 => {
                    let cfg = QueueConfig {
                        rate: if rng.bool() {
                            Some(rng.f64() * 3.0 + 0.2)
                        } else {
                            None
                        },
                        burst: if rng.bool() {
                            Some(rng.u32(1..4))
                        } else {
                            None
                        },
                        max_concurrent: if rng.bool() {
                            Some(rng.u32(1..3))
                        } else {
                            None
                        },
                    };
                    (
                        show(&a.configure_queue(q, cfg.clone()).await),
                        show(&b.configure_queue(q, cfg).await),
                        "configure",
                    )
                }
                77..=79 => {
                    let p = rng.bool();
                    (
                        show(&a.set_paused(q, p).await),
                        show(&b.set_paused(q, p).await),
                        "pause",
                    )
                }
                80..=84 => {
                    let id = TaskId(rng.i64(1..40));
                    match rng.u8(0..4) {
                        0 => (
                            show(&a.retry(id, t).await),
                            show(&b.retry(id, t).await),
                            "retry",
                        ),
                        1 => (
                            show(&a.run_now(id, t).await),
                            show(&b.run_now(id, t).await),
                            "run_now",
                        ),
                        2 if rng.u8(0..3) == 0 => (
                            show(&a.delete(id, Timestamp(now)).await),
                            show(&b.delete(id, Timestamp(now)).await),
                            "delete",
                        ),
                        _ => (
                            show(&a.cancel_iteration(id, t).await),
                            show(&b.cancel_iteration(id, t).await),
                            "cancel_iteration",
                        ),
                    }
                }
                85 => (
                    show(&a.purge(q, Timestamp(now)).await),
                    show(&b.purge(q, Timestamp(now)).await),
                    "purge",
                ),
                _ => {
                    let qs: Vec<String> = if rng.bool() { vec![] } else { vec![q.into()] };
                    (
                        show(&a.next_due(&qs).await),
                        show(&b.next_due(&qs).await),
                        "next_due",
                    )
                }
            };
            assert_eq!(ra, rb, "seed {seed} step {step}: {what} differs");
            if what == "finish" {
                finished += ra.matches("Ok(())").count();
            }
            // Whole-store views, every few steps.
            if step % 10 == 0 || step == 399 {
                assert_eq!(
                    show(&a.queues().await),
                    show(&b.queues().await),
                    "seed {seed} step {step}: queues"
                );
                let query = TaskQuery {
                    limit: 1_000,
                    ..TaskQuery::default()
                };
                let la = a.list_tasks(&query).await?;
                assert_eq!(
                    show(&Ok::<_, StoreError>(&la)),
                    show(&b.list_tasks(&query).await),
                    "seed {seed} step {step}: tasks"
                );
                for info in &la {
                    assert_eq!(
                        show(&a.task(info.id).await),
                        show(&b.task(info.id).await),
                        "seed {seed} step {step}: task {}",
                        info.id
                    );
                }
                let filtered = TaskQuery {
                    queue: Some(q.into()),
                    state: Some(TaskState::ALL[rng.usize(0..6)]),
                    task: Some("tests::job".into()),
                    before: Some(TaskId(rng.i64(1..60))),
                    limit: 3,
                };
                assert_eq!(
                    show(&a.list_tasks(&filtered).await),
                    show(&b.list_tasks(&filtered).await),
                    "seed {seed} step {step}: filtered list"
                );
                assert_eq!(
                    show(&a.iterations(100).await),
                    show(&b.iterations(100).await),
                    "seed {seed} step {step}: iterations"
                );
            }
        }
        assert!(
            claimed > 30 && finished > 15,
            "seed {seed}: too little happened ({claimed} claimed, {finished} finished)"
        );
        Ok(())
    }
}
