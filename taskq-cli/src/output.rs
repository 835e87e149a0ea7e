//! What the commands print: the `--json` shapes (stable field names, times as RFC 3339
//! UTC strings with milliseconds) and the human tables.

use comfy_table::{presets, Table};
use serde::Serialize;
use taskq_runtime::{
    AttemptInfo, IterationInfo, PruneReport, QueueInfo, RunState, TaskDetail, TaskInfo, TaskState,
    Timestamp,
};

/// What a command produced: one JSON document for `--json`, and the text for people.
#[derive(Debug)]
pub struct Report {
    /// The `--json` document.
    pub json: serde_json::Value,
    /// The human form (tables, or one line), ending without a newline.
    pub human: String,
}

impl Report {
    /// A report of `value` (serialized; a value that does not serialize, which none of
    /// this module's do, becomes `null`) shown to people as `human`.
    pub fn new(value: impl Serialize, human: impl Into<String>) -> Report {
        Report {
            json: serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            human: human.into(),
        }
    }
}

/// A time as `--json` and the tables show it: RFC 3339, UTC, milliseconds.
fn time(t: Timestamp) -> String {
    t.to_string()
}

/// Tasks by state, every state present.
#[derive(Debug, Serialize)]
pub struct Counts {
    /// Waiting for their due time.
    pub pending: u64,
    /// Held by a worker.
    pub running: u64,
    /// Finished with success.
    pub done: u64,
    /// Ended by a fatal error.
    pub failed: u64,
    /// Out of attempts (or undecodable, or of an unknown task name).
    pub dead: u64,
    /// Cancelled by a person.
    pub cancelled: u64,
}

/// One queue in `taskq queues --json` (`{"queues": [...]}`).
#[derive(Debug, Serialize)]
pub struct QueueJson {
    /// Its name.
    pub name: String,
    /// Whether workers are kept from claiming from it.
    pub paused: bool,
    /// Its tasks by state.
    pub counts: Counts,
    /// Claims per second allowed across all workers, `null` for no limit.
    pub rate: Option<f64>,
    /// Bucket size of the rate limit, `null` when unset.
    pub burst: Option<u32>,
    /// Tasks of the queue running at once at most, `null` for no limit.
    pub max_concurrent: Option<u32>,
}

impl From<&QueueInfo> for QueueJson {
    fn from(q: &QueueInfo) -> QueueJson {
        QueueJson {
            name: q.name.clone(),
            paused: q.paused,
            counts: Counts {
                pending: q.count(TaskState::Pending),
                running: q.count(TaskState::Running),
                done: q.count(TaskState::Done),
                failed: q.count(TaskState::Failed),
                dead: q.count(TaskState::Dead),
                cancelled: q.count(TaskState::Cancelled),
            },
            rate: q.config.rate,
            burst: q.config.burst,
            max_concurrent: q.config.max_concurrent,
        }
    }
}

/// One task in `taskq tasks --json` (`{"tasks": [...], "next_before": ID|null}`) and
/// `taskq show --json` (`{"task": {...}, "attempts": [...]}`).
#[derive(Debug, Serialize)]
pub struct TaskJson {
    /// Its id.
    pub id: i64,
    /// The registered task name.
    pub task: String,
    /// Its queue.
    pub queue: String,
    /// `pending`, `running`, `done`, `failed`, `dead` or `cancelled`.
    pub state: TaskState,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts made since it was last put in the queue.
    pub attempts: u32,
    /// Its de-duplication name, if any: a name given by hand, or the unique key of a task
    /// unique by its arguments (`args-sha256:` and 64 hex digits, `taskq_runtime::unique`).
    pub unique_name: Option<String>,
    /// When it was first stored.
    pub created_at: String,
    /// When it was last put in the queue (started, or retried).
    pub enqueued_at: String,
    /// When it is (or was) due.
    pub run_at: String,
    /// When it finished, if it did.
    pub finished_at: Option<String>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The iteration run it is a step of, if any.
    pub run: Option<i64>,
    /// The worker holding it, while running.
    pub worker: Option<String>,
    /// Until when that worker's lease holds, while running.
    pub lease_until: Option<String>,
    /// Its arguments (a JSON object by parameter name); `null` in a listing without
    /// `--with-args`.
    pub args: serde_json::Value,
}

