//! Tasks unique by their arguments: every form of `unique`, `unique_for` and
//! `on_conflict`, and what `start` returns for each.
#![deny(warnings, missing_docs)]

use taskq_runtime::{task, Queue, StartError, Started, TaskError, TaskId};

/// Unique by every argument, while live.
#[task(unique = "args")]
pub async fn reindex(table: String) -> Result<(), TaskError> {
    let _ = table;
    Ok(())
}

/// Unique by some arguments (a raw identifier's name without `r#`), for a day after it ends.
#[task(unique = ["to", "type"], unique_for = "1d", on_conflict = "refuse")]
pub async fn notify(to: String, r#type: String, body: String) -> Result<(), TaskError> {
    let _ = (to, r#type, body);
    Ok(())
}

/// Debounced: a start replaces the pending one.
#[task(unique = ["doc"], unique_for = "0s", on_conflict = "replace")]
pub async fn save(doc: u64, body: String) -> Result<(), TaskError> {
    let _ = (doc, body);
    Ok(())
}

/// Starts each; a replacing task's `start` says whether it replaced.
pub async fn demo(queue: &Queue) -> Result<(), StartError> {
    let _: TaskId = reindex::start(queue, "users".into()).await?;
    match notify::start(queue, "ada".into(), "welcome".into(), "hi".into()).await {
        Ok(_) | Err(StartError::Duplicate { .. }) => {}
        Err(e) => return Err(e),
    }
    let s: Started = save::start(queue, 7, "draft".into()).await?;
    let _: TaskId = s.id();
    Ok(())
}

fn main() {}
