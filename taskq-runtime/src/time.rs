//! Time as the runtime sees it: millisecond timestamps and a clock that can be virtual.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point in time: milliseconds since the Unix epoch, UTC.
///
/// Stores keep every time as this integer so that ordering and arithmetic are the same in
/// memory, SQLite and PostgreSQL, and so that the test harness can run on virtual time.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This time plus a duration (saturating).
    // Inherent rather than `ops::Add`, so callers need no trait import.
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// This time minus a duration (saturating).
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// The duration from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-27T22:46:09.123Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Where the runtime reads the time from.
///
/// - [`Clock::system`]: the host's wall clock, what a worker and a [`Queue`](crate::Queue)
///   use unless told otherwise.
/// - [`Clock::manual`]: virtual time, moved by [`Clock::advance_to`]; the test harness
///   uses it, so delays and backoff cost no real sleep. It is kept on every store.
/// - [`Clock::remote`]: a store's own clock, as this process estimates it ([`RemoteClock`]).
///   A store that many hosts share has one (PostgreSQL: the database server's clock), and
///   a worker or queue given a real clock reads it instead ([`Clock::for_store`]), so that
///   every time written to that store (due times, lease ends, backoff, token-bucket
///   refills, tombstone windows) is in one clock, whatever the hosts' wall clocks say.
/// - [`Clock::ahead`] and [`Clock::behind`] make any of these read off by a fixed amount, as
///   the wall clock of a badly synchronised host does (for tests of clock skew).
///
/// # The clock-skew budget
/// On memory and SQLite (one host) the caller's clock decides, so every process must share
/// one clock (they do, on one host). On PostgreSQL the hosts' wall clocks play no part for
/// a worker or queue: they may be off by any amount, and may be stepped, without effect. Two
/// hosts' estimates of the database clock differ by at most half of each one's best
/// measuring round trip (milliseconds on a LAN) plus the drift of their monotonic clocks
/// over one refresh period (a minute: a few milliseconds, 6 ms for an unsynchronised
/// crystal 100 ppm off). Leases tolerate a difference of up
/// to a quarter of the lease between two hosts' estimates (7.5 s with the default 30 s
/// lease: the worker stops a task it cannot renew when a quarter is left); due times and
/// tombstone windows are off by the same difference, and a rate-limited queue's bucket
/// refills at most that much early or late.
#[derive(Clone, Debug)]
pub struct Clock {
    source: Source,
    /// Milliseconds added to every reading ([`Clock::ahead`], [`Clock::behind`]).
    skew_ms: i64,
}

#[derive(Clone, Debug)]
enum Source {
    System,
    Manual(Arc<AtomicI64>),
    Remote(Arc<RemoteClock>),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Clock {
        Clock {
            source: Source::System,
            skew_ms: 0,
        }
    }

    /// A virtual clock starting at `start`, moved only by [`Clock::advance_to`].
    pub fn manual(start: Timestamp) -> Clock {
        Clock {
            source: Source::Manual(Arc::new(AtomicI64::new(start.0))),
            skew_ms: 0,
        }
    }

    /// The estimate of another machine's clock kept by `remote` (a store's, see
    /// [`Store::clock`](crate::Store::clock)). Before `remote` has its first reading, this
    /// clock reads the wall clock.
    pub fn remote(remote: Arc<RemoteClock>) -> Clock {
        Clock {
            source: Source::Remote(remote),
            skew_ms: 0,
        }
    }

    /// The clock to use with `store`: this one if it is virtual ([`Clock::manual`]) or if
    /// the store keeps no clock of its own (memory, SQLite); otherwise the store's
    /// ([`Store::clock`](crate::Store::clock): PostgreSQL's database clock), whose times
    /// every host agrees on. A real clock's skew ([`Clock::ahead`]) is dropped with it: it
    /// stands for a host's wall clock, which the store's clock replaces. The worker and
    /// [`Queue`](crate::Queue) call this on the clock they are given.
    pub fn for_store(self, store: &dyn crate::store::Store) -> Clock {
        if self.is_manual() {
            return self;
        }
        store.clock().unwrap_or(self)
    }

