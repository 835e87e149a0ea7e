//! Property test: arbitrary finite f64 bit patterns, i64s, u64s and Strings (any `char`,
//! NUL and controls included) cross every store bit-identical, as a task's payload
//! (enqueue, claim, `task()`), an iteration's filter and a checkpoint's cursor.
//!
//! Bounded for CI: 32 cases per store, each carrying many values in one task.

use std::sync::Arc;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use taskq_runtime::store::{Checkpoint, ClaimRequest, NewIteration, NewTask, Store};
use taskq_tests::conformance::{new_task, T0};
use taskq_tests::values::bit_difference;

/// Cases per store.
const CASES: u32 = 32;

/// Many values of each kind, so that 32 cases cover a lot of ground.
fn values() -> impl Strategy<Value = Value> {
    let float = any::<u64>()
        .prop_map(f64::from_bits)
        .prop_filter("JSON numbers are finite", |f| f.is_finite());
    let string = vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect::<String>());
    (
        vec(float, 1..64),
        vec(any::<i64>(), 1..16),
        vec(any::<u64>(), 1..16),
        vec(string, 1..16),
    )
        .prop_map(|(f, i, u, s)| json!({ "f": f, "i": i, "u": u, "s": s }))
}

async fn round_trip(s: &dyn Store, v: &Value) -> Result<(), String> {
    let mut plain = new_task("prop", 0);
    plain.payload = json!({ "v": v });
    let iter = NewTask {
        task: "prop::walk".into(),
        payload: json!({ "filter": v, "args": {} }),
        iteration: Some(NewIteration { filter: v.clone() }),
        ..new_task("prop", 0)
    };
    let ids = s
        .enqueue(vec![plain.clone(), iter.clone()], T0)
        .await
        .map_err(|e| format!("enqueue: {e}"))?;
    let c = s
        .claim(&ClaimRequest {
            queues: vec!["prop".into()],
            worker: "w".into(),
            limit: 2,
            lease: Duration::from_secs(3600),
            now: T0,
        })
        .await
        .map_err(|e| format!("claim: {e}"))?;
    if c.len() != 2 {
        return Err(format!("claimed {} of 2 tasks", c.len()));
    }
    let check = |what: &str, got: &Value, want: &Value| match bit_difference(got, want) {
        Some(d) => Err(format!("{what}: {d}")),
        None => Ok(()),
    };
    check("payload (claim)", &c[0].payload, &plain.payload)?;
    check("iterative payload (claim)", &c[1].payload, &iter.payload)?;
    let d = s
        .task(ids[0])
        .await
        .map_err(|e| format!("task(): {e}"))?
        .ok_or("task() found nothing")?;
    check("payload (task())", &d.info.payload, &plain.payload)?;
    s.checkpoint(
        c[1].lease,
        Checkpoint {
            cursor: v.clone(),
            processed: 1,
            total: None,
        },
        T0,
    )
    .await
    .map_err(|e| format!("checkpoint: {e}"))?;
    let it = s
        .iteration(ids[1])
        .await
        .map_err(|e| format!("iteration(): {e}"))?
        .ok_or("iteration() found nothing")?;
    check("filter", &it.filter, v)?;
    check("cursor", &it.cursor.unwrap_or_default(), v)
}

fn property_holds_on(open: impl std::future::Future<Output = Arc<dyn Store>>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let store = rt.block_on(open);
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        // No regression files in the repository: a failure prints its minimal input.
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&values(), |v| {
        rt.block_on(round_trip(&*store, &v))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("on the {} store: {e}", store.backend());
    }
}

#[test]
fn arbitrary_values_cross_the_memory_store_bit_identical() {
    property_holds_on(taskq_tests::memory_store());
}

#[test]
fn arbitrary_values_cross_the_sqlite_store_bit_identical() {
    property_holds_on(taskq_tests::sqlite_store());
}

#[test]
fn arbitrary_values_cross_the_postgres_store_bit_identical() {
    property_holds_on(taskq_tests::postgres_store());
}
