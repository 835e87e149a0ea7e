//! A `Model` over a PostgreSQL table: write one outbox row per student of a program, in
//! the background, in batches of 500, with the task store in the same database.
//!
//! ```text
//! cargo run --release -p taskq-examples --bin pg_students -- [--url postgres://USER@HOST/DB]
//!     [--students N] [--program NAME]
//! ```
//!
//! The URL defaults to `TASKQ_TEST_POSTGRES_URL`, then `DATABASE_URL`. A `?schema=NAME` in
//! it puts both the app's tables and taskq's in that schema (created if missing); without
//! it everything goes to `public`.
//!
//! It creates (or reuses, when it already holds N rows) a table
//! `students(id bigserial primary key, program text, email text)` with an index on
//! `(program, id)`, and an `outbox(run, student, email, subject)` table whose primary key
//! `(run, student)` makes a redone batch write nothing twice. `Student` implements
//! [`Model`] with keyset pages (`WHERE program = $1 AND id > $2 ORDER BY id LIMIT $3`) and
//! a count for the progress percentage; its `Source` is [`PgDb`], a small set of
//! `tokio_postgres` connections given to the worker as app state.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taskq_runtime::store::postgres::PostgresStore;
use taskq_runtime::store::RunState;
use taskq_runtime::tokio_postgres::{self, Client, NoTls};
use taskq_runtime::{iterative_task, Context, Model, Queue, Store, TaskError, Worker};

/// The app's database: a few `tokio_postgres` connections, used round-robin, each
/// reconnected when it breaks. Cheap to clone. (A real app would use its own pool:
/// deadpool-postgres, bb8, or sqlx's.)
#[derive(Clone)]
struct PgDb(Arc<PgDbInner>);

struct PgDbInner {
    config: tokio_postgres::Config,
    /// `SET search_path` run on every new connection, when the URL named a schema.
    setup: Option<String>,
    conns: Vec<tokio::sync::Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
}

impl PgDb {
    /// Connects `size` connections to `url`; a `schema=NAME` query option becomes the
    /// connections' `search_path` (and the schema is created when missing).
    async fn connect(url: &str, size: usize) -> Result<PgDb, BoxError> {
        let (driver_url, schema) = split_schema(url);
        let config: tokio_postgres::Config = driver_url
            .parse()
            .map_err(|e| format!("bad PostgreSQL URL `{url}`: {e}"))?;
        let setup = schema
            .map(|s| format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET search_path TO \"{s}\""));
        let db = PgDb(Arc::new(PgDbInner {
            config,
            setup,
            conns: (0..size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        }));
        db.client().await?; // fail early with a clear message
        Ok(db)
    }

    /// A live connection (the next one, round-robin).
    async fn client(&self) -> Result<Arc<Client>, tokio_postgres::Error> {
        let i = self.0.next.fetch_add(1, Ordering::Relaxed) % self.0.conns.len();
        let mut slot = self.0.conns[i].lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let (client, connection) = self.0.config.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        if let Some(setup) = &self.0.setup {
            client.batch_execute(setup).await?;
        }
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Creates the tables, and fills `students` with `n` rows unless it already has
    /// exactly that many. Returns whether it (re)created the rows.
    async fn ensure_students(&self, n: u64) -> Result<bool, BoxError> {
        let c = self.client().await?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS students (
                 id bigserial PRIMARY KEY,
                 program text NOT NULL,
                 email text NOT NULL
             );
             CREATE INDEX IF NOT EXISTS students_program_id ON students (program, id);
             CREATE TABLE IF NOT EXISTS outbox (
                 run bigint NOT NULL,
                 student bigint NOT NULL,
                 email text NOT NULL,
                 subject text NOT NULL,
                 queued_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (run, student)
             );",
        )
        .await?;
        let have: i64 = c
            .query_one("SELECT count(*) FROM students", &[])
            .await?
            .get(0);
        if have as u64 == n {
            return Ok(false);
        }
        // Three programs: 60 % gsoc2009, 25 % gsoc2010, 15 % ghop2009.
        c.batch_execute("TRUNCATE students RESTART IDENTITY")
            .await?;
        c.execute(
            "INSERT INTO students (program, email)
             SELECT CASE WHEN g % 20 < 12 THEN 'gsoc2009'
                         WHEN g % 20 < 17 THEN 'gsoc2010'
                         ELSE 'ghop2009' END,
                    'student' || g || '@example.org'
             FROM generate_series(1, $1::int8) AS g",
            &[&(n as i64)],
        )
        .await?;
        c.batch_execute("ANALYZE students").await?;
        Ok(true)
    }
}

