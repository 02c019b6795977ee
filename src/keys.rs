//! The key-set lifecycle of one pool (README "Keys") as pure state transitions.
//!
//! Two halves, because Envoy runs one VM per worker thread and the keys are fetched once for
//! the whole process:
//! - [`FetchSchedule`]: when to fetch, the fetch lease, failures and backoff, the unknown-`kid`
//!   rate limit. One per pool *per process*: the glue keeps it in proxy-wasm shared data and
//!   changes it only by compare-and-swap, so every transition here is a pure function of the
//!   old value and the clock.
//! - [`PoolKeys`]: one VM's parsed copy of the shared key set, plus its latest view of the
//!   schedule; it answers whether a request can be served now ([`Availability`]).
//!
//! Nothing here reads a clock: the glue passes `now` in milliseconds.

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

    /// A fetch holds its lease this long; a VM that died mid-fetch blocks nobody longer.
    pub fn lease_ms(&self) -> u64 {
        self.timeout_ms.saturating_mul(2)
    }
}

/// First retry after a failed fetch; doubles per failure up to [`MAX_BACKOFF_MS`].
pub const INITIAL_BACKOFF_MS: u64 = 1_000;
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// The process-wide fetch state of one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchSchedule {
    /// Consecutive failed fetches (0 after a success).
    pub failures: u32,
    /// No fetch before this time (refresh or backoff); 0 = due now.
    pub next_fetch_ms: u64,
    /// A VM holds the fetch lease since then.
    pub in_flight_since_ms: Option<u64>,
    /// Which VM holds the lease (a random id per VM; 0: unknown, from an older module).
    pub lease_holder: u64,
    pub last_kid_refetch_ms: Option<u64>,
    /// Fetches finished (either way): waiting requests re-check when it moves.
    pub completions: u64,
}

impl FetchSchedule {
    /// True when some VM should fetch now: due, and no live lease.
    pub fn fetch_due(&self, now_ms: u64, timing: &KeyTiming) -> bool {
        match self.in_flight_since_ms {
            Some(since) => now_ms >= since.saturating_add(timing.lease_ms()),
            None => now_ms >= self.next_fetch_ms,
        }
    }

    /// VM `holder` takes the fetch lease.
    pub fn fetch_started(&mut self, now_ms: u64, holder: u64) {
        self.in_flight_since_ms = Some(now_ms);
        self.lease_holder = holder;
    }

    pub fn in_flight(&self, now_ms: u64, timing: &KeyTiming) -> bool {
        self.in_flight_since_ms
            .is_some_and(|since| now_ms < since.saturating_add(timing.lease_ms()))
    }

    /// A configuration (re)load with a shorter refresh period than the one that scheduled the
    /// next fetch: the keys fetched at `fetched_at_ms` (when known) are due a refresh at
    /// `fetched_at + refresh` — possibly at once. True when the schedule changed.
    pub fn fit_refresh(
        &mut self,
        now_ms: u64,
        fetched_at_ms: Option<u64>,
        timing: &KeyTiming,
    ) -> bool {
        let latest = fetched_at_ms
            .unwrap_or(now_ms)
            .saturating_add(timing.refresh_ms);
        if self.next_fetch_ms > latest {
            self.next_fetch_ms = latest;
            return true;
        }
        false
    }

    /// VM `holder` goes away with its fetch unanswered: due again at once. True when the
    /// lease was still its own; a lease another VM has taken since is left alone.
    pub fn lease_abandoned(&mut self, holder: u64) -> bool {
        if self.in_flight_since_ms.is_none() || self.lease_holder != holder {
            return false;
        }
        self.in_flight_since_ms = None;
        self.next_fetch_ms = 0;
        true
    }

    /// A valid key set was published: next refresh in `refresh_ms`.
    pub fn fetch_succeeded(&mut self, now_ms: u64, timing: &KeyTiming) {
        self.failures = 0;
        self.in_flight_since_ms = None;
        self.next_fetch_ms = now_ms.saturating_add(timing.refresh_ms);
        self.completions = self.completions.wrapping_add(1);
    }

    /// A fetch failed (status, timeout, malformed body): retry with exponential backoff;
    /// `jitter` (any u64) spreads retries over [delay/2, delay].
    pub fn fetch_failed(&mut self, now_ms: u64, jitter: u64) {
        self.failures = self.failures.saturating_add(1);
        self.in_flight_since_ms = None;
        self.next_fetch_ms = now_ms.saturating_add(backoff_ms(self.failures, jitter));
        self.completions = self.completions.wrapping_add(1);
    }

