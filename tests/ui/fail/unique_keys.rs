use taskq_runtime::{task, TaskError};

#[task(unique = ["to", "cc"])]  //~ mistake
async fn a(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

#[task(unique = "all")]  //~ mistake
async fn b(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

#[task(unique = [], queue = "q")]  //~ mistake
async fn c(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

#[task(unique = ["to", "to"])]  //~ mistake
async fn d(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

#[task(unique = "args", unique_for = "1 fortnight")]  //~ mistake
async fn e(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

#[task(unique_for = "1h", on_conflict = "replace")]  //~ mistakes: 2
async fn f(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

#[task(unique = "args", on_conflict = "ignore")]  //~ mistake
async fn g(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

#[task(unique = [to])]  //~ mistake
async fn h(to: String) -> Result<(), TaskError> {
    let _ = to;
    Ok(())
}

#[task(unique = ["x"])]  //~ mistake
async fn i() -> Result<(), TaskError> {
    Ok(())
}

fn main() {}
