//! A payload that is not JSON (a hand-edited SQLite row) sends its task to dead with the
//! reason; it does not make every claim fail, and the other tasks run.

use taskq_runtime::testing::Harness;
use taskq_runtime::{task, Queue, TaskError, TaskState};

#[task]
async fn hello(name: String) -> Result<(), TaskError> {
    let _ = name;
    Ok(())
}

#[tokio::test]
async fn a_corrupt_payload_goes_dead_and_the_rest_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corrupt.db");
    let url = format!("sqlite://{}", path.display());
    let q = Queue::open(&url).await.expect("open");
    let bad = hello::start(&q, "bad".into()).await.expect("start");
    let good = hello::start(&q, "good".into()).await.expect("start");
    {
        let c = rusqlite::Connection::open(&path).expect("open the file");
        let n = c
            .execute(
                "UPDATE taskq_tasks SET payload = '{not json' WHERE id = ?1",
                [bad.0],
            )
            .expect("corrupt it");
        assert_eq!(n, 1);
    }
    let h = Harness::with_store(q.store().clone());
    let report = h.drain().await.expect("drain");
    assert_eq!(report.count("done"), 1);
    assert_eq!(report.count("dead"), 1);
    let t = q.task(bad).await.expect("task").expect("exists");
    assert_eq!(t.info.state, TaskState::Dead);
    let err = t.info.last_error.unwrap_or_default();
    assert!(err.contains("does not decode"), "{err}");
    assert_eq!(
        q.task(good)
            .await
            .expect("task")
            .expect("exists")
            .info
            .state,
        TaskState::Done
    );
}

/// The same kind as on PostgreSQL (`postgres_corrupt_payload.rs`): a payload nested deeper
/// than the JSON parser allows and a cursor that is not JSON, beside five plain tasks.
#[tokio::test]
async fn undecodable_rows_go_dead_alone_and_management_calls_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corrupt.db");
    let q = Queue::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    let case = taskq_tests::corrupt::setup(&q).await;
    {
        let c = rusqlite::Connection::open(&path).expect("open the file");
        let deep = taskq_tests::corrupt::deep_json(200);
        let n = c
            .execute(
                "UPDATE taskq_tasks SET payload = ?2 WHERE id = ?1",
                rusqlite::params![case.bad.0, format!("{{\"name\": {deep}}}")],
            )
            .expect("corrupt the payload");
        assert_eq!(n, 1);
        let n = c
            .execute(
                "UPDATE taskq_iterations SET cursor = '{not json' WHERE run = ?1",
                [case.run.0],
            )
            .expect("corrupt the cursor");
        assert_eq!(n, 1);
    }
    taskq_tests::corrupt::check(&q, &case).await;
}
