//! The command line: global options and one subcommand per operation (clap derive).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use taskq_runtime::{TaskId, TaskState};

/// The environment variable holding the console's token (`admin`).
pub const CONSOLE_TOKEN: &str = "TASKQ_CONSOLE_TOKEN";
/// The environment variable holding the console's user name (`admin`, with
/// [`CONSOLE_PASSWORD`]).
pub const CONSOLE_USER: &str = "TASKQ_CONSOLE_USER";
/// The environment variable holding the console's password (`admin`, with
/// [`CONSOLE_USER`]).
pub const CONSOLE_PASSWORD: &str = "TASKQ_CONSOLE_PASSWORD";

/// The store the CLI opens when neither `--store` nor `TASKQ_STORE` says otherwise: the
/// file the README's examples use, in the current directory.
pub const DEFAULT_STORE: &str = "sqlite://taskq.db";

/// Manage the tasks of a taskq store: list, inspect, run, retry, delete, pause, resume,
/// purge, prune, cancel tasks, follow or cancel iteration runs, and list, run, pause or
/// resume periodic tasks' schedules.
///
/// Exit codes: 0 done; 1 the operation failed (the task is not in a state it applies to,
/// the confirmation was declined, a store error); 2 usage (a bad argument or store URL, or
/// a destructive command without --yes in a non-interactive run); 3 not found (task, run,
/// queue or schedule); 4 the store cannot be opened (unreachable database, missing SQLite file,
/// connect timeout, schema too new).
#[derive(Debug, Parser)]
#[command(name = "taskq", version, about, long_about)]
pub struct Cli {
    /// The store: `sqlite://PATH` (the file must exist) or `postgres://USER@HOST/DB`
    /// (options such as `?schema=NAME` as the library reads them).
    #[arg(long, global = true, env = "TASKQ_STORE", default_value = DEFAULT_STORE)]
    pub store: String,

    /// Print one JSON document on stdout (also for an error) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// How long to wait for the store to open (connect, and on PostgreSQL check the
    /// schema) before giving up with exit code 4: `500ms`, `10s`, `1m`.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The operations. Each prints a table (or with `--json` one JSON document).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every queue with its counts by state, pause flag and limits.
    Queues,
    /// Tasks, newest first, a page at a time; filters combine.
    Tasks(TasksArgs),
    /// One task with its arguments and every attempt (time, worker, outcome, error).
    Show {
        /// The task's id.
        id: TaskId,
    },
    /// Makes a pending task due now.
    Run {
        /// The task's id.
        id: TaskId,
    },
    /// Deletes a task in any state (a running one's worker loses it).
    Delete {
        /// The task's id.
        id: TaskId,
    },
    /// Puts a dead or failed task back in its queue with fresh attempts: one by id, or
    /// with --all every one matching the filters.
    Retry(RetryArgs),
    /// Stops workers claiming from a queue.
    Pause {
        /// The queue's name.
        queue: String,
    },
    /// Lets workers claim from a queue again.
    Resume {
        /// The queue's name.
        queue: String,
    },
    /// Deletes every pending task of a queue (asks first; --yes in scripts).
    Purge {
        /// The queue's name.
        queue: String,
        /// Do it without asking (needed when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Deletes now the finished tasks retention no longer keeps (workers also do it about
    /// every minute).
    Prune,
    /// Iteration runs with their progress, newest first; or one run.
    Runs {
        /// One run's id (the id of its first step).
        run: Option<TaskId>,
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Cancels a task: a pending one ends cancelled now; a running one is told through
    /// its worker (`ctx.is_cancelled()`), stopped after the worker's cancel grace, and
    /// ends cancelled, never retried. An iteration run's id cancels the run and its live
    /// step. A finished task (done, failed, dead, cancelled) exits with 1.
    Cancel {
        /// The task's id, or an iteration run's id.
        id: TaskId,
    },
    /// Periodic tasks: every schedule with its cron expression, time zone, next and last
    /// run, and whether it is paused or its task is missing.
    Schedules,
    /// Acts on one schedule: run its task now, pause it or resume it.
    Schedule {
        /// What to do.
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Serves the web console until Ctrl-C or SIGTERM. Credentials come from the
    /// environment, never the command line: TASKQ_CONSOLE_TOKEN (16 bytes or more), or
    /// TASKQ_CONSOLE_USER and TASKQ_CONSOLE_PASSWORD (8 bytes or more). Without them it
    /// refuses to start, unless --no-auth and a loopback --bind.
    Admin(AdminArgs),
}

/// `taskq schedule ...`.
#[derive(Debug, Subcommand)]
pub enum ScheduleAction {
    /// Starts the schedule's task now, with its arguments; the next run does not move.
    Run {
        /// The schedule's name (a declared task's is the task's name).
        name: String,
    },
    /// Stops its ticks from firing.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Lets its ticks fire again, from the first after now (ticks missed while paused
    /// are not run).
    Resume {
        /// The schedule's name.
        name: String,
    },
}

/// The options of `admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub bind: std::net::SocketAddr,
    /// Pages only: every action is refused (403) and no button is shown.
    #[arg(long)]
    pub read_only: bool,
    /// Serve without credentials: allowed on a loopback address only.
    #[arg(long)]
    pub no_auth: bool,
    /// Mark the session cookie `Secure` (when a TLS proxy serves the console).
    #[arg(long)]
    pub secure_cookie: bool,
    /// Also serve `GET /metrics`: the Prometheus text exposition of this process's
    /// recorder, the queue depth read from the store at each scrape (same credentials; a
    /// scraper sends `Authorization: Bearer TOKEN`).
    #[arg(long)]
    pub metrics: bool,
}

/// The filters of `tasks` and `retry --all`.
#[derive(Debug, Args, Default)]
pub struct Filters {
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this state: pending, running, done, failed, dead or cancelled.
    #[arg(long)]
    pub state: Option<TaskState>,
    /// Only this task name (as registered, `module::fn` by default).
    #[arg(long)]
    pub task: Option<String>,
    /// Only tasks whose arguments' JSON text contains this, case-sensitive and literal
    /// (compact JSON: `--args 'to":"ada@'`).
    #[arg(long)]
    pub args: Option<String>,
}

/// `taskq tasks`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Which tasks.
    #[command(flatten)]
    pub filters: Filters,
    /// Only tasks with an id below this: the next page starts below the last id shown.
    #[arg(long)]
    pub before: Option<TaskId>,
    /// At most this many tasks.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Include each task's arguments.
    #[arg(long)]
    pub with_args: bool,
}

/// `taskq retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The task's id.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<TaskId>,
    /// Every dead or failed task matching the filters (all of them without filters).
    #[arg(long)]
    pub all: bool,
    /// Which tasks, with --all (state: dead or failed; both when absent).
    #[command(flatten)]
    pub filters: Filters,
    /// With --all: do it without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// A duration as the library reads one (`500ms`, `10s`, `1m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    taskq_runtime::time::parse_duration(s)
}
