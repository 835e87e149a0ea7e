//! Tasks shared by the test binaries and the crash-test worker processes, the effect logs
//! they write, and the exact check of what a crash may repeat.
//!
//! Every effect line names the process and the attempt that wrote it, so a task whose
//! effect shows twice can be matched to the attempts the store recorded: a repeat is
//! explained only by an attempt that was cut short (its worker killed, or its lease
//! lost), never by chance.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use taskq_runtime::policy::ATTEMPTS_AFTER_CHECKPOINT;
use taskq_runtime::store::{AttemptInfo, RunState, TaskDetail};
use taskq_runtime::{
    iterative_task, task, Context, Queue, TaskError, TaskId, TaskState, Timestamp,
};

use crate::models::Item;

/// Where [`append_line`] writes: an append-only log, one [`Effect`] per line.
#[derive(Debug, Clone)]
pub struct EffectLog(pub PathBuf);

/// Appends `n pid attempt` to the worker's [`EffectLog`], after pretending to work for
/// `work_ms`.
#[task(
    queue = "crash",
    timeout = "30s",
    min_backoff = "100ms",
    max_backoff = "1s"
)]
pub async fn append_line(ctx: Context, n: u64, work_ms: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(work_ms)).await;
    let log = ctx.state::<EffectLog>()?;
    append(
        &log.0,
        &format!("{n} {} {}\n", std::process::id(), ctx.attempt()),
    )?;
    // Nothing may await between the effect and the return: a task stopped (its lease
    // lost) or released at shutdown must not have written it.
    Ok(())
}

/// Appends one line with one `write` call: with `O_APPEND` it lands whole even when
/// several workers (threads or processes) append at once; `writeln!` would issue two.
fn append(path: &Path, line: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

/// One line of an [`EffectLog`]: task `n` ran in process `pid`, attempt `attempt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Effect {
    /// The task's number (its `n` argument).
    pub n: u64,
    /// The worker process.
    pub pid: u32,
    /// The attempt number (from 1) that wrote it.
    pub attempt: u32,
}

/// Every effect of a finished log.
///
/// # Panics
/// On a line that is not `n pid attempt`, and on a last line without its newline: a torn
/// line is a failure, never skipped. Call it once no worker writes any more.
pub fn read_effects(path: &Path) -> Vec<Effect> {
    parse_log(path, true)
        .into_iter()
        .map(|[n, pid, attempt]| Effect {
            n,
            pid: narrow(path, pid),
            attempt: narrow(path, attempt),
        })
        .collect()
}

/// The task numbers of a log that workers may still write: as [`read_effects`], except
/// that a last line not yet ended (a write in progress) is not counted yet.
///
/// # Panics
/// On a complete line that is not `n pid attempt`.
pub fn read_log(path: &Path) -> Vec<u64> {
    parse_log(path, false)
        .into_iter()
        .map(|[n, _, _]: [u64; 3]| n)
        .collect()
}

/// The numbers of a finished log of one number per line (the ids `crash_walk` of
/// [`crate::models`] writes).
///
/// # Panics
/// As [`read_effects`]: on a torn or malformed line.
pub fn read_ids(path: &Path) -> Vec<i64> {
    parse_log(path, true)
        .into_iter()
        .map(|[id]: [u64; 1]| id as i64)
        .collect()
}

fn narrow(path: &Path, v: u64) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| panic!("{}: {v} is out of range", path.display()))
}