/// Splits a taskq store URL into the driver's URL and the `schema` option, if any.
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| match p.split_once('=') {
            Some(("schema" | "taskq_schema", v)) => {
                schema = Some(v.to_string());
                false
            }
            Some(("pool_size", _)) => false,
            _ => !p.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_string(), schema)
    } else {
        (format!("{base}?{}", rest.join("&")), schema)
    }
}

/// One row of `students`.
struct Student {
    id: i64,
    email: String,
}

/// Which students a run walks through.
#[derive(Serialize, Deserialize)]
struct ByProgram {
    program: String,
}

impl Model for Student {
    type Key = i64;
    type Filter = ByProgram;
    type Source = PgDb;

    fn key(&self) -> i64 {
        self.id
    }

    async fn batch(
        db: &PgDb,
        f: &ByProgram,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<Student>, TaskError> {
        let c = db.client().await?;
        let rows = c
            .query(
                "SELECT id, email FROM students
                 WHERE program = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[
                    &f.program,
                    &after.copied().unwrap_or(i64::MIN),
                    &(limit as i64),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Student {
                id: r.get(0),
                email: r.get(1),
            })
            .collect())
    }

    async fn count(db: &PgDb, f: &ByProgram) -> Result<Option<u64>, TaskError> {
        let c = db.client().await?;
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM students WHERE program = $1",
                &[&f.program],
            )
            .await?
            .get(0);
        Ok(Some(n as u64))
    }
}

/// Rows the outbox already held when a (redone) batch tried to write them again.
#[derive(Default)]
struct Redone(AtomicU64);

/// Queues one mail per student of the batch: one outbox row keyed by (run, student), so a
/// batch redone after a failure or a worker crash writes nothing twice.
#[iterative_task(model = Student, batch_size = 500, queue = "outbox", timeout = "10s")]
async fn queue_mail(
    ctx: Context,
    students: Vec<Student>,
    subject: String,
) -> Result<(), TaskError> {
    let db = ctx.state::<PgDb>()?;
    let run = ctx.run().unwrap_or(ctx.id()).0;
    let ids: Vec<i64> = students.iter().map(|s| s.id).collect();
    let emails: Vec<&str> = students.iter().map(|s| s.email.as_str()).collect();
    let c = db.client().await?;
    let inserted = c
        .execute(
            "INSERT INTO outbox (run, student, email, subject)
             SELECT $1, s.id, s.email, $4 FROM unnest($2::int8[], $3::text[]) AS s(id, email)
             ON CONFLICT (run, student) DO NOTHING",
            &[&run, &ids, &emails, &subject],
        )
        .await?;
    let redone = ids.len() as u64 - inserted;
    if redone > 0 {
        ctx.state::<Arc<Redone>>()?
            .0
            .fetch_add(redone, Ordering::Relaxed);
    }
    Ok(())
}

const USAGE: &str = "\
usage: pg_students [--url postgres://USER@HOST/DB] [--students N] [--program NAME]

Fills a PostgreSQL `students` table (reused when it holds N rows), then queues one outbox
row per student of a program with the iterative task `queue_mail` (a Model over the
table, batches of 500), with taskq's own tables in the same database.

options:
  --url URL        the database (default: $TASKQ_TEST_POSTGRES_URL, then $DATABASE_URL);
                   `?schema=NAME` keeps the app's and taskq's tables in that schema
  --students N     rows in `students` (default 100000)
  --program NAME   gsoc2009 (60 % of students, the default), gsoc2010 or ghop2009
  -h, --help       this help";

