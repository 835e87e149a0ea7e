//! Queue admission: the token bucket and the allowance rule that [`Store::claim`] applies to
//! a queue with limits, written once for every store.
//!
//! The stores only read a queue's settings, its running count and its stored bucket,
//! call [`admit`], take at most [`Admission::allowance`] tasks of the queue (in the one
//! claim order: priority, then `run_at`, then id), and persist
//! [`Admission::after`]`(taken)`. They decide nothing themselves.
//!
//! # Units and defaults
//! - `rate` ([`QueueConfig::rate`]) is tokens per second; one claimed task costs one token
//!   (a lapsed lease claimed again too). [`Queue::configure`](crate::Queue::configure)
//!   refuses a rate that is not a positive finite number.
//! - `burst` ([`QueueConfig::burst`]) is the bucket's size in tokens; when unset it is
//!   `max(1, rate)`, so a rate below one per second still admits one task at a time.
//! - Times are [`Timestamp`]s (milliseconds); a bucket refills by `rate × elapsed seconds`,
//!   fractions kept, capped at `burst`. A queue with no stored bucket (never claimed from
//!   since its settings were saved) starts full.
//! - A clock that goes backwards (another worker's clock behind the one that refilled
//!   last) mints nothing: the elapsed time is zero and the refill time stays the later one.
//! - `max_concurrent` ([`QueueConfig::max_concurrent`]) counts tasks of the queue that are
//!   running with a lease still held at the claim's `now`.
//!
//! [`Store::claim`]: super::Store::claim

use super::QueueConfig;
use crate::time::Timestamp;

/// A queue's token bucket as a store keeps it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens left after the last claim (fractional; never above the burst once refilled).
    pub tokens: f64,
    /// When the bucket was last refilled: the latest `now` a claim used.
    pub refilled_at: Timestamp,
}

/// Whether `config` limits claims at all (a rate or a concurrency cap). Claims from a
/// queue without limits need no lock and no bucket.
pub fn is_limited(config: &QueueConfig) -> bool {
    config.rate.is_some() || config.max_concurrent.is_some()
}

/// The bucket size of `config` in tokens: `burst`, or `max(1, rate)` when unset; `None`
/// when the queue has no rate.
pub fn burst(config: &QueueConfig) -> Option<f64> {
    let rate = config.rate?;
    Some(config.burst.map(f64::from).unwrap_or(rate.max(1.0)))
}

/// The bucket at `now`: `stored` refilled at `rate` tokens per second up to `burst`, or a
/// full bucket when nothing is stored.
pub fn refill(stored: Option<Bucket>, rate: f64, burst: f64, now: Timestamp) -> Bucket {
    match stored {
        None => Bucket {
            tokens: burst,
            refilled_at: now,
        },
        Some(b) => {
            // `since` is zero when `now` is earlier: a clock behind mints no tokens.
            let elapsed = now.since(b.refilled_at).as_secs_f64();
            let tokens = b.tokens + elapsed * rate;
            Bucket {
                // `f64::min` also turns a NaN read from a damaged row into a full bucket.
                tokens: tokens.min(burst),
                refilled_at: b.refilled_at.max(now),
            }
        }
    }
}

/// What one claim at `now` may take from a queue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Admission {
    /// How many tasks of the queue this claim may take: `max_concurrent` minus those
    /// running, and the whole tokens in the refilled bucket; `u64::MAX` without limits.
    pub allowance: u64,
    /// The refilled bucket, for a queue with a rate (before this claim takes from it).
    pub bucket: Option<Bucket>,
}

impl Admission {
    /// The bucket to persist after the claim took `taken` tasks of the queue (at most
    /// [`Admission::allowance`]); `None` for a queue without a rate (nothing to persist).
    pub fn after(&self, taken: u64) -> Option<Bucket> {
        self.bucket.map(|b| Bucket {
            tokens: b.tokens - taken as f64,
            refilled_at: b.refilled_at,
        })
    }
}

