use taskq_runtime::{task, TaskError};

#[task]
async fn move_to((x, y): (i32, i32), _: String, ref name: String) -> Result<(), TaskError> {  //~ mistakes: 3
    let _ = (x, y, name);
    Ok(())
}

fn main() {}
