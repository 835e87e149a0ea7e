use taskq_runtime::{task, TaskError};

#[task(timeout = "3 parsecs")]  //~ mistake
async fn a() -> Result<(), TaskError> {
    Ok(())
}

#[task(min_backoff = "1.5s", max_backoff = "10")]  //~ mistakes: 2
async fn b() -> Result<(), TaskError> {
    Ok(())
}

#[task(timeout = "0s", age_limit = "")]  //~ mistakes: 2
async fn c() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
