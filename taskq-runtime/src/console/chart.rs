//! The throughput chart of the queues page: tasks done and failed (failed or dead) per
//! minute, as an inline SVG drawn on the server (no script, no inline style: its colours
//! come from the stylesheet through classes). It holds numbers and times only, never a
//! value from a task, so the template includes it unescaped.
//!
//! Its numbers come from [`Store::finished_per_minute`](crate::store::Store::finished_per_minute),
//! which reads every row finished in the window: an hour of a busy store is millions of
//! rows, and the page refreshes every few seconds. So the console counts each settled
//! minute once ([`Counted`]), each refresh recounts only the last two minutes, and the
//! whole window is recounted every [`RECOUNT_EVERY`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::store::{FinishedMinute, StoreError, MINUTE_MS};
use crate::time::Timestamp;
use crate::Queue;

/// How long a settled minute's count is kept before the whole window is counted again
/// (5 minutes): a retry, delete or prune of a task finished in a settled minute (by this
/// console, the CLI or the application) shows in the chart within this time. One full
/// count of an hour of 100,000 finished tasks took 40–160 ms.
pub(crate) const RECOUNT_EVERY: i64 = 5 * MINUTE_MS;

/// The minutes a console has counted and that no longer change on their own: every
/// minute before the one before the current one (a finish is stored moments after its
/// time, so the minute just past may still grow), and when they were counted, so that a
/// change to an old minute (a retry, a delete, a prune) is seen within [`RECOUNT_EVERY`].
#[derive(Debug, Default)]
pub(crate) struct Counted(Mutex<Settled>);

/// [`Counted`]'s content.
#[derive(Debug, Default)]
struct Settled {
    /// When the oldest count still kept was made (ms since the epoch, the queue's clock).
    since: Option<i64>,
    /// Each settled minute's count, by the minute's start.
    minutes: BTreeMap<i64, FinishedMinute>,
}

