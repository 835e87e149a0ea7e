//! The attribute macros of taskq, `#[task]` and `#[iterative_task]`.
//!
//! Use them through `taskq_runtime`, which re-exports them and holds everything the
//! generated code needs; this crate only parses, checks and generates.

mod ast;
mod attr;
mod expand;
mod valid;

use proc_macro::TokenStream;

use crate::attr::Kind;

/// Turns an `async fn` into a background task.
///
/// ```
/// use std::time::Duration;
/// use taskq_runtime::{task, Context, Queue, TaskError};
///
/// #[task(queue = "email", max_attempts = 5, timeout = "30s")]
/// async fn send_email(ctx: Context, to: String, subject: String) -> Result<(), TaskError> {
///     Ok(())
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = Queue::open("memory://").await?;
/// let id = send_email::start(&queue, "ada@example.org".into(), "Welcome".into()).await?;
/// send_email::builder("ada@example.org".into(), "Welcome".into())
///     .delay(Duration::from_secs(60))
///     .name("welcome-ada")
///     .start(&queue)
///     .await?;
/// # let _ = id; Ok(()) }
/// ```
///
/// # The function
///
/// - It is an `async fn` without generics, `where` clause or `self`.
/// - Its optional first parameter is the `taskq_runtime::Context`
///   (a type whose last path segment is `Context`), taken by value.
/// - The other parameters are the task's arguments: plain names (`x` or `mut x`) of owned
///   types that are `Serialize + DeserializeOwned + Send + 'static` (`String`, not `&str`).
///   They are stored as a JSON object keyed by parameter name.
/// - It returns `Result<(), E>`; see [the error type](#the-error-type).
/// - It may be declared in a module or inside a function body (`fn main`, a test), where it
///   can use the types declared beside it.
///
/// The function is left as it is, so it can still be called (and unit-tested) directly.
///
/// # The error type
///
/// `E` in `Result<(), E>` may be:
///
/// | `E` | the task after `Err(e)` | `?` in the body works on |
/// |-----|-------------------------|--------------------------|
/// | `TaskError` | failed for `TaskError::fatal(..)`, retried for `TaskError::retry(..)` | `TaskError`, any `std::error::Error + Send + Sync + 'static` |
/// | a `std::error::Error + Send + Sync + 'static` type (`std::io::Error`, your own), or any type with `From<E> for TaskError` | retried (or as your `From` says) | what converts into `E` |
/// | `Box<dyn std::error::Error + Send + Sync>` (or `Box<dyn Error>`) | retried | any error, and strings |
/// | `anyhow::Error`, `anyhow::Result<()>`, with taskq-runtime's `anyhow` feature | retried; failed if it holds a `TaskError::fatal` (taken with `?` or `anyhow::Error::from`, context added or not) | any error, `TaskError` included |
///
/// A retried error is recorded with its whole cause chain, `outer: inner: root` (for anyhow,
/// as `{:#}` shows it, contexts included).
///
/// In a body that returns `TaskError`, `?` cannot take a `Box<dyn Error + Send + Sync>` or an
/// `anyhow::Error` (rustc then speaks of `Sized` or of a missing `std::error::Error` impl:
/// `TaskError` converts from every `std::error::Error` type, and coherence leaves no room for
/// these two beside that). Either declare that type as the task's error type, as above, or
/// convert it where it arises: `.map_err(TaskError::retry)?` (its message only), or
/// `.map_err(|e| TaskError::retry(format!("{e:#}")))?` for anyhow's cause chain.
///
/// ```
/// use taskq_runtime::{task, TaskError};
///
/// #[task]
/// async fn import(path: String) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let text = std::fs::read_to_string(&path)?;       // io::Error
///     let _rows: u32 = text.trim().parse()?;            // ParseIntError
///     Ok(())
/// }
///
/// # fn parse(_: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> { Ok(()) }
/// #[task]
/// async fn import_checked(path: String) -> Result<(), TaskError> {
///     if path.is_empty() {
///         return Err(TaskError::fatal("no path"));        // failed, never retried
///     }
///     parse(&path).map_err(TaskError::retry)?;           // a boxed error, here
///     Ok(())
/// }
/// ```
///
/// # What is generated
///
/// Next to the function, a struct of the same name and visibility, with no fields (only a
/// namespace: the function keeps its name), whose associated items are:
///
/// - `NAME: &str`, the registered name;
/// - `start(&queue, args..) -> Result<TaskId, StartError>`, which stores the task, due now;
/// - `builder(args..) -> TaskBuilder`, to add a delay or eta, a de-duplication name,
///   another queue or priority before `.start(&queue)`;
/// - for a `#[task]`, `schedule(name, cron, args..) -> Schedule`, a periodic schedule of
///   the task with these arguments, stored by `.register(&queue)`.
///
/// So `send_email::start(..)`, `send_email::builder(..)` and `send_email::NAME` work
/// wherever the function `send_email` is in scope (`use app::tasks::send_email;` brings
/// both). Beside them, private to the expansion, the task's definition is registered
/// through `inventory`, so a worker finds it without any wiring, wherever it is declared.
///
/// # Keys
///
/// Durations are strings of whole numbers with a unit, `ms`, `s`, `m`, `h` or `d`, and sums
/// of them: `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`, `"1h30m"`.
///
/// | key | value | default |
/// |-----|-------|---------|
/// | `name` | string: the registered name; a worker refuses two tasks of one name | the function's path, `module_path!()::fn_name` (a function body around it is not part of it) |
/// | `queue` | string: the queue it is started on | `"default"` |
/// | `max_attempts` | integer >= 1: attempts before the task may go dead | `25` |
/// | `timeout` | duration: the soft deadline of one attempt, seen through `Context`; a grace period later the attempt is cancelled | `"10m"` |
/// | `min_backoff` | duration: the first wait before a retry | `"1s"` |
/// | `max_backoff` | duration: the longest wait between retries (at least `min_backoff`) | `"1h"` |
/// | `max_doublings` | integer: how many times the backoff doubles before it grows linearly | `16` |
/// | `age_limit` | duration: how long after being enqueued a failing task keeps being retried (it goes dead once both this and `max_attempts` are spent) | none: `max_attempts` alone decides |
/// | `priority` | integer (`i32`): higher runs first among due tasks | `0` |
/// | `cron` | string: a cron expression (five fields, or six with seconds first); makes it a periodic task, each tick started once by the workers (`taskq_runtime::schedule`). Only on a task without arguments (a `Context` is allowed); checked at compile time | none: not periodic |
/// | `timezone` | string: the IANA time zone `cron` is read in (with `cron` only) | `"UTC"` |
/// | `catch_up` | `"last"` (run once for the last tick missed while no worker ran) or `"skip"` (drop missed ticks), with `cron` only | `"last"` |
/// | `crate` | path to the runtime crate, for a renamed dependency: `crate = tq` | `::taskq_runtime` |
///
/// A plain task also gets `schedule(name, cron, args..) -> Schedule`, to register a
/// periodic schedule with arguments at run time (`.timezone(..)`, `.catch_up(..)`,
/// `.register(&queue)`).
///
/// Every mistake (an unknown or repeated key, a bad value, a borrowed argument, a missing
/// `async`, ...) is a compile error at the mistake, all of them reported in one compile.
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(args.into(), item.into(), Kind::Plain).into()
}