impl From<&TaskInfo> for TaskJson {
    fn from(t: &TaskInfo) -> TaskJson {
        TaskJson {
            id: t.id.0,
            task: t.task.clone(),
            queue: t.queue.clone(),
            state: t.state,
            priority: t.priority,
            attempts: t.attempts,
            unique_name: t.unique_name.clone(),
            created_at: time(t.created_at),
            enqueued_at: time(t.enqueued_at),
            run_at: time(t.run_at),
            finished_at: t.finished_at.map(time),
            last_error: t.last_error.clone(),
            run: t.run.map(|r| r.0),
            worker: t.worker.clone(),
            lease_until: t.lease_until.map(time),
            args: t.payload.clone(),
        }
    }
}

/// One attempt in `taskq show --json`.
#[derive(Debug, Serialize)]
pub struct AttemptJson {
    /// 1-based attempt number (counted since the task was last put in the queue).
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// When it began.
    pub started_at: String,
    /// When it ended.
    pub finished_at: String,
    /// `done`, `failed`, `retry`, `dead`, `released`, `continued`, `stopped` or
    /// `lease lapsed`.
    pub outcome: String,
    /// Its error, if it had one.
    pub error: Option<String>,
}

impl From<&AttemptInfo> for AttemptJson {
    fn from(a: &AttemptInfo) -> AttemptJson {
        AttemptJson {
            attempt: a.attempt,
            worker: a.worker.clone(),
            started_at: time(a.started_at),
            finished_at: time(a.finished_at),
            outcome: a.outcome.clone(),
            error: a.error.clone(),
        }
    }
}

/// One iteration run in `taskq runs --json` (`{"runs": [...]}`, or `{"run": {...}}` for
/// one).
#[derive(Debug, Serialize)]
pub struct RunJson {
    /// The run's id (its first step's task id).
    pub run: i64,
    /// The iterative task's name.
    pub task: String,
    /// The queue its steps run on.
    pub queue: String,
    /// `running`, `done`, `failed`, `dead` or `cancelled`.
    pub state: RunState,
    /// Entities processed so far.
    pub processed: u64,
    /// The model's count of entities, when it gives one.
    pub total: Option<u64>,
    /// Percentage done (0 to 100), when the total is known or the run is done.
    pub percent: Option<f64>,
    /// Batches processed so far.
    pub batches: u64,
    /// Steps (executions) so far, the current one included.
    pub steps: u64,
    /// The model filter.
    pub filter: serde_json::Value,
    /// The key of the last processed entity.
    pub cursor: Option<serde_json::Value>,
    /// When it started.
    pub started_at: String,
    /// When progress was last recorded.
    pub updated_at: String,
    /// When it ended, if it did.
    pub finished_at: Option<String>,
    /// The error that ended it, if any.
    pub error: Option<String>,
}

impl From<&IterationInfo> for RunJson {
    fn from(r: &IterationInfo) -> RunJson {
        RunJson {
            run: r.run.0,
            task: r.task.clone(),
            queue: r.queue.clone(),
            state: r.state,
            processed: r.processed,
            total: r.total,
            percent: r.percent(),
            batches: r.batches,
            steps: r.steps,
            filter: r.filter.clone(),
            cursor: r.cursor.clone(),
            started_at: time(r.started_at),
            updated_at: time(r.updated_at),
            finished_at: r.finished_at.map(time),
            error: r.error.clone(),
        }
    }
}

