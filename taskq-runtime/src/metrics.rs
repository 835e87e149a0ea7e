//! Metrics: what taskq emits through the [`metrics`](https://docs.rs/metrics) facade, and
//! (with the `prometheus` feature) a Prometheus recorder to serve them.
//!
//! taskq only emits; the application chooses the recorder (a Prometheus exporter, StatsD,
//! OpenTelemetry, ...) by installing it once at start. Without a recorder every emission
//! is a no-op that costs a few nanoseconds.
//!
//! Every metric, its type, labels and unit (the same table is in `docs/OPERATIONS.md`):
//!
//! | name | type | labels | unit | counts |
//! |---|---|---|---|---|
//! | [`taskq_tasks_started_total`](STARTED) | counter | `task`, `queue` | tasks | tasks stored by a start ([`Queue::start_many`](crate::Queue::start_many), [`TaskBuilder::start`](crate::TaskBuilder::start), `start_in`); a start refused (a taken unique name, an error) is not counted |
//! | [`taskq_tasks_claimed_total`](CLAIMED) | counter | `task`, `queue` | tasks | tasks a worker claimed (each attempt, lapsed leases taken back included) |
//! | [`taskq_tasks_done_total`](DONE) | counter | `task`, `queue` | attempts | attempts recorded done (an iterative step that continued counts here) |
//! | [`taskq_tasks_failed_total`](FAILED) | counter | `task`, `queue` | attempts | attempts recorded failed: a fatal error, never retried |
//! | [`taskq_tasks_retried_total`](RETRIED) | counter | `task`, `queue` | attempts | attempts recorded with a retry after a backoff |
//! | [`taskq_tasks_dead_total`](DEAD) | counter | `task`, `queue` | attempts | attempts that sent their task to dead (the retry policy spent, or a row that does not decode) |
//! | [`taskq_tasks_cancelled_total`](CANCELLED) | counter | `task`, `queue` | tasks | tasks cancelled by [`Queue::cancel`](crate::Queue::cancel) (pending or running: counted once when the cancel is stored, since it decides the task's end) and iterative runs cancelled by it or [`Queue::cancel_iteration`](crate::Queue::cancel_iteration) (one per run), and steps recorded as stopped because their run had ended |
//! | [`taskq_attempt_duration_seconds`](ATTEMPT_DURATION) | histogram | `task`, `queue` | seconds | how long each attempt ran, from the start of the attempt to its outcome (deadlines, panics and shutdown releases included) |
//! | [`taskq_start_to_run_seconds`](START_TO_RUN) | histogram | `task`, `queue` | seconds | from when a claimed task became due (its `run_at`: the start, its delay or ETA, or a retry's backoff) to its claim |
//! | [`taskq_queue_depth`](QUEUE_DEPTH) | gauge | `queue`, `state` | tasks | tasks in each queue and state (`pending`, `running`, `done`, `failed`, `dead`, `cancelled`), as [`Queue::queues`](crate::Queue::queues) counts them |
//!
//! Where each is emitted, once whatever the store: starts in [`crate::queue`] after the
//! store accepted them; claims, attempt durations and start-to-run latencies by the
//! worker's claim loop and attempt; outcomes by the worker's outcome writer once the
//! store has recorded them (an outcome the store refused, e.g. a lease lost, is not
//! counted), from the [`Outcome`] that [`crate::policy`] decided. The test
//! [`Harness`](crate::testing::Harness) emits none of them.
//!
//! The queue-depth gauge is set by each worker every
//! [`WorkerBuilder::queue_depth_interval`](crate::WorkerBuilder::queue_depth_interval)
//! (default 15 s; one [`Store::queues`](crate::store::Store::queues) call, which reads kept
//! counts, not rows), and by [`record_queue_depth`], which a scrape handler may call to
//! be exact at the moment of the scrape. Several workers set the same values.
//!
//! Label values are task names and queue names as stored: their number is the number of
//! task types and queues the application declares, never one per task.

use std::time::Duration;

use crate::store::{Outcome, QueueInfo, StoreError, TaskState};

