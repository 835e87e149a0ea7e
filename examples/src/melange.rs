//! The Melange demo app's data: programs, students, and the outbox a stand-in mailer
//! writes to. The `email_all_students` task itself lives in `src/bin/melange.rs`.
//!
//! The app keeps its tables in its own SQLite file (`melange-app.db` by default), apart
//! from the task store (`melange.db`): the store is taskq's (its schema, its migrations,
//! its writer), the app's data is the app's. One SQLite file has one writer at a time, so
//! keeping them apart also means the mailer's outbox commits never wait behind the
//! store's checkpoints, and the same app database works with `--store postgres://..`.
//!
//! rusqlite is a blocking API: every query runs on `tokio::task::spawn_blocking`, on one
//! connection behind a mutex.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use taskq_runtime::{Model, TaskError};

/// The programs students belong to, with each one's share of the students in percent.
pub const PROGRAMS: &[(&str, u64)] = &[("gsoc2009", 60), ("gsoc2010", 25), ("ghop2010", 15)];

/// The program a student with this id belongs to: interleaved, so a program's students
/// are spread over the whole id range (the keyset query needs its index).
pub fn program_of(id: i64) -> &'static str {
    let slot = (id.unsigned_abs() * 7919) % 100;
    let mut acc = 0;
    for (name, share) in PROGRAMS {
        acc += share;
        if slot < acc {
            return name;
        }
    }
    PROGRAMS[0].0
}

/// The app database: one rusqlite connection, shared by the web handlers, the model and
/// the mailer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppDb {
    conn: Arc<Mutex<Connection>>,
}

/// A student, as the iterative task sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Student {
    /// Primary key; the cursor of `email_all_students`.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Where the mail goes.
    pub email: String,
    /// The program, e.g. `gsoc2009`.
    pub program: String,
}

/// Which students a run mails: those of one program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudentFilter {
    /// The program's link id, e.g. `gsoc2009`.
    pub program: String,
}

fn sql_err(e: impl std::fmt::Display) -> TaskError {
    // The app database being busy or unreachable is worth another try.
    TaskError::retry(format!("app database: {e}"))
}

