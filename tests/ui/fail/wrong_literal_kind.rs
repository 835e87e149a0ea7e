use taskq_runtime::{task, TaskError};

#[task(max_attempts = "5", timeout = 30, queue = email, priority = 1.5, name = 7)]
async fn send_email(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

#[task(queue)]
async fn b() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
