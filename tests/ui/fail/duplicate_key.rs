use taskq_runtime::{task, TaskError};

#[task(queue = "email", max_attempts = 3, queue = "mail")]
async fn send_email(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
