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

/// Checks an effect log after a worker was killed: every task of `ids` (task `n` wrote `n`)
/// ran, and a task ran more than once only if its attempt history shows a lapsed lease,
/// i.e. it was in flight when its worker died. Returns how many extra runs there were.
pub async fn assert_only_in_flight_tasks_ran_twice(
    queue: &taskq_runtime::Queue,
    ids: &[taskq_runtime::TaskId],
    effects: &[u64],
) -> usize {
    let mut times: std::collections::BTreeMap<u64, u32> = std::collections::BTreeMap::new();
    for n in effects {
        *times.entry(*n).or_default() += 1;
    }
    assert_eq!(times.len(), ids.len(), "every task ran");
    let mut extra = 0;
    for (n, k) in times {
        if k > 1 {
            extra += (k - 1) as usize;
            let t = queue
                .task(ids[n as usize])
                .await
                .expect("task")
                .expect("exists");
            assert!(
                t.attempts.iter().any(|a| a.outcome == "lease lapsed"),
                "task {n} ran {k} times but was not in flight at the kill: {:?}",
                t.attempts
            );
        }
    }
    extra
}
