//! The state of one VM (one worker thread): its configuration, its view of every pool's
//! keys and of every revocation document, kept in step with the process-wide state in
//! shared data, its token cache and the requests waiting for keys or a first document.
//! Pure: shared data is reached through [`SharedData`].

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, error, info, warn};

use crate::cache::TokenCache;
use crate::config::Config;
use crate::jwks::{parse_jwks, KeySet};
use crate::keys::{decode_envelope, KeyTiming, PoolKeys};
use crate::revocation::{RevocationList, Stamp};
use crate::shared_keys::{SharedData, SharedKeys, SharedRevocations};
use crate::verify::VerifiedToken;

pub struct VmState<S> {
    pub config: Rc<Config>,
    pub timing: KeyTiming,
    /// One entry per configured pool, same order as `config.pools`.
    pub pools: Vec<PoolSlot<S>>,
    /// One entry per revocation source, same order as `config.revocation_sources`.
    pub sources: Vec<SourceSlot<S>>,
    pub cache: TokenCache<Rc<CachedToken>>,
    pub waiters: Vec<Waiter>,
    /// The root context's tick period, as last set ([`Tick`]).
    pub tick: Tick,
    /// This VM's identity as a fetch-lease holder (never 0: "unknown holder").
    pub vm_id: u64,
    /// Pools whose usable key count changed since the glue last looked (for the gauge).
    key_counts: Vec<(usize, usize)>,
}

/// One pool as this VM sees it: its keys and schedule, where they live in shared data, and
/// which published key set it has parsed.
#[derive(Debug)]
pub struct PoolSlot<S> {
    pub keys: PoolKeys,
    pub shared: SharedKeys<S>,
    pub envelope_cas: Option<u32>,
}

/// One revocation source as this VM sees it: its list and schedule, where they live in
/// shared data, and which publication it has installed.
#[derive(Debug)]
pub struct SourceSlot<S> {
    pub list: PoolKeys<RevocationList>,
    pub shared: SharedRevocations<S>,
    pub timing: KeyTiming,
    /// CAS of the stamp last acted upon.
    pub stamp_cas: Option<u32>,
}

impl<S> SourceSlot<S> {
    /// Digest of the document the installed list came from.
    pub fn digest(&self) -> Option<u64> {
        self.list.keys().map(|list| list.digest())
    }
}

impl<S: SharedData + Clone> SourceSlot<S> {
    /// Takes a publication announced by `stamp`: the same document only refreshes the list's
    /// age; a new one's list is read from shared data and used as it is (its compact form is
    /// the list: nothing is parsed). A value that is not a list leaves the previous list in
    /// force.
    fn take_published(&mut self, index: usize, stamp: Stamp, cas: u32) {
        if Some(stamp.digest) == self.digest() {
            self.list.refreshed(stamp.fetched_at_ms);
            self.stamp_cas = Some(cas);
            return;
        }
        // The list of the document as fetched (its fetch time is in the stamp).
        let Some((bytes, _)) = self.shared.entries.envelope() else {
            return;
        };
        let Some(list) = RevocationList::decode(bytes) else {
            self.stamp_cas = Some(cas);
            warn!("revocations #{index}: published list unusable; keeping the previous one");
            return;
        };
        if list.digest() != stamp.digest {
            // Published after the stamp was read: its own stamp comes next tick.
            return;
        }
        self.stamp_cas = Some(cas);
        debug!(
            "revocations #{index}: using the document published in shared data: {} revoked ids, {} signed-out users",
            list.revoked_ids(),
            list.signed_out_users()
        );
        self.list.set_keys(list, stamp.fetched_at_ms);
    }
}

