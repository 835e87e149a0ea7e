//! The peers of `taskq-bench`: the same no-op workloads, run on other Rust task queues and
//! on the raw primitives taskq is built on, against the same PostgreSQL server and SQLite
//! directory, printing one JSON line per workload per system in the shape of
//! `taskq-bench`'s lines (plus a `system` field) so that one script joins them.
//!
//! ```text
//! taskq-peers [--workloads throughput,claim] [--systems tokio-mpsc,rusqlite,apalis-sqlite,...]
//!     [--tasks N] [--one-by-one M] [--apalis-sqlite-tasks N] [--data DIR] [--postgres URL]
//! ```
//!
//! - `throughput`: 2N no-op tasks are stored, then processed by a worker; `processed_per_s`
//!   counts from the worker's start until the last outcome is committed (seen by another
//!   connection). Queue libraries (apalis, sqlxmq) start M of them one by one and the rest
//!   1,000 per call, and run with 64 tasks in flight and batches of 100; the raw loops
//!   insert all 2N with a plain batched INSERT (1,000 rows per transaction) and process
//!   them in one sequential loop; tokio mpsc queues 2N messages (at least 2,000,000) and
//!   drains them with 8 consumers (and again running each message as a spawned task).
//! - `claim`: the raw claim loop beside taskq's `claim` workload: 50,000 rows inserted
//!   1,000 per transaction, claimed 100 per transaction until none is left, then marked
//!   done 100 per transaction; rows/s of each.
//!
//! Not a test: run it in release beside `taskq-bench` and compare ratios from one sitting.

mod apalis_peers;
mod memory;
mod postgres_plain;
mod sqlite_plain;
mod sqlxmq_peer;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The boxed error every workload returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The payload every no-op task carries: the one `taskq-bench`'s no-op task stores.
pub const PAYLOAD: &str = "{\"started_ms\":0}";

/// Tasks per bulk call or per insert transaction.
pub const CHUNK: usize = 1000;

/// Tasks claimed per call or per transaction.
pub const PER_CALL: usize = 100;

/// Tasks in flight in a queue library's worker (as `taskq-bench`'s worker).
pub const CONCURRENCY: usize = 64;

/// How often the bench looks whether every task is done (as `taskq-bench`'s `wait_done`).
pub const POLL: Duration = Duration::from_millis(5);

/// The longest a worker may take to process one workload before the run fails.
pub const TIMEOUT: Duration = Duration::from_secs(600);

/// What one run is asked to do.
pub struct Args {
    /// The workloads, in order.
    pub workloads: Vec<String>,
    /// The systems, in order (each runs the workloads it has).
    pub systems: Vec<String>,
    /// N: tasks per start mode; 2N are processed.
    pub tasks: u64,
    /// M: tasks a queue library starts one by one (out of the 2N).
    pub one_by_one: u64,
    /// N for apalis on SQLite, whose acknowledgement slows down with the table's size
    /// (see `apalis_peers`): a full-size run would take a quarter of an hour.
    pub apalis_sqlite_tasks: u64,
    /// The SQLite directory.
    pub data: PathBuf,
    /// The PostgreSQL database URL, if any.
    pub postgres: Option<String>,
}

const USAGE: &str = "usage: taskq-peers [--workloads throughput,claim] [--systems LIST] [--tasks N] [--one-by-one M] [--apalis-sqlite-tasks N] [--data DIR] [--postgres URL]";

const WORKLOADS: [&str; 2] = ["throughput", "claim"];

