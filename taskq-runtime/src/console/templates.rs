//! The pages' templates (askama, in `taskq-runtime/templates/console/`, compiled into
//! the binary and HTML-escaping every value by default) and the views they show: plain
//! strings and numbers prepared here, so templates hold no logic beyond loops and ifs.
//!
//! Stable hooks for browser tests: `form#sign-in` (fields `#user`, `#password`, `#token`,
//! button `#sign-in-button`); task rows `tr.task-row` with `id="task-ID"`,
//! `data-state="STATE"` and a class `state-STATE` (a dead one: `tr.task-row.state-dead`);
//! each row's retry button `button.retry-button` with `id="retry-ID"`; on a task's page the
//! state `#task-state` (`data-state` too), the arguments `#task-args`, the attempts
//! `#attempts` and the buttons `#retry-button`, `#run-now-button`, `#delete-button`; runs
//! `tr.run-row` with `id="run-ID"` and a `progress`; the chart `svg#throughput-chart`;
//! queues `tr.queue-row` with `data-queue`.

use askama::Template;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{Extensions, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};

use super::auth::Principal;
use super::{ConsoleAuth, Shared};
use crate::store::{AttemptInfo, IterationInfo, RunState, TaskInfo, TaskState};
use crate::time::Timestamp;

/// What every page shows around its content: links, the CSRF token, the mode.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chrome {
    /// The path the console is nested at (`""` at the root, else `/admin`, say): every
    /// link starts with it.
    pub(crate) prefix: String,
    /// The queues page: the prefix, or `/` at the root.
    pub(crate) home: String,
    /// This page's path and query, for the `next` field of forms.
    pub(crate) here: String,
    /// The CSRF token forms carry (empty for a request with a bearer token).
    pub(crate) csrf: String,
    /// Read-only mode: no action is shown.
    pub(crate) read_only: bool,
    /// Signed in with credentials: the sign-out button is shown.
    pub(crate) signed_in: bool,
    /// Live refresh every this many seconds (0: off).
    pub(crate) refresh: u64,
    /// The current section of the navigation: `queues`, `tasks`, `runs` or `schedules` (`sign-in`: none
    /// shown).
    pub(crate) nav: &'static str,
    /// A message about the action just done (from the redirect's query), or empty.
    pub(crate) notice: String,
}

impl Chrome {
    /// The chrome of a request, with the principal [`super::auth::gate`] found (`None`
    /// outside the gate: the sign-in page).
    pub(crate) fn of(
        console: &Shared,
        req: &axum::extract::Request,
        principal: Option<&Principal>,
    ) -> Chrome {
        Chrome::build(console, req.extensions(), req.uri(), principal)
    }

    fn build(
        console: &Shared,
        ext: &Extensions,
        uri: &Uri,
        principal: Option<&Principal>,
    ) -> Chrome {
        let prefix = ext
            .get::<axum::extract::NestedPath>()
            .map(|p| p.as_str().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let original = ext.get::<OriginalUri>().map(|o| &o.0).unwrap_or(uri);
        let here = original
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let home = if prefix.is_empty() {
            "/".to_string()
        } else {
            prefix.clone()
        };
        let notice = notice_of(uri.query().unwrap_or(""));
        Chrome {
            prefix,
            home,
            here,
            csrf: principal.and_then(|p| p.csrf.clone()).unwrap_or_default(),
            read_only: console.config.read_only,
            signed_in: principal.is_some_and(|p| p.signed_in),
            refresh: console.config.refresh.as_secs(),
            nav: "",
            notice,
        }
    }

    /// This chrome in a section of the navigation.
    pub(crate) fn at(mut self, nav: &'static str) -> Chrome {
        self.nav = nav;
        self
    }

    /// This chrome without live refresh (forms a person fills in, confirmations).
    pub(crate) fn still(mut self) -> Chrome {
        self.refresh = 0;
        self
    }

    /// `next` when it is a path of this console (never another site: no open redirect),
    /// else the queues page.
    pub(crate) fn next_or_home(&self, next: &str) -> String {
        let inside = next.starts_with('/')
            && !next.starts_with("//")
            && !next.contains('\\')
            && !next.chars().any(char::is_control)
            && (self.prefix.is_empty()
                || next == self.prefix
                || next.starts_with(&format!("{}/", self.prefix))
                || next.starts_with(&format!("{}?", self.prefix)));
        if inside {
            next.to_string()
        } else {
            self.home.clone()
        }
    }
}

/// A handler's chrome, read from the request parts (inside the gate).
impl FromRequestParts<Shared> for Chrome {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let principal = parts.extensions.get::<Principal>().cloned();
        Ok(Chrome::build(
            console,
            &parts.extensions,
            &parts.uri,
            principal.as_ref(),
        ))
    }
}

