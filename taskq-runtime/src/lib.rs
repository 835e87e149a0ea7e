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
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let queue = Queue::open("sqlite://taskq.db").await?;
//!     let id = send_email::start(&queue, "ada@example.org".into(), "Welcome".into()).await?;
//!     println!("started task {id}");
//!     Worker::builder(queue.store().clone())
//!         .queues(["email"])
//!         .build()?
//!         .run_until_shutdown()
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! A task may be declared in a module or inside a function body; its `start`, `builder` and
//! `NAME` are associated items of a field-less struct named after the function, next to it.
//! A task may return `TaskError`, any `std::error::Error`, a boxed error or (with the
//! `anyhow` feature) `anyhow::Error`: see [`task`](macro@task) for what each does.
//!
//! Delivery is at least once: a task whose worker died runs again when its lease lapses,
//! so task bodies should be idempotent.
//!
//! Finished tasks are not kept for ever: workers prune done and cancelled ones 24 hours
//! after they finished and failed and dead ones after 7 days, per queue as configured
//! (see [`retention`]).

#[cfg(feature = "console")]
pub mod console;
pub mod error;
mod into_task_error;
pub mod iterative;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod queue;
pub mod registry;
pub mod retention;
pub mod schedule;
pub mod store;
pub mod task;
pub mod testing;
pub mod time;
pub mod trace;
pub mod unique;
pub mod value;
pub mod worker;

pub use error::{StartError, TaskError};
pub use model::Model;
pub use queue::{Queue, TaskBuilder};
pub use registry::Registry;
pub use retention::Retention;
pub use schedule::{CatchUp, Schedule, ScheduleError};
pub use store::{
    AttemptInfo, CancelOutcome, IterationInfo, PruneReport, QueueConfig, QueueInfo, RunState,
    ScheduleInfo, Store, StoreError, TaskDetail, TaskId, TaskInfo, TaskQuery, TaskState,
};
pub use task::{Context, TaskOptions};
pub use taskq_macros::{iterative_task, task};
pub use time::{Clock, Timestamp};
pub use unique::{Admission, OnConflict, Started, UniqueArgs};
pub use worker::{Worker, WorkerBuilder, WorkerError};

/// The PostgreSQL driver taskq uses, for starting tasks inside your own transaction
/// ([`TaskBuilder::start_in`]) with the same version of its types.
#[cfg(feature = "postgres")]
pub use tokio_postgres;

/// What generated code reaches through absolute paths. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::error::{DecodeError, StartError, TaskError};
    pub use crate::into_task_error::{
        ErrorWrap, FallbackTag, IntoTag, IntoTaskError, ViaFallback, ViaInto,
    };
    pub use crate::iterative::{batch_future, iterative_handler, BatchFuture, ModelOf};
    pub use crate::model::Model;
    pub use crate::queue::{Queue, TaskBuilder};
    pub use crate::schedule::{CatchUp, CronDecl, Schedule};
    pub use crate::store::TaskId;
    pub use crate::task::{
        plain_future, ArgsDecoder, ArgsEncoder, BoxFuture, Completion, Context, TaskDef, TaskKind,
        TaskOptions,
    };
    pub use crate::unique::{Admission, OnConflict, Started, UniqueArgs};
    pub use ::core;
    pub use ::inventory;
    pub use ::serde;
    pub use ::serde_json;
    pub use ::std::time::Duration;

    /// What a task argument must be: stored as JSON when the task starts, decoded again on
    /// the worker.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be a task argument: it must be `Serialize + DeserializeOwned + Send + 'static`",
        label = "this argument cannot be stored as JSON and decoded on the worker",
        note = "task arguments are stored as JSON: derive `serde::Serialize` and `serde::Deserialize` for `{Self}`, or pass an owned type that does"
    )]
    pub trait TaskArg: Sized {
        /// Adds this argument to a payload. Generated code calls it as
        /// `<T as TaskArg>::encode_arg`, so an unfit type fails here, at the argument.
        fn encode_arg(&self, payload: ArgsEncoder, name: &str) -> ArgsEncoder;

        /// Takes this argument back out of a payload.
        fn decode_arg(payload: &mut ArgsDecoder, name: &str) -> Result<Self, DecodeError>;
    }

    // `do_not_recommend`: a type that is neither `Serialize` nor `Deserialize` is reported
    // once, as not a `TaskArg` (with the message above), not once per missing bound.
    #[diagnostic::do_not_recommend]
    impl<T: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static> TaskArg for T {
        fn encode_arg(&self, payload: ArgsEncoder, name: &str) -> ArgsEncoder {
            payload.arg(name, self)
        }

        fn decode_arg(payload: &mut ArgsDecoder, name: &str) -> Result<Self, DecodeError> {
            payload.take(name)
        }
    }

    /// Fails to compile, at the argument's span, when a task argument cannot be stored.
    pub fn assert_arg<T: TaskArg>() {}

    /// The filter of an iterative run, as JSON, checked by the rules of [`crate::value`].
    pub fn encode_filter<F: ::serde::Serialize>(
        task: &'static str,
        filter: &F,
    ) -> Result<::serde_json::Value, StartError> {
        crate::value::to_json(filter, "filter", crate::value::MAX_VALUE_DEPTH).map_err(|reason| {
            StartError::Serialize {
                task: task.to_string(),
                arg: "filter".to_string(),
                reason,
            }
        })
    }
}