/// The root context's tick: it drives refreshes, retries, picking up what other VMs
/// published, and the deadlines of waiting requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Right after configuration: [`Tick::FIRST`], so that the first fetch starts at once.
    /// Not in on_configure itself: Envoy configures a throw-away root context first, whose
    /// callouts are cancelled with it (seen on Envoy 1.40: the lease then blocked every worker
    /// for 2 x the timeout).
    First,
    /// Nothing waits: [`Tick::IDLE`] ([`Tick::IDLE_REVOCATIONS`] with revocation sources).
    Idle,
    /// Requests wait: [`Tick::BUSY`] bounds how late a deadline or a due refetch is seen.
    Busy,
}

impl Tick {
    pub const FIRST: Duration = Duration::from_millis(1);
    pub const IDLE: Duration = Duration::from_millis(1000);
    /// With revocation sources: a due refresh starts at most this late, and the other
    /// workers install the new document at most this long after it was published, so a
    /// revocation is in force on every worker within `refresh_seconds` + 1 s.
    pub const IDLE_REVOCATIONS: Duration = Duration::from_millis(500);
    pub const BUSY: Duration = Duration::from_millis(50);
}

/// What the cache keeps for a verified token: the token's facts, and what every request
/// that carries it publishes (claim headers, filter state), computed once.
#[derive(Debug)]
pub struct CachedToken {
    pub token: VerifiedToken,
    pub identity: TokenIdentity,
    /// Shared with every decision that sets them: a cache hit copies no header.
    pub claim_headers: Rc<[(String, String)]>,
    /// The generation of its pool's revocation list that this token was checked against
    /// and passed: a cache hit under the same list skips the check (a list changes only by
    /// being replaced, which moves the generation).
    pub revocation_passed: Cell<Option<u64>>,
}

/// Who a verified token is, as filter state publishes it (shared, never copied per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The name of the pool that issued it.
    pub pool: Option<Rc<str>>,
    pub sub: Option<Rc<str>>,
    pub client_id: Option<Rc<str>>,
}

impl TokenIdentity {
    pub fn of(token: &VerifiedToken, config: &Config) -> Self {
        TokenIdentity {
            pool: config
                .pools
                .get(token.pool)
                .map(|p| Rc::from(p.name.as_str())),
            sub: token.sub().map(Rc::from),
            client_id: token.client_id().map(Rc::from),
        }
    }
}

/// A request paused until its pool's keys (or its revocation source's first document)
/// arrive, or its deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub context_id: u32,
    pub pool: usize,
    pub deadline_ms: u64,
    /// [`VmState::generation_of`] its pool when it started waiting: re-run when that moves.
    pub generation: u64,
    /// It already waited for an unknown-`kid` refetch: it gets no second one.
    pub kid_refetched: bool,
}

impl<S: SharedData + Clone> VmState<S> {
    /// A VM with `config`, each pool's shared entries in `store`.
    pub fn new(config: Config, store: S, vm_id: u64) -> Self {
        VmState {
            timing: KeyTiming::from_config(&config),
            pools: config
                .pools
                .iter()
                .map(|p| PoolSlot {
                    keys: PoolKeys::new(),
                    shared: SharedKeys::for_pool(p, store.clone()),
                    envelope_cas: None,
                })
                .collect(),
            sources: config
                .revocation_sources
                .iter()
                .map(|src| SourceSlot {
                    list: PoolKeys::new(),
                    shared: SharedRevocations::for_source(src, store.clone()),
                    timing: src.timing(),
                    stamp_cas: None,
                })
                .collect(),
            cache: TokenCache::new(config.token_cache_size),
            waiters: Vec::new(),
            tick: Tick::First,
            vm_id: vm_id | 1,
            key_counts: Vec::new(),
            config: Rc::new(config),
        }
    }
}