/// The lines of a log of `K` numbers per line. `finished`: the log must end with a
/// newline (otherwise its last line is torn); unfinished, an unended last line is still
/// being written and is left out.
fn parse_log<const K: usize>(path: &Path, finished: bool) -> Vec<[u64; K]> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    if finished && complete.len() != text.len() {
        panic!(
            "{}: the last line is torn (no newline): {:?}",
            path.display(),
            &text[complete.len()..]
        );
    }
    complete
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let fields: Vec<u64> = line
                .split(' ')
                .map(|f| f.parse::<u64>())
                .collect::<Result<_, _>>()
                .unwrap_or_else(|_| {
                    panic!(
                        "{} line {}: torn or malformed: {line:?}",
                        path.display(),
                        i + 1
                    )
                });
            fields.try_into().unwrap_or_else(|_| {
                panic!(
                    "{} line {}: torn or malformed (expected {K} numbers): {line:?}",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// The process id in a worker's default name (`host-pid-random`, see
/// `WorkerBuilder::name`).
pub fn worker_pid(worker: &str) -> Option<u32> {
    worker.rsplit('-').nth(1)?.parse().ok()
}

/// What the exact check of a plain-task effect log found ([`check_effects`]).
#[derive(Debug, Default)]
pub struct EffectReport {
    /// Tasks checked.
    pub tasks: usize,
    /// Effect lines.
    pub effects: usize,
    /// Tasks done.
    pub done: usize,
    /// Tasks dead, each with its reason.
    pub dead: usize,
    /// Effect lines beyond the first of each task.
    pub duplicates: usize,
    /// Effects of attempts cut short by a kill (the attempt's lease lapsed and its process
    /// was killed).
    pub cut_by_kill: usize,
    /// Effects of attempts cut short by a lost lease in a process that was not killed.
    pub cut_by_lease_loss: usize,
    /// Tasks missing, not finished, or done without their effect.
    pub lost: usize,
    /// Every violation found, for people.
    pub problems: Vec<String>,
}

/// Checks an effect log of [`append_line`] against the store, exactly: `ids[n]` is the
/// task that writes `n`, `killed` the processes killed during the run.
///
/// For each task: it exists and is done or dead (dead with a reason); every effect line
/// matches one attempt the store recorded (attempt number and worker process), no attempt
/// wrote twice; a done task has exactly one effect from its `done` attempt; every other
/// effect comes from an attempt whose lease lapsed (it was cut short while it ran: counted
/// as a kill when its process was killed, as a lease loss otherwise). Anything else is a
/// problem.
pub async fn check_effects(
    queue: &Queue,
    ids: &[TaskId],
    effects: &[Effect],
    killed: &HashSet<u32>,
) -> EffectReport {
    let mut by_task: HashMap<u64, Vec<Effect>> = HashMap::new();
    let mut r = EffectReport {
        tasks: ids.len(),
        effects: effects.len(),
        ..Default::default()
    };
    for e in effects {
        if e.n as usize >= ids.len() {
            r.problems.push(format!(
                "an effect of task {}, which was never started: {e:?}",
                e.n
            ));
        }
        by_task.entry(e.n).or_default().push(*e);
    }
    let details = details(queue, ids).await;
    for (n, (id, detail)) in ids.iter().zip(details).enumerate() {
        let n = n as u64;
        let mine = by_task.remove(&n).unwrap_or_default();
        let Some(d) = detail else {
            r.lost += 1;
            r.problems
                .push(format!("task {n} ({id}) is not in the store"));
            continue;
        };
        match d.info.state {
            TaskState::Done => r.done += 1,
            TaskState::Dead => {
                r.dead += 1;
                if d.info.last_error.as_deref().unwrap_or("").is_empty() {
                    r.problems.push(format!(
                        "task {n} is dead without a reason: {:?}",
                        d.attempts
                    ));
                }
            }
            other => {
                r.lost += 1;
                r.problems
                    .push(format!("task {n} ended {other:?}, not done or dead"));
            }
        }
        r.duplicates += mine.len().saturating_sub(1);
        let mut used = HashSet::new();
        let mut from_done = 0;
        for e in &mine {
            let Some(a) = attempt_of(&d.attempts, e.attempt, e.pid, &used) else {
                r.problems.push(format!(
                    "task {n}: an effect of attempt {} in process {} that the store did not record: {:?}",
                    e.attempt, e.pid, d.attempts
                ));
                continue;
            };
            used.insert((a.attempt, a.worker.clone(), a.started_at));
            match a.outcome.as_str() {
                "done" => from_done += 1,
                "lease lapsed" if killed.contains(&e.pid) => r.cut_by_kill += 1,
                "lease lapsed" => r.cut_by_lease_loss += 1,
                other => r.problems.push(format!(
                    "task {n}: attempt {} in process {} wrote its effect but ended `{other}`: {:?}",
                    e.attempt, e.pid, d.attempts
                )),
            }
        }
        if d.info.state == TaskState::Done && from_done != 1 {
            if from_done == 0 {
                r.lost += 1;
            }
            r.problems.push(format!(
                "task {n} is done but its done attempt wrote {from_done} effects: {mine:?} {:?}",
                d.attempts
            ));
        }
    }
    r
}

/// The attempt of `attempts` with this number, run by process `pid`, not yet `used`.
fn attempt_of<'a>(
    attempts: &'a [AttemptInfo],
    attempt: u32,
    pid: u32,
    used: &HashSet<(u32, String, taskq_runtime::Timestamp)>,
) -> Option<&'a AttemptInfo> {
    attempts.iter().find(|a| {
        a.attempt == attempt
            && worker_pid(&a.worker) == Some(pid)
            && !used.contains(&(a.attempt, a.worker.clone(), a.started_at))
    })
}

/// The details of many tasks, fetched a few at a time (`None`: not in the store).
///
/// # Panics
/// When the store fails.
async fn details(queue: &Queue, ids: &[TaskId]) -> Vec<Option<TaskDetail>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(16) {
        let calls = chunk.iter().map(|id| {
            let q = queue.clone();
            let id = *id;
            tokio::spawn(async move { q.task(id).await })
        });
        for c in calls.collect::<Vec<_>>() {
            let d = c
                .await
                .expect("task lookup")
                .unwrap_or_else(|e| panic!("read a task's history: {e}"));
            out.push(d);
        }
    }
    out
}

