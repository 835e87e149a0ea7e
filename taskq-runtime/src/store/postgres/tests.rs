//! Focused tests of the PostgreSQL store against the server started by `.ci/postgres.sh`
//! (`TASKQ_TEST_POSTGRES_URL`). Without it they fail under `CI=true` and say so elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::RwLock;

use super::claim::{ClaimShape, QueueFilter};
use super::*;

/// The restart test takes this for writing; every other test for reading.
static SERVER: RwLock<()> = RwLock::const_new(());
static SEQ: AtomicUsize = AtomicUsize::new(0);

fn ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// The test server's URL. Without one the test fails (it never passes by skipping):
/// `./test.sh` starts a server, or `source .ci/postgres.sh` first.
/// The test server's URL; a test without one fails (never skips).
fn url() -> String {
    match std::env::var("TASKQ_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "TASKQ_TEST_POSTGRES_URL is not set (CI={}): run ./test.sh, or `source .ci/postgres.sh` first",
            ci()
        ),
    }
}

fn schema_name(tag: &str) -> String {
    format!(
        "pgunit_{tag}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

async fn store(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::open_in_schema(url, schema)
        .await
        .expect("open the postgres store")
}

async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

async fn drop_schema(url: &str, schema: &str) {
    let c = client(url).await;
    let _ = c
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await;
}

fn task(queue: &str, n: i64, now: Timestamp) -> NewTask {
    NewTask {
        task: "pg::noop".into(),
        queue: queue.into(),
        payload: json!({ "n": n }),
        priority: 0,
        run_at: now,
        unique_name: None,
        tombstone: Duration::from_secs(60),
        iteration: None,
        trace: None,
    }
}

fn req(queue: &str, worker: &str, limit: usize, lease_ms: u64, now: Timestamp) -> ClaimRequest {
    ClaimRequest {
        queues: vec![queue.into()],
        worker: worker.into(),
        limit,
        lease: Duration::from_millis(lease_ms),
        now,
    }
}

#[test]
fn url_options_are_parsed() {
    let (cfg, o) = parse_url("postgres://u@h:5433/db?schema=abc&pool_size=3").unwrap();
    assert_eq!(o.schema.as_deref(), Some("abc"));
    assert_eq!(o.pool_size, 3);
    assert_eq!(cfg.get_dbname(), Some("db"));
    assert!(parse_url("postgres://u@h/db?pool_size=0").is_err());
    assert!(check_schema_name("x", "ok_name1").is_ok());
    assert!(check_schema_name("x", "bad\"name").is_err());
    assert!(check_schema_name("x", "1abc").is_err());
}

#[test]
fn connections_detect_a_dead_peer_in_seconds_unless_the_url_says_otherwise() {
    let (cfg, _) = parse_url("postgres://u@h/db").expect("parse");
    assert_eq!(cfg.get_keepalives_idle(), Duration::from_secs(10));
    assert_eq!(cfg.get_keepalives_interval(), Some(Duration::from_secs(2)));
    assert_eq!(cfg.get_keepalives_retries(), Some(3));
    assert_eq!(cfg.get_tcp_user_timeout(), Some(&Duration::from_secs(10)));
    assert_eq!(cfg.get_connect_timeout(), Some(&Duration::from_secs(5)));
    let (cfg, _) =
        parse_url("postgres://u@h/db?keepalives_idle=30&tcp_user_timeout=20").expect("parse");
    assert_eq!(cfg.get_keepalives_idle(), Duration::from_secs(30));
    assert_eq!(cfg.get_tcp_user_timeout(), Some(&Duration::from_secs(20)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_finish_and_fencing() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("fence");
    let s = store(&url, &schema).await;
    let t0 = Timestamp(1_000_000);
    let ids = s
        .enqueue(vec![task("q", 1, t0), task("q", 2, t0)], t0)
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);

    // Worker A claims the first with a short lease.
    let a = s.claim(&req("q", "A", 1, 100, t0)).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].lease.id, ids[0]);
    assert_eq!(a[0].attempt, 1);
    assert_eq!(a[0].payload, json!({ "n": 1 }));

    // The lease lapses; worker B claims it again (the second task too).
    let t1 = Timestamp(t0.0 + 1_000);
    let b = s.claim(&req("q", "B", 10, 60_000, t1)).await.unwrap();
    assert_eq!(b.len(), 2);
    let b0 = b.iter().find(|c| c.lease.id == ids[0]).unwrap();
    assert_ne!(b0.lease.token, a[0].lease.token);
    assert_eq!(b0.attempt, 2);

    // A is fenced off everywhere.
    let lost = s
        .heartbeat(&[a[0].lease], "A", t1.add(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(lost, vec![ids[0]]);
    let r = s
        .finish(
            vec![Finish {
                lease: a[0].lease,
                outcome: Outcome::Done,
                started_at: t0,
            }],
            "A",
            t1,
        )
        .await
        .unwrap();
    assert!(matches!(r[0], Err(StoreError::LeaseLost(id)) if id == ids[0]));

    // B heartbeats and finishes both in one batch (one done, one retry).
    assert!(s
        .heartbeat(&[b[0].lease, b[1].lease], "B", Timestamp(t1.0 + 90_000))
        .await
        .unwrap()
        .is_empty());
    let r = s
        .finish(
            vec![
                Finish {
                    lease: b0.lease,
                    outcome: Outcome::Done,
                    started_at: t1,
                },
                Finish {
                    lease: b.iter().find(|c| c.lease.id == ids[1]).unwrap().lease,
                    outcome: Outcome::Retry {
                        error: "boom".into(),
                        run_at: Timestamp(t1.0 + 5_000),
                    },
                    started_at: t1,
                },
            ],
            "B",
            t1,
        )
        .await
        .unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    let d = s.task(ids[0]).await.unwrap().unwrap();
    assert_eq!(d.info.state, TaskState::Done);
    let outcomes: Vec<&str> = d.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, vec!["lease lapsed", "done"]);
    let d = s.task(ids[1]).await.unwrap().unwrap();
    assert_eq!(d.info.state, TaskState::Pending);
    assert_eq!(d.info.last_error.as_deref(), Some("boom"));
    assert_eq!(
        s.next_due(&["q".into()]).await.unwrap(),
        Some(Timestamp(t1.0 + 5_000))
    );
    drop(s);
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_claimers_never_double_claim() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("skip");
    let s1 = Arc::new(store(&url, &schema).await);
    let s2 = Arc::new(store(&url, &schema).await);
    let now = Timestamp(5_000_000);
    const N: usize = 2_000;
    for chunk in 0..(N / 500) {
        let batch = (0..500)
            .map(|i| task("bulk", (chunk * 500 + i) as i64, now))
            .collect();
        s1.enqueue(batch, now).await.unwrap();
    }
    let started = Instant::now();
    let run = |s: Arc<PostgresStore>, name: &'static str| {
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s
                    .claim(&req("bulk", name, 100, 600_000, now))
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                let fin = got
                    .iter()
                    .map(|c| Finish {
                        lease: c.lease,
                        outcome: Outcome::Done,
                        started_at: now,
                    })
                    .collect();
                let r = s.finish(fin, name, now).await.unwrap();
                assert!(r.iter().all(|x| x.is_ok()));
                mine.extend(got.into_iter().map(|c| c.lease.id));
            }
            mine
        })
    };
    let (a, b) = tokio::join!(run(s1.clone(), "A"), run(s2.clone(), "B"));
    let (a, b) = (a.unwrap(), b.unwrap());
    let secs = started.elapsed().as_secs_f64();
    let all: HashSet<TaskId> = a.iter().chain(b.iter()).copied().collect();
    assert_eq!(a.len() + b.len(), N, "every task claimed once");
    assert_eq!(all.len(), N, "no task claimed twice");
    eprintln!(
        "two claimers: A {} B {}, {:.0} tasks/s claimed and finished (100 per statement)",
        a.len(),
        b.len(),
        N as f64 / secs
    );
    drop((s1, s2));
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_idle_workers_quickly() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("notify");
    let waiter = Arc::new(store(&url, &schema).await);
    let starter = store(&url, &schema).await;
    let poll = Duration::from_secs(5);
    for _ in 0..3 {
        let w = waiter.clone();
        let wait = tokio::spawn(async move {
            w.wait_for_work(&["wq".to_string()], poll).await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        starter
            .enqueue(vec![task("wq", 1, Timestamp::now())], Timestamp::now())
            .await
            .unwrap();
        let woke = wait.await.unwrap();
        let latency = woke.saturating_duration_since(sent);
        eprintln!("LISTEN/NOTIFY wake-up latency: {latency:?}");
        assert!(
            latency < Duration::from_millis(500),
            "woken after {latency:?}"
        );
    }
    // Work on another queue does not wake a worker of this one.
    let w = waiter.clone();
    let wait = tokio::spawn(async move {
        let t = Instant::now();
        w.wait_for_work(&["wq".to_string()], Duration::from_millis(700))
            .await;
        t.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    starter
        .enqueue(vec![task("other", 1, Timestamp::now())], Timestamp::now())
        .await
        .unwrap();
    assert!(wait.await.unwrap() >= Duration::from_millis(650));
    drop((waiter, starter));
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_start_commits_or_leaves_nothing() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("tx");
    let s = store(&url, &schema).await;
    let mut c = client(&url).await;
    let now = Timestamp(9_000_000);

    // Rolled back: no task.
    let tx = c.transaction().await.unwrap();
    let ids = s
        .enqueue_in(&tx, vec![task("tq", 1, now)], now)
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    tx.rollback().await.unwrap();
    assert!(s.task(ids[0]).await.unwrap().is_none());
    assert!(s
        .list_tasks(&TaskQuery::default())
        .await
        .unwrap()
        .is_empty());

    // Dropped without commit: no task either.
    {
        let tx = c.transaction().await.unwrap();
        s.enqueue_in(&tx, vec![task("tq", 2, now)], now)
            .await
            .unwrap();
    }
    assert!(s
        .list_tasks(&TaskQuery::default())
        .await
        .unwrap()
        .is_empty());

    // Committed with the application's own write: the task exists, and is claimable.
    c.batch_execute(&format!("CREATE TABLE \"{schema}\".app_rows (id int)"))
        .await
        .unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute(
        &format!("INSERT INTO \"{schema}\".app_rows VALUES (1)"),
        &[],
    )
    .await
    .unwrap();
    let mut named = task("tq", 3, now);
    named.unique_name = Some("only-once".into());
    let ids = s.enqueue_in(&tx, vec![named.clone()], now).await.unwrap();
    // A second start of the same name in the same transaction is refused, and the
    // transaction stays usable.
    let again = s.enqueue_in(&tx, vec![named], now).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists(ref n)) if n == "only-once"),
        "{again:?}"
    );
    tx.commit().await.unwrap();
    let info = s.task(ids[0]).await.unwrap().unwrap().info;
    assert_eq!(info.state, TaskState::Pending);
    assert_eq!(info.unique_name.as_deref(), Some("only-once"));
    let got = s.claim(&req("tq", "w", 10, 1_000, now)).await.unwrap();
    assert_eq!(got.len(), 1);
    drop(s);
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unique_names_one_wins() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("uniq");
    let s = Arc::new(store(&url, &schema).await);
    let now = Timestamp(2_000_000);
    let mut handles = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut t = task("u", i, now);
            t.unique_name = Some("same".into());
            s.enqueue(vec![t], now).await
        }));
    }
    let mut ok = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::AlreadyExists(n)) => assert_eq!(n, "same"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1);
    drop(s);
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_is_refused() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("newer");
    drop(store(&url, &schema).await);
    // Opening again is fine (already migrated).
    drop(store(&url, &schema).await);
    let c = client(&url).await;
    c.batch_execute(&format!(
        "INSERT INTO \"{schema}\".taskq_schema (version) VALUES (999)"
    ))
    .await
    .unwrap();
    match PostgresStore::open_in_schema(&url, &schema).await {
        Err(StoreError::SchemaTooNew { found, known }) => {
            assert_eq!(found, 999);
            assert_eq!(known, PostgresStore::schema_version());
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    // The URL form selects the schema too.
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = crate::store::open(&format!("{url}{sep}schema={schema}")).await;
    assert!(matches!(r, Err(StoreError::SchemaTooNew { .. })));
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_migrate_once() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("race");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            tokio::spawn(async move {
                PostgresStore::open_in_schema(&url, &schema)
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
    let c = client(&url).await;
    let n: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".taskq_schema"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, PostgresStore::schema_version());
    drop_schema(&url, &schema).await;
}

/// A schema made by a taskq that stored JSON as `jsonb` (version 1) is migrated to `json`
/// columns when opened; the values it holds are kept and the new ones are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_jsonb_columns_migrate_to_json() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("v1");
    let s = format!("\"{schema}\"");
    let c = client(&url).await;
    c.batch_execute(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.taskq_schema (version bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now());
         {}
         INSERT INTO {s}.taskq_schema (version) VALUES (1);
         INSERT INTO {s}.taskq_tasks (task, queue, state, payload, created_at, enqueued_at, run_at, run_id)
             VALUES ('pg::walk', 'old', 'pending', '{{\"filter\": {{\"p\": 1}}, \"args\": {{}}}}', 0, 0, 0, 1);
         INSERT INTO {s}.taskq_iterations (run_id, task, queue, filter, cursor, state, started_at, updated_at)
             VALUES (1, 'pg::walk', 'old', '{{\"p\": 1}}', '[7, \"x\"]', 'running', 0, 0);",
        schema::MIGRATIONS[0].replace("{S}", &s)
    ))
    .await
    .unwrap();
    let st = store(&url, &schema).await;
    let types: Vec<String> = c
        .query(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = $1
             AND table_name IN ('taskq_tasks', 'taskq_iterations')
             AND column_name IN ('payload', 'filter', 'cursor') ORDER BY table_name, column_name",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, ["json", "json", "json"]);
    let got = st
        .claim(&req("old", "w", 1, 30_000, Timestamp(0)))
        .await
        .unwrap();
    assert_eq!(got[0].payload, json!({ "filter": { "p": 1 }, "args": {} }));
    assert_eq!(got[0].decode_error, None);
    let it = got[0].iteration.clone().unwrap();
    assert_eq!(it.cursor, Some(json!([7, "x"])));
    // New values are exact from now on.
    let mut t = task("new", 0, Timestamp(0));
    t.payload = json!({ "z": -0.0, "s": "a\u{0}b" });
    st.enqueue(vec![t], Timestamp(0)).await.unwrap();
    let got = st
        .claim(&req("new", "w", 1, 30_000, Timestamp(0)))
        .await
        .unwrap();
    assert_eq!(got[0].payload["s"], json!("a\u{0}b"));
    assert!(got[0].payload["z"].as_f64().unwrap().is_sign_negative());
    drop(st);
    drop_schema(&url, &schema).await;
}

/// The test cluster's env file written by `.ci/postgres.sh`.
fn cluster_env() -> Option<HashMap<String, String>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/taskq-pg.env");
    let text = std::fs::read_to_string(&path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_string(),
                    v.trim().trim_matches('\'').to_string(),
                )
            })
            .collect(),
    )
}

