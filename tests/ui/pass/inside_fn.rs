//! Tasks declared inside function bodies, beside types of those bodies: their `NAME`,
//! `start` and `builder` resolve there, they are registered, and the function keeps its
//! name; also with a `crate = ..` override and a raw identifier.
#![deny(warnings)]

use serde::{Deserialize, Serialize};
use taskq_runtime::{iterative_task, task, Context, Model, Queue, Registry, StartError, TaskError};

async fn start_local(q: &Queue) -> Result<(), StartError> {
    #[derive(Serialize, Deserialize)]
    struct Email {
        to: String,
    }

    #[task(queue = "email")]
    async fn send_email(ctx: Context, email: Email) -> Result<(), TaskError> {
        let _ = (ctx, email.to);
        Ok(())
    }

    #[task]
    pub async fn r#move(n: u32) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let _ = n;
        Ok(())
    }

    send_email::start(q, Email { to: "ada@example.org".into() }).await?;
    send_email::builder(Email { to: "bob@example.org".into() })
        .priority(1)
        .start(q)
        .await?;
    r#move::start(q, 1).await?;
    assert_eq!(r#move::NAME, concat!(module_path!(), "::r#move"));
    assert_eq!(send_email::NAME, concat!(module_path!(), "::send_email"));
    let _direct = send_email;
    Ok(())
}

fn iterative_inside() {
    #[derive(Clone)]
    struct Row(i64);

    #[derive(Serialize, Deserialize)]
    struct Rows;

    struct Source;

    impl Model for Row {
        type Key = i64;
        type Filter = Rows;
        type Source = Source;

        fn key(&self) -> i64 {
            self.0
        }

        async fn batch(
            _: &Source,
            _: &Rows,
            _: Option<&i64>,
            _: usize,
        ) -> Result<Vec<Row>, TaskError> {
            Ok(Vec::new())
        }
    }

    #[iterative_task(model = Row, batch_size = 10)]
    async fn walk(rows: Vec<Row>, tag: String) -> Result<(), TaskError> {
        let _ = (rows, tag);
        Ok(())
    }

    let _builder = walk::builder(Rows, "t".into());
    let _name: &str = walk::NAME;
}

fn main() {
    use taskq_runtime as tq;

    #[tq::task(crate = tq)]
    async fn renamed(n: u32) -> Result<(), tq::TaskError> {
        let _ = n;
        Ok(())
    }

    iterative_inside();
    let _ = start_local;
    let _ = renamed::builder(1);
    let registry = Registry::collect().expect("no duplicate names");
    assert!(registry.get(renamed::NAME).is_some());
}
