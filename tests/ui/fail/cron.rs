use taskq_runtime::{task, Context, TaskError};

#[task(cron = "61 * * * *")]  //~ mistake
async fn minute_out_of_range() -> Result<(), TaskError> {
    Ok(())
}

#[task(cron = "every night")]  //~ mistake
async fn not_cron() -> Result<(), TaskError> {
    Ok(())
}

#[task(cron = "0 3 * * *", timezone = "Europe/Pariss", catch_up = "all")]  //~ mistakes: 2
async fn bad_zone_and_policy() -> Result<(), TaskError> {
    Ok(())
}

#[task(timezone = "UTC")]  //~ mistake
async fn zone_without_cron() -> Result<(), TaskError> {
    Ok(())
}

#[task(cron = "0 3 * * *")]  //~ mistake
async fn with_arguments(ctx: Context, team: String) -> Result<(), TaskError> {
    let _ = (ctx, team);
    Ok(())
}

#[task(cron = "0 0 30 2 *")]  //~ mistake
async fn february_30th() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
