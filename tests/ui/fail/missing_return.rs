use taskq_runtime::{task, Context};

#[task]
async fn send_email(ctx: Context, to: String) {  //~ mistake
    let _ = (ctx, to);
}

fn main() {}
