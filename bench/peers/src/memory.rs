//! The memory references: a tokio mpsc channel drained by 8 consumers, handing each
//! message over as it is (`tokio-mpsc`, the primitive) or running each as a task of its own
//! (`tokio-mpsc-spawn`, as taskq's worker runs each task).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::sync::{mpsc, Mutex};

use crate::{emit, rate, BoxError};

/// Consumers draining the channel.
const CONSUMERS: usize = 8;

/// The fewest messages a run drains: 2N = 40,000 take a channel a few milliseconds, too
/// short a time to measure on a loaded machine (one descheduled thread swings the figure
/// tenfold), so the channel gets at least this many.
const MIN_MESSAGES: u64 = 2_000_000;

/// 2N messages (at least [`MIN_MESSAGES`]) sent into an unbounded channel (no consumer yet: `started_bulk_per_s`), then
/// drained by 8 tokio tasks sharing the receiver behind a mutex, each taking one message
/// per lock (`recv`): `processed_per_s` runs until every message has been received and
/// handled (a no-op and a counter) and every consumer has ended. With `spawn`, a consumer
/// runs each message as a spawned tokio task and awaits it (8 in flight).
pub async fn throughput(n: u64, spawn: bool) -> Result<(), BoxError> {
    let total = (2 * n).max(MIN_MESSAGES);
    let (tx, rx) = mpsc::unbounded_channel::<i64>();
    let t = Instant::now();
    for i in 0..total {
        tx.send(i as i64)?;
    }
    let started = rate(total, t.elapsed().as_secs_f64());
    drop(tx); // consumers stop once the channel is empty and closed

    let rx = Arc::new(Mutex::new(rx));
    let handled = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let rx = rx.clone();
            let handled = handled.clone();
            tokio::spawn(async move {
                loop {
                    let Some(m) = rx.lock().await.recv().await else {
                        return Ok::<(), tokio::task::JoinError>(());
                    };
                    if spawn {
                        let h = handled.clone();
                        tokio::spawn(async move {
                            std::hint::black_box(m);
                            h.fetch_add(1, Ordering::Relaxed);
                        })
                        .await?;
                    } else {
                        std::hint::black_box(m);
                        handled.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for c in consumers {
        c.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    let done = handled.load(Ordering::Relaxed);
    let system = if spawn {
        "tokio-mpsc-spawn"
    } else {
        "tokio-mpsc"
    };
    if done != total {
        return Err(format!("{system}: handled {done} of {total} messages").into());
    }
    emit(json!({
        "workload": "throughput",
        "system": system,
        "store": "memory",
        "tasks": total / 2,
        "processed_tasks": total,
        "started_bulk_per_s": started,
        "processed_per_s": rate(total, secs),
        "consumers": CONSUMERS,
        "per_recv": 1,
        "task_per_message": spawn,
    }));
    Ok(())
}
