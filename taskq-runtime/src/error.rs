//! Errors: what a task returns ([`TaskError`]) and what starting one can fail with
//! ([`StartError`]).

use std::fmt;

/// How a task's error is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retried with backoff until max attempts and the age limit are spent.
    Retry,
    /// Never retried: the task is recorded as failed.
    Fatal,
}

/// The error a task returns. `Err(TaskError::fatal(..))` ends the task as failed;
/// `Err(TaskError::retry(..))`, any other error converted with `?`, a panic or the hard
/// deadline make the attempt fail and the task be retried with backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    kind: ErrorKind,
    message: String,
}

impl TaskError {
    /// An error that must not be retried (Melange's `FatalTaskError`).
    pub fn fatal(message: impl fmt::Display) -> TaskError {
        TaskError {
            kind: ErrorKind::Fatal,
            message: message.to_string(),
        }
    }

    /// An error after which the task is retried with backoff (Melange's `repeatTask()`).
    pub fn retry(message: impl fmt::Display) -> TaskError {
        TaskError {
            kind: ErrorKind::Retry,
            message: message.to_string(),
        }
    }

    /// Whether this error is fatal or retryable.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the task is retried after this error.
    pub fn is_fatal(&self) -> bool {
        self.kind == ErrorKind::Fatal
    }

    /// The message, as recorded with the attempt.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Any error converts into a retryable [`TaskError`], so `?` works in a task body; the
/// message keeps the whole `source()` chain. (Like `anyhow::Error`, `TaskError` does not
/// itself implement `std::error::Error`, which is what makes this blanket impl possible.)
///
/// `Box<dyn Error + Send + Sync>` and `anyhow::Error` are not `std::error::Error`, so `?`
/// cannot take them here (rustc speaks of `Sized`): write `.map_err(TaskError::retry)?`,
/// or declare that type as the task's error type (see `#[task]`).
impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> TaskError {
        TaskError::retry(chain(&e))
    }
}

/// A `TaskError` converts into the boxed errors test functions and `main` return, so `?`
/// works on it in `fn test() -> Result<(), Box<dyn Error>>`.
impl From<TaskError> for Box<dyn std::error::Error + Send + Sync> {
    fn from(e: TaskError) -> Self {
        Box::new(TaskFailed(e))
    }
}

/// See the `Send + Sync` variant above.
impl From<TaskError> for Box<dyn std::error::Error> {
    fn from(e: TaskError) -> Self {
        Box::new(TaskFailed(e))
    }
}

/// A [`TaskError`] seen as a `std::error::Error` (inside a `Box<dyn Error>`).
#[derive(Debug)]
struct TaskFailed(TaskError);

impl fmt::Display for TaskFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0.kind {
            ErrorKind::Retry => "retryable",
            ErrorKind::Fatal => "fatal",
        };
        write!(f, "task error ({kind}): {}", self.0.message)
    }
}

impl std::error::Error for TaskFailed {}

/// The `TaskError` inside a boxed error made by the conversions above, if it is one.
pub(crate) fn boxed_task_error(e: &(dyn std::error::Error + 'static)) -> Option<TaskError> {
    e.downcast_ref::<TaskFailed>().map(|t| t.0.clone())
}

/// Makes `Debug` print the `Display` text: a `main` that returns one of these errors (Rust
/// prints the `Debug` form of a `main` error) shows the helpful message, not the variant.
macro_rules! debug_as_display {
    ($($t:ty),* $(,)?) => {$(
        impl ::std::fmt::Debug for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(self, f)
            }
        }
    )*};
}
pub(crate) use debug_as_display;

debug_as_display!(StartError, DecodeError);

/// Renders an error with its `source()` chain: `outer: inner: innermost`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Why a task could not be started. Nothing was stored when this is returned.
///
/// Arguments and an iterative run's filter are stored as JSON and come back bit-identical
/// on every store; what could not come back unchanged is refused here rather than
/// altered (the rules are those of [`crate::value`]):
/// - NaN, +infinity and -infinity, anywhere inside a value (JSON has no such numbers;
///   serde_json would store `null`);
/// - a value nested more than [`MAX_VALUE_DEPTH`](crate::value::MAX_VALUE_DEPTH) (98)
///   levels of arrays and objects deep (the JSON parser refuses deeper documents);
/// - what serde_json cannot write (a map whose keys are not strings, a failing `Serialize`).
///
/// ```
/// use taskq_runtime::{task, testing::Harness, StartError, TaskError};
///
/// #[task]
/// async fn scale(factor: f64) -> Result<(), TaskError> { Ok(()) }
///
/// # #[tokio::main] async fn main() {
/// let h = Harness::new();
/// match scale::start(&h.queue(), f64::NAN).await {
///     Err(StartError::Serialize { arg, reason, .. }) => {
///         assert_eq!(arg, "factor");
///         assert!(reason.starts_with("`factor` is NaN"));
///     }
///     other => panic!("{other:?}"),
/// }
/// # }
/// ```
#[derive(thiserror::Error)]
pub enum StartError {
    /// An argument (or the filter, named `filter`) could not be stored as JSON unchanged.
    #[error("argument `{arg}` of task `{task}` cannot be stored as JSON: {reason}")]
    Serialize {
        /// The task.
        task: String,
        /// The argument's name (`filter` for an iterative run's filter).
        arg: String,
        /// Why, for people: where inside the argument a NaN or infinity sits (as in
        /// `` `point.y` is +infinity ``), how deep it nests, or serde's message.
        reason: String,
    },
    /// A task with the same unique key ([`crate::unique`]) holds it: one pending or
    /// running, or finished (or deleted) within its `unique_for` period. Nothing was
    /// stored or changed.
    #[error("task `{task}` is unique by its arguments and its key `{key}` is taken{}", held_by(.existing))]
    Duplicate {
        /// The task refused.
        task: String,
        /// Its unique key (`args-sha256:` and 64 hex digits), as the console shows it.
        key: String,
        /// The task holding the key, as found just after the refusal: `None` when only a
        /// deleted task's tombstone holds it, when the holder is a repeat within the same
        /// [`Queue::start_many`](crate::Queue::start_many) call, or when it ended and was
        /// pruned in between.
        existing: Option<crate::store::TaskId>,
    },
    /// The builder's uniqueness options do not fit together or with the task: a name and
    /// a unique key on one task, an argument of `unique_by` that the task does not take,
    /// `unique_for` or replace without a unique key, replace on an iterative task or in
    /// `start_many` or `start_in`, a name that starts with [`KEY_PREFIX`](crate::unique::KEY_PREFIX).
    #[error("task `{task}`: {reason}")]
    Unique {
        /// The task.
        task: String,
        /// What does not fit.
        reason: String,
    },
    /// The store refused: a unique name already taken
    /// ([`StoreError::AlreadyExists`](crate::store::StoreError::AlreadyExists)), a name with
    /// a NUL byte or a value too deep for it
    /// ([`StoreError::InvalidValue`](crate::store::StoreError::InvalidValue)), a backend error.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// ` by task N` when the holder of a refused key is known.
fn held_by(existing: &Option<crate::store::TaskId>) -> String {
    existing
        .map(|id| format!(" by task {id}"))
        .unwrap_or_default()
}

/// Why a stored payload could not be turned back into the task's arguments.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload of task `{task}` does not decode: {reason}")]
pub struct DecodeError {
    /// The task.
    pub task: String,
    /// What was wrong: the argument name and serde's message.
    pub reason: String,
}
