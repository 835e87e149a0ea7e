//! Running one claimed task to its outcome: the deadlines, the panic guard, and the
//! questions the retry policy ([`crate::policy`]) answers.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;

use crate::error::TaskError;
use crate::policy;
use crate::registry::Registry;
use crate::store::{ClaimedTask, Outcome, Store};
use crate::task::{tokio_util_cancel::Flag, Context, ContextInner, State};
use crate::time::{Clock, Timestamp};

/// What the worker and the harness need to run one claimed task.
#[derive(Clone)]
pub(crate) struct Exec {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub state: Arc<State>,
    pub registry: Arc<Registry>,
    pub worker: String,
    pub deadline_grace: Duration,
    /// Task names claimed that no registered task has, warned about once each.
    pub unknown: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Exec {
    /// Runs one claimed task to its outcome: never panics, never returns early without one.
    /// `payload` is the claim's payload, moved out of `claimed` (whose own is not read):
    /// the task's code takes it by value, so it is not copied. `started_at` is when the
    /// attempt began, on this clock (the caller records it with the outcome).
    /// `cancel` tells the task to stop (`ctx.is_cancelled()`); `progressed` is set when an
    /// iterative step checkpoints (the lease renewal reads it when it gives up a task).
    pub(crate) async fn run(
        &self,
        claimed: &ClaimedTask,
        payload: serde_json::Value,
        started_at: Timestamp,
        cancel: Flag,
        progressed: Flag,
    ) -> Outcome {
        if let Some(reason) = &claimed.decode_error {
            return policy::undecodable(reason);
        }
        let now = started_at;
        let Some(def) = self.registry.get(&claimed.task) else {
            let first = self
                .unknown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(claimed.task.clone());
            if first {
                tracing::warn!(
                    worker = %self.worker, task = %claimed.task,
                    "claimed a task named `{}`, which this binary does not register: it is retried with backoff until a worker that knows it runs it (a rolling deploy), and goes dead if none does",
                    claimed.task
                );
            }
            return policy::unknown_task(claimed, &self.worker, now);
        };
        if let Some(outcome) = policy::before_run(&def.options, claimed, now) {
            return outcome;
        }
        let deadline = now.add(def.options.timeout);
        let ctx = Context {
            inner: Arc::new(ContextInner {
                id: claimed.lease.id,
                task: def.name,
                queue: claimed.queue.clone(),
                attempt: claimed.attempt,
                started_at: now,
                deadline,
                clock: self.clock.clone(),
                state: self.state.clone(),
                store: self.store.clone(),
                lease: claimed.lease,
                kind: def.kind,
                iteration: claimed.iteration.clone(),
                cancelled: cancel,
                progressed: progressed.clone(),
            }),
        };
        // Decoding runs user code (a custom `Deserialize`): a panic there ends the attempt
        // like a panic in the body (retried, then dead), instead of escaping the guard.
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| (def.handler)(ctx, payload))) {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return policy::undecodable(e),
            Err(panic) => {
                let error = TaskError::retry(format!(
                    "panicked while decoding the arguments: {}",
                    panic_message(&panic)
                ));
                return policy::decide_attempt(
                    &def.options,
                    claimed,
                    Err(error),
                    false,
                    self.clock.now(),
                );
            }
        };
        let hard = def.options.timeout + self.deadline_grace;
        let hard_at = tokio::time::Instant::now() + hard;
        let mut fut = std::pin::pin!(AssertUnwindSafe(fut).catch_unwind());
        // A task that finishes in its first poll needs no timer: the hard deadline's timer
        // is made only if it waits (counted from before that first poll all the same).
        let ended = match futures::poll!(fut.as_mut()) {
            std::task::Poll::Ready(r) => Ok(r),
            std::task::Poll::Pending => tokio::time::timeout_at(hard_at, fut).await,
        };
        let result = match ended {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => Err(TaskError::retry(format!("panicked: {}", panic_message(&panic)))),
            Err(_) => Err(TaskError::retry(format!(
                "hard deadline exceeded: the attempt ran past its {:?} timeout and {:?} of grace, and was cancelled",
                def.options.timeout, self.deadline_grace
            ))),
        };
        policy::decide_attempt(
            &def.options,
            claimed,
            result,
            progressed.is_set(),
            self.clock.now(),
        )
    }
}

pub(super) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
