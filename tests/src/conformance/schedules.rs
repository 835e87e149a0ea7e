//! Conformance cases for periodic tasks ([`taskq_runtime::schedule`]): what each store
//! keeps of a schedule, and the fire's compare-and-set, raced by many callers at once.

use std::sync::Arc;

use serde_json::json;
use taskq_runtime::schedule::CatchUp;
use taskq_runtime::store::{Fire, NewSchedule, Store, StoreError, TaskQuery};
use taskq_runtime::Timestamp;

use super::{at, new_task, T0};

fn schedule(name: &str, cron: &str, next_tick: Timestamp) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        task: "conformance::noop".into(),
        queue: "cron".into(),
        priority: 3,
        payload: json!({ "team": "sales" }),
        cron: cron.into(),
        timezone: "Europe/Paris".into(),
        catch_up: CatchUp::Skip,
        declared: false,
        next_tick,
    }
}

/// Upsert, listing, pause and resume, the task-missing mark and removal.
pub async fn schedules_are_kept_updated_paused_and_removed(s: Arc<dyn Store>) {
    s.upsert_schedules(
        vec![
            schedule("b-nightly", "0 3 * * *", at(1_000)),
            schedule("a-often", "* * * * * *", at(2_000)),
        ],
        None,
    )
    .await
    .expect("upsert");
    let all = s.schedules().await.expect("list");
    assert_eq!(
        all.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        ["a-often", "b-nightly"],
        "listed by name"
    );
    let b = &all[1];
    assert_eq!(
        (b.task.as_str(), b.queue.as_str(), b.priority, &b.payload),
        ("conformance::noop", "cron", 3, &json!({ "team": "sales" }))
    );
    assert_eq!(
        (b.cron.as_str(), b.timezone.as_str(), b.catch_up),
        ("0 3 * * *", "Europe/Paris", CatchUp::Skip)
    );
    assert_eq!(
        (b.paused, b.declared, b.task_missing),
        (false, false, false)
    );
    assert_eq!(
        (b.next_tick, b.last_tick, b.last_task),
        (at(1_000), None, None)
    );

    // The same expression: the next tick stays; the other fields are replaced.
    let mut same = schedule("b-nightly", "0 3 * * *", at(9_000));
    same.queue = "other".into();
    same.catch_up = CatchUp::Last;
    same.declared = true;
    s.upsert_schedules(vec![same], Some(vec!["somewhere::else".into()]))
        .await
        .expect("upsert again");
    let b = find(&*s, "b-nightly").await;
    assert_eq!(
        (b.next_tick, b.queue.as_str(), b.catch_up, b.declared),
        (at(1_000), "other", CatchUp::Last, true)
    );
    assert!(b.task_missing, "no worker that started knows the task");
    // Another expression: the next tick given is taken.
    s.upsert_schedules(
        vec![schedule("b-nightly", "0 4 * * *", at(5_000))],
        Some(vec!["conformance::noop".into()]),
    )
    .await
    .expect("new expression");
    let b = find(&*s, "b-nightly").await;
    assert_eq!((b.cron.as_str(), b.next_tick), ("0 4 * * *", at(5_000)));
    assert!(!b.task_missing);

    s.set_schedule_paused("b-nightly", true, Some(at(7_000)))
        .await
        .expect("pause");
    let b = find(&*s, "b-nightly").await;
    assert!(b.paused);
    assert_eq!(b.next_tick, at(5_000), "pausing leaves the next tick");
    // A paused schedule does not fire.
    let fired = s
        .fire_schedule(
            Fire {
                name: "b-nightly".into(),
                expected: at(5_000),
                next_tick: at(6_000),
                last_tick: Some(at(5_000)),
                tasks: vec![new_task("cron", 1)],
            },
            at(5_000),
        )
        .await
        .expect("fire a paused schedule");
    assert_eq!(fired, None);
    s.set_schedule_paused("b-nightly", false, Some(at(8_000)))
        .await
        .expect("resume");
    let b = find(&*s, "b-nightly").await;
    assert_eq!((b.paused, b.next_tick), (false, at(8_000)));

    assert!(matches!(
        s.set_schedule_paused("nope", true, None).await,
        Err(StoreError::NotFound(_))
    ));
    s.remove_schedule("a-often").await.expect("remove");
    assert!(matches!(
        s.remove_schedule("a-often").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.schedules().await.expect("list").len(), 1);
    let mut bad = schedule("nul\0name", "* * * * *", T0);
    assert!(matches!(
        s.upsert_schedules(vec![bad.clone()], None).await,
        Err(StoreError::InvalidValue(_))
    ));
    bad.name = "args-not-an-object".into();
    bad.payload = json!([1]);
    assert!(matches!(
        s.upsert_schedules(vec![bad], None).await,
        Err(StoreError::InvalidValue(_))
    ));
    assert_eq!(
        s.schedules().await.expect("list").len(),
        1,
        "nothing stored"
    );
}

async fn find(s: &dyn Store, name: &str) -> taskq_runtime::ScheduleInfo {
    s.schedules()
        .await
        .expect("list")
        .into_iter()
        .find(|x| x.name == name)
        .unwrap_or_else(|| panic!("schedule {name} is listed"))
}

/// Eight callers fire one due tick at once: one stores its task and moves the next tick,
/// the others store nothing. A fire the store refuses changes nothing.
pub async fn racing_fires_of_one_tick_fire_it_once(s: Arc<dyn Store>) {
    s.upsert_schedules(vec![schedule("race", "* * * * * *", at(1_000))], None)
        .await
        .expect("upsert");
    for round in 0..3i64 {
        let expected = at(1_000 * (round + 1));
        let next = at(1_000 * (round + 2));
        let mut racers = Vec::new();
        for n in 0..8 {
            let s = s.clone();
            racers.push(tokio::spawn(async move {
                let mut task = new_task("cron", n);
                task.run_at = expected;
                s.fire_schedule(
                    Fire {
                        name: "race".into(),
                        expected,
                        next_tick: next,
                        last_tick: Some(expected),
                        tasks: vec![task],
                    },
                    expected,
                )
                .await
            }));
        }
        let mut won = Vec::new();
        for r in racers {
            if let Some(ids) = r.await.expect("join").expect("fire") {
                won.push(ids);
            }
        }
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one fire wins: {won:?}"
        );
        assert_eq!(won[0].len(), 1);
        let b = find(&*s, "race").await;
        assert_eq!(
            (b.next_tick, b.last_tick, b.last_task),
            (next, Some(expected), Some(won[0][0]))
        );
    }
    let tasks = s
        .list_tasks(&TaskQuery {
            queue: Some("cron".into()),
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .expect("list");
    let mut due: Vec<_> = tasks.iter().map(|t| t.run_at).collect();
    due.sort();
    assert_eq!(
        due,
        vec![at(1_000), at(2_000), at(3_000)],
        "one task per tick"
    );

    // A fire whose tasks the store refuses stores nothing and leaves the schedule.
    let mut bad = new_task("cron\0", 9);
    bad.run_at = at(4_000);
    let refused = s
        .fire_schedule(
            Fire {
                name: "race".into(),
                expected: at(4_000),
                next_tick: at(5_000),
                last_tick: Some(at(4_000)),
                tasks: vec![bad],
            },
            at(4_000),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidValue(_))),
        "{refused:?}"
    );
    let b = find(&*s, "race").await;
    assert_eq!((b.next_tick, b.last_tick), (at(4_000), Some(at(3_000))));
    // Dropping every due tick (no task) still moves the schedule on.
    let moved = s
        .fire_schedule(
            Fire {
                name: "race".into(),
                expected: at(4_000),
                next_tick: at(9_000),
                last_tick: None,
                tasks: Vec::new(),
            },
            at(8_500),
        )
        .await
        .expect("fire without tasks");
    assert_eq!(moved, Some(Vec::new()));
    let b = find(&*s, "race").await;
    assert_eq!((b.next_tick, b.last_tick), (at(9_000), Some(at(3_000))));
}

