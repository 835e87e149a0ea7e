//! The worker's share of retention ([`crate::retention`]): about every prune interval
//! (default [`PRUNE_INTERVAL`](crate::retention::PRUNE_INTERVAL), one minute) it asks the store to prune what retention no
//! longer keeps, at the worker's clock's time, [`PRUNE_BATCH`] rows per transaction.
//!
//! Each wait is the interval scaled by a random factor between 0.75 and 1.25, so that
//! workers started together (a deploy) spread their prunes out; on PostgreSQL the ones
//! that still meet find the store busy and skip. A prune that fails is logged and tried
//! again at the next interval. The part runs beside the claim loop, supervised (a panic
//! restarts it), and is stopped at shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::retention::PRUNE_BATCH;
use crate::store::Store;
use crate::time::Clock;

/// How long to wait before the next prune: `interval` scaled by a random factor in
/// [0.75, 1.25).
pub(crate) fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// Prunes the store every (jittered) `interval`, for ever.
pub(crate) async fn prune_periodically(
    store: Arc<dyn Store>,
    clock: Clock,
    interval: Duration,
    worker: String,
) {
    loop {
        tokio::time::sleep(jittered(interval)).await;
        match store.prune(clock.now(), PRUNE_BATCH).await {
            Ok(r) if r.is_empty() => {
                tracing::debug!(worker = %worker, busy = r.busy, "retention: nothing to prune");
            }
            Ok(r) => tracing::info!(
                worker = %worker, tasks = r.total_tasks(), by_state = ?r.tasks, runs = r.runs,
                tombstones = r.tombstones, busy = r.busy,
                "retention: pruned {} finished task{}", r.total_tasks(),
                if r.total_tasks() == 1 { "" } else { "s" }
            ),
            Err(e) => tracing::warn!(
                worker = %worker, error = %e, retry_in = ?interval,
                "retention: prune failed; trying again at the next interval"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_jittered_around_the_interval() {
        let i = Duration::from_secs(60);
        for _ in 0..1_000 {
            let w = jittered(i);
            assert!(
                w >= Duration::from_secs(45) && w < Duration::from_secs(75),
                "{w:?}"
            );
        }
    }
}
