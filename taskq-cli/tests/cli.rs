//! The `taskq` binary itself, run as a script would run it, against a real SQLite file
//! and the test PostgreSQL server (`TASKQ_TEST_POSTGRES_URL`: without it the PostgreSQL
//! cases fail, never skip): every subcommand, the `--json` shapes, each exit code, a bad
//! URL, an unknown id or queue, and a database that cannot be reached.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use taskq_runtime::store::{Checkpoint, ClaimRequest, Finish, NewIteration, NewTask, Outcome};
use taskq_runtime::{Queue, TaskId, Timestamp};
use taskq_tests::served::{http_get, stop_with_sigterm, wait_listening};

/// What one run of the binary gave.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// The stdout as the one JSON document `--json` promises.
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }
}

/// Runs `taskq ARGS` with no `TASKQ_STORE`, stdin not a terminal, in `dir` if given;
/// fails the test if it has not exited after 60 s (a hang is a bug).
fn run_in(dir: Option<&std::path::Path>, env: &[(&str, &str)], args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskq"));
    cmd.args(args)
        .env_remove("TASKQ_STORE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let mut child = cmd.spawn().expect("start taskq");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for taskq") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("taskq {args:?} did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut stdout).expect("read stdout");
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).expect("read stderr");
    }
    Out {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

/// `taskq --store URL ARGS`.
fn taskq(url: &str, args: &[&str]) -> Out {
    let mut all = vec!["--store", url];
    all.extend_from_slice(args);
    run_in(None, &[], &all)
}

/// Runs `taskq --store URL ARGS` and checks its exit code.
fn expect(url: &str, code: i32, args: &[&str]) -> Out {
    let out = taskq(url, args);
    assert_eq!(out.code, code, "taskq {args:?}: {out:?}");
    out
}

/// The ids of what [`fill`] stored.
struct Fixture {
    url: String,
    dead: TaskId,
    failed: TaskId,
    later: TaskId,
    done: TaskId,
    report: TaskId,
    run: TaskId,
}

fn task(name: &str, queue: &str, payload: Value, run_at: Timestamp) -> NewTask {
    NewTask {
        task: name.into(),
        queue: queue.into(),
        payload,
        priority: 0,
        run_at,
        unique_name: None,
        tombstone: Duration::from_secs(60),
        iteration: None,
        trace: None,
    }
}

/// The unique key of the fixture's `app::report` task, unique by all its arguments.
fn report_key() -> String {
    taskq_runtime::unique::key(
        "app::report",
        "reports",
        &json!({ "month": "2026-11" }),
        &taskq_runtime::UniqueArgs::All,
    )
    .expect("a key")
}

/// Stores, through the library, queue `email` with a dead, a failed, a done and a
/// pending task due in an hour; queue `reports` with a pending task; and an iteration
/// run on queue `iter` half done (5 of 10), its step pending.
fn fill(url: String) -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let q = Queue::open(&url).await.expect("open the store");
        let s = q.store().clone();
        let now = q.clock().now();
        let hour = now.add(Duration::from_secs(3600));
        let mail = |to: &str, at| task("app::send_email", "email", json!({ "to": to }), at);
        let mut walk = task(
            "app::walk",
            "iter",
            json!({ "filter": { "program": "gsoc" }, "args": {} }),
            hour,
        );
        walk.iteration = Some(NewIteration {
            filter: json!({ "program": "gsoc" }),
        });
        // Unique by its arguments (`taskq_runtime::unique`): `show` prints its key.
        let mut report = task(
            "app::report",
            "reports",
            json!({ "month": "2026-11" }),
            hour,
        );
        report.unique_name = Some(report_key());
        let ids = s
            .enqueue(
                vec![
                    mail("ada@example.org", now),
                    mail("bob@example.org", now),
                    mail("cy@example.org", hour),
                    mail("dee@example.org", now),
                    report,
                    walk,
                ],
                now,
            )
            .await
            .expect("enqueue");
        let claim = |queues: &[&str], now| ClaimRequest {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            worker: "test-worker".into(),
            limit: 10,
            lease: Duration::from_secs(60),
            now,
        };
        let claimed = s.claim(&claim(&["email"], now)).await.expect("claim");
        assert_eq!(claimed.len(), 3, "the three due email tasks");
        let outcome = |id: TaskId| {
            if id == ids[0] {
                Outcome::Dead {
                    error: "smtp down".into(),
                }
            } else if id == ids[1] {
                Outcome::Failed {
                    error: "bad address".into(),
                }
            } else {
                Outcome::Done
            }
        };
        let finished: Vec<Finish> = claimed
            .iter()
            .map(|c| Finish {
                lease: c.lease,
                outcome: outcome(c.lease.id),
                started_at: now,
            })
            .collect();
        for r in s
            .finish(finished, "test-worker", now)
            .await
            .expect("finish")
        {
            r.expect("finished");
        }
        // The run's step: claimed, 5 of 10 entities done, handed back.
        let step = s
            .claim(&claim(&["iter"], hour))
            .await
            .expect("claim the step");
        assert_eq!(step.len(), 1);
        s.checkpoint(
            step[0].lease,
            Checkpoint {
                cursor: json!(5),
                processed: 5,
                total: Some(10),
            },
            hour,
        )
        .await
        .expect("checkpoint");
        let r = s
            .finish(
                vec![Finish {
                    lease: step[0].lease,
                    outcome: Outcome::Release,
                    started_at: hour,
                }],
                "test-worker",
                hour,
            )
            .await
            .expect("release");
        r.into_iter().for_each(|r| r.expect("released"));
        Fixture {
            url,
            dead: ids[0],
            failed: ids[1],
            later: ids[2],
            done: ids[3],
            report: ids[4],
            run: ids[5],
        }
    })
}