fn pg_ctl_restart(env: &HashMap<String, String>) {
    let bin = format!("{}/pg_ctl", env["PGBIN"]);
    let args = [
        "-D",
        env["PGDATA"].as_str(),
        "-m",
        "fast",
        "-w",
        "-t",
        "60",
        "restart",
    ];
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let log = format!("{}/../server.log", env["PGDATA"]);
    let status = if is_root {
        std::process::Command::new("runuser")
            .args(["-u", env["PGUSER_OS"].as_str(), "--", bin.as_str()])
            .args(args)
            .args(["-l", log.as_str()])
            .current_dir("/")
            .stdout(std::process::Stdio::null())
            .status()
    } else {
        std::process::Command::new(&bin)
            .args(args)
            .args(["-l", log.as_str()])
            .stdout(std::process::Stdio::null())
            .status()
    };
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "pg_ctl restart failed"
    );
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_transient(), "{what}: not a transient error: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what} still failing after 30 s: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_server_restart() {
    let url = url();
    let Some(env) = cluster_env() else {
        panic!(
            "target/taskq-pg.env is missing (CI={}): the restart test needs the cluster of .ci/postgres.sh",
            ci()
        );
    };
    let _g = SERVER.write().await;
    let schema = schema_name("restart");
    let s = Arc::new(store(&url, &schema).await);
    let now = Timestamp(3_000_000);
    let ids = s
        .enqueue(vec![task("r", 1, now), task("r", 2, now)], now)
        .await
        .unwrap();
    let held = s.claim(&req("r", "w", 1, 600_000, now)).await.unwrap();
    assert_eq!(held.len(), 1);

    let restart = tokio::task::spawn_blocking(move || pg_ctl_restart(&env));
    restart.await.unwrap();

    // Operations fail with Backend errors until the pool reconnects, then work again.
    let more = eventually("enqueue", || s.enqueue(vec![task("r", 3, now)], now)).await;
    let r2 = req("r", "w", 10, 600_000, now);
    let got = eventually("claim", || s.claim(&r2)).await;
    let got_ids: HashSet<TaskId> = got.iter().map(|c| c.lease.id).collect();
    assert_eq!(
        got_ids,
        [ids[1], more[0]].into_iter().collect::<HashSet<_>>()
    );
    // The lease taken before the restart is still good.
    let mut fin: Vec<Finish> = got
        .iter()
        .map(|c| Finish {
            lease: c.lease,
            outcome: Outcome::Done,
            started_at: now,
        })
        .collect();
    fin.push(Finish {
        lease: held[0].lease,
        outcome: Outcome::Done,
        started_at: now,
    });
    let r = s.finish(fin, "w", now).await.unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");

    // The listener reconnected: a new start wakes a waiting worker at once.
    let starter = store(&url, &schema).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = s.clone();
        let wait = tokio::spawn(async move {
            w.wait_for_work(&["r".to_string()], Duration::from_secs(3))
                .await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = Instant::now();
        starter.enqueue(vec![task("r", 9, now)], now).await.unwrap();
        let latency = wait.await.unwrap().saturating_duration_since(sent);
        if latency < Duration::from_millis(500) {
            break;
        }
        assert!(Instant::now() < deadline, "the listener did not come back");
    }
    drop((s, starter));
    drop_schema(&url, &schema).await;
}

