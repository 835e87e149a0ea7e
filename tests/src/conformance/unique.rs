//! Conformance cases of tasks unique by their arguments (issue 13, `taskq_runtime::unique`):
//! a refused duplicate and its holder, the key free again after its period, replace
//! (debounce) of a pending task, uniqueness inside `start_many`, and concurrent starts of
//! one key, through the `Queue` on a virtual clock.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskq_runtime::store::{Outcome, Store, TaskQuery, TaskState};
use taskq_runtime::{
    task, Admission, Clock, OnConflict, Queue, StartError, Started, TaskError, TaskId,
};

use super::{at, finish_one, req, T0};

/// Unique by `to` only, for an hour after it ends.
#[task(unique = ["to"], unique_for = "1h")]
async fn remind(to: String, text: String) -> Result<(), TaskError> {
    let _ = (to, text);
    Ok(())
}

/// Unique by every argument, only while live (no `unique_for`).
#[task(unique = "args")]
async fn reindex(table: String, full: bool) -> Result<(), TaskError> {
    let _ = (table, full);
    Ok(())
}

/// A debounced task: a start replaces the pending one with the same `doc`.
#[task(unique = ["doc"], on_conflict = "replace")]
async fn save_draft(doc: u64, body: String) -> Result<(), TaskError> {
    let _ = (doc, body);
    Ok(())
}

fn queue(s: &Arc<dyn Store>) -> Queue {
    Queue::with_clock(s.clone(), Clock::manual(T0))
}

async fn all_tasks(s: &dyn Store) -> Vec<taskq_runtime::store::TaskInfo> {
    s.list_tasks(&TaskQuery {
        with_payload: true,
        ..TaskQuery::default()
    })
    .await
    .expect("list")
}

fn duplicate_of(r: Result<TaskId, StartError>) -> (String, Option<TaskId>) {
    match r {
        Err(StartError::Duplicate { key, existing, .. }) => (key, existing),
        other => panic!("expected StartError::Duplicate, got {other:?}"),
    }
}

