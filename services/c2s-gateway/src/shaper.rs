//! Per-session rate limits on what a client sends, as ejabberd's shapers and Prosody's
//! mod_limits do: a byte rate and a stanza rate, each a token bucket with a burst. Going over
//! does not end the session; the session stops reading from its socket until it is back
//! within its rates, so TCP slows the client down and a flood costs the gateway nothing.

use std::time::{Duration, Instant};

/// A token bucket that may go into debt: taking more than is there is allowed once, and the
/// debt is the time to wait before reading again.
#[derive(Debug)]
pub struct Bucket {
    /// Tokens added per second.
    rate: f64,
    /// Tokens the bucket holds at most (what may be taken at once after a pause).
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Bucket {
        Bucket {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    /// Takes `n` tokens; returns how long to wait until the bucket is out of debt.
    pub fn take(&mut self, n: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        // Precision: n is at most a few MiB between two takes; f64 holds it exactly.
        #[allow(clippy::cast_precision_loss)]
        let n = n as f64;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// One session's byte and stanza buckets.
#[derive(Debug)]
pub struct Shaper {
    bytes: Bucket,
    stanzas: Bucket,
}

/// The rates and bursts of a [`Shaper`] (from the gateway's configuration).
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    pub bytes_per_sec: u32,
    pub burst_bytes: u32,
    pub stanzas_per_sec: u32,
    pub burst_stanzas: u32,
}

impl Shaper {
    pub fn new(rates: Rates, now: Instant) -> Shaper {
        Shaper {
            bytes: Bucket::new(rates.bytes_per_sec, rates.burst_bytes, now),
            stanzas: Bucket::new(rates.stanzas_per_sec, rates.burst_stanzas, now),
        }
    }

    /// Charges what was read since the last call; returns how long to stop reading.
    pub fn charge(&mut self, bytes: u64, stanzas: u64, now: Instant) -> Duration {
        self.bytes
            .take(bytes, now)
            .max(self.stanzas.take(stanzas, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 5, t0);
        for _ in 0..5 {
            assert_eq!(b.take(1, t0), Duration::ZERO);
        }
        // The sixth at once is a debt of one token: 100 ms at 10 per second.
        assert_eq!(b.take(1, t0), Duration::from_millis(100));
        // After the wait, the next one is again 100 ms away.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.take(1, t1), Duration::from_millis(100));
    }

    #[test]
    fn a_pause_refills_up_to_the_burst_only() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, 2000, t0);
        assert_eq!(b.take(2000, t0), Duration::ZERO);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take(2000, later), Duration::ZERO);
        assert_eq!(b.take(1000, later), Duration::from_secs(1));
    }

    #[test]
    fn one_large_read_is_allowed_and_paid_back_in_time() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, 100, t0);
        assert_eq!(b.take(5100, t0), Duration::from_secs(5));
    }

    #[test]
    fn the_slower_of_the_two_limits_decides() {
        let t0 = Instant::now();
        let rates = Rates {
            bytes_per_sec: 1_000_000,
            burst_bytes: 1_000_000,
            stanzas_per_sec: 2,
            burst_stanzas: 1,
        };
        let mut s = Shaper::new(rates, t0);
        assert_eq!(s.charge(100, 1, t0), Duration::ZERO);
        assert_eq!(s.charge(100, 1, t0), Duration::from_millis(500));
        let rates = Rates {
            bytes_per_sec: 100,
            burst_bytes: 100,
            stanzas_per_sec: 1000,
            burst_stanzas: 1000,
        };
        let mut s = Shaper::new(rates, t0);
        assert_eq!(s.charge(300, 1, t0), Duration::from_secs(2));
    }
}
