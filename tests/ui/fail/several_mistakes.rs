use taskq_runtime::{task, Context};

#[task(
    retries = 3,
    timeout = "3 parsecs",
    max_attempts = 0,
    queue = "a",
    queue = "b"
)]
fn send_email<T>(ctx: Context, to: &str, body: impl AsRef<str>, (a, b): (u8, u8)) {
    let _ = (ctx, to, body, a, b);
}

fn main() {}
