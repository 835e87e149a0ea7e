//! Fuzzing stored payloads (issue 9, the fault campaign): whatever a payload row holds —
//! arbitrary text, mutated or oddly shaped JSON, arbitrary bytes as a BLOB or as text that
//! is not UTF-8 (SQLite), any text PostgreSQL's `json` type accepts — a claim hands the
//! task out with its payload decoded or with [`ClaimedTask::decode_error`] naming why,
//! never failing the claim and never panicking; `task()` and `list()` show it; and a run
//! sends it dead with that reason, or runs it when its arguments do decode.
//!
//! Rows are corrupted with raw SQL, as in `tests/src/corrupt.rs`. Bounded for CI (256
//! cases on SQLite, 128 on PostgreSQL); `TASKQ_PROPTEST_CASES=N` runs N on each.
//!
//! [`ClaimedTask::decode_error`]: taskq_runtime::store::ClaimedTask::decode_error

use std::sync::Arc;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use taskq_runtime::store::{ClaimRequest, Finish, Outcome, TaskQuery};
use taskq_runtime::testing::Harness;
use taskq_runtime::{task, Queue, Store, TaskError, TaskId, TaskState};

#[task(queue = "fuzz", max_attempts = 1)]
async fn takes(name: String, n: i64, xs: Vec<f64>) -> Result<(), TaskError> {
    let _ = (name, n, xs);
    Ok(())
}

