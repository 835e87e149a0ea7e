//! Lease renewal: the tasks this worker runs, keyed by their lease, and the heartbeat that
//! renews those leases or stops the tasks whose lease it cannot hold.
//!
//! The rules, in one place:
//! - One local execution per task: claiming a task this worker still runs (its own lease
//!   lapsed after a pause) stops the old execution first; every removal names the lease
//!   (task id *and* fencing token), so handling a lost lease never touches a newer attempt.
//! - Leases are renewed every quarter of the lease, each call bounded by a quarter and run
//!   beside the checks. A task whose lease this worker could not renew is told
//!   (`ctx.is_cancelled()`) once half the lease is left, and stopped once a quarter is
//!   left: before another worker may claim it, never beside it.
//! - No lease is renewed past the task's hard deadline plus one lease: a task that blocks
//!   its thread (and so never reaches the hard deadline's check) is given up, and its
//!   attempt is recorded as failed with that reason ([`policy::blocked`]: retried, then
//!   dead), so people see why and the task runs again after its backoff.
//! - A finished attempt keeps its lease renewed until the outcome writer has recorded its
//!   outcome (or given up on it): an outcome waiting behind a slow store must not let the
//!   lease lapse and the task run again elsewhere.
//! - A task a person cancelled ([`Store::cancel`](crate::store::Store::cancel)) is
//!   reported by a renewal ([`Store::renew`](crate::store::Store::renew)); the store can
//!   also wake the heartbeat to renew at once ([`Store::wait_for_cancel`](crate::store::Store::wait_for_cancel)).
//!   The task is told (`ctx.is_cancelled()`) and its lease still renewed; if it has not
//!   returned after the cancel grace, it is stopped and its attempt recorded with
//!   [`policy::stopped_after_cancel`] (the store records any outcome of a cancelled task
//!   as cancelled, never a retry).
//! - A task claimed with less than half its lease left (a claim that answered slowly) asks
//!   for a renewal at once instead of waiting for the next quarter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::exec::Exec;
use super::outcomes::Pending;
use crate::policy;
use crate::store::{ClaimedTask, Finish, Lease, TaskId};
use crate::task::tokio_util_cancel::Flag;
use crate::time::Timestamp;

/// One task this worker runs.
pub(super) struct Running {
    /// The lease it runs under.
    pub lease: Lease,
    /// Set to tell the task to stop (`ctx.is_cancelled()`).
    pub cancel: Flag,
    /// Set when an iterative step checkpointed during the attempt (its attempt count was
    /// reset), for the retry policy.
    pub progressed: Flag,
    /// Drops the task's future.
    pub abort: Option<tokio::task::AbortHandle>,
    /// What was claimed (to release it at shutdown), shared with the task's future; its
    /// payload moved to the task's code, so it is `null` here.
    pub claimed: Arc<ClaimedTask>,
    /// When the attempt began, on the worker's clock.
    pub started_at: Timestamp,
    /// Until when the lease surely holds, as far as this worker knows: the last renewal's
    /// start plus the lease.
    pub held_until: Instant,
    /// No renewal after this: the hard deadline plus one lease.
    pub renew_until: Instant,
    /// The attempt has ended and its outcome waits to be recorded: its lease is still
    /// renewed, but there is nothing left to tell, stop or release.
    pub finishing: bool,
    /// When this worker learnt that a person cancelled the task: it is stopped a cancel
    /// grace later if it has not returned.
    pub cancel_requested_at: Option<Instant>,
}

impl Running {
    fn stop(&self) {
        self.cancel.set();
        if let Some(a) = &self.abort {
            a.abort();
        }
    }
}

/// The tasks this worker runs (or whose outcome it still records), keyed by task id, each
/// under one lease.
#[derive(Clone, Default)]
pub(super) struct InFlight {
    /// Hashed with foldhash, not SipHash: the keys are ids the store hands out, and the
    /// map is looked up four times per task.
    tasks: Arc<Mutex<Tasks>>,
    /// Wakes the heartbeat to renew at once (a task arrived with little of its lease left).
    urgent: Arc<tokio::sync::Notify>,
    /// Wakes the heartbeat to plan its next check again: a renewal told a task of its
    /// cancel, to be stopped when its grace ends.
    replan: Arc<tokio::sync::Notify>,
}

