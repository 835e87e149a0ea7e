//! Periodic tasks on virtual time (the harness): ticks in a time zone, daylight-saving
//! changes, catch-up after downtime under each policy, and the management calls.
//! What the stores keep and the race of two fires are conformance cases
//! (`tests/src/conformance/schedules.rs`); real processes racing real ticks are in
//! `cron_across_workers.rs`.

use std::time::Duration;

use taskq_runtime::schedule::Cron;
use taskq_runtime::testing::Harness;
use taskq_runtime::{task, CatchUp, Schedule, TaskError, TaskQuery, Timestamp};

/// Declared: every day at noon in Paris. Every harness of this file registers it, so the
/// tests count runs by task.
#[task(cron = "0 12 * * *", timezone = "Europe/Paris")]
async fn noon_in_paris() -> Result<(), TaskError> {
    Ok(())
}

/// Started by the schedules the tests register at run time.
#[task]
async fn tick() -> Result<(), TaskError> {
    Ok(())
}

/// A task with an argument, scheduled with the typed builder.
#[task]
async fn report(team: String) -> Result<(), TaskError> {
    if team.is_empty() {
        return Err(TaskError::fatal("no team"));
    }
    Ok(())
}

fn ts(s: &str) -> Timestamp {
    let t: Vec<i64> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().expect("a number"))
        .collect();
    // Days from the civil date (Howard Hinnant's algorithm), UTC.
    let (y, m, d) = (t[0], t[1], t[2]);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Timestamp(((days * 24 + t[3]) * 60 + t[4]) * 60_000 + t.get(5).copied().unwrap_or(0) * 1000)
}

/// The due times (ticks) of the tasks of `task` in the harness's store, oldest first.
async fn ticks_of(h: &Harness, task: &str) -> Vec<Timestamp> {
    let mut v: Vec<_> = h
        .queue()
        .list(&TaskQuery {
            task: Some(task.into()),
            limit: 10_000,
            ..TaskQuery::default()
        })
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.run_at)
        .collect();
    v.sort();
    v
}

fn harness_at(t: &str) -> Harness {
    let h = Harness::new();
    h.clock().advance_to(ts(t));
    h
}

#[tokio::test]
async fn a_declared_task_ticks_daily_in_its_time_zone() {
    let h = harness_at("2027-01-10T00:00:00Z");
    let report = h
        .run_for(Duration::from_secs(3 * 86_400))
        .await
        .expect("run");
    let runs: Vec<_> = report
        .runs
        .iter()
        .filter(|r| r.task == noon_in_paris::NAME)
        .map(|r| (r.at, r.outcome))
        .collect();
    // Noon in Paris is 11:00 UTC in winter; each run happens at its tick.
    assert_eq!(
        runs,
        vec![
            (ts("2027-01-10T11:00:00Z"), "done"),
            (ts("2027-01-11T11:00:00Z"), "done"),
            (ts("2027-01-12T11:00:00Z"), "done"),
        ]
    );
    let s = h.queue().schedules().await.expect("schedules");
    let s = s
        .iter()
        .find(|s| s.name == noon_in_paris::NAME)
        .expect("the declared schedule is named after its task");
    assert!(s.declared && !s.paused && !s.task_missing);
    assert_eq!(s.last_tick, Some(ts("2027-01-12T11:00:00Z")));
    assert_eq!(s.next_tick, ts("2027-01-13T11:00:00Z"));
}

