//! Values through the typed `start()` of `#[task]` and `#[iterative_task]`, on every store
//! (issue 7): what is accepted arrives bit-identical; NaN, ±infinity and values nested too
//! deep are refused at `start()`, naming the argument, and nothing is stored.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use taskq_runtime::store::{StoreError, TaskQuery};
use taskq_runtime::testing::Harness;
use taskq_runtime::{iterative_task, task, Model, Queue, StartError, Store, TaskError};
use taskq_tests::values::{bit_difference, nested, sample_floats, sample_strings};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
}

#[task]
async fn takes_float(x: f64) -> Result<(), TaskError> {
    let _ = x;
    Ok(())
}

#[task]
async fn takes_point(label: String, p: Point) -> Result<(), TaskError> {
    let _ = (label, p);
    Ok(())
}

#[task]
async fn takes_floats(v: Vec<f64>) -> Result<(), TaskError> {
    let _ = v;
    Ok(())
}

#[task]
async fn takes_json(v: serde_json::Value) -> Result<(), TaskError> {
    let _ = v;
    Ok(())
}

/// Fails fatally unless every argument arrived bit-identical to the samples.
#[task]
async fn exact(
    floats: Vec<f64>,
    ints: (i64, i64, u64),
    strings: Vec<String>,
) -> Result<(), TaskError> {
    let want: Vec<u64> = sample_floats().into_iter().map(f64::to_bits).collect();
    let got: Vec<u64> = floats.into_iter().map(f64::to_bits).collect();
    if got != want {
        return Err(TaskError::fatal(format!(
            "floats changed: {got:#x?} != {want:#x?}"
        )));
    }
    if ints != (i64::MIN, i64::MAX, u64::MAX) {
        return Err(TaskError::fatal(format!("ints changed: {ints:?}")));
    }
    if strings != sample_strings() {
        return Err(TaskError::fatal(format!("strings changed: {strings:?}")));
    }
    Ok(())
}

/// A model over a list of floats in the worker's state; its key (the cursor) is the float.
struct Reading {
    value: f64,
}

/// The filter of [`Reading`] runs: the test checks it arrives bit-identical.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ReadingFilter {
    floats: Vec<f64>,
    strings: Vec<String>,
}

/// The readings a run walks (worker state).
struct Readings(Vec<f64>);

impl Model for Reading {
    type Key = f64;
    type Filter = ReadingFilter;
    type Source = Readings;

    fn key(&self) -> f64 {
        self.value
    }

    async fn batch(
        source: &Readings,
        filter: &ReadingFilter,
        after: Option<&f64>,
        limit: usize,
    ) -> Result<Vec<Reading>, TaskError> {
        let want = serde_json::to_value(ReadingFilter {
            floats: sample_floats(),
            strings: sample_strings(),
        })?;
        let got = serde_json::to_value(filter)?;
        if !filter.floats.is_empty() {
            if let Some(d) = bit_difference(&got, &want) {
                return Err(TaskError::fatal(format!("the filter changed: {d}")));
            }
        }
        // Walks the list in order; `after` is only ever a key this model returned.
        let start = match after {
            None => 0,
            Some(a) => source
                .0
                .iter()
                .position(|v| v.to_bits() == a.to_bits())
                .map_or(source.0.len(), |i| i + 1),
        };
        Ok(source.0[start.min(source.0.len())..]
            .iter()
            .take(limit)
            .map(|v| Reading { value: *v })
            .collect())
    }
}

#[iterative_task(model = Reading, batch_size = 10, max_attempts = 2)]
async fn walk_readings(items: Vec<Reading>, scale: f64) -> Result<(), TaskError> {
    let _ = (items, scale);
    Ok(())
}

fn empty_filter() -> ReadingFilter {
    ReadingFilter {
        floats: vec![],
        strings: vec![],
    }
}

async fn stored(q: &Queue) -> usize {
    q.list(&TaskQuery {
        limit: 1000,
        ..TaskQuery::default()
    })
    .await
    .expect("list")
    .len()
}

/// The refusal names the argument and says why; nothing was stored.
#[track_caller]
fn assert_refused(r: Result<taskq_runtime::TaskId, StartError>, want_arg: &str, says: &[&str]) {
    match r {
        Err(StartError::Serialize { arg, reason, .. }) => {
            assert_eq!(arg, want_arg, "{reason}");
            for s in says {
                assert!(reason.contains(s), "`{reason}` should say `{s}`");
            }
        }
        other => panic!("expected a refusal naming `{want_arg}`, got {other:?}"),
    }
}

// ---- the cases, each run on every store ---------------------------------------------

async fn nan_is_refused_naming_the_argument(s: Arc<dyn Store>) {
    let q = Queue::new(s);
    assert_refused(takes_float::start(&q, f64::NAN).await, "x", &["NaN"]);
    assert_refused(
        takes_float::builder(f64::INFINITY).start(&q).await,
        "x",
        &["infinity"],
    );
    assert_eq!(stored(&q).await, 0, "nothing is stored");
}

