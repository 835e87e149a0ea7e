//! Periodic tasks: `cron`, `timezone` and `catch_up`, six fields with seconds, and the
//! typed `schedule` builder of a task with arguments.
#![deny(warnings, missing_docs)]

use taskq_runtime::{task, CatchUp, Context, Queue, ScheduleError, TaskError};

/// Every night at 03:00 in Paris; after downtime, missed nights are dropped.
#[task(cron = "0 3 * * *", timezone = "Europe/Paris", catch_up = "skip")]
pub async fn nightly(ctx: Context) -> Result<(), TaskError> {
    let _ = ctx;
    Ok(())
}

/// Every ten seconds, in UTC.
#[task(cron = "*/10 * * * * *", queue = "ticks")]
pub async fn often() -> Result<(), TaskError> {
    Ok(())
}

/// A report for one team: scheduled at run time, with its argument.
#[task]
pub async fn report(team: String) -> Result<(), TaskError> {
    let _ = team;
    Ok(())
}

/// Registers the sales report for Mondays at 08:00 in New York.
pub async fn demo(queue: &Queue) -> Result<(), ScheduleError> {
    report::schedule("sales-report", "0 8 * * MON", "sales".to_string())
        .timezone("America/New_York")
        .catch_up(CatchUp::Last)
        .register(queue)
        .await
}

fn main() {}
