//! Slows down repeated authentication failures from one address: after a few failures each
//! further failure answer is delayed, doubling up to a ceiling, and forgotten after a quiet
//! period. Guessing passwords gets slow without locking anyone out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const FORGET_AFTER: Duration = Duration::from_secs(300);
const MAX_DELAY: Duration = Duration::from_secs(8);

pub struct AuthThrottle {
    free_failures: u32,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthThrottle {
    pub fn new(free_failures: u32) -> AuthThrottle {
        AuthThrottle {
            free_failures,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure and returns how long to wait before answering it.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut map = self.failures.lock();
        let now = Instant::now();
        if map.len() > 10_000 {
            map.retain(|_, (_, at)| now.duration_since(*at) < FORGET_AFTER);
        }
        let entry = map.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.1 = now;
        let over = entry.0.saturating_sub(self.free_failures);
        if over == 0 {
            return Duration::ZERO;
        }
        let delay = Duration::from_millis(250u64 << over.min(10));
        delay.min(MAX_DELAY)
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.lock().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_free_failures() {
        let t = AuthThrottle::new(2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert_eq!(t.failed(ip), Duration::ZERO);
        assert_eq!(t.failed(ip), Duration::ZERO);
        let d3 = t.failed(ip);
        let d4 = t.failed(ip);
        assert!(d3 > Duration::ZERO && d4 > d3);
        t.succeeded(ip);
        assert_eq!(t.failed(ip), Duration::ZERO);
    }
}