impl AppDb {
    /// Opens (creating if needed) the app database at `path`, with its tables.
    pub fn open(path: impl AsRef<Path>) -> rusqlite::Result<AppDb> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS programs (link_id TEXT PRIMARY KEY, title TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS students (
                 id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
                 program TEXT NOT NULL REFERENCES programs(link_id));
             CREATE INDEX IF NOT EXISTS students_program ON students (program, id);
             CREATE TABLE IF NOT EXISTS outbox (
                 run INTEGER NOT NULL, student_id INTEGER NOT NULL, email TEXT NOT NULL,
                 subject TEXT NOT NULL, sent_at_ms INTEGER NOT NULL,
                 PRIMARY KEY (run, student_id)) WITHOUT ROWID;",
        )?;
        Ok(AppDb {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection on tokio's blocking pool.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, TaskError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(sql_err)?
        .map_err(sql_err)
    }

    /// Makes sure the database holds exactly `n` students; returns `true` if it had to
    /// (re)create them, `false` if an earlier run's data was reused.
    pub async fn ensure_students(&self, n: u64) -> Result<bool, TaskError> {
        self.call(move |c| {
            let have: Option<String> = c
                .query_row("SELECT value FROM meta WHERE key = 'students'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if have.as_deref() == Some(n.to_string().as_str()) {
                return Ok(false);
            }
            let tx = c.transaction()?;
            tx.execute_batch("DELETE FROM outbox; DELETE FROM students; DELETE FROM programs;")?;
            {
                let mut p = tx.prepare("INSERT INTO programs (link_id, title) VALUES (?1, ?2)")?;
                for (link, _) in PROGRAMS {
                    let title = match *link {
                        "gsoc2009" => "Google Summer of Code 2009",
                        "gsoc2010" => "Google Summer of Code 2010",
                        _ => "Google Highly Open Participation Contest 2010",
                    };
                    p.execute(params![link, title])?;
                }
                let mut s = tx.prepare(
                    "INSERT INTO students (id, name, email, program) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for id in 1..=n as i64 {
                    s.execute(params![
                        id,
                        format!("Student {id}"),
                        format!("student{id}@example.org"),
                        program_of(id)
                    ])?;
                }
            }
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('students', ?1)",
                [n.to_string()],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    /// Every program with its number of students.
    pub async fn programs(&self) -> Result<Vec<(String, String, u64)>, TaskError> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT p.link_id, p.title, (SELECT COUNT(*) FROM students s WHERE s.program = p.link_id)
                 FROM programs p ORDER BY p.link_id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?;
            rows.collect()
        })
        .await
    }

    /// Rows in the outbox for one run: the emails actually sent.
    pub async fn outbox_count(&self, run: i64) -> Result<u64, TaskError> {
        self.call(move |c| {
            c.query_row("SELECT COUNT(*) FROM outbox WHERE run = ?1", [run], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await
        .map(|n| n as u64)
    }

    /// Students of `program` with no outbox row for `run` (should be 0 after a run).
    pub async fn unsent(&self, run: i64, program: String) -> Result<u64, TaskError> {
        self.call(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM students s WHERE s.program = ?2
                 AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.run = ?1 AND o.student_id = s.id)",
                params![run, program],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| n as u64)
    }
}

impl Model for Student {
    type Key = i64;
    type Filter = StudentFilter;
    type Source = AppDb;

    fn key(&self) -> i64 {
        self.id
    }

    async fn batch(
        db: &AppDb,
        f: &StudentFilter,
        after: Option<&i64>,
        limit: usize,
    ) -> Result<Vec<Student>, TaskError> {
        let program = f.program.clone();
        let after = after.copied().unwrap_or(i64::MIN);
        db.call(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, name, email, program FROM students
                 WHERE program = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = st.query_map(params![program, after, limit as i64], |r| {
                Ok(Student {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    email: r.get(2)?,
                    program: r.get(3)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn count(db: &AppDb, f: &StudentFilter) -> Result<Option<u64>, TaskError> {
        let program = f.program.clone();
        db.call(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM students WHERE program = ?1",
                [program],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| Some(n as u64))
    }
}

/// A stand-in mailer: "sending" a mail inserts a row into the outbox.
///
/// It sends one batch per call to its (pretend) bulk-mail API, and a fraction `fail_rate`
/// of those calls fails transiently partway: the connection drops after some of the
/// batch's mails went out. The batch is then retried from the run's cursor, so nobody is
/// skipped; the outbox insert is idempotent per (run, student), so the mails that already
/// went out are not sent twice: they are counted as `redone` instead.
#[derive(Debug, Default)]
pub struct Mailer {
    /// Fraction of batch sends that fail transiently, in `[0, 1]`.
    pub fail_rate: f64,
    /// Mails written to the outbox.
    pub sent: AtomicU64,
    /// Mails of a redone batch that were already in the outbox (not sent again).
    pub redone: AtomicU64,
    /// Batch sends that failed transiently.
    pub failures: AtomicU64,
    /// The pretend bulk-mail API's round trip, per batch.
    pub latency: std::time::Duration,
}

impl Mailer {
    /// A mailer whose batch sends fail with probability `fail_rate`.
    pub fn new(fail_rate: f64) -> Mailer {
        Mailer {
            fail_rate,
            ..Mailer::default()
        }
    }

    /// Sends `subject` to every student of the batch, for run `run`.
    pub async fn send_batch(
        &self,
        db: &AppDb,
        run: i64,
        students: Vec<Student>,
        subject: String,
    ) -> Result<(), TaskError> {
        // Decide up front whether this call drops, and after how many mails.
        let drop_after = if self.fail_rate > 0.0 && fastrand::f64() < self.fail_rate {
            Some(fastrand::usize(0..students.len().max(1)))
        } else {
            None
        };
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let (sent, redone) = db
            .call(move |c| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                let tx = c.transaction()?;
                let (mut sent, mut redone) = (0u64, 0u64);
                {
                    let mut ins = tx.prepare_cached(
                        "INSERT OR IGNORE INTO outbox (run, student_id, email, subject, sent_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    for (i, s) in students.iter().enumerate() {
                        if Some(i) == drop_after {
                            break;
                        }
                        if ins.execute(params![run, s.id, s.email, subject, now])? == 1 {
                            sent += 1;
                        } else {
                            redone += 1;
                        }
                    }
                }
                // The mails before a drop did go out: commit them either way.
                tx.commit()?;
                Ok((sent, redone))
            })
            .await?;
        self.sent.fetch_add(sent, Ordering::Relaxed);
        self.redone.fetch_add(redone, Ordering::Relaxed);
        if drop_after.is_some() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(TaskError::retry(format!(
                "mail server: 421 connection dropped after {sent} of the batch's mails (transient; the batch is retried)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_shares_are_roughly_right() {
        let n = 10_000;
        let gsoc = (1..=n).filter(|&i| program_of(i) == "gsoc2009").count();
        assert!((5_500..6_500).contains(&gsoc), "{gsoc}");
    }
}