/// The message for `?did=ACTION&n=N&skipped=M` after an action (fixed texts only: a
/// query cannot put words on the page).
fn notice_of(query: &str) -> String {
    let (mut did, mut n, mut skipped) = (String::new(), None::<u64>, 0u64);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "did" => did = v.into_owned(),
            "n" => n = v.parse().ok(),
            "skipped" => skipped = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let tasks = |n: u64| {
        if n == 1 {
            "1 task".to_string()
        } else {
            format!("{n} tasks")
        }
    };
    let mut s = match (did.as_str(), n) {
        ("run-now", _) => "The task is due now.".to_string(),
        ("retry", Some(n)) => format!("Retried {}.", tasks(n)),
        ("retry", None) => "The task is back in its queue.".to_string(),
        ("delete", _) => "The task was deleted.".to_string(),
        ("pause", _) => "The queue is paused.".to_string(),
        ("resume", _) => "The queue is resumed.".to_string(),
        ("purge", Some(n)) => format!("Purged {} (every pending task of the queue).", tasks(n)),
        ("cancel", _) => "The run is cancelled.".to_string(),
        ("cancel-task", _) => "The task is cancelled.".to_string(),
        ("cancel-requested", _) => {
            "The cancel is requested: the task's worker tells it to stop, stops it after its cancel grace, and it ends cancelled.".to_string()
        }
        ("schedule-run", _) => "The schedule's task was started now.".to_string(),
        ("schedule-pause", _) => "The schedule is paused.".to_string(),
        ("schedule-resume", _) => "The schedule is resumed from its next tick.".to_string(),
        _ => String::new(),
    };
    if skipped > 0 && !s.is_empty() {
        s.push_str(&format!(
            " {} could not be retried (not dead or failed any more, or its name is taken).",
            tasks(skipped)
        ));
    }
    s
}

/// Renders a template as an HTML response (500 if it fails, which a compiled template
/// does only when writing fails).
pub(crate) fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the console could not render this page: {e}"),
        )
            .into_response(),
    }
}

/// A page with a message and a status.
#[derive(Template)]
#[template(path = "console/error.html")]
pub(crate) struct ErrorPage<'a> {
    pub(crate) chrome: &'a Chrome,
    pub(crate) title: &'a str,
    pub(crate) message: &'a str,
}

/// A page saying what went wrong, with `status`.
pub(crate) fn error_page(chrome: &Chrome, status: StatusCode, message: &str) -> Response {
    let chrome = chrome.clone().still();
    let title = status.canonical_reason().unwrap_or("Error");
    let mut resp = render(&ErrorPage {
        chrome: &chrome,
        title,
        message,
    });
    *resp.status_mut() = status;
    resp
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "console/login.html")]
pub(crate) struct LoginPage<'a> {
    pub(crate) chrome: &'a Chrome,
    /// Ask for a user name and password (else for the token).
    pub(crate) password: bool,
    pub(crate) next: &'a str,
    pub(crate) error: &'a str,
}

/// The sign-in form (status 200; callers set 401 where it answers a refusal).
pub(crate) fn login_page(console: &Shared, chrome: &Chrome, next: &str, error: &str) -> Response {
    // No navigation: every link would answer with this form again.
    let chrome = chrome.clone().still().at("sign-in");
    render(&LoginPage {
        chrome: &chrome,
        password: matches!(console.config.auth, Some(ConsoleAuth::Password { .. })),
        next,
        error,
    })
}

/// A confirmation step before an action that destroys (or touches many tasks): the same
/// form again, with `confirm=yes`.
#[derive(Template)]
#[template(path = "console/confirm.html")]
pub(crate) struct ConfirmPage<'a> {
    pub(crate) chrome: &'a Chrome,
    pub(crate) question: String,
    pub(crate) action: String,
    pub(crate) fields: Vec<(String, String)>,
    pub(crate) button: &'a str,
    pub(crate) back: String,
}

/// Percent-encodes a query value.
pub(crate) fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A time for people, in UTC to the second: `2026-11-30 13:28:46`.
pub(crate) fn when(t: Timestamp) -> String {
    let s = t.to_string();
    // Display is RFC 3339 with milliseconds: `2026-11-30T13:28:46.123Z`.
    match s.split_once('.') {
        Some((head, _)) => head.replacen('T', " ", 1),
        None => s,
    }
}

