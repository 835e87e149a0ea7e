//! Each subcommand: open the store, call the management API
//! ([`taskq_runtime::Queue`]), and say what happened.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use taskq_runtime::store::StoreUrl;
use taskq_runtime::{CancelOutcome, Queue, TaskQuery, TaskState};

use crate::cli::{AdminArgs, Cli, Command, Filters, RetryArgs, TasksArgs};
use crate::exit::{self, Failure};
use crate::output::{self, AttemptJson, PruneJson, QueueJson, Report, RunJson, TaskJson};

/// Runs the command line's subcommand. A new subcommand (the console's `admin`, say) is a
/// variant of [`Command`] and one arm here.
pub async fn run(cli: Cli) -> Result<Report, Failure> {
    let q = open(&cli.store, cli.connect_timeout).await?;
    match cli.command {
        Command::Admin(args) => admin(q, args).await,
        Command::Queues => queues(&q).await,
        Command::Tasks(args) => tasks(&q, args).await,
        Command::Show { id } => show(&q, id).await,
        Command::Run { id } => {
            q.run_now(id).await?;
            Ok(Report::new(
                json!({ "action": "run", "id": id.0 }),
                format!("task {id} is due now"),
            ))
        }
        Command::Delete { id } => {
            q.delete(id).await?;
            Ok(Report::new(
                json!({ "action": "delete", "id": id.0 }),
                format!("task {id} deleted"),
            ))
        }
        Command::Retry(args) => retry(&q, args).await,
        Command::Pause { queue } => {
            known_queue(&q, &queue).await?;
            q.pause(&queue).await?;
            Ok(Report::new(
                json!({ "action": "pause", "queue": queue, "paused": true }),
                format!("queue `{queue}` paused"),
            ))
        }
        Command::Resume { queue } => {
            known_queue(&q, &queue).await?;
            q.resume(&queue).await?;
            Ok(Report::new(
                json!({ "action": "resume", "queue": queue, "paused": false }),
                format!("queue `{queue}` resumed"),
            ))
        }
        Command::Purge { queue, yes } => {
            let pending = known_queue(&q, &queue).await?.counts.pending;
            confirm(
                yes,
                &format!("delete the {pending} pending tasks of queue `{queue}`?"),
            )?;
            let n = q.purge(&queue).await?;
            Ok(Report::new(
                json!({ "action": "purge", "queue": queue, "purged": n }),
                format!("purged {n} pending tasks of queue `{queue}`"),
            ))
        }
        Command::Prune => {
            let p = PruneJson::from(&q.prune().await?);
            let text = output::prune_text(&p);
            Ok(Report::new(p, text))
        }
        Command::Runs { run: Some(run), .. } => {
            let r = RunJson::from(&q.iteration(run).await?);
            let text = output::runs_table(std::slice::from_ref(&r));
            Ok(Report::new(json!({ "run": r }), text))
        }
        Command::Runs { run: None, limit } => {
            let runs: Vec<RunJson> = q.iterations(limit).await?.iter().map(Into::into).collect();
            let text = output::runs_table(&runs);
            Ok(Report::new(json!({ "runs": runs }), text))
        }
        Command::Schedules => crate::schedules::list(&q).await,
        Command::Schedule { action } => crate::schedules::act(&q, action).await,
        Command::Cancel { id } => {
            let outcome = q.cancel(id).await?;
            let text = match outcome {
                CancelOutcome::Cancelled => format!("task {id} cancelled"),
                CancelOutcome::Requested => format!(
                    "task {id} is running: cancel requested (its worker tells it, stops it after its cancel grace, and it ends cancelled)"
                ),
                CancelOutcome::AlreadyRequested => format!(
                    "task {id} is running and its cancel was requested already: nothing changed"
                ),
            };
            Ok(Report::new(
                json!({ "action": "cancel", "id": id.0, "outcome": outcome }),
                text,
            ))
        }
    }
}

