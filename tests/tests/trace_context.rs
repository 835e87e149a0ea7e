//! Trace propagation with OpenTelemetry (`taskq_runtime::trace`, feature `opentelemetry`):
//! the span of each attempt is a child of the span that started the task, in its trace.
//!
//! The subscriber (a `tracing_opentelemetry` layer over an SDK tracer that keeps finished
//! spans in memory) is the process's global one, so this binary holds one test (see
//! tracing_spans.rs for why a thread-local subscriber is not used).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use taskq_runtime::store::memory::MemoryStore;
use taskq_runtime::{task, Queue, Store, TaskError, TaskId, TaskState, Worker};
use taskq_tests::wait_until;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[task(queue = "traced_otel")]
async fn background() -> Result<(), TaskError> {
    tracing::info!("working");
    Ok(())
}

/// Keeps every finished span.
#[derive(Clone, Debug, Default)]
struct Keep(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Keep {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().expect("lock").extend(batch);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_span_is_a_child_of_the_span_that_started_the_task() {
    let kept = Keep::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(kept.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("taskq-test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let q = Queue::new(store.clone());
    // Started inside a request's span: the attempt joins its trace.
    let (in_span, request_trace, request_span) = async {
        let sc = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .clone();
        let id = background::start(&q).await.expect("start");
        (id, sc.trace_id(), sc.span_id())
    }
    .instrument(tracing::info_span!("http.request"))
    .await;
    assert_ne!(request_trace, TraceId::INVALID);
    // Started with a context received from elsewhere (an incoming `traceparent` header).
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let given = background::builder()
        .trace_parent(TP)
        .start(&q)
        .await
        .expect("start");
    // Started outside any span: no context is stored, the attempt starts a trace of its own.
    let bare = background::start(&q).await.expect("start");

    let w = Worker::builder(store)
        .queues(["traced_otel"])
        .build()
        .expect("worker")
        .spawn();
    wait_until("all done", Duration::from_secs(20), || async {
        let mut done = 0;
        for id in [in_span, given, bare] {
            if q.task(id).await.ok().flatten().map(|t| t.info.state) == Some(TaskState::Done) {
                done += 1;
            }
        }
        done == 3
    })
    .await;
    w.shutdown().await.expect("shutdown");
    provider.force_flush().expect("flush");

    let spans = kept.0.lock().expect("lock").clone();
    let attempt = |id: TaskId| {
        spans
            .iter()
            .find(|s| {
                s.name == "taskq.attempt"
                    && s.attributes
                        .iter()
                        .any(|kv| kv.key.as_str() == "id" && kv.value.as_str() == id.to_string())
            })
            .unwrap_or_else(|| panic!("no attempt span for task {id} in {spans:#?}"))
    };
    let a = attempt(in_span);
    assert_eq!(a.span_context.trace_id(), request_trace);
    assert_eq!(a.parent_span_id, request_span);
    assert!(a.parent_span_is_remote, "the parent comes from the store");
    // The task's own log line is inside the attempt, in the same trace.
    assert_eq!(a.events.len(), 1, "{:?}", a.events);

    let g = attempt(given);
    assert_eq!(
        g.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex")
    );
    assert_eq!(
        g.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").expect("hex")
    );

    let b = attempt(bare);
    assert_eq!(b.parent_span_id, SpanId::INVALID);
    assert_ne!(b.span_context.trace_id(), request_trace);
}
