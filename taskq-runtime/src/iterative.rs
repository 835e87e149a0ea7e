//! The step runner of `#[iterative_task]`: read a batch after the cursor, call the user's
//! function, checkpoint the new cursor and progress, and go on while inside the time
//! slice; then hand over to a continuation step. The run is done when the model returns
//! nothing after the cursor (a short batch is not the end).

use std::time::Duration;

use crate::error::{DecodeError, TaskError};
use crate::model::Model;
use crate::store::{Checkpoint, StoreError};
use crate::task::{BoxFuture, Completion, Context, TaskKind};

/// The future of one call of the user's function on one batch.
pub type BatchFuture = BoxFuture<'static, Result<(), TaskError>>;

/// The share of the soft deadline a step spends on batches before it hands over to a
/// continuation step (like job-iteration's max runtime): half, so the batch in flight
/// when the slice ends still has the other half to finish before the deadline.
pub const TIME_SLICE_SHARE: f64 = 0.5;

/// Adapts the user's function's future to a [`BatchFuture`] (used by generated code).
#[doc(hidden)]
pub fn batch_future<F, E>(fut: F) -> BatchFuture
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: Into<TaskError>,
{
    Box::pin(async move { fut.await.map_err(Into::into) })
}

/// Every use of an iterative task's model in generated code goes through this one trait,
/// spanned at the `model = ..` key: a type that is not a [`Model`] then fails the same
/// obligation at the same place everywhere, and rustc prints that error once (identical
/// diagnostics are emitted once), instead of once per use.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a taskq `Model`, so an iterative task cannot walk through it",
    label = "this type does not implement `taskq_runtime::Model`",
    note = "implement `taskq_runtime::Model` for `{Self}`: give its `Key` (the cursor), `Filter`, `Source` (the app state holding the data), `fn key(&self)` and `async fn batch(source, filter, after, limit)`"
)]
pub trait ModelOf: Sized {
    /// The model's [`Model::Filter`].
    type Filter;

    /// [`iterative_handler`] for this model.
    fn handler<A: Send + 'static>(
        ctx: Context,
        payload: serde_json::Value,
        decode: fn(&'static str, serde_json::Value) -> Result<A, DecodeError>,
        call: fn(Context, Vec<Self>, A) -> BatchFuture,
    ) -> Result<BoxFuture<'static, Result<Completion, TaskError>>, DecodeError>;
}

#[diagnostic::do_not_recommend]
impl<M: Model> ModelOf for M {
    type Filter = M::Filter;

    fn handler<A: Send + 'static>(
        ctx: Context,
        payload: serde_json::Value,
        decode: fn(&'static str, serde_json::Value) -> Result<A, DecodeError>,
        call: fn(Context, Vec<Self>, A) -> BatchFuture,
    ) -> Result<BoxFuture<'static, Result<Completion, TaskError>>, DecodeError> {
        iterative_handler::<M, A>(ctx, payload, decode, call)
    }
}

/// The generated handler of an iterative task calls this with its model, batch size and
/// two generated functions: `decode` turns the stored extra arguments into a tuple, `call`
/// runs the user's function on one batch with them.
///
/// The payload is `{"filter": <M::Filter>, "args": {<name>: <value>, ..}}`. Filter and
/// arguments are decoded before anything runs, so a payload that no longer decodes sends
/// the step to dead instead of failing every batch.
#[doc(hidden)]
pub fn iterative_handler<M: Model, A: Send + 'static>(
    ctx: Context,
    payload: serde_json::Value,
    decode: fn(&'static str, serde_json::Value) -> Result<A, DecodeError>,
    call: fn(Context, Vec<M>, A) -> BatchFuture,
) -> Result<BoxFuture<'static, Result<Completion, TaskError>>, DecodeError> {
    let task = ctx.task_name();
    let bad = |reason: String| DecodeError {
        task: task.to_string(),
        reason,
    };
    let mut obj = match payload {
        serde_json::Value::Object(m) => m,
        other => {
            return Err(bad(format!(
                "expected {{\"filter\": .., \"args\": ..}}, found `{other}`"
            )))
        }
    };
    let filter_json = obj.remove("filter").unwrap_or(serde_json::Value::Null);
    let args_json = obj.remove("args").unwrap_or_else(|| serde_json::json!({}));
    let filter: M::Filter =
        serde_json::from_value(filter_json).map_err(|e| bad(format!("the model filter: {e}")))?;
    // Decode once now so a bad payload is caught before the first batch.
    let first_args = decode(task, args_json.clone())?;
    let cursor: Option<M::Key> = match ctx
        .inner
        .iteration
        .as_ref()
        .and_then(|it| it.cursor.clone())
    {
        Some(c) => {
            Some(serde_json::from_value(c).map_err(|e| bad(format!("the stored cursor: {e}")))?)
        }
        None => None,
    };
    let batch_size = match ctx.inner.kind {
        TaskKind::Iterative { batch_size } => batch_size.max(1),
        TaskKind::Plain => 100,
    };
    Ok(Box::pin(run_step::<M, A>(
        ctx, filter, cursor, args_json, first_args, batch_size, decode, call,
    )))
}