/// Opens the store at `url`, waiting at most `timeout`. A URL
/// [`StoreUrl::parse`] refuses is a usage error (its password never shown); `memory://`
/// is refused (the CLI would open a new, empty store of its own), and so is an SQLite
/// path with no file (opening would create an empty store there).
async fn open(url: &str, timeout: Duration) -> Result<Queue, Failure> {
    match StoreUrl::parse(url).map_err(Failure::opening)? {
        StoreUrl::Memory => {
            return Err(Failure::new(
                exit::USAGE,
                "`memory://` is a store inside one process: the CLI would open a new, empty one; use `sqlite://PATH` or `postgres://...`",
            ))
        }
        StoreUrl::Sqlite { path } if !Path::new(&path).is_file() => {
            return Err(Failure::new(
                exit::UNREACHABLE,
                format!(
                    "cannot open the store: no SQLite file at `{path}` (an application creates it when it first opens `sqlite://{path}`)"
                ),
            ))
        }
        _ => {}
    }
    match tokio::time::timeout(timeout, Queue::open(url)).await {
        Ok(q) => q.map_err(Failure::opening),
        Err(_) => Err(Failure::new(
            exit::UNREACHABLE,
            format!("cannot open the store: no answer within {timeout:?} (--connect-timeout)"),
        )),
    }
}

/// The queue named `name`, or not found: a command on a queue never creates one.
async fn known_queue(q: &Queue, name: &str) -> Result<QueueJson, Failure> {
    q.queues()
        .await?
        .iter()
        .find(|x| x.name == name)
        .map(QueueJson::from)
        .ok_or_else(|| {
            Failure::new(
                exit::NOT_FOUND,
                format!("queue `{name}` not found (a queue exists once it has tasks or settings; `taskq queues` lists them)"),
            )
        })
}

/// Goes on when `yes`, or when a person at a terminal answers `y`; otherwise refuses
/// ([`exit::USAGE`] without a terminal, [`exit::FAILED`] when declined).
fn confirm(yes: bool, question: &str) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "refusing to {} without --yes: stdin is not a terminal to ask on",
                question.trim_end_matches('?')
            ),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot read the answer: {e}")))?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(Failure::new(exit::FAILED, "not confirmed: nothing done")),
    }
}

/// The management API's query for `filters`.
fn query(filters: Filters) -> TaskQuery {
    TaskQuery {
        queue: filters.queue,
        state: filters.state,
        task: filters.task,
        args_contains: filters.args,
        ..TaskQuery::default()
    }
}

async fn queues(q: &Queue) -> Result<Report, Failure> {
    let queues: Vec<QueueJson> = q.queues().await?.iter().map(Into::into).collect();
    let text = output::queues_table(&queues);
    Ok(Report::new(json!({ "queues": queues }), text))
}

async fn tasks(q: &Queue, args: TasksArgs) -> Result<Report, Failure> {
    if let Some(name) = &args.filters.queue {
        known_queue(q, name).await?;
    }
    let limit = args.limit.max(1);
    let query = TaskQuery {
        before: args.before,
        limit,
        with_payload: args.with_args,
        ..query(args.filters)
    };
    let tasks: Vec<TaskJson> = q.list(&query).await?.iter().map(Into::into).collect();
    // A full page may have a next one, below its last id.
    let next_before = match tasks.last() {
        Some(t) if tasks.len() == limit => Some(t.id),
        _ => None,
    };
    let text = output::tasks_table(&tasks, next_before);
    Ok(Report::new(
        json!({ "tasks": tasks, "next_before": next_before }),
        text,
    ))
}

async fn show(q: &Queue, id: taskq_runtime::TaskId) -> Result<Report, Failure> {
    let d = q
        .task(id)
        .await?
        .ok_or_else(|| Failure::new(exit::NOT_FOUND, format!("task {id} not found")))?;
    let attempts: Vec<AttemptJson> = d.attempts.iter().map(Into::into).collect();
    Ok(Report::new(
        json!({ "task": TaskJson::from(&d.info), "attempts": attempts }),
        output::task_text(&d),
    ))
}

