//! The crash campaign (issue 9): worker processes SIGKILLed at random moments while plain
//! tasks and an iterative run go on, on SQLite (one file, several processes) and on
//! PostgreSQL (several processes, on a private cluster this test starts, restarted
//! mid-run, with some workers behind a proxy that goes half-open for a while).
//!
//! At the end, exactly (see `taskq_tests::tasks::check_effects` and `check_walk`): every
//! task is done or dead with its reason; none is lost; the run skipped no entity; an
//! effect shows twice only when the attempt that first wrote it was cut short by a kill
//! or a lost lease. One summary line per store: kills, tasks, duplicates, lost, entities,
//! skipped.
//!
//! Small by default (a few kills, well under a minute per store). Large, locally:
//!
//! ```sh
//! TASKQ_CAMPAIGN=large cargo test --release -p taskq-tests --test crash_campaign -- --nocapture
//! ```
//!
//! The moments, victims and episodes come from a seed, printed at the start; set
//! `TASKQ_CAMPAIGN_SEED` to replay one (the machine's timing still varies).
//! `TASKQ_CAMPAIGN_KILLS` overrides the number of kills.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use taskq_runtime::store::{RunState, StoreError, TaskQuery};
use taskq_runtime::{Queue, StartError, TaskId, TaskState};
use taskq_tests::cluster::Cluster;
use taskq_tests::models::{ItemDb, ItemFilter};
use taskq_tests::proxy::{target_of, Proxy};
use taskq_tests::tasks::{
    append_line, check_effects, check_walk, crash_walk_logged, read_effects, read_walk,
    walk_progress, worker_pid,
};

/// How big a campaign is.
#[derive(Clone, Debug)]
struct Size {
    /// Worker processes at any time.
    workers: usize,
    /// Of which this many reach PostgreSQL through the proxy.
    proxied: usize,
    /// Each worker's concurrency.
    concurrency: usize,
    /// Each worker's lease.
    lease: Duration,
    /// SIGKILLs.
    kills: usize,
    /// PostgreSQL restarts.
    restarts: usize,
    /// Half-open episodes of the proxy.
    half_opens: usize,
    /// Time between two events, drawn from this range (ms).
    gap_ms: (u64, u64),
    /// Plain tasks started every 100 ms while the events go on.
    feed: u64,
    /// Entities the iterative run walks.
    entities: i64,
    /// Sleep of the run in each batch (ms).
    batch_ms: u64,
    /// How long the workers get to finish everything after the last event.
    finish_within: Duration,
}

impl Size {
    fn from_env() -> Size {
        let large = std::env::var("TASKQ_CAMPAIGN").as_deref() == Ok("large");
        let mut s = if large {
            Size {
                workers: 4,
                proxied: 2,
                concurrency: 8,
                lease: Duration::from_secs(2),
                kills: 150,
                restarts: 5,
                half_opens: 5,
                gap_ms: (200, 2000),
                feed: 30,
                entities: 200_000,
                batch_ms: 40,
                finish_within: Duration::from_secs(600),
            }
        } else {
            Size {
                workers: 3,
                proxied: 1,
                concurrency: 4,
                lease: Duration::from_secs(2),
                kills: 6,
                restarts: 1,
                half_opens: 1,
                gap_ms: (300, 1500),
                feed: 10,
                entities: 12_000,
                batch_ms: 50,
                finish_within: Duration::from_secs(180),
            }
        };
        if let Some(k) = std::env::var("TASKQ_CAMPAIGN_KILLS")
            .ok()
            .and_then(|k| k.parse().ok())
        {
            s.kills = k;
        }
        s
    }
}

