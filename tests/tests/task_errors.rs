//! The error types a task may declare, run on the harness: `TaskError` (its kind kept),
//! any `std::error::Error`, `Box<dyn Error + Send + Sync>` and `anyhow::Error`. A retryable
//! error is retried with its whole cause chain recorded; a fatal `TaskError` fails the task
//! whatever the declared error type.

use std::fmt;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use taskq_runtime::testing::{DrainReport, Harness};
use taskq_runtime::{iterative_task, task, Context, Model, TaskError};

/// An error with a cause, to see that the recorded text keeps the chain.
#[derive(Debug)]
struct UploadFailed {
    source: std::io::Error,
}

impl fmt::Display for UploadFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upload failed")
    }
}

impl std::error::Error for UploadFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn disk_full() -> std::io::Error {
    std::io::Error::other("disk full")
}

fn upload(attempt: u32) -> Result<(), UploadFailed> {
    if attempt == 1 {
        Err(UploadFailed {
            source: disk_full(),
        })
    } else {
        Ok(())
    }
}

#[task(queue = "errors", max_attempts = 3)]
async fn boxed(ctx: Context) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    upload(ctx.attempt())?; // `?` converts any error into the box
    Ok(())
}

#[task(queue = "errors", max_attempts = 3)]
async fn boxed_message(ctx: Context) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let _ = ctx;
    Err("a boxed error is retryable".into())
}

#[task(queue = "errors", max_attempts = 3)]
async fn boxed_fatal(to: String) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    recipient(&to)?; // a fatal TaskError, boxed by `?`
    Ok(())
}

#[task(queue = "errors", max_attempts = 3)]
async fn with_anyhow(ctx: Context, report: String) -> anyhow::Result<()> {
    upload(ctx.attempt()).with_context(|| format!("sending report {report}"))?;
    Ok(())
}

fn recipient(to: &str) -> Result<(), TaskError> {
    if to.is_empty() {
        return Err(TaskError::fatal("no recipient"));
    }
    Ok(())
}

#[task(queue = "errors", max_attempts = 3)]
async fn anyhow_fatal(to: String) -> Result<(), anyhow::Error> {
    recipient(&to)?; // a `TaskError` through `?` keeps its kind
    Ok(())
}

#[task(queue = "errors", max_attempts = 3)]
async fn anyhow_fatal_in_context() -> anyhow::Result<()> {
    let closed = anyhow::Error::from(TaskError::fatal("the account is closed"));
    Err(closed.context("mailing the newsletter"))
}

#[task(queue = "errors", max_attempts = 3)]
async fn task_error(ctx: Context, fatal: bool) -> Result<(), TaskError> {
    if fatal {
        return Err(TaskError::fatal("no recipient"));
    }
    if ctx.attempt() == 1 {
        return Err(TaskError::retry("smtp busy"));
    }
    Ok(())
}

#[task(queue = "errors", max_attempts = 3)]
async fn std_error(ctx: Context) -> Result<(), UploadFailed> {
    upload(ctx.attempt())
}

/// A number in an in-memory table, walked by the iterative tasks below.
#[derive(Debug, Clone)]
struct Num(i64);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct All;

struct Table(Vec<i64>);

impl Model for Num {
    type Key = i64;
    type Filter = All;
    type Source = Table;

    fn key(&self) -> i64 {
        self.0
    }

