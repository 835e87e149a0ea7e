//! The schedules page (`GET /schedules`: every periodic task's schedule with its next
//! and last run) and its actions (POST, past [`super::auth::gate`]'s CSRF and read-only
//! checks): run now, pause, resume. Each action names the schedule in the form's
//! `schedule` field (a declared task's schedule is named `module::task`, which a path
//! segment would have to escape) and redirects (303) back with a notice.
//!
//! Stable hooks for browser tests: rows `tr.schedule-row` with `data-schedule="NAME"`,
//! their cells `.next-run` and `.last-run`, the buttons `button.schedule-run-button`,
//! `.schedule-pause-button` and `.schedule-resume-button`.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::pages::store_error;
use super::templates::{error_page, render, when, Chrome};
use super::Shared;
use crate::schedule::ScheduleError;
use crate::store::ScheduleInfo;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/schedules", get(page))
        .route("/schedules/run-now", post(run_now))
        .route("/schedules/pause", post(pause))
        .route("/schedules/resume", post(resume))
}

/// One schedule on the page.
pub(crate) struct ScheduleRow {
    pub(crate) name: String,
    pub(crate) task: String,
    pub(crate) cron: String,
    pub(crate) timezone: String,
    pub(crate) catch_up: &'static str,
    pub(crate) paused: bool,
    pub(crate) task_missing: bool,
    pub(crate) next_run: String,
    pub(crate) last_run: String,
    pub(crate) last_task: Option<i64>,
}

impl ScheduleRow {
    fn of(s: &ScheduleInfo) -> ScheduleRow {
        ScheduleRow {
            name: s.name.clone(),
            task: s.task.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            catch_up: s.catch_up.as_str(),
            paused: s.paused,
            task_missing: s.task_missing,
            next_run: when(s.next_tick),
            last_run: s.last_tick.map(when).unwrap_or_default(),
            last_task: s.last_task.map(|t| t.0),
        }
    }
}

/// The schedules page.
#[derive(Template)]
#[template(path = "console/schedules.html")]
pub(crate) struct SchedulesPage {
    pub(crate) chrome: Chrome,
    pub(crate) schedules: Vec<ScheduleRow>,
}

/// `/schedules`.
async fn page(State(console): State<Shared>, chrome: Chrome) -> Response {
    let chrome = chrome.at("schedules");
    match console.queue.schedules().await {
        Ok(list) => render(&SchedulesPage {
            schedules: list.iter().map(ScheduleRow::of).collect(),
            chrome,
        }),
        Err(e) => store_error(&chrome, &e),
    }
}

/// The form's `schedule` and `next` fields.
fn fields(body: &Bytes) -> (String, String) {
    let (mut name, mut next) = (String::new(), String::new());
    for (k, v) in form_urlencoded::parse(body) {
        match &*k {
            "schedule" => name = v.into_owned(),
            "next" => next = v.into_owned(),
            _ => {}
        }
    }
    (name, next)
}

enum Act {
    RunNow,
    Pause,
    Resume,
}

async fn act(console: &Shared, chrome: &Chrome, body: &Bytes, act: Act) -> Response {
    let (name, next) = fields(body);
    if name.is_empty() {
        return error_page(
            chrome,
            StatusCode::BAD_REQUEST,
            "The form names no schedule.",
        );
    }
    let q = &console.queue;
    let (result, did) = match act {
        Act::RunNow => (q.run_schedule_now(&name).await.map(|_| ()), "schedule-run"),
        Act::Pause => (
            q.pause_schedule(&name).await.map_err(ScheduleError::from),
            "schedule-pause",
        ),
        Act::Resume => (q.resume_schedule(&name).await, "schedule-resume"),
    };
    match result {
        Ok(()) => {
            let fallback = format!("{}/schedules", chrome.prefix);
            let target = chrome.next_or_home(if next.is_empty() { &fallback } else { &next });
            let path = target.split_once('?').map_or(target.as_str(), |(p, _)| p);
            Redirect::to(&format!("{path}?did={did}")).into_response()
        }
        Err(ScheduleError::Store(e)) => store_error(chrome, &e),
        Err(e) => error_page(chrome, StatusCode::CONFLICT, &e.to_string()),
    }
}

async fn run_now(State(c): State<Shared>, chrome: Chrome, body: Bytes) -> Response {
    act(&c, &chrome, &body, Act::RunNow).await
}

async fn pause(State(c): State<Shared>, chrome: Chrome, body: Bytes) -> Response {
    act(&c, &chrome, &body, Act::Pause).await
}

async fn resume(State(c): State<Shared>, chrome: Chrome, body: Bytes) -> Response {
    act(&c, &chrome, &body, Act::Resume).await
}
