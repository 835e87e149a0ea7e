//! The task filters of `/tasks` and what acts on "every task matching": one type,
//! [`TaskFilter`], and one function for each use, so a new filter of the management API (a
//! substring of the arguments, say) plugs in at these seams:
//! - [`TaskFilter::from_pairs`]: the query string or form fields it is read from;
//! - [`TaskFilter::query`]: the [`TaskQuery`] a page of the listing asks for;
//! - [`TaskFilter::pairs`]: the fields it is written back as (links, hidden fields);
//! - [`retry_matching`]: the retry of every dead or failed task it matches.

use crate::store::{StoreError, TaskId, TaskQuery, TaskState};
use crate::Queue;

/// The most tasks one page of `/tasks` shows, whatever `limit` asks.
pub(crate) const MAX_PAGE: usize = 500;

/// The most ids one "retry selected" takes.
pub(crate) const MAX_SELECTED: usize = 1_000;

/// Which tasks a listing (or a retry of all matching) is about.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TaskFilter {
    /// Only this queue.
    pub(crate) queue: Option<String>,
    /// Only this state.
    pub(crate) state: Option<TaskState>,
    /// Only this task name.
    pub(crate) task: Option<String>,
    /// Only tasks whose arguments' JSON text contains this ([`TaskQuery::args_contains`]).
    pub(crate) args: Option<String>,
}

/// A page of a listing: the filter, the key to page before, and the page size.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Page {
    pub(crate) filter: TaskFilter,
    pub(crate) before: Option<TaskId>,
    pub(crate) limit: usize,
}

impl TaskFilter {
    /// Reads the filter (and the page) from query or form pairs: `queue`, `state`,
    /// `task`, `args`, `before`, `limit`; empty values mean no filter (`args` is taken as
    /// typed, spaces included, since it matches literally). Fails with a message for
    /// an unknown state or a bad `before`.
    pub(crate) fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        default_limit: usize,
    ) -> Result<Page, String> {
        let mut page = Page {
            limit: default_limit,
            ..Page::default()
        };
        for (k, raw) in pairs {
            if k == "args" {
                if !raw.is_empty() {
                    page.filter.args = Some(raw.to_string());
                }
                continue;
            }
            let v = raw.trim();
            if v.is_empty() {
                continue;
            }
            match k {
                "queue" => page.filter.queue = Some(v.to_string()),
                "task" => page.filter.task = Some(v.to_string()),
                "state" => page.filter.state = Some(v.parse::<TaskState>()?),
                "before" => {
                    page.before = Some(
                        v.parse::<TaskId>()
                            .map_err(|_| format!("`before` is a task id, not `{v}`"))?,
                    )
                }
                "limit" => page.limit = v.parse().unwrap_or(default_limit),
                _ => {}
            }
        }
        page.limit = page.limit.clamp(1, MAX_PAGE);
        Ok(page)
    }

    /// The listing query of one page under this filter.
    pub(crate) fn query(&self, before: Option<TaskId>, limit: usize) -> TaskQuery {
        TaskQuery {
            queue: self.queue.clone(),
            state: self.state,
            task: self.task.clone(),
            args_contains: self.args.clone(),
            before,
            limit,
            with_payload: false,
        }
    }

    /// The filter as name/value pairs (links, hidden form fields), empty ones left out.
    pub(crate) fn pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(q) = &self.queue {
            out.push(("queue".into(), q.clone()));
        }
        if let Some(s) = self.state {
            out.push(("state".into(), s.as_str().into()));
        }
        if let Some(t) = &self.task {
            out.push(("task".into(), t.clone()));
        }
        if let Some(a) = &self.args {
            out.push(("args".into(), a.clone()));
        }
        out
    }

    /// The filter as a query string (without `?`).
    pub(crate) fn query_string(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.pairs())
            .finish()
    }

    /// The states a retry of all matching tasks reads: the filter's, when it is dead or
    /// failed; both when it names none; none otherwise (nothing else can be retried).
    fn retry_states(&self) -> Vec<TaskState> {
        match self.state {
            None => vec![TaskState::Dead, TaskState::Failed],
            Some(s @ (TaskState::Dead | TaskState::Failed)) => vec![s],
            Some(_) => Vec::new(),
        }
    }
}

/// What a retry of many tasks did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Retried {
    /// Tasks put back in their queues.
    pub(crate) retried: u64,
    /// Tasks refused by the store (no longer dead or failed, or their name taken).
    pub(crate) skipped: u64,
}

/// Retries one task for a retry of many: a refusal of that task counts as skipped, a
/// failing store stops the whole.
async fn retry_one(queue: &Queue, id: TaskId, out: &mut Retried) -> Result<(), StoreError> {
    match queue.retry(id).await {
        Ok(()) => out.retried += 1,
        Err(StoreError::Conflict(_) | StoreError::NotFound(_) | StoreError::AlreadyExists(_)) => {
            out.skipped += 1
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Retries every dead or failed task the filter matches, through
/// [`Queue::retry_matching`] (in batches of [`crate::queue::RETRY_BATCH`], each one store
/// call). Tasks it passes over (no longer dead or failed, or their name taken) are not
/// counted, so `skipped` stays 0 here.
pub(crate) async fn retry_matching(
    queue: &Queue,
    filter: &TaskFilter,
) -> Result<Retried, StoreError> {
    if filter.retry_states().is_empty() {
        return Ok(Retried::default());
    }
    let retried = queue.retry_matching(&filter.query(None, 0)).await?;
    Ok(Retried {
        retried,
        skipped: 0,
    })
}

/// Retries the ticked tasks (at most [`MAX_SELECTED`]).
pub(crate) async fn retry_selected(queue: &Queue, ids: &[TaskId]) -> Result<Retried, StoreError> {
    let mut out = Retried::default();
    for id in ids.iter().take(MAX_SELECTED) {
        retry_one(queue, *id, &mut out).await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_and_written_back() {
        let page = TaskFilter::from_pairs(
            [
                ("queue", "a b"),
                ("state", "dead"),
                ("task", ""),
                ("before", "42"),
                ("limit", "9999"),
            ],
            50,
        )
        .expect("valid");
        assert_eq!(page.filter.queue.as_deref(), Some("a b"));
        assert_eq!(page.filter.state, Some(TaskState::Dead));
        assert_eq!(page.filter.task, None);
        assert_eq!((page.before, page.limit), (Some(TaskId(42)), MAX_PAGE));
        assert_eq!(page.filter.query_string(), "queue=a+b&state=dead");
        assert!(TaskFilter::from_pairs([("state", "zombie")], 50).is_err());
        assert!(TaskFilter::from_pairs([("before", "x")], 50).is_err());
        let q = page.filter.query(page.before, 10);
        assert_eq!(
            (q.limit, q.with_payload, q.before),
            (10, false, Some(TaskId(42)))
        );
        assert_eq!(
            TaskFilter {
                state: Some(TaskState::Pending),
                ..TaskFilter::default()
            }
            .retry_states(),
            vec![]
        );
    }
}
