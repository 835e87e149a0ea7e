//! The worker's concurrency slots: how many tasks run, and waking the claim loop once
//! enough slots are free for the claim it wants to make.
//!
//! The claim loop is the only one that takes slots, so a count is enough (no semaphore).
//! A task's slot is freed when its future ends or is dropped. Freeing one wakes the claim
//! loop only when the number of free slots reaches what the loop waits for (one slot when
//! all were busy, a full batch while it gathers, every one at shutdown): a busy worker
//! wakes its claim loop about once per batch, not once per task.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// The slots of one worker.
pub(super) struct Slots {
    /// How many tasks may run at once.
    concurrency: usize,
    /// How many slots are taken.
    taken: AtomicUsize,
    /// Freeing a slot wakes the claim loop once at least this many are free.
    wake_at: AtomicUsize,
    /// Wakes the claim loop.
    freed: Notify,
}

impl Slots {
    /// `concurrency` free slots.
    pub fn new(concurrency: usize) -> Arc<Slots> {
        Arc::new(Slots {
            concurrency,
            taken: AtomicUsize::new(0),
            wake_at: AtomicUsize::new(1),
            freed: Notify::new(),
        })
    }

    /// How many slots are free.
    pub fn free(&self) -> usize {
        self.concurrency
            .saturating_sub(self.taken.load(Ordering::SeqCst))
    }

    /// Takes a slot for a task the claim loop claimed (it claims at most the free ones).
    pub fn take(self: &Arc<Self>) -> Slot {
        self.taken.fetch_add(1, Ordering::SeqCst);
        Slot(self.clone())
    }

    /// Waits until at least `n` slots are free (at once if they are). May return early
    /// (a wake meant for an earlier wait): callers check [`Slots::free`] again.
    pub async fn wait_for(&self, n: usize) {
        // Said before looking, so that a slot freed after the look sees it and wakes us:
        // both sides use sequentially consistent operations (store then load here, update
        // then load in `Slot::drop`), so at least one of them sees the other's write.
        self.wake_at.store(n, Ordering::SeqCst);
        if self.free() >= n {
            return;
        }
        self.freed.notified().await;
    }

    /// Waits until a slot is freed (shutdown waits for the tasks still running). May
    /// return early, like [`Slots::wait_for`].
    pub async fn wait_freed(&self) {
        self.wake_at.store(0, Ordering::SeqCst);
        self.freed.notified().await;
    }
}

/// A running task's slot: dropping it (when the task's future ends or is dropped) frees
/// it, and wakes the claim loop if that makes enough free slots for what it waits for.
pub(super) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        let s = &self.0;
        let taken = s.taken.fetch_sub(1, Ordering::SeqCst) - 1;
        if s.concurrency.saturating_sub(taken) >= s.wake_at.load(Ordering::SeqCst) {
            s.freed.notify_one();
        }
    }
}