/// Checks an effect log after a worker was killed (see [`check_effects`], which this
/// asserts): every task of `ids` ran and is done, and a task ran more than once only in
/// attempts its worker did not finish (their leases lapsed). Returns how many extra runs
/// there were.
///
/// # Panics
/// On any problem [`check_effects`] finds, and when a task is not done.
pub async fn assert_only_in_flight_tasks_ran_twice(
    queue: &Queue,
    ids: &[TaskId],
    effects: &[Effect],
) -> usize {
    let r = check_effects(queue, ids, effects, &HashSet::new()).await;
    assert!(r.problems.is_empty(), "{:#?}", r.problems);
    assert_eq!(r.done, ids.len(), "every task done: {r:?}");
    r.duplicates
}

/// Where [`crash_walk_logged`] writes: one [`WalkEffect`] per entity.
#[derive(Debug, Clone)]
pub struct WalkLog(pub PathBuf);

/// The batch size of [`crash_walk_logged`].
pub const WALK_BATCH: usize = 100;

/// The iterative task of the crash campaign: records `id pid step attempt at` for each
/// item (`at`: when this batch began, in ms since the epoch), one `write` per item (so a
/// kill mid-batch leaves part of the batch), and sleeps `work_ms` half-way through each
/// batch.
#[iterative_task(
    model = Item,
    batch_size = 100,
    queue = "crash-walk",
    timeout = "4s",
    min_backoff = "50ms",
    max_backoff = "500ms"
)]
pub async fn crash_walk_logged(
    ctx: Context,
    items: Vec<Item>,
    work_ms: u64,
) -> Result<(), TaskError> {
    let log = ctx.state::<WalkLog>()?.0.clone();
    let (pid, step, attempt) = (std::process::id(), ctx.id().0, ctx.attempt());
    let at = Timestamp::now().as_millis();
    for (i, item) in items.iter().enumerate() {
        append(&log, &format!("{} {pid} {step} {attempt} {at}\n", item.id))?;
        if i == items.len() / 2 {
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
        }
    }
    Ok(())
}

