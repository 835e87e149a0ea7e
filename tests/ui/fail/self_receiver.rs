use taskq_runtime::{task, TaskError};

struct Mailer;

impl Mailer {
    #[task]
    async fn send(&self, to: String) -> Result<(), TaskError> {  //~ mistake
        let _ = to;
        Ok(())
    }
}

fn main() {}
