//! # taskq
//!
//! Background tasks declared with attribute macros. Write an `async fn`, put `#[task]` on
//! it, and get registration, a typed `NAME::start(&queue, args..)` helper that rustc
//! checks, retries with backoff, deadlines, named queues and a management API.
//! `#[iterative_task(model = M)]` walks every entity of a model in batches, chained across
//! executions with a persisted cursor.
//!
//! ```no_run
//! use taskq_runtime::{task, Context, Queue, TaskError, Worker};
//!
//! #[task(queue = "email", max_attempts = 5, timeout = "30s")]
//! async fn send_email(ctx: Context, to: String, subject: String) -> Result<(), TaskError> {
//!     if to.is_empty() {
//!         return Err(TaskError::fatal("no recipient"));
//!     }
//!     println!("attempt {} of {}: mail {to}: {subject}", ctx.attempt(), ctx.task_name());
//!     Ok(())
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = Queue::open("sqlite://taskq.db").await?;
//! let id = send_email::start(&queue, "ada@example.org".into(), "Welcome".into()).await?;
//! Worker::builder(queue.store().clone()).queues(["email"]).build()?.run_until_shutdown().await?;
//! # let _ = id; Ok(()) }
//! ```
//!
//! Delivery is at least once: a task whose worker died runs again when its lease lapses,
//! so task bodies should be idempotent.

pub mod error;
pub mod iterative;
pub mod model;
pub mod queue;
pub mod registry;
pub mod store;
pub mod task;
pub mod testing;
pub mod time;
pub mod worker;

pub use error::{StartError, TaskError};
pub use model::Model;
pub use queue::{Queue, TaskBuilder};
pub use registry::Registry;
pub use store::{Store, StoreError, TaskId, TaskState};
pub use task::{Context, TaskOptions};
pub use taskq_macros::{iterative_task, task};
pub use time::{Clock, Timestamp};
pub use worker::{Worker, WorkerBuilder};

/// What generated code reaches through absolute paths. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::error::{DecodeError, StartError, TaskError};
    pub use crate::iterative::{iterative_handler, BatchFuture};
    pub use crate::model::Model;
    pub use crate::queue::{Queue, TaskBuilder};
    pub use crate::store::TaskId;
    pub use crate::task::{
        plain_future, ArgsDecoder, ArgsEncoder, BoxFuture, Completion, Context, TaskDef, TaskKind,
        TaskOptions,
    };
    pub use ::core;
    pub use ::inventory;
    pub use ::serde;
    pub use ::serde_json;
    pub use ::std::time::Duration;

    /// Fails to compile, at the argument's span, when a task argument cannot be stored.
    pub fn assert_arg<T: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static>() {}
}
