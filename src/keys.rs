//! The key-set lifecycle of one pool (SPEC §6) as pure state transitions: when to fetch,
//! what a success or failure changes, whether requests can be served, wait, or get 503.
//! The glue feeds it the clock (milliseconds) and fetch results; it never reads a clock.

use std::rc::Rc;

use crate::config::Config;
use crate::jwks::KeySet;

/// Timing settings, in milliseconds, taken from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTiming {
    pub refresh_ms: u64,
    pub min_refetch_ms: u64,
    pub max_stale_ms: u64,
    pub timeout_ms: u64,
}

impl KeyTiming {
    pub fn from_config(c: &Config) -> Self {
        KeyTiming {
            refresh_ms: c.jwks_refresh_seconds.saturating_mul(1000),
            min_refetch_ms: c.jwks_min_refetch_seconds.saturating_mul(1000),
            max_stale_ms: c.jwks_max_stale_seconds.saturating_mul(1000),
            timeout_ms: c.jwks_timeout_ms,
        }
    }
}

/// First retry after a failed fetch; doubles per failure up to [`MAX_BACKOFF_MS`].
pub const INITIAL_BACKOFF_MS: u64 = 1_000;
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// What a request that needs this pool's keys can do now.
#[derive(Debug, Clone)]
pub enum Availability {
    Ready(Rc<KeySet>),
    /// A fetch is under way and there is nothing (fresh enough) to serve: wait for it.
    Wait,
    /// No usable keys and none coming right now: 503, retry after this many seconds.
    Unavailable {
        retry_after_s: u64,
    },
}

impl PartialEq for Availability {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Availability::Ready(a), Availability::Ready(b)) => Rc::ptr_eq(a, b),
            (Availability::Wait, Availability::Wait) => true,
            (
                Availability::Unavailable { retry_after_s: a },
                Availability::Unavailable { retry_after_s: b },
            ) => a == b,
            _ => false,
        }
    }
}

/// The key state of one pool in one VM.
#[derive(Debug, Clone, Default)]
pub struct PoolKeys {
    keys: Option<Rc<KeySet>>,
    /// When the current key set was fetched.
    fetched_at_ms: u64,
    failures: u32,
    next_fetch_ms: u64,
    in_flight_since_ms: Option<u64>,
    last_kid_refetch_ms: Option<u64>,
}

impl PoolKeys {
    /// A pool with no keys yet, due for a fetch right away.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn keys(&self) -> Option<&Rc<KeySet>> {
        self.keys.as_ref()
    }

    /// True when a fetch should start now. A fetch in flight for longer than the timeout is
    /// considered lost (Envoy answers every callout, but a VM may miss it on shutdown).
    pub fn fetch_due(&self, now_ms: u64, timing: &KeyTiming) -> bool {
        match self.in_flight_since_ms {
            Some(since) => now_ms >= since.saturating_add(timing.timeout_ms.saturating_mul(2)),
            None => now_ms >= self.next_fetch_ms,
        }
    }

    pub fn fetch_started(&mut self, now_ms: u64) {
        self.in_flight_since_ms = Some(now_ms);
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight_since_ms.is_some()
    }

    /// A valid key set arrived: it replaces the old one entirely (removed keys stop being
    /// trusted) and the next refresh is scheduled.
    pub fn fetch_succeeded(&mut self, keys: KeySet, now_ms: u64, timing: &KeyTiming) {
        self.keys = Some(Rc::new(keys));
        self.fetched_at_ms = now_ms;
        self.failures = 0;
        self.in_flight_since_ms = None;
        self.next_fetch_ms = now_ms.saturating_add(timing.refresh_ms);
    }

    /// A fetch failed (status, timeout, malformed body): keep the old keys, retry with
    /// exponential backoff; `jitter` (any u64) spreads retries over [delay/2, delay].
    pub fn fetch_failed(&mut self, now_ms: u64, jitter: u64) {
        self.failures = self.failures.saturating_add(1);
        self.in_flight_since_ms = None;
        self.next_fetch_ms = now_ms.saturating_add(backoff_ms(self.failures, jitter));
    }

    /// Whether requests can be served with keys now.
    pub fn availability(&self, now_ms: u64, timing: &KeyTiming) -> Availability {
        if let Some(keys) = &self.keys {
            // Stale keys are served for max_stale after the refresh that should have replaced them.
            let usable_until = self
                .fetched_at_ms
                .saturating_add(timing.refresh_ms)
                .saturating_add(timing.max_stale_ms);
            if now_ms <= usable_until {
                return Availability::Ready(Rc::clone(keys));
            }
        }
        if self.in_flight() || (self.failures == 0 && self.keys.is_none()) {
            return Availability::Wait;
        }
        let retry_after_ms = self.next_fetch_ms.saturating_sub(now_ms);
        Availability::Unavailable {
            retry_after_s: retry_after_ms.div_ceil(1000).max(1),
        }
    }

    /// A token names a `kid` the set lacks. Returns true when the caller should wait for a
    /// (re)fetch: one already in flight, or a new one allowed by the per-pool rate limit
    /// (then it is scheduled now). False: refuse the token.
    pub fn refetch_for_unknown_kid(&mut self, now_ms: u64, timing: &KeyTiming) -> bool {
        if self.in_flight() {
            return true;
        }
        let allowed = self
            .last_kid_refetch_ms
            .is_none_or(|last| now_ms >= last.saturating_add(timing.min_refetch_ms));
        if allowed {
            self.last_kid_refetch_ms = Some(now_ms);
            self.next_fetch_ms = now_ms;
        }
        allowed
    }

    /// How many fetches in a row have failed.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Backoff after `failures` consecutive failures (1 → ~1 s, doubling, at most 60 s), with
