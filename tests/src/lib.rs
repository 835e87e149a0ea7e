//! Shared helpers for the taskq test suite: the store conformance suite and the stores
//! each test runs on.

pub mod conformance;
pub mod models;
pub mod tasks;

use std::sync::Arc;

use taskq_runtime::Store;

/// A fresh memory store.
pub async fn memory_store() -> Arc<dyn Store> {
    Arc::new(taskq_runtime::store::memory::MemoryStore::new())
}

/// A fresh SQLite store in its own temporary directory (kept alive for the process).
pub async fn sqlite_store() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("taskq.db");
    // Keep the directory for the life of the test process.
    std::mem::forget(dir);
    taskq_runtime::store::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open sqlite store")
}

/// The URL of the test PostgreSQL server, from `TASKQ_TEST_POSTGRES_URL`.
///
/// `.ci/postgres.sh` starts a server and sets it. Without one: under `CI=true` this
/// panics (a Postgres test must fail, never pass by skipping); elsewhere it returns `None`
/// and the caller prints why it did nothing.
pub fn postgres_url() -> Option<String> {
    match std::env::var("TASKQ_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false) {
                panic!("CI=true but TASKQ_TEST_POSTGRES_URL is not set: start PostgreSQL with .ci/postgres.sh (the README's test command does)");
            }
            eprintln!("TASKQ_TEST_POSTGRES_URL is not set: run the tests through the README's test command to include PostgreSQL");
            None
        }
    }
}