/// Counter: tasks stored by a start. Labels `task`, `queue`.
pub const STARTED: &str = "taskq_tasks_started_total";
/// Counter: tasks claimed by a worker. Labels `task`, `queue`.
pub const CLAIMED: &str = "taskq_tasks_claimed_total";
/// Counter: attempts recorded done. Labels `task`, `queue`.
pub const DONE: &str = "taskq_tasks_done_total";
/// Counter: attempts recorded failed (fatal). Labels `task`, `queue`.
pub const FAILED: &str = "taskq_tasks_failed_total";
/// Counter: attempts recorded as retried after a backoff. Labels `task`, `queue`.
pub const RETRIED: &str = "taskq_tasks_retried_total";
/// Counter: attempts that sent their task to dead. Labels `task`, `queue`.
pub const DEAD: &str = "taskq_tasks_dead_total";
/// Counter: tasks and runs cancelled by the management API, and steps stopped because
/// their run had ended. Labels `task`, `queue`.
pub const CANCELLED: &str = "taskq_tasks_cancelled_total";
/// Histogram, seconds: each attempt's duration. Labels `task`, `queue`.
pub const ATTEMPT_DURATION: &str = "taskq_attempt_duration_seconds";
/// Histogram, seconds: from a task's due time to its claim. Labels `task`, `queue`.
pub const START_TO_RUN: &str = "taskq_start_to_run_seconds";
/// Gauge, tasks: tasks per queue and state. Labels `queue`, `state`.
pub const QUEUE_DEPTH: &str = "taskq_queue_depth";

/// Every metric taskq emits, with its description (what a recorder shows as `# HELP`).
pub const ALL: [(&str, &str); 10] = [
    (STARTED, "Tasks stored by a start."),
    (CLAIMED, "Tasks claimed by a worker (each attempt)."),
    (DONE, "Attempts recorded done."),
    (
        FAILED,
        "Attempts recorded failed (a fatal error, not retried).",
    ),
    (RETRIED, "Attempts recorded with a retry after a backoff."),
    (DEAD, "Attempts that sent their task to dead."),
    (
        CANCELLED,
        "Tasks and iterative runs cancelled, and steps stopped because their run had ended.",
    ),
    (
        ATTEMPT_DURATION,
        "Duration of each attempt, from its start to its outcome.",
    ),
    (
        START_TO_RUN,
        "Time from a task's due time (run_at) to its claim by a worker.",
    ),
    (QUEUE_DEPTH, "Tasks in each queue and state."),
];

/// Registers the descriptions and units of every metric with the installed recorder (so
/// that an exporter prints `# HELP` lines). Harmless to call more than once; call it after
/// installing the recorder. [`install_prometheus`] calls it.
pub fn describe() {
    for (name, help) in ALL {
        match name {
            ATTEMPT_DURATION | START_TO_RUN => {
                ::metrics::describe_histogram!(name, ::metrics::Unit::Seconds, help)
            }
            QUEUE_DEPTH => ::metrics::describe_gauge!(name, ::metrics::Unit::Count, help),
            _ => ::metrics::describe_counter!(name, ::metrics::Unit::Count, help),
        }
    }
}

/// Counts tasks stored by a start: one per `(task, queue)` pair given.
pub(crate) fn started<'a>(tasks: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (task, queue) in tasks {
        counter(STARTED, task, queue, 1);
    }
}

/// Counts one claimed task and its start-to-run latency (`late`: from its due time).
pub(crate) fn claimed(task: &str, queue: &str, late: Duration) {
    counter(CLAIMED, task, queue, 1);
    ::metrics::histogram!(START_TO_RUN, "task" => task.to_owned(), "queue" => queue.to_owned())
        .record(late.as_secs_f64());
}

/// Records how long one attempt ran.
pub(crate) fn attempt_ran(task: &str, queue: &str, took: Duration) {
    ::metrics::histogram!(ATTEMPT_DURATION, "task" => task.to_owned(), "queue" => queue.to_owned())
        .record(took.as_secs_f64());
}

/// Counts an outcome the store has recorded. A release (graceful shutdown) is not an
/// outcome of the task's code and is not counted.
pub(crate) fn recorded(task: &str, queue: &str, outcome: &Outcome) {
    let name = match outcome {
        Outcome::Done | Outcome::Continue { .. } => DONE,
        Outcome::Failed { .. } => FAILED,
        Outcome::Retry { .. } => RETRIED,
        Outcome::Dead { .. } => DEAD,
        Outcome::Stopped => CANCELLED,
        Outcome::Release => return,
    };
    counter(name, task, queue, 1);
}

