//! The tracing span of each attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskq_runtime::store::memory::MemoryStore;
use taskq_runtime::{task, Queue, Store, TaskError, TaskState, Worker};
use taskq_tests::wait_until;

#[task(queue = "traced")]
async fn quick(ms: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

/// Captures `taskq.attempt` spans and the fields recorded on them.
#[derive(Clone, Default)]
struct SpanCapture(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanCapture {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "taskq.attempt" {
            let mut v = Visit::default();
            attrs.record(&mut v);
            self.0.lock().expect("lock").push(v.0);
        }
    }

    fn on_record(
        &self,
        _id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut v = Visit::default();
        values.record(&mut v);
        self.0.lock().expect("lock").push(v.0);
    }
}

#[derive(Default)]
struct Visit(String);

impl tracing::field::Visit for Visit {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!("{}={} ", field.name(), value));
    }
}

/// The capture is the process's global subscriber, and this file holds the only test of its
/// binary: a thread-local subscriber (`set_default`) in a binary whose other tests run on
/// other threads lost the race for the span's callsite interest once in a full run (no
/// span seen).
#[tokio::test]
async fn every_attempt_has_a_tracing_span() {
    use tracing_subscriber::layer::SubscriberExt;
    let cap = SpanCapture::default();
    let subscriber = tracing_subscriber::registry().with(cap.clone());
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    let id = quick::start(&q, 1).await.expect("start");
    let w = Worker::builder(store)
        .queues(["traced"])
        .build()
        .expect("worker")
        .spawn();
    wait_until("done", Duration::from_secs(5), || async {
        q.task(id).await.ok().flatten().map(|t| t.info.state) == Some(TaskState::Done)
    })
    .await;
    w.shutdown().await.expect("shutdown");
    let seen = cap.0.lock().expect("lock").join("|");
    assert!(seen.contains(&format!("task={}", quick::NAME)), "{seen}");
    assert!(seen.contains(&format!("id={id}")), "{seen}");
    assert!(seen.contains("attempt=1"), "{seen}");
    assert!(seen.contains("outcome=done"), "{seen}");
}