fn time(t: Option<Timestamp>) -> String {
    t.map(when).unwrap_or_default()
}

/// One queue on the queues page.
pub(crate) struct QueueRow {
    pub(crate) name: String,
    /// The name, percent-encoded for links.
    pub(crate) enc: String,
    /// Counts in [`TaskState::ALL`] order.
    pub(crate) counts: Vec<(&'static str, u64)>,
    pub(crate) paused: bool,
    /// Its limits, for people (`rate 5/s, burst 10, at most 3 running`), or empty.
    pub(crate) limits: String,
}

impl QueueRow {
    pub(crate) fn of(q: &crate::store::QueueInfo) -> QueueRow {
        let mut limits = Vec::new();
        if let Some(r) = q.config.rate {
            limits.push(format!("rate {r}/s"));
        }
        if let Some(b) = q.config.burst {
            limits.push(format!("burst {b}"));
        }
        if let Some(m) = q.config.max_concurrent {
            limits.push(format!("at most {m} running"));
        }
        QueueRow {
            name: q.name.clone(),
            enc: enc(&q.name),
            counts: TaskState::ALL
                .iter()
                .map(|s| (s.as_str(), q.count(*s)))
                .collect(),
            paused: q.paused,
            limits: limits.join(", "),
        }
    }
}

/// The queues page.
#[derive(Template)]
#[template(path = "console/queues.html")]
pub(crate) struct QueuesPage {
    pub(crate) chrome: Chrome,
    pub(crate) queues: Vec<QueueRow>,
    pub(crate) states: Vec<&'static str>,
    /// The throughput chart (SVG built by [`super::chart`] from numbers only).
    pub(crate) chart: String,
    pub(crate) done_hour: u64,
    pub(crate) failed_hour: u64,
}

/// One task in a listing.
pub(crate) struct TaskRow {
    pub(crate) id: i64,
    pub(crate) task: String,
    pub(crate) queue: String,
    pub(crate) state: &'static str,
    pub(crate) attempts: u32,
    pub(crate) run_at: String,
    pub(crate) finished_at: String,
    /// The last error, cut to 300 characters.
    pub(crate) last_error: String,
    pub(crate) retryable: bool,
}

impl TaskRow {
    pub(crate) fn of(t: &TaskInfo) -> TaskRow {
        TaskRow {
            id: t.id.0,
            task: t.task.clone(),
            queue: t.queue.clone(),
            state: t.state.as_str(),
            attempts: t.attempts,
            run_at: when(t.run_at),
            finished_at: time(t.finished_at),
            last_error: cut(t.last_error.as_deref().unwrap_or(""), 300),
            retryable: retryable(t.state),
        }
    }
}

/// Whether the console offers a retry: dead or failed (what `Queue::retry` takes).
pub(crate) fn retryable(s: TaskState) -> bool {
    matches!(s, TaskState::Dead | TaskState::Failed)
}

/// At most `n` characters, with `…` when cut.
fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The tasks page.
#[derive(Template)]
#[template(path = "console/tasks.html")]
pub(crate) struct TasksPage {
    pub(crate) chrome: Chrome,
    pub(crate) tasks: Vec<TaskRow>,
    /// Queue names for the filter, with whether each is chosen.
    pub(crate) queues: Vec<(String, bool)>,
    /// States for the filter, with whether each is chosen.
    pub(crate) states: Vec<(&'static str, bool)>,
    pub(crate) task_name: String,
    /// The arguments-substring filter as typed (empty: none).
    pub(crate) args_text: String,
    /// The filter as hidden fields (for retry-all-matching) and as a query (for links).
    pub(crate) filter_fields: Vec<(String, String)>,
    pub(crate) filter_query: String,
    /// The query of the next (older) page, when this one is full.
    pub(crate) older: Option<String>,
    /// Whether this is a later page (shows a link back to the newest).
    pub(crate) paged: bool,
    /// Whether the filter can match dead or failed tasks (offers "retry all matching").
    pub(crate) retry_offered: bool,
    pub(crate) problem: String,
}

/// One attempt on a task's page.
pub(crate) struct AttemptRow {
    pub(crate) attempt: u32,
    pub(crate) worker: String,
    pub(crate) started_at: String,
    pub(crate) finished_at: String,
    pub(crate) took: String,
    pub(crate) outcome: String,
    pub(crate) error: String,
}

impl AttemptRow {
    pub(crate) fn of(a: &AttemptInfo) -> AttemptRow {
        AttemptRow {
            attempt: a.attempt,
            worker: a.worker.clone(),
            started_at: when(a.started_at),
            finished_at: when(a.finished_at),
            took: duration(a.finished_at.since(a.started_at).as_secs_f64()),
            outcome: a.outcome.clone(),
            error: a.error.clone().unwrap_or_default(),
        }
    }
}

/// One task's page.
#[derive(Template)]
#[template(path = "console/task.html")]
pub(crate) struct TaskPage {
    pub(crate) chrome: Chrome,
    pub(crate) id: i64,
    pub(crate) task: String,
    pub(crate) queue: String,
    pub(crate) queue_enc: String,
    pub(crate) state: &'static str,
    pub(crate) priority: i32,
    pub(crate) attempts_made: u32,
    pub(crate) unique_name: String,
    /// Whether `unique_name` is a unique key of its arguments ([`crate::unique`]).
    pub(crate) unique_key: bool,
    pub(crate) created_at: String,
    pub(crate) enqueued_at: String,
    pub(crate) run_at: String,
    pub(crate) finished_at: String,
    pub(crate) worker: String,
    pub(crate) lease_until: String,
    pub(crate) run: Option<i64>,
    pub(crate) last_error: String,
    /// The arguments, pretty-printed JSON.
    pub(crate) args: String,
    pub(crate) attempts: Vec<AttemptRow>,
    pub(crate) retryable: bool,
    pub(crate) runnable: bool,
    /// Pending or running: the page offers Cancel.
    pub(crate) cancellable: bool,
    /// Running with a cancel requested (`TaskInfo::cancel_requested`).
    pub(crate) cancel_requested: bool,
}

impl TaskPage {
    pub(crate) fn of(chrome: Chrome, d: &crate::store::TaskDetail) -> TaskPage {
        let t = &d.info;
        TaskPage {
            chrome,
            id: t.id.0,
            task: t.task.clone(),
            queue: t.queue.clone(),
            queue_enc: enc(&t.queue),
            state: t.state.as_str(),
            priority: t.priority,
            attempts_made: t.attempts,
            unique_name: t.unique_name.clone().unwrap_or_default(),
            unique_key: t.unique_name.as_deref().is_some_and(crate::unique::is_key),
            created_at: when(t.created_at),
            enqueued_at: when(t.enqueued_at),
            run_at: when(t.run_at),
            finished_at: time(t.finished_at),
            worker: t.worker.clone().unwrap_or_default(),
            lease_until: time(t.lease_until),
            run: t.run.map(|r| r.0),
            last_error: t.last_error.clone().unwrap_or_default(),
            args: serde_json::to_string_pretty(&t.payload)
                .unwrap_or_else(|_| t.payload.to_string()),
            attempts: d.attempts.iter().map(AttemptRow::of).collect(),
            retryable: retryable(t.state),
            runnable: t.state == TaskState::Pending,
            cancellable: t.state.is_live(),
            cancel_requested: t.state == TaskState::Running && t.cancel_requested,
        }
    }
}

/// One iterative run.
pub(crate) struct RunRow {
    pub(crate) run: i64,
    pub(crate) task: String,
    pub(crate) queue: String,
    pub(crate) state: &'static str,
    pub(crate) processed: u64,
    /// The total, or empty when the model gives none.
    pub(crate) total: String,
    /// `value`/`max` of the progress bar, when a total is known.
    pub(crate) progress: Option<(u64, u64)>,
    pub(crate) percent: String,
    pub(crate) batches: u64,
    pub(crate) steps: u64,
    /// Entities per second since the run started (to its end, or now while it runs).
    pub(crate) rate: String,
    /// The estimated time left at that rate, while it runs and a total is known.
    pub(crate) eta: String,
    pub(crate) started_at: String,
    pub(crate) updated_at: String,
    pub(crate) finished_at: String,
    pub(crate) error: String,
    pub(crate) cancellable: bool,
}

impl RunRow {
    /// The row of `it` as of `now`.
    pub(crate) fn of(it: &IterationInfo, now: Timestamp) -> RunRow {
        let running = it.state == RunState::Running;
        let end = if running {
            now
        } else {
            it.finished_at.unwrap_or(it.updated_at)
        };
        let secs = end.since(it.started_at).as_secs_f64();
        let rate = if secs > 0.0 {
            Some(it.processed as f64 / secs)
        } else {
            None
        };
        let eta = match (running, it.total, rate) {
            (true, Some(total), Some(r)) if r > 0.0 => {
                duration(total.saturating_sub(it.processed) as f64 / r)
            }
            (true, Some(_), _) => "unknown yet".into(),
            _ => String::new(),
        };
        let progress = it.total.map(|t| {
            if it.state == RunState::Done {
                (t.max(1), t.max(1))
            } else {
                (it.processed.min(t), t)
            }
        });
        RunRow {
            run: it.run.0,
            task: it.task.clone(),
            queue: it.queue.clone(),
            state: it.state.as_str(),
            processed: it.processed,
            total: it.total.map(|t| t.to_string()).unwrap_or_default(),
            progress,
            percent: it
                .percent()
                .map(|p| format!("{p:.1} %"))
                .unwrap_or_default(),
            batches: it.batches,
            steps: it.steps,
            rate: rate.map(|r| format!("{r:.1}/s")).unwrap_or_default(),
            eta,
            started_at: when(it.started_at),
            updated_at: when(it.updated_at),
            finished_at: time(it.finished_at),
            error: it.error.clone().unwrap_or_default(),
            cancellable: running,
        }
    }
}

/// The runs page, or one run's page (`single`).
#[derive(Template)]
#[template(path = "console/runs.html")]
pub(crate) struct RunsPage {
    pub(crate) chrome: Chrome,
    pub(crate) runs: Vec<RunRow>,
    pub(crate) single: bool,
}

/// Seconds for people: `45 s`, `3 min 05 s`, `2 h 07 min`, `3 d 4 h`.
pub(crate) fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return String::new();
    }
    if secs < 10.0 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3_599 => format!("{} min {:02} s", s / 60, s % 60),
        3_600..=86_399 => format!("{} h {:02} min", s / 3_600, (s % 3_600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TaskId;

    #[test]
    fn times_to_the_second_in_utc() {
        assert_eq!(when(Timestamp(1_800_000_000_123)), "2027-01-15 08:00:00");
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(duration(2.25), "2.2 s");
        assert_eq!(duration(45.0), "45 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(7_620.0), "2 h 07 min");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3_600.0), "3 d 4 h");
        assert_eq!(duration(f64::INFINITY), "");
    }

    #[test]
    fn a_running_run_shows_its_rate_and_time_left() {
        let it = IterationInfo {
            run: TaskId(7),
            task: "t".into(),
            queue: "q".into(),
            filter: serde_json::Value::Null,
            cursor: None,
            processed: 250,
            batches: 3,
            steps: 1,
            total: Some(1_000),
            state: RunState::Running,
            started_at: Timestamp(0),
            updated_at: Timestamp(9_000),
            finished_at: None,
            error: None,
        };
        let r = RunRow::of(&it, Timestamp(10_000));
        assert_eq!(r.rate, "25.0/s");
        assert_eq!(r.eta, "30 s", "750 left at 25/s");
        assert_eq!(r.progress, Some((250, 1_000)));
        assert_eq!(r.percent, "25.0 %");
        assert!(r.cancellable);
        let done = IterationInfo {
            state: RunState::Done,
            processed: 1_000,
            finished_at: Some(Timestamp(20_000)),
            ..it
        };
        let r = RunRow::of(&done, Timestamp(99_000));
        assert_eq!((r.rate.as_str(), r.eta.as_str()), ("50.0/s", ""));
        assert!(!r.cancellable);
    }

    #[test]
    fn next_stays_inside_the_console() {
        let c = Chrome {
            prefix: "/admin".into(),
            home: "/admin".into(),
            ..Chrome::default()
        };
        assert_eq!(
            c.next_or_home("/admin/tasks?state=dead"),
            "/admin/tasks?state=dead"
        );
        assert_eq!(c.next_or_home("/admin"), "/admin");
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/other",
            "/administrator",
            "/admin/\\evil",
            "",
        ] {
            assert_eq!(c.next_or_home(bad), "/admin", "{bad}");
        }
    }

    #[test]
    fn notices_are_fixed_texts() {
        assert_eq!(notice_of("did=retry&n=3&skipped=1"), "Retried 3 tasks. 1 task could not be retried (not dead or failed any more, or its name is taken).");
        assert_eq!(notice_of("did=<script>&n=1"), "");
    }
}
