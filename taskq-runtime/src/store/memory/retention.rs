//! The memory store's part of retention: it runs the deletes [`crate::retention`] decides,
//! at most a batch of rows per hold of the store's lock.
//!
//! Finished tasks are found through the `finished` index (state, end, id), so a prune
//! walks only the finished rows old enough for a rule, never the live ones. Run records
//! and tombstones are few (one per run, one per deleted name inside its window) and are
//! walked whole.

use super::*;
use crate::retention::{self as policy, Rule, PRUNE_BATCH};

impl MemoryStore {
    /// [`Store::prune`]: tasks, then run records, then tombstones, `batch` rows per lock.
    pub(super) fn prune_all(&self, now: Timestamp, batch: usize) -> PruneReport {
        let batch = if batch == 0 { PRUNE_BATCH } else { batch };
        let rules = policy::plan(&self.lock().overrides(), now);
        let mut report = PruneReport::default();
        loop {
            let mut g = self.lock();
            let ids = g.prunable_tasks(&rules, batch);
            for id in &ids {
                if let Some(row) = g.remove_row(*id, now) {
                    report.add(row.info.state, 1);
                }
            }
            if ids.len() < batch {
                break;
            }
        }
        loop {
            let mut g = self.lock();
            let runs = g.prunable_runs(&rules, batch);
            g.remove_runs(&runs);
            report.runs += runs.len() as u64;
            if runs.len() < batch {
                break;
            }
        }
        loop {
            let mut g = self.lock();
            let names = g.expired_tombstones(now, batch);
            for n in &names {
                g.tombstones.remove(n);
            }
            report.tombstones += names.len() as u64;
            if names.len() < batch {
                break;
            }
        }
        report
    }
}

impl Inner {
    /// The queues whose settings override the default retention.
    fn overrides(&self) -> Vec<(String, policy::Retention)> {
        self.queues
            .iter()
            .filter_map(|(name, (_, config))| config.retention.map(|r| (name.clone(), r)))
            .collect()
    }

    /// Up to `limit` finished tasks that a rule covers, oldest first per rule.
    fn prunable_tasks(&self, rules: &[Rule], limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        for rule in rules {
            for state in rule.class.states() {
                let range =
                    (state, Timestamp(i64::MIN), i64::MIN)..=(state, rule.finished_by, i64::MAX);
                for (_, _, id) in self.finished.range(range) {
                    if out.len() >= limit {
                        return out;
                    }
                    if self
                        .tasks
                        .get(id)
                        .is_some_and(|r| rule.queues.contains(&r.info.queue))
                    {
                        out.push(*id);
                    }
                }
            }
        }
        out
    }

    /// Up to `limit` ended runs that a rule covers and that no stored step points at.
    fn prunable_runs(&self, rules: &[Rule], limit: usize) -> Vec<(i64, Option<Timestamp>)> {
        self.runs
            .values()
            .filter(|it| {
                let (Some(class), Some(end)) = (policy::Class::of_run(it.state), it.finished_at)
                else {
                    return false;
                };
                rules.iter().any(|r| r.covers(&it.queue, class, end))
                    && self
                        .steps
                        .range((it.run.0, i64::MIN)..=(it.run.0, i64::MAX))
                        .next()
                        .is_none()
            })
            .take(limit)
            .map(|it| (it.run.0, it.finished_at))
            .collect()
    }

    /// Deletes run records, folding the hold each gave its name into the tombstones that
    /// point at it.
    fn remove_runs(&mut self, runs: &[(i64, Option<Timestamp>)]) {
        if runs.is_empty() {
            return;
        }
        let ends: HashMap<i64, Option<Timestamp>> = runs.iter().copied().collect();
        for t in self.tombstones.values_mut() {
            if let Some(end) = t.run.and_then(|run| ends.get(&run.0)) {
                *t = tombstone::without_run(*t, *end);
            }
        }
        for (run, _) in runs {
            self.runs.remove(run);
        }
    }

    /// Up to `limit` tombstones that no longer hold their name at `now`.
    fn expired_tombstones(&self, now: Timestamp, limit: usize) -> Vec<String> {
        self.tombstones
            .iter()
            .filter(|(_, t)| {
                let run = t
                    .run
                    .and_then(|run| self.runs.get(&run.0))
                    .map(|it| (it.state, it.finished_at));
                !tombstone::holds(t, run, now)
            })
            .take(limit)
            .map(|(n, _)| n.clone())
            .collect()
    }
}