/// Only named rows leave tombstones (one row per name), and a version 1 schema is
/// migrated to the current version on open.
#[tokio::test]
async fn tombstones_only_for_names_and_migrated_from_v1() {
    let _g = SERVER.read().await;
    let url = url();
    let schema = schema_name("tombstones");
    let q = format!("\"{schema}\"");
    drop(store(&url, &schema).await);
    let c = client(&url).await;
    c.batch_execute(&format!(
        "DROP TABLE {q}.taskq_tombstones; DELETE FROM {q}.taskq_schema WHERE version > 1"
    ))
    .await
    .expect("back to version 1");
    let s = store(&url, &schema).await;
    let count = || async {
        c.query_one(&format!("SELECT count(*) FROM {q}.taskq_tombstones"), &[])
            .await
            .expect("count")
            .get::<_, i64>(0)
    };
    let t0 = Timestamp(1_800_000_000_000);
    let later = Timestamp(t0.0 + 60_000);
    let mut named = task("a", 2, later);
    named.unique_name = Some("n".into());
    let ids = s
        .enqueue(
            vec![task("a", 0, later), task("p", 1, t0), named.clone()],
            t0,
        )
        .await
        .expect("enqueue");
    s.delete(ids[0], t0).await.expect("delete");
    assert_eq!(s.purge("p", t0).await.expect("purge"), 1);
    assert_eq!(count().await, 0, "unnamed tasks leave nothing");
    s.delete(ids[2], t0).await.expect("delete");
    assert_eq!(count().await, 1);
    assert!(matches!(
        s.enqueue(vec![named.clone()], Timestamp(later.0 - 1)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    s.enqueue(vec![named], later)
        .await
        .expect("free at the end");
    drop(s);
    drop_schema(&url, &schema).await;
}

/// The database clock is read at open, and again when the listening connection comes back
/// (after a failover the server may be another machine, with another clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_is_read_again_after_a_reconnection() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("clock");
    // Its own application name, so that only this store's connections are ended.
    let sep = if url.contains('?') { '&' } else { '?' };
    let s = store(&format!("{url}{sep}application_name={schema}"), &schema).await;
    let readings = || s.clock.readings.load(Ordering::Relaxed);
    let until = |what: &str, n: u64| {
        let what = what.to_string();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while readings() < n {
                assert!(Instant::now() < deadline, "{what}: {} readings", readings());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // One at open, one by the listening connection once it listens.
    until("the listener's first reading", 2).await;
    let before = readings();
    let side = client(&url).await;
    let ended = side
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&schema],
        )
        .await
        .unwrap();
    assert!(!ended.is_empty(), "the store's connections were found");
    until("a reading after the reconnection", before + 1).await;
    let estimate = s.clock().expect("a clock").now();
    let db: i64 = side
        .query_one(
            "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::int8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (db - estimate.as_millis()).abs() < 1_000,
        "estimate {estimate} against the database's {db}"
    );
    drop(s);
    drop_schema(&url, &schema).await;
}

/// Shared buffers (hit and read) the node `node` of a statement touched, from
/// `EXPLAIN (ANALYZE, BUFFERS)`.
async fn buffers(c: &tokio_postgres::Client, sql: &str, p: &[Param<'_>], node: &str) -> i64 {
    let rows = c
        .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), p)
        .await
        .expect("explain");
    let lines: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let top = lines
        .iter()
        .skip_while(|l| !l.trim_start().starts_with(node))
        .find(|l| l.trim_start().starts_with("Buffers: shared"))
        .unwrap_or_else(|| panic!("no buffer counts for {node} in {lines:#?}"));
    let count = |key: &str| {
        top.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
    };
    count("hit=") + count("read=")
}

/// The claim reads due rows only: beside 50,000 and then 100,000 pending rows an hour
/// ahead at a higher priority (and as many finished ones), the picking of a claim of one
/// queue, of two and of every queue touches about as many buffers as on a table holding
/// only the due rows, and no more at 100,000 than at 50,000 (it used to walk the future
/// rows of the higher priority in the pending index on each claim: about 200 pages per
/// 50,000). Buffers are counted, not time, so the bound holds on a
/// loaded machine.
#[tokio::test]
async fn claims_read_due_rows_only() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("due_only");
    let s = store(&url, &schema).await;
    let c = client(&url).await;
    let fill = |state: &str, priority: i32, run_at: &str, n: i64| {
        format!(
            "INSERT INTO \"{schema}\".taskq_tasks (task, queue, state, payload, priority, \
             created_at, enqueued_at, run_at) \
             SELECT 'pg::noop', 'q', '{state}', '{{}}', {priority}, 0, 0, {run_at} \
             FROM generate_series(1, {n}) g"
        )
    };
    let now: i64 = 1_000_000;
    let lease_until = now + 30_000;
    let limit: i64 = 10;
    let one = "q".to_string();
    let many = vec!["q".to_string(), "r".to_string()];
    let shapes: [(QueueFilter, Option<Param<'_>>); 3] = [
        (QueueFilter::One, Some(&one)),
        (QueueFilter::Many, Some(&many)),
        (QueueFilter::All, None),
    ];
    let mut touched = Vec::new();
    for loaded in 0..3 {
        if loaded > 0 {
            c.batch_execute(&fill("pending", 10, "2000000 + g", 50_000))
                .await
                .expect("future rows");
            c.batch_execute(&fill("done", 20, "g", 50_000))
                .await
                .expect("finished rows");
        }
        for (filter, q) in &shapes {
            c.batch_execute(&fill("pending", 0, "g", limit))
                .await
                .expect("due rows");
            c.batch_execute(&format!("VACUUM ANALYZE \"{schema}\".taskq_tasks"))
                .await
                .expect("vacuum");
            let sql = s.claim_sql(*filter, ClaimShape::Plain);
            let worker = "w".to_string();
            let mut p: Vec<Param<'_>> = vec![&now, &lease_until, &worker, &limit];
            p.extend(q.iter().copied());
            // The picking part: the due rows of the claim (the update after it writes
            // into indexes whose depth grows with the table, which is not reading rows).
            touched.push(buffers(&c, &sql, &p, "CTE due").await);
            c.batch_execute(&format!(
                "DELETE FROM \"{schema}\".taskq_tasks WHERE priority = 0"
            ))
            .await
            .expect("clear the due rows");
        }
    }
    // Per shape: empty, beside 50,000 future and finished rows, beside 100,000 of each.
    // The first 50,000 future entries fill about 200 pages of the pending index, which a
    // claim that walked them would read (400 at 100,000); the bound allows a deeper index
    // and the heap pages the due rows landed on (one each at most), not the walk.
    for i in 0..3 {
        let (e, l1, l2) = (touched[i], touched[i + 3], touched[i + 6]);
        assert!(
            l1 <= e + 50 && l2 <= e + 50,
            "shape {i}: {e} buffers empty, {l1} beside 50,000, {l2} beside 100,000: {touched:?}"
        );
    }
    drop(s);
    drop_schema(&url, &schema).await;
}

/// Finishes every pending task of `queue` as done at `now`, 500 per claim.
async fn finish_all(s: &PostgresStore, queue: &str, now: Timestamp) -> usize {
    let mut n = 0;
    loop {
        let c = s.claim(&req(queue, "w", 500, 60_000, now)).await.unwrap();
        if c.is_empty() {
            return n;
        }
        n += c.len();
        let fs = c
            .iter()
            .map(|c| Finish {
                lease: c.lease,
                outcome: Outcome::Done,
                started_at: now,
            })
            .collect();
        let r = s.finish(fs, "w", now).await.unwrap();
        assert!(r.iter().all(Result::is_ok));
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Issue 10: two stores (two worker processes) pruning one schema at once, while a person
/// deletes some of the same rows: no error, no deadlock, every row removed exactly once,
/// attempts with their tasks, and the names of named tasks kept by their tombstones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_pruning_at_once_remove_each_row_once() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("prune2");
    let a = store(&url, &schema).await;
    let b = store(&url, &schema).await;
    let t0 = Timestamp(1_800_000_000_000);
    let total = 3_000;
    let mut ids = Vec::new();
    for chunk in (0..total).collect::<Vec<i64>>().chunks(1_000) {
        let tasks = chunk
            .iter()
            .map(|n| {
                let mut t = task("q", *n, t0);
                if n % 3 == 0 {
                    t.unique_name = Some(format!("name-{n}"));
                    t.tombstone = Duration::from_secs(10 * 24 * 3600);
                }
                t
            })
            .collect();
        ids.extend(a.enqueue(tasks, t0).await.unwrap());
    }
    assert_eq!(finish_all(&a, "q", t0).await, total as usize);
    let now = Timestamp(t0.0 + DAY_MS);
    let deleter = async {
        let mut deleted = 0u64;
        for id in ids.iter().step_by(10) {
            match a.delete(*id, now).await {
                Ok(()) => deleted += 1,
                Err(StoreError::NotFound(_)) => {}
                Err(e) => panic!("delete {id}: {e}"),
            }
        }
        deleted
    };
    let (ra, rb, deleted) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(a.prune(now, 50), b.prune(now, 50), deleter)
    })
    .await
    .expect("no deadlock: the prunes and deletes finish");
    let (ra, rb) = (ra.expect("prune a"), rb.expect("prune b"));
    eprintln!("prune a: {ra:?}\nprune b: {rb:?}\ndeleted: {deleted}");
    // A prune that found the other one busy stopped; finish the job without a rival.
    let rest = a.prune(now, 50).await.expect("prune");
    assert!(!rest.busy);
    let removed = ra.total_tasks() + rb.total_tasks() + rest.total_tasks();
    assert_eq!(
        removed + deleted,
        total as u64,
        "each row once: {ra:?} {rb:?} {rest:?}, {deleted} deleted"
    );
    let c = client(&url).await;
    let count = |table: &'static str| {
        let c = &c;
        let schema = &schema;
        async move {
            c.query_one(&format!("SELECT count(*) FROM \"{schema}\".{table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count("taskq_tasks").await, 0);
    assert_eq!(count("taskq_attempts").await, 0, "attempts go with tasks");
    assert_eq!(count("taskq_tombstones").await, 1_000, "one per named task");
    let mut again = task("q", 0, now);
    again.unique_name = Some("name-300".into());
    assert!(matches!(
        a.enqueue(vec![again], now).await,
        Err(StoreError::AlreadyExists(_))
    ));
    drop((a, b));
    drop_schema(&url, &schema).await;
}

/// While another process holds the prune lock, a prune removes nothing and says it found
/// the store busy; once the lock is free it prunes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_skips_while_another_process_prunes() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("prunelock");
    let s = store(&url, &schema).await;
    let t0 = Timestamp(1_800_000_000_000);
    let ids = s
        .enqueue((0..5).map(|n| task("q", n, t0)).collect(), t0)
        .await
        .unwrap();
    finish_all(&s, "q", t0).await;
    let now = Timestamp(t0.0 + DAY_MS);
    let mut other = client(&url).await;
    let tx = other.transaction().await.unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1::text))",
        &[&s.prune_lock_key()],
    )
    .await
    .unwrap();
    let r = s.prune(now, 0).await.unwrap();
    assert!(r.busy, "{r:?}");
    assert!(r.is_empty(), "{r:?}");
    assert!(s.task(ids[0]).await.unwrap().is_some());
    tx.rollback().await.unwrap();
    let r = s.prune(now, 0).await.unwrap();
    assert!(!r.busy, "{r:?}");
    assert_eq!(r.count(TaskState::Done), 5);
    drop(s);
    drop_schema(&url, &schema).await;
}