    /// This clock reading `by` later than it does (added to any skew it has): the wall
    /// clock of a host that runs ahead, for tests of clock skew. Saturating.
    pub fn ahead(self, by: Duration) -> Clock {
        let ms = by.as_millis().min(i64::MAX as u128) as i64;
        Clock {
            skew_ms: self.skew_ms.saturating_add(ms),
            ..self
        }
    }

    /// This clock reading `by` earlier than it does (added to any skew it has): the wall
    /// clock of a host that lags behind, for tests of clock skew. Saturating.
    pub fn behind(self, by: Duration) -> Clock {
        let ms = by.as_millis().min(i64::MAX as u128) as i64;
        Clock {
            skew_ms: self.skew_ms.saturating_sub(ms),
            ..self
        }
    }

    /// The current time of this clock.
    pub fn now(&self) -> Timestamp {
        let base = match &self.source {
            Source::System => Timestamp::now(),
            Source::Manual(t) => Timestamp(t.load(Ordering::SeqCst)),
            Source::Remote(r) => r.now().unwrap_or_else(Timestamp::now),
        };
        Timestamp(base.0.saturating_add(self.skew_ms))
    }

    /// Whether this clock is virtual.
    pub fn is_manual(&self) -> bool {
        matches!(self.source, Source::Manual(_))
    }

    /// Whether this clock is a store's ([`Clock::remote`]).
    pub fn is_remote(&self) -> bool {
        matches!(self.source, Source::Remote(_))
    }

    /// Move a virtual clock forward so that it reads `t` (never backwards). No effect on
    /// other clocks.
    pub fn advance_to(&self, t: Timestamp) {
        if let Source::Manual(m) = &self.source {
            m.fetch_max(t.0.saturating_sub(self.skew_ms), Ordering::SeqCst);
        }
    }
}

/// An estimate of a clock on another machine (a database server's), kept by a store that
/// many hosts share so that all of them write times in that one clock.
///
/// It is anchored on one reading of the remote clock and carried forward by this
/// process's monotonic clock ([`Instant`]), never by its wall clock: a host whose wall
/// clock is off, or is stepped between two readings, estimates the remote clock as well as
/// any other. A reading is taken to be made at the midpoint of its round trip, so the
/// estimate is off by at most half that round trip, plus the drift of the monotonic clock
/// since (a few milliseconds a minute at worst) and any step of the remote clock since. The
/// store reads the remote clock again periodically and after reconnecting
/// ([`RemoteClock::record`]). A host that was suspended (a paused VM) estimates behind by
/// the pause until the next reading: the monotonic clock does not count it.
#[derive(Debug, Default)]
pub struct RemoteClock {
    anchor: Mutex<Option<Anchor>>,
}

/// One reading of the remote clock.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    /// When the reading was made, on this process's monotonic clock (the round trip's
    /// midpoint).
    at: Instant,
    /// What the remote clock read.
    remote: Timestamp,
    /// The reading's round trip.
    round_trip: Duration,
}

impl RemoteClock {
    /// An estimate with no reading yet ([`RemoteClock::now`] is `None` until the first
    /// [`RemoteClock::record`]).
    pub fn new() -> RemoteClock {
        RemoteClock::default()
    }

    fn anchor(&self) -> std::sync::MutexGuard<'_, Option<Anchor>> {
        self.anchor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a reading: the remote clock read `remote` (milliseconds) in answer to a
    /// request sent at `sent` and answered at `received` (this process's monotonic clock).
    /// It replaces the reading in use.
    pub fn record(&self, sent: Instant, received: Instant, remote: Timestamp) {
        let round_trip = received.saturating_duration_since(sent);
        *self.anchor() = Some(Anchor {
            at: sent + round_trip / 2,
            remote,
            round_trip,
        });
    }

    /// The remote clock now, as estimated; `None` before the first reading.
    pub fn now(&self) -> Option<Timestamp> {
        let a = (*self.anchor())?;
        let now = Instant::now();
        Some(if now >= a.at {
            a.remote.add(now - a.at)
        } else {
            a.remote.sub(a.at - now)
        })
    }

