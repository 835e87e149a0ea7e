//! The in-memory store: for tests and the simplest use. Not durable: it lives in this
//! process only, so its tasks vanish when the process exits, and each
//! [`open`] of `memory://` is a separate, empty store.
//!
//! It is the reference implementation of the [`Store`] rules: the SQLite and PostgreSQL
//! backends do in SQL what this one does under a mutex.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::admission::{self, Admission, Bucket};
use super::tombstone::{self, Deleted, Tombstone};
use super::*;
use crate::policy::{ATTEMPTS_AFTER_CHECKPOINT, CANCELLED_PENDING, CANCEL_LAPSED, LEASE_LAPSED};

mod retention;
mod schedules;

#[derive(Debug, Clone)]
struct Row {
    info: TaskInfo,
    token: i64,
    tombstone_ms: i64,
    attempts: Vec<AttemptInfo>,
    started_at: Option<Timestamp>,
    /// The starter's trace context ([`NewTask::trace`]), kept by continuation steps.
    trace: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: i64,
    next_token: i64,
    tasks: BTreeMap<i64, Row>,
    queues: BTreeMap<String, (bool, QueueConfig)>,
    buckets: HashMap<String, Bucket>,
    runs: BTreeMap<i64, IterationInfo>,
    /// Each queue's live rows in claim structures and its ids by state (a queue is here
    /// while it has rows), so that a claim, `next_due` and `queues()` touch only the
    /// queues they are about and never a finished or future row.
    lanes: HashMap<String, Lane>,
    /// Task ids by state, for listing by state.
    by_state: [BTreeSet<i64>; 6],
    /// Task ids by task name and state, for listing by task name.
    by_task: HashMap<String, [BTreeSet<i64>; 6]>,
    /// Finished tasks by state and end, for pruning (see `retention.rs`).
    finished: BTreeSet<(TaskState, Timestamp, i64)>,
    /// Steps of iterative runs: (run, task id).
    steps: BTreeSet<(i64, i64)>,
    /// Task ids by unique name.
    names: HashMap<String, BTreeSet<i64>>,
    /// Holds that deleted named tasks left on their names (see [`tombstone`]).
    tombstones: HashMap<String, Tombstone>,
}

/// One queue's rows, indexed (see [`Inner::index`]).
#[derive(Debug)]
struct Lane {
    /// Every pending row, by due time.
    pending: BTreeSet<(Timestamp, i64)>,
    /// The pending rows due at `promoted` (`run_at <= promoted`), in claim order:
    /// priority (high first), then `run_at`, then id. A claim at `now` first moves the
    /// rows between `promoted` and `now` in or out (each row moves once as time goes on),
    /// so it reads due rows only, never the future rows of a higher priority.
    ready: BTreeSet<(Reverse<i32>, Timestamp, i64)>,
    /// The time `ready` is up to date for.
    promoted: Timestamp,
    /// Running rows by lease end: lapsed leases and concurrency counts.
    leased: BTreeSet<(Timestamp, i64)>,
    /// Ids by state (in [`TaskState::ALL`] order): counts and listing by queue.
    by_state: [BTreeSet<i64>; 6],
}

impl Default for Lane {
    fn default() -> Lane {
        Lane {
            pending: BTreeSet::new(),
            ready: BTreeSet::new(),
            promoted: Timestamp(i64::MIN),
            leased: BTreeSet::new(),
            by_state: Default::default(),
        }
    }
}

impl Lane {
    /// Brings `ready` to exactly the pending rows due at `now`.
    fn promote(&mut self, tasks: &BTreeMap<i64, Row>, now: Timestamp) {
        let key = |id: i64, t: Timestamp| {
            let prio = tasks.get(&id).map(|r| r.info.priority).unwrap_or(0);
            (Reverse(prio), t, id)
        };
        if now > self.promoted {
            let from = (Timestamp(self.promoted.0.saturating_add(1)), i64::MIN);
            for &(t, id) in self.pending.range(from..=(now, i64::MAX)) {
                self.ready.insert(key(id, t));
            }
        } else if now < self.promoted {
            let from = (Timestamp(now.0.saturating_add(1)), i64::MIN);
            for &(t, id) in self.pending.range(from..=(self.promoted, i64::MAX)) {
                self.ready.remove(&key(id, t));
            }
        }
        self.promoted = now;
    }

    fn is_empty(&self) -> bool {
        self.by_state.iter().all(BTreeSet::is_empty)
    }
}

/// The position of a state in [`TaskState::ALL`] (the per-state index arrays).
fn slot(state: TaskState) -> usize {
    TaskState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or_default()
}

/// A store that keeps everything in process memory behind one mutex.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    notify: Notify,
    /// Wakes [`Store::wait_for_cancel`] when a running task is cancelled.
    cancels: Notify,
    /// Schedules by name (`memory/schedules.rs`), apart from `inner`: a fire holds this
    /// lock across its enqueue, which takes `inner`.
    schedules: tokio::sync::Mutex<BTreeMap<String, ScheduleInfo>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied change behind
        // (every change is applied after its checks), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn queue_wanted(queues: &[String], q: &str) -> bool {
    queues.is_empty() || queues.iter().any(|x| x == q)
}

