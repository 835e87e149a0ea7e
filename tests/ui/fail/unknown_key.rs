use taskq_runtime::{task, TaskError};

#[task(retries = 3)]  //~ mistake
async fn a() -> Result<(), TaskError> {
    Ok(())
}

#[task(model = Student)]  //~ mistake
async fn b() -> Result<(), TaskError> {
    Ok(())
}

#[task(colour = "blue")]  //~ mistake
async fn c() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