/// A daily 02:30 in Europe/Paris fires exactly once on the spring-forward day (02:30
/// does not exist: it fires at 03:00 local, the first instant after the gap) and once on
/// the fall-back day (02:30 happens twice: it fires at the first).
#[tokio::test]
async fn a_daily_0230_paris_tick_fires_once_on_each_daylight_saving_day() {
    let h = harness_at("2027-03-26T12:00:00Z");
    Schedule::new("dst", "30 2 * * *", tick::NAME)
        .timezone("Europe/Paris")
        .register(&h.queue())
        .await
        .expect("register");
    h.run_until(ts("2027-03-31T00:00:00Z"))
        .await
        .expect("spring");
    assert_eq!(
        ticks_of(&h, tick::NAME).await,
        vec![
            ts("2027-03-27T01:30:00Z"), // 02:30 CET
            ts("2027-03-28T01:00:00Z"), // the gap: 03:00 CEST
            ts("2027-03-29T00:30:00Z"), // 02:30 CEST
            ts("2027-03-30T00:30:00Z"),
        ]
    );

    let h = harness_at("2027-10-29T12:00:00Z");
    Schedule::new("dst", "30 2 * * *", tick::NAME)
        .timezone("Europe/Paris")
        .register(&h.queue())
        .await
        .expect("register");
    h.run_until(ts("2027-11-02T00:00:00Z"))
        .await
        .expect("autumn");
    assert_eq!(
        ticks_of(&h, tick::NAME).await,
        vec![
            ts("2027-10-30T00:30:00Z"), // 02:30 CEST
            ts("2027-10-31T00:30:00Z"), // the first 02:30 of the day (CEST), not the second
            ts("2027-11-01T01:30:00Z"), // 02:30 CET
        ]
    );
}

/// An interval keeps its pace on real time through both changes: every 30 minutes,
/// never a gap nor a double.
#[tokio::test]
async fn an_interval_keeps_its_pace_through_daylight_saving_changes() {
    for (from, to) in [
        ("2027-03-27T22:00:00Z", "2027-03-28T04:00:00Z"),
        ("2027-10-30T22:00:00Z", "2027-10-31T04:00:00Z"),
    ] {
        let h = harness_at(from);
        Schedule::new("half-hourly", "*/30 * * * *", tick::NAME)
            .timezone("Europe/Paris")
            .register(&h.queue())
            .await
            .expect("register");
        h.run_until(ts(to)).await.expect("run");
        let ticks = ticks_of(&h, tick::NAME).await;
        assert_eq!(ticks.len(), 12, "{from}: {ticks:?}");
        for w in ticks.windows(2) {
            assert_eq!(w[1].0 - w[0].0, 30 * 60_000, "{from}: {ticks:?}");
        }
    }
}