/// The in-flight map.
type Tasks = HashMap<TaskId, Running, foldhash::fast::RandomState>;

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a task and starts it with `spawn`, which returns the handle that stops it; an
    /// older execution of the same task here (whose lease lapsed) is stopped first: one
    /// local execution per task. `spawn` runs under the lock, so the task cannot report
    /// its end ([`InFlight::finished`]) before its entry, abort handle included, is in
    /// place. A task with less than `lease / 2` of its lease left wakes the heartbeat to
    /// renew it at once.
    pub fn start(
        &self,
        mut r: Running,
        lease: Duration,
        spawn: impl FnOnce() -> tokio::task::AbortHandle,
    ) {
        let short = r.held_until.saturating_duration_since(Instant::now()) < lease / 2;
        {
            let mut g = self.lock();
            if let Some(old) = g.remove(&r.lease.id) {
                if !old.finishing {
                    tracing::warn!(id = %old.lease.id, "claimed a task this worker still ran (its lease had lapsed); stopping the older execution");
                    old.stop();
                }
            }
            r.abort = Some(spawn());
            g.insert(r.lease.id, r);
        }
        if short {
            self.urgent.notify_one();
        }
    }

    /// Marks the execution under `lease` as ended, its outcome on the way to the store:
    /// its lease is renewed until [`InFlight::remove`], for at most three leases of
    /// `lease_time` (the outcome writer gives up within two). Whether it was still there
    /// (not stopped or replaced by a newer claim).
    pub fn finished(&self, lease: Lease, lease_time: Duration) -> bool {
        match self.lock().get_mut(&lease.id) {
            Some(r) if r.lease == lease && !r.finishing => {
                r.finishing = true;
                r.abort = None;
                r.renew_until = Instant::now() + lease_time * 3;
                true
            }
            _ => false,
        }
    }

    /// Removes the execution under `lease` (not a newer one of the same task); whether it
    /// was there.
    pub fn remove(&self, lease: Lease) -> bool {
        let mut g = self.lock();
        if g.get(&lease.id).map(|r| r.lease) == Some(lease) {
            g.remove(&lease.id);
            true
        } else {
            false
        }
    }

    /// Removes the executions under `leases` (not newer ones of the same tasks), under one
    /// lock: what the outcome writer does after each batch.
    pub fn remove_all(&self, leases: impl IntoIterator<Item = Lease>) {
        let mut g = self.lock();
        for lease in leases {
            if g.get(&lease.id).map(|r| r.lease) == Some(lease) {
                g.remove(&lease.id);
            }
        }
    }

    /// How many tasks run (not counting ended ones whose outcome waits to be recorded).
    pub fn len(&self) -> usize {
        self.lock().values().filter(|r| !r.finishing).count()
    }

    /// Tells every task to stop (`ctx.is_cancelled()`), without stopping it yet.
    pub fn cancel_all(&self) {
        for r in self.lock().values() {
            r.cancel.set();
        }
    }

    /// Takes every running task out, for shutdown; ended ones stay until their outcome is
    /// recorded (they already have one, so they must not be released).
    pub fn drain(&self) -> Vec<Running> {
        let mut g = self.lock();
        let running: Vec<TaskId> = g
            .iter()
            .filter(|(_, r)| !r.finishing)
            .map(|(id, _)| *id)
            .collect();
        running.iter().filter_map(|id| g.remove(id)).collect()
    }

    /// Whether the execution under `lease` was told of a cancel of its task.
    pub fn cancel_requested(&self, lease: Lease) -> bool {
        self.lock()
            .get(&lease.id)
            .is_some_and(|r| r.lease == lease && r.cancel_requested_at.is_some())
    }

    /// Takes out the execution under `lease` (not a newer one of the same task), if it is
    /// still there.
    fn take(&self, lease: Lease) -> Option<Running> {
        let mut g = self.lock();
        match g.get(&lease.id) {
            Some(r) if r.lease == lease => g.remove(&lease.id),
            _ => None,
        }
    }

    /// Stops and removes the execution under `lease`, if it is still there.
    fn stop(&self, lease: Lease, why: &str) {
        match self.take(lease) {
            Some(r) if r.finishing => {
                tracing::warn!(id = %lease.id, task = %r.claimed.task, "{why}; its outcome may not be recorded (the task then runs again)");
            }
            Some(r) => {
                tracing::warn!(id = %lease.id, task = %r.claimed.task, "{why}; stopping it here");
                r.stop();
            }
            None => {}
        }
    }

    /// Gives up the execution under `lease`, still running past its hard deadline plus one
    /// lease (it blocks its thread): stops it and hands its outcome ([`policy::blocked`]) to
    /// the outcome writer, if the worker still has one.
    fn give_up_blocked(
        &self,
        lease: Lease,
        exec: &Exec,
        done: &mpsc::WeakSender<Pending>,
        lease_len: Duration,
    ) {
        let Some(r) = self.take(lease) else { return };
        r.stop();
        let options = exec
            .registry
            .get(&r.claimed.task)
            .map(|d| d.options)
            .unwrap_or(crate::task::TaskOptions::DEFAULT);
        let outcome = policy::blocked(
            &options,
            &r.claimed,
            r.progressed.is_set(),
            exec.deadline_grace,
            lease_len,
            exec.clock.now(),
        );
        tracing::warn!(
            id = %lease.id, task = %r.claimed.task,
            "the task ran past its hard deadline and a lease without returning to the runtime (is it blocking its thread?); giving it up: {}",
            outcome.error().unwrap_or_default()
        );
        // The execution is out of in-flight now, so it reports nothing if it ever returns:
        // this is the attempt's one outcome. Sent from a task of its own, since the heartbeat must not
        // wait on a full channel; a worker shutting down (no sender left) lets the lease lapse.
        if let Some(tx) = done.upgrade() {
            let finish = Finish {
                lease,
                outcome,
                started_at: r.started_at,
            };
            tokio::spawn(async move {
                let _ = tx.send((finish, r.claimed)).await;
            });
        }
    }
}

