use taskq_runtime::{task, TaskError};

#[task]
async fn greet(name: impl Into<String>) -> Result<(), TaskError> {  //~ mistake
    let _ = name.into();
    Ok(())
}

fn main() {}