fn seed() -> u64 {
    match std::env::var("TASKQ_CAMPAIGN_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("TASKQ_CAMPAIGN_SEED={s} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// The worker processes: each slot always has one running (a killed one is replaced).
struct Fleet {
    dir: PathBuf,
    /// Per slot: the store URL its worker uses (direct or through the proxy).
    urls: Vec<String>,
    args: Vec<String>,
    children: Vec<Child>,
    spawned: usize,
    killed: HashSet<u32>,
}

impl Fleet {
    fn start(dir: &Path, urls: Vec<String>, args: Vec<String>) -> Fleet {
        let mut f = Fleet {
            dir: dir.to_path_buf(),
            urls,
            args,
            children: Vec::new(),
            spawned: 0,
            killed: HashSet::new(),
        };
        for slot in 0..f.urls.len() {
            let c = f.spawn(slot);
            f.children.push(c);
        }
        f
    }

    fn spawn(&mut self, slot: usize) -> Child {
        self.spawned += 1;
        let err = File::create(
            self.dir
                .join(format!("worker-{slot}-{}.stderr", self.spawned)),
        )
        .expect("worker stderr file");
        Command::new(env!("CARGO_BIN_EXE_taskq-test-worker"))
            .arg(&self.urls[slot])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn a worker process")
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    /// SIGKILLs the worker of `slot` and starts another in its place.
    fn kill(&mut self, slot: usize) {
        let pid = self.children[slot].id();
        self.children[slot].kill().expect("SIGKILL");
        self.children[slot].wait().expect("reap");
        self.killed.insert(pid);
        let c = self.spawn(slot);
        self.children[slot] = c;
    }

    /// Fails the campaign if a worker exited by itself.
    fn assert_alive(&mut self) {
        for (slot, c) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                let log = std::fs::read_dir(&self.dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("worker-{slot}-"))
                    })
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!("the worker of slot {slot} exited by itself ({status}); its stderr:\n{log}");
            }
        }
    }

    /// SIGTERM to every worker (graceful shutdown), then waits for them.
    fn stop(mut self) {
        for c in &self.children {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        let start = Instant::now();
        for c in &mut self.children {
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("a worker did not stop within 60 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What can happen between two feeding periods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Kill,
    Restart,
    HalfOpen,
}

/// The PostgreSQL side of a campaign: the private cluster and the proxy.
struct Network {
    cluster: Arc<Cluster>,
    proxy: Proxy,
}

/// Everything counted during a run, for the summary line.
#[derive(Debug, Default)]
struct Tally {
    kills: usize,
    kills_of_step_holder: usize,
    kills_mid_iteration: usize,
    restarts: usize,
    running_at_restart: Vec<u64>,
    half_opens: usize,
    held_by_proxied_at_half_open: Vec<usize>,
}

/// Starts tasks `n..n+k` (each named, so a call retried after an unclear failure cannot
/// start one twice); returns once the store acknowledged them.
async fn feed(q: &Queue, n: &mut u64, k: u64, rng: &mut fastrand::Rng) {
    let batch: Vec<(u64, u64)> = (*n..*n + k).map(|i| (i, rng.u64(0..40))).collect();
    let start = Instant::now();
    loop {
        let builders = batch
            .iter()
            .map(|(i, work)| append_line::builder(*i, *work).name(format!("c{i}")));
        match q.start_many(builders).await {
            // Already there: an earlier call that seemed to fail went through.
            Ok(_) | Err(StartError::Store(StoreError::AlreadyExists(_))) => break,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "could not start tasks for 60 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    *n += k;
}

/// Feeds tasks every 100 ms for `d`.
async fn feed_for(q: &Queue, d: Duration, n: &mut u64, size: &Size, rng: &mut fastrand::Rng) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        feed(q, n, size.feed, rng).await;
        tokio::time::sleep(
            Duration::from_millis(100).min(end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}

/// The process holding the run's running step now, if any (and if the store answers).
async fn step_holder(q: &Queue) -> Option<u32> {
    let running = q
        .list(&TaskQuery {
            queue: Some("crash-walk".into()),
            state: Some(TaskState::Running),
            limit: 10,
            ..Default::default()
        })
        .await
        .ok()?;
    running
        .iter()
        .find_map(|t| t.worker.as_deref().and_then(worker_pid))
}

/// Running plain tasks held by the processes `pids`.
async fn held_by(q: &Queue, pids: &[u32]) -> usize {
    q.list(&TaskQuery {
        queue: Some("crash".into()),
        state: Some(TaskState::Running),
        limit: 1000,
        ..Default::default()
    })
    .await
    .map(|ts| {
        ts.iter()
            .filter(|t| {
                t.worker
                    .as_deref()
                    .and_then(worker_pid)
                    .is_some_and(|p| pids.contains(&p))
            })
            .count()
    })
    .unwrap_or(0)
}

async fn count(q: &Queue, queue: &str, state: TaskState) -> Option<u64> {
    let qs = q.queues().await.ok()?;
    Some(
        qs.iter()
            .find(|x| x.name == queue)
            .map(|x| x.count(state))
            .unwrap_or(0),
    )
}

/// Every task of the `crash` queue, as `ids[n]` = the task that writes `n`.
async fn plain_tasks(q: &Queue, fed: u64) -> Vec<TaskId> {
    let mut ids: Vec<Option<TaskId>> = vec![None; fed as usize];
    let mut before = None;
    loop {
        let page = q
            .list(&TaskQuery {
                queue: Some("crash".into()),
                before,
                limit: 1000,
                // The number is in the payload, which a listing leaves out unless asked.
                with_payload: true,
                ..Default::default()
            })
            .await
            .expect("list the tasks");
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        for t in &page {
            let n = t.payload["n"]
                .as_u64()
                .unwrap_or_else(|| panic!("a task without its number: {t:?}"));
            assert!(n < fed, "a task nobody started: {t:?}");
            assert!(
                ids[n as usize].replace(t.id).is_none(),
                "task {n} was started twice"
            );
        }
    }
    ids.into_iter()
        .enumerate()
        .map(|(n, id)| {
            id.unwrap_or_else(|| panic!("task {n} was acknowledged but is not in the store (lost)"))
        })
        .collect()
}

/// One campaign on the store at `url` (and, for PostgreSQL, its cluster and proxy).
async fn campaign(label: &str, url: &str, net: Option<Network>, size: &Size, seed: u64) {
    let began = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let effects_log = dir.path().join("effects.log");
    let walk_log = dir.path().join("walk.log");
    let items_path = dir.path().join("items.db");
    ItemDb::open(&items_path).insert((1..=size.entities).map(|i| (i, "a")));

    let q = Queue::open(url).await.expect("open the store");
    let run = crash_walk_logged::start(&q, ItemFilter::default(), size.batch_ms)
        .await
        .expect("start the run");
    let mut n = 0u64;
    feed(&q, &mut n, size.feed * 5, &mut rng).await;

    let urls: Vec<String> = (0..size.workers)
        .map(|slot| match &net {
            Some(net) if slot < size.proxied => net.proxy.url_through(url),
            _ => url.to_string(),
        })
        .collect();
    let args = vec![
        effects_log.display().to_string(),
        size.lease.as_millis().to_string(),
        size.concurrency.to_string(),
        items_path.display().to_string(),
        walk_log.display().to_string(),
    ];
    let mut fleet = Fleet::start(dir.path(), urls, args);

    let mut events = vec![Event::Kill; size.kills];
    if net.is_some() {
        events.extend(std::iter::repeat_n(Event::Restart, size.restarts));
        events.extend(std::iter::repeat_n(Event::HalfOpen, size.half_opens));
    }
    rng.shuffle(&mut events);
    // A kill first, while the run surely goes on: a restart or a half-open episode first
    // could outlast the whole (small) run, and then no kill would hit it.
    if let Some(k) = events.iter().position(|e| *e == Event::Kill) {
        events.swap(0, k);
    }
    let mut tally = Tally::default();
    for (i, event) in events.iter().enumerate() {
        let gap = Duration::from_millis(rng.u64(size.gap_ms.0..=size.gap_ms.1));
        feed_for(&q, gap, &mut n, size, &mut rng).await;
        fleet.assert_alive();
        match event {
            Event::Kill => {
                let run_going = q
                    .iteration(run)
                    .await
                    .map(|it| it.state == RunState::Running)
                    .unwrap_or(false);
                // Every other kill (and the first) aims at the run's step when one runs,
                // so the iteration is hit too; the others pick any worker.
                let holder = if i % 2 == 0 || tally.kills == 0 {
                    step_holder(&q).await
                } else {
                    None
                };
                let pids = fleet.pids();
                let slot = match holder.and_then(|h| pids.iter().position(|p| *p == h)) {
                    Some(s) => {
                        tally.kills_of_step_holder += 1;
                        s
                    }
                    None => rng.usize(0..size.workers),
                };
                if run_going {
                    tally.kills_mid_iteration += 1;
                }
                fleet.kill(slot);
                tally.kills += 1;
            }
            Event::Restart => {
                let net = net.as_ref().expect("a PostgreSQL campaign");
                // Restart only with plain tasks in flight.
                let start = Instant::now();
                let running = loop {
                    let r = count(&q, "crash", TaskState::Running).await.unwrap_or(0);
                    if r > 0 || start.elapsed() > Duration::from_secs(30) {
                        break r;
                    }
                    feed(&q, &mut n, size.feed, &mut rng).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                assert!(running > 0, "no task in flight to restart under");
                tally.running_at_restart.push(running);
                let mode = if rng.bool() { "fast" } else { "immediate" };
                let down = Duration::from_millis(rng.u64(300..=1500));
                let c = net.cluster.clone();
                tokio::task::spawn_blocking(move || {
                    c.stop(mode).expect("stop PostgreSQL");
                    std::thread::sleep(down);
                    c.start_server().expect("start PostgreSQL again");
                })
                .await
                .expect("restart");
                tally.restarts += 1;
            }
            Event::HalfOpen => {
                let net = net.as_ref().expect("a PostgreSQL campaign");
                // Go half-open only while the workers behind the proxy hold tasks.
                let proxied: Vec<u32> = fleet.pids()[..size.proxied].to_vec();
                let start = Instant::now();
                let held = loop {
                    let h = held_by(&q, &proxied).await;
                    if h > 0 || start.elapsed() > Duration::from_secs(30) {
                        break h;
                    }
                    feed(&q, &mut n, size.feed, &mut rng).await;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                };
                net.proxy.half_open();
                assert!(held > 0, "no task in flight behind the proxy");
                tally.held_by_proxied_at_half_open.push(held);
                // Longer than a lease: the proxied workers lose theirs.
                let f = 1.2 + rng.f64() * 1.3;
                feed_for(&q, size.lease.mul_f64(f), &mut n, size, &mut rng).await;
                if rng.bool() {
                    net.proxy.resume();
                } else {
                    net.proxy.cut();
                }
                tally.half_opens += 1;
            }
        }
    }

    // No more faults: everything must end.
    let start = Instant::now();
    loop {
        fleet.assert_alive();
        let done = count(&q, "crash", TaskState::Done).await;
        let dead = count(&q, "crash", TaskState::Dead).await;
        let run_state = q.iteration(run).await.map(|it| it.state).ok();
        if let (Some(d), Some(x), Some(s)) = (done, dead, run_state) {
            if d + x == n && s != RunState::Running {
                break;
            }
        }
        assert!(
            start.elapsed() < size.finish_within,
            "{label}: not finished {:?} after the last fault: done {done:?} dead {dead:?} of {n}, run {run_state:?}, walk log {}",
            size.finish_within,
            walk_progress(&walk_log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed = fleet.killed.clone();
    tokio::task::spawn_blocking(move || fleet.stop())
        .await
        .expect("stop the workers");

    // The checks, exactly.
    let ids = plain_tasks(&q, n).await;
    let plain = check_effects(&q, &ids, &read_effects(&effects_log), &killed).await;
    let entities: Vec<i64> = (1..=size.entities).collect();
    let walk = check_walk(&q, run, &entities, &read_walk(&walk_log), &killed).await;
    println!(
        "campaign {label} seed={seed}: kills {} ({} of the step holder, {} mid-iteration), tasks {} (done {}, dead {}), duplicates {} (kill {}, lease loss {}), lost {}; entities {} in {} steps, skipped {}, entity duplicates {} (kill {}, lease loss {}); restarts {} (tasks running {:?}), half-open {} (tasks held behind the proxy {:?}); {:.1} s",
        tally.kills,
        tally.kills_of_step_holder,
        tally.kills_mid_iteration,
        plain.tasks,
        plain.done,
        plain.dead,
        plain.duplicates,
        plain.cut_by_kill,
        plain.cut_by_lease_loss,
        plain.lost,
        walk.entities,
        walk.steps,
        walk.skipped,
        walk.duplicates,
        walk.cut_by_kill,
        walk.cut_by_lease_loss,
        tally.restarts,
        tally.running_at_restart,
        tally.half_opens,
        tally.held_by_proxied_at_half_open,
        began.elapsed().as_secs_f64(),
    );
    assert!(plain.problems.is_empty(), "{label}: {:#?}", plain.problems);
    assert!(walk.problems.is_empty(), "{label}: {:#?}", walk.problems);
    assert_eq!(plain.lost, 0);
    assert_eq!(walk.skipped, 0, "the run skipped entities");
    assert_eq!(tally.kills, size.kills);
    assert!(
        tally.kills_mid_iteration > 0 || size.kills == 0,
        "no kill hit the run"
    );
}

/// The two campaigns run one after the other: each loads the machine on its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_crash_campaign() {
    let _one = ONE_AT_A_TIME.lock().await;
    let size = Size::from_env();
    let seed = seed();
    eprintln!(
        "crash campaign (sqlite) seed {seed}: rerun with TASKQ_CAMPAIGN_SEED={seed}; {size:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    campaign("sqlite", &url, None, &size, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_campaign() {
    let _one = ONE_AT_A_TIME.lock().await;
    let size = Size::from_env();
    let seed = seed();
    eprintln!(
        "crash campaign (postgres) seed {seed}: rerun with TASKQ_CAMPAIGN_SEED={seed}; {size:?}"
    );
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("start the cluster")
        .unwrap_or_else(|e| panic!("a private PostgreSQL cluster for the campaign: {e}"));
    let url = format!("{}?schema=campaign", cluster.url());
    let proxy = Proxy::start(target_of(&url))
        .await
        .expect("start the proxy");
    let net = Network {
        cluster: Arc::new(cluster),
        proxy,
    };
    campaign("postgres", &url, Some(net), &size, seed).await;
}
