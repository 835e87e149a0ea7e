//! An iterative task over a model, with extra arguments and no extra arguments.
#![deny(warnings, missing_docs)]

use serde::{Deserialize, Serialize};
use taskq_runtime::{iterative_task, Context, Model, Queue, TaskError};

/// A student.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Student {
    id: i64,
}

/// Which students.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudentFilter {
    /// The program.
    pub program: String,
}

/// The data.
pub struct Db;

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

/// Emails every student of a program.
#[iterative_task(model = Student, batch_size = 200, queue = "email", timeout = "30s")]
pub async fn email_all_students(
    ctx: Context,
    students: Vec<Student>,
    subject: String,
    dry_run: bool,
) -> Result<(), TaskError> {
    let _ = (ctx, students, subject, dry_run);
    Ok(())
}

/// Counts them, with no context and no extra argument.
#[iterative_task(model = Student)]
pub async fn count_students(students: Vec<Student>) -> Result<(), TaskError> {
    let _ = students;
    Ok(())
}

/// Starts both.
pub async fn demo(queue: &Queue) -> Result<(), taskq_runtime::StartError> {
    let filter = StudentFilter {
        program: "gsoc2009".into(),
    };
    email_all_students::start(queue, filter.clone(), "Results are out".into(), false).await?;
    count_students::builder(filter)
        .name("count-once")
        .start(queue)
        .await?;
    Ok(())
}

fn main() {}