/// Every system, in the order it runs. Each name says what it is: the memory reference,
/// the SQLite ones, then the PostgreSQL ones.
const SYSTEMS: [&str; 8] = [
    "tokio-mpsc",
    "rusqlite",
    "apalis-sqlite",
    "tokio-postgres",
    "apalis-postgres",
    "sqlxmq",
    // Aliases kept apart so that a run can pick only the one-at-a-time loop.
    "rusqlite-claim1",
    "rusqlite-claim100",
];

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        workloads: WORKLOADS.iter().map(|w| w.to_string()).collect(),
        systems: SYSTEMS[..6].iter().map(|s| s.to_string()).collect(),
        tasks: 20_000,
        one_by_one: 1_000,
        apalis_sqlite_tasks: 2_000,
        data: std::env::temp_dir().join("taskq-bench"),
        postgres: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it.next().ok_or_else(|| format!("`{flag}` needs a value"))?;
        let num = |v: &str| {
            v.replace('_', "")
                .parse::<u64>()
                .ok()
                .ok_or_else(|| format!("{flag}: `{v}` is not a whole number"))
        };
        let list = |v: &str, known: &[&str]| -> Result<Vec<String>, String> {
            let l: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
            match l.iter().find(|x| !known.contains(&x.as_str())) {
                Some(x) => Err(format!(
                    "{flag}: unknown `{x}` (known: {})",
                    known.join(",")
                )),
                None => Ok(l),
            }
        };
        match flag.as_str() {
            "--workloads" => a.workloads = list(&v, &WORKLOADS)?,
            "--systems" => a.systems = list(&v, &SYSTEMS)?,
            "--tasks" => a.tasks = num(&v)?.max(1),
            "--one-by-one" => a.one_by_one = num(&v)?,
            "--apalis-sqlite-tasks" => a.apalis_sqlite_tasks = num(&v)?.max(1),
            "--data" => a.data = v.into(),
            "--postgres" => a.postgres = Some(v),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    a.one_by_one = a.one_by_one.min(2 * a.tasks);
    Ok(a)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("taskq-peers: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args).await {
        eprintln!("taskq-peers: {e}");
        std::process::exit(1);
    }
}

async fn run(a: &Args) -> Result<(), BoxError> {
    std::fs::create_dir_all(&a.data)?;
    let has = |s: &str| a.systems.iter().any(|x| x == s);
    let pg = |system: &str| {
        a.postgres
            .as_deref()
            .ok_or_else(|| format!("{system} needs --postgres URL"))
    };
    for w in &a.workloads {
        match w.as_str() {
            "throughput" => {
                if has("tokio-mpsc") {
                    memory::throughput(a.tasks, false).await?;
                    memory::throughput(a.tasks, true).await?;
                }
                if has("rusqlite") || has("rusqlite-claim100") {
                    sqlite_plain::throughput(&a.data, a.tasks, PER_CALL).await?;
                }
                if has("rusqlite") || has("rusqlite-claim1") {
                    sqlite_plain::throughput(&a.data, a.tasks, 1).await?;
                }
                if has("apalis-sqlite") {
                    let n = a.tasks.min(a.apalis_sqlite_tasks);
                    apalis_peers::sqlite(&a.data, n, a.one_by_one.min(2 * n)).await?;
                }
                if has("tokio-postgres") {
                    postgres_plain::throughput(pg("tokio-postgres")?, a.tasks).await?;
                }
                if has("apalis-postgres") {
                    apalis_peers::postgres(pg("apalis-postgres")?, a.tasks, a.one_by_one).await?;
                }
                if has("sqlxmq") {
                    sqlxmq_peer::throughput(pg("sqlxmq")?, a.tasks, a.one_by_one).await?;
                }
            }
            "claim" => {
                if has("rusqlite") || has("rusqlite-claim100") {
                    sqlite_plain::claim(&a.data).await?;
                }
                if has("tokio-postgres") {
                    postgres_plain::claim(pg("tokio-postgres")?).await?;
                }
            }
            _ => unreachable!("checked by parse_args"),
        }
    }
    Ok(())
}

/// Removes an SQLite database and its WAL files.
pub fn remove_db(path: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}

/// Connects to PostgreSQL with tokio-postgres, driving the connection in the background.
pub async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, BoxError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Waits until `done()` reports at least `n`, polling every [`POLL`]; fails after
/// [`TIMEOUT`] with how far it got.
pub async fn wait_until<F, Fut>(what: &str, n: u64, mut done: F) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, BoxError>>,
{
    let t = Instant::now();
    loop {
        let d = done().await?;
        if d >= n {
            return Ok(());
        }
        if t.elapsed() > TIMEOUT {
            return Err(format!("{what}: only {d} of {n} tasks done after {TIMEOUT:?}").into());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `n` per `secs`, rounded to a whole number.
pub fn rate(n: u64, secs: f64) -> f64 {
    (n as f64 / secs).round()
}

/// Prints one JSON line.
pub fn emit(v: serde_json::Value) {
    println!("{v}");
}