/// One line of a [`WalkLog`]: entity `id` processed by process `pid` in attempt `attempt`
/// of step `step` (the step's task id), in a batch that began at `at`.
///
/// The attempt number alone does not name an attempt of a step: a checkpoint resets the
/// step's count ([`ATTEMPTS_AFTER_CHECKPOINT`]), so the store may record the attempt
/// under another number. `at` does: the attempt is the one of this step and process that
/// began last before `at` (one process runs one execution of a task at a time, and claims
/// the next only after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalkEffect {
    /// The entity's key.
    pub id: i64,
    /// The worker process.
    pub pid: u32,
    /// The step (a task of the run).
    pub step: i64,
    /// The attempt number the step was claimed with.
    pub attempt: u32,
    /// When the batch began, in ms since the epoch.
    pub at: i64,
}

/// Every line of a finished [`WalkLog`].
///
/// # Panics
/// As [`read_effects`]: on a torn or malformed line.
pub fn read_walk(path: &Path) -> Vec<WalkEffect> {
    parse_log(path, true)
        .into_iter()
        .map(|[id, pid, step, attempt, at]| WalkEffect {
            id: id as i64,
            pid: narrow(path, pid),
            step: step as i64,
            attempt: narrow(path, attempt),
            at: at as i64,
        })
        .collect()
}

/// How many entities a [`WalkLog`] that workers still write holds so far.
pub fn walk_progress(path: &Path) -> usize {
    parse_log::<5>(path, false).len()
}

/// One attempt of a step: (step, worker process, when it began in ms).
type AttemptKey = (i64, u32, i64);

/// What the check of an iterative run's log found ([`check_walk`]).
#[derive(Debug, Default)]
pub struct WalkReport {
    /// Entities the run had to process.
    pub entities: usize,
    /// Entities never processed.
    pub skipped: usize,
    /// Processings beyond the first of each entity.
    pub duplicates: usize,
    /// Repeats of entities first processed by an attempt cut short by a kill.
    pub cut_by_kill: usize,
    /// Repeats of entities first processed by an attempt cut short otherwise (its lease
    /// lost, or its checkpoint refused while the store was away).
    pub cut_by_lease_loss: usize,
    /// Steps the run took.
    pub steps: u64,
    /// Every violation found, for people.
    pub problems: Vec<String>,
}

