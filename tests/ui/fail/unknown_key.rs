use taskq_runtime::{task, TaskError};

#[task(retries = 3)]
async fn a() -> Result<(), TaskError> {
    Ok(())
}

#[task(model = Student)]
async fn b() -> Result<(), TaskError> {
    Ok(())
}

#[task(colour = "blue")]
async fn c() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