impl InFlight {
    /// Stops the execution under `lease`, told of its task's cancel a `grace` ago and still
    /// running, and hands its outcome ([`policy::stopped_after_cancel`]) to the outcome
    /// writer, if the worker still has one. Its lease stays renewed until the outcome is
    /// recorded (as cancelled: the store decides that from the task's mark).
    fn stop_cancelled(
        &self,
        lease: Lease,
        done: &mpsc::WeakSender<Pending>,
        grace: Duration,
        lease_len: Duration,
    ) {
        let Some(mut r) = self.take(lease) else {
            return;
        };
        if r.finishing {
            // It returned meanwhile: its own outcome is on its way.
            self.lock().insert(lease.id, r);
            return;
        }
        if let Some(a) = r.abort.take() {
            a.abort();
        }
        tracing::info!(id = %lease.id, task = %r.claimed.task, "the task was cancelled and did not return within the cancel grace of {grace:?}; stopping it");
        let Some(tx) = done.upgrade() else { return };
        let finish = Finish {
            lease,
            outcome: policy::stopped_after_cancel(grace),
            started_at: r.started_at,
        };
        // Kept in flight (ended) so that its lease is renewed until the writer records it.
        r.finishing = true;
        r.renew_until = Instant::now() + lease_len * 3;
        let claimed = r.claimed.clone();
        self.lock().insert(lease.id, r);
        tokio::spawn(async move {
            let _ = tx.send((finish, claimed)).await;
        });
    }
}

