use taskq_runtime::{task, TaskError};

#[task(min_backoff = "10m", max_backoff = "1m")]  //~ mistake
async fn a() -> Result<(), TaskError> {
    Ok(())
}

#[task(min_backoff = "2h")]  //~ mistake
async fn b() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