#[tokio::test]
async fn missed_ticks_follow_the_catch_up_policy() {
    let h = harness_at("2027-01-10T12:00:00Z");
    let q = h.queue();
    for (name, policy) in [("skip", CatchUp::Skip), ("last", CatchUp::Last)] {
        Schedule::new(name, "0 3 * * *", tick::NAME)
            .catch_up(policy)
            .queue(name)
            .register(&q)
            .await
            .expect("register");
    }
    // No worker for three days: the ticks of the 11th, 12th and 13th are missed.
    h.clock().advance_to(ts("2027-01-13T12:00:00Z"));
    h.run_for(Duration::from_secs(1)).await.expect("restart");
    let by_queue = |queue: &'static str| {
        let q = q.clone();
        async move {
            let mut v: Vec<_> = q
                .list(&TaskQuery {
                    queue: Some(queue.into()),
                    limit: 100,
                    ..TaskQuery::default()
                })
                .await
                .expect("list")
                .into_iter()
                .map(|t| t.run_at)
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(by_queue("skip").await, vec![], "skip drops missed ticks");
    assert_eq!(
        by_queue("last").await,
        vec![ts("2027-01-13T03:00:00Z")],
        "last runs the last missed tick once"
    );
    // Back on time: each schedule fires each later tick once, nothing twice.
    h.run_until(ts("2027-01-15T12:00:00Z")).await.expect("run");
    assert_eq!(
        by_queue("skip").await,
        vec![ts("2027-01-14T03:00:00Z"), ts("2027-01-15T03:00:00Z")]
    );
    assert_eq!(
        by_queue("last").await,
        vec![
            ts("2027-01-13T03:00:00Z"),
            ts("2027-01-14T03:00:00Z"),
            ts("2027-01-15T03:00:00Z")
        ]
    );

    // Every second, down ten minutes: only the ticks of the last 30 s (on time) fire,
    // whatever the policy; no flood of the 570 missed ones.
    let h = harness_at("2027-01-10T12:00:00Z");
    Schedule::new("often", "* * * * * *", tick::NAME)
        .catch_up(CatchUp::Last)
        .register(&h.queue())
        .await
        .expect("register");
    h.clock().advance_to(ts("2027-01-10T12:10:00Z"));
    h.run_for(Duration::ZERO).await.expect("restart");
    let ticks = ticks_of(&h, tick::NAME).await;
    assert_eq!(ticks.len(), 31, "the ticks 12:09:30 to 12:10:00");
    assert_eq!(ticks.first(), Some(&ts("2027-01-10T12:09:30Z")));
    assert_eq!(ticks.last(), Some(&ts("2027-01-10T12:10:00Z")));
}

#[tokio::test]
async fn run_now_pause_resume_change_and_remove() {
    let h = harness_at("2027-01-10T12:00:00Z");
    let q = h.queue();
    report::schedule("sales", "0 3 * * *", "sales".into())
        .timezone("America/New_York")
        .register(&q)
        .await
        .expect("register");
    let find = || async {
        q.schedules()
            .await
            .expect("schedules")
            .into_iter()
            .find(|s| s.name == "sales")
            .expect("listed")
    };
    let s = find().await;
    assert_eq!(s.payload, serde_json::json!({ "team": "sales" }));
    assert_eq!(s.next_tick, ts("2027-01-11T08:00:00Z"), "03:00 in New York");

    // Run now: a task now, with the schedule's arguments; the schedule does not move.
    let id = q.run_schedule_now("sales").await.expect("run now");
    let task = q.task(id).await.expect("task").expect("exists");
    assert_eq!(task.info.run_at, ts("2027-01-10T12:00:00Z"));
    assert_eq!(task.info.payload, serde_json::json!({ "team": "sales" }));
    assert_eq!(find().await.next_tick, ts("2027-01-11T08:00:00Z"));

    // Paused for two days: nothing fires, and resuming does not fire the ticks missed.
    q.pause_schedule("sales").await.expect("pause");
    h.run_until(ts("2027-01-12T12:00:00Z")).await.expect("run");
    assert_eq!(
        ticks_of(&h, report::NAME).await.len(),
        1,
        "only the run now"
    );
    q.resume_schedule("sales").await.expect("resume");
    let s = find().await;
    assert!(!s.paused);
    assert_eq!(s.next_tick, ts("2027-01-13T08:00:00Z"));
    h.run_until(ts("2027-01-13T12:00:00Z")).await.expect("run");
    assert_eq!(
        ticks_of(&h, report::NAME).await,
        vec![ts("2027-01-10T12:00:00Z"), ts("2027-01-13T08:00:00Z")]
    );
    assert_eq!(find().await.last_tick, Some(ts("2027-01-13T08:00:00Z")));

    // A new expression takes effect at once; the same one keeps the next tick.
    report::schedule("sales", "0 * * * *", "sales".into())
        .register(&q)
        .await
        .expect("change");
    assert_eq!(find().await.next_tick, ts("2027-01-13T13:00:00Z"));

    // Resuming a schedule that is not paused changes nothing: a tick that is due and not
    // fired yet stays due (it is not pushed to the next one).
    h.clock().advance_to(ts("2027-01-13T14:30:00Z"));
    q.resume_schedule("sales")
        .await
        .expect("resume an unpaused schedule");
    assert_eq!(find().await.next_tick, ts("2027-01-13T13:00:00Z"));

    q.remove_schedule("sales").await.expect("remove");
    assert!(q
        .schedules()
        .await
        .expect("schedules")
        .iter()
        .all(|s| s.name != "sales"));
    assert!(q.run_schedule_now("sales").await.is_err());

    let bad = Schedule::new("bad", "0 3 * *", tick::NAME)
        .register(&q)
        .await;
    assert!(
        bad.as_ref()
            .is_err_and(|e| e.to_string().contains("invalid cron expression `0 3 * *`")),
        "{bad:?}"
    );
    let bad = Schedule::new("bad", "0 3 * * *", tick::NAME)
        .timezone("Paris")
        .register(&q)
        .await;
    assert!(
        bad.as_ref()
            .is_err_and(|e| e.to_string().contains("unknown time zone `Paris`")),
        "{bad:?}"
    );
}

/// The ticks of `expression` in `zone` after `from` and before `to`, as the tick policy
/// computes them (the harness's clock cannot go back to the years these zones changed
/// at midnight: São Paulo has had no daylight saving since 2019).
fn daily_ticks(expression: &str, zone: &str, from: &str, to: &str) -> Vec<Timestamp> {
    let cron = Cron::parse(expression, zone).expect("parses");
    let mut out = Vec::new();
    let mut t = ts(from);
    while let Some(next) = cron.next_after(t).filter(|n| *n < ts(to)) {
        assert!(out.len() < 10, "a runaway: {out:?}");
        out.push(next);
        t = next;
    }
    out
}

/// Daylight-saving changes at midnight: a daily midnight fires once on each day, at the
/// first instant after a gap (00:00 does not exist) and at the first of two midnights.
#[test]
fn a_daily_midnight_fires_once_when_the_change_is_at_midnight() {
    // São Paulo, 2018-11-04: 00:00 -03 became 01:00 -02.
    assert_eq!(
        daily_ticks(
            "0 0 * * *",
            "America/Sao_Paulo",
            "2018-11-02T12:00:00Z",
            "2018-11-05T12:00:00Z"
        ),
        vec![
            ts("2018-11-03T03:00:00Z"),
            ts("2018-11-04T03:00:00Z"), // 01:00 -02, the first instant of the day
            ts("2018-11-05T02:00:00Z"),
        ]
    );
    // São Paulo, 2019-02-17: 00:00 -02 became 23:00 -03 on the 16th (23:00 twice).
    assert_eq!(
        daily_ticks(
            "0 0 * * *",
            "America/Sao_Paulo",
            "2019-02-15T12:00:00Z",
            "2019-02-18T12:00:00Z"
        ),
        vec![
            ts("2019-02-16T02:00:00Z"),
            ts("2019-02-17T03:00:00Z"),
            ts("2019-02-18T03:00:00Z"),
        ]
    );
    assert_eq!(
        daily_ticks(
            "0 23 * * *",
            "America/Sao_Paulo",
            "2019-02-15T12:00:00Z",
            "2019-02-18T12:00:00Z"
        ),
        vec![
            ts("2019-02-16T01:00:00Z"),
            ts("2019-02-17T01:00:00Z"), // the first 23:00 (-02), not the second
            ts("2019-02-18T02:00:00Z"),
        ]
    );
    // Havana, 2023-03-12: 00:00 CST became 01:00 CDT.
    assert_eq!(
        daily_ticks(
            "0 0 * * *",
            "America/Havana",
            "2023-03-10T12:00:00Z",
            "2023-03-13T12:00:00Z"
        ),
        vec![
            ts("2023-03-11T05:00:00Z"),
            ts("2023-03-12T05:00:00Z"), // 01:00 CDT
            ts("2023-03-13T04:00:00Z"),
        ]
    );
    // Havana, 2023-11-05: 01:00 CDT became 00:00 CST: midnight happened twice.
    assert_eq!(
        daily_ticks(
            "0 0 * * *",
            "America/Havana",
            "2023-11-03T12:00:00Z",
            "2023-11-06T12:00:00Z"
        ),
        vec![
            ts("2023-11-04T04:00:00Z"),
            ts("2023-11-05T04:00:00Z"), // the first midnight (CDT), not the second
            ts("2023-11-06T05:00:00Z"),
        ]
    );
}

/// A declared schedule whose task no longer declares `cron` (the key was removed from
/// `#[task]`) is removed when a worker that knows the task starts: every worker knows
/// the task, so it would otherwise fire for ever. A run-time schedule of that task stays.
#[tokio::test]
async fn a_declared_schedule_whose_task_lost_its_cron_is_removed_at_start() {
    use taskq_runtime::store::NewSchedule;
    let h = harness_at("2027-01-10T00:30:00Z");
    let q = h.queue();
    // What a worker of the previous version (`#[task(cron = "0 * * * *")] async fn tick`)
    // registered.
    q.store()
        .upsert_schedules(
            vec![NewSchedule {
                name: tick::NAME.into(),
                task: tick::NAME.into(),
                queue: "default".into(),
                priority: 0,
                payload: serde_json::json!({}),
                cron: "0 * * * *".into(),
                timezone: "UTC".into(),
                catch_up: CatchUp::Last,
                declared: true,
                next_tick: ts("2027-01-10T01:00:00Z"),
            }],
            None,
        )
        .await
        .expect("the old declared schedule");
    Schedule::new("hourly-at-run-time", "30 * * * *", tick::NAME)
        .register(&q)
        .await
        .expect("register");
    h.run_until(ts("2027-01-10T03:15:00Z")).await.expect("run");
    assert_eq!(
        ticks_of(&h, tick::NAME).await,
        vec![ts("2027-01-10T01:30:00Z"), ts("2027-01-10T02:30:00Z")],
        "only the run-time schedule fires"
    );
    let names: Vec<String> = q
        .schedules()
        .await
        .expect("schedules")
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(!names.contains(&tick::NAME.to_string()), "{names:?}");
    assert!(
        names.contains(&"hourly-at-run-time".to_string()),
        "{names:?}"
    );
}

/// An expression no date matches (February 30th) is refused at registration, with its
/// reason, and nothing is stored.
#[tokio::test]
async fn an_expression_that_never_fires_is_refused() {
    let h = harness_at("2027-01-10T00:00:00Z");
    let q = h.queue();
    let e = Schedule::new("feb-30", "0 0 30 2 *", tick::NAME)
        .register(&q)
        .await;
    assert!(
        e.as_ref()
            .is_err_and(|e| e.to_string() == "the cron expression `0 0 30 2 *` never fires"),
        "{e:?}"
    );
    let s = q.schedules().await.expect("schedules");
    assert!(s.iter().all(|s| s.name != "feb-30"), "{s:?}");
}

/// A schedule whose fire the store refuses (a row edited by hand: a queue name longer
/// than a store keeps) is logged and left; the schedules after it still fire.
#[tokio::test]
async fn a_schedule_the_store_refuses_to_fire_does_not_stop_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("q.db");
    let q = taskq_runtime::Queue::open(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    let h = Harness::with_store(q.store().clone());
    h.clock().advance_to(ts("2027-01-10T00:30:00Z"));
    for name in ["a-bad", "b-good"] {
        Schedule::new(name, "0 * * * *", tick::NAME)
            .register(&h.queue())
            .await
            .expect("register");
    }
    rusqlite::Connection::open(&path)
        .expect("the file")
        .execute(
            "UPDATE taskq_schedules SET queue = ?1 WHERE name = 'a-bad'",
            ["x".repeat(2_000)],
        )
        .expect("edit by hand");
    h.run_until(ts("2027-01-10T03:15:00Z")).await.expect("run");
    assert_eq!(
        ticks_of(&h, tick::NAME).await,
        vec![
            ts("2027-01-10T01:00:00Z"),
            ts("2027-01-10T02:00:00Z"),
            ts("2027-01-10T03:00:00Z")
        ]
    );
}
