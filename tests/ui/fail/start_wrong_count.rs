use taskq_runtime::{task, Context, Queue, TaskError};

#[task]
async fn send_email(ctx: Context, to: String, subject: String) -> Result<(), TaskError> {
    let _ = (ctx, to, subject);
    Ok(())
}

async fn demo(queue: &Queue) {
    let _ = send_email::start(queue, "ada@example.org".into()).await;  //~ mistake
    let _ = send_email::builder("ada@example.org".into(), "Hi".into(), 3);  //~ mistake
}

fn main() {
    let _ = demo;
}
