//! Tasks shared by the test binaries and the crash-test worker process.

use std::io::Write;
use std::time::Duration;

use taskq_runtime::{task, Context, TaskError};

/// Where [`append_line`] writes: an append-only log of the numbers it processed.
#[derive(Debug, Clone)]
pub struct EffectLog(pub std::path::PathBuf);

/// Appends `n` to the worker's [`EffectLog`], after pretending to work for `work_ms`.
#[task(
    queue = "crash",
    timeout = "30s",
    min_backoff = "100ms",
    max_backoff = "1s"
)]
pub async fn append_line(ctx: Context, n: u64, work_ms: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(work_ms)).await;
    let log = ctx.state::<EffectLog>()?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log.0)?;
    // One write call per line: with O_APPEND it lands whole even when several workers
    // (threads or processes) append at once; `writeln!` would issue two writes.
    f.write_all(format!("{n}\n").as_bytes())?;
    Ok(())
}

/// Reads the numbers an [`EffectLog`] holds, one per line.
pub fn read_log(path: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}
