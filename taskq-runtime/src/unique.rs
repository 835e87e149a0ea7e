//! Tasks unique by their arguments (Oban's and River's unique jobs): a start is refused
//! while a task of the same *unique key* holds it, or, with
//! [`OnConflict::Replace`], replaces the arguments and due time of the pending one.
//!
//! ```
//! use std::time::Duration;
//! use taskq_runtime::{task, testing::Harness, StartError, TaskError};
//!
//! #[task(unique = ["to"], unique_for = "1h")]
//! async fn remind(to: String, text: String) -> Result<(), TaskError> { Ok(()) }
//!
//! # #[tokio::main] async fn main() {
//! let h = Harness::new();
//! let first = remind::start(&h.queue(), "ada".into(), "hi".into()).await.unwrap();
//! match remind::start(&h.queue(), "ada".into(), "hello".into()).await {
//!     Err(StartError::Duplicate { existing, .. }) => assert_eq!(existing, Some(first)),
//!     other => panic!("{other:?}"),
//! }
//! // Without the macro's keys, on any task: the builder's.
//! let b = remind::builder("bob".into(), "hi".into())
//!     .unique_args()
//!     .unique_for(Duration::from_secs(60));
//! b.start(&h.queue()).await.unwrap();
//! # }
//! ```
//!
//! # The key
//! The key is `args-sha256:` followed by the SHA-256, in lowercase hex, of the
//! [canonical JSON](canonical_json) of `[task name, queue, {chosen arguments}]`: the
//! task's registered name, the queue it is started on, and the arguments chosen by
//! [`UniqueArgs`] (all of them, or the named ones) as they are stored. So the same
//! arguments on another queue, or for another task, are another key. Canonical: object
//! keys sorted, no spaces, and every number that is a whole number written as an integer
//! (`1`, `1.0` and `1e0` give the same key; `-0.0` is `0`); so two equal values give the same
//! key whatever order their maps were built in.
//!
//! The key is kept as the task's de-duplication name ([`TaskInfo::unique_name`]), so it
//! follows the rules of names exactly, checked atomically with the insert on every store
//! (on SQLite and PostgreSQL inside the insert's transaction; PostgreSQL's unique index on
//! live names settles two concurrent starts): see [`Store::enqueue`] and
//! [`crate::store::tombstone`]. A task has a name or a key, not both.
//!
//! # When a start is refused
//! While a task with the same key is **pending or running**, and for `unique_for`
//! ([`TaskBuilder::unique_for`], default [`DEFAULT_UNIQUE_FOR`]: zero, unique only while
//! live) **after it finished**, in any finished state (done, failed, dead or cancelled: a
//! task that failed for good still says "this was done recently"; retry it with
//! [`Queue::retry`] instead), and after it was deleted, purged or pruned (its tombstone
//! keeps the key). The period counts from the task's end, not from its insert (Oban and
//! River count from the insert): a task that runs longer than the period still keeps a
//! second one out for the whole period after it.
//!
//! A refused start returns [`StartError::Duplicate`] with the key and the id of the task
//! holding it (`None` when only a deleted task's tombstone holds it). Nothing is stored.
//!
//! # Replace (debounce)
//! With [`OnConflict::Replace`] (`on_conflict = "replace"`), a start whose key a
//! **pending** task holds sets that task's arguments and due time (`run_at`) to the new
//! ones, keeps its id, priority and attempts, and returns [`Started::Replaced`] with its
//! id. A start whose key a running task, or a finished one within the period, holds is
//! refused as above (a running task has read its arguments already). Not for iterative
//! tasks (their filter is fixed when the run starts).
//!
//! # In `start_many`
//! [`Queue::start_many`] stays all or nothing: a key taken in the store, or repeated
//! within the batch, refuses the whole call with [`StartError::Duplicate`] naming the
//! first such builder's key (`existing` is the store's holder, `None` for a repeat within
//! the batch). A builder with [`OnConflict::Replace`] is refused by `start_many`
//! ([`StartError::Unique`]): start it with [`TaskBuilder::start`].
//!
//! [`TaskInfo::unique_name`]: crate::store::TaskInfo::unique_name
//! [`Store::enqueue`]: crate::store::Store::enqueue
//! [`TaskBuilder::unique_for`]: crate::TaskBuilder::unique_for
//! [`TaskBuilder::start`]: crate::TaskBuilder::start
//! [`Queue::retry`]: crate::Queue::retry
//! [`Queue::start_many`]: crate::Queue::start_many
//! [`StartError::Duplicate`]: crate::StartError::Duplicate
//! [`StartError::Unique`]: crate::StartError::Unique

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::TaskId;

