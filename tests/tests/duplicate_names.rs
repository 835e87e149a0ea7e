//! Two tasks with one name are refused when the worker starts, naming both places.

use std::sync::Arc;

use taskq_runtime::store::memory::MemoryStore;
use taskq_runtime::{task, TaskError, Worker};

#[task(name = "shared::name")]
async fn first() -> Result<(), TaskError> {
    Ok(())
}

mod other {
    use taskq_runtime::{task, TaskError};

    #[task(name = "shared::name")]
    pub async fn second() -> Result<(), TaskError> {
        Ok(())
    }
}

#[test]
fn duplicate_task_names_are_refused_naming_both_sources() {
    let _ = (first, other::second);
    let err = Worker::builder(Arc::new(MemoryStore::new()))
        .build()
        .expect_err("two tasks share a name");
    let msg = err.to_string();
    assert!(msg.contains("`shared::name`"), "{msg}");
    assert!(msg.contains("duplicate_names.rs:9"), "{msg}");
    assert!(msg.contains("duplicate_names.rs:17"), "{msg}");
    assert!(taskq_runtime::Registry::collect().is_err());
}
