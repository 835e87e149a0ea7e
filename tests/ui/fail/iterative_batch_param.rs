use taskq_runtime::{iterative_task, Context, Model, TaskError};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Student {
    id: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StudentFilter {
    program: String,
}

struct Db;

impl Model for Student {
    type Key = i64;
    type Filter = StudentFilter;
    type Source = Db;

    fn key(&self) -> i64 {
        self.id
    }

    async fn batch(
        _db: &Db,
        _filter: &StudentFilter,
        _after: Option<&i64>,
        _limit: usize,
    ) -> Result<Vec<Student>, TaskError> {
        Ok(Vec::new())
    }
}

struct Teacher;

#[iterative_task(model = Student)]
async fn email_all(ctx: Context, subject: String, students: Vec<Student>) -> Result<(), TaskError> {  //~ mistake
    let _ = (ctx, subject, students);
    Ok(())
}

#[iterative_task(model = Student)]
async fn wrong_model(ctx: Context, teachers: Vec<Teacher>) -> Result<(), TaskError> {  //~ mistake
    let _ = (ctx, teachers);
    Ok(())
}

#[iterative_task(model = Student)]
async fn no_batch(ctx: Context) -> Result<(), TaskError> {  //~ mistake
    let _ = ctx;
    Ok(())
}

fn main() {}