/// What every unique key starts with; a name given with [`TaskBuilder::name`](crate::TaskBuilder::name)
/// may not (so a name and a key never meet).
pub const KEY_PREFIX: &str = "args-sha256:";

/// How long a finished task keeps its key taken unless [`TaskBuilder::unique_for`](crate::TaskBuilder::unique_for)
/// (or the macro's `unique_for`) says otherwise: zero, so the key is taken only while the
/// task is pending or running.
pub const DEFAULT_UNIQUE_FOR: Duration = Duration::ZERO;

/// Whether a task's de-duplication name is a unique key of its arguments (it starts
/// with [`KEY_PREFIX`]) rather than a name given by hand.
pub fn is_key(name: &str) -> bool {
    name.starts_with(KEY_PREFIX)
}

/// Which arguments make the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UniqueArgs {
    /// Every argument (`unique = "args"`).
    All,
    /// Only these arguments, by name (`unique = ["to", "kind"]`); the order does not matter.
    Only(Vec<String>),
}

/// What a start whose key is taken does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnConflict {
    /// Refuse it with [`StartError::Duplicate`](crate::StartError::Duplicate) (the default,
    /// `on_conflict = "refuse"`).
    #[default]
    Refuse,
    /// Replace the arguments and due time of the pending task that holds the key
    /// (`on_conflict = "replace"`); refuse when a running or finished task holds it.
    Replace,
}

/// What a successful start did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    /// A new task was stored, with this id.
    Inserted(TaskId),
    /// The pending task with this id held the key and took the new arguments and due time
    /// ([`OnConflict::Replace`]).
    Replaced(TaskId),
}

impl Started {
    /// The task's id, inserted or replaced.
    pub fn id(self) -> TaskId {
        match self {
            Started::Inserted(id) | Started::Replaced(id) => id,
        }
    }

    /// Whether an existing pending task was replaced.
    pub fn replaced(self) -> bool {
        matches!(self, Started::Replaced(_))
    }
}

/// What [`Queue::start_many_skip_duplicates`](crate::Queue::start_many_skip_duplicates)
/// did with one builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The task was stored, with this id.
    Started(TaskId),
    /// Its unique key (or name) was taken, by a stored task or tombstone, or by an earlier
    /// builder of the same call; nothing was stored for it.
    Duplicate {
        /// The key (`args-sha256:...`) or the name given with
        /// [`TaskBuilder::name`](crate::TaskBuilder::name).
        key: String,
        /// The task holding it: for a stored holder, the newest stored task with it, read
        /// just after the refusal (informational, not atomic with it; `None` when only a
        /// tombstone holds it); for a repeat within the call, the task the first builder
        /// with the key started.
        existing: Option<TaskId>,
    },
}

impl Admission {
    /// The id of the task stored for this builder, if one was.
    pub fn started(&self) -> Option<TaskId> {
        match self {
            Admission::Started(id) => Some(*id),
            Admission::Duplicate { .. } => None,
        }
    }
}

