//! Registration and authentication throttles that hold across connections, across the DC's
//! gateways and behind a load balancer: windowed counters in the DC's PostgreSQL (the
//! `throttle` table), keyed by client address (IPv6: its /64) and by account.
//!
//! Every attempt is counted *before* it is verified, so parallel attempts cannot slip past a
//! limit while the first ones are still being checked: a registration counts against its
//! address, a login against its address and its account. What turns out not to be abuse is
//! taken back: a registration that failed (name taken), a login that succeeded (only that
//! attempt: a success never clears the failures others made from the address or on the
//! account). docs/security/throttles.md has the defaults and why.

use std::net::IpAddr;
use std::time::Duration;

use meerkat_store::Store;

use crate::cidr::{canonical, CidrList};
use crate::Config;

/// The longest a failed login's answer is held back.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// How often a gateway deletes expired counters (any gateway of the DC may; it is idempotent).
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

pub struct Throttles {
    store: Store,
    relaxed: CidrList,
    registrations_per_address: u32,
    registration_window: Duration,
    auth_window: Duration,
    free_failures: u32,
    max_per_account: u32,
    max_per_address: u32,
}

async fn undo(store: &Store, ticket: Ticket) {
    if ticket.keys.is_empty() {
        return;
    }
    if let Err(e) = store.throttle_undo(&ticket.keys).await {
        tracing::warn!(error = %e, "could not take a throttle count back");
    }
}

/// Why an attempt is refused before it is verified.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Over a limit: the attempt was counted and not verified.
    OverLimit,
    /// The counters could not be reached: refuse rather than let attempts through uncounted.
    Unavailable,
}

/// An attempt counted against its keys, to be taken back if it turns out well.
pub struct Ticket {
    keys: Vec<String>,
    /// Failures counted against the address in its window, this attempt included.
    address_count: u32,
}

impl Ticket {
    /// A relaxed source's attempt: counted nowhere.
    fn free() -> Ticket {
        Ticket {
            keys: Vec::new(),
            address_count: 0,
        }
    }
}

impl Throttles {
    pub fn new(config: &Config, store: Store) -> Throttles {
        Throttles {
            store,
            relaxed: config.throttle_relaxed_for.clone(),
            registrations_per_address: config.registrations_per_address,
            registration_window: Duration::from_secs(config.registration_window_secs),
            auth_window: Duration::from_secs(config.auth_window_secs),
            free_failures: config.auth_failures_before_delay,
            max_per_account: config.auth_max_failures_per_account,
            max_per_address: config.auth_max_failures_per_address,
        }
    }

    /// Counts a registration attempt from `ip`.
    pub async fn register(&self, ip: IpAddr) -> Result<Ticket, Refused> {
        if self.relaxed.contains(ip) || self.registrations_per_address == 0 {
            return Ok(Ticket::free());
        }
        let key = format!("reg:{}", address_key(ip));
        let counts = self
            .store
            .throttle_hit(&[(key.clone(), self.registration_window)])
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "registration throttle unavailable");
                Refused::Unavailable
            })?;
        let ticket = Ticket {
            keys: vec![key],
            address_count: counts[0],
        };
        if counts[0] > self.registrations_per_address {
            // Refused attempts stay counted: hammering does not help.
            return Err(Refused::OverLimit);
        }
        Ok(ticket)
    }

    /// Counts a login attempt on `account` from `ip`, before verifying it.
    pub async fn authenticate(&self, ip: IpAddr, account: &str) -> Result<Ticket, Refused> {
        if self.relaxed.contains(ip) {
            return Ok(Ticket::free());
        }
        let address = format!("auth-addr:{}", address_key(ip));
        let user = format!("auth-user:{account}");
        let counts = self
            .store
            .throttle_hit(&[
                (address.clone(), self.auth_window),
                (user.clone(), self.auth_window),
            ])
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "authentication throttle unavailable");
                Refused::Unavailable
            })?;
        let (address_count, account_count) = (counts[0], counts[1]);
        let over = |count: u32, max: u32| max > 0 && count > max;
        if over(account_count, self.max_per_account) || over(address_count, self.max_per_address) {
            tracing::info!(%ip, account, address_count, account_count, "login refused: over the limit");
            return Err(Refused::OverLimit);
        }
        Ok(Ticket {
            keys: vec![address, user],
            address_count,
        })
    }

    /// The attempt turned out well (an account created, a login verified): it is taken back,
    /// off the answer's path.
    pub fn take_back(&self, ticket: Ticket) {
        let store = self.store.clone();
        tokio::spawn(async move { undo(&store, ticket).await });
    }

    /// [`Self::take_back`], done before it returns: where the client's next attempt (a retry
    /// after a failed registration) must already see the count taken back.
    pub async fn take_back_now(&self, ticket: Ticket) {
        undo(&self.store, ticket).await;
    }

    /// How long to hold back the answer to a failed login: nothing for the first
    /// `auth_failures_before_delay` failures of the address, then doubling from 0.5 s to 8 s.
    pub fn failure_delay(&self, ticket: &Ticket) -> Duration {
        delay_after(ticket.address_count, self.free_failures)
    }

    /// Deletes expired counters now and then, until `shutdown`.
    pub async fn run_expiry(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EXPIRE_EVERY) => {}
                _ = shutdown.cancelled() => return,
            }
            match self.store.throttle_expire().await {
                Ok(n) if n > 0 => tracing::debug!(deleted = n, "expired throttle counters"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not expire throttle counters"),
            }
        }
    }
}

fn delay_after(address_count: u32, free_failures: u32) -> Duration {
    let over = address_count.saturating_sub(free_failures);
    if over == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(500u64 << (over - 1).min(5)).min(MAX_DELAY)
}

/// The part of an address that names one client: an IPv4 address, or an IPv6 /64 (one
/// subscriber's network: a client given one has the other 2^64 addresses too).
pub fn address_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_after_the_free_failures_up_to_a_ceiling() {
        assert_eq!(delay_after(3, 3), Duration::ZERO);
        assert_eq!(delay_after(4, 3), Duration::from_millis(500));
        assert_eq!(delay_after(5, 3), Duration::from_secs(1));
        assert_eq!(delay_after(100, 3), MAX_DELAY);
        assert_eq!(delay_after(0, 0), Duration::ZERO);
    }

    #[test]
    fn ipv6_addresses_of_one_network_share_a_key() {
        let a = address_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = address_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = address_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(address_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
        assert_eq!(address_key("10.0.0.1".parse().unwrap()), "10.0.0.1");
    }
}
