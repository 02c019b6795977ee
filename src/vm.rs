//! The state of one VM (one worker thread): its configuration, its view of every pool's
//! keys, kept in step with the process-wide state in shared data, its token cache and the
//! requests waiting for keys. Pure: shared data is reached through [`SharedData`].

use std::rc::Rc;

use log::debug;

use crate::cache::TokenCache;
use crate::config::Config;
use crate::jwks::{parse_jwks, KeySet};
use crate::keys::{decode_envelope, KeyTiming, PoolKeys};
use crate::shared_keys::{SharedData, SharedKeys};
use crate::verify::VerifiedToken;

pub struct VmState<S> {
    pub config: Rc<Config>,
    pub timing: KeyTiming,
    /// One entry per configured pool, same order as `config.pools`.
    pub pools: Vec<PoolSlot<S>>,
    pub cache: TokenCache<Rc<CachedToken>>,
    pub waiters: Vec<Waiter>,
    /// The root ticks fast while requests wait (the glue's busy tick).
    pub busy_tick: bool,
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

/// What the cache keeps for a verified token: the token's facts and the claim headers it
/// yields, computed once.
#[derive(Debug)]
pub struct CachedToken {
    pub token: VerifiedToken,
    pub claim_headers: Vec<(String, String)>,
}

/// A request paused until its pool's keys arrive (or its deadline passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub context_id: u32,
    pub pool: usize,
    pub deadline_ms: u64,
    /// The pool's generation when it started waiting: it is re-run when that moves.
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
            cache: TokenCache::new(config.token_cache_size),
            waiters: Vec::new(),
            busy_tick: false,
            vm_id: vm_id | 1,
            key_counts: Vec::new(),
            config: Rc::new(config),
        }
    }
}

impl<S: SharedData> VmState<S> {
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
        let pools = &self.pools;
        let (due, kept) = self.waiters.drain(..).partition(|w| {
            now_ms >= w.deadline_ms
                || pools
                    .get(w.pool)
                    .is_none_or(|p| p.keys.generation() != w.generation)
        });
        self.waiters = kept;
        due
    }

    /// Forgets a request (it ended, or was answered).
    pub fn forget_waiter(&mut self, context_id: u32) {
        self.waiters.retain(|w| w.context_id != context_id);
    }
}
