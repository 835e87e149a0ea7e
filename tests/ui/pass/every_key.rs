//! Every key of `#[task]`, and an error type that converts into `TaskError`.
#![deny(warnings, missing_docs)]

use taskq_runtime::{task, Context, Queue, TaskOptions};

/// Rebuilds a report.
#[task(
    name = "reports::rebuild",
    queue = "reports",
    max_attempts = 3,
    timeout = "1h30m",
    min_backoff = "250ms",
    max_backoff = "2h",
    max_doublings = 4,
    age_limit = "7d",
    priority = -5,
    crate = ::taskq_runtime,
)]
pub async fn rebuild_report(ctx: Context, report_id: u64) -> Result<(), std::io::Error> {
    let _ = (ctx, report_id);
    Ok(())
}

/// The options the macro generated.
pub fn options() -> TaskOptions {
    assert_eq!(rebuild_report::NAME, "reports::rebuild");
    TaskOptions {
        max_attempts: 3,
        timeout: std::time::Duration::from_secs(5400),
        min_backoff: std::time::Duration::from_millis(250),
        max_backoff: std::time::Duration::from_secs(7200),
        max_doublings: 4,
        age_limit: Some(std::time::Duration::from_secs(7 * 24 * 3600)),
        priority: -5,
    }
}

/// Starts it with options.
pub async fn demo(queue: &Queue) -> Result<(), taskq_runtime::StartError> {
    rebuild_report::builder(7)
        .queue("urgent")
        .priority(10)
        .start(queue)
        .await?;
    Ok(())
}

fn main() {}
