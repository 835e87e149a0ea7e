//! The worker's side of metrics and tracing ([`crate::metrics`], [`crate::trace`]): the
//! span of each attempt, the claim counts and latencies, and the queue-depth gauge.

use std::time::Duration;

use crate::store::{ClaimedTask, Store};
use crate::time::Timestamp;

/// The span of one attempt (`taskq.attempt`): its fields, and its OpenTelemetry parent
/// when the task was started with a trace context (a child of the starter's span).
pub(super) fn attempt_span(task: &ClaimedTask) -> tracing::Span {
    let span = tracing::info_span!(
        "taskq.attempt",
        task = %task.task,
        id = %task.lease.id,
        attempt = task.attempt,
        queue = %task.queue,
        trace_parent = tracing::field::Empty,
        outcome = tracing::field::Empty
    );
    if let Some(parent) = &task.trace {
        span.record("trace_parent", parent.as_str());
        crate::trace::attach(&span, parent);
    }
    span
}

/// Counts a claim's tasks and their start-to-run latency (from each one's due time to
/// the claim's `now`).
pub(super) fn claimed(tasks: &[ClaimedTask], now: Timestamp) {
    for t in tasks {
        crate::metrics::claimed(&t.task, &t.queue, now.since(t.run_at));
    }
}

/// Sets the queue-depth gauge every `every` from the store's counts, until dropped. A
/// failed read is logged at debug level and tried again at the next period: the gauge
/// only keeps its last values meanwhile.
pub(super) async fn queue_depth(store: &dyn Store, every: Duration) {
    loop {
        match store.queues().await {
            Ok(queues) => crate::metrics::set_queue_depth(&queues),
            Err(e) => {
                tracing::debug!(error = %e, "reading queue counts for the queue-depth gauge failed")
            }
        }
        tokio::time::sleep(every).await;
    }
}
