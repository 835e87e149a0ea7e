//! What only the SQLite store has: a file that outlives the process (reopen, a second
//! store on the same file, a writer killed with SIGKILL), schema migration from an older
//! file and refusal of a newer one. The store rules every backend shares are the
//! conformance suite's (`tests/src/conformance.rs`), and the comparison with the memory
//! store on random operations is `tests/tests/stores_proptest.rs`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

use rusqlite::Connection;

use super::*;

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
        trace: None,
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

/// Only named rows leave tombstones (one row per name), and a version 1 database is
/// migrated to the current version on open.
#[tokio::test]
async fn tombstones_only_for_names_and_migrated_from_v1() -> Result<(), StoreError> {
    let db = TempDb::new("tombstones");
    {
        let s = open(&db).await;
        drop(s);
        // Back to version 1, as a database written by the previous release.
        let conn = Connection::open(&db.0).map_err(StoreError::backend)?;
        conn.execute_batch(
            "DROP TABLE taskq_tombstones;
             DROP TABLE taskq_queue_counts;
             DROP INDEX taskq_tasks_finished_queue; DROP INDEX taskq_tasks_finished_task;
             CREATE INDEX taskq_tasks_due ON taskq_tasks (state, run_at);
             DROP INDEX taskq_tasks_finished; DROP INDEX taskq_iterations_finished;
             ALTER TABLE taskq_queues DROP COLUMN keep_done_ms;
             ALTER TABLE taskq_queues DROP COLUMN keep_failed_ms;
             ALTER TABLE taskq_tasks DROP COLUMN trace;
             DROP TABLE taskq_schedules;
             DELETE FROM taskq_schema WHERE version > 1;",
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

/// The plan SQLite picks for `sql`, one line per step.
fn plan(conn: &Connection, sql: &str, args: &[rusqlite::types::Value]) -> Vec<String> {
    let mut st = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("explain {sql}: {e}"));
    let rows = st
        .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
        .unwrap_or_else(|e| panic!("explain {sql}: {e}"));
    rows.map(|r| r.unwrap_or_else(|e| panic!("explain {sql}: {e}")))
        .collect()
}

/// Every listing filter (queue, state, task name, any of them together) reads its page
/// through an index (a SEARCH), in id order (no sort) except live tasks of one queue,
/// which come through the claim index (live rows only), and the payload column is read
/// only when asked for; the claim's per-priority seek and the level seek
/// search the claim index by queue, priority and `run_at`; `queues()` reads the counts.
#[tokio::test]
async fn listings_claims_and_counts_search_indexes() -> Result<(), StoreError> {
    let db = TempDb::new("plans");
    drop(open(&db).await);
    let conn = Connection::open(&db.0).map_err(StoreError::backend)?;
    conn.execute_batch("ANALYZE").map_err(StoreError::backend)?;
    for queue in [None, Some("q")] {
        for state in [None, Some(TaskState::Done)] {
            for task in [None, Some("t")] {
                for before in [None, Some(TaskId(100))] {
                    for with_payload in [false, true] {
                        let q = TaskQuery {
                            queue: queue.map(str::to_string),
                            state,
                            task: task.map(str::to_string),
                            before,
                            limit: 10,
                            with_payload,
                            args_contains: None,
                        };
                        let states: Vec<Option<TaskState>> =
                            match (state, queue.is_some() || task.is_some()) {
                                (Some(s), _) => vec![Some(s)],
                                (None, true) => TaskState::ALL.into_iter().map(Some).collect(),
                                (None, false) => vec![None],
                            };
                        for st in states {
                            let (sql, args) = manage::list_sql(&q, st, 10);
                            assert_eq!(sql.contains("NULL AS payload"), !with_payload, "{sql}");
                            assert_eq!(sql.contains("state, payload,"), with_payload, "{sql}");
                            let p = plan(&conn, &sql, &args).join("; ");
                            // Live tasks of a queue come through the claim index (live
                            // rows only) and are sorted; every other read is in id order.
                            let live_of_queue =
                                queue.is_some() && st.is_some_and(TaskState::is_live);
                            if !live_of_queue {
                                assert!(!p.contains("TEMP B-TREE"), "{q:?} {st:?}: sorts: {p}");
                            }
                            if st.is_some() {
                                assert!(p.starts_with("SEARCH taskq_tasks USING"), "{q:?}: {p}");
                            }
                        }
                    }
                }
            }
        }
    }
    let level = plan(
        &conn,
        "SELECT id, priority, run_at FROM taskq_tasks
         WHERE state = 'pending' AND queue = ?1 AND priority = ?2 AND run_at <= ?3
         ORDER BY run_at, id LIMIT ?4",
        &["q".to_string().into(), 1.into(), 5.into(), 10.into()],
    )
    .join("; ");
    assert!(
        level.contains("(state=? AND queue=? AND priority=? AND run_at<?)")
            && !level.contains("TEMP B-TREE"),
        "{level}"
    );
    let next = plan(
        &conn,
        "SELECT priority FROM taskq_tasks WHERE state = 'pending' AND queue = ?1 AND priority < ?2
         ORDER BY priority DESC LIMIT 1",
        &["q".to_string().into(), 1.into()],
    )
    .join("; ");
    assert!(
        next.contains("(state=? AND queue=? AND priority") && !next.contains("TEMP B-TREE"),
        "{next}"
    );
    let counts = plan(
        &conn,
        "SELECT queue, state, n FROM taskq_queue_counts WHERE n > 0",
        &[],
    );
    assert_eq!(counts, vec!["SCAN taskq_queue_counts".to_string()]);
    Ok(())
}

/// A version 3 database (the schema before counts) with tasks in every state is migrated
/// to the counted schema with its counts exact, and they are kept from there.
#[tokio::test]
async fn counts_are_backfilled_by_the_migration() -> Result<(), StoreError> {
    let db = TempDb::new("counts-migration");
    {
        let s = open(&db).await;
        let ids = s
            .enqueue(
                (0..6)
                    .map(|i| new_task(["a", "b"][i % 2], 0, at(0)))
                    .collect(),
                at(0),
            )
            .await?;
        let c = s.claim(&req(&["a"], 2, at(0))).await?;
        s.finish(vec![finish(c[0].lease, Outcome::Done, at(0))], "w1", at(1))
            .await?;
        s.delete(ids[1], at(1)).await?;
        drop(s);
        let conn = Connection::open(&db.0).map_err(StoreError::backend)?;
        conn.execute_batch(
            "DROP TABLE taskq_queue_counts;
             DROP INDEX taskq_tasks_finished_queue; DROP INDEX taskq_tasks_finished_task;
             CREATE INDEX taskq_tasks_due ON taskq_tasks (state, run_at);
             ALTER TABLE taskq_tasks DROP COLUMN trace;
             DROP TABLE taskq_schedules;
             DELETE FROM taskq_schema WHERE version > 3;",
        )
        .map_err(StoreError::backend)?;
    }
    let s = open(&db).await;
    // The calls keep the counts (one upsert per queue and state per call): no trigger
    // writes a counter row per task.
    let conn = Connection::open(&db.0).map_err(StoreError::backend)?;
    let triggers: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'",
            [],
            |r| r.get(0),
        )
        .map_err(StoreError::backend)?;
    assert_eq!(triggers, 0);
    let count = |qs: &[QueueInfo], q: &str, st: TaskState| {
        qs.iter().find(|x| x.name == q).map(|x| x.count(st))
    };
    let qs = s.queues().await?;
    assert_eq!(count(&qs, "a", TaskState::Done), Some(1));
    assert_eq!(count(&qs, "a", TaskState::Running), Some(1));
    assert_eq!(count(&qs, "a", TaskState::Pending), Some(1));
    assert_eq!(count(&qs, "b", TaskState::Pending), Some(2));
    let c = s.claim(&req(&["b"], 1, at(2))).await?;
    s.finish(
        vec![finish(
            c[0].lease,
            Outcome::Dead { error: "x".into() },
            at(2),
        )],
        "w1",
        at(3),
    )
    .await?;
    let qs = s.queues().await?;
    assert_eq!(count(&qs, "b", TaskState::Pending), Some(1));
    assert_eq!(count(&qs, "b", TaskState::Dead), Some(1));
    Ok(())
}

/// The statements of a prune read finished rows through their indexes, never a scan of
/// the table (which would read every live row).
#[tokio::test]
async fn pruning_reads_finished_rows_by_index() -> Result<(), StoreError> {
    let db = TempDb::new("prune-plan");
    drop(open(&db).await);
    let conn = Connection::open(&db.0).map_err(StoreError::backend)?;
    let plan = |sql: &str| -> Result<String, StoreError> {
        let mut st = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .map_err(StoreError::backend)?;
        let nulls = vec![rusqlite::types::Null; st.parameter_count()];
        let rows = st
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
            .map_err(StoreError::backend)?;
        let mut lines = Vec::new();
        for r in rows {
            lines.push(r.map_err(StoreError::backend)?);
        }
        Ok(lines.join("; "))
    };
    let overrides = [(
        "short".to_string(),
        crate::retention::Retention {
            done: Some(Duration::from_secs(60)),
            failed: None,
        },
    )];
    for rule in crate::retention::plan(&overrides, at(0)) {
        let tasks = plan(&retention::tasks_sql(&rule))?;
        assert!(
            tasks.contains("USING INDEX taskq_tasks_finished (state=? AND finished_at<?)"),
            "{rule:?}: {tasks}"
        );
        let runs = plan(&retention::runs_sql(&rule))?;
        assert!(
            runs.contains("USING INDEX taskq_iterations_finished (state=? AND finished_at<?)"),
            "{rule:?}: {runs}"
        );
        assert!(!runs.contains("SCAN t"), "{runs}");
    }
    let tombstones = plan(retention::EXPIRED_TOMBSTONES)?;
    assert!(
        tombstones.contains("USING INDEX taskq_tombstones_until (taken_until<?)"),
        "{tombstones}"
    );
    Ok(())
}

/// Issue 10: once retention keeps up, the file stops growing. Rounds of "run N tasks,
/// move a day on, prune" on virtual time: the deleted rows' pages are reused, so the file
/// after the last round is about its size after the second; the WAL stays within its
/// limit; no attempt outlives its task.
#[tokio::test]
async fn the_file_stops_growing_once_retention_keeps_up() -> Result<(), StoreError> {
    let db = TempDb::new("prune-flat");
    let s = open(&db).await;
    let per_round = 2_000;
    let rounds = 10;
    let size = |suffix: &str| {
        std::fs::metadata(format!("{}{suffix}", db.0))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let mut sizes = Vec::new();
    let mut now = at(0);
    for round in 0..rounds {
        let tasks = (0..per_round)
            .map(|n| NewTask {
                payload: serde_json::json!({ "n": n, "text": "x".repeat(400) }),
                ..new_task("soak", 0, now)
            })
            .collect();
        s.enqueue(tasks, now).await?;
        loop {
            let c = s.claim(&req(&["soak"], 500, now)).await?;
            if c.is_empty() {
                break;
            }
            let outcomes = c
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let outcome = match i % 10 {
                        0 => Outcome::Dead {
                            error: "spent".into(),
                        },
                        _ => Outcome::Done,
                    };
                    finish(c.lease, outcome, now)
                })
                .collect();
            s.finish(outcomes, "w1", now).await?;
        }
        // Past the 7 days of dead tasks: everything of the round before goes.
        now = Timestamp(now.0 + 8 * 24 * 3600 * 1000);
        let report = s.prune(now, 0).await?;
        assert_eq!(
            report.total_tasks(),
            per_round as u64,
            "round {round}: {report:?}"
        );
        sizes.push((size(""), size("-wal")));
    }
    let conn = Connection::open(&db.0).map_err(StoreError::backend)?;
    let (tasks, attempts): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM taskq_tasks), (SELECT COUNT(*) FROM taskq_attempts)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(StoreError::backend)?;
    assert_eq!((tasks, attempts), (0, 0), "attempts go with their tasks");
    let (db2, db_last) = (sizes[1].0, sizes[rounds - 1].0);
    eprintln!("file sizes by round (db, wal): {sizes:?}");
    assert!(
        db_last <= db2 + db2 / 10,
        "the file grew from {db2} bytes after round 2 to {db_last} after round {rounds}: {sizes:?}"
    );
    for (round, (_, wal)) in sizes.iter().enumerate() {
        assert!(
            *wal <= WAL_SIZE_LIMIT as u64,
            "round {round}: WAL of {wal} bytes: {sizes:?}"
        );
    }
    Ok(())
}

/// A WAL that one big transaction made larger than `journal_size_limit` is cut back to it
/// once a checkpoint has emptied it.
#[tokio::test]
async fn a_big_transaction_does_not_leave_a_big_wal() -> Result<(), StoreError> {
    let db = TempDb::new("wal-limit");
    let s = open(&db).await;
    let wal = || {
        std::fs::metadata(format!("{}-wal", db.0))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    // About 24 MiB in one transaction.
    let big = (0..6_000)
        .map(|n| NewTask {
            payload: serde_json::json!({ "n": n, "text": "y".repeat(4_000) }),
            ..new_task("big", 0, at(0))
        })
        .collect();
    s.enqueue(big, at(0)).await?;
    let peak = wal();
    assert!(
        peak > WAL_SIZE_LIMIT as u64,
        "the test needs a WAL above the limit; it is {peak} bytes"
    );
    // Small writes after it: SQLite checkpoints, restarts the WAL and cuts the file.
    for n in 0..2_000 {
        s.enqueue(vec![new_task("small", 0, at(n))], at(n)).await?;
        if wal() <= WAL_SIZE_LIMIT as u64 {
            return Ok(());
        }
    }
    panic!("the WAL stayed at {} bytes (peak {peak})", wal());
}