/// `taskq prune --json`.
#[derive(Debug, Serialize)]
pub struct PruneJson {
    /// Tasks removed by the state they were in (live states are always 0).
    pub tasks: Counts,
    /// Progress records of iteration runs removed.
    pub runs: u64,
    /// Tombstones removed because their hold on a name had passed.
    pub tombstones: u64,
    /// PostgreSQL: another process was pruning the same store, so this one stopped.
    pub busy: bool,
}

impl From<&PruneReport> for PruneJson {
    fn from(p: &PruneReport) -> PruneJson {
        PruneJson {
            tasks: Counts {
                pending: p.count(TaskState::Pending),
                running: p.count(TaskState::Running),
                done: p.count(TaskState::Done),
                failed: p.count(TaskState::Failed),
                dead: p.count(TaskState::Dead),
                cancelled: p.count(TaskState::Cancelled),
            },
            runs: p.runs,
            tombstones: p.tombstones,
            busy: p.busy,
        }
    }
}

/// A table with aligned columns and no border, as `kubectl` and `docker` print.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    if !header.is_empty() {
        t.set_header(header.to_vec());
    }
    t
}

/// The table's text without the cell padding at both ends of each line (columns stay
/// aligned; no line ends in spaces).
pub(crate) fn render(t: &Table) -> String {
    t.lines()
        .map(|l| {
            let l = l.trim_end();
            l.strip_prefix(' ').unwrap_or(l).to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// At most `max` characters of `s` on one line, `…` marking a cut.
fn short(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    if line.chars().count() <= max && line.len() == s.len() {
        return line.to_string();
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub(crate) fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The queues table.
pub fn queues_table(queues: &[QueueJson]) -> String {
    if queues.is_empty() {
        return "no queues".into();
    }
    let mut t = table(&[
        "QUEUE",
        "PAUSED",
        "PENDING",
        "RUNNING",
        "DONE",
        "FAILED",
        "DEAD",
        "CANCELLED",
        "RATE/S",
        "MAX RUNNING",
    ]);
    for q in queues {
        let c = &q.counts;
        t.add_row(vec![
            q.name.clone(),
            if q.paused { "yes" } else { "no" }.into(),
            c.pending.to_string(),
            c.running.to_string(),
            c.done.to_string(),
            c.failed.to_string(),
            c.dead.to_string(),
            c.cancelled.to_string(),
            or_dash(q.rate),
            or_dash(q.max_concurrent),
        ]);
    }
    render(&t)
}

/// The tasks table, and how to get the next page when there may be one.
pub fn tasks_table(tasks: &[TaskJson], next_before: Option<i64>) -> String {
    if tasks.is_empty() {
        return "no tasks".into();
    }
    let with_args = tasks.iter().any(|t| !t.args.is_null());
    let mut header = vec![
        "ID",
        "TASK",
        "QUEUE",
        "STATE",
        "ATTEMPTS",
        "RUN AT",
        "LAST ERROR",
    ];
    if with_args {
        header.push("ARGS");
    }
    let mut t = table(&header);
    for task in tasks {
        let mut row = vec![
            task.id.to_string(),
            task.task.clone(),
            task.queue.clone(),
            task.state.to_string(),
            task.attempts.to_string(),
            task.run_at.clone(),
            task.last_error
                .as_deref()
                .map(|e| short(e, 60))
                .unwrap_or_else(|| "-".into()),
        ];
        if with_args {
            row.push(short(&task.args.to_string(), 60));
        }
        t.add_row(row);
    }
    let mut out = render(&t);
    if let Some(b) = next_before {
        out.push_str(&format!("\nmore: --before {b}"));
    }
    out
}

/// One task: its fields, its arguments pretty-printed, and its attempts.
pub fn task_text(d: &TaskDetail) -> String {
    let t = TaskJson::from(&d.info);
    let mut fields = table(&[]);
    let rows: Vec<(&str, String)> = vec![
        ("id", t.id.to_string()),
        ("task", t.task.clone()),
        ("queue", t.queue.clone()),
        ("state", t.state.to_string()),
        ("priority", t.priority.to_string()),
        ("attempts", t.attempts.to_string()),
        // A unique key of the arguments (`taskq_runtime::unique`) or a name given by hand.
        (
            if t.unique_name
                .as_deref()
                .is_some_and(taskq_runtime::unique::is_key)
            {
                "unique key"
            } else {
                "unique name"
            },
            or_dash(t.unique_name.clone()),
        ),
        ("created at", t.created_at.clone()),
        ("enqueued at", t.enqueued_at.clone()),
        ("run at", t.run_at.clone()),
        ("finished at", or_dash(t.finished_at.clone())),
        ("run", or_dash(t.run)),
        ("worker", or_dash(t.worker.clone())),
        ("lease until", or_dash(t.lease_until.clone())),
        ("last error", or_dash(t.last_error.clone())),
    ];
    for (k, v) in rows {
        fields.add_row(vec![k.to_string(), v]);
    }
    let args = serde_json::to_string_pretty(&t.args).unwrap_or_else(|_| t.args.to_string());
    let mut out = format!("{}\n\narguments:\n{args}\n\n", render(&fields));
    if d.attempts.is_empty() {
        out.push_str("no attempts yet");
        return out;
    }
    let mut a = table(&["#", "WORKER", "STARTED", "FINISHED", "OUTCOME", "ERROR"]);
    for at in &d.attempts {
        a.add_row(vec![
            at.attempt.to_string(),
            at.worker.clone(),
            time(at.started_at),
            time(at.finished_at),
            at.outcome.clone(),
            or_dash(at.error.clone()),
        ]);
    }
    out.push_str(&render(&a));
    out
}

/// The runs table.
pub fn runs_table(runs: &[RunJson]) -> String {
    if runs.is_empty() {
        return "no iteration runs".into();
    }
    let mut t = table(&[
        "RUN",
        "TASK",
        "QUEUE",
        "STATE",
        "PROCESSED",
        "TOTAL",
        "DONE %",
        "BATCHES",
        "STEPS",
        "UPDATED",
        "ERROR",
    ]);
    for r in runs {
        t.add_row(vec![
            r.run.to_string(),
            r.task.clone(),
            r.queue.clone(),
            r.state.as_str().to_string(),
            r.processed.to_string(),
            or_dash(r.total),
            r.percent
                .map(|p| format!("{p:.1}"))
                .unwrap_or_else(|| "-".into()),
            r.batches.to_string(),
            r.steps.to_string(),
            r.updated_at.clone(),
            r.error
                .as_deref()
                .map(|e| short(e, 60))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    render(&t)
}

/// What a prune removed, in one line.
pub fn prune_text(p: &PruneJson) -> String {
    let t = &p.tasks;
    let total = t.done + t.failed + t.dead + t.cancelled;
    let mut s = format!(
        "pruned {total} tasks (done {}, failed {}, dead {}, cancelled {}), {} runs, {} tombstones",
        t.done, t.failed, t.dead, t.cancelled, p.runs, p.tombstones
    );
    if p.busy {
        s.push_str("; stopped early: another process is pruning this store");
    }
    s
}

/// `text` safe to print at a terminal: every control character but the line feed (ESC,
/// carriage return, tab, DEL, the C1 controls) and every bidirectional-formatting
/// character is written as a `\u{..}` escape, so a queue name, task name, argument or
/// error message from the store cannot move the cursor, rewrite a line, recolour the
/// terminal or reorder what is shown. Everything else is kept as it is.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    fn hidden(c: char) -> bool {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(printable("email\nq"), "email\nq");
        assert_eq!(
            printable("a\u{1b}[31mred\r\t\u{7f}\u{9b}b"),
            "a\\u{1b}[31mred\\u{d}\\u{9}\\u{7f}\\u{9b}b"
        );
        assert_eq!(printable("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(printable("naïve ✓"), "naïve ✓");
    }
}
