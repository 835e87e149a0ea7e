//! A store that misbehaves on purpose, around a memory store: calls that hang, panic or
//! refuse, for the worker's fault tests.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use taskq_runtime::store::memory::MemoryStore;
use taskq_runtime::store::{
    Checkpoint, ClaimRequest, ClaimedTask, Finish, IterationInfo, Lease, NewTask, QueueConfig,
    QueueInfo, TaskDetail, TaskInfo, TaskQuery,
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
    async fn claim(&self, r: &ClaimRequest) -> Result<Vec<ClaimedTask>, StoreError> {
        if self.faults.hang_claims.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.claim(r).await
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
        let refused = self.faults.refuse_finish_of.lock().expect("lock").clone();
        if f.iter().any(|f| refused.contains(&f.lease.id)) {
            self.faults.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Backend(
                "refused: a value this store cannot hold".into(),
            ));
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
        if self.faults.hang_next_due.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.next_due(q).await
    }
    async fn wait_for_work(&self, q: &[String], timeout: Duration) {
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
}
