//! The outcome writer: records finished attempts in batches, and never lets one outcome
//! the store refuses hold up the others.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;

use super::exec::Exec;
use super::leases::InFlight;
use super::WorkerStats;
use crate::store::{ClaimedTask, Finish, Outcome, StoreError};
use crate::time::Timestamp;

/// Hands a claimed task back to the outcome writer as released (pending again at once, the
/// attempt not counted), waiting at most `limit` for room.
pub(super) async fn release(
    tx: &mpsc::Sender<Pending>,
    task: Arc<ClaimedTask>,
    started_at: Timestamp,
    limit: Duration,
) {
    let finish = Finish {
        lease: task.lease,
        outcome: Outcome::Release,
        started_at,
    };
    let _ = tokio::time::timeout(limit, tx.send((finish, task))).await;
}

/// An attempt's outcome on its way to the store, with its claim (shared with the task's
/// in-flight entry; only its name is read here, for logs).
pub(super) type Pending = (Finish, Arc<ClaimedTask>);

/// The outcome writer, restarted when it panics (a panic must not end it silently for the
/// life of the worker; the outcomes of the batch it held run again when their leases lapse).
pub(super) async fn outcome_writer(
    exec: Exec,
    inflight: InFlight,
    mut rx: mpsc::Receiver<Pending>,
    stats: Arc<WorkerStats>,
    give_up_after: Duration,
) {
    loop {
        let run = finisher(&exec, &inflight, &mut rx, &stats, give_up_after);
        match AssertUnwindSafe(run).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => tracing::error!(
                panic = %super::exec::panic_message(&panic),
                "the worker's outcome writer panicked; restarting it (the outcomes it held run again when their leases lapse)"
            ),
        }
    }
}

/// Records outcomes in batches: everything waiting in the channel goes in one call.
///
/// A batch the store refuses is not retried as a whole forever: each outcome is then
/// written alone, so one outcome the store cannot take never holds up the others, and
/// those that still fail are retried with backoff for up to `give_up_after` (two leases;
/// the heartbeat renews the leases of tasks whose outcome waits, for up to three). An
/// outcome given up is logged; its task runs again when its lease lapses (at least once).
///
/// Each `Store::finish` call is bounded by a quarter of `give_up_after` (half a lease), so
/// a call that never answers (a half-open connection) cannot stall the writer, and with it
/// the worker, for good.
///
/// Until a batch is recorded (or given up), the leases of its tasks stay in `inflight` and
/// are renewed; then they are removed.
async fn finisher(
    exec: &Exec,
    inflight: &InFlight,
    rx: &mut mpsc::Receiver<Pending>,
    stats: &WorkerStats,
    give_up_after: Duration,
) {
    // One buffer for the life of the writer: a batch costs no allocation of its own.
    let mut batch: Vec<Pending> = Vec::new();
    while rx.recv_many(&mut batch, FINISH_BATCH).await > 0 {
        record(exec, inflight, &batch, stats, give_up_after).await;
        inflight.remove_all(batch.iter().map(|(f, _)| f.lease));
        batch.clear();
    }
}

/// The most outcomes one `Store::finish` call records.
pub(super) const FINISH_BATCH: usize = 512;

/// Writes one batch of outcomes; see [`finisher`].
async fn record(
    exec: &Exec,
    inflight: &InFlight,
    batch: &[Pending],
    stats: &WorkerStats,
    give_up_after: Duration,
) {
    let give_up_at = tokio::time::Instant::now() + give_up_after;
    let bound = give_up_after / 4;
    let mut backoff = Duration::from_millis(50);
    // Copied only when a write fails and what is left must be retried.
    let mut pending = std::borrow::Cow::Borrowed(batch);
    loop {
        let (error, hung) = match write(exec, inflight, &pending, stats, bound).await {
            Ok(()) => return,
            Err(e) => e,
        };
        // A call that did not answer says nothing about one outcome: writing each alone
        // would only wait once per outcome.
        if pending.len() > 1 && !hung {
            // One outcome may be what the store refuses: write each alone, keep the failures.
            let mut failed = Vec::new();
            for p in pending.iter() {
                if write(exec, inflight, std::slice::from_ref(p), stats, bound)
                    .await
                    .is_err()
                {
                    failed.push(p.clone());
                }
            }
            pending = std::borrow::Cow::Owned(failed);
            if pending.is_empty() {
                return;
            }
        }
        if tokio::time::Instant::now() + backoff > give_up_at {
            for (f, task) in pending.iter() {
                tracing::error!(
                    id = %f.lease.id, task = %task.task, error = %error,
                    "could not record this attempt's outcome in time; giving up: the task runs again when its lease lapses"
                );
            }
            return;
        }
        tracing::warn!(error = %error, outcomes = pending.len(), retry_in = ?backoff, "recording outcomes failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One `Store::finish` call, bounded by `bound`; counts what it recorded. On failure, the
/// error and whether the call timed out.
async fn write(
    exec: &Exec,
    inflight: &InFlight,
    pending: &[Pending],
    stats: &WorkerStats,
    bound: Duration,
) -> Result<(), (StoreError, bool)> {
    let finishes: Vec<Finish> = pending.iter().map(|(f, _)| f.clone()).collect();
    let call = exec.store.finish(finishes, &exec.worker, exec.clock.now());
    let results = match tokio::time::timeout(bound, call).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err((e, false)),
        Err(_) => {
            let e = StoreError::Backend(format!(
                "recording outcomes did not answer within {bound:?}"
            ));
            return Err((e, true));
        }
    };
    for ((f, task), r) in pending.iter().zip(results) {
        match r {
            // The cancel was counted when it was stored (`Queue::cancel`): the store recorded
            // this attempt as cancelled, not as its outcome says.
            Ok(()) if inflight.cancel_requested(f.lease) => {
                stats
                    .cancelled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(()) => {
                stats.count(&f.outcome);
                crate::metrics::recorded(&task.task, &task.queue, &f.outcome);
            }
            // A step stopped by a cancel: the cancel ended it already, as it should.
            Err(e @ StoreError::LeaseLost(_)) if f.outcome == Outcome::Stopped => {
                tracing::debug!(id = %f.lease.id, error = %e, "stopped step: its run had ended")
            }
            Err(e) => tracing::warn!(id = %f.lease.id, error = %e, "outcome not recorded"),
        }
    }
    Ok(())
}