    async fn batch(
        t: &Table,
        _: &All,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<Num>, TaskError> {
        Ok(t.0
            .iter()
            .filter(|n| after.is_none_or(|a| *n > a))
            .take(limit)
            .map(|n| Num(*n))
            .collect())
    }
}

#[iterative_task(model = Num, batch_size = 2, queue = "errors", max_attempts = 3)]
async fn walk_boxed(
    ctx: Context,
    nums: Vec<Num>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if nums[0].0 == 3 {
        upload(ctx.attempt())?;
    }
    Ok(())
}

#[iterative_task(model = Num, batch_size = 2, queue = "errors", max_attempts = 3)]
async fn walk_anyhow(ctx: Context, nums: Vec<Num>, label: String) -> anyhow::Result<()> {
    if nums[0].0 == 3 {
        upload(ctx.attempt()).context(label)?;
    }
    Ok(())
}

fn outcomes(report: &DrainReport) -> Vec<(&'static str, Option<String>)> {
    report
        .runs
        .iter()
        .map(|r| (r.outcome, r.error.clone()))
        .collect()
}

fn retried_then_done(error: &str) -> Vec<(&'static str, Option<String>)> {
    vec![("retry", Some(error.to_string())), ("done", None)]
}

#[tokio::test]
async fn a_boxed_error_is_retried_with_its_cause_chain() {
    let h = Harness::new();
    boxed::start(&h.queue()).await.expect("start");
    let report = h.drain().await.expect("drain");
    assert_eq!(
        outcomes(&report),
        retried_then_done("upload failed: disk full")
    );
}

#[tokio::test]
async fn a_boxed_message_is_retried_until_attempts_are_spent() {
    let h = Harness::new();
    boxed_message::start(&h.queue()).await.expect("start");
    let report = h.drain().await.expect("drain");
    let error = Some("a boxed error is retryable".to_string());
    assert_eq!(
        outcomes(&report),
        vec![
            ("retry", error.clone()),
            ("retry", error.clone()),
            (
                "dead",
                Some("gave up after 3 attempts: a boxed error is retryable".into())
            )
        ]
    );
}

#[tokio::test]
async fn an_anyhow_error_is_retried_with_its_context_chain() {
    let h = Harness::new();
    with_anyhow::start(&h.queue(), "q3".into())
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");
    assert_eq!(
        outcomes(&report),
        retried_then_done("sending report q3: upload failed: disk full")
    );
}

#[tokio::test]
async fn a_fatal_task_error_inside_anyhow_still_fails_the_task() {
    let h = Harness::new();
    anyhow_fatal::start(&h.queue(), String::new())
        .await
        .expect("start");
    anyhow_fatal_in_context::start(&h.queue())
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");
    let mut seen = outcomes(&report);
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "failed",
                Some("mailing the newsletter: the account is closed".to_string())
            ),
            ("failed", Some("no recipient".to_string())),
        ]
    );
}

#[tokio::test]
async fn a_fatal_task_error_boxed_by_question_mark_still_fails_the_task() {
    let h = Harness::new();
    boxed_fatal::start(&h.queue(), String::new())
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");
    assert_eq!(
        outcomes(&report),
        vec![("failed", Some("no recipient".to_string()))]
    );
}

#[tokio::test]
async fn a_task_error_keeps_its_kind() {
    let h = Harness::new();
    task_error::start(&h.queue(), true).await.expect("start");
    let report = h.drain().await.expect("drain");
    assert_eq!(
        outcomes(&report),
        vec![("failed", Some("no recipient".to_string()))]
    );

    task_error::start(&h.queue(), false).await.expect("start");
    let report = h.drain().await.expect("drain");
    assert_eq!(outcomes(&report), retried_then_done("smtp busy"));
}

#[tokio::test]
async fn a_std_error_is_retried_with_its_cause_chain() {
    let h = Harness::new();
    std_error::start(&h.queue()).await.expect("start");
    let report = h.drain().await.expect("drain");
    assert_eq!(
        outcomes(&report),
        retried_then_done("upload failed: disk full")
    );
}

/// The failing batch (3, 4) is retried from its cursor, the error recorded with its chain;
/// the run then walks to the end.
async fn walk(
    start: impl std::future::Future<Output = taskq_runtime::TaskId>,
    h: &Harness,
    error: &str,
) {
    let run = start.await;
    let report = h.drain().await.expect("drain");
    let retries: Vec<_> = report
        .runs
        .iter()
        .filter(|r| r.outcome == "retry")
        .map(|r| r.error.clone())
        .collect();
    assert_eq!(retries, vec![Some(error.to_string())], "{report:?}");
    let it = h.queue().iteration(run).await.expect("iteration");
    assert_eq!(it.processed, 5, "{it:?}");
}

#[tokio::test]
async fn an_iterative_task_may_return_a_boxed_error() {
    let h = Harness::new().state(Table(vec![1, 2, 3, 4, 5]));
    let q = h.queue();
    walk(
        async { walk_boxed::start(&q, All).await.expect("start") },
        &h,
        "upload failed: disk full",
    )
    .await;
}

#[tokio::test]
async fn an_iterative_task_may_return_an_anyhow_error() {
    let h = Harness::new().state(Table(vec![1, 2, 3, 4, 5]));
    let q = h.queue();
    walk(
        async {
            walk_anyhow::start(&q, All, "batch 3".into())
                .await
                .expect("start")
        },
        &h,
        "batch 3: upload failed: disk full",
    )
    .await;
}
