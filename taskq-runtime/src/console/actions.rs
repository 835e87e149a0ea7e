//! The actions (POST forms, each past [`super::auth::gate`]'s CSRF and read-only checks):
//! run now, retry, cancel and delete a task; retry the ticked tasks or every dead or failed
//! task matching a filter; pause, resume and purge a queue; cancel an iterative run.
//! Delete, purge, both cancels and retry-all first answer with a confirmation page, and act when the
//! form comes back with `confirm=yes`. Each action then redirects (303) to the page it
//! came from (`next`, a path of this console) with a notice.
//!
//! There is no action here that starts a task (a schedule's run now, in `schedules.rs`,
//! starts its stored task with its stored arguments): a retry puts back a task that exists, with its
//! own arguments.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::Router;

use super::filters::{self, Retried, TaskFilter};
use super::pages::store_error;
use super::templates::{error_page, render, Chrome, ConfirmPage};
use super::Shared;
use crate::store::TaskId;

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/tasks/{id}/run-now", post(run_now))
        .route("/tasks/{id}/retry", post(retry))
        .route("/tasks/{id}/delete", post(delete))
        .route("/tasks/{id}/cancel", post(cancel_task))
        .route("/tasks/retry", post(retry_selected))
        .route("/tasks/retry-matching", post(retry_matching))
        .route("/queues/pause", post(pause))
        .route("/queues/resume", post(resume))
        .route("/queues/purge", post(purge))
        .route("/runs/{id}/cancel", post(cancel))
}

/// A form's fields, in order (a selection repeats `id`).
struct Fields(Vec<(String, String)>);

impl Fields {
    fn of(body: &Bytes) -> Fields {
        Fields(form_urlencoded::parse(body).into_owned().collect())
    }

    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    fn confirmed(&self) -> bool {
        self.get("confirm") == "yes"
    }

    /// The fields to send again with a confirmation (all but the CSRF token, which the
    /// page adds, and `confirm`).
    fn to_confirm(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter(|(k, _)| k != "csrf" && k != "confirm")
            .cloned()
            .collect()
    }
}

/// Where to go after an action: `next` (inside the console) or `fallback`, with the
/// notice's query (`did`, `n`, `skipped`) replacing any earlier one.
fn done(
    chrome: &Chrome,
    fields: &Fields,
    fallback: String,
    did: &str,
    n: Option<u64>,
    skipped: u64,
) -> Response {
    let next = fields.get("next");
    let target = if next.is_empty() {
        chrome.next_or_home(&fallback)
    } else {
        chrome.next_or_home(next)
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if !matches!(&*k, "did" | "n" | "skipped") {
            q.append_pair(&k, &v);
        }
    }
    q.append_pair("did", did);
    if let Some(n) = n {
        q.append_pair("n", &n.to_string());
    }
    if skipped > 0 {
        q.append_pair("skipped", &skipped.to_string());
    }
    Redirect::to(&format!("{path}?{}", q.finish())).into_response()
}

/// The confirmation page of an action.
fn confirm(
    chrome: &Chrome,
    fields: &Fields,
    question: String,
    action: String,
    button: &str,
    back: String,
) -> Response {
    let chrome = chrome.clone().still();
    render(&ConfirmPage {
        chrome: &chrome,
        question,
        action,
        fields: fields.to_confirm(),
        button,
        back: chrome.next_or_home(&back),
    })
}

fn task_id(chrome: &Chrome, id: &str) -> Result<TaskId, Box<Response>> {
    id.parse::<TaskId>()
        .map_err(|_| Box::new(error_page(chrome, StatusCode::NOT_FOUND, "No such task.")))
}

/// The queue a queue action names (the `queue` field).
/// The form's queue, which must be one the store knows (has tasks or settings): the
/// console's buttons only name listed queues, and a pause, resume or purge of a name that
/// is not one answers 404 rather than creating a queue (as the CLI does).
async fn queue_name<'a>(
    c: &Shared,
    chrome: &Chrome,
    fields: &'a Fields,
) -> Result<&'a str, Box<Response>> {
    let q = match fields.get("queue") {
        "" => {
            return Err(Box::new(error_page(
                chrome,
                StatusCode::BAD_REQUEST,
                "The form names no queue.",
            )))
        }
        q => q,
    };
    match c.queue.queues().await {
        Ok(known) if known.iter().any(|k| k.name == q) => Ok(q),
        Ok(_) => Err(Box::new(error_page(
            chrome,
            StatusCode::NOT_FOUND,
            &format!("No queue named `{q}`."),
        ))),
        Err(e) => Err(Box::new(store_error(chrome, &e))),
    }
}