/// jitter in [delay/2, delay] so that many proxies do not retry in lockstep.
pub fn backoff_ms(failures: u32, jitter: u64) -> u64 {
    let exp = failures.saturating_sub(1).min(16);
    let delay = INITIAL_BACKOFF_MS
        .saturating_mul(1u64 << exp)
        .min(MAX_BACKOFF_MS);
    let half = delay / 2;
    half + jitter % (half + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwks::parse_jwks;
    use crate::jwks::tests::rsa_jwk;
    use jwt_simple::prelude::*;

    const T: KeyTiming = KeyTiming {
        refresh_ms: 3_600_000,
        min_refetch_ms: 10_000,
        max_stale_ms: 86_400_000,
        timeout_ms: 5_000,
    };

    fn some_keys() -> KeySet {
        let key = RS256KeyPair::generate(2048).unwrap();
        let body = serde_json::json!({"keys": [rsa_jwk(&key, "k", None)]}).to_string();
        parse_jwks(body.as_bytes(), 65536).unwrap().keys
    }

    #[test]
    fn new_pool_fetches_at_once_and_requests_wait_for_it() {
        let mut p = PoolKeys::new();
        assert!(p.fetch_due(0, &T));
        assert_eq!(p.availability(0, &T), Availability::Wait);
        p.fetch_started(0);
        assert!(!p.fetch_due(100, &T));
        assert_eq!(p.availability(100, &T), Availability::Wait);
        p.fetch_succeeded(some_keys(), 200, &T);
        assert!(matches!(p.availability(200, &T), Availability::Ready(_)));
        assert!(!p.fetch_due(200 + T.refresh_ms - 1, &T));
        assert!(p.fetch_due(200 + T.refresh_ms, &T));
    }

    #[test]
    fn first_fetch_failure_gives_503_with_retry_after_until_the_retry_runs() {
        let mut p = PoolKeys::new();
        p.fetch_started(0);
        p.fetch_failed(1_000, u64::MAX);
        // backoff after 1 failure is in [500, 1000] ms.
        match p.availability(1_000, &T) {
            Availability::Unavailable { retry_after_s } => assert_eq!(retry_after_s, 1),
            other => panic!("{other:?}"),
        }
        assert!(p.fetch_due(2_000, &T));
        p.fetch_started(2_000);
        assert_eq!(p.availability(2_000, &T), Availability::Wait);
    }

    #[test]
    fn failed_refresh_keeps_old_keys_until_max_stale() {
        let mut p = PoolKeys::new();
        p.fetch_started(0);
        p.fetch_succeeded(some_keys(), 0, &T);
        p.fetch_started(T.refresh_ms);
        p.fetch_failed(T.refresh_ms, 0);
        let last_ok = T.refresh_ms + T.max_stale_ms;
        assert!(matches!(
            p.availability(last_ok, &T),
            Availability::Ready(_)
        ));
        assert!(matches!(
            p.availability(last_ok + 1, &T),
            Availability::Unavailable { .. }
        ));
    }

    #[test]
    fn backoff_doubles_from_one_second_to_sixty_with_jitter() {
        assert!((500..=1_000).contains(&backoff_ms(1, 12345)));
        assert_eq!(backoff_ms(1, 0), 500);
        assert_eq!(backoff_ms(1, 500), 1_000);
        assert_eq!(backoff_ms(2, 1_000), 2_000);
        assert_eq!(backoff_ms(3, 2_000), 4_000);
        assert_eq!(backoff_ms(7, 30_000), 60_000);
        assert_eq!(backoff_ms(40, 30_000), 60_000);
        for j in [0, 1, 999_999, u64::MAX] {
            assert!((30_000..=60_000).contains(&backoff_ms(100, j)));
        }
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited_per_pool() {
        let mut p = PoolKeys::new();
        p.fetch_started(0);
        p.fetch_succeeded(some_keys(), 0, &T);
        assert!(p.refetch_for_unknown_kid(1_000, &T));
        assert!(p.fetch_due(1_000, &T));
        p.fetch_started(1_000);
        assert!(
            p.refetch_for_unknown_kid(1_500, &T),
            "joins the fetch in flight"
        );
        p.fetch_succeeded(some_keys(), 1_600, &T);
        assert!(!p.refetch_for_unknown_kid(2_000, &T));
        assert!(!p.fetch_due(2_000, &T));
        assert!(p.refetch_for_unknown_kid(11_000, &T));
    }

    #[test]
    fn lost_fetch_is_retried_after_twice_the_timeout() {
        let mut p = PoolKeys::new();
        p.fetch_started(0);
        assert!(!p.fetch_due(9_999, &T));
        assert!(p.fetch_due(10_000, &T));
    }
}
