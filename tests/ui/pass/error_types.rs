//! Every error type a task may declare, on `#[task]` and `#[iterative_task]`: `TaskError`,
//! a `std::error::Error`, boxed errors (with or without `Send + Sync`) and, with the runtime's
//! `anyhow` feature, `anyhow::Error` and `anyhow::Result<()>`; `?` on any error in their
//! bodies, and `?` on a `TaskError` in an `anyhow` one.
#![deny(warnings, missing_docs)]

use std::error::Error;

use serde::{Deserialize, Serialize};
use taskq_runtime::{iterative_task, task, Context, Model, Queue, StartError, TaskError};

/// App state.
pub struct Mailer;

/// `TaskError`, its kind kept.
#[task]
pub async fn with_task_error(fatal: bool) -> Result<(), TaskError> {
    if fatal {
        return Err(TaskError::fatal("no recipient"));
    }
    Ok(())
}

/// A `std::error::Error`.
#[task]
pub async fn with_io_error(path: String) -> std::io::Result<()> {
    std::fs::read(path)?;
    Ok(())
}

/// A box of any error, `Send + Sync`.
#[task]
pub async fn with_boxed(path: String) -> Result<(), Box<dyn Error + Send + Sync>> {
    let text = std::fs::read_to_string(path)?;
    let _: u32 = text.trim().parse()?;
    Err("a message converts too".into())
}

/// A box of any error, without `Send + Sync` (it is converted as soon as the task returns).
#[task]
pub async fn with_plain_box(n: String) -> Result<(), Box<dyn Error>> {
    let _: u32 = n.parse()?;
    Ok(())
}

/// `anyhow::Result<()>`, context added with `?`, a `TaskError` taken with `?`.
#[task]
pub async fn with_anyhow(ctx: Context, path: String) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let _mailer = ctx.state::<Mailer>()?;
    std::fs::read(&path).with_context(|| format!("reading {path}"))?;
    anyhow::ensure!(!path.is_empty(), "no path");
    Ok(())
}

/// `Result<(), anyhow::Error>`.
#[task]
pub async fn with_anyhow_error(n: u32) -> Result<(), anyhow::Error> {
    if n == 0 {
        anyhow::bail!("zero");
    }
    Ok(())
}

/// A number.
#[derive(Debug, Clone)]
pub struct Num(i64);

/// Every number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct All;

impl Model for Num {
    type Key = i64;
    type Filter = All;
    type Source = Mailer;

    fn key(&self) -> i64 {
        self.0
    }

    async fn batch(
        _: &Mailer,
        _: &All,
        _: Option<&i64>,
        _: usize,
    ) -> Result<Vec<Num>, TaskError> {
        Ok(Vec::new())
    }
}

/// An iterative task returning a boxed error.
#[iterative_task(model = Num)]
pub async fn walk_boxed(nums: Vec<Num>) -> Result<(), Box<dyn Error + Send + Sync>> {
    for n in nums {
        let _: u8 = u8::try_from(n.0)?;
    }
    Ok(())
}

/// An iterative task returning `anyhow::Result<()>`.
#[iterative_task(model = Num)]
pub async fn walk_anyhow(ctx: Context, nums: Vec<Num>, label: String) -> anyhow::Result<()> {
    let _ = (ctx, nums, label);
    Ok(())
}

/// Starts each.
pub async fn start_all(q: &Queue) -> Result<(), StartError> {
    with_task_error::start(q, false).await?;
    with_io_error::start(q, "a".into()).await?;
    with_boxed::start(q, "a".into()).await?;
    with_plain_box::start(q, "1".into()).await?;
    with_anyhow::start(q, "a".into()).await?;
    with_anyhow_error::start(q, 1).await?;
    walk_boxed::start(q, All).await?;
    walk_anyhow::start(q, All, "l".into()).await?;
    Ok(())
}

fn main() {}
