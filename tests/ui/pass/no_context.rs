//! A task without a `Context` parameter; a private one, never started (no dead-code noise).
#![deny(warnings)]

use taskq_runtime::{task, TaskError};

#[task]
async fn log_line(line: String, mut count: u32) -> Result<(), TaskError> {
    count += 1;
    let _ = (line, count);
    Ok(())
}

#[task]
async fn no_args() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