/// Turns an `async fn` into an iterative task: one logical run that walks through every
/// entity of a model in batches, chained across executions with a stored cursor.
///
/// ```
/// use taskq_runtime::{iterative_task, Context, Model, Queue, TaskError};
/// # struct Student { id: i64 }
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct StudentFilter { program: String }
/// # struct Db;
/// # impl Model for Student {
/// #     type Key = i64;
/// #     type Filter = StudentFilter;
/// #     type Source = Db;
/// #     fn key(&self) -> i64 { self.id }
/// #     async fn batch(_: &Db, _: &StudentFilter, _: Option<&i64>, _: usize)
/// #         -> Result<Vec<Student>, TaskError> { Ok(Vec::new()) }
/// # }
///
/// #[iterative_task(model = Student, batch_size = 200, queue = "email")]
/// async fn email_all_students(ctx: Context, students: Vec<Student>, subject: String)
///     -> Result<(), TaskError> {
///     Ok(())
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let queue = Queue::open("memory://").await?;
/// let run = email_all_students::start(
///     &queue,
///     StudentFilter { program: "gsoc2009".into() },
///     "Results are out".into(),
/// ).await?;
/// let progress = queue.iteration(run).await?;
/// # let _ = progress; Ok(()) }
/// ```
///
/// The function is as for [`task`](macro@task) (the same error types, in a module or a
/// function body), except that its first parameter after the
/// optional `Context` receives each batch, `Vec<M>` for the model `M`; the parameters after
/// it are the run's arguments. The generated `start(&queue, filter, args..)` and
/// `builder(filter, args..)` take the model's `Filter` first.
///
/// # Keys
///
/// | key | value | default |
/// |-----|-------|---------|
/// | `model` | the type walked through; it implements `taskq_runtime::Model` | required |
/// | `batch_size` | integer >= 1: entities per call of the function | `100` |
///
/// and every key of [`task`](macro@task), with the same defaults: `name`, `queue`,
/// `max_attempts`, `timeout`, `min_backoff`, `max_backoff`, `max_doublings`, `age_limit`,
/// `priority`, `crate`. The `timeout` bounds one step: a step goes on with the next batch
/// while inside half of it, then hands over to a continuation step.
#[proc_macro_attribute]
pub fn iterative_task(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(args.into(), item.into(), Kind::Iterative).into()
}
