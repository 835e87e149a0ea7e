//! The web console end to end, in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, with `fantoccini`), over a console served on a real socket in
//! front of a SQLite file while a worker runs.
//!
//! A person signs in with user and password, opens the dead tasks, opens the dead one, asks
//! to retry it, and sees it done; then on the Schedules page runs a schedule's task now
//! and pauses the schedule. On the way the browser saves screenshots of the queues page,
//! of an iterative run in progress and of the schedules under `target/console-screenshots/`.
//!
//! Needs Chromium and chromedriver (Debian's `chromium` and `chromium-driver`; the test
//! command installs them through `.ci/chromium.sh`). `TASKQ_TEST_CHROMEDRIVER` names the
//! driver (default: `chromedriver` on PATH) and `TASKQ_TEST_CHROMIUM` the browser (default:
//! `chromium`). Without them the test fails: it never skips.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde::{Deserialize, Serialize};
use taskq_runtime::console::{self, ConsoleConfig};
use taskq_runtime::{iterative_task, task, Model, Queue, TaskError, TaskQuery, TaskState, Worker};
use taskq_tests::wait_until;

/// Whether `send_report` fails (for good) at its next attempt.
static REPORTS_FAIL: AtomicBool = AtomicBool::new(true);

/// Fails while [`REPORTS_FAIL`] is set (retryably, with one attempt: it ends dead), then
/// succeeds.
#[task(queue = "reports", max_attempts = 1)]
async fn send_report(month: String) -> Result<(), TaskError> {
    if REPORTS_FAIL.load(Ordering::SeqCst) {
        return Err(TaskError::retry(format!(
            "the report server refused {month}"
        )));
    }
    Ok(())
}

/// Numbers 0..n, the iterative run's model.
struct Numbers(u64);
/// One number.
struct Number(u64);
/// Which numbers (all).
#[derive(Serialize, Deserialize)]
struct All;

impl Model for Number {
    type Key = u64;
    type Filter = All;
    type Source = Arc<Numbers>;

    fn key(&self) -> u64 {
        self.0
    }

    async fn batch(
        src: &Arc<Numbers>,
        _: &All,
        after: Option<&u64>,
        limit: usize,
    ) -> Result<Vec<Number>, TaskError> {
        let start = after.map(|k| k + 1).unwrap_or(0);
        Ok((start..src.0).take(limit).map(Number).collect())
    }

    async fn count(src: &Arc<Numbers>, _: &All) -> Result<Option<u64>, TaskError> {
        Ok(Some(src.0))
    }
}

/// Walks the numbers slowly, so that the run is in progress when the browser looks.
#[iterative_task(model = Number, batch_size = 100, queue = "numbers")]
async fn walk_numbers(numbers: Vec<Number>) -> Result<(), TaskError> {
    let _ = numbers;
    tokio::time::sleep(Duration::from_millis(150)).await;
    Ok(())
}

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts chromedriver and a headless Chromium session through it.
async fn browser() -> (Driver, Client) {
    let driver_bin =
        std::env::var("TASKQ_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let chromium = std::env::var("TASKQ_TEST_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let chromium = which(&chromium).unwrap_or_else(|| {
        panic!("no Chromium at `{chromium}`: install Debian's `chromium` (bash .ci/chromium.sh) or set TASKQ_TEST_CHROMIUM")
    });
    let port = free_port();
    let child = Command::new(&driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromedriver `{driver_bin}` ({e}): install Debian's `chromium-driver` (bash .ci/chromium.sh) or set TASKQ_TEST_CHROMEDRIVER")
        });
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    // chromedriver takes a moment to listen.
    let mut last = String::new();
    for _ in 0..100 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no WebDriver session through chromedriver at {url}: {last}");
}

fn which(bin: &str) -> Option<String> {
    if bin.contains('/') {
        return std::path::Path::new(bin).exists().then(|| bin.to_string());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.exists())
            .map(|p| p.display().to_string())
    })
}

/// Where the screenshots go: `target/console-screenshots/` of the workspace.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}

async fn save_screenshot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{name}: not a PNG of a page ({} bytes)",
        png.len()
    );
    let path = screenshot_dir().join(name);
    std::fs::write(&path, png).expect("write the screenshot");
    path
}

/// Clicks the element with this id.
async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

