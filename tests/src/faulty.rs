//! A store that misbehaves on purpose, around a memory store: calls that hang, panic or
//! refuse, for the worker's fault tests.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use taskq_runtime::store::memory::MemoryStore;
use taskq_runtime::store::{
    Checkpoint, ClaimRequest, ClaimedTask, Finish, FinishedMinute, IterationInfo, Lease, NewTask,
    PruneReport, QueueConfig, QueueInfo, TaskDetail, TaskInfo, TaskQuery,
};
use taskq_runtime::{Store, StoreError, TaskId, Timestamp};

/// The faults a [`Faulty`] store injects.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every heartbeat call hangs forever.
    pub hang_heartbeat: std::sync::atomic::AtomicBool,
    /// This many heartbeat calls panic, then they work.
    pub panic_heartbeats: AtomicUsize,
    /// This many finish calls panic, then they work.
    pub panic_finishes: AtomicUsize,
    /// A finish batch holding an outcome of one of these tasks fails as a whole.
    pub refuse_finish_of: Mutex<HashSet<TaskId>>,
    /// How many finish batches were refused.
    pub refused: AtomicUsize,
    /// This many finish calls hang forever, then they work.
    pub hang_finishes: AtomicUsize,
    /// Every `next_due` call hangs forever.
    pub hang_next_due: std::sync::atomic::AtomicBool,
    /// Every claim call hangs forever.
    pub hang_claims: std::sync::atomic::AtomicBool,
    /// How many claim calls were made.
    pub claims: AtomicUsize,
    /// While set, a claim that took tasks holds its answer until [`Faults::release_claims`]:
    /// the tasks are claimed in the store (committed) but the caller has not heard yet, as
    /// with a database that committed and whose reply is on its way. The caller may stop
    /// waiting; the claim stays made.
    pub hold_claims: std::sync::atomic::AtomicBool,
    /// How many claims hold their answer right now.
    pub claims_held: AtomicUsize,
    /// Every task a claim handed out (held or not), in order.
    pub claimed: Mutex<Vec<TaskId>>,
    /// Wakes held claims.
    claim_gate: tokio::sync::Notify,
    /// Outcomes of these tasks are answered `Err(LeaseLost)` by finish, one by one, and
    /// not applied; the other outcomes of the batch are applied.
    pub lose_lease_of: Mutex<HashSet<TaskId>>,
    /// When set, `next_due` answers this instead of asking the store.
    pub next_due_lie: Mutex<Option<NextDueLie>>,
    /// While set, every finish call fails (a store that cannot take outcomes for a while).
    pub refuse_all_finishes: std::sync::atomic::AtomicBool,
    /// This many claim calls answer only after [`Faults::claim_delay_ms`], their claim made
    /// (and their leases counting) before the delay: a claim that answers slowly.
    pub slow_claims: AtomicUsize,
    /// How long a slow claim takes to answer, in milliseconds.
    pub claim_delay_ms: std::sync::atomic::AtomicU64,
    /// Tasks stored when `next_due` is next called, before it answers: work that arrives
    /// between a worker's empty claim and its idle wait, whose wake-up finds no one
    /// waiting yet.
    pub arrive_at_next_due: Mutex<Vec<NewTask>>,
    /// The `claim` (with how many tasks it took), `next_due` and `wait_for_work` calls,
    /// in order: `claim 0`, `next_due`, `wait_for_work`.
    pub calls: Mutex<Vec<String>>,
}

/// What a lying `next_due` answers ([`Faults::next_due_lie`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NextDueLie {
    /// Always this time.
    Fixed(Timestamp),
    /// Each answer `step` after the previous one, starting `step` after `from`: a due time
    /// that always moves away.
    RunsAhead {
        /// The last answer.
        from: Timestamp,
        /// How far each answer is after the previous one.
        step: Duration,
    },
}

impl Faults {
    /// Lets held claims answer, and stops holding new ones.
    pub fn release_claims(&self) {
        self.hold_claims.store(false, Ordering::SeqCst);
        self.claim_gate.notify_waiters();
    }
}

/// A memory store with [`Faults`].
#[derive(Debug, Default)]
pub struct Faulty {
    /// The store that answers when no fault applies.
    pub inner: MemoryStore,
    /// What goes wrong.
    pub faults: Faults,
}

fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl Store for Faulty {
    fn backend(&self) -> &'static str {
        "faulty"
    }
    async fn enqueue(&self, t: Vec<NewTask>, now: Timestamp) -> Result<Vec<TaskId>, StoreError> {
        self.inner.enqueue(t, now).await
    }
    async fn unique_holder(
        &self,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<(TaskId, taskq_runtime::store::TaskState)>, StoreError> {
        self.inner.unique_holder(name, now).await
    }
    async fn replace_pending(
        &self,
        name: &str,
        payload: &serde_json::Value,
        run_at: Timestamp,
    ) -> Result<Option<TaskId>, StoreError> {
        self.inner.replace_pending(name, payload, run_at).await
    }
    async fn claim(&self, r: &ClaimRequest) -> Result<Vec<ClaimedTask>, StoreError> {
        self.faults.claims.fetch_add(1, Ordering::SeqCst);
        if self.faults.hang_claims.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let claimed = self.inner.claim(r).await?;
        self.faults
            .calls
            .lock()
            .expect("lock")
            .push(format!("claim {}", claimed.len()));
        self.faults
            .claimed
            .lock()
            .expect("lock")
            .extend(claimed.iter().map(|c| c.lease.id));
        if !claimed.is_empty() && self.faults.hold_claims.load(Ordering::SeqCst) {
            self.faults.claims_held.fetch_add(1, Ordering::SeqCst);
            loop {
                // Registered before the flag is read, so a release in between is not lost.
                let gate = self.faults.claim_gate.notified();
                tokio::pin!(gate);
                gate.as_mut().enable();
                if !self.faults.hold_claims.load(Ordering::SeqCst) {
                    break;
                }
                gate.await;
            }
            self.faults.claims_held.fetch_sub(1, Ordering::SeqCst);
        }
        if !claimed.is_empty() && take_one(&self.faults.slow_claims) {
            let ms = self.faults.claim_delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        Ok(claimed)
    }
    async fn heartbeat(
        &self,
        l: &[Lease],
        w: &str,
        until: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        if self.faults.hang_heartbeat.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if take_one(&self.faults.panic_heartbeats) {
            panic!("injected: heartbeat panics");
        }
        self.inner.heartbeat(l, w, until).await
    }
    // The worker renews through `renew`: the same faults, then the inner store's answer
    // (its cancels included).
    async fn renew(
        &self,
        l: &[Lease],
        w: &str,
        until: Timestamp,
    ) -> Result<taskq_runtime::store::Renewal, StoreError> {
        if self.faults.hang_heartbeat.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if take_one(&self.faults.panic_heartbeats) {
            panic!("injected: heartbeat panics");
        }
        self.inner.renew(l, w, until).await
    }
    async fn finish(
        &self,
        f: Vec<Finish>,
        w: &str,
        now: Timestamp,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        if take_one(&self.faults.panic_finishes) {
            panic!("injected: finish panics");
        }
        if take_one(&self.faults.hang_finishes) {
            std::future::pending::<()>().await;
        }
        if self.faults.refuse_all_finishes.load(Ordering::SeqCst) {
            self.faults.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Backend(
                "refused: the store takes no outcome for now".into(),
            ));
        }
        let refused = self.faults.refuse_finish_of.lock().expect("lock").clone();
        if f.iter().any(|f| refused.contains(&f.lease.id)) {
            self.faults.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Backend(
                "refused: a value this store cannot hold".into(),
            ));
        }
        let lost = self.faults.lose_lease_of.lock().expect("lock").clone();
        if f.iter().any(|f| lost.contains(&f.lease.id)) {
            // The lost ones answer LeaseLost in their place; the others apply, in order.
            let ids: Vec<TaskId> = f.iter().map(|f| f.lease.id).collect();
            let kept = f
                .into_iter()
                .filter(|f| !lost.contains(&f.lease.id))
                .collect();
            let mut applied = self.inner.finish(kept, w, now).await?.into_iter();
            return Ok(ids
                .into_iter()
                .map(|id| match lost.contains(&id) {
                    true => Err(StoreError::LeaseLost(id)),
                    false => applied.next().unwrap_or(Ok(())),
                })
                .collect());
        }
        self.inner.finish(f, w, now).await
    }
    async fn checkpoint(&self, l: Lease, c: Checkpoint, now: Timestamp) -> Result<(), StoreError> {
        self.inner.checkpoint(l, c, now).await
    }
    async fn confirm(&self, l: Lease) -> Result<(), StoreError> {
        self.inner.confirm(l).await
    }
    async fn next_due(&self, q: &[String]) -> Result<Option<Timestamp>, StoreError> {
        self.faults
            .calls
            .lock()
            .expect("lock")
            .push("next_due".into());
        let arriving = std::mem::take(&mut *self.faults.arrive_at_next_due.lock().expect("lock"));
        if !arriving.is_empty() {
            self.inner.enqueue(arriving, Timestamp::now()).await?;
        }
        if self.faults.hang_next_due.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let lie = {
            let mut lie = self.faults.next_due_lie.lock().expect("lock");
            if let Some(NextDueLie::RunsAhead { from, step }) = lie.as_mut() {
                *from = from.add(*step);
            }
            *lie
        };
        match lie {
            Some(NextDueLie::Fixed(t)) | Some(NextDueLie::RunsAhead { from: t, .. }) => {
                return Ok(Some(t))
            }
            None => {}
        }
        self.inner.next_due(q).await
    }
    async fn wait_for_work(&self, q: &[String], timeout: Duration) {
        self.faults
            .calls
            .lock()
            .expect("lock")
            .push("wait_for_work".into());
        self.inner.wait_for_work(q, timeout).await
    }
    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.inner.queues().await
    }
    async fn configure_queue(&self, q: &str, c: QueueConfig) -> Result<(), StoreError> {
        self.inner.configure_queue(q, c).await
    }
    async fn set_paused(&self, q: &str, p: bool) -> Result<(), StoreError> {
        self.inner.set_paused(q, p).await
    }
    async fn purge(&self, q: &str, now: Timestamp) -> Result<u64, StoreError> {
        self.inner.purge(q, now).await
    }
    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<TaskInfo>, StoreError> {
        self.inner.list_tasks(q).await
    }
    async fn task(&self, id: TaskId) -> Result<Option<TaskDetail>, StoreError> {
        self.inner.task(id).await
    }
    async fn run_now(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.inner.run_now(id, now).await
    }
    async fn delete(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.inner.delete(id, now).await
    }
    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.inner.retry(id, now).await
    }
    async fn iteration(&self, run: TaskId) -> Result<Option<IterationInfo>, StoreError> {
        self.inner.iteration(run).await
    }
    async fn iterations(&self, limit: usize) -> Result<Vec<IterationInfo>, StoreError> {
        self.inner.iterations(limit).await
    }
    async fn cancel_iteration(&self, run: TaskId, now: Timestamp) -> Result<(), StoreError> {
        self.inner.cancel_iteration(run, now).await
    }
    async fn cancel(
        &self,
        id: TaskId,
        now: Timestamp,
    ) -> Result<taskq_runtime::CancelOutcome, StoreError> {
        self.inner.cancel(id, now).await
    }
    async fn wait_for_cancel(&self) {
        self.inner.wait_for_cancel().await
    }
    async fn prune(&self, now: Timestamp, batch: usize) -> Result<PruneReport, StoreError> {
        self.inner.prune(now, batch).await
    }
    async fn finished_per_minute(
        &self,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<FinishedMinute>, StoreError> {
        self.inner.finished_per_minute(since, until).await
    }
    async fn upsert_schedules(
        &self,
        schedules: Vec<taskq_runtime::store::NewSchedule>,
        known_tasks: Option<Vec<String>>,
    ) -> Result<(), StoreError> {
        self.inner.upsert_schedules(schedules, known_tasks).await
    }
    async fn schedules(&self) -> Result<Vec<taskq_runtime::ScheduleInfo>, StoreError> {
        self.inner.schedules().await
    }
    async fn fire_schedule(
        &self,
        fire: taskq_runtime::store::Fire,
        now: Timestamp,
    ) -> Result<Option<Vec<TaskId>>, StoreError> {
        self.inner.fire_schedule(fire, now).await
    }
    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_tick: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.inner
            .set_schedule_paused(name, paused, next_tick)
            .await
    }
    async fn remove_schedule(&self, name: &str) -> Result<(), StoreError> {
        self.inner.remove_schedule(name).await
    }
}
