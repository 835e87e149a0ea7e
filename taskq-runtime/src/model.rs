//! [`Model`]: what `#[iterative_task(model = M)]` walks through, batch by batch.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::TaskError;

/// An entity type an iterative task can walk through in keyset order.
///
/// `batch` returns up to `limit` entities whose key is greater than `after` (all from the
/// start when `after` is `None`), in ascending key order, matching `filter`. It may return
/// fewer than `limit` whenever it likes (an API that pages at most 100 at a time, say):
/// the run goes on from the last key returned, and ends only when `batch` returns no
/// entity after the cursor. The runtime keeps the key of the last entity of each batch as
/// the run's cursor, so a run survives deadlines, crashes and deploys. Rows inserted behind the cursor during a run are not
/// visited; rows inserted ahead of it are; rows deleted ahead of it are not.
///
/// ```
/// use taskq_runtime::{Model, TaskError};
///
/// struct Student { id: i64, program: String }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct StudentFilter { program: String }
/// /// The app state holding the students (a database pool in a real app).
/// struct Db { students: Vec<Student> }
///
/// impl Model for Student {
///     type Key = i64;
///     type Filter = StudentFilter;
///     type Source = Db;
///     fn key(&self) -> i64 { self.id }
///     async fn batch(db: &Db, f: &StudentFilter, after: Option<&i64>, limit: usize)
///         -> Result<Vec<Student>, TaskError> {
///         // A keyset page: `WHERE program = ? AND id > ? ORDER BY id LIMIT ?`.
///         Ok(db.students.iter()
///             .filter(|s| s.program == f.program && after.map_or(true, |a| s.id > *a))
///             .take(limit)
///             .map(|s| Student { id: s.id, program: s.program.clone() })
///             .collect())
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a taskq `Model`, so an iterative task cannot walk through it",
    label = "this type does not implement `taskq_runtime::Model`",
    note = "implement `taskq_runtime::Model` for `{Self}`: give its `Key` (the cursor), `Filter`, `Source` (the app state holding the data), `fn key(&self)` and `async fn batch(source, filter, after, limit)`"
)]
pub trait Model: Send + Sized + 'static {
    /// The ordered key the cursor is made of (an id, a timestamp-and-id pair, ...).
    type Key: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// Which entities a run walks through.
    type Filter: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The app state holding the data, given to the worker with `.state(..)`.
    type Source: Send + Sync + 'static;

    /// This entity's key.
    fn key(&self) -> Self::Key;

    /// Up to `limit` entities after `after`, in ascending key order. Fewer than `limit` is
    /// fine and does not end the run; an empty result (nothing after `after`) does. Each
    /// call must return entities whose keys are greater than `after`, or the run would read
    /// the same entities again.
    fn batch(
        source: &Self::Source,
        filter: &Self::Filter,
        after: Option<&Self::Key>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Self>, TaskError>> + Send;

    /// How many entities match `filter`, if the model can tell cheaply; used to show
    /// progress as a percentage. The default says it cannot.
    fn count(
        source: &Self::Source,
        filter: &Self::Filter,
    ) -> impl Future<Output = Result<Option<u64>, TaskError>> + Send {
        let _ = (source, filter);
        async { Ok(None) }
    }
}
