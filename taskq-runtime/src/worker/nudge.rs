//! The runtime nudge: keeps the runtime's timers running while a task blocks a thread.
//!
//! tokio's multi-thread runtime drives its timers (and I/O) from one idle worker thread
//! parked on the driver; the other idle workers sleep on a condition variable. When the
//! worker that held the driver picks up a task that blocks its thread (`std::thread::sleep`,
//! blocking I/O, a long computation), nobody drives the timers any more, and the sleeping
//! workers are not woken until new work arrives from elsewhere: every timer of the runtime
//! stalls until that task returns, the worker's lease renewal and claim loop included
//! (seen with tokio 1.54: a task blocking 3 s stopped all of them for 2 s).
//!
//! A plain thread that spawns an empty task every few milliseconds wakes a sleeping worker,
//! which then takes the driver again: the other tasks go on, the heartbeat gives up the
//! blocking task at its hard deadline ([`policy::blocked`](crate::policy)), and a task can
//! only block the threads it runs on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Stops the nudge thread when dropped.
pub(super) struct Nudge(Arc<AtomicBool>);

impl Drop for Nudge {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Starts nudging the current runtime every `every` until the returned guard is dropped.
/// Does nothing on a current-thread runtime (a blocked thread is the whole runtime there)
/// or when the thread cannot be made (then timers may stall as described above).
pub(super) fn start(every: Duration) -> Option<Nudge> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return None;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("taskq-nudge".into())
        .spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                std::thread::sleep(every);
                // A spawn from outside the runtime wakes a sleeping worker (see the module
                // docs). On a runtime that shut down it does nothing.
                drop(handle.spawn(async {}));
            }
        })
        .ok()?;
    Some(Nudge(stop))
}
