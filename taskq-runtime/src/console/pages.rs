//! The pages (GET): queues with the throughput chart, tasks with filters, one task, the
//! iterative runs and one run. Each reads the management API of the console's queue.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::filters::TaskFilter;
use super::templates::{
    error_page, render, Chrome, QueueRow, QueuesPage, RunRow, RunsPage, TaskPage, TaskRow,
    TasksPage,
};
use super::{chart, Shared};
use crate::store::{StoreError, TaskId, TaskState};

/// How many minutes the throughput chart covers.
const CHART_MINUTES: u32 = 60;
/// How many runs `/runs` shows, newest first.
const RUNS_SHOWN: usize = 50;

pub(crate) fn routes() -> Router<Shared> {
    let pages = Router::new()
        .route("/", get(queues))
        .route("/tasks", get(tasks))
        .route("/tasks/{id}", get(task))
        .route("/runs", get(runs))
        .route("/runs/{id}", get(run));
    #[cfg(feature = "prometheus")]
    let pages = pages.route("/metrics", get(metrics_text));
    pages
}

/// `GET /metrics`: the Prometheus text exposition of [`ConsoleConfig::metrics`]
/// (404 when the console was given none).
///
/// [`ConsoleConfig::metrics`]: super::ConsoleConfig::metrics
#[cfg(feature = "prometheus")]
async fn metrics_text(State(c): State<Shared>) -> Response {
    use axum::response::IntoResponse;
    match &c.config.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::metrics::scrape(handle, &c.queue).await,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no metrics: the console was given no Prometheus recorder",
        )
            .into_response(),
    }
}

/// A failing store call, as a page: 404 for what is not there, 409 for a refusal, 500
/// for the store failing (its message, for the operator).
pub(crate) fn store_error(chrome: &Chrome, e: &StoreError) -> Response {
    let status = match e {
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::Conflict(_) | StoreError::AlreadyExists(_) | StoreError::InvalidValue(_) => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_page(chrome, status, &e.to_string())
}

/// `/`: every queue with its counts, and the chart of the last hour.
async fn queues(State(console): State<Shared>, chrome: Chrome) -> Response {
    let chrome = chrome.at("queues");
    let q = &console.queue;
    let chart = chart::last_minutes(q, &console.counted, CHART_MINUTES);
    let (queues, minutes) = match tokio::try_join!(q.queues(), chart) {
        Ok(r) => r,
        Err(e) => return store_error(&chrome, &e),
    };
    render(&QueuesPage {
        queues: queues.iter().map(QueueRow::of).collect(),
        states: TaskState::ALL.iter().map(|s| s.as_str()).collect(),
        chart: chart::svg(&minutes),
        done_hour: minutes.iter().map(|m| m.done).sum(),
        failed_hour: minutes.iter().map(|m| m.failed + m.dead).sum(),
        chrome,
    })
}

/// `/tasks?queue=&state=&task=&before=&limit=`: a page of tasks, newest first.
async fn tasks(
    State(console): State<Shared>,
    chrome: Chrome,
    RawQuery(query): RawQuery,
) -> Response {
    let chrome = chrome.at("tasks");
    let query = query.unwrap_or_default();
    let parsed: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let pairs = parsed.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let (page, problem) = match TaskFilter::from_pairs(pairs, console.config.page_size) {
        Ok(p) => (p, String::new()),
        Err(e) => (
            TaskFilter::from_pairs([], console.config.page_size).unwrap_or_default(),
            e,
        ),
    };
    let filter = &page.filter;
    let query = filter.query(page.before, page.limit);
    // A filter that does not parse lists nothing (answer 400): an unfiltered list under
    // the problem's banner would read as the filtered one.
    let bad_filter = !problem.is_empty();
    let listed = async {
        if bad_filter {
            Ok(Vec::new())
        } else {
            console.queue.list(&query).await
        }
    };
    let (list, queues) = match tokio::try_join!(listed, console.queue.queues()) {
        Ok(r) => r,
        Err(e) => return store_error(&chrome, &e),
    };
    let mut names: Vec<(String, bool)> = queues
        .iter()
        .map(|q| {
            (
                q.name.clone(),
                filter.queue.as_deref() == Some(q.name.as_str()),
            )
        })
        .collect();
    if let Some(q) = &filter.queue {
        if !names.iter().any(|(n, _)| n == q) {
            names.push((q.clone(), true));
        }
    }
    let filter_query = filter.query_string();
    let older = match list.last() {
        Some(last) if list.len() == page.limit => {
            let mut pairs = filter.pairs();
            pairs.push(("before".into(), last.id.to_string()));
            if page.limit != console.config.page_size {
                pairs.push(("limit".into(), page.limit.to_string()));
            }
            Some(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs)
                    .finish(),
            )
        }
        _ => None,
    };
    let mut resp = render(&TasksPage {
        tasks: list.iter().map(TaskRow::of).collect(),
        queues: names,
        states: TaskState::ALL
            .iter()
            .map(|s| (s.as_str(), filter.state == Some(*s)))
            .collect(),
        task_name: filter.task.clone().unwrap_or_default(),
        args_text: filter.args.clone().unwrap_or_default(),
        filter_fields: filter.pairs(),
        filter_query,
        older,
        paged: page.before.is_some(),
        retry_offered: filter.state.is_none_or(super::templates::retryable),
        problem,
        chrome,
    });
    if bad_filter {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
    }
    resp
}

/// `/tasks/{id}`: one task with its arguments and attempts.
async fn task(State(console): State<Shared>, chrome: Chrome, Path(id): Path<String>) -> Response {
    let chrome = chrome.at("tasks");
    let Ok(id) = id.parse::<TaskId>() else {
        return error_page(&chrome, StatusCode::NOT_FOUND, "No such task.");
    };
    match console.queue.task(id).await {
        Ok(Some(d)) => render(&TaskPage::of(chrome, &d)),
        Ok(None) => error_page(
            &chrome,
            StatusCode::NOT_FOUND,
            &format!("Task {id} is not there (it may have been deleted or pruned)."),
        ),
        Err(e) => store_error(&chrome, &e),
    }
}

/// `/runs`: the latest iterative runs with their progress.
async fn runs(State(console): State<Shared>, chrome: Chrome) -> Response {
    let chrome = chrome.at("runs");
    let now = console.queue.clock().now();
    match console.queue.iterations(RUNS_SHOWN).await {
        Ok(list) => render(&RunsPage {
            runs: list.iter().map(|it| RunRow::of(it, now)).collect(),
            single: false,
            chrome,
        }),
        Err(e) => store_error(&chrome, &e),
    }
}

/// `/runs/{id}`: one iterative run.
async fn run(State(console): State<Shared>, chrome: Chrome, Path(id): Path<String>) -> Response {
    let chrome = chrome.at("runs");
    let Ok(id) = id.parse::<TaskId>() else {
        return error_page(&chrome, StatusCode::NOT_FOUND, "No such run.");
    };
    let now = console.queue.clock().now();
    match console.queue.iteration(id).await {
        Ok(it) => render(&RunsPage {
            runs: vec![RunRow::of(&it, now)],
            single: true,
            chrome,
        }),
        Err(e) => store_error(&chrome, &e),
    }
}