/// Counts one task or run cancelled by the management API.
pub(crate) fn cancelled(task: &str, queue: &str) {
    counter(CANCELLED, task, queue, 1);
}

fn counter(name: &'static str, task: &str, queue: &str, n: u64) {
    ::metrics::counter!(name, "task" => task.to_owned(), "queue" => queue.to_owned()).increment(n);
}

/// Sets the [`QUEUE_DEPTH`] gauge from queues as [`Queue::queues`](crate::Queue::queues)
/// returns them: every state of every queue, zero included (so a state that emptied
/// shows 0 rather than its last value).
pub fn set_queue_depth(queues: &[QueueInfo]) {
    for q in queues {
        for state in TaskState::ALL {
            ::metrics::gauge!(QUEUE_DEPTH, "queue" => q.name.clone(), "state" => state.as_str())
                .set(q.count(state) as f64);
        }
    }
}

/// Reads the queues' counts (one [`Store::queues`](crate::store::Store::queues) call) and
/// sets the [`QUEUE_DEPTH`] gauge: what a `/metrics` handler calls before it renders, to
/// be exact at the scrape. Errors are the store's.
pub async fn record_queue_depth(queue: &crate::Queue) -> Result<(), StoreError> {
    set_queue_depth(&queue.queues().await?);
    Ok(())
}

#[cfg(feature = "prometheus")]
pub use self::prometheus::{install_prometheus, scrape, PrometheusHandle};

#[cfg(feature = "prometheus")]
mod prometheus {
    /// The handle [`install_prometheus`] returns (re-exported from
    /// `metrics-exporter-prometheus`): [`render`](PrometheusHandle::render) gives the text
    /// exposition; clones share one recorder.
    pub use metrics_exporter_prometheus::PrometheusHandle;

    /// What a `/metrics` route answers (the console's, or an application's own): sets the
    /// queue-depth gauge from `queue`'s counts ([`super::record_queue_depth`], so depths
    /// are exact at the scrape; a store error is logged at warn level and the last values
    /// are kept), then renders every metric of the recorder in Prometheus's text format
    /// (content type `text/plain; version=0.0.4`).
    pub async fn scrape(handle: &PrometheusHandle, queue: &crate::Queue) -> String {
        if let Err(e) = super::record_queue_depth(queue).await {
            tracing::warn!(error = %e, "reading queue counts for /metrics failed; the queue-depth gauge keeps its last values");
        }
        handle.render()
    }

    /// How often the recorder's upkeep runs (the exporter's own default period).
    const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    /// Installs a Prometheus recorder as the process's global `metrics` recorder,
    /// registers every taskq metric's description ([`super::describe`]), and returns the
    /// handle whose [`render`](metrics_exporter_prometheus::PrometheusHandle::render)
    /// gives the text exposition format (what a `/metrics` route answers, content type
    /// `text/plain; version=0.0.4`). Histograms are rendered as summaries (quantiles 0,
    /// 0.5, 0.9, 0.95, 0.99, 0.999, 1 and `_sum`/`_count`), the exporter's default.
    ///
    /// It starts no HTTP listener; it starts one thread, `taskq-metrics-upkeep`, that runs
    /// the recorder's upkeep every 5 s (draining histogram samples into their summaries,
    /// which the exporter leaves to its caller with this way of installing it). Call it
    /// once per process: a second call, or a call
    /// after another recorder was installed, fails with
    /// [`BuildError::FailedToSetGlobalRecorder`](metrics_exporter_prometheus::BuildError).
    /// Needs the `prometheus` cargo feature. For other settings (buckets, global labels)
    /// build your own `metrics_exporter_prometheus::PrometheusBuilder` and call
    /// [`super::describe`] after installing it.
    pub fn install_prometheus() -> Result<
        metrics_exporter_prometheus::PrometheusHandle,
        metrics_exporter_prometheus::BuildError,
    > {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
        super::describe();
        // The recorder drains histogram samples only in its upkeep, which a recorder
        // installed this way never runs by itself: without it, samples would pile up
        // between rare scrapes. A thread, not a tokio task, so that it works whatever the
        // caller's runtime; the recorder is the process's for good, and so is the thread.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("taskq-metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the Prometheus recorder's upkeep thread; histogram samples are drained only when rendered");
        }
        Ok(handle)
    }
}
