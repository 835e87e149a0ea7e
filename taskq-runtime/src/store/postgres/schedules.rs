//! Schedules ([`crate::schedule`]): the `taskq_schedules` rows, and a fire: the
//! compare-and-set of `next_tick` and the tasks' inserts in one transaction. Two workers
//! firing one tick: the second's `UPDATE` waits for the first's row lock, then (under
//! `READ COMMITTED`) re-reads the row, finds `next_tick` moved and updates nothing, so it
//! stores no task.

use tokio_postgres::Client;

use super::{pg_err, PostgresStore};
use crate::schedule::CatchUp;
use crate::store::schedule::check_new_schedule;
use crate::store::{check_new_tasks, Fire, NewSchedule, ScheduleInfo, StoreError, TaskId};
use crate::time::Timestamp;

fn schedule_err(e: tokio_postgres::Error) -> StoreError {
    pg_err(&e)
}

/// The columns of an upsert, one array each (`unnest`).
#[derive(Default)]
struct UpsertArrays {
    name: Vec<String>,
    task: Vec<String>,
    queue: Vec<String>,
    priority: Vec<i32>,
    payload: Vec<String>,
    cron: Vec<String>,
    timezone: Vec<String>,
    catch_up: Vec<String>,
    declared: Vec<bool>,
    next_tick: Vec<i64>,
}

pub(super) async fn upsert(
    s: &PostgresStore,
    mut schedules: Vec<NewSchedule>,
    known_tasks: Option<Vec<String>>,
) -> Result<(), StoreError> {
    for n in &schedules {
        check_new_schedule(n)?;
    }
    // One row per name (the last given wins, as on every store), in name order: one lock
    // order for every upsert.
    schedules.reverse();
    let mut seen = std::collections::HashSet::new();
    schedules.retain(|n| seen.insert(n.name.clone()));
    schedules.sort_by(|a, b| a.name.cmp(&b.name));
    let mut a = UpsertArrays::default();
    for n in schedules {
        a.name.push(n.name);
        a.task.push(n.task);
        a.queue.push(n.queue);
        a.priority.push(n.priority);
        a.payload.push(super::rows::to_json_text(&n.payload)?);
        a.cron.push(n.cron);
        a.timezone.push(n.timezone);
        a.catch_up.push(n.catch_up.as_str().to_string());
        a.declared.push(n.declared);
        a.next_tick.push(n.next_tick.0);
    }
    let mut c = s.pool.get().await?;
    if !a.name.is_empty() {
        let st = c
            .prep(&s.sql(
                "INSERT INTO {S}.taskq_schedules AS s (name, task, queue, priority, payload, cron,
                     timezone, catch_up, declared, next_tick)
                 SELECT u.name, u.task, u.queue, u.priority, u.payload::json, u.cron, u.timezone,
                        u.catch_up, u.declared, u.next_tick
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[],
                             $6::text[], $7::text[], $8::text[], $9::bool[], $10::int8[])
                      AS u(name, task, queue, priority, payload, cron, timezone, catch_up,
                           declared, next_tick)
                 ORDER BY u.name
                 ON CONFLICT (name) DO UPDATE SET
                     next_tick = CASE WHEN s.cron = EXCLUDED.cron AND s.timezone = EXCLUDED.timezone
                                      THEN s.next_tick ELSE EXCLUDED.next_tick END,
                     task = EXCLUDED.task, queue = EXCLUDED.queue, priority = EXCLUDED.priority,
                     payload = EXCLUDED.payload, cron = EXCLUDED.cron,
                     timezone = EXCLUDED.timezone, catch_up = EXCLUDED.catch_up,
                     declared = EXCLUDED.declared",
            ))
            .await?;
        let r = c
            .client()?
            .execute(
                &st,
                &[
                    &a.name,
                    &a.task,
                    &a.queue,
                    &a.priority,
                    &a.payload,
                    &a.cron,
                    &a.timezone,
                    &a.catch_up,
                    &a.declared,
                    &a.next_tick,
                ],
            )
            .await;
        c.check(r)?;
    }
    if let Some(known) = known_tasks {
        // Only the rows whose mark changes, so that workers starting together lock little.
        let st = c
            .prep(&s.sql(
                "UPDATE {S}.taskq_schedules SET task_missing = NOT (task = ANY($1::text[]))
                 WHERE task_missing IS DISTINCT FROM NOT (task = ANY($1::text[]))",
            ))
            .await?;
        let r = c.client()?.execute(&st, &[&known]).await;
        c.check(r)?;
    }
    Ok(())
}

