//! Periodic tasks: cron schedules that the workers fire themselves, each tick once across
//! every worker of a store, with no scheduler process of its own.
//!
//! A schedule is a row of the store: a name, a cron expression in a time zone, the task
//! it starts (with its arguments, queue and priority), a catch-up policy, whether it is
//! paused, and its next and last tick. It comes from `#[task(cron = "0 3 * * *")]` on a
//! task without arguments (registered, under the task's name, when a worker starts), or
//! from a [`Schedule`] registered at run time (with arguments).
//!
//! # How a tick fires once
//! Every worker looks at the schedules about once a second, and at each schedule's next
//! tick. For a due one (`next_tick <= now`, on the store's clock: on PostgreSQL the
//! database's), it asks [`plan`] what to start, then hands the store one
//! [`Fire`]: in one transaction the store moves `next_tick` on only if
//! it still holds the value this worker read (a compare-and-set), and stores the tasks
//! with it. Two workers that read the same due tick both try; one moves `next_tick` and
//! stores the tasks, the other's compare fails and it stores nothing. A worker only fires
//! schedules whose task it knows (another worker of another binary may know it).
//!
//! # Late and missed ticks, and the catch-up policy
//! A tick is **on time** while it is at most [`ON_TIME`] (30 s) old: each such tick is
//! fired, once, even when the workers were briefly busy or slow. A tick older than that
//! was **missed** (no worker ran, or none knew the task): what happens to missed ticks
//! is the schedule's [`CatchUp`] policy, `last` by default:
//! - [`CatchUp::Last`] (the default): when a worker finds missed ticks and no on-time
//!   one, it starts the task once, for the last missed tick; the others are dropped. A
//!   nightly report whose 03:00 tick fell during a deploy still runs, once.
//! - [`CatchUp::Skip`]: missed ticks are dropped; the schedule waits for its next tick.
//!
//! Either way a worker that was down for a week fires at most one catch-up task per
//! schedule, plus the ticks of the last 30 s.
//!
//! # Times and daylight-saving changes
//! Expressions are evaluated in the schedule's IANA time zone (`UTC` by default), with
//! [croner](https://docs.rs/croner)'s rules, those of Vixie cron: a tick whose wall-clock
//! time does not exist on a spring-forward day (02:30 in Europe/Paris on the last Sunday
//! of March) fires at the first instant after the gap (03:00 local); a fixed tick whose
//! time happens twice on a fall-back day fires once, at the first of the two; and
//! interval ticks (`*/10 * * * *`, `* * * * * *`) keep their pace on real time through
//! both changes. So a daily 02:30 Europe/Paris schedule fires exactly once on each of
//! those days. A task started by a tick is due at the tick (`run_at`), so its listing
//! shows which tick it was.
//!
//! # Expressions
//! Five fields (minute, hour, day of month, month, day of week), or six with seconds
//! first (`*/5 * * * * *`: every 5 seconds); names (`MON`, `JAN`), ranges, steps, lists,
//! `L`, `W`, `#` and the nicknames `@daily`, `@hourly`... as croner reads them. The
//! `#[task]` macro checks an expression and a time zone at compile time with the same
//! parser and options ([`Cron::parse`]).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::error::StartError;
use crate::queue::Queue;
use crate::registry::Registry;
use crate::store::{Fire, NewSchedule, NewTask, ScheduleInfo, Store, StoreError, TaskId};
use crate::task::TaskDef;
use crate::time::Timestamp;

/// How late a tick may be fired and still count as on time: 30 seconds. An older tick was
/// missed, and the schedule's [`CatchUp`] policy decides what becomes of it.
pub const ON_TIME: Duration = Duration::from_secs(30);

/// How often a worker looks at the schedules when none falls due sooner: every second,
/// so a schedule registered or resumed elsewhere starts ticking within a second.
pub const SCHEDULE_POLL: Duration = Duration::from_secs(1);

/// The time zone of a schedule that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// What a schedule does about ticks it missed (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Missed ticks are dropped: the schedule waits for its next tick.
    Skip,
    /// The default: after missed ticks (and no on-time one), the task runs once, for the
    /// last missed tick.
    #[default]
    Last,
}

