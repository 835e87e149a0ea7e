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

#[iterative_task(model = Student, batch_size = 0)]  //~ mistake
async fn email_all(ctx: Context, students: Vec<Student>) -> Result<(), TaskError> {
    let _ = (ctx, students);
    Ok(())
}

fn main() {}
