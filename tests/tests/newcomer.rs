//! The first mistakes a newcomer makes explain themselves: a missing app state, a worker
//! that does not serve a task's queue, a missing SQLite directory, errors printed by `main`,
//! and unit tests that call a task function directly.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskq_runtime::store::StoreError;
use taskq_runtime::testing::Harness;
use taskq_runtime::{task, Context, Queue, StartError, TaskError, TaskState, Worker};

struct Mailer {
    sent: Mutex<Vec<String>>,
}

#[task(queue = "newcomer")]
async fn welcome(ctx: Context, to: String) -> Result<(), TaskError> {
    let mailer = ctx.state::<Mailer>()?;
    mailer.sent.lock().expect("lock").push(to);
    Ok(())
}

#[task(queue = "unserved")]
async fn on_another_queue() -> Result<(), TaskError> {
    Ok(())
}

#[tokio::test]
async fn a_missing_app_state_is_retried_and_names_the_type_and_the_builder_call() {
    let h = Harness::new();
    let id = welcome::start(&h.queue(), "ada@example.org".into())
        .await
        .expect("start");
    let report = h.run_due().await.expect("run");
    assert_eq!(report.runs.len(), 1);
    assert_eq!(report.runs[0].outcome, "retry", "not failed for good");
    let error = report.runs[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("newcomer::Mailer") && error.contains("`.state(value)`"),
        "{error}"
    );
    let t = h.queue().task(id).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Pending);
}

#[tokio::test]
async fn a_task_function_can_be_called_directly_in_a_unit_test(
) -> Result<(), Box<dyn std::error::Error>> {
    let h = Harness::new().state(Mailer {
        sent: Mutex::default(),
    });
    welcome(h.context(), "ada@example.org".into()).await?;
    // Without the state: the TaskError converts into the Box<dyn Error> of this test.
    let err = welcome(Context::for_test(), "bob@example.org".into())
        .await
        .err()
        .map(Box::<dyn std::error::Error>::from)
        .expect("an error without the state");
    assert!(
        err.to_string()
            .starts_with("task error (retryable): the worker was given no app state"),
        "{err}"
    );
    let ctx = Context::for_test();
    assert_eq!((ctx.attempt(), ctx.is_cancelled()), (1, false));
    assert!(ctx.remaining() > Duration::from_secs(590));
    Ok(())
}

#[test]
fn errors_that_main_returns_print_their_message() {
    let e = StartError::Store(StoreError::AlreadyExists("welcome-ada".into()));
    assert_eq!(format!("{e:?}"), format!("{e}"));
    assert!(format!("{e:?}").starts_with("a task named `welcome-ada` already exists"));
}

#[tokio::test]
async fn a_missing_sqlite_directory_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir");
    let url = format!("sqlite://{}/taskq.db", missing.display());
    let err = Queue::open(&url).await.expect_err("missing directory");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "the directory `{}` does not exist",
            missing.display()
        )) && msg.contains("mkdir -p"),
        "{msg}"
    );
}

/// Captures what the worker logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_worker_says_what_it_serves_and_warns_about_what_it_cannot_run() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = taskq_tests::memory_store().await;
    let worker = Worker::builder(store)
        .queues(["newcomer"])
        .name("w-newcomer")
        .build()
        .expect("worker")
        .spawn();
    tokio::time::sleep(Duration::from_millis(100)).await;
    worker.shutdown().await.expect("shutdown");
    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        text.contains("taskq worker started: serving newcomer; it knows")
            && text.contains("newcomer::welcome"),
        "{text}"
    );
    let warning = "task `newcomer::on_another_queue` runs on queue `unserved`, which this worker does not serve";
    assert_eq!(text.matches(warning).count(), 1, "{text}");
}

#[tokio::test]
async fn a_worker_name_a_store_cannot_hold_is_refused_at_build() {
    for bad in ["", "w\0rker"] {
        let err = Worker::builder(taskq_tests::memory_store().await)
            .name(bad)
            .build()
            .expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.starts_with("worker setting `name`:") && msg.contains("NUL"),
            "{msg}"
        );
    }
}
