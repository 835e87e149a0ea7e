//! A plain task with a `Context`, started through its generated helpers.
#![deny(missing_docs)]

use taskq_runtime::{task, Context, Queue, TaskError};

/// Sends one email.
#[task(queue = "email", max_attempts = 5, timeout = "30s")]
pub async fn send_email(ctx: Context, to: String, subject: String) -> Result<(), TaskError> {
    let _ = (ctx.attempt(), to, subject);
    Ok(())
}

/// Starts it.
pub async fn demo(queue: &Queue) -> Result<(), Box<dyn std::error::Error>> {
    let _id = send_email::start(queue, "ada@example.org".into(), "Welcome".into()).await?;
    let _id = send_email::builder("ada@example.org".into(), "Welcome".into())
        .delay(std::time::Duration::from_secs(60))
        .name("welcome-ada")
        .start(queue)
        .await?;
    let _: &str = send_email::NAME;
    Ok(())
}

fn main() {}
