use taskq_runtime::{task, TaskError};

#[task(queue = "email", max_attempts = 3, queue = "mail")]  //~ mistake
async fn send_email(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
