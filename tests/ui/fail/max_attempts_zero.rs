use taskq_runtime::{task, TaskError};

#[task(max_attempts = 0)]  //~ mistake
async fn send_email(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

fn main() {}
