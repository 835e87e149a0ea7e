use taskq_runtime::{task, TaskError};

#[task]
async fn store<T: serde::Serialize>(value: T) -> Result<(), TaskError> {  //~ mistake
    let _ = value;
    Ok(())
}

fn main() {}
