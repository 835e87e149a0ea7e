//! `taskq schedules` and `taskq schedule run|pause|resume NAME`: periodic tasks
//! ([`taskq_runtime::schedule`]) through the management API.

use serde::Serialize;
use serde_json::json;
use taskq_runtime::{Queue, ScheduleError, ScheduleInfo};

use crate::cli::ScheduleAction;
use crate::exit::{self, Failure};
use crate::output::{self, Report};

/// One schedule in `taskq schedules --json` (`{"schedules": [...]}`).
#[derive(Debug, Serialize)]
pub struct ScheduleJson {
    /// Its name (a declared task's schedule is named after the task).
    pub name: String,
    /// The task each tick starts.
    pub task: String,
    /// The queue of those tasks.
    pub queue: String,
    /// The cron expression.
    pub cron: String,
    /// Its IANA time zone.
    pub timezone: String,
    /// `skip` or `last`: what becomes of ticks missed while no worker ran.
    pub catch_up: String,
    /// Whether no tick fires.
    pub paused: bool,
    /// From `#[task(cron = ..)]` rather than registered at run time.
    pub declared: bool,
    /// The last worker that started does not know the task (renamed or removed).
    pub task_missing: bool,
    /// The next tick (RFC 3339, UTC).
    pub next_run: String,
    /// The last tick fired, `null` before the first.
    pub last_run: Option<String>,
    /// The task the last tick started, `null` before the first.
    pub last_task: Option<i64>,
    /// The arguments each tick's task gets.
    pub args: serde_json::Value,
}

impl From<&ScheduleInfo> for ScheduleJson {
    fn from(s: &ScheduleInfo) -> ScheduleJson {
        ScheduleJson {
            name: s.name.clone(),
            task: s.task.clone(),
            queue: s.queue.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            catch_up: s.catch_up.to_string(),
            paused: s.paused,
            declared: s.declared,
            task_missing: s.task_missing,
            next_run: s.next_tick.to_string(),
            last_run: s.last_tick.map(|t| t.to_string()),
            last_task: s.last_task.map(|t| t.0),
            args: s.payload.clone(),
        }
    }
}

/// The schedules table.
fn schedules_table(schedules: &[ScheduleJson]) -> String {
    if schedules.is_empty() {
        return "no schedules".into();
    }
    let mut t = output::table(&[
        "SCHEDULE",
        "CRON",
        "TIME ZONE",
        "NEXT RUN",
        "LAST RUN",
        "LAST TASK",
        "STATE",
        "TASK",
    ]);
    for s in schedules {
        let state = match (s.paused, s.task_missing) {
            (_, true) => "task missing",
            (true, false) => "paused",
            (false, false) => "active",
        };
        t.add_row(vec![
            s.name.clone(),
            s.cron.clone(),
            s.timezone.clone(),
            s.next_run.clone(),
            output::or_dash(s.last_run.clone()),
            output::or_dash(s.last_task),
            state.into(),
            s.task.clone(),
        ]);
    }
    output::render(&t)
}

/// `taskq schedules`.
pub async fn list(q: &Queue) -> Result<Report, Failure> {
    let schedules: Vec<ScheduleJson> = q.schedules().await?.iter().map(Into::into).collect();
    let text = schedules_table(&schedules);
    Ok(Report::new(json!({ "schedules": schedules }), text))
}

fn failure(e: ScheduleError) -> Failure {
    match e {
        ScheduleError::Store(e) => e.into(),
        other => Failure::new(exit::FAILED, other.to_string()),
    }
}

/// `taskq schedule run|pause|resume NAME`.
pub async fn act(q: &Queue, action: ScheduleAction) -> Result<Report, Failure> {
    match action {
        ScheduleAction::Run { name } => {
            let id = q.run_schedule_now(&name).await.map_err(failure)?;
            Ok(Report::new(
                json!({ "action": "run", "schedule": name, "id": id.0 }),
                format!("schedule `{name}` started task {id} now (its next run is unchanged)"),
            ))
        }
        ScheduleAction::Pause { name } => {
            q.pause_schedule(&name).await?;
            Ok(Report::new(
                json!({ "action": "pause", "schedule": name, "paused": true }),
                format!("schedule `{name}` paused"),
            ))
        }
        ScheduleAction::Resume { name } => {
            q.resume_schedule(&name).await.map_err(failure)?;
            Ok(Report::new(
                json!({ "action": "resume", "schedule": name, "paused": false }),
                format!("schedule `{name}` resumed (ticks missed while paused are not run)"),
            ))
        }
    }
}