impl Inner {
    // The indexes (`lanes`, `by_state`, `by_task`, `finished`) follow a row's state,
    // priority, run_at, lease and end: every change to those goes between `unindex(id)`
    // and `index(id)`, and every row is indexed while it exists (`insert_row`,
    // `remove_row`).

    /// Ends running task `id`, cancelled by a person, whose lease lapsed (its worker died
    /// or stalled): cancelled, the lapse recorded ([`CANCEL_LAPSED`]).
    fn end_cancel_lapsed(&mut self, id: i64, now: Timestamp) {
        self.unindex(id);
        if let Some(row) = self.tasks.get_mut(&id) {
            row.attempts.push(AttemptInfo {
                attempt: row.info.attempts,
                worker: row.info.worker.clone().unwrap_or_default(),
                started_at: row.started_at.unwrap_or(now),
                finished_at: now,
                outcome: CANCEL_LAPSED.0.into(),
                error: Some(CANCEL_LAPSED.1.into()),
            });
            row.info.last_error = Some(CANCEL_LAPSED.1.into());
            row.info.state = TaskState::Cancelled;
            row.info.finished_at = Some(now);
            row.info.worker = None;
            row.info.lease_until = None;
            row.info.cancel_requested = true;
        }
        self.index(id);
    }

    fn unindex(&mut self, id: i64) {
        let Some(r) = self.tasks.get(&id) else { return };
        let (st, q) = (slot(r.info.state), &r.info.queue);
        self.by_state[st].remove(&id);
        if let Some(ids) = self.by_task.get_mut(&r.info.task) {
            ids[st].remove(&id);
            if ids.iter().all(BTreeSet::is_empty) {
                self.by_task.remove(&r.info.task);
            }
        }
        let Some(lane) = self.lanes.get_mut(q) else {
            return;
        };
        lane.by_state[st].remove(&id);
        match r.info.state {
            TaskState::Pending => {
                lane.pending.remove(&(r.info.run_at, id));
                lane.ready
                    .remove(&(Reverse(r.info.priority), r.info.run_at, id));
            }
            TaskState::Running => {
                if let Some(l) = r.info.lease_until {
                    lane.leased.remove(&(l, id));
                }
            }
            state => {
                if let Some(end) = r.info.finished_at {
                    self.finished.remove(&(state, end, id));
                }
            }
        }
        if lane.is_empty() {
            self.lanes.remove(q);
        }
    }

    fn index(&mut self, id: i64) {
        let Some(r) = self.tasks.get(&id) else { return };
        let st = slot(r.info.state);
        self.by_state[st].insert(id);
        self.by_task.entry(r.info.task.clone()).or_default()[st].insert(id);
        let lane = self.lanes.entry(r.info.queue.clone()).or_default();
        lane.by_state[st].insert(id);
        match r.info.state {
            TaskState::Pending => {
                lane.pending.insert((r.info.run_at, id));
                if r.info.run_at <= lane.promoted {
                    lane.ready
                        .insert((Reverse(r.info.priority), r.info.run_at, id));
                }
            }
            TaskState::Running => {
                if let Some(l) = r.info.lease_until {
                    lane.leased.insert((l, id));
                }
            }
            state => {
                if let Some(end) = r.info.finished_at {
                    self.finished.insert((state, end, id));
                }
            }
        }
    }

    fn insert_row(&mut self, row: Row) {
        let id = row.info.id.0;
        if let Some(n) = &row.info.unique_name {
            self.names.entry(n.clone()).or_default().insert(id);
        }
        if let Some(run) = row.info.run {
            self.steps.insert((run.0, id));
        }
        self.tasks.insert(id, row);
        self.index(id);
    }

