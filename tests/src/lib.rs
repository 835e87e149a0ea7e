//! Shared helpers for the taskq test suite: the store conformance suite and the stores
//! each test runs on.

pub mod cluster;
pub mod conformance;
pub mod corrupt;
pub mod faulty;
pub mod models;
pub mod pg_models;
pub mod proxy;
pub mod served;
pub mod tasks;
pub mod values;

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
/// `./test.sh` (through `.ci/postgres.sh`) starts a server and sets it. Without one, a
/// Postgres test fails with this message: it never passes by skipping.
pub fn postgres_url() -> String {
    match std::env::var("TASKQ_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => panic!(
            "TASKQ_TEST_POSTGRES_URL is not set: run the tests with ./test.sh (it starts PostgreSQL), \
             or `source .ci/postgres.sh` first, or point it at a server you run"
        ),
    }
}

/// A name no other test (in this or an earlier run) uses: for a schema or a file.
pub fn unique_name(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{n}_{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

/// The URL of a fresh, empty PostgreSQL store: its own schema in the test database.
pub fn postgres_store_url() -> String {
    let url = postgres_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}schema={}", unique_name("t"))
}

/// A fresh PostgreSQL store in a schema of its own.
pub async fn postgres_store() -> Arc<dyn Store> {
    let url = postgres_store_url();
    taskq_runtime::store::open(&url)
        .await
        .unwrap_or_else(|e| panic!("open the test PostgreSQL store at {url}: {e}"))
}

/// Polls `f` every 20 ms until it is true; fails the test, naming `what`, after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: std::time::Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether every task of `ids` exists and is in `state` (a `wait_until` condition).
pub async fn all_in_state(
    queue: &taskq_runtime::Queue,
    ids: impl IntoIterator<Item = taskq_runtime::TaskId>,
    state: taskq_runtime::TaskState,
) -> bool {
    for id in ids {
        match queue.task(id).await {
            Ok(Some(t)) if t.info.state == state => {}
            _ => return false,
        }
    }
    true
}
