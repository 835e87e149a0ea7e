//! The largest payload, through the typed `start()` (issue 10): an argument that makes the
//! payload larger than `value::MAX_PAYLOAD_BYTES` is refused at `start()` with an error
//! naming the task, the argument, the size and the limit, and nothing is stored; one that
//! fits is stored. The same limit on every store is pinned by the conformance case
//! `payload_size_limit_is_the_same_on_every_store`.

use taskq_runtime::store::{StoreError, TaskQuery};
use taskq_runtime::value::MAX_PAYLOAD_BYTES;
use taskq_runtime::{task, Queue, StartError, TaskError};

#[task]
async fn upload(name: String, data: String) -> Result<(), TaskError> {
    let _ = (name, data);
    Ok(())
}

#[tokio::test]
async fn start_refuses_a_payload_over_the_limit_naming_the_argument() {
    let queue = Queue::open("memory://").await.expect("open");
    // `{"name":"a","data":"..."}`: 21 bytes around the data.
    let around = r#"{"name":"a","data":""}"#.len();
    let fits = "x".repeat(MAX_PAYLOAD_BYTES - around);
    upload::start(&queue, "a".into(), fits)
        .await
        .expect("a payload of exactly the limit is stored");

    let over = "x".repeat(MAX_PAYLOAD_BYTES - around + 1);
    let err = upload::start(&queue, "a".into(), over)
        .await
        .expect_err("one byte more is refused");
    let StartError::Store(StoreError::InvalidValue(msg)) = &err else {
        panic!("expected InvalidValue, got {err:?}");
    };
    for part in [
        "upload",
        "argument `data`",
        &(MAX_PAYLOAD_BYTES + 1).to_string(),
        &MAX_PAYLOAD_BYTES.to_string(),
    ] {
        assert!(msg.contains(part), "the error names {part}: {msg}");
    }
    let stored = queue.list(&TaskQuery::default()).await.expect("list");
    assert_eq!(stored.len(), 1, "nothing stored for the refused start");
}