/// Tasks done, failed and dead per minute over the last `minutes` minutes (the current
/// one last), as [`Queue::throughput`] gives them, asking the store only for the minutes
/// not yet settled in `counted`.
pub(crate) async fn last_minutes(
    queue: &Queue,
    counted: &Counted,
    minutes: u32,
) -> Result<Vec<FinishedMinute>, StoreError> {
    let current = FinishedMinute::minute_of(queue.clock().now()).0;
    let first = current.saturating_sub(i64::from(minutes.saturating_sub(1)) * MINUTE_MS);
    let settled = current.saturating_sub(MINUTE_MS);
    let now = queue.clock().now().0;
    let lock = || counted.0.lock().unwrap_or_else(|p| p.into_inner());
    // The first minute of the window not counted yet: from there on, ask the store.
    let from = {
        let mut known = lock();
        if known
            .since
            .is_some_and(|t| now.saturating_sub(t) >= RECOUNT_EVERY || now < t)
        {
            *known = Settled::default();
        }
        let mut m = first;
        while m < settled && known.minutes.contains_key(&m) {
            m += MINUTE_MS;
        }
        m
    };
    let found: BTreeMap<i64, FinishedMinute> = queue
        .store()
        .finished_per_minute(
            Timestamp(from),
            Timestamp(current.saturating_add(MINUTE_MS)),
        )
        .await?
        .into_iter()
        .map(|m| (m.minute.0, m))
        .collect();
    let zero = |m: i64| FinishedMinute {
        minute: Timestamp(m),
        ..FinishedMinute::default()
    };
    let mut known = lock();
    // A clock moved back (or far ahead) leaves nothing stale behind.
    known.minutes.retain(|m, _| *m >= first && *m < settled);
    if from < settled && known.since.is_none() {
        known.since = Some(now);
    }
    let mut out = Vec::with_capacity(minutes as usize);
    let mut m = first;
    while m <= current {
        let v = if m < from {
            known.minutes.get(&m).copied().unwrap_or_else(|| zero(m))
        } else {
            found.get(&m).copied().unwrap_or_else(|| zero(m))
        };
        if m >= from && m < settled {
            known.minutes.insert(m, v);
        }
        out.push(v);
        m += MINUTE_MS;
    }
    Ok(out)
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 10.0;

/// The chart of `minutes` (oldest first): one stacked bar a minute, done below, failed
/// and dead above, each with a `<title>` giving the minute (UTC) and its counts.
pub(crate) fn svg(minutes: &[FinishedMinute]) -> String {
    let max = minutes
        .iter()
        .map(|m| m.done + m.failed + m.dead)
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT) / minutes.len().max(1) as f64;
    let bar = (slot - 2.0).max(1.0);
    let y = |n: u64| n as f64 * plot_h / max as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="throughput-chart" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="throughput-title" xmlns="http://www.w3.org/2000/svg"><title id="throughput-title">Tasks done and failed per minute, last {} minutes</title>"#,
        minutes.len()
    );
    let base = HEIGHT - BOTTOM;
    let _ = write!(
        s,
        r#"<line class="axis" x1="{LEFT}" y1="{base}" x2="{WIDTH}" y2="{base}"/><line class="axis" x1="{LEFT}" y1="{TOP}" x2="{WIDTH}" y2="{TOP}"/><text x="{}" y="{}" text-anchor="end">{max}</text><text x="{}" y="{base}" text-anchor="end">0</text>"#,
        LEFT - 4.0,
        TOP + 4.0,
        LEFT - 4.0,
    );
    for (i, m) in minutes.iter().enumerate() {
        let x = LEFT + i as f64 * slot + 1.0;
        let failed = m.failed + m.dead;
        let (hd, hf) = (y(m.done), y(failed));
        let label = clock(m.minute.0);
        let _ = write!(
            s,
            r#"<g class="minute" data-minute="{}" data-done="{}" data-failed="{failed}"><title>{label} UTC: {} done, {} failed, {} dead</title>"#,
            m.minute.0, m.done, m.done, m.failed, m.dead
        );
        if m.done > 0 {
            let _ = write!(
                s,
                r#"<rect class="done" x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{hd:.1}"/>"#,
                base - hd
            );
        }
        if failed > 0 {
            let _ = write!(
                s,
                r#"<rect class="failed" x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{hf:.1}"/>"#,
                base - hd - hf
            );
        }
        s.push_str("</g>");
    }
    if let (Some(first), Some(last)) = (minutes.first(), minutes.last()) {
        let _ = write!(
            s,
            r#"<text x="{LEFT}" y="{}">{}</text><text x="{WIDTH}" y="{}" text-anchor="end">{} UTC</text>"#,
            HEIGHT - 4.0,
            clock(first.minute.0),
            HEIGHT - 4.0,
            clock(last.minute.0)
        );
    }
    s.push_str("</svg>");
    s
}