    /// The round trip of the reading in use: the estimate was off by at most half of it
    /// when it was made. `None` before the first reading.
    pub fn round_trip(&self) -> Option<Duration> {
        self.anchor().map(|a| a.round_trip)
    }
}

/// Parses a duration written as humans write it: `250ms`, `30s`, `5m`, `2h`, `1d`, or a
/// sum of them such as `1h30m`. Returns a message naming what was wrong otherwise.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write it like `250ms`, `30s`, `5m`, `2h` or `1d`".into());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration: expected a number at `{rest}`; write it like `250ms`, `30s`, `5m`, `2h` or `1d`"
            ));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        let ms_per = match unit {
            "ms" => 1,
            "s" | "sec" | "secs" => 1000,
            "m" | "min" | "mins" => 60_000,
            "h" | "hr" | "hrs" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            "" => {
                return Err(format!(
                    "`{text}` has a number without a unit; write it like `250ms`, `30s`, `5m`, `2h` or `1d`"
                ))
            }
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}`; use one of `ms`, `s`, `m`, `h`, `d`"
                ))
            }
        };
        total = total.saturating_add(n.saturating_mul(ms_per));
        rest = rest[unit_len..].trim_start();
    }
    Ok(Duration::from_millis(total.min(u64::MAX as u128) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("3 parsecs")
            .expect_err("bad unit")
            .contains("unknown unit `parsecs`"));
        assert!(parse_duration("30")
            .expect_err("no unit")
            .contains("without a unit"));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn a_skewed_clock_reads_off_by_its_skew() {
        let base = Clock::manual(Timestamp(10_000));
        let ahead = base.clone().ahead(Duration::from_secs(5));
        let behind = base.clone().behind(Duration::from_secs(3));
        assert_eq!(ahead.now(), Timestamp(15_000));
        assert_eq!(behind.now(), Timestamp(7_000));
        assert_eq!(
            ahead.clone().behind(Duration::from_secs(5)).now(),
            Timestamp(10_000)
        );
        // Advancing a skewed virtual clock moves the time they share so that it reads `t`.
        ahead.advance_to(Timestamp(20_000));
        assert_eq!(
            (base.now(), ahead.now()),
            (Timestamp(15_000), Timestamp(20_000))
        );
        assert!(ahead.is_manual() && !Clock::system().ahead(Duration::ZERO).is_manual());
        let wall = Clock::system().behind(Duration::from_secs(3600)).now();
        let off = Timestamp::now().as_millis() - wall.as_millis();
        assert!((3_599_000..=3_601_000).contains(&off), "{off}");
    }

    #[test]
    fn a_remote_clock_follows_its_reading_not_the_wall_clock() {
        let remote = Arc::new(RemoteClock::new());
        let clock = Clock::remote(remote.clone());
        assert!(clock.is_remote() && !clock.is_manual());
        assert_eq!(remote.now(), None);
        // Before its first reading it reads the wall clock.
        let off = clock.now().as_millis() - Timestamp::now().as_millis();
        assert!(off.abs() < 1_000, "{off}");
        // A remote clock an hour ahead of this host, read over a 200 ms round trip: taken
        // at the midpoint, 100 ms after the request left.
        let received = Instant::now();
        let sent = received - Duration::from_millis(200);
        let at_midpoint = Timestamp::now()
            .add(Duration::from_secs(3600))
            .sub(Duration::from_millis(100));
        remote.record(sent, received, at_midpoint);
        assert_eq!(remote.round_trip(), Some(Duration::from_millis(200)));
        let off = clock.now().as_millis() - Timestamp::now().as_millis();
        assert!((3_599_000..=3_601_000).contains(&off), "{off}");
        // Carried forward by the monotonic clock: later readings of `now` grow with it.
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = clock.now();
        assert!(b.since(a) >= Duration::from_millis(19), "{a} {b}");
        // A skew still applies on top (a test may want a remote clock that is off too).
        let off = clock
            .clone()
            .ahead(Duration::from_secs(1))
            .now()
            .since(clock.now());
        assert!(off >= Duration::from_millis(990), "{off:?}");
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_819_569_123).to_string(),
            "2026-11-27T22:46:09.123Z"
        );
    }
}
