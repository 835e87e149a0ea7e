use taskq_runtime::task;

#[task]
struct SendEmail {
    to: String,
}

fn main() {}
