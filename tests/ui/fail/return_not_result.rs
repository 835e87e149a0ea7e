use taskq_runtime::{task, TaskError};

#[task]
async fn count(n: u32) -> Option<TaskError> {  //~ mistake
    let _ = n;
    None
}

#[task]
async fn total(n: u32) -> Result<u32, TaskError> {  //~ mistake
    Ok(n)
}

fn main() {}
