//! Models over a real SQLite table for the iterative-task tests, and the iterative task the
//! crash-test worker process (`taskq-iter-worker`) serves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use taskq_runtime::{iterative_task, Context, Model, TaskError};

/// A SQLite database with an `items (id, grp)` table. Cheap to clone; the connection is
/// behind a mutex and the model's queries run on tokio's blocking pool.
#[derive(Clone, Debug)]
pub struct ItemDb {
    conn: Arc<Mutex<Connection>>,
}

/// One row of `items`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Primary key, the cursor.
    pub id: i64,
    /// A group, to filter on.
    pub grp: String,
}

/// Which items a run walks: one group, or all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ItemFilter {
    /// Only this group; `None` for every item.
    pub grp: Option<String>,
}

impl ItemDb {
    /// Opens (creating) the database at `path` with its table.
    pub fn open(path: impl AsRef<Path>) -> ItemDb {
        let conn = Connection::open(path).expect("open the items database");
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .expect("WAL");
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, grp TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS items_grp ON items (grp, id);",
        )
        .expect("create items");
        ItemDb {
            conn: Arc::new(Mutex::new(conn)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> T {
        let mut c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut c).expect("items database")
    }

    /// Inserts rows (one transaction).
    pub fn insert<'a>(&self, rows: impl IntoIterator<Item = (i64, &'a str)>) {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare("INSERT INTO items (id, grp) VALUES (?1, ?2)")?;
                for (id, grp) in rows {
                    st.execute(params![id, grp])?;
                }
            }
            tx.commit()
        })
    }

    /// Deletes one row.
    pub fn delete(&self, id: i64) {
        self.with(|c| {
            c.execute("DELETE FROM items WHERE id = ?1", [id])
                .map(|_| ())
        })
    }

    /// The ids of a group (or all), ascending.
    pub fn ids(&self, grp: Option<&str>) -> Vec<i64> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT id FROM items WHERE (?1 IS NULL OR grp = ?1) ORDER BY id")?;
            let rows = st.query_map([grp], |r| r.get(0))?;
            rows.collect()
        })
    }
}

impl Model for Item {
    type Key = i64;
    type Filter = ItemFilter;
    type Source = ItemDb;

    fn key(&self) -> i64 {
        self.id
    }

    async fn batch(
        db: &ItemDb,
        f: &ItemFilter,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<Item>, TaskError> {
        let conn = db.conn.clone();
        let grp = f.grp.clone();
        let after = after.copied().unwrap_or(i64::MIN);
        tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            let mut st = c.prepare_cached(
                "SELECT id, grp FROM items WHERE (?1 IS NULL OR grp = ?1) AND id > ?2
                 ORDER BY id LIMIT ?3",
            )?;
            let rows = st.query_map(params![grp, after, limit as i64], |r| {
                Ok(Item {
                    id: r.get(0)?,
                    grp: r.get(1)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<Item>>>()
        })
        .await?
        .map_err(TaskError::from)
    }

    async fn count(db: &ItemDb, f: &ItemFilter) -> Result<Option<u64>, TaskError> {
        let conn = db.conn.clone();
        let grp = f.grp.clone();
        let n = tokio::task::spawn_blocking(move || {
            let c = conn.lock().unwrap_or_else(|p| p.into_inner());
            c.query_row(
                "SELECT COUNT(*) FROM items WHERE (?1 IS NULL OR grp = ?1)",
                [grp],
                |r| r.get::<_, i64>(0),
            )
        })
        .await??;
        Ok(Some(n as u64))
    }
}

/// Where [`crash_walk`] records what it processed: one id per line, one `write` per id, so
/// a kill mid-batch leaves the part of the batch that was done.
#[derive(Clone, Debug)]
pub struct IterLog(pub PathBuf);

/// Batch size of [`crash_walk`].
pub const CRASH_BATCH: usize = 200;

/// The iterative task of the crash test: records each item's id, then pretends to work
/// for `work_ms` per batch.
#[iterative_task(
    model = Item,
    batch_size = 200,
    queue = "crash-iter",
    timeout = "10s",
    min_backoff = "50ms",
    max_backoff = "500ms"
)]
pub async fn crash_walk(ctx: Context, items: Vec<Item>, work_ms: u64) -> Result<(), TaskError> {
    let log = ctx.state::<IterLog>()?.0.clone();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    for (i, item) in items.iter().enumerate() {
        f.write_all(format!("{}\n", item.id).as_bytes())?;
        if i == items.len() / 2 {
            // Half-way through the batch: a kill now leaves a partial batch behind.
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
        }
    }
    Ok(())
}

/// The ids an [`IterLog`] holds, in the order they were written.
pub fn read_iter_log(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Entities of an in-memory catalogue whose API pages at most [`Catalogue::page_cap`]
/// entities per call, whatever the `limit` asked for (a capped REST API, say): the model
/// of issue 7, item 8.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Its key, the cursor.
    pub id: i64,
}

/// The catalogue behind [`Listing`]: ascending ids, and the most one call returns.
#[derive(Debug)]
pub struct Catalogue {
    /// Every id, ascending.
    pub ids: Vec<i64>,
    /// The most entities one `batch` call returns.
    pub page_cap: usize,
    /// The `limit` of every `batch` call, in order.
    pub limits: Mutex<Vec<usize>>,
}

impl Catalogue {
    /// Ids `1..=n`, paged at most `page_cap` at a time.
    pub fn new(n: i64, page_cap: usize) -> Catalogue {
        Catalogue {
            ids: (1..=n).collect(),
            page_cap,
            limits: Mutex::new(Vec::new()),
        }
    }
}

/// Every listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AllListings;

impl Model for Listing {
    type Key = i64;
    type Filter = AllListings;
    type Source = Arc<Catalogue>;

