//! The memory store's schedules ([`crate::schedule`]): a map by name behind an async
//! mutex that a fire holds across its enqueue, so that the compare-and-set of the next
//! tick and the tasks it stores are one step for every other caller.

use super::*;
use crate::store::schedule::check_new_schedule;

impl MemoryStore {
    pub(super) async fn upsert_schedules_mem(
        &self,
        schedules: Vec<NewSchedule>,
        known_tasks: Option<Vec<String>>,
    ) -> Result<(), StoreError> {
        for s in &schedules {
            check_new_schedule(s)?;
        }
        let mut g = self.schedules.lock().await;
        for s in schedules {
            match g.get_mut(&s.name) {
                Some(row) => {
                    if row.cron != s.cron || row.timezone != s.timezone {
                        row.cron = s.cron;
                        row.timezone = s.timezone;
                        row.next_tick = s.next_tick;
                    }
                    row.task = s.task;
                    row.queue = s.queue;
                    row.priority = s.priority;
                    row.payload = s.payload;
                    row.catch_up = s.catch_up;
                    row.declared = s.declared;
                }
                None => {
                    g.insert(
                        s.name.clone(),
                        ScheduleInfo {
                            name: s.name,
                            task: s.task,
                            queue: s.queue,
                            priority: s.priority,
                            payload: s.payload,
                            cron: s.cron,
                            timezone: s.timezone,
                            catch_up: s.catch_up,
                            paused: false,
                            declared: s.declared,
                            task_missing: false,
                            next_tick: s.next_tick,
                            last_tick: None,
                            last_task: None,
                        },
                    );
                }
            }
        }
        if let Some(known) = known_tasks {
            for row in g.values_mut() {
                row.task_missing = !known.contains(&row.task);
            }
        }
        Ok(())
    }

    pub(super) async fn schedules_mem(&self) -> Vec<ScheduleInfo> {
        self.schedules.lock().await.values().cloned().collect()
    }

    pub(super) async fn fire_schedule_mem(
        &self,
        fire: Fire,
        now: Timestamp,
    ) -> Result<Option<Vec<TaskId>>, StoreError> {
        let mut g = self.schedules.lock().await;
        match g.get(&fire.name) {
            Some(row) if !row.paused && row.next_tick == fire.expected => {}
            _ => return Ok(None),
        }
        // Held across the enqueue: no other fire of this store reads the schedule until
        // its tasks are stored (or refused, and the schedule left as it was).
        let ids = self.enqueue(fire.tasks, now).await?;
        if let Some(row) = g.get_mut(&fire.name) {
            row.next_tick = fire.next_tick;
            if fire.last_tick.is_some() {
                row.last_tick = fire.last_tick;
            }
            if let Some(id) = ids.last() {
                row.last_task = Some(*id);
            }
        }
        Ok(Some(ids))
    }

    pub(super) async fn set_schedule_paused_mem(
        &self,
        name: &str,
        paused: bool,
        next_tick: Option<Timestamp>,
    ) -> Result<(), StoreError> {
        let mut g = self.schedules.lock().await;
        let row = g
            .get_mut(name)
            .ok_or_else(|| StoreError::NotFound(format!("schedule `{name}`")))?;
        row.paused = paused;
        if let (false, Some(t)) = (paused, next_tick) {
            row.next_tick = t;
        }
        Ok(())
    }

    pub(super) async fn remove_schedule_mem(&self, name: &str) -> Result<(), StoreError> {
        self.schedules
            .lock()
            .await
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| StoreError::NotFound(format!("schedule `{name}`")))
    }
}
