//! A binary in which no task is registered (this test uses nothing from the test crate's
//! task library) cannot build a worker: it could run nothing, and says so.

use taskq_runtime::store::memory::MemoryStore;
use taskq_runtime::{Worker, WorkerError};

#[test]
fn a_worker_with_no_registered_task_is_refused_with_a_hint() {
    let err = Worker::builder(std::sync::Arc::new(MemoryStore::new()))
        .build()
        .expect_err("no task is registered here");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            WorkerError::Config {
                setting: "tasks",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("no task is registered in this binary") && msg.contains("#[task]"),
        "{msg}"
    );
}