    fn key(&self) -> i64 {
        self.id
    }

    async fn batch(
        source: &Arc<Catalogue>,
        _f: &AllListings,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<Listing>, TaskError> {
        source
            .limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(limit);
        Ok(source
            .ids
            .iter()
            .filter(|id| after.is_none_or(|a| *id > a))
            .take(limit.min(source.page_cap))
            .map(|id| Listing { id: *id })
            .collect())
    }
}

/// An entity of a [`Gate`]: the cancel tests walk these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Its key, the cursor.
    pub id: i64,
}

/// Every ticket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AllTickets;

/// Tickets `1..=n` whose reads the test can hold: the `hold`-th call of `batch` (counted
/// from 1) waits, after telling `entered`, until `release` gets a permit. The task walking
/// them counts its calls in `calls`, so a test can cancel a run while one of its steps
/// sits between its claim (or a checkpoint) and the next call of the task's function.
#[derive(Debug)]
pub struct Gate {
    /// Tickets `1..=n`.
    pub n: i64,
    /// Which `batch` call waits (0: none).
    pub hold: usize,
    /// `batch` calls so far.
    pub reads: std::sync::atomic::AtomicUsize,
    /// Gets a permit when the held call starts waiting.
    pub entered: tokio::sync::Semaphore,
    /// The held call goes on once this has a permit.
    pub release: tokio::sync::Semaphore,
    /// Calls of the task's function (set by the task).
    pub calls: std::sync::atomic::AtomicUsize,
}

impl Gate {
    /// Tickets `1..=n`, the `hold`-th read held (0: none).
    pub fn new(n: i64, hold: usize) -> Arc<Gate> {
        Arc::new(Gate {
            n,
            hold,
            reads: Default::default(),
            entered: tokio::sync::Semaphore::new(0),
            release: tokio::sync::Semaphore::new(0),
            calls: Default::default(),
        })
    }

    /// Waits until the held read has started (fails the test after `limit`).
    pub async fn wait_entered(&self, limit: std::time::Duration) {
        match tokio::time::timeout(limit, self.entered.acquire()).await {
            Ok(Ok(p)) => p.forget(),
            _ => panic!("the held read did not start within {limit:?}"),
        }
    }

    /// How many times the task's function was called.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Model for Ticket {
    type Key = i64;
    type Filter = AllTickets;
    type Source = Arc<Gate>;

    fn key(&self) -> i64 {
        self.id
    }

    async fn batch(
        gate: &Arc<Gate>,
        _f: &AllTickets,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<Ticket>, TaskError> {
        let k = gate.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if k == gate.hold {
            gate.entered.add_permits(1);
            if let Ok(p) = gate.release.acquire().await {
                p.forget();
            }
        }
        let from = after.map_or(1, |a| a + 1);
        Ok((from..=gate.n)
            .take(limit)
            .map(|id| Ticket { id })
            .collect())
    }
}
