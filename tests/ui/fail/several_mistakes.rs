use taskq_runtime::{task, Context};

#[task(
    retries = 3,  //~ mistake
    timeout = "3 parsecs",  //~ mistake
    max_attempts = 0,  //~ mistake
    queue = "a",
    queue = "b"  //~ mistake
)]
fn send_email<T>(ctx: Context, to: &str, body: impl AsRef<str>, (a, b): (u8, u8)) {  //~ mistakes: 6
    let _ = (ctx, to, body, a, b);
}

fn main() {}