impl CatchUp {
    /// `skip` or `last`, as stored and as the `catch_up` key takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Last => "last",
        }
    }
}

impl std::fmt::Display for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(CatchUp::Skip),
            "last" => Ok(CatchUp::Last),
            other => Err(format!(
                "unknown catch-up policy `{other}`: expected `skip` or `last`"
            )),
        }
    }
}

/// The schedule of a task declared with `#[task(cron = "...")]`: what the macro puts in
/// the task's [`TaskDef`]. A worker registers it at start, under the task's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CronDecl {
    /// The cron expression, checked at compile time.
    pub expression: &'static str,
    /// The IANA time zone (`UTC` unless the `timezone` key says otherwise).
    pub timezone: &'static str,
    /// The catch-up policy (`last` unless the `catch_up` key says otherwise).
    pub catch_up: CatchUp,
}

/// Why a schedule could not be made, registered or acted on. Its `Debug` form is its
/// message.
#[derive(thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression `{expression}`: {reason}")]
    InvalidCron {
        /// The expression given.
        expression: String,
        /// The parser's reason.
        reason: String,
    },
    /// The time zone is not an IANA name this build knows.
    #[error("unknown time zone `{0}`: expected an IANA name such as `UTC` or `Europe/Paris`")]
    InvalidTimezone(String),
    /// The expression never matches a time (`0 0 30 2 *`: February 30th).
    #[error("the cron expression `{0}` never fires")]
    NeverFires(String),
    /// The arguments could not be stored.
    #[error(transparent)]
    Args(#[from] StartError),
    /// The store failed, or has no schedule of that name ([`StoreError::NotFound`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

crate::error::debug_as_display!(ScheduleError);

/// A parsed cron expression in a time zone.
#[derive(Clone, Debug)]
pub struct Cron {
    expression: String,
    tz: chrono_tz::Tz,
    cron: croner::Cron,
}

/// The parser every schedule uses, in the runtime and (with the same options) in the
/// `#[task]` macro: seconds optional (a sixth, leading field), no year field.
fn parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
}

