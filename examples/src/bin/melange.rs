//! The Melange demo: email every student of a program, in the background, in batches.
//!
//! ```text
//! cargo run --release -p taskq-examples --bin melange -- [--students N] [--fail-rate F]
//!     [--store URL] [--app-db PATH] [--program NAME] [--serve ADDR]
//! ```
//!
//! It creates (or reuses) a SQLite database of programs and students, starts
//! `email_all_students` for one program through its typed start helper, runs a worker with
//! the app's state (the database and the mailer), draws a progress bar (indicatif; only
//! when stdout is a terminal) while the run goes on, and prints a summary. With `--serve ADDR` it instead shows Melange's starter
//! pattern (`emailAllTaskStarter`, described in the repository's `docs/ORIGIN.md`): an
//! HTTP endpoint that starts the task and redirects to a progress page, with a worker in
//! the same process, and the taskq web console beside it at `/admin`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskq_examples::melange::{AppDb, Mailer, Student, StudentFilter};
use taskq_examples::{html_escape, thousands};
use taskq_runtime::store::{IterationInfo, RunState};
use taskq_runtime::{iterative_task, Context, Queue, TaskError, TaskId, Worker};

/// Mails `subject` to one batch of students.
///
/// The run's id is the idempotency key of the outbox: a redone batch (after a transient
/// failure or a worker crash) does not mail anyone twice. The 500 ms timeout (App Engine
/// gave Melange's tasks 30 s) gives each step a 250 ms time slice, half the soft deadline, after
/// which a continuation step takes over: a run is many short steps.
///
/// Attempts count the tries at the current cursor (a checkpoint starts a new count), so
/// only a batch that fails again and again uses them up. With `--fail-rate 0.9` a batch
/// needs ten tries on average, and 100 tries in a row fail now and then: the one-hour age
/// limit keeps the run going (a task goes dead only when `max_attempts` *and* `age_limit`
/// are spent), so the demo survives every fail rate below 1. The short maximum backoff
/// keeps a run of many failures quick.
#[iterative_task(
    model = Student,
    batch_size = 200,
    queue = "email",
    timeout = "500ms",
    min_backoff = "20ms",
    max_backoff = "1s",
    max_attempts = 100,
    age_limit = "1h"
)]
async fn email_all_students(
    ctx: Context,
    students: Vec<Student>,
    subject: String,
) -> Result<(), TaskError> {
    let db = ctx.state::<AppDb>()?.clone();
    let mailer = ctx.state::<Arc<Mailer>>()?.clone();
    let run = ctx.run().unwrap_or(ctx.id());
    mailer.send_batch(&db, run.0, students, subject).await
}

const USAGE: &str = "\
usage: melange [OPTIONS]

Emails every student of a program through the iterative task `email_all_students`,
with a progress bar (on a terminal only), then prints a summary.

options:
  --students N     students in the app database (default 100000); an existing database
                   with the same number is reused
  --fail-rate F    fraction of the mailer's batch sends that fail transiently partway,
                   0 to 1 (default 0.01); failed batches are retried from the cursor
  --latency-ms N   the pretend bulk-mail API's round trip per batch (default 2)
  --store URL      the task store: sqlite://PATH (default sqlite://melange.db),
                   memory://, or postgres://USER@HOST/DB
  --app-db PATH    the app's own SQLite database (default melange-app.db)
  --program NAME   the program to mail (default gsoc2009)
  --subject TEXT   the mail's subject (default \"Results are out\")
  --serve ADDR     instead, serve the HTTP starter on ADDR (e.g. 127.0.0.1:8080)
  -h, --help       this help";

