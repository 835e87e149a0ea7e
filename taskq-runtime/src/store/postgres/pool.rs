//! A small connection pool with a per-connection statement cache, reconnection and
//! connection back-off. PostgreSQL going away only makes operations fail with
//! [`StoreError::Backend`] until it is back; broken connections are dropped, never reused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::pg_err;
use crate::store::StoreError;

/// How long a call waits for a pooled connection before it fails.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// One open connection and the statements prepared on it.
pub(crate) struct Conn {
    pub(crate) client: Client,
    stmts: HashMap<String, Statement>,
}

#[derive(Default)]
struct Gate {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

/// The pool: at most `size` connections, idle ones kept for reuse.
pub(crate) struct Pool {
    config: Config,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    gate: Mutex<Gate>,
}

/// Opens one connection and spawns its driver.
pub(crate) async fn connect(config: &Config) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        StoreError::Backend(format!("cannot connect to PostgreSQL: {}", describe(&e)))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "taskq: PostgreSQL connection closed");
        }
    });
    Ok(client)
}

fn describe(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

impl Pool {
    pub(crate) fn new(config: Config, size: usize) -> Pool {
        Pool {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
            gate: Mutex::new(Gate::default()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection: an idle one that is still open, or a new one. While PostgreSQL is
    /// unreachable, new connections are attempted with exponential back-off (50 ms doubling
    /// to 5 s); calls in between fail at once with the last error.
    pub(crate) async fn get(&self) -> Result<PooledConn<'_>, StoreError> {
        let permit = match tokio::time::timeout(POOL_WAIT, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(StoreError::Backend("the PostgreSQL pool is closed".into())),
            Err(_) => {
                return Err(StoreError::Backend(format!(
                    "every pooled PostgreSQL connection stayed busy for {POOL_WAIT:?}; raise `pool_size` in the store URL, or look for slow statements"
                )))
            }
        };
        loop {
            let conn = self.idle().pop();
            match conn {
                Some(c) if !c.client.is_closed() => {
                    return Ok(PooledConn {
                        pool: self,
                        conn: Some(c),
                        broken: false,
                        _permit: permit,
                    })
                }
                Some(_) => continue,
                None => break,
            }
        }
        {
            let g = self.gate();
            if let Some(at) = g.retry_at {
                let now = Instant::now();
                if at > now {
                    return Err(StoreError::Backend(format!(
                        "PostgreSQL is unreachable ({}); reconnecting in {} ms",
                        g.last_error,
                        (at - now).as_millis()
                    )));
                }
            }
        }
        match connect(&self.config).await {
            Ok(client) => {
                *self.gate() = Gate::default();
                Ok(PooledConn {
                    pool: self,
                    conn: Some(Conn {
                        client,
                        stmts: HashMap::new(),
                    }),
                    broken: false,
                    _permit: permit,
                })
            }
            Err(e) => {
                let mut g = self.gate();
                g.failures = g.failures.saturating_add(1);
                let backoff = Duration::from_millis(50)
                    .saturating_mul(1u32 << g.failures.min(7))
                    .min(Duration::from_secs(5));
                g.retry_at = Some(Instant::now() + backoff);
                g.last_error = e.to_string();
                Err(e)
            }
        }
    }
}

/// A connection borrowed from the pool; it goes back when dropped unless it broke.
pub(crate) struct PooledConn<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
    broken: bool,
    _permit: SemaphorePermit<'a>,
}

impl PooledConn<'_> {
    fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Backend("pooled connection already released".into()))
    }

    /// The client.
    pub(crate) fn client(&mut self) -> Result<&mut Client, StoreError> {
        Ok(&mut self.conn()?.client)
    }

    /// A prepared statement for `sql`, cached on this connection.
    pub(crate) async fn prep(&mut self, sql: &str) -> Result<Statement, StoreError> {
        let conn = self.conn()?;
        if let Some(st) = conn.stmts.get(sql) {
            return Ok(st.clone());
        }
        match conn.client.prepare(sql).await {
            Ok(st) => {
                conn.stmts.insert(sql.to_string(), st.clone());
                Ok(st)
            }
            Err(e) => {
                let err = pg_err(&e);
                if e.as_db_error().is_none() {
                    self.broken = true;
                }
                Err(err)
            }
        }
    }

    /// Marks the connection as not to be reused (after an error that may have left it in
    /// an unknown state).
    pub(crate) fn discard(&mut self) {
        self.broken = true;
    }

    /// Marks the connection broken if `e` is not a plain SQL error.
    pub(crate) fn check<T>(
        &mut self,
        r: Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.as_db_error().is_none() {
                    self.broken = true;
                }
                Err(pg_err(&e))
            }
        }
    }
}

impl Drop for PooledConn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if !self.broken && !c.client.is_closed() {
                self.pool.idle().push(c);
            }
        }
    }
}
