//! Request budgets: sign-in attempts per client address, requests per API
//! token, and refused API tokens per client address (brute-force guard).
//!
//! Each budget is a `governor` keyed GCRA limiter: `n` per minute, with a
//! burst of `n`, refilled evenly. Budgets live in the process: with several
//! control-plane replicas a client gets up to one budget per replica.

use std::{
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{extract::ConnectInfo, http::request::Parts};
use common::config::{self, TrustedProxies};
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use uuid::Uuid;

use crate::error::ApiError;

/// Keys kept before idle ones are pruned.
const PRUNE_ABOVE: usize = 10_000;

struct Budget<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> Budget<K> {
    /// `None` when the limit is 0 (off).
    fn per_minute(n: u32) -> Option<Self> {
        let n = NonZeroU32::new(n)?;
        Some(Self {
            limiter: RateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
        })
    }

    /// Takes one request from `key`'s budget; when it is spent, says how
    /// long until the next request is allowed.
    fn take(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() > PRUNE_ABOVE {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// The budgets of one control-plane process.
pub struct RateLimits {
    signin: Option<Budget<IpAddr>>,
    tokens: Option<Budget<Uuid>>,
    failures: Option<Budget<IpAddr>>,
    /// Addresses whose refused-token budget is spent, until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

fn limited(wait: Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

impl RateLimits {
    pub fn new(settings: &config::RateLimits) -> Self {
        Self {
            signin: Budget::per_minute(settings.signin_per_minute),
            tokens: Budget::per_minute(settings.api_per_minute),
            failures: Budget::per_minute(settings.auth_failures_per_minute),
            blocked: Mutex::default(),
        }
    }

    /// One sign-in step (start or callback) from `ip`.
    pub fn signin(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        match (&self.signin, ip) {
            (Some(budget), Some(ip)) => budget.take(&ip).map_err(limited),
            _ => Ok(()),
        }
    }

    /// One request made with the API token `token_id`.
    pub fn token_use(&self, token_id: Uuid) -> Result<(), ApiError> {
        match &self.tokens {
            Some(budget) => budget.take(&token_id).map_err(limited),
            None => Ok(()),
        }
    }

    /// Counts a refused API token from `ip`. Returns the 429 to answer
    /// instead of the 401 while the address's budget is spent. Only refused
    /// tokens are counted and answered so: a valid token is never held up
    /// by someone else's refused ones from the same address (a proxy, a NAT,
    /// a CI runner with a stale token).
    pub fn bearer_refused(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(budget), Some(ip)) = (&self.failures, ip) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut blocked = self.blocked.lock().expect("rate-limit lock");
        match blocked.get(&ip) {
            Some(until) if *until > now => return Err(limited(*until - now)),
            Some(_) => {
                blocked.remove(&ip);
            }
            None => {}
        }
        let wait = match budget.take(&ip) {
            Ok(()) => return Ok(()),
            Err(wait) => wait,
        };
        if blocked.len() > PRUNE_ABOVE {
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(ip, now + wait);
        tracing::warn!(client_ip = %ip, "too many refused API tokens; address paused");
        Err(limited(wait))
    }
}

/// The client's address: the connected peer, or — when the peer is one of
/// `MH_TRUSTED_PROXIES` — the address `X-Forwarded-For` names for it. The
/// header is read from the right (the hop nearest to us) past trusted
/// proxies, so a client cannot choose its address by sending a header of
/// its own; from any other peer the header is ignored.
pub fn client_addr(parts: &Parts, trusted: &TrustedProxies) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_canonical())?;
    if !trusted.contains(peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = parts
        .headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !trusted.contains(client) {
                    break;
                }
            }
            // Unreadable: what lies beyond it cannot be trusted.
            Err(_) => break,
        }
    }
    Some(client)
}

const FORWARDED_FOR: &str = "x-forwarded-for";

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(signin: u32, api: u32, failures: u32) -> RateLimits {
        RateLimits::new(&config::RateLimits {
            signin_per_minute: signin,
            api_per_minute: api,
            auth_failures_per_minute: failures,
        })
    }

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    fn retry_after(err: ApiError) -> u64 {
        match err {
            ApiError::RateLimited { retry_after_secs } => retry_after_secs,
            other => panic!("not a rate limit: {other:?}"),
        }
    }

    #[test]
    fn a_budget_is_per_key_and_says_when_to_retry() {
        let limits = limits(3, 2, 0);
        for _ in 0..3 {
            limits.signin(A).unwrap();
        }
        let wait = retry_after(limits.signin(A).unwrap_err());
        // One attempt comes back every 20 s at 3 per minute.
        assert!((1..=20).contains(&wait), "{wait}");
        limits.signin(B).unwrap();

        let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
        limits.token_use(one).unwrap();
        limits.token_use(one).unwrap();
        assert!(limits.token_use(one).is_err());
        limits.token_use(two).unwrap();
    }

    #[test]
    fn zero_is_no_limit_and_unknown_addresses_are_not_limited() {
        let limits = limits(0, 0, 0);
        for _ in 0..1000 {
            limits.signin(A).unwrap();
            limits.token_use(Uuid::nil()).unwrap();
            limits.bearer_refused(A).unwrap();
        }
        let limits = self::limits(1, 1, 1);
        for _ in 0..10 {
            limits.signin(None).unwrap();
            limits.bearer_refused(None).unwrap();
        }
    }

    #[test]
    fn refused_tokens_pause_only_their_address() {
        let limits = limits(0, 0, 2);
        limits.bearer_refused(A).unwrap();
        limits.bearer_refused(A).unwrap();
        let wait = retry_after(limits.bearer_refused(A).unwrap_err());
        assert!((1..=30).contains(&wait), "{wait}");
        // Paused: every further refused token from A waits too.
        assert!(limits.bearer_refused(A).is_err());
        limits.bearer_refused(B).unwrap();
    }

    fn parts_from(peer: &str, forwarded: &[&str]) -> Parts {
        let mut req = axum::http::Request::builder();
        for value in forwarded {
            req = req.header(FORWARDED_FOR, *value);
        }
        let (mut parts, ()) = req.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(ConnectInfo(SocketAddr::new(peer.parse().unwrap(), 40000)));
        parts
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let none = TrustedProxies::default();
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let spoofed = parts_from("203.0.113.5", &["198.51.100.1"]);
        assert_eq!(client_addr(&spoofed, &none), ip("203.0.113.5"));
        assert_eq!(client_addr(&spoofed, &proxies), ip("203.0.113.5"));
        // Through two proxies; the client's own claim (leftmost) is not believed.
        let proxied = parts_from("10.0.0.2", &["192.0.2.66, 198.51.100.7", "10.0.0.1"]);
        assert_eq!(client_addr(&proxied, &proxies), ip("198.51.100.7"));
        assert_eq!(client_addr(&proxied, &none), ip("10.0.0.2"));
        // Only proxies in the header: the farthest one is the client.
        let internal = parts_from("10.0.0.2", &["10.9.9.9"]);
        assert_eq!(client_addr(&internal, &proxies), ip("10.9.9.9"));
        let garbled = parts_from("10.0.0.2", &["198.51.100.7, not-an-ip"]);
        assert_eq!(client_addr(&garbled, &proxies), ip("10.0.0.2"));
        let bare = parts_from("::ffff:10.0.0.2", &[]);
        assert_eq!(client_addr(&bare, &proxies), ip("10.0.0.2"));
    }
}