impl Cron {
    /// Parses `expression` (five fields, or six with seconds first) for the IANA time
    /// zone `timezone`. Errors: [`ScheduleError::InvalidCron`] with the parser's reason,
    /// [`ScheduleError::InvalidTimezone`].
    pub fn parse(expression: &str, timezone: &str) -> Result<Cron, ScheduleError> {
        let tz = chrono_tz::Tz::from_str(timezone)
            .map_err(|_| ScheduleError::InvalidTimezone(timezone.to_string()))?;
        let cron = parser()
            .parse(expression)
            .map_err(|e| ScheduleError::InvalidCron {
                expression: expression.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Cron {
            expression: expression.to_string(),
            tz,
            cron,
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's IANA name.
    pub fn timezone(&self) -> &str {
        self.tz.name()
    }

    fn local(&self, t: Timestamp) -> Option<DateTime<chrono_tz::Tz>> {
        Utc.timestamp_millis_opt(t.0)
            .single()
            .map(|u| u.with_timezone(&self.tz))
    }

    /// The first tick strictly after `t`, or `None` when there is none (before the
    /// year 5000).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let local = self.local(t)?;
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(Timestamp(next.timestamp_millis()))
    }

    /// The first tick at or after `t`.
    fn at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        // Ticks are whole seconds: the one at `t`'s second counts only when `t` is on it.
        self.next_after(Timestamp(t.0 - 1))
    }

    /// The last tick strictly before `t`.
    fn last_before(&self, t: Timestamp) -> Option<Timestamp> {
        // Round up to a whole second, so that the tick of `t`'s own second (earlier than
        // `t` when `t` has milliseconds) is found by the exclusive backward search.
        let ceil = Timestamp(t.0.div_euclid(1000) * 1000 + if t.0 % 1000 == 0 { 0 } else { 1000 });
        let local = self.local(ceil)?;
        let prev = self.cron.find_previous_occurrence(&local, false).ok()?;
        Some(Timestamp(prev.timestamp_millis())).filter(|p| *p < t)
    }
}

/// What to do with a due schedule at `now`: which ticks to start a task for (oldest
/// first) and the next tick to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The ticks to fire, oldest first: every on-time tick, or under [`CatchUp::Last`]
    /// the last missed one when no tick is on time. Empty when every due tick was missed
    /// and the policy is [`CatchUp::Skip`].
    pub ticks: Vec<Timestamp>,
    /// The first tick after `now`: the schedule's new `next_tick`. `None` when the
    /// expression has no tick left.
    pub next_tick: Option<Timestamp>,
    /// How many missed ticks were dropped (counted up to 10,000).
    pub dropped: u64,
}

/// The most ticks one plan fires: more than [`ON_TIME`] holds at one tick a second.
const MAX_TICKS: usize = 64;

/// The tick policy, the one place of it: what a schedule whose stored next tick is
/// `next_tick` does at `now` (`None` when nothing is due yet). See the
/// [module docs](self) for the rules.
pub fn plan(cron: &Cron, next_tick: Timestamp, catch_up: CatchUp, now: Timestamp) -> Option<Plan> {
    if next_tick > now {
        return None;
    }
    let window = now.sub(ON_TIME).max(next_tick);
    let mut ticks = Vec::new();
    let mut t = cron.at_or_after(window);
    while let Some(tick) = t.filter(|t| *t <= now) {
        if ticks.len() == MAX_TICKS {
            // Never more than a burst's worth: keep the newest.
            ticks.remove(0);
        }
        ticks.push(tick);
        t = cron.next_after(tick);
    }
    // Ticks from `next_tick` up to the window were missed.
    let mut dropped = 0u64;
    let mut last_missed = None;
    if next_tick < window {
        last_missed = cron.last_before(window).filter(|t| *t >= next_tick);
        let mut m = Some(next_tick);
        while let Some(tick) = m.filter(|t| *t < window) {
            dropped += 1;
            if dropped >= 10_000 {
                break;
            }
            m = cron.next_after(tick);
        }
    }
    if ticks.is_empty() && catch_up == CatchUp::Last {
        if let Some(t) = last_missed {
            ticks.push(t);
            dropped = dropped.saturating_sub(1);
        }
    }
    Some(Plan {
        ticks,
        next_tick: cron.next_after(now),
        dropped,
    })
}

/// A schedule to register at run time, with arguments: made by a task's generated
/// `NAME::schedule(name, cron, args..)` (typed) or by [`Schedule::new`] (by task name,
/// arguments as JSON), then [`Schedule::register`]ed.
///
/// ```
/// use taskq_runtime::{task, schedule::CatchUp, testing::Harness, TaskError};
///
/// #[task]
/// async fn report(team: String) -> Result<(), TaskError> { Ok(()) }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let h = Harness::new();
/// report::schedule("nightly-report", "0 3 * * *", "sales".into())
///     .timezone("Europe/Paris")
///     .catch_up(CatchUp::Skip)
///     .register(&h.queue())
///     .await?;
/// # Ok(()) }
/// ```
///
/// Registering a name that exists replaces its task, arguments, queue, priority and
/// policy; its next tick is recomputed only when the expression or the time zone changed,
/// and a paused schedule stays paused.
#[derive(Debug)]
#[must_use = "a Schedule does nothing until `.register(&queue)` is awaited"]
pub struct Schedule {
    name: String,
    expression: String,
    timezone: String,
    catch_up: CatchUp,
    task: String,
    def: Option<&'static TaskDef>,
    payload: Result<serde_json::Value, StartError>,
    queue: Option<String>,
    priority: Option<i32>,
}

impl Schedule {
    /// A schedule `name` that starts the task registered as `task` on the ticks of
    /// `expression` (in UTC, catch-up `last`, no arguments: `{}`, the task's default
    /// queue and priority when this binary knows the task, else queue `default` and
    /// priority 0).
    pub fn new(
        name: impl Into<String>,
        expression: impl Into<String>,
        task: impl Into<String>,
    ) -> Schedule {
        Schedule {
            name: name.into(),
            expression: expression.into(),
            timezone: DEFAULT_TIMEZONE.into(),
            catch_up: CatchUp::default(),
            task: task.into(),
            def: None,
            payload: Ok(serde_json::Value::Object(Default::default())),
            queue: None,
            priority: None,
        }
    }