impl<S: SharedData + Clone> VmState<S> {
    /// Configures a VM from the plugin configuration `raw`, or logs the one line naming the
    /// key at fault and returns `None` (the host then refuses the filter: fail closed).
    /// Logs the configuration's warnings and what it configured. The VM starts at once with
    /// the keys and documents other VMs (or this one before a reload) published; the first
    /// fetches start on the first tick ([`Tick::First`]).
    pub fn configure(raw: &[u8], store: S, vm_id: u64, now_ms: u64) -> Option<Self> {
        let (config, warnings) = match Config::parse(raw) {
            Ok(parsed) => parsed,
            Err(e) => {
                error!("{e}");
                return None;
            }
        };
        for w in &warnings {
            warn!("{w}");
        }
        let version = env!("CARGO_PKG_VERSION");
        info!("version {version}: configured {}", config.summary());
        let mut vm = VmState::new(config, store, vm_id);
        vm.start(now_ms);
        vm.start_sources(now_ms);
        Some(vm)
    }

    /// Brings one revocation source up to date with shared data: the list of a document
    /// another VM published is read and installed (only when the document changed: the stamp
    /// carries its digest); the schedule is observed. Called on the tick, never inside a
    /// request: reading and checking a large list takes a millisecond.
    pub fn sync_source(&mut self, index: usize) {
        let Some(slot) = self.sources.get_mut(index) else {
            return;
        };
        let schedule = slot.shared.entries.schedule();
        if let Some((stamp, cas)) = slot.shared.stamp() {
            if Some(cas) != slot.stamp_cas {
                slot.take_published(index, stamp, cas);
            }
        }
        slot.list.observe(schedule);
    }

    /// At configure time, for the revocation sources: as `start` for the pools — the
    /// schedule entries exist before any tick can take a lease, a published document is
    /// used at once, and a shorter refresh period applies now.
    pub fn start_sources(&mut self, now_ms: u64) {
        for slot in &self.sources {
            slot.shared.entries.ensure_schedule();
        }
        self.sync_sources();
        for slot in &self.sources {
            let entries = &slot.shared.entries;
            entries.fit_refresh(&slot.list, now_ms, &slot.timing);
        }
    }

    /// Brings every revocation source up to date with shared data.
    pub fn sync_sources(&mut self) {
        for index in 0..self.sources.len() {
            self.sync_source(index);
        }
    }
}

impl<S: SharedData> VmState<S> {
    /// What requests waiting on `pool` watch: it moves when the pool's keys or fetches move,
    /// or its revocation source's document or fetches do.
    pub fn generation_of(&self, pool: usize) -> u64 {
        let keys = self.pools.get(pool).map_or(0, |p| p.keys.generation());
        let revocations = self
            .config
            .pools
            .get(pool)
            .and_then(|p| p.revocations)
            .and_then(|i| self.sources.get(i))
            .map_or(0, |src| src.list.generation());
        keys.wrapping_add(revocations)
    }

    /// Brings one pool up to date with shared data: a key set published by another VM (or
    /// before a reload) is parsed and installed, and the schedule is observed.
    pub fn sync_pool(&mut self, pool: usize) {
        let Some(slot) = self.pools.get(pool) else {
            return;
        };
        let schedule = slot.shared.schedule();
        let known_cas = slot.envelope_cas;
        let parsed = slot
            .shared
            .envelope()
            .filter(|(_, cas)| Some(*cas) != known_cas)
            .and_then(|(envelope, cas)| {
                let (fetched_at, body) = decode_envelope(&envelope)?;
                let parsed = parse_jwks(body, self.config.max_jwks_bytes).ok()?;
                Some((parsed.keys, fetched_at, cas))
            });
        if let Some((keys, fetched_at, cas)) = parsed {
            debug!(
                "pool #{pool}: using the key set published in shared data: kids [{}]",
                keys.kids().join(",")
            );
            self.install_keys(pool, keys, fetched_at, Some(cas));
        }
        if let Some(slot) = self.pools.get_mut(pool) {
            slot.keys.observe(schedule);
        }
    }

    /// Brings every pool up to date with shared data.
    pub fn sync_pools(&mut self) {
        for pool in 0..self.pools.len() {
            self.sync_pool(pool);
        }
    }