struct Args {
    url: String,
    students: u64,
    program: String,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut url = None;
    let mut students = 100_000u64;
    let mut program = "gsoc2009".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (flag, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let v = inline
            .or_else(|| it.next())
            .ok_or_else(|| format!("`{flag}` needs a value"))?;
        match flag.as_str() {
            "--url" => url = Some(v),
            "--students" => {
                students = v
                    .replace('_', "")
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--students: `{v}` is not a positive whole number"))?
            }
            "--program" => program = v,
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let url = url
        .or_else(|| env("TASKQ_TEST_POSTGRES_URL"))
        .or_else(|| env("DATABASE_URL"))
        .ok_or(
            "no database: pass --url postgres://USER@HOST/DB, or set TASKQ_TEST_POSTGRES_URL \
             or DATABASE_URL (`source .ci/postgres.sh` starts a local test server and sets the first)",
        )?;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "--url `{url}` is not a postgres:// or postgresql:// URL"
        ));
    }
    Ok(Some(Args {
        url,
        students,
        program,
    }))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("pg_students: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("pg_students: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    let shown = redact(&args.url);
    let db = PgDb::connect(&args.url, 2)
        .await
        .map_err(|e| format!("connecting to {shown}: {e}"))?;
    let t = Instant::now();
    let created = db.ensure_students(args.students).await?;
    println!(
        "students table at {shown}: {} rows {} in {:.2} s",
        args.students,
        if created { "created" } else { "reused" },
        t.elapsed().as_secs_f64()
    );

    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::open(&args.url)
            .await
            .map_err(|e| format!("opening the task store: {e}"))?,
    );
    let queue = Queue::new(store.clone());
    let redone = Arc::new(Redone::default());
    let worker = Worker::builder(store)
        .state(db.clone())
        .state(redone.clone())
        .queues(["outbox"])
        .build()?
        .spawn();

    let t = Instant::now();
    let filter = ByProgram {
        program: args.program.clone(),
    };
    let run = queue_mail::start(&queue, filter, "Results are out".into()).await?;
    println!(
        "started run {run} of {} over program {}",
        queue_mail::NAME,
        args.program
    );
    let info = loop {
        let it = queue.iteration(run).await?;
        println!(
            "  {:>9} {:>6.1} %  {} / {}  {} batches  {} steps",
            it.state.as_str(),
            it.percent().unwrap_or(0.0),
            it.processed,
            it.total
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            it.batches,
            it.steps
        );
        if it.state != RunState::Running {
            break it;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let secs = t.elapsed().as_secs_f64();
    worker.shutdown().await?;

    let c = db.client().await?;
    let queued: i64 = c
        .query_one("SELECT count(*) FROM outbox WHERE run = $1", &[&run.0])
        .await?
        .get(0);
    let missing: i64 = c
        .query_one(
            "SELECT count(*) FROM students s WHERE s.program = $1
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.run = $2 AND o.student = s.id)",
            &[&args.program, &run.0],
        )
        .await?
        .get(0);
    println!(
        "run {run} {} in {secs:.2} s\n  \
         processed    {} students ({} in the program; {missing} without an outbox row)\n  \
         outbox rows  {queued}\n  \
         batches      {} of up to 500\n  \
         steps        {}\n  \
         redone       {} outbox rows already written by an earlier try of their batch\n  \
         throughput   {:.0} students/s",
        info.state.as_str(),
        info.processed,
        info.total
            .map(|n| n.to_string())
            .unwrap_or_else(|| "?".into()),
        info.batches,
        info.steps,
        redone.0.load(Ordering::Relaxed),
        info.processed as f64 / secs,
    );
    if let Some(e) = &info.error {
        println!("  error        {e}");
    }
    if info.state != RunState::Done || missing != 0 {
        return Err(format!(
            "the run ended {} with {missing} students unqueued",
            info.state.as_str()
        )
        .into());
    }
    Ok(())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