/// Fills the sign-in form (clearing what was typed before) and sends it.
async fn sign_in(c: &Client, user: &str, password: &str) {
    for (id, text) in [("user", user), ("password", password)] {
        let field = c
            .find(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"));
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }
    click(c, "sign-in-button").await;
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.expect("text"),
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string());
            let page = c.source().await.unwrap_or_default();
            panic!("no `{css}` on {url:?}: {e}\n{page}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_find_a_dead_task_retry_it_and_see_it_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("console.db").display());
    let queue = Queue::open(&url).await.expect("open the store");
    let worker = Worker::builder(queue.store().clone())
        .queues(["reports", "numbers"])
        .state(Arc::new(Numbers(10_000)))
        .build()
        .expect("worker")
        .spawn();

    // A dead task, with markup in its arguments (the page must show it as text).
    let dead = send_report::start(&queue, "<script>document.title='owned'</script>".into())
        .await
        .expect("start");
    wait_until("the report to die", Duration::from_secs(30), || async {
        queue.task(dead).await.ok().flatten().map(|t| t.info.state) == Some(TaskState::Dead)
    })
    .await;
    // A long iterative run, in progress while the browser looks.
    let run = walk_numbers::start(&queue, All)
        .await
        .expect("start the run");
    wait_until(
        "the run to make progress",
        Duration::from_secs(30),
        || async {
            queue
                .iteration(run)
                .await
                .is_ok_and(|i| i.processed >= 2_500)
        },
    )
    .await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(console::serve_on(
        queue.clone(),
        ConsoleConfig::password("operator", "correct horse battery staple"),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let base = format!("http://{addr}");

    let (_driver, c) = browser().await;
    // Signed out, every page is the sign-in form.
    c.goto(&format!("{base}/tasks?state=dead"))
        .await
        .expect("goto");
    c.find(Locator::Id("sign-in"))
        .await
        .expect("the sign-in form");
    // A wrong password is refused.
    sign_in(&c, "operator", "wrong").await;
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("sign-in-error"))
        .await
        .expect("a refused sign-in says so");
    // The right one: back to the page asked for, signed in (its filters form shows).
    sign_in(&c, "operator", "correct horse battery staple").await;
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("filters"))
        .await
        .expect("signed in, on the dead tasks");

    // The queues page, with its chart.
    c.goto(&format!("{base}/")).await.expect("goto");
    c.find(Locator::Id("queues"))
        .await
        .expect("the queues table");
    let queues_png = save_screenshot(&c, "queues.png").await;

    // The run in progress.
    c.goto(&format!("{base}/runs")).await.expect("goto");
    let row = format!("#run-{run}");
    c.find(Locator::Css(&row)).await.expect("the run's row");
    let run_png = save_screenshot(&c, "iteration-run.png").await;

    // The dead tasks: ours is there, its markup shown as text.
    c.goto(&format!("{base}/tasks?state=dead"))
        .await
        .expect("goto");
    let dead_row = format!("#task-{dead}");
    assert_eq!(
        c.find(Locator::Css(&dead_row))
            .await
            .expect("the dead task's row")
            .attr("data-state")
            .await
            .expect("attr")
            .as_deref(),
        Some("dead")
    );
    assert_ne!(
        c.title().await.expect("title"),
        "owned",
        "a task's arguments ran as script"
    );
    // Open it, and retry it.
    c.find(Locator::Css(&format!("{dead_row} a")))
        .await
        .expect("the link to the task")
        .click()
        .await
        .expect("click");
    assert_eq!(text_of(&c, "#task-state").await, "dead");
    assert!(text_of(&c, "#task-args")
        .await
        .contains("<script>document.title='owned'</script>"));
    REPORTS_FAIL.store(false, Ordering::SeqCst);
    click(&c, "retry-button").await;
    // Done, as the page shows it (reloaded until then).
    let page = format!("{base}/tasks/{dead}");
    let mut seen = String::new();
    for _ in 0..150 {
        c.goto(&page).await.expect("goto");
        seen = text_of(&c, "#task-state").await;
        if seen == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, "done", "the retried task as the console shows it");
    assert_eq!(
        queue.task(dead).await.expect("task").map(|t| t.info.state),
        Some(TaskState::Done)
    );
    assert_ne!(c.title().await.expect("title"), "owned");

    // A schedule: its row on the Schedules page, Run now starts its task (with its stored
    // arguments) at once, Pause pauses it.
    send_report::schedule("monthly-report", "0 9 1 * *", "2026-12".into())
        .timezone("Europe/Paris")
        .register(&queue)
        .await
        .expect("register the schedule");
    c.goto(&format!("{base}/schedules")).await.expect("goto");
    let row = r#"tr[data-schedule="monthly-report"]"#;
    assert!(text_of(&c, row).await.contains("Europe/Paris"));
    let schedules_png = save_screenshot(&c, "schedules.png").await;
    c.find(Locator::Css(&format!("{row} button.schedule-run-button")))
        .await
        .expect("the Run now button")
        .click()
        .await
        .expect("click");
    wait_until(
        "the schedule's task to run",
        Duration::from_secs(30),
        || async {
            let done = TaskQuery {
                task: Some(send_report::NAME.into()),
                state: Some(TaskState::Done),
                args_contains: Some("2026-12".into()),
                ..TaskQuery::default()
            };
            queue.list(&done).await.is_ok_and(|l| l.len() == 1)
        },
    )
    .await;
    c.goto(&format!("{base}/schedules")).await.expect("goto");
    c.find(Locator::Css(&format!("{row} button.schedule-pause-button")))
        .await
        .expect("the Pause button")
        .click()
        .await
        .expect("click");
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(&format!("{row}.schedule-paused")))
        .await
        .expect("the row shows the schedule paused");
    assert!(queue
        .schedules()
        .await
        .expect("schedules")
        .iter()
        .any(|s| s.name == "monthly-report" && s.paused));

    c.close().await.expect("close the browser");
    let _ = stop.send(());
    server
        .await
        .expect("the server task")
        .expect("the server ran");
    // The run may have ended meanwhile (on a fast machine); cancel it if not.
    let _ = queue.cancel_iteration(run).await;
    worker.shutdown().await.expect("shutdown");
    eprintln!(
        "screenshots: {}, {} and {}",
        queues_png.display(),
        run_png.display(),
        schedules_png.display()
    );
}