    /// Installs a key set in this VM and drops cached tokens whose key it no longer trusts.
    pub fn install_keys(&mut self, pool: usize, keys: KeySet, fetched_at: u64, cas: Option<u32>) {
        let count = keys.len();
        let Some(slot) = self.pools.get_mut(pool) else {
            return;
        };
        slot.keys.set_keys(keys, fetched_at);
        slot.envelope_cas = cas;
        if let Some(keys) = slot.keys.keys().cloned() {
            self.cache.retain(|v| {
                v.token.pool != pool
                    || keys
                        .get(&v.token.kid)
                        .is_some_and(|k| k.fingerprint == v.token.key_fingerprint)
            });
        }
        self.key_counts.retain(|(p, _)| *p != pool);
        self.key_counts.push((pool, count));
    }

    /// (pool, usable keys) for every pool whose key set changed since the last call.
    pub fn take_key_counts(&mut self) -> Vec<(usize, usize)> {
        std::mem::take(&mut self.key_counts)
    }

    /// Removes and returns the waiters to re-run now: their pool moved on (new keys, a fetch
    /// finished) or their deadline passed. The others keep waiting.
    pub fn due_waiters(&mut self, now_ms: u64) -> Vec<Waiter> {
        let waiters = std::mem::take(&mut self.waiters);
        let (due, kept) = waiters.into_iter().partition(|w| {
            now_ms >= w.deadline_ms
                || w.pool >= self.pools.len()
                || self.generation_of(w.pool) != w.generation
        });
        self.waiters = kept;
        due
    }

    /// The idle tick period of this VM's configuration.
    pub fn idle_tick(&self) -> Duration {
        if self.sources.is_empty() {
            Tick::IDLE
        } else {
            Tick::IDLE_REVOCATIONS
        }
    }

    /// A request starts waiting: the tick speeds up to [`Tick::BUSY`] (returned when that
    /// is a change).
    pub fn tick_busy(&mut self) -> Option<Duration> {
        (std::mem::replace(&mut self.tick, Tick::Busy) != Tick::Busy).then_some(Tick::BUSY)
    }

    /// A tick came: the first one switches to the idle period (unless requests already
    /// wait). Returns the new period when it changes.
    pub fn ticked(&mut self) -> Option<Duration> {
        (self.tick == Tick::First).then(|| {
            self.tick = Tick::Idle;
            self.idle_tick()
        })
    }

    /// Waiters were woken: back to the idle period once none is left. Returns the new
    /// period when it changes.
    pub fn settle_tick(&mut self) -> Option<Duration> {
        (self.tick == Tick::Busy && self.waiters.is_empty()).then(|| {
            self.tick = Tick::Idle;
            self.idle_tick()
        })
    }

