use taskq_runtime::task;

#[task]
struct SendEmail {  //~ mistake
    to: String,
}

fn main() {}
