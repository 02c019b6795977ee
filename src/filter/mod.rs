//! The proxy-wasm glue: the only code that talks to the host. Kept thin: every decision is
//! made by the pure modules of the crate; this layer reads headers, the clock and callout
//! results, and carries out what the core decided.
//!
//! - `root`: configuration, JWKS fetches and refreshes, waking requests that wait for keys.
//! - `http`: one request: the decision flow (README "Behaviour").
//! - `host`: metrics, properties, clock, request headers — small wrappers over host calls.
//! - `shared`: the host's shared data behind the pure `shared_keys` protocol.

mod host;
mod http;
mod root;
mod shared;

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::types::LogLevel;

use log::debug;

use crate::cache::TokenCache;
use crate::config::Config;
use crate::jwks::{parse_jwks, KeySet};
use crate::keys::{decode_envelope, KeyTiming, PoolKeys};
use crate::verify::VerifiedToken;

proxy_wasm::main! {{
    // Until the host's level is read in on_configure: nothing below info is formatted.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}}

/// State of one VM, shared by its root context and its HTTP contexts (one thread per VM).
/// Never borrowed across a host call that could re-enter the VM.
pub(crate) struct VmState {
    pub config: Rc<Config>,
    pub timing: KeyTiming,
    /// One entry per configured pool, same order as `config.pools`.
    pub pools: Vec<PoolSlot>,
    pub cache: TokenCache<Rc<Verified>>,
    pub waiters: Vec<Waiter>,
    /// The root ticks fast (see `http::BUSY_TICK`) while requests wait.
    pub busy_tick: bool,
    pub metrics: host::Metrics,
    /// Signature checks by the host, where its self-test passed.
    pub host_crypto: host::HostCrypto,
    /// This VM's identity as a fetch-lease holder.
    pub vm_id: u64,
}

pub(crate) type SharedState = Rc<RefCell<VmState>>;

impl VmState {
    /// Brings one pool up to date with shared data: a key set published by another VM (or
    /// before a reload) is parsed and installed, and the schedule is observed. Only
    /// non-reentrant host calls (shared data reads) happen here.
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
        self.metrics.set_keys(pool, count);
    }
}

/// One pool as this VM sees it: its keys and schedule, where they live in shared data, and
/// which published key set it has parsed.
#[derive(Debug)]
pub(crate) struct PoolSlot {
    pub keys: PoolKeys,
    pub shared: shared::SharedKeys,
    pub envelope_cas: Option<u32>,
}

/// A verified token and the claim headers it yields, computed once and reused from the cache.
#[derive(Debug)]
pub(crate) struct Verified {
    pub token: VerifiedToken,
    pub claim_headers: Vec<(String, String)>,
}

/// A request paused until its pool's keys arrive (or its deadline passes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    pub context_id: u32,
    pub pool: usize,
    pub deadline_ms: u64,
    /// The pool's generation when it started waiting: it is re-run when that moves.
    pub generation: u64,
    /// It already waited for an unknown-`kid` refetch: it gets no second one.
    pub kid_refetched: bool,
}