/// Renews the leases of every running task, tells and stops those whose lease cannot be
/// held. Runs until the worker stops; see the [module docs](self).
///
/// The renewal call runs beside the checks (a hung call must not delay them): a tick every
/// eighth of the lease checks what is held, a renewal every quarter, bounded by a quarter.
///
/// `done` reaches the outcome writer, for the attempts given up because they block their
/// thread; it is weak so that the writer still ends when the worker drops its sender.
pub(super) async fn heartbeat(
    exec: Exec,
    inflight: InFlight,
    lease: Duration,
    cancel_grace: Duration,
    done: mpsc::WeakSender<Pending>,
) {
    let tick = (lease / 8).max(Duration::from_millis(4));
    let renew_every = lease / 4;
    let mut last_renewal = Instant::now();
    let mut renewal: Option<tokio::task::JoinHandle<()>> = None;
    // An urgent renewal asked for while one was still running is done after it.
    let mut want_urgent = false;
    loop {
        // A cancelled task is stopped when its grace ends, not at the next tick after.
        let wake_at = inflight
            .lock()
            .values()
            .filter(|r| !r.finishing)
            .filter_map(|r| r.cancel_requested_at.map(|at| at + cancel_grace))
            .fold(Instant::now() + tick, |a, b| a.min(b));
        let urgent = tokio::select! {
            _ = tokio::time::sleep_until(wake_at) => false,
            _ = inflight.urgent.notified() => true,
            // A cancel was stored: renew now to learn which task it is about.
            _ = exec.store.wait_for_cancel() => true,
            _ = inflight.replan.notified() => false,
        };
        let now = Instant::now();
        // Stop what can no longer be held (two ticks before it lapses), tell what may soon
        // not be.
        let mut to_stop = Vec::new();
        let mut blocked = Vec::new();
        let mut unrecorded = Vec::new();
        let mut cancelled = Vec::new();
        for r in inflight.lock().values() {
            let left = r.held_until.saturating_duration_since(now);
            if !r.finishing
                && r.cancel_requested_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= cancel_grace)
            {
                cancelled.push(r.lease);
            } else if left <= lease / 4 {
                to_stop.push(r.lease);
            } else if now >= r.renew_until {
                if r.finishing {
                    unrecorded.push(r.lease);
                } else {
                    blocked.push(r.lease);
                }
            } else if left <= lease / 2 && !r.finishing {
                r.cancel.set();
            }
        }
        for l in to_stop {
            inflight.stop(l, "its lease could not be renewed and is about to lapse");
        }
        for l in unrecorded {
            inflight.stop(
                l,
                "its outcome was not recorded within three leases; its lease is no longer renewed",
            );
        }
        for l in blocked {
            inflight.give_up_blocked(l, &exec, &done, lease);
        }
        for l in cancelled {
            inflight.stop_cancelled(l, &done, cancel_grace, lease);
        }
        want_urgent |= urgent;
        if (!want_urgent && now.duration_since(last_renewal) < renew_every)
            || renewal.as_ref().is_some_and(|r| !r.is_finished())
        {
            continue;
        }
        want_urgent = false;
        last_renewal = now;
        let leases: Vec<Lease> = inflight.lock().values().map(|r| r.lease).collect();
        if leases.is_empty() {
            continue;
        }
        renewal = Some(tokio::spawn(renew(
            exec.clone(),
            inflight.clone(),
            leases,
            lease,
            renew_every,
        )));
    }
}

/// One bounded renewal of `leases`: extends what the store kept, stops what it lost.
async fn renew(
    exec: Exec,
    inflight: InFlight,
    leases: Vec<Lease>,
    lease: Duration,
    bound: Duration,
) {
    let started = Instant::now();
    let until = exec.clock.now().add(lease);
    let call = exec.store.renew(&leases, &exec.worker, until);
    match tokio::time::timeout(bound, call).await {
        Ok(Ok(renewal)) => {
            for id in &renewal.cancel_requested {
                if let Some(r) = inflight.lock().get_mut(id) {
                    if leases.contains(&r.lease) && r.cancel_requested_at.is_none() && !r.finishing
                    {
                        tracing::info!(id = %id, task = %r.claimed.task, "the task was cancelled; telling it (ctx.is_cancelled())");
                        r.cancel_requested_at = Some(Instant::now());
                        r.cancel.set();
                    }
                }
            }
            if !renewal.cancel_requested.is_empty() {
                // After the marks are set, so the heartbeat plans with them.
                inflight.replan.notify_one();
            }
            let lost: std::collections::HashSet<TaskId> = renewal.lost.into_iter().collect();
            for l in &leases {
                if lost.contains(&l.id) {
                    inflight.stop(*l, "its lease was lost (another worker holds the task now, or it was deleted or cancelled)");
                } else if let Some(r) = inflight.lock().get_mut(&l.id) {
                    if r.lease == *l {
                        r.held_until = started + lease;
                    }
                }
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
        Err(_) => tracing::warn!(timeout = ?bound, "heartbeat did not answer in time; will retry"),
    }
}