/// A store file in `dir` (the test keeps `dir`, which deletes it at the end).
fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("taskq.db").display())
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn postgres_url() -> String {
    taskq_tests::postgres_store_url()
}

fn id(t: TaskId) -> String {
    t.0.to_string()
}

/// The queue `name` of `taskq queues --json`.
fn queue_json(url: &str, name: &str) -> Value {
    let doc = expect(url, 0, &["queues", "--json"]).json();
    doc["queues"]
        .as_array()
        .expect("queues is an array")
        .iter()
        .find(|q| q["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no queue {name} in {doc}"))
}

/// Every subcommand, in tables and in `--json`, on one store.
fn every_command(url: String) {
    let f = fill(url);
    let u = f.url.as_str();

    // queues
    let email = queue_json(u, "email");
    assert_eq!(
        email,
        json!({
            "name": "email", "paused": false,
            "counts": { "pending": 1, "running": 0, "done": 1, "failed": 1, "dead": 1, "cancelled": 0 },
            "rate": null, "burst": null, "max_concurrent": null
        })
    );
    let table = expect(u, 0, &["queues"]).stdout;
    assert!(table.contains("QUEUE") && table.contains("DEAD"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().next() == Some("email")
                && l.split_whitespace().collect::<Vec<_>>()[1..8]
                    == ["no", "1", "0", "1", "1", "1", "0"]),
        "{table}"
    );

    // tasks: filters, paging, arguments
    let dead = expect(
        u,
        0,
        &["tasks", "--json", "--queue", "email", "--state", "dead"],
    )
    .json();
    let list = dead["tasks"].as_array().expect("tasks");
    assert_eq!(list.len(), 1, "{dead}");
    assert_eq!(list[0]["id"], f.dead.0);
    assert_eq!(list[0]["state"], "dead");
    assert_eq!(list[0]["task"], "app::send_email");
    assert_eq!(list[0]["last_error"], "smtp down");
    assert_eq!(list[0]["args"], Value::Null);
    assert_eq!(dead["next_before"], Value::Null);
    let keys: Vec<&String> = list[0].as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        [
            "args",
            "attempts",
            "created_at",
            "enqueued_at",
            "finished_at",
            "id",
            "last_error",
            "lease_until",
            "priority",
            "queue",
            "run",
            "run_at",
            "state",
            "task",
            "unique_name",
            "worker"
        ]
    );
    let by_args = expect(u, 0, &["tasks", "--json", "--args", "ada@", "--with-args"]).json();
    assert_eq!(by_args["tasks"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        by_args["tasks"][0]["args"],
        json!({ "to": "ada@example.org" })
    );
    let by_name = expect(u, 0, &["tasks", "--json", "--task", "app::report"]).json();
    assert_eq!(by_name["tasks"][0]["id"], f.report.0);
    let page = expect(u, 0, &["tasks", "--json", "--limit", "2"]).json();
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["tasks"][0]["id"], f.run.0, "newest first");
    let next = page["next_before"]
        .as_i64()
        .expect("a full page has a next one");
    assert_eq!(next, f.report.0);
    let rest = expect(u, 0, &["tasks", "--json", "--before", &next.to_string()]).json();
    assert_eq!(rest["tasks"].as_array().map(Vec::len), Some(4));
    let human = expect(u, 0, &["tasks", "--queue", "email"]).stdout;
    assert!(
        human.contains("LAST ERROR") && human.contains("smtp down"),
        "{human}"
    );
    let human = expect(u, 0, &["tasks", "--limit", "1"]).stdout;
    assert!(
        human.contains(&format!("more: --before {}", f.run.0)),
        "{human}"
    );

    // show
    let shown = expect(u, 0, &["show", &id(f.dead), "--json"]).json();
    assert_eq!(shown["task"]["id"], f.dead.0);
    assert_eq!(shown["task"]["args"], json!({ "to": "ada@example.org" }));
    let attempts = shown["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{shown}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["worker"], "test-worker");
    assert_eq!(attempts[0]["outcome"], "dead");
    assert_eq!(attempts[0]["error"], "smtp down");
    assert!(attempts[0]["started_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert!(attempts[0]["finished_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let human = expect(u, 0, &["show", &id(f.dead)]).stdout;
    assert!(
        human.contains("\"to\": \"ada@example.org\""),
        "pretty arguments: {human}"
    );
    assert!(
        human.contains("test-worker") && human.contains("smtp down"),
        "{human}"
    );
    let report = expect(u, 0, &["show", &id(f.report)]).stdout;
    assert!(
        report.contains("unique key") && report.contains(&report_key()),
        "the unique key of a task unique by its arguments: {report}"
    );
    assert!(!human.contains("unique key"), "{human}");

    // run now
    let ran = expect(u, 0, &["run", &id(f.later), "--json"]).json();
    assert_eq!(ran, json!({ "action": "run", "id": f.later.0 }));
    let later = expect(u, 0, &["show", &id(f.later), "--json"]).json();
    let before = expect(u, 0, &["show", &id(f.report), "--json"]).json();
    assert!(
        later["task"]["run_at"].as_str() < before["task"]["run_at"].as_str(),
        "run now moved its due time from an hour ahead: {later} {before}"
    );
    expect(u, 1, &["run", &id(f.done)]);

    // retry one, then every match
    let r = expect(u, 0, &["retry", &id(f.dead), "--json"]).json();
    assert_eq!(r, json!({ "action": "retry", "id": f.dead.0 }));
    let again = expect(u, 0, &["show", &id(f.dead), "--json"]).json();
    assert_eq!(again["task"]["state"], "pending");
    assert_eq!(
        again["attempts"].as_array().map(Vec::len),
        Some(1),
        "history kept"
    );
    expect(u, 1, &["retry", &id(f.dead)]);
    let out = expect(u, 2, &["retry", "--all"]);
    assert!(out.stderr.contains("--yes"), "{out:?}");
    assert_eq!(
        queue_json(u, "email")["counts"]["failed"],
        1,
        "nothing retried without --yes"
    );
    let all = expect(
        u,
        0,
        &["retry", "--all", "--queue", "email", "--yes", "--json"],
    )
    .json();
    assert_eq!(all, json!({ "action": "retry", "retried": 1 }));
    assert_eq!(queue_json(u, "email")["counts"]["failed"], 0);
    let again = expect(u, 0, &["show", &id(f.failed), "--json"]).json();
    assert_eq!(again["task"]["state"], "pending");
    let none = expect(u, 0, &["retry", "--all", "--yes"]).stdout;
    assert!(none.contains("0 tasks"), "{none}");

    // pause, resume
    let p = expect(u, 0, &["pause", "email", "--json"]).json();
    assert_eq!(
        p,
        json!({ "action": "pause", "queue": "email", "paused": true })
    );
    assert_eq!(queue_json(u, "email")["paused"], true);
    let table = expect(u, 0, &["queues"]).stdout;
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["email", "yes"])),
        "{table}"
    );
    let r = expect(u, 0, &["resume", "email", "--json"]).json();
    assert_eq!(
        r,
        json!({ "action": "resume", "queue": "email", "paused": false })
    );
    assert_eq!(queue_json(u, "email")["paused"], false);

    // runs, cancel
    let runs = expect(u, 0, &["runs", "--json"]).json();
    let list = runs["runs"].as_array().expect("runs");
    assert_eq!(list.len(), 1, "{runs}");
    let run = &list[0];
    assert_eq!(run["run"], f.run.0);
    assert_eq!(run["task"], "app::walk");
    assert_eq!(run["state"], "running");
    assert_eq!(run["processed"], 5);
    assert_eq!(run["total"], 10);
    assert_eq!(run["percent"], 50.0);
    assert_eq!(run["cursor"], 5);
    assert_eq!(run["filter"], json!({ "program": "gsoc" }));
    let one = expect(u, 0, &["runs", &id(f.run), "--json"]).json();
    assert_eq!(&one["run"], run);
    let human = expect(u, 0, &["runs"]).stdout;
    assert!(
        human.contains("DONE %") && human.contains("50.0"),
        "{human}"
    );
    let c = expect(u, 0, &["cancel", &id(f.run), "--json"]).json();
    assert_eq!(
        c,
        json!({ "action": "cancel", "id": f.run.0, "outcome": "cancelled" })
    );
    let one = expect(u, 0, &["runs", &id(f.run), "--json"]).json();
    assert_eq!(one["run"]["state"], "cancelled");
    expect(u, 1, &["cancel", &id(f.run)]);
    // A pending task: cancelled now (a running one is the library's and the worker's
    // tests).
    let c = expect(u, 0, &["cancel", &id(f.report), "--json"]).json();
    assert_eq!(
        c,
        json!({ "action": "cancel", "id": f.report.0, "outcome": "cancelled" })
    );
    let shown = expect(u, 0, &["show", &id(f.report), "--json"]).json();
    assert_eq!(shown["task"]["state"], "cancelled");
    let human = expect(u, 1, &["cancel", &id(f.report)]);
    assert!(
        human.stderr.contains("only a pending or running task"),
        "{human:?}"
    );

    // purge
    let out = expect(u, 2, &["purge", "email"]);
    assert!(out.stderr.contains("--yes"), "{out:?}");
    let pending = queue_json(u, "email")["counts"]["pending"].as_u64();
    assert_eq!(pending, Some(3));
    let p = expect(u, 0, &["purge", "email", "--yes", "--json"]).json();
    assert_eq!(
        p,
        json!({ "action": "purge", "queue": "email", "purged": 3 })
    );
    assert_eq!(queue_json(u, "email")["counts"]["pending"], 0);

    // delete
    let d = expect(u, 0, &["delete", &id(f.done), "--json"]).json();
    assert_eq!(d, json!({ "action": "delete", "id": f.done.0 }));
    expect(u, 3, &["show", &id(f.done)]);

    // prune: nothing is old enough yet
    let p = expect(u, 0, &["prune", "--json"]).json();
    assert_eq!(
        p,
        json!({
            "tasks": { "pending": 0, "running": 0, "done": 0, "failed": 0, "dead": 0, "cancelled": 0 },
            "runs": 0, "tombstones": 0, "busy": false
        })
    );
    let human = expect(u, 0, &["prune"]).stdout;
    assert!(human.starts_with("pruned 0 tasks"), "{human}");
}

