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

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::request::Parts,
};
use common::config;
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use uuid::Uuid;

use crate::{app::AppState, error::ApiError};

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

    /// Refuses any API token from `ip` while its refused-token budget is
    /// spent; checked before the token is looked up, so guessing stops even
    /// when a guess would be right.
    pub fn bearer_allowed(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(ip) = ip else { return Ok(()) };
        let mut blocked = self.blocked.lock().expect("rate-limit lock");
        match blocked.get(&ip) {
            Some(until) if *until > Instant::now() => Err(limited(*until - Instant::now())),
            Some(_) => {
                blocked.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a refused API token from `ip`. Returns the 429 to answer
    /// instead of the 401 once the budget is spent.
    pub fn bearer_refused(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(budget), Some(ip)) = (&self.failures, ip) else {
            return Ok(());
        };
        let wait = match budget.take(&ip) {
            Ok(()) => return Ok(()),
            Err(wait) => wait,
        };
        let mut blocked = self.blocked.lock().expect("rate-limit lock");
        let now = Instant::now();
        if blocked.len() > PRUNE_ABOVE {
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(ip, now + wait);
        tracing::warn!(client_ip = %ip, "too many refused API tokens; address paused");
        Err(limited(wait))
    }
}

/// The address of the connected peer, if the server knows it.
pub fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// Proof that a sign-in step from this client is within its budget; a
/// handler taking it answers 429 (a page, on browser routes) otherwise.
#[derive(Debug)]
pub struct SignInAllowed;

impl FromRequestParts<AppState> for SignInAllowed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state.limits.signin(peer_ip(parts)).map(|()| SignInAllowed)
    }
}

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
            limits.bearer_allowed(A).unwrap();
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
        limits.bearer_allowed(A).unwrap();
        limits.bearer_refused(A).unwrap();
        limits.bearer_refused(A).unwrap();
        let wait = retry_after(limits.bearer_refused(A).unwrap_err());
        assert!((1..=30).contains(&wait), "{wait}");
        // Now every token from A waits, before it is even looked up.
        assert!(limits.bearer_allowed(A).is_err());
        limits.bearer_allowed(B).unwrap();
        limits.bearer_refused(B).unwrap();
    }
}