/// `HH:MM` of a time in milliseconds since the epoch, UTC.
fn clock(ms: i64) -> String {
    let mins = ms.div_euclid(60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02}", mins / 60, mins % 60)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{ClaimRequest, Finish, NewTask, Outcome, Store};
    use crate::time::Clock;

    /// Stores a task and ends it done at `at`.
    async fn done_at(s: &dyn Store, at: Timestamp) {
        let t = NewTask {
            task: "t".into(),
            queue: "q".into(),
            payload: serde_json::json!({}),
            priority: 0,
            run_at: at,
            unique_name: None,
            tombstone: std::time::Duration::ZERO,
            iteration: None,
            trace: None,
        };
        s.enqueue(vec![t], at).await.expect("enqueue");
        let c = s
            .claim(&ClaimRequest {
                queues: vec![],
                worker: "w".into(),
                limit: 1,
                lease: std::time::Duration::from_secs(30),
                now: at,
            })
            .await
            .expect("claim");
        let f = Finish {
            lease: c[0].lease,
            outcome: Outcome::Done,
            started_at: at,
        };
        s.finish(vec![f], "w", at).await.expect("finish");
    }

    #[tokio::test]
    async fn settled_minutes_are_counted_once_and_the_window_matches_the_queue() {
        let t0 = 1_800_000_000_000; // a minute's start
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let clock = Clock::manual(Timestamp(t0 + 10 * MINUTE_MS + 5));
        let queue = Queue::with_clock(store.clone(), clock.clone());
        done_at(&*store, Timestamp(t0 + 2 * MINUTE_MS)).await;
        done_at(&*store, Timestamp(t0 + 9 * MINUTE_MS)).await;
        let counted = Counted::default();
        let first = last_minutes(&queue, &counted, 5).await.expect("chart");
        assert_eq!(first, queue.throughput(5).await.expect("throughput"));
        assert_eq!(
            first.iter().map(|m| m.done).collect::<Vec<_>>(),
            [0, 0, 0, 1, 0]
        );
        // Minutes 6, 7 and 8 are settled now: a finish written into one of them later is
        // not counted again, while the last two minutes are recounted.
        done_at(&*store, Timestamp(t0 + 7 * MINUTE_MS)).await;
        done_at(&*store, Timestamp(t0 + 9 * MINUTE_MS + 1)).await;
        done_at(&*store, Timestamp(t0 + 10 * MINUTE_MS + 1)).await;
        let again = last_minutes(&queue, &counted, 5).await.expect("chart");
        assert_eq!(
            again.iter().map(|m| m.done).collect::<Vec<_>>(),
            [0, 0, 0, 2, 1]
        );
        // A minute later the window moves on by one.
        clock.advance_to(Timestamp(t0 + 11 * MINUTE_MS));
        let moved = last_minutes(&queue, &counted, 5).await.expect("chart");
        assert_eq!(
            moved.iter().map(|m| m.done).collect::<Vec<_>>(),
            [0, 0, 2, 1, 0]
        );
        assert_eq!(moved[0].minute, Timestamp(t0 + 7 * MINUTE_MS));
        // A finish written into a settled minute (a retry's, say) shows once the window
        // is recounted, RECOUNT_EVERY after the first count, and not before.
        let counted = Counted::default();
        let before = last_minutes(&queue, &counted, 15).await.expect("chart");
        let at8 = |ms: &[FinishedMinute]| {
            ms.iter()
                .find(|m| m.minute.0 == t0 + 8 * MINUTE_MS)
                .map(|m| m.done)
        };
        assert_eq!(at8(&before), Some(0));
        done_at(&*store, Timestamp(t0 + 8 * MINUTE_MS)).await;
        let kept = last_minutes(&queue, &counted, 15).await.expect("chart");
        assert_eq!(
            at8(&kept),
            Some(0),
            "settled minutes are not recounted at once"
        );
        clock.advance_to(Timestamp(t0 + 11 * MINUTE_MS + RECOUNT_EVERY));
        let recounted = last_minutes(&queue, &counted, 15).await.expect("chart");
        assert_eq!(at8(&recounted), Some(1), "{recounted:?}");
        assert_eq!(recounted, queue.throughput(15).await.expect("throughput"));
    }

    #[test]
    fn one_group_a_minute_scaled_to_the_busiest() {
        let m = |i: i64, done, failed, dead| FinishedMinute {
            minute: Timestamp(i * 60_000),
            done,
            failed,
            dead,
        };
        let s = svg(&[m(0, 0, 0, 0), m(1, 3, 1, 0), m(2, 1, 0, 3)]);
        assert_eq!(s.matches("<g class=\"minute\"").count(), 3);
        assert_eq!(s.matches("class=\"done\"").count(), 2);
        assert_eq!(s.matches("class=\"failed\"").count(), 2);
        assert!(s.contains(r#"data-done="3" data-failed="1""#), "{s}");
        assert!(s.contains("00:01 UTC: 3 done, 1 failed, 0 dead"), "{s}");
        assert!(
            s.contains(">4</text>"),
            "the scale's top is the busiest minute: {s}"
        );
        assert_eq!(clock(-60_000), "23:59");
    }
}