/// Unknown ids and queues exit with 3, operations that do not apply with 1, misuse with 2;
/// `--json` prints the error as one document.
fn exit_codes(url: String) {
    let f = fill(url);
    let u = f.url.as_str();
    let missing = "999999";
    for args in [
        vec!["show", missing],
        vec!["run", missing],
        vec!["delete", missing],
        vec!["retry", missing],
        vec!["runs", missing],
        vec!["cancel", missing],
        vec!["pause", "nosuchqueue"],
        vec!["resume", "nosuchqueue"],
        vec!["purge", "nosuchqueue", "--yes"],
        vec!["tasks", "--queue", "nosuchqueue"],
        vec!["retry", "--all", "--queue", "nosuchqueue", "--yes"],
    ] {
        let out = expect(u, 3, &args);
        assert!(out.stderr.contains("not found"), "{args:?}: {out:?}");
    }
    assert!(
        queue_json(u, "email")["paused"] == false
            && expect(u, 0, &["queues", "--json"]).json()["queues"]
                .as_array()
                .is_some_and(|q| q.iter().all(|q| q["name"] != "nosuchqueue")),
        "a command on an unknown queue creates none"
    );
    let err = expect(u, 3, &["show", missing, "--json"]).json();
    assert_eq!(
        err,
        json!({ "error": { "kind": "not_found", "code": 3, "message": "task 999999 not found" } })
    );
    // Not in a state the operation applies to.
    expect(u, 1, &["run", &id(f.done)]);
    expect(u, 1, &["retry", &id(f.later)]);
    expect(u, 1, &["cancel", &id(f.done)]);
    expect(u, 0, &["cancel", &id(f.run)]);
    expect(u, 1, &["cancel", &id(f.run)]);
    let err = expect(u, 1, &["retry", &id(f.report), "--json"]).json();
    assert_eq!(err["error"]["kind"], "failed");
    // Misuse.
    expect(u, 2, &["retry"]);
    expect(u, 2, &["retry", &id(f.dead), "--queue", "email"]);
    expect(u, 2, &["retry", "--all", "--state", "pending", "--yes"]);
    expect(u, 2, &["tasks", "--state", "sleeping"]);
    expect(u, 2, &["show", "not-a-number"]);
    expect(u, 2, &["frobnicate"]);
    let err = expect(u, 2, &["purge", "email", "--json"]).json();
    assert_eq!(err["error"]["kind"], "usage");
    assert_eq!(
        queue_json(u, "email")["counts"]["pending"],
        1,
        "nothing purged"
    );
}

