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
impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> TaskError {
        TaskError::retry(chain(&e))
    }
}

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
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An argument could not be turned into JSON.
    #[error("argument `{arg}` of task `{task}` cannot be stored as JSON: {reason}")]
    Serialize {
        /// The task.
        task: String,
        /// The argument's name.
        arg: String,
        /// serde's message.
        reason: String,
    },
    /// The store refused (a unique name already taken, a backend error).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Why a stored payload could not be turned back into the task's arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload of task `{task}` does not decode: {reason}")]
pub struct DecodeError {
    /// The task.
    pub task: String,
    /// What was wrong: the argument name and serde's message.
    pub reason: String,
}