    /// A schedule of a declared task with its encoded arguments (generated code).
    #[doc(hidden)]
    pub fn for_task(
        def: &'static TaskDef,
        name: impl Into<String>,
        expression: impl Into<String>,
        payload: Result<serde_json::Value, StartError>,
    ) -> Schedule {
        Schedule {
            def: Some(def),
            payload,
            ..Schedule::new(name, expression, def.name)
        }
    }

    /// The arguments, as the JSON object the task stores (keyed by parameter name).
    pub fn args(mut self, args: serde_json::Value) -> Self {
        self.payload = Ok(args);
        self
    }

    /// The IANA time zone the expression is read in (default `UTC`).
    pub fn timezone(mut self, tz: impl Into<String>) -> Self {
        self.timezone = tz.into();
        self
    }

    /// The catch-up policy (default [`CatchUp::Last`]).
    pub fn catch_up(mut self, policy: CatchUp) -> Self {
        self.catch_up = policy;
        self
    }

    /// The queue its tasks go to (default: the task's).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// The priority of its tasks (default: the task's).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Stores the schedule (creating or replacing it), its first tick the first after
    /// now on the queue's clock. Errors: a bad expression or time zone, arguments that
    /// cannot be stored, names the store refuses ([`StoreError::InvalidValue`]), the
    /// store.
    pub async fn register(self, queue: &Queue) -> Result<(), ScheduleError> {
        let now = queue.clock().now();
        let new = self.into_new(now)?;
        queue.store().upsert_schedules(vec![new], None).await?;
        Ok(())
    }