#[derive(Debug)]
struct Args {
    students: u64,
    fail_rate: f64,
    latency_ms: u64,
    store: String,
    app_db: String,
    program: String,
    subject: String,
    serve: Option<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        students: 100_000,
        fail_rate: 0.01,
        latency_ms: 2,
        store: "sqlite://melange.db".into(),
        app_db: "melange-app.db".into(),
        program: "gsoc2009".into(),
        subject: "Results are out".into(),
        serve: None,
    };
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("`{flag}` needs a value"))
        };
        match flag.as_str() {
            "--students" => {
                let v = value()?;
                a.students = v
                    .replace('_', "")
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--students: `{v}` is not a positive whole number"))?;
            }
            "--fail-rate" => {
                let v = value()?;
                a.fail_rate = v
                    .parse()
                    .ok()
                    .filter(|f: &f64| (0.0..=1.0).contains(f))
                    .ok_or_else(|| format!("--fail-rate: `{v}` is not a number from 0 to 1"))?;
                if a.fail_rate >= 1.0 {
                    return Err(
                        "--fail-rate 1 would fail every send forever; use less than 1".into(),
                    );
                }
            }
            "--latency-ms" => {
                let v = value()?;
                a.latency_ms = v.parse().ok().filter(|n| *n <= 60_000).ok_or_else(|| {
                    format!("--latency-ms: `{v}` is not a number of milliseconds")
                })?;
            }
            "--store" => a.store = value()?,
            "--app-db" => a.app_db = value()?,
            "--program" => a.program = value()?,
            "--subject" => a.subject = value()?,
            "--serve" => a.serve = Some(value()?),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(Some(a))
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("melange: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("melange: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("\nmelange: {e}");
        std::process::exit(1);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(args: Args) -> Result<(), BoxError> {
    let t0 = Instant::now();
    let db = AppDb::open(&args.app_db)
        .map_err(|e| format!("opening the app database `{}`: {e}", args.app_db))?;
    print!(
        "app database {}: {} students... ",
        args.app_db,
        thousands(args.students)
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let created = db
        .ensure_students(args.students)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "{} in {:.2} s",
        if created { "created" } else { "reused" },
        t0.elapsed().as_secs_f64()
    );
    let programs = db.programs().await.map_err(|e| e.to_string())?;
    let queue = Queue::open(&args.store).await?;
    println!("task store {}", args.store);
    let mut mailer = Mailer::new(args.fail_rate);
    mailer.latency = Duration::from_millis(args.latency_ms);
    let mailer = Arc::new(mailer);
    let worker = Worker::builder(queue.store().clone())
        .state(db.clone())
        .state(mailer.clone())
        .queues(["email"])
        .concurrency(4)
        .poll_interval(Duration::from_millis(10))
        .build()?;
    if let Some(addr) = args.serve.as_deref() {
        return web::serve(addr, queue, db, worker).await;
    }
    let Some((_, title, students)) = programs.iter().find(|(p, _, _)| *p == args.program) else {
        let names: Vec<&str> = programs.iter().map(|(p, _, _)| p.as_str()).collect();
        return Err(format!(
            "no program `{}`; the database has: {}",
            args.program,
            names.join(", ")
        )
        .into());
    };
    println!(
        "emailing the {} students of {title} ({}), {} of batch sends failing transiently\n",
        thousands(*students),
        args.program,
        percent(args.fail_rate)
    );

    let started = Instant::now();
    // Melange's emailAllTaskStarter, typed: the filter and the subject are checked by rustc.
    let run = email_all_students::start(
        &queue,
        StudentFilter {
            program: args.program.clone(),
        },
        args.subject.clone(),
    )
    .await?;
    // Outbox rows of an earlier run with this id (a store deleted, the app database kept)
    // would count as sent: clear them before the worker starts.
    db.call(move |c| c.execute("DELETE FROM outbox WHERE run = ?1", [run.0]))
        .await
        .map_err(|e| e.to_string())?;
    let worker = worker.spawn();
    // The bar (indicatif) is drawn on a terminal only: into a pipe or a file the run is
    // quiet until its summary.
    let bar = progress_bar();
    let info = loop {
        let info = queue.iteration(run).await?;
        show(&bar, &info, started.elapsed());
        if info.state != RunState::Running {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish();
    let elapsed = started.elapsed();
    let stats = worker.stats().clone();
    worker.shutdown().await?;

    let sent = db.outbox_count(run.0).await.map_err(|e| e.to_string())?;
    let unsent = db
        .unsent(run.0, args.program.clone())
        .await
        .map_err(|e| e.to_string())?;
    let retried = stats.retried.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "\nrun {run} {} in {:.2} s",
        info.state.as_str(),
        elapsed.as_secs_f64()
    );
    if let Some(e) = &info.error {
        println!("  error                {e}");
    }
    println!(
        "  emails sent          {} (outbox rows) of {} students; {} unsent",
        thousands(sent),
        thousands(*students),
        thousands(unsent)
    );
    println!(
        "  batches              {} of up to 200 students ({} processed, redone batches counted again)",
        thousands(info.batches),
        thousands(info.processed)
    );
    println!(
        "  steps                {} (each a 250 ms time slice, then a continuation step)",
        info.steps
    );
    println!(
        "  retries              {retried} (batch sends that failed transiently: {})",
        mailer.failures.load(Ordering::Relaxed)
    );
    println!(
        "  redone               {} mails of retried batches were already in the outbox: not sent twice",
        thousands(mailer.redone.load(Ordering::Relaxed))
    );
    println!(
        "  throughput           {} students/s",
        thousands((sent as f64 / secs) as u64)
    );
    if info.state != RunState::Done || unsent != 0 {
        return Err(format!(
            "the run ended {} with {unsent} students unsent",
            info.state.as_str()
        )
        .into());
    }
    Ok(())
}

fn percent(f: f64) -> String {
    format!("{}%", (f * 1000.0).round() / 10.0)
}

/// The run's progress bar: entities processed of the model's total (set once the run
/// has counted it), entities per second, batches and steps so far, and the time left
/// that indicatif estimates. Hidden when stdout is not a terminal.
fn progress_bar() -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let target = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        ProgressDrawTarget::stdout()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    // The template is a constant: a mistake in it is a bug of this program, shown by
    // falling back to indicatif's default style rather than failing the run.
    if let Ok(style) = ProgressStyle::with_template(
        "  [{bar:30.cyan/blue}] {percent:>3}%  {human_pos} / {human_len}  {msg}  eta {eta}",
    ) {
        bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
    }
    bar
}

/// Moves the bar to where the run stands, `elapsed` after the start.
fn show(bar: &indicatif::ProgressBar, info: &IterationInfo, elapsed: Duration) {
    if let Some(total) = info.total {
        bar.set_length(total);
    }
    bar.set_position(info.processed);
    let rate = info.processed as f64 / elapsed.as_secs_f64().max(1e-3);
    bar.set_message(format!(
        "{} /s  {} batches  {} steps",
        thousands(rate as u64),
        thousands(info.batches),
        info.steps
    ));
}

/// Melange's starter pattern over HTTP: a handler starts the task and redirects to a
/// progress page. Every route requires a session cookie, set by `/login?token=..` with the
/// token printed at start-up; the cookie is `SameSite=Strict`, so a form posted from
/// another site carries no cookie (that is the CSRF protection of the one mutating route).
mod web {
    use super::*;
    use axum::extract::{Form, Path, Query, State};
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::{Html, IntoResponse, Redirect, Response};
    use axum::routing::{get, post};
    use axum::Router;
    use serde::Deserialize;

    #[derive(Clone)]
    struct App {
        queue: Queue,
        db: AppDb,
        token: Arc<String>,
    }

    pub async fn serve(
        addr: &str,
        queue: Queue,
        db: AppDb,
        worker: Worker,
    ) -> Result<(), BoxError> {
        let token = std::env::var("MELANGE_TOKEN")
            .ok()
            .filter(|t| t.len() >= 16)
            .unwrap_or_else(|| (0..32).map(|_| fastrand::alphanumeric()).collect());
        // The taskq console beside the starter, at /admin, signed in with the same token.
        let console = taskq_runtime::console::router(
            queue.clone(),
            taskq_runtime::console::ConsoleConfig::token(token.clone()),
        )?;
        let app = App {
            queue,
            db,
            token: Arc::new(token.clone()),
        };
        let router = Router::new()
            .route("/", get(index))
            .route("/login", get(login))
            .route("/programs/{program}/email_all", post(start))
            .route("/runs/{id}", get(progress))
            .with_state(app)
            .nest("/admin", console);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let worker = worker.spawn();
        println!("serving on http://{addr}/ with a worker in this process; Ctrl-C or SIGTERM stops both gracefully");
        println!("log in: http://{addr}/login?token={token}");
        println!("the taskq console: http://{addr}/admin (sign in with the same token)");
        axum::serve(listener, router)
            .with_graceful_shutdown(taskq_runtime::worker::shutdown_signal())
            .await?;
        worker.shutdown().await?;
        Ok(())
    }

    fn authorized(app: &App, headers: &HeaderMap) -> bool {
        let want = format!("melange_session={}", app.token);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .any(|c| constant_time_eq(c.trim().as_bytes(), want.as_bytes()))
    }

    fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    fn forbidden() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            Html(page(
                "Log in",
                "<p>Open the <code>/login?token=..</code> link melange printed at start-up.</p>",
                false,
            )),
        )
            .into_response()
    }

    fn page(title: &str, body: &str, refresh: bool) -> String {
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} · Melange</title>{r}\
             <style>body{{font-family:sans-serif;max-width:46em;margin:2em auto}}\
             progress{{width:100%;height:1.4em}} td,th{{padding:.2em .8em;text-align:left}}</style>\
             </head><body><h1>{t}</h1>{body}<p><a href=\"/\">Programs</a></p></body></html>",
            t = html_escape(title),
            r = if refresh {
                "<meta http-equiv=\"refresh\" content=\"1\">"
            } else {
                ""
            },
        )
    }

    #[derive(Deserialize)]
    struct Login {
        token: String,
    }

    async fn login(State(app): State<App>, Query(q): Query<Login>) -> Response {
        if !constant_time_eq(q.token.as_bytes(), app.token.as_bytes()) {
            return forbidden();
        }
        (
            StatusCode::SEE_OTHER,
            [
                (
                    header::SET_COOKIE,
                    format!(
                        "melange_session={}; HttpOnly; SameSite=Strict; Path=/",
                        app.token
                    ),
                ),
                (header::LOCATION, "/".to_string()),
            ],
        )
            .into_response()
    }

    async fn index(State(app): State<App>, headers: HeaderMap) -> Response {
        if !authorized(&app, &headers) {
            return forbidden();
        }
        let programs = match app.db.programs().await {
            Ok(p) => p,
            Err(e) => return error(e.to_string()),
        };
        let mut body = String::from("<table><tr><th>Program</th><th>Students</th><th></th></tr>");
        for (link, title, n) in programs {
            body += &format!(
                "<tr><td>{}</td><td>{}</td><td><form method=\"post\" action=\"/programs/{}/email_all\">\
                 <input name=\"subject\" value=\"Results are out\" required> \
                 <button>Email all students</button></form></td></tr>",
                html_escape(&title),
                thousands(n),
                html_escape(&link),
            );
        }
        body += "</table><h2>Recent runs</h2><ul>";
        for it in app.queue.iterations(20).await.unwrap_or_default() {
            body += &format!(
                "<li><a href=\"/runs/{}\">run {}</a>: {} — {} ({})</li>",
                it.run,
                it.run,
                html_escape(&it.filter.to_string()),
                it.state.as_str(),
                thousands(it.processed)
            );
        }
        body += "</ul><p><a href=\"/admin\">The taskq console</a>: every queue, task and run (sign in with the same token).</p>";
        Html(page("Melange", &body, false)).into_response()
    }

    #[derive(Deserialize)]
    struct StartForm {
        subject: String,
    }

    /// Melange's `emailAllTaskStarter`: checks the program, starts the task through its
    /// typed helper, and redirects to the run's progress page.
    async fn start(
        State(app): State<App>,
        headers: HeaderMap,
        Path(program): Path<String>,
        Form(form): Form<StartForm>,
    ) -> Response {
        if !authorized(&app, &headers) {
            return forbidden();
        }
        let known = match app.db.programs().await {
            Ok(p) => p.into_iter().any(|(p, _, _)| p == program),
            Err(e) => return error(e.to_string()),
        };
        if !known {
            return (
                StatusCode::NOT_FOUND,
                Html(page(
                    "No such program",
                    &format!(
                        "<p>There is no program <code>{}</code>.</p>",
                        html_escape(&program)
                    ),
                    false,
                )),
            )
                .into_response();
        }
        let subject = form.subject.trim().to_string();
        if subject.is_empty() || subject.len() > 200 {
            return (
                StatusCode::BAD_REQUEST,
                Html(page(
                    "Bad subject",
                    "<p>The subject must have 1 to 200 characters.</p>",
                    false,
                )),
            )
                .into_response();
        }
        match email_all_students::start(&app.queue, StudentFilter { program }, subject).await {
            Ok(run) => Redirect::to(&format!("/runs/{run}")).into_response(),
            Err(e) => error(e.to_string()),
        }
    }

    async fn progress(
        State(app): State<App>,
        headers: HeaderMap,
        Path(id): Path<String>,
    ) -> Response {
        if !authorized(&app, &headers) {
            return forbidden();
        }
        let Ok(run) = id.parse::<TaskId>() else {
            return (
                StatusCode::NOT_FOUND,
                Html(page("No such run", "<p>Not a run id.</p>", false)),
            )
                .into_response();
        };
        let info = match app.queue.iteration(run).await {
            Ok(i) => i,
            Err(taskq_runtime::StoreError::NotFound(_)) => {
                return (
                    StatusCode::NOT_FOUND,
                    Html(page("No such run", "<p>No run has this id.</p>", false)),
                )
                    .into_response()
            }
            Err(e) => return error(e.to_string()),
        };
        let sent = app.db.outbox_count(run.0).await.unwrap_or(0);
        let pct = info.percent().unwrap_or(0.0);
        let secs = (info.updated_at.0 - info.started_at.0).max(1) as f64 / 1000.0;
        let mut body = format!(
            "<p><progress max=\"100\" value=\"{pct:.1}\"></progress> {pct:.1}%</p>\
             <table><tr><th>State</th><td>{}</td></tr>\
             <tr><th>Task</th><td><code>{}</code></td></tr>\
             <tr><th>Filter</th><td><code>{}</code></td></tr>\
             <tr><th>Processed</th><td>{} of {}</td></tr>\
             <tr><th>Emails sent</th><td>{}</td></tr>\
             <tr><th>Batches</th><td>{}</td></tr><tr><th>Steps</th><td>{}</td></tr>\
             <tr><th>Cursor</th><td><code>{}</code></td></tr>\
             <tr><th>Rate</th><td>{} students/s</td></tr></table>",
            info.state.as_str(),
            html_escape(&info.task),
            html_escape(&info.filter.to_string()),
            thousands(info.processed),
            info.total.map(thousands).unwrap_or_else(|| "?".into()),
            thousands(sent),
            thousands(info.batches),
            info.steps,
            html_escape(
                &info
                    .cursor
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into())
            ),
            thousands((info.processed as f64 / secs) as u64),
        );
        if let Some(e) = &info.error {
            body += &format!("<p>Error: {}</p>", html_escape(e));
        }
        let title = format!("Run {run}");
        Html(page(&title, &body, info.state == RunState::Running)).into_response()
    }

    fn error(e: String) -> Response {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html(page("Error", &format!("<p>{}</p>", html_escape(&e)), false)),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Option<Args>, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_options_and_refuses_bad_ones() {
        let a = args(&[
            "--students",
            "1000",
            "--fail-rate=0.2",
            "--store",
            "memory://",
        ])
        .expect("ok")
        .expect("args");
        assert_eq!(
            (a.students, a.fail_rate, a.store.as_str()),
            (1000, 0.2, "memory://")
        );
        assert!(args(&["--help"]).expect("ok").is_none());
        assert!(args(&["--students", "x"])
            .expect_err("refused")
            .contains("--students"));
        assert!(args(&["--fail-rate", "2"])
            .expect_err("refused")
            .contains("0 to 1"));
        assert!(args(&["--bogus"])
            .expect_err("refused")
            .contains("unknown option"));
        assert!(args(&["--store"])
            .expect_err("refused")
            .contains("needs a value"));
    }
}
