//! The PostgreSQL twin of `sqlite_corrupt_payload.rs`: rows that cannot be decoded (a
//! payload nested deeper than the JSON parser allows, a cursor with a lone surrogate,
//! written by hand with raw SQL) go dead alone with their reason; the claim that meets
//! them hands out the other tasks, each run exactly once; `task()`, `list()` and
//! `iteration()` show the raw text instead of failing.

use std::sync::Arc;

use taskq_runtime::store::postgres::PostgresStore;
use taskq_runtime::tokio_postgres::{self, NoTls};
use taskq_runtime::Queue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_rows_go_dead_alone_and_management_calls_work() {
    let url = taskq_tests::postgres_url();
    let schema = taskq_tests::unique_name("corrupt");
    let store = PostgresStore::open_in_schema(&url, &schema)
        .await
        .expect("open");
    let q = Queue::new(Arc::new(store));
    let case = taskq_tests::corrupt::setup(&q).await;

    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    let deep = taskq_tests::corrupt::deep_json(200);
    // Untyped literals: the same statements work whatever JSON type the columns have.
    let n = client
        .execute(
            &format!(
                "UPDATE \"{schema}\".taskq_tasks SET payload = '{{\"name\": {deep}}}' WHERE id = $1"
            ),
            &[&case.bad.0],
        )
        .await
        .expect("corrupt the payload");
    assert_eq!(n, 1);
    let n = client
        .execute(
            &format!(
                "UPDATE \"{schema}\".taskq_iterations SET cursor = '\"\\ud800\"' WHERE run_id = $1"
            ),
            &[&case.run.0],
        )
        .await
        .expect("corrupt the cursor");
    assert_eq!(n, 1);
    taskq_tests::corrupt::check(&q, &case).await;
}