pub(super) async fn list(s: &PostgresStore) -> Result<Vec<ScheduleInfo>, StoreError> {
    let mut c = s.pool.get().await?;
    let st = c
        .prep(&s.sql(
            "SELECT name, task, queue, priority, payload::text, cron, timezone, catch_up, paused,
                    declared, task_missing, next_tick, last_tick, last_task
             FROM {S}.taskq_schedules ORDER BY name",
        ))
        .await?;
    let r = c.client()?.query(&st, &[]).await;
    let rows = c.check(r)?;
    rows.iter()
        .map(|r| -> Result<ScheduleInfo, tokio_postgres::Error> {
            let payload: String = r.try_get(4)?;
            let catch_up: String = r.try_get(7)?;
            Ok(ScheduleInfo {
                name: r.try_get(0)?,
                task: r.try_get(1)?,
                queue: r.try_get(2)?,
                priority: r.try_get(3)?,
                payload: crate::store::stored_or_raw(&payload),
                cron: r.try_get(5)?,
                timezone: r.try_get(6)?,
                catch_up: catch_up.parse().unwrap_or(CatchUp::default()),
                paused: r.try_get(8)?,
                declared: r.try_get(9)?,
                task_missing: r.try_get(10)?,
                next_tick: Timestamp(r.try_get(11)?),
                last_tick: r.try_get::<_, Option<i64>>(12)?.map(Timestamp),
                last_task: r.try_get::<_, Option<i64>>(13)?.map(TaskId),
            })
        })
        .collect::<Result<_, _>>()
        .map_err(schedule_err)
}

pub(super) async fn fire(
    s: &PostgresStore,
    fire: Fire,
    now: Timestamp,
) -> Result<Option<Vec<TaskId>>, StoreError> {
    check_new_tasks(&fire.tasks)?;
    let mut c = s.pool.get().await?;
    let r = fire_in(s, c.client()?, fire, now).await;
    if matches!(r, Err(StoreError::Backend(_))) {
        // The transaction may have been cut anywhere: do not reuse the connection.
        c.discard();
    }
    r
}

async fn fire_in(
    s: &PostgresStore,
    client: &mut Client,
    fire: Fire,
    now: Timestamp,
) -> Result<Option<Vec<TaskId>>, StoreError> {
    let tx = client.transaction().await.map_err(schedule_err)?;
    let moved = tx
        .execute(
            &s.sql(
                "UPDATE {S}.taskq_schedules SET next_tick = $3, last_tick = COALESCE($4, last_tick)
                 WHERE name = $1 AND next_tick = $2 AND NOT paused",
            ),
            &[
                &fire.name,
                &fire.expected.0,
                &fire.next_tick.0,
                &fire.last_tick.map(|t| t.0),
            ],
        )
        .await
        .map_err(schedule_err)?;
    if moved == 0 {
        tx.rollback().await.map_err(schedule_err)?;
        return Ok(None);
    }
    let ids = if fire.tasks.is_empty() {
        Vec::new()
    } else {
        s.enqueue_in(&tx, fire.tasks, now).await?
    };
    if let Some(id) = ids.last() {
        tx.execute(
            &s.sql("UPDATE {S}.taskq_schedules SET last_task = $2 WHERE name = $1"),
            &[&fire.name, &id.0],
        )
        .await
        .map_err(schedule_err)?;
    }
    tx.commit().await.map_err(schedule_err)?;
    Ok(Some(ids))
}

pub(super) async fn set_paused(
    s: &PostgresStore,
    name: &str,
    paused: bool,
    next_tick: Option<Timestamp>,
) -> Result<(), StoreError> {
    let mut c = s.pool.get().await?;
    let st = c
        .prep(&s.sql(
            "UPDATE {S}.taskq_schedules SET paused = $2,
                 next_tick = CASE WHEN NOT $2 AND $3::int8 IS NOT NULL THEN $3::int8 ELSE next_tick END
             WHERE name = $1",
        ))
        .await?;
    let next = next_tick.map(|t| t.0);
    let r = c.client()?.execute(&st, &[&name, &paused, &next]).await;
    if c.check(r)? == 0 {
        return Err(StoreError::NotFound(format!("schedule `{name}`")));
    }
    Ok(())
}

pub(super) async fn remove(s: &PostgresStore, name: &str) -> Result<(), StoreError> {
    let mut c = s.pool.get().await?;
    let st = c
        .prep(&s.sql("DELETE FROM {S}.taskq_schedules WHERE name = $1"))
        .await?;
    let r = c.client()?.execute(&st, &[&name]).await;
    if c.check(r)? == 0 {
        return Err(StoreError::NotFound(format!("schedule `{name}`")));
    }
    Ok(())
}
