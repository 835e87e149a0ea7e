use taskq_runtime::{task, Context, TaskError};

#[task]
fn send_email(ctx: Context, to: String) -> Result<(), TaskError> {  //~ mistake
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