async fn infinity_inside_a_struct_or_vec_is_refused(s: Arc<dyn Store>) {
    let q = Queue::new(s);
    let p = Point {
        x: 1.0,
        y: f64::INFINITY,
    };
    assert_refused(
        takes_point::start(&q, "a".into(), p).await,
        "p",
        &["infinity", "p.y"],
    );
    assert_refused(
        takes_floats::builder(vec![1.0, f64::NEG_INFINITY])
            .start(&q)
            .await,
        "v",
        &["-infinity", "v[1]"],
    );
    // start_many: one bad builder among good ones stores nothing.
    let r = q
        .start_many([
            takes_floats::builder(vec![1.0]),
            takes_floats::builder(vec![f64::NAN]),
        ])
        .await;
    match r {
        Err(StartError::Serialize { arg, .. }) => assert_eq!(arg, "v"),
        other => panic!("start_many with a NaN: {other:?}"),
    }
    assert_eq!(stored(&q).await, 0, "nothing is stored");
}

async fn a_value_nested_200_deep_is_refused(s: Arc<dyn Store>) {
    let q = Queue::new(s);
    assert_refused(
        takes_json::start(&q, nested(200)).await,
        "v",
        &["nest", "levels"],
    );
    assert_eq!(stored(&q).await, 0, "nothing is stored");
}

async fn iterative_starts_refuse_nan_in_filter_and_arguments(s: Arc<dyn Store>) {
    let q = Queue::new(s);
    let bad = ReadingFilter {
        floats: vec![f64::NAN],
        strings: vec![],
    };
    assert_refused(
        walk_readings::start(&q, bad, 1.0).await,
        "filter",
        &["NaN", "filter.floats[0]"],
    );
    assert_refused(
        walk_readings::start(&q, empty_filter(), f64::NEG_INFINITY).await,
        "scale",
        &["-infinity"],
    );
    assert_eq!(stored(&q).await, 0, "nothing is stored");
    assert!(q.iterations(10).await.expect("iterations").is_empty());
}

async fn typed_values_arrive_bit_identical(s: Arc<dyn Store>) {
    let h = Harness::with_store(s).state(Readings(vec![1.0, 2.0]));
    let q = h.queue();
    let id = exact::start(
        &q,
        sample_floats(),
        (i64::MIN, i64::MAX, u64::MAX),
        sample_strings(),
    )
    .await
    .expect("start");
    let filter = ReadingFilter {
        floats: sample_floats(),
        strings: sample_strings(),
    };
    let run = walk_readings::start(&q, filter, -0.0).await.expect("start");
    let report = h.drain().await.expect("drain");
    for t in [id, run] {
        let d = q.task(t).await.expect("task").expect("exists");
        assert_eq!(
            d.info.state,
            taskq_runtime::TaskState::Done,
            "{:?}",
            report.of(t)
        );
    }
}

async fn a_cursor_that_cannot_be_stored_fails_the_step(s: Arc<dyn Store>) {
    let h = Harness::with_store(s).state(Readings(vec![1.0, f64::NAN]));
    let q = h.queue();
    let run = walk_readings::start(&q, empty_filter(), 1.0)
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");
    let runs = report.of(run);
    assert_eq!(runs.len(), 1, "fatal, not retried: {runs:?}");
    assert_eq!(runs[0].outcome, "failed");
    let err = runs[0].error.clone().unwrap_or_default();
    assert!(err.contains("cursor") && err.contains("NaN"), "{err}");
    let it = q.iteration(run).await.expect("iteration");
    assert_eq!(it.state, taskq_runtime::store::RunState::Failed);
    assert_eq!(
        it.processed, 0,
        "the batch whose cursor cannot be stored did not run"
    );
}

async fn names_with_a_nul_byte_are_refused(s: Arc<dyn Store>) {
    let q = Queue::new(s);
    for b in [
        takes_float::builder(1.0).queue("mail\0"),
        takes_float::builder(1.0).name("daily\0report"),
    ] {
        match b.start(&q).await {
            Err(StartError::Store(StoreError::InvalidValue(m))) => {
                assert!(m.contains("contains a NUL byte"), "{m}")
            }
            other => panic!("a NUL byte in a name: {other:?}"),
        }
    }
    assert_eq!(stored(&q).await, 0, "nothing is stored");
}

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(taskq_tests::memory_store().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(taskq_tests::sqlite_store().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(taskq_tests::postgres_store().await).await;
                }
            )*
        }
    };
}

on_every_store!(
    nan_is_refused_naming_the_argument,
    infinity_inside_a_struct_or_vec_is_refused,
    a_value_nested_200_deep_is_refused,
    iterative_starts_refuse_nan_in_filter_and_arguments,
    typed_values_arrive_bit_identical,
    a_cursor_that_cannot_be_stored_fails_the_step,
    names_with_a_nul_byte_are_refused,
);