    /// Removes a row (every deletion goes through here) and leaves its name's tombstone.
    fn remove_row(&mut self, id: i64, now: Timestamp) -> Option<Row> {
        self.unindex(id);
        let row = self.tasks.remove(&id)?;
        if let Some(run) = row.info.run {
            self.steps.remove(&(run.0, id));
        }
        if let Some(n) = &row.info.unique_name {
            if let Some(ids) = self.names.get_mut(n) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.names.remove(n);
                }
            }
        }
        let run = row.info.run.map(|run| {
            let holds = self.runs.get(&run.0).is_some_and(|it| {
                tombstone::run_holds(it.state, it.finished_at, row.tombstone_ms, now)
            });
            (run, holds)
        });
        let deleted = Deleted {
            name: row.info.unique_name.as_deref(),
            state: row.info.state,
            finished_at: row.info.finished_at,
            window_ms: row.tombstone_ms,
            run,
        };
        if let Some((name, new)) = tombstone::of_deleted(deleted, now) {
            let old = self.tombstones.get(&name).copied();
            let old_run_end = old
                .and_then(|t| t.run)
                .and_then(|run| self.runs.get(&run.0))
                .and_then(|it| it.finished_at);
            self.tombstones
                .insert(name, tombstone::merge(old, old_run_end, new));
        }
        Some(row)
    }

    fn paused(&self, queue: &str) -> bool {
        self.queues.get(queue).map(|q| q.0).unwrap_or(false)
    }

    /// What a claim at `now` may take from `queue` (see [`admission`]): its
    /// `max_concurrent` minus what runs, and the whole tokens in its bucket.
    fn admission(&self, queue: &str, now: Timestamp) -> Admission {
        let Some((_, config)) = self.queues.get(queue) else {
            return admission::admit(&QueueConfig::default(), 0, None, now);
        };
        let running = match (config.max_concurrent, self.lanes.get(queue)) {
            (Some(_), Some(lane)) => lane
                .leased
                .range((Timestamp(now.0.saturating_add(1)), i64::MIN)..)
                .count() as u64,
            _ => 0,
        };
        admission::admit(config, running, self.buckets.get(queue).copied(), now)
    }

    fn live_name(&self, name: &str, now: Timestamp) -> bool {
        if let Some(t) = self.tombstones.get(name) {
            let run = t
                .run
                .and_then(|run| self.runs.get(&run.0))
                .map(|it| (it.state, it.finished_at));
            if tombstone::holds(t, run, now) {
                return true;
            }
        }
        let Some(ids) = self.names.get(name) else {
            return false;
        };
        ids.iter().filter_map(|id| self.tasks.get(id)).any(|r| {
            // The named first step of an iterative run ends when it hands over to a
            // continuation: the name stays taken while the run is live, and its tombstone
            // window counts from the end of the run.
            let run = r.info.run.and_then(|run| self.runs.get(&run.0));
            let ended = [r.info.finished_at, run.and_then(|it| it.finished_at)]
                .into_iter()
                .flatten()
                .max();
            r.info.state.is_live()
                || run.map(|it| it.state == RunState::Running) == Some(true)
                || ended
                    .map(|f| f.0.saturating_add(r.tombstone_ms) > now.0)
                    .unwrap_or(false)
        })
    }

    /// Whether `run` (a task's run, if it is a step) exists and is no longer running.
    fn run_ended(&self, run: Option<TaskId>) -> bool {
        run.and_then(|run| self.runs.get(&run.0))
            .is_some_and(|it| it.state != RunState::Running)
    }

    fn end_run(
        &mut self,
        run: Option<TaskId>,
        state: RunState,
        error: Option<String>,
        now: Timestamp,
    ) {
        if let Some(run) = run {
            if let Some(it) = self.runs.get_mut(&run.0) {
                if it.state == RunState::Running {
                    it.state = state;
                    it.error = error;
                    it.finished_at = Some(now);
                    it.updated_at = now;
                }
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn enqueue(
        &self,
        tasks: Vec<NewTask>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        check_new_tasks(&tasks)?;
        let mut ids = Vec::with_capacity(tasks.len());
        {
            let mut g = self.lock();
            let mut seen = std::collections::HashSet::new();
            for t in &tasks {
                if let Some(n) = &t.unique_name {
                    if !seen.insert(n.clone()) || g.live_name(n, now) {
                        return Err(StoreError::AlreadyExists(n.clone()));
                    }
                }
            }
            for t in tasks {
                g.next_id += 1;
                let id = TaskId(g.next_id);
                let run = t.iteration.as_ref().map(|_| id);
                if let Some(it) = &t.iteration {
                    g.runs.insert(
                        id.0,
                        IterationInfo {
                            run: id,
                            task: t.task.clone(),
                            queue: t.queue.clone(),
                            filter: it.filter.clone(),
                            cursor: None,
                            processed: 0,
                            batches: 0,
                            steps: 1,
                            total: None,
                            state: RunState::Running,
                            started_at: now,
                            updated_at: now,
                            finished_at: None,
                            error: None,
                        },
                    );
                }
                g.insert_row(Row {
                    info: TaskInfo {
                        id,
                        task: t.task,
                        queue: t.queue,
                        state: TaskState::Pending,
                        payload: t.payload,
                        priority: t.priority,
                        attempts: 0,
                        unique_name: t.unique_name,
                        created_at: now,
                        enqueued_at: now,
                        run_at: t.run_at,
                        finished_at: None,
                        last_error: None,
                        run,
                        worker: None,
                        lease_until: None,
                        cancel_requested: false,
                    },
                    token: 0,
                    // Saturated as every store does: a window beyond `i64::MAX` ms (such
                    // as `Duration::MAX`) holds the name for ever instead of wrapping to a
                    // negative window that frees it at once.
                    tombstone_ms: t.tombstone.as_millis().min(i64::MAX as u128) as i64,
                    attempts: Vec::new(),
                    started_at: None,
                    trace: t.trace,
                });
                ids.push(id);
            }
        }
        self.notify.notify_waiters();
        Ok(ids)
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Vec<ClaimedTask>, StoreError> {
        let now = req.now;
        let mut g = self.lock();
        let g = &mut *g;
        // Pick: lapsed leases and due pending tasks of the wanted, unpaused queues, at most
        // `limit` of each kind per queue (a queue's rows are only passed over once it is
        // out of allowance), merged in claim order, each queue up to its allowance
        // (concurrency and token bucket). Only these queues' due rows are read.
        let mut picks: Vec<i64> = Vec::new();
        // Lapsed leases of tasks a person cancelled while they ran, in every queue (paused
        // or not asked for: nothing runs, the cancel decided their end): ended, not taken.
        let cancelled: Vec<i64> = g
            .lanes
            .values()
            .flat_map(|lane| lane.leased.range(..=(now, i64::MAX)))
            .map(|(_, id)| *id)
            .filter(|id| g.tasks.get(id).is_some_and(|r| r.info.cancel_requested))
            .collect();
        for id in cancelled {
            g.end_cancel_lapsed(id, now);
        }
        {
            let mut names: Vec<String> = if req.queues.is_empty() {
                g.lanes.keys().cloned().collect()
            } else {
                req.queues.clone()
            };
            names.sort_unstable();
            names.dedup();
            names.retain(|q| !g.paused(q) && g.lanes.contains_key(q));
            let mut cands: Vec<(Reverse<i32>, Timestamp, i64)> = Vec::new();
            for q in &names {
                let Some(lane) = g.lanes.get_mut(q) else {
                    continue;
                };
                lane.promote(&g.tasks, now);
                cands.extend(lane.ready.iter().take(req.limit).copied());
                let mut lapsed: Vec<(Reverse<i32>, Timestamp, i64)> = lane
                    .leased
                    .range(..=(now, i64::MAX))
                    .filter_map(|(_, id)| {
                        g.tasks
                            .get(id)
                            .map(|r| (Reverse(r.info.priority), r.info.run_at, *id))
                    })
                    .collect();
                lapsed.sort_unstable();
                cands.extend(lapsed.into_iter().take(req.limit));
            }
            cands.sort_unstable();
            let mut admissions: HashMap<String, (Admission, u64)> = HashMap::new();
            for (_, _, id) in cands {
                if picks.len() >= req.limit {
                    break;
                }
                let Some(queue) = g.tasks.get(&id).map(|r| &r.info.queue) else {
                    continue;
                };
                let (adm, taken) = admissions
                    .entry(queue.clone())
                    .or_insert_with(|| (g.admission(queue, now), 0));
                if *taken >= adm.allowance {
                    continue;
                }
                *taken += 1;
                picks.push(id);
            }
            // Persist the buckets of rate-limited queues taken from (refilling alone needs
            // no write: a later claim computes the same refill from the stored state).
            for (queue, (adm, taken)) in admissions.into_iter().filter(|(_, (_, n))| *n > 0) {
                if let Some(b) = adm.after(taken) {
                    g.buckets.insert(queue, b);
                }
            }
        }
        let mut out = Vec::with_capacity(picks.len());
        for id in picks {
            g.unindex(id);
            g.next_token += 1;
            let token = g.next_token;
            let row = g
                .tasks
                .get_mut(&id)
                .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
            if row.info.state == TaskState::Running {
                // The previous holder's lease lapsed: record that attempt.
                row.attempts.push(AttemptInfo {
                    attempt: row.info.attempts,
                    worker: row.info.worker.clone().unwrap_or_default(),
                    started_at: row.started_at.unwrap_or(now),
                    finished_at: now,
                    outcome: LEASE_LAPSED.0.into(),
                    error: Some(LEASE_LAPSED.1.into()),
                });
                row.info.last_error = Some(LEASE_LAPSED.1.into());
            }
            row.info.state = TaskState::Running;
            row.info.attempts += 1;
            row.info.worker = Some(req.worker.clone());
            row.info.lease_until = Some(now.add(req.lease));
            row.token = token;
            row.started_at = Some(now);
            g.index(id);
            let row = &g.tasks[&id];
            let iteration = row.info.run.and_then(|run| {
                g.runs.get(&run.0).map(|it| IterationCursor {
                    run,
                    cursor: it.cursor.clone(),
                    processed: it.processed,
                    batches: it.batches,
                    total: it.total,
                })
            });
            let row = &g.tasks[&id];
            out.push(ClaimedTask {
                lease: Lease {
                    id: TaskId(id),
                    token,
                },
                task: row.info.task.clone(),
                queue: row.info.queue.clone(),
                payload: row.info.payload.clone(),
                attempt: row.info.attempts,
                enqueued_at: row.info.enqueued_at,
                iteration,
                // Values are kept as given: nothing to decode.
                decode_error: None,
                run_at: row.info.run_at,
                trace: row.trace.clone(),
            });
        }
        Ok(out)
    }

    async fn heartbeat(
        &self,
        leases: &[Lease],
        _worker: &str,
        until: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        let mut g = self.lock();
        let mut lost = Vec::new();
        for l in leases {
            match g.tasks.get(&l.id.0) {
                Some(r) if r.token == l.token && r.info.state == TaskState::Running => {
                    g.unindex(l.id.0);
                    if let Some(r) = g.tasks.get_mut(&l.id.0) {
                        r.info.lease_until = Some(until);
                    }
                    g.index(l.id.0);
                }
                _ => lost.push(l.id),
            }
        }
        Ok(lost)
    }

    async fn renew(
        &self,
        leases: &[Lease],
        worker: &str,
        until: Timestamp,
    ) -> Result<Renewal, StoreError> {
        let lost = self.heartbeat(leases, worker, until).await?;
        let g = self.lock();
        let cancel_requested = leases
            .iter()
            .filter(|l| !lost.contains(&l.id))
            .filter(|l| {
                g.tasks
                    .get(&l.id.0)
                    .is_some_and(|r| r.info.cancel_requested)
            })
            .map(|l| l.id)
            .collect();
        Ok(Renewal {
            lost,
            cancel_requested,
        })
    }

    async fn finish(
        &self,
        finished: Vec<Finish>,
        worker: &str,
        now: Timestamp,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(finished.len());
        let mut woke = false;
        {
            let mut g = self.lock();
            for f in finished {
                let id = f.lease.id;
                let held = matches!(g.tasks.get(&id.0), Some(r) if r.token == f.lease.token && r.info.state == TaskState::Running);
                if !held {
                    results.push(Err(StoreError::LeaseLost(id)));
                    continue;
                }
                let (run, attempt, cancel_requested) = {
                    let r = &g.tasks[&id.0];
                    (r.info.run, r.info.attempts, r.info.cancel_requested)
                };
                let tr = f
                    .outcome
                    .transition_held(g.run_ended(run), cancel_requested, now);
                if let Some(state) = tr.run_ends {
                    g.end_run(run, state, tr.error.clone(), now);
                }
                woke |= tr.wakes();
                let mut next = None;
                g.unindex(id.0);
                {
                    let r = g
                        .tasks
                        .get_mut(&id.0)
                        .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
                    r.attempts.push(AttemptInfo {
                        attempt,
                        worker: worker.to_string(),
                        started_at: f.started_at,
                        finished_at: now,
                        outcome: tr.label.into(),
                        error: tr.error.clone(),
                    });
                    r.info.state = tr.state;
                    r.info.worker = None;
                    r.info.lease_until = None;
                    if tr.error.is_some() {
                        r.info.last_error = tr.error;
                    }
                    if let Some(at) = tr.run_at {
                        r.info.run_at = at;
                    }
                    if !tr.counts {
                        r.info.attempts = r.info.attempts.saturating_sub(1);
                    }
                    if tr.finished {
                        r.info.finished_at = Some(now);
                    }
                    if let Some(run_at) = tr.continue_at {
                        next = Some((r.info.clone(), r.tombstone_ms, run_at, r.trace.clone()));
                    }
                }
                g.index(id.0);
                if let Some((info, tombstone_ms, run_at, trace)) = next {
                    g.next_id += 1;
                    let nid = TaskId(g.next_id);
                    if let Some(run) = info.run {
                        if let Some(it) = g.runs.get_mut(&run.0) {
                            it.steps += 1;
                            it.updated_at = now;
                        }
                    }
                    g.insert_row(Row {
                        info: TaskInfo {
                            id: nid,
                            state: TaskState::Pending,
                            attempts: 0,
                            unique_name: None,
                            created_at: now,
                            enqueued_at: now,
                            run_at,
                            finished_at: None,
                            last_error: None,
                            worker: None,
                            lease_until: None,
                            cancel_requested: false,
                            ..info
                        },
                        token: 0,
                        tombstone_ms,
                        attempts: Vec::new(),
                        started_at: None,
                        trace,
                    });
                }
                results.push(Ok(()));
            }
        }
        if woke {
            self.notify.notify_waiters();
        }
        Ok(results)
    }

    async fn checkpoint(
        &self,
        lease: Lease,
        cp: Checkpoint,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        check_checkpoint(lease, &cp)?;
        let mut g = self.lock();
        let run = match g.tasks.get(&lease.id.0) {
            Some(r) if r.token == lease.token && r.info.state == TaskState::Running => r.info.run,
            _ => return Err(StoreError::LeaseLost(lease.id)),
        };
        let run = run.ok_or_else(|| {
            StoreError::Conflict(format!(
                "task {} is not a step of an iterative run",
                lease.id
            ))
        })?;
        let it = g
            .runs
            .get_mut(&run.0)
            .ok_or_else(|| StoreError::NotFound(format!("iteration run {run}")))?;
        if it.state != RunState::Running {
            return Err(StoreError::LeaseLost(lease.id));
        }
        it.cursor = Some(cp.cursor);
        it.processed = it.processed.saturating_add(cp.processed).min(MAX_COUNT);
        it.batches += 1;
        if let Some(total) = cp.total {
            it.total = Some(total.min(MAX_COUNT));
        }
        it.updated_at = now;
        if let Some(r) = g.tasks.get_mut(&lease.id.0) {
            // Attempts count tries at the current cursor: progress starts a new count.
            r.info.attempts = ATTEMPTS_AFTER_CHECKPOINT;
        }
        Ok(())
    }

    async fn confirm(&self, lease: Lease) -> Result<(), StoreError> {
        let g = self.lock();
        match g.tasks.get(&lease.id.0) {
            Some(r)
                if r.token == lease.token
                    && r.info.state == TaskState::Running
                    && !g.run_ended(r.info.run) =>
            {
                Ok(())
            }
            _ => Err(StoreError::LeaseLost(lease.id)),
        }
    }

    async fn next_due(&self, queues: &[String]) -> Result<Option<Timestamp>, StoreError> {
        let g = self.lock();
        let first = |lane: &Lane| {
            let pending = lane.pending.first().map(|(t, _)| *t);
            let lease = lane.leased.first().map(|(t, _)| *t);
            pending.into_iter().chain(lease).min()
        };
        let due = g
            .lanes
            .iter()
            .filter(|(q, _)| queue_wanted(queues, q) && !g.paused(q))
            .filter_map(|(_, lane)| first(lane));
        Ok(match queues.is_empty() {
            true => due.min(),
            // Only the queues asked for: a look-up each, not a walk of every lane.
            false => queues
                .iter()
                .filter(|q| !g.paused(q))
                .filter_map(|q| g.lanes.get(q))
                .filter_map(first)
                .min(),
        })
    }

    async fn wait_for_work(&self, _queues: &[String], timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let g = self.lock();
        let mut map: BTreeMap<String, QueueInfo> = BTreeMap::new();
        for (name, (paused, config)) in &g.queues {
            map.insert(
                name.clone(),
                QueueInfo {
                    name: name.clone(),
                    counts: Vec::new(),
                    paused: *paused,
                    config: config.clone(),
                },
            );
        }
        // Counts are the sizes of each queue's per-state index: no row is read.
        for (name, lane) in &g.lanes {
            let q = map.entry(name.clone()).or_insert_with(|| QueueInfo {
                name: name.clone(),
                ..QueueInfo::default()
            });
            q.counts = TaskState::ALL
                .into_iter()
                .zip(&lane.by_state)
                .filter(|(_, ids)| !ids.is_empty())
                .map(|(state, ids)| (state, ids.len() as u64))
                .collect();
        }
        Ok(map.into_values().collect())
    }

    async fn configure_queue(&self, queue: &str, config: QueueConfig) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        let mut g = self.lock();
        g.queues.entry(queue.to_string()).or_default().1 = config;
        g.buckets.remove(queue);
        Ok(())
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        check_queue_name(queue)?;
        self.lock().queues.entry(queue.to_string()).or_default().0 = paused;
        if !paused {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    async fn purge(&self, queue: &str, now: Timestamp) -> Result<u64, StoreError> {
        check_queue_name(queue)?;
        let mut g = self.lock();
        let ids: Vec<i64> = g
            .lanes
            .get(queue)
            .map(|lane| lane.pending.iter().map(|(_, id)| *id).collect())
            .unwrap_or_default();
        for id in &ids {
            if let Some(row) = g.remove_row(*id, now) {
                let why = format!("its pending step {id} was purged from queue `{queue}`");
                g.end_run(row.info.run, RunState::Cancelled, Some(why), now);
            }
        }
        Ok(ids.len() as u64)
    }

    async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<TaskInfo>, StoreError> {
        let g = self.lock();
        let limit = if q.limit == 0 { 100 } else { q.limit };
        let below = q.before.map(|b| b.0).unwrap_or(i64::MAX);
        let args = q.args_contains.as_deref();
        if args.is_some_and(|a| a.contains('\0')) {
            // JSON text never holds a raw NUL (it escapes it), as on the SQL stores.
            return Ok(Vec::new());
        }
        let matches = |r: &Row| {
            q.queue.as_ref().is_none_or(|x| *x == r.info.queue)
                && q.state.is_none_or(|s| s == r.info.state)
                && q.task.as_ref().is_none_or(|t| *t == r.info.task)
                // The compact JSON text the SQL stores keep (`Value`'s `Display`).
                && args.is_none_or(|a| r.info.payload.to_string().contains(a))
        };
        let states: Vec<usize> = match q.state {
            Some(s) => vec![slot(s)],
            None => (0..TaskState::ALL.len()).collect(),
        };
        // The narrowest index the filters allow (queue, then task name, then state), read
        // newest first from `before`, one set per state; the other filters are checked
        // on the rows it gives.
        let sets: Option<Vec<&BTreeSet<i64>>> = if let Some(queue) = &q.queue {
            Some(match g.lanes.get(queue) {
                Some(lane) => states.iter().map(|s| &lane.by_state[*s]).collect(),
                None => Vec::new(),
            })
        } else if let Some(task) = &q.task {
            Some(match g.by_task.get(task) {
                Some(ids) => states.iter().map(|s| &ids[*s]).collect(),
                None => Vec::new(),
            })
        } else {
            q.state.map(|s| vec![&g.by_state[slot(s)]])
        };
        let mut ids: Vec<i64> = match sets {
            Some(sets) => sets
                .into_iter()
                .flat_map(|set| {
                    set.range(..below)
                        .rev()
                        .filter(|id| g.tasks.get(id).is_some_and(&matches))
                        .take(limit)
                        .copied()
                })
                .collect(),
            None => g
                .tasks
                .range(..below)
                .rev()
                .filter(|(_, r)| matches(r))
                .take(limit)
                .map(|(id, _)| *id)
                .collect(),
        };
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.truncate(limit);
        Ok(ids
            .into_iter()
            .filter_map(|id| g.tasks.get(&id))
            .map(|r| listed(&r.info, q.with_payload))
            .collect())
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskDetail>, StoreError> {
        Ok(self.lock().tasks.get(&id.0).map(|r| TaskDetail {
            info: r.info.clone(),
            attempts: r.attempts.clone(),
        }))
    }

    async fn run_now(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        {
            let mut g = self.lock();
            let r = g
                .tasks
                .get(&id.0)
                .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
            if r.info.state != TaskState::Pending {
                return Err(StoreError::Conflict(format!(
                    "task {id} is {}, only a pending task can be run now",
                    r.info.state
                )));
            }
            g.unindex(id.0);
            if let Some(r) = g.tasks.get_mut(&id.0) {
                r.info.run_at = now;
            }
            g.index(id.0);
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn delete(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        let mut g = self.lock();
        let row = g
            .remove_row(id.0, now)
            .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
        if row.info.state.is_live() {
            let why = format!("its step {id} was deleted");
            g.end_run(row.info.run, RunState::Cancelled, Some(why), now);
        }
        Ok(())
    }

    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<(), StoreError> {
        {
            let mut g = self.lock();
            let r = g
                .tasks
                .get(&id.0)
                .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
            if !matches!(r.info.state, TaskState::Dead | TaskState::Failed) {
                return Err(StoreError::Conflict(format!(
                    "task {id} is {}, only a dead or failed task can be retried",
                    r.info.state
                )));
            }
            if let Some(name) = &r.info.unique_name {
                let taken = g.names.get(name).is_some_and(|ids| {
                    ids.iter()
                        .filter(|other| **other != id.0)
                        .filter_map(|other| g.tasks.get(other))
                        .any(|o| o.info.state.is_live())
                });
                if taken {
                    return Err(StoreError::Conflict(format!(
                        "task {id} cannot be retried: another live task has its unique name"
                    )));
                }
            }
            g.unindex(id.0);
            let r = g
                .tasks
                .get_mut(&id.0)
                .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
            r.info.state = TaskState::Pending;
            r.info.attempts = 0;
            r.info.enqueued_at = now;
            r.info.run_at = now;
            r.info.finished_at = None;
            let run = r.info.run;
            g.index(id.0);
            if let Some(run) = run {
                if let Some(it) = g.runs.get_mut(&run.0) {
                    it.state = RunState::Running;
                    it.finished_at = None;
                    it.error = None;
                    it.updated_at = now;
                }
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn iteration(&self, run: TaskId) -> Result<Option<IterationInfo>, StoreError> {
        Ok(self.lock().runs.get(&run.0).cloned())
    }

    async fn iterations(&self, limit: usize) -> Result<Vec<IterationInfo>, StoreError> {
        Ok(self
            .lock()
            .runs
            .values()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn cancel_iteration(&self, run: TaskId, now: Timestamp) -> Result<(), StoreError> {
        let mut g = self.lock();
        let it = g
            .runs
            .get_mut(&run.0)
            .ok_or_else(|| StoreError::NotFound(format!("iteration run {run}")))?;
        if it.state != RunState::Running {
            return Err(StoreError::Conflict(format!(
                "run {run} is {}, only a running run can be cancelled",
                it.state.as_str()
            )));
        }
        it.state = RunState::Cancelled;
        it.finished_at = Some(now);
        it.updated_at = now;
        let steps: Vec<i64> = g
            .tasks
            .values()
            .filter(|r| r.info.run == Some(run) && r.info.state.is_live())
            .map(|r| r.info.id.0)
            .collect();
        for id in steps {
            g.unindex(id);
            if let Some(r) = g.tasks.get_mut(&id) {
                r.info.state = TaskState::Cancelled;
                r.info.finished_at = Some(now);
                r.info.worker = None;
                r.info.lease_until = None;
            }
            g.index(id);
        }
        Ok(())
    }

    async fn cancel(&self, id: TaskId, now: Timestamp) -> Result<CancelOutcome, StoreError> {
        let outcome = {
            let mut g = self.lock();
            let r = g
                .tasks
                .get(&id.0)
                .ok_or_else(|| StoreError::NotFound(format!("task {id}")))?;
            if let Some(run) = r.info.run {
                return Err(StoreError::Conflict(format!(
                    "task {id} is a step of iteration run {run}: cancel the run"
                )));
            }
            match r.info.state {
                TaskState::Pending => {
                    g.unindex(id.0);
                    if let Some(r) = g.tasks.get_mut(&id.0) {
                        r.info.state = TaskState::Cancelled;
                        r.info.finished_at = Some(now);
                        r.info.last_error = Some(CANCELLED_PENDING.into());
                    }
                    g.index(id.0);
                    CancelOutcome::Cancelled
                }
                // Its worker is gone (the lease lapsed): nothing is left to tell.
                TaskState::Running if r.info.lease_until.is_none_or(|t| t <= now) => {
                    g.end_cancel_lapsed(id.0, now);
                    CancelOutcome::Cancelled
                }
                TaskState::Running if r.info.cancel_requested => CancelOutcome::AlreadyRequested,
                TaskState::Running => {
                    if let Some(r) = g.tasks.get_mut(&id.0) {
                        r.info.cancel_requested = true;
                    }
                    CancelOutcome::Requested
                }
                state => {
                    return Err(StoreError::Conflict(format!(
                        "task {id} is {state}, only a pending or running task can be cancelled"
                    )))
                }
            }
        };
        if outcome == CancelOutcome::Requested {
            self.cancels.notify_waiters();
        }
        Ok(outcome)
    }

    async fn wait_for_cancel(&self) {
        self.cancels.notified().await
    }

    async fn prune(&self, now: Timestamp, batch: usize) -> Result<PruneReport, StoreError> {
        Ok(self.prune_all(now, batch))
    }

    async fn finished_per_minute(
        &self,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<FinishedMinute>, StoreError> {
        let g = self.lock();
        let mut rows = Vec::new();
        for state in [TaskState::Done, TaskState::Failed, TaskState::Dead] {
            // The retention index: (state, end, id), so only the window's rows are read.
            for &(_, end, _) in g
                .finished
                .range((state, since, i64::MIN)..(state, until, i64::MIN))
            {
                rows.push((FinishedMinute::minute_of(end), state, 1));
            }
        }
        Ok(FinishedMinute::tally(rows))
    }

    async fn unique_holder(
        &self,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<(TaskId, TaskState)>, StoreError> {
        let g = self.lock();
        Ok(g.names
            .get(name)
            .into_iter()
            .flat_map(|ids| ids.iter().rev())
            .filter_map(|id| g.tasks.get(id))
            .find(|r| {
                r.info.state.is_live()
                    || r.info
                        .finished_at
                        .is_some_and(|f| f.0.saturating_add(r.tombstone_ms) > now.0)
            })
            .map(|r| (r.info.id, r.info.state)))
    }

    async fn replace_pending(
        &self,
        name: &str,
        payload: &serde_json::Value,
        run_at: Timestamp,
    ) -> Result<Option<TaskId>, StoreError> {
        check_replacement(name, payload)?;
        let replaced = {
            let mut g = self.lock();
            let pending = g.names.get(name).and_then(|ids| {
                ids.iter().copied().find(|id| {
                    g.tasks
                        .get(id)
                        .is_some_and(|r| r.info.state == TaskState::Pending && r.info.run.is_none())
                })
            });
            if let Some(id) = pending {
                // Out of the claim structures and back, as its due time changes.
                g.unindex(id);
                if let Some(r) = g.tasks.get_mut(&id) {
                    r.info.payload = payload.clone();
                    r.info.run_at = run_at;
                }
                g.index(id);
            }
            pending.map(TaskId)
        };
        if replaced.is_some() {
            self.notify.notify_waiters();
        }
        Ok(replaced)
    }

    async fn upsert_schedules(
        &self,
        schedules: Vec<NewSchedule>,
        known_tasks: Option<Vec<String>>,
    ) -> Result<(), StoreError> {
        self.upsert_schedules_mem(schedules, known_tasks).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        Ok(self.schedules_mem().await)
    }

    async fn fire_schedule(
        &self,
        fire: Fire,
        now: Timestamp,
    ) -> Result<Option<Vec<TaskId>>, StoreError> {
        self.fire_schedule_mem(fire, now).await
    }

    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_tick: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        self.set_schedule_paused_mem(name, paused, next_tick).await
    }

    async fn remove_schedule(&self, name: &str) -> Result<(), StoreError> {
        self.remove_schedule_mem(name).await
    }
}

/// A task as a listing shows it: without its payload (null) unless asked, so a listing
/// never copies payloads it was not asked for.
fn listed(info: &TaskInfo, with_payload: bool) -> TaskInfo {
    TaskInfo {
        id: info.id,
        task: info.task.clone(),
        queue: info.queue.clone(),
        state: info.state,
        payload: match with_payload {
            true => info.payload.clone(),
            false => serde_json::Value::Null,
        },
        priority: info.priority,
        attempts: info.attempts,
        unique_name: info.unique_name.clone(),
        created_at: info.created_at,
        enqueued_at: info.enqueued_at,
        run_at: info.run_at,
        finished_at: info.finished_at,
        last_error: info.last_error.clone(),
        run: info.run,
        worker: info.worker.clone(),
        lease_until: info.lease_until,
        cancel_requested: info.cancel_requested,
    }
}
