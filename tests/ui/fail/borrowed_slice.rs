use taskq_runtime::{task, TaskError};

#[task]
async fn upload(bytes: &[u8]) -> Result<(), TaskError> {  //~ mistake
    let _ = bytes;
    Ok(())
}

fn main() {}
