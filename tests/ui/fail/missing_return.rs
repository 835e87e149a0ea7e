use taskq_runtime::{task, Context};

#[task]
async fn send_email(ctx: Context, to: String) {
    let _ = (ctx, to);
}

fn main() {}