/// `taskq schedules` and `taskq schedule run|pause|resume NAME`, with `--json`.
fn schedule_commands(url: String) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let q = Queue::open(&url).await.expect("open");
        taskq_runtime::Schedule::new("nightly-report", "0 3 * * *", "app::report")
            .timezone("Europe/Paris")
            .args(json!({ "team": "sales" }))
            .register(&q)
            .await
            .expect("register");
    });
    let list = expect(&url, 0, &["schedules", "--json"]).json();
    let s = &list["schedules"][0];
    assert_eq!(s["name"], "nightly-report");
    assert_eq!(s["cron"], "0 3 * * *");
    assert_eq!(s["timezone"], "Europe/Paris");
    assert_eq!(s["catch_up"], "last");
    assert_eq!(s["paused"], false);
    assert_eq!(s["last_run"], Value::Null);
    assert_eq!(s["args"], json!({ "team": "sales" }));
    let next = s["next_run"].as_str().expect("next run").to_string();
    assert!(next.ends_with(":00:00.000Z"), "{next}");
    let human = expect(&url, 0, &["schedules"]).stdout;
    assert!(
        human.contains("nightly-report") && human.contains("active"),
        "{human}"
    );

    let ran = expect(&url, 0, &["schedule", "run", "nightly-report", "--json"]).json();
    let id = ran["id"].as_i64().expect("the task's id");
    let shown = expect(&url, 0, &["show", &id.to_string(), "--json"]).json();
    assert_eq!(shown["task"]["args"], json!({ "team": "sales" }), "{shown}");
    let after = expect(&url, 0, &["schedules", "--json"]).json();
    assert_eq!(
        after["schedules"][0]["next_run"],
        next.as_str(),
        "run now moves nothing"
    );

    expect(&url, 0, &["schedule", "pause", "nightly-report"]);
    let paused = expect(&url, 0, &["schedules", "--json"]).json();
    assert_eq!(paused["schedules"][0]["paused"], true);
    assert!(expect(&url, 0, &["schedules"]).stdout.contains("paused"));
    let resumed = expect(&url, 0, &["schedule", "resume", "nightly-report", "--json"]).json();
    assert_eq!(resumed["paused"], false);
    expect(&url, 3, &["schedule", "pause", "no-such-schedule"]);
    expect(&url, 3, &["schedule", "run", "no-such-schedule", "--json"]);
    expect(&url, 3, &["schedule", "resume", "no-such-schedule"]);
}