/// What a step does when the store refuses to let it go on (`confirm` or `checkpoint`).
fn refused(e: StoreError) -> Result<Completion, TaskError> {
    match e {
        // The run ended (cancelled, or finished by another step), the step was deleted, or
        // another worker holds it now: stop, without calling the function again. Nothing
        // is retried: the store refuses this attempt's outcome, or records it as stopped.
        StoreError::LeaseLost(_) => Ok(Completion::Stopped),
        e @ StoreError::InvalidValue(_) => Err(TaskError::fatal(format!(
            "the cursor cannot be stored: {e}"
        ))),
        e => Err(e.into()),
    }
}

/// Runs one step: batches from the cursor until the run ends or the time slice is used.
///
/// Every call of the user's function comes right after the store confirmed that the step
/// still holds its lease and its run is running: before the first batch by
/// [`Store::confirm`](crate::store::Store::confirm), before each later one by the
/// checkpoint of the batch before it, which is therefore written after the next batch is
/// read. So once a cancel has returned, the function is not called again for the run; the
/// batch in flight at the cancel finishes, and its checkpoint is refused.
///
/// The next batch is read ahead, while the function runs on this one (the cursor of the
/// next read is this batch's last key, known before the call): a step waits for the
/// longer of the read and the call, then the checkpoint, and holds at most two batches.
/// A read-ahead is only a read; it is dropped unused when the step hands over (its time
/// slice is used, or it was told to stop during the call).
#[allow(clippy::too_many_arguments)]
async fn run_step<M: Model, A: Send + 'static>(
    ctx: Context,
    filter: M::Filter,
    cursor: Option<M::Key>,
    args_json: serde_json::Value,
    first_args: A,
    batch_size: usize,
    decode: fn(&'static str, serde_json::Value) -> Result<A, DecodeError>,
    call: fn(Context, Vec<M>, A) -> BatchFuture,
) -> Result<Completion, TaskError> {
    let it = ctx.inner.iteration.clone().ok_or_else(|| {
        TaskError::fatal("this step of an iterative task has no iteration record in the store")
    })?;
    let source: &M::Source = ctx.state::<M::Source>()?;
    let mut total = it.total;
    if total.is_none() && it.batches == 0 {
        total = M::count(source, &filter).await?;
    }
    let timeout = ctx.inner.deadline.since(ctx.inner.started_at);
    let slice = Duration::from_secs_f64(timeout.as_secs_f64() * TIME_SLICE_SHARE);
    let slice_end = ctx.inner.started_at.add(slice);
    let store = &ctx.inner.store;
    let lease = ctx.inner.lease;
    let mut args = Some(first_args);
    let mut first = true;
    let mut batch = M::batch(source, &filter, cursor.as_ref(), batch_size).await?;
    // Only an empty batch ends the run: `Model::batch` returns *up to* `limit`, and a model
    // that pages a capped API returns short batches long before the end.
    if batch.is_empty() {
        return Ok(Completion::Done);
    }
    if let Err(e) = store.confirm(lease).await {
        return refused(e);
    }
    loop {
        let n = batch.len();
        let Some(last_key) = batch.last().map(Model::key) else {
            return Ok(Completion::Done);
        };
        // The cursor is checked before the batch runs: a key that cannot be stored (NaN,
        // too deep) would otherwise be processed and then lost, or stored as something
        // else (serde_json writes NaN as null).
        let cursor_json = crate::value::to_json(&last_key, "cursor", crate::value::MAX_VALUE_DEPTH)
            .map_err(|e| {
                TaskError::fatal(format!(
                    "the cursor (the model key of the batch's last entity) cannot be stored: {e}"
                ))
            })?;
        let a = match args.take() {
            Some(a) => a,
            None => decode(ctx.task_name(), args_json.clone())
                .map_err(|e| TaskError::fatal(e.to_string()))?,
        };
        let cp = Checkpoint {
            cursor: cursor_json,
            processed: n as u64,
            total: if first { total } else { None },
        };
        first = false;
        // Read ahead unless the step is handing over already, while the function runs.
        // The checkpoint waits for both: it fails once the run has ended, so written
        // after the read it stays the last word before the next call.
        let read_ahead = !(ctx.inner.clock.now() >= slice_end || ctx.is_cancelled());
        let (called, next) = tokio::join!(call(ctx.clone(), batch, a), async {
            if read_ahead {
                Some(M::batch(source, &filter, Some(&last_key), batch_size).await)
            } else {
                None
            }
        });
        called?;
        match store.checkpoint(lease, cp, ctx.inner.clock.now()).await {
            Ok(()) => ctx.inner.progressed.set(),
            Err(e) => return refused(e),
        }
        let hand_over = ctx.inner.clock.now() >= slice_end || ctx.is_cancelled();
        match next {
            Some(next) if !hand_over => batch = next?,
            _ => return Ok(Completion::Continue),
        }
        if batch.is_empty() {
            return Ok(Completion::Done);
        }
    }
}
