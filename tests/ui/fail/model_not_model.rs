use taskq_runtime::{iterative_task, Context, TaskError};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Teacher {
    id: i64,
}

#[iterative_task(model = Teacher)]  //~ mistake
async fn email_all(ctx: Context, teachers: Vec<Teacher>, subject: String) -> Result<(), TaskError> {
    let _ = (ctx, teachers, subject);
    Ok(())
}

fn main() {}
