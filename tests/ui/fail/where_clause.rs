use taskq_runtime::{task, TaskError};

#[task]
async fn store(value: u32) -> Result<(), TaskError>
where  //~ mistake
    u32: Copy,
{
    let _ = value;
    Ok(())
}

fn main() {}
