//! Schedules ([`crate::schedule`]): the `taskq_schedules` rows, and a fire: the
//! compare-and-set of `next_tick` and the tasks' inserts in one `BEGIN IMMEDIATE`
//! transaction, so two processes on one file fire a tick once (the second one's
//! compare finds the moved `next_tick` and stores nothing).

use rusqlite::params;

use super::rows::to_json;
use super::{enqueue, Fail, R};
use crate::schedule::CatchUp;
use crate::store::{Fire, NewSchedule, ScheduleInfo, StoreError, TaskId};
use crate::time::Timestamp;

pub(super) fn upsert(
    tx: &rusqlite::Transaction<'_>,
    schedules: &[NewSchedule],
    known_tasks: Option<&[String]>,
) -> R<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO taskq_schedules (name, task, queue, priority, payload, cron, timezone,
             catch_up, paused, declared, task_missing, next_tick)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, 0, ?10)
         ON CONFLICT (name) DO UPDATE SET
             next_tick = CASE WHEN cron IS excluded.cron AND timezone IS excluded.timezone
                              THEN next_tick ELSE excluded.next_tick END,
             task = excluded.task, queue = excluded.queue, priority = excluded.priority,
             payload = excluded.payload, cron = excluded.cron, timezone = excluded.timezone,
             catch_up = excluded.catch_up, declared = excluded.declared",
    )?;
    for s in schedules {
        st.execute(params![
            s.name,
            s.task,
            s.queue,
            s.priority,
            to_json(&s.payload),
            s.cron,
            s.timezone,
            s.catch_up.as_str(),
            s.declared,
            s.next_tick.0
        ])?;
    }
    if let Some(known) = known_tasks {
        let known =
            serde_json::to_string(known).map_err(|e| Fail::Store(StoreError::backend(e)))?;
        tx.prepare_cached(
            "UPDATE taskq_schedules SET task_missing =
                 task NOT IN (SELECT value FROM json_each(?1))",
        )?
        .execute([known])?;
    }
    Ok(())
}

pub(super) fn list(tx: &rusqlite::Transaction<'_>) -> R<Vec<ScheduleInfo>> {
    let mut st = tx.prepare_cached(
        "SELECT name, task, queue, priority, payload, cron, timezone, catch_up, paused,
                declared, task_missing, next_tick, last_tick, last_task
         FROM taskq_schedules ORDER BY name",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            ScheduleInfo {
                name: r.get(0)?,
                task: r.get(1)?,
                queue: r.get(2)?,
                priority: r.get(3)?,
                payload: serde_json::Value::Null,
                cron: r.get(5)?,
                timezone: r.get(6)?,
                catch_up: CatchUp::Last,
                paused: r.get(8)?,
                declared: r.get(9)?,
                task_missing: r.get(10)?,
                next_tick: Timestamp(r.get(11)?),
                last_tick: r.get::<_, Option<i64>>(12)?.map(Timestamp),
                last_task: r.get::<_, Option<i64>>(13)?.map(TaskId),
            },
            r.get::<_, String>(4)?,
            r.get::<_, String>(7)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut info, payload, catch_up) = row?;
        info.payload = crate::store::stored_or_raw(&payload);
        // A policy this build does not know (written by a newer one): the default.
        info.catch_up = catch_up.parse().unwrap_or_default();
        out.push(info);
    }
    Ok(out)
}

pub(super) fn fire(
    tx: &rusqlite::Transaction<'_>,
    fire: &Fire,
    now: Timestamp,
) -> R<Option<Vec<TaskId>>> {
    let moved = tx
        .prepare_cached(
            "UPDATE taskq_schedules SET next_tick = ?3, last_tick = COALESCE(?4, last_tick)
             WHERE name = ?1 AND next_tick = ?2 AND paused = 0",
        )?
        .execute(params![
            fire.name,
            fire.expected.0,
            fire.next_tick.0,
            fire.last_tick.map(|t| t.0)
        ])?;
    if moved == 0 {
        return Ok(None);
    }
    let ids = if fire.tasks.is_empty() {
        Vec::new()
    } else {
        enqueue::enqueue(tx, &fire.tasks, now)?
    };
    if let Some(id) = ids.last() {
        tx.prepare_cached("UPDATE taskq_schedules SET last_task = ?2 WHERE name = ?1")?
            .execute(params![fire.name, id.0])?;
    }
    Ok(Some(ids))
}

pub(super) fn set_paused(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    paused: bool,
    next_tick: Option<Timestamp>,
) -> R<()> {
    let n = tx
        .prepare_cached(
            "UPDATE taskq_schedules SET paused = ?2,
                 next_tick = CASE WHEN ?2 = 0 AND ?3 IS NOT NULL THEN ?3 ELSE next_tick END
             WHERE name = ?1",
        )?
        .execute(params![name, paused, next_tick.map(|t| t.0)])?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("schedule `{name}`")).into());
    }
    Ok(())
}

pub(super) fn remove(tx: &rusqlite::Transaction<'_>, name: &str) -> R<()> {
    let n = tx
        .prepare_cached("DELETE FROM taskq_schedules WHERE name = ?1")?
        .execute([name])?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("schedule `{name}`")).into());
    }
    Ok(())
}
