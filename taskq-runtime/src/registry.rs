//! The registry of tasks collected from every `#[task]` and `#[iterative_task]` in the
//! program through `inventory`.

use std::collections::HashMap;

use crate::task::TaskDef;

/// Two tasks registered under one name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two tasks are registered as `{name}`: one at {first}, one at {second}; give one of them another name with #[task(name = \"...\")]")]
pub struct DuplicateTask {
    /// The shared name.
    pub name: String,
    /// `file:line` of one.
    pub first: String,
    /// `file:line` of the other.
    pub second: String,
}

/// Every registered task, by name.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Hashed with foldhash, not SipHash: the worker looks a name up for every task it
    /// runs, and the map is built once from the program's own definitions.
    tasks: HashMap<&'static str, &'static TaskDef, foldhash::fast::RandomState>,
}

impl Registry {
    /// Collects every task linked into this program, refusing duplicate names.
    pub fn collect() -> Result<Registry, DuplicateTask> {
        Registry::from_defs(inventory::iter::<TaskDef>)
    }

    /// Builds a registry from the given definitions, refusing duplicate names.
    pub fn from_defs<'a>(
        defs: impl IntoIterator<Item = &'static TaskDef>,
    ) -> Result<Registry, DuplicateTask>
    where
        'a: 'static,
    {
        let mut tasks: HashMap<&'static str, &'static TaskDef, _> = HashMap::default();
        for def in defs {
            if let Some(prev) = tasks.insert(def.name, def) {
                let (a, b) = order(prev, def);
                return Err(DuplicateTask {
                    name: def.name.to_string(),
                    first: format!("{}:{}", a.file, a.line),
                    second: format!("{}:{}", b.file, b.line),
                });
            }
        }
        Ok(Registry { tasks })
    }

    /// The task of this name.
    pub fn get(&self, name: &str) -> Option<&'static TaskDef> {
        self.tasks.get(name).copied()
    }

    /// Every task, sorted by name.
    pub fn all(&self) -> Vec<&'static TaskDef> {
        let mut v: Vec<_> = self.tasks.values().copied().collect();
        v.sort_by_key(|d| d.name);
        v
    }
}

fn order(a: &'static TaskDef, b: &'static TaskDef) -> (&'static TaskDef, &'static TaskDef) {
    if (a.file, a.line) <= (b.file, b.line) {
        (a, b)
    } else {
        (b, a)
    }
}
