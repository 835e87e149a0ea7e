//! The README's smaller Rust blocks, compiled and (all but the PostgreSQL one) run.
//!
//! Each Rust block of README.md (and of `docs/*.md`) other than the tour
//! (`src/bin/tour.rs`) appears here verbatim, up to whitespace and comments, as code: never
//! only inside a comment, and this file has no cfg attribute or block comment that could
//! leave it out. Each sits inside the code that gives it a context (the types it uses, the
//! function around it); `tests/readme.rs` checks that, so a README block that stops
//! compiling or stops working fails `cargo test`. The blocks are `#[rustfmt::skip]` so that
//! they keep the README's layout (aligned comments, several calls on one line).

use std::sync::{Arc, Mutex};

/// The stand-in mailer of every snippet: it records what it was asked to send. Its clones
/// share one record, so a test can hand a clone to a worker and count afterwards.
#[derive(Clone, Default)]
pub struct Mailer {
    sent: Arc<Mutex<Vec<String>>>,
}

impl Mailer {
    /// Records one mail.
    pub async fn send(&self, to: &str, subject: &str) -> Result<(), std::io::Error> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{to}: {subject}"));
        Ok(())
    }

    /// How many mails were sent.
    pub fn count(&self) -> usize {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The README's opening example.
#[rustfmt::skip]
mod intro {
    use super::Mailer;

use taskq_runtime::{task, Context, Queue, TaskError};

#[task(queue = "email", max_attempts = 5, timeout = "30s")]
async fn send_email(ctx: Context, to: String, subject: String) -> Result<(), TaskError> {
    let mailer = ctx.state::<Mailer>()?;
    mailer.send(&to, &subject).await.map_err(TaskError::retry)?;
    Ok(())
}

async fn sign_up(queue: &Queue, email: String) -> Result<(), taskq_runtime::StartError> {
    // Typed, generated next to the function, checked by rustc:
    send_email::start(queue, email, "Welcome".into()).await?;
    Ok(())
}

    #[tokio::test]
    async fn the_intro_task_runs() -> Result<(), Box<dyn std::error::Error>> {
        let h = taskq_runtime::testing::Harness::new().state(Mailer::default());
        sign_up(&h.queue(), "ada@example.org".into()).await?;
        assert_eq!(h.drain().await?.count("done"), 1);
        Ok(())
    }
}

/// "Declare a task".
#[rustfmt::skip]
mod declare {
    async fn deliver(_to: &str, _subject: &str) -> Result<(), std::io::Error> {
        Ok(())
    }

use taskq_runtime::{task, Context, TaskError};

#[task(queue = "email", max_attempts = 5, timeout = "30s", min_backoff = "1s")]
async fn send_email(ctx: Context, to: String, subject: String) -> Result<(), TaskError> {
    if to.is_empty() {
        return Err(TaskError::fatal("no recipient"));      // failed, never retried
    }
    if ctx.deadline_exceeded() {
        return Err(TaskError::retry("out of time"));       // retried with backoff
    }
    deliver(&to, &subject).await?;                         // an io::Error, say: retried too
    Ok(())
}

    #[tokio::test]
    async fn an_empty_recipient_is_fatal() {
        let ctx = taskq_runtime::testing::Harness::new().context();
        let e = send_email(ctx, String::new(), "Hi".into()).await.err();
        assert!(e.is_some_and(|e| e.is_fatal()));
    }
}

/// "Start it" and "Manage tasks".
#[rustfmt::skip]
mod start_and_manage {
    use std::error::Error;

    use taskq_runtime::{task, Queue, TaskError, TaskId};

    pub struct User {
        email: String,
    }

    #[task(queue = "email")]
    async fn send_email(to: String, subject: String) -> Result<(), TaskError> {
        let _ = (to, subject);
        Ok(())
    }

    async fn start_it(queue: Queue, users: &[User]) -> Result<(), Box<dyn Error>> {
send_email::start(&queue, "ada@example.org".into(), "Welcome".into()).await?;

send_email::builder("ada@example.org".into(), "Welcome".into())
    .delay(std::time::Duration::from_secs(60))   // or .at(eta)
    .name("welcome-ada")                          // de-duplication: see below
    .priority(5)
    .start(&queue)
    .await?;

// Many at once, in one transaction (all are stored, or none):
queue.start_many(users.iter().map(|u| send_email::builder(u.email.clone(), "Hi".into()))).await?;
        Ok(())
    }

    async fn manage(queue: Queue, id: TaskId) -> Result<(), Box<dyn Error>> {
use taskq_runtime::{QueueConfig, TaskQuery, TaskState};

for q in queue.queues().await? {                   // every queue: counts by state, paused, settings
    println!("{}: {} pending, {} dead", q.name, q.count(TaskState::Pending), q.count(TaskState::Dead));
}
let dead = queue.list(&TaskQuery { state: Some(TaskState::Dead), ..Default::default() }).await?;
for t in &dead {
    if let Some(detail) = queue.task(t.id).await? {  // with every attempt and its error
        println!("{} {}: {:?}", t.id, t.task, detail.attempts.last().and_then(|a| a.error.as_deref()));
    }
    queue.retry(t.id).await?;                      // back to pending, with fresh attempts
}
let ada = TaskQuery { args_contains: Some(r#"to":"ada@"#.into()), ..Default::default() };
println!("{} tasks mention ada", queue.list(&ada).await?.len()); // a substring of the arguments' JSON
let n = queue.retry_matching(&TaskQuery { queue: Some("email".into()), ..Default::default() }).await?;
println!("{n} dead or failed email tasks retried");  // every match, in batches of 100
queue.run_now(id).await?;                          // a pending task, due now
queue.delete(id).await?;
queue.pause("email").await?;  queue.resume("email").await?;  queue.purge("email").await?;
queue.configure("email", QueueConfig { rate: Some(10.0), burst: Some(20), max_concurrent: Some(4), retention: None }).await?;
        Ok(())
    }

    async fn cancel_it(queue: Queue, id: TaskId) -> Result<(), Box<dyn Error>> {
use taskq_runtime::CancelOutcome;

match queue.cancel(id).await? {
    CancelOutcome::Cancelled => println!("task {id} will not run"),             // it was pending
    CancelOutcome::Requested => println!("task {id}'s worker tells it to stop"), // it was running
    CancelOutcome::AlreadyRequested => println!("task {id} was being stopped already"),
}
        Ok(())
    }

    async fn retention(queue: Queue) -> Result<(), Box<dyn Error>> {
use std::time::Duration;
use taskq_runtime::{QueueConfig, Retention, TaskState};

// Done tasks of `email` kept one hour, failed and dead ones 30 days:
let retention = Retention { done: Some(Duration::from_secs(3600)), failed: Some(Duration::from_secs(30 * 86_400)) };
queue.configure("email", QueueConfig { retention: Some(retention), ..QueueConfig::default() }).await?;
// Everything of `audit` kept for ever (retention off for that queue):
queue.configure("audit", QueueConfig { retention: Some(Retention::OFF), ..QueueConfig::default() }).await?;
// Prune now, and see what went:
let pruned = queue.prune().await?;
println!("pruned {} done and {} dead tasks", pruned.count(TaskState::Done), pruned.count(TaskState::Dead));
        Ok(())
    }

    #[tokio::test]
    async fn start_then_manage() -> Result<(), Box<dyn Error>> {
        let queue = Queue::open("memory://").await?;
        let users = [User { email: "bob@example.org".into() }, User { email: "eve@example.org".into() }];
        start_it(queue.clone(), &users).await?;
        let email = queue.queues().await?.into_iter().find(|q| q.name == "email");
        assert_eq!(email.map(|q| q.count(taskq_runtime::TaskState::Pending)), Some(4));
        // The named start again: refused, the name is taken.
        assert!(start_it(queue.clone(), &users).await.is_err());

        let id = send_email::builder("zoe@example.org".into(), "Later".into())
            .delay(std::time::Duration::from_secs(3600))
            .start(&queue)
            .await?;
        manage(queue.clone(), id).await?;
        assert!(queue.task(id).await?.is_none(), "deleted");
        retention(queue.clone()).await?;
        let audit = queue.queues().await?.into_iter().find(|q| q.name == "audit");
        assert_eq!(audit.and_then(|q| q.config.retention), Some(taskq_runtime::Retention::OFF));
        let pending = send_email::start(&queue, "yan@example.org".into(), "Bye".into()).await?;
        cancel_it(queue.clone(), pending).await?;
        assert_eq!(queue.task(pending).await?.map(|d| d.info.state), Some(taskq_runtime::TaskState::Cancelled));
        Ok(())
    }
}

/// "Unique tasks".
#[rustfmt::skip]
mod unique_tasks {
    use std::error::Error;
    use std::time::Duration;

    use taskq_runtime::{task, Queue, StartError, TaskError};

    async fn unique_tasks(queue: Queue) -> Result<(), Box<dyn Error>> {
// One reminder per address while one is pending or running, and for an hour after it ended.
#[task(unique = ["to"], unique_for = "1h")]
async fn remind(to: String, text: String) -> Result<(), TaskError> {
    println!("to {to}: {text}");
    Ok(())
}

// Debounce: a start while one is pending replaces its arguments and due time.
#[task(unique = "args", on_conflict = "replace")]
async fn reindex(table: String) -> Result<(), TaskError> {
    println!("reindexing {table}");
    Ok(())
}

remind::start(&queue, "ada@example.org".into(), "hi".into()).await?;
match remind::start(&queue, "ada@example.org".into(), "hi again".into()).await {
    Err(StartError::Duplicate { existing, .. }) => println!("already there: {existing:?}"),
    other => println!("started: {:?}", other?),
}
let started = reindex::builder("users".into()).delay(Duration::from_secs(30)).submit(&queue).await?;
println!("{} task {}", if started.replaced() { "replaced" } else { "inserted" }, started.id());
        Ok(())
    }

    #[tokio::test]
    async fn a_duplicate_is_refused_and_a_pending_one_replaced() -> Result<(), Box<dyn Error>> {
        let queue = Queue::open("memory://").await?;
        // The second reminder is refused; one reminder and one reindex are stored.
        unique_tasks(queue.clone()).await?;
        let all = queue.list(&taskq_runtime::TaskQuery::default()).await?;
        assert_eq!(all.len(), 2, "{all:?}");
        // Run again, the first reminder is refused too (`?` passes it on).
        assert!(unique_tasks(queue.clone()).await.is_err());
        Ok(())
    }
}

/// "Run a worker".
#[rustfmt::skip]
mod worker {
    use std::error::Error;

    use taskq_runtime::{task, Context, Queue, TaskError};

    use super::Mailer;

    #[task(queue = "default")]
    async fn ping(ctx: Context) -> Result<(), TaskError> {
        ctx.state::<Mailer>()?.send("ops@example.org", "ping").await?;
        Ok(())
    }

    async fn run_worker(queue: Queue, mailer: Mailer) -> Result<(), Box<dyn Error>> {
use taskq_runtime::Worker;

Worker::builder(queue.store().clone())
    .state(mailer)                 // tasks read it with ctx.state::<Mailer>()
    .queues(["email", "default"])  // default: every queue
    .concurrency(16)
    .build()?                      // refuses two tasks with one name, or none at all
    .run_until_shutdown()          // Ctrl-C / SIGTERM: stop claiming, finish or release
    .await?;
        Ok(())
    }

    #[tokio::test]
    async fn the_worker_runs_until_told_to_stop() -> Result<(), Box<dyn Error>> {
        let queue = Queue::open("memory://").await?;
        ping::start(&queue).await?;
        // No signal comes, so the worker is still running when the timeout ends it.
        let ran = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            run_worker(queue.clone(), Mailer::default()),
        )
        .await;
        assert!(ran.is_err(), "the worker stopped by itself: {ran:?}");
        let t = queue.list(&Default::default()).await?;
        assert_eq!(t[0].state, taskq_runtime::TaskState::Done);
        Ok(())
    }
}

/// "Test your tasks without sleeping".
#[rustfmt::skip]
mod harness {
    use taskq_runtime::{task, Context, TaskError};

    use super::Mailer;

    #[task(queue = "email")]
    async fn send_email(ctx: Context, to: String, subject: String) -> Result<(), TaskError> {
        ctx.state::<Mailer>()?.send(&to, &subject).await?;
        Ok(())
    }

use taskq_runtime::testing::Harness;

#[tokio::test]
async fn welcome_mail_is_sent() -> Result<(), Box<dyn std::error::Error>> {
    let h = Harness::new().state(Mailer::default());
    send_email::start(&h.queue(), "ada@example.org".into(), "Hi".into()).await?;
    let report = h.drain().await?;      // runs every due task; delays and backoff on virtual time
    assert_eq!(report.count("done"), 1);

    // Or call the function itself, with a Context whose state is the harness's:
    send_email(h.context(), "bob@example.org".into(), "Hi".into()).await?;
    Ok(())
}
}

/// "Periodic tasks": a declared schedule and one registered at run time, on virtual time.
#[rustfmt::skip]
mod periodic {
use std::time::Duration;
use taskq_runtime::{task, testing::Harness, CatchUp, TaskError};

/// Every night at 03:00 in Paris: one run per night, however many workers run.
#[task(cron = "0 3 * * *", timezone = "Europe/Paris")]
async fn nightly_cleanup() -> Result<(), TaskError> {
    Ok(())
}

#[task(queue = "reports")]
async fn team_report(team: String) -> Result<(), TaskError> {
    println!("report for {team}");
    Ok(())
}

#[tokio::test]
async fn schedules_tick_on_virtual_time() -> Result<(), Box<dyn std::error::Error>> {
    let h = Harness::new();
    let queue = h.queue();
    // With arguments, registered at run time: Mondays at 08:00 in New York.
    team_report::schedule("sales-report", "0 8 * * MON", "sales".into())
        .timezone("America/New_York")
        .catch_up(CatchUp::Skip)                  // default: CatchUp::Last
        .register(&queue)
        .await?;
    let report = h.run_for(Duration::from_secs(14 * 86_400)).await?; // two weeks, no sleeping
    let runs = |name: &str| report.runs.iter().filter(|r| r.task == name).count();
    assert_eq!((runs(nightly_cleanup::NAME), runs(team_report::NAME)), (14, 2));

    for s in queue.schedules().await? {           // next and last tick, paused, task missing
        println!("{} `{}` {}: next {}, last {:?}", s.name, s.cron, s.timezone, s.next_tick, s.last_tick);
    }
    queue.run_schedule_now("sales-report").await?;  // a task now; the next tick does not move
    queue.pause_schedule("sales-report").await?;
    queue.resume_schedule("sales-report").await?;   // from the next tick: the paused ones are not run
    Ok(())
}
}

/// "Start a task inside your own transaction". Compiled, not run: it needs a PostgreSQL
/// server and a `users` table (the PostgreSQL store's own tests run `start_in`).
#[rustfmt::skip]
#[allow(dead_code)]
mod transactional {
    use std::error::Error;

    use taskq_runtime::tokio_postgres::Client;
    use taskq_runtime::{task, TaskError};

    #[task(queue = "email")]
    async fn send_email(to: String, subject: String) -> Result<(), TaskError> {
        let _ = (to, subject);
        Ok(())
    }

    async fn sign_up(client: &mut Client, email: String) -> Result<(), Box<dyn Error>> {
use taskq_runtime::store::postgres::PostgresStore;

let store = PostgresStore::open("postgres://app@127.0.0.1/app").await?;
let tx = client.transaction().await?;             // your client, from taskq_runtime::tokio_postgres
tx.execute("INSERT INTO users (email) VALUES ($1)", &[&email]).await?;
send_email::builder(email.clone(), "Welcome".into()).start_in(&store, &tx).await?;
tx.commit().await?;                                // the user and the email, or neither
        Ok(())
    }
}

/// "Walk a whole model".
#[rustfmt::skip]
mod iterative {
    use std::error::Error;

    use serde::{Deserialize, Serialize};
    use taskq_runtime::Queue;

    use super::Mailer;

    pub struct Student {
        id: i64,
        email: String,
    }

    #[derive(Serialize, Deserialize)]
    pub struct StudentFilter {
        program: String,
    }

    /// The app's database (a pool in a real app); here, `(id, email, program)` rows sorted
    /// by id.
    pub struct AppDb(Vec<(i64, String, String)>);

    impl AppDb {
        async fn students_after(&self, f: &StudentFilter, after: Option<&i64>, limit: usize)
            -> Result<Vec<Student>, taskq_runtime::TaskError> {
            Ok(self.0.iter()
                .filter(|(id, _, p)| *p == f.program && after.is_none_or(|a| id > a))
                .take(limit)
                .map(|(id, email, _)| Student { id: *id, email: email.clone() })
                .collect())
        }
    }

use taskq_runtime::{iterative_task, Context, Model, TaskError};

impl Model for Student {
    type Key = i64;                 // the cursor
    type Filter = StudentFilter;    // which students
    type Source = AppDb;            // app state the worker was given
    fn key(&self) -> i64 { self.id }
    async fn batch(db: &AppDb, f: &StudentFilter, after: Option<&i64>, limit: usize)
        -> Result<Vec<Student>, TaskError> { db.students_after(f, after, limit).await }
}

#[iterative_task(model = Student, batch_size = 200, queue = "email", timeout = "30s")]
async fn email_all_students(ctx: Context, students: Vec<Student>, subject: String)
    -> Result<(), TaskError> {
    let mailer = ctx.state::<Mailer>()?;
    for s in &students { mailer.send(&s.email, &subject).await?; }
    Ok(())
}

    async fn walk(queue: Queue) -> Result<(), Box<dyn Error>> {
let run = email_all_students::start(&queue, StudentFilter { program: "gsoc2009".into() },
                                    "Results are out".into()).await?;
let progress = queue.iteration(run).await?;   // processed, batches, cursor, state, total, percent()
println!("{} students mailed in {} batches", progress.processed, progress.batches);
        Ok(())
    }

    #[tokio::test]
    async fn every_student_of_the_program_is_mailed() -> Result<(), Box<dyn Error>> {
        let db = AppDb((1..=500).map(|i| (i, format!("s{i}@example.org"), if i % 5 == 0 { "other" } else { "gsoc2009" }.to_string())).collect());
        let mailer = Mailer::default();
        let h = taskq_runtime::testing::Harness::new().state(db).state(mailer.clone());
        walk(h.queue()).await?;
        h.drain().await?;
        assert_eq!(mailer.count(), 400);
        Ok(())
    }
}

/// "Deploying changes safely": a renamed task keeps its registered name, and a parameter
/// added as an `Option` decodes payloads stored before it existed.
#[rustfmt::skip]
mod deploying {
    use std::error::Error;

use taskq_runtime::{task, TaskError};

// Was `async fn send_welcome(to: String)` in `my_app::mail`: renamed, moved, and given a
// new parameter. The name key keeps the registered name; the new parameter is an Option.
#[task(name = "my_app::mail::send_welcome", queue = "email")]
async fn welcome_new_user(to: String, locale: Option<String>) -> Result<(), TaskError> {
    let locale = locale.unwrap_or_else(|| "en".into());   // tasks queued before: None
    println!("welcome {to} ({locale})");
    Ok(())
}

    #[tokio::test]
    async fn a_payload_queued_by_the_old_version_still_runs() -> Result<(), Box<dyn Error>> {
        assert_eq!(welcome_new_user::NAME, "my_app::mail::send_welcome");
        let h = taskq_runtime::testing::Harness::new();
        // What the old version stored: its name, and only `to`.
        let now = h.clock().now();
        let old = taskq_runtime::store::NewTask {
            task: "my_app::mail::send_welcome".into(),
            queue: "email".into(),
            payload: serde_json::json!({ "to": "ada@example.org" }),
            priority: 0,
            run_at: now,
            unique_name: None,
            tombstone: std::time::Duration::ZERO,
            iteration: None,
            trace: None,
        };
        h.store().enqueue(vec![old], now).await?;
        assert_eq!(h.drain().await?.count("done"), 1);
        Ok(())
    }
}

/// "The web console": the router nested in an application.
#[rustfmt::skip]
mod console {
    use std::error::Error;

    use taskq_runtime::Queue;

    async fn mount(queue: Queue) -> Result<axum::Router, Box<dyn Error>> {
use taskq_runtime::console::{self, ConsoleConfig};

// The operator's secret, 16 bytes or more: from your configuration, or a random one.
let token = console::random_token()?;
println!("console token: {token}");
let mut config = ConsoleConfig::token(token);   // or ConsoleConfig::password("ops", password)
config.read_only = false;                        // true: the pages only, every action refused
let app = axum::Router::new()
    .route("/", axum::routing::get(|| async { "my application" }))
    .nest("/admin", console::router(queue.clone(), config)?);  // the console at /admin
        Ok(app)
    }

    #[tokio::test]
    async fn the_console_mounts() -> Result<(), Box<dyn Error>> {
        let queue = Queue::open("memory://").await?;
        let _app: axum::Router = mount(queue).await?;
        Ok(())
    }
}

/// "Metrics and traces": the Prometheus route, served on a port and scraped once. The
/// recorder is global: this is the only test of this binary that installs one.
#[rustfmt::skip]
mod metrics_route {

use axum::{routing::get, Router};
use taskq_runtime::{metrics, Queue};

/// `GET /metrics` in Prometheus's text format; call once per process.
fn metrics_routes(queue: Queue) -> Result<Router, Box<dyn std::error::Error>> {
    let handle = metrics::install_prometheus()?; // the process's recorder
    Ok(Router::new().route("/metrics", get(move || {
        let (handle, queue) = (handle.clone(), queue.clone());
        // Sets the queue-depth gauge from the store, then renders every metric.
        async move { metrics::scrape(&handle, &queue).await }
    })))
}

    #[tokio::test]
    async fn the_metrics_route_serves_the_queue_depth() -> Result<(), Box<dyn std::error::Error>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let store = std::sync::Arc::new(taskq_runtime::store::memory::MemoryStore::new());
        let queue = Queue::new(store);
        queue.pause("scraped").await?; // a queue the gauge reports, with no task
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(listener, metrics_routes(queue)?)));
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await?;
        server.abort();
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert!(
            answer.lines().any(|l| l == "taskq_queue_depth{queue=\"scraped\",state=\"pending\"} 0"),
            "{answer}"
        );
        Ok(())
    }
}