/// Checks the log of run `run` of [`crash_walk_logged`] over `entities` (their keys),
/// exactly.
///
/// The run must be done; every entity processed; every line matches an attempt the store
/// recorded for a step of the run. An entity processed again must have been processed
/// before only by attempts that were cut short (lease lapsed: a kill, or a lease loss; or
/// `retry`: the checkpoint failed), never by one that checkpointed and went on (`done`,
/// `continued`), and each cut-short attempt had at most one batch redone.
pub async fn check_walk(
    queue: &Queue,
    run: TaskId,
    entities: &[i64],
    effects: &[WalkEffect],
    killed: &HashSet<u32>,
) -> WalkReport {
    let mut r = WalkReport {
        entities: entities.len(),
        ..Default::default()
    };
    match queue.iteration(run).await {
        Ok(it) => {
            r.steps = it.steps;
            if it.state != RunState::Done {
                r.problems.push(format!("the run ended {it:?}, not done"));
            }
        }
        Err(e) => r.problems.push(format!("the run {run}: {e}")),
    }
    // The attempts of each step, by process, from the store.
    let steps: Vec<TaskId> = effects
        .iter()
        .map(|e| TaskId(e.step))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut attempts: HashMap<(i64, u32), Vec<AttemptInfo>> = HashMap::new();
    for (id, d) in steps.iter().zip(details(queue, &steps).await) {
        let Some(d) = d else {
            r.problems.push(format!("step {id} is not in the store"));
            continue;
        };
        if d.info.run != Some(run) {
            r.problems
                .push(format!("task {id} is not a step of run {run}"));
        }
        for a in d.attempts {
            if let Some(pid) = worker_pid(&a.worker) {
                attempts.entry((id.0, pid)).or_default().push(a);
            }
        }
    }
    // Each line's attempt: (step, process, when it began) and its outcome.
    let mut by_entity: BTreeMap<i64, Vec<(WalkEffect, AttemptKey, &str)>> = BTreeMap::new();
    for e in effects {
        let a = attempts.get(&(e.step, e.pid)).and_then(|list| {
            list.iter()
                .filter(|a| a.started_at.as_millis() <= e.at)
                .max_by_key(|a| a.started_at)
        });
        let Some(a) =
            a.filter(|a| a.attempt == e.attempt || a.attempt == ATTEMPTS_AFTER_CHECKPOINT)
        else {
            r.problems.push(format!(
                "entity {} processed by step {} attempt {} in process {} at {}, an attempt the store did not record: {:?}",
                e.id, e.step, e.attempt, e.pid, e.at, attempts.get(&(e.step, e.pid))
            ));
            continue;
        };
        by_entity.entry(e.id).or_default().push((
            *e,
            (e.step, e.pid, a.started_at.as_millis()),
            a.outcome.as_str(),
        ));
    }
    let mut redone_per_attempt: HashMap<AttemptKey, usize> = HashMap::new();
    for id in entities {
        let Some(seen) = by_entity.remove(id) else {
            r.skipped += 1;
            continue;
        };
        r.duplicates += seen.len() - 1;
        let mut by = HashSet::new();
        for (e, key, _) in &seen {
            if !by.insert(*key) {
                r.problems
                    .push(format!("entity {id} processed twice by one attempt: {e:?}"));
            }
        }
        // Every processing but the last was cut short before its checkpoint.
        for (e, key, o) in &seen[..seen.len() - 1] {
            match *o {
                "lease lapsed" if killed.contains(&e.pid) => r.cut_by_kill += 1,
                "lease lapsed" | "retry" => r.cut_by_lease_loss += 1,
                other => r.problems.push(format!(
                    "entity {id} processed again after attempt {} of step {} (process {}) processed it and ended `{other}`",
                    e.attempt, e.step, e.pid
                )),
            }
            *redone_per_attempt.entry(*key).or_default() += 1;
        }
    }
    for (id, seen) in by_entity {
        r.problems.push(format!(
            "entity {id} is not one the run walks, yet was processed: {seen:?}"
        ));
    }
    for ((step, pid, began), n) in redone_per_attempt {
        if n > WALK_BATCH {
            r.problems.push(format!(
                "the attempt of step {step} in process {pid} begun at {began} had {n} entities redone, more than one batch ({WALK_BATCH})"
            ));
        }
    }
    r
}

/// Given to a worker process that may run [`kill_my_worker`]; without it the task fails
/// instead of killing the process (a test binary's own workers must never run it).
#[derive(Debug, Clone, Copy)]
pub struct MayKillMe;

/// The poison task of the crash tests: SIGKILLs the worker process that runs it, at every
/// attempt; after its three attempts lapsed it must end dead, saying so.
#[task(queue = "crash-poison", max_attempts = 3, timeout = "30s")]
pub async fn kill_my_worker(ctx: Context) -> Result<(), TaskError> {
    if ctx.state::<MayKillMe>().is_err() {
        return Err(TaskError::fatal(
            "kill_my_worker runs only in a worker process given `MayKillMe`",
        ));
    }
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(std::process::id().to_string())
        .status();
    // The signal is on its way; never finish.
    std::future::pending::<()>().await;
    Ok(())
}