#[test]
fn schedule_commands_on_sqlite() {
    let dir = temp_dir();
    schedule_commands(sqlite_url(&dir));
}

#[test]
fn every_command_on_sqlite() {
    let dir = temp_dir();
    every_command(sqlite_url(&dir));
}

#[test]
fn every_command_on_postgres() {
    every_command(postgres_url());
}

#[test]
fn exit_codes_on_sqlite() {
    let dir = temp_dir();
    exit_codes(sqlite_url(&dir));
}

#[test]
fn exit_codes_on_postgres() {
    exit_codes(postgres_url());
}

/// A URL the library refuses is a usage error that never shows the password.
#[test]
fn a_bad_store_url_is_a_usage_error_without_its_password() {
    for url in [
        "postgres://ops:s3cret-pw@db.example:5432/app?pool_size=lots",
        "mysql://ops:s3cret-pw@db/app",
        "sqlite://",
        "",
    ] {
        let out = taskq(url, &["queues"]);
        assert_eq!(out.code, 2, "{url}: {out:?}");
        assert!(out.stderr.contains("bad store URL"), "{url}: {out:?}");
        assert!(!out.stderr.contains("s3cret"), "{url}: {out:?}");
        let out = taskq(url, &["queues", "--json"]);
        assert_eq!(out.json()["error"]["kind"], "usage");
        assert!(!out.stdout.contains("s3cret"), "{url}: {out:?}");
    }
    let out = taskq("memory://", &["queues"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("memory://"), "{out:?}");
}

/// A usage error clap finds (an unknown flag, a missing or bad argument) exits with 2 and,
/// with `--json` anywhere on the line, prints the same error document as every other
/// failure, so a script reading stdout always gets one.
#[test]
fn usage_errors_honour_json() {
    for args in [
        &["queues", "--json", "--no-such-flag"][..],
        &["--json", "show"],
        &["show", "not-a-number", "--json"],
        &["tasks", "--state", "zombie", "--json"],
        &["--json", "no-such-command"],
    ] {
        let out = taskq("sqlite://unused.db", args);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        let doc = out.json();
        assert_eq!(doc["error"]["kind"], "usage", "{args:?}: {doc}");
        assert_eq!(doc["error"]["code"], 2, "{args:?}: {doc}");
        let message = doc["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "{args:?}: {doc}"
        );
        assert!(
            !out.stderr.is_empty(),
            "clap's own message on stderr: {out:?}"
        );
    }
    // Without --json, stdout stays empty.
    let out = taskq("sqlite://unused.db", &["queues", "--no-such-flag"]);
    assert_eq!((out.code, out.stdout.as_str()), (2, ""), "{out:?}");
}

/// Names and arguments from the store cannot drive the terminal: an ESC sequence, a
/// carriage return and a right-to-left override in a queue name, task name and
/// arguments print as escapes in tables and in `show`, and stay exact in `--json`.
#[test]
fn control_characters_from_the_store_print_as_escapes() {
    let dir = temp_dir();
    let url = sqlite_url(&dir);
    let evil_queue = "mail\u{1b}[2J\rq\u{202e}";
    let evil_task = "app::\u{1b}]0;pwned\u{7}x";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let id = rt.block_on(async {
        let q = Queue::open(&url).await.expect("open the store");
        let now = q.clock().now();
        let t = task(evil_task, evil_queue, json!({ "note": "\u{9b}31m" }), now);
        q.store().enqueue(vec![t], now).await.expect("enqueue")[0]
    });
    let id = id.to_string();
    for args in [
        vec!["queues"],
        vec!["tasks", "--with-args"],
        vec!["show", id.as_str()],
    ] {
        let out = expect(&url, 0, &args);
        for bad in ['\u{1b}', '\r', '\u{202e}', '\u{7}', '\u{9b}'] {
            assert!(
                !out.stdout.contains(bad),
                "{args:?} printed {bad:?}: {out:?}"
            );
        }
        assert!(out.stdout.contains("\\u{1b}"), "{args:?}: {out:?}");
    }
    assert_eq!(queue_json(&url, evil_queue)["counts"]["pending"], 1);
}

/// A database that cannot be reached exits with 4, within the connect timeout: refused,
/// silent (an address that does not answer), or an SQLite file that is not there (not
/// created).
#[test]
fn an_unreachable_store_exits_with_4() {
    let refused = taskq("postgres://ops:pw@127.0.0.1:1/app", &["queues", "--json"]);
    assert_eq!(refused.code, 4, "{refused:?}");
    assert_eq!(refused.json()["error"]["kind"], "unreachable");
    // 192.0.2.0/24 is TEST-NET-1: nothing answers there (or the network says so at once).
    let silent = taskq(
        "postgres://ops:pw@192.0.2.1:5432/app",
        &["--connect-timeout", "1s", "queues"],
    );
    assert_eq!(silent.code, 4, "{silent:?}");
    assert!(
        silent.stderr.contains("cannot open the store"),
        "{silent:?}"
    );
    let dir = temp_dir();
    let path = dir.path().join("absent.db");
    let out = taskq(&format!("sqlite://{}", path.display()), &["queues"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("no SQLite file"), "{out:?}");
    assert!(!path.exists(), "the CLI created no store");
}

/// `--store` comes from TASKQ_STORE when not given, and defaults to `sqlite://taskq.db`
/// in the current directory; help exits with 0.
#[test]
fn the_store_comes_from_the_environment_or_the_default() {
    let dir = temp_dir();
    let f = fill(sqlite_url(&dir));
    let out = run_in(
        None,
        &[("TASKQ_STORE", f.url.as_str())],
        &["queues", "--json"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["queues"].as_array().map(Vec::len), Some(3));
    let dir = temp_dir();
    fill(sqlite_url(&dir));
    let out = run_in(
        Some(dir.path()),
        &[],
        &["tasks", "--json", "--queue", "reports"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["tasks"].as_array().map(Vec::len), Some(1));
    let empty = temp_dir();
    let out = run_in(Some(empty.path()), &[], &["queues"]);
    assert_eq!(out.code, 4, "{out:?}");
    let help = run_in(None, &[], &["--help"]);
    assert_eq!(help.code, 0, "{help:?}");
    assert!(help.stdout.contains("Exit codes"), "{help:?}");
}

/// Runs `taskq --store URL ARGS` on a terminal (a pseudo-terminal from util-linux's
/// `script`), typing `answer`; returns the exit code and what the terminal showed.
fn on_a_terminal(url: &str, args: &[&str], answer: &str) -> (i32, String) {
    use std::io::Write;
    let mut line = format!("'{}' --store '{url}'", env!("CARGO_BIN_EXE_taskq"));
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_remove("TASKQ_STORE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run util-linux `script` (it gives the command a terminal)");
    if let Some(mut i) = child.stdin.take() {
        // Typed once the question is up; the terminal keeps it until it is read.
        i.write_all(answer.as_bytes()).expect("type the answer");
    }
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("taskq {args:?} on a terminal did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut shown = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut shown).expect("read the terminal");
    }
    (status.code().unwrap_or(-1), shown)
}

/// At a terminal, `purge` and `retry --all` ask first: `n` leaves everything (exit 1),
/// `y` goes on.
#[test]
fn destructive_commands_ask_at_a_terminal() {
    let dir = temp_dir();
    let f = fill(sqlite_url(&dir));
    let u = f.url.as_str();
    let (code, shown) = on_a_terminal(u, &["purge", "email"], "n\n");
    assert!(
        shown.contains("pending tasks of queue `email`? [y/N]"),
        "{shown}"
    );
    assert_eq!(code, 1, "{shown}");
    assert_eq!(queue_json(u, "email")["counts"]["pending"], 1);
    let (code, shown) = on_a_terminal(u, &["purge", "email"], "y\n");
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("purged 1 pending tasks"), "{shown}");
    assert_eq!(queue_json(u, "email")["counts"]["pending"], 0);
    let (code, shown) = on_a_terminal(u, &["retry", "--all"], "n\n");
    assert_eq!(code, 1, "{shown}");
    assert_eq!(queue_json(u, "email")["counts"]["dead"], 1);
    let (code, shown) = on_a_terminal(u, &["retry", "--all"], "y\n");
    assert_eq!(code, 0, "{shown}");
    assert_eq!(queue_json(u, "email")["counts"]["dead"], 0);
    assert_eq!(queue_json(u, "email")["counts"]["failed"], 0);
}

/// `taskq admin` refuses to start without credentials (exit 2, saying which variables
/// to set) and without them off loopback; with a token from the environment it serves
/// the console (401 without it, the queues page with it) until SIGTERM, then exits 0.
#[test]
fn admin_serves_the_console_with_credentials_only() {
    let dir = temp_dir();
    let f = fill(sqlite_url(&dir));
    let no_creds = expect(&f.url, 2, &["admin", "--bind", "127.0.0.1:0"]);
    assert!(
        no_creds.stderr.contains("TASKQ_CONSOLE_TOKEN"),
        "{no_creds:?}"
    );
    let open = expect(&f.url, 2, &["admin", "--no-auth", "--bind", "0.0.0.0:0"]);
    assert!(open.stderr.contains("loopback"), "{open:?}");
    let weak = run_in(
        None,
        &[("TASKQ_CONSOLE_TOKEN", "short")],
        &["--store", &f.url, "admin", "--bind", "127.0.0.1:0"],
    );
    assert_eq!(weak.code, 2, "{weak:?}");
    for refused in [&no_creds, &open, &weak] {
        assert!(
            !refused.stderr.contains("console on"),
            "a refused console never says where it listens: {refused:?}"
        );
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let addr = format!("127.0.0.1:{port}");
    let token = "a-console-token-of-32-characters";
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args(["--store", &f.url, "admin", "--bind", &addr, "--metrics"])
        .env("TASKQ_CONSOLE_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start taskq admin");
    wait_listening(&mut child, &addr, Duration::from_secs(60));
    let (code, _) = http_get(&addr, "/", &[]);
    assert_eq!(code, 401, "a page without credentials");
    let bearer = format!("Bearer {token}");
    let (code, page) = http_get(&addr, "/", &[("Authorization", &bearer)]);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("email"),
        "the queues page lists queue `email`: {page}"
    );
    let status = stop_with_sigterm(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "taskq admin after SIGTERM");
}