/// A schedule's arguments are checked at registration as a task's are at enqueue:
/// nested deeper than `MAX_DEPTH` or larger than `MAX_PAYLOAD_BYTES` of JSON is refused
/// with `InvalidValue` and nothing is stored (else every tick's enqueue would refuse them,
/// and a database store could not read the row back).
pub async fn schedule_arguments_too_deep_or_too_large_are_refused_at_registration(
    s: Arc<dyn Store>,
) {
    let mut deep = json!(1);
    for _ in 0..taskq_runtime::value::MAX_DEPTH + 20 {
        deep = json!([deep]);
    }
    let mut too_deep = schedule("too-deep", "0 3 * * *", at(1_000));
    too_deep.payload = json!({ "team": deep });
    let refused = s.upsert_schedules(vec![too_deep], None).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidValue(_))),
        "too deep: {refused:?}"
    );
    let mut too_large = schedule("too-large", "0 3 * * *", at(1_000));
    too_large.payload = json!({ "team": "x".repeat(taskq_runtime::value::MAX_PAYLOAD_BYTES + 1) });
    let refused = s.upsert_schedules(vec![too_large], None).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidValue(_))),
        "too large: {:?}",
        refused.map_err(|e| e.to_string().chars().take(200).collect::<String>())
    );
    let names: Vec<String> = s
        .schedules()
        .await
        .expect("list")
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert!(names.is_empty(), "nothing stored: {names:?}");
}

/// A schedule needs a name: an empty one is refused with `InvalidValue` (the CLI and the
/// console could not name it to run, pause or resume it).
pub async fn an_empty_schedule_name_is_refused(s: Arc<dyn Store>) {
    let refused = s
        .upsert_schedules(vec![schedule("", "0 3 * * *", at(1_000))], None)
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidValue(_))),
        "{refused:?}"
    );
    assert!(s.schedules().await.expect("list").is_empty());
}