/// A second start of the same key is refused with the holder's id while the first is
/// pending, and while it runs; other keys (another value, another queue) are not.
pub async fn unique_args_refuse_a_live_duplicate(s: Arc<dyn Store>) {
    let q = queue(&s);
    let first = remind::start(&q, "ada".into(), "hi".into())
        .await
        .expect("first start");
    // Same `to`, other text: the same key (`unique = ["to"]`).
    let (key, existing) = duplicate_of(remind::start(&q, "ada".into(), "hello".into()).await);
    assert_eq!(existing, Some(first));
    let info = s.task(first).await.expect("task").expect("exists").info;
    assert_eq!(info.unique_name.as_deref(), Some(key.as_str()));
    assert!(
        key.starts_with("args-sha256:") && key.len() == 12 + 64,
        "{key}"
    );
    // Another value, or the same one on another queue: other keys.
    remind::start(&q, "bob".into(), "hi".into())
        .await
        .expect("another value");
    remind::builder("ada".into(), "hi".into())
        .queue("elsewhere")
        .start(&q)
        .await
        .expect("another queue");
    // `unique = "args"`: every argument counts.
    let r1 = reindex::start(&q, "users".into(), true).await.expect("r1");
    reindex::start(&q, "users".into(), false)
        .await
        .expect("another argument value");
    assert_eq!(
        duplicate_of(reindex::start(&q, "users".into(), true).await).1,
        Some(r1)
    );
    assert_eq!(all_tasks(&*s).await.len(), 5, "nothing more was stored");
    // Running: still refused.
    let c = s.claim(&req(&[], 10, 30_000, T0)).await.expect("claim");
    assert_eq!(c.len(), 5);
    assert_eq!(state_of(&*s, first).await, TaskState::Running);
    assert_eq!(
        duplicate_of(remind::start(&q, "ada".into(), "again".into()).await).1,
        Some(first)
    );
    // A name and a key on one task is a mistake, refused before the store.
    let both = remind::builder("cy".into(), "x".into())
        .name("n")
        .start(&q)
        .await;
    assert!(matches!(both, Err(StartError::Unique { .. })), "{both:?}");
    let fake = reindex::builder("t".into(), true)
        .unique_by(["nope"])
        .start(&q)
        .await;
    match fake {
        Err(StartError::Unique { reason, .. }) => assert!(reason.contains("`nope`"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

async fn state_of(s: &dyn Store, id: TaskId) -> TaskState {
    s.task(id).await.expect("task").expect("exists").info.state
}

/// After the task ends (in any finished state), its key stays taken for `unique_for`
/// from the end, and is free again exactly at its end; without `unique_for`, at once.
pub async fn unique_key_is_free_again_after_its_period(s: Arc<dyn Store>) {
    let q = queue(&s);
    let first = remind::start(&q, "ada".into(), "hi".into())
        .await
        .expect("first");
    let live = reindex::start(&q, "users".into(), true)
        .await
        .expect("live");
    let c = s.claim(&req(&[], 10, 30_000, T0)).await.expect("claim");
    assert_eq!(c.len(), 2);
    for claimed in &c {
        let outcome = if claimed.lease.id == first {
            // A failed task holds its key too.
            Outcome::Failed { error: "no".into() }
        } else {
            Outcome::Done
        };
        finish_one(&*s, claimed, outcome, at(1_000))
            .await
            .expect("finish");
    }
    assert_eq!(state_of(&*s, first).await, TaskState::Failed);
    // Only while live: free as soon as it ended.
    q.clock().advance_to(at(1_000));
    let again = reindex::start(&q, "users".into(), true)
        .await
        .expect("free once ended");
    assert_ne!(again, live);
    // One hour from the end (at 1 s): taken until 3_601_000 ms, free at it.
    q.clock().advance_to(at(3_600_999));
    assert_eq!(
        duplicate_of(remind::start(&q, "ada".into(), "x".into()).await).1,
        Some(first)
    );
    q.clock().advance_to(at(3_601_000));
    let second = remind::start(&q, "ada".into(), "x".into())
        .await
        .expect("free after the period");
    assert_ne!(second, first);
    // A deleted holder's tombstone keeps the key: refused, with no task to name (the
    // failed one's own hour has passed).
    s.delete(second, at(3_601_000)).await.expect("delete");
    assert_eq!(
        duplicate_of(remind::start(&q, "ada".into(), "y".into()).await).1,
        None
    );
}

/// Replace: a start whose key a pending task holds gives that task the new arguments
/// and due time and returns `Replaced` with its id; a running holder refuses it.
pub async fn replace_updates_a_pending_tasks_arguments_and_due_time(s: Arc<dyn Store>) {
    let q = queue(&s);
    let first = save_draft::builder(7, "a".into())
        .delay(Duration::from_secs(10))
        .submit(&q)
        .await
        .expect("first");
    let Started::Inserted(id) = first else {
        panic!("{first:?}")
    };
    let second = save_draft::builder(7, "ab".into())
        .delay(Duration::from_secs(20))
        .submit(&q)
        .await
        .expect("second");
    assert_eq!(second, Started::Replaced(id));
    // The macro's `start` of a replacing task says which, too.
    let third = save_draft::start(&q, 7, "abc".into()).await.expect("third");
    assert_eq!(third, Started::Replaced(id));
    let tasks = all_tasks(&*s).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].id, id);
    assert_eq!(tasks[0].payload, json!({ "doc": 7, "body": "abc" }));
    assert_eq!(tasks[0].run_at, T0, "due now, as the last start said");
    assert_eq!(tasks[0].state, TaskState::Pending);
    // Another doc is another task.
    let other = save_draft::start(&q, 8, "z".into()).await.expect("other");
    assert!(matches!(other, Started::Inserted(o) if o != id));
    // A replaced task runs with the last arguments.
    let c = s.claim(&req(&[], 10, 30_000, T0)).await.expect("claim");
    let mine = c.iter().find(|c| c.lease.id == id).expect("claimed");
    assert_eq!(mine.payload, json!({ "doc": 7, "body": "abc" }));
    // Running: refused, naming it; nothing changed.
    match save_draft::start(&q, 7, "late".into()).await {
        Err(StartError::Duplicate { existing, .. }) => assert_eq!(existing, Some(id)),
        other => panic!("{other:?}"),
    }
    let d = s.task(id).await.expect("task").expect("exists").info;
    assert_eq!(d.payload, json!({ "doc": 7, "body": "abc" }));
    // Replace on the builder of any unique task; a delay moves the due time later too.
    let r = reindex::builder("t".into(), false)
        .on_conflict(OnConflict::Replace)
        .submit(&q)
        .await
        .expect("insert");
    let later = reindex::builder("t".into(), false)
        .on_conflict(OnConflict::Replace)
        .delay(Duration::from_secs(60))
        .submit(&q)
        .await
        .expect("replace");
    assert_eq!(later, Started::Replaced(r.id()));
    let info = s.task(r.id()).await.expect("task").expect("exists").info;
    assert_eq!(info.run_at, at(60_000));
}

/// `start_many` is all or nothing: a key repeated in the batch, or held by a stored
/// task, refuses the whole call with `Duplicate`; distinct keys are all stored.
pub async fn start_many_keeps_keys_unique(s: Arc<dyn Store>) {
    let q = queue(&s);
    let r = q
        .start_many([
            remind::builder("ada".into(), "1".into()),
            remind::builder("bob".into(), "2".into()),
            remind::builder("ada".into(), "3".into()),
        ])
        .await;
    match r {
        Err(StartError::Duplicate { existing, task, .. }) => {
            assert_eq!(
                existing, None,
                "a repeat within the batch has no stored holder"
            );
            assert_eq!(task, remind::NAME);
        }
        other => panic!("{other:?}"),
    }
    assert!(all_tasks(&*s).await.is_empty(), "nothing was stored");
    let ids = q
        .start_many([
            remind::builder("ada".into(), "1".into()),
            remind::builder("bob".into(), "2".into()),
        ])
        .await
        .expect("distinct keys");
    assert_eq!(ids.len(), 2);
    let r = q
        .start_many([
            remind::builder("cy".into(), "1".into()),
            remind::builder("bob".into(), "again".into()),
        ])
        .await;
    assert_eq!(duplicate_of(r.map(|v| v[0])).1, Some(ids[1]));
    assert_eq!(all_tasks(&*s).await.len(), 2, "cy was not stored either");
    let r = q.start_many([save_draft::builder(1, "x".into())]).await;
    assert!(matches!(r, Err(StartError::Unique { .. })), "{r:?}");
    assert_eq!(all_tasks(&*s).await.len(), 2);
}

/// `start_many_skip_duplicates` stores every builder whose key is free and reports each
/// skipped one with its holder: a key held in the store, a repeat within the call, and a
/// task without a key beside them; one admission per builder, in order.
pub async fn start_many_skip_duplicates_starts_the_rest(s: Arc<dyn Store>) {
    let q = queue(&s);
    let held = remind::start(&q, "ada".into(), "first".into())
        .await
        .expect("ada");
    let out = q
        .start_many_skip_duplicates([
            remind::builder("ada".into(), "again".into()),
            remind::builder("bob".into(), "1".into()),
            reindex::builder("users".into(), true),
            remind::builder("bob".into(), "2".into()),
            remind::builder("cy".into(), "1".into()),
        ])
        .await
        .expect("start");
    assert_eq!(out.len(), 5, "{out:?}");
    match &out[0] {
        Admission::Duplicate { key, existing } => {
            assert!(key.starts_with("args-sha256:"), "{key}");
            assert_eq!(*existing, Some(held));
        }
        other => panic!("ada is held in the store: {other:?}"),
    }
    let bob = out[1].started().expect("bob is started");
    assert!(out[2].started().is_some(), "{out:?}");
    assert!(
        matches!(&out[3], Admission::Duplicate { existing, .. } if *existing == Some(bob)),
        "the second bob repeats the first: {out:?}"
    );
    let cy = out[4].started().expect("cy is started");
    let stored = all_tasks(&*s).await;
    assert_eq!(stored.len(), 4, "ada, bob, users and cy: {stored:?}");
    for id in [held, bob, cy] {
        assert!(stored.iter().any(|t| t.id == id), "{id} stored");
    }
    // All free: the same as start_many; a replace-mode builder is refused before anything.
    let all = q
        .start_many_skip_duplicates([remind::builder("dee".into(), "1".into())])
        .await
        .expect("dee");
    assert!(all[0].started().is_some());
    let r = q
        .start_many_skip_duplicates([
            remind::builder("eve".into(), "1".into()),
            save_draft::builder(1, "x".into()),
        ])
        .await;
    assert!(matches!(r, Err(StartError::Unique { .. })), "{r:?}");
    assert_eq!(all_tasks(&*s).await.len(), 5, "eve was not stored");
}

/// Many concurrent starts of one key store exactly one task: the others are refused
/// (or, replacing, replace it); on every store.
pub async fn concurrent_starts_of_one_key_insert_one(s: Arc<dyn Store>) {
    const STARTS: usize = 12;
    let q = queue(&s);
    let mut handles = Vec::new();
    for i in 0..STARTS {
        let q = q.clone();
        handles.push(tokio::spawn(async move {
            remind::start(&q, "ada".into(), format!("{i}")).await
        }));
    }
    let mut inserted = Vec::new();
    for h in handles {
        match h.await.expect("join") {
            Ok(id) => inserted.push(id),
            Err(StartError::Duplicate { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(inserted.len(), 1, "{inserted:?}");
    assert_eq!(all_tasks(&*s).await.len(), 1);
    let mut handles = Vec::new();
    for i in 0..STARTS {
        let q = q.clone();
        handles.push(tokio::spawn(async move {
            save_draft::start(&q, 1, format!("{i}")).await
        }));
    }
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.expect("join").expect("a replacing start succeeds"));
    }
    let fresh: Vec<_> = outcomes.iter().filter(|o| !o.replaced()).collect();
    assert_eq!(fresh.len(), 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| o.id() == fresh[0].id()),
        "{outcomes:?}"
    );
    assert_eq!(all_tasks(&*s).await.len(), 2);
}
