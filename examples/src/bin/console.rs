//! The web console over a store with live work in it: tasks that succeed, one that fails
//! (its arguments and error hold `<script>`, shown escaped), one that dies, and a slow
//! iterative run with a progress bar, while a worker runs them.
//!
//! `cargo run -p taskq-examples --bin console -- [--bind 127.0.0.1:8090] [--store URL] [--no-auth]`
//!
//! It prints the sign-in token (random unless `TASKQ_CONSOLE_TOKEN` sets one of 16 bytes
//! or more). `--no-auth` serves it without credentials, which the console allows on a
//! loopback address only. Ctrl-C stops it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskq_runtime::console::{self, ConsoleConfig};
use taskq_runtime::{iterative_task, task, Model, Queue, TaskError, Worker};

/// Pretends to send a mail; a subject with markup fails for good.
#[task(queue = "email", max_attempts = 3)]
async fn send_email(to: String, subject: String) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(50)).await;
    if subject.contains('<') {
        return Err(TaskError::fatal(format!(
            "refusing to send {subject:?} to {to}: markup in the subject"
        )));
    }
    Ok(())
}

/// Always fails, retryably: dies after its attempts.
#[task(queue = "reports", max_attempts = 2, min_backoff = "1s")]
async fn build_report(month: String) -> Result<(), TaskError> {
    Err(TaskError::retry(format!(
        "the warehouse has no data for {month} yet"
    )))
}

/// Numbers 0..n, the iterative run's model.
struct Numbers(u64);
/// One number.
struct Number(u64);
/// Which numbers (all).
#[derive(Serialize, Deserialize)]
struct All;

impl Model for Number {
    type Key = u64;
    type Filter = All;
    type Source = Arc<Numbers>;

    fn key(&self) -> u64 {
        self.0
    }

    async fn batch(
        src: &Arc<Numbers>,
        _: &All,
        after: Option<&u64>,
        limit: usize,
    ) -> Result<Vec<Number>, TaskError> {
        let start = after.map(|k| k + 1).unwrap_or(0);
        Ok((start..src.0).take(limit).map(Number).collect())
    }

    async fn count(src: &Arc<Numbers>, _: &All) -> Result<Option<u64>, TaskError> {
        Ok(Some(src.0))
    }
}

/// Walks the numbers slowly, so the progress bar moves for a few minutes.
#[iterative_task(model = Number, batch_size = 50, queue = "numbers")]
async fn walk(numbers: Vec<Number>) -> Result<(), TaskError> {
    let _ = numbers;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut bind = "127.0.0.1:8090".to_string();
    let mut store = "memory://".to_string();
    let mut no_auth = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bind" => bind = args.next().ok_or("--bind needs an address")?,
            "--store" => store = args.next().ok_or("--store needs a URL")?,
            "--no-auth" => no_auth = true,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let addr: std::net::SocketAddr = bind.parse()?;
    let queue = Queue::open(&store).await?;
    let worker = Worker::builder(queue.store().clone())
        .state(Arc::new(Numbers(20_000)))
        .build()?
        .spawn();
    for i in 0..20 {
        send_email::start(&queue, format!("user{i}@example.org"), "Welcome".into()).await?;
    }
    send_email::start(
        &queue,
        "mallory@example.org".into(),
        "<script>alert('x')</script>".into(),
    )
    .await?;
    build_report::start(&queue, "2026-10".into()).await?;
    walk::start(&queue, All).await?;

    let config = if no_auth {
        println!("console on http://{addr}/ (no sign-in: this machine only)");
        ConsoleConfig::unauthenticated_loopback()
    } else {
        let token = match std::env::var("TASKQ_CONSOLE_TOKEN") {
            Ok(t) if t.len() >= console::MIN_TOKEN_BYTES => t,
            _ => console::random_token()?,
        };
        println!("console on http://{addr}/ — sign in with the token {token}");
        ConsoleConfig::token(token)
    };
    console::serve(queue, config, addr).await?;
    worker.shutdown().await?;
    Ok(())
}