    /// Forgets a request (it ended, or was answered).
    pub fn forget_waiter(&mut self, context_id: u32) {
        self.waiters.retain(|w| w.context_id != context_id);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::shared_keys::tests::FakeSharedData;

    /// Two VMs of one process (one store) configured with `json`, started at `now_ms`.
    pub fn two_vms(json: &str, now_ms: u64) -> (VmState<FakeSharedData>, VmState<FakeSharedData>) {
        let store = FakeSharedData::default();
        let config = || Config::parse(json.as_bytes()).unwrap().0;
        let mut a = VmState::new(config(), store.clone(), 0x10);
        let mut b = VmState::new(config(), store, 0x20);
        for vm in [&mut a, &mut b] {
            vm.start(now_ms);
            vm.start_sources(now_ms);
        }
        (a, b)
    }

    fn vm(json: &str) -> VmState<FakeSharedData> {
        let config = Config::parse(json.as_bytes()).unwrap().0;
        VmState::new(config, FakeSharedData::default(), 1)
    }

    const PLAIN: &str =
        r#"{"user_pools":[{"user_pool_id":"us-east-1_AbCdEf123","jwks_cluster":"c"}]}"#;

    fn waiter(context_id: u32) -> Waiter {
        Waiter {
            context_id,
            pool: 0,
            deadline_ms: 10,
            generation: 0,
            kid_refetched: false,
        }
    }

    #[test]
    fn a_configuration_error_configures_nothing() {
        let store = FakeSharedData::default();
        assert!(VmState::configure(b"{}", store.clone(), 1, 0).is_none());
        assert!(VmState::configure(b"not json", store.clone(), 1, 0).is_none());
        assert!(VmState::configure(PLAIN.as_bytes(), store, 1, 0).is_some());
    }

    #[test]
    fn a_vm_configured_after_another_uses_the_keys_it_published() {
        let store = FakeSharedData::default();
        let mut first = VmState::configure(PLAIN.as_bytes(), store.clone(), 1, 0).unwrap();
        assert_eq!(first.claim_due(0).len(), 1, "the first VM fetches");
        let key = crate::jwks::tests::test_key(0);
        let jwk = crate::jwks::tests::rsa_jwk(key, "k1", Some("RS256"));
        let body = serde_json::json!({ "keys": [jwk] })
            .to_string()
            .into_bytes();
        let body = &body[..];
        let answer = crate::key_fetch::CalloutAnswer {
            status: Some("200"),
            body_size: body.len(),
        };
        let fetch = crate::fetch::Fetch::Jwks(0);
        let counted = first.take_answer(fetch, 5, answer, &body, 0, || 5);
        assert_eq!(counted, (crate::metrics::Counter::JwksFetchOk, Some(0)));
        let second = VmState::configure(PLAIN.as_bytes(), store, 2, 10).unwrap();
        assert_eq!(
            second.pools[0].keys.fetched_at_ms(),
            first.pools[0].keys.fetched_at_ms()
        );
        assert!(second.pools[0].keys.keys().is_some());
    }

    #[test]
    fn the_first_tick_switches_to_the_idle_period_once() {
        let mut vm = vm(PLAIN);
        assert_eq!(vm.ticked(), Some(Tick::IDLE));
        assert_eq!(vm.ticked(), None);
        assert_eq!(vm.settle_tick(), None, "already idle");
    }

    #[test]
    fn revocation_sources_tick_twice_as_often_when_idle() {
        let mut vm = vm(
            r#"{"user_pools":[{"user_pool_id":"us-east-1_AbCdEf123","jwks_cluster":"c",
            "revocations":{"cluster":"r","uri":"http://r/doc.json"}}]}"#,
        );
        assert_eq!(vm.ticked(), Some(Tick::IDLE_REVOCATIONS));
    }

    #[test]
    fn only_the_first_waiter_speeds_the_tick_up_and_the_last_one_slows_it_down() {
        let mut vm = vm(PLAIN);
        vm.ticked();
        assert_eq!(vm.tick_busy(), Some(Tick::BUSY));
        vm.waiters.push(waiter(1));
        assert_eq!(vm.tick_busy(), None, "already busy");
        vm.waiters.push(waiter(2));
        assert_eq!(vm.settle_tick(), None, "requests still wait");
        vm.forget_waiter(1);
        assert_eq!(vm.settle_tick(), None, "one still waits");
        assert_eq!(vm.due_waiters(10).len(), 1);
        assert_eq!(vm.settle_tick(), Some(Tick::IDLE));
        assert_eq!(vm.settle_tick(), None);
    }

    #[test]
    fn a_request_waiting_before_the_first_tick_keeps_the_busy_period() {
        let mut vm = vm(PLAIN);
        assert_eq!(vm.tick_busy(), Some(Tick::BUSY));
        vm.waiters.push(waiter(1));
        assert_eq!(vm.ticked(), None);
        vm.forget_waiter(1);
        assert_eq!(vm.settle_tick(), Some(Tick::IDLE));
    }
}