    fn into_new(self, now: Timestamp) -> Result<NewSchedule, ScheduleError> {
        let cron = Cron::parse(&self.expression, &self.timezone)?;
        let next_tick = cron
            .next_after(now)
            .ok_or_else(|| ScheduleError::NeverFires(self.expression.clone()))?;
        let def = self
            .def
            .or_else(|| Registry::collect().ok().and_then(|r| r.get(&self.task)));
        Ok(NewSchedule {
            name: self.name,
            task: self.task,
            queue: self
                .queue
                .or_else(|| def.map(|d| d.queue.to_string()))
                .unwrap_or_else(|| "default".into()),
            priority: self
                .priority
                .or_else(|| def.map(|d| d.options.priority))
                .unwrap_or(0),
            payload: self.payload?,
            cron: cron.expression().to_string(),
            timezone: cron.timezone().to_string(),
            catch_up: self.catch_up,
            declared: false,
            next_tick,
        })
    }
}

/// The schedules of the tasks declared with `cron` in `registry`, as a worker registers
/// them at start (next tick: the first after `now`).
pub(crate) fn declared(registry: &Registry, now: Timestamp) -> Vec<NewSchedule> {
    let mut out = Vec::new();
    for def in registry.all() {
        let Some(decl) = def.cron else { continue };
        let cron = match Cron::parse(decl.expression, decl.timezone) {
            Ok(c) => c,
            Err(e) => {
                // The macro checked it; only a parser of another version could refuse it.
                tracing::error!(task = def.name, error = %e, "taskq: the cron schedule of this task does not parse; it is not registered");
                continue;
            }
        };
        let Some(next_tick) = cron.next_after(now) else {
            // The macro refuses an expression that never fires; only another parser could.
            tracing::error!(
                task = def.name,
                cron = decl.expression,
                "taskq: the cron schedule of this task never fires; it is not registered"
            );
            continue;
        };
        out.push(NewSchedule {
            name: def.name.to_string(),
            task: def.name.to_string(),
            queue: def.queue.to_string(),
            priority: def.options.priority,
            payload: serde_json::Value::Object(Default::default()),
            cron: decl.expression.to_string(),
            timezone: decl.timezone.to_string(),
            catch_up: decl.catch_up,
            declared: true,
            next_tick,
        });
    }
    out
}

/// Registers the declared schedules of `registry`, marks on every schedule whether this
/// binary knows its task, and removes the declared schedules of tasks it knows that no
/// longer declare `cron`: what a worker (and the harness) does at start.
pub(crate) async fn register_declared(
    store: &dyn Store,
    registry: &Registry,
    now: Timestamp,
) -> Result<(), StoreError> {
    let known = registry.all().iter().map(|d| d.name.to_string()).collect();
    store
        .upsert_schedules(declared(registry, now), Some(known))
        .await?;
    // A task whose `cron` key was removed: every worker knows it, so its old schedule
    // would fire for ever. Run-time schedules (`declared: false`) of the task stay.
    for s in store.schedules().await? {
        let undeclared = registry.get(&s.task).is_some_and(|d| d.cron.is_none());
        if s.declared && undeclared {
            match store.remove_schedule(&s.name).await {
                // Another starting worker removed it first.
                Ok(()) | Err(StoreError::NotFound(_)) => {
                    tracing::info!(schedule = %s.name, "taskq: removed the schedule of a task that no longer declares `cron`");
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The tasks a fire of `s` starts for `ticks`: due at their tick.
fn tasks_for(s: &ScheduleInfo, ticks: &[Timestamp]) -> Vec<NewTask> {
    ticks
        .iter()
        .map(|t| NewTask {
            task: s.task.clone(),
            queue: s.queue.clone(),
            payload: s.payload.clone(),
            priority: s.priority,
            run_at: *t,
            unique_name: None,
            tombstone: Duration::ZERO,
            iteration: None,
            trace: None,
        })
        .collect()
}

/// What one pass over the schedules did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Tasks started, by schedule, in firing order.
    pub started: Vec<(String, TaskId)>,
    /// The earliest next tick of the schedules this process fires, after the pass.
    pub next: Option<Timestamp>,
}

/// Fires every due schedule whose task `registry` knows, at `now`: the worker's (and the
/// harness's) pass. A schedule another worker fired first is left to it.
pub(crate) async fn fire_due(
    store: &dyn Store,
    registry: &Registry,
    now: Timestamp,
) -> Result<Pass, StoreError> {
    let mut pass = Pass::default();
    for s in store.schedules().await? {
        if s.paused || registry.get(&s.task).is_none() {
            continue;
        }
        let mut next = Some(s.next_tick);
        if s.next_tick <= now {
            let cron = match Cron::parse(&s.cron, &s.timezone) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(schedule = %s.name, error = %e, "taskq: a stored schedule does not parse; it is not fired");
                    continue;
                }
            };
            let Some(p) = plan(&cron, s.next_tick, s.catch_up, now) else {
                continue;
            };
            let tasks = tasks_for(&s, &p.ticks);
            // An expression with no tick left parks the schedule at the end of time.
            let next_tick = p.next_tick.unwrap_or(Timestamp(i64::MAX));
            let fired = store
                .fire_schedule(
                    Fire {
                        name: s.name.clone(),
                        expected: s.next_tick,
                        next_tick,
                        last_tick: p.ticks.last().copied(),
                        tasks,
                    },
                    now,
                )
                .await;
            let fired = match fired {
                Ok(f) => f,
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    // One schedule the store refuses (a value it cannot hold) must not
                    // keep the others from firing: logged, and tried again next pass.
                    tracing::warn!(schedule = %s.name, error = %e, "taskq: the store refused a schedule's fire");
                    continue;
                }
            };
            next = Some(next_tick);
            if let Some(ids) = fired {
                if p.dropped > 0 {
                    tracing::info!(schedule = %s.name, dropped = p.dropped, catch_up = %s.catch_up,
                        "taskq: schedule missed ticks while no worker fired it");
                }
                crate::metrics::started(ids.iter().map(|_| (s.task.as_str(), s.queue.as_str())));
                pass.started
                    .extend(ids.into_iter().map(|id| (s.name.clone(), id)));
            }
        }
        pass.next = match (pass.next, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(pass)
}

/// Managing schedules ([`crate::schedule`]). Every time is the queue's clock's (on
/// PostgreSQL, the database's).
impl Queue {
    /// Every schedule of the store, by name, with its next and last tick and last task.
    pub async fn schedules(&self) -> Result<Vec<ScheduleInfo>, StoreError> {
        self.store().schedules().await
    }

    async fn find_schedule(&self, name: &str) -> Result<ScheduleInfo, StoreError> {
        self.schedules()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| StoreError::NotFound(format!("schedule `{name}`")))
    }

    /// Starts the schedule's task now, with its arguments, queue and priority, without
    /// moving the schedule (its next tick stays; a paused one may run too). Returns the
    /// task's id. `StoreError::NotFound` for an unknown name.
    pub async fn run_schedule_now(&self, name: &str) -> Result<TaskId, ScheduleError> {
        let s = self.find_schedule(name).await?;
        let now = self.clock().now();
        let ids = self.store().enqueue(tasks_for(&s, &[now]), now).await?;
        crate::metrics::started([(s.task.as_str(), s.queue.as_str())]);
        ids.into_iter().next().ok_or_else(|| {
            ScheduleError::Store(StoreError::Backend("the store returned no id".into()))
        })
    }

    /// Pauses a schedule: no tick fires until it is resumed. `StoreError::NotFound` for
    /// an unknown name.
    pub async fn pause_schedule(&self, name: &str) -> Result<(), StoreError> {
        self.store().set_schedule_paused(name, true, None).await
    }

    /// Resumes a paused schedule: its next tick becomes the first after now (the ticks of
    /// the pause are not fired). A schedule that is not paused is left as it is (a tick
    /// due and not fired yet stays due). `StoreError::NotFound` for an unknown name; a
    /// stored expression that no longer parses is an error of its own.
    pub async fn resume_schedule(&self, name: &str) -> Result<(), ScheduleError> {
        let s = self.find_schedule(name).await?;
        if !s.paused {
            return Ok(());
        }
        let cron = Cron::parse(&s.cron, &s.timezone)?;
        let next = cron
            .next_after(self.clock().now())
            .ok_or_else(|| ScheduleError::NeverFires(s.cron.clone()))?;
        self.store()
            .set_schedule_paused(name, false, Some(next))
            .await?;
        Ok(())
    }

    /// Removes a schedule; the tasks it started stay. A declared task's schedule comes
    /// back when a worker that knows the task starts. `StoreError::NotFound` for an
    /// unknown name.
    pub async fn remove_schedule(&self, name: &str) -> Result<(), StoreError> {
        self.store().remove_schedule(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp(
            DateTime::parse_from_rfc3339(s)
                .expect("a test time")
                .timestamp_millis(),
        )
    }

    #[test]
    fn bad_expressions_and_zones_say_why() {
        let e = Cron::parse("61 * * * *", "UTC").expect_err("minute 61");
        assert!(matches!(e, ScheduleError::InvalidCron { .. }), "{e}");
        let e = Cron::parse("* * * * *", "Mars/Olympus").expect_err("no such zone");
        assert!(matches!(e, ScheduleError::InvalidTimezone(_)), "{e}");
    }

    #[test]
    fn on_time_ticks_each_fire_and_missed_ones_follow_the_policy() {
        let c = Cron::parse("* * * * * *", "UTC").expect("every second");
        let t0 = ts("2026-01-01T00:00:00Z");
        // 3 s late: the four ticks 0..=3 s each fire.
        let p = plan(&c, t0, CatchUp::Skip, t0.add(Duration::from_millis(3_500))).expect("due");
        assert_eq!(p.ticks.len(), 4);
        assert_eq!(p.next_tick, Some(t0.add(Duration::from_secs(4))));
        // Down for an hour: the last 30 s are on time (31 ticks), the rest dropped.
        let now = t0.add(Duration::from_secs(3600));
        let p = plan(&c, t0, CatchUp::Skip, now).expect("due");
        assert_eq!(p.ticks.len(), 31);
        assert_eq!(p.dropped, 3600 - 30);

        let daily = Cron::parse("0 3 * * *", "UTC").expect("daily");
        let tick = ts("2026-01-01T03:00:00Z");
        let now = ts("2026-01-03T12:00:00Z");
        let skip = plan(&daily, tick, CatchUp::Skip, now).expect("due");
        assert_eq!((skip.ticks.len(), skip.dropped), (0, 3));
        let last = plan(&daily, tick, CatchUp::Last, now).expect("due");
        assert_eq!(last.ticks, vec![ts("2026-01-03T03:00:00Z")]);
        assert_eq!(last.dropped, 2);
        assert_eq!(last.next_tick, Some(ts("2026-01-04T03:00:00Z")));
        assert!(plan(
            &daily,
            tick,
            CatchUp::Last,
            tick.sub(Duration::from_millis(1))
        )
        .is_none());
    }
}
