//! The metrics a worker emits (`taskq_runtime::metrics`): exact counts and labels of
//! started, claimed, done, retried, failed, dead and cancelled tasks, the histograms' sample counts
//! and the queue-depth gauge, through a recording recorder.
//!
//! The recorder is the process's global one, so this binary holds one test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use taskq_runtime::metrics as m;
use taskq_runtime::store::memory::MemoryStore;
use taskq_runtime::{task, Queue, Store, TaskError, TaskState, Worker};
use taskq_tests::wait_until;

const QUEUE: &str = "metered";
/// How many tasks the test starts.
const TASKS: usize = 5;

#[task(queue = "metered")]
async fn fine() -> Result<(), TaskError> {
    Ok(())
}

static FLAKY_RUNS: AtomicU32 = AtomicU32::new(0);

/// Fails its first attempt (retried), then succeeds.
#[task(queue = "metered", min_backoff = "10ms")]
async fn flaky() -> Result<(), TaskError> {
    if FLAKY_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(TaskError::retry("first try fails"));
    }
    Ok(())
}

/// Always fails: retried once, then dead.
#[task(queue = "metered", max_attempts = 2, min_backoff = "10ms")]
async fn doomed() -> Result<(), TaskError> {
    Err(TaskError::retry("never works"))
}

/// Fails for good at once.
#[task(queue = "metered")]
async fn refused() -> Result<(), TaskError> {
    Err(TaskError::fatal("bad input"))
}

/// Started after the worker stopped, and cancelled while pending.
#[task(queue = "metered")]
async fn cancelled_early() -> Result<(), TaskError> {
    Ok(())
}

/// Started after the worker stopped, claimed by hand, and cancelled twice while running.
#[task(queue = "metered")]
async fn cancelled_running() -> Result<(), TaskError> {
    Ok(())
}

fn name(task: &str) -> String {
    format!("{}::{task}", module_path!())
}

/// What the snapshots showed so far: a snapshot drains counters and histograms (and
/// reads 0 for a gauge not set since the last one), so counts and samples are added up,
/// and the gauges are those of the last snapshot in which the queue's gauges add up to
/// every task started (one whole setting by the worker).
#[derive(Default)]
struct Seen {
    counters: HashMap<(String, Vec<(String, String)>), u64>,
    samples: HashMap<(String, Vec<(String, String)>), usize>,
    gauges: HashMap<(String, Vec<(String, String)>), f64>,
}

impl Seen {
    fn take(&mut self, s: &Snapshotter) {
        let mut gauges = HashMap::new();
        for (key, _, _, value) in s.snapshot().into_vec() {
            let mut labels: Vec<(String, String)> = key
                .key()
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            let k = (key.key().name().to_string(), labels);
            match (key.kind(), value) {
                (MetricKind::Counter, DebugValue::Counter(n)) => {
                    *self.counters.entry(k).or_default() += n
                }
                (MetricKind::Histogram, DebugValue::Histogram(v)) => {
                    *self.samples.entry(k).or_default() += v.len()
                }
                (MetricKind::Gauge, DebugValue::Gauge(g)) => {
                    gauges.insert(k, g.into_inner());
                }
                (kind, v) => panic!("{k:?}: unexpected {kind:?} {v:?}"),
            }
        }
        if gauges.values().sum::<f64>() == TASKS as f64 {
            self.gauges = gauges;
        }
    }
}

fn task_labels(task: &str) -> Vec<(String, String)> {
    vec![
        ("queue".to_string(), QUEUE.to_string()),
        ("task".to_string(), name(task)),
    ]
}

