//! The worker's share of periodic tasks ([`crate::schedule`]): at start it registers the
//! schedules of the tasks declared with `cron` (marks those whose task it does not know,
//! and removes those of known tasks that no longer declare `cron`), then fires due schedules, waking at the next tick or every
//! [`SCHEDULE_POLL`](crate::schedule::SCHEDULE_POLL), whichever is sooner. Every worker
//! does this; the store's compare-and-set makes each tick fire once. It runs beside the
//! claim loop, supervised (a panic restarts it), and stops at shutdown.

use std::time::Duration;

use crate::schedule::{self, SCHEDULE_POLL};
use crate::worker::Exec;

/// The shortest wait between two passes, so a clock that reads a tick as still ahead
/// for a few milliseconds cannot spin.
const MIN_WAIT: Duration = Duration::from_millis(5);

/// Registers the declared schedules, then fires due ones for ever.
pub(crate) async fn run(exec: Exec) {
    let mut registered = false;
    loop {
        let now = exec.clock.now();
        if !registered {
            match schedule::register_declared(&*exec.store, &exec.registry, now).await {
                Ok(()) => registered = true,
                Err(e) => tracing::warn!(worker = %exec.worker, error = %e,
                    "schedules: registering the declared schedules failed; trying again"),
            }
        }
        let wait = match schedule::fire_due(&*exec.store, &exec.registry, now).await {
            Ok(pass) => {
                for (name, id) in &pass.started {
                    tracing::debug!(worker = %exec.worker, schedule = %name, task = %id, "schedules: tick fired");
                }
                match pass.next {
                    Some(t) => t.since(exec.clock.now()).clamp(MIN_WAIT, SCHEDULE_POLL),
                    None => SCHEDULE_POLL,
                }
            }
            Err(e) => {
                tracing::warn!(worker = %exec.worker, error = %e,
                    "schedules: firing due schedules failed; trying again");
                SCHEDULE_POLL
            }
        };
        tokio::time::sleep(wait).await;
    }
}