async fn retry(q: &Queue, args: RetryArgs) -> Result<Report, Failure> {
    let f = &args.filters;
    let filtered = f.queue.is_some() || f.state.is_some() || f.task.is_some() || f.args.is_some();
    if let (Some(id), false) = (args.id, args.all) {
        if filtered {
            return Err(Failure::new(
                exit::USAGE,
                "--queue, --state, --task and --args go with --all, not with a task id",
            ));
        }
        q.retry(id).await?;
        return Ok(Report::new(
            json!({ "action": "retry", "id": id.0 }),
            format!("task {id} is pending again"),
        ));
    }
    if let Some(state) = f.state {
        if !matches!(state, TaskState::Dead | TaskState::Failed) {
            return Err(Failure::new(
                exit::USAGE,
                format!("only dead or failed tasks can be retried, not {state} ones"),
            ));
        }
    }
    if let Some(name) = &f.queue {
        known_queue(q, name).await?;
    }
    confirm(
        args.yes,
        "retry every dead or failed task matching the filters?",
    )?;
    let n = q.retry_matching(&query(args.filters)).await?;
    Ok(Report::new(
        json!({ "action": "retry", "retried": n }),
        format!("{n} tasks are pending again"),
    ))
}

/// `admin`: the web console on `--bind`, with the credentials of the environment, until
/// Ctrl-C or SIGTERM. A configuration the console refuses (no credentials, weak ones, no
/// credentials off loopback) is a usage error; a failed bind is a failure.
async fn admin(q: Queue, args: AdminArgs) -> Result<Report, Failure> {
    use taskq_runtime::console::{self, ConsoleConfig, ConsoleError};
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let token = var(crate::cli::CONSOLE_TOKEN);
    let user = var(crate::cli::CONSOLE_USER);
    let password = var(crate::cli::CONSOLE_PASSWORD);
    let mut config = match (args.no_auth, token, user, password) {
        (true, None, None, None) => ConsoleConfig::unauthenticated_loopback(),
        (true, ..) => {
            return Err(Failure::new(
                exit::USAGE,
                "--no-auth with credentials in the environment: choose one",
            ))
        }
        (false, Some(t), None, None) => ConsoleConfig::token(t),
        (false, None, Some(u), Some(p)) => ConsoleConfig::password(u, p),
        (false, None, None, None) => {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "the console needs credentials: set {} (16 bytes or more), or {} and {}; \
                     or serve it on a loopback address without any with --no-auth",
                    crate::cli::CONSOLE_TOKEN,
                    crate::cli::CONSOLE_USER,
                    crate::cli::CONSOLE_PASSWORD
                ),
            ))
        }
        _ => {
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "set either {} alone, or both {} and {}",
                    crate::cli::CONSOLE_TOKEN,
                    crate::cli::CONSOLE_USER,
                    crate::cli::CONSOLE_PASSWORD
                ),
            ))
        }
    };
    config.read_only = args.read_only;
    config.secure_cookie = args.secure_cookie;
    if args.metrics {
        let handle = taskq_runtime::metrics::install_prometheus().map_err(|e| {
            Failure::new(
                exit::FAILED,
                format!("cannot install the Prometheus recorder: {e}"),
            )
        })?;
        config.metrics = Some(handle);
    }
    // Checked and bound before saying where it listens: a refusal prints only why.
    let refused = |e: ConsoleError| Failure::new(exit::USAGE, e.to_string());
    config.check_bind(args.bind).map_err(refused)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot listen on {}: {e}", args.bind)))?;
    let addr = listener.local_addr().unwrap_or(args.bind);
    eprintln!(
        "taskq: console on http://{addr}/{} (Ctrl-C stops it)",
        if config.read_only { " read-only" } else { "" }
    );
    match console::serve_on(q, config, listener, console::shutdown_signal()).await {
        Ok(()) => Ok(Report::new(
            json!({ "action": "admin", "bind": addr.to_string(), "stopped": true }),
            "console stopped".to_string(),
        )),
        Err(e @ ConsoleError::Io(_)) => Err(Failure::new(exit::FAILED, e.to_string())),
        Err(e) => Err(Failure::new(exit::USAGE, e.to_string())),
    }
}
