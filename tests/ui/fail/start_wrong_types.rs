use taskq_runtime::{task, Context, Queue, TaskError};

#[task]
async fn send_email(ctx: Context, to: String, attempts: u32) -> Result<(), TaskError> {
    let _ = (ctx, to, attempts);
    Ok(())
}

async fn demo(queue: &Queue) {
    let _ = send_email::start(queue, 42, "three").await;  //~ mistake
}

fn main() {
    let _ = demo;
}