/// A listing reads the payload column only when asked for it, whatever its filters.
#[test]
fn listings_select_payloads_only_when_asked() {
    for with_payload in [false, true] {
        for (queue, state, task) in [
            (None, None, None),
            (Some("q"), None, None),
            (None, Some(TaskState::Done), Some("t")),
        ] {
            let q = TaskQuery {
                queue: queue.map(str::to_string),
                state,
                task: task.map(str::to_string),
                with_payload,
                ..TaskQuery::default()
            };
            let sql = super::manage::list_sql(&q);
            assert_eq!(sql.contains("payload::text"), with_payload, "{sql}");
            assert_eq!(
                sql.contains("NULL::text AS payload"),
                !with_payload,
                "{sql}"
            );
        }
    }
}

/// The prune statements can reach their rows through their indexes (the planner is told
/// to avoid sequential scans, so a missing or unusable index shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_statements_use_their_indexes() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("pruneplan");
    let s = store(&url, &schema).await;
    let c = client(&url).await;
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    let overrides = [(
        "short".to_string(),
        crate::retention::Retention {
            done: Some(Duration::from_secs(60)),
            failed: None,
        },
    )];
    let explain = |sql: String, types: &'static str, args: &'static str| {
        let c = &c;
        async move {
            c.batch_execute("DEALLOCATE ALL").await.unwrap();
            c.batch_execute(&format!("PREPARE p({types}) AS {sql}"))
                .await
                .unwrap();
            c.query(&format!("EXPLAIN EXECUTE p({args})"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    for rule in crate::retention::plan(&overrides, Timestamp(1_800_000_000_000)) {
        let plan = explain(
            s.prune_tasks_sql(&rule),
            "text, int8, int8, text[], int8",
            "'k', 0, 0, '{short}', 10",
        )
        .await;
        assert!(
            plan.contains("taskq_tasks_finished_idx"),
            "{rule:?}\n{plan}"
        );
        let plan = explain(
            s.prune_runs_sql(&rule),
            "text, int8, text[], int8",
            "'k', 0, '{short}', 10",
        )
        .await;
        assert!(
            plan.contains("taskq_iterations_finished_idx"),
            "{rule:?}\n{plan}"
        );
    }
    let plan = explain(s.prune_tombstones_sql(), "text, int8, int8", "'k', 0, 10").await;
    assert!(plan.contains("taskq_tombstones_until_idx"), "{plan}");
    drop(s);
    drop_schema(&url, &schema).await;
}

/// A schema made by the migrations before counts (versions 1 to 4, as the release before
/// them writes it) holding tasks in every state is migrated to version 5 with exact
/// counts, which finishes and prunes then keep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_backfilled_from_version_4() {
    let url = url();
    let _g = SERVER.read().await;
    let schema = schema_name("v4counts");
    let s = format!("\"{schema}\"");
    let c = client(&url).await;
    let before: Vec<String> = schema::MIGRATIONS[..4]
        .iter()
        .map(|m| m.replace("{S}", &s))
        .collect();
    c.batch_execute(&format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.taskq_schema (version bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now());
         {}
         INSERT INTO {s}.taskq_schema (version) VALUES (1), (2), (3), (4);",
        before.join("\n")
    ))
    .await
    .unwrap();
    let day = 24 * 3600 * 1000;
    let t0 = Timestamp(1_800_000_000_000);
    // Written as the old release leaves them: 3 pending, 1 running, done and dead ones
    // finished a week ago and now.
    c.batch_execute(&format!(
        "INSERT INTO {s}.taskq_tasks (task, queue, state, payload, created_at, enqueued_at,
             run_at, finished_at, worker, lease_until)
         SELECT 'pg::noop', 'a', st, '{{}}', 0, 0, {t}, fin, wk, lease
         FROM (VALUES ('pending', NULL::int8, NULL, NULL::int8), ('pending', NULL, NULL, NULL),
                      ('pending', NULL, NULL, NULL), ('running', NULL, 'w', {lease}),
                      ('done', {old}, NULL, NULL), ('done', {old}, NULL, NULL),
                      ('done', {t}, NULL, NULL), ('dead', {old}, NULL, NULL))
              AS v(st, fin, wk, lease)",
        t = t0.0,
        old = t0.0 - 2 * day,
        lease = t0.0 + 60_000,
    ))
    .await
    .unwrap();
    let st = store(&url, &schema).await;
    let version: i64 = c
        .query_one(&format!("SELECT max(version) FROM {s}.taskq_schema"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, schema::MIGRATIONS.len() as i64);
    // Retention's prune index and the listing index by state and id are both there (the
    // listing's once had the prune index's name, and `IF NOT EXISTS` skipped it).
    let defs: Vec<String> = c
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname IN
             ('taskq_tasks_finished_idx', 'taskq_tasks_finished_id_idx') ORDER BY indexname",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(defs.len(), 2, "{defs:?}");
    assert!(defs[0].contains("(state, id)"), "{defs:?}");
    assert!(defs[1].contains("(state, finished_at)"), "{defs:?}");
    // Updates are counted by the statements that make them (a claim or a heartbeat runs
    // no trigger); deletes by the one statement-level trigger.
    let triggers: Vec<String> = c
        .query(
            "SELECT tgname::text FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = r.relnamespace
             WHERE n.nspname = $1 AND NOT t.tgisinternal ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(triggers, ["taskq_tasks_counted_delete"]);
    let counts = |qs: Vec<QueueInfo>| {
        let a = qs.into_iter().find(|q| q.name == "a").unwrap();
        TaskState::ALL.map(|state| a.count(state))
    };
    // In `TaskState::ALL` order: pending, running, done, failed, dead, cancelled.
    assert_eq!(counts(st.queues().await.unwrap()), [3, 1, 3, 0, 1, 0]);
    let got = st.claim(&req("a", "w", 2, 60_000, t0)).await.unwrap();
    let fs = got
        .iter()
        .map(|c| Finish {
            lease: c.lease,
            outcome: Outcome::Done,
            started_at: t0,
        })
        .collect();
    st.finish(fs, "w", t0).await.unwrap();
    assert_eq!(counts(st.queues().await.unwrap()), [1, 1, 5, 0, 1, 0]);
    // A day on, the two done a day before go; the dead one is kept its week.
    let r = st.prune(Timestamp(t0.0 + day - 1), 0).await.unwrap();
    assert_eq!(r.total_tasks(), 2, "{r:?}");
    assert_eq!(counts(st.queues().await.unwrap()), [1, 1, 3, 0, 1, 0]);
    drop(st);
    drop_schema(&url, &schema).await;
}
