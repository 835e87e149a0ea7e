//! The database's clock, which decides every time a PostgreSQL store keeps: this process
//! estimates it ([`RemoteClock`]) from readings of `clock_timestamp()` taken when the store
//! opens, on every (re)connection of the listening connection (after a failover the server
//! may be another machine) and every [`REFRESH`] while it stays connected.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::pg_err;
use crate::store::StoreError;
use crate::time::{RemoteClock, Timestamp};

/// How often the listening connection reads the database clock again.
pub(super) const REFRESH: Duration = Duration::from_secs(60);

/// Readings per refresh; the one with the shortest round trip is kept (the estimate is off
/// by at most half of it).
const SAMPLES: usize = 3;

/// A reading that takes longer than this is given up (the estimate in use stays).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A host wall clock further than this from the database's is logged: taskq no longer
/// uses it, but people read times in logs and in their own code.
const WARN_AT_MS: i64 = 1000;

/// The database clock as this process estimates it, and what was last logged about this
/// host's wall clock.
#[derive(Debug, Default)]
pub(super) struct DbClock {
    pub remote: Arc<RemoteClock>,
    /// The wall clock's offset from the database last warned about (0: none).
    warned_ms: AtomicI64,
    /// How many times the clock was read (for tests of the refresh).
    pub readings: AtomicU64,
}

impl DbClock {
    /// Reads the database clock [`SAMPLES`] times on `client` and keeps the reading with the
    /// shortest round trip.
    pub async fn read(&self, client: &Client) -> Result<(), StoreError> {
        let timed_out = || {
            StoreError::Backend(format!(
                "reading the database clock took more than {READ_TIMEOUT:?}"
            ))
        };
        // Prepared first, so that each timed round trip is one message exchange.
        let st = tokio::time::timeout(
            READ_TIMEOUT,
            client.prepare("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::int8"),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| pg_err(&e))?;
        let mut best: Option<(Instant, Instant, i64)> = None;
        for _ in 0..SAMPLES {
            let sent = Instant::now();
            let row = tokio::time::timeout(READ_TIMEOUT, client.query_one(&st, &[]))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| pg_err(&e))?;
            let received = Instant::now();
            let ms: i64 = row.try_get(0).map_err(|e| pg_err(&e))?;
            if best.is_none_or(|(s, r, _)| received - sent < r - s) {
                best = Some((sent, received, ms));
            }
        }
        if let Some((sent, received, ms)) = best {
            self.remote.record(sent, received, Timestamp(ms));
            self.readings.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(round_trip = ?received - sent, "taskq: read the PostgreSQL clock");
            self.check_wall_clock();
        }
        Ok(())
    }

    /// Logs when this host's wall clock is off from the database's by more than
    /// [`WARN_AT_MS`] (again when that changes by as much), and when it is back.
    fn check_wall_clock(&self) {
        let Some(db) = self.remote.now() else { return };
        let off = Timestamp::now().as_millis().saturating_sub(db.as_millis());
        let warned = self.warned_ms.load(Ordering::Relaxed);
        if off.abs() > WARN_AT_MS {
            if warned == 0 || (off - warned).abs() > WARN_AT_MS {
                self.warned_ms.store(off, Ordering::Relaxed);
                let (secs, way) = (
                    off.abs() as f64 / 1000.0,
                    if off > 0 { "ahead of" } else { "behind" },
                );
                tracing::warn!(
                    offset_ms = off,
                    "this host's wall clock is {secs:.1} s {way} the PostgreSQL server's; taskq uses the database's clock for every time it stores, but check this host's time synchronisation (NTP)"
                );
            }
        } else if warned != 0 {
            self.warned_ms.store(0, Ordering::Relaxed);
            tracing::info!(
                offset_ms = off,
                "this host's wall clock agrees with the PostgreSQL server's again"
            );
        }
    }
}
