//! Time as the runtime sees it: millisecond timestamps and a clock that can be virtual.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
/// The worker and [`Queue`](crate::Queue) use [`Clock::system`]; the test harness uses
/// [`Clock::manual`] and moves it forward itself, so delays and backoff cost no real sleep.
/// [`Clock::ahead`] and [`Clock::behind`] make a clock that is off by a fixed amount, as the
/// wall clock of a badly synchronised host is (for tests of clock skew).
#[derive(Clone, Debug)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
    /// Milliseconds added to every reading ([`Clock::ahead`], [`Clock::behind`]).
    skew_ms: i64,
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
            manual: None,
            skew_ms: 0,
        }
    }

    /// A virtual clock starting at `start`, moved only by [`Clock::advance_to`].
    pub fn manual(start: Timestamp) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(start.0))),
            skew_ms: 0,
        }
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
        let base = match &self.manual {
            Some(t) => Timestamp(t.load(Ordering::SeqCst)),
            None => Timestamp::now(),
        };
        Timestamp(base.0.saturating_add(self.skew_ms))
    }

    /// Whether this clock is virtual.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Move a virtual clock forward so that it reads `t` (never backwards). No effect on the
    /// wall clock.
    pub fn advance_to(&self, t: Timestamp) {
        if let Some(m) = &self.manual {
            m.fetch_max(t.0.saturating_sub(self.skew_ms), Ordering::SeqCst);
        }
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
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_819_569_123).to_string(),
            "2026-11-27T22:46:09.123Z"
        );
    }
}