    /// A token names a `kid` the set lacks. True when the request should wait for a fetch:
    /// one in flight, or a new one the per-pool rate limit allows (scheduled now).
    /// False: refuse the token without fetching.
    pub fn refetch_for_unknown_kid(&mut self, now_ms: u64, timing: &KeyTiming) -> bool {
        if self.in_flight(now_ms, timing) {
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

    /// Text form kept in shared data:
    /// `v2 failures next in_flight last_kid completions lease_holder` (0 for "none").
    /// `v1` (without the holder) is still read: a module upgrade keeps shared data.
    pub fn encode(&self) -> String {
        format!(
            "v2 {} {} {} {} {} {}",
            self.failures,
            self.next_fetch_ms,
            self.in_flight_since_ms.unwrap_or(0),
            self.last_kid_refetch_ms.unwrap_or(0),
            self.completions,
            self.lease_holder
        )
    }

    pub fn decode(text: &[u8]) -> Option<FetchSchedule> {
        let text = std::str::from_utf8(text).ok()?;
        let mut fields = text.split(' ');
        let version = fields.next()?;
        if version != "v1" && version != "v2" {
            return None;
        }
        let mut next = || fields.next().and_then(|f| f.parse::<u64>().ok());
        let failures = u32::try_from(next()?).ok()?;
        let next_fetch_ms = next()?;
        let in_flight = next()?;
        let last_kid = next()?;
        let completions = next()?;
        let lease_holder = if version == "v2" { next()? } else { 0 };
        Some(FetchSchedule {
            failures,
            next_fetch_ms,
            in_flight_since_ms: (in_flight != 0).then_some(in_flight),
            last_kid_refetch_ms: (last_kid != 0).then_some(last_kid),
            completions,
            lease_holder,
        })
    }
}

/// A published key set in shared data: `<fetched_at_ms>\n<JWKS body>`.
pub fn encode_envelope(fetched_at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{fetched_at_ms}\n").into_bytes();
    out.extend_from_slice(body);
    out
}

/// Splits an envelope into its fetch time and JWKS body.
pub fn decode_envelope(envelope: &[u8]) -> Option<(u64, &[u8])> {
    let newline = envelope.iter().position(|b| *b == b'\n')?;
    let (head, rest) = envelope.split_at(newline);
    let fetched_at = std::str::from_utf8(head).ok()?.parse().ok()?;
    Some((fetched_at, rest.get(1..)?))
}

/// What a request that needs this pool's keys (or, with `T = RevocationList`, a revocation
/// source's document) can do now.
#[derive(Debug, Clone)]
pub enum Availability<T = KeySet> {
    Ready(Rc<T>),
    /// A fetch is under way (or about to start) and there is nothing usable yet: wait.
    Wait,
    /// No usable keys and none coming right now: 503, retry after this many seconds.
    Unavailable {
        retry_after_s: u64,
    },
}

impl<T> PartialEq for Availability<T> {
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

/// One VM's view of a pool's keys — or, with `T = RevocationList`, of a revocation source's
/// document: the same fetch, refresh, staleness and availability rules.
#[derive(Debug, Clone)]
pub struct PoolKeys<T = KeySet> {
    keys: Option<Rc<T>>,
    /// When the current key set was fetched (by whichever VM).
    fetched_at_ms: u64,
    /// The latest schedule this VM has seen.
    pub schedule: FetchSchedule,
    /// Bumped whenever the keys or the schedule's completions change: requests waiting on
    /// this pool are re-run when it moves.
    generation: u64,
}

impl<T> Default for PoolKeys<T> {
    fn default() -> Self {
        PoolKeys {
            keys: None,
            fetched_at_ms: 0,
            schedule: FetchSchedule::default(),
            generation: 0,
        }
    }
}

impl<T> PoolKeys<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn keys(&self) -> Option<&Rc<T>> {
        self.keys.as_ref()
    }

    /// When the current keys were fetched (None before any).
    pub fn fetched_at_ms(&self) -> Option<u64> {
        self.keys.as_ref().map(|_| self.fetched_at_ms)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Installs a key set (fetched here or published by another VM). It replaces the old one
    /// entirely: a key a refresh no longer lists stops being trusted.
    pub fn set_keys(&mut self, keys: T, fetched_at_ms: u64) {
        self.keys = Some(Rc::new(keys));
        self.fetched_at_ms = fetched_at_ms;
        self.generation = self.generation.wrapping_add(1);
    }

    /// Records the latest shared schedule.
    pub fn observe(&mut self, schedule: FetchSchedule) {
        if schedule.completions != self.schedule.completions {
            self.generation = self.generation.wrapping_add(1);
        }
        self.schedule = schedule;
    }

    /// True while keys are served past their refresh time (a refresh keeps failing).
    pub fn is_stale(&self, now_ms: u64, timing: &KeyTiming) -> bool {
        self.keys.is_some() && now_ms > self.fetched_at_ms.saturating_add(timing.refresh_ms)
    }

    /// A refresh brought the very document already in use (same bytes): only its age changes.
    pub fn refreshed(&mut self, fetched_at_ms: u64) {
        if self.keys.is_some() {
            self.fetched_at_ms = fetched_at_ms;
        }
    }

    /// Whether requests can be served with keys now, must wait for them, or cannot have them.
    pub fn availability(&self, now_ms: u64, timing: &KeyTiming) -> Availability<T> {
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
        let s = &self.schedule;
        // Nothing failed yet (first fetch, or a refresh not yet run — e.g. right after a
        // reload that shortened the periods): keys are coming, not unobtainable.
        if s.in_flight(now_ms, timing) || s.failures == 0 {
            return Availability::Wait;
        }
        let retry_after_ms = s.next_fetch_ms.saturating_sub(now_ms);
        Availability::Unavailable {
            retry_after_s: retry_after_ms.div_ceil(1000).max(1),
        }
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

    const T: KeyTiming = KeyTiming {
        refresh_ms: 3_600_000,
        min_refetch_ms: 10_000,
        max_stale_ms: 86_400_000,
        timeout_ms: 5_000,
    };
    const VM_A: u64 = 0xA;
    const VM_B: u64 = 0xB;

    fn some_keys() -> KeySet {
        let key = crate::jwks::tests::test_key(0);
        let body = serde_json::json!({"keys": [rsa_jwk(key, "k", None)]}).to_string();
        parse_jwks(body.as_bytes(), 65536).unwrap().keys
    }

    /// One fetch as the glue runs it: lease, then success, keys installed.
    fn fetch_ok(p: &mut PoolKeys, keys: KeySet, now: u64) {
        let mut s = p.schedule;
        s.fetch_started(now, VM_A);
        s.fetch_succeeded(now, &T);
        p.set_keys(keys, now);
        p.observe(s);
    }

    #[test]
    fn new_pool_fetches_at_once_and_requests_wait_for_it() {
        let mut p = PoolKeys::new();
        assert!(p.schedule.fetch_due(0, &T));
        assert_eq!(p.availability(0, &T), Availability::Wait);
        let mut s = p.schedule;
        s.fetch_started(0, VM_A);
        p.observe(s);
        assert!(!p.schedule.fetch_due(100, &T));
        assert_eq!(p.availability(100, &T), Availability::Wait);
        s.fetch_succeeded(200, &T);
        p.set_keys(some_keys(), 200);
        p.observe(s);
        assert!(matches!(p.availability(200, &T), Availability::Ready(_)));
        assert!(!p.schedule.fetch_due(200 + T.refresh_ms - 1, &T));
        assert!(p.schedule.fetch_due(200 + T.refresh_ms, &T));
    }

    #[test]
    fn first_fetch_failure_gives_503_with_retry_after_until_the_retry_runs() {
        let mut p: PoolKeys = PoolKeys::new();
        let mut s = p.schedule;
        s.fetch_started(0, VM_A);
        s.fetch_failed(1_000, u64::MAX);
        p.observe(s);
        // backoff after 1 failure is in [500, 1000] ms.
        assert_eq!(
            p.availability(1_000, &T),
            Availability::Unavailable { retry_after_s: 1 }
        );
        assert!(p.schedule.fetch_due(2_000, &T));
        s.fetch_started(2_000, VM_A);
        p.observe(s);
        assert_eq!(p.availability(2_000, &T), Availability::Wait);
    }

    #[test]
    fn failed_refresh_keeps_old_keys_until_max_stale() {
        let mut p = PoolKeys::new();
        fetch_ok(&mut p, some_keys(), 0);
        let mut s = p.schedule;
        s.fetch_started(T.refresh_ms, VM_A);
        s.fetch_failed(T.refresh_ms, 0);
        p.observe(s);
        assert!(p.is_stale(T.refresh_ms + 1, &T));
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
    fn keys_too_old_without_any_failure_wait_for_the_refresh_instead_of_503() {
        let mut p = PoolKeys::new();
        fetch_ok(&mut p, some_keys(), 0);
        let late = T.refresh_ms + T.max_stale_ms + 1;
        assert_eq!(p.availability(late, &T), Availability::Wait);
    }

    #[test]
    fn a_refresh_replaces_the_whole_set() {
        let mut p = PoolKeys::new();
        fetch_ok(&mut p, some_keys(), 0);
        let g = p.generation();
        fetch_ok(&mut p, KeySet::default(), 10);
        assert!(p.generation() != g, "waiters must see the change");
        match p.availability(10, &T) {
            Availability::Ready(k) => assert!(k.get("k").is_none()),
            other => panic!("{other:?}"),
        }
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
        let mut s = FetchSchedule::default();
        s.fetch_started(0, VM_A);
        s.fetch_succeeded(0, &T);
        assert!(s.refetch_for_unknown_kid(1_000, &T));
        assert!(s.fetch_due(1_000, &T));
        s.fetch_started(1_000, VM_A);
        assert!(
            s.refetch_for_unknown_kid(1_500, &T),
            "joins the fetch in flight"
        );
        s.fetch_succeeded(1_600, &T);
        assert!(!s.refetch_for_unknown_kid(2_000, &T));
        assert!(!s.fetch_due(2_000, &T));
        assert!(s.refetch_for_unknown_kid(11_000, &T));
    }

    #[test]
    fn a_shorter_refresh_after_a_reload_brings_the_next_fetch_forward() {
        let mut s = FetchSchedule::default();
        s.fetch_started(0, VM_A);
        s.fetch_succeeded(0, &T);
        let short = KeyTiming {
            refresh_ms: 1_000,
            ..T
        };
        assert!(s.fit_refresh(10, None, &short));
        assert_eq!(s.next_fetch_ms, 1_010);
        assert!(!s.fit_refresh(20, None, &short));
        assert!(!s.fit_refresh(20, None, &T));
        // Keys already older than the new period: due at once.
        let mut s = FetchSchedule::default();
        s.fetch_succeeded(0, &T);
        assert!(s.fit_refresh(5_000, Some(0), &short));
        assert!(s.fetch_due(5_000, &short));
    }

    #[test]
    fn only_the_lease_holder_can_abandon_its_lease() {
        let mut s = FetchSchedule::default();
        s.fetch_started(0, VM_A);
        // VM B ends (say, a reload) while A fetches: A's lease stays.
        assert!(!s.lease_abandoned(VM_B));
        assert!(s.in_flight(1, &T));
        assert!(s.lease_abandoned(VM_A));
        assert!(s.fetch_due(1, &T));
        // Nothing to abandon once the fetch finished.
        s.fetch_started(2, VM_A);
        s.fetch_succeeded(3, &T);
        assert!(!s.lease_abandoned(VM_A));
        assert!(!s.fetch_due(4, &T));
    }

    #[test]
    fn lease_of_a_lost_fetch_expires_after_twice_the_timeout() {
        let mut s = FetchSchedule::default();
        s.fetch_started(0, VM_A);
        assert!(!s.fetch_due(9_999, &T));
        assert!(s.in_flight(9_999, &T));
        assert!(s.fetch_due(10_000, &T));
        assert!(!s.in_flight(10_000, &T));
    }

    #[test]
    fn schedule_round_trips_through_its_text_form() {
        let s = FetchSchedule {
            failures: 3,
            next_fetch_ms: 1_700_000_000_123,
            in_flight_since_ms: Some(5),
            last_kid_refetch_ms: None,
            completions: 42,
            lease_holder: 77,
        };
        assert_eq!(FetchSchedule::decode(s.encode().as_bytes()), Some(s));
        assert_eq!(
            FetchSchedule::decode(FetchSchedule::default().encode().as_bytes()),
            Some(FetchSchedule::default())
        );
        // A schedule written by the previous module version (no lease holder).
        assert_eq!(
            FetchSchedule::decode(b"v1 3 10 5 0 42"),
            Some(FetchSchedule {
                failures: 3,
                next_fetch_ms: 10,
                in_flight_since_ms: Some(5),
                last_kid_refetch_ms: None,
                completions: 42,
                lease_holder: 0,
            })
        );
        for bad in [
            "",
            "v2 1 2 3 4 5",
            "v3 1 2 3 4 5 6",
            "v1 1 2 3",
            "v1 a b c d e",
            "v1 99999999999 0 0 0 0",
        ] {
            assert_eq!(FetchSchedule::decode(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn envelope_round_trips() {
        let e = encode_envelope(123, b"{\"keys\":[]}\n");
        assert_eq!(decode_envelope(&e), Some((123, &b"{\"keys\":[]}\n"[..])));
        assert_eq!(decode_envelope(b"no newline"), None);
        assert_eq!(decode_envelope(b"x\n{}"), None);
    }
}
