use taskq_runtime::{task, Context, TaskError};

#[task]
async fn send_email(to: String, ctx: Context) -> Result<(), TaskError> {  //~ mistake
    let _ = (ctx, to);
    Ok(())
}

#[task]
async fn by_ref(ctx: &Context, to: String) -> Result<(), TaskError> {  //~ mistake
    let _ = (ctx, to);
    Ok(())
}

fn main() {}
