//! What `#[task]` and `#[iterative_task]` generate, exercised at run time on the memory
//! store: `NAME`, `start`, `builder` and its options, the payload layout, registration, and
//! a worker running the generated handlers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskq_runtime::store::memory::MemoryStore;
use taskq_runtime::{
    iterative_task, task, Context, Model, Queue, Registry, Store, TaskError, TaskState, Worker,
};

/// What the tasks below did, so the tests can see that the worker ran them.
static EFFECTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn effects() -> Vec<String> {
    EFFECTS.lock().expect("effects lock").clone()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Email {
    to: String,
    cc: Vec<String>,
}

#[task(queue = "macro_pass", max_attempts = 3, timeout = "30s")]
async fn send_email(ctx: Context, email: Email, subject: String) -> Result<(), TaskError> {
    EFFECTS.lock().expect("effects lock").push(format!(
        "send_email({}, {subject}) attempt {} as {}",
        email.to,
        ctx.attempt(),
        ctx.task_name()
    ));
    Ok(())
}

#[task(name = "custom::name", queue = "macro_pass", priority = 7)]
async fn no_context(n: u32, mut label: String) -> Result<(), std::io::Error> {
    label.push('!');
    EFFECTS
        .lock()
        .expect("effects lock")
        .push(format!("no_context({n}, {label})"));
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Student {
    id: i64,
    program: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StudentFilter {
    program: String,
}

struct Db(Vec<Student>);

impl Model for Student {
    type Key = i64;
    type Filter = StudentFilter;
    type Source = Db;

    fn key(&self) -> i64 {
        self.id
    }

    async fn batch(
        db: &Db,
        filter: &StudentFilter,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<Student>, TaskError> {
        Ok(db
            .0
            .iter()
            .filter(|s| s.program == filter.program && after.is_none_or(|a| s.id > *a))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[iterative_task(model = Student, batch_size = 3, queue = "macro_pass")]
async fn greet_students(
    _ctx: Context,
    students: Vec<Student>,
    greeting: String,
) -> Result<(), TaskError> {
    let mut fx = EFFECTS.lock().expect("effects lock");
    for s in students {
        fx.push(format!("{greeting} {}", s.id));
    }
    Ok(())
}

fn memory() -> (Arc<dyn Store>, Queue) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    (store.clone(), Queue::new(store))
}

fn email() -> Email {
    Email {
        to: "ada@example.org".into(),
        cc: vec!["bob@example.org".into()],
    }
}

#[test]
fn name_defaults_to_the_module_path_and_can_be_overridden() {
    assert_eq!(send_email::NAME, concat!(module_path!(), "::send_email"));
    assert_eq!(send_email::NAME, "macro_pass::send_email");
    assert_eq!(no_context::NAME, "custom::name");
    assert_eq!(greet_students::NAME, "macro_pass::greet_students");
}

#[test]
fn the_registry_finds_the_tasks_with_their_options() {
    let registry = Registry::collect().expect("no duplicate task names");
    let def = registry
        .get(send_email::NAME)
        .expect("send_email registered");
    assert_eq!(def.queue, "macro_pass");
    assert_eq!(def.options.max_attempts, 3);
    assert_eq!(def.options.timeout, Duration::from_secs(30));
    assert_eq!(def.options.min_backoff, Duration::from_secs(1));
    assert_eq!(def.options.max_backoff, Duration::from_secs(3600));
    assert_eq!(def.options.max_doublings, 16);
    assert_eq!(def.options.age_limit, None);
    assert!(def.file.ends_with("macro_pass.rs"), "{}", def.file);
    assert!(def.line > 0);

    let custom = registry
        .get("custom::name")
        .expect("renamed task registered");
    assert_eq!(custom.options.priority, 7);
    let iterative = registry
        .get(greet_students::NAME)
        .expect("iterative task registered");
    assert_eq!(
        iterative.kind,
        taskq_runtime::task::TaskKind::Iterative { batch_size: 3 }
    );
}

#[tokio::test]
async fn the_function_stays_directly_callable() {
    no_context(1, "direct".into()).await.expect("runs");
    assert!(effects().contains(&"no_context(1, direct!)".to_string()));
}

#[tokio::test]
async fn start_stores_a_payload_keyed_by_argument_name() {
    let (_store, queue) = memory();
    let id = send_email::start(&queue, email(), "Welcome".into())
        .await
        .expect("started");
    let task = queue.task(id).await.expect("store").expect("stored");
    assert_eq!(task.info.task, "macro_pass::send_email");
    assert_eq!(task.info.queue, "macro_pass");
    assert_eq!(task.info.priority, 0);
    assert_eq!(task.info.state, TaskState::Pending);
    assert_eq!(
        task.info.payload,
        serde_json::json!({
            "email": { "to": "ada@example.org", "cc": ["bob@example.org"] },
            "subject": "Welcome",
        })
    );
}

#[tokio::test]
async fn builder_options_reach_the_store() {
    let (_store, queue) = memory();
    let id = no_context::builder(5, "later".into())
        .delay(Duration::from_secs(60))
        .queue("elsewhere")
        .priority(-1)
        .name("once")
        .start(&queue)
        .await
        .expect("started");
    let info = queue.task(id).await.expect("store").expect("stored").info;
    assert_eq!(info.task, "custom::name");
    assert_eq!(info.queue, "elsewhere");
    assert_eq!(info.priority, -1);
    assert_eq!(info.unique_name.as_deref(), Some("once"));
    assert!(info.run_at > info.created_at);
    assert_eq!(
        info.payload,
        serde_json::json!({ "n": 5, "label": "later" })
    );

    // The default priority comes from the attribute.
    let id = no_context::start(&queue, 6, "now".into())
        .await
        .expect("started");
    let info = queue.task(id).await.expect("store").expect("stored").info;
    assert_eq!(info.priority, 7);

    // The de-duplication name is enforced.
    let again = no_context::builder(5, "later".into())
        .name("once")
        .start(&queue)
        .await;
    assert!(again.is_err(), "a live name is refused");
}

#[tokio::test]
async fn iterative_start_stores_filter_and_args() {
    let (_store, queue) = memory();
    let run = greet_students::start(
        &queue,
        StudentFilter {
            program: "gsoc2009".into(),
        },
        "hello".into(),
    )
    .await
    .expect("started");
    let info = queue.task(run).await.expect("store").expect("stored").info;
    assert_eq!(
        info.payload,
        serde_json::json!({
            "filter": { "program": "gsoc2009" },
            "args": { "greeting": "hello" },
        })
    );
    let it = queue.iteration(run).await.expect("iteration recorded");
    assert_eq!(it.filter, serde_json::json!({ "program": "gsoc2009" }));
}

/// Waits until every task in `ids` is done, or panics after a while.
async fn wait_done(queue: &Queue, ids: &[taskq_runtime::TaskId]) {
    for _ in 0..500 {
        let mut all = true;
        for id in ids {
            let info = queue.task(*id).await.expect("store").expect("stored").info;
            assert!(
                !matches!(info.state, TaskState::Dead | TaskState::Failed),
                "task {id} ended {:?}",
                info.state
            );
            all &= info.state == TaskState::Done;
        }
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("tasks not done in time");
}

#[tokio::test]
async fn a_worker_runs_the_generated_handlers() {
    let (store, queue) = memory();
    let students = (1..=7)
        .map(|id| Student {
            id,
            program: if id == 4 { "other" } else { "gsoc2009" }.into(),
        })
        .collect();
    let a = send_email::start(&queue, email(), "Via worker".into())
        .await
        .expect("started");
    let b = no_context::start(&queue, 9, "worker".into())
        .await
        .expect("started");
    let run = greet_students::start(
        &queue,
        StudentFilter {
            program: "gsoc2009".into(),
        },
        "hi".into(),
    )
    .await
    .expect("started");
    let worker = Worker::builder(store)
        .state(Db(students))
        .queues(["macro_pass"])
        .poll_interval(Duration::from_millis(10))
        .build()
        .expect("worker")
        .spawn();
    wait_done(&queue, &[a, b]).await;
    for _ in 0..500 {
        if queue.iteration(run).await.expect("iteration").processed == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await.expect("shutdown");

    let fx = effects();
    assert!(
        fx.contains(
            &"send_email(ada@example.org, Via worker) attempt 1 as macro_pass::send_email"
                .to_string()
        ),
        "{fx:?}"
    );
    assert!(fx.contains(&"no_context(9, worker!)".to_string()), "{fx:?}");
    for id in [1, 2, 3, 5, 6, 7] {
        assert!(fx.contains(&format!("hi {id}")), "{fx:?}");
    }
    assert!(!fx.contains(&"hi 4".to_string()), "{fx:?}");
    let it = queue.iteration(run).await.expect("iteration");
    assert_eq!(it.processed, 6);
}

#[tokio::test]
async fn a_task_declared_inside_a_function_works_there() {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Greeting {
        to: String,
    }

    /// Declared in a function body, next to a type of that body.
    #[task(queue = "in_fn", max_attempts = 2)]
    async fn greet_locally(greeting: Greeting, times: u32) -> Result<(), TaskError> {
        EFFECTS
            .lock()
            .expect("effects lock")
            .push(format!("greet_locally({}, {times})", greeting.to));
        Ok(())
    }

    // Named like a task at module level: the enclosing function is not part of the name.
    assert_eq!(greet_locally::NAME, "macro_pass::greet_locally");
    let registry = Registry::collect().expect("no duplicate task names");
    let def = registry
        .get(greet_locally::NAME)
        .expect("a task inside a function is registered");
    assert_eq!(def.queue, "in_fn");
    assert_eq!(def.options.max_attempts, 2);

    let h = taskq_runtime::testing::Harness::new();
    let greeting = Greeting { to: "ada".into() };
    greet_locally::start(&h.queue(), greeting.clone(), 1)
        .await
        .expect("start");
    greet_locally::builder(greeting, 2)
        .priority(3)
        .start(&h.queue())
        .await
        .expect("start");
    let report = h.drain().await.expect("drain");
    assert_eq!(report.count("done"), 2, "{report:?}");
    let fx = effects();
    assert!(fx.contains(&"greet_locally(ada, 1)".to_string()), "{fx:?}");
    assert!(fx.contains(&"greet_locally(ada, 2)".to_string()), "{fx:?}");

    // The function itself is still there, beside the helpers.
    greet_locally(Greeting { to: "bob".into() }, 3)
        .await
        .expect("direct call");
}
