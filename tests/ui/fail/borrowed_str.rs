use taskq_runtime::{task, Context, TaskError};

#[task]
async fn send_email(ctx: Context, to: &str) -> Result<(), TaskError> {  //~ mistake
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
