use taskq_runtime::{task, TaskError};

#[task(max_attempts = "5", timeout = 30, queue = email, priority = 1.5, name = 7)]  //~ mistakes: 5
async fn send_email(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

#[task(queue)]  //~ mistake
async fn b() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
