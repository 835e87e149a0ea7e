//! Starting a task inside the application's own PostgreSQL transaction.

use taskq_runtime::store::postgres::PostgresStore;
use taskq_runtime::store::TaskQuery;
use taskq_runtime::tokio_postgres::{self, NoTls};
use taskq_runtime::{task, OnConflict, Queue, StartError, TaskError};

#[task(queue = "welcome")]
async fn welcome(email: String) -> Result<(), TaskError> {
    let _ = email;
    Ok(())
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_no_task_and_a_committed_one_does() {
    let url = taskq_tests::postgres_url();
    let schema = taskq_tests::unique_name("tx");
    let store = std::sync::Arc::new(
        PostgresStore::open_in_schema(&url, &schema)
            .await
            .expect("open"),
    );
    let queue = Queue::new(store.clone());
    let (mut client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{schema}\".users (email text primary key)"
        ))
        .await
        .expect("app table");

    // Rolled back: neither the user nor the task.
    let tx = client.transaction().await.expect("begin");
    tx.execute(
        &format!("INSERT INTO \"{schema}\".users VALUES ($1)"),
        &[&"bob@example.org"],
    )
    .await
    .expect("insert");
    welcome::builder("bob@example.org".into())
        .start_in(&store, &tx)
        .await
        .expect("start in tx");
    tx.rollback().await.expect("rollback");
    assert!(queue
        .list(&TaskQuery::default())
        .await
        .expect("list")
        .is_empty());

    // Committed: both.
    let tx = client.transaction().await.expect("begin");
    tx.execute(
        &format!("INSERT INTO \"{schema}\".users VALUES ($1)"),
        &[&"ada@example.org"],
    )
    .await
    .expect("insert");
    let id = welcome::builder("ada@example.org".into())
        .name("welcome-ada")
        .start_in(&store, &tx)
        .await
        .expect("start in tx");
    // Not visible to others before the commit.
    assert!(queue.task(id).await.expect("task").is_none());
    tx.commit().await.expect("commit");
    let t = queue
        .task(id)
        .await
        .expect("task")
        .expect("visible after commit");
    assert_eq!(
        t.info.payload,
        serde_json::json!({ "email": "ada@example.org" })
    );

    // The unique name is enforced inside transactions too, and the transaction stays usable.
    let tx = client.transaction().await.expect("begin");
    let again = welcome::builder("ada@example.org".into())
        .name("welcome-ada")
        .start_in(&store, &tx)
        .await;
    assert!(again.is_err(), "{again:?}");
    tx.rollback().await.expect("rollback");

    // A unique key (`taskq_runtime::unique`) too: refused as a `Duplicate` naming the
    // committed holder; replace is refused inside a transaction.
    let held = welcome::builder("bob@example.org".into())
        .unique_args()
        .start(&queue)
        .await
        .expect("a keyed start");
    let tx = client.transaction().await.expect("begin");
    let again = welcome::builder("bob@example.org".into())
        .unique_args()
        .start_in(&store, &tx)
        .await;
    assert!(
        matches!(again, Err(StartError::Duplicate { existing: Some(id), .. }) if id == held),
        "{again:?}"
    );
    let replace = welcome::builder("bob@example.org".into())
        .unique_args()
        .on_conflict(OnConflict::Replace)
        .start_in(&store, &tx)
        .await;
    assert!(
        matches!(replace, Err(StartError::Unique { .. })),
        "{replace:?}"
    );
    tx.rollback().await.expect("rollback");
}