/// What a case writes into the payload column.
#[derive(Clone, Debug)]
enum Stored {
    /// Text (any `String`): SQLite `TEXT`, PostgreSQL `json` when it accepts it.
    Text(String),
    /// Bytes as a BLOB (SQLite only).
    Blob(Vec<u8>),
    /// Bytes as text that need not be UTF-8: `CAST(blob AS TEXT)` (SQLite only).
    RawText(Vec<u8>),
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(
                (
                    prop_oneof![
                        Just("name".to_string()),
                        Just("n".into()),
                        Just("xs".into()),
                        any::<String>()
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Arguments shaped like `takes`'s, with some of the wrong type or missing.
fn args() -> impl Strategy<Value = Value> {
    (
        prop_oneof![3 => any::<String>().prop_map(Value::from), 1 => json_value()],
        prop_oneof![3 => any::<i64>().prop_map(Value::from), 1 => json_value()],
        prop_oneof![
            3 => vec(any::<f64>().prop_filter("finite", |f| f.is_finite()), 0..4).prop_map(|v| json!(v)),
            1 => json_value()
        ],
        0u8..8,
    )
        .prop_map(|(name, n, xs, drop)| {
            let mut m = serde_json::Map::new();
            for (i, (k, v)) in [("name", name), ("n", n), ("xs", xs)].into_iter().enumerate() {
                if drop != i as u8 {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
}

/// JSON text with one character inserted, removed or replaced.
fn mutated() -> impl Strategy<Value = String> {
    (
        prop_oneof![args(), json_value()],
        any::<usize>(),
        any::<char>(),
        0u8..3,
    )
        .prop_map(|(v, at, c, how)| {
            let mut chars: Vec<char> = v.to_string().chars().collect();
            let at = at % (chars.len() + 1);
            match how {
                0 => chars.insert(at, c),
                1 if at < chars.len() => {
                    chars.remove(at);
                }
                _ if at < chars.len() => chars[at] = c,
                _ => chars.push(c),
            }
            chars.into_iter().collect()
        })
}

/// Texts that are hard on a JSON decoder: too deep, out of range, lone surrogates, NUL
/// escapes, duplicate keys, a byte-order mark, trailing garbage, huge strings.
fn special() -> impl Strategy<Value = String> {
    let deep = |n: usize| format!("{{\"name\": {}{}}}", "[".repeat(n), "]".repeat(n));
    proptest::sample::select(vec![
        String::new(),
        " ".into(),
        "null".into(),
        "{}".into(),
        "[]".into(),
        "\"text\"".into(),
        deep(127),
        deep(128),
        deep(5_000),
        r#"{"name":"x","n":1e400,"xs":[]}"#.into(),
        r#"{"name":"x","n":9223372036854775808,"xs":[]}"#.into(),
        r#"{"name":"x","n":-9223372036854775809,"xs":[]}"#.into(),
        r#"{"name":"\ud800","n":1,"xs":[]}"#.into(),
        r#"{"name":"\udc00\ud800","n":1,"xs":[]}"#.into(),
        r#"{"name":"a\u0000b","n":1,"xs":[1e308,-0.0,5e-324]}"#.into(),
        r#"{"name":"a","name":"b","n":1,"xs":[]}"#.into(),
        r#"{"name":"a","n":1,"xs":[1e999]}"#.into(),
        "\u{feff}{\"name\":\"a\",\"n\":1,\"xs\":[]}".into(),
        r#"{"name":"a","n":1,"xs":[]} trailing"#.into(),
        r#"{"name":"a","n":1.0,"xs":[]}"#.into(),
        r#"{"name":"a","n":1,"xs":[NaN]}"#.into(),
        format!("{{\"name\":\"{}\",\"n\":1,\"xs\":[]}}", "é".repeat(100_000)),
    ])
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        2 => json_value().prop_map(|v| v.to_string()),
        3 => args().prop_map(|v| v.to_string()),
        3 => mutated(),
        2 => special(),
    ]
}

fn stored(bytes: bool) -> BoxedStrategy<Stored> {
    if bytes {
        prop_oneof![
            6 => text().prop_map(Stored::Text),
            1 => vec(any::<u8>(), 0..48).prop_map(Stored::Blob),
            1 => vec(any::<u8>(), 0..48).prop_map(Stored::RawText),
            1 => text().prop_map(|t| Stored::RawText(t.into_bytes())),
        ]
        .boxed()
    } else {
        text().prop_map(Stored::Text).boxed()
    }
}

/// A store whose payload rows a case can overwrite with raw SQL.
#[async_trait::async_trait]
trait Corrupt: Send + Sync {
    /// Writes `s` as task `id`'s payload; `false` when the database refuses the value
    /// (PostgreSQL's `json` type checks its input).
    async fn write(&self, id: TaskId, s: &Stored) -> bool;
    /// Deletes every task, so that a row left by a failed case cannot fail the next.
    async fn clear(&self);
}

struct SqliteRows(std::sync::Mutex<rusqlite::Connection>);

#[async_trait::async_trait]
impl Corrupt for SqliteRows {
    async fn write(&self, id: TaskId, s: &Stored) -> bool {
        let c = self.0.lock().expect("lock");
        let (sql, value) = match s {
            Stored::Text(t) => (
                "UPDATE taskq_tasks SET payload = ?2 WHERE id = ?1",
                rusqlite::types::Value::Text(t.clone()),
            ),
            Stored::Blob(b) => (
                "UPDATE taskq_tasks SET payload = ?2 WHERE id = ?1",
                rusqlite::types::Value::Blob(b.clone()),
            ),
            Stored::RawText(b) => (
                "UPDATE taskq_tasks SET payload = CAST(?2 AS TEXT) WHERE id = ?1",
                rusqlite::types::Value::Blob(b.clone()),
            ),
        };
        let n = c
            .execute(sql, rusqlite::params![id.0, value])
            .expect("corrupt the payload");
        assert_eq!(n, 1);
        true
    }

    async fn clear(&self) {
        let c = self.0.lock().expect("lock");
        c.execute_batch("DELETE FROM taskq_attempts; DELETE FROM taskq_tasks")
            .expect("clear");
    }
}

struct PostgresRows {
    client: taskq_runtime::tokio_postgres::Client,
    schema: String,
}

#[async_trait::async_trait]
impl Corrupt for PostgresRows {
    async fn write(&self, id: TaskId, s: &Stored) -> bool {
        let Stored::Text(t) = s else {
            unreachable!("PostgreSQL cases write text only")
        };
        let sql = format!(
            "UPDATE \"{}\".taskq_tasks SET payload = $2::text::json WHERE id = $1",
            self.schema
        );
        match self.client.execute(&sql, &[&id.0, t]).await {
            Ok(n) => {
                assert_eq!(n, 1);
                true
            }
            // Not JSON (or holding NUL, which PostgreSQL text cannot): the database
            // itself keeps such a payload out.
            Err(e) if e.as_db_error().is_some() => false,
            Err(e) => panic!("corrupt the payload: {e}"),
        }
    }

    async fn clear(&self) {
        let s = &self.schema;
        self.client
            .batch_execute(&format!(
                "DELETE FROM \"{s}\".taskq_attempts; DELETE FROM \"{s}\".taskq_tasks"
            ))
            .await
            .expect("clear");
    }
}

/// Counts over a run, so that a generator that stops reaching a kind of row fails.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    cases: u64,
    refused_by_db: u64,
    decoded: u64,
    undecodable: u64,
    done: u64,
    dead: u64,
}

async fn one_case(
    store: &Arc<dyn Store>,
    rows: &dyn Corrupt,
    s: &Stored,
    seen: &mut Seen,
) -> Result<(), String> {
    rows.clear().await;
    let queue = Queue::new(store.clone());
    let id = takes::start(&queue, "before".into(), 1, vec![])
        .await
        .map_err(|e| format!("start: {e}"))?;
    seen.cases += 1;
    if !rows.write(id, s).await {
        seen.refused_by_db += 1;
        store
            .delete(id, queue.clock().now())
            .await
            .map_err(|e| format!("delete: {e}"))?;
        return Ok(());
    }
    let now = queue.clock().now();
    let claimed = store
        .claim(&ClaimRequest {
            queues: vec!["fuzz".into()],
            worker: "fuzz".into(),
            limit: 10,
            lease: Duration::from_secs(600),
            now,
        })
        .await
        .map_err(|e| format!("the claim failed because of one row: {e}"))?;
    let [c] = claimed.as_slice() else {
        return Err(format!(
            "claimed {} tasks, not the one: {claimed:?}",
            claimed.len()
        ));
    };
    if c.lease.id != id {
        return Err(format!("claimed {:?}, not {id}", c.lease.id));
    }
    // Text as SQLite hands it back: a cast of bytes that happen to be UTF-8 is plain text.
    let as_text = match s {
        Stored::Text(t) => Some(t.as_str()),
        Stored::RawText(b) => std::str::from_utf8(b).ok(),
        Stored::Blob(_) => None,
    };
    match (&c.decode_error, as_text) {
        (None, Some(t)) => {
            seen.decoded += 1;
            let want: Value = serde_json::from_str(t)
                .map_err(|e| format!("handed out as decoded, but {t:?} is not JSON: {e}"))?;
            if c.payload != want {
                return Err(format!("decoded {:?}, not {want:?}", c.payload));
            }
        }
        (None, _) => return Err(format!("bytes handed out as decoded: {:?}", c.payload)),
        (Some(why), _) => {
            seen.undecodable += 1;
            if !(why.contains("payload") && why.contains(&id.to_string())) {
                return Err(format!(
                    "the reason does not name the payload of task {id}: {why}"
                ));
            }
            if !c.payload.is_string() {
                return Err(format!(
                    "an undecodable payload is handed out as raw text, not {:?}",
                    c.payload
                ));
            }
        }
    }
    // Put it back (not counted), look at it, then let a run decide.
    let r = store
        .finish(
            vec![Finish {
                lease: c.lease,
                outcome: Outcome::Release,
                started_at: now,
            }],
            "fuzz",
            now,
        )
        .await
        .map_err(|e| format!("release: {e}"))?;
    r.into_iter()
        .next()
        .ok_or("no finish result")?
        .map_err(|e| format!("release: {e}"))?;
    queue
        .task(id)
        .await
        .map_err(|e| format!("task(): {e}"))?
        .ok_or("task() lost the task")?;
    queue
        .list(&TaskQuery {
            queue: Some("fuzz".into()),
            limit: 5,
            ..TaskQuery::default()
        })
        .await
        .map_err(|e| format!("list(): {e}"))?;
    Harness::with_store(store.clone())
        .drain()
        .await
        .map_err(|e| format!("a run failed: {e}"))?;
    let t = queue
        .task(id)
        .await
        .map_err(|e| format!("task(): {e}"))?
        .ok_or("task() lost the task")?;
    match t.info.state {
        TaskState::Done if c.decode_error.is_none() => seen.done += 1,
        TaskState::Dead => {
            seen.dead += 1;
            let error = t.info.last_error.unwrap_or_default();
            if !(error.contains("payload") && error.contains("does not decode")) {
                return Err(format!("dead without naming its payload: {error}"));
            }
        }
        other => return Err(format!("ended {other} after a run: {:?}", t.attempts)),
    }
    // Out of the way of the next case.
    store
        .delete(id, queue.clock().now())
        .await
        .map_err(|e| format!("delete: {e}"))?;
    Ok(())
}

fn cases(ci: u32) -> u32 {
    match std::env::var("TASKQ_PROPTEST_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("TASKQ_PROPTEST_CASES={v:?} is not a number of cases")),
        Err(_) => ci,
    }
}

fn fuzz(
    store: Arc<dyn Store>,
    rows: Box<dyn Corrupt>,
    bytes: bool,
    ci_cases: u32,
    rt: &tokio::runtime::Runtime,
) {
    let mut runner = TestRunner::new(Config {
        cases: cases(ci_cases),
        failure_persistence: None,
        max_shrink_iters: 500,
        ..Config::default()
    });
    let seen = std::cell::Cell::new(Seen::default());
    let result = runner.run(&stored(bytes), |s| {
        let mut st = seen.get();
        let r = rt.block_on(one_case(&store, rows.as_ref(), &s, &mut st));
        seen.set(st);
        r.map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("the {} store: {e}", store.backend());
    }
    let st = seen.get();
    eprintln!("{}: {st:?}", store.backend());
    assert!(
        st.decoded > 0 && st.undecodable > 0 && st.done > 0 && st.dead > 0,
        "the cases reached too little: {st:?}"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn sqlite_payload_rows_of_any_bytes_decode_or_go_dead_with_the_reason() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fuzz.db");
    let store = rt
        .block_on(taskq_runtime::store::open(&format!(
            "sqlite://{}",
            path.display()
        )))
        .expect("open");
    let conn = rusqlite::Connection::open(&path).expect("open the file");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    fuzz(
        store,
        Box::new(SqliteRows(std::sync::Mutex::new(conn))),
        true,
        256,
        &rt,
    );
}

#[test]
fn postgres_payload_rows_of_any_json_decode_or_go_dead_with_the_reason() {
    use taskq_runtime::tokio_postgres::{self, NoTls};
    let rt = runtime();
    let url = taskq_tests::postgres_url();
    let schema = taskq_tests::unique_name("fuzz");
    let (store, client) = rt.block_on(async {
        let store = taskq_runtime::store::postgres::PostgresStore::open_in_schema(&url, &schema)
            .await
            .expect("open");
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        (Arc::new(store) as Arc<dyn Store>, client)
    });
    fuzz(
        store,
        Box::new(PostgresRows { client, schema }),
        false,
        128,
        &rt,
    );
}