/// The unique key of a task named `task` on `queue` with the arguments `payload` (the
/// JSON object of its arguments, as stored). Fails with a message naming an argument of
/// [`UniqueArgs::Only`] that `payload` lacks.
pub fn key(
    task: &str,
    queue: &str,
    payload: &Value,
    unique: &UniqueArgs,
) -> Result<String, String> {
    let chosen = match unique {
        UniqueArgs::All => payload.clone(),
        UniqueArgs::Only(names) => {
            let Value::Object(all) = payload else {
                return Err("its arguments are not an object".into());
            };
            let mut chosen = serde_json::Map::new();
            for n in names {
                let v = all.get(n).ok_or_else(|| {
                    let have: Vec<String> = all.keys().map(|k| format!("`{k}`")).collect();
                    format!(
                        "`{n}` is not one of its arguments ({})",
                        if have.is_empty() {
                            "it has none".into()
                        } else {
                            have.join(", ")
                        }
                    )
                })?;
                chosen.insert(n.clone(), v.clone());
            }
            Value::Object(chosen)
        }
    };
    let text = canonical_json(&Value::Array(vec![
        Value::String(task.into()),
        Value::String(queue.into()),
        chosen,
    ]));
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(KEY_PREFIX.len() + 64);
    out.push_str(KEY_PREFIX);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// `v` as canonical JSON text: object keys sorted by their UTF-8 bytes, no whitespace,
/// strings escaped as serde_json escapes them, and numbers in one form per value: a whole
/// number below 2^64 in magnitude as a plain integer (`1.0`, `1e0` and `1` all give `1`, `-0.0`
/// gives `0`), any other as serde_json writes an `f64` (the shortest text that reads back
/// to the same bits).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                write(item, out);
            }
            out.push('}');
        }
    }
}

fn write_str(s: &str, out: &mut String) {
    // serde_json's string escaping is fixed (`"`, `\` and control characters), so its
    // text is canonical; writing a `&str` cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn write_number(n: &serde_json::Number, out: &mut String) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        // Whole floats inside ±2^64 are exact as i128, so they meet their integer twins.
        const LIMIT: f64 = 18_446_744_073_709_551_616.0;
        if f.is_finite() && f.fract() == 0.0 && f.abs() < LIMIT {
            out.push_str(&(f as i128).to_string());
        } else {
            out.push_str(&n.to_string());
        }
    } else {
        out.push_str(&n.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_have_one_form() {
        assert_eq!(
            canonical_json(&json!([1, 1.0, -0.0, 2.5, u64::MAX])),
            "[1,1,0,2.5,18446744073709551615]"
        );
        // Whole numbers below 2^64 are integers, larger ones stay floats.
        assert_eq!(canonical_json(&json!(1e19)), "10000000000000000000");
        assert_eq!(canonical_json(&json!(1e20)), "1e+20");
    }

    #[test]
    fn keys_are_sorted_and_strings_escaped() {
        assert_eq!(
            canonical_json(&json!({"b": 1, "a": {"d": "\"x\n", "c": null}})),
            r#"{"a":{"c":null,"d":"\"x\n"},"b":1}"#
        );
    }

    #[test]
    fn the_key_covers_task_queue_and_chosen_arguments() {
        let args = json!({"to": "ada", "text": "hi"});
        let all = key("t", "q", &args, &UniqueArgs::All).unwrap_or_default();
        assert!(
            all.starts_with(KEY_PREFIX) && all.len() == KEY_PREFIX.len() + 64,
            "{all}"
        );
        assert_ne!(
            all,
            key("t", "q2", &args, &UniqueArgs::All).unwrap_or_default()
        );
        assert_ne!(
            all,
            key("t2", "q", &args, &UniqueArgs::All).unwrap_or_default()
        );
        let to = UniqueArgs::Only(vec!["to".into()]);
        let other_text = json!({"to": "ada", "text": "hello"});
        assert_eq!(key("t", "q", &args, &to), key("t", "q", &other_text, &to));
        assert_ne!(
            all,
            key("t", "q", &other_text, &UniqueArgs::All).unwrap_or_default()
        );
        let missing = key("t", "q", &args, &UniqueArgs::Only(vec!["cc".into()]));
        assert_eq!(
            missing,
            Err("`cc` is not one of its arguments (`text`, `to`)".into())
        );
    }
}