async fn run_now(
    State(c): State<Shared>,
    chrome: Chrome,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    on_task(&c, &chrome, &id, &body, TaskAction::RunNow).await
}

async fn retry(
    State(c): State<Shared>,
    chrome: Chrome,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    on_task(&c, &chrome, &id, &body, TaskAction::Retry).await
}

/// The actions on one task that need no confirmation.
#[derive(Clone, Copy)]
enum TaskAction {
    RunNow,
    Retry,
}

/// Runs a [`TaskAction`] on the task of the path, then back to the task's page (or
/// `next`), with the notice named after it.
async fn on_task(
    c: &Shared,
    chrome: &Chrome,
    id: &str,
    body: &Bytes,
    action: TaskAction,
) -> Response {
    let fields = Fields::of(body);
    let id = match task_id(chrome, id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let (did, result) = match action {
        TaskAction::RunNow => ("run-now", c.queue.run_now(id).await),
        TaskAction::Retry => ("retry", c.queue.retry(id).await),
    };
    match result {
        Ok(()) => done(
            chrome,
            &fields,
            format!("{}/tasks/{id}", chrome.prefix),
            did,
            None,
            0,
        ),
        Err(e) => store_error(chrome, &e),
    }
}

async fn delete(
    State(c): State<Shared>,
    chrome: Chrome,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = Fields::of(&body);
    let id = match task_id(&chrome, &id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let list = format!("{}/tasks", chrome.prefix);
    if !fields.confirmed() {
        return confirm(
            &chrome,
            &fields,
            format!("Delete task {id}? Its attempts go with it; a running one's worker loses it."),
            format!("{}/tasks/{id}/delete", chrome.prefix),
            "Delete",
            format!("{}/tasks/{id}", chrome.prefix),
        );
    }
    match c.queue.delete(id).await {
        // Never back to the deleted task's page.
        Ok(()) => {
            let next = fields.get("next");
            let back = if next.contains(&format!("/tasks/{id}")) {
                ""
            } else {
                next
            };
            let fields = Fields(vec![("next".into(), back.to_string())]);
            done(&chrome, &fields, list, "delete", None, 0)
        }
        Err(e) => store_error(&chrome, &e),
    }
}

/// Cancels a pending or running task ([`Queue::cancel`](crate::Queue::cancel)), after a
/// confirmation, then back to its page with `did=cancel-task` (cancelled) or
/// `did=cancel-requested` (running: its worker stops it).
async fn cancel_task(
    State(c): State<Shared>,
    chrome: Chrome,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = Fields::of(&body);
    let id = match task_id(&chrome, &id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let page = format!("{}/tasks/{id}", chrome.prefix);
    if !fields.confirmed() {
        return confirm(
            &chrome,
            &fields,
            format!("Cancel task {id}? A pending task will not run; a running one is told to stop, stopped after its worker's cancel grace, and not retried."),
            format!("{}/tasks/{id}/cancel", chrome.prefix),
            "Cancel the task",
            page,
        );
    }
    match c.queue.cancel(id).await {
        Ok(outcome) => {
            let did = match outcome {
                crate::store::CancelOutcome::Cancelled => "cancel-task",
                crate::store::CancelOutcome::Requested
                | crate::store::CancelOutcome::AlreadyRequested => "cancel-requested",
            };
            done(&chrome, &fields, page, did, None, 0)
        }
        Err(e) => store_error(&chrome, &e),
    }
}

fn retried(chrome: &Chrome, fields: &Fields, fallback: String, r: Retried) -> Response {
    done(
        chrome,
        fields,
        fallback,
        "retry",
        Some(r.retried),
        r.skipped,
    )
}

async fn retry_selected(State(c): State<Shared>, chrome: Chrome, body: Bytes) -> Response {
    let fields = Fields::of(&body);
    let ids: Vec<TaskId> = fields
        .0
        .iter()
        .filter(|(k, _)| k == "id")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    if ids.is_empty() {
        return error_page(&chrome, StatusCode::BAD_REQUEST, "No task was ticked.");
    }
    if ids.len() > filters::MAX_SELECTED {
        return error_page(
            &chrome,
            StatusCode::BAD_REQUEST,
            &format!(
                "At most {} tasks at once: use \"retry all matching\".",
                filters::MAX_SELECTED
            ),
        );
    }
    match filters::retry_selected(&c.queue, &ids).await {
        Ok(r) => retried(&chrome, &fields, format!("{}/tasks", chrome.prefix), r),
        Err(e) => store_error(&chrome, &e),
    }
}

async fn retry_matching(State(c): State<Shared>, chrome: Chrome, body: Bytes) -> Response {
    let fields = Fields::of(&body);
    let pairs = fields
        .0
        .iter()
        .filter(|(k, _)| k != "before" && k != "limit")
        .map(|(k, v)| (k.as_str(), v.as_str()));
    let filter = match TaskFilter::from_pairs(pairs, 1) {
        Ok(p) => p.filter,
        Err(e) => return error_page(&chrome, StatusCode::BAD_REQUEST, &e),
    };
    let list = format!("{}/tasks?{}", chrome.prefix, filter.query_string());
    if !fields.confirmed() {
        let what = match filter.state {
            Some(s) => format!("every {s} task"),
            None => "every dead or failed task".into(),
        };
        let mut scope = Vec::new();
        if let Some(q) = &filter.queue {
            scope.push(format!("in queue `{q}`"));
        }
        if let Some(t) = &filter.task {
            scope.push(format!("of task `{t}`"));
        }
        if let Some(a) = &filter.args {
            scope.push(format!("whose arguments contain `{a}`"));
        }
        return confirm(
            &chrome,
            &fields,
            format!(
                "Retry {what} {}? Each goes back to its queue with fresh attempts.",
                scope.join(" ")
            ),
            format!("{}/tasks/retry-matching", chrome.prefix),
            "Retry all matching",
            list,
        );
    }
    match filters::retry_matching(&c.queue, &filter).await {
        Ok(r) => retried(&chrome, &fields, list, r),
        Err(e) => store_error(&chrome, &e),
    }
}

async fn pause(State(c): State<Shared>, chrome: Chrome, body: Bytes) -> Response {
    pause_or_resume(&c, &chrome, &body, true).await
}

async fn resume(State(c): State<Shared>, chrome: Chrome, body: Bytes) -> Response {
    pause_or_resume(&c, &chrome, &body, false).await
}

/// Pauses (or resumes) the form's queue, then back home (or `next`).
async fn pause_or_resume(c: &Shared, chrome: &Chrome, body: &Bytes, pause: bool) -> Response {
    let fields = Fields::of(body);
    let q = match queue_name(c, chrome, &fields).await {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let (did, result) = if pause {
        ("pause", c.queue.pause(q).await)
    } else {
        ("resume", c.queue.resume(q).await)
    };
    match result {
        Ok(()) => done(chrome, &fields, chrome.home.clone(), did, None, 0),
        Err(e) => store_error(chrome, &e),
    }
}

async fn purge(State(c): State<Shared>, chrome: Chrome, body: Bytes) -> Response {
    let fields = Fields::of(&body);
    let q = match queue_name(&c, &chrome, &fields).await {
        Ok(q) => q,
        Err(r) => return *r,
    };
    if !fields.confirmed() {
        return confirm(
            &chrome,
            &fields,
            format!("Purge queue `{q}`? Every pending task of it is deleted (running and finished ones stay)."),
            format!("{}/queues/purge", chrome.prefix),
            "Purge",
            chrome.home.clone(),
        );
    }
    match c.queue.purge(q).await {
        Ok(n) => done(&chrome, &fields, chrome.home.clone(), "purge", Some(n), 0),
        Err(e) => store_error(&chrome, &e),
    }
}

async fn cancel(
    State(c): State<Shared>,
    chrome: Chrome,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = Fields::of(&body);
    let Ok(run) = id.parse::<TaskId>() else {
        return error_page(&chrome, StatusCode::NOT_FOUND, "No such run.");
    };
    if !fields.confirmed() {
        return confirm(
            &chrome,
            &fields,
            format!("Cancel run {run}? Its steps stop; nothing of it is retried or continued."),
            format!("{}/runs/{run}/cancel", chrome.prefix),
            "Cancel the run",
            format!("{}/runs", chrome.prefix),
        );
    }
    match c.queue.cancel_iteration(run).await {
        Ok(()) => done(
            &chrome,
            &fields,
            format!("{}/runs", chrome.prefix),
            "cancel",
            None,
            0,
        ),
        Err(e) => store_error(&chrome, &e),
    }
}
