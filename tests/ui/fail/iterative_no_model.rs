use taskq_runtime::{iterative_task, Context, TaskError};

#[iterative_task(batch_size = 10)]  //~ mistake
async fn email_all(ctx: Context, students: Vec<u64>, subject: String) -> Result<(), TaskError> {
    let _ = (ctx, students, subject);
    Ok(())
}

fn main() {}