/// The admission of a queue with settings `config`, `running` tasks holding a live lease,
/// and the stored bucket `stored` (`None` if none is stored), for a claim at `now`.
pub fn admit(
    config: &QueueConfig,
    running: u64,
    stored: Option<Bucket>,
    now: Timestamp,
) -> Admission {
    let mut allowance = u64::MAX;
    if let Some(max) = config.max_concurrent {
        allowance = allowance.min(u64::from(max).saturating_sub(running));
    }
    let bucket = match (config.rate, burst(config)) {
        (Some(rate), Some(burst)) => {
            let b = refill(stored, rate, burst, now);
            // Whole tokens only; `as` saturates, and a negative count admits nothing.
            allowance = allowance.min(b.tokens.max(0.0).floor() as u64);
            Some(b)
        }
        _ => None,
    };
    Admission { allowance, bucket }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rate: Option<f64>, burst: Option<u32>, max_concurrent: Option<u32>) -> QueueConfig {
        QueueConfig {
            rate,
            burst,
            max_concurrent,
            retention: None,
        }
    }

    fn b(tokens: f64, at: i64) -> Option<Bucket> {
        Some(Bucket {
            tokens,
            refilled_at: Timestamp(at),
        })
    }

    #[test]
    fn unlimited_queue_admits_everything_and_keeps_no_bucket() {
        let a = admit(&QueueConfig::default(), 1_000, None, Timestamp(0));
        assert_eq!(a.allowance, u64::MAX);
        assert_eq!(a.bucket, None);
        assert_eq!(a.after(5), None);
        assert!(!is_limited(&QueueConfig::default()));
        assert!(is_limited(&cfg(Some(1.0), None, None)));
        assert!(is_limited(&cfg(None, None, Some(1))));
    }

    #[test]
    fn burst_defaults_to_the_rate_and_at_least_one() {
        assert_eq!(burst(&cfg(Some(5.0), None, None)), Some(5.0));
        assert_eq!(burst(&cfg(Some(0.25), None, None)), Some(1.0));
        assert_eq!(burst(&cfg(Some(5.0), Some(2), None)), Some(2.0));
        assert_eq!(burst(&cfg(None, Some(2), None)), None);
    }

    #[test]
    fn a_new_bucket_starts_full() {
        let a = admit(&cfg(Some(2.0), Some(3), None), 0, None, Timestamp(7));
        assert_eq!(a.allowance, 3);
        assert_eq!(a.after(3), b(0.0, 7));
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let a = admit(
            &cfg(Some(2.0), Some(3), None),
            0,
            b(0.0, 0),
            Timestamp(3_600_000),
        );
        assert_eq!(a.allowance, 3);
        assert_eq!(a.bucket, b(3.0, 3_600_000));
        // A stored count above the burst (the burst was lowered) is capped too.
        let a = admit(&cfg(Some(2.0), Some(3), None), 0, b(9.0, 0), Timestamp(0));
        assert_eq!(a.allowance, 3);
    }

    #[test]
    fn fractional_tokens_add_up_and_only_whole_ones_admit() {
        let c = cfg(Some(2.0), Some(3), None);
        // 250 ms at 2/s is half a token: nothing yet.
        let a = admit(&c, 0, b(0.0, 0), Timestamp(250));
        assert_eq!(a.allowance, 0);
        let kept = a.after(0);
        assert_eq!(kept, b(0.5, 250));
        // Another 250 ms: one whole token.
        let a = admit(&c, 0, kept, Timestamp(500));
        assert_eq!(a.allowance, 1);
        assert_eq!(a.after(1), b(0.0, 500));
        // 0.3 tokens per second into a bucket of 2: 0.9 after 3 s, 1.2 after 4 s.
        let slow = cfg(Some(0.3), Some(2), None);
        assert_eq!(admit(&slow, 0, b(0.0, 0), Timestamp(3_000)).allowance, 0);
        let a = admit(&slow, 0, b(0.0, 0), Timestamp(4_000));
        assert_eq!(a.allowance, 1);
        let left = a.after(1).map(|b| b.tokens).unwrap_or(f64::NAN);
        assert!((left - 0.2).abs() < 1e-9, "{left}");
        // With the default burst of 1, the same 1.2 is capped at one token.
        let capped = admit(&cfg(Some(0.3), None, None), 0, b(0.0, 0), Timestamp(4_000));
        assert_eq!(capped.after(1), b(0.0, 4_000));
    }

    #[test]
    fn a_clock_going_backwards_mints_no_tokens() {
        let c = cfg(Some(1.0), Some(10), None);
        // Refilled at 10 s with nothing left; a claimer whose clock says 5 s.
        let a = admit(&c, 0, b(0.0, 10_000), Timestamp(5_000));
        assert_eq!(a.allowance, 0);
        assert_eq!(a.after(0), b(0.0, 10_000), "the later refill time stays");
        // Back at 11 s: one second's worth, not six.
        let a = admit(&c, 0, a.after(0), Timestamp(11_000));
        assert_eq!(a.allowance, 1);
    }

    #[test]
    fn concurrency_and_rate_both_bound_the_allowance() {
        let c = cfg(Some(100.0), None, Some(4));
        assert_eq!(admit(&c, 1, None, Timestamp(0)).allowance, 3);
        assert_eq!(admit(&c, 4, None, Timestamp(0)).allowance, 0);
        assert_eq!(admit(&c, 9, None, Timestamp(0)).allowance, 0);
        let c = cfg(Some(1.0), Some(2), Some(4));
        assert_eq!(admit(&c, 0, None, Timestamp(0)).allowance, 2);
        let only = cfg(None, None, Some(4));
        let a = admit(&only, 1, None, Timestamp(0));
        assert_eq!((a.allowance, a.bucket), (3, None));
    }

    #[test]
    fn a_damaged_stored_count_does_not_admit_without_bound() {
        let c = cfg(Some(1.0), Some(2), None);
        assert_eq!(admit(&c, 0, b(f64::NAN, 0), Timestamp(0)).allowance, 2);
        assert_eq!(admit(&c, 0, b(-5.0, 0), Timestamp(1_000)).allowance, 0);
    }
}