#[tokio::test]
async fn a_worker_emits_exact_counts_labels_and_samples() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");
    m::describe();

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    let mut ids = vec![fine::start(&q).await.expect("start")];
    ids.push(fine::start(&q).await.expect("start"));
    ids.push(flaky::start(&q).await.expect("start"));
    ids.push(doomed::start(&q).await.expect("start"));
    ids.push(refused::start(&q).await.expect("start"));
    assert_eq!(ids.len(), TASKS);

    let w = Worker::builder(store.clone())
        .queues([QUEUE])
        .queue_depth_interval(Duration::from_millis(20))
        .build()
        .expect("worker")
        .spawn();
    wait_until("every task finished", Duration::from_secs(20), || async {
        let mut ended = 0;
        for id in &ids {
            if let Ok(Some(t)) = q.task(*id).await {
                if matches!(
                    t.info.state,
                    TaskState::Done | TaskState::Failed | TaskState::Dead
                ) {
                    ended += 1;
                }
            }
        }
        ended == ids.len()
    })
    .await;

    // The gauge follows the store's counts (set by the worker every 20 ms).
    let mut seen = Seen::default();
    let depth = |state: &str| {
        (
            m::QUEUE_DEPTH.to_string(),
            vec![
                ("queue".to_string(), QUEUE.to_string()),
                ("state".to_string(), state.to_string()),
            ],
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        seen.take(&snapshotter);
        let g = |s: &str| seen.gauges.get(&depth(s)).copied();
        if (g("done"), g("failed"), g("dead")) == (Some(3.0), Some(1.0), Some(1.0)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue-depth gauges never showed the finished counts: {:?}",
            seen.gauges
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every state of the queue is set, zero included.
    assert_eq!(seen.gauges.len(), 6, "{:?}", seen.gauges);

    // Shutting down waits for the outcome writer: every outcome is counted by then.
    w.shutdown().await.expect("shutdown");
    // A cancel is counted once, by `Queue::cancel` (a second one is refused, uncounted).
    let id = cancelled_early::start(&q).await.expect("start");
    q.cancel(id).await.expect("cancel");
    assert!(q.cancel(id).await.is_err());
    // A running task cancelled twice: counted once (the second cancel changes nothing).
    let id = cancelled_running::start(&q).await.expect("start");
    let claimed = store
        .claim(&taskq_runtime::store::ClaimRequest {
            queues: vec![QUEUE.into()],
            worker: "by hand".into(),
            limit: 1,
            lease: Duration::from_secs(600),
            now: taskq_runtime::Timestamp::now(),
        })
        .await
        .expect("claim");
    assert_eq!(claimed.iter().map(|c| c.lease.id).collect::<Vec<_>>(), [id]);
    for _ in 0..2 {
        assert!(matches!(
            q.cancel(id).await.expect("cancel"),
            taskq_runtime::CancelOutcome::Requested
                | taskq_runtime::CancelOutcome::AlreadyRequested
        ));
    }
    seen.take(&snapshotter);

    let count = |metric: &str, task: &str| {
        seen.counters
            .get(&(metric.to_string(), task_labels(task)))
            .copied()
            .unwrap_or(0)
    };
    let expected = [
        // task: started, claimed, done, retried, failed, dead
        ("fine", [2, 2, 2, 0, 0, 0]),
        ("flaky", [1, 2, 1, 1, 0, 0]),
        ("doomed", [1, 2, 0, 1, 0, 1]),
        ("refused", [1, 1, 0, 0, 1, 0]),
        ("cancelled_early", [1, 0, 0, 0, 0, 0]),
        ("cancelled_running", [1, 0, 0, 0, 0, 0]),
    ];
    for (task, want) in expected {
        let got = [
            m::STARTED,
            m::CLAIMED,
            m::DONE,
            m::RETRIED,
            m::FAILED,
            m::DEAD,
        ]
        .map(|metric| count(metric, task));
        assert_eq!(
            got, want,
            "{task}: started, claimed, done, retried, failed, dead"
        );
        let cancelled = u64::from(task.starts_with("cancelled_"));
        assert_eq!(count(m::CANCELLED, task), cancelled, "{task}");
        let samples = |metric: &str| {
            seen.samples
                .get(&(metric.to_string(), task_labels(task)))
                .copied()
                .unwrap_or(0)
        };
        // One duration and one latency per attempt (= per claim).
        assert_eq!(samples(m::ATTEMPT_DURATION), want[1] as usize, "{task}");
        assert_eq!(samples(m::START_TO_RUN), want[1] as usize, "{task}");
    }
    // Nothing else was counted: every counter key is one of those above.
    let names: Vec<String> = expected.iter().map(|(t, _)| name(t)).collect();
    for ((metric, labels), n) in &seen.counters {
        assert!(
            labels.iter().any(|(k, v)| k == "task" && names.contains(v)),
            "unexpected counter {metric} {labels:?} = {n}"
        );
    }
}
